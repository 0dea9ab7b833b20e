//! Reconnection, graceful shutdown, names and reservations, authentication.
use std::time::Duration;

use http::StatusCode;
use rustunnel_client::{ClientHandle, Event};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;

#[tokio::test]
async fn reconnects_after_server_restart_with_the_same_url() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let echo = tcp_echo().await;
    let (mut c, ready) =
        server.client(vec![tunnel("web", Protocol::Http, app.port()), tunnel("db", Protocol::Tcp, echo.port())]).await;
    let (control, http) = (server.handle.control_addr(), server.http_addr());
    let web = ready.iter().find(|r| r.name == "web").unwrap().clone();
    let db = ready.iter().find(|r| r.name == "db").unwrap().clone();
    assert_eq!(get(http, &web.host(), "/").await.0, StatusCode::OK);

    // Crash: no goodbye to the client.
    let TestServer { handle, dir } = server;
    handle.abort().await;
    next_event(&mut c, |e| matches!(e, Event::Reconnecting { .. }), Duration::from_secs(10)).await;

    let back = TestServer::restart_on_same_ports(dir, control, http, |_| {}).await;
    let started = std::time::Instant::now();
    let mut urls = Vec::new();
    while urls.len() < 2 {
        if let Event::Reconnected { public_url, .. } =
            next_event(&mut c, |e| matches!(e, Event::Reconnected { .. }), Duration::from_secs(10)).await
        {
            urls.push(public_url);
        }
    }
    let elapsed = started.elapsed();
    assert!(urls.contains(&web.public_url), "{urls:?} vs {}", web.public_url);
    assert!(urls.contains(&db.public_url), "{urls:?} vs {}", db.public_url);
    assert!(elapsed < Duration::from_secs(3), "reconnected in {elapsed:?}");
    assert_eq!(get(back.http_addr(), &web.host(), "/").await.1, "hello from app\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", db.port())).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"again").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"again");
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests_and_clients_reconnect() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (mut c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (control, http) = (server.handle.control_addr(), server.http_addr());
    let (https, api) = (server.https_addr(), server.handle.api_addr().expect("API on"));
    let host = ready[0].host();
    // A request in flight when shutdown starts completes.
    let in_flight = tokio::spawn({
        let host = host.clone();
        async move { get(http, &host, "/slow?ms=700").await }
    });
    wait_in_flight(&server, &ready[0].tunnel_id).await;
    let TestServer { handle, dir } = server;
    let shutdown = tokio::spawn(handle.shutdown());
    next_event(&mut c, |e| matches!(e, Event::ServerShutdown { .. }), Duration::from_secs(5)).await;
    // While the drain goes on, every port refuses new connections at once: a load balancer's
    // readiness probe (any of them, the API's included) fails from the first moment.
    assert!(!in_flight.is_finished(), "the drain is still going on");
    for (what, addr) in [("control", control), ("HTTP", http), ("HTTPS", https), ("API", api)] {
        let r = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await;
        assert!(matches!(r, Ok(Err(_))), "{what} port still accepts during the drain: {r:?}");
    }
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow done\n");
    // The request finished during the drain still reaches the client's live log.
    let slow = |e: &Event| matches!(e, Event::Request { path, .. } if path.starts_with("/slow"));
    next_event(&mut c, slow, Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(15), shutdown).await.unwrap().unwrap();
    // New connections are refused while it is down; the client waits and comes back.
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    next_event(&mut c, |e| matches!(e, Event::Reconnecting { .. }), Duration::from_secs(5)).await;
    let back = TestServer::restart_on_same_ports(dir, control, http, |_| {}).await;
    next_event(&mut c, |e| matches!(e, Event::Reconnected { .. }), Duration::from_secs(10)).await;
    assert_eq!(get(back.http_addr(), &host, "/").await.1, "hello from app\n");
}

