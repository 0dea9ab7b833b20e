//! The state of every stream of one mux, behind one lock: receive buffers, windows and the
//! credit both ways, the frames queued for the peer, the streams waiting to be accepted, and
//! the round-trip probe that decides window growth. [`dispatch`] applies the peer's frames to
//! it. Nothing here does I/O; the driver and the stream handles around it do.
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use super::config::{MuxConfig, OUT_PAUSE_SLACK};
use super::frame::{
    check_header, push_frame, ProtocolError, Role, HEADER_LEN, INITIAL_WINDOW, KIND_DATA, KIND_FIN, KIND_RESET,
    KIND_WINDOW, MAX_CREDIT, MAX_PAYLOAD, MAX_WINDOW, PING_ID,
};

/// Credit is returned at least every this many bytes read from a stream whose window is larger
/// than twice this.
pub(super) const CREDIT_STEP: u32 = 1024 * 1024;
/// Round-trip measurements at most this often, and only while streams receive data.
const PING_EVERY: Duration = Duration::from_millis(500);

/// Hash for stream ids: a multiply and a fold, instead of SipHash, on every frame.
#[derive(Default)]
pub(super) struct IdHasher(u64);

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

pub(super) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// One stream's state, both directions.
pub(super) struct Stream {
    /// Received, not yet read.
    pub(super) inbound: VecDeque<u8>,
    /// Receive window: what the peer may have in flight plus what is buffered here.
    pub(super) window: u32,
    /// Bytes read since `half_at`, and when the last half window's worth was complete (or the
    /// stream created): half a window read in less than a round trip means growth.
    pub(super) read_since: u32,
    pub(super) half_at: Instant,
    /// Bytes the peer may still send before we return credit.
    pub(super) recv_remaining: u32,
    /// Bytes read since credit was last returned.
    pub(super) recv_unacked: u32,
    /// Bytes we may still send (at most [`MAX_CREDIT`]).
    pub(super) send_credit: u64,
    pub(super) read_waker: Option<Waker>,
    pub(super) write_waker: Option<Waker>,
    pub(super) fin_recv: bool,
    pub(super) fin_sent: bool,
    pub(super) reset_recv: bool,
    /// Listed in `Inner::out_waiters`.
    pub(super) out_waiting: bool,
}

