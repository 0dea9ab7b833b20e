//! An open tunnel as the server holds it: identity, the session that serves it, counters.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustunnel_proto::{Protocol, TunnelInfo, TunnelSpec};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::session::Session;

/// Traffic counters, updated by the edges as bytes move.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Visitor -> local service.
    pub bytes_in: AtomicU64,
    /// Local service -> visitor.
    pub bytes_out: AtomicU64,
    pub requests: AtomicU64,
    pub connections: AtomicU64,
}

impl TunnelStats {
    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
        )
    }
}

pub struct Tunnel {
    pub id: String,
    pub name: String,
    pub protocol: Protocol,
    pub info: TunnelInfo,
    pub local_addr: String,
    pub session: Arc<Session>,
    pub opened_at_ms: i64,
    pub stats: Arc<TunnelStats>,
    /// Cancelled when the tunnel closes: its listener stops and its connections end at once.
    pub cancel: CancellationToken,
    /// Caps concurrent requests/connections of this tunnel so one tunnel cannot starve others.
    pub concurrency: Arc<Semaphore>,
    /// Data connections kept open for the next HTTP request (lean HTTP/1.1 path).
    pub http_idle: crate::edge::IdlePool,
    /// Digest of `user:password` visitors must present (HTTP Basic); see [`basic_auth_digest`].
    pub basic_auth: Option<[u8; 32]>,
}

/// SHA-256 of the `user:password` a tunnel asks of its visitors. Only the digest is kept, in
/// memory; the edge hashes what a visitor sends and compares in constant time.
pub fn basic_auth_digest(spec: &TunnelSpec) -> Option<[u8; 32]> {
    spec.basic_auth.as_ref().map(|a| Sha256::digest(a.as_str().as_bytes()).into())
}

impl Tunnel {
    /// A freshly opened tunnel with zeroed counters; `info.tunnel_id` is its id.
    pub fn new(
        spec: &TunnelSpec,
        info: TunnelInfo,
        session: Arc<Session>,
        cancel: CancellationToken,
        max_concurrent: usize,
    ) -> Self {
        Tunnel {
            id: info.tunnel_id.clone(),
            name: spec.name.clone(),
            protocol: spec.protocol,
            local_addr: spec.local_addr.clone(),
            info,
            session,
            opened_at_ms: crate::store::now_ms(),
            stats: Arc::new(TunnelStats::default()),
            cancel,
            concurrency: Arc::new(Semaphore::new(max_concurrent)),
            http_idle: Default::default(),
            basic_auth: basic_auth_digest(spec),
        }
    }
}
