//! Private P2P tunnels (`rustunnel p2p`): a publisher shares a local service under a name; a
//! visitor who knows the secret opens a local listener whose connections reach it.
//!
//! Component map:
//! - [`proof`]: the secret proof (SPAKE2 + transcript-bound key confirmation), sans-IO.
//! - [`punch`]: the UDP hole-punching state machine, sans-IO.
//! - `quic`: QUIC endpoints on the punched socket, pinned to the PAKE-authenticated certificate.
//! - this module: the driver — control session, candidate gathering through the server's
//!   reflector, the relay path over data connections, local listeners, reconnects.
//!
//! Every stream of a link (direct QUIC stream or relayed data connection) starts with the
//! link's stream authenticator; the publisher connects to its service only after checking it.
//! Wire details: `docs/p2p.md`.
pub mod proof;
pub mod punch;
mod quic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustunnel_proto::limits::{HANDSHAKE_TIMEOUT, HEARTBEAT_MISSES};
use rustunnel_proto::{ClientMsg, ErrorCode, Protocol, ServerMsg};
use rustunnel_transport::stream::{read_datagram, write_datagram};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ClientError;
use crate::events::Event;
use crate::net::{connect_tcp, resolve, split_host_port, Dialer};
use crate::reconnect::{Backoff, Wait, DEFAULT_MAX_BACKOFF};
use crate::tls::{client_config, TlsOptions};
use proof::{LinkKey, Transcript, STREAM_AUTH_LEN};

/// Time a peer has to finish each step of the secret proof.
const PROOF_STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time allowed for hole punching before falling back to the relay.
pub const DEFAULT_PUNCH_TIMEOUT: Duration = Duration::from_secs(2);
/// QUIC handshake deadline after a successful punch.
const QUIC_TIMEOUT: Duration = Duration::from_millis(1500);
/// Links a publisher serves at once.
const MAX_LINKS: usize = 64;
/// UDP flows a visitor forwards at once.
const MAX_UDP_FLOWS: usize = 256;
const UDP_FLOW_IDLE: Duration = Duration::from_secs(120);
/// Idle data connections a publisher keeps for relayed streams.
const MAX_IDLE: usize = 32;

/// What this client does.
#[derive(Debug, Clone)]
pub enum P2pRole {
    /// Share `local_host:local_port` under `name`.
    Publish { name: String, local_host: String, local_port: u16 },
    /// Reach the service `target` through a local listener on `bind`.
    Connect { target: String, bind: SocketAddr },
}

#[derive(Clone)]
pub struct P2pOptions {
    pub server: String,
    pub token: String,
    pub tls: TlsOptions,
    pub secret: String,
    pub protocol: Protocol,
    pub role: P2pRole,
    /// Try the direct (hole-punched QUIC) path; false forces the relay.
    pub direct: bool,
    pub punch_timeout: Duration,
    pub reconnect: bool,
}

impl std::fmt::Debug for P2pOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pOptions")
            .field("server", &self.server)
            .field("secret", &"***")
            .field("protocol", &self.protocol)
            .field("role", &self.role)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl P2pOptions {
    pub fn new(server: impl Into<String>, token: impl Into<String>, secret: impl Into<String>, role: P2pRole) -> Self {
        P2pOptions {
            server: server.into(),
            token: token.into(),
            tls: TlsOptions::default(),
            secret: secret.into(),
            protocol: Protocol::Tcp,
            role,
            direct: true,
            punch_timeout: DEFAULT_PUNCH_TIMEOUT,
            reconnect: true,
        }
    }

    /// The service name this client publishes or connects to.
    pub fn name(&self) -> &str {
        match &self.role {
            P2pRole::Publish { name, .. } => name,
            P2pRole::Connect { target, .. } => target,
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        if self.secret.is_empty() || self.secret.len() > 1024 {
            return Err(ClientError::Config("--secret must be 1-1024 characters".into()));
        }
        let n = self.name();
        if n.is_empty()
            || n.len() > 64
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ClientError::Config("P2P names are 1-64 characters: letters, digits, '-', '_', '.'".into()));
        }
        if self.protocol == Protocol::Http {
            return Err(ClientError::Config("P2P tunnels are tcp or udp".into()));
        }
        Ok(())
    }
}

/// Any byte stream of a link: a QUIC stream or a relayed data connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

type Ws = crate::session::ControlWs;

struct Control {
    ws: Ws,
    session_id: String,
    data_key: String,
    reflector: Option<SocketAddr>,
    heartbeat: Duration,
    pool_size: u16,
}

/// How a visitor's lost link starts its [`End::Lost`] reason.
const LINK_CLOSED: &str = "P2P link closed";

enum End {
    Cancelled,
    Lost(String),
}

fn wrong_secret(name: &str) -> ClientError {
    ClientError::rejected(ErrorCode::P2pWrongSecret, format!("wrong secret for '{name}'"), None)
}

