//! `--cidr-allow` / `--cidr-deny`: a tunnel accepts visitors by their own (L4) address, on
//! every edge. Visitors here come from two loopback addresses, 127.0.0.1 and 127.0.0.2.
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustunnel_client::{Event, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const OTHER: &str = "127.0.0.2";

fn ruled(t: TunnelConfig, allow: &[&str], deny: &[&str]) -> TunnelConfig {
    let mut t = t;
    t.cidr_allow = allow.iter().map(|s| s.to_string()).collect();
    t.cidr_deny = deny.iter().map(|s| s.to_string()).collect();
    t
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Status and body of `GET /headers` through the HTTP edge, from `from`.
async fn get_from(from: &str, edge: SocketAddr, host: &str, forwarded_for: &str) -> (u16, String) {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(connect_from(from, edge).await)).await.unwrap();
    tokio::spawn(conn);
    // A visitor writing X-Forwarded-For does not change what it is judged on.
    let req =
        Request::get("/headers").header("host", host).header("x-forwarded-for", forwarded_for).body(body("")).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

#[tokio::test]
async fn http_visitors_are_judged_by_their_own_address() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let mut only_other = tunnel("a", Protocol::Http, app.port());
    only_other.subdomain = Some("other-only".into());
    let mut not_local = tunnel("b", Protocol::Http, app.port());
    not_local.subdomain = Some("no-local".into());
    let tunnels = vec![ruled(only_other, &["127.0.0.2/32"], &[]), ruled(not_local, &[], &["127.0.0.1"])];
    let (mut c, ready) = spawn_ready(server.client_options(tunnels)).await;
    let edge = server.http_addr();
    let (a, b) = (ready[0].host(), ready[1].host());

    let (status, page) = get_from("127.0.0.1", edge, &a, OTHER).await;
    assert_eq!(status, 403);
    assert!(page.contains("does not accept visitors from your network address"), "{page}");
    let (status, text) = get_from(OTHER, edge, &a, "127.0.0.1").await;
    assert_eq!(status, 200);
    assert!(text.contains("\"x-forwarded-for\":\"127.0.0.2\""), "{text}");
    assert_eq!(get_from("127.0.0.1", edge, &b, OTHER).await.0, 403);
    assert_eq!(get_from(OTHER, edge, &b, "127.0.0.1").await.0, 200);

    // HTTP/2 over the HTTPS edge: connections come from 127.0.0.1.
    let https = server.https_addr();
    let mut h2 = h2_conn(https, "other-only.localhost").await;
    let url = format!("https://other-only.localhost:{}/", https.port());
    assert_eq!(h2.send_request(Request::get(url).body(body("")).unwrap()).await.unwrap().status(), 403);

    // The management API shows the rules, in canonical form.
    let mut api = http1_conn(server.handle.api_addr().unwrap()).await;
    let req = Request::get(format!("/api/tunnels/{}", ready[0].tunnel_id))
        .header("host", "api")
        .header("authorization", format!("Bearer {}", server.handle.admin_token()))
        .body(body(""))
        .unwrap();
    let view = api.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let view: serde_json::Value = serde_json::from_slice(&view).unwrap();
    assert_eq!(view["cidr_allow"], serde_json::json!(["127.0.0.2/32"]), "{view}");

    // Refused visits show in the client's live log.
    next_event(&mut c, |e| matches!(e, Event::Request { status: 403, .. }), Duration::from_secs(5)).await;
}

#[tokio::test]
async fn tcp_and_udp_visitors_outside_the_rules_get_nothing() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let uecho = udp_echo().await;
    let tunnels = vec![
        ruled(tunnel("t", Protocol::Tcp, echo.port()), &["127.0.0.2"], &[]),
        ruled(tunnel("u", Protocol::Udp, uecho.port()), &["127.0.0.0/8"], &["127.0.0.1/32"]),
    ];
    let (_c, ready) = server.client(tunnels).await;
    let tcp: SocketAddr = ([127, 0, 0, 1], ready[0].port()).into();
    // Refused: closed without a byte.
    let mut s = connect_from("127.0.0.1", tcp).await;
    let _ = s.write_all(b"hello").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "a refused visitor got bytes");
    // Accepted from the allowed address.
    let mut s = connect_from(OTHER, tcp).await;
    s.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"hello");

    let udp: SocketAddr = ([127, 0, 0, 1], ready[1].port()).into();
    let denied = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    denied.connect(udp).await.unwrap();
    assert!(!udp_round_trip(&denied, b"ping").await, "a denied peer got an answer");
    let allowed = UdpSocket::bind((OTHER, 0)).await.unwrap();
    allowed.connect(udp).await.unwrap();
    assert!(udp_round_trip(&allowed, b"ping").await);
}

#[tokio::test]
async fn bad_rules_are_refused_before_connecting_and_pool_members_must_agree() {
    let server = TestServer::start().await;
    let app = http_app("app").await;
    let bad = ruled(tunnel("t", Protocol::Http, app.port()), &["10.0.0.0/33"], &[]);
    let mut c = rustunnel_client::ClientHandle::spawn(server.client_options(vec![bad]));
    let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    assert!(
        matches!(e, Event::Error { ref code, ref message, .. } if code == "config_error" && message.contains("10.0.0.0/33")),
        "{e:?}"
    );

    let member = |name: &str, allow: &[&str]| {
        ruled(tunnel(name, Protocol::Http, app.port()), allow, &[]).with_group("pool", "k")
    };
    let (_a, _) = spawn_ready(server.client_options(vec![member("a", &["127.0.0.0/8"])])).await;
    // The same rules written another way: joins.
    let (_b, _) = spawn_ready(server.client_options(vec![member("b", &["127.1.2.3/8"])])).await;
    let mut c = rustunnel_client::ClientHandle::spawn(server.client_options(vec![member("c", &[])]));
    let e = next_event(&mut c, |e| matches!(e, Event::Error { .. }), Duration::from_secs(5)).await;
    assert!(matches!(e, Event::Error { ref message, .. } if message.contains("--cidr-allow")), "{e:?}");
}
