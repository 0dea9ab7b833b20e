//! The multiplexer without a connection: the peer's bytes go in through [`SansIo::feed`], the
//! frames queued for the peer come out of [`SansIo::take_out`], and the local streams are driven
//! by id. It runs the driver's own decoding and dispatch (checks, credit, windows, stream
//! table), only the socket and the tasks are missing, so fuzz targets and tests can reach every
//! frame path with any stream id and any credit, and measure what the peer made us hold.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::config::MuxConfig;
use super::error::MuxError;
use super::frame::{ProtocolError, Role};
use super::state::{dispatch, Shared};
use super::stream::{Acceptor, MuxHandle, MuxStream};

/// Bytes handed to one dispatch pass at most, like one read of the driver's 64 KiB buffer.
const READ_STEP: usize = 64 * 1024;

/// A mux fed by hand; see the module doc.
pub struct SansIo {
    handle: MuxHandle,
    acceptor: Acceptor,
    /// Streams opened here or accepted, by id.
    streams: Vec<MuxStream>,
    /// The peer's bytes that are not a complete frame yet (at most a header and one payload).
    pending: Vec<u8>,
    wakers: Vec<Waker>,
    /// The driver would have stopped reading: [`SansIo::take_out`] first.
    paused: bool,
}

impl SansIo {
    pub fn new(role: Role, cfg: MuxConfig) -> SansIo {
        let shared = Shared::new(role, &cfg);
        SansIo {
            handle: MuxHandle { shared: shared.clone() },
            acceptor: Acceptor { shared },
            streams: Vec::new(),
            pending: Vec::new(),
            wakers: Vec::new(),
            paused: false,
        }
    }

