//! The publisher: shares a local service under a name, answers each visitor's link offer
//! (secret proof, direct path or relay) and serves the link's streams from the service.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::RwLock;
use rustunnel_proto::limits::{HANDSHAKE_TIMEOUT, HEARTBEAT_MISSES};
use rustunnel_proto::{ClientMsg, Protocol, ServerMsg};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{open_control, send, wait_for, BoxIo, End, PROOF_STEP_TIMEOUT, QUIC_TIMEOUT, UDP_FLOW_IDLE};
use super::direct::{gather, parse_cands, punch};
use super::options::{P2pOptions, P2pRole};
use super::proof::{LinkKey, Transcript, STREAM_AUTH_LEN};
use super::{proof, quic};
use crate::error::ClientError;
use crate::events::Event;
use crate::net::{connect_tcp, resolve, Dialer};

/// Links a publisher serves at once.
pub(super) const MAX_LINKS: usize = 64;
/// Idle data connections a publisher keeps for relayed streams.
pub(super) const MAX_IDLE: usize = 32;

#[derive(Clone)]
pub(super) struct Service {
    pub(super) name: String,
    pub(super) protocol: Protocol,
    pub(super) host: String,
    pub(super) port: u16,
}

/// Keys of the publisher's accepted links, by link id (checked by relayed streams).
pub(super) type Keys = Arc<RwLock<HashMap<String, LinkKey>>>;

pub(super) enum PoolEvent {
    Used,
    Failed,
}

pub(super) async fn publisher_session(
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

pub(super) struct Offer {
    pub(super) link_id: String,
    pub(super) pake: String,
    pub(super) fingerprint: String,
    pub(super) candidates: Vec<String>,
}

pub(super) struct LinkTask {
    pub(super) opts: P2pOptions,
    pub(super) svc: Service,
    pub(super) keys: Keys,
    pub(super) out: mpsc::Sender<ClientMsg>,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) reflector: Option<SocketAddr>,
    pub(super) cancel: CancellationToken,
    pub(super) tasks: TaskTracker,
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
pub(super) async fn serve_stream(
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
