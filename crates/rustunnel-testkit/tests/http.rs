//! HTTP tunnels end to end, in process, on port 0.
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rustunnel_client::Event;
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;

#[tokio::test]
async fn get_through_tunnel_with_keepalive_and_forwarded_headers() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("myapp".into());
    let (_c, ready) = server.client(vec![t]).await;
    let edge = server.http_addr();
    assert_eq!(ready[0].public_url, format!("http://myapp.localhost:{}", edge.port()));
    let host = ready[0].host();

    let mut conn = http1_conn(edge).await;
    for _ in 0..20 {
        let req = Request::get("/").header("host", &host).body(body("")).unwrap();
        let resp = conn.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hello from app\n");
    }
    let req = Request::get("/headers")
        .header("host", &host)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .body(body(""))
        .unwrap();
    let resp = conn.send_request(req).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("\"x-forwarded-for\":\"127.0.0.1\""), "{text}");
    assert!(text.contains("\"x-forwarded-proto\":\"http\""), "{text}");
    assert!(text.contains(&format!("\"x-forwarded-host\":\"{host}\"")), "{text}");
    assert!(!text.contains("6.6.6.6"), "{text}");
}

#[tokio::test]
async fn edge_error_pages() {
    let server = TestServer::start_with(|c| c.response_timeout = Duration::from_millis(500)).await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let edge = server.http_addr();
    let host = ready[0].host();

    let (s, _) = get(edge, &format!("nope.localhost:{}", edge.port()), "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(edge, "127.0.0.1", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "IP-literal host is never proxied");
    let (s, _) = get(edge, &format!("{host}."), "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "trailing-dot host is never proxied");
    let (s, page) = get(edge, &host, "/slow?ms=3000").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&page).contains("too slow"));

    // CONNECT and absolute-form: not an open proxy.
    let mut conn = http1_conn(edge).await;
    let req = Request::connect("example.com:443").header("host", "example.com:443").body(body("")).unwrap();
    assert_eq!(conn.send_request(req).await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    let mut conn = http1_conn(edge).await;
    let req = Request::get(format!("http://{host}/")).header("host", &host).body(body("")).unwrap();
    assert_eq!(conn.send_request(req).await.unwrap().status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn local_service_down_gives_502_with_a_clear_message() {
    let server = TestServer::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (s, body) = get(server.http_addr(), &ready[0].host(), "/").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("nothing is listening"), "{body:?}");
}

#[tokio::test]
async fn a_local_service_that_closes_without_answering_is_named_in_the_502() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start().await;
    // Reads the request, then hangs up without a word.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let rude = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    let mut t = tunnel("web", Protocol::Http, port);
    t.subdomain = Some("rude".into());
    let (_c, ready) = spawn_ready(server.client_options(vec![t])).await;
    for _ in 0..2 {
        let (s, body) = get(server.http_addr(), &ready[0].host(), "/").await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("closed the connection without answering"), "{body}");
    }
    // The same over HTTP/2 (forwarded by hyper, not the lean path).
    let edge = server.https_addr();
    let mut h2 = h2_conn(edge, "rude.localhost").await;
    let req = Request::get(format!("https://rude.localhost:{}/", edge.port())).body(body("")).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let page = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("closed the connection without answering"), "{page:?}");
    rude.abort();
}

#[tokio::test]
async fn tunnel_client_gone_gives_502_quickly() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    c.stop().await.unwrap();
    let started = std::time::Instant::now();
    let (s, _) = get(server.http_addr(), &ready[0].host(), "/").await;
    // Either the name is already gone (404) or the client is (502); never a hang.
    assert!(s == StatusCode::NOT_FOUND || s == StatusCode::BAD_GATEWAY, "{s}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn large_bodies_stream_both_ways_and_hash_matches() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let host = ready[0].host();
    let edge = server.http_addr();

    // 32 MiB download, streamed by the app in 16 KiB chunks.
    let n = 32 << 20;
    let mut conn = http1_conn(edge).await;
    let req = Request::get(format!("/big?n={n}")).header("host", &host).body(body("")).unwrap();
    let resp = conn.send_request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), n);
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(n)));

    // 16 MiB chunked upload, hashed by the app.
    let data = Bytes::from(pattern(16 << 20));
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..data.len())
        .step_by(100_000)
        .map(|i| Ok(Frame::data(data.slice(i..(i + 100_000).min(data.len())))))
        .collect();
    let req = Request::post("/hash")
        .header("host", &host)
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))))
        .unwrap();
    let resp = conn.send_request(req).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), sha256_hex(&data));
}

