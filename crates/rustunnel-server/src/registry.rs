//! Who holds which public name and port: a plain state machine with no I/O, driven by
//! `(now, input)`. The server keeps one behind a mutex, which is what makes "two clients race
//! for one name: exactly one wins" true.
//!
//! A name or port freed by a dropped client stays reserved to the same owner for a grace
//! period, so a reconnecting client gets its URL back and nobody else can take it meanwhile.
//!
//! Persistence, still without I/O: every change marks its key dirty; the server's claim writer
//! drains [`Registry::take_changes`] (the current state of each dirty key, so changes coalesce
//! and can never be applied out of order) and writes them to the store off the hot path. At
//! startup [`Registry::load`] turns the stored rows of the server's region into reservations:
//! a name that was in use when the server stopped is reserved to its owner for the grace period
//! counted from startup; a name that was already released keeps what was left of its
//! reservation (capped at the grace period, so a far-future timestamp cannot pin a name).
use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::Rng;
use rustunnel_proto::limits::whole_secs;
use rustunnel_proto::names::{validate_subdomain, SubdomainError};

/// A claimed or reserved subdomain or port, as the store keeps it in
/// `registry_claims` (see [`Registry::load`] for how rows are validated when loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// `subdomain`, `tcp` or `udp`.
    pub kind: String,
    /// The subdomain, or the port number in decimal.
    pub name: String,
    /// The owner the name is reserved to (an owner id, never a token).
    pub owner_id: String,
    /// `None` while in use; the end of the owner's reservation (unix ms) once released.
    pub reserved_until: Option<i64>,
}

/// One change to the stored claims of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimChange {
    Upsert(ClaimRecord),
    Delete { kind: String, name: String },
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Invalid(#[from] SubdomainError),
    #[error("subdomain '{0}' is already in use")]
    SubdomainTaken(String),
    #[error(
        "subdomain '{name}' is reserved for its previous owner for another {secs} s \
         (their client disconnected and may come back); choose another name or try later"
    )]
    SubdomainReserved { name: String, secs: u64 },
    #[error("port {0} is not available")]
    PortTaken(u16),
    #[error(
        "port {port} is reserved for its previous owner for another {secs} s \
         (their client disconnected and may come back); choose another port or try later"
    )]
    PortReserved { port: u16, secs: u64 },
    #[error("port {port} is outside the server's range {start}-{end}")]
    PortOutOfRange { port: u16, start: u16, end: u16 },
    #[error("no free port left in the server's range")]
    NoPorts,
    #[error("no free random subdomain starting with '{0}' was found; choose one with --subdomain")]
    NoNames(String),
}

/// Random names tried before a claim without a requested name gives up.
const RANDOM_TRIES: usize = 64;

/// Which port space a claim is in (TCP and UDP ports are independent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortKind {
    Tcp,
    Udp,
}

impl PortKind {
    /// The `kind` of stored claims of this port space.
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Tcp => "tcp",
            PortKind::Udp => "udp",
        }
    }
}

/// `kind` of stored subdomain claims.
pub const SUBDOMAIN_KIND: &str = "subdomain";

/// What the registry hands out: a subdomain, or a port in one port space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Subdomain(String),
    Port(PortKind, u16),
}

impl Key {
    fn kind(&self) -> &'static str {
        match self {
            Key::Subdomain(_) => SUBDOMAIN_KIND,
            Key::Port(k, _) => k.as_str(),
        }
    }

    fn name(&self) -> String {
        match self {
            Key::Subdomain(s) => s.clone(),
            Key::Port(_, p) => p.to_string(),
        }
    }
}

/// What [`Registry::load`] did with the stored rows.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Rows now enforced as reservations.
    pub loaded: usize,
    /// Rows whose reservation had already ended.
    pub expired: usize,
    /// Rows that do not fit this server (unknown kind, invalid name, port outside the
    /// configured ranges, ...), with the reason.
    pub skipped: Vec<(ClaimRecord, String)>,
}

