//! Name and port reservations survive a server restart: until the owner reconnects, nobody
//! else can take its subdomain or port, whether the server crashed or stopped gracefully, and
//! whether the owner was still connected or had already left.
use std::time::Duration;

use rustunnel_client::{ClientHandle, Event, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_server::store::{ClaimChange, ClaimRecord};
use rustunnel_server::Config;
use rustunnel_testkit::*;

/// How the first server goes away.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// A crash: no goodbye, client A still connected.
    Crash,
    /// SIGTERM-style graceful shutdown, client A still connected.
    Graceful,
    /// Client A leaves first (its names are only reserved), then the server crashes.
    ClientLeftFirst,
}

fn has(claims: &[ClaimRecord], kind: &str, name: &str, released: bool) -> bool {
    claims.iter().any(|c| c.kind == kind && c.name == name && c.reserved_until.is_some() == released)
}

/// Expects the client's first error to carry `code`.
async fn refused(opts: rustunnel_client::ClientOptions, code: &str) {
    let mut c = ClientHandle::spawn(opts);
    let e =
        next_event(&mut c, |e| matches!(e, Event::Error { .. } | Event::TunnelReady { .. }), Duration::from_secs(10))
            .await;
    assert!(matches!(e, Event::Error { code: ref got, .. } if got == code), "expected {code}, got {e:?}");
}