/// A graceful restart under many clients: every one comes back on its own name, and not all
/// in the same instant (the server's "come back in 250 ms" is spread by each client's jitter).
#[tokio::test]
async fn a_restart_under_many_clients_restores_every_tunnel_with_spread_reconnects() {
    const CLIENTS: usize = 20;
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (control, http) = (server.handle.control_addr(), server.http_addr());
    let mut clients = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..CLIENTS {
        let mut t = tunnel("web", Protocol::Http, app.port());
        t.subdomain = Some(format!("many{i}"));
        let (c, ready) = server.client(vec![t]).await;
        hosts.push(ready[0].host());
        clients.push(c);
    }
    let TestServer { handle, dir } = server;
    handle.shutdown().await;
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                next_event(&mut c, |e| matches!(e, Event::Reconnected { .. }), Duration::from_secs(20)).await;
                (tokio::time::Instant::now(), c)
            })
        })
        .collect();
    let back = TestServer::restart_on_same_ports(dir, control, http, |_| {}).await;
    let mut times = Vec::new();
    let mut clients = Vec::new();
    for w in waiting {
        let (at, c) = w.await.unwrap();
        times.push(at);
        clients.push(c);
    }
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    eprintln!("{CLIENTS} clients reconnected over {:?}", *last - *first);
    assert!(*last - *first > Duration::from_millis(20), "all {CLIENTS} reconnected within {:?}", *last - *first);
    for host in &hosts {
        assert_eq!(get(back.http_addr(), host, "/").await.0, StatusCode::OK, "{host}");
    }
}

/// With nothing in flight the drain ends at once: the shutdown notice must still go out before
/// the connections close (it raced the close and was sometimes lost).
#[tokio::test]
async fn an_idle_server_shutting_down_still_tells_its_clients() {
    for _ in 0..3 {
        let server = TestServer::start().await;
        let app = http_app("app").await;
        let (mut c, _ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
        let TestServer { handle, dir: _dir } = server;
        let shutdown = tokio::spawn(handle.shutdown());
        next_event(&mut c, |e| matches!(e, Event::ServerShutdown { .. }), Duration::from_secs(5)).await;
        tokio::time::timeout(Duration::from_secs(15), shutdown).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn client_started_before_the_server_connects_when_it_comes_up() {
    // Reserve a port, start the client against it, then start the server there.
    let probe = TestServer::start().await;
    let control = probe.handle.control_addr();
    let TestServer { handle, dir } = probe;
    handle.abort().await;
    let app = http_app("app").await;
    let mut opts = rustunnel_client::ClientOptions::new(
        control.to_string(),
        std::fs::read_to_string(dir.path().join("admin-token")).unwrap().trim(),
    );
    opts.tls.insecure = true;
    opts.tunnels = vec![tunnel("web", Protocol::Http, app.port())];
    let mut c = ClientHandle::spawn(opts);
    next_event(&mut c, |e| matches!(e, Event::Reconnecting { .. }), Duration::from_secs(5)).await;
    let mut config = rustunnel_server::Config::ephemeral(dir.path());
    config.control_addr = control;
    let server = rustunnel_server::ServerHandle::spawn(config).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(10), c.wait_ready(1)).await.unwrap().unwrap();
    let Event::TunnelReady { public_url, .. } = &ready[0] else { panic!() };
    let host = public_url.split("://").nth(1).unwrap();
    assert_eq!(get(server.http_addr().unwrap(), host, "/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn rejected_token_exits_with_a_clear_error() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, 9)]);
    opts.token = "rt_wrong".into();
    let mut c = ClientHandle::spawn(opts);
    let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    let Event::Error { code, hint, fatal, .. } = e else { unreachable!() };
    assert_eq!(code, "unauthorized");
    assert!(fatal);
    assert!(hint.contains("RUSTUNNEL_TOKEN"));
    assert!(c.join().await.is_err());
}

#[tokio::test]
async fn minted_tokens_work_and_anonymous_is_refused_off_dev() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let (_, raw) = server.handle.store().create_token(None, "ci").await.unwrap();
    let app = http_app("app").await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, app.port())]);
    opts.token = raw;
    let (_c, ready) = spawn_ready(opts).await;
    assert_eq!(get(server.http_addr(), &ready[0].host(), "/").await.0, StatusCode::OK);
    let mut anon = server.client_options(vec![tunnel("web2", Protocol::Http, app.port())]);
    anon.token = String::new();
    let mut c = ClientHandle::spawn(anon);
    assert!(c.wait_ready(1).await.is_err());
}