#[derive(Debug, Clone)]
struct Holder {
    owner: String,
    /// `Some(tunnel)` while in use; `None` once released and only reserved.
    tunnel: Option<String>,
    /// End of the reservation after release.
    until: Option<Instant>,
    /// Released because its client went away (not closed on purpose): it may come back.
    returning: bool,
}

/// Why a holder keeps a claim from someone.
enum Block {
    /// A tunnel holds it.
    InUse,
    /// Released, reserved to its owner for this much longer.
    Reserved(Duration),
}

impl Holder {
    fn blocks(&self, owner: &str, now: Instant) -> Option<Block> {
        match (&self.tunnel, self.until) {
            (Some(_), _) => Some(Block::InUse),
            (None, Some(until)) if owner != self.owner && now < until => Some(Block::Reserved(until - now)),
            (None, _) => None,
        }
    }
}

pub struct Registry {
    grace: Duration,
    subdomains: HashMap<String, Holder>,
    ports: HashMap<(PortKind, u16), Holder>,
    tcp_range: RangeInclusive<u16>,
    udp_range: RangeInclusive<u16>,
    /// Keys changed since the last [`Registry::take_changes`] (bounded by the keys that exist
    /// or just stopped existing).
    dirty: HashSet<Key>,
}

impl Registry {
    pub fn new(grace: Duration, tcp_range: RangeInclusive<u16>, udp_range: RangeInclusive<u16>) -> Self {
        Registry {
            grace,
            subdomains: HashMap::new(),
            ports: HashMap::new(),
            tcp_range,
            udp_range,
            dirty: HashSet::new(),
        }
    }

    fn range(&self, kind: PortKind) -> &RangeInclusive<u16> {
        match kind {
            PortKind::Tcp => &self.tcp_range,
            PortKind::Udp => &self.udp_range,
        }
    }

    /// Claims `requested`, or a random free name when `None`.
    pub fn claim_subdomain(
        &mut self,
        now: Instant,
        owner: &str,
        tunnel: &str,
        requested: Option<&str>,
        rng: &mut impl Rng,
    ) -> Result<String, ClaimError> {
        self.claim_subdomain_in(now, owner, tunnel, requested, "", rng)
    }

    /// Claims `requested`, or a random free name starting with `prefix` when `None` (a token
    /// whose rights allow only names with that prefix).
    pub fn claim_subdomain_in(
        &mut self,
        now: Instant,
        owner: &str,
        tunnel: &str,
        requested: Option<&str>,
        prefix: &str,
        rng: &mut impl Rng,
    ) -> Result<String, ClaimError> {
        self.expire(now);
        let name = match requested {
            Some(r) => {
                validate_subdomain(r)?;
                match self.subdomains.get(r).and_then(|h| h.blocks(owner, now)) {
                    Some(Block::InUse) => return Err(ClaimError::SubdomainTaken(r.to_string())),
                    Some(Block::Reserved(left)) => {
                        return Err(ClaimError::SubdomainReserved { name: r.to_string(), secs: whole_secs(left) })
                    }
                    None => {}
                }
                r.to_string()
            }
            None => {
                // Bounded: a prefix can rule out every valid name (`xn--`), and a short one
                // can run out of free names.
                let free = (0..RANDOM_TRIES)
                    .map(|_| format!("{prefix}{}", random_name(rng)))
                    .find(|c| c.len() <= 63 && validate_subdomain(c).is_ok() && !self.subdomains.contains_key(c));
                free.ok_or_else(|| ClaimError::NoNames(prefix.to_string()))?
            }
        };
        self.subdomains.insert(
            name.clone(),
            Holder { owner: owner.to_string(), tunnel: Some(tunnel.to_string()), until: None, returning: false },
        );
        self.dirty.insert(Key::Subdomain(name.clone()));
        Ok(name)
    }

    /// Releases a name held by `tunnel`; it stays reserved to its owner for the grace period.
    /// `returning`: the client went away rather than closing the tunnel, and may come back.
    pub fn release_subdomain(&mut self, now: Instant, name: &str, tunnel: &str, returning: bool) {
        if let Some(h) = self.subdomains.get_mut(name) {
            if h.tunnel.as_deref() == Some(tunnel) {
                h.tunnel = None;
                h.until = Some(now + self.grace);
                h.returning = returning;
                self.dirty.insert(Key::Subdomain(name.to_string()));
            }
        }
    }

