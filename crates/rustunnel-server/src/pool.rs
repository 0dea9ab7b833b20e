//! Load-balanced pools: several tunnels (members, from one or many clients) behind one HTTP
//! subdomain or one TCP port. A plain state machine with no I/O: the server keeps a
//! [`PoolTable`] behind a mutex and drives it with joins, health reports, drains and leaves;
//! the table answers which member gets the next request or connection, and which alerts
//! (pool down / pool recovered) to send.
//!
//! Selection is least-in-flight among members that are healthy and not draining, ties broken
//! round-robin, so sequential traffic alternates evenly and a slow member gets less.
use std::collections::HashMap;

use rustunnel_proto::Protocol;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::tunnel::Access;

/// Most members in one pool.
pub const MAX_MEMBERS: usize = 64;
/// Longest pool name.
pub const MAX_POOL_NAME: usize = 63;
pub use crate::webhook::MAX_WEBHOOK_LEN;

/// A pool is identified by its protocol and group name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub protocol: Protocol,
    pub name: String,
}

/// The pool's public endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Subdomain(String),
    Port(u16),
}

/// Why a member could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("wrong group key for pool '{0}': every member of a pool must use the same --group-key")]
    WrongKey(String),
    #[error("pool '{0}' belongs to another owner: every member of a pool must use a token of the same owner")]
    OtherOwner(String),
    #[error("pool '{pool}' is already served at {actual}; members must ask for the same endpoint (or none)")]
    EndpointMismatch { pool: String, actual: String },
    #[error(
        "pool '{0}' has other visitor rules: every member must use the same --basic-auth, --cidr-allow and --cidr-deny (or none)"
    )]
    AccessMismatch(String),
    #[error("pool '{0}' is full ({MAX_MEMBERS} members)")]
    Full(String),
    #[error("invalid group name: 1-{MAX_POOL_NAME} characters of a-z, 0-9 and '-'")]
    InvalidName,
    #[error("load-balanced pools are for http and tcp tunnels")]
    Unsupported,
}

/// One member as the pool sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub tunnel_id: String,
    pub healthy: bool,
    pub draining: bool,
    /// What the member's last health check saw.
    pub detail: String,
    pub alert_webhook: Option<String>,
    pub health_check: Option<String>,
}

impl Member {
    pub fn new(tunnel_id: impl Into<String>) -> Self {
        Member {
            tunnel_id: tunnel_id.into(),
            healthy: true,
            draining: false,
            detail: String::new(),
            alert_webhook: None,
            health_check: None,
        }
    }
    fn available(&self) -> bool {
        self.healthy && !self.draining
    }
}

pub struct Pool {
    pub key: PoolKey,
    verifier: [u8; 32],
    pub endpoint: Endpoint,
    /// Id under which the endpoint is claimed in the registry.
    pub holder: String,
    pub owner: String,
    pub public_url: String,
    /// Ends the pool's own listener (TCP pools) when the last member leaves.
    pub cancel: CancellationToken,
    /// Who may reach the pool: every member asks for the same.
    pub access: Access,
    members: Vec<Member>,
    cursor: usize,
    /// No member can take traffic.
    down: bool,
    /// A down alert went out; the next recovery is announced.
    alerted: bool,
}

impl Pool {
    pub fn new(key: PoolKey, verifier: [u8; 32], endpoint: Endpoint, holder: String, owner: String) -> Self {
        Pool {
            key,
            verifier,
            endpoint,
            holder,
            owner,
            public_url: String::new(),
            cancel: CancellationToken::new(),
            access: Access::default(),
            members: Vec::new(),
            cursor: 0,
            down: false,
            alerted: false,
        }
    }
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    pub fn available(&self) -> usize {
        self.members.iter().filter(|m| m.available()).count()
    }
    fn webhooks(&self, extra: Option<&Member>) -> Vec<String> {
        let mut v: Vec<String> = self.members.iter().chain(extra).filter_map(|m| m.alert_webhook.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// An alert to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// No member of the pool can take traffic.
    PoolDown,
    /// At least one member is healthy again after a down alert.
    PoolRecovered,
}

#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: AlertKind,
    pub pool: PoolKey,
    pub public_url: String,
    pub members: Vec<Member>,
    /// Member-supplied webhooks (the server-wide one is added by the driver).
    pub webhooks: Vec<String>,
}

/// Where the next request or connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Member(String),
    /// The pool exists but no member can take traffic.
    NoneAvailable,
    NoPool,
}

