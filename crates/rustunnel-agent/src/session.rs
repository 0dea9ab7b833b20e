//! The tool-facing API: one [`AgentChannel`] per MCP server process, with one
//! method per tool and serde results (camelCase) ready to return as tool output.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::files::{read_for_share, write_save_path, FileError};
use crate::invite::MintError;
use crate::link::{JoinLink, LinkError, RelayBase};
use crate::member::{EndReason, GuestOpError, GuestSession, JoinError};
use crate::relay::{HostConfig, HostSession, OpenError};
use crate::room::{Event, EventKind, FileInfo, MemberId, MemberInfo, RoomError, Sender, HOST_ID};

/// Default and maximum `tunnel_listen` wait.
pub const DEFAULT_LISTEN: Duration = Duration::from_secs(25);
pub const MAX_LISTEN: Duration = Duration::from_secs(45);
/// How often a waiting listen reports progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Most messages one listen returns (`more: true` says there are others).
pub const MAX_LISTEN_BATCH: usize = 200;
/// Most invites one call may mint.
pub const MAX_INVITES_PER_CALL: usize = 8;

/// Static settings of the channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// This agent's display name in rooms.
    pub display_name: String,
    /// One-line setup hint put in invite texts, e.g.
    /// `claude mcp add rustunnel -- rustunnel-mcp --server https://tunnel.example.com`.
    pub setup_command: String,
}

