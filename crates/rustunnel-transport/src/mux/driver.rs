//! The task that owns the connection: it writes the queued frames in batches and reads the
//! peer's frames into the shared state, until the mux ends.
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::config::MuxConfig;
use super::error::MuxError;
use super::frame::{ProtocolError, Role, HEADER_LEN};
use super::state::{dispatch, set_waker, Shared};
use super::stream::{Acceptor, MuxHandle};

/// The reader moves a partial frame to the front of its buffer when less than this is free.
const MIN_READ_ROOM: usize = 16 * 1024;
/// Reads per driver poll before it lets other tasks run.
const READS_PER_POLL: usize = 16;
/// Yields of the writer before one batch at most (see [`MuxConfig::yield_before_write`]).
const MAX_YIELDS: u32 = 4;
/// Batches that still yield after a yield that gathered nothing more.
const YIELD_CREDIT: u32 = 8;
/// While yields gather nothing, one batch in this many yields anyway, to notice a change.
const YIELD_PROBE_EVERY: u32 = 8;
/// Writer/reader rounds per driver poll.
const ROUNDS_PER_POLL: usize = 4;

/// Wraps `io` in a multiplexer. Returns the handle (opens streams, closes the mux), the acceptor
/// (streams the peer opened) and the driver, which the caller must spawn: it reads and writes
/// `io` until the mux ends, and returns `Ok` on a clean end (closed here, or EOF from the peer
/// between frames) and the error otherwise. `io` should have `TCP_NODELAY` set.
pub fn mux<T>(
    io: T,
    role: Role,
    cfg: MuxConfig,
) -> (MuxHandle, Acceptor, impl Future<Output = Result<(), MuxError>> + Send + 'static)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Shared::new(role, &cfg);
    let driver = Driver {
        io,
        shared: shared.clone(),
        rbuf: vec![0u8; cfg.read_buffer.max(64 * 1024)].into_boxed_slice(),
        rstart: 0,
        rend: 0,
        read_paused: false,
        wbuf: Vec::new(),
        wpos: 0,
        need_flush: false,
        parked: false,
        yields: 0,
        yield_len: 0,
        first_len: 0,
        yield_credit: YIELD_CREDIT,
        skipped: 0,
        yield_before_write: cfg.yield_before_write,
        linger: cfg.close_linger,
        wakers: Vec::new(),
    };
    (MuxHandle { shared: shared.clone() }, Acceptor { shared }, driver.run())
}

/// What one driver poll ended with.
enum Step {
    /// Yield to the scheduler, then take the batch.
    Yield,
    /// The mux must close (close requested or nothing references it).
    Close,
    /// The peer closed the connection between frames.
    PeerEof,
}

