//! Room state machine (sans-IO): members, global sequence numbers, in-memory
//! transcript, idle timeout, size and rate caps, artifacts and close.
//!
//! Driven by `(now, input) -> result`; the host's driver wraps one `Room` in a
//! mutex. The host is member [`HOST_ID`] and assigns every `seq`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::files::FileInfo;
use crate::files::{sanitize_display_name, Artifact, FileLimits};
use crate::link::RoomId;

/// Member id; unique within a room, never reused.
pub type MemberId = u32;
/// The host is always member 0.
pub const HOST_ID: MemberId = 0;

/// A point in time for the state machine: monotonic for timers, wall clock for `ts`.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

impl Now {
    /// Current time from tokio's clock (so paused-time tests apply) and the system clock.
    pub fn current() -> Self {
        Now {
            at: tokio::time::Instant::now().into_std(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// Room limits. Defaults follow the product: 16 members, 64 KiB messages, 30 min idle.
#[derive(Debug, Clone)]
pub struct RoomLimits {
    pub max_members: usize,
    pub max_text_bytes: usize,
    pub idle_timeout: Duration,
    /// Token bucket: burst size and refill per second, for chat and file events.
    pub rate_burst: f64,
    pub rate_per_sec: f64,
    /// Transcript is trimmed (oldest first) above this many bytes of text.
    pub max_transcript_bytes: usize,
    pub files: FileLimits,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            max_members: 16,
            max_text_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(30 * 60),
            rate_burst: 20.0,
            rate_per_sec: 2.0,
            max_transcript_bytes: 8 * 1024 * 1024,
            files: FileLimits::default(),
        }
    }
}

/// Who sent an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sender {
    pub id: MemberId,
    pub name: String,
}

/// Kind of transcript entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    Chat,
    System,
    File,
}

/// Roster entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub id: MemberId,
    pub name: String,
    pub is_host: bool,
    pub connected: bool,
}

/// One transcript entry, as carried (encrypted) on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seq: u64,
    pub from: Sender,
    pub kind: EventKind,
    pub text: String,
    /// Unix milliseconds, host clock.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    /// Present on system events that change membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roster: Option<Vec<MemberInfo>>,
}

/// Room operation failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("the room is closed")]
    Closed,
    #[error("the room is full ({0} members)")]
    Full(usize),
    #[error("message is {len} bytes; the limit is {max}. Split it or share it as a file")]
    TooLarge { len: usize, max: usize },
    #[error("message is empty")]
    Empty,
    #[error("sending too fast; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("unknown member")]
    UnknownMember,
    #[error("file is {size} bytes; the limit is {max} per file")]
    FileTooLarge { size: u64, max: u64 },
    #[error("file quota exceeded: {0}")]
    Quota(&'static str),
    #[error("no artifact with that id in this room")]
    NoSuchArtifact,
}

#[derive(Debug)]
struct Member {
    name: String,
    is_host: bool,
    connected: bool,
    tokens: f64,
    refilled: Instant,
    file_bytes: u64,
    resume: Option<([u8; 16], [u8; 32])>,
    verification_code: Option<String>,
}

/// The room.
#[derive(Debug)]
pub struct Room {
    id: RoomId,
    goal: String,
    limits: RoomLimits,
    members: BTreeMap<MemberId, Member>,
    next_member: MemberId,
    transcript: VecDeque<Event>,
    transcript_bytes: usize,
    last_seq: u64,
    last_activity: Instant,
    closed: Option<Option<String>>,
    artifacts: HashMap<String, Artifact>,
    room_file_bytes: u64,
}

/// Cleans a display name: no control characters, bounded, never empty.
pub fn sanitize_member_name(name: &str, fallback: &str) -> String {
    let s: String = name.chars().filter(|c| !c.is_control()).take(64).collect::<String>().trim().to_owned();
    if s.is_empty() {
        fallback.to_owned()
    } else {
        s
    }
}

