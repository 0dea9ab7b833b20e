//! Plain data connections: for a server and its clients on a network the operator already
//! trusts (same host, private network, VPN), data connections may skip TLS so that both ends
//! can move bytes between sockets with `splice(2)` and never copy them through user space.
//! Both ends must opt in (`--allow-plain-data` on the server, `--plain-data` on the client);
//! the control connection, and with it the token, always stays on TLS.
//!
//! The data key never crosses the wire in the clear: the server sends a fresh nonce and the
//! client proves it knows the key with an HMAC over it.
//!
//! ```text
//! client -> server   PLAIN_MAGIC                              (24 bytes)
//! server -> client   nonce                                    (32 bytes)
//! client -> server   len(session id) u8, session id, HMAC     (1 + n + 32 bytes)
//! server -> client   status: 0 accepted, 1 refused            (1 byte)
//! ```
//! HMAC = HMAC-SHA256(key = data key, "rustunnel plain data v1\0" || nonce || session id).
//! After an accepted handshake the connection idles in the pool like a TLS one.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// First bytes of a plain data connection on the control port. A TLS connection starts with
/// 0x16 (handshake record), so one byte tells the two apart.
pub const PLAIN_MAGIC: &[u8; 24] = b"RUSTUNNEL-PLAIN-DATA/1\r\n";
pub const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Longest session id accepted in the handshake.
const MAX_SESSION_ID: usize = 64;
const DOMAIN: &[u8] = b"rustunnel plain data v1\0";
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Why a plain handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    #[error("not a plain data connection")]
    BadMagic,
    #[error("session id of {0} bytes exceeds the limit")]
    TooLong(usize),
    #[error("unknown session, plain data not allowed for it, or wrong key")]
    Refused,
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn mac(data_key: &str, nonce: &[u8; NONCE_LEN], session_id: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(data_key.as_bytes()).unwrap_or_else(|_| unreachable!());
    m.update(DOMAIN);
    m.update(nonce);
    m.update(session_id.as_bytes());
    m
}

/// Client side, on a fresh TCP connection to the control port.
pub async fn client_handshake<S>(s: &mut S, session_id: &str, data_key: &str) -> Result<(), PlainError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if session_id.len() > MAX_SESSION_ID {
        return Err(PlainError::TooLong(session_id.len()));
    }
    s.write_all(PLAIN_MAGIC).await?;
    let mut nonce = [0u8; NONCE_LEN];
    s.read_exact(&mut nonce).await?;
    let tag = mac(data_key, &nonce, session_id).finalize().into_bytes();
    let mut msg = Vec::with_capacity(1 + session_id.len() + MAC_LEN);
    msg.push(session_id.len() as u8);
    msg.extend_from_slice(session_id.as_bytes());
    msg.extend_from_slice(&tag);
    s.write_all(&msg).await?;
    let mut status = [0u8; 1];
    s.read_exact(&mut status).await?;
    match status[0] {
        ACCEPTED => Ok(()),
        _ => Err(PlainError::Refused),
    }
}

/// Server side, once the first byte matched [`PLAIN_MAGIC`]. `key_of` returns the data key of
/// a session that may use plain data connections. Returns the authenticated session id.
pub async fn server_handshake<S, F>(s: &mut S, nonce: [u8; NONCE_LEN], key_of: F) -> Result<String, PlainError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&str) -> Option<String>,
{
    let mut magic = [0u8; PLAIN_MAGIC.len()];
    s.read_exact(&mut magic).await?;
    if &magic != PLAIN_MAGIC {
        return Err(PlainError::BadMagic);
    }
    s.write_all(&nonce).await?;
    let len = s.read_u8().await? as usize;
    if len > MAX_SESSION_ID {
        return Err(PlainError::TooLong(len));
    }
    let mut rest = vec![0u8; len + MAC_LEN];
    s.read_exact(&mut rest).await?;
    let (sid, tag) = rest.split_at(len);
    let sid = String::from_utf8_lossy(sid).into_owned();
    let ok = key_of(&sid).is_some_and(|key| mac(&key, &nonce, &sid).verify_slice(tag).is_ok());
    s.write_all(&[if ok { ACCEPTED } else { REFUSED }]).await?;
    if ok {
        Ok(sid)
    } else {
        Err(PlainError::Refused)
    }
}

/// A data connection: TLS (`T`) or plain TCP. Plain pairs of sockets are spliced without
/// copies (see [`crate::zerocopy`]).
pub enum DataConn<T> {
    Tls(T),
    Plain(TcpStream),
}

