//! `/healthz` and `/readyz` over real sockets: ready while serving, not ready from the first
//! moment of a drain, and not ready while PostgreSQL is unreachable (through a proxy this test
//! cuts, so the database other tests share keeps running).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use rustunnel_client::Event;
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One probe as a load balancer sends it: status and JSON body, or the connection error.
async fn probe(api: SocketAddr, path: &str) -> std::io::Result<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect(api).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null)))
}

/// Polls `/readyz` until it answers `want` (generous bound for a loaded machine).
async fn readyz_becomes(api: SocketAddr, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = probe(api, "/readyz").await;
        if let Ok((status, body)) = &r {
            if *status == want {
                return body.clone();
            }
        }
        assert!(Instant::now() < deadline, "/readyz never answered {want}: last {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readiness_fails_from_the_first_moment_of_a_drain() {
    let server = TestServer::start().await;
    let api = server.handle.api_addr().expect("API on");
    let app = http_app("app").await;
    let (mut c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    assert_eq!(probe(api, "/healthz").await.unwrap().0, 200);
    let (status, body) = probe(api, "/readyz").await.unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")), "{body}");

    // A slow request keeps the drain going while the probes are sent.
    let (http, host) = (server.http_addr(), ready[0].host());
    let in_flight = tokio::spawn(async move { get(http, &host, "/slow?ms=1500").await });
    let shared = server.handle.shared().clone();
    let max = shared.config().max_requests_per_tunnel;
    let busy = || shared.tunnels().iter().any(|t| t.concurrency.available_permits() < max);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !busy() {
        assert!(Instant::now() < deadline, "the slow request never reached the tunnel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shutdown = tokio::spawn(server.handle.shutdown());
    next_event(&mut c, |e| matches!(e, Event::ServerShutdown { .. }), Duration::from_secs(10)).await;
    assert!(!in_flight.is_finished(), "the drain is still going on");
    let r = probe(api, "/readyz").await;
    assert!(r.is_err(), "a readiness probe during the drain must fail: {r:?}");
    assert_eq!(in_flight.await.unwrap().0, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(20), shutdown).await.unwrap().unwrap();
}

/// A TCP proxy to PostgreSQL that can be cut: cutting closes every connection through it and
/// refuses new ones (as a database that went down does) until it is restored.
struct Cuttable {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<JoinSet<()>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(target: SocketAddr) -> Cuttable {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (d, cs) = (down.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                cs.lock().unwrap().spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Cuttable { addr, down, conns, _accept: accept }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.conns.lock().unwrap().abort_all();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn readiness_fails_while_postgres_is_unreachable() {
    let Ok(url) = std::env::var("RUSTUNNEL_TEST_POSTGRES_URL") else { return };
    // postgres://user:pass@HOST:PORT/db -> the same through the proxy.
    let (head, rest) = url.split_once('@').expect("URL with credentials");
    let (hostport, db) = rest.split_once('/').expect("URL with a database");
    let target = tokio::net::lookup_host(hostport).await.unwrap().next().unwrap();
    let proxy = Cuttable::start(target).await;
    let proxied = format!("{head}@{}/{db}", proxy.addr);
    let region = format!("test-{:016x}", rand::random::<u64>());
    let server = TestServer::start_with(|c| {
        c.database_url = Some(proxied);
        c.region.id = region;
    })
    .await;
    let api = server.handle.api_addr().expect("API on");
    let body = readyz_becomes(api, 200).await;
    assert_eq!(body["database"], "ok", "{body}");

    proxy.cut();
    let body = readyz_becomes(api, 503).await;
    assert_eq!((body["status"].as_str(), body["draining"].as_bool()), (Some("not_ready"), Some(false)), "{body}");
    assert_ne!(body["database"], "ok", "{body}");
    // Alive all the same: an orchestrator must not restart it for the database's outage.
    assert_eq!(probe(api, "/healthz").await.unwrap().0, 200);

    proxy.restore();
    let body = readyz_becomes(api, 200).await;
    assert_eq!(body["database"], "ok", "{body}");
    server.handle.abort().await;
}
