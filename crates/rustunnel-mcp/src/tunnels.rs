//! Tunnels run in-process: each `create_tunnel` starts a [`rustunnel_client::ClientHandle`] on
//! this runtime (its own control connection), waits for its `tunnel_ready` event and returns.
//! No child process, no polling: on loopback a tunnel is ready in milliseconds.
//!
//! Every tunnel is owned by the [`TunnelManager`]: a monitor task per tunnel drains the client's
//! events (so the client never blocks on a full channel), forgets the tunnel when the server
//! closes it, and stops the client when asked. [`TunnelManager::shutdown`] stops them all; the MCP
//! server calls it when stdin closes.
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustunnel_client::options::{PublicName, TunnelOptions};
use rustunnel_client::p2p::{P2pHandle, P2pOptions, P2pRole};
use rustunnel_client::{ClientHandle, ClientOptions, Event, TlsOptions, TunnelConfig};
use rustunnel_proto::Protocol;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most tunnels one MCP server keeps open at once.
pub const MAX_TUNNELS: usize = 64;
/// Longest wait for the server to confirm a tunnel.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the local-service check waits for a TCP connection.
pub const LOCAL_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One tunnel to open: the tunnel as the client library describes it, and where to open it.
#[derive(Clone)]
pub struct TunnelRequest {
    pub tunnel: TunnelConfig,
    /// Control-plane `host:port`.
    pub server: String,
    pub token: String,
    pub tls: TlsOptions,
}

impl std::fmt::Debug for TunnelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelRequest").field("tunnel", &self.tunnel).field("server", &self.server).finish()
    }
}

/// A tunnel of this MCP server: named after its subdomain, else `mcp-<protocol>-<port>`.
pub fn named_tunnel(protocol: Protocol, local_port: u16, subdomain: Option<String>) -> TunnelOptions {
    let name = match &subdomain {
        Some(s) => s.clone(),
        None => format!("mcp-{}-{}", protocol.as_str(), local_port),
    };
    TunnelOptions {
        public: PublicName { subdomain, remote_port: None },
        ..TunnelOptions::new(name, protocol, local_port)
    }
}

/// A tunnel this MCP server opened and keeps open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenedTunnel {
    pub tunnel_id: String,
    pub name: String,
    pub protocol: String,
    pub public_url: String,
    pub public_urls: Vec<String>,
    pub local_addr: String,
    pub server: String,
    /// The pool this tunnel is a member of.
    pub group: Option<String>,
    /// Last health state the server reported for this member; `None` until the first check.
    pub healthy: Option<bool>,
}

/// One P2P endpoint to run: publish a local service, or connect to a published one.
#[derive(Clone)]
pub struct P2pRequest {
    pub role: P2pRole,
    pub server: String,
    pub token: String,
    pub secret: String,
    pub tls: TlsOptions,
}

impl std::fmt::Debug for P2pRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pRequest").field("role", &self.role).field("server", &self.server).finish_non_exhaustive()
    }
}

/// A P2P publisher or visitor this MCP server runs. P2P has no server tunnel id: `id` is ours
/// (`p2p-...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenedP2p {
    pub id: String,
    /// "publish" or "connect".
    pub role: String,
    /// The published service name (publish) or the target name (connect).
    pub name: String,
    /// Publish: the local service; connect: the local listener agents use.
    pub local_addr: String,
    /// direct or relayed once a link is up; `None` before.
    pub mode: Option<String>,
    pub server: String,
}

/// The client's words when they already say what went wrong (a rejected token, or none given
/// to a server that requires one); otherwise they follow "token rejected by the server".
fn unauthorized(message: &str) -> String {
    if message.contains("token rejected") || message.contains("requires a token") {
        message.to_string()
    } else {
        format!("token rejected by the server: {message}")
    }
}

