//! The state the control plane, edges and API share: a handle over private tables. Callers
//! use its methods (lookups, routing, pool choice, snapshots); none of them takes a lock
//! itself, and no lock is held across an await.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, FailureLimiter};
use crate::config::Config;
use crate::live::Live;
use crate::p2p::rendezvous::P2pHub;
use crate::pool::{Alert, Endpoint, Member, Pick, PoolKey, PoolMemberSnapshot, PoolSnapshot, PoolTable};
use crate::registry::{ClaimChange, ClaimRecord, Registry};
use crate::session::Session;
use crate::store::{InstanceLock, Store};
use crate::tls::TlsMaterial;
use crate::tunnel::Tunnel;

/// Where the edge sends the next request or connection for a name or pool.
pub enum RouteTo {
    Tunnel(Arc<Tunnel>),
    /// A pool with no healthy member.
    NoneAvailable,
    /// The name's client is gone, and the name is held for it (it may be reconnecting).
    ClientGone,
    NotFound,
}

/// What a server starts with; everything else in [`Shared`] begins empty.
pub(crate) struct Parts {
    pub instance: InstanceLock,
    pub config: Config,
    pub store: Store,
    pub auth: Authenticator,
    pub tls: TlsMaterial,
    pub registry: Registry,
    pub public_http_port: Option<u16>,
    pub public_https_port: Option<u16>,
    pub alerts: tokio::sync::mpsc::Sender<Alert>,
}

/// Everything the control plane and edges share.
pub struct Shared {
    /// This server's claim on its data directory and region, released once it has stopped.
    instance: Mutex<Option<InstanceLock>>,
    config: Config,
    store: Store,
    auth: Authenticator,
    /// Wrong `--basic-auth` credentials per visitor address, across tunnels.
    visitor_logins: FailureLimiter,
    tls: TlsMaterial,
    registry: Mutex<Registry>,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
    tunnels: RwLock<HashMap<String, Arc<Tunnel>>>,
    /// HTTP routing table: subdomain -> tunnel.
    routes: RwLock<HashMap<String, Arc<Tunnel>>>,
    /// Cancelled when the server stops accepting (start of graceful shutdown).
    stop_accepting: CancellationToken,
    /// Cancelled when everything must end now (end of drain, or abort).
    hard_stop: CancellationToken,
    tasks: TaskTracker,
    /// Public ports shown in URLs.
    public_http_port: Option<u16>,
    public_https_port: Option<u16>,
    /// Address TCP/UDP tunnel listeners bind to.
    tunnel_bind_ip: IpAddr,
    /// Server-wide counters for `/metrics`.
    metrics: crate::metrics::Metrics,
    /// Load-balanced pools and their members (see [`crate::pool`]).
    pools: Mutex<PoolTable>,
    /// Serialises pool creation and joins: creating a pool claims and binds across awaits.
    pool_gate: tokio::sync::Mutex<()>,
    /// Random per-process key of the group-key verifiers; group keys themselves are never kept.
    pool_secret: [u8; 32],
    /// Pool alerts, delivered in order by one task.
    alerts: tokio::sync::mpsc::Sender<Alert>,
    /// P2P rendezvous, relay counters and reflector (see [`crate::p2p`]).
    p2p: P2pHub,
    /// Wakes the claim writer after registry changes.
    claims_changed: tokio::sync::Notify,
    /// Settings a reload may change while running (see [`crate::reload`]).
    live: Live,
}