impl Stream {
    pub(super) fn new() -> Self {
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

pub(super) struct Inner {
    pub(super) streams: IdMap<Stream>,
    /// Frames queued for the connection, in order.
    pub(super) out: Vec<u8>,
    /// Streams waiting for room in `out`.
    pub(super) out_waiters: Vec<u32>,
    /// The driver found `out` empty and waits for the first frame.
    pub(super) writer_parked: bool,
    pub(super) driver_waker: Option<Waker>,
    /// Streams opened by the peer, not yet accepted: id and meta.
    pub(super) accept_queue: VecDeque<(u32, Vec<u8>)>,
    pub(super) accept_waker: Option<Waker>,
    pub(super) acceptor_alive: bool,
    /// Live `MuxHandle`s, `Acceptor` and `MuxStream`s; at 0 the driver closes the mux.
    pub(super) refs: usize,
    /// Why the mux ended, once it has.
    pub(super) closed: Option<Arc<str>>,
    /// Opener: last id allocated; acceptor: last id opened by the peer.
    pub(super) last_id: u32,
    /// What streams' windows grew in all (back to the budget when a stream ends).
    pub(super) window_extra: usize,
    /// Smoothed round trip, once measured.
    pub(super) rtt: Option<Duration>,
    /// When the round-trip probe in flight was sent.
    pub(super) ping_sent: Option<Instant>,
    /// When the last probe was sent.
    pub(super) last_ping: Option<Instant>,
}

impl Inner {
    /// Removes a stream, giving what its window grew back to the budget.
    pub(super) fn remove(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        self.window_extra -= (s.window - INITIAL_WINDOW) as usize;
        Some(s)
    }

    /// Queues a round-trip probe if growth is on, none is in flight and the last is old enough.
    pub(super) fn maybe_ping(&mut self, max_window: u32, now: Instant) {
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
    pub(super) fn pong(&mut self, now: Instant) {
        if let Some(sent) = self.ping_sent.take() {
            let sample = now.duration_since(sent);
            self.rtt = Some(match self.rtt {
                Some(rtt) => (rtt * 7 + sample) / 8,
                None => sample,
            });
        }
    }

    /// After frames were queued: the driver's waker if it waits for the first one.
    pub(super) fn kick(&mut self) -> Option<Waker> {
        if self.writer_parked {
            self.writer_parked = false;
            self.driver_waker.clone()
        } else {
            None
        }
    }

    /// One less handle or stream; at 0, the driver's waker (it must close the mux).
    pub(super) fn release(&mut self, closing: &AtomicBool) -> Option<Waker> {
        self.refs = self.refs.saturating_sub(1);
        if self.refs == 0 {
            closing.store(true, Ordering::Release);
            self.driver_waker.clone()
        } else {
            None
        }
    }
}

pub(super) struct Shared {
    inner: Mutex<Inner>,
    /// Set when the mux must close (close requested, last reference gone, driver done).
    pub(super) closing: AtomicBool,
    pub(super) role: Role,
    pub(super) max_window: u32,
    pub(super) window_budget: usize,
    pub(super) max_streams: usize,
    pub(super) batch_limit: usize,
    /// Queued bytes past which the reader pauses and `open` refuses.
    pub(super) out_limit: usize,
}

impl Shared {
    pub(super) fn new(role: Role, cfg: &MuxConfig) -> Arc<Shared> {
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

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// The reader of stream `id` took its first `n` buffered bytes: drops them and gives credit
    /// back to the peer when enough was read. Returns the driver's waker if a WINDOW frame was
    /// queued for a parked writer.
    pub(super) fn took(&self, inner: &mut Inner, id: u32, n: usize) -> Option<Waker> {
        let s = inner.streams.get_mut(&id)?;
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
                    let room = self.window_budget.saturating_sub(inner.window_extra);
                    let grow = s.window.min(self.max_window - s.window).min(room.min(MAX_WINDOW as usize) as u32);
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
            push_frame(&mut inner.out, id, KIND_WINDOW, &credit.to_be_bytes());
            return inner.kick();
        }
        None
    }

    /// Marks the mux ended: every stream's pending I/O is woken and fails from now on.
    pub(super) fn fail_all(&self, reason: &str) {
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

pub(super) fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

pub(super) fn aborted(reason: Option<&str>) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("mux closed: {}", reason.unwrap_or("stream gone")))
}

pub(super) fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "mux stream reset by peer")
}

pub(super) fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

/// Result of one complete pass over the read buffer.
pub(super) struct Dispatched {
    pub(super) consumed: usize,
    /// Frames were queued while the writer was parked.
    pub(super) kicked: bool,
    /// Too much is queued for the connection: stop reading until the writer drains it.
    pub(super) pause: bool,
}

/// Handles every complete frame at the start of `buf` under one lock; collects the wakers to
/// call once the lock is released.
pub(super) fn dispatch(shared: &Shared, buf: &[u8], wakers: &mut Vec<Waker>) -> Result<Dispatched, ProtocolError> {
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

    /// A mux state holding stream 1 with `buffered` bytes received, no runtime involved.
    fn with_stream(cfg: &MuxConfig, buffered: usize) -> Arc<Shared> {
        let shared = Shared::new(Role::Acceptor, cfg);
        let mut s = Stream::new();
        s.inbound.extend(std::iter::repeat_n(7u8, buffered));
        s.recv_remaining -= buffered as u32;
        shared.lock().streams.insert(1, s);
        shared
    }

    fn window_frame(id: u32, credit: u32) -> Vec<u8> {
        let mut v = Vec::new();
        push_frame(&mut v, id, KIND_WINDOW, &credit.to_be_bytes());
        v
    }

    #[test]
    fn credit_goes_back_once_half_the_window_is_read() {
        let half = INITIAL_WINDOW / 2;
        let shared = with_stream(&MuxConfig::default(), half as usize);
        let mut g = shared.lock();
        shared.took(&mut g, 1, half as usize - 1);
        assert!(g.out.is_empty(), "no credit before half the window is read");
        shared.took(&mut g, 1, 1);
        assert_eq!(g.out, window_frame(1, half));
        let s = &g.streams[&1];
        assert!(s.inbound.is_empty());
        assert_eq!(s.recv_remaining, INITIAL_WINDOW, "the peer may send a whole window again");
        assert_eq!(s.window, INITIAL_WINDOW, "no growth without a measured round trip");
    }

    #[test]
    fn a_window_read_faster_than_the_round_trip_doubles_within_the_budget() {
        let cfg = MuxConfig { window: MAX_WINDOW, window_budget: INITIAL_WINDOW as usize / 2, ..MuxConfig::default() };
        let half = INITIAL_WINDOW / 2;
        let shared = with_stream(&cfg, half as usize);
        let mut g = shared.lock();
        g.rtt = Some(Duration::from_secs(3600));
        shared.took(&mut g, 1, half as usize);
        // The budget allows half a window more, not the doubling: the growth is extra credit.
        let grow = INITIAL_WINDOW / 2;
        assert_eq!(g.out, window_frame(1, half + grow));
        assert_eq!(g.streams[&1].window, INITIAL_WINDOW + grow);
        assert_eq!(g.window_extra, grow as usize);
        assert_eq!(g.remove(1).map(|s| s.window), Some(INITIAL_WINDOW + grow));
        assert_eq!(g.window_extra, 0, "an ended stream gives its growth back to the budget");
    }

    #[test]
    fn nothing_is_queued_for_a_finished_or_closed_stream() {
        let half = INITIAL_WINDOW / 2;
        let shared = with_stream(&MuxConfig::default(), half as usize);
        let mut g = shared.lock();
        if let Some(s) = g.streams.get_mut(&1) {
            s.fin_recv = true;
        }
        assert!(shared.took(&mut g, 1, half as usize).is_none());
        assert!(g.out.is_empty(), "the peer sends nothing more: no credit for it");
        assert!(shared.took(&mut g, 2, 0).is_none(), "unknown stream");
    }
}
