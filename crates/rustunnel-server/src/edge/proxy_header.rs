//! The PROXY protocol (v1 and v2) on the public edges: a load balancer in front of the server
//! names the visitor it forwards in a header before the connection's own bytes. The header is
//! read only from the peers the operator lists (`--proxy-protocol-from`), and then required of
//! them: anyone else could claim any address, and a listed peer that sent none would make every
//! visitor look like the balancer. With no list configured nothing here runs.
//!
//! The header is read without reading past it (exact reads for v2, a peek up to the line end
//! for v1), so the bytes after it reach TLS, the HTTP parser or the tunnel untouched.
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Addresses, Command};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::state::Shared;

/// The v2 signature; a v1 header starts with `PROXY `.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header (the specification's bound, CRLF included).
const V1_MAX: usize = 107;
/// Most v2 bytes after the fixed 16: address blocks take at most 216, and the TLVs balancers
/// add (connection ids, TLS details) tens more.
const V2_MAX_PAYLOAD: usize = 512;
pub use crate::proxy_from::{ProxyFrom, ProxyFromError, MAX_NETWORKS};

/// Why a connection from a listed balancer was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY header from a peer listed in proxy_protocol_from")]
    Missing,
    #[error("PROXY header longer than this server accepts")]
    TooLong,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("no complete PROXY header within {0:?}")]
    TimedOut(Duration),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The visitor behind a connection from a listed balancer, read from its PROXY header within
/// the handshake deadline; `None` (logged) refuses the connection.
pub async fn visitor(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Option<(TcpStream, SocketAddr)> {
    let addr = read_visitor(&mut stream, peer, shared).await?;
    Some((stream, addr))
}

/// [`visitor`] for a stream the caller keeps.
pub async fn read_visitor(stream: &mut TcpStream, peer: SocketAddr, shared: &Shared) -> Option<SocketAddr> {
    let deadline = shared.config().handshake_timeout;
    let r = match tokio::time::timeout(deadline, read_header(stream, peer)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyHeaderError::TimedOut(deadline)),
    };
    match r {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection from a PROXY protocol peer refused");
            None
        }
    }
}