#[tokio::test]
async fn streamed_response_arrives_before_request_ends() {
    // Full-duplex streaming: the app echoes each chunk as it arrives, so the first echoed
    // chunk must come back while the request body is still open.
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (mut c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut conn = http1_conn(server.http_addr()).await;
    let req =
        Request::post("/echo").header("host", ready[0].host()).body(BodyExt::boxed(StreamBody::new(stream))).unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"first chunk")))).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), conn.send_request(req)).await.unwrap().unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first chunk");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"second")))).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    // The live log times the whole exchange, not just the wait for the response head.
    let e = next_event(&mut c, |e| matches!(e, Event::Request { path, .. } if path == "/echo"), Duration::from_secs(5))
        .await;
    let Event::Request { duration_ms, status, .. } = e else { unreachable!() };
    assert_eq!(status, 200);
    assert!(duration_ms >= 300.0, "{duration_ms} ms");
}

/// `--host-header rewrite`: the local service gets its own address as `Host` on every path
/// (lean HTTP/1.1, hyper's for chunked bodies, HTTP/2); the public host stays in
/// `X-Forwarded-Host`. A fixed value is sent as given.
#[tokio::test]
async fn host_header_rewrite_reaches_the_local_service_on_every_path() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut rewritten = tunnel("a", Protocol::Http, app.port());
    rewritten.subdomain = Some("rewritten".into());
    rewritten.host_header = Some("rewrite".into());
    let mut fixed = tunnel("b", Protocol::Http, app.port());
    fixed.subdomain = Some("fixed".into());
    fixed.host_header = Some("internal.test".into());
    // A login too: its line and the Host line are both edited in one head.
    fixed.basic_auth = Some(rustunnel_proto::basic_auth::BasicAuth::parse("ana:correct horse").unwrap());
    let (_c, ready) = server.client(vec![rewritten, fixed]).await;
    let local = format!("127.0.0.1:{}", app.port());
    let (public_a, public_b) = (ready[0].host(), ready[1].host());
    let text = |b: Bytes| String::from_utf8_lossy(&b).into_owned();

    let mut conn = http1_conn(server.http_addr()).await;
    let req = Request::get("/headers").header("host", &public_a).body(body("")).unwrap();
    let seen = text(conn.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes());
    assert!(seen.contains(&format!("\"host\":\"{local}\"")), "{seen}");
    assert!(seen.contains(&format!("\"x-forwarded-host\":\"{public_a}\"")), "{seen}");
    let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x")))]);
    let req =
        Request::post("/headers").header("host", &public_a).body(BodyExt::boxed(StreamBody::new(chunks))).unwrap();
    let seen = text(conn.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes());
    assert!(seen.contains(&format!("\"host\":\"{local}\"")) && seen.contains("chunked"), "{seen}");

    // A fresh connection: the chunked upload handed the one above over to hyper for good.
    let mut conn = http1_conn(server.http_addr()).await;
    let login = "Basic YW5hOmNvcnJlY3QgaG9yc2U="; // ana:correct horse
    let req = Request::get("/headers").header("host", &public_b).header("authorization", login).body(body("")).unwrap();
    let seen = text(conn.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes());
    assert!(seen.contains("\"host\":\"internal.test\"") && !seen.contains("authorization"), "{seen}");
    assert!(seen.contains(&format!("\"x-forwarded-host\":\"{public_b}\"")), "{seen}");

    let https = server.https_addr();
    let mut h2 = h2_conn(https, "rewritten.localhost").await;
    let req = Request::get(format!("https://rewritten.localhost:{}/headers", https.port())).body(body("")).unwrap();
    let seen = text(h2.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes());
    assert!(seen.contains(&format!("\"host\":\"{local}\"")), "{seen}");
}

#[tokio::test]
async fn http2_over_the_https_edge() {
    http2_requests(true).await;
}

#[tokio::test]
async fn http2_over_the_https_edge_for_a_client_without_the_multiplexer() {
    http2_requests(false).await;
}

