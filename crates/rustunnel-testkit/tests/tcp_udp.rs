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
    echo_64_mib(ready[0].port()).await;
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

/// A UDP tunnel whose local service is down says so (once per remote peer), as TCP and HTTP
/// tunnels do, instead of dropping the datagrams in silence; once the service is up, the
/// same peer is answered.
#[tokio::test]
async fn udp_to_a_local_service_that_is_down_is_reported() {
    let server = TestServer::start().await;
    let down = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = down.local_addr().unwrap();
    drop(down);
    let (mut c, ready) = server.client(vec![tunnel("dns", Protocol::Udp, local.port())]).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", ready[0].port())).await.unwrap();
    let e = {
        let wait = next_event(&mut c, |e| matches!(e, rustunnel_client::Event::Error { .. }), Duration::from_secs(10));
        tokio::pin!(wait);
        loop {
            sock.send(b"anyone?").await.unwrap();
            tokio::select! {
                e = &mut wait => break e,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    };
    let rustunnel_client::Event::Error { code, message, fatal, .. } = e else { unreachable!() };
    assert_eq!((code.as_str(), fatal), ("local_unreachable", false));
    assert!(message.contains(&format!("nothing is listening on {local} (udp)")), "{message}");
    // The service comes up on that port: the same peer is answered.
    let echo = UdpSocket::bind(local).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    assert!(udp_round_trip(&sock, b"now?").await);
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
    // and before the edge has reaped it. Each must still reach the local service (on a new
    // session). Counted where they arrive, so a reply that comes back after the session's
    // expiry (a slow machine, a 20 ms idle) does not count as a loss.
    let server = TestServer::start_with(|c| c.udp_idle = Duration::from_millis(20)).await;
    let local = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local_port = local.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok(n) = local.recv(&mut buf).await {
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let (_c, ready) = server.client(vec![tunnel("u", Protocol::Udp, local_port)]).await;
    let (peers, each) = (8, 25u32);
    let mut runs = Vec::new();
    for p in 0..peers {
        let port = ready[0].port();
        runs.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(("127.0.0.1", port)).await.unwrap();
            for i in 0..each {
                sock.send(format!("{p}-{i}").as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(18 + u64::from(i % 5) * 2)).await;
            }
        }));
    }
    for r in runs {
        r.await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let want = peers * each as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => {
                seen.insert(m);
            }
            _ => break,
        }
    }
    let lost: Vec<String> =
        (0..peers).flat_map(|p| (0..each).map(move |i| format!("{p}-{i}"))).filter(|m| !seen.contains(m)).collect();
    assert!(lost.is_empty(), "datagrams that never reached the local service: {lost:?}");
}
