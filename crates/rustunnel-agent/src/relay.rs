//! Host driver: the room relay as a WebSocket server, plus the host's local member.
//!
//! Structured concurrency: [`HostSession`] owns a `JoinSet` with the accept loop
//! and the idle timer; the accept loop owns a `JoinSet` with one task per
//! connection. Cancelling the session token and joining the sets stops everything,
//! including sockets stuck before authentication (they are aborted, never awaited).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use parking_lot::{Mutex, MutexGuard};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{http, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::files::{Assembly, FileError};
use crate::frame::{FrameCipher, FrameError, GuestMsg, HostMsg, NackCode, FILE_CHUNK, MAX_WIRE_FRAME};
use crate::handshake::{encode_reject, respond, ClientHello, HelloKind, RejectReason, MAX_HELLO_LEN};
use crate::invite::{InviteTable, RedeemError};
use crate::link::{InviteId, JoinLink, RelayBase, RoomId};
use crate::room::{MemberId, Now, Room, RoomError, RoomLimits, HOST_ID};

/// Network limits of the relay.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Deadline for the WebSocket upgrade, hello and key confirmation together.
    pub preauth_timeout: Duration,
    /// Concurrent sockets (authenticated or not).
    pub max_connections: usize,
    /// An authenticated member silent this long is considered gone (guests ping every 15 s).
    pub read_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            preauth_timeout: Duration::from_secs(10),
            max_connections: 64,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Host configuration.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub goal: String,
    pub host_name: String,
    /// Public base URL guests dial (e.g. the tunnel's `http://abc.localhost:8080`).
    pub public_base: RelayBase,
    pub limits: RoomLimits,
    pub relay: RelayLimits,
    pub invite_ttl: Duration,
}

impl HostConfig {
    pub fn new(goal: &str, host_name: &str, public_base: RelayBase) -> Self {
        HostConfig {
            goal: goal.to_owned(),
            host_name: host_name.to_owned(),
            public_base,
            limits: RoomLimits::default(),
            relay: RelayLimits::default(),
            invite_ttl: crate::invite::DEFAULT_INVITE_TTL,
        }
    }
}

struct ConnSlot {
    gen: u64,
    cancel: CancellationToken,
}

pub(crate) struct HostState {
    pub(crate) room: Room,
    pub(crate) invites: InviteTable,
    conns: HashMap<MemberId, ConnSlot>,
    next_gen: u64,
}

pub(crate) struct HostShared {
    state: Mutex<HostState>,
    /// Bumped whenever the transcript or room state changes.
    pub(crate) changed: watch::Sender<u64>,
    /// Authenticated member connections currently served.
    live: watch::Sender<usize>,
    room_id: RoomId,
    pub(crate) base: RelayBase,
    limits: RelayLimits,
}

impl HostShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HostState> {
        self.state.lock()
    }
    pub(crate) fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A running room relay owned by the host. Dropping it cancels all tasks.
pub struct HostSession {
    pub(crate) shared: Arc<HostShared>,
    cancel: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    local_addr: SocketAddr,
}

impl Drop for HostSession {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read the relay listener address: {0}")]
    Listener(std::io::Error),
    #[error("goal must not be empty")]
    EmptyGoal,
}

impl HostSession {
    /// Starts the room and its relay on `listener` (bind `127.0.0.1:0`).
    pub async fn open(listener: TcpListener, cfg: HostConfig) -> Result<Self, OpenError> {
        if cfg.goal.trim().is_empty() {
            return Err(OpenError::EmptyGoal);
        }
        let local_addr = listener.local_addr().map_err(OpenError::Listener)?;
        let room_id = RoomId::random();
        let room = Room::new(room_id.clone(), &cfg.goal, &cfg.host_name, Now::current(), cfg.limits.clone());
        let shared = Arc::new(HostShared {
            state: Mutex::new(HostState {
                room,
                invites: InviteTable::new(cfg.invite_ttl, crate::invite::MAX_OUTSTANDING_INVITES),
                conns: HashMap::new(),
                next_gen: 0,
            }),
            changed: watch::channel(0).0,
            live: watch::channel(0).0,
            room_id,
            base: cfg.public_base.clone(),
            limits: cfg.relay.clone(),
        });
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, shared.clone(), cancel.clone()));
        tasks.spawn(idle_timer(shared.clone(), cancel.clone()));
        Ok(HostSession { shared, cancel, tasks: tokio::sync::Mutex::new(tasks), local_addr })
    }

    /// Address the relay listens on (what the HTTP tunnel must forward to).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn room_id(&self) -> &RoomId {
        &self.shared.room_id
    }

    /// Mints `count` single-use invites. Only the host can do this: guests have no table.
    pub fn invite(&self, count: usize) -> Result<Vec<(JoinLink, Duration)>, crate::invite::MintError> {
        let now = Now::current();
        let mut st = self.shared.lock();
        let mut out = Vec::new();
        for _ in 0..count.max(1) {
            let m = st.invites.mint(now.at)?;
            let link = self.shared.base.join_link(&self.shared.room_id, m.id, &m.key);
            out.push((link, m.expires_at.saturating_duration_since(now.at)));
        }
        Ok(out)
    }

    /// Ends the room for everyone: final system event, flush, then teardown.
    pub async fn close(&self, summary: Option<&str>) {
        {
            let mut st = self.shared.lock();
            st.room.close(summary, Now::current());
            st.invites.clear();
        }
        self.shared.notify();
        // Give connected guests a moment to receive the final message.
        let mut live = self.shared.live.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), live.wait_for(|n| *n == 0)).await;
        self.shutdown().await;
    }

    /// Stops all tasks (accept loop, connections, timers) and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

