use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;

use super::frame::push_frame;
use super::*;

/// Bound on anything a test waits for: a hang fails instead of blocking the run. Generous: the
/// 200-stream echo moves 400 MiB through a debug build and may share the machine with other tests.
const LIMIT: Duration = Duration::from_secs(180);
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

/// Reads `r` to its end, writing each chunk on to `echo`: the bytes read and their hash.
async fn hash_to_end<R, W>(r: &mut R, echo: &mut W) -> (usize, Vec<u8>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
        echo.write_all(&buf[..n]).await.unwrap();
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
                let (total, got) = hash_to_end(&mut r, &mut w).await;
                w.shutdown().await.unwrap();
                assert_eq!(total, len);
                assert_eq!(got, expected_hash(seed, len), "acceptor side got other bytes");
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
            let (total, got) = hash_to_end(&mut r, &mut tokio::io::sink()).await;
            let _w = sender.await.unwrap();
            assert_eq!(total, len);
            assert_eq!(got, expected_hash(seed, len), "echo came back different");
        }));
    }
    for t in tasks {
        within(LIMIT, t).await.unwrap();
    }
}

/// Echoes `streams` streams of `len` bytes each through a checking echo on `acceptor`, then
/// closes the opener: the echo counts every stream (within `wait`) and both drivers end cleanly.
async fn echo_then_close(opener: End, acceptor: End, streams: usize, len: usize, wait: Duration) {
    let ((h, _acc, d1), (_h2, acc2, d2)) = (opener, acceptor);
    let checker = checking_echo(acc2);
    echo_many(&h, streams, len).await;
    assert_eq!(h.stream_count(), 0);
    h.close();
    assert_eq!(within(wait, checker).await.unwrap(), streams);
    within(PROMPT, d1).await.unwrap().unwrap();
    within(PROMPT, d2).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_200_streams_of_1mib_over_tcp() {
    let (opener, acceptor) = tcp_pair().await;
    echo_then_close(opener, acceptor, 200, 1 << 20, LIMIT).await;
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
    let (opener, acceptor) = pair(s, c, MuxConfig::default(), MuxConfig::default());
    echo_then_close(opener, acceptor, 20, 256 * 1024, PROMPT).await;
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
    bad_input(Role::Acceptor, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), |e| matches!(e, MuxError::Protocol(_)))
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
    crate::forward_write!(inner: poll_flush, poll_shutdown);
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