/// What a leave changed.
#[derive(Default)]
pub struct Leave {
    pub alert: Option<Alert>,
    /// The pool itself, when its last member left: release its endpoint.
    pub removed: Option<Pool>,
}

#[derive(Default)]
pub struct PoolTable {
    pools: HashMap<PoolKey, Pool>,
    by_subdomain: HashMap<String, PoolKey>,
    member_of: HashMap<String, PoolKey>,
}

/// Pool names are DNS-label-like so they can double as subdomains.
pub fn validate_name(name: &str) -> Result<(), PoolError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POOL_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PoolError::InvalidName)
    }
}

impl PoolTable {
    pub fn get(&self, key: &PoolKey) -> Option<&Pool> {
        self.pools.get(key)
    }

    pub fn by_subdomain(&self, sub: &str) -> Option<&PoolKey> {
        self.by_subdomain.get(sub)
    }

    pub fn pool_of(&self, tunnel_id: &str) -> Option<&Pool> {
        self.member_of.get(tunnel_id).and_then(|k| self.pools.get(k))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// Checks that a member of `owner` may join the existing pool `key` (true) or that there is
    /// none yet (false, the caller creates it). A pool belongs to the owner of its first member:
    /// the group key alone (a shared secret that travels in config files) does not let another
    /// owner's client take a share of its visitors. The key comparison is constant-time.
    pub fn check_join(
        &self,
        key: &PoolKey,
        owner: &str,
        verifier: &[u8; 32],
        requested: Option<&Endpoint>,
        access: &Access,
    ) -> Result<bool, PoolError> {
        let Some(p) = self.pools.get(key) else { return Ok(false) };
        if p.owner != owner {
            return Err(PoolError::OtherOwner(key.name.clone()));
        }
        if !bool::from(p.verifier.ct_eq(verifier)) {
            return Err(PoolError::WrongKey(key.name.clone()));
        }
        // A member without the others' login or address rules would let visitors around them.
        if !p.access.same_as(access) {
            return Err(PoolError::AccessMismatch(key.name.clone()));
        }
        if let Some(r) = requested {
            if *r != p.endpoint {
                let actual = match &p.endpoint {
                    Endpoint::Subdomain(s) => format!("subdomain '{s}'"),
                    Endpoint::Port(n) => format!("port {n}"),
                };
                return Err(PoolError::EndpointMismatch { pool: key.name.clone(), actual });
            }
        }
        if p.members.len() >= MAX_MEMBERS {
            return Err(PoolError::Full(key.name.clone()));
        }
        Ok(true)
    }

    /// Adds a new, empty pool (after its endpoint was claimed).
    pub fn create(&mut self, pool: Pool) {
        if let Endpoint::Subdomain(s) = &pool.endpoint {
            self.by_subdomain.insert(s.clone(), pool.key.clone());
        }
        self.pools.insert(pool.key.clone(), pool);
    }

    /// Adds a member to an existing pool. A healthy newcomer may end a down period.
    pub fn add_member(&mut self, key: &PoolKey, member: Member) -> Option<Alert> {
        let p = self.pools.get_mut(key)?;
        self.member_of.insert(member.tunnel_id.clone(), key.clone());
        p.members.push(member);
        transition(p, false, None)
    }

    /// Chooses the member for the next request or connection.
    pub fn pick(&mut self, key: &PoolKey, in_flight: impl Fn(&str) -> usize) -> Pick {
        let Some(p) = self.pools.get_mut(key) else { return Pick::NoPool };
        let n = p.members.len();
        let mut best: Option<(usize, usize)> = None;
        for i in 0..n {
            let idx = (p.cursor + i) % n;
            let m = &p.members[idx];
            if !m.available() {
                continue;
            }
            let load = in_flight(&m.tunnel_id);
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((idx, load));
            }
        }
        match best {
            Some((idx, _)) => {
                p.cursor = (idx + 1) % n;
                Pick::Member(p.members[idx].tunnel_id.clone())
            }
            None => Pick::NoneAvailable,
        }
    }

    /// A member's health check result.
    pub fn set_health(&mut self, tunnel_id: &str, healthy: bool, detail: &str) -> Option<Alert> {
        let key = self.member_of.get(tunnel_id)?;
        let p = self.pools.get_mut(key)?;
        let m = p.members.iter_mut().find(|m| m.tunnel_id == tunnel_id)?;
        m.healthy = healthy;
        m.detail = detail.chars().take(256).collect();
        transition(p, true, None)
    }