async fn idle_timer(shared: Arc<HostShared>, cancel: CancellationToken) {
    let mut rx = shared.changed.subscribe();
    loop {
        let deadline = {
            let st = shared.lock();
            if st.room.is_closed() {
                return;
            }
            st.room.idle_deadline()
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let closed = {
                    let mut st = shared.lock();
                    let c = st.room.tick(Now::current());
                    if c { st.invites.clear(); }
                    c
                };
                if closed {
                    shared.notify();
                    return;
                }
            }
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<HostShared>, cancel: CancellationToken) {
    let mut conns = JoinSet::new();
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _peer)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::debug!("relay at connection cap; dropping socket");
                        continue;
                    };
                    let shared = shared.clone();
                    let cancel = cancel.child_token();
                    conns.spawn(async move {
                        handle_conn(stream, shared, cancel).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // fd exhaustion and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

type Ws = WebSocketStream<TcpStream>;

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_WIRE_FRAME)).max_frame_size(Some(MAX_WIRE_FRAME))
}

/// A WebSocket message that is not a channel frame.
#[derive(Debug, PartialEq)]
pub(crate) enum NotAFrame {
    /// A text message: the channel speaks binary frames only.
    Text,
    /// A message over [`MAX_WIRE_FRAME`]: refused from its header, unread.
    TooBig,
}

/// Reads the next binary message, skipping pings/pongs. None on close or a broken connection.
pub(crate) async fn next_binary<S>(ws: &mut WebSocketStream<S>) -> Option<Result<Vec<u8>, NotAFrame>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await? {
            Ok(WsMessage::Binary(b)) => return Some(Ok(b.to_vec())),
            Ok(WsMessage::Ping(_)) | Ok(WsMessage::Pong(_)) => continue,
            Ok(WsMessage::Close(_)) => return None,
            Ok(_) => return Some(Err(NotAFrame::Text)),
            Err(tokio_tungstenite::tungstenite::Error::Capacity(_)) => return Some(Err(NotAFrame::TooBig)),
            Err(_) => return None,
        }
    }
}

struct Authed {
    member: MemberId,
    gen: u64,
    cancel: CancellationToken,
    cipher: FrameCipher,
    cursor: u64,
}

/// How long a closing room waits for each member to acknowledge the final frames.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

async fn handle_conn(stream: TcpStream, shared: Arc<HostShared>, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let deadline = shared.limits.preauth_timeout;
    let pre = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(deadline, preauth(stream, &shared, &cancel)) => r,
    };
    let Ok(Some((mut ws, authed))) = pre else {
        return;
    };
    let member = authed.member;
    let gen = authed.gen;
    // Only members count: close() waits for them to get the final message, never
    // for unauthenticated sockets.
    shared.live.send_modify(|n| *n += 1);
    let outcome = serve_member(&mut ws, &shared, authed).await;
    if matches!(outcome, Outcome::TooBig) {
        rustunnel_transport::ws::close_too_big(&mut ws, MAX_WIRE_FRAME, CLOSE_LINGER).await;
    } else {
        let _ = ws.close(None).await;
    }
    if matches!(outcome, Outcome::Closed) {
        // Wait (bounded) for the member to answer the close: only then have the final frames
        // reached it. Over a tunnel they may still be in flight when our socket is flushed, and
        // the host stops the tunnel as soon as `close()` returns.
        let _ = tokio::time::timeout(CLOSE_LINGER, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    }
    shared.live.send_modify(|n| *n = n.saturating_sub(1));
    let mut st = shared.lock();
    let current = st.conns.get(&member).map(|s| s.gen) == Some(gen);
    if current {
        st.conns.remove(&member);
        if !matches!(outcome, Outcome::Left) {
            st.room.set_connected(member, false, Now::current());
        }
        drop(st);
        shared.notify();
    }
}