/// Runs a P2P publisher or visitor until cancelled or a fatal error.
pub async fn run(opts: P2pOptions, events: mpsc::Sender<Event>, cancel: CancellationToken) -> Result<(), ClientError> {
    let r = run_inner(&opts, &events, &cancel).await;
    if let Err(e) = &r {
        let _ = events.try_send(Event::Error {
            code: e.code().into(),
            message: e.to_string(),
            hint: e.hint(&opts.server),
            fatal: true,
        });
    }
    r
}

async fn run_inner(
    opts: &P2pOptions,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    opts.validate()?;
    let (host, port) = split_host_port(&opts.server, 4040)?;
    let tls = client_config(&opts.tls, &[b"http/1.1"])?;
    let dialer = Dialer { host, port, tls };
    let tasks = TaskTracker::new();
    let stop = cancel.child_token();
    let (link_tx, link_rx) = watch::channel::<Option<Arc<ActiveLink>>>(None);
    // The visitor's listener outlives control reconnects.
    if let P2pRole::Connect { bind, .. } = &opts.role {
        let ctx =
            Arc::new(VisitorCtx { opts: opts.clone(), link: link_rx, events: events.clone(), tasks: tasks.clone() });
        let local_addr = match opts.protocol {
            Protocol::Udp => {
                let sock = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| ClientError::Config(format!("cannot listen on {bind} (udp): {e}")))?;
                let a = sock.local_addr().map_err(|e| ClientError::Config(e.to_string()))?;
                tasks.spawn(udp_listener(Arc::new(sock), ctx, stop.clone()));
                a
            }
            _ => {
                let l = TcpListener::bind(bind)
                    .await
                    .map_err(|e| ClientError::Config(format!("cannot listen on {bind}: {e}")))?;
                let a = l.local_addr().map_err(|e| ClientError::Config(e.to_string()))?;
                tasks.spawn(tcp_listener(l, ctx, stop.clone()));
                a
            }
        };
        let result = reconnect_loop(opts, events, cancel, || async {
            let r = visitor_session(opts, &dialer, &link_tx, events, cancel, local_addr).await;
            let _ = link_tx.send(None);
            r
        })
        .await;
        stop.cancel();
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
        return result;
    }
    let result =
        reconnect_loop(opts, events, cancel, || publisher_session(opts, &dialer, events, cancel, &tasks, &stop)).await;
    stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    result
}

/// Runs `session` until it is cancelled or fails for good, reconnecting after a lost
/// connection or a retryable error (unless reconnecting is off), with the policy the tunnel
/// session uses ([`crate::reconnect`]).
async fn reconnect_loop<F, Fut>(
    opts: &P2pOptions,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    mut session: F,
) -> Result<(), ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<End, ClientError>>,
{
    let mut backoff = Backoff::new(DEFAULT_MAX_BACKOFF);
    loop {
        let started = tokio::time::Instant::now();
        let (reason, wait) = match session().await {
            Ok(End::Cancelled) => return Ok(()),
            Err(e) if e.is_fatal() || !opts.reconnect => return Err(e),
            Ok(End::Lost(reason)) if !opts.reconnect => {
                // A visitor's link can end while the server stays: say which was lost.
                let what = if reason.starts_with(LINK_CLOSED) {
                    reason
                } else {
                    format!("connection to the server lost ({reason})")
                };
                return Err(ClientError::GaveUp(what));
            }
            // Only a session that had its control connection ends as lost.
            Ok(End::Lost(reason)) => {
                backoff.session_ended(started.elapsed());
                (reason, Wait::Backoff)
            }
            Err(e) => (e.to_string(), Wait::after(&e)),
        };
        let (attempt, delay) = backoff.next(wait);
        let _ = events.try_send(Event::Reconnecting { attempt, delay_ms: delay.as_millis() as u64, reason });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

async fn open_control(dialer: &Dialer, token: &str) -> Result<Control, ClientError> {
    let tls = dialer.dial().await?;
    let agent = format!("rustunnel-p2p/{}", env!("CARGO_PKG_VERSION"));
    let (ws, w) = crate::session::open_control(dialer, tls, token, agent, false, false).await?;
    let reflector = match w.p2p_udp_port {
        Some(p) => resolve(&dialer.host, p).await.ok().and_then(|a| a.into_iter().next()),
        None => None,
    };
    Ok(Control {
        ws,
        session_id: w.session_id,
        data_key: w.data_key,
        reflector,
        heartbeat: w.heartbeat,
        pool_size: w.pool_size,
    })
}

async fn send(ws: &mut Ws, msg: ClientMsg) -> Result<(), ClientError> {
    ws.send(Message::text(msg.encode())).await.map_err(|e| ClientError::Lost(e.to_string()))
}

/// Reads control messages until `pick` returns something, answering pings meanwhile.
async fn wait_for<T>(
    ws: &mut Ws,
    deadline: Duration,
    mut pick: impl FnMut(ServerMsg) -> Option<Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let work = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                    Ok(ServerMsg::Ping { nonce }) => send(ws, ClientMsg::Pong { nonce }).await?,
                    Ok(m) => {
                        if let Some(r) = pick(m) {
                            return r;
                        }
                    }
                    Err(_) => {}
                },
                Some(Ok(_)) => {}
                _ => return Err(ClientError::Lost("control connection closed".into())),
            }
        }
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| ClientError::Lost("the P2P peer did not answer in time".into()))?
}

