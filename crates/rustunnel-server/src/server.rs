//! Wiring: [`ServerHandle::spawn`] binds every listener from a [`Config`], starts the control
//! plane and the edges under one task tracker, and returns the bound addresses. Shutdown is
//! explicit and graceful: stop accepting, tell clients, drain, stop.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustunnel_proto::control::CloseReason;
use rustunnel_proto::ServerMsg;
use tokio::net::{TcpListener, UdpSocket};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::state::Parts;
use crate::store::{Store, StoreError};
use crate::tls::{TlsError, TlsMaterial};

pub use crate::lifecycle::OpenError;
pub use crate::state::{RouteTo, Shared};

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
        let registry = crate::claims::load_registry(&store, &config).await?;
        let (alert_tx, alert_rx) = tokio::sync::mpsc::channel(256);
        let shared = Arc::new(Shared::new(Parts {
            instance,
            auth: Authenticator::new(Some(&admin_token), config.allow_anonymous),
            registry,
            public_http_port: http_addr.map(|a| config.public_http_port.unwrap_or(a.port())),
            public_https_port: https_addr.map(|a| config.public_https_port.unwrap_or(a.port())),
            alerts: alert_tx,
            store,
            tls,
            config,
        }));
        if let Some(sock) = p2p_udp {
            if let Ok(a) = sock.local_addr() {
                let _ = shared.p2p().reflector_port.set(a.port());
            }
            shared.tasks().spawn(crate::p2p::reflector(sock, shared.clone()));
        }
        shared.tasks().spawn(crate::control::serve(control, shared.clone()));
        if let Some(l) = http {
            shared.tasks().spawn(crate::edge::http::serve(l, None, shared.clone()));
        }
        if let Some(l) = https {
            let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls().https.clone());
            shared.tasks().spawn(crate::edge::http::serve(l, Some(acceptor), shared.clone()));
        }
        if let Some(l) = api {
            shared.tasks().spawn(crate::api::serve(l, shared.clone()));
        }
        shared.tasks().spawn(crate::retention::retention_loop(shared.clone()));
        shared.tasks().spawn(crate::claims::claim_writer(shared.clone()));
        shared.tasks().spawn(crate::alert::alert_loop(alert_rx, shared.clone()));
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
        &self.shared.tls().cert_path
    }
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    pub fn store(&self) -> &Store {
        self.shared.store()
    }

    /// Graceful shutdown: stop accepting, tell every client to come back later, let in-flight
    /// requests and connections finish for up to the drain timeout, then stop everything.
    pub async fn shutdown(self) {
        let s = &self.shared;
        s.stop_accepting().cancel();
        let sessions = s.sessions();
        for sess in &sessions {
            let _ = sess.out.try_send(ServerMsg::Shutdown {
                message: "server is restarting; reconnect shortly".into(),
                retry_after_ms: 250,
            });
        }
        s.tasks().close();
        let drain = s.config().drain_timeout;
        let _ = tokio::time::timeout(drain, wait_for_drain(s)).await;
        s.hard_stop().cancel();
        for sess in sessions {
            s.end_session(&sess, CloseReason::ServerShutdown).await;
        }
        s.wind_down().await;
    }

    /// Stops at once without telling anyone, like a crash (tests of client reconnection).
    pub async fn abort(self) {
        self.shared.stop_accepting().cancel();
        self.shared.hard_stop().cancel();
        self.shared.tasks().close();
        self.shared.wind_down().await;
    }
}

/// Waits until no tunnel has traffic in flight (requests or connections holding permits).
async fn wait_for_drain(s: &Shared) {
    loop {
        if !s.any_in_flight() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
