//! Test support: an in-process server and clients on port 0, and the local services tests put
//! behind tunnels (TCP/UDP echo, an HTTP app with streaming, slow and WebSocket routes).
//! Readiness is awaited on real signals (bound listeners, `tunnel_ready` events), never sleeps.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustunnel_client::{ClientHandle, ClientOptions, Event, TlsOptions, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_server::{Config, ServerHandle};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub use rustunnel_server;

/// Logs to the test output when `RUSTUNNEL_LOG` is set.
pub fn init_logging() {
    if let Ok(f) = std::env::var("RUSTUNNEL_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
}

/// An in-process server with its own data directory.
pub struct TestServer {
    pub handle: ServerHandle,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::ephemeral(dir.path());
        f(&mut config);
        let handle = ServerHandle::spawn(config).await.expect("server starts");
        TestServer { handle, dir }
    }

    /// Restarts on the same data directory and the same addresses (a server restart).
    pub async fn restart_on_same_ports(
        dir: tempfile::TempDir,
        control: SocketAddr,
        http: SocketAddr,
        f: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config::ephemeral(dir.path());
        config.control_addr = control;
        config.http_addr = Some(http);
        f(&mut config);
        let mut last = None;
        // The old sockets may linger for a moment in the kernel; retry binding briefly.
        for _ in 0..100 {
            match ServerHandle::spawn(config.clone()).await {
                Ok(handle) => return TestServer { handle, dir },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not restart: {last:?}");
    }

    pub fn control(&self) -> String {
        self.handle.control_addr().to_string()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.handle.http_addr().expect("http edge")
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.handle.https_addr().expect("https edge")
    }

    /// Client options for this server (self-signed certificate: `insecure`).
    pub fn client_options(&self, tunnels: Vec<TunnelConfig>) -> ClientOptions {
        let mut o = ClientOptions::new(self.control(), self.handle.admin_token());
        o.tls = TlsOptions { insecure: true, ca: None };
        o.tunnels = tunnels;
        o
    }

    /// Starts a client with these tunnels and waits until all are ready.
    pub async fn client(&self, tunnels: Vec<TunnelConfig>) -> (ClientHandle, Vec<Ready>) {
        spawn_ready(self.client_options(tunnels)).await
    }

    /// The stored name and port claims of this server's region, once `pred` holds for them
    /// (the server persists claims in the background); fails the test after 10 s.
    pub async fn stored_claims(
        &self,
        pred: impl Fn(&[rustunnel_server::store::ClaimRecord]) -> bool,
    ) -> Vec<rustunnel_server::store::ClaimRecord> {
        let region = self.handle.shared().config().region.id.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let claims = self.handle.store().load_claims(&region).await.expect("load claims");
            if pred(&claims) {
                return claims;
            }
            assert!(std::time::Instant::now() < deadline, "stored claims never matched: {claims:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The fields of a `tunnel_ready` event.
#[derive(Debug, Clone)]
pub struct Ready {
    pub tunnel_id: String,
    pub name: String,
    pub public_url: String,
}

impl Ready {
    /// The host part of an HTTP tunnel URL (`app.localhost:8080`).
    pub fn host(&self) -> String {
        self.public_url.split("://").nth(1).unwrap_or_default().trim_end_matches('/').to_string()
    }
    /// The port of a TCP/UDP tunnel URL.
    pub fn port(&self) -> u16 {
        self.public_url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in url")
    }
}

pub async fn spawn_ready(opts: ClientOptions) -> (ClientHandle, Vec<Ready>) {
    let n = opts.tunnels.len();
    let mut c = ClientHandle::spawn(opts);
    let events = tokio::time::timeout(Duration::from_secs(20), c.wait_ready(n))
        .await
        .expect("tunnels ready in time")
        .expect("tunnels ready");
    let ready = events
        .into_iter()
        .filter_map(|e| match e {
            Event::TunnelReady { tunnel_id, name, public_url, .. } => Some(Ready { tunnel_id, name, public_url }),
            _ => None,
        })
        .collect();
    (c, ready)
}

pub fn tunnel(name: &str, protocol: Protocol, port: u16) -> TunnelConfig {
    let mut t = TunnelConfig::new(name, protocol, port);
    t.local_host = "127.0.0.1".into();
    t
}

/// A task-owning local service; stops when dropped.
pub struct Service {
    pub addr: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Service {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// TCP echo server (half-close aware: echoes until the peer shuts down its write side).
pub async fn tcp_echo() -> Service {
    serve_tcp(|mut s, cancel| {
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            tokio::select! {
                _ = async { let _ = tokio::io::copy(&mut r, &mut w).await; let _ = w.shutdown().await; } => {}
                _ = cancel.cancelled() => {}
            }
        });
    })
    .await
}

/// A loopback listener on port 0 handing each accepted connection to `handle` (with the
/// service's cancellation) until the service is dropped.
pub async fn serve_tcp(mut handle: impl FnMut(tokio::net::TcpStream, CancellationToken) + Send + 'static) -> Service {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = tokio::select! {
                r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = c.cancelled() => return,
            };
            handle(s, c.clone());
        }
    });
    Service { addr, cancel }
}

/// A relay to `target` adding `one_way` each way, like a long link: each direction reads what
/// arrives at once and passes it on `one_way` after its arrival (the delay does not cap the
/// bandwidth); EOF follows in order. For client-to-server traffic: put it in front of the
/// control port.
pub async fn delay_relay(target: SocketAddr, one_way: Duration) -> Service {
    serve_tcp(move |a, cancel| {
        tokio::spawn(async move {
            let Ok(b) = tokio::net::TcpStream::connect(target).await else { return };
            let _ = (a.set_nodelay(true), b.set_nodelay(true));
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            delayed(ar, bw, one_way, cancel.clone());
            delayed(br, aw, one_way, cancel);
        });
    })
    .await
}

fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => r.unwrap_or(0),
                _ = c.cancelled() => return,
            };
            // An empty chunk carries the EOF.
            if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).await.is_err() || n == 0 {
                return;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (due, chunk) = tokio::select! {
                Some(x) = rx.recv() => x,
                _ = cancel.cancelled() => return,
                else => return,
            };
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
}

