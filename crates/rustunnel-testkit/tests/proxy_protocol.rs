//! The PROXY protocol both ways. In front of the server: a load balancer at 127.0.0.2 (listed
//! in `proxy_protocol_from`) names the visitor in a v1 or v2 header, and the edges use that
//! address for X-Forwarded-For and the tunnel's address rules; anyone else's header is
//! refused, and so is a listed peer's connection without one. Behind the client: a tunnel with
//! `proxy_protocol` starts each connection to its local service with a header naming the
//! visitor, parsed here with the `ppp` crate.
use std::net::SocketAddr;
use std::time::Duration;

use rustunnel_client::proxy_header::ProxyProtocol;
use rustunnel_client::{Event, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_server::edge::proxy_header::ProxyFrom;
use rustunnel_testkit::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

const BALANCER: &str = "127.0.0.2";
const WAIT: Duration = Duration::from_secs(10);

async fn server_behind_balancer() -> TestServer {
    TestServer::start_with(|c| c.proxy_protocol_from = ProxyFrom::parse(&[BALANCER.into()]).unwrap()).await
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.unwrap()
}

fn v1(visitor: &str) -> Vec<u8> {
    let v: SocketAddr = visitor.parse().unwrap();
    let dst: SocketAddr = "127.0.0.1:80".parse().unwrap();
    ppp::v1::Addresses::from((v, dst)).to_string().into_bytes()
}

fn v2(command: u8, visitor: &str) -> Vec<u8> {
    let v: SocketAddr = visitor.parse().unwrap();
    let dst: SocketAddr = if v.is_ipv6() { "[::1]:80" } else { "127.0.0.1:80" }.parse().unwrap();
    ppp::v2::Builder::with_addresses(0x20 | command, ppp::v2::Protocol::Stream, (v, dst)).build().unwrap()
}

/// Everything the peer sends until it closes (or `WAIT` passes).
async fn read_all(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    out
}

/// `GET /headers` from `from` to the HTTP edge, after `preface` (a PROXY header or nothing);
/// the whole answer as text ("" when the connection was closed unanswered).
async fn get(from: &str, edge: SocketAddr, preface: &[u8], host: &str) -> String {
    get_with(from, edge, preface, host, "").await
}

/// [`get`] with `extra` header lines.
async fn get_with(from: &str, edge: SocketAddr, preface: &[u8], host: &str, extra: &str) -> String {
    let mut s = connect_from(from, edge).await;
    let mut req = preface.to_vec();
    req.extend_from_slice(
        format!(
            "GET /headers HTTP/1.1\r\nhost: {host}\r\nx-forwarded-for: 6.6.6.6\r\n{extra}connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let _ = s.write_all(&req).await;
    String::from_utf8_lossy(&read_all(&mut s).await).into_owned()
}

#[tokio::test]
async fn a_balancers_header_names_the_visitor_for_forwarding_headers_and_address_rules() {
    let server = server_behind_balancer().await;
    let (app, hits) = http_app_counted("app").await;
    let mut open = tunnel("open", Protocol::Http, app.port());
    open.subdomain = Some("open".into());
    let mut ruled = tunnel("ruled", Protocol::Http, app.port());
    ruled.subdomain = Some("ruled".into());
    ruled.cidr_deny = vec!["203.0.113.0/24".into()];
    let (_c, ready) = server.client(vec![open, ruled]).await;
    let edge = server.http_addr();
    let (open, ruled) = (ready[0].host(), ready[1].host());

    // v1 and v2 from the balancer: the carried address, not the balancer's nor the visitor's own header.
    let text = get(BALANCER, edge, &v1("203.0.113.7:51000"), &open).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"x-forwarded-for\":\"203.0.113.7\""), "{text}");
    let text = get(BALANCER, edge, &v2(1, "198.51.100.9:4000"), &open).await;
    assert!(text.contains("\"x-forwarded-for\":\"198.51.100.9\""), "{text}");
    assert!(text.contains("\"x-real-ip\":\"198.51.100.9\""), "{text}");
    // A v2 LOCAL command (the balancer's health check): the balancer's own address.
    let text = get(BALANCER, edge, &v2(0, "198.51.100.9:4000"), &open).await;
    assert!(text.contains("\"x-forwarded-for\":\"127.0.0.2\""), "{text}");

    // The address rules judge the carried address: denied network refused, another passes.
    let text = get(BALANCER, edge, &v1("203.0.113.7:51000"), &ruled).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    let text = get(BALANCER, edge, &v2(1, "198.51.100.9:4000"), &ruled).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // A peer not listed: its header is not believed and the request never reaches the service.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    for preface in [v1("203.0.113.7:51000"), v2(1, "198.51.100.9:4000")] {
        let text = get("127.0.0.1", edge, &preface, &open).await;
        assert!(!text.contains(" 200 "), "{text}");
        assert!(!text.contains("203.0.113.7") && !text.contains("198.51.100.9"), "{text}");
    }
    // A listed peer without a header: closed unanswered.
    assert_eq!(get(BALANCER, edge, b"", &open).await, "");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before, "refused requests reached the service");
    // Visitors who connect directly are unaffected.
    let text = get("127.0.0.1", edge, b"", &open).await;
    assert!(text.contains("\"x-forwarded-for\":\"127.0.0.1\""), "{text}");
}

