//! TLS material: operator-supplied PEM files, or a private certificate authority generated into
//! the data directory on first start (dev servers, servers without certificate files).
//!
//! With the generated CA the server presents, for each name a client asks for (SNI), a
//! certificate for exactly that name, signed by the CA: `https://myapp.localhost` verifies in
//! curl, browsers and Python once the CA file (`tls-cert.pem`) is trusted. A wildcard alone
//! would not do: OpenSSL-based clients refuse `*.localhost` (a wildcard over a single-label
//! domain). Connections without SNI (IP addresses) get one for the domain, its wildcard and the
//! loopback addresses.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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
    #[error("generated key unusable: {0}")]
    Key(String),
}

/// The ready rustls configurations.
pub struct TlsMaterial {
    /// Path of the certificate file (the generated CA's, for clients' `--ca`).
    pub cert_path: PathBuf,
    /// Control port: HTTP/1.1 only (WebSocket and data upgrades).
    pub control: Arc<ServerConfig>,
    /// HTTPS edge: h2 and http/1.1 by ALPN.
    pub https: Arc<ServerConfig>,
    /// The operator's certificate, when it comes from files ([`Self::replace_operator_cert`]).
    operator_files: Option<Arc<FileResolver>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Subject of the generated CA; also how a CA file of ours is told from an older self-signed
/// leaf (its name appears verbatim in the certificate's DER).
const CA_NAME: &str = "rustunnel private CA";
/// Certificates minted per name kept for reuse; past that the cache starts over.
const MINTED_MAX: usize = 4096;

/// The CA's common name for `domain`: found verbatim in its DER, it tells a CA made for this
/// domain (and name-constrained to it) from one made for another or by an older version.
fn ca_name(domain: &str) -> String {
    format!("{CA_NAME} ({domain})")
}

/// The generated CA for `domain`. Name-constrained to the domain (and its subdomains) and to
/// loopback addresses: whoever trusts it in a browser trusts it for those names only, so its
/// key, should it leak from the data directory, cannot vouch for any other site.
fn ca_params(domain: &str) -> rcgen::CertificateParams {
    use rcgen::{CidrSubnet, GeneralSubtree};
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, ca_name(domain));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.name_constraints = Some(rcgen::NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName(domain.to_string()),
            GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8)),
            GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(std::net::Ipv6Addr::LOCALHOST.octets(), 128)),
        ],
        excluded_subtrees: vec![],
    });
    p
}

/// The generated CA (`tls-cert.pem`, `tls-key.pem`) for `domain`, written on first start: its
/// certificate and key. A pair left by an older version (a self-signed leaf, or a CA without
/// name constraints) or made for another domain is replaced, with a warning: clients that
/// trusted the old one must take the new file.
fn ensure_ca(dir: &Path, domain: &str) -> Result<(PathBuf, CertificateDer<'static>, rcgen::KeyPair), TlsError> {
    let cert_path = dir.join("tls-cert.pem");
    let key_path = dir.join("tls-key.pem");
    if cert_path.exists() && key_path.exists() {
        let pem = read(&cert_path)?;
        let name = ca_name(domain);
        let ours = CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .find(|c| c.windows(name.len()).any(|w| w == name.as_bytes()));
        let key = String::from_utf8(read(&key_path)?).ok().and_then(|k| rcgen::KeyPair::from_pem(&k).ok());
        if let (Some(cert), Some(key)) = (ours, key) {
            return Ok((cert_path, cert, key));
        }
        tracing::warn!(
            path = %cert_path.display(),
            "replacing the private CA (made by an older version or for another domain) with one limited to {domain}; clients and browsers that trusted the old file must trust the new one"
        );
    }
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params(domain).self_signed(&key)?;
    let write = |p: &Path, data: String| {
        std::fs::write(p, data).map_err(|source| TlsError::Write { path: p.to_path_buf(), source })
    };
    write(&key_path, key.serialize_pem())?;
    restrict_permissions(&key_path);
    write(&cert_path, cert.pem())?;
    Ok((cert_path, cert.der().clone(), key))
}

/// Signs server certificates with the generated CA.
struct Minter {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca: CertificateDer<'static>,
    /// One key for every minted certificate (the CA vouches for each name separately).
    leaf_key: rcgen::KeyPair,
    signing: Arc<dyn rustls::sign::SigningKey>,
}

impl Minter {
    fn new(ca: CertificateDer<'static>, ca_key: rcgen::KeyPair, domain: &str) -> Result<Self, TlsError> {
        let leaf_key = rcgen::KeyPair::generate()?;
        let der = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|e| TlsError::Key(e.to_string()))?;
        let signing = provider().key_provider.load_private_key(der)?;
        Ok(Minter { issuer: rcgen::Issuer::new(ca_params(domain), ca_key), ca, leaf_key, signing })
    }

    /// A certificate for `names`, valid from yesterday for 397 days (what browsers accept for a
    /// server certificate), with the CA after it in the chain.
    fn mint(&self, names: Vec<String>) -> Result<Arc<CertifiedKey>, TlsError> {
        let mut p = rcgen::CertificateParams::new(names)?;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(397);
        p.use_authority_key_identifier_extension = true;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&self.leaf_key, &self.issuer)?;
        Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone(), self.ca.clone()], self.signing.clone())))
    }
}

