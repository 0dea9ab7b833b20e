//! The sans-IO core of P2P rendezvous: publications, the link state machine, bounds and
//! expiry, and the reflector's rate limits. The drivers around it are in [`crate::p2p`].
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustunnel_proto::{ClientMsg, ErrorCode, Protocol, ServerMsg};

use crate::tunnel::TunnelStats;

/// Links that have not completed their secret proof, per owner.
pub const MAX_PENDING_LINKS_PER_OWNER: usize = 32;
/// Links (pending or accepted) per owner.
pub const MAX_LINKS_PER_OWNER: usize = 256;
/// Published services per owner.
pub const MAX_SERVICES_PER_OWNER: usize = 64;
/// A link must finish its proof within this time.
pub const PENDING_LINK_TTL: Duration = Duration::from_secs(15);
/// Relayed streams of one link at once.
pub const MAX_STREAMS_PER_LINK: usize = 256;
/// Longest PAKE message, fingerprint, confirmation (hex) or candidate accepted.
const MAX_FIELD: usize = 256;
const MAX_CANDIDATES: usize = 8;
/// Reflector answers per second (whole server) and per source address.
const REFLECT_PER_SEC: u32 = 2000;
const REFLECT_PER_IP_PER_SEC: u32 = 20;
const REFLECT_TRACKED_IPS: usize = 4096;

/// Where a link is in its secret proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting for the publisher's PAKE answer.
    AwaitAnswer,
    /// Waiting for the visitor's confirmation.
    AwaitConfirm,
    /// Waiting for the publisher's verdict.
    AwaitResult,
    /// Proof succeeded: relayed streams allowed.
    Accepted,
}

#[derive(Debug, Clone)]
struct Service {
    session_id: String,
    protocol: Protocol,
}

/// A link between a visitor session and a publisher session.
#[derive(Debug, Clone)]
pub struct Link {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub protocol: Protocol,
    pub visitor: String,
    pub publisher: String,
    pub state: LinkState,
    pub created: Instant,
    /// `direct` or `relayed`, as the visitor reported it.
    pub mode: Option<String>,
    /// Bytes relayed through the server for this link (never the direct path).
    pub stats: Arc<TunnelStats>,
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// A message for one session.
pub type Out = (String, ServerMsg);

/// A refused P2P request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct P2pError {
    pub code: ErrorCode,
    pub message: String,
    /// When the same request can succeed.
    pub retry_after: Option<Duration>,
}