/// A UDP socket and the candidate addresses the other peer can try: the local address on the
/// route to the server and the address the server's reflector saw.
async fn gather(reflector: SocketAddr) -> Option<(UdpSocket, Vec<String>)> {
    let bind: SocketAddr =
        if reflector.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.ok()?;
    let port = sock.local_addr().ok()?.port();
    let mut cands = Vec::new();
    if let Ok(probe) = std::net::UdpSocket::bind(bind) {
        if probe.connect(reflector).is_ok() {
            if let Ok(a) = probe.local_addr() {
                cands.push(SocketAddr::new(a.ip(), port).to_string());
            }
        }
    }
    let nonce: u64 = rand::random();
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        let _ = sock.send_to(&rustunnel_proto::p2p::encode_probe(nonce), reflector).await;
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else { return None };
                if from != reflector {
                    continue;
                }
                if let Some((nn, seen)) = rustunnel_proto::p2p::decode_reflect(&buf[..n]) {
                    if nn == nonce {
                        return Some(seen);
                    }
                }
            }
        })
        .await;
        if let Ok(Some(seen)) = got {
            let s = seen.to_string();
            if !cands.contains(&s) {
                cands.push(s);
            }
            break;
        }
    }
    Some((sock, cands))
}

/// Punches towards `targets`; the address that works both ways, or `None`.
async fn punch(sock: &UdpSocket, tag: [u8; 16], targets: Vec<SocketAddr>, timeout: Duration) -> Option<SocketAddr> {
    if targets.is_empty() {
        return None;
    }
    let mut p = punch::Puncher::new(Instant::now(), tag, targets, timeout);
    let mut buf = [0u8; 256];
    loop {
        let wake = tokio::time::Instant::from_std(p.next_wake());
        let actions = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => p.on_packet(Instant::now(), from, &buf[..n]),
                Err(_) => Vec::new(),
            },
            _ = tokio::time::sleep_until(wake) => p.on_tick(Instant::now()),
        };
        for a in actions {
            match a {
                punch::Action::Send(to, pkt) => {
                    let _ = sock.send_to(&pkt, to).await;
                }
                punch::Action::Done(addr) => return Some(addr),
                punch::Action::Failed => return None,
            }
        }
    }
}

fn parse_cands(c: &[String]) -> Vec<SocketAddr> {
    c.iter().filter_map(|s| s.parse().ok()).take(8).collect()
}

/// Opens a relayed stream of `link_id`: a data connection the server splices to the publisher.
async fn open_relay(dialer: &Dialer, session_id: &str, data_key: &str, link_id: &str) -> Result<Upgraded, ClientError> {
    crate::forward::upgrade_data_conn(dialer, session_id, data_key, Some(link_id)).await
}

// ---------------------------------------------------------------------------------------------
// Visitor

/// An established link, as the visitor's listener uses it.
struct ActiveLink {
    link_id: String,
    key: LinkKey,
    direct: Option<(quinn::Endpoint, quinn::Connection)>,
    dialer: Dialer,
    session_id: String,
    data_key: String,
}

impl ActiveLink {
    /// Opens an authenticated stream, direct when the QUIC connection is alive, else relayed.
    async fn open(&self) -> Result<(BoxIo, &'static str), ClientError> {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let auth = self.key.stream_auth(nonce);
        if let Some((_, conn)) = &self.direct {
            if conn.close_reason().is_none() {
                if let Ok((send, recv)) = conn.open_bi().await {
                    let mut io: BoxIo = Box::new(tokio::io::join(recv, send));
                    io.write_all(&auth).await.map_err(|e| ClientError::Lost(e.to_string()))?;
                    return Ok((io, "direct"));
                }
            }
        }
        let up = open_relay(&self.dialer, &self.session_id, &self.data_key, &self.link_id).await?;
        let mut io: BoxIo = Box::new(TokioIo::new(up));
        io.write_all(&auth).await.map_err(|e| ClientError::Lost(e.to_string()))?;
        Ok((io, "relayed"))
    }

    fn mode(&self) -> &'static str {
        match &self.direct {
            Some((_, c)) if c.close_reason().is_none() => "direct",
            _ => "relayed",
        }
    }
}