/// A token with rights opens only the subdomains and ports they allow; a random name gets
/// the first prefix, a random port comes from the allowed range, anything else is refused
/// with the rights named and the run ends.
#[tokio::test]
async fn a_token_opens_only_what_its_rights_allow() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let rights = rustunnel_server::rights::Rights::parse(Some(&["docs", "ci-*"]), Some(&["20990-20999"])).unwrap();
    let (_, raw) = server.handle.store().create_token_with(None, "ci", &rights).await.unwrap();
    let app = http_app("app").await;
    let with = |tunnels: Vec<rustunnel_client::TunnelConfig>| {
        let mut o = server.client_options(tunnels);
        o.token = raw.clone();
        o
    };
    let named = |name: &str, sub: &str| {
        let mut t = tunnel(name, Protocol::Http, app.port());
        t.subdomain = Some(sub.into());
        t
    };
    let allowed = vec![
        named("docs", "docs"),
        named("web", "ci-web"),
        tunnel("random", Protocol::Http, app.port()),
        tunnel("db", Protocol::Tcp, app.port()),
    ];
    let (_c, ready) = spawn_ready(with(allowed)).await;
    let url = |name: &str| ready.iter().find(|r| r.name == name).unwrap().public_url.clone();
    assert!(url("docs").starts_with("http://docs.localhost:"), "{}", url("docs"));
    assert!(url("web").starts_with("http://ci-web.localhost:"), "{}", url("web"));
    assert!(url("random").starts_with("http://ci-"), "a random name takes the prefix: {}", url("random"));
    let port: u16 = url("db").rsplit(':').next().unwrap().parse().unwrap();
    assert!((20990..=20999).contains(&port), "{}", url("db"));
    let docs = ready.iter().find(|r| r.name == "docs").unwrap();
    assert_eq!(get(server.http_addr(), &docs.host(), "/").await.0, StatusCode::OK);

    let mut far_port = tunnel("db2", Protocol::Tcp, app.port());
    far_port.remote_port = Some(20100);
    let refused = [
        (named("other", "other"), "docs,ci-*"),
        (named("lookalike", "cidocs"), "docs,ci-*"),
        (far_port, "20990-20999"),
        (tunnel("pool", Protocol::Http, app.port()).with_group("shop", "k"), "docs,ci-*"),
    ];
    for (t, listed) in refused {
        let name = t.name.clone();
        let mut c = ClientHandle::spawn(with(vec![t]));
        let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
        let Event::Error { code, message, hint, fatal, .. } = e else { unreachable!() };
        assert_eq!(code, "not_permitted", "{name}: {message}");
        assert!(message.contains("outside this token's rights") && message.contains(listed), "{name}: {message}");
        assert!(hint.contains("wider rights") && fatal, "{name}: {hint}");
    }
    // Only exact names: a tunnel without a subdomain is told to choose one.
    let exact = rustunnel_server::rights::Rights::parse(Some(&["docs2"]), None).unwrap();
    let (_, raw2) = server.handle.store().create_token_with(None, "exact", &exact).await.unwrap();
    let mut o = server.client_options(vec![tunnel("random", Protocol::Http, app.port())]);
    o.token = raw2;
    let mut c = ClientHandle::spawn(o);
    let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    assert!(
        matches!(&e, Event::Error { code, message, .. } if code == "not_permitted" && message.contains("docs2: choose one with --subdomain")),
        "{e:?}"
    );
}

