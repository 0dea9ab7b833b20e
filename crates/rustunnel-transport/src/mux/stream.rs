//! The handles a mux's user holds: [`MuxHandle`] (opens streams, closes the mux),
//! [`Acceptor`] (the streams the peer opened) and [`MuxStream`], the `AsyncRead + AsyncWrite`
//! face of one stream over the shared state.
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::MuxError;
use super::frame::{
    push_frame, Role, HEADER_LEN, KIND_DATA, KIND_FIN, KIND_OPEN, KIND_RESET, MAX_META, MAX_PAYLOAD, PING_ID,
};
use super::state::{aborted, reset_error, set_waker, wake, Shared, Stream};

/// Opens streams and controls the mux. Cloneable; the mux closes once every handle, the
/// acceptor and every stream are dropped.
pub struct MuxHandle {
    pub(super) shared: Arc<Shared>,
}

impl MuxHandle {
    /// Opens a stream whose OPEN frame carries `meta` (at most [`MAX_META`] bytes). Only on the
    /// [`Role::Opener`] side. Never waits: the OPEN is queued with the stream's first bytes.
    pub fn open(&self, meta: &[u8]) -> Result<MuxStream, MuxError> {
        let shared = &self.shared;
        if shared.role != Role::Opener {
            return Err(MuxError::NotOpener);
        }
        if meta.len() > MAX_META {
            return Err(MuxError::MetaTooLarge(meta.len()));
        }
        let mut g = shared.lock();
        let inner = &mut *g;
        if inner.closed.is_some() || shared.closing.load(Ordering::Acquire) {
            return Err(MuxError::Closed);
        }
        if inner.streams.len() >= shared.max_streams {
            return Err(MuxError::TooManyStreams(shared.max_streams));
        }
        if inner.out.len() >= shared.out_limit {
            return Err(MuxError::Backlogged(inner.out.len()));
        }
        let id = inner.last_id.checked_add(1).filter(|&id| id != PING_ID).ok_or(MuxError::IdsExhausted)?;
        inner.last_id = id;
        push_frame(&mut inner.out, id, KIND_OPEN, meta);
        inner.streams.insert(id, Stream::new());
        inner.refs += 1;
        let w = inner.kick();
        drop(g);
        wake(w);
        Ok(MuxStream { id, shared: shared.clone() })
    }

    /// Whether the mux has ended or is closing: no stream can be opened any more.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire) || self.shared.lock().closed.is_some()
    }

    /// Closes the whole mux: every stream's I/O fails from now on; the driver sends what was
    /// already queued, shuts the connection down and returns.
    pub fn close(&self) {
        self.shared.fail_all("closed locally");
    }

    /// Streams open now (on the acceptor side: including those not accepted yet).
    pub fn stream_count(&self) -> usize {
        self.shared.lock().streams.len()
    }
}

impl Clone for MuxHandle {
    fn clone(&self) -> Self {
        self.shared.lock().refs += 1;
        MuxHandle { shared: self.shared.clone() }
    }
}

impl Drop for MuxHandle {
    fn drop(&mut self) {
        let w = self.shared.lock().release(&self.shared.closing);
        wake(w);
    }
}

impl fmt::Debug for MuxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxHandle").field("role", &self.shared.role).finish_non_exhaustive()
    }
}

/// Yields the streams the peer opens. Dropping it resets the streams not accepted yet, and
/// every stream opened later.
pub struct Acceptor {
    pub(super) shared: Arc<Shared>,
}

impl Acceptor {
    /// The next stream the peer opened and its meta; `None` once the mux has ended.
    pub async fn accept(&mut self) -> Option<(Vec<u8>, MuxStream)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Poll form of [`Acceptor::accept`].
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Vec<u8>, MuxStream)>> {
        let mut g = self.shared.lock();
        if g.closed.is_some() {
            return Poll::Ready(None);
        }
        if let Some((id, meta)) = g.accept_queue.pop_front() {
            g.refs += 1;
            return Poll::Ready(Some((meta, MuxStream { id, shared: self.shared.clone() })));
        }
        set_waker(&mut g.accept_waker, cx);
        Poll::Pending
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let mut g = shared.lock();
        let inner = &mut *g;
        inner.acceptor_alive = false;
        inner.accept_waker = None;
        let mut queued = false;
        while let Some((id, _)) = inner.accept_queue.pop_front() {
            inner.remove(id);
            if inner.closed.is_none() {
                push_frame(&mut inner.out, id, KIND_RESET, &[]);
                queued = true;
            }
        }
        let w1 = if queued { inner.kick() } else { None };
        let w2 = inner.release(&shared.closing);
        drop(g);
        wake(w1);
        wake(w2);
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").field("role", &self.shared.role).finish_non_exhaustive()
    }
}

