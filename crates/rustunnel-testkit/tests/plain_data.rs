//! Plain (unencrypted, zero-copy) data connections: granted only when both ends opt in,
//! authenticated without sending the data key, and carrying every protocol like TLS ones.
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustunnel_client::events::Event;
use rustunnel_proto::control::{ClientMsg, ServerMsg};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use rustunnel_transport::plain::PLAIN_MAGIC;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn plain_server() -> TestServer {
    TestServer::start_with(|c| c.allow_plain_data = true).await
}

fn plain_opts(server: &TestServer, tunnels: Vec<rustunnel_client::TunnelConfig>) -> rustunnel_client::ClientOptions {
    let mut o = server.client_options(tunnels);
    o.plain_data = true;
    o
}

/// Every session of the server was granted plain data connections.
fn all_sessions_plain(server: &TestServer) -> bool {
    let sessions = server.handle.shared().sessions();
    !sessions.is_empty() && sessions.iter().all(|s| s.plain_data)
}

#[tokio::test]
async fn tcp_over_plain_data_large_hashed_both_ways_with_half_close_and_counters() {
    let server = plain_server().await;
    let echo = tcp_echo().await;
    let (_c, ready) = spawn_ready(plain_opts(&server, vec![tunnel("echo", Protocol::Tcp, echo.port())])).await;
    assert!(all_sessions_plain(&server));
    echo_64_mib(ready[0].port()).await;
    // Live counters are kept for spliced bytes too (the header counts as bytes in).
    let t = server.handle.shared().tunnel(&ready[0].tunnel_id).unwrap();
    wait_until("bytes out counted", Duration::from_secs(5), || t.stats.bytes_out.load(Ordering::Relaxed) >= 64 << 20)
        .await;
    assert!(t.stats.bytes_in.load(Ordering::Relaxed) >= 64 << 20);
}

#[tokio::test]
async fn many_parallel_streams_and_a_websocket_over_plain_data() {
    let server = plain_server().await;
    let echo = tcp_echo().await;
    let app = http_app("plain-ws").await;
    let (_c, ready) = spawn_ready(plain_opts(
        &server,
        vec![tunnel("echo", Protocol::Tcp, echo.port()), tunnel("web", Protocol::Http, app.port())],
    ))
    .await;
    let port = ready.iter().find(|r| r.name == "echo").unwrap().port();
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let msg = pattern(10_000 + i as usize * 97);
                s.write_all(&msg).await.unwrap();
                assert_eq!(read_n(&mut s, msg.len()).await, msg);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // A WebSocket upgrade through the HTTP edge, over a plain data connection.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let web = ready.iter().find(|r| r.name == "web").unwrap();
    let tcp = TcpStream::connect(server.http_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", web.host()), tcp).await.unwrap();
    ws.send(Message::text("over plain")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "over plain");
}

#[tokio::test]
async fn http_keep_alive_streaming_and_udp_over_plain_data() {
    let server = plain_server().await;
    let app = http_app("plain").await;
    let echo = udp_echo().await;
    let (_c, ready) = spawn_ready(plain_opts(
        &server,
        vec![tunnel("web", Protocol::Http, app.port()), tunnel("dns", Protocol::Udp, echo.port())],
    ))
    .await;
    assert!(all_sessions_plain(&server));
    let web = ready.iter().find(|r| r.name == "web").unwrap();
    let (status, body) = get(server.http_addr(), &web.host(), "/").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("plain"));
    // A streamed 8 MiB download, hashed.
    let (status, body) = get(server.http_addr(), &web.host(), &format!("/big?n={}", 8 << 20)).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&pattern(8 << 20)));
    // Many kept-alive requests on one visitor connection.
    let mut conn = http1_conn(server.http_addr()).await;
    for i in 0..50 {
        let req = http::Request::get(format!("/?i={i}"))
            .header("host", web.host())
            .body(rustunnel_testkit::body(""))
            .unwrap();
        let resp = conn.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
    // UDP datagrams keep their boundaries over a plain stream.
    let dns = ready.iter().find(|r| r.name == "dns").unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", dns.port())).await.unwrap();
    for size in [1usize, 1400, 60000] {
        assert!(udp_round_trip(&sock, &pattern(size)).await, "datagram of {size} bytes echoed");
    }
}

#[tokio::test]
async fn a_server_that_does_not_allow_plain_data_keeps_tls_and_says_so() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let mut c =
        rustunnel_client::ClientHandle::spawn(plain_opts(&server, vec![tunnel("echo", Protocol::Tcp, echo.port())]));
    let warned = next_event(
        &mut c,
        |e| matches!(e, Event::Error { code, fatal: false, .. } if code == "plain_data_refused"),
        Duration::from_secs(10),
    )
    .await;
    let Event::Error { hint, .. } = warned else { unreachable!() };
    assert!(hint.contains("--allow-plain-data"), "{hint}");
    let ready = next_event(&mut c, |e| matches!(e, Event::TunnelReady { .. }), Duration::from_secs(10)).await;
    let Event::TunnelReady { public_url, .. } = ready else { unreachable!() };
    assert!(!all_sessions_plain(&server));
    let port: u16 = public_url.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"over tls").await.unwrap();
    assert_eq!(read_n(&mut s, 8).await, b"over tls");
}