/// Settings, services and tokens, read as they are.
impl Shared {
    pub(crate) fn new(parts: Parts) -> Shared {
        Shared {
            instance: Mutex::new(Some(parts.instance)),
            visitor_logins: FailureLimiter::default(),
            registry: Mutex::new(parts.registry),
            sessions: RwLock::new(HashMap::new()),
            tunnels: RwLock::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            stop_accepting: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            public_http_port: parts.public_http_port,
            public_https_port: parts.public_https_port,
            tunnel_bind_ip: parts.config.control_addr.ip(),
            metrics: crate::metrics::Metrics::default(),
            pools: Mutex::new(PoolTable::default()),
            pool_gate: tokio::sync::Mutex::new(()),
            pool_secret: rand::random(),
            alerts: parts.alerts,
            p2p: P2pHub::default(),
            claims_changed: tokio::sync::Notify::new(),
            live: Live::new(&parts.config),
            auth: parts.auth,
            store: parts.store,
            tls: parts.tls,
            config: parts.config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }
    pub fn visitor_logins(&self) -> &FailureLimiter {
        &self.visitor_logins
    }
    pub fn tls(&self) -> &TlsMaterial {
        &self.tls
    }
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
    pub fn p2p(&self) -> &P2pHub {
        &self.p2p
    }
    pub fn live(&self) -> &Live {
        &self.live
    }
    /// Cancelled when the server stops accepting (start of graceful shutdown).
    pub fn stop_accepting(&self) -> &CancellationToken {
        &self.stop_accepting
    }
    /// Cancelled when everything must end now (end of drain, or abort).
    pub fn hard_stop(&self) -> &CancellationToken {
        &self.hard_stop
    }
    /// The tracker every task of this server is spawned on.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
    pub fn public_http_port(&self) -> Option<u16> {
        self.public_http_port
    }
    pub fn public_https_port(&self) -> Option<u16> {
        self.public_https_port
    }
    /// Address TCP/UDP tunnel listeners bind to.
    pub fn tunnel_bind_ip(&self) -> IpAddr {
        self.tunnel_bind_ip
    }

    fn url_port(port: Option<u16>, default: u16) -> String {
        match port {
            Some(p) if p != default => format!(":{p}"),
            _ => String::new(),
        }
    }

    /// Public URLs of an HTTP tunnel; the first is the primary one.
    pub fn http_urls(&self, sub: &str) -> Vec<String> {
        let d = &self.config.domain;
        let mut urls = Vec::new();
        let http = self.public_http_port.map(|p| format!("http://{sub}.{d}{}", Self::url_port(Some(p), 80)));
        let https = self.public_https_port.map(|p| format!("https://{sub}.{d}{}", Self::url_port(Some(p), 443)));
        // With an operator certificate HTTPS is the URL to hand out; with the generated
        // self-signed one, plain HTTP is what works without extra flags.
        let https_first = matches!(self.config.tls, crate::config::TlsSource::Files { .. });
        if https_first {
            urls.extend(https.clone());
            urls.extend(http);
        } else {
            urls.extend(http);
            urls.extend(https);
        }
        urls
    }

    /// Every metric in the Prometheus text format, with the gauges read now.
    pub fn metrics_text(&self) -> String {
        let tunnels = self.tunnels();
        self.metrics.render(&crate::metrics::Sample {
            tunnels: &tunnels,
            sessions: self.session_count(),
            auth_failures: self.auth.failure_counts(),
            p2p_relayed_bytes: self.p2p.relayed_total(),
            p2p_relayed_streams: self.p2p.relayed_streams.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The last steps of every stop: the tasks end (bounded wait), the database closes, and
    /// the data directory and region are free for the next server.
    pub(crate) async fn wind_down(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        self.store.close().await;
        drop(self.instance.lock().take());
    }
}

/// Sessions, tunnels and HTTP routes.
impl Shared {
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(id).cloned()
    }

    /// Every connected session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.read().values().cloned().collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    pub fn add_session(&self, session: Arc<Session>) {
        self.sessions.write().insert(session.id.clone(), session);
    }

    pub(crate) fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.write().remove(id)
    }

    pub fn tunnel(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.read().get(id).cloned()
    }

    /// Every open tunnel.
    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        self.tunnels.read().values().cloned().collect()
    }

    pub fn tunnel_count(&self) -> usize {
        self.tunnels.read().len()
    }

    /// The open tunnels of one session.
    pub fn tunnels_of(&self, session_id: &str) -> Vec<Arc<Tunnel>> {
        self.tunnels.read().values().filter(|t| t.session.id == session_id).cloned().collect()
    }

