//! Load-balanced pools end to end, in process, on loopback: distribution, wrong key, health
//! checks with failover under load, flapping with webhook alerts received by a real local HTTP
//! listener, graceful leave without dropped requests, TCP pools.
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustunnel_client::health::{HealthCheck, HealthKind};
use rustunnel_client::{ClientError, ClientHandle, TunnelConfig};
use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::Protocol;
use rustunnel_server::pool::PoolSnapshot;
use rustunnel_server::session::DATA_CONN_WAIT;
use rustunnel_server::tunnel::Tunnel;
use rustunnel_testkit::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

const KEY: &str = "s3cret-pool-key";

fn fast_check(path: &str) -> HealthCheck {
    HealthCheck {
        kind: HealthKind::Http { path: path.into(), expect_2xx: true },
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        max_failed: 2,
        alert_webhook: None,
    }
}

fn member(name: &str, protocol: Protocol, port: u16, pool: &str) -> TunnelConfig {
    tunnel(name, protocol, port).with_group(pool, KEY)
}

fn pools(server: &TestServer) -> Vec<PoolSnapshot> {
    server.handle.shared().pools()
}

/// An HTTP app whose `/health` answers 200 or 503 as `healthy` says; `/` names the app.
async fn toggled_app(name: &'static str, healthy: Arc<AtomicBool>) -> Service {
    serve_tcp(move |s, c| {
        let healthy = healthy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let ok = healthy.load(Ordering::SeqCst);
                async move {
                    let resp = if req.uri().path() == "/health" {
                        let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                        Response::builder().status(status).body(Full::new(Bytes::from("health"))).unwrap()
                    } else {
                        Response::new(Full::new(Bytes::from(format!("hello from {name}\n"))))
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc);
            tokio::select! { _ = conn => {} _ = c.cancelled() => {} }
        });
    })
    .await
}

/// A real local HTTP listener recording every POST as (path, JSON body).
async fn webhook_listener() -> (String, mpsc::UnboundedReceiver<(String, serde_json::Value)>, Service) {
    let (tx, rx) = mpsc::unbounded_channel();
    let service = serve_tcp(move |s, _| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move {
                    assert_eq!(req.method(), http::Method::POST);
                    assert_eq!(req.headers()["content-type"], "application/json");
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let _ = tx.send((path, v));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        });
    })
    .await;
    (format!("http://127.0.0.1:{}", service.port()), rx, service)
}

type Visit = (Instant, StatusCode, Bytes);

/// `n` visitors asking the pool for `path` back to back until `stop`, each recording when it
/// started every request, its status and its body.
fn visitors(
    n: usize,
    edge: std::net::SocketAddr,
    host: &str,
    path: &'static str,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Vec<Visit>>> {
    (0..n)
        .map(|_| {
            let (stop, host) = (stop.clone(), host.to_string());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while !stop.is_cancelled() {
                    let started = Instant::now();
                    let (s, body) = get(edge, &host, path).await;
                    out.push((started, s, body));
                }
                out
            })
        })
        .collect()
}

/// Stops the visitors and gathers what they saw.
async fn visits(stop: CancellationToken, workers: Vec<tokio::task::JoinHandle<Vec<Visit>>>) -> Vec<Visit> {
    stop.cancel();
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    seen
}

fn body_name(b: &Bytes) -> String {
    String::from_utf8_lossy(b).trim().trim_start_matches("hello from ").to_string()
}

