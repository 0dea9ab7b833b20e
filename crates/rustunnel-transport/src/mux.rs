//! Stream multiplexer: many byte streams over one connection, so that the frames of every
//! stream that became ready in the same scheduler tick leave in ONE write and arrive in ONE read.
//!
//! [`mux`] wraps any `AsyncRead + AsyncWrite` connection and returns a [`MuxHandle`] (opens
//! streams, closes the mux), an [`Acceptor`] (yields the streams the peer opened) and the
//! driver future, which the caller spawns and owns. Only the [`Role::Opener`] side (the server)
//! opens streams; the [`Role::Acceptor`] side (the client) accepts them. Each [`MuxStream`] is
//! an `AsyncRead + AsyncWrite` with TCP-like semantics:
//! - `poll_shutdown` half-closes (FIN): the peer reads the buffered bytes, then EOF; the other
//!   direction stays open. It queues the FIN and returns at once (so does `poll_flush`): the
//!   driver sends queued frames in order.
//! - dropping a stream that was not finished both ways (FIN sent and FIN received) sends RESET:
//!   the peer's writes fail with `ConnectionReset` at once, its reads return the bytes that had
//!   already arrived and then `ConnectionReset`.
//! - when the mux ends (driver error, peer EOF, [`MuxHandle::close`], the last handle and stream
//!   dropped), every stream's pending and later I/O fails with `ConnectionAborted` (reads first
//!   return the bytes already buffered, and EOF if the peer had finished).
//!
//! # Wire format
//! A sequence of frames, each an 8-byte header and a payload:
//! ```text
//! stream id  u32 BE   never 0; allocated by the opener 1, 2, 3, ... and never reused
//! kind       u8       1 OPEN, 2 DATA, 3 FIN, 4 RESET, 5 WINDOW
//! flags      u8       reserved, must be 0
//! length     u16 BE   payload bytes: OPEN <= 1024 (the meta), DATA <= 32768,
//!                     FIN 0, RESET 0, WINDOW 4 (credit increment, u32 BE)
//! ```
//! Anything else (unknown kind, nonzero flags, a length out of its bound, stream id 0, an OPEN
//! arriving at the opener, for an id not above the last one or for [`PING_ID`]) is a protocol
//! error that ends the mux. Frames for unknown or finished streams are ignored; DATA ones still give their credit
//! back with a WINDOW frame. The meta is opaque here. There is no handshake or version byte:
//! whoever sets up the connection must agree that it carries this mux (e.g. in the data
//! connection's upgrade) before handing it to [`mux`].
//!
//! # Flow control
//! Each stream has, per direction, a credit window of [`INITIAL_WINDOW`] bytes from its OPEN.
//! A sender never has more DATA in flight than the credit it holds: a write without credit
//! returns `Pending` and is woken by the WINDOW frame that returns credit. The receiver returns
//! credit once the reading side has consumed half the stream's window (or 1 MiB of a window
//! over 2 MiB), so a stream's inbound buffer never holds more than its window and one slow
//! reader never holds up the other streams. DATA beyond the granted window is a protocol error,
//! and so is a WINDOW frame that takes a stream's send credit past [`MAX_WINDOW`] (no receiver
//! may grant more than its window).
//!
//! # Bounds
//! What a peer can make this end hold: per stream, its receive window of unread bytes; per
//! connection, the OPEN metas not accepted yet ([`MuxConfig::max_streams`] of them), and the
//! frames queued for the peer. DATA writers wait once [`MuxConfig::batch_limit`] is queued;
//! answers the peer's frames call for (credit, resets) stop the reader once the queue is
//! [`OUT_PAUSE_SLACK`] past that, and [`MuxHandle::open`] fails with
//! [`MuxError::Backlogged`] there, so a peer that never reads cannot grow it further.
//!
//! Window growth is the receiver's own decision (the wire only carries credit): a receiver
//! configured with a [`MuxConfig::window`] above [`INITIAL_WINDOW`] doubles a stream's window
//! when the reader consumed the last half-window in less than one round trip (the window, not
//! the reader, was holding the stream back), up to that maximum and while the sum of what its
//! streams grew stays within [`MuxConfig::window_budget`]. A grown window goes back to the
//! budget when its stream ends. So a bulk stream on a long link gets the window its bandwidth
//! times delay needs, while thousands of quiet or stalled streams cost their initial windows
//! only. The round trip is measured with a one-byte DATA frame on the reserved stream id
//! [`PING_ID`], which no stream ever has: the peer gives its credit back like for any frame of
//! an unknown stream, and the WINDOW frame coming back times the trip (peers that predate
//! growth do the same; nothing else is needed from them).
//!
//! # Batching
//! A stream's `poll_write` copies its frames straight into the mux's shared outgoing buffer
//! (no allocation per frame). The driver is woken only when that buffer goes from empty to
//! non-empty; it then yields to the scheduler ([`MuxConfig::yield_before_write`]) so that the
//! other tasks made ready in the same tick queue their frames too (again while they keep adding,
//! up to 4 yields), swaps the whole buffer out and writes it with one `write` (more only on a
//! short write). While yields gather nothing (a lone stream), the driver stops yielding, except
//! for one batch in 8 that checks whether they would again. Streams fill the second buffer
//! while the first is being written; they wait once it holds [`MuxConfig::batch_limit`]. The
//! reader reads into a 64 KiB buffer, dispatches every complete frame in it under one lock, and
//! wakes each stream's reader only when that stream got new bytes.
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

#[doc(hidden)]
pub mod sans_io;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest DATA payload; a larger length on the wire is a protocol error.
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// Largest meta carried by an OPEN frame.
pub const MAX_META: usize = 1024;
/// Credit each stream starts with in each direction.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Largest receive window a [`MuxConfig`] may ask for.
pub const MAX_WINDOW: u32 = 32 * 1024 * 1024;
/// Stream id that is never allocated: one-byte DATA frames on it measure the round trip.
pub const PING_ID: u32 = u32::MAX;
/// Credit is returned at least every this many bytes read from a stream whose window is larger
/// than twice this.
const CREDIT_STEP: u32 = 1024 * 1024;
/// Round-trip measurements at most this often, and only while streams receive data.
const PING_EVERY: Duration = Duration::from_millis(500);
/// Frame kinds.
pub const KIND_OPEN: u8 = 1;
pub const KIND_DATA: u8 = 2;
pub const KIND_FIN: u8 = 3;
pub const KIND_RESET: u8 = 4;
pub const KIND_WINDOW: u8 = 5;

/// Send credit a peer may grant a stream at most (its largest possible window); more is a
/// protocol error. Kept in `u64` so that adding a WINDOW increment cannot wrap on any platform.
const MAX_CREDIT: u64 = MAX_WINDOW as u64;
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
/// The reader stops reading, and [`MuxHandle::open`] refuses, while the outgoing buffer holds
/// this much more than the batch limit (only control frames and OPENs can grow it that far: a
/// peer that floods us with frames needing an answer, or stops reading, while visitors keep
/// coming).
pub const OUT_PAUSE_SLACK: usize = 1024 * 1024;

/// Which end of the mux this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (the server side); an OPEN frame arriving here is a protocol error.
    Opener,
    /// Accepts the streams the opener opens (the client side).
    Acceptor,
}