#[tokio::test]
async fn wrong_logins_and_the_request_log_count_the_carried_address() {
    use base64::Engine;
    let server = server_behind_balancer().await;
    let app = http_app("app").await;
    let mut t = tunnel("login", Protocol::Http, app.port());
    t.subdomain = Some("guarded".into());
    t.basic_auth = Some(rustunnel_proto::basic_auth::BasicAuth::parse("ana:correct horse").unwrap());
    let (mut c, ready) = spawn_ready(server.client_options(vec![t])).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let login =
        |creds: &str| format!("authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(creds));

    // Ten wrong logins from one carried address block that address, not the balancer's others.
    for i in 0..10 {
        let text = get_with(BALANCER, edge, &v1("203.0.113.7:1000"), &host, &login(&format!("ana:guess {i}"))).await;
        assert!(text.starts_with("HTTP/1.1 401"), "guess {i}: {text}");
    }
    let text = get_with(BALANCER, edge, &v2(1, "203.0.113.7:1001"), &host, &login("ana:correct horse")).await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    let text = get_with(BALANCER, edge, &v2(1, "198.51.100.9:4000"), &host, &login("ana:correct horse")).await;
    assert!(text.starts_with("HTTP/1.1 200"), "another visitor behind the same balancer: {text}");
    // The client's request log names the visitor, not the balancer.
    let seen =
        |e: &Event| matches!(e, Event::Request { status: 200, remote_addr, .. } if remote_addr == "198.51.100.9");
    next_event(&mut c, seen, WAIT).await;
}

#[tokio::test]
async fn the_https_edge_reads_the_header_before_tls() {
    let server = server_behind_balancer().await;
    let app = http_app("app").await;
    let mut t = tunnel("web", Protocol::Http, app.port());
    t.subdomain = Some("web".into());
    let (_c, _ready) = server.client(vec![t]).await;
    let https = server.https_addr();
    let tls = rustunnel_client::tls::client_config(
        &rustunnel_client::TlsOptions { insecure: true, ca: None },
        &[b"http/1.1"],
    )
    .unwrap();
    let mut tcp = connect_from(BALANCER, https).await;
    tcp.write_all(&v2(1, "[2001:db8::7]:4000")).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("web.localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    s.write_all(b"GET /headers HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n").await.unwrap();
    let text = String::from_utf8_lossy(&read_all(&mut s).await).into_owned();
    assert!(text.contains("\"x-forwarded-for\":\"2001:db8::7\""), "{text}");
}

#[tokio::test]
async fn the_tcp_edge_takes_the_header_only_from_the_balancer() {
    let server = server_behind_balancer().await;
    let echo = tcp_echo().await;
    let mut t = tunnel("t", Protocol::Tcp, echo.port());
    t.cidr_deny = vec!["203.0.113.0/24".into()];
    let (_c, ready) = server.client(vec![t]).await;
    let edge: SocketAddr = ([127, 0, 0, 1], ready[0].port()).into();

    // Allowed carried address: the header is taken off, the stream's bytes echo.
    let mut s = connect_from(BALANCER, edge).await;
    let mut bytes = v2(1, "198.51.100.9:4000");
    bytes.extend_from_slice(b"hello");
    s.write_all(&bytes).await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"hello");
    // Denied carried address: closed without a byte.
    let mut s = connect_from(BALANCER, edge).await;
    let mut bytes = v1("203.0.113.7:51000");
    bytes.extend_from_slice(b"hello");
    s.write_all(&bytes).await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
    // The balancer without a header: closed without a byte.
    let mut s = connect_from(BALANCER, edge).await;
    s.write_all(b"hello, no header here").await.unwrap();
    assert_eq!(read_all(&mut s).await, b"");
}

/// A local service that reads a PROXY header at the start of each connection and reports
/// (connection number, the source address it names, the first `n` bytes after it).
async fn header_reader(n: usize) -> (u16, mpsc::UnboundedReceiver<(usize, SocketAddr, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut count = 0;
        while let Ok((mut s, _)) = l.accept().await {
            count += 1;
            let tx = tx.clone();
            tokio::spawn(async move {
                let (src, mut rest) = parse_header(&mut s).await;
                while rest.len() < n {
                    let mut buf = [0u8; 1024];
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => rest.extend_from_slice(&buf[..k]),
                    }
                }
                let _ = tx.send((count, src, rest.clone()));
                // Echo what follows, so the visitor sees the stream work.
                let _ = s.write_all(&rest).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, rx)
}

/// Reads bytes until they hold a whole PROXY header; its source address and the bytes after it.
async fn parse_header(s: &mut TcpStream) -> (SocketAddr, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 512];
        let k = s.read(&mut chunk).await.unwrap();
        assert!(k > 0, "closed before a whole PROXY header: {buf:?}");
        buf.extend_from_slice(&chunk[..k]);
        let len = if buf.starts_with(ppp::v2::PROTOCOL_PREFIX) && buf.len() >= 16 {
            Some(16 + usize::from(u16::from_be_bytes([buf[14], buf[15]])))
        } else {
            buf.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
        };
        let Some(len) = len.filter(|l| *l <= buf.len()) else { continue };
        let src = match ppp::HeaderResult::parse(&buf[..len]) {
            ppp::HeaderResult::V1(Ok(h)) => match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                ppp::v1::Addresses::Tcp6(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                other => panic!("no address: {other:?}"),
            },
            ppp::HeaderResult::V2(Ok(h)) => match h.addresses {
                ppp::v2::Addresses::IPv4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                ppp::v2::Addresses::IPv6(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                other => panic!("no address: {other:?}"),
            },
            other => panic!("not a PROXY header: {other:?}"),
        };
        return (src, buf.split_off(len));
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(usize, SocketAddr, Vec<u8>)>) -> (usize, SocketAddr, Vec<u8>) {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("the local service got a connection").unwrap()
}

fn with_proxy(t: TunnelConfig, v: ProxyProtocol) -> TunnelConfig {
    TunnelConfig { proxy_protocol: Some(v), ..t }
}

#[tokio::test]
async fn a_tcp_tunnel_sends_the_visitor_to_its_local_service() {
    let server = TestServer::start().await;
    for version in [ProxyProtocol::V2, ProxyProtocol::V1] {
        let (port, mut rx) = header_reader(5).await;
        let (_c, ready) = server.client(vec![with_proxy(tunnel("db", Protocol::Tcp, port), version)]).await;
        let edge: SocketAddr = ([127, 0, 0, 1], ready[0].port()).into();
        let mut s = connect_from(BALANCER, edge).await;
        let visitor = s.local_addr().unwrap();
        s.write_all(b"hello").await.unwrap();
        let (_, src, rest) = next(&mut rx).await;
        assert_eq!(src, visitor, "{version:?}");
        assert_eq!(rest, b"hello", "{version:?}: the stream's bytes follow the header");
        assert_eq!(read_n(&mut s, 5).await, b"hello");
    }
}

#[tokio::test]
async fn the_real_visitor_behind_a_balancer_reaches_the_local_service() {
    let server = server_behind_balancer().await;
    let (port, mut rx) = header_reader(4).await;
    let (_c, ready) = server.client(vec![with_proxy(tunnel("db", Protocol::Tcp, port), ProxyProtocol::V2)]).await;
    let edge: SocketAddr = ([127, 0, 0, 1], ready[0].port()).into();
    let mut s = connect_from(BALANCER, edge).await;
    let mut bytes = v1("203.0.113.7:51000");
    bytes.extend_from_slice(b"ping");
    s.write_all(&bytes).await.unwrap();
    let (_, src, rest) = next(&mut rx).await;
    assert_eq!(src, "203.0.113.7:51000".parse().unwrap());
    assert_eq!(rest, b"ping");
}

/// A local HTTP service behind the PROXY protocol: each connection's header is parsed, then
/// each request is answered with that connection's number and the address its header named.
async fn http_behind_proxy_protocol() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut count = 0;
        while let Ok((mut s, _)) = l.accept().await {
            count += 1;
            tokio::spawn(async move {
                let (src, mut buf) = parse_header(&mut s).await;
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let body = format!("conn={count} from={src}");
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
            });
        }
    });
    port
}