    pub(crate) fn add_tunnel(&self, tunnel: Arc<Tunnel>) {
        self.tunnels.write().insert(tunnel.id.clone(), tunnel);
    }

    pub(crate) fn remove_tunnel(&self, id: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.write().remove(id)
    }

    /// The tunnel serving an HTTP subdomain (pools aside: see [`Shared::route_to`]).
    pub fn route(&self, sub: &str) -> Option<Arc<Tunnel>> {
        self.routes.read().get(sub).cloned()
    }

    pub(crate) fn add_route(&self, sub: &str, tunnel: Arc<Tunnel>) {
        self.routes.write().insert(sub.to_string(), tunnel);
    }

    /// Removes the route of `sub` if it still leads to `tunnel_id`.
    pub(crate) fn remove_route(&self, sub: &str, tunnel_id: &str) {
        let mut routes = self.routes.write();
        if routes.get(sub).is_some_and(|t| t.id == tunnel_id) {
            routes.remove(sub);
        }
    }

    /// Requests or connections a tunnel is serving now.
    pub fn in_flight(&self, t: &Tunnel) -> usize {
        self.config.max_requests_per_tunnel.saturating_sub(t.concurrency.available_permits())
    }

    /// Whether any tunnel has traffic in flight (requests or connections holding permits).
    pub fn any_in_flight(&self) -> bool {
        self.tunnels.read().values().any(|t| self.in_flight(t) > 0)
    }
}

/// Names and ports: the registry, and the claim writer that persists it.
impl Shared {
    /// Runs `f` on the registry, then wakes the claim writer, which persists the change in the
    /// background: claiming never waits on the database.
    pub(crate) fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let r = f(&mut self.registry.lock());
        self.claims_changed.notify_one();
        r
    }

    /// Whether a name is held for a client that is gone (it may be reconnecting).
    pub fn awaits_owner(&self, sub: &str) -> bool {
        self.registry.lock().awaits_owner(Instant::now(), sub)
    }

    /// Resolves after a registry change since the last call.
    pub(crate) async fn claims_changed(&self) {
        self.claims_changed.notified().await
    }

    /// The changes since the last call, for the claim writer.
    pub(crate) fn take_claim_changes(&self, now: Instant, wall_ms: i64) -> Vec<ClaimChange> {
        self.registry.lock().take_changes(now, wall_ms)
    }

    /// Every live claim, for a full rewrite of the stored ones.
    pub(crate) fn claims_snapshot(&self, now: Instant, wall_ms: i64) -> Vec<ClaimRecord> {
        self.registry.lock().snapshot(now, wall_ms)
    }

    /// Forgets reservations that have ended.
    pub(crate) fn prune_claims(&self, now: Instant) {
        self.registry.lock().prune(now)
    }
}

/// Load-balanced pools: membership, routing, health and snapshots.
impl Shared {
    /// Runs `f` on the pool table.
    pub(crate) fn with_pools<R>(&self, f: impl FnOnce(&mut PoolTable) -> R) -> R {
        f(&mut self.pools.lock())
    }