/// Tunables of one mux. Out-of-range values are clamped.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Largest receive window per stream, in bytes: at most this many bytes of a stream are
    /// buffered here unread. Streams start at [`INITIAL_WINDOW`] and grow towards this as the
    /// round trip requires (see the module doc). At least [`INITIAL_WINDOW`] (no growth), at
    /// most [`MAX_WINDOW`].
    pub window: u32,
    /// Bytes by which all streams' windows together may grow past [`INITIAL_WINDOW`] each.
    pub window_budget: usize,
    /// Streams open at once: `open` beyond this fails, an acceptor resets the extra ones.
    pub max_streams: usize,
    /// Bytes of DATA queued for the connection before writers wait (one batch).
    pub batch_limit: usize,
    /// Size of the driver's read buffer (at least 64 KiB).
    pub read_buffer: usize,
    /// Yield to the scheduler before writing a batch that starts after the writer was idle, so
    /// that the other tasks made ready in the same tick add their frames to it (adaptive: see
    /// the module doc). Off: each batch is written as soon as the driver runs.
    pub yield_before_write: bool,
    /// On a clean close: how long the driver goes on flushing what is queued and reading
    /// until the peer's EOF before it gives up.
    pub close_linger: Duration,
}

impl MuxConfig {
    /// For a data connection between server and client: windows grow up to 32 MiB per stream,
    /// 64 MiB more for all streams together, so one stream is not held to a 256 KiB window per
    /// round trip on a long link (40 Mbit/s at 50 ms) while a session whose readers stall holds
    /// at most its initial windows and that budget.
    pub fn data_link() -> Self {
        MuxConfig { window: MAX_WINDOW, window_budget: 64 * 1024 * 1024, ..MuxConfig::default() }
    }
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            window: INITIAL_WINDOW,
            window_budget: 0,
            max_streams: 4096,
            batch_limit: 256 * 1024,
            read_buffer: 64 * 1024,
            yield_before_write: true,
            close_linger: Duration::from_secs(2),
        }
    }
}

/// A peer broke the framing rules; the mux ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("nonzero reserved flags {0:#04x}")]
    BadFlags(u8),
    #[error("frame on stream id 0")]
    ZeroStreamId,
    #[error("DATA frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    FrameTooLarge(usize),
    #[error("OPEN meta of {0} bytes exceeds the {MAX_META}-byte limit")]
    MetaTooLarge(usize),
    #[error("frame of kind {kind} with a {len}-byte payload")]
    BadLength { kind: u8, len: usize },
    #[error("OPEN frame sent to the opening side")]
    OpenToOpener,
    #[error("OPEN for stream {0}, not above the last opened id")]
    StreamIdNotIncreasing(u32),
    #[error("stream {0}: peer sent more than the window it was granted")]
    WindowExceeded(u32),
    #[error("stream {0}: DATA after FIN or RESET")]
    DataAfterFin(u32),
    #[error("stream {0}: send credit grown past {MAX_CREDIT}")]
    WindowOverflow(u32),
    #[error("OPEN for the reserved stream id {PING_ID}")]
    ReservedStreamId,
}

/// Why a mux operation or the driver failed.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("mux protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("mux connection: {0}")]
    Io(#[from] io::Error),
    #[error("mux connection closed in the middle of a frame")]
    UnexpectedEof,
    #[error("mux is closed")]
    Closed,
    #[error("too many open streams (limit {0})")]
    TooManyStreams(usize),
    #[error("stream meta of {0} bytes exceeds the {MAX_META}-byte limit")]
    MetaTooLarge(usize),
    #[error("stream ids exhausted: open a new mux")]
    IdsExhausted,
    #[error("the peer is not reading: {0} bytes queued for it")]
    Backlogged(usize),
    #[error("only the opener role opens streams")]
    NotOpener,
}

/// Hash for stream ids: a multiply and a fold, instead of SipHash, on every frame.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b) ^ (self.0 as u32).rotate_left(8));
        }
    }
    fn write_u32(&mut self, n: u32) {
        let h = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// One stream's state, both directions.
struct Stream {
    /// Received, not yet read.
    inbound: VecDeque<u8>,
    /// Receive window: what the peer may have in flight plus what is buffered here.
    window: u32,
    /// Bytes read since `half_at`, and when the last half window's worth was complete (or the
    /// stream created): half a window read in less than a round trip means growth.
    read_since: u32,
    half_at: Instant,
    /// Bytes the peer may still send before we return credit.
    recv_remaining: u32,
    /// Bytes read since credit was last returned.
    recv_unacked: u32,
    /// Bytes we may still send (at most [`MAX_CREDIT`]).
    send_credit: u64,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    fin_recv: bool,
    fin_sent: bool,
    reset_recv: bool,
    /// Listed in `Inner::out_waiters`.
    out_waiting: bool,
}

impl Stream {
    fn new() -> Self {
        Stream {
            inbound: VecDeque::new(),
            window: INITIAL_WINDOW,
            read_since: 0,
            half_at: Instant::now(),
            recv_remaining: INITIAL_WINDOW,
            recv_unacked: 0,
            send_credit: u64::from(INITIAL_WINDOW),
            read_waker: None,
            write_waker: None,
            fin_recv: false,
            fin_sent: false,
            reset_recv: false,
            out_waiting: false,
        }
    }
}

struct Inner {
    streams: IdMap<Stream>,
    /// Frames queued for the connection, in order.
    out: Vec<u8>,
    /// Streams waiting for room in `out`.
    out_waiters: Vec<u32>,
    /// The driver found `out` empty and waits for the first frame.
    writer_parked: bool,
    driver_waker: Option<Waker>,
    /// Streams opened by the peer, not yet accepted: id and meta.
    accept_queue: VecDeque<(u32, Vec<u8>)>,
    accept_waker: Option<Waker>,
    acceptor_alive: bool,
    /// Live `MuxHandle`s, `Acceptor` and `MuxStream`s; at 0 the driver closes the mux.
    refs: usize,
    /// Why the mux ended, once it has.
    closed: Option<Arc<str>>,
    /// Opener: last id allocated; acceptor: last id opened by the peer.
    last_id: u32,
    /// What streams' windows grew in all (back to the budget when a stream ends).
    window_extra: usize,
    /// Smoothed round trip, once measured.
    rtt: Option<Duration>,
    /// When the round-trip probe in flight was sent.
    ping_sent: Option<Instant>,
    /// When the last probe was sent.
    last_ping: Option<Instant>,
}

impl Inner {
    /// Removes a stream, giving what its window grew back to the budget.
    fn remove(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        self.window_extra -= (s.window - INITIAL_WINDOW) as usize;
        Some(s)
    }

    /// Queues a round-trip probe if growth is on, none is in flight and the last is old enough.
    fn maybe_ping(&mut self, max_window: u32, now: Instant) {
        if max_window <= INITIAL_WINDOW
            || self.closed.is_some()
            || self.ping_sent.is_some()
            || self.last_ping.is_some_and(|t| now.duration_since(t) < PING_EVERY)
            || self.streams.contains_key(&PING_ID)
        {
            return;
        }
        self.ping_sent = Some(now);
        self.last_ping = Some(now);
        push_frame(&mut self.out, PING_ID, KIND_DATA, &[0]);
    }

    /// A WINDOW frame on [`PING_ID`] came back: a round-trip sample.
    fn pong(&mut self, now: Instant) {
        if let Some(sent) = self.ping_sent.take() {
            let sample = now.duration_since(sent);
            self.rtt = Some(match self.rtt {
                Some(rtt) => (rtt * 7 + sample) / 8,
                None => sample,
            });
        }
    }

    /// After frames were queued: the driver's waker if it waits for the first one.
    fn kick(&mut self) -> Option<Waker> {
        if self.writer_parked {
            self.writer_parked = false;
            self.driver_waker.clone()
        } else {
            None
        }
    }

    /// One less handle or stream; at 0, the driver's waker (it must close the mux).
    fn release(&mut self, closing: &AtomicBool) -> Option<Waker> {
        self.refs = self.refs.saturating_sub(1);
        if self.refs == 0 {
            closing.store(true, Ordering::Release);
            self.driver_waker.clone()
        } else {
            None
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Set when the mux must close (close requested, last reference gone, driver done).
    closing: AtomicBool,
    role: Role,
    max_window: u32,
    window_budget: usize,
    max_streams: usize,
    batch_limit: usize,
    /// Queued bytes past which the reader pauses and `open` refuses.
    out_limit: usize,
}

impl Shared {
    fn new(role: Role, cfg: &MuxConfig) -> Arc<Shared> {
        let batch_limit = cfg.batch_limit.max(MAX_PAYLOAD);
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                streams: IdMap::default(),
                out: Vec::new(),
                out_waiters: Vec::new(),
                writer_parked: false,
                driver_waker: None,
                accept_queue: VecDeque::new(),
                accept_waker: None,
                acceptor_alive: true,
                refs: 2,
                closed: None,
                last_id: 0,
                window_extra: 0,
                rtt: None,
                ping_sent: None,
                last_ping: None,
            }),
            closing: AtomicBool::new(false),
            role,
            max_window: cfg.window.clamp(INITIAL_WINDOW, MAX_WINDOW),
            window_budget: cfg.window_budget,
            max_streams: cfg.max_streams.max(1),
            batch_limit,
            out_limit: batch_limit + OUT_PAUSE_SLACK,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the mux ended: every stream's pending I/O is woken and fails from now on.
    fn fail_all(&self, reason: &str) {
        let mut wakers = Vec::new();
        {
            let mut g = self.lock();
            let inner = &mut *g;
            self.closing.store(true, Ordering::Release);
            if inner.closed.is_some() {
                return;
            }
            inner.closed = Some(Arc::from(reason));
            while let Some((id, _)) = inner.accept_queue.pop_front() {
                inner.remove(id);
            }
            inner.out_waiters.clear();
            for s in inner.streams.values_mut() {
                wakers.extend(s.read_waker.take());
                wakers.extend(s.write_waker.take());
            }
            wakers.extend(inner.accept_waker.take());
            wakers.extend(inner.driver_waker.clone());
        }
        for w in wakers {
            w.wake();
        }
    }
}

fn push_frame(out: &mut Vec<u8>, id: u32, kind: u8, payload: &[u8]) {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&id.to_be_bytes());
    h[4] = kind;
    h[6..].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn aborted(reason: Option<&str>) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("mux closed: {}", reason.unwrap_or("stream gone")))
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "mux stream reset by peer")
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

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

