//! A FIN injected between client and server (one direction of a data connection shut down
//! without a TLS close_notify, as anyone on the path can): the transfer it cuts must end in an
//! error for whoever is at the other end, never in a clean end that makes a cut-off body look
//! complete. A relay in front of the server's control port injects it; the same transfers
//! through the relay without an injection end cleanly (half-close as usual). The same cut made
//! with a TCP reset instead of a FIN (an error at the TLS layer whatever it makes of a FIN)
//! must end the same way.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustunnel_client::{ClientOptions, TlsOptions, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Bound on each transfer: a hang fails the test instead of blocking the run.
const LIMIT: Duration = Duration::from_secs(60);
/// Bytes each transfer moves.
const BODY: usize = 8 << 20;
/// Bytes of the cut direction that still pass after the relay is armed (not on a TLS record
/// boundary).
const CUT_AFTER: usize = (1 << 20) + 7;

const CLIENT_TO_SERVER: u8 = 1;
const SERVER_TO_CLIENT: u8 = 2;

/// How the relay cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    /// A FIN towards that end, without close_notify; the other direction goes on.
    Fin,
    /// The connection to that end reset (and the other one closed).
    Reset,
}

/// A TCP relay to the server's control port. Once armed for a direction, the first connection
/// that carries [`CUT_AFTER`] bytes that way (counted from the arming) gets a FIN there: those
/// bytes pass, then the write side towards that end is shut down, and the rest of that
/// direction is swallowed. The other direction goes on. Control connections carry far less
/// than that, so the cut lands on the data connection of the transfer.
struct FinInjector {
    addr: SocketAddr,
    state: Arc<InjectState>,
    _stop: DropGuard,
}

#[derive(Default)]
struct InjectState {
    /// The direction armed (0: none).
    armed: AtomicU8,
    /// A reset instead of a FIN.
    reset: AtomicBool,
    /// Bumped at each arming: bytes count from there.
    generation: AtomicUsize,
    fired: AtomicBool,
}

impl FinInjector {
    async fn start(target: SocketAddr) -> FinInjector {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(InjectState::default());
        let stop = CancellationToken::new();
        let (st, cancel) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = cancel.cancelled() => return,
                };
                let (st, cancel) = (st.clone(), cancel.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // Ended by a reset cut: every half is dropped, the socket closed.
                    let kill = cancel.child_token();
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                pump(cr, sw, CLIENT_TO_SERVER, &st, &kill),
                                pump(sr, cw, SERVER_TO_CLIENT, &st, &kill)
                            )
                        } => {}
                        _ = kill.cancelled() => {}
                    }
                });
            }
        });
        FinInjector { addr, state, _stop: stop.drop_guard() }
    }

    /// Arms the cut of the next transfer of [`CUT_AFTER`] bytes in `dir`.
    fn arm(&self, dir: u8, cut: Cut) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        self.state.reset.store(cut == Cut::Reset, Ordering::SeqCst);
        self.state.armed.store(dir, Ordering::SeqCst);
    }

    fn fired(&self) -> bool {
        self.state.fired.load(Ordering::SeqCst)
    }
}

async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, dir: u8, st: &InjectState, kill: &CancellationToken) {
    let mut buf = vec![0u8; 64 * 1024];
    // (generation, bytes seen in it)
    let mut seen = (usize::MAX, 0usize);
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let mut pass = n;
        let mut cut = false;
        if st.armed.load(Ordering::SeqCst) == dir && !st.fired.load(Ordering::SeqCst) {
            let generation = st.generation.load(Ordering::SeqCst);
            if seen.0 != generation {
                seen = (generation, 0);
            }
            if seen.1 + n >= CUT_AFTER && !st.fired.swap(true, Ordering::SeqCst) {
                pass = CUT_AFTER - seen.1;
                cut = true;
            }
            seen.1 += n;
        }
        if w.write_all(&buf[..pass]).await.is_err() {
            return;
        }
        if cut && st.reset.load(Ordering::SeqCst) {
            let _ = w.as_ref().set_zero_linger();
            // No FIN first (a dropped write half shuts down): the socket goes when the read half
            // does, with the reset alone.
            w.forget();
            kill.cancel();
            return;
        }
        if cut {
            // The FIN, without the TLS close_notify that would make it a clean end.
            let _ = w.shutdown().await;
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
    }
}

