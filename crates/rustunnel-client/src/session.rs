//! The client run loop: connect, authenticate, open the tunnels, keep a pool of data
//! connections, and reconnect (the policy of [`crate::reconnect`]) when the connection is lost,
//! asking for the same subdomains and ports back.
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustunnel_proto::limits::{HANDSHAKE_TIMEOUT, HEARTBEAT_MISSES, MAX_CONTROL_FRAME};
use rustunnel_proto::{ClientMsg, ErrorCode, ServerMsg, TunnelInfo, CONTROL_PATH, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClientOptions, TunnelConfig};
use crate::error::ClientError;
use crate::events::Event;
use crate::forward::{self, LocalTarget, Targets};
use crate::health::{self, HealthChange};
use crate::net::{split_host_port, Dialer};
use crate::reconnect::{Backoff, Wait};
use crate::tls::client_config;

/// Event-channel slots that request-log events may never use, kept for lifecycle events.
const EVENT_RESERVE: usize = 64;

/// Most idle data connections the client keeps open at once.
const MAX_IDLE: usize = 64;

/// The control WebSocket to the server.
pub(crate) type ControlWs = tokio_tungstenite::WebSocketStream<crate::net::ServerStream>;

/// What the server's `welcome` tells a client.
pub(crate) struct Welcome {
    pub session_id: String,
    pub data_key: String,
    pub heartbeat: Duration,
    pub pool_size: u16,
    pub p2p_udp_port: Option<u16>,
    pub plain_data: bool,
}

/// Upgrades a TLS connection to the control WebSocket, says hello and reads the welcome, each
/// step under the handshake deadline. A refused hello is [`ClientError::Rejected`].
pub(crate) async fn open_control(
    dialer: &Dialer,
    tls: crate::net::ServerStream,
    token: &str,
    agent: String,
    plain_data: bool,
    mux: bool,
) -> Result<(ControlWs, Welcome), ClientError> {
    let host = if dialer.host.contains(':') { format!("[{}]", dialer.host) } else { dialer.host.clone() };
    let url = format!("wss://{host}:{}{CONTROL_PATH}", dialer.port);
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(MAX_CONTROL_FRAME);
    cfg.max_frame_size = Some(MAX_CONTROL_FRAME);
    let (mut ws, _) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::client_async_with_config(url, tls, Some(cfg)))
            .await
            .map_err(|_| ClientError::Handshake("timed out".into()))?
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
    let hello = ClientMsg::Hello { version: PROTOCOL_VERSION, token: token.to_string(), agent, plain_data, mux };
    ws.send(Message::text(hello.encode())).await.map_err(|e| ClientError::Handshake(e.to_string()))?;
    loop {
        let msg = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next())
            .await
            .map_err(|_| ClientError::Handshake("no answer to hello".into()))?;
        match msg {
            Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                Ok(ServerMsg::Welcome {
                    session_id,
                    data_key,
                    heartbeat_secs,
                    pool_size,
                    p2p_udp_port,
                    plain_data,
                    ..
                }) => {
                    let heartbeat = Duration::from_secs(heartbeat_secs.max(1));
                    return Ok((ws, Welcome { session_id, data_key, heartbeat, pool_size, p2p_udp_port, plain_data }));
                }
                // "Token rejected" would be misleading when there was none to reject.
                Ok(ServerMsg::Rejected { code: ErrorCode::Unauthorized, .. }) if token.is_empty() => {
                    return Err(ClientError::TokenRequired)
                }
                Ok(ServerMsg::Rejected { code, message, retry_after_ms }) => {
                    return Err(ClientError::rejected(code, message, retry_after_ms))
                }
                _ => return Err(ClientError::Protocol("unexpected first message from server".into())),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Handshake(e.to_string())),
            None => return Err(ClientError::Handshake("server closed the connection".into())),
        }
    }
}

enum SessionEnd {
    Cancelled,
    NoTunnelsLeft,
    Lost { reason: String, retry_after: Option<Duration>, established: bool },
}

enum PoolEvent {
    /// A pooled connection was handed a visitor: open a replacement.
    Used,
    /// Opening or holding a connection failed.
    Failed,
}

