//! The control port: TLS, then HTTP/1.1 with upgrades. `GET /v1/control` upgrades to the
//! control WebSocket (hello, tunnels, heartbeats); `GET /v1/data` upgrades to a raw data
//! connection that joins its session's pool. Everything before authentication is bounded:
//! a global and a per-IP cap on pending connections and a deadline on every step.
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustunnel_proto::control::CloseReason;
use rustunnel_proto::limits::{HEARTBEAT_MISSES, MAX_CONTROL_FRAME};
use rustunnel_proto::{
    ClientMsg, ErrorCode, ServerMsg, CONTROL_PATH, DATA_PATH, DATA_UPGRADE, HEADER_DATA_KEY, HEADER_SESSION,
    PROTOCOL_VERSION,
};
use rustunnel_transport::plain::PLAIN_MAGIC;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::auth::AuthError;
use crate::session::{DataConn, Session, PROBE_AFTER, PROBE_WINDOW};
use crate::state::Shared;

/// Connections that have not authenticated yet, in total and per source address.
const MAX_PENDING: usize = 1024;
const MAX_PENDING_PER_IP: usize = 64;

#[derive(Default)]
struct PendingCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Holds one pending-connection slot; released on drop (shared by clones via Arc).
struct PendingSlot {
    ip: IpAddr,
    counts: Arc<Mutex<PendingCounts>>,
}