    /// A member leaves gracefully: no new traffic. Never raises a down alert by itself.
    pub fn drain(&mut self, tunnel_id: &str) -> bool {
        let Some(p) = self.member_of.get(tunnel_id).and_then(|k| self.pools.get_mut(k)) else { return false };
        let Some(m) = p.members.iter_mut().find(|m| m.tunnel_id == tunnel_id) else { return false };
        m.draining = true;
        let _ = transition(p, false, None);
        true
    }

    /// A member is gone. Leaving while draining is graceful; otherwise losing the last
    /// available member is an outage and alerts.
    pub fn leave(&mut self, tunnel_id: &str) -> Leave {
        let Some(key) = self.member_of.remove(tunnel_id) else { return Leave::default() };
        let Some(p) = self.pools.get_mut(&key) else { return Leave::default() };
        let Some(pos) = p.members.iter().position(|m| m.tunnel_id == tunnel_id) else { return Leave::default() };
        let gone = p.members.remove(pos);
        if p.cursor > pos {
            p.cursor -= 1;
        }
        let alert = transition(p, !gone.draining, Some(&gone));
        let removed = if p.members.is_empty() {
            if let Endpoint::Subdomain(s) = &p.endpoint {
                self.by_subdomain.remove(s);
            }
            self.pools.remove(&key)
        } else {
            None
        };
        Leave { alert, removed }
    }
}

/// Recomputes the pool's up/down state; returns the alert the change calls for.
fn transition(p: &mut Pool, outage: bool, gone: Option<&Member>) -> Option<Alert> {
    let available = p.available();
    let alert = |p: &Pool, kind| Alert {
        kind,
        pool: p.key.clone(),
        public_url: p.public_url.clone(),
        members: p.members.clone(),
        webhooks: p.webhooks(gone),
    };
    if available == 0 && !p.down {
        p.down = true;
        if outage {
            p.alerted = true;
            return Some(alert(p, AlertKind::PoolDown));
        }
    } else if available > 0 && p.down {
        p.down = false;
        if p.alerted {
            p.alerted = false;
            return Some(alert(p, AlertKind::PoolRecovered));
        }
    }
    None
}