#[tokio::test]
async fn one_config_two_members_share_a_subdomain_and_alternate() {
    // The seed's example: ports 3000 and 3001 under subdomain "pool" with an HTTP health
    // check, as one `rustunnel start` config with two tunnels in one pool.
    let server = TestServer::start().await;
    let (a, b) = (http_app("a").await, http_app("b").await);
    let mut ta = member("pool-a", Protocol::Http, a.port(), "pool");
    let mut tb = member("pool-b", Protocol::Http, b.port(), "pool");
    ta.health_check = Some(fast_check("/"));
    tb.health_check = Some(fast_check("/"));
    let (_c, ready) = server.client(vec![ta, tb]).await;
    let edge = server.http_addr();
    assert_eq!(ready[0].public_url, format!("http://pool.localhost:{}", edge.port()));
    assert_eq!(ready[0].public_url, ready[1].public_url);

    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..20 {
        let (s, body) = get(edge, &ready[0].host(), "/").await;
        assert_eq!(s, StatusCode::OK);
        *seen.entry(body_name(&body)).or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");

    let p = pools(&server);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].name, "pool");
    assert_eq!(p[0].subdomain.as_deref(), Some("pool"));
    assert_eq!(p[0].healthy_members, 2);
    assert_eq!(p[0].members.iter().map(|m| m.requests).sum::<u64>(), 20);
    assert!(p[0].members.iter().all(|m| m.requests == 10 && m.healthy));
    assert!(p[0].members[0].health_check.as_deref().unwrap_or("").contains("http GET /"));
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains(KEY));

    // The management API lists the pool with both members and their traffic.
    let api = server.handle.api_addr().unwrap();
    let mut conn = http1_conn(api).await;
    let req = Request::get("/api/pools")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", server.handle.admin_token()))
        .body(body(""))
        .unwrap();
    let resp = conn.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&text).contains(KEY), "the group key never leaves the server");
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let pool = &v["pools"][0];
    assert_eq!(pool["name"], "pool");
    assert_eq!(pool["protocol"], "http");
    assert_eq!(pool["healthy_members"], 2);
    assert_eq!(pool["members"].as_array().unwrap().len(), 2);
    assert_eq!(pool["members"][0]["requests"], 10);
    assert_eq!(pool["members"][0]["healthy"], true);
}

#[tokio::test]
async fn members_from_separate_clients_and_wrong_key_refused() {
    let server = TestServer::start().await;
    let (a, b, c) = (http_app("a").await, http_app("b").await, http_app("c").await);
    let (_ca, ra) = server.client(vec![member("web", Protocol::Http, a.port(), "shop")]).await;
    let (_cb, rb) = server.client(vec![member("web", Protocol::Http, b.port(), "shop")]).await;
    assert_eq!(ra[0].public_url, rb[0].public_url);

    let mut bad = tunnel("web", Protocol::Http, c.port()).with_group("shop", "not-the-key");
    bad.subdomain = None;
    let mut intruder = ClientHandle::spawn(server.client_options(vec![bad]));
    let err = tokio::time::timeout(Duration::from_secs(10), intruder.wait_ready(1)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("group_key_mismatch"), "{err}");
    assert!(err.to_string().contains("wrong group key"), "{err}");

    // The right key with another owner's token: the pool is not theirs to join.
    let (_, other_owner) = server.handle.store().create_token(None, "other").await.unwrap();
    let mut opts = server.client_options(vec![member("web", Protocol::Http, c.port(), "shop")]);
    opts.token = other_owner;
    let mut stranger = ClientHandle::spawn(opts);
    let err = tokio::time::timeout(Duration::from_secs(10), stranger.wait_ready(1)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("group_taken") && err.to_string().contains("another owner"), "{err}");
    let seen: std::collections::HashSet<String> =
        futures_util::future::join_all((0..8).map(|_| async {
            String::from_utf8_lossy(&get(server.http_addr(), &ra[0].host(), "/").await.1).into_owned()
        }))
        .await
        .into_iter()
        .collect();
    assert!(!seen.contains("hello from c\n"), "a stranger's member got visitors: {seen:?}");

    // A plain tunnel cannot take the pool's name either.
    let mut plain = tunnel("web", Protocol::Http, c.port());
    plain.subdomain = Some("shop".into());
    let mut squatter = ClientHandle::spawn(server.client_options(vec![plain]));
    let err = tokio::time::timeout(Duration::from_secs(10), squatter.wait_ready(1)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("subdomain_taken") || err.to_string().contains("in use"), "{err}");

    let mut names = std::collections::HashSet::new();
    for _ in 0..10 {
        let (s, body) = get(server.http_addr(), &ra[0].host(), "/").await;
        assert_eq!(s, StatusCode::OK);
        names.insert(body_name(&body));
    }
    assert_eq!(names, ["a".to_string(), "b".to_string()].into_iter().collect());
    assert_eq!(pools(&server)[0].members.len(), 2, "the intruder never joined");
}

