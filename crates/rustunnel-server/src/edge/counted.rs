//! An IO wrapper that adds the bytes it moves to a tunnel's counters.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tunnel::TunnelStats;

/// Wraps the tunnel side of a connection: what is written to it goes to the local service
/// (bytes in), what is read from it comes back to the visitor (bytes out).
pub struct Counted<T> {
    inner: T,
    stats: Arc<TunnelStats>,
}

impl<T> Counted<T> {
    pub fn new(inner: T, stats: Arc<TunnelStats>) -> Self {
        Counted { inner, stats }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.stats.add_out(n);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats.add_in(*n);
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats.add_in(*n);
        }
        r
    }
    rustunnel_transport::forward_write!(inner: poll_flush, poll_shutdown, is_write_vectored);
}
