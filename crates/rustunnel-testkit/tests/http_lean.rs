//! The edge's lean HTTP/1.1 path against a local service that frames its responses in every
//! way HTTP/1.1 allows, misbehaves, and closes kept-alive connections on its own.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::scripted::{read_body, read_head, Head};

/// A local service answering by path with hand-written responses. Counts connections.
async fn scripted() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(s));
        }
    });
    (port, conns)
}

async fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(Head { text: head, method, path, content_length: cl }) = read_head(&mut s, &mut buf).await else {
            return;
        };
        if path == "/early" {
            // Answers before reading the body (and never reads it).
            let _ = s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n\r\nearly").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        let Some(body) = read_body(&mut s, &mut buf, cl).await else {
            return;
        };
        let ok = |b: &[u8]| {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()).into_bytes();
            r.extend_from_slice(b);
            r
        };
        let resp: Vec<u8> = match path.as_str() {
            "/chunked" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n".to_vec()
            }
            "/head" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/echo-head" => ok(head.as_bytes()),
            "/hash" => ok(sha256_hex(&body).as_bytes()),
            "/garbage" => b"SSH-2.0-nope\r\n\r\n".to_vec(),
            "/close10" => {
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close").await;
                return;
            }
            "/idle-close" => {
                // Kept alive as far as the headers say, but closed shortly after.
                let _ = s.write_all(&ok(b"ok")).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            "/server-close" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                return;
            }
            _ => ok(b"plain"),
        };
        if s.write_all(&resp).await.is_err() {
            return;
        }
    }
}

async fn text(resp: hyper::Response<hyper::body::Incoming>) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Sends raw bytes and reads until the edge closes (at most 5 s).
async fn raw(edge: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(edge).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn every_response_framing_passes_through_on_one_kept_alive_connection() {
    let server = TestServer::start().await;
    let (port, conns) = scripted().await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let mut conn = http1_conn(edge).await;
    for _ in 0..3 {
        let get = |path: &str| Request::get(path).header("host", &host).body(body("")).unwrap();
        let resp = conn.send_request(get("/chunked")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("content-length").is_none(), "stale length dropped");
        assert_eq!(text(resp).await, "hello world");
        let resp = conn.send_request(Request::head("/head").header("host", &host).body(body("")).unwrap()).await;
        let resp = resp.unwrap();
        assert_eq!(resp.headers()["content-length"], "100");
        assert_eq!(text(resp).await, "");
        assert_eq!(conn.send_request(get("/204")).await.unwrap().status(), 204);
        let resp = conn.send_request(get("/hints")).await.unwrap();
        assert_eq!((resp.status(), text(resp).await.as_str()), (StatusCode::OK, "ok"));
        let post = Request::post("/hash").header("host", &host).body(body(pattern(300_000))).unwrap();
        let resp = conn.send_request(post).await.unwrap();
        assert_eq!(text(resp).await, sha256_hex(&pattern(300_000)));
    }
    // All of that over one data connection to the local service: it was kept and reused.
    assert_eq!(conns.load(Ordering::Relaxed), 1);

    // The rewritten head: forwarding headers from the real peer, hop-by-hop ones gone.
    let req = "GET /echo-head HTTP/1.1\r\nHost: HOST\r\nConnection: keep-alive, x-private\r\nX-Private: 1\r\n\
               X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nTE: trailers\r\nX-Keep: yes\r\n\r\n"
        .replace("HOST", &host);
    let mut s = TcpStream::connect(edge).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out)).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&out[..n]).to_ascii_lowercase();
    assert!(out.contains("x-keep: yes") && out.contains("x-forwarded-for: 127.0.0.1"), "{out}");
    assert!(out.contains("x-forwarded-proto: http") && out.contains("x-real-ip: 127.0.0.1"), "{out}");
    for gone in ["6.6.6.6", "x-private", "te: trailers", "connection:"] {
        assert!(!out.contains(gone), "{gone} must not reach the service: {out}");
    }
}

