//! Guest driver: dials the relay, runs the handshake, keeps a local transcript and
//! reconnects with the resumption ticket when the connection drops.
//!
//! TLS (`wss://`) is not implemented in this crate: links with `wss://` are refused
//! with [`JoinError::TlsUnsupported`]. In development the tunnel edge is plain HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt as _;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::files::{Assembly, FileError};
use crate::frame::{FrameCipher, FrameError, GuestMsg, HostMsg, NackCode, FILE_CHUNK};
use crate::handshake::{HandshakeError, HelloKind, Initiator, RejectReason};
use crate::link::{JoinLink, LinkError, RoomId, Scheme};
use crate::relay::{next_binary, ws_config, NotAFrame};
use crate::resume::ResumeTicket;
use crate::room::{Event, FileInfo, MemberId, MemberInfo};

/// Deadline for dial + handshake + welcome.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
const PING_EVERY: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(45);
const MAX_TRANSCRIPT_BYTES: usize = 8 * 1024 * 1024;
/// How long a dropped guest keeps trying to resume before giving up.
pub const RESUME_WINDOW: Duration = Duration::from_secs(120);

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("wss:// links need TLS, which this build does not support; use the ws:// URL of the tunnel")]
    TlsUnsupported,
    #[error("cannot reach the relay at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("WebSocket upgrade failed (room gone or wrong URL): {0}")]
    Upgrade(String),
    #[error("this join link was already used; links are single-use, ask the host for a new one")]
    AlreadyUsed,
    #[error("this join link has expired; ask the host for a new link (tunnel_invite)")]
    Expired,
    #[error("the host does not know this link (room restarted?); ask the host for a new link")]
    UnknownInvite,
    #[error("the link key was rejected: the link is wrong or was altered; ask the host to resend it")]
    BadKey,
    #[error("the room is closed")]
    Closed,
    #[error("the host refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Handshake(HandshakeError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the relay closed the connection during the handshake")]
    ConnectionClosed,
    #[error("no answer from the relay within {0:?}")]
    Timeout(Duration),
}

impl From<HandshakeError> for JoinError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Rejected(RejectReason::AlreadyUsed) => JoinError::AlreadyUsed,
            HandshakeError::Rejected(RejectReason::Expired) => JoinError::Expired,
            HandshakeError::Rejected(RejectReason::Unknown) => JoinError::UnknownInvite,
            HandshakeError::Rejected(RejectReason::BadKey) | HandshakeError::Auth => JoinError::BadKey,
            HandshakeError::Rejected(RejectReason::Closed) => JoinError::Closed,
            other => JoinError::Handshake(other),
        }
    }
}

/// Why a guest operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestOpError {
    #[error("not connected to the room right now (reconnecting); retry shortly")]
    Disconnected,
    #[error("the room is closed")]
    Closed,
    #[error("the host refused: {message}")]
    Refused { code: NackCode, message: String },
    #[error(transparent)]
    File(#[from] FileError),
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Host closed the room (or it idled out).
    RoomClosed(Option<String>),
    /// We left.
    Left,
    /// Connection lost and resume failed.
    Lost(String),
}

pub(crate) struct GuestState {
    pub(crate) member_id: MemberId,
    pub(crate) name: String,
    pub(crate) goal: String,
    pub(crate) roster: Vec<MemberInfo>,
    pub(crate) transcript: VecDeque<Event>,
    transcript_bytes: usize,
    pub(crate) last_seq: u64,
    pub(crate) verification_code: String,
    pub(crate) connected: bool,
    pub(crate) ended: Option<EndReason>,
    pub(crate) idle_timeout_secs: u64,
    pub(crate) last_activity: tokio::time::Instant,
    pub(crate) tampering_detected: u32,
}

impl GuestState {
    fn push(&mut self, ev: Event) {
        if ev.seq <= self.last_seq {
            return;
        }
        self.last_seq = ev.seq;
        if let Some(r) = &ev.roster {
            self.roster = r.clone();
        }
        self.last_activity = tokio::time::Instant::now();
        self.transcript_bytes += ev.text.len();
        self.transcript.push_back(ev);
        while self.transcript_bytes > MAX_TRANSCRIPT_BYTES && self.transcript.len() > 1 {
            if let Some(old) = self.transcript.pop_front() {
                self.transcript_bytes -= old.text.len();
            }
        }
    }

    pub(crate) fn events_since(&self, seq: u64, max: usize) -> Vec<Event> {
        let start = self.transcript.partition_point(|e| e.seq <= seq);
        self.transcript.iter().skip(start).take(max).cloned().collect()
    }

