//! TLS material: operator-supplied PEM files, or a self-signed certificate for the domain and
//! its wildcard generated into the data directory (dev servers, first start).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSource;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("no certificate found in {0}")]
    NoCert(PathBuf),
    #[error("no private key found in {0}")]
    NoKey(PathBuf),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loaded certificate chain and key, plus the ready rustls configurations.
pub struct TlsMaterial {
    pub certs: Vec<CertificateDer<'static>>,
    /// Path of the certificate file, printed for dev users (`--ca`).
    pub cert_path: PathBuf,
    /// Control port: HTTP/1.1 only (WebSocket and data upgrades).
    pub control: Arc<ServerConfig>,
    /// HTTPS edge: h2 and http/1.1 by ALPN.
    pub https: Arc<ServerConfig>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Writes the generated self-signed pair unless one is already there.
fn ensure_self_signed(dir: &Path, domain: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("tls-cert.pem");
    let key_path = dir.join("tls-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let names = vec![domain.to_string(), format!("*.{domain}"), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names)?;
    let write = |p: &Path, data: String| {
        std::fs::write(p, data).map_err(|source| TlsError::Write { path: p.to_path_buf(), source })
    };
    write(&cert_path, ck.cert.pem())?;
    write(&key_path, ck.signing_key.serialize_pem())?;
    restrict_permissions(&key_path);
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn restrict_permissions(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}
#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    pub fn load(source: &TlsSource, data_dir: &Path, domain: &str) -> Result<Self, TlsError> {
        let (cert_path, key_path) = match source {
            TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
            TlsSource::SelfSigned => ensure_self_signed(data_dir, domain)?,
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(TlsError::NoCert(cert_path));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key_path.clone()))?;
        let build = |alpn: Vec<Vec<u8>>, resumption: bool| -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())?;
            c.alpn_protocols = alpn;
            if !resumption {
                // Tunnel clients keep their connections warm and never resume: no tickets to
                // mint, send and store for every data connection.
                c.send_tls13_tickets = 0;
                c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            }
            Ok(Arc::new(c))
        };
        Ok(TlsMaterial {
            control: build(vec![b"http/1.1".to_vec()], false)?,
            https: build(vec![b"h2".to_vec(), b"http/1.1".to_vec()], true)?,
            certs,
            cert_path,
        })
    }
}