/// A client of `server` that reaches its control port through `relay`.
async fn client_via(
    server: &TestServer,
    relay: &FinInjector,
    tunnels: Vec<TunnelConfig>,
) -> (rustunnel_client::ClientHandle, Vec<Ready>) {
    let mut o = ClientOptions::new(relay.addr.to_string(), server.handle.admin_token());
    o.tls = TlsOptions { insecure: true, ca: None };
    o.tunnels = tunnels;
    spawn_ready(o).await
}

/// How a read loop ended.
#[derive(Debug)]
enum End {
    Clean,
    Error(std::io::ErrorKind),
}

/// Reads until the end or an error.
async fn read_all(s: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (got, End::Clean),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, End::Error(e.kind())),
        }
    }
}

/// A local service that sends [`BODY`] bytes after `head` (read first: up to the blank line
/// when `head` is not empty), then closes its write side and drains.
async fn download_source(head: &'static [u8]) -> (SocketAddr, DropGuard) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        let body = Arc::new(pattern(BODY));
        loop {
            let (mut s, _) = tokio::select! {
                r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = cancel.cancelled() => return,
            };
            let body = body.clone();
            tokio::spawn(async move {
                if !head.is_empty() {
                    let mut req = Vec::new();
                    let mut b = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(n) if n > 0 => req.extend_from_slice(&b[..n]),
                            _ => return,
                        }
                    }
                }
                if s.write_all(head).await.is_err() || s.write_all(&body).await.is_err() {
                    return;
                }
                let _ = s.shutdown().await;
                let _ = read_all(&mut s).await;
            });
        }
    });
    (addr, stop.drop_guard())
}

async fn tcp_download(cut: Cut) {
    let server = TestServer::start().await;
    let relay = FinInjector::start(server.handle.control_addr()).await;
    let (source, _s) = download_source(b"").await;
    let (_client, ready) = client_via(&server, &relay, vec![tunnel("dl", Protocol::Tcp, source.port())]).await;
    let port = ready[0].port();

    // Through the relay, untouched: all of it, then a clean end.
    let mut v = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (got, end) = tokio::time::timeout(LIMIT, read_all(&mut v)).await.expect("download ends");
    assert!(matches!(end, End::Clean), "{end:?}");
    assert!(got == pattern(BODY), "the whole body, intact");

    // Cut between client and server: the visitor must not see a clean end.
    relay.arm(CLIENT_TO_SERVER, cut);
    let visit = async {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut v) => read_all(&mut v).await,
            // The whole download, the cut and the reset can come and go before a loaded test
            // task sees its connection established: then the connect reports the reset.
            Err(e) => (Vec::new(), End::Error(e.kind())),
        }
    };
    let (got, end) = tokio::time::timeout(LIMIT, visit).await.expect("download ends");
    assert!(relay.fired(), "the relay cut the transfer");
    assert!(got.len() < BODY && got[..] == pattern(BODY)[..got.len()], "a prefix of the body: {}", got.len());
    assert!(
        matches!(end, End::Error(std::io::ErrorKind::ConnectionReset)),
        "a cut-off download must end in a reset, not {end:?} after {} of {BODY} bytes",
        got.len()
    );
}