    pub(crate) fn file_info(&self, artifact_id: &str) -> Option<FileInfo> {
        self.transcript.iter().rev().find_map(|e| e.file.as_ref().filter(|f| f.artifact_id == artifact_id).cloned())
    }
}

pub(crate) struct GuestShared {
    state: Mutex<GuestState>,
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) room_id: RoomId,
}

impl GuestShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, GuestState> {
        self.state.lock()
    }
    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

enum Cmd {
    Say {
        text: String,
        reply: oneshot::Sender<Result<u64, GuestOpError>>,
    },
    Share {
        name: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<u64, GuestOpError>>,
    },
    Fetch {
        artifact_id: String,
        expect: Option<FileInfo>,
        max: u64,
        reply: oneshot::Sender<Result<Vec<u8>, GuestOpError>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
}

/// A joined guest. Dropping it cancels its driver task.
pub struct GuestSession {
    pub(crate) shared: Arc<GuestShared>,
    cmds: mpsc::Sender<Cmd>,
    cancel: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl Drop for GuestSession {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

type Ws = WebSocketStream<TcpStream>;

struct Conn {
    ws: Ws,
    cipher: FrameCipher,
    ticket: ResumeTicket,
}

async fn dial(link: &JoinLink) -> Result<Ws, JoinError> {
    if link.scheme() == Scheme::Wss {
        return Err(JoinError::TlsUnsupported);
    }
    let (host, port) = link.dial_target();
    let addr = format!("{host}:{port}");
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|source| JoinError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    // The request URL has no fragment: the secret never leaves this process.
    let url = link.request_url();
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .map_err(|e| JoinError::Upgrade(e.to_string()))?;
    Ok(ws)
}

struct Welcome {
    member_id: MemberId,
    goal: String,
    roster: Vec<MemberInfo>,
    idle_timeout_secs: u64,
    code: String,
}

async fn connect(
    link: &JoinLink,
    kind: HelloKind,
    id: [u8; 16],
    psk: &[u8; 32],
    first: GuestMsg,
) -> Result<(Conn, Welcome), JoinError> {
    let mut ws = dial(link).await?;
    let (ini, hello) = Initiator::start(link.room_id(), kind, id, psk)?;
    ws.send(WsMessage::binary(hello)).await.map_err(|_| JoinError::ConnectionClosed)?;
    let reply = match next_binary(&mut ws).await {
        Some(Ok(b)) => b,
        _ => return Err(JoinError::ConnectionClosed),
    };
    let est = ini.finish(&reply)?;
    let code = est.verification_code();
    let h = est.handshake_hash;
    let mut cipher = est.cipher;
    let w = cipher.seal(&first, &[])?;
    ws.send(WsMessage::binary(w)).await.map_err(|_| JoinError::ConnectionClosed)?;
    let frame = match next_binary(&mut ws).await {
        Some(Ok(b)) => b,
        _ => return Err(JoinError::ConnectionClosed),
    };
    let (msg, _) = cipher.open::<HostMsg>(&frame)?;
    match msg {
        HostMsg::Welcome { member_id, goal, roster, resume_id, resume_seed, idle_timeout_secs, .. } => {
            let ticket = crate::resume::accept(&h, &resume_id, &resume_seed)
                .ok_or_else(|| JoinError::Refused("malformed welcome".into()))?;
            Ok((Conn { ws, cipher, ticket }, Welcome { member_id, goal, roster, idle_timeout_secs, code }))
        }
        HostMsg::Rejected { reason } => {
            if reason.contains("already used") {
                Err(JoinError::AlreadyUsed)
            } else if reason.contains("expired") {
                Err(JoinError::Expired)
            } else {
                Err(JoinError::Refused(reason))
            }
        }
        _ => Err(JoinError::Refused("unexpected first message from host".into())),
    }
}

impl GuestSession {
    /// Redeems `link` and joins the room as `name`.
    pub async fn join(link: &JoinLink, name: &str) -> Result<Self, JoinError> {
        let first = GuestMsg::Join { name: name.to_owned() };
        let (conn, w) = tokio::time::timeout(
            JOIN_TIMEOUT,
            connect(link, HelloKind::Join, link.invite_id().0, &link.key().0, first),
        )
        .await
        .map_err(|_| JoinError::Timeout(JOIN_TIMEOUT))??;
        let my_name =
            w.roster.iter().find(|m| m.id == w.member_id).map(|m| m.name.clone()).unwrap_or_else(|| name.to_owned());
        let shared = Arc::new(GuestShared {
            state: Mutex::new(GuestState {
                member_id: w.member_id,
                name: my_name,
                goal: w.goal,
                roster: w.roster,
                transcript: VecDeque::new(),
                transcript_bytes: 0,
                last_seq: 0,
                verification_code: w.code,
                connected: true,
                ended: None,
                idle_timeout_secs: w.idle_timeout_secs,
                last_activity: tokio::time::Instant::now(),
                tampering_detected: 0,
            }),
            changed: watch::channel(0).0,
            room_id: link.room_id().clone(),
        });
        let (tx, rx) = mpsc::channel(32);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(drive(conn, link.clone(), shared.clone(), rx, cancel.clone()));
        Ok(GuestSession { shared, cmds: tx, cancel, tasks: tokio::sync::Mutex::new(tasks) })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, GuestOpError>>) -> Cmd,
    ) -> Result<T, GuestOpError> {
        if self.shared.lock().ended.is_some() {
            return Err(GuestOpError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.map_err(|_| GuestOpError::Closed)?;
        rx.await.map_err(|_| GuestOpError::Disconnected)?
    }

    pub(crate) async fn say(&self, text: &str) -> Result<u64, GuestOpError> {
        let text = text.to_owned();
        self.call(|reply| Cmd::Say { text, reply }).await
    }

    pub(crate) async fn share(&self, name: &str, data: Vec<u8>) -> Result<u64, GuestOpError> {
        let name = name.to_owned();
        self.call(|reply| Cmd::Share { name, data, reply }).await
    }

    pub(crate) async fn fetch(&self, artifact_id: &str, max: u64) -> Result<Vec<u8>, GuestOpError> {
        let expect = self.shared.lock().file_info(artifact_id);
        let artifact_id = artifact_id.to_owned();
        self.call(|reply| Cmd::Fetch { artifact_id, expect, max, reply }).await
    }

    /// Leaves the room (the room stays open for others) and stops the driver.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Leave { reply: tx }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.shutdown().await;
    }

    /// Stops the driver task and waits for it.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut t = self.tasks.lock().await;
        while t.join_next().await.is_some() {}
        let mut st = self.shared.lock();
        if st.ended.is_none() {
            st.ended = Some(EndReason::Left);
        }
        st.connected = false;
    }

    pub fn room_id(&self) -> &RoomId {
        &self.shared.room_id
    }
}

enum ConnEnd {
    Closed(Option<String>),
    Left,
    Cancelled,
    Dropped(String),
}

async fn drive(
    mut conn: Conn,
    link: JoinLink,
    shared: Arc<GuestShared>,
    mut cmds: mpsc::Receiver<Cmd>,
    cancel: CancellationToken,
) {
    loop {
        let end = run_conn(&mut conn, &shared, &mut cmds, &cancel).await;
        let reason = match end {
            ConnEnd::Cancelled => return,
            ConnEnd::Left => EndReason::Left,
            ConnEnd::Closed(s) => EndReason::RoomClosed(s),
            ConnEnd::Dropped(why) => {
                {
                    shared.lock().connected = false;
                }
                shared.notify();
                tracing::info!(%why, "connection to room lost; resuming");
                match resume(&link, &conn.ticket, &shared, &mut cmds, &cancel).await {
                    Ok(c) => {
                        conn = c;
                        shared.lock().connected = true;
                        shared.notify();
                        continue;
                    }
                    Err(None) => return,
                    Err(Some(e)) => EndReason::Lost(e),
                }
            }
        };
        {
            let mut st = shared.lock();
            st.connected = false;
            st.ended = Some(reason);
        }
        shared.notify();
        // Fail whatever is still queued so callers are not left waiting.
        cmds.close();
        while let Ok(c) = cmds.try_recv() {
            fail_cmd(c, GuestOpError::Closed);
        }
        return;
    }
}

fn fail_cmd(c: Cmd, e: GuestOpError) {
    match c {
        Cmd::Say { reply, .. } | Cmd::Share { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Cmd::Fetch { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Cmd::Leave { reply } => {
            let _ = reply.send(());
        }
    }
}

async fn resume(
    link: &JoinLink,
    ticket: &ResumeTicket,
    shared: &Arc<GuestShared>,
    cmds: &mut mpsc::Receiver<Cmd>,
    cancel: &CancellationToken,
) -> Result<Conn, Option<String>> {
    let give_up = tokio::time::Instant::now() + RESUME_WINDOW;
    let mut backoff = Duration::from_millis(100);
    let mut last_err = String::from("no attempt");
    while tokio::time::Instant::now() < give_up {
        let last_seq = shared.lock().last_seq;
        let first = GuestMsg::Resume { last_seq };
        let attempt =
            tokio::time::timeout(JOIN_TIMEOUT, connect(link, HelloKind::Resume, ticket.id, &ticket.secret, first));
        tokio::select! {
            _ = cancel.cancelled() => return Err(None),
            r = attempt => match r {
                Ok(Ok((c, w))) => {
                    let mut st = shared.lock();
                    st.roster = w.roster;
                    st.verification_code = w.code;
                    return Ok(c);
                }
                Ok(Err(e @ (JoinError::Closed | JoinError::UnknownInvite | JoinError::BadKey))) => {
                    return Err(Some(e.to_string()));
                }
                Ok(Err(e)) => last_err = e.to_string(),
                Err(_) => last_err = "timeout".into(),
            },
        }
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(None),
                _ = &mut sleep => break,
                c = cmds.recv() => match c {
                    Some(c) => fail_cmd(c, GuestOpError::Disconnected),
                    None => return Err(None),
                },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    Err(Some(format!("could not resume within {RESUME_WINDOW:?}: {last_err}")))
}

enum Pending {
    Ack(oneshot::Sender<Result<u64, GuestOpError>>),
    Fetch {
        expect: Option<FileInfo>,
        max: u64,
        asm: Option<Assembly>,
        reply: oneshot::Sender<Result<Vec<u8>, GuestOpError>>,
    },
}

async fn send_frame(conn: &mut Conn, msg: &GuestMsg, att: &[u8]) -> Result<(), String> {
    let w = conn.cipher.seal(msg, att).map_err(|e| e.to_string())?;
    conn.ws.send(WsMessage::binary(w)).await.map_err(|e| e.to_string())
}

async fn run_conn(
    conn: &mut Conn,
    shared: &Arc<GuestShared>,
    cmds: &mut mpsc::Receiver<Cmd>,
    cancel: &CancellationToken,
) -> ConnEnd {
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_req: u64 = 1;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break ConnEnd::Cancelled,
            _ = ping.tick() => {
                if conn.ws.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break ConnEnd::Dropped("ping failed".into());
                }
            }
            c = cmds.recv() => {
                let Some(c) = c else { break ConnEnd::Cancelled };
                let req = next_req;
                next_req += 1;
                let r = match c {
                    Cmd::Say { text, reply } => {
                        pending.insert(req, Pending::Ack(reply));
                        send_frame(conn, &GuestMsg::Say { req, text }, &[]).await
                    }
                    Cmd::Share { name, data, reply } => {
                        pending.insert(req, Pending::Ack(reply));
                        send_upload(conn, req, name, &data).await
                    }
                    Cmd::Fetch { artifact_id, expect, max, reply } => {
                        pending.insert(req, Pending::Fetch { expect, max, asm: None, reply });
                        send_frame(conn, &GuestMsg::Fetch { req, artifact_id }, &[]).await
                    }
                    Cmd::Leave { reply } => {
                        let _ = send_frame(conn, &GuestMsg::Leave, &[]).await;
                        let _ = conn.ws.close(None).await;
                        let _ = reply.send(());
                        break ConnEnd::Left;
                    }
                };
                if let Err(e) = r {
                    break ConnEnd::Dropped(e);
                }
            }
            f = tokio::time::timeout(READ_TIMEOUT, next_binary(&mut conn.ws)) => {
                let frame = match f {
                    Ok(Some(Ok(b))) => b,
                    Ok(Some(Err(NotAFrame::Text))) => break ConnEnd::Dropped("unexpected text message".into()),
                    Ok(Some(Err(NotAFrame::TooBig))) => break ConnEnd::Dropped("message over the size limit".into()),
                    Ok(None) => break ConnEnd::Dropped("connection closed".into()),
                    Err(_) => break ConnEnd::Dropped("no traffic from relay".into()),
                };
                let (msg, att) = match conn.cipher.open::<HostMsg>(&frame) {
                    Ok(v) => v,
                    Err(FrameError::Tampering) => {
                        shared.lock().tampering_detected += 1;
                        tracing::warn!("tampering detected on the room connection; reconnecting");
                        break ConnEnd::Dropped(FrameError::Tampering.to_string());
                    }
                    Err(e) => break ConnEnd::Dropped(e.to_string()),
                };
                match msg {
                    HostMsg::Event { event } => {
                        shared.lock().push(event);
                        shared.notify();
                    }
                    HostMsg::Closed { summary } => break ConnEnd::Closed(summary),
                    HostMsg::Ack { req, seq } => {
                        if let Some(Pending::Ack(tx)) = pending.remove(&req) {
                            let _ = tx.send(Ok(seq.unwrap_or(0)));
                        }
                    }
                    HostMsg::Nack { req, code, message } => {
                        let e = GuestOpError::Refused { code, message };
                        match pending.remove(&req) {
                            Some(Pending::Ack(tx)) => { let _ = tx.send(Err(e)); }
                            Some(Pending::Fetch { reply, .. }) => { let _ = reply.send(Err(e)); }
                            None => {}
                        }
                    }
                    HostMsg::FileHeader { req, size, sha256 } => {
                        if let Some(Pending::Fetch { expect, max, asm, .. }) = pending.get_mut(&req) {
                            let mismatch = expect.as_ref().is_some_and(|f| f.size != size || f.sha256 != sha256);
                            let r = if mismatch { Err(FileError::Integrity) } else { Assembly::new(size, &sha256, *max) };
                            match r {
                                Ok(a) => *asm = Some(a),
                                Err(e) => {
                                    if let Some(Pending::Fetch { reply, .. }) = pending.remove(&req) {
                                        let _ = reply.send(Err(e.into()));
                                    }
                                }
                            }
                        }
                    }
                    HostMsg::FileData { req, offset } => {
                        if let Some(Pending::Fetch { asm: Some(a), .. }) = pending.get_mut(&req) {
                            if let Err(e) = a.push(offset, &att) {
                                if let Some(Pending::Fetch { reply, .. }) = pending.remove(&req) {
                                    let _ = reply.send(Err(e.into()));
                                }
                            }
                        }
                    }
                    HostMsg::FileDone { req } => {
                        if let Some(Pending::Fetch { asm, reply, .. }) = pending.remove(&req) {
                            let r = match asm {
                                Some(a) => a.finish().map_err(GuestOpError::from),
                                None => Err(FileError::Integrity.into()),
                            };
                            let _ = reply.send(r);
                        }
                    }
                    HostMsg::Welcome { .. } | HostMsg::Rejected { .. } => {
                        break ConnEnd::Dropped("unexpected handshake message".into());
                    }
                }
            }
        }
    };
    // In-flight requests cannot be matched on a new connection.
    for (_, p) in pending.drain() {
        match p {
            Pending::Ack(tx) => {
                let _ = tx.send(Err(GuestOpError::Disconnected));
            }
            Pending::Fetch { reply, .. } => {
                let _ = reply.send(Err(GuestOpError::Disconnected));
            }
        }
    }
    end
}

async fn send_upload(conn: &mut Conn, req: u64, name: String, data: &[u8]) -> Result<(), String> {
    let sha256 = crate::files::sha256_hex(data);
    let begin = GuestMsg::FileBegin { req, name, size: data.len() as u64, sha256 };
    send_frame(conn, &begin, &[]).await?;
    for (i, chunk) in data.chunks(FILE_CHUNK).enumerate() {
        let m = GuestMsg::FileChunk { req, offset: (i * FILE_CHUNK) as u64 };
        send_frame(conn, &m, chunk).await?;
    }
    send_frame(conn, &GuestMsg::FileEnd { req }, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_WIRE_FRAME;
    use crate::session::{AgentChannel, ChannelConfig};
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    /// A member that sends a message over the frame limit is closed with code 1009 (message too
    /// big), and the room goes on.
    #[tokio::test]
    async fn an_oversized_message_closes_with_1009() {
        let host = AgentChannel::new(ChannelConfig { display_name: "host".into(), setup_command: String::new() });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let opened = host.open("size limits", None, l, &format!("http://abc.localhost:{port}")).await.unwrap();
        let link = JoinLink::parse(&opened.join_link).unwrap();
        let first = GuestMsg::Join { name: "big".into() };
        let (mut conn, _) = connect(&link, HelloKind::Join, link.invite_id().0, &link.key().0, first).await.unwrap();
        let _ = conn.ws.send(WsMessage::binary(vec![0u8; MAX_WIRE_FRAME + 1])).await;
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match conn.ws.next().await {
                    Some(Ok(WsMessage::Binary(_))) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        assert!(matches!(end, Some(Ok(WsMessage::Close(Some(ref f)))) if f.code == CloseCode::Size), "{end:?}");
        // The room goes on: another invite still joins.
        let more = host.invite(Some(1)).await.unwrap();
        let guest = AgentChannel::new(ChannelConfig { display_name: "small".into(), setup_command: String::new() });
        guest.join(&more.join_links[0]).await.unwrap();
    }
}