async fn send_reject(mut ws: Ws, reason: RejectReason) {
    let _ = ws.send(WsMessage::binary(encode_reject(reason))).await;
    let _ = ws.close(None).await;
}

fn path_ok(path: &str, room: &RoomId) -> bool {
    path.strip_suffix(room.as_str()).is_some_and(|p| p.ends_with("/t/"))
}

// The callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn preauth(stream: TcpStream, shared: &Arc<HostShared>, cancel: &CancellationToken) -> Option<(Ws, Authed)> {
    let room_id = shared.room_id.clone();
    let cb = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if path_ok(req.uri().path(), &room_id) {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some("no such room".into()));
            *e.status_mut() = http::StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(stream, cb, Some(ws_config())).await.ok()?;
    let first = next_binary(&mut ws).await?.ok()?;
    if first.len() > MAX_HELLO_LEN {
        return None;
    }
    let hello = ClientHello::decode(&first).ok()?;
    if hello.version != crate::handshake::PROTOCOL_VERSION {
        send_reject(ws, RejectReason::Version).await;
        return None;
    }
    // Look up the PSK by the public id; nothing is consumed yet.
    let psk = {
        let st = shared.lock();
        let now = Now::current();
        match hello.kind {
            HelloKind::Join => st.invites.key_for(&InviteId(hello.id), now.at).map(|k| k.0).map_err(reject_for),
            HelloKind::Resume => st.room.resume_lookup(&hello.id).map(|(_, s)| s).ok_or(if st.room.is_closed() {
                RejectReason::Closed
            } else {
                RejectReason::Unknown
            }),
        }
    };
    let psk = match psk {
        Ok(k) => k,
        Err(r) => {
            send_reject(ws, r).await;
            return None;
        }
    };
    let Ok((est, reply)) = respond(&shared.room_id, &hello, &psk) else {
        // Wrong key: the invite stays usable.
        send_reject(ws, RejectReason::BadKey).await;
        return None;
    };
    ws.send(WsMessage::binary(reply)).await.ok()?;
    let code = est.verification_code();
    let h = est.handshake_hash;
    let mut cipher = est.cipher;
    let frame = next_binary(&mut ws).await?.ok()?;
    // Key confirmation: only an authenticated first frame consumes anything.
    let (msg, _) = cipher.open::<GuestMsg>(&frame).ok()?;
    let now = Now::current();
    let (seed, ticket) = crate::resume::issue(&h);
    let admitted: Result<(MemberId, u64, u64), String> = {
        let mut st = shared.lock();
        let r = match (hello.kind, msg) {
            (HelloKind::Join, GuestMsg::Join { name }) => st
                .invites
                .redeem(&InviteId(hello.id), now.at)
                .map_err(|e| e.to_string())
                .and_then(|()| st.room.add_member(&name, Some(code.clone()), now).map_err(|e| e.to_string()))
                .map(|m| (m, 0)),
            (HelloKind::Resume, GuestMsg::Resume { last_seq }) => match st.room.resume_lookup(&hello.id) {
                Some((m, _)) => {
                    st.room.set_connected(m, true, now);
                    Ok((m, last_seq.min(st.room.last_seq())))
                }
                None => Err("resume ticket no longer valid".to_owned()),
            },
            _ => Err("unexpected first frame".to_owned()),
        };
        r.map(|(m, cursor)| {
            st.room.set_resume(m, ticket.id, ticket.secret, code.clone());
            st.next_gen += 1;
            let gen = st.next_gen;
            let conn_cancel = cancel.child_token();
            if let Some(old) = st.conns.insert(m, ConnSlot { gen, cancel: conn_cancel }) {
                // A resumed member supersedes its stale connection.
                old.cancel.cancel();
            }
            (m, cursor, gen)
        })
    };
    let (member, cursor, gen) = match admitted {
        Ok(v) => v,
        Err(reason) => {
            if let Ok(w) = cipher.seal(&HostMsg::Rejected { reason }, &[]) {
                let _ = ws.send(WsMessage::binary(w)).await;
            }
            let _ = ws.close(None).await;
            return None;
        }
    };
    shared.notify();
    let (welcome, conn_cancel) = {
        let st = shared.lock();
        let w = HostMsg::Welcome {
            member_id: member,
            goal: st.room.goal().to_owned(),
            roster: st.room.roster(),
            last_seq: st.room.last_seq(),
            resume_id: hex::encode(ticket.id),
            resume_seed: hex::encode(seed),
            idle_timeout_secs: st.room.limits().idle_timeout.as_secs(),
        };
        let c = st.conns.get(&member).map(|s| s.cancel.clone()).unwrap_or_else(|| cancel.child_token());
        (w, c)
    };
    let w = cipher.seal(&welcome, &[]).ok()?;
    ws.send(WsMessage::binary(w)).await.ok()?;
    Some((ws, Authed { member, gen, cancel: conn_cancel, cipher, cursor }))
}