struct VisitorCtx {
    opts: P2pOptions,
    link: watch::Receiver<Option<Arc<ActiveLink>>>,
    events: mpsc::Sender<Event>,
    tasks: TaskTracker,
}

impl VisitorCtx {
    /// The current link, waiting a little while a (re)connect is in progress.
    async fn current(&self) -> Option<Arc<ActiveLink>> {
        let mut rx = self.link.clone();
        let r = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| l.is_some())).await;
        match r {
            Ok(Ok(l)) => l.clone(),
            _ => None,
        }
    }
}

async fn visitor_session(
    opts: &P2pOptions,
    dialer: &Dialer,
    link_tx: &watch::Sender<Option<Arc<ActiveLink>>>,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    local_addr: SocketAddr,
) -> Result<End, ClientError> {
    let mut ctl = tokio::select! {
        r = open_control(dialer, &opts.token) => r?,
        _ = cancel.cancelled() => return Ok(End::Cancelled),
    };
    let name = opts.name().to_string();
    let link_id = hex::encode(rand::random::<[u8; 16]>());
    let gathered = match (opts.direct, ctl.reflector) {
        (true, Some(r)) => gather(r).await,
        _ => None,
    };
    let cands_v: Vec<String> = gathered.as_ref().map(|g| g.1.clone()).unwrap_or_default();
    let pending = proof::start(true, &opts.secret);
    let pake_v = pending.msg.clone();
    send(
        &mut ctl.ws,
        ClientMsg::P2pConnect {
            link_id: link_id.clone(),
            name: name.clone(),
            protocol: opts.protocol,
            pake: pake_v.clone(),
            fingerprint: String::new(),
            candidates: cands_v.clone(),
        },
    )
    .await?;
    let lid = link_id.clone();
    let (pake_p, confirm_p, fp_p, cands_p) = wait_for(&mut ctl.ws, PROOF_STEP_TIMEOUT, |m| match m {
        ServerMsg::P2pAnswer { link_id, pake, confirm, fingerprint, candidates } if link_id == lid => {
            Some(Ok((pake, confirm, fingerprint, candidates)))
        }
        ServerMsg::P2pError { link_id, code, message, retry_after_ms, .. } if link_id == lid => {
            Some(Err(ClientError::rejected(code, message, retry_after_ms)))
        }
        ServerMsg::P2pClosed { link_id, reason } if link_id == lid => Some(Err(ClientError::Lost(reason))),
        _ => None,
    })
    .await?;
    let key = pending.finish(&pake_p).map_err(|_| wrong_secret(&name))?;
    let th = Transcript {
        link_id: &link_id,
        name: &name,
        protocol: opts.protocol.as_str(),
        pake_visitor: &pake_v,
        pake_publisher: &pake_p,
        fp_visitor: "",
        fp_publisher: &fp_p,
        cand_visitor: &cands_v,
        cand_publisher: &cands_p,
    }
    .hash();
    if key.verify(false, &th, &confirm_p).is_err() {
        let _ =
            send(&mut ctl.ws, ClientMsg::P2pClose { link_id: link_id.clone(), reason: "wrong secret".into() }).await;
        return Err(wrong_secret(&name));
    }
    send(&mut ctl.ws, ClientMsg::P2pConfirm { link_id: link_id.clone(), confirm: key.confirm(true, &th) }).await?;
    let accepted = wait_for(&mut ctl.ws, PROOF_STEP_TIMEOUT, |m| match m {
        ServerMsg::P2pResult { link_id, accepted } if link_id == lid => Some(Ok(accepted)),
        ServerMsg::P2pClosed { link_id, reason } if link_id == lid => Some(Err(ClientError::Lost(reason))),
        _ => None,
    })
    .await?;
    if !accepted {
        return Err(wrong_secret(&name));
    }
    let mut direct = None;
    if let Some((sock, _)) = gathered {
        if !fp_p.is_empty() {
            if let Some(remote) = punch(&sock, key.punch_tag(), parse_cands(&cands_p), opts.punch_timeout).await {
                if let Ok(std_sock) = sock.into_std() {
                    match tokio::time::timeout(QUIC_TIMEOUT, quic::connect(std_sock, remote, &fp_p)).await {
                        Ok(Ok(c)) => direct = Some(c),
                        Ok(Err(e)) => tracing::info!(error = %e, "P2P QUIC handshake failed; relaying"),
                        Err(_) => tracing::info!("P2P QUIC handshake timed out; relaying"),
                    }
                }
            }
        }
    }
    let link = Arc::new(ActiveLink {
        link_id: link_id.clone(),
        key,
        direct,
        dialer: dialer.clone(),
        session_id: ctl.session_id.clone(),
        data_key: ctl.data_key.clone(),
    });
    let mode = link.mode();
    send(&mut ctl.ws, ClientMsg::P2pMode { link_id: link_id.clone(), mode: mode.into() }).await?;
    let _ = link_tx.send(Some(link.clone()));
    let _ = events.try_send(Event::P2pLink {
        role: "connect".into(),
        name: name.clone(),
        link_id: link_id.clone(),
        mode: mode.into(),
    });
    let _ = events.try_send(Event::P2pReady {
        role: "connect".into(),
        name: name.clone(),
        protocol: opts.protocol,
        mode: Some(mode.into()),
        local_addr: local_addr.to_string(),
    });
    let mut hb = tokio::time::interval(ctl.heartbeat);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = send(&mut ctl.ws, ClientMsg::P2pClose { link_id: link_id.clone(), reason: "visitor left".into() }).await;
                let _ = ctl.ws.close(None).await;
                return Ok(End::Cancelled);
            }
            _ = hb.tick() => {
                if last_seen.elapsed() > ctl.heartbeat * HEARTBEAT_MISSES {
                    return Ok(End::Lost("heartbeat timeout".into()));
                }
                nonce += 1;
                send(&mut ctl.ws, ClientMsg::Ping { nonce }).await?;
            }
            msg = ctl.ws.next() => {
                last_seen = tokio::time::Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                        Ok(ServerMsg::Ping { nonce }) => send(&mut ctl.ws, ClientMsg::Pong { nonce }).await?,
                        Ok(ServerMsg::P2pClosed { link_id: l, reason }) if l == link_id => {
                            return Ok(End::Lost(format!("{LINK_CLOSED}: {reason}")));
                        }
                        Ok(ServerMsg::Shutdown { .. }) => return Ok(End::Lost("server restarting".into())),
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    _ => return Ok(End::Lost("control connection closed".into())),
                }
            }
        }
    }
}