    /// Claims one specific port.
    pub fn claim_port(
        &mut self,
        now: Instant,
        kind: PortKind,
        owner: &str,
        tunnel: &str,
        port: u16,
    ) -> Result<(), ClaimError> {
        self.expire(now);
        let range = self.range(kind);
        if !range.contains(&port) {
            return Err(ClaimError::PortOutOfRange { port, start: *range.start(), end: *range.end() });
        }
        match self.ports.get(&(kind, port)).and_then(|h| h.blocks(owner, now)) {
            Some(Block::InUse) => return Err(ClaimError::PortTaken(port)),
            Some(Block::Reserved(left)) => return Err(ClaimError::PortReserved { port, secs: whole_secs(left) }),
            None => {}
        }
        self.ports.insert(
            (kind, port),
            Holder { owner: owner.to_string(), tunnel: Some(tunnel.to_string()), until: None, returning: false },
        );
        self.dirty.insert(Key::Port(kind, port));
        Ok(())
    }

    /// Free ports of `kind`, starting at a random offset so consecutive tunnels do not all
    /// probe the same few ports. The caller claims one and tries to bind it.
    pub fn free_ports(&mut self, now: Instant, kind: PortKind, rng: &mut impl Rng) -> Vec<u16> {
        self.expire(now);
        let range = self.range(kind).clone();
        let len = (*range.end() - *range.start()) as usize + 1;
        let offset = rng.random_range(0..len);
        range.clone().cycle().skip(offset).take(len).filter(|p| !self.ports.contains_key(&(kind, *p))).collect()
    }

    /// Releases a port; reserved to its owner for the grace period unless `reserve` is false
    /// (a port we could not bind is simply forgotten).
    pub fn release_port(&mut self, now: Instant, kind: PortKind, port: u16, tunnel: &str, reserve: bool) {
        let key = (kind, port);
        if self.ports.get(&key).is_some_and(|h| h.tunnel.as_deref() == Some(tunnel)) {
            if reserve {
                if let Some(h) = self.ports.get_mut(&key) {
                    h.tunnel = None;
                    h.until = Some(now + self.grace);
                }
            } else {
                self.ports.remove(&key);
            }
            self.dirty.insert(Key::Port(kind, port));
        }
    }

    /// Which tunnel holds `name` right now.
    pub fn subdomain_holder(&self, name: &str) -> Option<&str> {
        self.subdomains.get(name).and_then(|h| h.tunnel.as_deref())
    }

    /// Whether `name` is held for a tunnel whose client went away, within its grace period (it
    /// may be reconnecting).
    pub fn awaits_owner(&self, now: Instant, name: &str) -> bool {
        self.subdomains.get(name).is_some_and(|h| h.returning && h.tunnel.is_none() && h.until.is_some_and(|u| now < u))
    }

    /// Drops reservations whose grace period is over (the periodic pruning step; claims
    /// prune too).
    pub fn prune(&mut self, now: Instant) {
        self.expire(now);
    }

    /// Drops reservations whose grace period is over.
    fn expire(&mut self, now: Instant) {
        let live = |h: &Holder| h.tunnel.is_some() || h.until.is_some_and(|u| now < u);
        let dirty = &mut self.dirty;
        self.subdomains.retain(|name, h| {
            let keep = live(h);
            if !keep {
                dirty.insert(Key::Subdomain(name.clone()));
            }
            keep
        });
        self.ports.retain(|&(kind, port), h| {
            let keep = live(h);
            if !keep {
                dirty.insert(Key::Port(kind, port));
            }
            keep
        });
    }

    fn holder(&self, key: &Key) -> Option<&Holder> {
        match key {
            Key::Subdomain(s) => self.subdomains.get(s),
            Key::Port(k, p) => self.ports.get(&(*k, *p)),
        }
    }

