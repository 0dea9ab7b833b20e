//! The upstreams an HTTP tunnel keeps between requests: data connections (or streams of the
//! session's multiplexed one) that served a request and can serve the next. The tunnel holds
//! them; the HTTP edge takes and returns them.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustunnel_transport::mux::MuxStream;
use tokio_util::either::Either;

use crate::session::DataConn;

/// Where a request goes: a data connection of its own, or a stream of the session's
/// multiplexed data connection (clients that take them).
pub type Upstream = Either<DataConn, MuxStream>;
/// Idle data connections kept per tunnel.
const MAX_IDLE: usize = 1024;

/// Data connections (or mux streams) of one tunnel that served an HTTP request and can serve
/// another (the client keeps each one's connection to the local service open).
#[derive(Default)]
pub struct IdlePool {
    /// Oldest first; each with the visitor address it belongs to, for tunnels whose upstreams
    /// carry one (PROXY protocol to the local service), else `None`.
    conns: Mutex<Vec<(Instant, Upstream, Option<IpAddr>)>>,
}

impl IdlePool {
    /// The newest kept upstream of `visitor` (`None`: of any visitor).
    pub(crate) fn pop(&self, visitor: Option<IpAddr>) -> Option<(Instant, Upstream)> {
        let mut conns = self.conns.lock();
        let i = match visitor {
            None => conns.len().checked_sub(1)?,
            Some(ip) => conns.iter().rposition(|c| c.2 == Some(ip))?,
        };
        let (since, conn, _) = conns.remove(i);
        Some((since, conn))
    }

    /// Keeps `conn` (of `visitor`, see [`IdlePool::pop`]), first taking out the expired ones
    /// (dropped outside the lock); one lock per request that ends.
    pub(crate) fn push(&self, conn: Upstream, max_idle: Duration, visitor: Option<IpAddr>) {
        let now = Instant::now();
        let expired = {
            let mut conns = self.conns.lock();
            let expired = drain_older(&mut conns, now, max_idle);
            if conns.len() < MAX_IDLE {
                conns.push((now, conn, visitor));
            }
            expired
        };
        drop(expired);
    }

    /// Removes the upstreams idle longer than `max_idle`, to be dropped outside the lock.
    pub(crate) fn take_older_than(&self, max_idle: Duration) -> Vec<(Instant, Upstream, Option<IpAddr>)> {
        let mut conns = self.conns.lock();
        drain_older(&mut conns, Instant::now(), max_idle)
    }

    /// Closes the upstreams idle longer than `max_idle` (the server's `upstream_idle`, and
    /// with them the client's connections to the local service); the server calls it
    /// periodically, so a tunnel whose traffic stopped does not hold them until its next request.
    pub fn sweep(&self, max_idle: Duration) {
        drop(self.take_older_than(max_idle));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.lock().len()
    }
}

/// Takes the entries idle longer than `max_idle` at `now` out of `conns` (oldest first).
fn drain_older<T>(
    conns: &mut Vec<(Instant, Upstream, T)>,
    now: Instant,
    max_idle: Duration,
) -> Vec<(Instant, Upstream, T)> {
    let stale = conns.iter().take_while(|(t, _, _)| now.duration_since(*t) > max_idle).count();
    conns.drain(..stale).collect()
}