async fn tcp_listener(l: TcpListener, ctx: Arc<VisitorCtx>, stop: CancellationToken) {
    loop {
        let (mut local, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        rustunnel_transport::tcp::tune(&local, peer);
        let c = ctx.clone();
        let stop2 = stop.clone();
        ctx.tasks.spawn(async move {
            let work = async {
                let Some(link) = c.current().await else { return };
                let Ok((mut io, mode)) = link.open().await else { return };
                let _ = c.events.try_send(Event::P2pConnection {
                    role: "connect".into(),
                    name: c.opts.name().to_string(),
                    mode: mode.into(),
                    peer: peer.to_string(),
                });
                let _ = rustunnel_transport::splice::splice(&mut local, &mut io).await;
            };
            tokio::select! {
                _ = work => {}
                _ = stop2.cancelled() => {}
            }
        });
    }
}

async fn udp_listener(sock: Arc<UdpSocket>, ctx: Arc<VisitorCtx>, stop: CancellationToken) {
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; rustunnel_proto::limits::MAX_DATAGRAM];
    loop {
        let (n, src) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        flows.retain(|_, tx| !tx.is_closed());
        if let Some(tx) = flows.get(&src) {
            let _ = tx.try_send(buf[..n].to_vec());
            continue;
        }
        if flows.len() >= MAX_UDP_FLOWS {
            continue;
        }
        let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
        let _ = tx.try_send(buf[..n].to_vec());
        flows.insert(src, tx);
        let (c, s, stop2) = (ctx.clone(), sock.clone(), stop.clone());
        ctx.tasks.spawn(async move {
            tokio::select! {
                _ = udp_flow(c, s, src, rx) => {}
                _ = stop2.cancelled() => {}
            }
        });
    }
}