/// What a handler of the session loop says: go on, or end the session this way.
type Step = ControlFlow<Result<SessionEnd, ClientError>>;

/// One control connection's state, shared by the handlers of its loop.
struct Live {
    ws: ControlWs,
    /// Tunnels asked for and not yet answered, by request id.
    pending: HashMap<u64, TunnelConfig>,
    session_id: String,
    data_key: String,
    plain: bool,
    /// Ends this connection's idle data connections and health checks, once the session is
    /// over (after the drain of a deliberate stop).
    cancel: CancellationToken,
    pool_tx: mpsc::Sender<PoolEvent>,
    health_tx: mpsc::Sender<HealthChange>,
    /// Data connections open and not yet handed a visitor.
    idle: usize,
    heartbeat: Duration,
    last_seen: tokio::time::Instant,
    nonce: u64,
    /// When the server announced a restart, how soon to come back.
    retry_after: Option<Duration>,
}

impl Live {
    /// The connection is gone after it was up.
    fn lost(&self, reason: &str) -> Step {
        Break(Ok(SessionEnd::Lost { reason: reason.into(), retry_after: self.retry_after, established: true }))
    }
}

struct Runner {
    opts: ClientOptions,
    dialer: Dialer,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    targets: Targets,
    /// Last tunnel info per tunnel name, to ask for the same name/port after a reconnect.
    assigned: HashMap<String, TunnelInfo>,
    /// Names the server closed (API close, revoked token): never re-created.
    closed: HashSet<String>,
    /// Streams serving visitors; they outlive a lost control connection and end with the run.
    streams: TaskTracker,
    /// Ends the streams: cancelled after the run loop, so pool members finish in-flight traffic
    /// while they drain.
    stream_cancel: CancellationToken,
    /// Whether dropped events were already reported (once per run, not per event).
    dropped_events: std::sync::atomic::AtomicBool,
}

/// Runs a client until cancelled, until every tunnel was closed by the server, or until a
/// fatal error. Events are reported on `events`; an error that ends the run is always reported
/// as a fatal `error` event first, including bad options found before connecting.
pub async fn run(
    opts: ClientOptions,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> Result<(), ClientError> {
    let server = opts.server.clone();
    let result = run_inner(opts, events.clone(), cancel).await;
    if let Err(e) = &result {
        let _ = events.try_send(Event::Error {
            code: e.code().into(),
            message: e.to_string(),
            hint: e.hint(&server),
            fatal: true,
        });
    }
    result
}

async fn run_inner(
    mut opts: ClientOptions,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> Result<(), ClientError> {
    if opts.tunnels.is_empty() {
        return Err(ClientError::Config("no tunnels to open".into()));
    }
    opts.tunnels.iter().try_for_each(TunnelConfig::validate).map_err(ClientError::Config)?;
    // Local connections and health checks resolve the host as given: `[::1]` would not resolve.
    for t in &mut opts.tunnels {
        t.local_host = crate::config::local_host(&t.local_host).to_string();
    }
    let (host, port) = split_host_port(&opts.server, 4040)?;
    let tls = client_config(&opts.tls, &[b"http/1.1"])?;
    let mut r = Runner {
        dialer: Dialer { host, port, tls },
        events,
        cancel,
        targets: Default::default(),
        assigned: HashMap::new(),
        closed: HashSet::new(),
        streams: TaskTracker::new(),
        stream_cancel: CancellationToken::new(),
        dropped_events: Default::default(),
        opts,
    };
    let result = r.run_loop().await;
    r.cancel.cancel();
    r.stream_cancel.cancel();
    r.streams.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), r.streams.wait()).await;
    result
}

