//! Private P2P tunnels in-process on loopback: relay and direct (hole-punched QUIC) paths,
//! TCP and UDP, the secret proof, and a large transfer checked by hash in each mode.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustunnel_client::p2p::{P2pHandle, P2pOptions, P2pRole};
use rustunnel_client::{Event, TlsOptions};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn opts(server: &TestServer, secret: &str, protocol: Protocol, role: P2pRole, direct: bool) -> P2pOptions {
    let mut o = P2pOptions::new(server.control(), server.handle.admin_token(), secret, role);
    o.tls = TlsOptions { insecure: true, ca: None };
    o.protocol = protocol;
    o.direct = direct;
    o.reconnect = false;
    o
}

async fn publish(
    server: &TestServer,
    name: &str,
    secret: &str,
    protocol: Protocol,
    port: u16,
    direct: bool,
) -> P2pHandle {
    let role = P2pRole::Publish { name: name.into(), local_host: "127.0.0.1".into(), local_port: port };
    let mut h = P2pHandle::spawn(opts(server, secret, protocol, role, direct));
    h.wait_ready().await.expect("publisher ready");
    h
}

/// Starts a visitor; returns it, its listener address and the mode of its link.
async fn visit(
    server: &TestServer,
    name: &str,
    secret: &str,
    protocol: Protocol,
    direct: bool,
) -> Result<(P2pHandle, SocketAddr, String), String> {
    let role = P2pRole::Connect { target: name.into(), bind: "127.0.0.1:0".parse().unwrap() };
    let mut h = P2pHandle::spawn(opts(server, secret, protocol, role, direct));
    match tokio::time::timeout(Duration::from_secs(20), h.wait_ready()).await.expect("no answer in 20 s") {
        Ok(Event::P2pReady { mode, local_addr, .. }) => Ok((h, local_addr.parse().unwrap(), mode.unwrap_or_default())),
        Ok(other) => Err(format!("unexpected {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn tcp_round_trip(addr: SocketAddr, len: usize) {
    let data = pattern(len);
    let want = hex::encode(Sha256::digest(&data));
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), r.read(&mut buf)).await.expect("read stalled").unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n;
    }
    writer.await.unwrap();
    assert_eq!(got, len);
    assert_eq!(hex::encode(h.finalize()), want, "echoed bytes differ");
}

async fn udp_round_trip(addr: SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(addr).await.unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..20u32 {
        let msg = format!("datagram {i}");
        // UDP may drop; retry each datagram a few times.
        let mut ok = false;
        for _ in 0..10 {
            s.send(msg.as_bytes()).await.unwrap();
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await {
                assert_eq!(&buf[..n], msg.as_bytes());
                ok = true;
                break;
            }
        }
        assert!(ok, "datagram {i} never came back");
    }
}

fn relayed(server: &TestServer) -> u64 {
    server.handle.shared().p2p().relayed_total()
}

#[tokio::test]
async fn tcp_relayed_with_large_transfer() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let p = publish(&server, "svc", "hunter2", Protocol::Tcp, echo.port(), false).await;
    let (v, addr, mode) = visit(&server, "svc", "hunter2", Protocol::Tcp, false).await.unwrap();
    assert_eq!(mode, "relayed");
    tcp_round_trip(addr, 1000).await;
    tcp_round_trip(addr, 32 * 1024 * 1024).await;
    assert!(relayed(&server) >= 2 * 32 * 1024 * 1024, "relayed bytes are counted: {}", relayed(&server));
    v.stop().await.unwrap();
    p.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_direct_on_loopback_carries_no_bytes_through_the_server() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let p = publish(&server, "svc", "s3cret", Protocol::Tcp, echo.port(), true).await;
    let (v, addr, mode) = visit(&server, "svc", "s3cret", Protocol::Tcp, true).await.unwrap();
    assert_eq!(mode, "direct");
    tcp_round_trip(addr, 32 * 1024 * 1024).await;
    tcp_round_trip(addr, 10).await;
    assert_eq!(relayed(&server), 0, "direct mode must not relay payload through the server");
    v.stop().await.unwrap();
    p.stop().await.unwrap();
}

#[tokio::test]
async fn udp_relayed_and_direct() {
    let server = TestServer::start().await;
    let echo = udp_echo().await;
    let p = publish(&server, "dns", "pw", Protocol::Udp, echo.port(), true).await;
    let (v, addr, mode) = visit(&server, "dns", "pw", Protocol::Udp, false).await.unwrap();
    assert_eq!(mode, "relayed");
    udp_round_trip(addr).await;
    assert!(relayed(&server) > 0);
    v.stop().await.unwrap();
    let before = relayed(&server);
    let (v, addr, mode) = visit(&server, "dns", "pw", Protocol::Udp, true).await.unwrap();
    assert_eq!(mode, "direct");
    udp_round_trip(addr).await;
    assert_eq!(relayed(&server), before);
    v.stop().await.unwrap();
    p.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_secret_is_refused_and_the_service_sees_nothing() {
    let server = TestServer::start().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a2 = accepted.clone();
    tokio::spawn(async move {
        while l.accept().await.is_ok() {
            a2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let p = publish(&server, "svc", "right", Protocol::Tcp, port, true).await;
    let err = visit(&server, "svc", "wrong", Protocol::Tcp, true).await.err().expect("refused");
    assert!(err.contains("wrong secret for 'svc'"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The link was never accepted (and is gone): no relayed stream can be opened for it.
    assert_eq!(server.handle.shared().p2p().with_table(|t| t.links().count()), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection may reach the publisher's service");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_name_is_a_clear_error() {
    let server = TestServer::start().await;
    let err = visit(&server, "nope", "x", Protocol::Tcp, true).await.err().expect("refused");
    assert!(err.contains("no P2P service named 'nope'"), "{err}");
}