async fn tcp_upload(cut: Cut) {
    let server = TestServer::start().await;
    let relay = FinInjector::start(server.handle.control_addr()).await;
    // The local service reads everything, reports how it ended, answers with the count.
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = l.local_addr().unwrap();
    let sink_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (got, end) = read_all(&mut s).await;
                if matches!(end, End::Clean) {
                    let _ = s.write_all(format!("got {}", got.len()).as_bytes()).await;
                    let _ = s.shutdown().await;
                }
                let _ = tx.send((got.len(), end));
            });
        }
    });
    let (_client, ready) = client_via(&server, &relay, vec![tunnel("up", Protocol::Tcp, sink.port())]).await;
    let port = ready[0].port();

    let upload = |port: u16| async move {
        let v = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut r, mut w) = v.into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&pattern(BODY)).await?;
            w.shutdown().await
        });
        let (answer, end) = read_all(&mut r).await;
        (answer, end, writer.await.unwrap())
    };

    // Untouched: the service gets all of it and a clean end; its answer comes back.
    let (answer, end, wrote) = tokio::time::timeout(LIMIT, upload(port)).await.expect("upload ends");
    wrote.unwrap();
    assert_eq!(answer, format!("got {BODY}").as_bytes());
    assert!(matches!(end, End::Clean), "{end:?}");
    let (n, end) = ended.recv().await.unwrap();
    assert!(n == BODY && matches!(end, End::Clean), "{n} {end:?}");

    // Cut between server and client: the local service must not see a clean end.
    relay.arm(SERVER_TO_CLIENT, cut);
    let (_, visitor_end, wrote) = tokio::time::timeout(LIMIT, upload(port)).await.expect("upload ends");
    let (n, end) = tokio::time::timeout(LIMIT, ended.recv()).await.expect("the service's read ends").unwrap();
    assert!(relay.fired(), "the relay cut the transfer");
    assert!(n < BODY, "{n}");
    assert!(
        matches!(end, End::Error(std::io::ErrorKind::ConnectionReset)),
        "a cut-off upload must reach the local service as a reset, not {end:?} after {n} of {BODY} bytes"
    );
    // The visitor's side of the same connection fails too: the reset reaches its write or its
    // read, whichever comes first (the kernel reports it once).
    assert!(matches!(visitor_end, End::Error(_)) || wrote.is_err(), "{visitor_end:?} {wrote:?}");
    sink_task.abort();
}