#[tokio::test]
async fn failover_under_load_when_a_service_dies() {
    let server = TestServer::start().await;
    let a = http_app("a").await;
    let b = http_app("b").await;
    let mut ta = member("web", Protocol::Http, a.port(), "lbpool");
    ta.health_check = Some(fast_check("/"));
    let mut tb = member("web", Protocol::Http, b.port(), "lbpool");
    tb.health_check = Some(fast_check("/"));
    let (_ca, ready) = server.client(vec![ta]).await;
    let (_cb, _) = server.client(vec![tb]).await;
    let edge = server.http_addr();
    let host = ready[0].host();

    // Load: 4 workers sending requests back to back, recording (start, status, who).
    let stop = CancellationToken::new();
    let workers = visitors(4, edge, &host, "/", &stop);
    // Member "a" has served the load before it dies: its answers have reached visitors
    // (`requests` counts a request once admitted, before any answer).
    let ta = server.handle.shared().tunnel(&ready[0].tunnel_id).unwrap();
    wait_until("an answer from a", Duration::from_secs(20), || ta.stats.bytes_out.load(Ordering::Relaxed) > 0).await;
    drop(a); // the service behind member "a" dies
    wait_until("member a marked unhealthy", Duration::from_secs(5), || {
        pools(&server)[0].members.iter().any(|m| !m.healthy)
    })
    .await;
    let marked = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let results: Vec<_> =
        visits(stop, workers).await.into_iter().map(|(t, s, body)| (t, s, body_name(&body))).collect();
    let after: Vec<_> = results.iter().filter(|(t, _, _)| *t > marked).collect();
    assert!(after.len() > 20, "load kept running: {}", after.len());
    for (_, s, who) in &after {
        assert_eq!(*s, StatusCode::OK, "no errors once the member is marked down");
        assert_eq!(who, "b");
    }
    assert!(results.iter().any(|(_, _, who)| who == "a"), "a served before it died");
    let p = &pools(&server)[0];
    assert_eq!(p.healthy_members, 1);
    let down = p.members.iter().find(|m| !m.healthy).unwrap();
    assert!(!down.health_detail.is_empty(), "the failure is visible: {down:?}");
}

#[tokio::test]
async fn flapping_member_alerts_down_and_recovered_to_both_webhooks() {
    let (hook, mut alerts, _hook_svc) = webhook_listener().await;
    let server_hook = format!("{hook}/server");
    let server = TestServer::start_with(|c| c.alert_webhook = Some(server_hook.clone())).await;
    let healthy = Arc::new(AtomicBool::new(true));
    let app = toggled_app("flappy", healthy.clone()).await;
    let mut t = member("web", Protocol::Http, app.port(), "flap");
    let mut check = fast_check("/health");
    check.alert_webhook = Some(format!("{hook}/member"));
    t.health_check = Some(check);
    let (mut client, ready) = server.client(vec![t]).await;
    let edge = server.http_addr();
    let host = ready[0].host();
    assert_eq!(get(edge, &host, "/").await.0, StatusCode::OK);

    for round in 0..2 {
        healthy.store(false, Ordering::SeqCst);
        let down = next_alert(&mut alerts).await;
        assert_eq!(down["event"], "pool_down", "round {round}: {down}");
        assert_eq!(down["pool"], "flap");
        assert_eq!(down["protocol"], "http");
        assert_eq!(down["public_url"], ready[0].public_url);
        assert_eq!(down["healthy_members"], 0);
        assert_eq!(down["members"][0]["healthy"], false);
        assert_eq!(down["members"][0]["detail"], "HTTP 503");
        assert!(down["time"].as_str().unwrap().ends_with('Z'));
        let unhealthy =
            |e: &rustunnel_client::Event| matches!(e, rustunnel_client::Event::Health { healthy: false, .. });
        next_event(&mut client, unhealthy, Duration::from_secs(5)).await;
        let (s, page) = get(edge, &host, "/").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&page).contains("No healthy backend"));

        healthy.store(true, Ordering::SeqCst);
        let up = next_alert(&mut alerts).await;
        assert_eq!(up["event"], "pool_recovered", "round {round}: {up}");
        assert_eq!(up["healthy_members"], 1);
        assert_eq!(get(edge, &host, "/").await.0, StatusCode::OK);
    }
}