#[tokio::test]
async fn two_clients_racing_for_one_name_exactly_one_wins() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut t = tunnel("web", Protocol::Http, app.port());
        t.subdomain = Some("contested".into());
        let mut c = ClientHandle::spawn(server.client_options(vec![t]));
        handles.push(tokio::spawn(async move {
            let ok = tokio::time::timeout(Duration::from_secs(10), c.wait_ready(1)).await.unwrap().is_ok();
            (ok, c)
        }));
    }
    let mut wins = 0;
    let mut keep = Vec::new();
    for h in handles {
        let (ok, c) = h.await.unwrap();
        wins += ok as usize;
        keep.push(c);
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn dropped_clients_name_is_reserved_for_its_owner() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let (_, token_a) = server.handle.store().create_token(None, "a").await.unwrap();
    let (_, token_b) = server.handle.store().create_token(None, "b").await.unwrap();
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("mine".into());
    let mut oa = server.client_options(vec![t.clone()]);
    oa.token = token_a.clone();
    let (c, _) = spawn_ready(oa.clone()).await;
    c.stop().await.unwrap();
    // Another owner cannot take it during the grace period...
    let mut ob = server.client_options(vec![t.clone()]);
    ob.token = token_b;
    let mut cb = ClientHandle::spawn(ob);
    let e = next_event(&mut cb, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    let Event::Error { code, message, hint, .. } = e else { unreachable!() };
    assert_eq!(code, "subdomain_reserved", "{message}");
    assert!(message.contains("reserved for its previous owner for another"), "{message}");
    assert!(hint.contains("try again when the reservation ends"), "{hint}");
    // ...but the owner gets it back.
    let (_c, ready) = spawn_ready(oa).await;
    assert!(ready[0].public_url.starts_with("http://mine.localhost:"));
}

#[tokio::test]
async fn invalid_and_reserved_subdomains_are_refused() {
    let server = TestServer::start().await;
    for bad in ["www", "admin", "api", "-bad", "UPPER", "ab", "xn--80ak6aa92e"] {
        let mut t = tunnel("web", Protocol::Http, 9);
        t.subdomain = Some(bad.into());
        let mut c = ClientHandle::spawn(server.client_options(vec![t]));
        let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
        assert!(matches!(e, Event::Error { ref code, fatal: true, .. } if code == "invalid_subdomain"), "{bad}: {e:?}");
    }
}

#[tokio::test]
async fn heartbeat_loss_frees_server_resources() {
    // A client whose control connection goes silent is dropped within the heartbeat timeout.
    let server = TestServer::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let app = http_app("app").await;
    let (c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    assert!(server.handle.shared().tunnel(&ready[0].tunnel_id).is_some());
    // Stopping the client closes its sockets: the server must notice and free the tunnel.
    c.stop().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    // (The stopping client drains and closes its tunnel first, then its connection.)
    while server.handle.shared().tunnel(&ready[0].tunnel_id).is_some() || server.handle.shared().session_count() != 0 {
        assert!(std::time::Instant::now() < deadline, "tunnel or session not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ca_file_is_trusted_and_unknown_certificates_are_refused_with_a_hint() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let control = format!("localhost:{}", server.handle.control_addr().port());
    // Trusting the dev server's generated certificate explicitly works without --insecure.
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, app.port())]);
    opts.server = control.clone();
    opts.tls = rustunnel_client::TlsOptions { insecure: false, ca: Some(server.handle.cert_path().to_path_buf()) };
    let (_c, ready) = spawn_ready(opts).await;
    assert_eq!(get(server.http_addr(), &ready[0].host(), "/").await.0, StatusCode::OK);
    // Neither --insecure nor --ca: a fatal certificate error with an actionable hint.
    let mut opts = server.client_options(vec![tunnel("web2", Protocol::Http, app.port())]);
    opts.server = control;
    opts.tls = rustunnel_client::TlsOptions::default();
    let mut c = ClientHandle::spawn(opts);
    let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    let Event::Error { code, hint, fatal, .. } = e else { unreachable!() };
    assert_eq!(code, "tls_error");
    assert!(fatal);
    assert!(hint.contains("--insecure") && hint.contains("--ca"), "{hint}");
}

#[tokio::test]
async fn a_client_whose_events_nobody_reads_still_reconnects() {
    // The event consumer stalls (a blocked stdout); the client must keep its heartbeats and
    // reconnect anyway: lifecycle events never wait on the consumer.
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (control, http) = (server.handle.control_addr(), server.http_addr());
    let host = ready[0].host();
    let mut conn = http1_conn(http).await;
    for _ in 0..1500 {
        let req = http::Request::get("/").header("host", &host).body(body("")).unwrap();
        let resp = conn.send_request(req).await.unwrap();
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
    // Let the request log reach the client and fill its event channel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let TestServer { handle, dir } = server;
    handle.abort().await;
    let back = TestServer::restart_on_same_ports(dir, control, http, |_| {}).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = tokio::net::TcpStream::connect(back.http_addr()).await.unwrap();
        let (mut send, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
        tokio::spawn(c);
        let req = http::Request::get("/").header("host", &host).body(body("")).unwrap();
        if send.send_request(req).await.map(|r| r.status() == StatusCode::OK).unwrap_or(false) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "client never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dropped_packets_free_the_server_and_the_client_reconnects() {
    let server = TestServer::start_with(|c| c.heartbeat = Duration::from_secs(1)).await;
    let app = http_app("app").await;
    let path = Blackhole::start(server.handle.control_addr()).await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, app.port())]);
    opts.server = path.addr.to_string();
    let (mut c, ready) = spawn_ready(opts).await;
    let shared = server.handle.shared().clone();
    assert!(shared.tunnel(&ready[0].tunnel_id).is_some());
    path.cut();
    // The server stops hearing the client: it frees the tunnel within 3 heartbeats (+ slack).
    let cut_at = std::time::Instant::now();
    while shared.tunnel(&ready[0].tunnel_id).is_some() {
        assert!(cut_at.elapsed() < Duration::from_secs(6), "server kept the silent session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client notices too, and comes back with the same URL once the path works again.
    next_event(&mut c, |e| matches!(e, Event::Reconnecting { .. }), Duration::from_secs(6)).await;
    path.restore();
    let e = next_event(&mut c, |e| matches!(e, Event::Reconnected { .. }), Duration::from_secs(10)).await;
    let Event::Reconnected { public_url, .. } = e else { unreachable!() };
    assert_eq!(public_url, ready[0].public_url);
    assert_eq!(get(server.http_addr(), &ready[0].host(), "/").await.0, StatusCode::OK);
}

/// A client whose path goes silent while visitors arrive is found out in seconds, not after
/// three missed heartbeats (30 s at the default 10 s): the first visitor makes the server ask
/// the client to answer, and it gets a 502 once the client has not.
#[tokio::test]
async fn visitors_of_a_silent_client_get_a_502_within_seconds() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let path = Blackhole::start(server.handle.control_addr()).await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, app.port())]);
    opts.server = path.addr.to_string();
    let (_c, ready) = spawn_ready(opts).await;
    assert_eq!(get(server.http_addr(), &ready[0].host(), "/").await.0, StatusCode::OK);
    path.cut();
    let started = std::time::Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(20), get(server.http_addr(), &ready[0].host(), "/"))
        .await
        .expect("an answer well before the heartbeat timeout");
    let waited = started.elapsed();
    eprintln!("a visitor of a silent client got {status} after {waited:?}");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(server.handle.shared().tunnel(&ready[0].tunnel_id).is_none(), "the silent session was ended");
}

