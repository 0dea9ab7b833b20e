//! Bidirectional copy with half-close, like `tokio::io::copy_bidirectional`, but an idle
//! connection holds no buffer: a direction borrows a buffer from a small per-thread pool only
//! while bytes are in flight and returns it as soon as its reader has nothing more. Thousands of
//! held, quiet connections then cost only their sockets and TLS state.
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of one copy buffer: two full TLS records.
pub const BUF_SIZE: usize = 32 * 1024;
/// Buffers kept for reuse per thread; beyond that they are freed.
const POOL_MAX: usize = 64;
/// Size of a buffer for a bulk stream: one whose last read filled its whole buffer, so more
/// bytes were waiting. Moving such a stream in 512 KiB steps instead of 32 KiB ones costs far
/// fewer syscalls and wake-ups per byte (docs/benchmarks.md has the figures). A stream holds
/// one only while it keeps its reader busy.
pub const BULK_SIZE: usize = 512 * 1024;
/// Bulk buffers alive in a process at most, in use or pooled (32 MiB); past that, streams go
/// on with [`BUF_SIZE`] buffers.
const BULK_MAX: usize = 64;
/// Bulk buffers kept for reuse per thread.
const BULK_POOL_MAX: usize = 2;

static BULK_LIVE: AtomicUsize = AtomicUsize::new(0);

/// A thread's pooled bulk buffers. They count as live in [`BULK_LIVE`], so when the thread
/// ends (a runtime shut down, a blocking-pool thread retired) they leave the count with it.
struct BulkPool(Vec<Box<[u8]>>, &'static AtomicUsize);

impl Drop for BulkPool {
    fn drop(&mut self) {
        let n = self.0.len();
        let _ = self.1.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| Some(live.saturating_sub(n)));
    }
}

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static BULK_POOL: RefCell<BulkPool> = const { RefCell::new(BulkPool(Vec::new(), &BULK_LIVE)) };
}

/// A copy buffer of [`BUF_SIZE`] bytes from the per-thread pool (or a new one).
pub fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

/// A [`BULK_SIZE`] buffer, if the process's bulk budget allows one.
pub(crate) fn take_bulk() -> Option<Box<[u8]>> {
    if let Some(b) = BULK_POOL.with(|p| p.borrow_mut().0.pop()) {
        return Some(b);
    }
    BULK_LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < BULK_MAX).then_some(n + 1)).ok()?;
    Some(vec![0u8; BULK_SIZE].into_boxed_slice())
}

/// A bulk buffer for `bulk` when the budget allows, else a [`BUF_SIZE`] one.
pub(crate) fn take_sized(bulk: bool) -> Box<[u8]> {
    bulk.then(take_bulk).flatten().unwrap_or_else(take_buf)
}

/// Returns a buffer to the per-thread pool of its size (dropped when that pool is full, or
/// when it is of neither pooled size). Only for buffers [`take_buf`] or [`take_sized`] gave:
/// a bulk-sized buffer from anywhere else would be counted out of a budget it was never
/// counted into.
pub fn give_buf(b: Box<[u8]>) {
    match b.len() {
        BUF_SIZE => POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(b);
            }
        }),
        BULK_SIZE => BULK_POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.0.len() < BULK_POOL_MAX {
                p.0.push(b);
            } else {
                drop(b);
                let _ = BULK_LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }),
        _ => {}
    }
}

/// Whether a stream is bulk after a read of `n` bytes into `room` bytes of buffer, `bulk`
/// before: a read that filled the buffer means more was waiting; a read of half a small
/// buffer or less means the stream has slowed down.
pub(crate) fn still_bulk(bulk: bool, n: usize, room: usize) -> bool {
    if n == room && n > 0 {
        true
    } else if n <= BUF_SIZE / 2 {
        false
    } else {
        bulk
    }
}

/// Bytes waiting in a pooled buffer, `buf[start..end]`. The buffer is taken from its pool when
/// bytes arrive and given back as soon as none are left, so an idle owner holds nothing.
pub struct Window {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    take: fn(bool) -> Box<[u8]>,
    give: fn(Box<[u8]>),
    /// Size class of the next buffer taken (see [`BULK_SIZE`]).
    bulk: bool,
    /// The held buffer was allocated by [`Window::reserve`], not taken from the pool: it is
    /// freed, never given to `give` (whatever its size, it was never counted in).
    own: bool,
}

