//! UDP tunnels: one socket per tunnel. Each remote address gets its own session, carried on a
//! data connection as length-prefixed datagrams (boundaries preserved), and expires when idle.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustunnel_proto::limits::MAX_DATAGRAM;
use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::Protocol;
use rustunnel_transport::stream::{read_datagram, write_datagram};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;

use crate::state::Shared;
use crate::tunnel::Tunnel;

/// Most concurrent remote peers per UDP tunnel.
pub const MAX_UDP_SESSIONS: usize = 1024;
/// Datagrams queued per peer while its data connection is busy; beyond that they are dropped,
/// as a congested UDP path would.
const PEER_QUEUE: usize = 256;

pub async fn run(socket: UdpSocket, tunnel: Arc<Tunnel>, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let mut peers: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut tasks: Sessions = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle = shared.config().udp_idle;
    loop {
        tokio::select! {
            _ = tunnel.cancel.cancelled() => break,
            Some(done) = tasks.join_next() => {
                let Ok((peer, left)) = done else { continue };
                // Only if no newer session took the peer's entry meanwhile (below).
                if peers.get(&peer).is_some_and(|tx| tx.is_closed()) {
                    peers.remove(&peer);
                }
                // Datagrams queued as the session expired go out on the peer's next session.
                if !left.is_empty() {
                    match peers.get(&peer) {
                        Some(tx) => left.into_iter().for_each(|d| drop(tx.try_send(d))),
                        None => open(&mut peers, &mut tasks, (&tunnel, &socket, idle), peer, left),
                    }
                }
            }
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    // ICMP errors surface here on some systems; they concern one peer only.
                    Err(_) => continue,
                };
                let mut datagram = Bytes::copy_from_slice(&buf[..n]);
                if let Some(tx) = peers.get(&peer) {
                    match tx.try_send(datagram) {
                        Ok(()) | Err(TrySendError::Full(_)) => continue, // sent, or queue full: dropped
                        // The peer's session just ended (idle expiry, data connection lost) and
                        // its task is not reaped yet: this datagram opens a new one.
                        Err(TrySendError::Closed(d)) => {
                            datagram = d;
                            peers.remove(&peer);
                        }
                    }
                }
                open(&mut peers, &mut tasks, (&tunnel, &socket, idle), peer, vec![datagram]);
            }
        }
    }
    tasks.shutdown().await;
}

type Sessions = JoinSet<(SocketAddr, Vec<Bytes>)>;

/// Opens a session for `peer` carrying `first` (nothing if the tunnel has too many).
fn open(
    peers: &mut HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    tasks: &mut Sessions,
    (tunnel, socket, idle): (&Arc<Tunnel>, &Arc<UdpSocket>, Duration),
    peer: SocketAddr,
    first: Vec<Bytes>,
) {
    if peers.len() >= MAX_UDP_SESSIONS || !tunnel.access.ip_rules.permits(peer.ip()) {
        return;
    }
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    for d in first {
        let _ = tx.try_send(d);
    }
    peers.insert(peer, tx);
    tunnel.session.demand();
    tunnel.stats.connections.fetch_add(1, Ordering::Relaxed);
    let (t, s) = (tunnel.clone(), socket.clone());
    tasks.spawn(async move {
        let left = peer_session(peer, rx, s, &t, idle).await;
        (peer, left)
    });
}

/// Carries one peer's datagrams until the tunnel closes, the data connection ends, or the
/// peer is idle; returns what the peer sent in the instant the idle expiry ended the session.
async fn peer_session(
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    socket: Arc<UdpSocket>,
    tunnel: &Tunnel,
    idle: Duration,
) -> Vec<Bytes> {
    let Ok(conn) = tunnel.session.take_data_conn().await else { return Vec::new() };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let header =
        StreamHeader { tunnel_id: tunnel.id.clone(), protocol: Protocol::Udp, peer: peer.to_string(), mux: false };
    if wr.write_all(&header.encode()).await.is_err() {
        return Vec::new();
    }
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let up = async {
        let mut scratch = Vec::with_capacity(2048);
        while let Some(d) = rx.recv().await {
            touch();
            tunnel.stats.add_in(d.len());
            if write_datagram(&mut wr, &d, &mut scratch).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = Vec::with_capacity(2048);
        while read_datagram(&mut rd, &mut buf).await.is_ok() {
            touch();
            tunnel.stats.add_out(buf.len());
            let _ = socket.send_to(&buf, peer).await;
        }
    };
    let expiry = async {
        loop {
            tokio::time::sleep(idle / 4).await;
            let quiet = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
            if quiet >= idle.as_millis() as u64 {
                break;
            }
        }
    };
    let expired = tokio::select! {
        _ = up => false,
        _ = down => false,
        _ = expiry => true,
        _ = tunnel.cancel.cancelled() => false,
    };
    let mut left = Vec::new();
    if expired {
        rx.close();
        while let Ok(d) = rx.try_recv() {
            left.push(d);
        }
    }
    left
}
