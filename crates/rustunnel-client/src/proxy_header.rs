//! The PROXY protocol towards a local service (`--proxy-protocol v1|v2`): each connection the
//! client opens to it starts with a header naming the visitor the server handed over, so the
//! service sees the visitor's address instead of the client's.
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Which PROXY protocol header a tunnel sends its local service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

impl FromStr for ProxyProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            other => Err(format!("unknown PROXY protocol version '{other}' (expected v1 or v2)")),
        }
    }
}

/// The header for a connection from `visitor` to the local service at `local`. Without a
/// visitor address (a server too old to name the visitor of an HTTP stream) it says so:
/// `UNKNOWN` (v1) or `LOCAL` (v2), which tells the service to use the connection's own address.
pub fn encode(version: ProxyProtocol, visitor: Option<SocketAddr>, local: SocketAddr) -> Vec<u8> {
    // Both addresses of one family, as both versions require: IPv4 ones are mapped into IPv6
    // when the other side is IPv6.
    let pair = visitor.map(|v| match (v, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (v, local),
        _ => (as_v6(v), as_v6(local)),
    });
    match version {
        ProxyProtocol::V1 => match pair {
            Some(p) => ppp::v1::Addresses::from(p).to_string().into_bytes(),
            None => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        },
        ProxyProtocol::V2 => {
            let built = match pair {
                Some(p) => ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, p).build(),
                None => ppp::v2::Builder::with_addresses(
                    0x20,
                    ppp::v2::Protocol::Unspecified,
                    ppp::v2::Addresses::Unspecified,
                )
                .build(),
            };
            // Building into a Vec cannot fail; the fixed LOCAL header is the fallback regardless.
            built.unwrap_or_else(|_| {
                let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
                h
            })
        }
    }
}

fn as_v6(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// Writes the header for the visitor `peer` (as the stream header gave it) to a new
/// connection to the local service.
pub async fn send(version: ProxyProtocol, peer: &str, local: &mut TcpStream) -> std::io::Result<()> {
    let visitor = peer.parse::<SocketAddr>().ok();
    let header = encode(version, visitor, local.peer_addr()?);
    local.write_all(&header).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_back_to_the_visitor() {
        let visitor: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let v1 = encode(ProxyProtocol::V1, Some(visitor), local);
        assert_eq!(v1, b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 5432\r\n");
        let v2 = encode(ProxyProtocol::V2, Some(visitor), local);
        let h = ppp::v2::Header::try_from(v2.as_slice()).unwrap();
        assert_eq!(h.command, ppp::v2::Command::Proxy);
        assert_eq!(h.addresses, ppp::v2::Addresses::from((visitor, local)));
        // Mixed families: both as IPv6.
        let v6: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let v1 = String::from_utf8(encode(ProxyProtocol::V1, Some(v6), local)).unwrap();
        assert_eq!(v1, "PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 4000 5432\r\n");
        // No visitor known.
        assert_eq!(encode(ProxyProtocol::V1, None, local), b"PROXY UNKNOWN\r\n");
        let h = encode(ProxyProtocol::V2, None, local);
        assert_eq!(ppp::v2::Header::try_from(h.as_slice()).unwrap().command, ppp::v2::Command::Local);
    }

    #[test]
    fn versions_parse() {
        assert_eq!("v2".parse::<ProxyProtocol>(), Ok(ProxyProtocol::V2));
        assert_eq!("V1".parse::<ProxyProtocol>(), Ok(ProxyProtocol::V1));
        assert!("v3".parse::<ProxyProtocol>().is_err());
    }
}