/// UDP echo server.
pub async fn udp_echo() -> Service {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = s.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                r = s.recv_from(&mut buf) => if let Ok((n, peer)) = r { let _ = s.send_to(&buf[..n], peer).await; },
                _ = c.cancelled() => return,
            }
        }
    });
    Service { addr, cancel }
}

/// Sends `data` on a connected UDP socket until the same datagram (same size, same bytes) comes
/// back, at most five tries of 500 ms (UDP may drop). Panics on a datagram that differs.
pub async fn udp_round_trip(sock: &UdpSocket, data: &[u8]) -> bool {
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        sock.send(data).await.expect("send");
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
            assert_eq!(n, data.len(), "boundaries preserved");
            assert_eq!(&buf[..n], data);
            return true;
        }
    }
    false
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).boxed()
}

/// Deterministic pseudo-random content of length `n` (for hash checks).
pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An HTTP/1.1 app: `/` hello (with the app's name), `/echo` streams the request body back,
/// `/hash` returns sha256 of the request body, `/big?n=N` streams N pattern bytes in chunks,
/// `/slow?ms=N` answers after N ms, `/headers` returns request headers as JSON, `/ws` is a
/// WebSocket echo.
pub async fn http_app(name: &'static str) -> Service {
    http_app_counted(name).await.0
}

/// [`http_app`] that also counts its open connections.
pub async fn http_app_counted(name: &'static str) -> (Service, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering::SeqCst;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = open.clone();
    let service = serve_tcp(move |s, c2| {
        let open = counter.clone();
        open.fetch_add(1, SeqCst);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| app(req, name));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).with_upgrades();
            tokio::select! { _ = conn => {} _ = c2.cancelled() => {} }
            open.fetch_sub(1, SeqCst);
        });
    })
    .await;
    (service, open)
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn app(mut req: Request<Incoming>, name: &'static str) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/" => Response::new(full(format!("hello from {name}\n"))),
        // `OPTIONS *` (asterisk-form): a question about the whole server.
        "*" => Response::new(full(format!("{} * at {name}\n", req.method()))),
        "/echo" => {
            // Stream the body back frame by frame: proves bodies are not buffered whole.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        if tx.send(Ok(Frame::data(d))).await.is_err() {
                            return;
                        }
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/hash" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::new(full(sha256_hex(&body)))
        }
        "/big" => {
            let n = query_num(&req, "n") as usize;
            let data = Bytes::from(pattern(n));
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
                (0..n).step_by(16 * 1024).map(|i| Ok(Frame::data(data.slice(i..(i + 16 * 1024).min(n))))).collect();
            Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            Response::new(full("slow done\n"))
        }
        "/headers" => {
            let map: serde_like::Map =
                req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
            Response::new(full(serde_like::to_json(&map)))
        }
        "/ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                return Ok(Response::builder().status(400).body(full("not a websocket request")).unwrap_or_default());
            };
            let on_up = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on_up.await {
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(up),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() || m.is_binary() {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        } else if m.is_close() {
                            break;
                        }
                    }
                }
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(full(Bytes::new()))
                .unwrap_or_default()
        }
        _ => Response::builder().status(404).body(full("no such path\n")).unwrap_or_default(),
    };
    Ok(resp)
}