    /// The stored form of `key` held by `h`; `now`/`now_ms` are the same moment on the
    /// monotonic and the wall clock.
    fn record(key: &Key, h: &Holder, now: Instant, now_ms: i64) -> ClaimRecord {
        let reserved_until = match (&h.tunnel, h.until) {
            (Some(_), _) => None,
            (None, Some(u)) => {
                let left = i64::try_from(u.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX);
                Some(now_ms.saturating_add(left))
            }
            // Released without a reservation: over already.
            (None, None) => Some(now_ms),
        };
        ClaimRecord { kind: key.kind().to_string(), name: key.name(), owner_id: h.owner.clone(), reserved_until }
    }

    /// What changed since the last call (or the last [`Registry::snapshot`]): the current stored
    /// form of every changed key, or its deletion. Sorted by key.
    pub fn take_changes(&mut self, now: Instant, now_ms: i64) -> Vec<ClaimChange> {
        let mut keys: Vec<Key> = self.dirty.drain().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| match self.holder(&k) {
                Some(h) => ClaimChange::Upsert(Self::record(&k, h, now, now_ms)),
                None => ClaimChange::Delete { kind: k.kind().to_string(), name: k.name() },
            })
            .collect()
    }

    /// Every claim and reservation in stored form (what the store should hold for this
    /// region), sorted by key; clears the pending changes, which the snapshot covers.
    pub fn snapshot(&mut self, now: Instant, now_ms: i64) -> Vec<ClaimRecord> {
        self.dirty.clear();
        let mut keys: Vec<Key> = self
            .subdomains
            .keys()
            .map(|s| Key::Subdomain(s.clone()))
            .chain(self.ports.keys().map(|&(k, p)| Key::Port(k, p)))
            .collect();
        keys.sort();
        keys.iter().filter_map(|k| self.holder(k).map(|h| Self::record(k, h, now, now_ms))).collect()
    }

    /// Checks a stored row against this server's rules and configuration.
    fn parse_record(&self, r: &ClaimRecord) -> Result<Key, String> {
        if r.owner_id.is_empty() {
            return Err("no owner".into());
        }
        let key = match r.kind.as_str() {
            SUBDOMAIN_KIND => {
                validate_subdomain(&r.name).map_err(|e| e.to_string())?;
                Key::Subdomain(r.name.clone())
            }
            "tcp" | "udp" => {
                let kind = if r.kind == "tcp" { PortKind::Tcp } else { PortKind::Udp };
                let port: u16 = r.name.parse().map_err(|_| "not a port number".to_string())?;
                let range = self.range(kind);
                if !range.contains(&port) {
                    return Err(format!(
                        "port outside the configured {} range {}-{}",
                        kind.as_str(),
                        range.start(),
                        range.end()
                    ));
                }
                Key::Port(kind, port)
            }
            _ => return Err("unknown kind".into()),
        };
        if self.holder(&key).is_some() {
            return Err("duplicate".into());
        }
        Ok(key)
    }

    /// Loads stored claims (at startup, into an empty registry) as reservations of their
    /// owners: in use when the server stopped -> reserved for the grace period from `now`;
    /// already released -> the rest of its reservation, at most the grace period; ended ->
    /// dropped. Rows that do not fit are reported in [`LoadReport::skipped`], never loaded.
    /// Loading marks nothing dirty: follow it with [`Registry::snapshot`] to rewrite the store.
    pub fn load(&mut self, now: Instant, now_ms: i64, rows: impl IntoIterator<Item = ClaimRecord>) -> LoadReport {
        let mut report = LoadReport::default();
        for r in rows {
            let key = match self.parse_record(&r) {
                Ok(k) => k,
                Err(why) => {
                    report.skipped.push((r, why));
                    continue;
                }
            };
            let until = match r.reserved_until {
                None => now + self.grace,
                Some(ms) if ms <= now_ms => {
                    report.expired += 1;
                    continue;
                }
                Some(ms) => {
                    let left = Duration::from_millis(u64::try_from(ms.saturating_sub(now_ms)).unwrap_or(0));
                    now + left.min(self.grace)
                }
            };
            // Restored after a restart: their clients are expected back.
            let holder = Holder { owner: r.owner_id, tunnel: None, until: Some(until), returning: true };
            match key {
                Key::Subdomain(s) => self.subdomains.insert(s, holder),
                Key::Port(k, p) => self.ports.insert((k, p), holder),
            };
            report.loaded += 1;
        }
        report
    }
}

