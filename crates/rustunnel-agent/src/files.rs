//! File sharing: caps, sanitizing, chunk assembly and verified saving.
//!
//! The sender's file name is display-only: it is reduced to a last path component
//! without control characters and is never joined to a path. The receiver chooses
//! `savePath`; we write there only after size and SHA-256 match, and refuse to
//! overwrite unless asked. Declared sizes are checked before any buffer exists.

use std::path::Path;
use std::sync::Arc;

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A shared file as announced in the transcript. `name` is display-only, already sanitized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub artifact_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// File caps.
#[derive(Debug, Clone)]
pub struct FileLimits {
    pub max_file_bytes: u64,
    pub max_member_bytes: u64,
    pub max_room_bytes: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_file_bytes: 10 * 1024 * 1024,
            max_member_bytes: 50 * 1024 * 1024,
            max_room_bytes: 100 * 1024 * 1024,
        }
    }
}

/// A shared file held in the host's memory for the life of the room.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub info: FileInfo,
    pub data: Arc<[u8]>,
}

/// File operation failures.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read '{path}': {source}")]
    Read { path: String, source: std::io::Error },
    #[error("'{0}' is not a regular file")]
    NotAFile(String),
    #[error("file is {size} bytes; the limit is {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("received data does not match the announced size or SHA-256; nothing was written")]
    Integrity,
    #[error("'{0}' already exists; pass overwrite=true to replace it")]
    Exists(String),
    #[error("cannot write '{path}': {source}")]
    Write { path: String, source: std::io::Error },
    #[error("savePath must not be empty or contain NUL")]
    BadSavePath,
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Fresh opaque artifact id.
pub fn new_artifact_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("a_{}", hex::encode(b))
}

/// Display form of a peer-supplied file name: last component, no control chars, no
/// leading dots-only names, bounded. Never use the result as a path.
pub fn sanitize_display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(128).collect::<String>().trim().to_owned();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "file".to_owned()
    } else {
        cleaned
    }
}

/// Reads a file to share, refusing before reading when it is over `max`.
pub async fn read_for_share(path: &Path, max: u64) -> Result<(String, Vec<u8>), FileError> {
    let shown = path.display().to_string();
    let meta = tokio::fs::metadata(path).await.map_err(|source| FileError::Read { path: shown.clone(), source })?;
    if !meta.is_file() {
        return Err(FileError::NotAFile(shown));
    }
    if meta.len() > max {
        return Err(FileError::TooLarge { size: meta.len(), max });
    }
    let data = tokio::fs::read(path).await.map_err(|source| FileError::Read { path: shown.clone(), source })?;
    // The file may have grown between stat and read.
    if data.len() as u64 > max {
        return Err(FileError::TooLarge { size: data.len() as u64, max });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    Ok((name, data))
}

/// Chunk assembler used for both uploads (host side) and downloads (receiver side).
#[derive(Debug)]
pub struct Assembly {
    size: u64,
    sha256: String,
    buf: Vec<u8>,
}

impl Assembly {
    /// Rejects `size > max` before allocating; reserves only what was announced.
    pub fn new(size: u64, sha256: &str, max: u64) -> Result<Self, FileError> {
        if size > max {
            return Err(FileError::TooLarge { size, max });
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FileError::Integrity);
        }
        Ok(Assembly { size, sha256: sha256.to_ascii_lowercase(), buf: Vec::with_capacity(size as usize) })
    }

    /// Appends bytes that must start exactly at the current end and stay within size.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Result<(), FileError> {
        if offset != self.buf.len() as u64 || self.buf.len() as u64 + data.len() as u64 > self.size {
            return Err(FileError::Integrity);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Verifies size and hash; returns the data.
    pub fn finish(self) -> Result<Vec<u8>, FileError> {
        if self.buf.len() as u64 != self.size || sha256_hex(&self.buf) != self.sha256 {
            return Err(FileError::Integrity);
        }
        Ok(self.buf)
    }
}

/// Writes verified data to the receiver-chosen path. Never overwrites unless asked.
pub async fn write_save_path(path: &Path, data: &[u8], overwrite: bool) -> Result<(), FileError> {
    let shown = path.display().to_string();
    if shown.is_empty() || shown.contains('\0') {
        return Err(FileError::BadSavePath);
    }
    use tokio::io::AsyncWriteExt as _;
    let mut opts = tokio::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            FileError::Exists(shown.clone())
        } else {
            FileError::Write { path: shown.clone(), source }
        }
    })?;
    let w = |source| FileError::Write { path: shown.clone(), source };
    f.write_all(data).await.map_err(w)?;
    f.flush().await.map_err(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_sanitized() {
        assert_eq!(sanitize_display_name("../../.bashrc"), ".bashrc");
        assert_eq!(sanitize_display_name("/etc/passwd"), "passwd");
        assert_eq!(sanitize_display_name("C:\\Windows\\evil.exe"), "evil.exe");
        assert_eq!(sanitize_display_name("a\0b\nc.txt"), "abc.txt");
        assert_eq!(sanitize_display_name(".."), "file");
        assert_eq!(sanitize_display_name(""), "file");
        assert_eq!(sanitize_display_name(&"x".repeat(1000)).len(), 128);
    }

    #[test]
    fn assembly_checks_size_order_and_hash() {
        assert!(matches!(Assembly::new(u64::MAX, &"0".repeat(64), 10), Err(FileError::TooLarge { .. })));
        let data = b"hello world";
        let sha = sha256_hex(data);
        let mut a = Assembly::new(11, &sha, 100).unwrap();
        assert!(a.push(1, b"x").is_err());
        a.push(0, b"hello ").unwrap();
        assert!(a.push(6, b"world!!").is_err());
        a.push(6, b"world").unwrap();
        assert_eq!(a.finish().unwrap(), data);
        let mut bad = Assembly::new(11, &sha, 100).unwrap();
        bad.push(0, b"hellO world").unwrap();
        assert!(matches!(bad.finish(), Err(FileError::Integrity)));
        let short = Assembly::new(11, &sha, 100).unwrap();
        assert!(matches!(short.finish(), Err(FileError::Integrity)));
        assert!(Assembly::new(1, "nothex", 100).is_err());
    }

    #[tokio::test]
    async fn save_never_overwrites_unless_asked() {
        let dir = std::env::temp_dir().join(format!("rt-agent-files-{}", new_artifact_id()));
        tokio::fs::create_dir_all(&dir).await.unwrap();
        let p = dir.join("out.txt");
        write_save_path(&p, b"one", false).await.unwrap();
        assert!(matches!(write_save_path(&p, b"two", false).await, Err(FileError::Exists(_))));
        assert_eq!(tokio::fs::read(&p).await.unwrap(), b"one");
        write_save_path(&p, b"two", true).await.unwrap();
        assert_eq!(tokio::fs::read(&p).await.unwrap(), b"two");
        let (name, data) = read_for_share(&p, 100).await.unwrap();
        assert_eq!((name.as_str(), data.as_slice()), ("out.txt", &b"two"[..]));
        assert!(matches!(read_for_share(&p, 1).await, Err(FileError::TooLarge { .. })));
        assert!(matches!(read_for_share(&dir, 100).await, Err(FileError::NotAFile(_))));
        tokio::fs::remove_dir_all(&dir).await.unwrap();
    }
}