/// Why a tunnel did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local service is not there (checked before connecting).
    #[error("nothing is listening on {addr} ({detail})")]
    LocalUnreachable { addr: String, detail: String },
    /// The control plane did not answer.
    #[error("server unreachable at {server}: is rustunnel-server running? ({detail})")]
    ServerUnreachable { server: String, detail: String },
    /// The server refused the token.
    #[error("{}", unauthorized(message))]
    Unauthorized { message: String },
    /// Any other refusal or failure the client reported (subdomain taken, TLS, ...).
    #[error("{message}")]
    Client { code: String, message: String, hint: String },
    /// The server did not confirm the tunnel in time.
    #[error("the server at {server} did not confirm the tunnel within {}s", OPEN_TIMEOUT.as_secs())]
    Timeout { server: String },
    /// The tool call was cancelled by the MCP client.
    #[error("cancelled by the client before the tunnel was ready")]
    Cancelled,
    /// The MCP server is exiting.
    #[error("the MCP server is shutting down")]
    ShuttingDown,
    /// [`MAX_TUNNELS`] are open already.
    #[error("{MAX_TUNNELS} tunnels are open already")]
    TooMany,
}

impl OpenError {
    pub fn code(&self) -> &str {
        match self {
            OpenError::LocalUnreachable { .. } => "local_service_unreachable",
            OpenError::ServerUnreachable { .. } => "server_unreachable",
            OpenError::Unauthorized { .. } => "unauthorized",
            OpenError::Client { code, .. } => code,
            OpenError::Timeout { .. } => "timeout",
            OpenError::Cancelled => "cancelled",
            OpenError::ShuttingDown => "shutting_down",
            OpenError::TooMany => "too_many_tunnels",
        }
    }

    pub fn hint(&self) -> String {
        match self {
            OpenError::LocalUnreachable { .. } => {
                "start the local service first, or pass the port (and local_host) it really listens on".into()
            }
            OpenError::ServerUnreachable { .. } => {
                "start rustunnel-server, or start rustunnel-mcp with --server HOST:PORT pointing at its control plane (default port 4040)".into()
            }
            OpenError::Unauthorized { .. } => {
                "pass a valid `token` argument or set RUSTUNNEL_TOKEN in the MCP server's environment".into()
            }
            OpenError::Client { hint, .. } => hint.clone(),
            OpenError::Timeout { .. } => "check that --server points at the rustunnel control plane".into(),
            OpenError::Cancelled | OpenError::ShuttingDown => "call create_tunnel again".into(),
            OpenError::TooMany => "close tunnels you no longer need with close_tunnel".into(),
        }
    }
}

