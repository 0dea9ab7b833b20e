//! Wiring: [`ServerHandle::spawn`] binds every listener from a [`Config`], starts the control
//! plane and the edges under one task tracker, and returns the bound addresses. Shutdown is
//! explicit and graceful: stop accepting, tell clients, drain, stop.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustunnel_proto::control::CloseReason;
use rustunnel_proto::{ErrorCode, Protocol, ServerMsg, TunnelInfo, TunnelSpec};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::pool::{
    Alert, Endpoint, Member, Pick, Pool, PoolError, PoolKey, PoolMemberSnapshot, PoolSnapshot, PoolTable,
};
use crate::registry::{ClaimError, PortKind, Registry};
use crate::rights::Rights;
use crate::session::Session;
use crate::store::{now_ms, CloseRecord, HistoryRecord, Store, StoreError};
use crate::tls::{TlsError, TlsMaterial};
use crate::tunnel::{Access, Tunnel};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Everything the control plane and edges share.
pub struct Shared {
    /// This server's claim on its data directory and region, released once it has stopped.
    instance: Mutex<Option<crate::store::InstanceLock>>,
    pub config: Config,
    pub store: Store,
    pub auth: Authenticator,
    /// Wrong `--basic-auth` credentials per visitor address, across tunnels.
    pub visitor_logins: crate::auth::FailureLimiter,
    pub tls: TlsMaterial,
    pub registry: Mutex<Registry>,
    pub sessions: RwLock<HashMap<String, Arc<Session>>>,
    pub tunnels: RwLock<HashMap<String, Arc<Tunnel>>>,
    /// HTTP routing table: subdomain -> tunnel.
    pub routes: RwLock<HashMap<String, Arc<Tunnel>>>,
    /// Cancelled when the server stops accepting (start of graceful shutdown).
    pub stop_accepting: CancellationToken,
    /// Cancelled when everything must end now (end of drain, or abort).
    pub hard_stop: CancellationToken,
    pub tasks: TaskTracker,
    /// Public ports shown in URLs.
    pub public_http_port: Option<u16>,
    pub public_https_port: Option<u16>,
    /// Address TCP/UDP tunnel listeners bind to.
    pub tunnel_bind_ip: std::net::IpAddr,
    /// Server-wide counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Load-balanced pools and their members (see [`crate::pool`]).
    pub pools: Mutex<PoolTable>,
    /// Serialises pool creation and joins: creating a pool claims and binds across awaits.
    pub pool_gate: tokio::sync::Mutex<()>,
    /// Random per-process key of the group-key verifiers; group keys themselves are never kept.
    pool_secret: [u8; 32],
    /// Pool alerts, delivered in order by one task.
    alerts: tokio::sync::mpsc::Sender<Alert>,
    /// P2P rendezvous, relay counters and reflector (see [`crate::p2p`]).
    pub p2p: crate::p2p::P2pHub,
    /// Wakes the claim writer after registry changes (see [`claim_writer`]).
    claims_changed: tokio::sync::Notify,
    /// Settings a reload may change while running (see [`crate::reload`]).
    pub live: crate::reload::Live,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// A refused tunnel request, as sent to the client.
#[derive(Debug, Clone)]
pub struct OpenError {
    pub code: ErrorCode,
    pub message: String,
    /// When the same request can succeed (the end of a grace-period reservation).
    pub retry_after: Option<Duration>,
}

impl OpenError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OpenError { code, message: message.into(), retry_after: None }
    }
}

impl From<PoolError> for OpenError {
    fn from(e: PoolError) -> Self {
        let code = match &e {
            PoolError::WrongKey(_) => ErrorCode::GroupKeyMismatch,
            PoolError::OtherOwner(_) => ErrorCode::GroupTaken,
            PoolError::Full(_) => ErrorCode::TooManyTunnels,
            PoolError::EndpointMismatch { .. }
            | PoolError::AccessMismatch(_)
            | PoolError::InvalidName
            | PoolError::Unsupported => ErrorCode::BadRequest,
        };
        OpenError::new(code, e.to_string())
    }
}

/// Where the edge sends the next request or connection for a name or pool.
pub enum RouteTo {
    Tunnel(Arc<Tunnel>),
    /// A pool with no healthy member.
    NoneAvailable,
    /// The name's client is gone, and the name is held for it (it may be reconnecting).
    ClientGone,
    NotFound,
}

impl From<ClaimError> for OpenError {
    fn from(e: ClaimError) -> Self {
        let (code, retry_after_secs) = match &e {
            ClaimError::Invalid(_) => (ErrorCode::InvalidSubdomain, None),
            ClaimError::SubdomainTaken(_) => (ErrorCode::SubdomainTaken, None),
            ClaimError::SubdomainReserved { secs, .. } => (ErrorCode::SubdomainReserved, Some(*secs)),
            ClaimError::PortReserved { secs, .. } => (ErrorCode::PortReserved, Some(*secs)),
            ClaimError::PortTaken(_) | ClaimError::PortOutOfRange { .. } => (ErrorCode::PortUnavailable, None),
            ClaimError::NoPorts => (ErrorCode::NoPortsAvailable, None),
            ClaimError::NoNames(_) => (ErrorCode::SubdomainTaken, None),
        };
        OpenError { retry_after: retry_after_secs.map(Duration::from_secs), ..OpenError::new(code, e.to_string()) }
    }
}

