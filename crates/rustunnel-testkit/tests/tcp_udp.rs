//! TCP and UDP tunnels end to end.
use std::time::Duration;

use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[tokio::test]
async fn tcp_echo_and_half_close() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("echo", Protocol::Tcp, echo.port())]).await;
    assert!(ready[0].public_url.starts_with("tcp://localhost:"));
    let port = ready[0].port();
    assert!((20000..=20999).contains(&port));
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"hello");
    // Half-close: we stop writing, the echo finishes and closes; we still read everything.
    s.write_all(b" world").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, b" world");
}

#[tokio::test]
async fn tcp_large_transfer_hash_matches() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("echo", Protocol::Tcp, echo.port())]).await;
    let s = TcpStream::connect(("127.0.0.1", ready[0].port())).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = pattern(64 << 20);
    let expect = sha256_hex(&data);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), 64 << 20);
    assert_eq!(sha256_hex(&got), expect);
}

#[tokio::test]
async fn tcp_many_parallel_connections() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("echo", Protocol::Tcp, echo.port())]).await;
    let port = ready[0].port();
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let msg = format!("conn {i}");
            s.write_all(msg.as_bytes()).await.unwrap();
            assert_eq!(read_n(&mut s, msg.len()).await, msg.as_bytes());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn udp_echo_keeps_datagram_boundaries() {
    let server = TestServer::start().await;
    let echo = udp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("dns", Protocol::Udp, echo.port())]).await;
    assert!(ready[0].public_url.starts_with("udp://localhost:"));
    let port = ready[0].port();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", port)).await.unwrap();
    for size in [1usize, 100, 1400, 8000, 60000] {
        let d = pattern(size);
        assert!(udp_round_trip(&sock, &d).await, "datagram of {size} bytes came back");
    }
}

#[tokio::test]
async fn udp_many_remote_peers_at_once() {
    let server = TestServer::start().await;
    let echo = udp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("u", Protocol::Udp, echo.port())]).await;
    let port = ready[0].port();
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(("127.0.0.1", port)).await.unwrap();
            let mut buf = [0u8; 64];
            let mine = format!("peer {i} msg ");
            for j in 0..5u32 {
                let msg = format!("{mine}{j}");
                let mut ok = false;
                'attempts: for _ in 0..10 {
                    sock.send(msg.as_bytes()).await.unwrap();
                    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
                    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                        // Each peer only ever sees its own replies; a late echo of an earlier
                        // (resent) datagram of its own is skipped.
                        assert!(buf[..n].starts_with(mine.as_bytes()), "foreign reply {:?}", &buf[..n]);
                        if &buf[..n] == msg.as_bytes() {
                            ok = true;
                            break 'attempts;
                        }
                    }
                }
                assert!(ok);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn udp_sessions_expire_when_idle() {
    let server = TestServer::start_with(|c| c.udp_idle = Duration::from_millis(300)).await;
    let echo = udp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("u", Protocol::Udp, echo.port())]).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", ready[0].port())).await.unwrap();
    let mut buf = [0u8; 16];
    sock.send(b"one").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await.unwrap().unwrap();
    let t = server.handle.shared().tunnel(&ready[0].tunnel_id).unwrap();
    assert_eq!(t.stats.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
    // After the idle expiry a new datagram opens a new session (a new "connection").
    tokio::time::sleep(Duration::from_millis(800)).await;
    sock.send(b"two").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(t.stats.connections.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_datagram_arriving_as_its_session_expires_opens_a_new_one() {
    // Peers that pause for about the idle time: some datagrams land just as their session ends
    // and before the edge has reaped it. Each must still get through (on a new session).
    let server = TestServer::start_with(|c| c.udp_idle = Duration::from_millis(100)).await;
    let echo = udp_echo().await;
    let (_c, ready) = server.client(vec![tunnel("u", Protocol::Udp, echo.port())]).await;
    let mut peers = Vec::new();
    for _ in 0..8 {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(("127.0.0.1", ready[0].port())).await.unwrap();
        peers.push(sock);
    }
    let runs = peers.into_iter().enumerate().map(|(p, sock)| async move {
        let mut buf = [0u8; 16];
        for i in 0..25u32 {
            let msg = format!("{p}-{i}");
            sock.send(msg.as_bytes()).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("datagram {msg} lost"))
                .unwrap();
            assert_eq!(&buf[..n], msg.as_bytes());
            tokio::time::sleep(Duration::from_millis(95 + u64::from(i % 5) * 10)).await;
        }
    });
    futures_util::future::join_all(runs).await;
}