impl Runner {
    /// Reports an event without ever waiting: a consumer that stops reading (a blocked
    /// stdout, a busy agent) must not stall heartbeats and forwarding. Request-log events are
    /// only sent while the channel has room to spare, so these always fit.
    async fn emit(&self, e: Event) {
        if self.events.try_send(e).is_err() && !self.dropped_events.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("the event consumer is not keeping up; events are being dropped");
        }
    }

    async fn run_loop(&mut self) -> Result<(), ClientError> {
        let mut backoff = Backoff::new(self.opts.max_backoff);
        loop {
            let started = tokio::time::Instant::now();
            let end = self.session_once().await;
            let (reason, wait) = match end {
                Ok(SessionEnd::Cancelled) | Ok(SessionEnd::NoTunnelsLeft) => return Ok(()),
                Ok(SessionEnd::Lost { reason, retry_after, established }) => {
                    if established {
                        backoff.session_ended(started.elapsed());
                    }
                    (reason, retry_after.map_or(Wait::Backoff, Wait::ServerAsked))
                }
                // `run` reports the error that ends the run.
                Err(e) if e.is_fatal() || !self.opts.reconnect => return Err(e),
                Err(e) => {
                    self.emit(Event::Error {
                        code: e.code().into(),
                        message: e.to_string(),
                        hint: e.hint(&self.opts.server),
                        fatal: false,
                    })
                    .await;
                    (e.to_string(), Wait::after(&e))
                }
            };
            if !self.opts.reconnect {
                return Err(ClientError::GaveUp(format!("connection to the server lost ({reason})")));
            }
            let (attempt, delay) = backoff.next(wait);
            self.emit(Event::Reconnecting { attempt, delay_ms: delay.as_millis() as u64, reason }).await;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Ok(()),
            }
        }
    }

    fn active_tunnels(&self) -> Vec<TunnelConfig> {
        self.opts.tunnels.iter().filter(|t| !self.closed.contains(&t.name)).cloned().collect()
    }

    async fn session_once(&mut self) -> Result<SessionEnd, ClientError> {
        let tls = tokio::select! {
            r = self.dialer.dial() => r?,
            _ = self.cancel.cancelled() => return Ok(SessionEnd::Cancelled),
        };
        let agent = format!("rustunnel/{}", env!("CARGO_PKG_VERSION"));
        let (ws, welcome) =
            open_control(&self.dialer, tls, &self.opts.token, agent, self.opts.plain_data, self.opts.mux).await?;
        let Welcome { session_id, data_key, heartbeat, pool_size, plain_data: plain, .. } = welcome;

        if self.opts.plain_data && !plain {
            self.emit(Event::Error {
                code: "plain_data_refused".into(),
                message: "the server does not allow plain data connections; going on with TLS data connections".into(),
                hint: "start the server with --allow-plain-data, or drop --plain-data".into(),
                fatal: false,
            })
            .await;
        }
        // A fresh session: tunnel ids from the previous one mean nothing any more.
        self.targets.write().clear();
        let (pool_tx, mut pool_rx) = mpsc::channel::<PoolEvent>(256);
        let (health_tx, mut health_rx) = mpsc::channel::<HealthChange>(64);
        let mut live = Live {
            ws,
            pending: HashMap::new(),
            session_id,
            data_key,
            plain,
            // Its own token, not a child of the run's: a deliberate stop drains first, and the
            // idle data connections the server holds must still serve what it routes here meanwhile.
            cancel: CancellationToken::new(),
            pool_tx,
            health_tx,
            idle: 0,
            heartbeat,
            last_seen: tokio::time::Instant::now(),
            nonce: 0,
            retry_after: None,
        };
        let end = self.serve(&mut live, pool_size, &mut pool_rx, &mut health_rx).await;
        live.cancel.cancel();
        end
    }

    /// The session's loop: each arm hands its input to a named handler, which says whether
    /// the session goes on.
    async fn serve(
        &mut self,
        live: &mut Live,
        pool_size: u16,
        pool_rx: &mut mpsc::Receiver<PoolEvent>,
        health_rx: &mut mpsc::Receiver<HealthChange>,
    ) -> Result<SessionEnd, ClientError> {
        self.open_tunnels(live).await?;
        for _ in 0..pool_size.max(1) {
            self.spawn_conn(live, Duration::ZERO);
        }
        let mut heartbeat_tick = tokio::time::interval(live.heartbeat);
        heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                _ = self.cancel.cancelled() => Break(Ok(self.leave(live, pool_rx).await)),
                Some(h) = health_rx.recv() => self.handle_health(live, h).await,
                Some(ev) = pool_rx.recv() => self.handle_pool_event(live, ev),
                _ = heartbeat_tick.tick() => self.send_heartbeat(live).await,
                frame = live.ws.next() => self.handle_frame(live, frame).await,
            };
            if let Break(end) = step {
                return end;
            }
        }
    }

    /// Asks for every tunnel still wanted; a returning client asks for what it had, whatever
    /// the config says.
    async fn open_tunnels(&mut self, live: &mut Live) -> Result<(), ClientError> {
        for (i, t) in self.active_tunnels().into_iter().enumerate() {
            let mut spec = t.spec();
            if let Some(p) = self.assigned.get(&t.name) {
                spec.subdomain = p.subdomain.clone().or(spec.subdomain);
                spec.remote_port = p.remote_port.or(spec.remote_port);
            }
            let req_id = i as u64 + 1;
            live.ws
                .send(Message::text(ClientMsg::OpenTunnel { req_id, spec }.encode()))
                .await
                .map_err(|e| ClientError::Lost(e.to_string()))?;
            live.pending.insert(req_id, t);
        }
        Ok(())
    }

    /// A deliberate stop: drain, close the tunnels, say goodbye.
    async fn leave(&self, live: &mut Live, pool_rx: &mut mpsc::Receiver<PoolEvent>) -> SessionEnd {
        self.drain_tunnels(live, pool_rx).await;
        self.close_tunnels(&mut live.ws).await;
        let _ = live.ws.close(None).await;
        SessionEnd::Cancelled
    }

    /// Opens one idle data connection (after `delay`) that serves visitors once the server
    /// hands it one, unless enough are already idle.
    fn spawn_conn(&self, live: &mut Live, delay: Duration) {
        if live.idle >= MAX_IDLE {
            return;
        }
        live.idle += 1;
        let dialer = self.dialer.clone();
        let (sid, key, plain) = (live.session_id.clone(), live.data_key.clone(), live.plain);
        let targets = self.targets.clone();
        let pool_tx = live.pool_tx.clone();
        let session_cancel = live.cancel.clone();
        let run_cancel = self.stream_cancel.clone();
        let events = self.events.clone();
        let streams = self.streams.clone();
        self.streams.spawn(async move {
            let (header, io) = tokio::select! {
                r = forward::pooled_stream(&dialer, &sid, &key, plain, delay) => match r {
                    Ok(x) => x,
                    Err(_) => {
                        let _ = pool_tx.try_send(PoolEvent::Failed);
                        return;
                    }
                },
                _ = session_cancel.cancelled() => return,
            };
            let _ = pool_tx.try_send(PoolEvent::Used);
            let report = move |f: forward::LocalFailure| {
                tracing::warn!(tunnel = %f.name, "{}", f.error);
                let _ = events.try_send(Event::Error {
                    code: "local_unreachable".into(),
                    message: format!("tunnel '{}': {}", f.name, f.error),
                    hint: format!("start the local service on {}, or fix --local-host/port", f.addr),
                    fatal: false,
                });
            };
            if header.mux {
                forward::serve_mux(io, targets, streams, run_cancel, report).await;
                return;
            }
            forward::serve_until(header, io, &targets, &run_cancel, report).await;
        });
    }

    /// A health check changed its verdict: tell the server and the user.
    async fn handle_health(&self, live: &mut Live, h: HealthChange) -> Step {
        if !self.targets.read().contains_key(&h.tunnel_id) {
            return Continue(());
        }
        let msg =
            ClientMsg::HealthReport { tunnel_id: h.tunnel_id.clone(), healthy: h.healthy, detail: h.detail.clone() };
        if live.ws.send(Message::text(msg.encode())).await.is_err() {
            return live.lost("control connection closed");
        }
        self.emit(Event::Health { tunnel_id: h.tunnel_id, name: h.name, healthy: h.healthy, detail: h.detail }).await;
        Continue(())
    }

    /// The server has no idle data connection for a visitor: open up to `count` more.
    fn need_data_conns(&self, live: &mut Live, count: u16) {
        for _ in 0..count.min(MAX_IDLE as u16) {
            self.spawn_conn(live, Duration::ZERO);
        }
    }

    /// An idle data connection was used or failed: open its replacement.
    fn handle_pool_event(&self, live: &mut Live, ev: PoolEvent) -> Step {
        live.idle = live.idle.saturating_sub(1);
        match ev {
            PoolEvent::Used => self.spawn_conn(live, Duration::ZERO),
            PoolEvent::Failed => self.spawn_conn(live, Duration::from_millis(500)),
        }
        Continue(())
    }

    /// Pings the server; a server silent for [`HEARTBEAT_MISSES`] intervals is gone.
    async fn send_heartbeat(&self, live: &mut Live) -> Step {
        if live.last_seen.elapsed() > live.heartbeat * HEARTBEAT_MISSES {
            return Break(Ok(SessionEnd::Lost {
                reason: "heartbeat timeout".into(),
                retry_after: None,
                established: true,
            }));
        }
        live.nonce += 1;
        if live.ws.send(Message::text(ClientMsg::Ping { nonce: live.nonce }.encode())).await.is_err() {
            return live.lost("control connection closed");
        }
        Continue(())
    }

    /// One WebSocket frame from the server (or its end).
    async fn handle_frame(
        &mut self,
        live: &mut Live,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Step {
        live.last_seen = tokio::time::Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                tracing::warn!("the server sent a control message over the size limit");
                rustunnel_transport::ws::close_too_big(&mut live.ws, MAX_CONTROL_FRAME, Duration::from_secs(1)).await;
                return live.lost("the server sent a control message over the size limit");
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                let reason = if live.retry_after.is_some() { "server restarting" } else { "control connection closed" };
                return live.lost(reason);
            }
            Some(Ok(_)) => return Continue(()),
        };
        match ServerMsg::decode(text.as_str()) {
            Ok(msg) => self.handle_message(live, msg).await,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable control message");
                Continue(())
            }
        }
    }

    /// One control message from the server.
    async fn handle_message(&mut self, live: &mut Live, msg: ServerMsg) -> Step {
        match msg {
            ServerMsg::TunnelOpened { req_id, tunnel } => self.tunnel_opened(live, req_id, tunnel).await,
            ServerMsg::TunnelRejected { req_id, code, message, retry_after_ms } => {
                let Some(cfg) = live.pending.remove(&req_id) else { return Continue(()) };
                let retry_after = retry_after_ms.map(Duration::from_millis);
                let err = ClientError::TunnelRejected { name: cfg.name.clone(), code, message, retry_after };
                if self.assigned.contains_key(&cfg.name) {
                    // Restoring after a reconnect: back off and try again.
                    return Break(Ok(SessionEnd::Lost {
                        reason: err.to_string(),
                        retry_after: None,
                        established: false,
                    }));
                }
                Break(Err(err))
            }
            ServerMsg::TunnelClosed { tunnel_id, reason, message } => {
                self.tunnel_closed(live, tunnel_id, reason, message).await
            }
            ServerMsg::NeedDataConns { count } => {
                self.need_data_conns(live, count);
                Continue(())
            }
            ServerMsg::RequestLog { entries, dropped } => {
                self.show_requests(entries, dropped);
                Continue(())
            }
            ServerMsg::Ping { nonce } => {
                let _ = live.ws.send(Message::text(ClientMsg::Pong { nonce }.encode())).await;
                Continue(())
            }
            ServerMsg::Shutdown { message, retry_after_ms } => {
                live.retry_after = Some(Duration::from_millis(retry_after_ms.clamp(50, 30_000)));
                self.emit(Event::ServerShutdown { message }).await;
                Continue(())
            }
            ServerMsg::Error { code, message } => {
                tracing::warn!(?code, "server: {message}");
                Continue(())
            }
            ServerMsg::Rejected { code, message, retry_after_ms } => {
                Break(Err(ClientError::rejected(code, message, retry_after_ms)))
            }
            ServerMsg::Pong { .. }
            | ServerMsg::Welcome { .. }
            | ServerMsg::TunnelDrained { .. }
            | ServerMsg::Unknown => Continue(()),
            // P2P runs its own sessions (crate::p2p); nothing to do here.
            ServerMsg::P2pPublished { .. }
            | ServerMsg::P2pIncoming { .. }
            | ServerMsg::P2pAnswer { .. }
            | ServerMsg::P2pConfirm { .. }
            | ServerMsg::P2pResult { .. }
            | ServerMsg::P2pClosed { .. }
            | ServerMsg::P2pError { .. } => Continue(()),
        }
    }

    /// A tunnel asked for is open: route its visitors, start its health check, tell the user.
    async fn tunnel_opened(&mut self, live: &mut Live, req_id: u64, tunnel: TunnelInfo) -> Step {
        let Some(cfg) = live.pending.remove(&req_id) else { return Continue(()) };
        self.targets.write().insert(
            tunnel.tunnel_id.clone(),
            LocalTarget {
                name: cfg.name.clone(),
                protocol: cfg.protocol,
                host: cfg.local_host.clone(),
                port: cfg.local_port,
                proxy_protocol: cfg.proxy_protocol,
            },
        );
        if let Some(check) = cfg.health_check.clone() {
            self.streams.spawn(health::run(
                check,
                tunnel.tunnel_id.clone(),
                cfg.name.clone(),
                cfg.local_host.clone(),
                cfg.local_port,
                live.health_tx.clone(),
                live.cancel.clone(),
            ));
        }
        let event = if self.assigned.contains_key(&cfg.name) {
            Event::Reconnected {
                tunnel_id: tunnel.tunnel_id.clone(),
                name: cfg.name.clone(),
                public_url: tunnel.public_url.clone(),
            }
        } else {
            Event::ready(&tunnel, cfg.local_addr())
        };
        self.assigned.insert(cfg.name.clone(), tunnel);
        self.emit(event).await;
        Continue(())
    }

    /// The server closed a tunnel (API close, revoked token): it is not asked for again; the
    /// session ends with the last one.
    async fn tunnel_closed(
        &mut self,
        live: &mut Live,
        tunnel_id: String,
        reason: rustunnel_proto::control::CloseReason,
        message: String,
    ) -> Step {
        let target = self.targets.write().remove(&tunnel_id);
        if let Some(t) = target {
            self.closed.insert(t.name.clone());
            let reason =
                serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            self.emit(Event::TunnelClosed { tunnel_id, name: t.name, reason, message }).await;
        }
        if self.active_tunnels().is_empty() {
            let _ = live.ws.close(None).await;
            return Break(Ok(SessionEnd::NoTunnelsLeft));
        }
        Continue(())
    }
}

