//! Dialing: `host:port` parsing, `*.localhost` names kept on loopback (RFC 6761), TCP with
//! `TCP_NODELAY`, then TLS.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustunnel_transport::splice::ReadAhead;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;

/// Splits `host:port` (IPv6 in brackets). The port defaults to `default_port`.
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), ClientError> {
    let s = s.trim();
    let s = s.strip_prefix("wss://").or_else(|| s.strip_prefix("https://")).unwrap_or(s);
    let s = s.trim_end_matches('/');
    let bad = || ClientError::ServerAddress(s.to_string());
    // Port 0 parses but can never be dialed.
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    // A bare IPv6 literal: the colons are not a port separator.
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((s.to_string(), default_port));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(bad)?;
        let port = match p.strip_prefix(':') {
            Some(p) => port(p)?,
            None if p.is_empty() => default_port,
            None => return Err(bad()),
        };
        if h.is_empty() {
            return Err(bad());
        }
        return Ok((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !h.is_empty() => Ok((h.to_string(), port(p)?)),
        None if !s.is_empty() => Ok((s.to_string(), default_port)),
        _ => Err(bad()),
    }
}

/// Resolves a host; `localhost` and `*.localhost` always mean this machine.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if h == "localhost" || h.ends_with(".localhost") {
        return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

/// TCP connect to the first address that answers, with a deadline.
pub async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addrs = resolve(host, port).await?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} did not resolve"));
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                rustunnel_transport::tcp::tune(&s, addr);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {addr} timed out"))
            }
        }
    }
    Err(last)
}

/// A TLS connection to the server, over a read-ahead layer that batches rustls's small reads.
pub type ServerStream = TlsStream<ReadAhead<TcpStream>>;

/// Where the server is, and how to talk TLS to it.
#[derive(Clone)]
pub struct Dialer {
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Dialer {
    /// TCP to the server's control port (TCP_NODELAY set).
    pub async fn dial_tcp(&self) -> Result<TcpStream, ClientError> {
        connect_tcp(&self.host, self.port, Duration::from_secs(10))
            .await
            .map_err(|e| ClientError::Connect { addr: crate::config::host_port(&self.host, self.port), source: e })
    }

    fn server_name(&self) -> Result<ServerName<'static>, ClientError> {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
            Err(_) => ServerName::try_from(self.host.clone())
                .map_err(|_| ClientError::Config(format!("invalid server name '{}'", self.host))),
        }
    }

    /// TLS for a data connection: the lean stream, which holds no buffer while idle.
    pub async fn dial_lean(&self) -> Result<rustunnel_transport::lean_tls::LeanClient, ClientError> {
        let tcp = self.dial_tcp().await?;
        let name = self.server_name()?;
        tokio::time::timeout(
            Duration::from_secs(10),
            rustunnel_transport::lean_tls::LeanClient::connect(self.tls.clone(), name, tcp),
        )
        .await
        .map_err(|_| ClientError::Tls("TLS handshake timed out".into()))?
        .map_err(|e| ClientError::Tls(e.to_string()))
    }

    pub async fn dial(&self) -> Result<ServerStream, ClientError> {
        let tcp = self.dial_tcp().await?;
        let name = self.server_name()?;
        let tls = tokio::time::timeout(
            Duration::from_secs(10),
            TlsConnector::from(self.tls.clone()).connect(name, ReadAhead::new(tcp)),
        )
        .await
        .map_err(|_| ClientError::Tls("TLS handshake timed out".into()))?
        .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("localhost:4040", 1).unwrap(), ("localhost".into(), 4040));
        assert_eq!(split_host_port("example.com", 4040).unwrap(), ("example.com".into(), 4040));
        assert_eq!(split_host_port("[::1]:9", 1).unwrap(), ("::1".into(), 9));
        assert_eq!(split_host_port("::1", 7).unwrap(), ("::1".into(), 7));
        assert_eq!(split_host_port("wss://a.b:5/", 1).unwrap(), ("a.b".into(), 5));
        for bad in ["a:b", "", "127.0.0.1:notaport", "127.0.0.1:99999", "127.0.0.1:0", "[::1", "[]:4040", ":4040"] {
            let e = split_host_port(bad, 1).unwrap_err();
            assert_eq!(e.code(), "invalid_server_address", "{bad}");
        }
    }

    /// An IPv6 server address in an error is written as one (`[::1]:port`, not `::1:port`).
    #[tokio::test]
    async fn unreachable_ipv6_server_is_named_with_brackets() {
        let port = std::net::TcpListener::bind("[::1]:0").map(|l| l.local_addr().unwrap().port());
        let Ok(port) = port else { return }; // no IPv6 loopback here
        let tls = crate::tls::client_config(&crate::TlsOptions { insecure: true, ca: None }, &[]).unwrap();
        let d = Dialer { host: "::1".into(), port, tls };
        let e = d.dial_tcp().await.unwrap_err().to_string();
        assert!(e.contains(&format!("[::1]:{port}")), "{e}");
    }

    #[tokio::test]
    async fn localhost_names_stay_local() {
        let a = resolve("app.localhost", 80).await.unwrap();
        assert_eq!(a, vec!["127.0.0.1:80".parse().unwrap()]);
    }
}