#[tokio::test]
async fn dropping_a_client_handle_stops_the_client() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    drop(c);
    let shared = server.handle.shared().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while shared.tunnel(&ready[0].tunnel_id).is_some() {
        assert!(std::time::Instant::now() < deadline, "the dropped client kept its tunnel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second server on a data directory in use is refused with a clear error: it would take the
/// running server's open tunnels for leftovers of a crash and close their history. Once the
/// first has stopped, the directory is free again.
#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let config = rustunnel_server::Config::ephemeral(server.dir.path());
    let err = rustunnel_server::ServerHandle::spawn(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("already using the data directory"), "{err}");
    // The running server's tunnel is still open, in the edge and in the history.
    assert_eq!(get(server.http_addr(), &ready[0].host(), "/").await.0, StatusCode::OK);
    let query = rustunnel_server::store::HistoryQuery { limit: 10, ..Default::default() };
    let open = server.handle.store().list_history(&query).await.unwrap();
    assert!(open.iter().any(|h| h.closed_at.is_none()), "{open:?}");
    let TestServer { handle, dir } = server;
    handle.shutdown().await;
    let again = rustunnel_server::ServerHandle::spawn(rustunnel_server::Config::ephemeral(dir.path())).await;
    assert!(again.is_ok(), "{:?}", again.err());
}

/// On PostgreSQL (when `RUSTUNNEL_TEST_POSTGRES_URL` is set) one server serves a region: a
/// second one with the same region, on another data directory, is refused.
#[tokio::test]
async fn a_second_server_of_the_same_region_on_postgres_is_refused() {
    let Ok(url) = std::env::var("RUSTUNNEL_TEST_POSTGRES_URL") else { return };
    let region = format!("test-{:016x}", rand::random::<u64>());
    let with_region = |c: &mut rustunnel_server::Config| {
        c.database_url = Some(url.clone());
        c.region.id = region.clone();
    };
    let first = TestServer::start_with(with_region).await;
    let other_dir = tempfile::tempdir().unwrap();
    let mut config = rustunnel_server::Config::ephemeral(other_dir.path());
    with_region(&mut config);
    let err = rustunnel_server::ServerHandle::spawn(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains(&format!("region '{region}'")), "{err}");
    first.handle.shutdown().await;
    let again = rustunnel_server::ServerHandle::spawn(config).await;
    assert!(again.is_ok(), "{:?}", again.err());
}

/// Open tunnels' counters reach the history every `history_flush`, so a crash (which leaves
/// the row open for the next start to close as `server_restart`, counters untouched) loses at
/// most the last interval's traffic; before, such rows said 0.
#[tokio::test]
async fn open_tunnels_counters_reach_the_history_while_they_run() {
    let flush = Duration::from_millis(200);
    let server = TestServer::start_with(|c| c.history_flush = flush).await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    for _ in 0..5 {
        assert_eq!(get(server.http_addr(), &ready[0].host(), "/").await.0, StatusCode::OK);
    }
    tokio::time::sleep(flush * 3).await;
    let query = rustunnel_server::store::HistoryQuery { limit: 10, ..Default::default() };
    let rows = server.handle.store().list_history(&query).await.unwrap();
    let row = rows.iter().find(|h| h.name == "web").expect("history row");
    assert_eq!(row.closed_at, None, "{row:?}");
    assert_eq!(row.requests, 5, "{row:?}");
    assert!(row.bytes_in > 0 && row.bytes_out > 0, "{row:?}");
    // What the next start does with a crashed server's rows keeps those counters.
    server
        .handle
        .store()
        .close_region_orphans(&server.handle.shared().config().region.id, "server_restart")
        .await
        .unwrap();
    let rows = server.handle.store().list_history(&query).await.unwrap();
    let row = rows.iter().find(|h| h.name == "web").unwrap();
    assert_eq!((row.close_reason.as_deref(), row.requests), (Some("server_restart"), 5));
}

/// A client that stops on purpose (Ctrl+C, or its handle stopped) finishes what its tunnels
/// serve first: an HTTP request in flight gets its answer and an open TCP connection keeps
/// working until it ends, while new requests and connections are refused; then it exits.
#[tokio::test]
async fn a_stopping_client_finishes_in_flight_requests_and_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let echo = tcp_echo().await;
    let mut web = tunnel("web", Protocol::Http, app.port());
    web.subdomain = Some("leaving".into());
    let (c, ready) = server.client(vec![web, tunnel("db", Protocol::Tcp, echo.port())]).await;
    let edge = server.http_addr();
    let host = ready.iter().find(|r| r.name == "web").unwrap().host();
    let db = ready.iter().find(|r| r.name == "db").unwrap().port();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", db)).await.unwrap();
    conn.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    conn.read_exact(&mut buf).await.unwrap();

    let h = host.clone();
    let slow = tokio::spawn(async move { get(edge, &h, "/slow?ms=1000").await });
    let web_id = &ready.iter().find(|r| r.name == "web").unwrap().tunnel_id;
    wait_in_flight(&server, web_id).await;
    let stopping = tokio::spawn(c.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "the client waits for what is in flight");
    // New visitors are turned away meanwhile...
    assert_eq!(get(edge, &host, "/").await.0, StatusCode::NOT_FOUND);
    let mut late = tokio::net::TcpStream::connect(("127.0.0.1", db)).await.unwrap();
    let _ = late.write_all(b"late").await;
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), late.read(&mut buf)).await.unwrap().unwrap_or(0), 0);
    // ...while the open connection still carries data, and the request gets its answer.
    conn.write_all(b"during").await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during");
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"slow done\n"[..]));
    // The connection ends: nothing is left in flight and the client is gone at once.
    drop(conn);
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("stops once drained").unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(get(edge, &host, "/").await.0, StatusCode::NOT_FOUND);
}

/// An open WebSocket (say, a dev server's hot reload) does not hold a stopping client for the
/// whole drain time: upgraded connections may never end, so the drain does not wait for them;
/// closing the tunnel ends them.
#[tokio::test]
async fn a_stopping_client_does_not_wait_for_websockets() {
    use futures_util::StreamExt;
    let server = TestServer::start_with(|c| c.drain_timeout = Duration::from_secs(8)).await;
    let app = http_app("app").await;
    let (c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let tcp = tokio::net::TcpStream::connect(server.http_addr()).await.unwrap();
    let url = format!("ws://{}/ws", ready[0].host());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), c.stop()).await.expect("not held by the WebSocket").unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // The WebSocket ends with the tunnel.
    let end = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(end.is_ok(), "the WebSocket was closed");
}
