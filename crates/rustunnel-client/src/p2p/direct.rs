//! The direct path's socket work: candidate gathering through the server's reflector and
//! the hole punch itself (the state machine is [`super::punch`]).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::punch;

/// A UDP socket and the candidate addresses the other peer can try: the local address on the
/// route to the server and the address the server's reflector saw.
pub(super) async fn gather(reflector: SocketAddr) -> Option<(UdpSocket, Vec<String>)> {
    let bind: SocketAddr =
        if reflector.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.ok()?;
    let port = sock.local_addr().ok()?.port();
    let mut cands = Vec::new();
    if let Ok(probe) = std::net::UdpSocket::bind(bind) {
        if probe.connect(reflector).is_ok() {
            if let Ok(a) = probe.local_addr() {
                cands.push(SocketAddr::new(a.ip(), port).to_string());
            }
        }
    }
    let nonce: u64 = rand::random();
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        let _ = sock.send_to(&rustunnel_proto::p2p::encode_probe(nonce), reflector).await;
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else { return None };
                if from != reflector {
                    continue;
                }
                if let Some((nn, seen)) = rustunnel_proto::p2p::decode_reflect(&buf[..n]) {
                    if nn == nonce {
                        return Some(seen);
                    }
                }
            }
        })
        .await;
        if let Ok(Some(seen)) = got {
            let s = seen.to_string();
            if !cands.contains(&s) {
                cands.push(s);
            }
            break;
        }
    }
    Some((sock, cands))
}

/// Punches towards `targets`; the address that works both ways, or `None`.
pub(super) async fn punch(
    sock: &UdpSocket,
    tag: [u8; 16],
    targets: Vec<SocketAddr>,
    timeout: Duration,
) -> Option<SocketAddr> {
    if targets.is_empty() {
        return None;
    }
    let mut p = punch::Puncher::new(Instant::now(), tag, targets, timeout);
    let mut buf = [0u8; 256];
    loop {
        let wake = tokio::time::Instant::from_std(p.next_wake());
        let actions = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => p.on_packet(Instant::now(), from, &buf[..n]),
                Err(_) => Vec::new(),
            },
            _ = tokio::time::sleep_until(wake) => p.on_tick(Instant::now()),
        };
        for a in actions {
            match a {
                punch::Action::Send(to, pkt) => {
                    let _ = sock.send_to(&pkt, to).await;
                }
                punch::Action::Done(addr) => return Some(addr),
                punch::Action::Failed => return None,
            }
        }
    }
}

pub(super) fn parse_cands(c: &[String]) -> Vec<SocketAddr> {
    c.iter().filter_map(|s| s.parse().ok()).take(8).collect()
}
