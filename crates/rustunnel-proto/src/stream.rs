//! Data connections: the stream header and UDP datagram framing.
//!
//! A data connection is a TLS connection the client opens to the control port and upgrades
//! with `Upgrade: rustunnel-data`. It then idles in the server's pool until a visitor arrives;
//! the server writes one [`StreamHeader`] (u16 big-endian length + JSON) and from then on the
//! connection carries the visitor's bytes verbatim (TCP, HTTP), or length-prefixed datagrams
//! (UDP: u16 big-endian length + payload, boundaries preserved).
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    /// This data connection carries a multiplexer ([`crate::mux`]) instead of one stream: each
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

    /// Reads one header, refusing lengths over [`MAX_STREAM_HEADER`] before allocating.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Self, FrameError> {
        // Nothing held while waiting for the prefix: an idle pooled connection waits here.
        let prefix = r.read_u16().await?;
        let len = usize::from(prefix);
        if len > MAX_STREAM_HEADER {
            return Err(FrameError::TooLarge(len));
        }
        let mut buf = vec![0u8; 2 + len];
        buf[..2].copy_from_slice(&prefix.to_be_bytes());
        r.read_exact(&mut buf[2..]).await?;
        Self::decode(&buf)
    }
}

/// Writes one datagram with its length prefix in a single write, so small datagrams
/// are not split across TLS records.
pub async fn write_datagram<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if payload.len() > MAX_DATAGRAM {
        return Err(FrameError::TooLarge(payload.len()));
    }
    scratch.clear();
    scratch.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    scratch.extend_from_slice(payload);
    w.write_all(scratch).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one datagram into `buf` (resized to the datagram's length).
pub async fn read_datagram<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = r.read_u16().await? as usize;
    if len > MAX_DATAGRAM {
        return Err(FrameError::TooLarge(len));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn header_round_trip() {
        let h = StreamHeader { tunnel_id: "t1".into(), protocol: Protocol::Tcp, peer: "1.2.3.4:5".into(), mux: false };
        let bytes = h.encode();
        let got = StreamHeader::read(&mut &bytes[..]).await.unwrap();
        assert_eq!(got, h);
        assert_eq!(StreamHeader::decode(&bytes).unwrap(), h);
        assert!(!String::from_utf8_lossy(&bytes).contains("mux"), "absent unless set");
        let m = StreamHeader { mux: true, ..h };
        assert_eq!(StreamHeader::decode(&m.encode()).unwrap(), m);
        assert!(StreamHeader::decode(&m.encode()[..5]).is_err());
        assert!(StreamHeader::decode(&[0xff, 0xff, b'{']).is_err());
    }

    #[tokio::test]
    async fn huge_length_refused_before_allocating() {
        let bytes = [0xff, 0xff, b'{'];
        assert!(matches!(StreamHeader::read(&mut &bytes[..]).await, Err(FrameError::TooLarge(65535))));
    }

    #[tokio::test]
    async fn truncated_is_closed() {
        let bytes = [0x00, 0x10, b'{'];
        assert!(matches!(StreamHeader::read(&mut &bytes[..]).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn datagrams_keep_boundaries() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        for d in [&b"a"[..], b"", b"hello world"] {
            write_datagram(&mut out, d, &mut scratch).await.unwrap();
        }
        let mut r = &out[..];
        let mut buf = Vec::new();
        for d in [&b"a"[..], b"", b"hello world"] {
            read_datagram(&mut r, &mut buf).await.unwrap();
            assert_eq!(buf, d);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let _ = StreamHeader::read(&mut &bytes[..]).await;
                let mut buf = Vec::new();
                let _ = read_datagram(&mut &bytes[..], &mut buf).await;
            });
        }
    }
}