async fn udp_flow(ctx: Arc<VisitorCtx>, sock: Arc<UdpSocket>, src: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>) {
    let Some(link) = ctx.current().await else { return };
    let Ok((io, mode)) = link.open().await else { return };
    let _ = ctx.events.try_send(Event::P2pConnection {
        role: "connect".into(),
        name: ctx.opts.name().to_string(),
        mode: mode.into(),
        peer: src.to_string(),
    });
    let (mut rd, mut wr) = tokio::io::split(io);
    let up = async {
        let mut scratch = Vec::with_capacity(2048);
        loop {
            match tokio::time::timeout(UDP_FLOW_IDLE, rx.recv()).await {
                Ok(Some(d)) => {
                    if write_datagram(&mut wr, &d, &mut scratch).await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    let down = async {
        let mut buf = Vec::with_capacity(2048);
        while read_datagram(&mut rd, &mut buf).await.is_ok() {
            let _ = sock.send_to(&buf, src).await;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Publisher

#[derive(Clone)]
struct Service {
    name: String,
    protocol: Protocol,
    host: String,
    port: u16,
}

/// Keys of the publisher's accepted links, by link id (checked by relayed streams).
type Keys = Arc<RwLock<HashMap<String, LinkKey>>>;

enum PoolEvent {
    Used,
    Failed,
}

async fn publisher_session(
    opts: &P2pOptions,
    dialer: &Dialer,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<End, ClientError> {
    let P2pRole::Publish { name, local_host, local_port } = &opts.role else {
        return Err(ClientError::Config("not a publisher".into()));
    };
    let svc = Service { name: name.clone(), protocol: opts.protocol, host: local_host.clone(), port: *local_port };
    let mut ctl = tokio::select! {
        r = open_control(dialer, &opts.token) => r?,
        _ = cancel.cancelled() => return Ok(End::Cancelled),
    };
    send(&mut ctl.ws, ClientMsg::P2pPublish { name: name.clone(), protocol: opts.protocol }).await?;
    let n2 = name.clone();
    wait_for(&mut ctl.ws, HANDSHAKE_TIMEOUT, |m| match m {
        ServerMsg::P2pPublished { name } if name == n2 => Some(Ok(())),
        ServerMsg::P2pError { link_id, code, message, retry_after_ms, .. } if link_id.is_empty() => {
            Some(Err(ClientError::rejected(code, message, retry_after_ms)))
        }
        _ => None,
    })
    .await?;
    let _ = events.try_send(Event::P2pReady {
        role: "publish".into(),
        name: name.clone(),
        protocol: opts.protocol,
        mode: None,
        local_addr: format!("{local_host}:{local_port}"),
    });
    let session_cancel = stop.child_token();
    let keys: Keys = Arc::default();
    let (out_tx, mut out_rx) = mpsc::channel::<ClientMsg>(256);
    let (pool_tx, mut pool_rx) = mpsc::channel::<PoolEvent>(256);
    let mut links: HashMap<String, mpsc::Sender<ServerMsg>> = HashMap::new();
    let mut idle = 0usize;
    let spawn_conn = |delay: Duration, idle: &mut usize| {
        if *idle >= MAX_IDLE {
            return;
        }
        *idle += 1;
        let (dialer, sid, dkey) = (dialer.clone(), ctl.session_id.clone(), ctl.data_key.clone());
        let (keys, pool_tx, sc, ev, svc, stop) =
            (keys.clone(), pool_tx.clone(), session_cancel.clone(), events.clone(), svc.clone(), stop.clone());
        tasks.spawn(async move {
            let (header, io) = tokio::select! {
                r = crate::forward::pooled_stream(&dialer, &sid, &dkey, false, delay) => match r {
                    Ok(x) => x,
                    Err(_) => {
                        let _ = pool_tx.try_send(PoolEvent::Failed);
                        return;
                    }
                },
                _ = sc.cancelled() => return,
            };
            let _ = pool_tx.try_send(PoolEvent::Used);
            let key = keys.read().get(&header.tunnel_id).cloned();
            let Some(key) = key else { return };
            tokio::select! {
                _ = serve_stream(&key, &svc, Box::new(io), "relayed", &header.peer, &ev) => {}
                _ = stop.cancelled() => {}
            }
        });
    };
    for _ in 0..ctl.pool_size.clamp(1, 8) {
        spawn_conn(Duration::ZERO, &mut idle);
    }
    let mut hb = tokio::time::interval(ctl.heartbeat);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let mut nonce = 0u64;
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ctl.ws.close(None).await;
                break Ok(End::Cancelled);
            }
            Some(m) = out_rx.recv() => {
                if let ClientMsg::P2pClose { link_id, .. } | ClientMsg::P2pResult { link_id, accepted: false } = &m {
                    links.remove(link_id);
                }
                if let Err(e) = send(&mut ctl.ws, m).await { break Err(e); }
            }
            Some(ev) = pool_rx.recv() => {
                idle = idle.saturating_sub(1);
                match ev {
                    PoolEvent::Used => spawn_conn(Duration::ZERO, &mut idle),
                    PoolEvent::Failed => spawn_conn(Duration::from_millis(500), &mut idle),
                }
            }
            _ = hb.tick() => {
                if last_seen.elapsed() > ctl.heartbeat * HEARTBEAT_MISSES {
                    break Ok(End::Lost("heartbeat timeout".into()));
                }
                nonce += 1;
                if let Err(e) = send(&mut ctl.ws, ClientMsg::Ping { nonce }).await { break Err(e); }
            }
            msg = ctl.ws.next() => {
                last_seen = tokio::time::Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => break Ok(End::Lost("control connection closed".into())),
                };
                let Ok(m) = ServerMsg::decode(text.as_str()) else { continue };
                match m {
                    ServerMsg::Ping { nonce } => {
                        if let Err(e) = send(&mut ctl.ws, ClientMsg::Pong { nonce }).await { break Err(e); }
                    }
                    ServerMsg::Shutdown { .. } => break Ok(End::Lost("server restarting".into())),
                    ServerMsg::NeedDataConns { count } => {
                        for _ in 0..count.min(16) { spawn_conn(Duration::ZERO, &mut idle); }
                    }
                    ServerMsg::P2pIncoming { link_id, name, protocol, pake, fingerprint, candidates } => {
                        links.retain(|_, tx| !tx.is_closed());
                        if links.len() >= MAX_LINKS || links.contains_key(&link_id) || name != svc.name || protocol != svc.protocol {
                            let _ = out_tx.try_send(ClientMsg::P2pClose { link_id, reason: "publisher busy".into() });
                            continue;
                        }
                        let (tx, rx) = mpsc::channel(8);
                        links.insert(link_id.clone(), tx);
                        let offer = Offer { link_id, pake, fingerprint, candidates };
                        let lt = LinkTask {
                            opts: opts.clone(),
                            svc: svc.clone(),
                            keys: keys.clone(),
                            out: out_tx.clone(),
                            events: events.clone(),
                            reflector: ctl.reflector,
                            cancel: session_cancel.clone(),
                            tasks: tasks.clone(),
                        };
                        tasks.spawn(lt.run(offer, rx));
                    }
                    ServerMsg::P2pConfirm { ref link_id, .. } | ServerMsg::P2pClosed { ref link_id, .. } => {
                        if let Some(tx) = links.get(link_id) {
                            let _ = tx.try_send(m.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    session_cancel.cancel();
    keys.write().clear();
    end
}

struct Offer {
    link_id: String,
    pake: String,
    fingerprint: String,
    candidates: Vec<String>,
}

struct LinkTask {
    opts: P2pOptions,
    svc: Service,
    keys: Keys,
    out: mpsc::Sender<ClientMsg>,
    events: mpsc::Sender<Event>,
    reflector: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl LinkTask {
    async fn run(self, offer: Offer, mut rx: mpsc::Receiver<ServerMsg>) {
        let link_id = offer.link_id.clone();
        let cancel = self.cancel.clone();
        tokio::select! {
            _ = self.handshake_and_serve(offer, &mut rx) => {}
            _ = cancel.cancelled() => {}
        }
        self.keys.write().remove(&link_id);
    }

    async fn handshake_and_serve(&self, offer: Offer, rx: &mut mpsc::Receiver<ServerMsg>) {
        let link_id = offer.link_id.clone();
        let close = |reason: &str| {
            let _ = self.out.try_send(ClientMsg::P2pClose { link_id: link_id.clone(), reason: reason.into() });
        };
        let gathered = match (self.opts.direct, self.reflector, offer.candidates.is_empty()) {
            (true, Some(r), false) => gather(r).await,
            _ => None,
        };
        let identity = match &gathered {
            Some(_) => quic::new_identity().ok(),
            None => None,
        };
        let fp_p = identity.as_ref().map(|i| i.fingerprint.clone()).unwrap_or_default();
        let cands_p: Vec<String> =
            if identity.is_some() { gathered.as_ref().map(|g| g.1.clone()).unwrap_or_default() } else { Vec::new() };
        let pending = proof::start(false, &self.opts.secret);
        let pake_p = pending.msg.clone();
        let Ok(key) = pending.finish(&offer.pake) else {
            close("malformed PAKE message");
            return;
        };
        let th = Transcript {
            link_id: &link_id,
            name: &self.svc.name,
            protocol: self.svc.protocol.as_str(),
            pake_visitor: &offer.pake,
            pake_publisher: &pake_p,
            fp_visitor: &offer.fingerprint,
            fp_publisher: &fp_p,
            cand_visitor: &offer.candidates,
            cand_publisher: &cands_p,
        }
        .hash();
        let answer = ClientMsg::P2pAnswer {
            link_id: link_id.clone(),
            pake: pake_p.clone(),
            confirm: key.confirm(false, &th),
            fingerprint: fp_p.clone(),
            candidates: cands_p.clone(),
        };
        if self.out.send(answer).await.is_err() {
            return;
        }
        let confirm = match tokio::time::timeout(PROOF_STEP_TIMEOUT, rx.recv()).await {
            Ok(Some(ServerMsg::P2pConfirm { confirm, .. })) => confirm,
            _ => return,
        };
        if key.verify(true, &th, &confirm).is_err() {
            tracing::info!(link = %link_id, "P2P visitor failed the secret proof");
            let _ = self.out.send(ClientMsg::P2pResult { link_id: link_id.clone(), accepted: false }).await;
            let _ = self.events.try_send(Event::Error {
                code: "p2p_wrong_secret".into(),
                message: format!("a visitor of '{}' presented a wrong secret; refused", self.svc.name),
                hint: "nothing reached the local service".into(),
                fatal: false,
            });
            return;
        }
        self.keys.write().insert(link_id.clone(), key.clone());
        if self.out.send(ClientMsg::P2pResult { link_id: link_id.clone(), accepted: true }).await.is_err() {
            return;
        }
        let mut conn = None;
        if let (Some((sock, _)), Some(id)) = (gathered, identity) {
            if let Some(_remote) =
                punch(&sock, key.punch_tag(), parse_cands(&offer.candidates), self.opts.punch_timeout).await
            {
                if let Ok(ep) = sock.into_std().map_err(|e| e.to_string()).and_then(|s| quic::server_endpoint(s, &id)) {
                    let accepted = tokio::time::timeout(QUIC_TIMEOUT + Duration::from_secs(1), async {
                        let inc = ep.accept().await?;
                        inc.await.ok()
                    })
                    .await;
                    if let Ok(Some(c)) = accepted {
                        conn = Some((ep, c));
                    }
                }
            }
        }
        let mode = if conn.is_some() { "direct" } else { "relayed" };
        let _ = self.events.try_send(Event::P2pLink {
            role: "publish".into(),
            name: self.svc.name.clone(),
            link_id: link_id.clone(),
            mode: mode.into(),
        });
        let serve_direct = async {
            let Some((_ep, c)) = &conn else {
                std::future::pending::<()>().await;
                return;
            };
            let peer = c.remote_address().to_string();
            while let Ok((send, recv)) = c.accept_bi().await {
                let (key, svc, ev, peer) = (key.clone(), self.svc.clone(), self.events.clone(), peer.clone());
                let cancel = self.cancel.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        _ = serve_stream(&key, &svc, Box::new(tokio::io::join(recv, send)), "direct", &peer, &ev) => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
            // The direct connection ended; relayed streams may still come.
            std::future::pending::<()>().await;
        };
        let wait_close = async {
            loop {
                match rx.recv().await {
                    Some(ServerMsg::P2pClosed { .. }) | None => return,
                    Some(_) => {}
                }
            }
        };
        tokio::select! {
            _ = serve_direct => {}
            _ = wait_close => {}
        }
    }
}

/// Serves one stream of an accepted link: checks the authenticator, then connects to the
/// local service. Nothing reaches the service before the check passes.
async fn serve_stream(
    key: &LinkKey,
    svc: &Service,
    mut io: BoxIo,
    mode: &str,
    peer: &str,
    events: &mpsc::Sender<Event>,
) {
    let mut auth = [0u8; STREAM_AUTH_LEN];
    match tokio::time::timeout(PROOF_STEP_TIMEOUT, io.read_exact(&mut auth)).await {
        Ok(Ok(_)) if key.check_stream_auth(&auth) => {}
        _ => {
            tracing::info!(name = %svc.name, "P2P stream without a valid authenticator; dropped");
            return;
        }
    }
    let _ = events.try_send(Event::P2pConnection {
        role: "publish".into(),
        name: svc.name.clone(),
        mode: mode.into(),
        peer: peer.into(),
    });
    match svc.protocol {
        Protocol::Udp => {
            let Some(remote) = resolve(&svc.host, svc.port).await.ok().and_then(|a| a.into_iter().next()) else {
                return;
            };
            let bind: SocketAddr =
                if remote.is_ipv6() { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { ([0, 0, 0, 0], 0).into() };
            let Ok(sock) = UdpSocket::bind(bind).await else { return };
            if sock.connect(remote).await.is_err() {
                return;
            }
            crate::forward::pump_udp(io, sock, Some(UDP_FLOW_IDLE), || {}).await;
        }
        _ => {
            let Ok(mut local) = connect_tcp(&svc.host, svc.port, Duration::from_secs(5)).await else {
                let _ = events.try_send(Event::Error {
                    code: "local_unreachable".into(),
                    message: format!("P2P service '{}': nothing is listening on {}:{}", svc.name, svc.host, svc.port),
                    hint: "start the local service".into(),
                    fatal: false,
                });
                return;
            };
            let _ = rustunnel_transport::splice::splice(&mut io, &mut local).await;
        }
    }
}

/// A P2P client running in the background.
pub struct P2pHandle {
    pub events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl P2pHandle {
    pub fn spawn(opts: P2pOptions) -> P2pHandle {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(opts, tx, cancel.clone()));
        P2pHandle { events: rx, cancel, task }
    }

    /// Waits for `p2p_ready`; a fatal error comes back as `Err`.
    pub async fn wait_ready(&mut self) -> Result<Event, ClientError> {
        loop {
            match self.events.recv().await {
                Some(e @ Event::P2pReady { .. }) => return Ok(e),
                Some(Event::Error { code, message, fatal: true, .. }) => {
                    return Err(ClientError::Protocol(format!("{code}: {message}")))
                }
                Some(_) => {}
                None => return Err(ClientError::Lost("client stopped".into())),
            }
        }
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the client to end by itself.
    pub async fn join(self) -> Result<(), ClientError> {
        self.task.await.unwrap_or_else(|e| Err(ClientError::Lost(e.to_string())))
    }

    pub async fn stop(self) -> Result<(), ClientError> {
        self.cancel.cancel();
        self.task.await.unwrap_or_else(|e| Err(ClientError::Lost(e.to_string())))
    }
}
