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
use crate::registry::{ClaimError, PortKind, Registry};
use crate::session::Session;
use crate::store::{now_ms, CloseRecord, HistoryRecord, Store, StoreError};
use crate::tls::{TlsError, TlsMaterial};
use crate::tunnel::{Tunnel, TunnelStats};

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
    pub config: Config,
    pub store: Store,
    pub auth: Authenticator,
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
}

impl OpenError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OpenError { code, message: message.into() }
    }
}

impl From<ClaimError> for OpenError {
    fn from(e: ClaimError) -> Self {
        let code = match &e {
            ClaimError::Invalid(_) => ErrorCode::InvalidSubdomain,
            ClaimError::SubdomainTaken(_) => ErrorCode::SubdomainTaken,
            ClaimError::PortTaken(_) | ClaimError::PortOutOfRange { .. } => ErrorCode::PortUnavailable,
            ClaimError::NoPorts => ErrorCode::NoPortsAvailable,
        };
        OpenError::new(code, e.to_string())
    }
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

    /// Opens a tunnel for `session`: claims the name or port, binds the listener, starts the
    /// edge task, records history.
    pub async fn open_tunnel(
        self: &Arc<Self>,
        session: &Arc<Session>,
        spec: TunnelSpec,
    ) -> Result<TunnelInfo, OpenError> {
        if spec.name.is_empty() || spec.name.len() > rustunnel_proto::limits::MAX_TUNNEL_NAME {
            return Err(OpenError::new(ErrorCode::BadRequest, "tunnel name must be 1-64 characters"));
        }
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
        let owner = session.principal.owner_id.clone();
        let cancel = self.hard_stop.child_token();
        let (info, listener) = match spec.protocol {
            Protocol::Http => {
                if self.public_http_port.is_none() && self.public_https_port.is_none() {
                    return Err(OpenError::new(ErrorCode::ProtocolDisabled, "this server has no HTTP edge"));
                }
                let sub = lock(&self.registry).claim_subdomain(
                    Instant::now(),
                    &owner,
                    &id,
                    spec.subdomain.as_deref(),
                    &mut rand::rng(),
                )?;
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
                let (port, l) = self.bind_port(kind, &owner, &id, spec.remote_port).await?;
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
        let tunnel = Arc::new(Tunnel {
            id: id.clone(),
            name: spec.name.clone(),
            protocol: spec.protocol,
            info: info.clone(),
            local_addr: spec.local_addr.clone(),
            session: session.clone(),
            opened_at_ms: now_ms(),
            stats: Arc::new(TunnelStats::default()),
            cancel,
            concurrency: Arc::new(tokio::sync::Semaphore::new(self.config.max_requests_per_tunnel)),
        });
        write(&self.tunnels).insert(id.clone(), tunnel.clone());
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
        let rec = HistoryRecord {
            id: id.clone(),
            owner_id: owner,
            name: spec.name,
            protocol: spec.protocol.to_string(),
            public_url: info.public_url.clone(),
            subdomain: info.subdomain.clone(),
            port: info.remote_port.map(i64::from),
            local_addr: spec.local_addr,
            client_addr: session.peer.to_string(),
            region: self.config.region.id.clone(),
            opened_at: tunnel.opened_at_ms,
            ..Default::default()
        };
        if let Err(e) = self.store.record_open(&rec).await {
            tracing::warn!(error = %e, "could not record tunnel history");
        }
        tracing::info!(tunnel = %id, url = %info.public_url, owner = %rec.owner_id, "tunnel opened");
        Ok(info)
    }

    async fn bind_port(
        &self,
        kind: PortKind,
        owner: &str,
        id: &str,
        requested: Option<u16>,
    ) -> Result<(u16, EdgeListener), OpenError> {
        let candidates = match requested {
            Some(p) => {
                lock(&self.registry).claim_port(Instant::now(), kind, owner, id, p)?;
                vec![p]
            }
            None => lock(&self.registry).free_ports(Instant::now(), kind, &mut rand::rng()),
        };
        for port in candidates.into_iter().take(64) {
            if requested.is_none() && lock(&self.registry).claim_port(Instant::now(), kind, owner, id, port).is_err() {
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
                    lock(&self.registry).release_port(Instant::now(), kind, port, id, false);
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
        let now = Instant::now();
        if let Some(sub) = &tunnel.info.subdomain {
            let mut routes = write(&self.routes);
            if routes.get(sub).is_some_and(|t| t.id == tunnel.id) {
                routes.remove(sub);
            }
            lock(&self.registry).release_subdomain(now, sub, &tunnel.id);
        }
        if let Some(port) = tunnel.info.remote_port {
            let kind = if tunnel.protocol == Protocol::Tcp { PortKind::Tcp } else { PortKind::Udp };
            lock(&self.registry).release_port(now, kind, port, &tunnel.id, true);
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
        session.cancel.cancel();
        session.drain_pool();
        let ids: Vec<String> =
            read(&self.tunnels).values().filter(|t| t.session.id == session.id).map(|t| t.id.clone()).collect();
        for id in ids {
            self.close_tunnel(&id, reason, "session ended").await;
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
        let orphans = store.close_orphans("server_restart").await?;
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
        let shared = Arc::new(Shared {
            auth: Authenticator::new(Some(&admin_token), config.allow_anonymous),
            registry: Mutex::new(Registry::new(
                config.reservation_grace,
                config.tcp_ports.clone(),
                config.udp_ports.clone(),
            )),
            sessions: RwLock::new(HashMap::new()),
            tunnels: RwLock::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            stop_accepting: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            public_http_port: http_addr.map(|a| config.public_http_port.unwrap_or(a.port())),
            public_https_port: https_addr.map(|a| config.public_https_port.unwrap_or(a.port())),
            tunnel_bind_ip: config.control_addr.ip(),
            store,
            tls,
            config,
        });
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
        let _ = tokio::time::timeout(Duration::from_secs(5), s.tasks.wait()).await;
        s.store.close().await;
    }

    /// Stops at once without telling anyone, like a crash (tests of client reconnection).
    pub async fn abort(self) {
        self.shared.stop_accepting.cancel();
        self.shared.hard_stop.cancel();
        self.shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait()).await;
        self.shared.store.close().await;
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

async fn retention_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shared.hard_stop.cancelled() => return,
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