/// Minimal JSON for header maps without pulling serde into every test.
mod serde_like {
    pub type Map = std::collections::BTreeMap<String, String>;
    pub fn to_json(m: &Map) -> String {
        let items: Vec<String> = m.iter().map(|(k, v)| format!("{:?}:{:?}", k, v)).collect();
        format!("{{{}}}", items.join(","))
    }
}

/// A plain HTTP/1.1 client connection to `addr` (keep-alive; send many requests).
pub async fn http1_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<BoxBody> {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect edge");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.expect("handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

/// One GET through the edge with a Host header; returns status and body.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, Bytes) {
    let mut s = http1_conn(addr).await;
    let req = Request::get(path).header("host", host).body(full(Bytes::new())).expect("request");
    let resp = s.send_request(req).await.expect("response");
    let status = resp.status();
    (status, resp.into_body().collect().await.expect("body").to_bytes())
}

pub fn body(b: impl Into<Bytes>) -> BoxBody {
    full(b)
}

/// A client speaking HTTP/2 over TLS (ALPN h2) to the HTTPS edge.
pub async fn h2_conn(addr: SocketAddr, sni: &str) -> hyper::client::conn::http2::SendRequest<BoxBody> {
    let tls =
        rustunnel_client::tls::client_config(&TlsOptions { insecure: true, ca: None }, &[b"h2"]).expect("tls config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_name(sni);
    let s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.expect("tls");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "edge negotiated h2");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn rustls_name(sni: &str) -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from(sni.to_string()).expect("server name")
}

/// Reads exactly `n` bytes or fails the test.
pub async fn read_n(s: &mut (impl tokio::io::AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).await.expect("read");
    v
}

/// Shared assertion helper for events.
pub async fn next_event(c: &mut ClientHandle, pred: impl Fn(&Event) -> bool, within: Duration) -> Event {
    tokio::time::timeout(within, async {
        loop {
            match c.events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("client ended"),
            }
        }
    })
    .await
    .expect("event in time")
}

/// Waits until `f` holds, checking it every 20 ms; fails the test with `what` once `within`
/// has passed. Tests wait on such conditions instead of sleeping for a guessed time.
pub async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the server has at least one request or connection in flight on the tunnel
/// `tunnel_id`: the moment a spawned request has been admitted by the edge.
pub async fn wait_in_flight(server: &TestServer, tunnel_id: &str) {
    let shared = server.handle.shared();
    let t = shared.tunnel(tunnel_id).expect("tunnel open");
    wait_until("a request in flight on the tunnel", Duration::from_secs(20), || shared.in_flight(&t) > 0).await;
}

/// Sends 64 MiB of [`pattern`] through the TCP echo behind `port`, then half-closes, and
/// checks that the same bytes come back before the echo closes its side.
pub async fn echo_64_mib(port: u16) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let data = pattern(64 << 20);
    let expect = sha256_hex(&data);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        // Half-close: the echo sees EOF through every hop and closes its side.
        w.shutdown().await.expect("shutdown");
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got)).await.expect("echo in time").expect("read");
    writer.await.expect("writer");
    assert_eq!(got.len(), 64 << 20);
    assert_eq!(sha256_hex(&got), expect);
}

pub type Shared = Arc<rustunnel_server::server::Shared>;

/// A TCP proxy that can black-hole its connections: after [`Blackhole::cut`], every existing
/// connection stays open but silently stops forwarding (like dropped packets), and new
/// connections are forwarded normally again once [`Blackhole::restore`] is called.
pub struct Blackhole {
    pub addr: SocketAddr,
    generation: Arc<std::sync::atomic::AtomicU64>,
    cut: Arc<std::sync::atomic::AtomicBool>,
    cancel: CancellationToken,
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn blackhole_pump(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    live: &impl Fn() -> bool,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !live() {
            // Black hole: swallow everything, keep the socket open.
            std::future::pending::<()>().await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Blackhole {
    pub async fn start(target: SocketAddr) -> Blackhole {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let generation = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let (g, c, stop) = (generation.clone(), cut.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stop.cancelled() => return,
                };
                let (g, c, stop) = (g.clone(), c.clone(), stop.clone());
                tokio::spawn(async move {
                    let mine = g.load(Ordering::SeqCst);
                    let live = || !c.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == mine;
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut ri, mut wi) = inbound.split();
                    let (mut ro, mut wo) = outbound.split();
                    tokio::select! {
                        _ = blackhole_pump(&mut ri, &mut wo, &live) => {}
                        _ = blackhole_pump(&mut ro, &mut wi, &live) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Blackhole { addr, generation, cut, cancel }
    }

    /// Existing connections stop forwarding; new ones too, until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// New connections forward again; the black-holed ones stay dead.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