fn reject_for(e: RedeemError) -> RejectReason {
    match e {
        RedeemError::Unknown => RejectReason::Unknown,
        RedeemError::Expired => RejectReason::Expired,
        RedeemError::AlreadyUsed => RejectReason::AlreadyUsed,
    }
}

enum Outcome {
    Left,
    Closed,
    Dropped,
    /// Dropped for a message over the size limit: closed with code 1009.
    TooBig,
}

async fn send(ws: &mut Ws, cipher: &mut FrameCipher, msg: &HostMsg, att: &[u8]) -> Result<(), ()> {
    let w = cipher.seal(msg, att).map_err(|_| ())?;
    ws.send(WsMessage::binary(w)).await.map_err(|_| ())
}

fn nack_for(req: u64, e: &RoomError) -> HostMsg {
    let code = match e {
        RoomError::Closed => NackCode::Closed,
        RoomError::TooLarge { .. } | RoomError::FileTooLarge { .. } => NackCode::TooLarge,
        RoomError::RateLimited { .. } => NackCode::RateLimited,
        RoomError::Quota(_) => NackCode::QuotaExceeded,
        RoomError::NoSuchArtifact => NackCode::NotFound,
        _ => NackCode::Invalid,
    };
    HostMsg::Nack { req, code, message: e.to_string() }
}

struct Upload {
    req: u64,
    name: String,
    asm: Assembly,
}