/// Opens streams and controls the mux. Cloneable; the mux closes once every handle, the
/// acceptor and every stream are dropped.
pub struct MuxHandle {
    shared: Arc<Shared>,
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
    shared: Arc<Shared>,
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

/// One multiplexed stream: `AsyncRead + AsyncWrite`, see the module doc for its semantics.
pub struct MuxStream {
    id: u32,
    shared: Arc<Shared>,
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
        s.inbound.drain(..n);
        if s.inbound.is_empty() && s.inbound.capacity() > 64 * 1024 {
            s.inbound = VecDeque::new();
        }
        // n <= what was buffered <= the window, a u32.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        s.recv_unacked = s.recv_unacked.saturating_add(n);
        s.read_since = s.read_since.saturating_add(n);
        // Credit goes back every half window, and at least every CREDIT_STEP of a large one, so
        // the sender's bytes in flight stay close to the whole window.
        if s.recv_unacked >= (s.window / 2).min(CREDIT_STEP) && !s.fin_recv && !s.reset_recv && inner.closed.is_none() {
            let mut credit = s.recv_unacked;
            if s.read_since >= s.window / 2 {
                let now = Instant::now();
                // Half the window read in less than a round trip: the window holds the stream
                // back. Double it, within the maximum and the budget; the growth is new credit.
                if let Some(rtt) = inner.rtt {
                    let room = shared.window_budget.saturating_sub(inner.window_extra);
                    let grow = s.window.min(shared.max_window - s.window).min(room.min(MAX_WINDOW as usize) as u32);
                    if grow > 0 && now.duration_since(s.half_at) < rtt {
                        s.window += grow;
                        credit += grow;
                        inner.window_extra += grow as usize;
                    }
                }
                s.half_at = now;
                s.read_since = 0;
            }
            s.recv_unacked = 0;
            s.recv_remaining += credit;
            push_frame(&mut inner.out, self.id, KIND_WINDOW, &credit.to_be_bytes());
            let w = inner.kick();
            drop(g);
            wake(w);
        }
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

/// What one driver poll ended with.
enum Step {
    /// Yield to the scheduler, then take the batch.
    Yield,
    /// The mux must close (close requested or nothing references it).
    Close,
    /// The peer closed the connection between frames.
    PeerEof,
}

/// Result of one complete pass over the read buffer.
struct Dispatched {
    consumed: usize,
    /// Frames were queued while the writer was parked.
    kicked: bool,
    /// Too much is queued for the connection: stop reading until the writer drains it.
    pause: bool,
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

/// Checks a header before its payload has arrived, so that garbage fails at once.
fn check_header(id: u32, kind: u8, flags: u8, len: usize, role: Role) -> Result<(), ProtocolError> {
    if flags != 0 {
        return Err(ProtocolError::BadFlags(flags));
    }
    match kind {
        KIND_DATA if len > MAX_PAYLOAD => return Err(ProtocolError::FrameTooLarge(len)),
        KIND_OPEN if role == Role::Opener => return Err(ProtocolError::OpenToOpener),
        KIND_OPEN if len > MAX_META => return Err(ProtocolError::MetaTooLarge(len)),
        KIND_FIN | KIND_RESET if len != 0 => return Err(ProtocolError::BadLength { kind, len }),
        KIND_WINDOW if len != 4 => return Err(ProtocolError::BadLength { kind, len }),
        KIND_OPEN | KIND_DATA | KIND_FIN | KIND_RESET | KIND_WINDOW => {}
        _ => return Err(ProtocolError::UnknownKind(kind)),
    }
    if id == 0 {
        return Err(ProtocolError::ZeroStreamId);
    }
    Ok(())
}

/// Handles every complete frame at the start of `buf` under one lock; collects the wakers to
/// call once the lock is released.
fn dispatch(shared: &Shared, buf: &[u8], wakers: &mut Vec<Waker>) -> Result<Dispatched, ProtocolError> {
    let mut g = shared.lock();
    let inner = &mut *g;
    let out_before = inner.out.len();
    let now = Instant::now();
    let mut pos = 0;
    // Credit of discarded DATA, merged while consecutive frames are for the same stream.
    let mut discarded: Option<(u32, u32)> = None;
    let result = loop {
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            break Ok(());
        }
        let id = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let (kind, flags) = (rest[4], rest[5]);
        let len = usize::from(u16::from_be_bytes([rest[6], rest[7]]));
        if let Err(e) = check_header(id, kind, flags, len, shared.role) {
            break Err(e);
        }
        if rest.len() < HEADER_LEN + len {
            break Ok(());
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        pos += HEADER_LEN + len;
        match kind {
            KIND_DATA => match inner.streams.get_mut(&id) {
                Some(s) => {
                    if s.fin_recv || s.reset_recv {
                        break Err(ProtocolError::DataAfterFin(id));
                    }
                    if len as u32 > s.recv_remaining {
                        break Err(ProtocolError::WindowExceeded(id));
                    }
                    s.recv_remaining -= len as u32;
                    if len > 0 {
                        // Grown geometrically but never past the window: a reader that stops
                        // holds at most its window, not twice it.
                        let need = s.inbound.len() + len;
                        if need > s.inbound.capacity() {
                            let target = (s.inbound.capacity() * 2).min(s.window as usize).max(need);
                            s.inbound.reserve_exact(target - s.inbound.len());
                        }
                        s.inbound.extend(payload);
                        wakers.extend(s.read_waker.take());
                        inner.maybe_ping(shared.max_window, now);
                    }
                }
                None if len == 0 => {}
                None => match &mut discarded {
                    // Merged while it fits the WINDOW frame's u32 (a read buffer may be large).
                    Some((did, n)) if *did == id && n.checked_add(len as u32).is_some() => *n += len as u32,
                    _ => {
                        if let Some((did, n)) = discarded.replace((id, len as u32)) {
                            push_frame(&mut inner.out, did, KIND_WINDOW, &n.to_be_bytes());
                        }
                    }
                },
            },
            KIND_WINDOW => {
                let credit = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if id == PING_ID && !inner.streams.contains_key(&id) {
                    inner.pong(now);
                } else if let Some(s) = inner.streams.get_mut(&id) {
                    match s.send_credit.checked_add(u64::from(credit)).filter(|&c| c <= MAX_CREDIT) {
                        Some(c) => s.send_credit = c,
                        None => break Err(ProtocolError::WindowOverflow(id)),
                    }
                    if credit > 0 {
                        wakers.extend(s.write_waker.take());
                    }
                }
            }
            KIND_FIN => {
                if let Some(s) = inner.streams.get_mut(&id) {
                    s.fin_recv = true;
                    wakers.extend(s.read_waker.take());
                }
            }
            KIND_RESET => {
                if let Some(s) = inner.streams.get_mut(&id) {
                    s.reset_recv = true;
                    wakers.extend(s.read_waker.take());
                    wakers.extend(s.write_waker.take());
                }
            }
            _ => {
                // KIND_OPEN, at the acceptor (check_header refused it at the opener).
                if id <= inner.last_id {
                    break Err(ProtocolError::StreamIdNotIncreasing(id));
                }
                if id == PING_ID {
                    // Never allocated: a stream of that id would swallow the round-trip probes.
                    break Err(ProtocolError::ReservedStreamId);
                }
                inner.last_id = id;
                if inner.closed.is_some() {
                    // Closing: nobody will accept it, and nothing more is sent.
                    continue;
                }
                if !inner.acceptor_alive || inner.streams.len() >= shared.max_streams {
                    push_frame(&mut inner.out, id, KIND_RESET, &[]);
                } else {
                    inner.streams.insert(id, Stream::new());
                    inner.accept_queue.push_back((id, payload.to_vec()));
                    wakers.extend(inner.accept_waker.take());
                }
            }
        }
    };
    if let Some((did, n)) = discarded {
        push_frame(&mut inner.out, did, KIND_WINDOW, &n.to_be_bytes());
    }
    let kicked = inner.out.len() > out_before && inner.writer_parked;
    if kicked {
        inner.writer_parked = false;
    }
    let pause = inner.out.len() > shared.out_limit;
    drop(g);
    result.map(|()| Dispatched { consumed: pos, kicked, pause })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    /// Bound on anything a test waits for: a hang fails instead of blocking the run.
    const LIMIT: Duration = Duration::from_secs(60);
    /// Bound on what must happen "promptly".
    const PROMPT: Duration = Duration::from_secs(5);

    type Driven = JoinHandle<Result<(), MuxError>>;

    fn start<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        io: I,
        role: Role,
        cfg: MuxConfig,
    ) -> (MuxHandle, Acceptor, Driven) {
        let (h, a, d) = mux(io, role, cfg);
        (h, a, tokio::spawn(d))
    }