/// Concurrent HTTP/2 requests through the HTTPS edge: forwarded as streams of the session's
/// multiplexed data connection (`mux`), or over data connections of their own.
async fn http2_requests(mux: bool) {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("secure".into());
    let mut opts = server.client_options(vec![t]);
    opts.mux = mux;
    let (_c, _ready) = spawn_ready(opts).await;
    let edge = server.https_addr();
    let mut h2 = h2_conn(edge, "secure.localhost").await;
    let mut handles = Vec::new();
    for i in 0..10 {
        let req = Request::get(format!("https://secure.localhost:{}/big?n={}", edge.port(), 1000 + i))
            .body(body(""))
            .unwrap();
        handles.push(h2.send_request(req));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let resp = h.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), 1000 + i);
    }
    let req = Request::get(format!("https://secure.localhost:{}/headers", edge.port())).body(body("")).unwrap();
    let text = h2.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("\"x-forwarded-proto\":\"https\""));
    // Headers over the edge's limits get its 431 page, as over HTTP/1.1 (not a refused stream
    // a client would retry), and the connection goes on serving.
    for (name, value, n) in [("x-big", "a".repeat(70 * 1000), 1), ("x-h", "v".to_string(), 101)] {
        let mut req = Request::get(format!("https://secure.localhost:{}/", edge.port()));
        for i in 0..n {
            req = req.header(format!("{name}{i}"), value.as_str());
        }
        let resp = h2.send_request(req.body(body("")).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 431, "{name}");
        let page = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&page).contains("at most 100 header fields"), "{page:?}");
    }
    let req = Request::get(format!("https://secure.localhost:{}/", edge.port())).body(body("")).unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
}

/// Connections to the local service kept for the next request (HTTP/2 visitors over the HTTPS
/// edge, HTTP/1.1 ones over the HTTP edge) close once idle for the server's `upstream_idle`,
/// without waiting for the tunnel's next request.
#[tokio::test]
async fn idle_connections_to_the_local_service_close_without_further_traffic() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = TestServer::start_with(|c| c.upstream_idle = Duration::from_millis(300)).await;
    let (app, open) = http_app_counted("idler").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("idler".into());
    let (_c, _ready) = spawn_ready(server.client_options(vec![t])).await;
    let edge = server.https_addr();
    let mut h2 = h2_conn(edge, "idler.localhost").await;
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let req =
                Request::get(format!("https://idler.localhost:{}/slow?ms=100", edge.port())).body(body("")).unwrap();
            h2.send_request(req)
        })
        .collect();
    for r in burst {
        assert_eq!(r.await.unwrap().status(), 200);
    }
    assert_eq!(get(server.http_addr(), "idler.localhost", "/").await.0, StatusCode::OK);
    let after_burst = open.load(SeqCst);
    assert!(after_burst >= 10, "a burst of concurrent requests opened {after_burst} connections");
    // Then silence, the visitor's connection still open: they close all the same.
    let t0 = std::time::Instant::now();
    while open.load(SeqCst) > 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{} of {after_burst} still open", open.load(SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the tunnel serves the next request as before.
    let req = Request::get(format!("https://idler.localhost:{}/", edge.port())).body(body("")).unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
}

/// The dev server's `https://` URLs verify in an OpenSSL client (curl) that trusts the server's
/// CA file: a certificate for exactly the name asked, not a `*.localhost` wildcard OpenSSL
/// refuses.
#[tokio::test]
async fn https_urls_verify_in_curl_with_the_servers_ca() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed: skipping");
        return;
    }
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("verified".into());
    let (_c, _ready) = spawn_ready(server.client_options(vec![t])).await;
    let port = server.https_addr().port();
    let ca = server.handle.cert_path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("verified.localhost:{port}:127.0.0.1")])
            .arg(format!("https://verified.localhost:{port}/"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from app\n");
}

#[tokio::test]
async fn websocket_echo_through_tunnel() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let edge = server.http_addr();
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    let url = format!("ws://{}/ws", ready[0].host());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..50 {
        let msg = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone())).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    let big = vec![7u8; 1 << 20];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().as_ref(), &big[..]);
}

