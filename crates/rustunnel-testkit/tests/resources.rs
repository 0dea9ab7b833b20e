//! Resources return to baseline: after many tunnels and connections open and close, the
//! process holds no more file descriptors than before (no leaked sockets, tasks or pools).
use std::time::{Duration, Instant};

use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::AsyncWriteExt;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

async fn cycle(server: &TestServer, echo_port: u16, conns: usize) {
    let (c, ready) = server.client(vec![tunnel("echo", Protocol::Tcp, echo_port)]).await;
    let port = ready[0].port();
    for i in 0..conns {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let msg = format!("round {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        assert_eq!(read_n(&mut s, msg.len()).await, msg.as_bytes());
    }
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptors_return_to_baseline() {
    if !std::path::Path::new("/proc/self/fd").exists() {
        eprintln!("skipped: /proc/self/fd not available on this system");
        return;
    }
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    // Warm up lazily created resources (database connections, thread pools).
    cycle(&server, echo.port(), 5).await;
    let settle = |server: &TestServer| {
        let shared = server.handle.shared().clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !(shared.sessions.read().unwrap().is_empty() && shared.tunnels.read().unwrap().is_empty()) {
                assert!(Instant::now() < deadline, "sessions/tunnels not freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    settle(&server).await;
    let baseline = open_fds();
    for _ in 0..20 {
        cycle(&server, echo.port(), 10).await;
    }
    settle(&server).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = open_fds();
        if now <= baseline + 4 {
            break;
        }
        assert!(Instant::now() < deadline, "fds: baseline {baseline}, after 20 tunnels x 10 connections {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
