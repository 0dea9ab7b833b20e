//! The control-plane and edge attacks listed in docs/security-tests.md, as tests: what an attacker sends, and the
//! behaviour we promise (bounded, explicit, never a panic, other tunnels unaffected).
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use rustunnel_proto::{ClientMsg, ErrorCode, Protocol, ServerMsg, PROTOCOL_VERSION};
use rustunnel_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn quick_server() -> TestServer {
    TestServer::start_with(|c| {
        c.handshake_timeout = Duration::from_millis(400);
        c.header_timeout = Duration::from_millis(400);
        c.allow_anonymous = false;
    })
    .await
}

/// Reads until EOF or error; returns how long that took.
async fn time_to_close(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after 5 s"),
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// TLS to a control port (or a relay in front of one), as the client's config does it.
async fn control_tls(addr: std::net::SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tls = rustunnel_client::tls::client_config(
        &rustunnel_client::TlsOptions { insecure: true, ca: None },
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn control_ws(server: &TestServer) -> Ws {
    let s = control_tls(server.handle.control_addr()).await;
    let url = format!("wss://localhost:{}/v1/control", server.handle.control_addr().port());
    tokio_tungstenite::client_async(url, s).await.unwrap().0
}

async fn first_server_msg(ws: &mut Ws) -> ServerMsg {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return ServerMsg::decode(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

async fn hello(ws: &mut Ws, version: u32, token: &str) -> ServerMsg {
    let msg =
        ClientMsg::Hello { version, token: token.into(), agent: "attacker".into(), plain_data: false, mux: false };
    ws.send(Message::text(msg.encode())).await.unwrap();
    first_server_msg(ws).await
}

#[tokio::test]
async fn silent_client_is_closed_at_the_handshake_deadline() {
    let server = quick_server().await;
    // Silent before TLS.
    let mut s = TcpStream::connect(server.handle.control_addr()).await.unwrap();
    let t = time_to_close(&mut s).await;
    assert!(t < Duration::from_secs(2), "closed after {t:?}");
    // Silent after the WebSocket upgrade: no hello.
    let mut ws = control_ws(&server).await;
    let start = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn drip_feeding_headers_is_cut_off() {
    let server = quick_server().await;
    let mut s = control_tls(server.handle.control_addr()).await;
    let start = Instant::now();
    let mut closed = false;
    for b in b"GET /v1/control HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !closed {
        time_to_close(&mut s).await;
    }
    assert!(start.elapsed() < Duration::from_secs(4), "drip lasted {:?}", start.elapsed());
}

#[tokio::test]
async fn garbage_and_wrong_protocols_are_closed_quietly() {
    let server = quick_server().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let control = server.handle.control_addr();
    let edge = server.http_addr();
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(control).await.unwrap();
            let junk: Vec<u8> = match i % 3 {
                0 => (0..4096u32).map(|x| (x as u8).wrapping_mul(31).wrapping_add(i)).collect(),
                1 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                _ => vec![0xff; 65536],
            };
            let _ = s.write_all(&junk).await;
            time_to_close(&mut s).await
        }));
    }
    // Meanwhile the tunnel keeps serving.
    for _ in 0..10 {
        assert_eq!(get(edge, &ready[0].host(), "/").await.0, StatusCode::OK);
    }
    for t in tasks {
        assert!(t.await.unwrap() < Duration::from_secs(3));
    }
}

/// Serial request times through one kept-alive connection to the edge, sorted.
async fn request_times(edge: std::net::SocketAddr, host: &str, n: usize) -> Vec<Duration> {
    let mut conn = http1_conn(edge).await;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::get("/").header("host", host).body(body("")).unwrap();
        conn.ready().await.unwrap();
        let started = Instant::now();
        let resp = conn.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times
}

/// Garbage does not change other tunnels' latency. A tunnel's serial request
/// times are measured quiet, then while eight attackers pour random bytes, plain HTTP and
/// TLS-looking junk into the control port (a new connection every 2 ms each, about 3 000 a
/// second in all): the median stays within a small margin (the flood shares the machine's
/// two cores with the test, so the bound is loose; what must not happen is a stall).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_control_port_leaves_other_tunnels_latency_alone() {
    let server = quick_server().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let (edge, host, control) = (server.http_addr(), ready[0].host(), server.handle.control_addr());
    request_times(edge, &host, 20).await;
    let quiet = request_times(edge, &host, 200).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..8u8 {
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(control).await else { continue };
                let junk: Vec<u8> = match (i as u32 + rounds) % 3 {
                    0 => (0..4096u32).map(|x| (x as u8).wrapping_mul(31).wrapping_add(i)).collect(),
                    1 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                    _ => [&[0x16u8, 3, 1, 0, 40][..], &[0xab; 40]].concat(),
                };
                let _ = s.write_all(&junk).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut [0u8; 64])).await;
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            rounds
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let noisy = request_times(edge, &host, 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut closed = 0;
    for f in flood {
        closed += f.await.unwrap();
    }
    let (q50, n50) = (quiet[quiet.len() / 2], noisy[noisy.len() / 2]);
    let (q99, n99) = (quiet[quiet.len() * 99 / 100], noisy[noisy.len() * 99 / 100]);
    eprintln!("median {q50:?} quiet, {n50:?} during {closed} garbage connections; p99 {q99:?} and {n99:?}");
    assert!(closed > 50, "the flood ran ({closed} connections)");
    assert!(n50 <= q50 * 2 + Duration::from_millis(5), "median {q50:?} -> {n50:?}");
    assert!(noisy[noisy.len() - 1] < Duration::from_secs(1), "a request stalled: {:?}", noisy[noisy.len() - 1]);
}