/// A pool as the management API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSnapshot {
    pub name: String,
    pub protocol: Protocol,
    pub public_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// Members that can take traffic now (healthy and not draining).
    pub healthy_members: usize,
    pub members: Vec<PoolMemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolMemberSnapshot {
    pub tunnel_id: String,
    pub name: String,
    pub healthy: bool,
    pub draining: bool,
    /// What the member's last health check saw (empty when it has none or all is well).
    pub health_detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    pub local_addr: String,
    pub client_addr: String,
    /// Requests (HTTP) or connections (TCP) served.
    pub requests: u64,
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PoolKey {
        PoolKey { protocol: Protocol::Http, name: "pool".into() }
    }

    fn table(members: &[&str]) -> PoolTable {
        let mut t = PoolTable::default();
        t.create(Pool::new(key(), [7; 32], Endpoint::Subdomain("pool".into()), "h".into(), "o".into()));
        for m in members {
            let mut mm = Member::new(*m);
            mm.alert_webhook = Some(format!("http://hook/{m}"));
            assert!(t.add_member(&key(), mm).is_none());
        }
        t
    }

    fn picks(t: &mut PoolTable, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match t.pick(&key(), |_| 0) {
                Pick::Member(m) => m,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn round_robin_when_idle() {
        let mut t = table(&["a", "b", "c"]);
        assert_eq!(picks(&mut t, 6), ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn least_in_flight_wins() {
        let mut t = table(&["a", "b"]);
        for _ in 0..5 {
            assert_eq!(t.pick(&key(), |m| if m == "a" { 3 } else { 1 }), Pick::Member("b".into()));
        }
    }

    #[test]
    fn join_checks_key_and_endpoint() {
        let mut t = table(&["a"]);
        let open = Access::default();
        assert_eq!(t.check_join(&key(), "o", &[7; 32], None, &open), Ok(true));
        assert_eq!(t.check_join(&key(), "o", &[8; 32], None, &open), Err(PoolError::WrongKey("pool".into())));
        // The key is not enough: the pool belongs to its first member's owner.
        assert_eq!(t.check_join(&key(), "mallory", &[7; 32], None, &open), Err(PoolError::OtherOwner("pool".into())));
        // Members ask visitors for what the pool asks: the same login and address rules.
        let login = |d: u8| Access { basic_auth: Some([d; 32]), ..Access::default() };
        let lan = Access {
            ip_rules: rustunnel_proto::ip_rules::IpRules::parse(&["10.0.0.0/8".into()], &[]).unwrap(),
            ..Access::default()
        };
        let mismatch = Err(PoolError::AccessMismatch("pool".into()));
        assert_eq!(t.check_join(&key(), "o", &[7; 32], None, &login(1)), mismatch);
        assert_eq!(t.check_join(&key(), "o", &[7; 32], None, &lan), mismatch);
        t.pools.get_mut(&key()).unwrap().access = login(1);
        assert_eq!(t.check_join(&key(), "o", &[7; 32], None, &login(1)), Ok(true));
        assert_eq!(t.check_join(&key(), "o", &[7; 32], None, &login(2)), mismatch);
        assert_eq!(t.check_join(&key(), "o", &[7; 32], None, &open), mismatch);
        t.pools.get_mut(&key()).unwrap().access = open.clone();
        assert!(matches!(
            t.check_join(&key(), "o", &[7; 32], Some(&Endpoint::Subdomain("other".into())), &open),
            Err(PoolError::EndpointMismatch { .. })
        ));
        let other = PoolKey { protocol: Protocol::Tcp, name: "pool".into() };
        assert_eq!(t.check_join(&other, "o", &[8; 32], None, &open), Ok(false));
    }

    #[test]
    fn unhealthy_members_get_nothing_and_down_alerts_once() {
        let mut t = table(&["a", "b"]);
        assert!(t.set_health("a", false, "HTTP 503").is_none());
        assert_eq!(picks(&mut t, 3), ["b", "b", "b"]);
        let alert = t.set_health("b", false, "refused").expect("down alert");
        assert_eq!(alert.kind, AlertKind::PoolDown);
        assert_eq!(alert.webhooks, ["http://hook/a", "http://hook/b"]);
        assert_eq!(t.pick(&key(), |_| 0), Pick::NoneAvailable);
        assert!(t.set_health("b", false, "refused").is_none(), "no repeated alert while down");
        let rec = t.set_health("a", true, "").expect("recovery");
        assert_eq!(rec.kind, AlertKind::PoolRecovered);
        assert!(t.set_health("b", true, "").is_none());
        assert_eq!(picks(&mut t, 2).len(), 2);
    }

    #[test]
    fn flapping_alerts_each_transition() {
        let mut t = table(&["a"]);
        let mut kinds = Vec::new();
        for healthy in [false, true, false, true] {
            kinds.extend(t.set_health("a", healthy, "").map(|a| a.kind));
        }
        assert_eq!(
            kinds,
            [AlertKind::PoolDown, AlertKind::PoolRecovered, AlertKind::PoolDown, AlertKind::PoolRecovered]
        );
    }

    #[test]
    fn draining_member_gets_no_new_traffic_and_graceful_leave_is_quiet() {
        let mut t = table(&["a", "b"]);
        assert!(t.drain("a"));
        assert_eq!(picks(&mut t, 3), ["b", "b", "b"]);
        let l = t.leave("a");
        assert!(l.alert.is_none() && l.removed.is_none());
        assert!(t.drain("b"));
        let l = t.leave("b");
        assert!(l.alert.is_none(), "graceful leave of the last member is not an outage");
        assert!(l.removed.is_some());
        assert!(t.by_subdomain("pool").is_none());
        assert_eq!(t.pick(&key(), |_| 0), Pick::NoPool);
    }

    #[test]
    fn crash_of_last_available_member_alerts() {
        let mut t = table(&["a", "b"]);
        t.set_health("a", false, "");
        let l = t.leave("b");
        assert_eq!(l.alert.map(|a| a.kind), Some(AlertKind::PoolDown));
        assert!(l.removed.is_none());
        let l = t.leave("a");
        assert!(l.alert.is_none());
        assert!(l.removed.is_some());
    }

    #[test]
    fn leave_keeps_round_robin_fair() {
        let mut t = table(&["a", "b", "c"]);
        assert_eq!(picks(&mut t, 2), ["a", "b"]);
        t.leave("a");
        assert_eq!(picks(&mut t, 4), ["c", "b", "c", "b"]);
    }

    #[test]
    fn names() {
        assert!(validate_name("pool-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