#[tokio::test]
async fn close_delimited_early_and_broken_responses() {
    let server = TestServer::start_with(|c| c.response_timeout = Duration::from_secs(3)).await;
    let (port, _) = scripted().await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());

    // HTTP/1.0 without a length: the body runs to the close, and the visitor's connection closes
    // after it (the request after it is never served).
    let out = raw(
        edge,
        format!("GET /close10 HTTP/1.1\r\nHost: {host}\r\n\r\nGET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert!(out.ends_with("\r\n\r\nuntil close"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");

    // A response before the body was sent: passed on, then the connection closes (the rest of
    // the body must not be read as a request).
    let mut s = TcpStream::connect(edge).await.unwrap();
    s.write_all(format!("POST /early HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\nGET /").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413 ") && out.ends_with("early"), "{out}");

    // Not HTTP from the local service: 502 page, connection closed.
    let out = raw(edge, format!("GET /garbage HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 502 "), "{out}");

    // A local service that closes its side after answering, with or without saying so: every
    // request on a kept-alive visitor connection still gets its answer.
    let mut conn = http1_conn(edge).await;
    for path in ["/idle-close", "/server-close", "/idle-close", "/", "/server-close", "/"] {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let resp = conn.send_request(Request::get(path).header("host", &host).body(body("")).unwrap()).await;
        let resp = resp.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn pipelined_requests_mixing_lean_and_handed_over_ones() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let host = ready[0].host();
    // Lean, lean, then chunked (hyper from there on), then lean-shaped ones served by hyper.
    let requests = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /hash HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc\
         POST /hash HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n\
         GET / HTTP/1.1\r\nHost: nope.localhost\r\n\r\n\
         GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let out = raw(server.http_addr(), requests.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 ").count(), 4, "{out}");
    assert_eq!(out.matches("HTTP/1.1 404 ").count(), 1, "{out}");
    assert!(out.contains(&sha256_hex(b"abc")) && out.contains(&sha256_hex(b"xyz")), "{out}");
    // An HTTP/1.0 request is hyper's from the start.
    let out = raw(server.http_addr(), format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.0 200 ") || out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(out.ends_with("hello from app\n"), "{out}");
}

#[tokio::test]
async fn a_visitor_that_does_not_read_holds_up_no_one() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    // Asks for 64 MiB and reads none of it: its stream stops at its window, the rest go on.
    let mut stuck = TcpStream::connect(edge).await.unwrap();
    stuck.write_all(format!("GET /big?n={} HTTP/1.1\r\nHost: {host}\r\n\r\n", 64 << 20).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let mut conn = http1_conn(edge).await;
    for _ in 0..50 {
        let resp = conn.send_request(Request::get("/").header("host", &host).body(body("")).unwrap()).await.unwrap();
        assert_eq!(text(resp).await, "hello from app\n");
    }
    let resp = conn.send_request(Request::get("/big?n=3000000").header("host", &host).body(body("")).unwrap()).await;
    let got = resp.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(3_000_000)));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The stuck visitor still gets its bytes once it reads.
    let mut first = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < first.len() {
        n += tokio::time::timeout(Duration::from_secs(5), stuck.read(&mut first[n..])).await.unwrap().unwrap();
    }
}

/// Slow reading and slow POST end in timeouts. With a 1 s response timeout, a
/// visitor that stops reading a 64 MiB answer is cut off once it has accepted nothing for 1 s
/// (it does not hold its stream, upstream and permit forever), and a visitor that trickles a
/// body the local service waits for gets a 504 and a closed connection.
#[tokio::test]
async fn slow_reading_and_slow_posting_visitors_are_cut_off() {
    let server = TestServer::start_with(|c| c.response_timeout = Duration::from_secs(1)).await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());

    let mut stuck = TcpStream::connect(edge).await.unwrap();
    stuck.write_all(format!("GET /big?n={} HTTP/1.1\r\nHost: {host}\r\n\r\n", 64 << 20).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = std::time::Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.read(&mut buf)).await.expect("the edge closed it") {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 64 << 20, "the whole answer was kept for a visitor that did not read");
    eprintln!(
        "a visitor that stopped reading got {got} bytes, then the end ({:?} after it read again)",
        started.elapsed()
    );

    // A body of 100 bytes, one byte every 100 ms: the local service waits for all of it.
    let mut slow = TcpStream::connect(edge).await.unwrap();
    slow.write_all(format!("POST /hash HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut r, mut w) = slow.split();
    let trickle = async {
        for _ in 0..100 {
            if w.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut answer = Vec::new();
    let reader = tokio::time::timeout(Duration::from_secs(8), r.read_to_end(&mut answer));
    tokio::select! {
        res = reader => { let _ = res.expect("the edge closed the connection"); }
        _ = trickle => panic!("the whole slow body was taken"),
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// The same bound on connections hyper serves (HTTP/1.0 here; chunked and upgraded requests
/// and HTTP/2 go the same way): a visitor that stops reading is cut off after the response
/// timeout instead of holding its connection, the upstream and a permit.
#[tokio::test]
async fn slow_readers_on_connections_served_by_hyper_are_cut_off() {
    // Long enough for a loaded machine's local service to start answering in time.
    let server = TestServer::start_with(|c| c.response_timeout = Duration::from_secs(3)).await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let tunnel = server.handle.shared().tunnel(&ready[0].tunnel_id).unwrap();
    let permits = tunnel.concurrency.available_permits();
    for request in [
        format!("GET /big?n={} HTTP/1.0\r\nHost: {host}\r\n\r\n", 64 << 20),
        format!("POST /big?n={} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 64 << 20),
    ] {
        let mut stuck = TcpStream::connect(edge).await.unwrap();
        stuck.write_all(request.as_bytes()).await.unwrap();
        // Not reading: once the socket buffers are full, the edge gives up on this visitor a
        // response timeout later, and the request's permit comes back. (Waited for, not
        // slept: on a loaded machine the buffers take a while to fill.)
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tunnel.concurrency.available_permits() == permits {
            assert!(std::time::Instant::now() < deadline, "{request:?}: never admitted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while tunnel.concurrency.available_permits() < permits {
            assert!(std::time::Instant::now() < deadline, "{request:?}: the edge kept a visitor that did not read");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(10), stuck.read(&mut buf)).await;
            match read.unwrap_or_else(|_| panic!("{request:?}: still open after {got} bytes")) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got > 0 && got < 64 << 20, "{request:?}: {got} bytes");
    }
    // The edge still serves.
    let out = raw(edge, format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"), "{out}");

    // HTTP/2: a stream whose window the visitor never opens (nothing of that response is
    // read) while the connection stays busy with other streams. Nothing stalls a write; the
    // stream's own bound lets go of the upstream and the permit, and resets the stream.
    let https = server.https_addr();
    let name = host.split(':').next().unwrap();
    let mut h2 = h2_conn(https, name).await;
    let big = Request::get(format!("https://{name}:{}/big?n={}", https.port(), 64 << 20)).body(body("")).unwrap();
    let stuck = h2.send_request(big).await.unwrap();
    assert_eq!(stuck.status(), StatusCode::OK);
    assert_eq!(tunnel.concurrency.available_permits(), permits - 1, "the stuck stream holds a permit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tunnel.concurrency.available_permits() < permits {
        assert!(std::time::Instant::now() < deadline, "the stuck stream kept its permit");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let small = Request::get(format!("https://{name}:{}/", https.port())).body(body("")).unwrap();
        let resp = h2.send_request(small).await.unwrap();
        assert_eq!(text(resp).await, "hello from app\n", "other streams of the connection go on");
    }
    let mut got = 0usize;
    let mut body = stuck.into_body();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("the stream ended") {
            Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
            other => break other,
        }
    };
    assert!(matches!(end, Some(Err(_))), "reset, not ended as if complete: {end:?}");
    assert!(got < 64 << 20, "{got}");
}

#[tokio::test]
async fn a_client_without_the_multiplexer_is_served_over_data_connections() {
    let server = TestServer::start().await;
    let (port, conns) = scripted().await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, port)]);
    opts.mux = false;
    let (_c, ready) = spawn_ready(opts).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let mut conn = http1_conn(edge).await;
    for _ in 0..5 {
        let resp = conn.send_request(Request::get("/chunked").header("host", &host).body(body("")).unwrap()).await;
        assert_eq!(text(resp.unwrap()).await, "hello world");
        let post = Request::post("/hash").header("host", &host).body(body(pattern(200_000))).unwrap();
        assert_eq!(text(conn.send_request(post).await.unwrap()).await, sha256_hex(&pattern(200_000)));
    }
    assert_eq!(conns.load(Ordering::Relaxed), 1, "one kept-alive data connection served them all");
    let out = raw(edge, format!("GET /close10 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert!(out.ends_with("until close"), "{out}");
}

/// `OPTIONS *` (asterisk-form) reaches the local service as it came; a target that is neither
/// a path nor `*` gets a 400 saying so (it was read as an authority and blamed on Host).
#[tokio::test]
async fn asterisk_form_options_reaches_the_local_service() {
    let server = TestServer::start().await;
    let app = http_app("star").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let out = raw(edge, format!("OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("OPTIONS * at star\n"), "{out}");
    for target in ["foo", "example.com:80"] {
        let out =
            raw(edge, format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400") && out.contains("must be a path"), "{target}: {out}");
    }
    // `*` with another method is no request target at all.
    let out = raw(edge, format!("GET * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400") && out.contains("must be a path"), "{out}");
}

/// The edge's own pages on the lean path carry a Date, as hyper's and the local service's
/// answers do (RFC 9110 6.6.1).
#[tokio::test]
async fn edge_pages_carry_a_date() {
    let server = TestServer::start().await;
    let out = raw(server.http_addr(), b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 404") && out.to_ascii_lowercase().contains("\r\ndate: "), "{out}");
}