impl Window {
    /// An empty window over the pool `take` / `give`.
    pub(crate) const fn new(take: fn(bool) -> Box<[u8]>, give: fn(Box<[u8]>)) -> Window {
        Window { buf: None, start: 0, end: 0, take, give, bulk: false, own: false }
    }

    /// Whether the owner's stream is bulk: buffers taken from now on are bulk ones (and a held
    /// smaller one is swapped for one at the next [`Window::spare`]).
    pub(crate) fn set_bulk(&mut self, bulk: bool) {
        self.bulk = bulk;
    }

    pub(crate) fn is_bulk(&self) -> bool {
        self.bulk
    }

    pub fn pending(&self) -> &[u8] {
        self.buf.as_deref().map(|b| &b[self.start..self.end]).unwrap_or(&[])
    }

    pub(crate) fn pending_mut(&mut self) -> &mut [u8] {
        match self.buf.as_deref_mut() {
            Some(b) => &mut b[self.start..self.end],
            None => &mut [],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether a buffer is held (only while bytes are pending, or between `spare` and `commit`).
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.buf.is_some()
    }

    /// Length of the held buffer.
    pub fn capacity(&self) -> Option<usize> {
        self.buf.as_ref().map(|b| b.len())
    }

    /// The free part after the pending bytes, to be filled and then [`Window::commit`]ted;
    /// takes a buffer if none is held, and moves the pending bytes to the front first when
    /// fewer than `want` bytes are free.
    pub(crate) fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.bulk && self.buf.as_ref().is_some_and(|b| b.len() < BULK_SIZE) {
            self.grow();
        }
        let take = self.take;
        let bulk = self.bulk;
        let buf = self.buf.get_or_insert_with(|| take(bulk));
        if self.start > 0 && buf.len() - self.end < want {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    /// Moves the pending bytes into a bulk buffer, if the budget gives one (else the stream is
    /// no longer treated as bulk).
    fn grow(&mut self) {
        let bigger = (self.take)(true);
        if self.capacity().is_some_and(|held| bigger.len() > held) {
            self.move_into(bigger, false);
        } else {
            (self.give)(bigger);
            self.bulk = false;
        }
    }

    /// Swaps the held buffer for `bigger` (`own`: allocated here, not taken from the pool), the
    /// pending bytes moved to its front.
    fn move_into(&mut self, mut bigger: Box<[u8]>, own: bool) {
        let n = self.end - self.start;
        if let Some(old) = self.buf.as_mut() {
            bigger[..n].copy_from_slice(&old[self.start..self.end]);
            let old = std::mem::replace(old, bigger);
            if !self.own {
                (self.give)(old);
            }
            self.own = own;
        }
        self.start = 0;
        self.end = n;
    }

    /// An empty window over the pool of [`BUF_SIZE`] buffers.
    pub fn pooled() -> Window {
        Window::new(take_sized, give_buf)
    }

    /// Reads at most `max` bytes from `r` after the pending ones (a buffer is taken for them,
    /// and given back if none came). `Ready(Ok(0))`: the end of the stream.
    pub fn poll_fill<R: AsyncRead + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        r: Pin<&mut R>,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let spare = self.spare(1);
        let room = spare.len().min(max);
        let mut rb = ReadBuf::new(&mut spare[..room]);
        let res = r.poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.commit(n);
        res.map_ok(|()| n)
    }

    /// Like [`Window::spare`], with a bigger buffer (not from the pool) when the pool's is too
    /// small for `need` more bytes.
    pub fn reserve(&mut self, need: usize) -> &mut [u8] {
        if self.spare(need).len() < need {
            let pending = self.end - self.start;
            self.move_into(vec![0u8; pending + need].into_boxed_slice(), true);
        }
        self.spare(need)
    }

    /// Adds `n` bytes written into [`Window::spare`]; gives the buffer back if there are none.
    pub(crate) fn commit(&mut self, n: usize) {
        self.end += n;
        self.release_if_empty();
    }

    /// Drops `n` bytes from the front; gives the buffer back once none are left.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        self.release_if_empty();
    }

