//! Upstreams of the HTTP edge, shared by both paths: a stream of the session's multiplexed
//! data connection, or a data connection of its own for clients without one, and the idle
//! ones kept per tunnel for the next request.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::Protocol;
use rustunnel_transport::mux::{mux, MuxConfig, MuxHandle, Role};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::either::Either;

use crate::session::{DataConn, DataConnError, Session};
use crate::state::Shared;
use crate::tunnel::Tunnel;

pub use crate::idle::IdlePool;
pub(super) use crate::idle::Upstream;

/// Whether an idle upstream is still open and silent: one that closed, or received bytes (a
/// local service that sent more than its response, after a bodiless one say), is out of step
/// and must not carry the next visitor's request.
pub(super) fn still_open(conn: &mut Upstream) -> bool {
    let mut byte = [0u8; 1];
    let mut rb = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(Pin::new(conn).poll_read(&mut cx, &mut rb), Poll::Pending)
}

/// Runs the driver of a session's new multiplexed data connection until it ends, the session
/// ends or the server stops.
fn start_mux(shared: &Arc<Shared>, session: &Session, conn: DataConn) -> MuxHandle {
    let (handle, _opener_accepts_nothing, driver) = mux(conn, Role::Opener, MuxConfig::data_link());
    let (stop, ended) = (shared.hard_stop().clone(), session.cancel.clone());
    shared.tasks().spawn(async move {
        tokio::select! {
            r = driver => if let Err(e) = r {
                tracing::debug!(error = %e, "multiplexed data connection ended");
            },
            _ = stop.cancelled() => {}
            _ = ended.cancelled() => {}
        }
    });
    handle
}

/// Where an upstream came from.
pub(super) enum Origin {
    /// Kept from an earlier request (the local side may have closed it meanwhile).
    Reused,
    /// A new mux stream (its header went in the OPEN frame).
    NewStream,
    /// A new data connection of its own: this stream header goes before the request.
    NewConn(Vec<u8>),
}

/// An upstream for the tunnel: an idle one, else a new mux stream or data connection. For a
/// tunnel whose upstreams each belong to one visitor address, only one of `visitor`'s, and a
/// new one names `visitor` in its stream header.
pub(super) async fn upstream(
    shared: &Arc<Shared>,
    tunnel: &Tunnel,
    fresh: bool,
    visitor: SocketAddr,
) -> Option<(Upstream, Origin)> {
    let key = tunnel.upstream_per_visitor.then(|| visitor.ip());
    while let Some((since, mut conn)) = (!fresh).then(|| tunnel.http_idle.pop(key)).flatten() {
        // Checked every time (a mux stream without a syscall): stray bytes that came while it
        // was idle would otherwise be read as the next visitor's response.
        if since.elapsed() < shared.config().upstream_idle && still_open(&mut conn) {
            return Some((conn, Origin::Reused));
        }
    }
    let peer = if tunnel.upstream_per_visitor { visitor.to_string() } else { String::new() };
    let header = StreamHeader { tunnel_id: tunnel.id.clone(), protocol: Protocol::Http, peer, mux: false }.encode();
    let session = &tunnel.session;
    if session.mux {
        match session.http_mux_stream(&header, |conn| start_mux(shared, session, conn)).await {
            Ok(stream) => return Some((Either::Right(stream), Origin::NewStream)),
            // As many streams as the multiplexer takes: this one gets a connection of its own.
            Err(DataConnError::MuxFull) => {}
            Err(_) => return None,
        }
    }
    let conn = session.take_data_conn().await.ok()?;
    Some((Either::Left(conn), Origin::NewConn(header)))
}

#[cfg(test)]
mod tests;