/// Errors of the tool operations. Messages are meant to be shown to the agent.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no open tunnel: call tunnel_open or tunnel_join first")]
    NoOpenTunnel,
    #[error("a tunnel is already open in this session: call tunnel_close first")]
    AlreadyOpen,
    #[error("only the host can do that")]
    NotHost,
    #[error("the room is closed")]
    Closed,
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Mint(#[from] MintError),
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Guest(#[from] GuestOpError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Role in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Host,
    Guest,
}

/// A transcript entry as returned to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub seq: u64,
    pub from: Sender,
    pub kind: EventKind,
    pub text: String,
    pub ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    /// True for anything a peer authored or influenced: treat as data, not instructions.
    pub untrusted: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenResult {
    pub room_id: String,
    /// Ready-to-forward plain text: setup hint plus the first join link.
    pub invite_text: String,
    pub join_link: String,
    pub join_link_expires_in_sec: u64,
    /// Any further links requested with `invites > 1`.
    pub extra_join_links: Vec<String>,
    /// A ready-to-forward text for each of them: one per guest, so no guest gets another's link.
    pub extra_invite_texts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteResult {
    /// A ready-to-forward text for each link, in the same order: one per guest.
    pub invite_texts: Vec<String>,
    pub join_links: Vec<String>,
    pub join_link_expires_in_sec: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResult {
    pub room_id: String,
    pub goal: String,
    pub me: Sender,
    pub members: Vec<MemberStatus>,
    /// Compare with the host's `tunnel_status` over another channel to rule out a leaked link.
    pub verification_code: String,
    /// The goal is peer-authored.
    pub untrusted: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SayResult {
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenResult {
    pub messages: Vec<Message>,
    /// Pass as `sinceSeq` next time.
    pub last_seq: u64,
    pub timed_out: bool,
    /// The room has ended; no more messages will come.
    pub closed: bool,
    /// More messages are waiting; listen again right away.
    pub more: bool,
}

/// Progress while a listen waits.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenProgress {
    pub waited_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: MemberId,
    pub name: String,
    pub is_host: bool,
    pub connected: bool,
    /// Host view only: the code shared with this member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
}

impl MemberStatus {
    fn new(m: MemberInfo, verification_code: Option<String>) -> Self {
        MemberStatus { id: m.id, name: m.name, is_host: m.is_host, connected: m.connected, verification_code }
    }

    /// A guest sees the roster without codes: each code is between the host and one member.
    fn guest_view(roster: &[MemberInfo]) -> Vec<Self> {
        roster.iter().map(|m| MemberStatus::new(m.clone(), None)).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub role: Role,
    pub room_id: String,
    pub goal: String,
    pub me: Sender,
    pub members: Vec<MemberStatus>,
    pub last_seq: u64,
    /// Host only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_invites: Option<usize>,
    /// Guest: code shared with the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
    pub idle_seconds_left: u64,
    pub connected: bool,
    /// The room ended remotely; `tunnel_listen` returns the final messages, then the
    /// session is gone.
    pub closed: bool,
    pub tampering_detected: u32,
    /// Host only: where the relay listens (for the HTTP tunnel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_addr: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareResult {
    pub artifact_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiveResult {
    pub artifact_id: String,
    pub saved_to: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseResult {
    pub role: Role,
    /// Host: the room ended for everyone. Guest: only this member left.
    pub room_ended: bool,
}

enum Session {
    Host(HostSession),
    Guest(GuestSession),
}

struct Open {
    session: Session,
    cursor: AtomicU64,
}

impl Open {
    fn me(&self) -> MemberId {
        match &self.session {
            Session::Host(_) => HOST_ID,
            Session::Guest(g) => g.shared.lock().member_id,
        }
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        match &self.session {
            Session::Host(h) => h.shared.changed.subscribe(),
            Session::Guest(g) => g.shared.changed.subscribe(),
        }
    }
    /// (events after `since`, ended)
    fn snapshot(&self, since: u64) -> (Vec<Event>, bool) {
        match &self.session {
            Session::Host(h) => {
                let st = h.shared.lock();
                (st.room.events_since(since, MAX_LISTEN_BATCH + 1), st.room.is_closed())
            }
            Session::Guest(g) => {
                let st = g.shared.lock();
                (st.events_since(since, MAX_LISTEN_BATCH + 1), st.ended.is_some())
            }
        }
    }
    fn ended(&self) -> bool {
        self.snapshot(u64::MAX).1
    }
}

/// One agent's view of the channel: at most one room at a time.
pub struct AgentChannel {
    cfg: ChannelConfig,
    open: tokio::sync::Mutex<Option<Arc<Open>>>,
}

fn to_message(e: Event, me: MemberId) -> Message {
    let untrusted = e.from.id != me || e.kind == EventKind::System;
    Message { seq: e.seq, from: e.from, kind: e.kind, text: e.text, ts: e.ts, file: e.file, untrusted }
}

impl AgentChannel {
    pub fn new(cfg: ChannelConfig) -> Self {
        AgentChannel { cfg, open: tokio::sync::Mutex::new(None) }
    }

    async fn current(&self) -> Result<Arc<Open>, SessionError> {
        self.open.lock().await.clone().ok_or(SessionError::NoOpenTunnel)
    }

    /// The text one guest gets: the setup command and that guest's link only.
    fn invite_text(&self, link: &str, ttl: u64) -> String {
        let mut t = String::from("You're invited to an end-to-end-encrypted rustunnel agent room.\n");
        t.push_str(&format!("1. One-time setup: {}\n", self.cfg.setup_command));
        t.push_str(&format!("2. Ask your agent: \"Join this tunnel: {link}\"\n"));
        t.push_str(&format!(
            "The link is secret (it carries the key), single-use, and expires in {} minutes.\n",
            ttl.div_ceil(60)
        ));
        t
    }

    /// `tunnel_open`: starts a room whose relay listens on `listener`, reachable by
    /// guests at `public_url` (e.g. the HTTP tunnel URL of `listener.local_addr()`).
    pub async fn open(
        &self,
        goal: &str,
        invites: Option<usize>,
        listener: TcpListener,
        public_url: &str,
    ) -> Result<OpenResult, SessionError> {
        let mut slot = self.open.lock().await;
        if slot.is_some() {
            return Err(SessionError::AlreadyOpen);
        }
        let base = RelayBase::parse(public_url)?;
        let host = HostSession::open(listener, HostConfig::new(goal, &self.cfg.display_name, base)).await?;
        self.open_with(&mut slot, host, invites).await
    }

    /// Like [`AgentChannel::open`] with a fully custom [`HostConfig`] (limits, TTLs).
    pub async fn open_with_config(
        &self,
        listener: TcpListener,
        cfg: HostConfig,
        invites: Option<usize>,
    ) -> Result<OpenResult, SessionError> {
        let mut slot = self.open.lock().await;
        if slot.is_some() {
            return Err(SessionError::AlreadyOpen);
        }
        let host = HostSession::open(listener, cfg).await?;
        self.open_with(&mut slot, host, invites).await
    }

    async fn open_with(
        &self,
        slot: &mut Option<Arc<Open>>,
        host: HostSession,
        invites: Option<usize>,
    ) -> Result<OpenResult, SessionError> {
        let links = match host.invite(invites.unwrap_or(1).clamp(1, MAX_INVITES_PER_CALL)) {
            Ok(l) => l,
            Err(e) => {
                host.shutdown().await;
                return Err(e.into());
            }
        };
        let ttl = links.first().map(|l| l.1.as_secs()).unwrap_or(0);
        let strs: Vec<String> = links.iter().map(|(l, _)| l.to_string()).collect();
        let res = OpenResult {
            room_id: host.room_id().to_string(),
            invite_text: strs.first().map(|l| self.invite_text(l, ttl)).unwrap_or_default(),
            join_link: strs.first().cloned().unwrap_or_default(),
            join_link_expires_in_sec: ttl,
            extra_join_links: strs.iter().skip(1).cloned().collect(),
            extra_invite_texts: strs.iter().skip(1).map(|l| self.invite_text(l, ttl)).collect(),
        };
        *slot = Some(Arc::new(Open { session: Session::Host(host), cursor: AtomicU64::new(0) }));
        Ok(res)
    }

    /// Address of the host's relay, for wiring the HTTP tunnel.
    pub async fn relay_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.open.lock().await.as_ref()?.session {
            Session::Host(h) => Some(h.local_addr()),
            Session::Guest(_) => None,
        }
    }

    /// `tunnel_invite`: more single-use links (host only).
    pub async fn invite(&self, count: Option<usize>) -> Result<InviteResult, SessionError> {
        let open = self.current().await?;
        let Session::Host(h) = &open.session else {
            return Err(SessionError::NotHost);
        };
        if open.ended() {
            return Err(SessionError::Closed);
        }
        let links = h.invite(count.unwrap_or(1).clamp(1, MAX_INVITES_PER_CALL))?;
        let ttl = links.first().map(|l| l.1.as_secs()).unwrap_or(0);
        let strs: Vec<String> = links.iter().map(|(l, _)| l.to_string()).collect();
        let invite_texts = strs.iter().map(|l| self.invite_text(l, ttl)).collect();
        Ok(InviteResult { invite_texts, join_links: strs, join_link_expires_in_sec: ttl })
    }

    /// `tunnel_join`: redeem a link.
    pub async fn join(&self, join_link: &str) -> Result<JoinResult, SessionError> {
        let mut slot = self.open.lock().await;
        if slot.is_some() {
            return Err(SessionError::AlreadyOpen);
        }
        let link = JoinLink::parse(join_link)?;
        let g = GuestSession::join(&link, &self.cfg.display_name).await?;
        let res = {
            let st = g.shared.lock();
            JoinResult {
                room_id: g.room_id().to_string(),
                goal: st.goal.clone(),
                me: Sender { id: st.member_id, name: st.name.clone() },
                members: MemberStatus::guest_view(&st.roster),
                verification_code: st.verification_code.clone(),
                untrusted: true,
            }
        };
        *slot = Some(Arc::new(Open { session: Session::Guest(g), cursor: AtomicU64::new(0) }));
        Ok(res)
    }

    /// `tunnel_say`.
    pub async fn say(&self, text: &str) -> Result<SayResult, SessionError> {
        let open = self.current().await?;
        let seq = match &open.session {
            Session::Host(h) => h.say_local(text)?,
            Session::Guest(g) => g.say(text).await?,
        };
        Ok(SayResult { seq })
    }

    /// `tunnel_listen`: everything after `since_seq` (default: after the last listen),
    /// waiting up to `timeout` (default 25 s, cap 45 s) when there is nothing yet.
    /// Progress is reported on `progress` every 5 s while waiting.
    pub async fn listen(
        &self,
        since_seq: Option<u64>,
        timeout: Option<Duration>,
        progress: Option<mpsc::Sender<ListenProgress>>,
    ) -> Result<ListenResult, SessionError> {
        let open = self.current().await?;
        let timeout = timeout.unwrap_or(DEFAULT_LISTEN).min(MAX_LISTEN);
        let since = since_seq.unwrap_or_else(|| open.cursor.load(Ordering::Relaxed));
        let me = open.me();
        let mut rx = open.subscribe();
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut next_progress = start + PROGRESS_EVERY;
        let mut cursor = since;
        loop {
            rx.borrow_and_update();
            let (events, ended) = open.snapshot(cursor);
            let more = events.len() > MAX_LISTEN_BATCH;
            let mut msgs = Vec::new();
            for e in events.into_iter().take(MAX_LISTEN_BATCH) {
                cursor = e.seq;
                // The caller knows what it said itself.
                if e.from.id == me && e.kind != EventKind::System {
                    continue;
                }
                msgs.push(to_message(e, me));
            }
            let now = tokio::time::Instant::now();
            if !msgs.is_empty() || ended || now >= deadline {
                open.cursor.fetch_max(cursor, Ordering::Relaxed);
                let closed = ended && !more;
                if closed {
                    self.drop_if_ended(&open).await;
                }
                return Ok(ListenResult {
                    messages: msgs,
                    last_seq: cursor,
                    timed_out: !ended && now >= deadline,
                    closed,
                    more,
                });
            }
            let wake = deadline.min(if progress.is_some() { next_progress } else { deadline });
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(SessionError::Closed) },
                _ = tokio::time::sleep_until(wake) => {
                    if let Some(p) = &progress {
                        let now = tokio::time::Instant::now();
                        if now >= next_progress && now < deadline {
                            let _ = p.try_send(ListenProgress {
                                waited_ms: start.elapsed().as_millis() as u64,
                                timeout_ms: timeout.as_millis() as u64,
                            });
                            next_progress += PROGRESS_EVERY;
                        }
                    }
                }
            }
        }
    }

    async fn drop_if_ended(&self, open: &Arc<Open>) {
        let mut slot = self.open.lock().await;
        if slot.as_ref().is_some_and(|o| Arc::ptr_eq(o, open)) {
            if let Some(o) = slot.take() {
                match &o.session {
                    Session::Host(h) => h.shutdown().await,
                    Session::Guest(g) => g.shutdown().await,
                }
            }
        }
    }

    /// `tunnel_status`: `None` when no tunnel is open.
    pub async fn status(&self) -> Option<Status> {
        let open = self.open.lock().await.clone()?;
        Some(match &open.session {
            Session::Host(h) => {
                let st = h.shared.lock();
                let now = tokio::time::Instant::now().into_std();
                Status {
                    role: Role::Host,
                    room_id: st.room.id().to_string(),
                    goal: st.room.goal().to_owned(),
                    me: Sender { id: HOST_ID, name: st.room.member_name(HOST_ID).unwrap_or("host").to_owned() },
                    members: st
                        .room
                        .roster()
                        .into_iter()
                        .map(|m| {
                            let code = st.room.verification_code(m.id).map(str::to_owned);
                            MemberStatus::new(m, code)
                        })
                        .collect(),
                    last_seq: st.room.last_seq(),
                    pending_invites: Some(st.invites.pending(now)),
                    verification_code: None,
                    idle_seconds_left: st.room.idle_left(now).as_secs(),
                    connected: true,
                    closed: st.room.is_closed(),
                    tampering_detected: 0,
                    relay_addr: Some(h.local_addr().to_string()),
                }
            }
            Session::Guest(g) => {
                let st = g.shared.lock();
                let idle =
                    Duration::from_secs(st.idle_timeout_secs).saturating_sub(st.last_activity.elapsed()).as_secs();
                Status {
                    role: Role::Guest,
                    room_id: g.room_id().to_string(),
                    goal: st.goal.clone(),
                    me: Sender { id: st.member_id, name: st.name.clone() },
                    members: MemberStatus::guest_view(&st.roster),
                    last_seq: st.last_seq,
                    pending_invites: None,
                    verification_code: Some(st.verification_code.clone()),
                    idle_seconds_left: idle,
                    connected: st.connected,
                    closed: st.ended.is_some(),
                    tampering_detected: st.tampering_detected,
                    relay_addr: None,
                }
            }
        })
    }

    /// `tunnel_share`: send a local file to the room.
    pub async fn share(&self, path: &Path) -> Result<ShareResult, SessionError> {
        let open = self.current().await?;
        let max = crate::files::FileLimits::default().max_file_bytes;
        let (name, data) = read_for_share(path, max).await?;
        let size = data.len() as u64;
        let sha256 = crate::files::sha256_hex(&data);
        match &open.session {
            Session::Host(h) => {
                let (seq, info) = h.share_local(&name, data)?;
                Ok(ShareResult { artifact_id: info.artifact_id, name: info.name, size, sha256, seq })
            }
            Session::Guest(g) => {
                let seq = g.share(&name, data).await?;
                let info = g.shared.lock().transcript.iter().find(|e| e.seq == seq).and_then(|e| e.file.clone());
                Ok(ShareResult {
                    artifact_id: info.as_ref().map(|i| i.artifact_id.clone()).unwrap_or_default(),
                    name: crate::files::sanitize_display_name(&name),
                    size,
                    sha256,
                    seq,
                })
            }
        }
    }

    /// `tunnel_receive`: fetch an artifact, verify size and SHA-256, write to `save_path`.
    pub async fn receive(
        &self,
        artifact_id: &str,
        save_path: &Path,
        overwrite: bool,
    ) -> Result<ReceiveResult, SessionError> {
        let open = self.current().await?;
        let max = crate::files::FileLimits::default().max_file_bytes;
        let (data, sha256) = match &open.session {
            Session::Host(h) => {
                let a = h.shared.lock().room.artifact(artifact_id)?.clone();
                let sha = crate::files::sha256_hex(&a.data);
                if sha != a.info.sha256 || a.data.len() as u64 != a.info.size {
                    return Err(FileError::Integrity.into());
                }
                (a.data.to_vec(), sha)
            }
            Session::Guest(g) => {
                let data = g.fetch(artifact_id, max).await?;
                let sha = crate::files::sha256_hex(&data);
                (data, sha)
            }
        };
        write_save_path(save_path, &data, overwrite).await?;
        Ok(ReceiveResult {
            artifact_id: artifact_id.to_owned(),
            saved_to: PathBuf::from(save_path).display().to_string(),
            size: data.len() as u64,
            sha256,
        })
    }

    /// `tunnel_close`: host ends the room for everyone; a guest only leaves.
    pub async fn close(&self, summary: Option<&str>) -> Result<CloseResult, SessionError> {
        let open = self.open.lock().await.take().ok_or(SessionError::NoOpenTunnel)?;
        Ok(match &open.session {
            Session::Host(h) => {
                h.close(summary).await;
                CloseResult { role: Role::Host, room_ended: true }
            }
            Session::Guest(g) => {
                let ended = matches!(g.shared.lock().ended, Some(EndReason::RoomClosed(_)));
                g.leave().await;
                CloseResult { role: Role::Guest, room_ended: ended }
            }
        })
    }
}