struct LiveTunnel {
    info: OpenedTunnel,
    /// Updated by the monitor from `health` (pool members) or `p2p_link` events.
    state: Arc<Mutex<Option<bool>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct LiveP2p {
    info: OpenedP2p,
    mode: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

type P2pMap = Arc<Mutex<HashMap<String, LiveP2p>>>;

type LiveMap = Arc<Mutex<HashMap<String, LiveTunnel>>>;

/// Owns every tunnel this MCP server opened.
pub struct TunnelManager {
    live: LiveMap,
    p2p: P2pMap,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Default for TunnelManager {
    fn default() -> Self {
        Self::new(CancellationToken::new())
    }
}

impl TunnelManager {
    /// `shutdown` stops every tunnel when cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        TunnelManager { live: Default::default(), p2p: Default::default(), tasks: TaskTracker::new(), shutdown }
    }

    /// Checks that something accepts TCP connections at the local address (http/tcp tunnels).
    pub async fn check_local(t: &TunnelConfig) -> Result<(), OpenError> {
        if t.protocol == Protocol::Udp {
            // UDP has no handshake to probe; a missing service shows up as unanswered datagrams.
            return Ok(());
        }
        rustunnel_client::net::connect_tcp(&t.local_host, t.local_port, LOCAL_CHECK_TIMEOUT)
            .await
            .map(drop)
            .map_err(|e| OpenError::LocalUnreachable { addr: t.local_addr(), detail: e.to_string() })
    }

    /// Opens a tunnel and keeps it open until [`Self::close`] or shutdown. `cancel` aborts the
    /// attempt (MCP cancellation); `progress` hears each step.
    pub async fn open<P, Fut>(
        &self,
        req: TunnelRequest,
        cancel: CancellationToken,
        progress: P,
    ) -> Result<OpenedTunnel, OpenError>
    where
        P: Fn(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.admit()?;
        progress(format!("checking that something listens on {}", req.tunnel.local_addr())).await;
        Self::check_local(&req.tunnel).await?;
        progress(format!("connecting to the rustunnel server at {}", req.server)).await;
        let mut opts = ClientOptions::new(req.server.clone(), req.token.clone());
        opts.tls = req.tls.clone();
        opts.reconnect = true;
        opts.tunnels = vec![req.tunnel.clone()];
        let mut client = ClientHandle::spawn(opts);
        let outcome = wait_ready(
            &mut client.events,
            &req.server,
            OPEN_TIMEOUT,
            &cancel,
            &self.shutdown,
            "the tunnel client stopped before the tunnel was ready",
            |ev| match ev {
                Event::TunnelReady { tunnel_id, name, protocol, public_url, public_urls, local_addr } => {
                    Some(Ok(OpenedTunnel {
                        tunnel_id,
                        name,
                        protocol: protocol.as_str().to_string(),
                        public_url,
                        public_urls,
                        local_addr,
                        server: req.server.clone(),
                        group: req.tunnel.group.as_ref().map(|g| g.name.clone()),
                        healthy: None,
                    }))
                }
                Event::TunnelClosed { message, .. } => Some(Err(OpenError::Client {
                    code: "tunnel_closed".into(),
                    message,
                    hint: "call create_tunnel again".into(),
                })),
                _ => None,
            },
        )
        .await;
        let info = match outcome {
            Ok(i) => i,
            Err(e) => {
                stop_client(client).await;
                return Err(e);
            }
        };
        progress(format!("tunnel ready at {}", info.public_url)).await;
        self.adopt(client, info.clone());
        Ok(info)
    }

    /// Hands a ready client to a monitor task and records it.
    fn adopt(&self, mut client: ClientHandle, info: OpenedTunnel) {
        let stop = self.shutdown.child_token();
        let live = self.live.clone();
        let id = info.tunnel_id.clone();
        let state = Arc::new(Mutex::new(None));
        // Held across the spawn so the monitor cannot remove the entry before it exists.
        let mut map = self.live.lock();
        let task = self.tasks.spawn({
            let stop = stop.clone();
            let id = id.clone();
            let state = state.clone();
            async move {
                let fatal = watch(&mut client.events, &stop, |ev| match ev {
                    Event::Health { healthy, .. } => {
                        *state.lock() = Some(healthy);
                        ControlFlow::Continue(())
                    }
                    Event::TunnelClosed { reason, .. } => {
                        tracing::info!(tunnel_id = %id, %reason, "tunnel closed by the server");
                        ControlFlow::Break(())
                    }
                    _ => ControlFlow::Continue(()),
                })
                .await;
                if let Some(message) = fatal {
                    tracing::warn!(tunnel_id = %id, %message, "tunnel client ended");
                }
                stop_client(client).await;
                live.lock().remove(&id);
            }
        });
        map.insert(id, LiveTunnel { info, state, stop, task });
    }

    /// Tunnels and P2P endpoints open now.
    fn count(&self) -> usize {
        self.live.lock().len() + self.p2p.lock().len()
    }

    /// Refuses a new tunnel while shutting down or at [`MAX_TUNNELS`].
    fn admit(&self) -> Result<(), OpenError> {
        if self.shutdown.is_cancelled() {
            return Err(OpenError::ShuttingDown);
        }
        if self.count() >= MAX_TUNNELS {
            return Err(OpenError::TooMany);
        }
        Ok(())
    }

    /// Starts a P2P publisher or visitor and waits until it is ready: published (publish), or
    /// linked with the publisher and listening locally (connect). Any error before that is
    /// returned (wrong secret, unknown name, ...) and the client is stopped.
    pub async fn open_p2p<P, Fut>(
        &self,
        req: P2pRequest,
        cancel: CancellationToken,
        progress: P,
    ) -> Result<OpenedP2p, OpenError>
    where
        P: Fn(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.admit()?;
        if let P2pRole::Publish { local_host, local_port, .. } = &req.role {
            let probe = TunnelConfig {
                local_host: local_host.clone(),
                ..TunnelConfig::new("p2p-publish", Protocol::Tcp, *local_port)
            };
            progress(format!("checking that something listens on {}", probe.local_addr())).await;
            Self::check_local(&probe).await?;
        }
        progress(format!("connecting to the rustunnel server at {}", req.server)).await;
        let mut opts = P2pOptions::new(req.server.clone(), req.token.clone(), req.secret.clone(), req.role.clone());
        opts.tls = req.tls.clone();
        opts.reconnect = true;
        let mut h = P2pHandle::spawn(opts);
        // A visitor is ready once the secret proof and a path (direct or relayed) are done.
        let limit = OPEN_TIMEOUT + Duration::from_secs(10);
        let outcome = wait_ready(
            &mut h.events,
            &req.server,
            limit,
            &cancel,
            &self.shutdown,
            "the P2P client stopped before it was ready",
            |ev| match ev {
                Event::P2pReady { role, name, mode, local_addr, .. } => {
                    Some(Ok(OpenedP2p { id: new_p2p_id(), role, name, local_addr, mode, server: req.server.clone() }))
                }
                _ => None,
            },
        )
        .await;
        let info = match outcome {
            Ok(i) => i,
            Err(e) => {
                stop_p2p(h).await;
                return Err(e);
            }
        };
        progress(format!("P2P {} '{}' ready", info.role, info.name)).await;
        let stop = self.shutdown.child_token();
        let mode = Arc::new(Mutex::new(info.mode.clone()));
        let map_ref = self.p2p.clone();
        let mut map = self.p2p.lock();
        let task = self.tasks.spawn({
            let stop = stop.clone();
            let id = info.id.clone();
            let mode = mode.clone();
            async move {
                let fatal = watch(&mut h.events, &stop, |ev| {
                    if let Event::P2pLink { mode: m, .. } | Event::P2pReady { mode: Some(m), .. } = ev {
                        *mode.lock() = Some(m);
                    }
                    ControlFlow::Continue(())
                })
                .await;
                if let Some(message) = fatal {
                    tracing::warn!(p2p_id = %id, %message, "P2P client ended");
                }
                stop_p2p(h).await;
                map_ref.lock().remove(&id);
            }
        });
        map.insert(info.id.clone(), LiveP2p { info: info.clone(), mode, stop, task });
        Ok(info)
    }

    /// Stops one of our P2P endpoints. `false` if `id` is not one.
    pub async fn close_p2p(&self, id: &str) -> bool {
        let entry = self.p2p.lock().remove(id);
        match entry {
            Some(t) => {
                t.stop.cancel();
                let _ = t.task.await;
                true
            }
            None => false,
        }
    }

    /// The P2P endpoints running now, sorted by id, with their current mode.
    pub fn list_p2p(&self) -> Vec<OpenedP2p> {
        let mut v: Vec<OpenedP2p> =
            self.p2p.lock().values().map(|t| OpenedP2p { mode: t.mode.lock().clone(), ..t.info.clone() }).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Stops one of our tunnels and waits until its control connection is closed. `false` if it
    /// is not one of ours.
    pub async fn close(&self, tunnel_id: &str) -> bool {
        let entry = self.live.lock().remove(tunnel_id);
        match entry {
            Some(t) => {
                t.stop.cancel();
                let _ = t.task.await;
                true
            }
            None => false,
        }
    }

    pub fn is_ours(&self, tunnel_id: &str) -> bool {
        self.live.lock().contains_key(tunnel_id)
    }

    /// The tunnels currently open, sorted by id.
    pub fn list(&self) -> Vec<OpenedTunnel> {
        let mut v: Vec<OpenedTunnel> =
            self.live.lock().values().map(|t| OpenedTunnel { healthy: *t.state.lock(), ..t.info.clone() }).collect();
        v.sort_by(|a, b| a.tunnel_id.cmp(&b.tunnel_id));
        v
    }

    /// Stops every tunnel and waits (bounded) for their clients to end.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await.is_err() {
            tracing::warn!("some tunnel clients did not stop within 5s");
        }
    }
}

/// Stops a client without letting its run loop block on an undrained event channel.
async fn stop_client(mut client: ClientHandle) {
    client.events.close();
    while client.events.try_recv().is_ok() {}
    if tokio::time::timeout(Duration::from_secs(3), client.stop()).await.is_err() {
        tracing::warn!("tunnel client did not stop within 3s");
    }
}

/// Hands a client's events to `on_event` until it says to stop, the client ends (a fatal
/// error, or its event channel closes) or `stop` is cancelled. Returns a fatal error's message.
async fn watch(
    events: &mut mpsc::Receiver<Event>,
    stop: &CancellationToken,
    mut on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Option<String> {
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Error { fatal: true, message, .. }) => return Some(message),
                Some(ev) => {
                    if on_event(ev).is_break() {
                        return None;
                    }
                }
                None => return None,
            },
            _ = stop.cancelled() => return None,
        }
    }
}

