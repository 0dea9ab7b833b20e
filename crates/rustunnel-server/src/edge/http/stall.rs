//! The slow-reader bounds for visitors served by hyper (HTTP/1.0, chunked or upgraded HTTP/1
//! requests, HTTP/2). [`WriteStall`]: a write the visitor accepts no byte of for the response
//! timeout fails, and hyper closes the connection. [`StreamStall`]: an HTTP/2 response whose
//! stream the visitor gives no flow-control window for that long lets go of its upstream and
//! its concurrency permit, and the stream is reset. The edge's own HTTP/1.1 path has the same
//! bound in its copy (`lean::write_idle`).
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        if !self.armed {
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the visitor accepted no byte of the response for the response timeout",
            ))),
            _ => Poll::Pending,
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

/// An HTTP/2 response body watched for a visitor that stops opening its stream's window. hyper
/// asks a response body for its next frame only once the stream has window for it, so a body
/// that handed over a frame and has not been asked again within the limit is held up by the
/// visitor (a body waiting on its local service has been asked, and is not). A watcher task
/// then drops the body (the upstream stream and the tunnel's concurrency permit with it), and
/// the next ask gets an error, which resets the stream.
pub struct StreamStall<B> {
    watch: Arc<Watch<B>>,
    size: SizeHint,
}

struct Watch<B> {
    body: Mutex<Option<B>>,
    /// When the body last handed over a frame hyper has not asked past, in ms after `origin`
    /// (0: none).
    handed: AtomicU64,
    origin: Instant,
}

impl<B: HttpBody + Send + Unpin + 'static> StreamStall<B> {
    /// Watches `body` until it ends or is dropped, or `stop` is cancelled.
    pub fn new(body: B, limit: Duration, tasks: &TaskTracker, stop: CancellationToken) -> Self {
        let size = body.size_hint();
        let watch = Arc::new(Watch { body: Mutex::new(Some(body)), handed: AtomicU64::new(0), origin: Instant::now() });
        let weak = Arc::downgrade(&watch);
        let limit_ms = limit.as_millis() as u64;
        tasks.spawn(async move {
            // Checked twice per limit: a stalled stream is let go after 1 to 1.5 limits.
            let tick = (limit / 2).max(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.cancelled() => return,
                }
                let Some(w) = weak.upgrade() else { return };
                let handed = w.handed.load(Ordering::Relaxed);
                if handed != 0 && w.origin.elapsed().as_millis() as u64 >= handed + limit_ms {
                    let body = w.body.lock().take();
                    drop(body);
                    return;
                }
            }
        });
        StreamStall { watch, size }
    }
}

impl<B> HttpBody for StreamStall<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let w = &self.watch;
        w.handed.store(0, Ordering::Relaxed);
        let mut slot = w.body.lock();
        let Some(body) = slot.as_mut() else {
            return Poll::Ready(Some(Err(
                "the visitor opened no window for the response within the response timeout".into()
            )));
        };
        let r = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &r {
            w.handed.store((w.origin.elapsed().as_millis() as u64).max(1), Ordering::Relaxed);
        }
        r.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        // A body let go of is not at its end: the next ask must fail, not end the stream.
        self.watch.body.lock().as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

#[cfg(test)]
mod tests;