/// One multiplexed stream: `AsyncRead + AsyncWrite`, see the [multiplexer doc](super) for its semantics.
pub struct MuxStream {
    pub(super) id: u32,
    pub(super) shared: Arc<Shared>,
}

impl MuxStream {
    /// The stream's id on the wire.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes received and not read yet (never more than the window).
    pub fn buffered(&self) -> usize {
        self.shared.lock().streams.get(&self.id).map_or(0, |s| s.inbound.len())
    }
}

impl fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxStream").field("id", &self.id).finish_non_exhaustive()
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let shared = &*self.shared;
        let mut g = shared.lock();
        let inner = &mut *g;
        let Some(s) = inner.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(aborted(inner.closed.as_deref())));
        };
        if s.inbound.is_empty() {
            if s.fin_recv {
                return Poll::Ready(Ok(()));
            }
            if s.reset_recv {
                return Poll::Ready(Err(reset_error()));
            }
            if let Some(reason) = &inner.closed {
                return Poll::Ready(Err(aborted(Some(reason))));
            }
            set_waker(&mut s.read_waker, cx);
            return Poll::Pending;
        }
        let (a, b) = s.inbound.as_slices();
        let n1 = a.len().min(buf.remaining());
        buf.put_slice(&a[..n1]);
        let n2 = b.len().min(buf.remaining());
        buf.put_slice(&b[..n2]);
        let n = n1 + n2;
        let w = shared.took(inner, self.id, n);
        drop(g);
        wake(w);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let shared = &*self.shared;
        let mut g = shared.lock();
        let inner = &mut *g;
        if let Some(reason) = &inner.closed {
            return Poll::Ready(Err(aborted(Some(reason))));
        }
        let Some(s) = inner.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(aborted(None)));
        };
        if s.reset_recv {
            return Poll::Ready(Err(reset_error()));
        }
        if s.fin_sent {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "mux stream: write after shutdown")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if s.send_credit == 0 {
            set_waker(&mut s.write_waker, cx);
            return Poll::Pending;
        }
        let queued = inner.out.len();
        if queued >= shared.batch_limit {
            set_waker(&mut s.write_waker, cx);
            if !s.out_waiting {
                s.out_waiting = true;
                inner.out_waiters.push(self.id);
            }
            return Poll::Pending;
        }
        let credit = usize::try_from(s.send_credit).unwrap_or(usize::MAX);
        let n = buf.len().min(credit).min((shared.batch_limit - queued).max(MAX_PAYLOAD));
        s.send_credit -= n as u64;
        inner.out.reserve(n + n.div_ceil(MAX_PAYLOAD) * HEADER_LEN);
        for chunk in buf[..n].chunks(MAX_PAYLOAD) {
            push_frame(&mut inner.out, self.id, KIND_DATA, chunk);
        }
        let w = inner.kick();
        drop(g);
        wake(w);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.shared.lock().closed {
            Some(reason) => Poll::Ready(Err(aborted(Some(reason)))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &*self.shared;
        let mut g = shared.lock();
        let inner = &mut *g;
        let Some(s) = inner.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(aborted(inner.closed.as_deref())));
        };
        if s.fin_sent {
            return Poll::Ready(Ok(()));
        }
        if s.reset_recv {
            return Poll::Ready(Err(reset_error()));
        }
        if let Some(reason) = &inner.closed {
            return Poll::Ready(Err(aborted(Some(reason))));
        }
        s.fin_sent = true;
        push_frame(&mut inner.out, self.id, KIND_FIN, &[]);
        let w = inner.kick();
        drop(g);
        wake(w);
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let mut g = shared.lock();
        let inner = &mut *g;
        let mut w1 = None;
        if let Some(s) = inner.remove(self.id) {
            let finished = s.fin_sent && s.fin_recv;
            if !finished && !s.reset_recv && inner.closed.is_none() {
                push_frame(&mut inner.out, self.id, KIND_RESET, &[]);
                w1 = inner.kick();
            }
        }
        let w2 = inner.release(&shared.closing);
        drop(g);
        wake(w1);
        wake(w2);
    }
}