impl Runner {
    /// The server's batch of served requests, as `Request` events (counted, not shown, when
    /// the event consumer lags).
    fn show_requests(&self, entries: Vec<rustunnel_proto::control::RequestLogEntry>, dropped: u64) {
        let names = self.targets.read().clone();
        let mut not_shown = dropped;
        for e in entries {
            if self.events.capacity() < EVENT_RESERVE {
                not_shown += 1;
                continue;
            }
            let name = names.get(&e.tunnel_id).map(|t| t.name.clone()).unwrap_or_default();
            let _ = self.events.try_send(Event::Request {
                name,
                method: e.method,
                path: e.path,
                status: e.status,
                duration_ms: e.duration_us as f64 / 1000.0,
                remote_addr: e.remote_addr,
            });
        }
        if not_shown > 0 {
            let _ = self.events.try_send(Event::RequestsNotShown { count: not_shown });
        }
    }

    /// A deliberate stop closes the tunnels it leaves (drained first): their
    /// names then answer "not found" instead of "the client may be reconnecting", and stay
    /// reserved to their owner for the grace period all the same. Bounded: the server may
    /// not be reading.
    async fn close_tunnels<S>(&self, ws: &mut S)
    where
        S: futures_util::Sink<Message> + Unpin,
    {
        let ids: Vec<String> = self.targets.read().keys().cloned().collect();
        let send = async {
            for tunnel_id in ids {
                if ws.send(Message::text(ClientMsg::CloseTunnel { tunnel_id }.encode())).await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
    }

    /// Graceful leave: asks the server to drain each HTTP and TCP tunnel (pool members and
    /// lone tunnels alike: no new requests or connections) and waits (bounded) until their
    /// in-flight traffic has finished; streams keep serving meanwhile, and so does the supply
    /// of data connections for requests admitted just before the drain. UDP has no requests to
    /// finish.
    async fn drain_tunnels(&self, live: &mut Live, pool_rx: &mut mpsc::Receiver<PoolEvent>) {
        let members: Vec<(String, String)> = {
            let targets = self.targets.read();
            targets
                .iter()
                .filter(|(_, t)| t.protocol != rustunnel_proto::Protocol::Udp)
                .map(|(id, t)| (id.clone(), t.name.clone()))
                .collect()
        };
        if members.is_empty() {
            return;
        }
        let mut waiting: HashSet<String> = HashSet::new();
        for (id, _) in &members {
            if live.ws.send(Message::text(ClientMsg::DrainTunnel { tunnel_id: id.clone() }.encode())).await.is_err() {
                return;
            }
            waiting.insert(id.clone());
        }
        self.emit(Event::Draining { names: members.into_iter().map(|(_, n)| n).collect() }).await;
        let wait = async {
            while !waiting.is_empty() {
                let frame = tokio::select! {
                    frame = live.ws.next() => frame,
                    Some(ev) = pool_rx.recv() => {
                        let _ = self.handle_pool_event(live, ev);
                        continue;
                    }
                };
                match frame {
                    // The requests finishing meanwhile still reach the live log.
                    Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                        Ok(ServerMsg::TunnelDrained { tunnel_id }) => {
                            waiting.remove(&tunnel_id);
                        }
                        Ok(ServerMsg::RequestLog { entries, dropped }) => self.show_requests(entries, dropped),
                        Ok(ServerMsg::Ping { nonce }) => {
                            let _ = live.ws.send(Message::text(ClientMsg::Pong { nonce }.encode())).await;
                        }
                        Ok(ServerMsg::NeedDataConns { count }) => self.need_data_conns(live, count),
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_WAIT, wait).await;
    }
}

/// How long a leaving client waits for the server to drain its tunnels.
const DRAIN_WAIT: Duration = Duration::from_secs(15);

/// A client running in the background. Dropping the handle stops the client (structured
/// concurrency: nothing outlives its owner); `stop` also waits for it to finish.
pub struct ClientHandle {
    pub events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), ClientError>>>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn finish(task: Option<tokio::task::JoinHandle<Result<(), ClientError>>>) -> Result<(), ClientError> {
    match task {
        Some(t) => t.await.unwrap_or_else(|e| Err(ClientError::Lost(e.to_string()))),
        None => Ok(()),
    }
}

impl ClientHandle {
    /// Starts a client on the current runtime.
    pub fn spawn(opts: ClientOptions) -> ClientHandle {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(opts, tx, cancel.clone()));
        ClientHandle { events: rx, cancel, task: Some(task) }
    }

    /// Waits until `n` tunnels are ready, returning their `TunnelReady` events; a fatal error
    /// (or the run ending) comes back as `Err`.
    pub async fn wait_ready(&mut self, n: usize) -> Result<Vec<Event>, ClientError> {
        let mut ready = Vec::new();
        while ready.len() < n {
            match self.events.recv().await {
                Some(e @ Event::TunnelReady { .. }) => ready.push(e),
                Some(Event::Error { code, message, fatal: true, .. }) => {
                    return Err(ClientError::Protocol(format!("{code}: {message}")));
                }
                Some(_) => {}
                None => return Err(ClientError::Lost("client stopped".into())),
            }
        }
        Ok(ready)
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the client and waits for it.
    pub async fn stop(mut self) -> Result<(), ClientError> {
        self.cancel.cancel();
        finish(self.task.take()).await
    }

    /// Ends the client at once without telling the server, as a crash or a lost network
    /// would (its names then wait for it to come back).
    pub fn abort(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Waits for the client to end by itself.
    pub async fn join(mut self) -> Result<(), ClientError> {
        finish(self.task.take()).await
    }
}