/// Stops a P2P client, draining its events so it never blocks.
async fn stop_p2p(mut h: P2pHandle) {
    h.events.close();
    while h.events.try_recv().is_ok() {}
    if tokio::time::timeout(Duration::from_secs(3), h.stop()).await.is_err() {
        tracing::warn!("P2P client did not stop within 3s");
    }
}

/// A fresh id for a P2P endpoint (`p2p-` and 16 hex digits).
fn new_p2p_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("p2p-{:016x}", h.finish())
}

/// Waits until `pick` turns a client event into the outcome of an open call. Before that, every
/// `error` event is final for the call (the agent gets the reason now instead of a client
/// retrying in the background), and so are the call's cancellation, the server's shutdown, the
/// deadline `limit` and a client that stops (`stopped` says so).
async fn wait_ready<T>(
    events: &mut mpsc::Receiver<Event>,
    server: &str,
    limit: Duration,
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
    stopped: &str,
    mut pick: impl FnMut(Event) -> Option<Result<T, OpenError>>,
) -> Result<T, OpenError> {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Error { code, message, hint, .. }) => return Err(client_error(server, code, message, hint)),
                Some(ev) => {
                    if let Some(r) = pick(ev) {
                        return r;
                    }
                }
                None => return Err(OpenError::Client {
                    code: "client_stopped".into(),
                    message: stopped.into(),
                    hint: "call create_tunnel again".into(),
                }),
            },
            _ = cancel.cancelled() => return Err(OpenError::Cancelled),
            _ = shutdown.cancelled() => return Err(OpenError::ShuttingDown),
            _ = &mut deadline => return Err(OpenError::Timeout { server: server.to_string() }),
        }
    }
}

