//! TCP tunnels: one listener per tunnel; each visitor connection takes a data connection from
//! the client's pool and is spliced to it with half-close preserved.
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::Protocol;
use rustunnel_transport::tcp::reset_on_close;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::Counted;
use crate::session::DataConn;
use crate::state::Shared;
use crate::tunnel::Tunnel;

pub async fn run(listener: TcpListener, tunnel: Arc<Tunnel>, shared: Arc<Shared>) {
    let cancel = tunnel.cancel.clone();
    accept_loop(listener, &cancel, "tcp tunnel", tunnel, shared, visit).await
}

/// A visitor at `peer` on a tunnel's listener: judged by the tunnel's rules, then forwarded.
fn visit(stream: TcpStream, peer: SocketAddr, tunnel: &Arc<Tunnel>, shared: &Shared) {
    if tunnel.is_draining() {
        // Its client is leaving: the connections it serves finish, new ones are refused.
        return;
    }
    serve(stream, peer, tunnel.clone(), shared);
}

/// The listener of a TCP pool: each connection goes to the member the pool picks (healthy,
/// least connections); with no healthy member the connection is closed at once.
pub async fn run_pool(
    listener: TcpListener,
    key: crate::pool::PoolKey,
    cancel: tokio_util::sync::CancellationToken,
    shared: Arc<Shared>,
) {
    accept_loop(listener, &cancel, "tcp pool", key, shared, visit_pool).await
}

/// A visitor at `peer` on a pool's listener: handed to the member the pool picks.
fn visit_pool(stream: TcpStream, peer: SocketAddr, key: &crate::pool::PoolKey, shared: &Shared) {
    let crate::state::RouteTo::Tunnel(tunnel) = shared.pick_member(key) else {
        tracing::debug!(pool = %key.name, "no healthy member; connection refused");
        return;
    };
    // Every member has the pool's rules.
    serve(stream, peer, tunnel, shared);
}

/// Accepts visitors until `cancel` or the server stops accepting, and hands each to `visit`
/// with `target` (a tunnel or a pool).
async fn accept_loop<T, V>(
    listener: TcpListener,
    cancel: &tokio_util::sync::CancellationToken,
    what: &'static str,
    target: T,
    shared: Arc<Shared>,
    visit: V,
) where
    T: Clone + Send + Sync + 'static,
    V: Fn(TcpStream, SocketAddr, &T, &Shared) + Copy + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = crate::listener::accept(&listener, shared.stop_accepting(), what) => match r {
                Some(x) => x,
                None => return,
            },
        };
        if shared.config().proxy_protocol_from.trusts(peer.ip()) {
            // A balancer in front: its header names the visitor, read off the accept loop.
            let (t, s) = (target.clone(), shared.clone());
            shared.tasks().spawn(async move {
                if let Some((stream, peer)) = super::proxy_header::visitor(stream, peer, &s).await {
                    visit(stream, peer, &t, &s);
                }
            });
            continue;
        }
        visit(stream, peer, &target, &shared);
    }
}

/// Judges a visitor by `tunnel`'s address rules and connection cap, then forwards it.
fn serve(stream: TcpStream, peer: SocketAddr, tunnel: Arc<Tunnel>, shared: &Shared) {
    if !tunnel.access.ip_rules.permits(peer.ip()) {
        refused(&tunnel, peer);
        return;
    }
    let Some(permit) = tunnel.admit() else {
        // Over the tunnel's cap: refuse this one connection only.
        return;
    };
    tunnel.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.tasks().spawn(async move {
        let _permit = permit;
        forward(stream, peer.to_string(), &tunnel).await;
    });
}

/// A visitor outside the tunnel's address rules: the connection is closed unanswered.
fn refused(tunnel: &Tunnel, peer: std::net::SocketAddr) {
    tracing::debug!(tunnel = %tunnel.id, %peer, "visitor address refused by the tunnel's rules");
}

/// Serves one visitor until its copy ends or the tunnel is closed. When the copy fails (the
/// data connection cut without a clean TLS close, a reset) or the tunnel closes under it, the
/// visitor's connection is reset rather than closed, so a cut-off transfer never looks
/// complete to it.
async fn forward(mut visitor: TcpStream, peer: String, tunnel: &Tunnel) {
    let copied = tokio::select! {
        r = copy(&mut visitor, peer, tunnel) => r,
        _ = tunnel.cancel.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel closed")),
    };
    if let Err(e) = copied {
        tracing::debug!(tunnel = %tunnel.id, error = %e, "tcp stream failed; visitor reset");
        reset_on_close(&visitor);
    }
}

/// Copies between the visitor and a data connection of the tunnel's client. A plain data
/// connection is reset when the copy fails, so the client resets its local service's
/// connection; a TLS one is dropped without close_notify, which the client takes as an error.
async fn copy(visitor: &mut TcpStream, peer: String, tunnel: &Tunnel) -> io::Result<()> {
    // Boxed so the wait's state (timers, notification) is freed before the long splice.
    let Ok(conn) = Box::pin(tunnel.session.take_data_conn()).await else {
        // No data connection came: nothing was forwarded, the visitor is just closed.
        return Ok(());
    };
    let header = StreamHeader { tunnel_id: tunnel.id.clone(), protocol: Protocol::Tcp, peer, mux: false };
    let mut conn = conn;
    let header = header.encode();
    conn.write_all(&header).await?;
    tunnel.stats.add_in(header.len());
    let stats = &tunnel.stats;
    match conn {
        // Both hops plain TCP: spliced in the kernel, counted as it moves.
        DataConn::Plain(mut data) => {
            let r = rustunnel_transport::zerocopy::splice_tcp(visitor, &mut data, &|n| stats.add_in(n), &|n| {
                stats.add_out(n)
            })
            .await;
            if r.is_err() {
                reset_on_close(&data);
            }
            r.map(drop)
        }
        // TLS 1.3 records of our own: sealed from and opened into the visitor's socket directly.
        DataConn::Tls(mut lean) if lean.owns_records() => {
            lean.splice_tcp(visitor, &|n| stats.add_in(n), &|n| stats.add_out(n)).await.map(drop)
        }
        tls => {
            let mut data = Counted::new(tls, tunnel.stats.clone());
            rustunnel_transport::splice::splice(visitor, &mut data).await.map(drop)
        }
    }
}