    fn release_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.free();
        }
    }

    /// Lets go of the held buffer: back to the pool it came from, or freed if it is our own.
    fn free(&mut self) {
        if let Some(b) = self.buf.take() {
            if !std::mem::take(&mut self.own) {
                (self.give)(b);
            }
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.free();
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
        ReadAhead { inner, ahead: Window::pooled() }
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
            if ready!(this.ahead.poll_fill(cx, Pin::new(&mut this.inner), usize::MAX))? == 0 {
                return Poll::Ready(Ok(()));
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
    crate::forward_write!(inner: poll_write, poll_write_vectored, is_write_vectored, poll_flush, poll_shutdown);
}

/// One direction of [`splice`]: bytes read and not yet written wait in a pooled window, so a
/// direction whose reader has nothing holds no buffer.
struct Direction {
    win: Window,
    read_done: bool,
    need_flush: bool,
    done: bool,
    amt: u64,
}

impl Default for Direction {
    fn default() -> Self {
        Direction { win: Window::new(take_sized, give_buf), read_done: false, need_flush: false, done: false, amt: 0 }
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
            if self.win.is_empty() && !self.read_done {
                let spare = self.win.spare(0);
                let room = spare.len();
                let mut rb = ReadBuf::new(spare);
                let res = r.as_mut().poll_read(cx, &mut rb);
                let n = rb.filled().len();
                // With nothing read, this gives the buffer back.
                self.win.commit(n);
                match res {
                    Poll::Pending => {
                        // Nothing to copy: push out whatever the writer still holds (TLS
                        // records, Nagle-free sockets) while we wait.
                        if self.need_flush {
                            ready!(w.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) if n == 0 => self.read_done = true,
                    Poll::Ready(Ok(())) => {
                        let bulk = still_bulk(self.win.is_bulk(), n, room);
                        self.win.set_bulk(bulk);
                    }
                }
            }
            while !self.win.is_empty() {
                let n = ready!(w.as_mut().poll_write(cx, self.win.pending()))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::WriteZero, "write zero bytes")));
                }
                // Gives the buffer back once all is written.
                self.win.consume(n);
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
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
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes `len` bytes of a pattern into `a` and shuts it down: all of them come out of `b`,
    /// and a 22-byte reply `b` sends after that half-close still reaches `a`.
    pub(crate) async fn exchange_with_half_close<A, B>(mut a: A, mut b: B, len: u32)
    where
        A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&d2).await.unwrap();
            a.shutdown().await.unwrap();
            let mut back = Vec::new();
            a.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "bytes arrive intact and in order");
        // The other direction still works after the first one closed.
        b.write_all(b"reply after half-close").await.unwrap();
        b.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (a_outer, mut a_inner) = tokio::io::duplex(1024);
        let (mut b_inner, b_outer) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { splice(&mut a_inner, &mut b_inner).await });
        exchange_with_half_close(a_outer, b_outer, 300_000).await;
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
        assert!(!ab.win.is_held(), "a pending read gives its buffer back");
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

    #[test]
    fn bulk_buffers_are_bounded_per_process() {
        let mut held = Vec::new();
        while let Some(b) = take_bulk() {
            assert_eq!(b.len(), BULK_SIZE);
            held.push(b);
            assert!(held.len() <= BULK_MAX, "never more than the budget");
        }
        assert_eq!(take_sized(true).len(), BUF_SIZE, "past the budget, streams get small buffers");
        for b in held {
            give_buf(b);
        }
        assert!(take_bulk().is_some(), "buffers given back free the budget");
    }

    /// `w` after "hello" was read into it and its first byte written out: "ello" pending.
    fn pending_ello(mut w: Window) -> Window {
        w.spare(0)[..5].copy_from_slice(b"hello");
        w.commit(5);
        w.consume(1);
        w
    }

    #[test]
    fn a_window_turning_bulk_keeps_its_pending_bytes() {
        let mut w = pending_ello(Window::new(take_sized, give_buf));
        w.set_bulk(true);
        let room = w.spare(0).len();
        assert_eq!(w.pending(), b"ello");
        // Another test of this process may hold the whole bulk budget; then the window stays small.
        assert!(room == BULK_SIZE - 4 || (!w.is_bulk() && room == BUF_SIZE - 4), "room {room}");
        w.consume(4);
        assert!(!w.is_held(), "drained, the bulk buffer goes back");
    }

    #[tokio::test]
    async fn a_busy_direction_reads_in_bulk_steps_and_a_quiet_one_does_not() {
        let (mut src, mut a_inner) = tokio::io::duplex(4 << 20);
        let (mut b_inner, mut sink) = tokio::io::duplex(4 << 20);
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
        src.write_all(&data).await.unwrap();
        let mut ab = Direction::default();
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(ab.poll_copy(&mut cx, Pin::new(&mut a_inner), Pin::new(&mut b_inner)).is_pending());
        assert!(ab.win.is_bulk(), "reads that fill the buffer make the direction bulk");
        assert!(!ab.win.is_held(), "a waiting direction holds no buffer, bulk or not");
        src.write_all(b"a little more").await.unwrap();
        assert!(ab.poll_copy(&mut cx, Pin::new(&mut a_inner), Pin::new(&mut b_inner)).is_pending());
        assert!(!ab.win.is_bulk(), "a small read ends bulk mode");
        drop(src);
        drop(ab);
        drop(b_inner);
        let mut got = Vec::new();
        sink.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len() + 13);
        assert!(got[..data.len()] == data[..] && &got[data.len()..] == b"a little more");
    }

    /// Buffers handed out by `ledger_take` (addresses) and given back to `ledger_give` (kept
    /// alive, so an address is never reused within a test).
    type Ledger = (Vec<usize>, Vec<Box<[u8]>>);

    thread_local! {
        static LEDGER: RefCell<Ledger> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    fn ledger_take(bulk: bool) -> Box<[u8]> {
        let b = vec![0u8; if bulk { BULK_SIZE } else { BUF_SIZE }].into_boxed_slice();
        LEDGER.with(|l| l.borrow_mut().0.push(b.as_ptr() as usize));
        b
    }

    fn ledger_give(b: Box<[u8]>) {
        LEDGER.with(|l| l.borrow_mut().1.push(b));
    }

    #[test]
    fn a_window_gives_back_exactly_the_buffers_it_took() {
        let mut w = pending_ello(Window::new(ledger_take, ledger_give));
        // Grown by `reserve` to exactly the bulk size past the pending bytes, and used.
        let room = w.reserve(BULK_SIZE).len();
        assert!(room >= BULK_SIZE);
        w.commit(10);
        w.set_bulk(true);
        let _ = w.spare(0);
        w.consume(14);
        // A second one, grown to twice a small buffer, then drained.
        w.set_bulk(false);
        w.spare(0)[..3].copy_from_slice(b"abc");
        w.commit(3);
        let _ = w.reserve(2 * BUF_SIZE);
        w.consume(3);
        // A pooled small buffer swapped for a pooled bulk one.
        w.spare(0)[0] = 1;
        w.commit(1);
        w.set_bulk(true);
        assert!(w.spare(0).len() >= BULK_SIZE - 1);
        drop(w);
        LEDGER.with(|l| {
            let (taken, given) = &*l.borrow();
            let mut given: Vec<usize> = given.iter().map(|b| b.as_ptr() as usize).collect();
            for g in &given {
                assert!(taken.contains(g), "a buffer the pool never gave was given back to it");
            }
            given.sort_unstable();
            given.dedup();
            assert_eq!(given.len(), taken.len(), "every buffer taken is given back once");
        });
    }

    #[test]
    fn a_threads_pooled_bulk_buffers_leave_the_count_with_it() {
        // A count of its own: the process's is shared with the tests running beside this one.
        static LIVE: AtomicUsize = AtomicUsize::new(5);
        let pool = BulkPool(vec![vec![0u8; 8].into_boxed_slice(), vec![0u8; 8].into_boxed_slice()], &LIVE);
        std::thread::spawn(move || {
            thread_local!(static P: RefCell<Option<BulkPool>> = const { RefCell::new(None) });
            P.with(|p| *p.borrow_mut() = Some(pool));
        })
        .join()
        .unwrap();
        assert_eq!(LIVE.load(Ordering::Relaxed), 3, "the ended thread's two buffers are no longer counted");
    }

    #[test]
    fn a_buffer_grown_to_the_bulk_size_stays_out_of_the_bulk_pool() {
        let pooled = || BULK_POOL.with(|p| p.borrow().0.len());
        let before = pooled();
        let mut w = Window::pooled();
        // Nothing pending: the grown buffer is exactly BULK_SIZE long.
        assert_eq!(w.reserve(BULK_SIZE).len(), BULK_SIZE);
        w.commit(1);
        assert_eq!(w.capacity(), Some(BULK_SIZE));
        w.consume(1);
        // Pooled, it would be handed out by `take_bulk` without being counted in the budget
        // (and counted out when freed).
        assert_eq!(pooled(), before, "a buffer of our own went into the bulk pool");
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