struct Driver<T> {
    io: T,
    shared: Arc<Shared>,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    read_paused: bool,
    /// The batch being written, from `wpos`.
    wbuf: Vec<u8>,
    wpos: usize,
    need_flush: bool,
    /// The writer found nothing to send at its last look.
    parked: bool,
    /// Yields since the first frame of the coming batch was queued, and the queued length at
    /// the last one.
    yields: u32,
    yield_len: usize,
    /// Queued length at the first yield of this batch.
    first_len: usize,
    /// Batches that may still yield although the last yields gathered nothing.
    yield_credit: u32,
    /// Batches taken without yielding since the last yield.
    skipped: u32,
    yield_before_write: bool,
    linger: Duration,
    wakers: Vec<Waker>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Driver<T> {
    async fn run(mut self) -> Result<(), MuxError> {
        let end = loop {
            let step = poll_fn(|cx| self.poll_step(cx)).await;
            match step {
                Ok(Step::Yield) => tokio::task::yield_now().await,
                Ok(Step::Close) => break Ok(true),
                Ok(Step::PeerEof) => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        match end {
            Ok(read_to_eof) => {
                self.shared.fail_all(if read_to_eof { "closed locally" } else { "connection closed by peer" });
                let _ = tokio::time::timeout(self.linger, self.finish(read_to_eof)).await;
                Ok(())
            }
            Err(e) => {
                self.shared.fail_all(&e.to_string());
                Err(e)
            }
        }
    }

    /// Clean end: sends what is queued, shuts the connection down, and reads (discarding)
    /// until the peer's EOF so that closing the socket does not reset unread bytes.
    async fn finish(&mut self, read_to_eof: bool) -> io::Result<()> {
        let rest = std::mem::take(&mut self.shared.lock().out);
        self.io.write_all(&self.wbuf[self.wpos..]).await?;
        self.wpos = self.wbuf.len();
        self.io.write_all(&rest).await?;
        self.io.flush().await?;
        self.io.shutdown().await?;
        if read_to_eof {
            while self.io.read(&mut self.rbuf).await? > 0 {}
        }
        Ok(())
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, MuxError>> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Poll::Ready(Ok(Step::Close));
        }
        for _ in 0..ROUNDS_PER_POLL {
            if self.poll_writer(cx)? {
                return Poll::Ready(Ok(Step::Yield));
            }
            match self.poll_reader(cx)? {
                Poll::Ready(true) => return Poll::Ready(Ok(Step::PeerEof)),
                Poll::Ready(false) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes batches until the connection would block or nothing is queued. True: yield first.
    fn poll_writer(&mut self, cx: &mut Context<'_>) -> Result<bool, MuxError> {
        loop {
            while self.wpos < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                    Poll::Ready(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Poll::Ready(Ok(n)) => self.wpos += n,
                    Poll::Ready(Err(e)) => return Err(e.into()),
                    Poll::Pending => return Ok(false),
                }
            }
            if self.need_flush {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.need_flush = false,
                    Poll::Ready(Err(e)) => return Err(e.into()),
                    Poll::Pending => return Ok(false),
                }
            }
            let mut g = self.shared.lock();
            let inner = &mut *g;
            if inner.out.is_empty() {
                inner.writer_parked = true;
                set_waker(&mut inner.driver_waker, cx);
                self.parked = true;
                self.yields = 0;
                return Ok(false);
            }
            // A batch starting after idleness: yield so that the other tasks made ready in this
            // tick add their frames, and again while they keep adding (those on the other worker
            // may still be running), a few times at most. Yields are skipped while they gather
            // nothing (a lone stream would only pay for them), with a probe now and then.
            let queued = inner.out.len();
            if self.parked && self.yield_before_write && queued < self.shared.batch_limit {
                if self.yields == 0 {
                    self.skipped += 1;
                    if self.yield_credit > 0 || self.skipped >= YIELD_PROBE_EVERY {
                        self.skipped = 0;
                        self.yields = 1;
                        self.first_len = queued;
                        self.yield_len = queued;
                        return Ok(true);
                    }
                } else if self.yields < MAX_YIELDS && queued > self.yield_len {
                    self.yields += 1;
                    self.yield_len = queued;
                    return Ok(true);
                }
            }
            if self.yields > 0 {
                self.yield_credit =
                    if queued > self.first_len { YIELD_CREDIT } else { self.yield_credit.saturating_sub(1) };
            }
            self.parked = false;
            self.yields = 0;
            inner.writer_parked = false;
            if self.wbuf.capacity() > 4 * self.shared.batch_limit {
                self.wbuf = Vec::new();
            }
            self.wbuf.clear();
            std::mem::swap(&mut self.wbuf, &mut inner.out);
            self.wpos = 0;
            self.need_flush = true;
            self.read_paused = false;
            for id in inner.out_waiters.drain(..) {
                if let Some(s) = inner.streams.get_mut(&id) {
                    s.out_waiting = false;
                    self.wakers.extend(s.write_waker.take());
                }
            }
            drop(g);
            for w in self.wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Reads and dispatches. Ready(true): EOF between frames; Ready(false): frames were queued
    /// for the parked writer, or the read budget is spent; Pending: the connection has nothing.
    fn poll_reader(&mut self, cx: &mut Context<'_>) -> Result<Poll<bool>, MuxError> {
        let mut kicked = false;
        let mut io_pending = false;
        for _ in 0..READS_PER_POLL {
            if self.read_paused {
                break;
            }
            self.make_room();
            if self.rend == self.rbuf.len() {
                // Unreachable: a complete frame always fits and is dispatched at once.
                return Err(ProtocolError::FrameTooLarge(self.rend - self.rstart).into());
            }
            let mut rb = ReadBuf::new(&mut self.rbuf[self.rend..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    io_pending = true;
                    break;
                }
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return if self.rstart == self.rend {
                            Ok(Poll::Ready(true))
                        } else {
                            Err(MuxError::UnexpectedEof)
                        };
                    }
                    self.rend += n;
                    let d = dispatch(&self.shared, &self.rbuf[self.rstart..self.rend], &mut self.wakers)?;
                    self.rstart += d.consumed;
                    kicked |= d.kicked;
                    self.read_paused = d.pause;
                    for w in self.wakers.drain(..) {
                        w.wake();
                    }
                }
            }
        }
        if kicked {
            // Frames for the parked writer: another round.
            Ok(Poll::Ready(false))
        } else if io_pending || self.read_paused {
            // Woken by `io` when it has more, or (paused) when the blocked writer progresses.
            Ok(Poll::Pending)
        } else {
            // Read budget spent.
            Ok(Poll::Ready(false))
        }
    }

    /// Makes room after the pending partial frame: moves it to the front when the space after
    /// it is small or the frame would not fit.
    fn make_room(&mut self) {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            return;
        }
        let pending = &self.rbuf[self.rstart..self.rend];
        let need = if pending.len() >= HEADER_LEN {
            HEADER_LEN + usize::from(u16::from_be_bytes([pending[6], pending[7]]))
        } else {
            HEADER_LEN
        };
        if self.rstart > 0 && (self.rbuf.len() - self.rend < MIN_READ_ROOM || self.rstart + need > self.rbuf.len()) {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
    }
}

impl<T> Drop for Driver<T> {
    /// A driver dropped before it ended (its task aborted) still fails every stream's I/O.
    fn drop(&mut self) {
        self.shared.fail_all("mux driver dropped");
    }
}