impl P2pError {
    /// The message sent back to the client that asked.
    pub fn into_msg(self, link_id: String, name: String) -> ServerMsg {
        ServerMsg::P2pError {
            link_id,
            name,
            code: self.code,
            message: self.message,
            retry_after_ms: self.retry_after.map(|d| d.as_millis() as u64),
        }
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> P2pError {
    P2pError { code, message: message.into(), retry_after: None }
}

/// The sans-IO rendezvous table.
#[derive(Default)]
pub struct Rendezvous {
    services: HashMap<(String, String), Service>,
    links: HashMap<String, Link>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn field_ok(s: &str) -> bool {
    s.len() <= MAX_FIELD
}

impl Rendezvous {
    pub fn publish(&mut self, owner: &str, session: &str, name: &str, protocol: Protocol) -> Result<(), P2pError> {
        if !valid_name(name) {
            return Err(err(ErrorCode::BadRequest, "P2P names are 1-64 characters: letters, digits, '-', '_', '.'"));
        }
        if protocol == Protocol::Http {
            return Err(err(ErrorCode::BadRequest, "P2P services are tcp or udp"));
        }
        let key = (owner.to_string(), name.to_string());
        if let Some(s) = self.services.get(&key) {
            if s.session_id != session {
                return Err(err(ErrorCode::P2pNameTaken, format!("a P2P service named '{name}' is already published")));
            }
        }
        if self.services.keys().filter(|(o, _)| o == owner).count() >= MAX_SERVICES_PER_OWNER {
            return Err(err(ErrorCode::TooManyTunnels, "too many P2P services for this owner"));
        }
        self.services.insert(key, Service { session_id: session.to_string(), protocol });
        Ok(())
    }

    /// Drops links that did not finish their proof in time; both sides are told.
    pub fn expire(&mut self, now: Instant) -> Vec<Out> {
        let stale: Vec<String> = self
            .links
            .values()
            .filter(|l| l.state != LinkState::Accepted && now.duration_since(l.created) > PENDING_LINK_TTL)
            .map(|l| l.id.clone())
            .collect();
        let mut out = Vec::new();
        for id in stale {
            if let Some(l) = self.links.remove(&id) {
                out.extend(closed_both(&l, "secret proof timed out"));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        &mut self,
        now: Instant,
        owner: &str,
        visitor: &str,
        link_id: &str,
        name: &str,
        protocol: Protocol,
        pake: String,
        fingerprint: String,
        candidates: Vec<String>,
    ) -> Result<Vec<Out>, P2pError> {
        let mut out = self.expire(now);
        if link_id.len() < 16 || link_id.len() > 64 || !link_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(err(ErrorCode::BadRequest, "link id must be 16-64 letters, digits or '-'"));
        }
        if !field_ok(&pake) || !field_ok(&fingerprint) || candidates.len() > MAX_CANDIDATES {
            return Err(err(ErrorCode::BadRequest, "P2P offer too large"));
        }
        if candidates.iter().any(|c| c.parse::<SocketAddr>().is_err()) {
            return Err(err(ErrorCode::BadRequest, "P2P candidates must be ip:port"));
        }
        if self.links.contains_key(link_id) {
            return Err(err(ErrorCode::BadRequest, "link id already in use"));
        }
        let Some(svc) = self.services.get(&(owner.to_string(), name.to_string())).cloned() else {
            return Err(err(ErrorCode::P2pUnknownName, format!("no P2P service named '{name}'")));
        };
        if svc.protocol != protocol {
            return Err(err(
                ErrorCode::BadRequest,
                format!("P2P service '{name}' is {}, not {protocol}", svc.protocol),
            ));
        }
        let mine = self.links.values().filter(|l| l.owner == owner);
        let (mut total, mut pending) = (0, 0);
        for l in mine {
            total += 1;
            if l.state != LinkState::Accepted {
                pending += 1;
            }
        }
        if pending >= MAX_PENDING_LINKS_PER_OWNER {
            // The oldest pending link is proved or dropped within its TTL: a slot is free then.
            let oldest = self
                .links
                .values()
                .filter(|l| l.owner == owner && l.state != LinkState::Accepted)
                .map(|l| l.created)
                .min();
            let wait = oldest.map_or(PENDING_LINK_TTL, |c| (c + PENDING_LINK_TTL).saturating_duration_since(now));
            let wait = wait.max(Duration::from_secs(1));
            return Err(P2pError {
                retry_after: Some(wait),
                ..err(
                    ErrorCode::RateLimited,
                    format!(
                        "too many P2P links waiting for their secret proof; retry in {} s",
                        rustunnel_proto::limits::whole_secs(wait)
                    ),
                )
            });
        }
        if total >= MAX_LINKS_PER_OWNER {
            return Err(err(ErrorCode::TooManyTunnels, "too many open P2P links for this owner; close some first"));
        }
        let link = Link {
            id: link_id.to_string(),
            owner: owner.to_string(),
            name: name.to_string(),
            protocol,
            visitor: visitor.to_string(),
            publisher: svc.session_id.clone(),
            state: LinkState::AwaitAnswer,
            created: now,
            mode: None,
            stats: Arc::new(TunnelStats::default()),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS_PER_LINK)),
        };
        self.links.insert(link.id.clone(), link);
        out.push((
            svc.session_id,
            ServerMsg::P2pIncoming {
                link_id: link_id.to_string(),
                name: name.to_string(),
                protocol,
                pake,
                fingerprint,
                candidates,
            },
        ));
        Ok(out)
    }

    /// A step of the proof from `from`. Messages from the wrong side or in the wrong state are
    /// ignored (`None`): nothing is forwarded.
    pub fn step(&mut self, from: &str, msg: ClientMsg) -> Vec<Out> {
        match msg {
            ClientMsg::P2pAnswer { link_id, pake, confirm, fingerprint, candidates } => {
                if !field_ok(&pake)
                    || !field_ok(&confirm)
                    || !field_ok(&fingerprint)
                    || candidates.len() > MAX_CANDIDATES
                {
                    return self.abort(&link_id, "P2P answer too large");
                }
                let Some(l) = self.advance(&link_id, from, false, LinkState::AwaitAnswer, LinkState::AwaitConfirm)
                else {
                    return Vec::new();
                };
                vec![(l, ServerMsg::P2pAnswer { link_id, pake, confirm, fingerprint, candidates })]
            }
            ClientMsg::P2pConfirm { link_id, confirm } => {
                if !field_ok(&confirm) {
                    return self.abort(&link_id, "P2P confirmation too large");
                }
                let Some(p) = self.advance(&link_id, from, true, LinkState::AwaitConfirm, LinkState::AwaitResult)
                else {
                    return Vec::new();
                };
                vec![(p, ServerMsg::P2pConfirm { link_id, confirm })]
            }
            ClientMsg::P2pResult { link_id, accepted } => {
                if !accepted {
                    let Some(l) = self.links.get(&link_id).filter(|l| l.publisher == from).cloned() else {
                        return Vec::new();
                    };
                    self.links.remove(&link_id);
                    return vec![(l.visitor, ServerMsg::P2pResult { link_id, accepted: false })];
                }
                let Some(v) = self.advance(&link_id, from, false, LinkState::AwaitResult, LinkState::Accepted) else {
                    return Vec::new();
                };
                vec![(v, ServerMsg::P2pResult { link_id, accepted: true })]
            }
            ClientMsg::P2pMode { link_id, mode } => {
                if let Some(l) = self.links.get_mut(&link_id) {
                    if l.visitor == from
                        && l.state == LinkState::Accepted
                        && matches!(mode.as_str(), "direct" | "relayed")
                    {
                        l.mode = Some(mode);
                    }
                }
                Vec::new()
            }
            ClientMsg::P2pClose { link_id, reason } => {
                let Some(l) = self.links.get(&link_id).filter(|l| l.visitor == from || l.publisher == from).cloned()
                else {
                    return Vec::new();
                };
                self.links.remove(&link_id);
                let other = if l.visitor == from { l.publisher } else { l.visitor };
                let reason: String = reason.chars().take(200).collect();
                vec![(other, ServerMsg::P2pClosed { link_id, reason })]
            }
            _ => Vec::new(),
        }
    }

    /// Moves a link from `want` to `next` when `from` is the expected side; returns the other side.
    fn advance(
        &mut self,
        link_id: &str,
        from: &str,
        from_visitor: bool,
        want: LinkState,
        next: LinkState,
    ) -> Option<String> {
        let l = self.links.get_mut(link_id)?;
        let expected = if from_visitor { &l.visitor } else { &l.publisher };
        if expected != from || l.state != want {
            return None;
        }
        l.state = next;
        Some(if from_visitor { l.publisher.clone() } else { l.visitor.clone() })
    }

    fn abort(&mut self, link_id: &str, why: &str) -> Vec<Out> {
        match self.links.remove(link_id) {
            Some(l) => closed_both(&l, why),
            None => Vec::new(),
        }
    }

    /// A session ended: its services are withdrawn and its links closed.
    pub fn session_ended(&mut self, session: &str) -> Vec<Out> {
        self.services.retain(|_, s| s.session_id != session);
        let gone: Vec<String> = self
            .links
            .values()
            .filter(|l| l.visitor == session || l.publisher == session)
            .map(|l| l.id.clone())
            .collect();
        let mut out = Vec::new();
        for id in gone {
            if let Some(l) = self.links.remove(&id) {
                let other = if l.visitor == session { l.publisher } else { l.visitor };
                out.push((other, ServerMsg::P2pClosed { link_id: id, reason: "the other peer disconnected".into() }));
            }
        }
        out
    }

    /// The link a visitor session may relay a stream over.
    pub fn relayable(&self, session: &str, link_id: &str) -> Option<Link> {
        self.links.get(link_id).filter(|l| l.visitor == session && l.state == LinkState::Accepted).cloned()
    }

    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// `(owner, name, protocol, publisher session)` of every published service.
    pub fn published(&self) -> impl Iterator<Item = (&str, &str, Protocol, &str)> {
        self.services.iter().map(|((o, n), s)| (o.as_str(), n.as_str(), s.protocol, s.session_id.as_str()))
    }

    /// `(owner, name, protocol)` of every published service.
    pub fn services(&self) -> impl Iterator<Item = (&str, &str, Protocol)> {
        self.services.iter().map(|((o, n), s)| (o.as_str(), n.as_str(), s.protocol))
    }
}

fn closed_both(l: &Link, why: &str) -> Vec<Out> {
    [&l.visitor, &l.publisher]
        .into_iter()
        .map(|s| (s.clone(), ServerMsg::P2pClosed { link_id: l.id.clone(), reason: why.to_string() }))
        .collect()
}

/// The server's P2P state.
#[derive(Default)]
pub struct P2pHub {
    table: Mutex<Rendezvous>,
    /// Payload bytes relayed for P2P links since start, live (in: visitor -> publisher).
    pub relay_stats: Arc<TunnelStats>,
    /// Streams relayed since start.
    pub relayed_streams: AtomicU64,
    /// Bound UDP port of the reflector, when enabled.
    pub reflector_port: OnceLock<u16>,
}

impl P2pHub {
    /// Runs `f` on the rendezvous table.
    pub fn with_table<R>(&self, f: impl FnOnce(&mut Rendezvous) -> R) -> R {
        f(&mut self.table.lock())
    }

    /// Bytes relayed for links still open plus those of closed ones.
    pub fn relayed_total(&self) -> u64 {
        let (i, o, _, _) = self.relay_stats.get();
        i + o
    }
}

/// Token buckets of the reflector: a global budget and one per source address, refilled
/// every second. Sans-IO.
#[derive(Default)]
pub struct ReflectLimiter {
    window: Option<Instant>,
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

impl ReflectLimiter {
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) {
            self.window = Some(now);
            self.total = 0;
            self.per_ip.clear();
        }
        if self.total >= REFLECT_PER_SEC {
            return false;
        }
        if !self.per_ip.contains_key(&ip) && self.per_ip.len() >= REFLECT_TRACKED_IPS {
            return false;
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= REFLECT_PER_IP_PER_SEC {
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(r: &mut Rendezvous, now: Instant, link: &str, name: &str) -> Result<Vec<Out>, P2pError> {
        r.connect(now, "o", "v", link, name, Protocol::Tcp, "pa".into(), "fa".into(), vec!["127.0.0.1:9".into()])
    }

    const L: &str = "0123456789abcdef";

    #[test]
    fn full_proof_then_relay_allowed() {
        let mut r = Rendezvous::default();
        let now = Instant::now();
        r.publish("o", "p", "svc", Protocol::Tcp).unwrap();
        let out = offer(&mut r, now, L, "svc").unwrap();
        assert!(matches!(&out[..], [(s, ServerMsg::P2pIncoming { .. })] if s == "p"));
        assert!(r.relayable("v", L).is_none(), "no relay before the proof");
        // The visitor cannot answer for the publisher.
        let fake = ClientMsg::P2pAnswer {
            link_id: L.into(),
            pake: "x".into(),
            confirm: "c".into(),
            fingerprint: "f".into(),
            candidates: vec![],
        };
        assert!(r.step("v", fake.clone()).is_empty());
        assert_eq!(r.step("p", fake).len(), 1);
        assert_eq!(r.step("v", ClientMsg::P2pConfirm { link_id: L.into(), confirm: "c".into() }).len(), 1);
        // Only the publisher's verdict counts.
        assert!(r.step("v", ClientMsg::P2pResult { link_id: L.into(), accepted: true }).is_empty());
        assert!(r.relayable("v", L).is_none());
        assert_eq!(r.step("p", ClientMsg::P2pResult { link_id: L.into(), accepted: true }).len(), 1);
        assert!(r.relayable("v", L).is_some());
        assert!(r.relayable("p", L).is_none(), "only the visitor opens relayed streams");
    }

    #[test]
    fn unknown_name_other_owner_and_protocol() {
        let mut r = Rendezvous::default();
        let now = Instant::now();
        r.publish("other", "p", "svc", Protocol::Tcp).unwrap();
        let e = offer(&mut r, now, L, "svc").unwrap_err();
        assert_eq!(e.code, ErrorCode::P2pUnknownName);
        assert_eq!(e.message, "no P2P service named 'svc'");
        r.publish("o", "p", "svc", Protocol::Udp).unwrap();
        assert_eq!(offer(&mut r, now, L, "svc").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(r.publish("o", "p2", "svc", Protocol::Udp).unwrap_err().code, ErrorCode::P2pNameTaken);
    }

    #[test]
    fn rejected_proof_removes_link() {
        let mut r = Rendezvous::default();
        let now = Instant::now();
        r.publish("o", "p", "svc", Protocol::Tcp).unwrap();
        offer(&mut r, now, L, "svc").unwrap();
        let out = r.step("p", ClientMsg::P2pResult { link_id: L.into(), accepted: false });
        assert!(matches!(&out[..], [(s, ServerMsg::P2pResult { accepted: false, .. })] if s == "v"));
        assert!(r.relayable("v", L).is_none());
        assert_eq!(r.links().count(), 0);
    }

    #[test]
    fn pending_links_are_bounded_and_expire() {
        let mut r = Rendezvous::default();
        let now = Instant::now();
        r.publish("o", "p", "svc", Protocol::Tcp).unwrap();
        for i in 0..MAX_PENDING_LINKS_PER_OWNER {
            offer(&mut r, now, &format!("link-{i:012}"), "svc").unwrap();
        }
        let refused = offer(&mut r, now, L, "svc").unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        // The visitor is told when the oldest pending link frees its slot.
        assert_eq!(refused.retry_after, Some(PENDING_LINK_TTL));
        let soon = offer(&mut r, now + Duration::from_secs(10), L, "svc").unwrap_err();
        assert_eq!(soon.retry_after, Some(PENDING_LINK_TTL - Duration::from_secs(10)));
        let later = now + PENDING_LINK_TTL + Duration::from_secs(1);
        let out = offer(&mut r, later, L, "svc").unwrap();
        // Every expired link tells both sides, then the new offer goes out.
        assert_eq!(out.len(), 2 * MAX_PENDING_LINKS_PER_OWNER + 1);
    }

    #[test]
    fn session_end_withdraws_and_notifies() {
        let mut r = Rendezvous::default();
        let now = Instant::now();
        r.publish("o", "p", "svc", Protocol::Tcp).unwrap();
        offer(&mut r, now, L, "svc").unwrap();
        let out = r.session_ended("p");
        assert!(matches!(&out[..], [(s, ServerMsg::P2pClosed { .. })] if s == "v"));
        assert_eq!(offer(&mut r, now, "another-link-0001", "svc").unwrap_err().code, ErrorCode::P2pUnknownName);
    }

    #[test]
    fn bad_input_refused() {
        let mut r = Rendezvous::default();
        let now = Instant::now();
        r.publish("o", "p", "svc", Protocol::Tcp).unwrap();
        assert!(offer(&mut r, now, "short", "svc").is_err());
        let e = r.connect(now, "o", "v", L, "svc", Protocol::Tcp, "x".repeat(10_000), "f".into(), vec![]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = r.connect(now, "o", "v", L, "svc", Protocol::Tcp, "p".into(), "f".into(), vec!["nope".into()]);
        assert!(e.is_err());
        assert!(r.publish("o", "p", "../x", Protocol::Tcp).is_err());
    }

    #[test]
    fn reflector_rate_limited() {
        let mut l = ReflectLimiter::default();
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(now, ip)).count();
        assert_eq!(allowed, REFLECT_PER_IP_PER_SEC as usize);
        assert!(l.allow(now + Duration::from_secs(1), ip));
    }
}
