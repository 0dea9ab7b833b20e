//! The slow-reader bound for visitor connections served by hyper (HTTP/1.0, chunked or
//! upgraded HTTP/1 requests, HTTP/2): a write the visitor accepts no byte of for the response
//! timeout fails, and hyper closes the connection. The edge's own HTTP/1.1 path has the same
//! bound in its copy (`h1::write_idle`).
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps a visitor connection: any write, flush or shutdown that stays pending for `limit`
/// without the visitor accepting a byte ends in `TimedOut`.
pub struct WriteStall<T> {
    inner: T,
    limit: Duration,
    /// Made at the first stall and reused: a connection that never stalls costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        WriteStall { inner, limit, timer: None, armed: false }
    }

    /// Passes a ready result through (progress, or the connection's own error) and disarms;
    /// on pending, arms the timer if it is not running and fails once it has run out.
    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        let deadline = Instant::now() + self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the visitor accepted no byte of the response for the response timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_times_out_and_progress_resets_the_clock() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = WriteStall::new(a, Duration::from_secs(5));
        // Room in the pipe: no stall.
        w.write_all(&[1u8; 1024]).await.unwrap();
        // Full: the reader takes a little every 3 s, so every stall is shorter than the limit.
        let reader = async {
            let mut buf = [0u8; 256];
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                b.read_exact(&mut buf).await.unwrap();
            }
            b
        };
        let (r, mut b) = tokio::join!(w.write_all(&[2u8; 2048]), reader);
        r.unwrap();
        // Now nobody reads: the next write that does not fit fails after 5 s.
        let started = Instant::now();
        let err = w.write_all(&[3u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let mut rest = Vec::new();
        drop(w);
        b.read_to_end(&mut rest).await.unwrap();
    }
}