async fn serve_member(ws: &mut Ws, shared: &Arc<HostShared>, a: Authed) -> Outcome {
    let Authed { member, cancel, mut cipher, mut cursor, .. } = a;
    let mut rx = shared.changed.subscribe();
    let mut upload: Option<Upload> = None;
    let read_timeout = shared.limits.read_timeout;
    loop {
        // Push transcript entries the member has not seen (also covers resume catch-up).
        let (events, closed, summary) = {
            let st = shared.lock();
            (st.room.events_since(cursor, 64), st.room.is_closed(), st.room.close_summary().map(str::to_owned))
        };
        let n = events.len();
        for ev in events {
            cursor = ev.seq;
            if send(ws, &mut cipher, &HostMsg::Event { event: ev }, &[]).await.is_err() {
                return Outcome::Dropped;
            }
        }
        if n == 64 {
            continue;
        }
        if closed {
            let _ = send(ws, &mut cipher, &HostMsg::Closed { summary }, &[]).await;
            return Outcome::Closed;
        }
        let inbound = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Dropped,
            r = rx.changed() => { if r.is_err() { return Outcome::Dropped; } continue; }
            r = tokio::time::timeout(read_timeout, next_binary(ws)) => r,
        };
        let frame = match inbound {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(NotAFrame::TooBig))) => {
                tracing::warn!(member, "message over the size limit from member; dropping connection");
                return Outcome::TooBig;
            }
            _ => return Outcome::Dropped,
        };
        let (msg, att) = match cipher.open::<GuestMsg>(&frame) {
            Ok(v) => v,
            Err(FrameError::Tampering) => {
                tracing::warn!(member, "tampering detected on member connection; dropping it");
                return Outcome::Dropped;
            }
            Err(e) => {
                tracing::warn!(member, error = %e, "bad frame from member; dropping connection");
                return Outcome::Dropped;
            }
        };
        let reply = match msg {
            GuestMsg::Say { req, text } => {
                let r = shared.lock().room.say(member, &text, Now::current());
                match r {
                    Ok(seq) => {
                        shared.notify();
                        HostMsg::Ack { req, seq: Some(seq) }
                    }
                    Err(e) => nack_for(req, &e),
                }
            }
            GuestMsg::FileBegin { req, name, size, sha256 } => {
                let (check, max) = {
                    let st = shared.lock();
                    (st.room.check_upload(member, size), st.room.limits().files.max_file_bytes)
                };
                match check
                    .map_err(|e| Box::new(nack_for(req, &e)))
                    .and_then(|()| Assembly::new(size, &sha256, max).map_err(|e| Box::new(file_nack(req, &e))))
                {
                    Ok(asm) => {
                        upload = Some(Upload { req, name, asm });
                        continue;
                    }
                    Err(n) => *n,
                }
            }
            GuestMsg::FileChunk { req, offset } => match upload.as_mut() {
                Some(u) if u.req == req => match u.asm.push(offset, &att) {
                    Ok(()) => continue,
                    Err(e) => {
                        upload = None;
                        file_nack(req, &e)
                    }
                },
                _ => file_nack(req, &FileError::Integrity),
            },
            GuestMsg::FileEnd { req } => match upload.take() {
                Some(u) if u.req == req => match u.asm.finish() {
                    Ok(data) => {
                        let sha = crate::files::sha256_hex(&data);
                        let r = shared.lock().room.add_artifact(
                            member,
                            &u.name,
                            Arc::from(data.into_boxed_slice()),
                            sha,
                            Now::current(),
                        );
                        match r {
                            Ok((seq, _)) => {
                                shared.notify();
                                HostMsg::Ack { req, seq: Some(seq) }
                            }
                            Err(e) => nack_for(req, &e),
                        }
                    }
                    Err(e) => file_nack(req, &e),
                },
                _ => file_nack(req, &FileError::Integrity),
            },
            GuestMsg::Fetch { req, artifact_id } => {
                let art = shared.lock().room.artifact(&artifact_id).cloned();
                match art {
                    Ok(a) => {
                        let head = HostMsg::FileHeader { req, size: a.info.size, sha256: a.info.sha256.clone() };
                        if send(ws, &mut cipher, &head, &[]).await.is_err() {
                            return Outcome::Dropped;
                        }
                        for (i, chunk) in a.data.chunks(FILE_CHUNK).enumerate() {
                            let m = HostMsg::FileData { req, offset: (i * FILE_CHUNK) as u64 };
                            if send(ws, &mut cipher, &m, chunk).await.is_err() {
                                return Outcome::Dropped;
                            }
                        }
                        HostMsg::FileDone { req }
                    }
                    Err(e) => nack_for(req, &e),
                }
            }
            GuestMsg::Leave => {
                {
                    let mut st = shared.lock();
                    st.room.leave(member, Now::current());
                    st.conns.remove(&member);
                }
                shared.notify();
                return Outcome::Left;
            }
            GuestMsg::Join { .. } | GuestMsg::Resume { .. } => return Outcome::Dropped,
        };
        // Deliver the events this request created before its ack, so the member's
        // transcript already holds them (e.g. the artifact id) when the call returns.
        loop {
            let events = shared.lock().room.events_since(cursor, 64);
            if events.is_empty() {
                break;
            }
            for ev in events {
                cursor = ev.seq;
                if send(ws, &mut cipher, &HostMsg::Event { event: ev }, &[]).await.is_err() {
                    return Outcome::Dropped;
                }
            }
        }
        if send(ws, &mut cipher, &reply, &[]).await.is_err() {
            return Outcome::Dropped;
        }
    }
}

fn file_nack(req: u64, e: &FileError) -> HostMsg {
    HostMsg::Nack { req, code: NackCode::Invalid, message: e.to_string() }
}

/// Local (socket-less) member operations of the host.
impl HostSession {
    pub(crate) fn say_local(&self, text: &str) -> Result<u64, RoomError> {
        let seq = self.shared.lock().room.say(HOST_ID, text, Now::current())?;
        self.shared.notify();
        Ok(seq)
    }

    pub(crate) fn share_local(&self, name: &str, data: Vec<u8>) -> Result<(u64, crate::room::FileInfo), RoomError> {
        let sha = crate::files::sha256_hex(&data);
        let r = self.shared.lock().room.add_artifact(
            HOST_ID,
            name,
            Arc::from(data.into_boxed_slice()),
            sha,
            Now::current(),
        )?;
        self.shared.notify();
        Ok(r)
    }
}
