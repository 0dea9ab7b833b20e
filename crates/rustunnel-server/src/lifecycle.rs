//! Tunnel and pool-member lifecycle: opening (rights checks, name and port claims, listener
//! binding, history rows), graceful drain, closing, and the end of a session.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustunnel_proto::control::CloseReason;
use rustunnel_proto::{ErrorCode, Protocol, ServerMsg, TunnelInfo, TunnelSpec};
use tokio::net::{TcpListener, UdpSocket};

use crate::pool::{Endpoint, Member, Pool, PoolError, PoolKey};
use crate::registry::{ClaimError, PortKind};
use crate::rights::Rights;
use crate::session::Session;
use crate::state::Shared;
use crate::store::{now_ms, CloseRecord, HistoryRecord};
use crate::tunnel::{Access, Tunnel};

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
        if self.stop_accepting().is_cancelled() {
            return Err(OpenError::new(ErrorCode::ShuttingDown, "server is shutting down"));
        }
        {
            let mine = self.tunnels_of(&session.id);
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
        let cancel = self.hard_stop().child_token();
        let (info, listener) = match spec.protocol {
            Protocol::Http => {
                if self.public_http_port().is_none() && self.public_https_port().is_none() {
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
                let url = format!("{}://{}:{port}", spec.protocol, self.config().domain);
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
        let tunnel = self.new_tunnel(&spec, access, info.clone(), session, cancel);
        match listener {
            EdgeListener::None => {
                if let Some(sub) = &info.subdomain {
                    self.add_route(sub, tunnel.clone());
                }
            }
            EdgeListener::Tcp(l) => {
                self.tasks().spawn(crate::edge::tcp::run(l, tunnel.clone(), self.clone()));
            }
            EdgeListener::Udp(s) => {
                self.tasks().spawn(crate::edge::udp::run(s, tunnel.clone(), self.clone()));
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
            region: self.config().region.id.clone(),
            opened_at: tunnel.opened_at_ms,
            ..Default::default()
        };
        if let Err(e) = self.store().record_open(&rec).await {
            tracing::warn!(error = %e, "could not record tunnel history");
        }
    }

    /// A new tunnel, entered in the table of tunnels (routing is the caller's).
    fn new_tunnel(
        &self,
        spec: &TunnelSpec,
        access: Access,
        info: TunnelInfo,
        session: &Arc<Session>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Arc<Tunnel> {
        let max = self.config().max_requests_per_tunnel;
        let tunnel = Arc::new(Tunnel::new(spec, access, info, session.clone(), cancel, max));
        Shared::add_tunnel(self, tunnel.clone());
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
            let addr = SocketAddr::new(self.tunnel_bind_ip(), port);
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
        let tunnel = self.remove_tunnel(id)?;
        self.leave_pool(&tunnel.id);
        let now = Instant::now();
        if let Some(sub) = &tunnel.info.subdomain {
            self.remove_route(sub, &tunnel.id);
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
        self.metrics().tunnel_closed(bytes_in, bytes_out, requests, connections);
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
        if let Err(e) = self.store().record_close(&tunnel.id, &rec).await {
            tracing::warn!(error = %e, "could not record tunnel close");
        }
        tracing::info!(tunnel = %tunnel.id, ?reason, "tunnel closed");
        Some(tunnel)
    }

    /// Closes every tunnel of a session and forgets it.
    pub async fn end_session(&self, session: &Arc<Session>, reason: CloseReason) {
        self.remove_session(&session.id);
        crate::p2p::session_ended(self, session);
        session.cancel.cancel();
        session.drain_pool();
        let ids: Vec<String> = self.tunnels_of(&session.id).iter().map(|t| t.id.clone()).collect();
        for id in ids {
            self.close_tunnel(&id, reason, "session ended").await;
        }
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
        let cancel = self.hard_stop().child_token();
        crate::pool::validate_name(&group.name)?;
        if group.key.is_empty() || group.key.len() > 256 {
            return Err(OpenError::new(ErrorCode::BadRequest, "group key must be 1-256 characters"));
        }
        if let Some(w) = &group.alert_webhook {
            crate::webhook::parse_webhook(w).map_err(|e| OpenError::new(ErrorCode::BadRequest, e.to_string()))?;
        }
        let requested = match spec.protocol {
            Protocol::Http => {
                if self.public_http_port().is_none() && self.public_https_port().is_none() {
                    return Err(OpenError::new(ErrorCode::ProtocolDisabled, "this server has no HTTP edge"));
                }
                spec.subdomain.as_ref().map(|s| Endpoint::Subdomain(s.to_ascii_lowercase()))
            }
            Protocol::Tcp => spec.remote_port.map(Endpoint::Port),
            Protocol::Udp => return Err(PoolError::Unsupported.into()),
        };
        let key = PoolKey { protocol: spec.protocol, name: group.name.clone() };
        let verifier = self.group_verifier(&key, &group.key);
        let _gate = self.pool_gate().await;
        if self.stop_accepting().is_cancelled() {
            return Err(OpenError::new(ErrorCode::ShuttingDown, "server is shutting down"));
        }
        // The member serves the pool's endpoint, or the one it creates: either must be within
        // its token's rights (a new TCP pool without a port gets one that is).
        let existing = self.with_pools(|p| p.get(&key).map(|p| p.endpoint.clone()));
        let rights = &session.principal.rights;
        match existing.or_else(|| requested.clone()) {
            Some(Endpoint::Subdomain(name)) => permitted_subdomain(rights, &name)?,
            Some(Endpoint::Port(port)) => permitted_port(rights, port)?,
            None if spec.protocol == Protocol::Http => permitted_subdomain(rights, &group.name.to_ascii_lowercase())?,
            None => {}
        }
        let exists = self.with_pools(|p| p.check_join(&key, &owner, &verifier, requested.as_ref(), &access))?;
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
                    (Endpoint::Port(port), format!("tcp://{}:{port}", self.config().domain), Some(l))
                }
            };
            let mut pool = Pool::new(key.clone(), verifier, endpoint, holder, owner.clone());
            pool.public_url = url;
            pool.access = access.clone();
            pool.cancel = self.hard_stop().child_token();
            let pool_cancel = pool.cancel.clone();
            self.with_pools(|p| p.create(pool));
            if let Some(EdgeListener::Tcp(l)) = listener {
                self.tasks().spawn(crate::edge::tcp::run_pool(l, key.clone(), pool_cancel, self.clone()));
            }
            tracing::info!(pool = %key.name, protocol = %key.protocol, "pool created");
        }
        let endpoint = self.with_pools(|p| p.get(&key).map(|p| (p.endpoint.clone(), p.public_url.clone())));
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
        let tunnel = self.new_tunnel(&spec, access, info.clone(), session, cancel);
        let mut member = Member::new(id.clone());
        member.alert_webhook = group.alert_webhook.clone();
        member.health_check = group.health_check.as_ref().map(|h| h.chars().take(128).collect());
        let alert = self.with_pools(|p| p.add_member(&key, member));
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
        let leave = self.with_pools(|p| p.leave(tunnel_id));
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

    /// Graceful leave (a pool member's, or any tunnel's whose client is stopping): no new
    /// traffic for the tunnel, in-flight requests and connections finish (up to the drain
    /// timeout), then it closes and the client is told `TunnelDrained`.
    pub fn drain_tunnel(self: &Arc<Self>, session: &Arc<Session>, tunnel_id: String) {
        let Some(tunnel) = self.tunnel(&tunnel_id).filter(|t| t.session.id == session.id) else {
            let _ = session.out.try_send(ServerMsg::TunnelDrained { tunnel_id });
            return;
        };
        tunnel.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        self.with_pools(|p| p.drain(&tunnel_id));
        let shared = self.clone();
        self.tasks().spawn(async move {
            // A request routed just before the drain mark may not hold its permit yet.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let deadline = tokio::time::Instant::now() + shared.config().drain_timeout;
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
            tokio::time::sleep(crate::session::LOG_FLUSH + Duration::from_millis(50)).await;
            let _ = tunnel.session.out.try_send(ServerMsg::TunnelDrained { tunnel_id: tunnel.id.clone() });
        });
    }
}

enum EdgeListener {
    None,
    Tcp(TcpListener),
    Udp(UdpSocket),
}
