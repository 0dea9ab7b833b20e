//! The visitor: asks for a link to a named service, proves the secret, tries the direct
//! path, and serves its local listener's connections (TCP or UDP flows) over the link.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use rustunnel_proto::limits::HEARTBEAT_MISSES;
use rustunnel_proto::{ClientMsg, ServerMsg};
use rustunnel_transport::stream::{read_datagram, write_datagram};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{
    open_control, open_relay, send, wait_for, wrong_secret, BoxIo, End, LINK_CLOSED, PROOF_STEP_TIMEOUT, QUIC_TIMEOUT,
    UDP_FLOW_IDLE,
};
use super::direct::{gather, parse_cands, punch};
use super::options::P2pOptions;
use super::proof::{LinkKey, Transcript};
use super::{proof, quic};
use crate::error::ClientError;
use crate::events::Event;
use crate::net::Dialer;

/// UDP flows a visitor forwards at once.
pub(super) const MAX_UDP_FLOWS: usize = 256;

/// An established link, as the visitor's listener uses it.
pub(super) struct ActiveLink {
    pub(super) link_id: String,
    pub(super) key: LinkKey,
    pub(super) direct: Option<(quinn::Endpoint, quinn::Connection)>,
    pub(super) dialer: Dialer,
    pub(super) session_id: String,
    pub(super) data_key: String,
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

pub(super) struct VisitorCtx {
    pub(super) opts: P2pOptions,
    pub(super) link: watch::Receiver<Option<Arc<ActiveLink>>>,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) tasks: TaskTracker,
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

pub(super) async fn visitor_session(
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

pub(super) async fn tcp_listener(l: TcpListener, ctx: Arc<VisitorCtx>, stop: CancellationToken) {
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

pub(super) async fn udp_listener(sock: Arc<UdpSocket>, ctx: Arc<VisitorCtx>, stop: CancellationToken) {
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

pub(super) async fn udp_flow(
    ctx: Arc<VisitorCtx>,
    sock: Arc<UdpSocket>,
    src: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
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