fn random_name(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..10).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(Duration::from_secs(60), 20000..=20002, 20000..=20002)
    }

    #[test]
    fn exactly_one_claim_wins() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        assert_eq!(r.claim_subdomain(now, "a", "t1", Some("app"), &mut rng), Ok("app".into()));
        assert_eq!(
            r.claim_subdomain(now, "b", "t2", Some("app"), &mut rng),
            Err(ClaimError::SubdomainTaken("app".into()))
        );
        // Even the same owner cannot split routing while the name is live.
        assert!(r.claim_subdomain(now, "a", "t3", Some("app"), &mut rng).is_err());
        assert_eq!(r.subdomain_holder("app"), Some("t1"));
    }

    #[test]
    fn released_name_is_reserved_to_its_owner_for_the_grace_period() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        r.claim_subdomain(now, "a", "t1", Some("app"), &mut rng).unwrap();
        r.release_subdomain(now, "app", "t1", true);
        let e = r.claim_subdomain(now + Duration::from_secs(30), "b", "t2", Some("app"), &mut rng).unwrap_err();
        assert_eq!(e, ClaimError::SubdomainReserved { name: "app".into(), secs: 30 });
        assert!(e.to_string().contains("reserved for its previous owner for another 30 s"), "{e}");
        assert!(r.claim_subdomain(now + Duration::from_secs(30), "a", "t3", Some("app"), &mut rng).is_ok());
        r.release_subdomain(now + Duration::from_secs(30), "app", "t3", true);
        // After the grace period anyone may take it.
        assert!(r.claim_subdomain(now + Duration::from_secs(91), "b", "t4", Some("app"), &mut rng).is_ok());
    }

    #[test]
    fn release_by_a_stale_tunnel_is_ignored() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        r.claim_subdomain(now, "a", "t1", Some("app"), &mut rng).unwrap();
        r.release_subdomain(now, "app", "other", true);
        assert_eq!(r.subdomain_holder("app"), Some("t1"));
    }

    #[test]
    fn invalid_and_reserved_names_are_refused() {
        let mut r = reg();
        let mut rng = rand::rng();
        for bad in ["www", "admin", "_acme-challenge", "xn--80ak6aa92e", "a", "UPPER"] {
            assert!(
                matches!(r.claim_subdomain(Instant::now(), "a", "t", Some(bad), &mut rng), Err(ClaimError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn random_names_are_valid_and_distinct() {
        let mut r = reg();
        let mut rng = rand::rng();
        let now = Instant::now();
        let a = r.claim_subdomain(now, "o", "t1", None, &mut rng).unwrap();
        let b = r.claim_subdomain(now, "o", "t2", None, &mut rng).unwrap();
        assert_ne!(a, b);
        assert!(validate_subdomain(&a).is_ok());
    }

    #[test]
    fn ports_reserve_and_exhaust() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        assert_eq!(r.free_ports(now, PortKind::Tcp, &mut rng).len(), 3);
        r.claim_port(now, PortKind::Tcp, "a", "t1", 20001).unwrap();
        assert!(matches!(r.claim_port(now, PortKind::Tcp, "b", "t2", 20001), Err(ClaimError::PortTaken(20001))));
        // UDP space is separate.
        r.claim_port(now, PortKind::Udp, "b", "t2", 20001).unwrap();
        assert!(matches!(r.claim_port(now, PortKind::Tcp, "a", "t", 19999), Err(ClaimError::PortOutOfRange { .. })));
        r.release_port(now, PortKind::Tcp, 20001, "t1", true);
        assert!(r.claim_port(now, PortKind::Tcp, "b", "t3", 20001).is_err());
        assert!(r.claim_port(now, PortKind::Tcp, "a", "t4", 20001).is_ok());
        let free = r.free_ports(now, PortKind::Tcp, &mut rng);
        assert_eq!(free.len(), 2);
        assert!(!free.contains(&20001));
        r.release_port(now, PortKind::Tcp, 20001, "t4", false);
        assert_eq!(r.free_ports(now, PortKind::Tcp, &mut rng).len(), 3);
    }

    fn row(kind: &str, name: &str, owner: &str, reserved_until: Option<i64>) -> ClaimRecord {
        ClaimRecord { kind: kind.into(), name: name.into(), owner_id: owner.into(), reserved_until }
    }

    const NOW_MS: i64 = 1_700_000_000_000;

    #[test]
    fn loaded_claims_are_reserved_to_their_owner() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        let report = r.load(
            now,
            NOW_MS,
            vec![
                // In use when the server stopped: the grace period counts from startup.
                row("subdomain", "keepme", "a", None),
                row("tcp", "20001", "a", None),
                // Released 50 s before the restart: 10 s of its reservation left.
                row("udp", "20002", "a", Some(NOW_MS + 10_000)),
            ],
        );
        assert_eq!((report.loaded, report.expired, report.skipped.len()), (3, 0, 0));
        let later = now + Duration::from_secs(5);
        assert_eq!(
            r.claim_subdomain(later, "b", "t1", Some("keepme"), &mut rng),
            Err(ClaimError::SubdomainReserved { name: "keepme".into(), secs: 55 })
        );
        let tcp = r.claim_port(later, PortKind::Tcp, "b", "t1", 20001);
        assert_eq!(tcp, Err(ClaimError::PortReserved { port: 20001, secs: 55 }));
        let udp = r.claim_port(later, PortKind::Udp, "b", "t1", 20002);
        assert_eq!(udp, Err(ClaimError::PortReserved { port: 20002, secs: 5 }));
        // Reserved ports are not handed out at random either.
        assert_eq!(r.free_ports(later, PortKind::Tcp, &mut rng).len(), 2);
        // The owner gets them back.
        assert_eq!(r.claim_subdomain(later, "a", "t2", Some("keepme"), &mut rng), Ok("keepme".into()));
        assert_eq!(r.claim_port(later, PortKind::Tcp, "a", "t2", 20001), Ok(()));
        // The released one ran out 10 s after startup; the in-use ones last the full grace.
        assert!(r.claim_port(now + Duration::from_secs(11), PortKind::Udp, "b", "t3", 20002).is_ok());
        let mut r = reg();
        r.load(now, NOW_MS, vec![row("subdomain", "keepme", "a", None)]);
        assert!(r.claim_subdomain(now + Duration::from_secs(59), "b", "t", Some("keepme"), &mut rng).is_err());
        assert!(r.claim_subdomain(now + Duration::from_secs(61), "b", "t", Some("keepme"), &mut rng).is_ok());
    }

    #[test]
    fn loaded_reservations_never_outlast_the_grace_period() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        // A timestamp far in the future (clock skew, bad data) is capped at the grace period.
        r.load(now, NOW_MS, vec![row("subdomain", "far", "a", Some(i64::MAX))]);
        assert!(r.claim_subdomain(now + Duration::from_secs(59), "b", "t", Some("far"), &mut rng).is_err());
        assert!(r.claim_subdomain(now + Duration::from_secs(61), "b", "t", Some("far"), &mut rng).is_ok());
    }

    #[test]
    fn expired_and_bad_rows_are_not_loaded() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        let report = r.load(
            now,
            NOW_MS,
            vec![
                row("subdomain", "gone", "a", Some(NOW_MS - 1)),
                row("subdomain", "ended", "a", Some(NOW_MS)),
                row("carrier-pigeon", "x", "a", None),
                row("subdomain", "www", "a", None),
                row("subdomain", "Not Valid", "a", None),
                row("subdomain", "noowner", "", None),
                row("tcp", "19999", "a", None),
                row("tcp", "99999", "a", None),
                row("udp", "-1", "a", None),
                row("tcp", "port", "a", None),
                row("tcp", "20000", "a", None),
                row("tcp", "20000", "b", None),
            ],
        );
        assert_eq!(report.loaded, 1);
        assert_eq!(report.expired, 2);
        let skipped: Vec<(&str, &str)> =
            report.skipped.iter().map(|(r, _)| (r.kind.as_str(), r.name.as_str())).collect();
        assert_eq!(
            skipped,
            vec![
                ("carrier-pigeon", "x"),
                ("subdomain", "www"),
                ("subdomain", "Not Valid"),
                ("subdomain", "noowner"),
                ("tcp", "19999"),
                ("tcp", "99999"),
                ("udp", "-1"),
                ("tcp", "port"),
                ("tcp", "20000"),
            ]
        );
        assert!(report.skipped.iter().all(|(_, why)| !why.is_empty()));
        assert!(r.claim_subdomain(now, "b", "t", Some("gone"), &mut rng).is_ok());
        // The first row for a key wins; the duplicate is skipped.
        assert!(r.claim_port(now, PortKind::Tcp, "b", "t", 20000).is_err());
        assert!(r.claim_port(now, PortKind::Tcp, "a", "t", 20000).is_ok());
    }

    #[test]
    fn changes_track_the_current_state_of_each_key() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        r.claim_subdomain(now, "a", "t1", Some("app"), &mut rng).unwrap();
        r.claim_port(now, PortKind::Tcp, "a", "t1", 20001).unwrap();
        assert_eq!(
            r.take_changes(now, NOW_MS),
            vec![
                ClaimChange::Upsert(row("subdomain", "app", "a", None)),
                ClaimChange::Upsert(row("tcp", "20001", "a", None)),
            ]
        );
        assert!(r.take_changes(now, NOW_MS).is_empty());
        // Released then claimed again before a flush: only the current state is written.
        r.release_subdomain(now, "app", "t1", true);
        r.claim_subdomain(now, "a", "t2", Some("app"), &mut rng).unwrap();
        r.release_port(now, PortKind::Tcp, 20001, "t1", true);
        assert_eq!(
            r.take_changes(now, NOW_MS),
            vec![
                ClaimChange::Upsert(row("subdomain", "app", "a", None)),
                ClaimChange::Upsert(row("tcp", "20001", "a", Some(NOW_MS + 60_000))),
            ]
        );
        // A stale release changes nothing; a forgotten port and an expired reservation are deleted.
        r.release_subdomain(now, "app", "stale", true);
        r.claim_port(now, PortKind::Udp, "a", "t3", 20002).unwrap();
        r.release_port(now, PortKind::Udp, 20002, "t3", false);
        assert_eq!(r.take_changes(now, NOW_MS), vec![ClaimChange::Delete { kind: "udp".into(), name: "20002".into() }]);
        r.prune(now + Duration::from_secs(61));
        assert_eq!(
            r.take_changes(now + Duration::from_secs(61), NOW_MS + 61_000),
            vec![ClaimChange::Delete { kind: "tcp".into(), name: "20001".into() }]
        );
        // A snapshot holds everything and clears pending changes.
        r.release_subdomain(now, "app", "t2", true);
        assert_eq!(r.snapshot(now, NOW_MS), vec![row("subdomain", "app", "a", Some(NOW_MS + 60_000))]);
        assert!(r.take_changes(now, NOW_MS).is_empty());
    }

    #[test]
    fn loaded_state_round_trips_through_a_snapshot() {
        let mut r = reg();
        let now = Instant::now();
        let rows = vec![row("subdomain", "keepme", "a", None), row("tcp", "20001", "b", Some(NOW_MS + 5_000))];
        r.load(now, NOW_MS, rows);
        assert!(r.take_changes(now, NOW_MS).is_empty(), "loading marks nothing dirty");
        // After a restart, both are reservations: the in-use one for the whole grace period.
        assert_eq!(
            r.snapshot(now, NOW_MS),
            vec![
                row("subdomain", "keepme", "a", Some(NOW_MS + 60_000)),
                row("tcp", "20001", "b", Some(NOW_MS + 5_000))
            ]
        );
    }
}