impl PendingSlot {
    fn acquire(counts: &Arc<Mutex<PendingCounts>>, ip: IpAddr) -> Option<Arc<PendingSlot>> {
        let mut c = counts.lock();
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= MAX_PENDING || n >= MAX_PENDING_PER_IP {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Some(Arc::new(PendingSlot { ip, counts: counts.clone() }))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accept loop of the control port.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let counts = Arc::new(Mutex::new(PendingCounts::default()));
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, shared.stop_accepting(), "control plane").await
        else {
            return;
        };
        let Some(slot) = PendingSlot::acquire(&counts, peer.ip()) else {
            tracing::debug!(%peer, "too many pending connections; dropping");
            continue;
        };
        let shared2 = shared.clone();
        shared.tasks().spawn(async move {
            // A plain data connection announces itself in its first byte; TLS starts with 0x16.
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(shared2.config().handshake_timeout, stream.peek(&mut first)).await;
            match peeked {
                Ok(Ok(1)) if first[0] == PLAIN_MAGIC[0] => {
                    plain_data_conn(stream, peer, &shared2).await;
                    return;
                }
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let tls = match tokio::time::timeout(
                shared2.config().handshake_timeout,
                // Lean TLS: the many data connections each end holds cost no idle buffer.
                rustunnel_transport::lean_tls::LeanServer::accept(shared2.tls().control.clone(), stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let sh = shared2.clone();
            let service = hyper::service::service_fn(move |req| {
                let sh = sh.clone();
                let slot = slot.clone();
                async move { Ok::<_, Infallible>(route(req, peer, sh, slot)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared2.config().handshake_timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = shared2.hard_stop().cancelled() => {}
            }
        });
    }
}

/// A plain data connection: authenticated with the session's data key (never sent), then
/// pooled. Refused unless the session was granted plain data connections.
async fn plain_data_conn(mut stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let mut nonce = [0u8; rustunnel_transport::plain::NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let key_of = |sid: &str| shared.session(sid).filter(|s| s.plain_data).map(|s| s.data_key.clone());
    let hs = tokio::time::timeout(
        shared.config().handshake_timeout,
        rustunnel_transport::plain::server_handshake(&mut stream, nonce, key_of),
    );
    match hs.await {
        Ok(Ok(sid)) => {
            if let Some(session) = shared.session(&sid) {
                session.add_data_conn(DataConn::Plain(stream));
            }
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "plain data connection refused"),
        Err(_) => tracing::debug!(%peer, "plain data connection handshake timed out"),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn header_is(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .any(|v| v.to_str().map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token))).unwrap_or(false))
}

fn route(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: Arc<PendingSlot>,
) -> Response<Full<Bytes>> {
    if shared.stop_accepting().is_cancelled() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    }
    let upgrade = header_is(&req, header::CONNECTION, "upgrade");
    match req.uri().path() {
        CONTROL_PATH if upgrade && header_is(&req, header::UPGRADE, "websocket") => {
            let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
                return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
            };
            if req.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
                return plain(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            let sh = shared.clone();
            shared.tasks().spawn(async move {
                let Ok(upgraded) = on_upgrade.await else { return };
                let mut cfg = WebSocketConfig::default();
                cfg.max_message_size = Some(MAX_CONTROL_FRAME);
                cfg.max_frame_size = Some(MAX_CONTROL_FRAME);
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg)).await;
                run_control(ws, peer, sh, slot).await;
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
            if let Ok(v) = header::HeaderValue::from_str(&accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            r
        }
        DATA_PATH if upgrade && header_is(&req, header::UPGRADE, DATA_UPGRADE) => {
            let sid = req.headers().get(HEADER_SESSION).and_then(|v| v.to_str().ok()).unwrap_or("");
            let key = req.headers().get(HEADER_DATA_KEY).map(|v| v.as_bytes()).unwrap_or(b"");
            let Some(session) = shared.session(sid) else {
                return plain(StatusCode::UNAUTHORIZED, "unknown session");
            };
            if !bool::from(session.data_key.as_bytes().ct_eq(key)) {
                return plain(StatusCode::UNAUTHORIZED, "bad data key");
            }
            // A P2P visitor's relayed stream: checked against an accepted link, then spliced to
            // the publisher instead of joining the pool.
            let p2p_link = match req.headers().get(rustunnel_proto::HEADER_P2P_LINK) {
                Some(v) => match v.to_str().ok().and_then(|id| crate::p2p::relayable(&shared, &session, id)) {
                    Some(link) => Some(link),
                    None => return plain(StatusCode::FORBIDDEN, "no such P2P link"),
                },
                None => None,
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let sh = shared.clone();
            shared.tasks().spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    match p2p_link {
                        Some(link) => crate::p2p::relay(sh, link, session.peer, upgraded).await,
                        // Every connection on this port is a lean one: taken back out of the
                        // upgrade (with any bytes it had read ahead), so the TCP edge can copy
                        // records straight to and from the visitor's socket.
                        None => match upgraded.downcast::<TokioIo<rustunnel_transport::lean_tls::LeanServer>>() {
                            Ok(parts) => {
                                let mut lean = parts.io.into_inner();
                                lean.unread(&parts.read_buf);
                                session.add_data_conn(DataConn::Tls(Box::new(lean)));
                            }
                            Err(_) => tracing::warn!("data connection of an unexpected type dropped"),
                        },
                    }
                }
            });
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
            r.headers_mut().insert(header::UPGRADE, header::HeaderValue::from_static(DATA_UPGRADE));
            r
        }
        _ => plain(StatusCode::NOT_FOUND, "this is a rustunnel control endpoint; connect with the rustunnel client"),
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn send(ws: &mut Ws, msg: &ServerMsg) -> bool {
    ws.send(Message::text(msg.encode())).await.is_ok()
}

/// Why no hello could be read.
enum NoHello {
    /// Something else came first, or a hello that does not parse (the message says which).
    Bad(String),
    /// A first message over the frame limit: in a hello that can only be the token, so it is
    /// answered like any other token that does not match.
    TooLarge,
    Closed,
}

/// Reads the hello within the deadline. Anything else first is a protocol error.
async fn read_hello(ws: &mut Ws) -> Result<(u32, String, String, bool, bool), NoHello> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return match ClientMsg::decode(t.as_str()) {
                    Ok(ClientMsg::Hello { version, token, agent, plain_data, mux }) => {
                        Ok((version, token, agent, plain_data, mux))
                    }
                    // A hello with a field of the wrong type or missing: say so.
                    Err(e)
                        if serde_json::from_str::<serde_json::Value>(t.as_str())
                            .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("hello")) =>
                    {
                        Err(NoHello::Bad(format!("malformed hello: {e}")))
                    }
                    _ => Err(NoHello::Bad("expected a hello message first".into())),
                };
            }
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => return Err(NoHello::TooLarge),
            _ => return Err(NoHello::Closed),
        }
    }
}

async fn reject(ws: &mut Ws, code: ErrorCode, message: String, retry_after_ms: Option<u64>) {
    let _ = send(ws, &ServerMsg::Rejected { code, message, retry_after_ms }).await;
    let _ = ws.close(None).await;
}

/// The answer to a hello too large to read: the same as to any token that does not match,
/// then close code 1009.
async fn reject_too_big(ws: &mut Ws) {
    let rejected = ServerMsg::Rejected {
        code: ErrorCode::Unauthorized,
        message: AuthError::Rejected.to_string(),
        retry_after_ms: None,
    };
    let _ = send(ws, &rejected).await;
    rustunnel_transport::ws::close_too_big(ws, MAX_CONTROL_FRAME, Duration::from_secs(1)).await;
}

async fn run_control(mut ws: Ws, peer: SocketAddr, shared: Arc<Shared>, slot: Arc<PendingSlot>) {
    let hello = tokio::select! {
        r = tokio::time::timeout(shared.config().handshake_timeout, read_hello(&mut ws)) => r,
        _ = shared.hard_stop().cancelled() => return,
    };
    let (version, token, agent, plain_asked, mux) = match hello {
        Ok(Ok(h)) => h,
        Ok(Err(NoHello::Bad(why))) => {
            reject(&mut ws, ErrorCode::BadRequest, why, None).await;
            return;
        }
        Ok(Err(NoHello::TooLarge)) => {
            tracing::info!(%peer, "control authentication failed (oversized hello)");
            reject_too_big(&mut ws).await;
            return;
        }
        Ok(Err(NoHello::Closed)) => {
            reject(&mut ws, ErrorCode::BadRequest, "connection closed before hello".into(), None).await;
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "hello deadline passed");
            return;
        }
    };
    if version != PROTOCOL_VERSION {
        reject(
            &mut ws,
            ErrorCode::VersionMismatch,
            rustunnel_proto::version_mismatch_message(PROTOCOL_VERSION, version),
            None,
        )
        .await;
        return;
    }
    let principal = match shared.auth().authenticate(shared.store(), peer.ip(), &token).await {
        Ok(p) => p,
        Err(e) => {
            let (code, retry_after) = match e {
                AuthError::RateLimited { retry_after } => (ErrorCode::RateLimited, Some(retry_after)),
                AuthError::Rejected => (ErrorCode::Unauthorized, None),
                AuthError::Store(_) => (ErrorCode::Internal, None),
            };
            tracing::info!(%peer, "control authentication failed");
            let retry_after_ms = retry_after.map(|d| d.as_millis() as u64);
            reject(&mut ws, code, e.to_string(), retry_after_ms).await;
            return;
        }
    };
    drop(token);
    drop(slot);
    let (out_tx, mut out_rx) = mpsc::channel::<ServerMsg>(256);
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    let session = Arc::new(
        Session::new(
            uuid::Uuid::new_v4().to_string(),
            principal,
            hex::encode(key),
            peer,
            agent.chars().take(128).collect(),
            out_tx,
            shared.hard_stop().child_token(),
        )
        .with_plain_data(plain_asked && shared.config().allow_plain_data)
        .with_mux(mux),
    );
    shared.add_session(session.clone());
    let welcome = ServerMsg::Welcome {
        version: PROTOCOL_VERSION,
        session_id: session.id.clone(),
        data_key: session.data_key.clone(),
        heartbeat_secs: shared.config().heartbeat.as_secs().max(1),
        pool_size: shared.config().pool_size,
        server_agent: format!("rustunnel-server/{}", env!("CARGO_PKG_VERSION")),
        p2p_udp_port: shared.p2p().reflector_port.get().copied(),
        plain_data: session.plain_data,
    };
    tracing::info!(session = %session.id, %peer, owner = %session.principal.owner_id, "client connected");
    let mut too_big = false;
    if send(&mut ws, &welcome).await {
        too_big = session_loop(&mut ws, &session, &shared, &mut out_rx).await == LoopEnd::TooBig;
    }
    let reason =
        if shared.stop_accepting().is_cancelled() { CloseReason::ServerShutdown } else { CloseReason::SessionEnded };
    shared.end_session(&session, reason).await;
    if too_big {
        rustunnel_transport::ws::close_too_big(&mut ws, MAX_CONTROL_FRAME, Duration::from_secs(1)).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    tracing::info!(session = %session.id, "client disconnected");
}

/// The check that a client with visitors waiting still answers ([`Session::demand`]).
#[derive(Clone, Copy, PartialEq)]
enum Probe {
    /// No visitor since the client last answered one.
    Idle,
    /// Visitors are waiting: a ping goes out once the client has been silent for a while.
    Due,
    /// The ping went out at this time; any message from the client answers it.
    Sent(tokio::time::Instant),
}

/// Why a session's loop ended.
#[derive(PartialEq)]
enum LoopEnd {
    /// The client sent a message over the size limit: closed with code 1009.
    TooBig,
    /// Anything else: the client left, the connection failed, the server is stopping.
    Other,
}

async fn session_loop(
    ws: &mut Ws,
    session: &Arc<Session>,
    shared: &Arc<Shared>,
    out_rx: &mut mpsc::Receiver<ServerMsg>,
) -> LoopEnd {
    let hb = shared.config().heartbeat.max(Duration::from_millis(100));
    let mut heartbeat = tokio::time::interval(hb);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut log_flush = tokio::time::interval(crate::session::LOG_FLUSH);
    log_flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let mut nonce = 0u64;
    let mut probe = Probe::Idle;
    let probe_after = PROBE_AFTER.min(hb);
    loop {
        let probe_at = match probe {
            Probe::Due => last_seen + probe_after,
            Probe::Sent(at) => at + PROBE_WINDOW,
            Probe::Idle => tokio::time::Instant::now() + hb,
        };
        tokio::select! {
            _ = session.cancel.cancelled() => {
                // The last words before the connection closes: what is queued (a shutdown
                // notice) and the request log of the drain. Bounded: the peer may not read.
                let last = async {
                    while let Ok(msg) = out_rx.try_recv() {
                        if !send(ws, &msg).await { return; }
                    }
                    send_log(ws, session).await;
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), last).await;
                return LoopEnd::Other;
            }
            Some(msg) = out_rx.recv() => {
                if !send(ws, &msg).await { return LoopEnd::Other; }
            }
            _ = session.demanded(), if probe == Probe::Idle => probe = Probe::Due,
            _ = tokio::time::sleep_until(probe_at), if probe != Probe::Idle => {
                if let Probe::Sent(_) = probe {
                    tracing::info!(session = %session.id, "client did not answer with visitors waiting");
                    return LoopEnd::Other;
                }
                nonce += 1;
                if !send(ws, &ServerMsg::Ping { nonce }).await { return LoopEnd::Other; }
                probe = Probe::Sent(tokio::time::Instant::now());
            }
            frame = ws.next() => {
                last_seen = tokio::time::Instant::now();
                if let Probe::Sent(_) = probe {
                    probe = Probe::Idle;
                    session.demand_met();
                }
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = send(ws, &ServerMsg::Error { code: ErrorCode::BadRequest, message: "binary control frames are not supported".into() }).await;
                        continue;
                    }
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                        tracing::info!(session = %session.id, "control message over the size limit");
                        return LoopEnd::TooBig;
                    }
                    // Closed, errored, or ended.
                    _ => return LoopEnd::Other,
                };
                match ClientMsg::decode(text.as_str()) {
                    Ok(ClientMsg::OpenTunnel { req_id, spec }) => {
                        let reply = match shared.open_tunnel(session, spec).await {
                            Ok(tunnel) => ServerMsg::TunnelOpened { req_id, tunnel },
                            Err(e) => ServerMsg::TunnelRejected {
                                req_id,
                                code: e.code,
                                message: e.message,
                                retry_after_ms: e.retry_after.map(|d| d.as_millis() as u64),
                            },
                        };
                        if !send(ws, &reply).await { return LoopEnd::Other; }
                    }
                    Ok(ClientMsg::CloseTunnel { tunnel_id }) => {
                        let mine = shared.tunnel(&tunnel_id).is_some_and(|t| t.session.id == session.id);
                        if mine {
                            shared.close_tunnel(&tunnel_id, CloseReason::ClientRequest, "closed by the client").await;
                        }
                    }
                    Ok(ClientMsg::HealthReport { tunnel_id, healthy, detail }) => {
                        let mine = shared.tunnel(&tunnel_id).is_some_and(|t| t.session.id == session.id);
                        if mine {
                            shared.report_health(&tunnel_id, healthy, &detail);
                        }
                    }
                    Ok(ClientMsg::DrainTunnel { tunnel_id }) => shared.drain_tunnel(session, tunnel_id),
                    Ok(
                        m @ (ClientMsg::P2pPublish { .. }
                        | ClientMsg::P2pConnect { .. }
                        | ClientMsg::P2pAnswer { .. }
                        | ClientMsg::P2pConfirm { .. }
                        | ClientMsg::P2pResult { .. }
                        | ClientMsg::P2pMode { .. }
                        | ClientMsg::P2pClose { .. }),
                    ) => crate::p2p::on_message(shared, session, m),
                    Ok(ClientMsg::Ping { nonce }) => {
                        if !send(ws, &ServerMsg::Pong { nonce }).await { return LoopEnd::Other; }
                    }
                    Ok(ClientMsg::Pong { .. }) => {}
                    Ok(ClientMsg::Hello { .. }) => {
                        let _ = send(ws, &ServerMsg::Error { code: ErrorCode::BadRequest, message: "already authenticated".into() }).await;
                    }
                    Ok(ClientMsg::Unknown) => {
                        let _ = send(ws, &ServerMsg::Error {
                            code: ErrorCode::BadRequest,
                            message: "unknown message type: this server may be older than the client; upgrade rustunnel-server".into(),
                        }).await;
                    }
                    Err(e) => {
                        let _ = send(ws, &ServerMsg::Error { code: ErrorCode::BadRequest, message: e.to_string() }).await;
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > hb * HEARTBEAT_MISSES {
                    tracing::info!(session = %session.id, "heartbeat timeout");
                    return LoopEnd::Other;
                }
                nonce += 1;
                if !send(ws, &ServerMsg::Ping { nonce }).await { return LoopEnd::Other; }
            }
            _ = log_flush.tick() => {
                if !send_log(ws, session).await { return LoopEnd::Other; }
            }
        }
    }
}

