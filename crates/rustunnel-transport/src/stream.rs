//! Reading and writing the frames of a data connection: the stream header the server writes
//! first, and the length-prefixed datagrams of UDP tunnels. The codec itself is
//! [`rustunnel_proto::stream`].
use rustunnel_proto::stream::{datagram_len, encode_datagram, FrameError, StreamHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one header, refusing lengths over the limit before allocating.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<StreamHeader, FrameError> {
    // Nothing held while waiting for the prefix: an idle pooled connection waits here.
    let prefix = r.read_u16().await?.to_be_bytes();
    let len = StreamHeader::body_len(prefix)?;
    let mut buf = vec![0u8; 2 + len];
    buf[..2].copy_from_slice(&prefix);
    r.read_exact(&mut buf[2..]).await?;
    StreamHeader::decode(&buf)
}

/// Writes one datagram with its length prefix in a single write, so small datagrams
/// are not split across TLS records.
pub async fn write_datagram<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_datagram(payload, scratch)?;
    w.write_all(scratch).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one datagram into `buf` (resized to the datagram's length).
pub async fn read_datagram<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = datagram_len(r.read_u16().await?.to_be_bytes())?;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustunnel_proto::control::Protocol;

    #[tokio::test]
    async fn header_round_trip() {
        let h = StreamHeader { tunnel_id: "t1".into(), protocol: Protocol::Tcp, peer: "1.2.3.4:5".into(), mux: false };
        let bytes = h.encode();
        let got = read_header(&mut &bytes[..]).await.unwrap();
        assert_eq!(got, h);
        let m = StreamHeader { mux: true, ..h };
        assert_eq!(read_header(&mut &m.encode()[..]).await.unwrap(), m);
    }

    #[tokio::test]
    async fn huge_length_refused_before_allocating() {
        let bytes = [0xff, 0xff, b'{'];
        assert!(matches!(read_header(&mut &bytes[..]).await, Err(FrameError::TooLarge(65535))));
    }

    #[tokio::test]
    async fn truncated_is_closed() {
        let bytes = [0x00, 0x10, b'{'];
        assert!(matches!(read_header(&mut &bytes[..]).await, Err(FrameError::Closed)));
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
                let _ = read_header(&mut &bytes[..]).await;
                let mut buf = Vec::new();
                let _ = read_datagram(&mut &bytes[..], &mut buf).await;
            });
        }
    }
}
