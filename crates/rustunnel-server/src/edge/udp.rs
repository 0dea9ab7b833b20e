//! UDP tunnels: one socket per tunnel. Each remote address gets its own session, carried on a
//! data connection as length-prefixed datagrams (boundaries preserved), and expires when idle.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustunnel_proto::limits::MAX_DATAGRAM;
use rustunnel_proto::stream::{read_datagram, write_datagram, StreamHeader};
use rustunnel_proto::Protocol;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::server::Shared;
use crate::tunnel::Tunnel;

/// Most concurrent remote peers per UDP tunnel.
pub const MAX_UDP_SESSIONS: usize = 1024;
/// Datagrams queued per peer while its data connection is busy; beyond that they are dropped,
/// as a congested UDP path would.
const PEER_QUEUE: usize = 256;

pub async fn run(socket: UdpSocket, tunnel: Arc<Tunnel>, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let mut peers: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut tasks: JoinSet<SocketAddr> = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle = shared.config.udp_idle;
    loop {
        tokio::select! {
            _ = tunnel.cancel.cancelled() => break,
            Some(done) = tasks.join_next() => {
                if let Ok(peer) = done {
                    peers.remove(&peer);
                }
            }
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    // ICMP errors surface here on some systems; they concern one peer only.
                    Err(_) => continue,
                };
                let datagram = Bytes::copy_from_slice(&buf[..n]);
                if let Some(tx) = peers.get(&peer) {
                    if tx.try_send(datagram).is_ok() {
                        continue;
                    }
                    if !tx.is_closed() {
                        continue; // queue full: drop
                    }
                    peers.remove(&peer);
                    continue;
                }
                if peers.len() >= MAX_UDP_SESSIONS {
                    continue;
                }
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let _ = tx.try_send(datagram);
                peers.insert(peer, tx);
                tunnel.stats.connections.fetch_add(1, Ordering::Relaxed);
                let (t, s) = (tunnel.clone(), socket.clone());
                tasks.spawn(async move {
                    peer_session(peer, rx, s, &t, idle).await;
                    peer
                });
            }
        }
    }
    tasks.shutdown().await;
}

async fn peer_session(
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    socket: Arc<UdpSocket>,
    tunnel: &Tunnel,
    idle: Duration,
) {
    let Ok(conn) = tunnel.session.take_data_conn().await else { return };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let header =
        StreamHeader { tunnel_id: tunnel.id.clone(), protocol: Protocol::Udp, peer: peer.to_string(), mux: false };
    if wr.write_all(&header.encode()).await.is_err() {
        return;
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
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = expiry => {}
        _ = tunnel.cancel.cancelled() => {}
    }
}