    /// Holds off other pool creations and joins while one claims and binds across awaits.
    pub(crate) async fn pool_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.pool_gate.lock().await
    }

    /// HMAC-SHA256 of the group key under the per-process secret, bound to the pool's identity.
    pub(crate) fn group_verifier(&self, key: &PoolKey, group_key: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.pool_secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        for part in [key.protocol.as_str(), &key.name, group_key] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Hands an alert to the delivery task (dropped, with a log line, when its queue is full).
    pub(crate) fn queue_alert(&self, alert: Alert) {
        tracing::warn!(pool = %alert.pool.name, protocol = %alert.pool.protocol, kind = ?alert.kind, "pool alert");
        if self.alerts.try_send(alert).is_err() {
            tracing::warn!("pool alert queue full; alert dropped");
        }
    }

    /// The member of pool `key` that takes the next request or connection.
    pub fn pick_member(&self, key: &PoolKey) -> RouteTo {
        let tunnels = self.tunnels.read();
        let pick = self.pools.lock().pick(key, |id| tunnels.get(id).map(|t| self.in_flight(t)).unwrap_or(usize::MAX));
        match pick {
            Pick::Member(id) => tunnels.get(&id).cloned().map(RouteTo::Tunnel).unwrap_or(RouteTo::NoneAvailable),
            Pick::NoneAvailable => RouteTo::NoneAvailable,
            Pick::NoPool => RouteTo::NotFound,
        }
    }

    /// HTTP routing: a pool's subdomain picks a member per request; other names map to their tunnel.
    pub fn route_to(&self, sub: &str) -> RouteTo {
        let pool = self.pools.lock().by_subdomain(sub).cloned();
        match pool {
            Some(key) => self.pick_member(&key),
            None => match self.route(sub) {
                // Its client is leaving on purpose: as after the close that follows.
                Some(t) if t.is_draining() => RouteTo::NotFound,
                Some(t) => RouteTo::Tunnel(t),
                None if self.awaits_owner(sub) => RouteTo::ClientGone,
                None => RouteTo::NotFound,
            },
        }
    }

    /// A member's health check result, as its client reported it.
    pub fn report_health(&self, tunnel_id: &str, healthy: bool, detail: &str) {
        let alert = self.pools.lock().set_health(tunnel_id, healthy, detail);
        tracing::info!(tunnel = %tunnel_id, healthy, detail = %detail.chars().take(80).collect::<String>(), "member health");
        if let Some(a) = alert {
            self.queue_alert(a);
        }
    }

    /// Every pool with its members, their health and the traffic they served, for the
    /// management API and `rustunnel tunnels list`.
    pub fn pools(&self) -> Vec<PoolSnapshot> {
        struct Raw {
            snap: PoolSnapshot,
            members: Vec<Member>,
        }
        let raw: Vec<Raw> = self
            .pools
            .lock()
            .iter()
            .map(|p| {
                let (subdomain, remote_port) = match &p.endpoint {
                    Endpoint::Subdomain(s) => (Some(s.clone()), None),
                    Endpoint::Port(n) => (None, Some(*n)),
                };
                Raw {
                    snap: PoolSnapshot {
                        name: p.key.name.clone(),
                        protocol: p.key.protocol,
                        public_url: p.public_url.clone(),
                        subdomain,
                        remote_port,
                        healthy_members: p.available(),
                        members: Vec::new(),
                    },
                    members: p.members().to_vec(),
                }
            })
            .collect();
        let tunnels = self.tunnels.read();
        let mut out: Vec<PoolSnapshot> = raw
            .into_iter()
            .map(|mut r| {
                r.snap.members = r
                    .members
                    .into_iter()
                    .filter_map(|m| {
                        let t = tunnels.get(&m.tunnel_id)?;
                        let (bytes_in, bytes_out, requests, connections) = t.stats.get();
                        Some(PoolMemberSnapshot {
                            tunnel_id: m.tunnel_id,
                            name: t.name.clone(),
                            healthy: m.healthy,
                            draining: m.draining,
                            health_detail: m.detail,
                            health_check: m.health_check,
                            local_addr: t.local_addr.clone(),
                            client_addr: t.session.peer.to_string(),
                            requests,
                            connections,
                            bytes_in,
                            bytes_out,
                            in_flight: self.in_flight(t),
                        })
                    })
                    .collect();
                r.snap
            })
            .collect();
        out.sort_by(|a, b| (a.protocol.as_str(), &a.name).cmp(&(b.protocol.as_str(), &b.name)));
        out
    }

    /// The pool a tunnel belongs to, if any (for tunnel listings).
    pub fn pool_of(&self, tunnel_id: &str) -> Option<String> {
        self.pools.lock().pool_of(tunnel_id).map(|p| p.key.name.clone())
    }
}