#[tokio::test]
async fn several_tunnels_in_one_client_reach_their_own_services() {
    let server = TestServer::start().await;
    let (a, b) = (http_app("alpha").await, http_app("beta").await);
    let echo = tcp_echo().await;
    let (_c, ready) = server
        .client(vec![
            tunnel("a", Protocol::Http, a.port()),
            tunnel("b", Protocol::Http, b.port()),
            tunnel("e", Protocol::Tcp, echo.port()),
        ])
        .await;
    let edge = server.http_addr();
    for r in &ready {
        match r.name.as_str() {
            "a" => assert_eq!(get(edge, &r.host(), "/").await.1, "hello from alpha\n"),
            "b" => assert_eq!(get(edge, &r.host(), "/").await.1, "hello from beta\n"),
            "e" => {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", r.port())).await.unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut s, b"ping").await.unwrap();
                assert_eq!(read_n(&mut s, 4).await, b"ping");
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn concurrent_requests_over_many_connections() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let host = ready[0].host();
    let edge = server.http_addr();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = http1_conn(edge).await;
            for _ in 0..20 {
                let req = Request::get("/").header("host", &host).body(body("")).unwrap();
                let resp = conn.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A burst of requests makes a request-log batch far larger than one control frame: the server
/// sends it in several messages, the client stays connected, and every request is either in
/// the live log or counted as not shown.
#[tokio::test]
async fn a_burst_of_requests_keeps_the_client_connected_and_is_all_accounted_for() {
    const CONNS: usize = 8;
    const EACH: usize = 300;
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (mut c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let edge = server.http_addr();
    let host = ready[0].host();
    let long = "a".repeat(250);
    let mut tasks = Vec::new();
    for i in 0..CONNS {
        let (host, long) = (host.clone(), long.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = http1_conn(edge).await;
            for j in 0..EACH {
                let req = Request::get(format!("/?r={i}-{j}-{long}")).header("host", &host).body(body("")).unwrap();
                let resp = conn.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200, "request {i}/{j}");
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut accounted = 0u64;
    while accounted < (CONNS * EACH) as u64 {
        match tokio::time::timeout(Duration::from_secs(5), c.events.recv()).await {
            Ok(Some(Event::Request { status, .. })) => {
                assert_eq!(status, 200);
                accounted += 1;
            }
            Ok(Some(Event::RequestsNotShown { count })) => accounted += count,
            Ok(Some(e @ (Event::Reconnecting { .. } | Event::Error { .. }))) => panic!("client disturbed: {e:?}"),
            Ok(Some(_)) => {}
            other => panic!("log incomplete: {accounted} of {} ({other:?})", CONNS * EACH),
        }
    }
    assert_eq!(accounted, (CONNS * EACH) as u64);
}

/// While a dropped client's name is held for it, its visitors get 502 "may be reconnecting",
/// not 404 "tunnel not found"; a name nobody holds is still 404.
#[tokio::test]
async fn a_gone_clients_name_answers_502_while_it_is_held() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("comeback".into());
    let (c, ready) = server.client(vec![t]).await;
    let edge = server.http_addr();
    let host = ready[0].host();
    assert_eq!(get(edge, &host, "/").await.0, StatusCode::OK);
    c.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (status, page) = loop {
        let (s, page) = get(edge, &host, "/").await;
        if s != StatusCode::OK || tokio::time::Instant::now() > deadline {
            break (s, page);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&page));
    assert!(String::from_utf8_lossy(&page).contains("reconnecting"));
    let (s, _) = get(edge, &format!("nobody.localhost:{}", edge.port()), "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A client that dies while a request is waiting for the local service: the visitor gets the
/// 502 page as soon as the client's connections close, not after the request's timeout.
#[tokio::test]
async fn a_client_gone_mid_request_answers_502_at_once() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let started = tokio::time::Instant::now();
    let waiting = tokio::spawn(async move { get(edge, &host, "/slow?ms=5000").await });
    wait_in_flight(&server, &ready[0].tunnel_id).await;
    c.abort();
    let (status, page) = tokio::time::timeout(Duration::from_secs(4), waiting).await.expect("no hung request").unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&page));
    assert!(started.elapsed() < Duration::from_secs(2), "502 after {:?}", started.elapsed());
}

/// A client stopped on purpose (Ctrl+C) closes its tunnels: visitors get "not found", not a
/// page saying it may be reconnecting; the name stays its owner's for the grace period.
#[tokio::test]
async fn a_stopped_clients_name_answers_404_and_stays_reserved_to_its_owner() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("stopped".into());
    let (c, ready) = server.client(vec![t.clone()]).await;
    let edge = server.http_addr();
    let host = ready[0].host();
    c.stop().await.unwrap();
    let (s, page) = get(edge, &host, "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&page));
    // Its owner gets it back at once.
    let (_c, again) = server.client(vec![t]).await;
    assert_eq!(again[0].host(), host);
    assert_eq!(get(edge, &host, "/").await.0, StatusCode::OK);
}