/// The next alert, as received by both webhooks (the member's and the server's).
async fn next_alert(alerts: &mut mpsc::UnboundedReceiver<(String, serde_json::Value)>) -> serde_json::Value {
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(tokio::time::timeout(Duration::from_secs(10), alerts.recv()).await.unwrap().unwrap());
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[0].0, "/member");
    assert_eq!(got[1].0, "/server");
    assert_eq!(got[0].1, got[1].1, "one alert, two webhooks");
    got.remove(0).1
}

#[tokio::test]
async fn graceful_leave_drops_no_request() {
    let server = TestServer::start().await;
    let (a, b) = (http_app("a").await, http_app("b").await);
    let (ca, ready) = server.client(vec![member("web", Protocol::Http, a.port(), "calm")]).await;
    let (_cb, _) = server.client(vec![member("web", Protocol::Http, b.port(), "calm")]).await;
    let edge = server.http_addr();
    let host = ready[0].host();

    // Slow requests in flight on both members while "a" leaves.
    let stop = CancellationToken::new();
    let workers = visitors(6, edge, &host, "/slow?ms=300", &stop);
    wait_in_flight(&server, &ready[0].tunnel_id).await;
    let leaving = Instant::now();
    ca.stop().await.unwrap();
    let left = Instant::now();
    assert!(left - leaving >= Duration::from_millis(100), "the leave waited for in-flight requests");
    let p = pools(&server);
    assert_eq!(p[0].members.len(), 1, "a is gone from the pool");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let all = visits(stop, workers).await;
    assert!(all.len() >= 12);
    for (_, s, body) in &all {
        assert_eq!(*s, StatusCode::OK, "no request dropped: {}", String::from_utf8_lossy(body));
    }
    // Requests started after the leave all went to b (a's in-flight ones completed above).
    let b_only = all.iter().filter(|(t, _, _)| *t > left).all(|(_, _, body)| body.as_ref() == b"slow done\n");
    assert!(b_only);
    let _ = a;
}

/// Member "a" alone in a pool, with a request the edge admitted (its permit held by the test)
/// when its client starts to leave; returns once the server drains it.
async fn leaving_with_a_request_admitted(
    server: &TestServer,
    app: &Service,
) -> (Arc<Tunnel>, OwnedSemaphorePermit, tokio::task::JoinHandle<Result<(), ClientError>>) {
    let (ca, ready) = server.client(vec![member("web", Protocol::Http, app.port(), "calm")]).await;
    let tunnel = server.handle.shared().tunnel(&ready[0].tunnel_id).expect("tunnel open");
    let admitted = tunnel.admit().expect("room for a request");
    let leaving = tokio::spawn(ca.stop());
    wait_until("the server drains a", Duration::from_secs(20), || tunnel.is_draining()).await;
    (tunnel, admitted, leaving)
}

