//! An open tunnel as the server holds it: identity, the session that serves it, counters.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustunnel_proto::ip_rules::IpRules;
use rustunnel_proto::{Protocol, SpecError, TunnelInfo, TunnelSpec};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    pub http_idle: crate::idle::IdlePool,
    /// Who may reach it.
    pub access: Access,
    /// HTTP: the `Host` the local service gets instead of the public one (`--host-header`).
    pub host_header: Option<String>,
    /// HTTP: each upstream belongs to the visitor address that opened it (the client sends
    /// that address to the local service in a PROXY header).
    pub upstream_per_visitor: bool,
    /// Its client is leaving: no new requests or connections, the ones in flight finish.
    pub draining: std::sync::atomic::AtomicBool,
    /// Upgraded connections (WebSockets) open now: they hold a concurrency permit but are not
    /// requests a drain waits for (they may last for hours; closing the tunnel ends them).
    pub upgraded: std::sync::atomic::AtomicUsize,
}

/// Who may reach a tunnel: the login its visitors must present and the addresses it accepts.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// SHA-256 of the `user:password` visitors must present (HTTP Basic). Only the digest is
    /// kept, in memory; the edge hashes what a visitor sends and compares in constant time.
    pub basic_auth: Option<[u8; 32]>,
    /// Judged on the visitor's L4 address.
    pub ip_rules: IpRules,
}

impl Access {
    /// The access rules of a tunnel request that passed [`TunnelSpec::check`].
    pub fn from_spec(spec: &TunnelSpec) -> Result<Self, SpecError> {
        spec.check()?;
        let basic_auth = spec.basic_auth.as_ref().map(|a| Sha256::digest(a.as_str().as_bytes()).into());
        let ip_rules = IpRules::parse(&spec.cidr_allow, &spec.cidr_deny)?;
        Ok(Access { basic_auth, ip_rules })
    }

    /// The same login (compared in constant time) and the same address rules.
    pub fn same_as(&self, other: &Access) -> bool {
        let same_login = match (&self.basic_auth, &other.basic_auth) {
            (None, None) => true,
            (Some(a), Some(b)) => bool::from(a.ct_eq(b)),
            _ => false,
        };
        same_login && self.ip_rules == other.ip_rules
    }
}

impl Tunnel {
    /// Takes one of the tunnel's concurrency permits for a visitor's request or connection
    /// (`None`: over the cap), and tells the session visitors are waiting on its client, so a
    /// client that went silent is found out in seconds ([`Session::demand`]).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.concurrency.clone().try_acquire_owned().ok()?;
        self.session.demand();
        Some(permit)
    }

    /// A freshly opened tunnel with zeroed counters; `info.tunnel_id` is its id.
    pub fn new(
        spec: &TunnelSpec,
        access: Access,
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
            access,
            host_header: spec.host_header.clone(),
            upstream_per_visitor: spec.upstream_per_visitor,
            draining: Default::default(),
            upgraded: Default::default(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