/// Opens a control session by hand and returns (session id, data key).
async fn raw_session(server: &TestServer, plain: bool) -> (impl Sized, String, String) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let stream = dialer(server).dial().await.unwrap();
    let url = format!("wss://localhost:{}/v1/control", server.handle.control_addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let hello = ClientMsg::Hello {
        version: rustunnel_proto::PROTOCOL_VERSION,
        token: server.handle.admin_token().to_string(),
        agent: "test".into(),
        plain_data: plain,
        mux: false,
    };
    ws.send(Message::text(hello.encode())).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            if let Ok(ServerMsg::Welcome { session_id, data_key, plain_data, .. }) = ServerMsg::decode(t.as_str()) {
                assert_eq!(plain_data, plain);
                return (ws, session_id, data_key);
            }
        }
    }
}

fn dialer(server: &TestServer) -> rustunnel_client::net::Dialer {
    let tls = rustunnel_client::tls::client_config(
        &rustunnel_client::TlsOptions { insecure: true, ca: None },
        &[b"http/1.1"],
    )
    .unwrap();
    rustunnel_client::net::Dialer { host: "localhost".into(), port: server.handle.control_addr().port(), tls }
}

#[tokio::test]
async fn plain_data_connections_need_the_key_and_a_granted_session() {
    let server = plain_server().await;
    let d = dialer(&server);
    let open = |sid: String, key: String| {
        let d = d.clone();
        async move { rustunnel_client::forward::open_data_conn(&d, &sid, &key, true).await }
    };
    // A granted session: wrong key refused, right key accepted and pooled.
    let (_ws, sid, key) = raw_session(&server, true).await;
    assert!(open(sid.clone(), "00".repeat(32)).await.is_err());
    assert!(open("no-such-session".into(), key.clone()).await.is_err());
    assert!(open(sid.clone(), key.clone()).await.is_ok());
    let session = server.handle.shared().session(&sid).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while session.idle_data_conns() == 0 {
        assert!(std::time::Instant::now() < deadline, "the plain connection joined the pool");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A session that did not ask: refused even with its key.
    let (_ws2, sid2, key2) = raw_session(&server, false).await;
    assert!(open(sid2, key2).await.is_err());
}

#[tokio::test]
async fn plain_handshake_garbage_and_silence_are_dropped() {
    let server = plain_server().await;
    let control = server.handle.control_addr();
    // The magic, then an oversized session id length: closed without an answer past the nonce.
    let mut s = TcpStream::connect(control).await.unwrap();
    s.write_all(PLAIN_MAGIC).await.unwrap();
    let mut nonce = [0u8; 32];
    s.read_exact(&mut nonce).await.unwrap();
    s.write_all(&[200]).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap();
    assert!(r.is_err() || rest.is_empty(), "nothing more than the nonce: {rest:?}");
    // A wrong magic that starts like the real one.
    let mut s = TcpStream::connect(control).await.unwrap();
    s.write_all(b"RUSTUNNEL-NOT-REALLY/9\r\n").await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap();
    assert!(r.is_err() || rest.is_empty());
    // The server still serves real clients.
    let echo = tcp_echo().await;
    let (_c, ready) = spawn_ready(plain_opts(&server, vec![tunnel("echo", Protocol::Tcp, echo.port())])).await;
    let mut s = TcpStream::connect(("127.0.0.1", ready[0].port())).await.unwrap();
    s.write_all(b"still fine").await.unwrap();
    assert_eq!(read_n(&mut s, 10).await, b"still fine");
}

#[tokio::test]
async fn plain_data_comes_back_after_a_server_crash_with_the_same_port() {
    let server = plain_server().await;
    let echo = tcp_echo().await;
    let (mut c, ready) = spawn_ready(plain_opts(&server, vec![tunnel("echo", Protocol::Tcp, echo.port())])).await;
    let (control, http) = (server.handle.control_addr(), server.http_addr());
    let TestServer { handle, dir } = server;
    handle.abort().await;
    next_event(&mut c, |e| matches!(e, Event::Reconnecting { .. }), Duration::from_secs(10)).await;
    let back = TestServer::restart_on_same_ports(dir, control, http, |c| c.allow_plain_data = true).await;
    let again = next_event(&mut c, |e| matches!(e, Event::Reconnected { .. }), Duration::from_secs(10)).await;
    let Event::Reconnected { public_url, .. } = again else { unreachable!() };
    assert_eq!(public_url, ready[0].public_url);
    assert!(all_sessions_plain(&back));
    let mut s = TcpStream::connect(("127.0.0.1", ready[0].port())).await.unwrap();
    s.write_all(b"plain again").await.unwrap();
    assert_eq!(read_n(&mut s, 11).await, b"plain again");
}