/// Refuses a subdomain outside a token's rights, saying what the token may use.
fn permitted_subdomain(rights: &Rights, name: &str) -> Result<(), OpenError> {
    // A malformed name gets the rule it broke, not this.
    rustunnel_proto::names::validate_subdomain(name).map_err(|e| OpenError::from(ClaimError::from(e)))?;
    if rights.allows_subdomain(name) {
        return Ok(());
    }
    Err(OpenError::new(
        ErrorCode::NotPermitted,
        format!("subdomain '{name}' is outside this token's rights; it may use {}", rights.names_text()),
    ))
}

/// Refuses a port outside a token's rights, saying what the token may use.
fn permitted_port(rights: &Rights, port: u16) -> Result<(), OpenError> {
    if rights.allows_port(port) {
        return Ok(());
    }
    Err(OpenError::new(
        ErrorCode::NotPermitted,
        format!("port {port} is outside this token's rights; it may use {}", rights.ports_text()),
    ))
}

impl Shared {
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

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        read(&self.sessions).get(id).cloned()
    }

    pub fn tunnel(&self, id: &str) -> Option<Arc<Tunnel>> {
        read(&self.tunnels).get(id).cloned()
    }

    pub fn route(&self, sub: &str) -> Option<Arc<Tunnel>> {
        read(&self.routes).get(sub).cloned()
    }

    /// Runs `f` on the registry under its lock, then wakes the claim writer, which persists the
    /// change in the background: claiming never waits on the database.
    fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let r = f(&mut lock(&self.registry));
        self.claims_changed.notify_one();
        r
    }

    /// Opens a tunnel for `session`: claims the name or port, binds the listener, starts the
    /// edge task, records history.
    pub async fn open_tunnel(
        self: &Arc<Self>,
        session: &Arc<Session>,
        spec: TunnelSpec,
    ) -> Result<TunnelInfo, OpenError> {
        let access = Access::from_spec(&spec).map_err(|e| OpenError::new(ErrorCode::BadRequest, e.to_string()))?;
        if spec.local_addr.len() > 256 {
            return Err(OpenError::new(ErrorCode::BadRequest, "local address too long"));
        }
        if self.stop_accepting.is_cancelled() {
            return Err(OpenError::new(ErrorCode::ShuttingDown, "server is shutting down"));
        }
        {
            let tunnels = read(&self.tunnels);
            let mine = tunnels.values().filter(|t| t.session.id == session.id);
            let mut count = 0;
            for t in mine {
                count += 1;
                if t.name == spec.name {
                    return Err(OpenError::new(
                        ErrorCode::DuplicateName,
                        format!("a tunnel named '{}' is already open in this session", spec.name),
                    ));
                }
            }
            if count >= rustunnel_proto::limits::MAX_TUNNELS_PER_SESSION {
                return Err(OpenError::new(ErrorCode::TooManyTunnels, "too many tunnels in one session"));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(group) = spec.group.clone() {
            return self.open_pool_member(session, spec, access, group, id).await;
        }
        let owner = session.principal.owner_id.clone();
        let cancel = self.hard_stop.child_token();
        let (info, listener) = match spec.protocol {
            Protocol::Http => {
                if self.public_http_port.is_none() && self.public_https_port.is_none() {
                    return Err(OpenError::new(ErrorCode::ProtocolDisabled, "this server has no HTTP edge"));
                }
                let rights = &session.principal.rights;
                let prefix = match spec.subdomain.as_deref() {
                    Some(name) => {
                        permitted_subdomain(rights, name)?;
                        ""
                    }
                    None => rights.random_prefix().ok_or_else(|| {
                        OpenError::new(
                            ErrorCode::NotPermitted,
                            format!(
                                "this token may only use the subdomains {}: choose one with --subdomain",
                                rights.names_text()
                            ),
                        )
                    })?,
                };
                let sub = self.with_registry(|r| {
                    r.claim_subdomain_in(
                        Instant::now(),
                        &owner,
                        &id,
                        spec.subdomain.as_deref(),
                        prefix,
                        &mut rand::rng(),
                    )
                })?;
                let urls = self.http_urls(&sub);
                let info = TunnelInfo {
                    tunnel_id: id.clone(),
                    name: spec.name.clone(),
                    protocol: Protocol::Http,
                    public_url: urls.first().cloned().unwrap_or_default(),
                    public_urls: urls,
                    subdomain: Some(sub),
                    remote_port: None,
                };
                (info, EdgeListener::None)
            }
            Protocol::Tcp | Protocol::Udp => {
                let kind = if spec.protocol == Protocol::Tcp { PortKind::Tcp } else { PortKind::Udp };
                let (port, l) = self.bind_port(kind, &session.principal.rights, &owner, &id, spec.remote_port).await?;
                let url = format!("{}://{}:{port}", spec.protocol, self.config.domain);
                let info = TunnelInfo {
                    tunnel_id: id.clone(),
                    name: spec.name.clone(),
                    protocol: spec.protocol,
                    public_url: url.clone(),
                    public_urls: vec![url],
                    subdomain: None,
                    remote_port: Some(port),
                };
                (info, l)
            }
        };
        let tunnel = self.add_tunnel(&spec, access, info.clone(), session, cancel);
        match listener {
            EdgeListener::None => {
                if let Some(sub) = &info.subdomain {
                    write(&self.routes).insert(sub.clone(), tunnel.clone());
                }
            }
            EdgeListener::Tcp(l) => {
                self.tasks.spawn(crate::edge::tcp::run(l, tunnel.clone(), self.clone()));
            }
            EdgeListener::Udp(s) => {
                self.tasks.spawn(crate::edge::udp::run(s, tunnel.clone(), self.clone()));
            }
        }
        self.record_history_open(&tunnel, session, &owner, spec).await;
        tracing::info!(tunnel = %id, url = %info.public_url, %owner, "tunnel opened");
        Ok(info)
    }

    /// Writes the history row of a newly opened tunnel (failures are logged, not fatal: the
    /// tunnel works without its history row).
    async fn record_history_open(&self, tunnel: &Tunnel, session: &Session, owner: &str, spec: TunnelSpec) {
        let rec = HistoryRecord {
            id: tunnel.id.clone(),
            owner_id: owner.to_string(),
            name: spec.name,
            protocol: spec.protocol.to_string(),
            public_url: tunnel.info.public_url.clone(),
            subdomain: tunnel.info.subdomain.clone(),
            port: tunnel.info.remote_port.map(i64::from),
            local_addr: spec.local_addr,
            client_addr: session.peer.to_string(),
            region: self.config.region.id.clone(),
            opened_at: tunnel.opened_at_ms,
            ..Default::default()
        };
        if let Err(e) = self.store.record_open(&rec).await {
            tracing::warn!(error = %e, "could not record tunnel history");
        }
    }

    /// A new tunnel, entered in the table of tunnels (routing is the caller's).
    fn add_tunnel(
        &self,
        spec: &TunnelSpec,
        access: Access,
        info: TunnelInfo,
        session: &Arc<Session>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Arc<Tunnel> {
        let max = self.config.max_requests_per_tunnel;
        let tunnel = Arc::new(Tunnel::new(spec, access, info, session.clone(), cancel, max));
        write(&self.tunnels).insert(tunnel.id.clone(), tunnel.clone());
        tunnel
    }

    async fn bind_port(
        &self,
        kind: PortKind,
        rights: &Rights,
        owner: &str,
        id: &str,
        requested: Option<u16>,
    ) -> Result<(u16, EdgeListener), OpenError> {
        let candidates = match requested {
            Some(p) => {
                permitted_port(rights, p)?;
                self.with_registry(|r| r.claim_port(Instant::now(), kind, owner, id, p))?;
                vec![p]
            }
            None => {
                let mut free = self.with_registry(|r| r.free_ports(Instant::now(), kind, &mut rand::rng()));
                if rights.ports.is_some() {
                    free.retain(|p| rights.allows_port(*p));
                    if free.is_empty() {
                        return Err(OpenError::new(
                            ErrorCode::NoPortsAvailable,
                            format!("no free port left among this token's ports ({})", rights.ports_text()),
                        ));
                    }
                }
                free
            }
        };
        for port in candidates.into_iter().take(64) {
            if requested.is_none()
                && self.with_registry(|r| r.claim_port(Instant::now(), kind, owner, id, port)).is_err()
            {
                continue;
            }
            let addr = SocketAddr::new(self.tunnel_bind_ip, port);
            let bound = match kind {
                PortKind::Tcp => TcpListener::bind(addr).await.map(EdgeListener::Tcp),
                PortKind::Udp => UdpSocket::bind(addr).await.map(EdgeListener::Udp),
            };
            match bound {
                Ok(l) => return Ok((port, l)),
                Err(e) => {
                    tracing::debug!(port, error = %e, "port busy outside rustunnel");
                    self.with_registry(|r| r.release_port(Instant::now(), kind, port, id, false));
                    if requested.is_some() {
                        return Err(ClaimError::PortTaken(port).into());
                    }
                }
            }
        }
        Err(ClaimError::NoPorts.into())
    }

    /// Closes a tunnel: the public endpoint stops answering at once, the name or port stays
    /// reserved to its owner for the grace period, history gets the final counters. The client
    /// is told when the close did not come from it.
    pub async fn close_tunnel(&self, id: &str, reason: CloseReason, message: &str) -> Option<Arc<Tunnel>> {
        let tunnel = write(&self.tunnels).remove(id)?;
        self.leave_pool(&tunnel.id);
        let now = Instant::now();
        if let Some(sub) = &tunnel.info.subdomain {
            let mut routes = write(&self.routes);
            if routes.get(sub).is_some_and(|t| t.id == tunnel.id) {
                routes.remove(sub);
            }
            let returning = matches!(reason, CloseReason::SessionEnded | CloseReason::ServerShutdown);
            self.with_registry(|r| r.release_subdomain(now, sub, &tunnel.id, returning));
        }
        if let Some(port) = tunnel.info.remote_port {
            let kind = if tunnel.protocol == Protocol::Tcp { PortKind::Tcp } else { PortKind::Udp };
            self.with_registry(|r| r.release_port(now, kind, port, &tunnel.id, true));
        }
        tunnel.cancel.cancel();
        if matches!(reason, CloseReason::ClosedByApi | CloseReason::TokenRevoked) {
            let _ = tunnel.session.out.try_send(ServerMsg::TunnelClosed {
                tunnel_id: tunnel.id.clone(),
                reason,
                message: message.to_string(),
            });
        }
        let (bytes_in, bytes_out, requests, connections) = tunnel.stats.get();
        self.metrics.tunnel_closed(bytes_in, bytes_out, requests, connections);
        let reason_text =
            serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let rec = CloseRecord {
            closed_at: now_ms(),
            reason: reason_text,
            bytes_in: bytes_in as i64,
            bytes_out: bytes_out as i64,
            requests: requests as i64,
            connections: connections as i64,
        };
        if let Err(e) = self.store.record_close(&tunnel.id, &rec).await {
            tracing::warn!(error = %e, "could not record tunnel close");
        }
        tracing::info!(tunnel = %tunnel.id, ?reason, "tunnel closed");
        Some(tunnel)
    }

    /// Closes every tunnel of a session and forgets it.
    pub async fn end_session(&self, session: &Arc<Session>, reason: CloseReason) {
        write(&self.sessions).remove(&session.id);
        crate::p2p::session_ended(self, session);
        session.cancel.cancel();
        session.drain_pool();
        let ids: Vec<String> =
            read(&self.tunnels).values().filter(|t| t.session.id == session.id).map(|t| t.id.clone()).collect();
        for id in ids {
            self.close_tunnel(&id, reason, "session ended").await;
        }
    }
}

/// Load-balanced pools: joining, routing, health, graceful drain, alerts.
impl Shared {
    /// HMAC-SHA256 of the group key under the per-process secret, bound to the pool's identity.
    fn group_verifier(&self, key: &PoolKey, group_key: &str) -> [u8; 32] {
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

    /// Opens a tunnel as a member of a pool, creating the pool (and claiming its subdomain or
    /// binding its port) when it is the first member.
    async fn open_pool_member(
        self: &Arc<Self>,
        session: &Arc<Session>,
        spec: TunnelSpec,
        access: Access,
        group: rustunnel_proto::GroupSpec,
        id: String,
    ) -> Result<TunnelInfo, OpenError> {
        let owner = session.principal.owner_id.clone();
        let cancel = self.hard_stop.child_token();
        crate::pool::validate_name(&group.name)?;
        if group.key.is_empty() || group.key.len() > 256 {
            return Err(OpenError::new(ErrorCode::BadRequest, "group key must be 1-256 characters"));
        }
        if let Some(w) = &group.alert_webhook {
            crate::alert::parse_webhook(w).map_err(|e| OpenError::new(ErrorCode::BadRequest, e.to_string()))?;
        }
        let requested = match spec.protocol {
            Protocol::Http => {
                if self.public_http_port.is_none() && self.public_https_port.is_none() {
                    return Err(OpenError::new(ErrorCode::ProtocolDisabled, "this server has no HTTP edge"));
                }
                spec.subdomain.as_ref().map(|s| Endpoint::Subdomain(s.to_ascii_lowercase()))
            }
            Protocol::Tcp => spec.remote_port.map(Endpoint::Port),
            Protocol::Udp => return Err(PoolError::Unsupported.into()),
        };
        let key = PoolKey { protocol: spec.protocol, name: group.name.clone() };
        let verifier = self.group_verifier(&key, &group.key);
        let _gate = self.pool_gate.lock().await;
        if self.stop_accepting.is_cancelled() {
            return Err(OpenError::new(ErrorCode::ShuttingDown, "server is shutting down"));
        }
        // The member serves the pool's endpoint, or the one it creates: either must be within
        // its token's rights (a new TCP pool without a port gets one that is).
        let existing = lock(&self.pools).get(&key).map(|p| p.endpoint.clone());
        let rights = &session.principal.rights;
        match existing.or_else(|| requested.clone()) {
            Some(Endpoint::Subdomain(name)) => permitted_subdomain(rights, &name)?,
            Some(Endpoint::Port(port)) => permitted_port(rights, port)?,
            None if spec.protocol == Protocol::Http => permitted_subdomain(rights, &group.name.to_ascii_lowercase())?,
            None => {}
        }
        let exists = lock(&self.pools).check_join(&key, &owner, &verifier, requested.as_ref(), &access)?;
        if !exists {
            let holder = format!("pool:{}", uuid::Uuid::new_v4());
            let (endpoint, url, listener) = match spec.protocol {
                Protocol::Http => {
                    let want = spec.subdomain.clone().unwrap_or_else(|| group.name.clone());
                    let sub = self.with_registry(|r| {
                        r.claim_subdomain(Instant::now(), &owner, &holder, Some(&want), &mut rand::rng())
                    })?;
                    let url = self.http_urls(&sub).first().cloned().unwrap_or_default();
                    (Endpoint::Subdomain(sub), url, None)
                }
                _ => {
                    let (port, l) = self
                        .bind_port(PortKind::Tcp, &session.principal.rights, &owner, &holder, spec.remote_port)
                        .await?;
                    (Endpoint::Port(port), format!("tcp://{}:{port}", self.config.domain), Some(l))
                }
            };
            let mut pool = Pool::new(key.clone(), verifier, endpoint, holder, owner.clone());
            pool.public_url = url;
            pool.access = access.clone();
            pool.cancel = self.hard_stop.child_token();
            let pool_cancel = pool.cancel.clone();
            lock(&self.pools).create(pool);
            if let Some(EdgeListener::Tcp(l)) = listener {
                self.tasks.spawn(crate::edge::tcp::run_pool(l, key.clone(), pool_cancel, self.clone()));
            }
            tracing::info!(pool = %key.name, protocol = %key.protocol, "pool created");
        }
        let endpoint = lock(&self.pools).get(&key).map(|p| (p.endpoint.clone(), p.public_url.clone()));
        let Some((endpoint, public_url)) = endpoint else {
            return Err(OpenError::new(ErrorCode::Internal, "pool vanished while joining"));
        };
        let (subdomain, remote_port, public_urls) = match &endpoint {
            Endpoint::Subdomain(s) => (Some(s.clone()), None, self.http_urls(s)),
            Endpoint::Port(p) => (None, Some(*p), vec![public_url.clone()]),
        };
        let info = TunnelInfo {
            tunnel_id: id.clone(),
            name: spec.name.clone(),
            protocol: spec.protocol,
            public_url,
            public_urls,
            subdomain,
            remote_port,
        };
        let tunnel = self.add_tunnel(&spec, access, info.clone(), session, cancel);
        let mut member = Member::new(id.clone());
        member.alert_webhook = group.alert_webhook.clone();
        member.health_check = group.health_check.as_ref().map(|h| h.chars().take(128).collect());
        let alert = lock(&self.pools).add_member(&key, member);
        drop(_gate);
        if let Some(a) = alert {
            self.queue_alert(a);
        }
        self.record_history_open(&tunnel, session, &owner, spec).await;
        tracing::info!(tunnel = %id, pool = %key.name, url = %info.public_url, "pool member joined");
        Ok(info)
    }

    /// Removes a closed tunnel from its pool; the last member out releases the pool's endpoint
    /// (reserved to its owner for the grace period) and stops its listener.
    fn leave_pool(&self, tunnel_id: &str) {
        let leave = lock(&self.pools).leave(tunnel_id);
        if let Some(a) = leave.alert {
            self.queue_alert(a);
        }
        if let Some(p) = leave.removed {
            p.cancel.cancel();
            let now = Instant::now();
            match &p.endpoint {
                Endpoint::Subdomain(s) => self.with_registry(|r| r.release_subdomain(now, s, &p.holder, false)),
                Endpoint::Port(port) => {
                    self.with_registry(|r| r.release_port(now, PortKind::Tcp, *port, &p.holder, true))
                }
            }
            tracing::info!(pool = %p.key.name, "pool closed: last member left");
        }
    }

    /// Requests or connections a tunnel is serving now.
    fn in_flight(&self, t: &Tunnel) -> usize {
        self.config.max_requests_per_tunnel.saturating_sub(t.concurrency.available_permits())
    }

    /// The member of pool `key` that takes the next request or connection.
    pub fn pick_member(&self, key: &PoolKey) -> RouteTo {
        let tunnels = read(&self.tunnels);
        let pick = lock(&self.pools).pick(key, |id| tunnels.get(id).map(|t| self.in_flight(t)).unwrap_or(usize::MAX));
        match pick {
            Pick::Member(id) => tunnels.get(&id).cloned().map(RouteTo::Tunnel).unwrap_or(RouteTo::NoneAvailable),
            Pick::NoneAvailable => RouteTo::NoneAvailable,
            Pick::NoPool => RouteTo::NotFound,
        }
    }

    /// HTTP routing: a pool's subdomain picks a member per request; other names map to their tunnel.
    pub fn route_to(&self, sub: &str) -> RouteTo {
        let pool = lock(&self.pools).by_subdomain(sub).cloned();
        match pool {
            Some(key) => self.pick_member(&key),
            None => match self.route(sub) {
                // Its client is leaving on purpose: as after the close that follows.
                Some(t) if t.is_draining() => RouteTo::NotFound,
                Some(t) => RouteTo::Tunnel(t),
                None if lock(&self.registry).awaits_owner(Instant::now(), sub) => RouteTo::ClientGone,
                None => RouteTo::NotFound,
            },
        }
    }

    /// A member's health check result, as its client reported it.
    pub fn report_health(&self, tunnel_id: &str, healthy: bool, detail: &str) {
        let alert = lock(&self.pools).set_health(tunnel_id, healthy, detail);
        tracing::info!(tunnel = %tunnel_id, healthy, detail = %detail.chars().take(80).collect::<String>(), "member health");
        if let Some(a) = alert {
            self.queue_alert(a);
        }
    }

    /// Graceful leave (a pool member's, or any tunnel's whose client is stopping): no new
    /// traffic for the tunnel, in-flight requests and connections finish (up to the drain
    /// timeout), then it closes and the client is told `TunnelDrained`.
    pub fn drain_tunnel(self: &Arc<Self>, session: &Arc<Session>, tunnel_id: String) {
        let Some(tunnel) = self.tunnel(&tunnel_id).filter(|t| t.session.id == session.id) else {
            let _ = session.out.try_send(ServerMsg::TunnelDrained { tunnel_id });
            return;
        };
        tunnel.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        lock(&self.pools).drain(&tunnel_id);
        let shared = self.clone();
        self.tasks.spawn(async move {
            // A request routed just before the drain mark may not hold its permit yet.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
            // Upgraded connections (WebSockets) are not waited for: they may never end.
            let busy = |t: &Tunnel| {
                shared.in_flight(t).saturating_sub(t.upgraded.load(std::sync::atomic::Ordering::Relaxed)) > 0
            };
            while busy(&tunnel) && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = tunnel.cancel.cancelled() => break,
                }
            }
            shared.close_tunnel(&tunnel.id, CloseReason::ClientRequest, "drained").await;
            // The last requests' log lines go out with the session's next batch: let it leave
            // before the answer that ends the client's wait.
            tokio::time::sleep(crate::control::LOG_FLUSH + Duration::from_millis(50)).await;
            let _ = tunnel.session.out.try_send(ServerMsg::TunnelDrained { tunnel_id: tunnel.id.clone() });
        });
    }

    fn queue_alert(&self, alert: Alert) {
        tracing::warn!(pool = %alert.pool.name, protocol = %alert.pool.protocol, kind = ?alert.kind, "pool alert");
        if self.alerts.try_send(alert).is_err() {
            tracing::warn!("pool alert queue full; alert dropped");
        }
    }

    /// Every pool with its members, their health and the traffic they served, for the
    /// management API and `rustunnel tunnels list`.
    pub fn pools(&self) -> Vec<PoolSnapshot> {
        struct Raw {
            snap: PoolSnapshot,
            members: Vec<Member>,
        }
        let raw: Vec<Raw> = lock(&self.pools)
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
        let tunnels = read(&self.tunnels);
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
        lock(&self.pools).pool_of(tunnel_id).map(|p| p.key.name.clone())
    }
}

/// Delivers pool alerts one after another (so a down and its recovery arrive in order) to the
/// members' webhooks and the server-wide one.
async fn alert_loop(mut rx: tokio::sync::mpsc::Receiver<Alert>, shared: Arc<Shared>) {
    let stop = shared.hard_stop.clone();
    loop {
        let alert = tokio::select! {
            a = rx.recv() => match a { Some(a) => a, None => return },
            _ = stop.cancelled() => return,
        };
        let mut urls = alert.webhooks.clone();
        // Read per alert: a reload may have changed it.
        urls.extend(shared.live.alert_webhook());
        urls.sort();
        urls.dedup();
        let body = bytes::Bytes::from(crate::alert::body(&alert, std::time::SystemTime::now()));
        for url in urls {
            tokio::select! {
                r = crate::alert::deliver(&url, body.clone()) => {
                    if let Err(e) = r {
                        tracing::warn!(pool = %alert.pool.name, error = %e, "pool alert not delivered");
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

enum EdgeListener {
    None,
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    control_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    admin_token: String,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })
}

impl ServerHandle {
    /// Binds everything and starts serving. Port 0 addresses get ephemeral ports; read them
    /// back with the accessors.
    pub async fn spawn(config: Config) -> Result<ServerHandle, ServerError> {
        let store = Store::open(config.database_url.as_deref(), &config.data_dir).await?;
        let instance = store.lock_instance(&config.data_dir, &config.region.id).await?;
        let orphans = store.close_region_orphans(&config.region.id, "server_restart").await?;
        if orphans > 0 {
            tracing::info!(orphans, "closed history rows left open by a previous run");
        }
        let admin_token = match &config.admin_token {
            Some(t) => t.clone(),
            None => load_or_create_admin_token(&config.data_dir)?,
        };
        let tls = TlsMaterial::load(&config.tls, &config.data_dir, &config.domain)?;
        let control = bind("the control plane", config.control_addr).await?;
        let http = match config.http_addr {
            Some(a) => Some(bind("the HTTP edge", a).await?),
            None => None,
        };
        let https = match config.https_addr {
            Some(a) => Some(bind("the HTTPS edge", a).await?),
            None => None,
        };
        let api = match config.api_addr {
            Some(a) => Some(bind("the management API", a).await?),
            None => None,
        };
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (http_addr, https_addr, api_addr) = (local(&http), local(&https), local(&api));
        let control_addr = control.local_addr().map_err(|source| ServerError::Bind {
            what: "the control plane",
            addr: config.control_addr,
            source,
        })?;
        let p2p_udp = match config.p2p_udp {
            crate::config::P2pUdp::Off => None,
            crate::config::P2pUdp::SameAsControl => match UdpSocket::bind(control_addr).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(addr = %control_addr, error = %e, "P2P reflector not started; P2P links will be relayed");
                    None
                }
            },
            crate::config::P2pUdp::Addr(a) => Some(UdpSocket::bind(a).await.map_err(|source| ServerError::Bind {
                what: "the P2P reflector",
                addr: a,
                source,
            })?),
        };
        let mut config = config;
        crate::api::advertise_bound_ports(&mut config, control_addr, api_addr);
        // Only once every listener is bound: a start that fails must not touch stored claims.
        let registry = load_registry(&store, &config).await?;
        let (alert_tx, alert_rx) = tokio::sync::mpsc::channel(256);
        let shared = Arc::new(Shared {
            instance: Mutex::new(Some(instance)),
            auth: Authenticator::new(Some(&admin_token), config.allow_anonymous),
            visitor_logins: Default::default(),
            registry: Mutex::new(registry),
            sessions: RwLock::new(HashMap::new()),
            tunnels: RwLock::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            stop_accepting: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            public_http_port: http_addr.map(|a| config.public_http_port.unwrap_or(a.port())),
            public_https_port: https_addr.map(|a| config.public_https_port.unwrap_or(a.port())),
            tunnel_bind_ip: config.control_addr.ip(),
            metrics: crate::metrics::Metrics::default(),
            pools: Mutex::new(PoolTable::default()),
            pool_gate: tokio::sync::Mutex::new(()),
            pool_secret: rand::random(),
            alerts: alert_tx,
            p2p: crate::p2p::P2pHub::default(),
            claims_changed: tokio::sync::Notify::new(),
            live: crate::reload::Live::new(&config),
            store,
            tls,
            config,
        });
        if let Some(sock) = p2p_udp {
            if let Ok(a) = sock.local_addr() {
                let _ = shared.p2p.reflector_port.set(a.port());
            }
            shared.tasks.spawn(crate::p2p::reflector(sock, shared.clone()));
        }
        shared.tasks.spawn(crate::control::serve(control, shared.clone()));
        if let Some(l) = http {
            shared.tasks.spawn(crate::edge::http::serve(l, None, shared.clone()));
        }
        if let Some(l) = https {
            let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.https.clone());
            shared.tasks.spawn(crate::edge::http::serve(l, Some(acceptor), shared.clone()));
        }
        if let Some(l) = api {
            shared.tasks.spawn(crate::api::serve(l, shared.clone()));
        }
        shared.tasks.spawn(retention_loop(shared.clone()));
        shared.tasks.spawn(claim_writer(shared.clone()));
        shared.tasks.spawn(alert_loop(alert_rx, shared.clone()));
        Ok(ServerHandle { shared, control_addr, http_addr, https_addr, api_addr, admin_token })
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }
    /// PEM file of the server certificate (the generated one on dev servers).
    pub fn cert_path(&self) -> &std::path::Path {
        &self.shared.tls.cert_path
    }
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Graceful shutdown: stop accepting, tell every client to come back later, let in-flight
    /// requests and connections finish for up to the drain timeout, then stop everything.
    pub async fn shutdown(self) {
        let s = &self.shared;
        s.stop_accepting.cancel();
        let sessions: Vec<Arc<Session>> = read(&s.sessions).values().cloned().collect();
        for sess in &sessions {
            let _ = sess.out.try_send(ServerMsg::Shutdown {
                message: "server is restarting; reconnect shortly".into(),
                retry_after_ms: 250,
            });
        }
        s.tasks.close();
        let drain = s.config.drain_timeout;
        let _ = tokio::time::timeout(drain, wait_for_drain(s)).await;
        s.hard_stop.cancel();
        for sess in sessions {
            s.end_session(&sess, CloseReason::ServerShutdown).await;
        }
        s.wind_down().await;
    }

    /// Stops at once without telling anyone, like a crash (tests of client reconnection).
    pub async fn abort(self) {
        self.shared.stop_accepting.cancel();
        self.shared.hard_stop.cancel();
        self.shared.tasks.close();
        self.shared.wind_down().await;
    }
}

impl Shared {
    /// The last steps of every stop: the tasks end (bounded wait), the database closes, and
    /// the data directory and region are free for the next server.
    async fn wind_down(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        self.store.close().await;
        drop(lock(&self.instance).take());
    }
}

/// Waits until no tunnel has traffic in flight (requests or connections holding permits).
async fn wait_for_drain(s: &Shared) {
    loop {
        let busy =
            read(&s.tunnels).values().any(|t| t.concurrency.available_permits() < s.config.max_requests_per_tunnel);
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A registry holding the stored claims of this server's region as reservations (see
/// [`Registry::load`]); the region's rows are then rewritten to exactly that, which drops
/// ended and unusable rows.
async fn load_registry(store: &Store, config: &Config) -> Result<Registry, ServerError> {
    let region = &config.region.id;
    let mut registry = Registry::new(config.reservation_grace, config.tcp_ports.clone(), config.udp_ports.clone());
    let rows = store.load_claims(region).await?;
    let (now, wall) = (Instant::now(), now_ms());
    let report = registry.load(now, wall, rows);
    for (row, why) in &report.skipped {
        tracing::warn!(
            kind = %row.kind.chars().take(32).collect::<String>(),
            name = %row.name.chars().take(80).collect::<String>(),
            reason = %why,
            "skipping a stored reservation that does not fit this server"
        );
    }
    if report.loaded > 0 || report.expired > 0 {
        tracing::info!(loaded = report.loaded, expired = report.expired, "restored name and port reservations");
    }
    store.replace_claims(region, &registry.snapshot(now, wall)).await?;
    Ok(registry)
}

/// How often the claim writer prunes ended reservations (memory and database).
const CLAIM_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Retry delay after a failed claim write.
const CLAIM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Persists registry changes in the background, so claims and releases never wait on the
/// database: woken after each registry operation, it takes the changed keys' current state
/// under the lock (briefly, no I/O) and writes them without it. After a failed write it
/// rewrites the region's rows from a full snapshot once the database answers again. Writes
/// what is pending when the server stops; only a change made in the last instant before a
/// crash (before this task got to it) can be lost.
async fn claim_writer(shared: Arc<Shared>) {
    let region = shared.config.region.id.clone();
    let mut prune = tokio::time::interval(CLAIM_PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = false;
    loop {
        let stopping = tokio::select! {
            _ = shared.claims_changed.notified() => false,
            _ = tokio::time::sleep(CLAIM_RETRY_AFTER), if resync => false,
            _ = prune.tick() => {
                lock(&shared.registry).prune(Instant::now());
                match shared.store.prune_claims(&region, now_ms()).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned ended reservations"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reservation pruning failed"),
                }
                false
            }
            _ = shared.hard_stop.cancelled() => true,
        };
        let written = if resync {
            let all = lock(&shared.registry).snapshot(Instant::now(), now_ms());
            shared.store.replace_claims(&region, &all).await
        } else {
            let changes = lock(&shared.registry).take_changes(Instant::now(), now_ms());
            if changes.is_empty() {
                Ok(())
            } else {
                shared.store.apply_claim_changes(&region, &changes).await
            }
        };
        match written {
            Ok(()) => resync = false,
            Err(e) => {
                if !resync {
                    tracing::warn!(error = %e, "could not persist name and port reservations; will retry");
                }
                resync = true;
            }
        }
        if stopping {
            return;
        }
    }
}

/// Housekeeping: prunes old tunnel history hourly, and every 15 s closes HTTP upstreams idle
/// longer than a minute.
async fn retention_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    // Idle upstreams go within a quarter of their allowance after it ends.
    let mut idle_tick = tokio::time::interval((shared.config.upstream_idle / 4).max(Duration::from_millis(50)));
    let mut counters_tick = tokio::time::interval(shared.config.history_flush);
    counters_tick.reset();
    // Counters last written per tunnel: only those that moved are written again.
    let mut written: HashMap<String, (u64, u64, u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = shared.hard_stop.cancelled() => return,
            _ = counters_tick.tick() => {
                let tunnels: Vec<Arc<Tunnel>> = read(&shared.tunnels).values().cloned().collect();
                let mut rows = Vec::new();
                let mut now = HashMap::with_capacity(tunnels.len());
                for t in tunnels {
                    let c = t.stats.get();
                    if written.get(&t.id) != Some(&c) {
                        rows.push((t.id.clone(), c.0 as i64, c.1 as i64, c.2 as i64, c.3 as i64));
                    }
                    now.insert(t.id.clone(), c);
                }
                match shared.store.record_counters(&rows).await {
                    Ok(()) => written = now,
                    Err(e) => tracing::warn!(error = %e, "could not record tunnel counters"),
                }
            }
            _ = idle_tick.tick() => {
                let tunnels: Vec<Arc<Tunnel>> = read(&shared.tunnels).values().cloned().collect();
                for t in tunnels {
                    t.http_idle.sweep(shared.config.upstream_idle);
                }
            }
            _ = tick.tick() => {
                let cutoff = now_ms() - shared.config.history_retention.as_millis() as i64;
                match shared.store.prune_history(cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "pruned old tunnel history"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "history pruning failed"),
                }
            }
        }
    }
}

/// Reads `<data dir>/admin-token`, or generates one there (dev servers without a configured token).
fn load_or_create_admin_token(dir: &std::path::Path) -> Result<String, ServerError> {
    let path = dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let t = crate::store::generate_token();
    std::fs::write(&path, format!("{t}\n")).map_err(|source| ServerError::Write { path: path.clone(), source })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(t)
}
