//! Client TLS: public web PKI roots, plus an extra CA file (`--ca`) or no verification at all
//! (`--insecure`, for self-signed dev servers).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Skip certificate verification (the connection is still encrypted).
    pub insecure: bool,
    /// Also trust this CA (PEM), e.g. the server's generated certificate.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no usable certificate in CA file {0}")]
    NoCert(PathBuf),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// ring's provider with AES-128-GCM preferred: as strong as needed for a transport link and
/// measurably cheaper per byte than AES-256 on the data plane (servers follow the client's
/// order by default).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(p)
}

fn load_ca(path: &Path, roots: &mut RootCertStore) -> Result<(), TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read { path: path.to_path_buf(), source })?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(TlsSetupError::NoCert(path.to_path_buf()));
    }
    Ok(())
}

/// Builds the rustls client configuration for the given ALPN protocols.
pub fn client_config(opts: &TlsOptions, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CertPolicy::any(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &opts.ca {
            load_ca(ca, &mut roots)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Lean data connections take the TLS 1.3 records over from rustls after the handshake
    // (`rustunnel_transport::record`); buffered connections on this config never extract anything.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

type AcceptFn = dyn Fn(&CertificateDer<'_>) -> Result<(), rustls::Error> + Send + Sync;

/// A verifier that decides on the server's certificate itself and leaves the handshake
/// signature checks to the provider, so the session is always encrypted to whoever holds the
/// presented key.
pub(crate) struct CertPolicy {
    accept: Box<AcceptFn>,
    provider: Arc<CryptoProvider>,
}

impl CertPolicy {
    /// Any certificate: only for `--insecure`.
    fn any(provider: Arc<CryptoProvider>) -> CertPolicy {
        CertPolicy { accept: Box::new(|_| Ok(())), provider }
    }

    /// Exactly the certificate whose `fingerprint(der)` is `expected`.
    pub(crate) fn pinned(
        provider: Arc<CryptoProvider>,
        expected: String,
        fingerprint: fn(&[u8]) -> String,
        mismatch: &'static str,
    ) -> CertPolicy {
        let accept = move |cert: &CertificateDer<'_>| {
            if fingerprint(cert.as_ref()) == expected {
                Ok(())
            } else {
                Err(rustls::Error::General(mismatch.into()))
            }
        };
        CertPolicy { accept: Box::new(accept), provider }
    }
}

impl std::fmt::Debug for CertPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPolicy").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for CertPolicy {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        (self.accept)(end_entity).map(|()| ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_is_offered_first() {
        let c = client_config(&TlsOptions { insecure: true, ca: None }, &[b"http/1.1"]).unwrap();
        let first = c.crypto_provider().cipher_suites[0].suite();
        assert_eq!(first, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
