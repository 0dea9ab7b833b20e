//! QUIC between the two peers once a hole is punched. The publisher serves a fresh self-signed
//! certificate whose SHA-256 fingerprint went through the PAKE-authenticated transcript; the
//! visitor accepts exactly that certificate. (The visitor itself proves the secret on every
//! stream with the link's stream authenticator.)
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::tls::CertPolicy;

const ALPN: &[u8] = b"rustunnel-p2p";
const SNI: &str = "rustunnel-p2p";

/// A publisher's certificate for one link.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    pub fingerprint: String,
}

pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

pub fn new_identity() -> Result<Identity, String> {
    let ck = rcgen::generate_simple_self_signed(vec![SNI.to_string()]).map_err(|e| e.to_string())?;
    let cert = ck.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    Ok(Identity { fingerprint: fingerprint(&cert), cert, key })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    t.max_concurrent_bidi_streams(256u32.into());
    t.stream_receive_window((4u32 * 1024 * 1024).into());
    t.receive_window((16u32 * 1024 * 1024).into());
    t.send_window(16 * 1024 * 1024);
    Arc::new(t)
}

fn runtime() -> Arc<dyn quinn::Runtime> {
    Arc::new(quinn::TokioRuntime)
}

/// The publisher's endpoint on the punched socket.
pub fn server_endpoint(sock: std::net::UdpSocket, id: &Identity) -> Result<quinn::Endpoint, String> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![id.cert.clone()], PrivateKeyDer::Pkcs8(id.key.clone_key()))
        .map_err(|e| e.to_string())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport());
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(cfg), sock, runtime()).map_err(|e| e.to_string())
}

/// The visitor's endpoint on the punched socket, dialing `remote` and trusting only `fp`.
pub async fn connect(
    sock: std::net::UdpSocket,
    remote: SocketAddr,
    fp: &str,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CertPolicy::pinned(
            provider(),
            fp.to_string(),
            fingerprint,
            "peer certificate does not match the P2P transcript",
        )))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport());
    let ep =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, sock, runtime()).map_err(|e| e.to_string())?;
    let conn = ep.connect_with(cfg, remote, SNI).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    Ok((ep, conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[tokio::test]
    async fn the_visitor_accepts_only_the_pinned_certificate() {
        let id = new_identity().unwrap();
        let other = new_identity().unwrap();
        assert_ne!(id.fingerprint, other.fingerprint);
        let server = server_endpoint(udp(), &id).unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn({
            let server = server.clone();
            async move {
                while let Some(incoming) = server.accept().await {
                    if let Ok(conn) = incoming.await {
                        return conn.remote_address();
                    }
                }
                panic!("endpoint closed");
            }
        });

        let err = connect(udp(), addr, &other.fingerprint).await.map(|_| ()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");

        let (ep, conn) = connect(udp(), addr, &id.fingerprint).await.unwrap();
        assert_eq!(accept.await.unwrap(), ep.local_addr().unwrap());
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
    }
}