/// Sends the request-log entries gathered since the last call; false if the connection failed.
async fn send_log(ws: &mut Ws, session: &Session) -> bool {
    let (entries, dropped) = session.take_log();
    // Several messages when the batch is larger than a control frame: the client refuses
    // oversized frames (and used to lose its connection to this).
    if !entries.is_empty() || dropped > 0 {
        for msg in ServerMsg::request_log(entries, dropped) {
            if !send(ws, &msg).await {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_capped_in_total_across_addresses() {
        let counts = Arc::new(Mutex::new(PendingCounts::default()));
        let ip = |i: usize| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        // Sixteen addresses fill their per-address share: the global cap is reached.
        let mut held: Vec<_> = (0..MAX_PENDING)
            .map(|i| PendingSlot::acquire(&counts, ip(i / MAX_PENDING_PER_IP)).expect("under both caps"))
            .collect();
        assert!(PendingSlot::acquire(&counts, ip(999)).is_none(), "a fresh address is refused at the global cap");
        // One finishes (or times out): one slot is free again, for anyone.
        held.pop();
        let again = PendingSlot::acquire(&counts, ip(999)).expect("a freed slot is reusable");
        assert!(PendingSlot::acquire(&counts, ip(1000)).is_none());
        drop(again);
        drop(held);
        let c = counts.lock();
        assert!(c.total == 0 && c.per_ip.is_empty(), "every slot is given back");
    }
}