    /// One end of a mux pair: handle, acceptor, driver task.
    type End = (MuxHandle, Acceptor, Driven);

    /// An opener on `a` and an acceptor on `b`.
    fn pair<A, B>(a: A, b: B, opener: MuxConfig, acceptor: MuxConfig) -> (End, End)
    where
        A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        (start(a, Role::Opener, opener), start(b, Role::Acceptor, acceptor))
    }

    fn duplex_pair() -> (End, End) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        pair(a, b, MuxConfig::default(), MuxConfig::default())
    }

    /// Both ends of a loopback TCP connection (server side first), `TCP_NODELAY` set.
    async fn tcp_conns() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        c.set_nodelay(true).unwrap();
        s.set_nodelay(true).unwrap();
        (s, c)
    }

    async fn tcp_pair() -> (End, End) {
        let (s, c) = tcp_conns().await;
        pair(s, c, MuxConfig::default(), MuxConfig::default())
    }

    async fn within<F: Future>(d: Duration, f: F) -> F::Output {
        tokio::time::timeout(d, f).await.expect("timed out")
    }

    /// xorshift64 bytes, 8 at a time (chunks must be multiples of 8 to be reproducible).
    fn fill(seed: &mut u64, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            c.copy_from_slice(&seed.to_le_bytes()[..c.len()]);
        }
    }

    const CHUNK: usize = 16 * 1024;

    fn expected_hash(seed: u64, len: usize) -> Vec<u8> {
        let mut seed = seed;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            fill(&mut seed, &mut buf[..n]);
            h.update(&buf[..n]);
            left -= n;
        }
        h.finalize().to_vec()
    }

    async fn hash_to_end<R: AsyncRead + Unpin>(r: &mut R) -> (usize, Vec<u8>) {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                return (total, h.finalize().to_vec());
            }
            h.update(&buf[..n]);
            total += n;
        }
    }

    /// Accepts streams whose meta is "seed len"; checks what arrives against the seed's hash
    /// while echoing it, then finishes.
    fn checking_echo(mut acc: Acceptor) -> JoinHandle<usize> {
        tokio::spawn(async move {
            let mut checks = Vec::new();
            while let Some((meta, s)) = acc.accept().await {
                checks.push(tokio::spawn(async move {
                    let meta = String::from_utf8(meta).unwrap();
                    let (seed, len) = meta.split_once(' ').unwrap();
                    let (seed, len): (u64, usize) = (seed.parse().unwrap(), len.parse().unwrap());
                    let (mut r, mut w) = tokio::io::split(s);
                    let mut h = Sha256::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0;
                    loop {
                        let n = r.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        total += n;
                        w.write_all(&buf[..n]).await.unwrap();
                    }
                    w.shutdown().await.unwrap();
                    assert_eq!(total, len);
                    assert_eq!(h.finalize().to_vec(), expected_hash(seed, len), "acceptor side got other bytes");
                }));
            }
            let n = checks.len();
            for c in checks {
                c.await.unwrap();
            }
            n
        })
    }

    async fn echo_many(h: &MuxHandle, streams: usize, len: usize) {
        let mut tasks = Vec::new();
        for i in 0..streams {
            let seed = 0x9E37_79B9 ^ (i as u64 + 1);
            let s = h.open(format!("{seed} {len}").as_bytes()).unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let sender = tokio::spawn(async move {
                    let mut seed = seed;
                    let mut buf = vec![0u8; CHUNK];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        fill(&mut seed, &mut buf[..n]);
                        w.write_all(&buf[..n]).await.unwrap();
                        left -= n;
                    }
                    w.shutdown().await.unwrap();
                    w
                });
                let (total, got) = hash_to_end(&mut r).await;
                let _w = sender.await.unwrap();
                assert_eq!(total, len);
                assert_eq!(got, expected_hash(seed, len), "echo came back different");
            }));
        }
        for t in tasks {
            within(LIMIT, t).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_200_streams_of_1mib_over_tcp() {
        let ((h, _acc, d1), (_h2, acc2, d2)) = tcp_pair().await;
        let checker = checking_echo(acc2);
        echo_many(&h, 200, 1 << 20).await;
        assert_eq!(h.stream_count(), 0);
        h.close();
        assert_eq!(within(LIMIT, checker).await.unwrap(), 200);
        within(PROMPT, d1).await.unwrap().unwrap();
        within(PROMPT, d2).await.unwrap().unwrap();
    }

    /// Over an in-memory pipe on one thread (256 KiB each: 1 MiB would take most of a minute
    /// in a debug build; the TCP test above moves the full 1 MiB per stream).
    #[tokio::test]
    async fn echo_200_streams_over_duplex() {
        let ((h, _acc, d1), (_h2, acc2, d2)) = duplex_pair();
        let checker = checking_echo(acc2);
        echo_many(&h, 200, 256 * 1024).await;
        // Dropping every handle and stream ends both drivers cleanly.
        drop(h);
        drop(_acc);
        within(PROMPT, d1).await.unwrap().unwrap();
        within(PROMPT, d2).await.unwrap().unwrap();
        assert_eq!(within(PROMPT, checker).await.unwrap(), 200);
    }

    /// Over TLS as data connections use it: rustls on the server (opener), the lean client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_over_tls() {
        use crate::lean_tls::tests::{configs, pair as tls_pair};
        let (server, client) = configs(&rustls::version::TLS13);
        let (c, s) = tls_pair(server, client).await;
        let (c, s) = (c.unwrap(), s.unwrap());
        let ((h, _a, d1), (_h2, acc, d2)) = pair(s, c, MuxConfig::default(), MuxConfig::default());
        let checker = checking_echo(acc);
        echo_many(&h, 20, 256 * 1024).await;
        h.close();
        assert_eq!(within(PROMPT, checker).await.unwrap(), 20);
        within(PROMPT, d1).await.unwrap().unwrap();
        within(PROMPT, d2).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction() {
        let ((h, _a, _d1), (_h2, mut acc, _d2)) = duplex_pair();
        let server = tokio::spawn(async move {
            let (meta, mut s) = acc.accept().await.unwrap();
            assert_eq!(meta, b"hello meta");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap(); // EOF: the opener shut down
            assert_eq!(got, b"ping");
            s.write_all(b"pong:").await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
            s
        });
        let mut s = h.open(b"hello meta").unwrap();
        s.write_all(b"ping").await.unwrap();
        s.shutdown().await.unwrap();
        let e = s.write_all(b"more").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let mut back = Vec::new();
        within(PROMPT, s.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, b"pong:ping");
        let _peer = within(PROMPT, server).await.unwrap();
        drop(s);
        // Finished both ways: no RESET, the entry is gone here.
        assert_eq!(h.stream_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_reader_does_not_block_other_streams() {
        let ((h, _a, _d1), (_h2, mut acc, _d2)) = tcp_pair().await;
        let written = Arc::new(AtomicUsize::new(0));
        let mut stalled = h.open(b"stalled").unwrap();
        let w2 = written.clone();
        let pusher = tokio::spawn(async move {
            let buf = vec![7u8; 64 * 1024];
            loop {
                match stalled.write(&buf).await {
                    Ok(n) => w2.fetch_add(n, Ordering::Relaxed),
                    Err(e) => return e,
                };
            }
        });
        let (_, stalled_peer) = acc.accept().await.unwrap();
        let mut bulk = h.open(b"bulk").unwrap();
        let (_, mut bulk_peer) = acc.accept().await.unwrap();
        const BULK: usize = 10 << 20;
        let sender = tokio::spawn(async move {
            let buf = vec![1u8; 256 * 1024];
            for _ in 0..BULK / buf.len() {
                bulk.write_all(&buf).await.unwrap();
            }
            bulk.shutdown().await.unwrap();
            bulk
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        within(LIMIT, async {
            loop {
                let n = bulk_peer.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
        })
        .await;
        assert_eq!(got, BULK);
        let _bulk = within(PROMPT, sender).await.unwrap();
        // The stalled stream holds at most its window, and its writer waits for credit.
        assert_eq!(written.load(Ordering::Relaxed), INITIAL_WINDOW as usize);
        assert_eq!(stalled_peer.buffered(), INITIAL_WINDOW as usize);
        assert!(!pusher.is_finished());
        // Reading half the window returns credit: the writer goes on.
        let mut stalled_peer = stalled_peer;
        let mut half = vec![0u8; INITIAL_WINDOW as usize / 2];
        stalled_peer.read_exact(&mut half).await.unwrap();
        within(PROMPT, async {
            while written.load(Ordering::Relaxed) < INITIAL_WINDOW as usize * 3 / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(stalled_peer.buffered() <= INITIAL_WINDOW as usize);
        // A write waiting for credit fails when the mux closes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pusher.is_finished());
        h.close();
        let e = within(PROMPT, pusher).await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn drop_without_finishing_resets_the_peer() {
        let ((h, _a, _d1), (_h2, mut acc, _d2)) = duplex_pair();
        // Opener drops after writing: the acceptor reads the bytes, then ConnectionReset.
        let mut s = h.open(b"a").unwrap();
        s.write_all(b"abc").await.unwrap();
        drop(s);
        let (_, mut peer) = acc.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let n = within(PROMPT, peer.read(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"abc");
        let e = within(PROMPT, peer.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let e = peer.write_all(b"x").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        drop(peer);

        // Acceptor drops without reading: the opener's read and write get ConnectionReset.
        let mut s = h.open(b"b").unwrap();
        s.write_all(b"request").await.unwrap();
        let (_, peer) = acc.accept().await.unwrap();
        drop(peer);
        let e = within(PROMPT, s.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let e = s.write_all(b"x").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        drop(s);

        // The mux goes on.
        let checker = checking_echo(acc);
        echo_many(&h, 3, 100_000).await;
        h.close();
        assert_eq!(within(PROMPT, checker).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn stream_limits() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ((h, _a, _d1), (h2, mut acc, _d2)) = pair(
            a,
            b,
            MuxConfig { max_streams: 3, ..MuxConfig::default() },
            MuxConfig { max_streams: 2, ..MuxConfig::default() },
        );
        assert!(matches!(h.open(&[0; MAX_META + 1]), Err(MuxError::MetaTooLarge(_))));
        assert!(matches!(h2.open(b""), Err(MuxError::NotOpener)));
        let s1 = h.open(&[0; MAX_META]).unwrap();
        let s2 = h.open(b"").unwrap();
        let mut s3 = h.open(b"").unwrap();
        assert!(matches!(h.open(b""), Err(MuxError::TooManyStreams(3))));
        // The acceptor takes two and resets the third.
        let mut buf = [0u8; 1];
        let e = within(PROMPT, s3.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let (m1, _p1) = acc.accept().await.unwrap();
        assert_eq!(m1.len(), MAX_META);
        let _p2 = acc.accept().await.unwrap();
        assert_eq!(h2.stream_count(), 2);
        drop((s1, s2, s3));
        assert!(h.open(b"").is_ok());
    }

    /// One direction of a link with `delay` added to every chunk: chunks are read as they come
    /// and written out `delay` after their arrival, so the delay does not cap the bandwidth.
    fn delayed<R, W>(mut from: R, mut to: W, delay: Duration)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(4096);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
        });
    }

    /// A connection pair with `one_way` delay each way (twice that round trip).
    fn delayed_pair(one_way: Duration) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (a, a_link) = tokio::io::duplex(4 << 20);
        let (b, b_link) = tokio::io::duplex(4 << 20);
        let (a_rd, a_wr) = tokio::io::split(a_link);
        let (b_rd, b_wr) = tokio::io::split(b_link);
        delayed(a_rd, b_wr, one_way);
        delayed(b_rd, a_wr, one_way);
        (a, b)
    }

    /// Sends `len` bytes on a new stream from the opener and reads them at the acceptor;
    /// returns the acceptor's stream (still open) once all arrived.
    async fn bulk(h: &MuxHandle, acc: &mut Acceptor, len: usize) -> (MuxStream, MuxStream) {
        let mut s = h.open(b"").unwrap();
        let (_, mut peer) = acc.accept().await.unwrap();
        let writer = async {
            let chunk = vec![5u8; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n]).await.unwrap();
                left -= n;
            }
        };
        let reader = async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < len {
                let n = peer.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
        };
        tokio::join!(writer, reader);
        (s, peer)
    }

    fn window_of(s: &MuxStream) -> u32 {
        s.shared.lock().streams.get(&s.id).map_or(0, |st| st.window)
    }

    fn grown(h: &MuxHandle) -> usize {
        h.shared.lock().window_extra
    }

    #[tokio::test]
    async fn a_window_grows_when_the_round_trip_holds_the_stream_back() {
        // 60 ms round trip: 256 KiB per round trip would be 4 MiB/s.
        let (a, b) = delayed_pair(Duration::from_millis(30));
        let ((h, _a, _d1), (h2, mut acc, _d2)) = pair(a, b, MuxConfig::data_link(), MuxConfig::data_link());
        let (_s, peer) = within(LIMIT, bulk(&h, &mut acc, 24 << 20)).await;
        let w = window_of(&peer);
        assert!(w >= 4 * INITIAL_WINDOW, "window still {w}");
        assert!(w <= MAX_WINDOW);
        assert_eq!(grown(&h2), (w - INITIAL_WINDOW) as usize);
        // The stream's growth goes back to the budget when it ends.
        drop(peer);
        assert_eq!(grown(&h2), 0);
    }

    #[tokio::test]
    async fn growth_stays_within_the_budget() {
        let (a, b) = delayed_pair(Duration::from_millis(30));
        let cfg = MuxConfig { window_budget: 512 * 1024, ..MuxConfig::data_link() };
        let ((h, _a, _d1), (h2, mut acc, _d2)) = pair(a, b, cfg.clone(), cfg);
        let (_s1, p1) = within(LIMIT, bulk(&h, &mut acc, 8 << 20)).await;
        let (_s2, p2) = within(LIMIT, bulk(&h, &mut acc, 8 << 20)).await;
        let extra = (window_of(&p1) - INITIAL_WINDOW + window_of(&p2) - INITIAL_WINDOW) as usize;
        assert!(extra <= 512 * 1024, "grew {extra}");
        assert!(extra > 0);
        assert_eq!(grown(&h2), extra);
    }

    #[tokio::test]
    async fn no_growth_without_a_budget_or_with_a_stalled_reader() {
        // Default config: the window stays where it starts.
        let (a, b) = delayed_pair(Duration::from_millis(20));
        let ((h, _a, _d1), (h2, mut acc, _d2)) = pair(a, b, MuxConfig::default(), MuxConfig::default());
        let (_s, peer) = within(LIMIT, bulk(&h, &mut acc, 4 << 20)).await;
        assert_eq!(window_of(&peer), INITIAL_WINDOW);
        assert_eq!(grown(&h2), 0);

        // Growth on, but a reader that never reads returns no credit: the stream holds its
        // initial window, however long the writer keeps trying.
        let (a, b) = tokio::io::duplex(1 << 20);
        let ((h, _a, _d1), (h2, mut acc, _d2)) = pair(a, b, MuxConfig::data_link(), MuxConfig::data_link());
        let mut s = h.open(b"").unwrap();
        let (_, stalled) = acc.accept().await.unwrap();
        let writer = tokio::spawn(async move { s.write_all(&vec![1u8; 4 << 20]).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(stalled.buffered(), INITIAL_WINDOW as usize);
        assert_eq!(window_of(&stalled), INITIAL_WINDOW);
        assert_eq!(grown(&h2), 0);
        writer.abort();
    }

    #[tokio::test]
    async fn round_trip_probes_are_answered_by_the_peer() {
        let (a, b) = delayed_pair(Duration::from_millis(10));
        let ((h, _a, _d1), (_h2, mut acc, _d2)) = pair(a, b, MuxConfig::data_link(), MuxConfig::default());
        // A peer without growth (default config) still answers: its acceptor reads the data,
        // and the opener's side, which receives the echo, measures ~20 ms.
        let mut s = h.open(b"").unwrap();
        let (_, mut peer) = acc.accept().await.unwrap();
        peer.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        let rtt = within(PROMPT, async {
            loop {
                if let Some(rtt) = h.shared.lock().rtt {
                    return rtt;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(rtt >= Duration::from_millis(19) && rtt < Duration::from_secs(2), "rtt {rtt:?}");
    }

    #[tokio::test]
    async fn aborting_the_driver_fails_pending_io() {
        let ((h, _a, d1), _peer) = duplex_pair();
        let mut s = h.open(b"").unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            s.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        d1.abort();
        let e = within(PROMPT, reader).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert!(h.is_closed());
    }

    #[tokio::test]
    async fn explicit_close_fails_pending_io_and_ends_both_drivers() {
        let ((h, _a, d1), (_h2, mut acc, d2)) = duplex_pair();
        let mut s = h.open(b"").unwrap();
        s.write_all(b"x").await.unwrap();
        let (_, mut peer) = acc.accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            assert_eq!(peer.read(&mut buf).await.unwrap(), 1);
            peer.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.close();
        assert!(h.is_closed());
        assert!(matches!(h.open(b""), Err(MuxError::Closed)));
        let e = s.write_all(b"y").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        let e = within(PROMPT, reader).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        within(PROMPT, d1).await.unwrap().unwrap();
        within(PROMPT, d2).await.unwrap().unwrap();
        assert!(within(PROMPT, acc.accept()).await.is_none());
    }

    fn frame(id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        push_frame(&mut v, id, kind, payload);
        v
    }

    /// An acceptor (or opener) mux on one end of a duplex, the test speaking raw frames on the
    /// other; the raw side's input is drained so the driver never blocks writing.
    fn raw(role: Role) -> (MuxHandle, Acceptor, Driven, tokio::io::WriteHalf<tokio::io::DuplexStream>) {
        let (raw, io) = tokio::io::duplex(1 << 20);
        let (h, a, d) = start(io, role, MuxConfig::default());
        let (mut rr, rw) = tokio::io::split(raw);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(rr.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        (h, a, d, rw)
    }

    /// Sends `bad` after opening a stream whose read is pending; the driver must fail with
    /// `expect` and the stream's read must fail promptly.
    async fn bad_input(role: Role, bad: Vec<u8>, expect: impl Fn(&MuxError) -> bool) {
        let (h, mut acc, d, mut rw) = raw(role);
        let mut s = if role == Role::Acceptor {
            rw.write_all(&frame(1, KIND_OPEN, b"m")).await.unwrap();
            acc.accept().await.unwrap().1
        } else {
            h.open(b"m").unwrap()
        };
        // Reads until an error (the bytes that arrived first come out before it). When the
        // input is about credit, the read waits for the driver's end so it returns none.
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let reads_early = !matches!(bad.get(4), Some(&KIND_DATA));
        let reader = tokio::spawn(async move {
            if !reads_early {
                let _ = wait.await;
            }
            let mut buf = [0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        rw.write_all(&bad).await.unwrap();
        let r = within(PROMPT, d).await.unwrap();
        match r {
            Err(e) if expect(&e) => {}
            other => panic!("unexpected driver result {other:?}"),
        }
        let _ = go.send(());
        let e = within(PROMPT, reader).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert!(e.to_string().contains("protocol error"), "{e}");
        assert!(within(PROMPT, acc.accept()).await.is_none());
        assert!(h.is_closed());
    }

    /// How the connection under a mux ends, for the test below.
    enum Cut {
        /// TCP reset (what a TLS layer's truncation error looks like to the mux: an error).
        Reset,
        /// EOF between frames, without the streams being finished.
        Fin,
    }

    async fn cut_under_open_streams(cut: Cut) -> Result<(), MuxError> {
        let (mut raw, c) = tcp_conns().await;
        let (_h, mut acc, d) = start(c, Role::Acceptor, MuxConfig::default());
        let input = [
            frame(1, KIND_OPEN, b"a"),
            frame(1, KIND_DATA, b"part of a body"),
            frame(2, KIND_OPEN, b"b"),
            frame(2, KIND_DATA, b"whole"),
            frame(2, KIND_FIN, b""),
        ]
        .concat();
        raw.write_all(&input).await.unwrap();
        let (_, mut open) = within(PROMPT, acc.accept()).await.unwrap();
        let (_, mut finished) = within(PROMPT, acc.accept()).await.unwrap();
        let mut got = [0u8; 14];
        within(PROMPT, open.read_exact(&mut got)).await.unwrap();
        let mut whole = Vec::new();
        within(PROMPT, finished.read_to_end(&mut whole)).await.unwrap();
        assert_eq!(whole, b"whole", "a stream the peer finished ends cleanly");
        match cut {
            Cut::Reset => {
                socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO)).unwrap();
                drop(raw);
            }
            Cut::Fin => raw.shutdown().await.unwrap(),
        }
        let e = within(PROMPT, open.read(&mut got)).await.expect_err("an unfinished stream fails, never ends");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        let e = within(PROMPT, open.write_all(b"answer")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        within(PROMPT, d).await.unwrap()
    }

    #[tokio::test]
    async fn a_cut_connection_is_an_error_on_every_unfinished_stream() {
        let r = cut_under_open_streams(Cut::Reset).await;
        assert!(matches!(&r, Err(MuxError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset), "{r:?}");
        // A clean end of the connection under unfinished streams is no end of theirs either.
        cut_under_open_streams(Cut::Fin).await.unwrap();
    }

    #[tokio::test]
    async fn garbage_ends_the_mux() {
        bad_input(Role::Acceptor, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), |e| {
            matches!(e, MuxError::Protocol(_))
        })
        .await;
        bad_input(Role::Acceptor, frame(1, 9, b""), |e| matches!(e, MuxError::Protocol(ProtocolError::UnknownKind(9))))
            .await;
        bad_input(Role::Acceptor, frame(0, KIND_FIN, b""), |e| {
            matches!(e, MuxError::Protocol(ProtocolError::ZeroStreamId))
        })
        .await;
        bad_input(Role::Acceptor, frame(1, KIND_OPEN, b""), |e| {
            matches!(e, MuxError::Protocol(ProtocolError::StreamIdNotIncreasing(1)))
        })
        .await;
    }

    #[tokio::test]
    async fn oversized_length_ends_the_mux() {
        let mut bad = frame(1, KIND_DATA, b"");
        bad[6..8].copy_from_slice(&40_000u16.to_be_bytes());
        bad_input(Role::Acceptor, bad, |e| matches!(e, MuxError::Protocol(ProtocolError::FrameTooLarge(40_000)))).await;
        let mut bad = frame(1, KIND_WINDOW, b"");
        bad[6..8].copy_from_slice(&5u16.to_be_bytes());
        bad_input(Role::Opener, bad, |e| matches!(e, MuxError::Protocol(ProtocolError::BadLength { .. }))).await;
    }

    #[tokio::test]
    async fn data_beyond_the_window_ends_the_mux() {
        let mut bad = Vec::new();
        for _ in 0..INITIAL_WINDOW as usize / MAX_PAYLOAD {
            bad.extend(frame(1, KIND_DATA, &[0u8; MAX_PAYLOAD]));
        }
        bad.extend(frame(1, KIND_DATA, b"!"));
        bad_input(Role::Acceptor, bad, |e| matches!(e, MuxError::Protocol(ProtocolError::WindowExceeded(1)))).await;
    }

    #[tokio::test]
    async fn open_sent_to_the_opener_ends_the_mux() {
        bad_input(Role::Opener, frame(7, KIND_OPEN, b"x"), |e| {
            matches!(e, MuxError::Protocol(ProtocolError::OpenToOpener))
        })
        .await;
    }

    #[tokio::test]
    async fn eof_mid_frame_is_an_error_and_unknown_streams_get_credit_back() {
        let (raw, io) = tokio::io::duplex(1 << 20);
        let (_h, _a, d) = start(io, Role::Acceptor, MuxConfig::default());
        let (mut rr, mut rw) = tokio::io::split(raw);
        let mut input = frame(9, KIND_DATA, &[1u8; 1000]);
        input.extend(frame(9, KIND_DATA, &[1u8; 24]));
        input.extend(frame(9, KIND_FIN, b""));
        input.extend(&frame(1, KIND_DATA, b"12345")[..10]);
        rw.write_all(&input).await.unwrap();
        let mut got = [0u8; 12];
        within(PROMPT, rr.read_exact(&mut got)).await.unwrap();
        assert_eq!(got.to_vec(), frame(9, KIND_WINDOW, &1024u32.to_be_bytes()));
        rw.shutdown().await.unwrap();
        assert!(matches!(within(PROMPT, d).await.unwrap(), Err(MuxError::UnexpectedEof)));
    }

    /// Counts successful `poll_write` calls on the wrapped connection.
    struct Counting<I> {
        inner: I,
        writes: Arc<AtomicUsize>,
    }

    impl<I: AsyncRead + Unpin> AsyncRead for Counting<I> {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl<I: AsyncWrite + Unpin> AsyncWrite for Counting<I> {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(_)) = r {
                this.writes.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// 50 streams send a 100-byte request at once (a barrier), the acceptor answers each, and
    /// the 50 go on in lockstep for 10 rounds. Returns the writes per round on each side.
    async fn batching_round(tcp: bool) -> (usize, usize) {
        const N: usize = 50;
        const ROUNDS: usize = 10;
        let (ow, aw) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let cfg = MuxConfig::default;
        let ((h, _a, _d1), (_h2, mut acc, _d2)) = if tcp {
            let (a, b) = tcp_conns().await;
            pair(Counting { inner: a, writes: ow.clone() }, Counting { inner: b, writes: aw.clone() }, cfg(), cfg())
        } else {
            let (a, b) = tokio::io::duplex(1 << 20);
            pair(Counting { inner: a, writes: ow.clone() }, Counting { inner: b, writes: aw.clone() }, cfg(), cfg())
        };
        let mut streams: Vec<MuxStream> = (0..N).map(|_| h.open(b"").unwrap()).collect();
        let mut responders = Vec::new();
        for _ in 0..N {
            let (_, mut s) = within(PROMPT, acc.accept()).await.unwrap();
            responders.push(tokio::spawn(async move {
                let mut req = [0u8; 100];
                for _ in 0..ROUNDS {
                    s.read_exact(&mut req).await.unwrap();
                    s.write_all(&[req[0]; 100]).await.unwrap();
                }
                s
            }));
        }
        // Every OPEN is out; from here on only the requests and responses count.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (o0, a0) = (ow.load(Ordering::Relaxed), aw.load(Ordering::Relaxed));
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let clients: Vec<_> = streams
            .drain(..)
            .enumerate()
            .map(|(i, mut s)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    for _ in 0..ROUNDS {
                        s.write_all(&[i as u8; 100]).await.unwrap();
                        let mut resp = [0u8; 100];
                        s.read_exact(&mut resp).await.unwrap();
                        assert_eq!(resp, [i as u8; 100]);
                    }
                    s
                })
            })
            .collect();
        for c in clients {
            within(PROMPT, c).await.unwrap();
        }
        for r in responders {
            within(PROMPT, r).await.unwrap();
        }
        let per_round = |n: usize| n.div_ceil(ROUNDS);
        (per_round(ow.load(Ordering::Relaxed) - o0), per_round(aw.load(Ordering::Relaxed) - a0))
    }

    /// On two workers. A worker preempted by the OS on a loaded machine splits a batch however
    /// the mux behaves (11 writes per 50 requests were seen with the whole test suite running on
    /// two cores, 1-5 on a quiet machine), so this checks the average of 10 rounds against a
    /// loose bound: at least twice fewer writes than requests. The single-thread test below is
    /// the strict one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_ready_together_leave_in_few_writes() {
        for tcp in [false, true] {
            let (requests, responses) = batching_round(tcp).await;
            eprintln!("tcp {tcp}: 50 requests in {requests} writes, 50 responses in {responses}");
            assert!(requests <= 25, "50 requests took {requests} writes (tcp: {tcp})");
            assert!(responses <= 25, "50 responses took {responses} writes (tcp: {tcp})");
        }
    }

    #[tokio::test]
    async fn requests_ready_together_leave_in_few_writes_current_thread() {
        let (requests, responses) = batching_round(false).await;
        eprintln!("current thread: 50 requests in {requests} writes, 50 responses in {responses}");
        assert!(requests <= 3, "50 requests took {requests} writes");
        assert!(responses <= 3, "50 responses took {responses} writes");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                // Plausible frames: small ids, any kind near the valid ones, short payloads.
                (0u32..4, 0u8..7, prop::sample::select(vec![0u8, 0, 0, 1]), prop::collection::vec(any::<u8>(), 0..40))
                    .prop_map(|(id, kind, flags, payload)| {
                        let mut f = frame(id, kind, &payload);
                        f[5] = flags;
                        f
                    }),
                // A header announcing more than follows (or too much).
                (0u32..4, 0u8..7, any::<u16>()).prop_map(|(id, kind, len)| {
                    let mut f = frame(id, kind, b"");
                    f[6..8].copy_from_slice(&len.to_be_bytes());
                    f
                }),
                prop::collection::vec(any::<u8>(), 0..64),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn random_input_never_panics_and_always_ends(
                pieces in prop::collection::vec(piece(), 0..24),
                opener in any::<bool>(),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let (raw, io) = tokio::io::duplex(1 << 20);
                    let role = if opener { Role::Opener } else { Role::Acceptor };
                    let (h, mut acc, d) = start(io, role, MuxConfig::default());
                    // On the opener, two streams of our own (ids 1 and 2) for the input to hit.
                    let mine: Vec<MuxStream> =
                        if opener { (0..2).map(|_| h.open(b"mine").unwrap()).collect() } else { Vec::new() };
                    for mut s in mine {
                        tokio::spawn(async move {
                            let mut buf = [0u8; 64];
                            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                                let _ = s.write_all(b"answer").await;
                            }
                        });
                    }
                    // Accepted streams are read and written, to walk those paths too.
                    tokio::spawn(async move {
                        while let Some((_, mut s)) = acc.accept().await {
                            tokio::spawn(async move {
                                let mut buf = [0u8; 64];
                                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                                    let _ = s.write_all(b"answer").await;
                                }
                                let _ = s.shutdown().await;
                            });
                        }
                    });
                    let (mut rr, mut rw) = tokio::io::split(raw);
                    tokio::spawn(async move {
                        let mut sink = vec![0u8; 64 * 1024];
                        while matches!(rr.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                    for p in &pieces {
                        let _ = rw.write_all(p).await;
                    }
                    let _ = rw.shutdown().await;
                    let r = tokio::time::timeout(PROMPT, d).await;
                    assert!(r.is_ok(), "driver did not end");
                });
            }
        }
    }
}