fn client_error(server: &str, code: String, message: String, hint: String) -> OpenError {
    let hint = match code.as_str() {
        "p2p_wrong_secret" => "pass the same `secret` the publisher used (create_tunnel with peer_name)".into(),
        "p2p_unknown_name" => "publish the service first (create_tunnel with protocol \"p2p\", peer_name and secret), with a token of the same owner, and check the spelling of peer_target".into(),
        "p2p_name_taken" => "choose another peer_name, or close the publisher that holds it".into(),
        "group_key_mismatch" => "pass the group_key the pool's first member used; every member of a pool must use the same key".into(),
        "group_taken" => "choose another group name, or use a token of the pool's owner: members of a pool share one owner".into(),
        _ => hint,
    };
    match code.as_str() {
        "server_unreachable" => {
            // The client's message repeats "server unreachable at ADDR: "; keep only the cause.
            let detail = message.split_once(": ").map(|(_, d)| d.to_string()).unwrap_or(message);
            OpenError::ServerUnreachable { server: server.to_string(), detail }
        }
        "unauthorized" => OpenError::Unauthorized { message },
        _ => OpenError::Client { code, message, hint },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unauthorized_error_says_why_once() {
        let missing = "the server requires a token and none was given";
        assert_eq!(OpenError::Unauthorized { message: missing.into() }.to_string(), missing);
        let rejected = "authentication failed: token rejected by the server";
        assert_eq!(OpenError::Unauthorized { message: rejected.into() }.to_string(), rejected);
        let other = OpenError::Unauthorized { message: "revoked".into() }.to_string();
        assert_eq!(other, "token rejected by the server: revoked");
    }
}