async fn reservations_survive(stop: Stop, setup: impl Fn(&mut Config)) {
    let server = TestServer::start_with(|c| {
        c.allow_anonymous = false;
        setup(c);
    })
    .await;
    let (_, token_a) = server.handle.store().create_token(None, "a").await.unwrap();
    let (_, token_b) = server.handle.store().create_token(None, "b").await.unwrap();
    let app = http_app("app").await;
    let echo = tcp_echo().await;
    let mut web = tunnel("web", Protocol::Http, app.port());
    web.subdomain = Some("keepme".into());
    let db = tunnel("db", Protocol::Tcp, echo.port());
    let with_token = |server: &TestServer, tunnels: Vec<TunnelConfig>, token: &str| {
        let mut o = server.client_options(tunnels);
        o.token = token.to_string();
        o
    };

    let (a, ready) = spawn_ready(with_token(&server, vec![web.clone(), db.clone()], &token_a)).await;
    let web_url = ready.iter().find(|r| r.name == "web").unwrap().public_url.clone();
    let db_ready = ready.iter().find(|r| r.name == "db").unwrap().clone();
    let port = db_ready.port();
    assert!(web_url.starts_with("http://keepme.localhost:"), "{web_url}");
    let port_name = port.to_string();
    let (control, http) = (server.handle.control_addr(), server.http_addr());

    let mut a = Some(a);
    if let Stop::ClientLeftFirst = stop {
        a.take().unwrap().stop().await.unwrap();
        server.stored_claims(|c| has(c, "subdomain", "keepme", true) && has(c, "tcp", &port_name, true)).await;
    } else {
        server.stored_claims(|c| has(c, "subdomain", "keepme", false) && has(c, "tcp", &port_name, false)).await;
    }
    let TestServer { handle, dir } = server;
    match stop {
        Stop::Crash | Stop::ClientLeftFirst => handle.abort().await,
        Stop::Graceful => tokio::time::timeout(Duration::from_secs(20), handle.shutdown()).await.unwrap(),
    }
    // A cannot reconnect before we let it: this client stops while the server is down, and A
    // comes back below as a new connection with the same token (the same owner).
    if let Some(a) = a {
        a.stop().await.unwrap();
    }

    let back = TestServer::restart_on_same_ports(dir, control, http, |c| {
        c.allow_anonymous = false;
        setup(c);
    })
    .await;
    // Both are reservations of A's owner now.
    let claims = back.stored_claims(|c| has(c, "subdomain", "keepme", true) && has(c, "tcp", &port_name, true)).await;
    assert_eq!(claims.len(), 2, "{claims:?}");

    // Another owner asking for the name or the port is refused before A is back...
    refused(with_token(&back, vec![web.clone()], &token_b), "subdomain_reserved").await;
    let mut db_b = db.clone();
    db_b.remote_port = Some(port);
    refused(with_token(&back, vec![db_b], &token_b), "port_reserved").await;
    // ...and a random port is never the reserved one.
    let (_b, ready_b) = spawn_ready(with_token(&back, vec![db.clone()], &token_b)).await;
    assert_ne!(ready_b[0].port(), port);

    // A reconnects, asking for what it had (as the client does), and gets the same URLs back.
    let mut db_a = db.clone();
    db_a.remote_port = Some(port);
    let (_a, ready) = spawn_ready(with_token(&back, vec![web, db_a], &token_a)).await;
    assert_eq!(ready.iter().find(|r| r.name == "web").unwrap().public_url, web_url);
    assert_eq!(ready.iter().find(|r| r.name == "db").unwrap().public_url, db_ready.public_url);
    assert_eq!(get(back.http_addr(), "keepme.localhost", "/").await.1, "hello from app\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"again").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"again");
    // In use again: stored as such.
    back.stored_claims(|c| has(c, "subdomain", "keepme", false) && has(c, "tcp", &port_name, false)).await;
    // Stop it before the clients go, so nothing is written after the caller's cleanup.
    back.handle.abort().await;
}

#[tokio::test]
async fn reservations_survive_a_crash() {
    reservations_survive(Stop::Crash, |_| {}).await;
}

#[tokio::test]
async fn reservations_survive_a_graceful_restart() {
    reservations_survive(Stop::Graceful, |_| {}).await;
}

#[tokio::test]
async fn released_names_stay_reserved_across_a_restart() {
    reservations_survive(Stop::ClientLeftFirst, |_| {}).await;
}

/// The same on PostgreSQL (when `RUSTUNNEL_TEST_POSTGRES_URL` is set), where several regions
/// may share the database: only this server's region is loaded.
#[tokio::test]
async fn reservations_survive_a_crash_on_postgres() {
    let Ok(url) = std::env::var("RUSTUNNEL_TEST_POSTGRES_URL") else { return };
    let region = format!("test-{:016x}", rand::random::<u64>());
    let other = format!("{region}-other");
    // Another region's server holds "keepme" too; that does not concern this one.
    let store = rustunnel_server::store::Store::open(Some(&url), std::path::Path::new(".")).await.unwrap();
    let theirs = ClaimRecord {
        kind: "subdomain".into(),
        name: "keepme".into(),
        owner_id: "someone-else".into(),
        reserved_until: None,
    };
    store.apply_claim_changes(&other, &[ClaimChange::Upsert(theirs.clone())]).await.unwrap();
    reservations_survive(Stop::Crash, |c| {
        c.database_url = Some(url.clone());
        c.region.id = region.clone();
    })
    .await;
    assert_eq!(store.load_claims(&other).await.unwrap(), vec![theirs]);
    store.replace_claims(&other, &[]).await.unwrap();
    store.replace_claims(&region, &[]).await.unwrap();
}

#[tokio::test]
async fn restored_reservations_end_after_the_grace_period() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let (_, token_a) = server.handle.store().create_token(None, "a").await.unwrap();
    let (_, token_b) = server.handle.store().create_token(None, "b").await.unwrap();
    let app = http_app("app").await;
    let mut web = tunnel("web", Protocol::Http, app.port());
    web.subdomain = Some("briefly".into());
    let mut oa = server.client_options(vec![web.clone()]);
    oa.token = token_a;
    let (a, _) = spawn_ready(oa).await;
    server.stored_claims(|c| has(c, "subdomain", "briefly", false)).await;
    let (control, http) = (server.handle.control_addr(), server.http_addr());
    let TestServer { handle, dir } = server;
    handle.abort().await;
    a.stop().await.unwrap();

    let grace = Duration::from_secs(3);
    // The grace period counts from the restarted server's startup, somewhere in between.
    let before = std::time::Instant::now();
    let back = TestServer::restart_on_same_ports(dir, control, http, |c| c.reservation_grace = grace).await;
    let after = std::time::Instant::now();
    let mut ob = back.client_options(vec![web]);
    ob.token = token_b;
    // Skipped only on a machine too slow to ask in time.
    if before.elapsed() < grace - Duration::from_millis(1500) {
        refused(ob.clone(), "subdomain_reserved").await;
    }
    tokio::time::sleep_until((after + grace + Duration::from_millis(200)).into()).await;
    let (_b, ready) = spawn_ready(ob).await;
    assert!(ready[0].public_url.starts_with("http://briefly.localhost:"));
}