impl<T> DataConn<T> {
    pub fn as_plain_mut(&mut self) -> Option<&mut TcpStream> {
        match self {
            DataConn::Plain(s) => Some(s),
            DataConn::Tls(_) => None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DataConn<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataConn::Tls(s) => Pin::new(s).poll_read(cx, buf),
            DataConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DataConn<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DataConn::Tls(s) => Pin::new(s).poll_write(cx, buf),
            DataConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DataConn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            DataConn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            DataConn::Tls(s) => s.is_write_vectored(),
            DataConn::Plain(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataConn::Tls(s) => Pin::new(s).poll_flush(cx),
            DataConn::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataConn::Tls(s) => Pin::new(s).poll_shutdown(cx),
            DataConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(client_key: &str, server_key: Option<&str>) -> (Result<(), PlainError>, Result<String, PlainError>) {
        let (mut c, mut s) = tokio::io::duplex(1024);
        let server_key = server_key.map(str::to_string);
        let server = tokio::spawn(async move {
            server_handshake(&mut s, [7u8; NONCE_LEN], |sid| (sid == "sess-1").then_some(server_key).flatten()).await
        });
        let client = client_handshake(&mut c, "sess-1", client_key).await;
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn right_key_is_accepted_and_the_key_never_crosses() {
        let (c, s) = run("k3y", Some("k3y")).await;
        assert!(c.is_ok());
        assert_eq!(s.unwrap(), "sess-1");
    }

    #[tokio::test]
    async fn wrong_key_or_disallowed_session_is_refused() {
        let (c, s) = run("wrong", Some("k3y")).await;
        assert!(matches!(c, Err(PlainError::Refused)));
        assert!(matches!(s, Err(PlainError::Refused)));
        let (c, s) = run("k3y", None).await;
        assert!(matches!(c, Err(PlainError::Refused)));
        assert!(matches!(s, Err(PlainError::Refused)));
    }

    #[tokio::test]
    async fn a_captured_handshake_replayed_against_a_fresh_nonce_is_refused() {
        // Capture everything a real client sent in an accepted handshake...
        let (mut c, mut s) = tokio::io::duplex(4096);
        let server =
            tokio::spawn(async move { server_handshake(&mut s, [7u8; NONCE_LEN], |_| Some("k3y".to_string())).await });
        let (mut cr, mut cw) = tokio::io::split(&mut c);
        let mut tap = Vec::new();
        let mut nonce = [0u8; NONCE_LEN];
        cw.write_all(PLAIN_MAGIC).await.unwrap();
        tap.extend_from_slice(PLAIN_MAGIC);
        cr.read_exact(&mut nonce).await.unwrap();
        let tag = mac("k3y", &nonce, "sess-1").finalize().into_bytes();
        let mut msg = vec![6u8];
        msg.extend_from_slice(b"sess-1");
        msg.extend_from_slice(&tag);
        cw.write_all(&msg).await.unwrap();
        tap.extend_from_slice(&msg);
        let mut status = [0u8; 1];
        cr.read_exact(&mut status).await.unwrap();
        assert_eq!(status[0], ACCEPTED);
        drop(c);
        assert_eq!(server.await.unwrap().unwrap(), "sess-1");
        // ...and replay it byte for byte: the server's nonce is new, so the proof is stale.
        let (mut c, mut s) = tokio::io::duplex(4096);
        c.write_all(&tap).await.unwrap();
        let r = server_handshake(&mut s, [8u8; NONCE_LEN], |_| Some("k3y".to_string())).await;
        assert!(matches!(r, Err(PlainError::Refused)), "{r:?}");
        let mut answer = vec![0u8; NONCE_LEN + 1];
        c.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[NONCE_LEN], REFUSED);
    }

    #[tokio::test]
    async fn garbage_is_refused_before_anything_is_allocated() {
        let (mut c, mut s) = tokio::io::duplex(1024);
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(matches!(server_handshake(&mut s, [0; NONCE_LEN], |_| None).await, Err(PlainError::BadMagic)));
        let (mut c, mut s) = tokio::io::duplex(1024);
        c.write_all(PLAIN_MAGIC).await.unwrap();
        c.write_all(&[255]).await.unwrap();
        assert!(matches!(server_handshake(&mut s, [0; NONCE_LEN], |_| None).await, Err(PlainError::TooLong(255))));
    }
}