/// Sends `GET /` on a kept-alive connection and returns the answer's body.
async fn ask(s: &mut TcpStream, host: &str) -> String {
    s.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let k = tokio::time::timeout(WAIT, s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(k > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..k]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                .unwrap();
            if body.len() >= len {
                return body.to_string();
            }
        }
    }
}

#[tokio::test]
async fn an_http_tunnel_sends_one_header_per_upstream_connection_and_never_mixes_visitors() {
    let server = TestServer::start().await;
    let port = http_behind_proxy_protocol().await;
    let mut t = with_proxy(tunnel("web", Protocol::Http, port), ProxyProtocol::V1);
    t.subdomain = Some("pp-web".into());
    let (_c, ready) = server.client(vec![t]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());

    let mut a = connect_from("127.0.0.1", edge).await;
    let a_addr = a.local_addr().unwrap();
    let first = ask(&mut a, &host).await;
    assert!(first.ends_with(&format!("from={a_addr}")), "{first}");
    // The same visitor again: the kept upstream connection, its header already sent.
    assert_eq!(ask(&mut a, &host).await, first);
    // Another visitor, while the first one's upstream is kept: a connection of its own.
    let mut b = connect_from(BALANCER, edge).await;
    let b_addr = b.local_addr().unwrap();
    let second = ask(&mut b, &host).await;
    assert!(second.ends_with(&format!("from={b_addr}")), "{second}");
    assert_ne!(second.split(' ').next(), first.split(' ').next(), "one upstream connection served two visitors");
    // And the first visitor still gets its own.
    assert_eq!(ask(&mut a, &host).await, first);
}

#[tokio::test]
async fn http2_visitors_get_upstream_connections_of_their_own_too() {
    use http_body_util::BodyExt;
    let server = TestServer::start().await;
    let port = http_behind_proxy_protocol().await;
    let mut t = with_proxy(tunnel("web", Protocol::Http, port), ProxyProtocol::V2);
    t.subdomain = Some("pp-h2".into());
    let (_c, _ready) = server.client(vec![t]).await;
    let https = server.https_addr();
    let url = format!("https://pp-h2.localhost:{}/", https.port());
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let mut h2 = h2_conn(https, "pp-h2.localhost").await;
        for _ in 0..2 {
            let resp = h2.send_request(http::Request::get(&url).body(body("")).unwrap()).await.unwrap();
            assert_eq!(resp.status(), 200);
            let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            assert!(text.contains(" from=127.0.0.1:"), "{text}");
            bodies.push(text);
        }
    }
    // One upstream connection (one header) per visitor connection, reused within it only.
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[2], bodies[3]);
    assert_ne!(bodies[0], bodies[2]);
}