impl Room {
    pub fn new(id: RoomId, goal: &str, host_name: &str, now: Now, limits: RoomLimits) -> Self {
        let mut r = Room {
            id,
            goal: goal.chars().filter(|c| *c == '\n' || !c.is_control()).take(4096).collect(),
            limits,
            members: BTreeMap::new(),
            next_member: HOST_ID + 1,
            transcript: VecDeque::new(),
            transcript_bytes: 0,
            last_seq: 0,
            last_activity: now.at,
            closed: None,
            artifacts: HashMap::new(),
            room_file_bytes: 0,
        };
        let name = sanitize_member_name(host_name, "host");
        r.members.insert(HOST_ID, r.new_member(name.clone(), true, now));
        let text = format!("{name} opened the room. Goal: {}", r.goal);
        r.system(text, now, true);
        r
    }

    fn new_member(&self, name: String, is_host: bool, now: Now) -> Member {
        Member {
            name,
            is_host,
            connected: true,
            tokens: self.limits.rate_burst,
            refilled: now.at,
            file_bytes: 0,
            resume: None,
            verification_code: None,
        }
    }

    pub fn id(&self) -> &RoomId {
        &self.id
    }
    pub fn goal(&self) -> &str {
        &self.goal
    }
    pub fn limits(&self) -> &RoomLimits {
        &self.limits
    }
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }
    pub fn close_summary(&self) -> Option<&str> {
        self.closed.as_ref().and_then(|s| s.as_deref())
    }
    pub fn member_name(&self, id: MemberId) -> Option<&str> {
        self.members.get(&id).map(|m| m.name.as_str())
    }
    pub fn is_member(&self, id: MemberId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn roster(&self) -> Vec<MemberInfo> {
        self.members
            .iter()
            .map(|(id, m)| MemberInfo { id: *id, name: m.name.clone(), is_host: m.is_host, connected: m.connected })
            .collect()
    }

    /// Verification code the host shares with a given member (None for the host itself).
    pub fn verification_code(&self, id: MemberId) -> Option<&str> {
        self.members.get(&id).and_then(|m| m.verification_code.as_deref())
    }

    fn push(&mut self, mut ev: Event) -> u64 {
        self.last_seq += 1;
        ev.seq = self.last_seq;
        self.transcript_bytes += ev.text.len();
        self.transcript.push_back(ev);
        // Keep memory bounded; resumers older than this get what is left.
        while self.transcript_bytes > self.limits.max_transcript_bytes && self.transcript.len() > 1 {
            if let Some(old) = self.transcript.pop_front() {
                self.transcript_bytes -= old.text.len();
            }
        }
        self.last_seq
    }

    fn system(&mut self, text: String, now: Now, with_roster: bool) -> u64 {
        let roster = with_roster.then(|| self.roster());
        let host_name = self.member_name(HOST_ID).unwrap_or("host").to_owned();
        self.push(Event {
            seq: 0,
            from: Sender { id: HOST_ID, name: host_name },
            kind: EventKind::System,
            text,
            ts: now.unix_ms,
            file: None,
            roster,
        })
    }

    fn open_check(&self) -> Result<(), RoomError> {
        if self.closed.is_some() {
            Err(RoomError::Closed)
        } else {
            Ok(())
        }
    }

    /// Adds a member (after the invite was redeemed). Names are made unique.
    pub fn add_member(
        &mut self,
        name: &str,
        verification_code: Option<String>,
        now: Now,
    ) -> Result<MemberId, RoomError> {
        self.open_check()?;
        if self.members.len() >= self.limits.max_members {
            return Err(RoomError::Full(self.limits.max_members));
        }
        let base = sanitize_member_name(name, "guest");
        let mut name = base.clone();
        let mut n = 2;
        while self.members.values().any(|m| m.name == name) {
            name = format!("{base} ({n})");
            n += 1;
        }
        let id = self.next_member;
        self.next_member += 1;
        let mut m = self.new_member(name.clone(), false, now);
        m.verification_code = verification_code;
        self.members.insert(id, m);
        self.last_activity = now.at;
        self.system(format!("{name} joined"), now, true);
        Ok(id)
    }

    /// Connection state of a member changed (drop or resume).
    pub fn set_connected(&mut self, id: MemberId, connected: bool, now: Now) {
        if self.closed.is_some() {
            return;
        }
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.connected == connected {
            return;
        }
        m.connected = connected;
        let text = if connected {
            format!("{} reconnected", m.name)
        } else {
            format!("{} disconnected (may reconnect)", m.name)
        };
        self.system(text, now, true);
    }

    /// Records the current resumption ticket for a member (rotated on each connect).
    pub fn set_resume(&mut self, id: MemberId, resume_id: [u8; 16], secret: [u8; 32], code: String) {
        if let Some(m) = self.members.get_mut(&id) {
            m.resume = Some((resume_id, secret));
            m.verification_code = Some(code);
        }
    }

    /// Finds the member holding `resume_id` and its secret.
    pub fn resume_lookup(&self, resume_id: &[u8; 16]) -> Option<(MemberId, [u8; 32])> {
        if self.closed.is_some() {
            return None;
        }
        self.members.iter().find_map(|(id, m)| match &m.resume {
            Some((rid, secret)) if rid == resume_id => Some((*id, *secret)),
            _ => None,
        })
    }

    fn take_token(&mut self, id: MemberId, now: Now) -> Result<(), RoomError> {
        let (burst, rate) = (self.limits.rate_burst, self.limits.rate_per_sec);
        let m = self.members.get_mut(&id).ok_or(RoomError::UnknownMember)?;
        let dt = now.at.saturating_duration_since(m.refilled).as_secs_f64();
        m.tokens = (m.tokens + dt * rate).min(burst);
        m.refilled = now.at;
        if m.tokens >= 1.0 {
            m.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - m.tokens) / rate * 1000.0).ceil() as u64;
            Err(RoomError::RateLimited { retry_after_ms: wait })
        }
    }

    /// A chat message. Returns its seq.
    pub fn say(&mut self, id: MemberId, text: &str, now: Now) -> Result<u64, RoomError> {
        self.open_check()?;
        if text.len() > self.limits.max_text_bytes {
            return Err(RoomError::TooLarge { len: text.len(), max: self.limits.max_text_bytes });
        }
        if text.trim().is_empty() {
            return Err(RoomError::Empty);
        }
        self.take_token(id, now)?;
        let name = self.member_name(id).ok_or(RoomError::UnknownMember)?.to_owned();
        self.last_activity = now.at;
        Ok(self.push(Event {
            seq: 0,
            from: Sender { id, name },
            kind: EventKind::Chat,
            text: text.to_owned(),
            ts: now.unix_ms,
            file: None,
            roster: None,
        }))
    }

    /// A member leaves for good; the room stays open.
    pub fn leave(&mut self, id: MemberId, now: Now) {
        if id == HOST_ID || self.closed.is_some() {
            return;
        }
        if let Some(m) = self.members.remove(&id) {
            self.system(format!("{} left", m.name), now, true);
        }
    }

    /// Host ends the room; the final system event is the last seq anyone sees.
    pub fn close(&mut self, summary: Option<&str>, now: Now) -> u64 {
        if self.closed.is_some() {
            return self.last_seq;
        }
        let summary: Option<String> = summary.map(|s| s.chars().take(self.limits.max_text_bytes / 4).collect());
        let host = self.member_name(HOST_ID).unwrap_or("host").to_owned();
        let text = match &summary {
            Some(s) => format!("{host} closed the room. Summary: {s}"),
            None => format!("{host} closed the room."),
        };
        let seq = self.system(text, now, false);
        self.closed = Some(summary);
        self.artifacts.clear();
        for m in self.members.values_mut() {
            m.resume = None;
        }
        seq
    }

    /// Time left before the idle timeout.
    pub fn idle_left(&self, now: Instant) -> Duration {
        (self.last_activity + self.limits.idle_timeout).saturating_duration_since(now)
    }

    /// When the idle timer fires, for the driver's sleep.
    pub fn idle_deadline(&self) -> Instant {
        self.last_activity + self.limits.idle_timeout
    }

    /// Advances timers; closes the room when idle. Returns true if it closed now.
    pub fn tick(&mut self, now: Now) -> bool {
        if self.closed.is_none() && self.idle_left(now.at).is_zero() {
            let mins = self.limits.idle_timeout.as_secs() / 60;
            let seq_text = format!("room closed after {mins} minutes without messages");
            self.system(seq_text, now, false);
            self.closed = Some(None);
            self.artifacts.clear();
            return true;
        }
        false
    }

    /// Transcript entries after `seq`, at most `max`.
    pub fn events_since(&self, seq: u64, max: usize) -> Vec<Event> {
        let start = self.transcript.partition_point(|e| e.seq <= seq);
        self.transcript.iter().skip(start).take(max).cloned().collect()
    }

    /// Checks caps for a declared upload size before any buffer is allocated.
    pub fn check_upload(&self, id: MemberId, size: u64) -> Result<(), RoomError> {
        self.open_check()?;
        let f = &self.limits.files;
        if size > f.max_file_bytes {
            return Err(RoomError::FileTooLarge { size, max: f.max_file_bytes });
        }
        let m = self.members.get(&id).ok_or(RoomError::UnknownMember)?;
        if m.file_bytes + size > f.max_member_bytes {
            return Err(RoomError::Quota("per-member file quota"));
        }
        if self.room_file_bytes + size > f.max_room_bytes {
            return Err(RoomError::Quota("per-room file quota"));
        }
        Ok(())
    }

    /// Stores a verified artifact and announces it. Returns (seq, info).
    pub fn add_artifact(
        &mut self,
        id: MemberId,
        raw_name: &str,
        data: Arc<[u8]>,
        sha256: String,
        now: Now,
    ) -> Result<(u64, FileInfo), RoomError> {
        let size = data.len() as u64;
        self.check_upload(id, size)?;
        self.take_token(id, now)?;
        let name = self.member_name(id).ok_or(RoomError::UnknownMember)?.to_owned();
        let info = FileInfo {
            artifact_id: crate::files::new_artifact_id(),
            name: sanitize_display_name(raw_name),
            size,
            sha256,
        };
        if let Some(m) = self.members.get_mut(&id) {
            m.file_bytes += size;
        }
        self.room_file_bytes += size;
        self.artifacts.insert(info.artifact_id.clone(), Artifact { info: info.clone(), data });
        self.last_activity = now.at;
        let seq = self.push(Event {
            seq: 0,
            from: Sender { id, name: name.clone() },
            kind: EventKind::File,
            text: format!("{name} shared file '{}' ({size} bytes)", info.name),
            ts: now.unix_ms,
            file: Some(info.clone()),
            roster: None,
        });
        Ok((seq, info))
    }

    pub fn artifact(&self, artifact_id: &str) -> Result<&Artifact, RoomError> {
        self.artifacts.get(artifact_id).ok_or(RoomError::NoSuchArtifact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now0() -> Now {
        Now { at: Instant::now(), unix_ms: 1_000 }
    }
    fn later(n: Now, d: Duration) -> Now {
        Now { at: n.at + d, unix_ms: n.unix_ms + d.as_millis() as u64 }
    }
    fn room(n: Now) -> Room {
        Room::new(RoomId::random(), "fix checkout", "alice", n, RoomLimits::default())
    }

    #[test]
    fn seqs_are_global_and_transcript_replays() {
        let n = now0();
        let mut r = room(n);
        let b = r.add_member("bob", None, n).unwrap();
        let s1 = r.say(HOST_ID, "hi", n).unwrap();
        let s2 = r.say(b, "hello", n).unwrap();
        assert_eq!(s2, s1 + 1);
        let evs = r.events_since(s1 - 1, 100);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].from.name, "bob");
        assert_eq!(evs[1].kind, EventKind::Chat);
        assert!(r.events_since(r.last_seq(), 10).is_empty());
        // First event announces the goal; join carries a roster.
        let all = r.events_since(0, 100);
        assert!(all[0].text.contains("fix checkout"));
        assert_eq!(all[1].roster.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn members_capped_and_names_unique_and_clean() {
        let n = now0();
        let mut r = room(n);
        for _ in 1..16 {
            r.add_member("bob\u{0}\n", None, n).unwrap();
        }
        assert_eq!(r.add_member("x", None, n), Err(RoomError::Full(16)));
        let names: Vec<_> = r.roster().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"bob".to_string()) && names.contains(&"bob (2)".to_string()));
        assert!(names.iter().all(|n| !n.contains('\0')));
    }

    #[test]
    fn size_and_rate_caps() {
        let n = now0();
        let mut r = room(n);
        let big = "x".repeat(64 * 1024 + 1);
        assert!(matches!(r.say(HOST_ID, &big, n), Err(RoomError::TooLarge { .. })));
        assert_eq!(r.say(HOST_ID, "  ", n), Err(RoomError::Empty));
        for _ in 0..20 {
            r.say(HOST_ID, "m", n).unwrap();
        }
        assert!(matches!(r.say(HOST_ID, "m", n), Err(RoomError::RateLimited { .. })));
        assert!(r.say(HOST_ID, "m", later(n, Duration::from_secs(1))).is_ok());
    }

    #[test]
    fn idle_timeout_closes_with_final_message() {
        let n = now0();
        let mut r = room(n);
        assert!(!r.tick(later(n, Duration::from_secs(29 * 60))));
        r.say(HOST_ID, "still here", later(n, Duration::from_secs(29 * 60))).unwrap();
        assert!(!r.tick(later(n, Duration::from_secs(58 * 60))));
        assert!(r.tick(later(n, Duration::from_secs(59 * 60))));
        assert!(r.is_closed());
        let last = r.events_since(r.last_seq() - 1, 1);
        assert_eq!(last[0].kind, EventKind::System);
        assert!(last[0].text.contains("30 minutes"));
        assert_eq!(r.say(HOST_ID, "x", n), Err(RoomError::Closed));
    }

    #[test]
    fn host_close_vs_member_leave() {
        let n = now0();
        let mut r = room(n);
        let b = r.add_member("bob", None, n).unwrap();
        let c = r.add_member("carol", None, n).unwrap();
        r.leave(b, n);
        assert!(!r.is_closed());
        assert!(!r.is_member(b));
        assert!(r.say(c, "still open", n).is_ok());
        let seq = r.close(Some("done"), n);
        assert!(r.is_closed());
        let ev = &r.events_since(seq - 1, 1)[0];
        assert!(ev.text.contains("Summary: done"));
        assert_eq!(r.add_member("dave", None, n), Err(RoomError::Closed));
        assert_eq!(r.close(None, n), seq);
    }

    #[test]
    fn resume_lookup_and_rotation() {
        let n = now0();
        let mut r = room(n);
        let b = r.add_member("bob", None, n).unwrap();
        r.set_resume(b, [1; 16], [2; 32], "123-456".into());
        assert_eq!(r.resume_lookup(&[1; 16]), Some((b, [2; 32])));
        r.set_resume(b, [3; 16], [4; 32], "123-456".into());
        assert_eq!(r.resume_lookup(&[1; 16]), None);
        r.set_connected(b, false, n);
        assert!(!r.roster()[1].connected);
        r.leave(b, n);
        assert_eq!(r.resume_lookup(&[3; 16]), None);
    }

    #[test]
    fn file_caps_before_allocation() {
        let n = now0();
        let mut r = room(n);
        assert!(matches!(r.check_upload(HOST_ID, u64::MAX), Err(RoomError::FileTooLarge { .. })));
        let data: Arc<[u8]> = Arc::from(vec![1u8; 10].into_boxed_slice());
        let (_, info) =
            r.add_artifact(HOST_ID, "../../.bashrc", data, crate::files::sha256_hex(&[1u8; 10]), n).unwrap();
        assert_eq!(info.name, ".bashrc");
        assert_eq!(r.artifact(&info.artifact_id).unwrap().data.len(), 10);
        let lim = FileLimits { max_file_bytes: 10, max_member_bytes: 15, max_room_bytes: 100 };
        let mut r = Room::new(RoomId::random(), "g", "a", n, RoomLimits { files: lim, ..Default::default() });
        r.add_artifact(HOST_ID, "a", Arc::from(vec![0u8; 10].into_boxed_slice()), String::new(), n).unwrap();
        assert!(matches!(r.check_upload(HOST_ID, 10), Err(RoomError::Quota(_))));
    }
}