/// Reads one PROXY header (v1 or v2) and nothing after it. The carried source address, or
/// `peer` itself for a v2 `LOCAL` command (the balancer's own health checks) and for headers
/// that carry no internet address (v1 `UNKNOWN`, v2 `UNSPEC` or UNIX), as the specification asks.
pub async fn read_header(stream: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let mut buf = [0u8; 16 + V2_MAX_PAYLOAD];
    // Both versions are longer than this (v1 at least 15 bytes, v2 16), so it never over-reads.
    stream.read_exact(&mut buf[..12]).await?;
    if &buf[..12] == V2_SIGNATURE {
        stream.read_exact(&mut buf[12..16]).await?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > V2_MAX_PAYLOAD {
            return Err(ProxyHeaderError::TooLong);
        }
        stream.read_exact(&mut buf[16..16 + len]).await?;
        let header =
            ppp::v2::Header::try_from(&buf[..16 + len]).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        return Ok(match (header.command, header.addresses) {
            (Command::Local, _) => peer,
            (Command::Proxy, Addresses::IPv4(a)) => SocketAddr::new(a.source_address.into(), a.source_port),
            (Command::Proxy, Addresses::IPv6(a)) => SocketAddr::new(a.source_address.into(), a.source_port),
            (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => peer,
        });
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    // The header ends at its LF: look ahead, and take only up to it.
    let mut len = 12;
    while !buf[..len].contains(&b'\n') {
        if len >= V1_MAX {
            return Err(ProxyHeaderError::TooLong);
        }
        let n = stream.peek(&mut buf[len..V1_MAX]).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let take = buf[len..len + n].iter().position(|&b| b == b'\n').map_or(n, |i| i + 1);
        stream.read_exact(&mut buf[len..len + take]).await?;
        len += take;
    }
    let header = ppp::v1::Header::try_from(&buf[..len]).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
        ppp::v1::Addresses::Tcp6(a) => SocketAddr::new(a.source_address.into(), a.source_port),
        ppp::v1::Addresses::Unknown => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Sends `bytes` (in pieces of `step`) on a loopback connection and reads a header there;
    /// returns what it read and the bytes left after it.
    async fn read(bytes: Vec<u8>, step: usize) -> (Result<SocketAddr, ProxyHeaderError>, Vec<u8>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            for piece in bytes.chunks(step) {
                c.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (mut s, peer) = l.accept().await.unwrap();
        let r = read_header(&mut s, peer).await;
        writer.await.unwrap();
        let mut rest = Vec::new();
        if r.is_ok() {
            s.read_to_end(&mut rest).await.unwrap();
        }
        (r, rest)
    }

    fn v2(command: u8, src: &str, dst: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        ppp::v2::Builder::with_addresses(0x20 | command, ppp::v2::Protocol::Stream, (src, dst)).build().unwrap()
    }

    #[tokio::test]
    async fn v1_and_v2_headers_name_the_visitor_and_leave_the_rest() {
        for step in [1, 5, 1000] {
            let mut b = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n".to_vec();
            let (r, rest) = read(b.clone(), step).await;
            assert_eq!(r.unwrap(), "203.0.113.7:51000".parse().unwrap());
            assert_eq!(rest, b"GET / HTTP/1.1\r\n");
            b = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\nhello".to_vec();
            assert_eq!(read(b, step).await.0.unwrap(), "[2001:db8::7]:51000".parse().unwrap());
            let mut b = v2(1, "198.51.100.9:4000", "10.0.0.1:443");
            b.extend_from_slice(b"\x16\x03\x01");
            let (r, rest) = read(b, step).await;
            assert_eq!(r.unwrap(), "198.51.100.9:4000".parse().unwrap());
            assert_eq!(rest, b"\x16\x03\x01");
        }
    }

    #[tokio::test]
    async fn local_and_unknown_use_the_real_peer() {
        let (r, _) = read(v2(0, "198.51.100.9:4000", "10.0.0.1:443"), 1000).await;
        assert_eq!(r.unwrap().ip(), IpAddr::from([127, 0, 0, 1]));
        let (r, rest) = read(b"PROXY UNKNOWN\r\nx".to_vec(), 1000).await;
        assert_eq!(r.unwrap().ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(rest, b"x");
    }

    #[tokio::test]
    async fn missing_malformed_and_oversized_headers_are_refused() {
        let (r, _) = read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 1000).await;
        assert!(matches!(r, Err(ProxyHeaderError::Missing)), "{r:?}");
        let (r, _) = read(b"PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n".to_vec(), 1000).await;
        assert!(matches!(r, Err(ProxyHeaderError::Malformed(_))), "{r:?}");
        let (r, _) = read(format!("PROXY TCP4 {}\r\n", "1".repeat(200)).into_bytes(), 1000).await;
        assert!(matches!(r, Err(ProxyHeaderError::TooLong)), "{r:?}");
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (r, _) = read(big, 1000).await;
        assert!(matches!(r, Err(ProxyHeaderError::TooLong)), "{r:?}");
        let (r, _) = read(b"PROXY TCP4 1.2.3.4".to_vec(), 1000).await;
        assert!(matches!(r, Err(ProxyHeaderError::Io(_))), "{r:?}");
    }

    #[test]
    fn the_config_key_is_read_and_checked() {
        use crate::config::{Config, FileConfig};
        let base = "dev = true\ncontrol_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n";
        let f =
            FileConfig::from_toml(&format!("{base}proxy_protocol_from = [\"10.0.0.0/24\", \"192.0.2.7\"]")).unwrap();
        let c = Config::from_file_config(f).unwrap();
        assert_eq!(c.proxy_protocol_from.networks(), ["10.0.0.0/24", "192.0.2.7/32"]);
        let f = FileConfig::from_toml(&format!("{base}proxy_protocol_from = [\"lb.internal\"]")).unwrap();
        let e = Config::from_file_config(f).err().unwrap().to_string();
        assert!(e.contains("'lb.internal' is not an IP address or network"), "{e}");
        let c = Config::from_file_config(FileConfig::from_toml(base).unwrap()).unwrap();
        assert!(c.proxy_protocol_from.is_empty());
    }

    #[test]
    fn the_list_parses_and_matches() {
        let from = ProxyFrom::parse(&["10.0.0.0/8, 192.0.2.7".into(), "fd00::/8".into()]).unwrap();
        assert!(from.trusts("10.1.2.3".parse().unwrap()));
        assert!(from.trusts("192.0.2.7".parse().unwrap()));
        assert!(from.trusts("::ffff:10.9.9.9".parse().unwrap()));
        assert!(from.trusts("fd00::1".parse().unwrap()));
        assert!(!from.trusts("192.0.2.8".parse().unwrap()));
        assert!(!ProxyFrom::default().trusts("10.1.2.3".parse().unwrap()));
        assert_eq!(from.networks(), ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
        assert!(matches!(ProxyFrom::parse(&["lb.example".into()]), Err(ProxyFromError::Syntax(_))));
        let many: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(ProxyFrom::parse(&many), Err(ProxyFromError::TooMany));
    }
}