async fn http_download_delimited_by_close(cut: Cut) {
    let server = TestServer::start().await;
    let relay = FinInjector::start(server.handle.control_addr()).await;
    // An HTTP/1.0-style answer: no Content-Length, the body ends when the connection does.
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n";
    let (source, _s) = download_source(head).await;
    let (_client, ready) = client_via(&server, &relay, vec![tunnel("web", Protocol::Http, source.port())]).await;
    let host = ready[0].host();
    let edge = server.http_addr();

    let get = || {
        let host = host.clone();
        async move {
            let mut v = TcpStream::connect(edge).await.unwrap();
            v.write_all(format!("GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
            let (got, end) = read_all(&mut v).await;
            let at = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            let head = String::from_utf8_lossy(&got[..at.unwrap_or(got.len())]).to_string();
            let body = at.map(|p| got[p..].to_vec()).unwrap_or_default();
            (head, body, end)
        }
    };

    // Untouched: the whole body, then the close that delimits it.
    let (head, body, end) = tokio::time::timeout(LIMIT, get()).await.expect("response ends");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(matches!(end, End::Clean), "{end:?}");
    assert!(body == pattern(BODY), "the whole body, intact ({} bytes)", body.len());

    // Cut between client and server: a close now would say "complete"; it must be a reset.
    relay.arm(CLIENT_TO_SERVER, cut);
    let (head, body, end) = tokio::time::timeout(LIMIT, get()).await.expect("response ends");
    assert!(relay.fired(), "the relay cut the transfer");
    assert!(body.len() < BODY && body[..] == pattern(BODY)[..body.len()], "{head}: {} bytes", body.len());
    assert!(
        matches!(end, End::Error(std::io::ErrorKind::ConnectionReset)),
        "a body delimited by close and cut off must end in a reset, not {end:?} after {} of {BODY} bytes",
        body.len()
    );
}

/// The same download asked for over HTTP/2: a cut-off body ends in a reset of its stream,
/// not in END_STREAM.
async fn http2_download_delimited_by_close(cut: Cut) {
    use http_body_util::BodyExt;
    let server = TestServer::start().await;
    let relay = FinInjector::start(server.handle.control_addr()).await;
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n";
    let (source, _s) = download_source(head).await;
    let (_client, ready) = client_via(&server, &relay, vec![tunnel("web2", Protocol::Http, source.port())]).await;
    let edge = server.https_addr();
    let name = ready[0].host().split(':').next().unwrap_or_default().to_string();
    let mut h2 = h2_conn(edge, &name).await;
    let mut get = || {
        let req = http::Request::get(format!("https://{name}:{}/big", edge.port())).body(body("")).unwrap();
        let sent = h2.send_request(req);
        async move {
            let resp = sent.await.expect("response head");
            assert_eq!(resp.status(), http::StatusCode::OK);
            resp.into_body().collect().await.map(|b| b.to_bytes())
        }
    };

    let whole = tokio::time::timeout(LIMIT, get()).await.expect("response ends").expect("a complete body");
    assert!(whole == pattern(BODY), "the whole body, intact ({} bytes)", whole.len());

    relay.arm(CLIENT_TO_SERVER, cut);
    let cut_off = tokio::time::timeout(LIMIT, get()).await.expect("response ends");
    assert!(relay.fired(), "the relay cut the transfer");
    if let Ok(b) = cut_off {
        panic!("a body delimited by close and cut off ended as complete after {} of {BODY} bytes", b.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_injected_into_an_http2_download_resets_the_stream() {
    http2_download_delimited_by_close(Cut::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_data_connection_under_an_http2_download_resets_the_stream() {
    http2_download_delimited_by_close(Cut::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_injected_into_a_tcp_download_resets_the_visitor() {
    tcp_download(Cut::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_data_connection_under_a_tcp_download_resets_the_visitor() {
    tcp_download(Cut::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_injected_into_a_tcp_upload_resets_the_local_service() {
    tcp_upload(Cut::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_data_connection_under_a_tcp_upload_resets_the_local_service() {
    tcp_upload(Cut::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_injected_into_an_http_download_delimited_by_close_is_not_complete() {
    http_download_delimited_by_close(Cut::Fin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_data_connection_under_an_http_download_delimited_by_close_is_not_complete() {
    http_download_delimited_by_close(Cut::Reset).await;
}

/// A TCP tunnel closed on the server while a download runs: its visitor is reset, not told the
/// download ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_closed_mid_transfer_resets_its_visitors() {
    let server = TestServer::start().await;
    // Sends a first part, then holds the connection open: the transfer is not over.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = l.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(&pattern(64 * 1024)).await;
            conns.push(s);
        }
    });
    let (_client, ready) = server.client(vec![tunnel("held", Protocol::Tcp, source.port())]).await;
    let mut v = TcpStream::connect(("127.0.0.1", ready[0].port())).await.unwrap();
    assert_eq!(read_n(&mut v, 64 * 1024).await, pattern(64 * 1024));
    let closed = server
        .handle
        .shared()
        .close_tunnel(&ready[0].tunnel_id, rustunnel_proto::control::CloseReason::ClosedByApi, "closed by the test")
        .await;
    assert!(closed.is_some());
    let (rest, end) = tokio::time::timeout(LIMIT, read_all(&mut v)).await.expect("the visitor's read ends");
    assert!(rest.is_empty());
    assert!(
        matches!(end, End::Error(std::io::ErrorKind::ConnectionReset)),
        "a transfer cut by closing its tunnel must end in a reset, not {end:?}"
    );
    held.abort();
}