/// Forwards `GET /` over a data connection of `tunnel`, as the edge does; the raw answer.
async fn get_by_hand(tunnel: &Tunnel, mut conn: impl AsyncRead + AsyncWrite + Unpin) -> String {
    let header =
        StreamHeader { tunnel_id: tunnel.id.clone(), protocol: Protocol::Http, peer: String::new(), mux: false };
    let mut out = header.encode();
    out.extend_from_slice(b"GET / HTTP/1.1\r\nHost: calm\r\nConnection: close\r\n\r\n");
    conn.write_all(&out).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await.expect("answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_leaving_member_keeps_its_idle_data_connections_until_drained() {
    // A request the edge admitted just before the leave may still need a data connection: the
    // ones the server holds idle must still reach the client while it drains.
    let server = TestServer::start().await;
    let a = http_app("a").await;
    let (tunnel, admitted, leaving) = leaving_with_a_request_admitted(&server, &a).await;
    let conn = tunnel.session.take_data_conn().await.expect("an idle data connection");
    let answer = get_by_hand(&tunnel, conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "the leaving client served the data connection: {answer:?}");
    assert!(answer.contains("hello from a"), "{answer:?}");
    drop(admitted);
    leaving.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_leaving_member_opens_the_data_connections_the_server_asks_for() {
    // More requests admitted before the leave than idle connections: the server asks the
    // draining client for more, and gets them well before its wait for one runs out.
    let server = TestServer::start().await;
    let a = http_app("a").await;
    let (tunnel, admitted, leaving) = leaving_with_a_request_admitted(&server, &a).await;
    let mut used = Vec::new();
    while tunnel.session.idle_data_conns() > 0 {
        used.push(tunnel.session.take_data_conn().await.expect("an idle data connection"));
    }
    let asked = Instant::now();
    let conn = tunnel.session.take_data_conn().await.expect("a data connection opened on the server's ask");
    assert!(asked.elapsed() < DATA_CONN_WAIT / 2, "opened on the ask, not found by chance: {:?}", asked.elapsed());
    let answer = get_by_hand(&tunnel, conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop((used, admitted));
    leaving.await.unwrap().unwrap();
}

#[tokio::test]
async fn tcp_pool_spreads_connections_and_fails_over() {
    let server = TestServer::start().await;
    let (a, b) = (http_app("a").await, http_app("b").await);
    let tcp_check = |_: ()| HealthCheck {
        kind: HealthKind::Tcp,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        max_failed: 1,
        alert_webhook: None,
    };
    let mut ta = member("db", Protocol::Tcp, a.port(), "tcppool");
    ta.health_check = Some(tcp_check(()));
    let mut tb = member("db", Protocol::Tcp, b.port(), "tcppool");
    tb.health_check = Some(tcp_check(()));
    let (_ca, ra) = server.client(vec![ta]).await;
    let (_cb, rb) = server.client(vec![tb]).await;
    assert_eq!(ra[0].port(), rb[0].port(), "one shared port");
    let port = ra[0].port();

    async fn who(port: u16) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        text.lines().last().unwrap_or("").trim_start_matches("hello from ").to_string()
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(who(port).await);
    }
    assert_eq!(seen.iter().filter(|w| *w == "a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|w| *w == "b").count(), 3, "{seen:?}");

    drop(b);
    wait_until("member b marked unhealthy", Duration::from_secs(5), || pools(&server)[0].healthy_members == 1).await;
    for _ in 0..6 {
        assert_eq!(who(port).await, "a");
    }
    let p = &pools(&server)[0];
    assert_eq!(p.protocol, Protocol::Tcp);
    assert_eq!(p.remote_port, Some(port));
    assert!(p.members.iter().all(|m| m.connections >= 3));
}

#[tokio::test]
async fn udp_pools_and_bad_group_names_are_refused() {
    let server = TestServer::start().await;
    let app = http_app("a").await;
    let mut c = ClientHandle::spawn(server.client_options(vec![member("x", Protocol::Http, app.port(), "Bad.Name")]));
    let err = tokio::time::timeout(Duration::from_secs(10), c.wait_ready(1)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("invalid group name"), "{err}");
    let mut c = ClientHandle::spawn(server.client_options(vec![member("x", Protocol::Udp, app.port(), "u")]));
    let err = tokio::time::timeout(Duration::from_secs(10), c.wait_ready(1)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("http and tcp"), "{err}");
}
