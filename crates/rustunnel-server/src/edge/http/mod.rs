//! The HTTP and HTTPS edges. Requests are routed by `Host: <sub>.<domain>`.
//!
//! Each visitor connection takes one of two paths, named by role:
//! - [`lean`]: plain HTTP/1.1 requests, parsed and forwarded by the edge itself ([`head`]).
//! - [`hyper`]: HTTP/2 and the HTTP/1 requests the lean path hands over (HTTP/1.0, upgrades,
//!   chunked requests, ...), served and forwarded by hyper.
//!
//! What both need lives below them: the request policy ([`policy`]: route, access, admission,
//! the request log), the limits and header lists ([`limits`]), the edge's pages ([`pages`]),
//! the upstreams and the idle ones kept per tunnel ([`upstream`]), the reset on close of a
//! visitor connection ([`reset`]). The hyper path also reads through [`framing`] (the
//! smuggling tracker and the HTTP/2 frame bound of [`h2flood`]) and [`stall`] (slow readers).
use std::sync::Arc;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::framing::{Tracked, Tracker};
use self::hyper::{Ctx, TrackedExecutor};
use self::reset::ResetOnClose;
use crate::state::Shared;

mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod h2flood;
mod head;
mod hyper;
mod lean;
mod limits;
mod pages;
mod policy;
mod reset;
mod stall;
mod upstream;

pub use policy::subdomain_of;
pub use upstream::IdlePool;

/// Accept loop of one edge (plain HTTP when `tls` is `None`).
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let exec = TrackedExecutor::new(shared.clone());
    let client = hyper::client(&shared, exec.clone());
    let graceful = GracefulShutdown::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, shared.stop_accepting(), "HTTP edge").await
        else {
            break;
        };
        let ctx = Ctx::new(shared.clone(), client.clone(), peer, scheme);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let exec = exec.clone();
        shared.tasks().spawn(async move {
            let (mut ctx, mut stream) = (ctx, stream);
            if ctx.shared.config().proxy_protocol_from.trusts(peer.ip()) {
                // A balancer in front: the visitor is the one its PROXY header names.
                let Some(visitor) = super::proxy_header::read_visitor(&mut stream, peer, &ctx.shared).await else {
                    return;
                };
                ctx.peer = visitor;
            }
            let stop = ctx.shared.hard_stop().clone();
            match tls {
                None => serve_http1(stream, ctx, watcher, exec, &stop).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(
                        ctx.shared.config().handshake_timeout,
                        acceptor.accept(rustunnel_transport::splice::ReadAhead::new(stream)),
                    );
                    let Ok(Ok(s)) = hs.await else { return };
                    if s.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                        let io = Tracked::new(s, Tracker::off(), ctx.flag.clone());
                        hyper::serve_conn(io, ctx, watcher, exec, &stop).await;
                    } else {
                        serve_http1(s, ctx, watcher, exec, &stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = shared.hard_stop().cancelled() => {}
    }
}

/// An HTTP/1 connection: the lean path first; what it hands over goes to hyper, whose
/// tracker stops by itself at an HTTP/2 (h2c) preface.
async fn serve_http1<I>(io: I, ctx: Ctx, watcher: Watcher, exec: TrackedExecutor, stop: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + ResetOnClose + Unpin + Send + 'static,
{
    let visitor = lean::Visitor { shared: &ctx.shared, peer: ctx.peer, scheme: ctx.scheme };
    if let lean::End::HandOver(io, pending) = lean::serve(io, visitor).await {
        let io = Tracked::replaying(pending, io, Tracker::new(), ctx.flag.clone());
        hyper::serve_conn(io, ctx, watcher, exec, stop).await;
    }
}
