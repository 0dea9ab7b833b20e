//! Data connections: the stream header and UDP datagram framing.
//!
//! A data connection is a TLS connection the client opens to the control port and upgrades
//! with `Upgrade: rustunnel-data`. It then idles in the server's pool until a visitor arrives;
//! the server writes one [`StreamHeader`] (u16 big-endian length + JSON) and from then on the
//! connection carries the visitor's bytes verbatim (TCP, HTTP), or length-prefixed datagrams
//! (UDP: u16 big-endian length + payload, boundaries preserved).
//!
//! This module is the codec only; reading and writing these frames on a connection is
//! `rustunnel_transport::stream`.
use serde::{Deserialize, Serialize};

use crate::control::Protocol;
use crate::limits::{MAX_DATAGRAM, MAX_STREAM_HEADER};

/// Written by the server at the start of a handed-out data connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// Which of the client's tunnels this stream belongs to.
    pub tunnel_id: String,
    pub protocol: Protocol,
    /// The visitor's address as the server saw it.
    pub peer: String,
    /// This data connection carries a multiplexer (`rustunnel_transport::mux`) instead of one stream: each
    /// stream's OPEN meta is that stream's own header ([`StreamHeader::encode`]). Only sent to a
    /// client that said it takes them (`mux` in its hello).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mux: bool,
}

/// A malformed or oversized frame on a data connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed stream header: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    }
}

impl StreamHeader {
    /// Encodes as length-prefixed JSON.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(2 + json.len());
        out.extend_from_slice(&(json.len() as u16).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Decodes a header as [`StreamHeader::encode`] wrote it, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (len, json) = match bytes {
            [a, b, json @ ..] => (u16::from_be_bytes([*a, *b]) as usize, json),
            _ => return Err(FrameError::Closed),
        };
        if len > MAX_STREAM_HEADER {
            return Err(FrameError::TooLarge(len));
        }
        if json.len() != len {
            return Err(FrameError::Closed);
        }
        Ok(serde_json::from_slice(json)?)
    }

    /// The JSON length a header's 2-byte prefix announces, refused over [`MAX_STREAM_HEADER`]
    /// so a reader allocates nothing for a lying prefix.
    pub fn body_len(prefix: [u8; 2]) -> Result<usize, FrameError> {
        let len = usize::from(u16::from_be_bytes(prefix));
        if len > MAX_STREAM_HEADER {
            return Err(FrameError::TooLarge(len));
        }
        Ok(len)
    }
}

/// Appends one datagram with its length prefix to `out` (cleared first), so a writer sends
/// prefix and payload in a single write and small datagrams are not split across TLS records.
pub fn encode_datagram(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.len() > MAX_DATAGRAM {
        return Err(FrameError::TooLarge(payload.len()));
    }
    out.clear();
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The payload length a datagram's 2-byte prefix announces, refused over [`MAX_DATAGRAM`].
pub fn datagram_len(prefix: [u8; 2]) -> Result<usize, FrameError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_DATAGRAM {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip() {
        let h = StreamHeader { tunnel_id: "t1".into(), protocol: Protocol::Tcp, peer: "1.2.3.4:5".into(), mux: false };
        let bytes = h.encode();
        assert_eq!(StreamHeader::decode(&bytes).unwrap(), h);
        assert_eq!(StreamHeader::body_len([bytes[0], bytes[1]]).unwrap(), bytes.len() - 2);
        assert!(!String::from_utf8_lossy(&bytes).contains("mux"), "absent unless set");
        let m = StreamHeader { mux: true, ..h };
        assert_eq!(StreamHeader::decode(&m.encode()).unwrap(), m);
        assert!(StreamHeader::decode(&m.encode()[..5]).is_err());
        assert!(StreamHeader::decode(&[0xff, 0xff, b'{']).is_err());
    }

    #[test]
    fn lengths_over_the_limits_are_refused_from_the_prefix() {
        assert!(matches!(StreamHeader::body_len([0xff, 0xff]), Err(FrameError::TooLarge(65535))));
        let over = (MAX_DATAGRAM + 1) as u16;
        assert!(matches!(datagram_len(over.to_be_bytes()), Err(FrameError::TooLarge(_))));
        assert!(matches!(encode_datagram(&vec![0; MAX_DATAGRAM + 1], &mut Vec::new()), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn datagrams_carry_their_length() {
        let mut out = vec![9; 4];
        encode_datagram(b"hello", &mut out).unwrap();
        assert_eq!(out, b"\x00\x05hello");
        assert_eq!(datagram_len([out[0], out[1]]).unwrap(), 5);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = StreamHeader::decode(&bytes);
        }
    }
}