#[tokio::test]
async fn bad_tokens_all_get_the_same_answer() {
    let server = quick_server().await;
    let huge = "t".repeat(1 << 20);
    let good = server.handle.admin_token().to_string();
    let trailing = format!("{good}\n");
    let mut answers = Vec::new();
    for token in ["", "wrong", trailing.as_str()] {
        let mut ws = control_ws(&server).await;
        answers.push(hello(&mut ws, PROTOCOL_VERSION, token).await);
    }
    // A 1 MB token does not even fit in a control frame: refused unread, with the same answer.
    let mut ws = control_ws(&server).await;
    answers.push(hello(&mut ws, PROTOCOL_VERSION, &huge).await);
    // ... and the connection then closes with code 1009 (message too big).
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    assert!(matches!(close, Some(Ok(Message::Close(Some(ref f)))) if f.code == CloseCode::Size), "{close:?}");
    // No token field at all.
    let mut ws = control_ws(&server).await;
    ws.send(Message::text(format!(r#"{{"type":"hello","version":{PROTOCOL_VERSION},"agent":"attacker"}}"#)))
        .await
        .unwrap();
    answers.push(first_server_msg(&mut ws).await);
    for a in &answers {
        assert_eq!(a, &answers[0]);
        assert!(matches!(a, ServerMsg::Rejected { code: ErrorCode::Unauthorized, .. }), "{a:?}");
    }
    let mut ws = control_ws(&server).await;
    assert!(matches!(hello(&mut ws, PROTOCOL_VERSION, &good).await, ServerMsg::Welcome { .. }));
}

/// A hello with a field of the wrong type, or one missing, is named as a malformed hello.
#[tokio::test]
async fn a_malformed_hello_is_called_one() {
    let server = quick_server().await;
    for bad in [
        r#"{"type":"hello","version":"1","token":"x"}"#,
        r#"{"type":"hello","version":-1,"token":"x"}"#,
        r#"{"type":"hello","token":"x"}"#,
    ] {
        let mut ws = control_ws(&server).await;
        ws.send(Message::text(bad)).await.unwrap();
        let answer = first_server_msg(&mut ws).await;
        let ServerMsg::Rejected { code: ErrorCode::BadRequest, message, .. } = answer else {
            panic!("{bad}: {answer:?}")
        };
        assert!(message.starts_with("malformed hello: "), "{bad}: {message}");
    }
    let mut ws = control_ws(&server).await;
    ws.send(Message::text(r#"{"type":"open_tunnel"}"#)).await.unwrap();
    let ServerMsg::Rejected { message, .. } = first_server_msg(&mut ws).await else { panic!() };
    assert_eq!(message, "expected a hello message first");
}

#[tokio::test]
async fn repeated_failures_are_rate_limited_per_ip() {
    let server = quick_server().await;
    let mut last = None;
    for _ in 0..12 {
        let mut ws = control_ws(&server).await;
        last = Some(hello(&mut ws, PROTOCOL_VERSION, "wrong").await);
    }
    // The refusal says when the block ends (the rest of the one-minute window).
    let Some(ServerMsg::Rejected { code: ErrorCode::RateLimited, retry_after_ms: Some(ms), .. }) = last else {
        panic!("{last:?}")
    };
    assert!((50_000..=60_000).contains(&ms), "{ms}");
}

#[tokio::test]
async fn version_mismatch_says_upgrade() {
    let server = quick_server().await;
    let mut ws = control_ws(&server).await;
    let answer = hello(&mut ws, PROTOCOL_VERSION + 1, server.handle.admin_token()).await;
    let ServerMsg::Rejected { code, message, .. } = answer else { panic!("{answer:?}") };
    assert_eq!(code, ErrorCode::VersionMismatch);
    assert!(message.contains("upgrade rustunnel"), "{message}");
}

/// A bare tunnel request named `t{i}` for `protocol`.
fn bare_spec(i: usize, protocol: Protocol) -> rustunnel_proto::TunnelSpec {
    rustunnel_proto::TunnelSpec::new(format!("t{i}"), protocol, "localhost:1")
}

/// Sends `open_tunnel` (request id `i`) on an authenticated session; the refusal's code and
/// message.
async fn refused_open(ws: &mut Ws, i: usize, spec: rustunnel_proto::TunnelSpec) -> (ErrorCode, String) {
    ws.send(Message::text(ClientMsg::OpenTunnel { req_id: i as u64, spec }.encode())).await.unwrap();
    let answer = loop {
        match first_server_msg(ws).await {
            ServerMsg::Ping { .. } | ServerMsg::NeedDataConns { .. } => continue,
            m => break m,
        }
    };
    let ServerMsg::TunnelRejected { code, message, .. } = answer else { panic!("not refused: {answer:?}") };
    (code, message)
}

/// An endpoint of the other kind (a port for http, a subdomain for tcp/udp) is refused by the
/// server too, not silently ignored.
#[tokio::test]
async fn endpoints_of_the_other_kind_are_refused() {
    let server = quick_server().await;
    let mut ws = control_ws(&server).await;
    assert!(matches!(hello(&mut ws, PROTOCOL_VERSION, server.handle.admin_token()).await, ServerMsg::Welcome { .. }));
    let cases = [
        (Protocol::Http, None, Some(21_500), "remote_port applies to tcp and udp tunnels only"),
        (Protocol::Tcp, Some("web"), None, "subdomain applies to http tunnels only"),
        (Protocol::Udp, Some("web"), None, "subdomain applies to http tunnels only"),
    ];
    for (i, (protocol, subdomain, remote_port, why)) in cases.into_iter().enumerate() {
        let spec = rustunnel_proto::TunnelSpec {
            subdomain: subdomain.map(String::from),
            remote_port,
            ..bare_spec(i, protocol)
        };
        assert_eq!(refused_open(&mut ws, i, spec).await, (ErrorCode::BadRequest, why.to_string()));
    }
}

#[tokio::test]
async fn basic_auth_is_checked_by_the_server_too() {
    // A client that skips its own checks: the server applies the same rules.
    let server = quick_server().await;
    let mut ws = control_ws(&server).await;
    assert!(matches!(hello(&mut ws, PROTOCOL_VERSION, server.handle.admin_token()).await, ServerMsg::Welcome { .. }));
    let cases = [
        (Protocol::Tcp, "ana:long enough password", "http tunnels only"),
        (Protocol::Http, "ana:short", "8-128"),
        (Protocol::Http, "no colon at all", "user:password"),
        (Protocol::Http, ":nobody at all", "user name"),
    ];
    for (i, (protocol, creds, why)) in cases.into_iter().enumerate() {
        let spec = rustunnel_proto::TunnelSpec {
            basic_auth: Some(serde_json::from_value(serde_json::json!(creds)).unwrap()),
            ..bare_spec(i, protocol)
        };
        let (code, message) = refused_open(&mut ws, i, spec).await;
        assert_eq!(code, ErrorCode::BadRequest, "{creds}");
        assert!(message.contains(why), "{creds}: {message}");
    }
}

#[tokio::test]
async fn oversized_and_unknown_messages_after_auth() {
    let server = quick_server().await;
    let mut ws = control_ws(&server).await;
    assert!(matches!(hello(&mut ws, PROTOCOL_VERSION, server.handle.admin_token()).await, ServerMsg::Welcome { .. }));
    // Unknown message type: an explicit error, session continues.
    ws.send(Message::text(r#"{"type":"teleport","to":"mars"}"#)).await.unwrap();
    let reply = loop {
        match first_server_msg(&mut ws).await {
            ServerMsg::Ping { .. } | ServerMsg::RequestLog { .. } => continue,
            m => break m,
        }
    };
    assert!(
        matches!(reply, ServerMsg::Error { code: ErrorCode::BadRequest, ref message } if message.contains("upgrade")),
        "{reply:?}"
    );
    ws.send(Message::text(ClientMsg::Ping { nonce: 7 }.encode())).await.unwrap();
    loop {
        match first_server_msg(&mut ws).await {
            ServerMsg::Pong { nonce: 7 } => break,
            _ => continue,
        }
    }
    // An oversized frame closes this connection only, with close code 1009 (message too big).
    let _ = ws.send(Message::text("x".repeat(1 << 20))).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    match end {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
            assert!(frame.reason.contains("bytes"), "{frame:?}");
        }
        other => panic!("expected a close frame with code 1009, got {other:?}"),
    }
    assert!(
        server.handle.shared().session_count() == 0 || {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.handle.shared().session_count() == 0
        }
    );
}

#[tokio::test]
async fn data_connections_need_the_session_key() {
    let server = quick_server().await;
    let tls = rustunnel_client::tls::client_config(
        &rustunnel_client::TlsOptions { insecure: true, ca: None },
        &[b"http/1.1"],
    )
    .unwrap();
    let dialer =
        rustunnel_client::net::Dialer { host: "localhost".into(), port: server.handle.control_addr().port(), tls };
    // Unknown session.
    assert!(rustunnel_client::forward::open_data_conn(&dialer, "no-such-session", "k", false).await.is_err());
    // A real session with a wrong key.
    let mut ws = control_ws(&server).await;
    let ServerMsg::Welcome { session_id, data_key, .. } =
        hello(&mut ws, PROTOCOL_VERSION, server.handle.admin_token()).await
    else {
        panic!()
    };
    assert!(rustunnel_client::forward::open_data_conn(&dialer, &session_id, "0000", false).await.is_err());
    assert!(rustunnel_client::forward::open_data_conn(&dialer, &session_id, &data_key, false).await.is_ok());
    // Plain data connections were neither asked for nor allowed: refused even with the key.
    assert!(rustunnel_client::forward::open_data_conn(&dialer, &session_id, &data_key, true).await.is_err());
}

#[tokio::test]
async fn pending_connections_are_capped_per_ip() {
    let server = quick_server().await;
    let control = server.handle.control_addr();
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(control).await.unwrap());
    }
    // Give the accept loop time to register all 64.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(control).await.unwrap();
    let t = time_to_close(&mut extra).await;
    assert!(t < Duration::from_millis(300), "over-cap connection closed at once, took {t:?}");
    drop(held);
}

/// A replayed handshake is refused. Everything a real control client sent for an
/// authenticated session (TLS handshake, WebSocket upgrade, hello with the admin token) is
/// captured on the wire and sent again on a new connection: the server's new handshake keys
/// make the old Finished and records worthless, so the connection is closed at once, long
/// before the handshake deadline (the server's default here) would end an idle one, and a
/// session would have stayed open.
#[tokio::test]
async fn a_captured_control_session_replayed_is_refused() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let control = server.handle.control_addr();
    let tap = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = l.local_addr().unwrap();
    let tap2 = tap.clone();
    tokio::spawn(async move {
        let (mut front, _) = l.accept().await.unwrap();
        let mut back = TcpStream::connect(control).await.unwrap();
        let (mut fr, mut fw) = front.split();
        let (mut br, mut bw) = back.split();
        let up = async {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = fr.read(&mut buf).await {
                if n == 0 || bw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                tap2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        };
        let _ = tokio::join!(up, tokio::io::copy(&mut br, &mut fw));
    });
    // The real session, through the tap.
    let s = control_tls(relay_addr).await;
    let url = format!("wss://localhost:{}/v1/control", control.port());
    let mut ws = tokio_tungstenite::client_async(url, s).await.unwrap().0;
    let token = server.handle.admin_token().to_string();
    assert!(matches!(hello(&mut ws, PROTOCOL_VERSION, &token).await, ServerMsg::Welcome { .. }));
    let captured = tap.lock().unwrap().clone();
    assert!(captured.len() > 500, "handshake, upgrade and hello captured: {} bytes", captured.len());
    // The replay.
    let mut replay = TcpStream::connect(control).await.unwrap();
    replay.write_all(&captured).await.unwrap();
    let t = time_to_close(&mut replay).await;
    assert!(t < Duration::from_secs(2), "the replayed session was kept open for {t:?}");
    // The real session is still up.
    ws.send(Message::Ping(b"still there?".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) if &p[..] == b"still there?" => break,
            Some(Ok(_)) => continue,
            other => panic!("the real session ended: {other:?}"),
        }
    }
}

/// A huge length prefix is refused before anything is allocated. A WebSocket
/// frame header on the control channel declaring 4 GiB - 1 (64-bit length) is refused from its
/// header alone: the connection closes at once, without waiting for the body, and the server
/// goes on serving.
#[tokio::test]
async fn a_websocket_frame_declaring_4_gib_is_refused_from_its_header() {
    let server = TestServer::start_with(|c| c.allow_anonymous = false).await;
    let mut s = control_tls(server.handle.control_addr()).await;
    s.write_all(
        b"GET /v1/control HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // FIN + text, masked, 64-bit length 0xffff_ffff, a mask key, and a few bytes of body.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&0xffff_ffffu64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(b"{\"type\":\"hello\"");
    s.write_all(&frame).await.unwrap();
    let t = time_to_close(&mut s).await;
    assert!(t < Duration::from_secs(2), "closed after {t:?}");
    let mut ws = control_ws(&server).await;
    let token = server.handle.admin_token().to_string();
    assert!(matches!(hello(&mut ws, PROTOCOL_VERSION, &token).await, ServerMsg::Welcome { .. }));
}

async fn raw_edge(server: &TestServer, request: &[u8]) -> String {
    let mut s = TcpStream::connect(server.http_addr()).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` and reads everything until the edge closes the connection (within 5 s).
async fn until_closed(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, request: &[u8]) -> String {
    s.write_all(request).await.unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut s, Duration::from_secs(5)).await).into_owned()
}

/// Everything the edge sends until it closes the connection (EOF or reset); panics when a
/// read waits longer than `quiet` (the edge kept the connection open).
async fn read_until_closed(r: &mut (impl tokio::io::AsyncRead + Unpin), quiet: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(quiet, r.read(&mut buf)).await.expect("the edge closes the connection") {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A TLS connection to the HTTPS edge that agreed on `alpn`.
async fn https_edge(server: &TestServer, sni: &str, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tls = rustunnel_client::tls::client_config(&rustunnel_client::TlsOptions { insecure: true, ca: None }, &[alpn])
        .unwrap();
    let tcp = TcpStream::connect(server.https_addr()).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
    s
}

/// A TLS connection to the HTTPS edge speaking HTTP/1.1 (ALPN).
async fn https_edge_h1(server: &TestServer, sni: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    https_edge(server, sni, b"http/1.1").await
}

/// A TLS connection to the HTTPS edge speaking HTTP/2 (ALPN).
async fn https_edge_h2(server: &TestServer, sni: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    https_edge(server, sni, b"h2").await
}

/// Slowloris, on a connection the edge has handed over to hyper (an HTTP/1.0
/// keep-alive request goes that way): the next request head, sent a piece at a time and
/// never finished, is cut off by hyper's header timeout (the server's 400 ms here).
#[tokio::test]
async fn an_unfinished_head_on_a_connection_served_by_hyper_is_cut_off() {
    let server = quick_server().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let host = ready[0].host();
    let mut s = TcpStream::connect(server.http_addr()).await.unwrap();
    // Two whole requests: the connection is kept alive between them.
    for _ in 0..2 {
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"hello from app\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed after {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_lowercase();
        assert!(head.starts_with("http/1.0 200") && head.contains("connection: keep-alive"), "{head}");
    }
    // The next head never ends.
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n").as_bytes()).await.unwrap();
    let start = Instant::now();
    for piece in [&b"X-Slow: a"[..], b"aaaa", b"aaaa"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(piece).await.is_err() {
            break;
        }
    }
    let t = start.elapsed() + time_to_close(&mut s).await;
    // Open while the head trickled in (not dropped at once), closed at the header timeout.
    assert!(t >= Duration::from_millis(300), "closed after {t:?}, before the header timeout");
    assert!(t < Duration::from_secs(2), "an unfinished head held the connection for {t:?}");
}

#[tokio::test]
async fn edge_refuses_smuggling_and_oversized_headers() {
    let server = quick_server().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let host = ready[0].host();
    let sub = host.split('.').next().unwrap().to_string();
    let forwarded =
        || server.handle.shared().route(&sub).unwrap().stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    let smuggle = |host: &str, first: &str, second: &str| {
        format!(
            "POST /hash HTTP/1.1\r\nHost: {host}\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: {host}\r\n\r\n"
        )
    };
    // Both Content-Length and Transfer-Encoding: the edge answers 400 itself and closes the
    // connection, so the request never reaches the tunnel and the trailing request is never
    // served -- whatever the header order, case, or host, over HTTP and HTTPS.
    let refused = |out: &str| {
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "exactly one response, no smuggled one: {out}");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(out.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{out}");
        assert!(out.contains("both Content-Length and Transfer-Encoding"), "{out}");
    };
    let cl_te = smuggle(&host, "Content-Length: 4", "Transfer-Encoding: chunked");
    refused(&until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), cl_te.as_bytes()).await);
    let te_cl = smuggle(&host, "transfer-encoding: chunked", "CONTENT-LENGTH: 4");
    refused(&until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), te_cl.as_bytes()).await);
    let unknown = smuggle("nope.localhost", "Content-Length: 4", "Transfer-Encoding: chunked");
    refused(&until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), unknown.as_bytes()).await);
    let sni = host.split(':').next().unwrap();
    refused(&until_closed(https_edge_h1(&server, sni).await, te_cl.as_bytes()).await);
    // Second on a kept-alive connection: the first request is served, the second refused.
    let mut s = TcpStream::connect(server.http_addr()).await.unwrap();
    let first = format!("POST /hash HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\nhi");
    s.write_all(first.as_bytes()).await.unwrap();
    let out = until_closed(s, cl_te.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 ").count(), 1, "{out}");
    assert!(out.contains(&sha256_hex(b"hi")), "{out}");
    refused(&out[out.find("HTTP/1.1 400 ").expect("a 400")..]);
    assert_eq!(forwarded(), 1, "only the well-framed request reached the tunnel");

    // Transfer-Encoding other than exactly one `chunked`: 400 and close, nothing forwarded.
    for te in [
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: ",
    ] {
        let req = format!(
            "POST /hash HTTP/1.1\r\nHost: {host}\r\n{te}\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: {host}\r\n\r\n"
        );
        let out = until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), req.as_bytes()).await;
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{te:?}: {out}");
        assert!(out.starts_with("HTTP/1.1 400 "), "{te:?}: {out}");
    }
    assert_eq!(forwarded(), 1, "no request with a doubtful Transfer-Encoding reached the tunnel");
    let chunked = format!(
        "POST /hash HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    );
    let out = until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), chunked.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200 ") && out.contains(&sha256_hex(b"hi")), "{out}");

    let bad_chunk =
        format!("POST /hash HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    // 400, and the connection closes: the rest of that body must never be read as a request.
    let out = until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), bad_chunk.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "the visitor's fault, not the tunnel's: {out}");
    assert!(out.contains("request body is malformed"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    // Exactly one Host (RFC 9112 3.2): two, or an empty one, is a 400, never routed.
    for hosts in [format!("Host: {host}\r\nHost: evil.example\r\n"), "Host: \r\n".to_string()] {
        let out = raw_edge(&server, format!("GET / HTTP/1.1\r\n{hosts}\r\n").as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{hosts:?}: {out}");
        assert!(out.contains("Host header"), "{out}");
    }
    // Over the limits (64 KiB of head, 100 fields), on the lean path and handed over to hyper
    // (HTTP/1.0), whatever the way in: the edge's own 431 page, then the connection closes.
    let big = format!("X-Big: {}\r\n", "a".repeat(70 * 1000));
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    for version in ["1.1", "1.0"] {
        for (what, extra) in [("big", &big), ("many", &many)] {
            let req = format!("GET / HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n");
            let out = raw_edge(&server, req.as_bytes()).await;
            assert!(out.starts_with("HTTP/1.1 431"), "{what} {version}: {}", &out[..out.len().min(200)]);
            assert!(out.contains("at most 100 header fields and 64 KiB"), "{what} {version}: {out}");
        }
    }
    // A request line over the limit is a target too long (414), not a header problem.
    let req = format!("GET /{} HTTP/1.1\r\nHost: {host}\r\n\r\n", "a".repeat(100 * 1000));
    let out = raw_edge(&server, req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414"), "{}", &out[..out.len().min(200)]);
    // Just under both limits: served.
    let fits: String = (0..95).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(600))).collect();
    let out =
        raw_edge(&server, format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{fits}\r\n").as_bytes())
            .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{}", &out[..out.len().min(200)]);
    // Slowloris: headers never finish -> closed at the header deadline.
    let mut s = TcpStream::connect(server.http_addr()).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n").as_bytes()).await.unwrap();
    assert!(time_to_close(&mut s).await < Duration::from_secs(3));
}

#[tokio::test]
async fn edge_serves_well_framed_pipelined_requests_on_one_connection() {
    let server = quick_server().await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, app.port())]).await;
    let host = ready[0].host();
    // A Content-Length body that looks like a smuggling request head is only a body.
    let text = "POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let requests = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /hash HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n\
         POST /hash HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{text}\
         POST /hash HTTP/1.1\r\nHost: {host}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    for out in [
        until_closed(TcpStream::connect(server.http_addr()).await.unwrap(), requests.as_bytes()).await,
        until_closed(https_edge_h1(&server, host.split(':').next().unwrap()).await, requests.as_bytes()).await,
    ] {
        assert_eq!(out.matches("HTTP/1.1 200 ").count(), 5, "{out}");
        assert!(!out.contains("HTTP/1.1 400"), "{out}");
        for body in [&b"hello world"[..], text.as_bytes(), b"abc"] {
            assert!(out.contains(&sha256_hex(body)), "{out}");
        }
    }
}

#[tokio::test]
async fn per_tunnel_concurrency_cap_answers_503_for_that_tunnel_only() {
    let server = TestServer::start_with(|c| c.max_requests_per_tunnel = 2).await;
    let (a, b) = (http_app("busy").await, http_app("calm").await);
    let (_c, ready) =
        server.client(vec![tunnel("busy", Protocol::Http, a.port()), tunnel("calm", Protocol::Http, b.port())]).await;
    let busy = ready.iter().find(|r| r.name == "busy").unwrap().host();
    let calm = ready.iter().find(|r| r.name == "calm").unwrap().host();
    let edge = server.http_addr();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let busy = busy.clone();
            tokio::spawn(async move { get(edge, &busy, "/slow?ms=1500").await.0 })
        })
        .collect();
    // Wait until both slow requests hold their permits.
    let t = server.handle.shared().route(busy.split('.').next().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.concurrency.available_permits() > 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = get(edge, &busy, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("busy"));
    assert_eq!(get(edge, &calm, "/").await.0, StatusCode::OK, "other tunnels are unaffected");
    for s in slow {
        assert_eq!(s.await.unwrap(), StatusCode::OK);
    }
}

/// A server (attack deadlines) with one HTTP tunnel on `sub` to a sample app; keep all three.
async fn served_subdomain(sub: &str) -> (TestServer, Service, rustunnel_client::ClientHandle) {
    let server = quick_server().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some(sub.into());
    let (c, _ready) = server.client(vec![t]).await;
    (server, app, c)
}

#[tokio::test]
async fn http2_rapid_reset_is_bounded_and_other_visitors_are_unaffected() {
    let (server, _app, _c) = served_subdomain("reset").await;
    let edge = server.https_addr();
    let s = https_edge_h2(&server, "reset.localhost").await;
    let (h2, conn) = h2::client::handshake(s).await.unwrap();
    let driver = tokio::spawn(conn);
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..5000 {
        let req = http::Request::get(format!("https://reset.localhost:{}/slow?ms=200", edge.port())).body(()).unwrap();
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(2), h2.clone().ready()).await else { break };
        let Ok(mut ready) = ready else { break };
        let Ok((_resp, mut stream)) = ready.send_request(req, true) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // The server cuts the abusive connection off (GOAWAY, then close) quickly, and stays
    // available to everyone else.
    let end = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(matches!(end, Ok(Ok(Err(_)))), "the server should have closed the connection: {end:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let mut fresh = h2_conn(edge, "reset.localhost").await;
    let req = http::Request::get(format!("https://reset.localhost:{}/", edge.port())).body(body("")).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), fresh.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    eprintln!("rapid reset: {sent} resets queued by the client before the server closed the connection");
}

/// Writes the HTTP/2 preface, `first`, then `count` copies of `frame` as fast as the
/// connection takes them, while reading what the server answers; returns how many PING and
/// SETTINGS ACKs came back before the server closed the connection, how long that took, and
/// whether every byte was written before the close.
async fn h2_flood<S>(s: S, first: &[u8], frame: &[u8], count: usize) -> (usize, Duration, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(s);
    let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    all.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    all.extend_from_slice(first);
    for _ in 0..count {
        all.extend_from_slice(frame);
    }
    let started = Instant::now();
    // The server may stop reading and close: a failed write is expected.
    let writer = tokio::spawn(async move { w.write_all(&all).await.is_ok() });
    let got = read_until_closed(&mut r, Duration::from_secs(20)).await;
    let took = started.elapsed();
    let wrote_all = writer.await.unwrap_or(false);
    // Count ACKed PING / SETTINGS frames in what came back.
    let (mut acks, mut at) = (0, 0);
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if matches!(got[at + 3], 4 | 6) && got[at + 4] & 1 == 1 {
            acks += 1;
        }
        at += 9 + len;
    }
    (acks, took, wrote_all)
}

#[tokio::test]
async fn http2_ping_and_settings_floods_are_cut_off_on_both_edges() {
    let (server, _app, _c) = served_subdomain("flood").await;
    let edge = server.https_addr();
    let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    const N: usize = 50_000;
    for (what, frame) in [("PING", &ping[..]), ("SETTINGS", &settings[..])] {
        // HTTPS with ALPN h2.
        let s = https_edge_h2(&server, "flood.localhost").await;
        let (acks, took, _) = h2_flood(s, &[], frame, N).await;
        eprintln!("{what} flood over TLS: {acks} answered in {took:?} before the close");
        assert!(acks < N / 5, "{what} over TLS: {acks} of {N} answered");
        // Plain HTTP/2 with prior knowledge on the HTTP edge.
        let tcp = TcpStream::connect(server.http_addr()).await.unwrap();
        let (acks, took, _) = h2_flood(tcp, &[], frame, N).await;
        eprintln!("{what} flood over h2c: {acks} answered in {took:?} before the close");
        assert!(acks < N / 5, "{what} over h2c: {acks} of {N} answered");
    }
    // Other visitors, and a new connection of the same one, are served.
    let mut fresh = h2_conn(edge, "flood.localhost").await;
    let req = http::Request::get(format!("https://flood.localhost:{}/", edge.port())).body(body("")).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), fresh.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn http2_continuation_flood_is_cut_off() {
    let (server, _app, _c) = served_subdomain("cont").await;
    // HEADERS on stream 1 without END_HEADERS (:method GET, :scheme https, :path /), then
    // CONTINUATION frames that never end the header block: 40 MB of them.
    let headers = [0, 0, 3, 1, 0, 0, 0, 0, 1, 0x82, 0x87, 0x84];
    let mut continuation = vec![0, 0, 100, 9, 0, 0, 0, 0, 1];
    // Literal header fields without indexing, new name "x" and a 95-byte value, back to back.
    continuation.extend_from_slice(&[0x00, 0x01, b'x', 0x5f]);
    continuation.extend_from_slice(&[b'a'; 96]);
    continuation.truncate(9 + 100);
    const N: usize = 400_000;
    let s = https_edge_h2(&server, "cont.localhost").await;
    let (_, took, wrote_all) = h2_flood(s, &headers, &continuation, N).await;
    eprintln!("CONTINUATION flood over TLS: closed after {took:?}");
    assert!(!wrote_all, "the edge took all {} MB of one header block", N * 109 / 1_000_000);
    let tcp = TcpStream::connect(server.http_addr()).await.unwrap();
    let (_, took, wrote_all) = h2_flood(tcp, &headers, &continuation, N).await;
    eprintln!("CONTINUATION flood over h2c: closed after {took:?}");
    assert!(!wrote_all, "the edge took all of one header block over h2c");
    let mut fresh = h2_conn(server.https_addr(), "cont.localhost").await;
    let req =
        http::Request::get(format!("https://cont.localhost:{}/", server.https_addr().port())).body(body("")).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), fresh.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A server (or something posing as one) that sends the client a control message over the
/// size limit: the client closes with code 1009, naming the limit, and reconnects.
#[tokio::test]
async fn an_oversized_message_from_the_server_gets_1009_from_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let tls = rustunnel_server::tls::TlsMaterial::load(
        &rustunnel_server::config::TlsSource::SelfSigned,
        dir.path(),
        "localhost",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(4);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.control.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen_tx) = (acceptor.clone(), seen_tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                let _hello = ws.next().await;
                let welcome = ServerMsg::Welcome {
                    version: PROTOCOL_VERSION,
                    session_id: "s".into(),
                    data_key: "k".into(),
                    heartbeat_secs: 10,
                    pool_size: 0,
                    server_agent: "impostor".into(),
                    p2p_udp_port: None,
                    plain_data: false,
                };
                ws.send(Message::text(welcome.encode())).await.unwrap();
                let _ = ws.send(Message::text("x".repeat(1 << 20))).await;
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Close(frame) = m {
                        let _ = seen_tx.send(frame).await;
                        return;
                    }
                }
            });
        }
    });
    let mut opts = rustunnel_client::ClientOptions::new(addr.to_string(), "t");
    opts.tls = rustunnel_client::TlsOptions { insecure: true, ca: None };
    opts.tunnels = vec![tunnel("web", Protocol::Http, 9)];
    let mut client = rustunnel_client::ClientHandle::spawn(opts);
    let frame = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv()).await.unwrap().unwrap();
    let frame = frame.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
    assert!(frame.reason.contains("65536 bytes"), "{frame:?}");
    let e =
        next_event(&mut client, |e| matches!(e, rustunnel_client::Event::Reconnecting { .. }), Duration::from_secs(5))
            .await;
    assert!(format!("{e:?}").contains("over the size limit"), "{e:?}");
}