/// Serves certificates signed by the generated CA: one per server name, minted on first use.
struct MintingResolver {
    minter: Minter,
    domain: String,
    /// For clients that send no name (IP addresses) or a name that is not ours.
    default: Arc<CertifiedKey>,
    minted: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for MintingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintingResolver").field("domain", &self.domain).finish_non_exhaustive()
    }
}

impl MintingResolver {
    fn new(minter: Minter, domain: &str) -> Result<Self, TlsError> {
        // No wildcard: webpki cannot check one against the CA's name constraints (and every
        // subdomain asked for gets a certificate of its own anyway).
        let names = vec![domain.to_string(), "127.0.0.1".into(), "::1".into()];
        let default = minter.mint(names)?;
        Ok(MintingResolver { minter, domain: domain.to_string(), default, minted: Mutex::new(HashMap::new()) })
    }

    /// Whether `name` is the domain or a valid subdomain label under it: the names served.
    fn is_ours(&self, name: &str) -> bool {
        name == self.domain
            || rustunnel_proto::names::subdomain_of(name, &self.domain)
                .is_some_and(|label| rustunnel_proto::names::validate_subdomain(label).is_ok())
    }
}

impl ResolvesServerCert for MintingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase).filter(|n| self.is_ours(n)) else {
            return Some(self.default.clone());
        };
        let mut minted = self.minted.lock();
        if let Some(c) = minted.get(&name) {
            return Some(c.clone());
        }
        let c = self.minter.mint(vec![name.clone()]).ok()?;
        if minted.len() >= MINTED_MAX {
            minted.clear();
        }
        minted.insert(name, c.clone());
        Some(c)
    }
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
        let mut operator_files = None;
        let (cert_path, resolver): (PathBuf, Arc<dyn ResolvesServerCert>) = match source {
            TlsSource::Files { cert, key } => {
                let files = Arc::new(FileResolver { current: parking_lot::RwLock::new(load_files(cert, key)?) });
                operator_files = Some(files.clone());
                (cert.clone(), files)
            }
            TlsSource::SelfSigned => {
                let (path, ca, ca_key) = ensure_ca(data_dir, domain)?;
                (path, Arc::new(MintingResolver::new(Minter::new(ca, ca_key, domain)?, domain)?))
            }
        };
        // `control_port`: the config of the control port, whose connections are lean ones.
        let build = |alpn: Vec<Vec<u8>>, control_port: bool| -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            c.alpn_protocols = alpn;
            if control_port {
                // Tunnel clients keep their connections warm and never resume: no tickets to
                // mint, send and store for every data connection.
                c.send_tls13_tickets = 0;
                c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                // After a TLS 1.3 handshake rustls hands the traffic keys to the lean
                // connections' own record layer (`rustunnel_transport::record`).
                c.enable_secret_extraction = true;
            }
            Ok(Arc::new(c))
        };
        Ok(TlsMaterial {
            control: build(vec![b"http/1.1".to_vec()], true)?,
            https: build(vec![b"h2".to_vec(), b"http/1.1".to_vec()], false)?,
            cert_path,
            operator_files,
        })
    }

    /// Whether the certificate comes from operator files (and can be re-read).
    pub fn has_operator_files(&self) -> bool {
        self.operator_files.is_some()
    }

    /// Reads operator certificate files without using them yet: a reload checks every change
    /// before it applies any.
    pub fn read_operator_files(cert: &Path, key: &Path) -> Result<CertifiedCert, TlsError> {
        load_files(cert, key).map(CertifiedCert)
    }

    /// Serves `cert` to every handshake from now on (both ports); connections already
    /// established keep theirs. Does nothing for a generated CA.
    pub fn replace_operator_cert(&self, cert: CertifiedCert) {
        if let Some(files) = &self.operator_files {
            *files.current.write() = cert.0;
        }
    }
}

/// A certificate chain and key read from operator files, ready to serve.
pub struct CertifiedCert(Arc<CertifiedKey>);

fn load_files(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert.to_path_buf()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.to_path_buf()))?;
    let signing = provider().key_provider.load_private_key(key_der)?;
    let certified = CertifiedKey::new(certs, signing);
    // A key that does not belong to the chain would fail every handshake: refuse it here.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(TlsError::Rustls(e)),
    }
    Ok(Arc::new(certified))
}