    /// Takes bytes from the peer and dispatches every complete frame, in steps of one driver
    /// read. Returns how many bytes were taken: fewer than given once the frames queued for the
    /// peer reach the point where the driver stops reading (then [`SansIo::take_out`] and feed
    /// the rest). An error is the protocol error that ends the mux; feed nothing more after it.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ProtocolError> {
        let mut taken = 0;
        while taken < bytes.len() && !self.paused {
            let n = (bytes.len() - taken).min(READ_STEP.saturating_sub(self.pending.len()).max(1));
            self.pending.extend_from_slice(&bytes[taken..taken + n]);
            taken += n;
            let d = dispatch(&self.handle.shared, &self.pending, &mut self.wakers);
            // Only this object's own polls registered wakers; nobody waits on them.
            self.wakers.clear();
            let d = d?;
            self.pending.drain(..d.consumed);
            self.paused = d.pause;
        }
        Ok(taken)
    }

    /// Whether the driver would have stopped reading for now.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The frames queued for the peer, as the driver would write them (and reading resumes).
    pub fn take_out(&mut self) -> Vec<u8> {
        let mut g = self.handle.shared.lock();
        let inner = &mut *g;
        for id in inner.out_waiters.drain(..) {
            if let Some(s) = inner.streams.get_mut(&id) {
                s.out_waiting = false;
            }
        }
        self.paused = false;
        std::mem::take(&mut inner.out)
    }

    /// Bytes queued for the peer.
    pub fn queued(&self) -> usize {
        self.handle.shared.lock().out.len()
    }

    /// Queued bytes past which the driver stops reading and `open` refuses.
    pub fn out_limit(&self) -> usize {
        self.handle.shared.out_limit
    }

    /// Opens a stream (opener role); returns its id.
    pub fn open(&mut self, meta: &[u8]) -> Result<u32, MuxError> {
        let s = self.handle.open(meta)?;
        let id = s.id();
        self.streams.push(s);
        Ok(id)
    }

    /// Accepts every stream the peer opened so far; returns their ids.
    pub fn accept(&mut self) -> Vec<u32> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut ids = Vec::new();
        while let Poll::Ready(Some((_, s))) = self.acceptor.poll_accept(&mut cx) {
            ids.push(s.id());
            self.streams.push(s);
        }
        ids
    }

    fn stream(&mut self, id: u32) -> io::Result<&mut MuxStream> {
        self.streams
            .iter_mut()
            .find(|s| s.id() == id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such local stream"))
    }

    /// Reads what stream `id` has buffered into `buf` (returning credit as a reader would).
    /// `Pending`: nothing yet.
    pub fn read(&mut self, id: u32, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let s = match self.stream(id) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut rb = ReadBuf::new(buf);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(s).poll_read(&mut cx, &mut rb).map_ok(|()| rb.filled().len())
    }

    /// Writes to stream `id` within its credit and the batch limit. `Pending`: it would wait.
    pub fn write(&mut self, id: u32, data: &[u8]) -> Poll<io::Result<usize>> {
        let s = match self.stream(id) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(s).poll_write(&mut cx, data)
    }

    /// Half-closes stream `id` (FIN).
    pub fn shutdown(&mut self, id: u32) -> io::Result<()> {
        let s = self.stream(id)?;
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(s).poll_shutdown(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Drops stream `id` (RESET unless it was finished both ways).
    pub fn drop_stream(&mut self, id: u32) {
        self.streams.retain(|s| s.id() != id);
    }

    /// Ids of the local streams held.
    pub fn stream_ids(&self) -> Vec<u32> {
        self.streams.iter().map(MuxStream::id).collect()
    }

    /// Streams in the mux's table (including those not accepted yet).
    pub fn stream_count(&self) -> usize {
        self.handle.stream_count()
    }

    /// Bytes received and not read, over all streams.
    pub fn buffered(&self) -> usize {
        self.handle.shared.lock().streams.values().map(|s| s.inbound.len()).sum()
    }

    /// Memory the peer's input holds here: the streams' receive buffers (capacity), the metas
    /// waiting to be accepted, the frames queued for the peer (capacity) and the partial frame.
    pub fn held(&self) -> usize {
        let g = self.handle.shared.lock();
        let inbound: usize = g.streams.values().map(|s| s.inbound.capacity()).sum();
        let metas: usize = g.accept_queue.iter().map(|(_, m)| m.capacity()).sum();
        inbound + metas + g.out.capacity() + self.pending.capacity()
    }

    /// The sum of the streams' receive windows: what [`SansIo::buffered`] may reach at most.
    pub fn windows(&self) -> u64 {
        self.handle.shared.lock().streams.values().map(|s| u64::from(s.window)).sum()
    }

    /// Ends the mux as [`MuxHandle::close`] does.
    pub fn close(&self) {
        self.handle.close();
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::OUT_PAUSE_SLACK;
    use super::super::frame::{
        push_frame, INITIAL_WINDOW, KIND_DATA, KIND_FIN, KIND_OPEN, KIND_RESET, KIND_WINDOW, MAX_PAYLOAD, MAX_WINDOW,
        PING_ID,
    };
    use super::*;

    fn frame(id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        push_frame(&mut v, id, kind, payload);
        v
    }

    fn window(id: u32, credit: u32) -> Vec<u8> {
        frame(id, KIND_WINDOW, &credit.to_be_bytes())
    }

    /// Parses queued frames into (id, kind, payload length).
    fn frames(mut out: &[u8]) -> Vec<(u32, u8, usize)> {
        let mut v = Vec::new();
        while out.len() >= 8 {
            let id = u32::from_be_bytes([out[0], out[1], out[2], out[3]]);
            let len = usize::from(u16::from_be_bytes([out[6], out[7]]));
            v.push((id, out[4], len));
            out = &out[8 + len..];
        }
        v
    }

    /// Feeds everything, writing queued frames out whenever the driver would pause.
    fn feed_all(m: &mut SansIo, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        while !bytes.is_empty() {
            let n = m.feed(bytes)?;
            bytes = &bytes[n..];
            if m.paused() {
                m.take_out();
            }
        }
        Ok(())
    }

    #[test]
    fn a_reader_that_never_reads_holds_at_most_its_windows() {
        let mut m = SansIo::new(Role::Acceptor, MuxConfig::default());
        // Frame sizes chosen so that doubling the receive buffer would overshoot the window
        // (20 KiB, then 32 KiB ones: 20 -> 52 -> 208 -> 416 KiB).
        let mut sizes = vec![20 * 1024];
        sizes.extend([MAX_PAYLOAD; 7]);
        sizes.push(12 * 1024);
        assert_eq!(sizes.iter().sum::<usize>(), INITIAL_WINDOW as usize);
        for id in 1..=64u32 {
            m.feed(&frame(id, KIND_OPEN, &[0u8; 1024])).unwrap();
            for &n in &sizes {
                m.feed(&frame(id, KIND_DATA, &vec![7u8; n])).unwrap();
            }
        }
        assert_eq!(m.buffered(), 64 * INITIAL_WINDOW as usize);
        // The windows, the 64 metas, the partial-frame buffer and the (empty) queue.
        let bound = m.windows() as usize + 64 * 1024 + READ_STEP + 1024;
        assert!(m.held() <= bound, "held {} > bound {bound}", m.held());
        // Not one byte more than the window, on any stream.
        assert_eq!(m.feed(&frame(5, KIND_DATA, b"!")), Err(ProtocolError::WindowExceeded(5)));
    }

    #[test]
    fn frames_calling_for_answers_stop_the_reader_while_the_peer_does_not_read() {
        // DATA for streams that do not exist, alternating ids so no two credits merge: each
        // calls for a WINDOW frame. The peer reads none of them.
        let mut m = SansIo::new(Role::Acceptor, MuxConfig::default());
        let mut flood = Vec::new();
        for i in 0..400_000u32 {
            flood.extend(frame(1000 + (i % 2), KIND_DATA, b"x"));
        }
        let mut rest = &flood[..];
        while !rest.is_empty() && !m.paused() {
            let n = m.feed(rest).unwrap();
            rest = &rest[n..];
        }
        assert!(m.paused(), "the driver stops reading");
        assert!(!rest.is_empty());
        // One read's frames (9 bytes each) past the limit at most, each answered with 12 bytes.
        assert!(m.queued() <= m.out_limit() + READ_STEP * 12 / 9 + 12, "queued {}", m.queued());
        assert_eq!(m.feed(rest).unwrap(), 0, "nothing more is taken until the queue drains");
        // Once written out, reading resumes; the credit of every byte came back.
        let mut returned = 0usize;
        loop {
            returned += frames(&m.take_out()).iter().filter(|f| f.1 == KIND_WINDOW).count();
            if rest.is_empty() {
                break;
            }
            let n = m.feed(rest).unwrap();
            rest = &rest[n..];
        }
        returned += frames(&m.take_out()).iter().filter(|f| f.1 == KIND_WINDOW).count();
        assert_eq!(returned, 400_000);
    }

    #[test]
    fn opening_stops_while_the_peer_reads_nothing() {
        // Visitors keep coming (each request opens a stream, writes, gives up and drops it),
        // and the client never reads its data connection: the queue stops growing.
        let mut m = SansIo::new(Role::Opener, MuxConfig::default());
        let meta = [b'm'; 1024];
        let mut refused = None;
        for _ in 0..100_000 {
            match m.open(&meta) {
                Ok(id) => {
                    let _ = m.write(id, &[1u8; 4096]);
                    m.drop_stream(id);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(refused, Some(MuxError::Backlogged(_))), "{refused:?}");
        assert!(m.queued() <= m.out_limit() + 1024 + 8 + 4096 + 8 + 8, "queued {}", m.queued());
        assert!(m.queued() >= MuxConfig::default().batch_limit + OUT_PAUSE_SLACK);
        // Once the peer takes the queue, streams open again.
        m.take_out();
        assert!(m.open(b"again").is_ok());
    }

    #[test]
    fn writers_wait_at_the_batch_limit_when_the_peer_does_not_read() {
        let mut m = SansIo::new(Role::Opener, MuxConfig::default());
        let data = vec![3u8; 1 << 20];
        for _ in 0..64 {
            let id = m.open(b"s").unwrap();
            // Writes until the stream waits (credit or queue), never more.
            while let Poll::Ready(r) = m.write(id, &data) {
                r.unwrap();
            }
        }
        let limit = MuxConfig::default().batch_limit;
        assert!(m.queued() <= limit + MAX_PAYLOAD + 64 * (8 + 1 + 8 + MAX_PAYLOAD / 1024), "queued {}", m.queued());
    }

    #[test]
    fn credit_past_the_largest_window_is_a_protocol_error() {
        let mut m = SansIo::new(Role::Opener, MuxConfig::default());
        let id = m.open(b"s").unwrap();
        // Up to the largest window a receiver may have: allowed.
        m.feed(&window(id, MAX_WINDOW - INITIAL_WINDOW)).unwrap();
        assert_eq!(m.feed(&window(id, 1)), Err(ProtocolError::WindowOverflow(id)));

        let mut m = SansIo::new(Role::Opener, MuxConfig::default());
        let id = m.open(b"s").unwrap();
        assert_eq!(m.feed(&window(id, u32::MAX)), Err(ProtocolError::WindowOverflow(id)));

        // Credit spent is credit that may come back, again and again.
        let mut m = SansIo::new(Role::Opener, MuxConfig::default());
        let id = m.open(b"s").unwrap();
        let data = vec![0u8; INITIAL_WINDOW as usize];
        for _ in 0..100 {
            let mut sent = 0;
            while sent < data.len() {
                match m.write(id, &data[sent..]) {
                    Poll::Ready(r) => sent += r.unwrap(),
                    Poll::Pending => {
                        m.take_out();
                    }
                }
            }
            m.feed(&window(id, INITIAL_WINDOW)).unwrap();
        }
        assert!(m.write(id, &data).is_ready());
    }

    #[test]
    fn stream_ids_up_to_the_last_one() {
        // The opener: the ids just below the reserved one, then a clean error, twice.
        let mut m = SansIo::new(Role::Opener, MuxConfig::default());
        m.handle.shared.lock().last_id = u32::MAX - 3;
        let a = m.open(b"a").unwrap();
        let b = m.open(b"b").unwrap();
        assert_eq!((a, b), (u32::MAX - 2, u32::MAX - 1));
        assert!(matches!(m.open(b"c"), Err(MuxError::IdsExhausted)));
        assert!(matches!(m.open(b"c"), Err(MuxError::IdsExhausted)));
        // Those streams work like any other.
        m.feed(&frame(b, KIND_DATA, b"hello")).unwrap();
        m.feed(&window(b, 5)).unwrap();
        m.feed(&frame(b, KIND_FIN, b"")).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(m.read(b, &mut buf), Poll::Ready(Ok(5))));
        assert!(matches!(m.read(b, &mut buf), Poll::Ready(Ok(0))));
        assert!(m.write(a, b"x").is_ready());

        // The acceptor: the last usable id is accepted, the reserved one ends the mux.
        let mut m = SansIo::new(Role::Acceptor, MuxConfig::default());
        m.feed(&frame(u32::MAX - 1, KIND_OPEN, b"m")).unwrap();
        assert_eq!(m.accept(), vec![u32::MAX - 1]);
        m.feed(&frame(u32::MAX - 1, KIND_DATA, b"data")).unwrap();
        assert_eq!(m.buffered(), 4);
        assert_eq!(m.feed(&frame(PING_ID, KIND_OPEN, b"m")), Err(ProtocolError::ReservedStreamId));

        let mut m = SansIo::new(Role::Acceptor, MuxConfig::default());
        assert_eq!(m.feed(&frame(PING_ID, KIND_OPEN, b"m")), Err(ProtocolError::ReservedStreamId));
    }

    #[test]
    fn unknown_and_ended_streams_cost_nothing() {
        let mut m = SansIo::new(Role::Acceptor, MuxConfig::default());
        // Frames for a stream that never was: DATA gets its credit back, the rest is ignored.
        let mut input = frame(77, KIND_DATA, &[0u8; 100]);
        input.extend(window(77, u32::MAX));
        input.extend(frame(77, KIND_FIN, b""));
        input.extend(frame(77, KIND_RESET, b""));
        m.feed(&input).unwrap();
        assert_eq!(frames(&m.take_out()), vec![(77, KIND_WINDOW, 4)]);
        assert_eq!(m.stream_count(), 0);
        // A stream dropped here: the peer's later frames for it find nothing and keep nothing.
        m.feed(&frame(80, KIND_OPEN, b"m")).unwrap();
        assert_eq!(m.accept(), vec![80]);
        m.drop_stream(80);
        assert_eq!(frames(&m.take_out()), vec![(80, KIND_RESET, 0)]);
        feed_all(&mut m, &frame(80, KIND_DATA, &[1u8; 1000])).unwrap();
        m.feed(&window(80, 12345)).unwrap();
        m.feed(&frame(80, KIND_FIN, b"")).unwrap();
        assert_eq!(frames(&m.take_out()), vec![(80, KIND_WINDOW, 4)]);
        assert_eq!((m.stream_count(), m.buffered()), (0, 0));
        // An id already used cannot be opened again.
        assert_eq!(m.feed(&frame(80, KIND_OPEN, b"m")), Err(ProtocolError::StreamIdNotIncreasing(80)));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn id() -> impl Strategy<Value = u32> {
            prop_oneof![0u32..6, Just(u32::MAX), Just(u32::MAX - 1), any::<u32>()]
        }

        fn piece() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                (id(), 1u8..6, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(id, kind, p)| frame(id, kind, &p)),
                (id(), any::<u32>()).prop_map(|(id, credit)| window(id, credit)),
                (id(), 0usize..MAX_PAYLOAD).prop_map(|(id, n)| frame(id, KIND_DATA, &vec![0u8; n])),
                prop::collection::vec(any::<u8>(), 0..16),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn any_ids_and_credits_never_panic_and_stay_bounded(
                pieces in prop::collection::vec(piece(), 0..40),
                opener in any::<bool>(),
                reads in any::<bool>(),
            ) {
                let role = if opener { Role::Opener } else { Role::Acceptor };
                let mut m = SansIo::new(role, MuxConfig::data_link());
                if opener {
                    for _ in 0..3 {
                        m.open(b"mine").unwrap();
                    }
                }
                for p in &pieces {
                    if feed_all(&mut m, p).is_err() {
                        break;
                    }
                    m.accept();
                    for id in m.stream_ids() {
                        let mut buf = [0u8; 4096];
                        if reads {
                            let _ = m.read(id, &mut buf);
                        }
                        let _ = m.write(id, b"answer");
                    }
                    prop_assert!(m.buffered() as u64 <= m.windows());
                    prop_assert!(m.queued() <= m.out_limit() + 2 * READ_STEP);
                }
            }
        }
    }
}
