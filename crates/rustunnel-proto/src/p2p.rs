//! P2P address reflection: the UDP probe a client sends to the server's reflector port and the
//! answer carrying the address the server saw. Pure encode/decode; no sockets.
//!
//! Probe (exactly [`PROBE_LEN`] bytes): `\0RTP2P-PROBE1` | nonce (8 bytes) | zero padding.
//! Answer (never longer than the probe, so the reflector cannot amplify):
//! `\0RTP2P-REFLECT` | nonce (8 bytes) | u8 length | observed address as text (`1.2.3.4:5678`).
//!
//! Both start with a zero byte: a QUIC endpoint sharing the socket drops them (the QUIC fixed
//! bit is clear), so stray probes never disturb a connection.
use std::net::SocketAddr;

pub const PROBE_MAGIC: &[u8] = b"\0RTP2P-PROBE1";
pub const REFLECT_MAGIC: &[u8] = b"\0RTP2P-REFLECT";
/// Size of a probe; answers fit in it.
pub const PROBE_LEN: usize = 96;

/// Encodes a probe with this nonce.
pub fn encode_probe(nonce: u64) -> [u8; PROBE_LEN] {
    let mut out = [0u8; PROBE_LEN];
    out[..PROBE_MAGIC.len()].copy_from_slice(PROBE_MAGIC);
    out[PROBE_MAGIC.len()..PROBE_MAGIC.len() + 8].copy_from_slice(&nonce.to_be_bytes());
    out
}

/// The nonce of a well-formed probe; anything else is `None`.
pub fn decode_probe(pkt: &[u8]) -> Option<u64> {
    if pkt.len() != PROBE_LEN || !pkt.starts_with(PROBE_MAGIC) {
        return None;
    }
    let n = pkt.get(PROBE_MAGIC.len()..PROBE_MAGIC.len() + 8)?;
    Some(u64::from_be_bytes(n.try_into().ok()?))
}

/// Encodes the reflector's answer.
pub fn encode_reflect(nonce: u64, observed: SocketAddr) -> Vec<u8> {
    let addr = observed.to_string();
    let mut out = Vec::with_capacity(PROBE_LEN);
    out.extend_from_slice(REFLECT_MAGIC);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.push(addr.len() as u8);
    out.extend_from_slice(addr.as_bytes());
    out
}

/// Decodes an answer: `(nonce, observed address)`.
pub fn decode_reflect(pkt: &[u8]) -> Option<(u64, SocketAddr)> {
    let rest = pkt.strip_prefix(REFLECT_MAGIC)?;
    let nonce = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let len = *rest.get(8)? as usize;
    let text = std::str::from_utf8(rest.get(9..9 + len)?).ok()?;
    Some((nonce, text.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn probe_and_answer_round_trip() {
        let p = encode_probe(42);
        assert_eq!(decode_probe(&p), Some(42));
        let addr: SocketAddr = "[2001:db8::1]:65535".parse().unwrap();
        let a = encode_reflect(42, addr);
        assert!(a.len() <= PROBE_LEN, "answer must not be larger than the probe");
        assert_eq!(decode_reflect(&a), Some((42, addr)));
        assert_eq!(decode_probe(&p[..PROBE_LEN - 1]), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_probe(&b);
            let _ = decode_reflect(&b);
        }
    }
}
