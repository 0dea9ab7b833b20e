//! Bidirectional copy with half-close, like `tokio::io::copy_bidirectional`, but an idle
//! connection holds no buffer: a direction borrows a buffer from a small per-thread pool only
//! while bytes are in flight and returns it as soon as its reader has nothing more. Thousands of
//! held, quiet connections then cost only their sockets and TLS state.
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of one copy buffer: two full TLS records.
pub const BUF_SIZE: usize = 32 * 1024;
/// Buffers kept for reuse per thread; beyond that they are freed.
const POOL_MAX: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer of [`BUF_SIZE`] bytes from the per-thread pool (or a new one).
pub fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

/// Returns a buffer to the per-thread pool (dropped when the pool is full).
pub fn give_buf(b: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    })
}

/// Bytes waiting in a pooled buffer, `buf[start..end]`. The buffer is taken from its pool when
/// bytes arrive and given back as soon as none are left, so an idle owner holds nothing.
pub(crate) struct Window {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    take: fn() -> Box<[u8]>,
    give: fn(Box<[u8]>),
}

impl Window {
    /// An empty window over the pool `take` / `give`.
    pub(crate) const fn new(take: fn() -> Box<[u8]>, give: fn(Box<[u8]>)) -> Window {
        Window { buf: None, start: 0, end: 0, take, give }
    }

    pub(crate) fn pending(&self) -> &[u8] {
        self.buf.as_deref().map(|b| &b[self.start..self.end]).unwrap_or(&[])
    }

    pub(crate) fn pending_mut(&mut self) -> &mut [u8] {
        match self.buf.as_deref_mut() {
            Some(b) => &mut b[self.start..self.end],
            None => &mut [],
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether a buffer is held (only while bytes are pending, or between `spare` and `commit`).
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.buf.is_some()
    }

    /// Length of the held buffer.
    pub(crate) fn capacity(&self) -> Option<usize> {
        self.buf.as_ref().map(|b| b.len())
    }

    /// The free part after the pending bytes, to be filled and then [`Window::commit`]ted;
    /// takes a buffer if none is held, and moves the pending bytes to the front first when
    /// fewer than `want` bytes are free.
    pub(crate) fn spare(&mut self, want: usize) -> &mut [u8] {
        let buf = self.buf.get_or_insert_with(self.take);
        if self.start > 0 && buf.len() - self.end < want {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    /// Like [`Window::spare`], with a bigger buffer (not from the pool) when the pool's is too
    /// small for `need` more bytes.
    pub(crate) fn reserve(&mut self, need: usize) -> &mut [u8] {
        if self.spare(need).len() < need {
            let buf = self.buf.as_mut().expect("spare holds a buffer");
            let mut bigger = vec![0u8; self.end + need].into_boxed_slice();
            bigger[..self.end].copy_from_slice(&buf[..self.end]);
            (self.give)(std::mem::replace(buf, bigger));
        }
        self.spare(need)
    }

    /// Adds `n` bytes written into [`Window::spare`]; gives the buffer back if there are none.
    pub(crate) fn commit(&mut self, n: usize) {
        self.end += n;
        self.release_if_empty();
    }

    /// Drops `n` bytes from the front; gives the buffer back once none are left.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        self.release_if_empty();
    }

    fn release_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if let Some(b) = self.buf.take() {
                (self.give)(b);
            }
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            (self.give)(b);
        }
    }
}

/// Read-ahead under a TLS stream. rustls pulls at most about 4 KiB from its transport per
/// call, so a 16 KiB record costs four `read` syscalls; this layer reads up to [`BUF_SIZE`] at
/// once into a pooled buffer and serves rustls from it. Like the splice, it owns a buffer only
/// while unread bytes are pending, so an idle connection costs nothing. Writes pass through.
pub struct ReadAhead<T> {
    inner: T,
    ahead: Window,
}

impl<T> ReadAhead<T> {
    pub fn new(inner: T) -> Self {
        ReadAhead { inner, ahead: Window::new(take_buf, give_buf) }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ahead.is_empty() {
            if out.remaining() >= BUF_SIZE {
                // The caller's buffer is big enough: no point copying through ours.
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut rb = ReadBuf::new(this.ahead.spare(0));
            let r = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.ahead.commit(n);
            if n == 0 {
                return r;
            }
        }
        let pending = this.ahead.pending();
        let n = out.remaining().min(pending.len());
        out.put_slice(&pending[..n]);
        this.ahead.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Default)]
struct Direction {
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    amt: u64,
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
    }
}

impl Direction {
    fn poll_copy<R, W>(&mut self, cx: &mut Context<'_>, mut r: Pin<&mut R>, mut w: Pin<&mut W>) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.amt));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                let mut buf = self.buf.take().unwrap_or_else(take_buf);
                let mut rb = ReadBuf::new(&mut buf);
                match r.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Nothing to copy: hand the buffer back while we wait, and push out
                        // whatever the writer still holds (TLS records, Nagle-free sockets).
                        give_buf(buf);
                        if self.need_flush {
                            ready!(w.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        give_buf(buf);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                            give_buf(buf);
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            self.buf = Some(buf);
                        }
                    }
                }
            }
            while self.pos < self.cap {
                let Some(buf) = self.buf.as_ref() else { break };
                let n = ready!(w.as_mut().poll_write(cx, &buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::WriteZero, "write zero bytes")));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.pos == self.cap {
                self.pos = 0;
                self.cap = 0;
            }
            if self.read_done && self.pos == self.cap {
                ready!(w.as_mut().poll_flush(cx))?;
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.amt));
            }
        }
    }
}

/// Copies both ways until both directions have ended, shutting down each writer when its
/// reader reaches EOF (half-close). Returns bytes copied `a -> b` and `b -> a`.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Direction::default();
    let mut ba = Direction::default();
    poll_fn(|cx| {
        let r1 = ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let r2 = ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (r1, r2) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut a_outer, mut a_inner) = tokio::io::duplex(1024);
        let (mut b_inner, mut b_outer) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { splice(&mut a_inner, &mut b_inner).await });
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            a_outer.write_all(&d2).await.unwrap();
            a_outer.shutdown().await.unwrap();
            let mut back = Vec::new();
            a_outer.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b_outer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        // The other direction still works after the first one closed.
        b_outer.write_all(b"reply after half-close").await.unwrap();
        b_outer.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let (x, y) = task.await.unwrap().unwrap();
        assert_eq!((x, y), (300_000, 22));
    }

    #[tokio::test]
    async fn idle_connections_hold_no_buffer() {
        let (_a_outer, mut a_inner) = tokio::io::duplex(64);
        let (mut b_inner, _b_outer) = tokio::io::duplex(64);
        let mut ab = Direction::default();
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(ab.poll_copy(&mut cx, Pin::new(&mut a_inner), Pin::new(&mut b_inner)).is_pending());
        assert!(ab.buf.is_none(), "a pending read gives its buffer back");
    }

    #[tokio::test]
    async fn read_ahead_serves_small_reads_from_one_large_read() {
        let (mut w, r) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        w.write_all(&data).await.unwrap();
        drop(w);
        let mut ra = ReadAhead::new(r);
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            let n = ra.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        assert!(!ra.ahead.is_held(), "drained read-ahead holds no buffer");
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
