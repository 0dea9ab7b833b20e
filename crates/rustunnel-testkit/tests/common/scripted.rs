//! The request side of a scripted local service: the tests of the HTTP edge write their
//! services' answers by hand, and read each request the same way.
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A request head as a scripted service reads it.
pub struct Head {
    /// The whole head, up to and with its empty line.
    pub text: String,
    pub method: String,
    pub path: String,
    /// The `Content-Length` value (0 without one).
    pub content_length: usize,
}

/// Reads more bytes of `s` into `buf`; `false` when the connection ended or failed.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The next request head on `s`, taken out of `buf` (bytes after it stay there); `None` when
/// the connection ends first.
pub async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(s, buf).await {
            return None;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let content_length = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    Some(Head { text, method, path, content_length })
}

/// The request body of `len` bytes, taken out of `buf` after reading the rest from `s`; `None`
/// when the connection ends first.
pub async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Option<Vec<u8>> {
    while buf.len() < len {
        if !read_more(s, buf).await {
            return None;
        }
    }
    Some(buf.drain(..len).collect())
}