/// Serves the operator's certificate, replaceable while running (renewed files, SIGHUP).
#[derive(Debug)]
struct FileResolver {
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(config: Arc<ServerConfig>, ca: &Path, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(config).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    /// Operator files for `name`: a CA file (what clients trust) and a chain and key signed by
    /// it, in `dir` under `tag`.
    fn operator_files(dir: &Path, tag: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params(name).self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params(name), ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let paths = (
            dir.join(format!("{tag}-ca.pem")),
            dir.join(format!("{tag}-cert.pem")),
            dir.join(format!("{tag}-key.pem")),
        );
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, leaf.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn operator_certificate_files_are_replaced_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let name = "tunnel.example";
        let (old_ca, old_cert, old_key) = operator_files(dir.path(), "old", name);
        let (new_ca, new_cert, new_key) = operator_files(dir.path(), "new", name);
        let t =
            TlsMaterial::load(&TlsSource::Files { cert: old_cert.clone(), key: old_key }, dir.path(), name).unwrap();
        assert!(t.has_operator_files());
        handshake(t.https.clone(), &old_ca, name).unwrap();
        assert!(handshake(t.https.clone(), &new_ca, name).is_err());

        // A key of another certificate is refused before anything changes.
        assert!(TlsMaterial::read_operator_files(&new_cert, &old_cert).is_err());
        let e = TlsMaterial::read_operator_files(&old_cert, &new_key).err().unwrap();
        assert!(e.to_string().contains("invalid TLS configuration"), "{e}");
        handshake(t.control.clone(), &old_ca, name).unwrap();

        t.replace_operator_cert(TlsMaterial::read_operator_files(&new_cert, &new_key).unwrap());
        for config in [t.https.clone(), t.control.clone()] {
            handshake(config.clone(), &new_ca, name).unwrap();
            assert!(handshake(config, &old_ca, name).is_err());
        }
    }

    #[test]
    fn each_name_gets_a_certificate_of_its_own_from_the_generated_ca() {
        let dir = tempfile::tempdir().unwrap();
        let t = TlsMaterial::load(&TlsSource::SelfSigned, dir.path(), "localhost").unwrap();
        for name in ["myapp.localhost", "localhost", "127.0.0.1", "::1"] {
            handshake(t.https.clone(), &t.cert_path, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(handshake(t.https.clone(), &t.cert_path, "other.example").is_err(), "not ours");
        // Exactly the name asked for (no wildcard an OpenSSL client would refuse).
        let (_, ca, key) = ensure_ca(dir.path(), "localhost").unwrap();
        let r = MintingResolver::new(Minter::new(ca, key, "localhost").unwrap(), "localhost").unwrap();
        let c = r.minter.mint(vec!["myapp.localhost".into()]).unwrap();
        let der = &c.cert[0];
        assert!(der.windows(15).any(|w| w == b"myapp.localhost"));
        assert!(!der.windows(2).any(|w| w == b"*."), "no wildcard");
        assert!(r.is_ours("myapp.localhost") && r.is_ours("localhost"));
        assert!(!r.is_ours("a.b.localhost") && !r.is_ours("-x.localhost") && !r.is_ours("evil.example"));
        // A restart keeps the CA clients were told to trust.
        let before = std::fs::read(&t.cert_path).unwrap();
        let again = TlsMaterial::load(&TlsSource::SelfSigned, dir.path(), "localhost").unwrap();
        assert_eq!(std::fs::read(&again.cert_path).unwrap(), before);
        handshake(again.https.clone(), &t.cert_path, "second.localhost").unwrap();
    }

    #[test]
    fn an_older_self_signed_pair_is_replaced_by_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let old = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("tls-cert.pem"), old.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls-key.pem"), old.signing_key.serialize_pem()).unwrap();
        let t = TlsMaterial::load(&TlsSource::SelfSigned, dir.path(), "localhost").unwrap();
        assert_ne!(std::fs::read_to_string(&t.cert_path).unwrap(), old.cert.pem());
        handshake(t.https.clone(), &t.cert_path, "myapp.localhost").unwrap();
        // So is a CA of ours made for another domain (or before the name constraints).
        let before = std::fs::read(&t.cert_path).unwrap();
        let t = TlsMaterial::load(&TlsSource::SelfSigned, dir.path(), "tunnel.example").unwrap();
        assert_ne!(std::fs::read(&t.cert_path).unwrap(), before);
        handshake(t.https.clone(), &t.cert_path, "myapp.tunnel.example").unwrap();
    }

    /// The CA vouches for the domain and loopback only: a certificate it signed for another
    /// name (as a leaked key could) is refused by a verifying client.
    #[test]
    fn the_generated_ca_is_limited_to_its_domain() {
        use rustls::client::danger::ServerCertVerifier;
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, ca, key) = ensure_ca(dir.path(), "localhost").unwrap();
        let minter = Minter::new(ca, key, "localhost").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert_path).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        let verify = |name: &str| {
            let c = minter.mint(vec![name.to_string()]).unwrap();
            let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            verifier.verify_server_cert(&c.cert[0], &c.cert[1..], &server, &[], rustls::pki_types::UnixTime::now())
        };
        for ok in ["localhost", "app.localhost", "127.0.0.1", "::1"] {
            verify(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["bank.example", "localhost.example", "10.0.0.1"] {
            assert!(verify(bad).is_err(), "{bad} accepted");
        }
    }
}
