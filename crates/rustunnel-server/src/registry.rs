//! Who holds which public name and port: a plain state machine with no I/O, driven by
//! `(now, input)`. The server keeps one behind a mutex, which is what makes "two clients race
//! for one name: exactly one wins" true.
//!
//! A name or port freed by a dropped client stays reserved to the same owner for a grace
//! period, so a reconnecting client gets its URL back and nobody else can take it meanwhile.
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::Rng;
use rustunnel_proto::names::{validate_subdomain, SubdomainError};

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Invalid(#[from] SubdomainError),
    #[error("subdomain '{0}' is already in use")]
    SubdomainTaken(String),
    #[error("port {0} is not available")]
    PortTaken(u16),
    #[error("port {port} is outside the server's range {start}-{end}")]
    PortOutOfRange { port: u16, start: u16, end: u16 },
    #[error("no free port left in the server's range")]
    NoPorts,
}

/// Which port space a claim is in (TCP and UDP ports are independent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    Tcp,
    Udp,
}

#[derive(Debug, Clone)]
struct Holder {
    owner: String,
    /// `Some(tunnel)` while in use; `None` once released and only reserved.
    tunnel: Option<String>,
    /// End of the reservation after release.
    until: Option<Instant>,
}

impl Holder {
    fn blocks(&self, owner: &str, now: Instant) -> bool {
        match (&self.tunnel, self.until) {
            (Some(_), _) => true,
            (None, Some(until)) => owner != self.owner && now < until,
            (None, None) => false,
        }
    }
}

pub struct Registry {
    grace: Duration,
    subdomains: HashMap<String, Holder>,
    ports: HashMap<(PortKind, u16), Holder>,
    tcp_range: RangeInclusive<u16>,
    udp_range: RangeInclusive<u16>,
}

impl Registry {
    pub fn new(grace: Duration, tcp_range: RangeInclusive<u16>, udp_range: RangeInclusive<u16>) -> Self {
        Registry { grace, subdomains: HashMap::new(), ports: HashMap::new(), tcp_range, udp_range }
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
        self.expire(now);
        let name = match requested {
            Some(r) => {
                validate_subdomain(r)?;
                if self.subdomains.get(r).is_some_and(|h| h.blocks(owner, now)) {
                    return Err(ClaimError::SubdomainTaken(r.to_string()));
                }
                r.to_string()
            }
            None => loop {
                let candidate = random_name(rng);
                if validate_subdomain(&candidate).is_ok() && !self.subdomains.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        self.subdomains
            .insert(name.clone(), Holder { owner: owner.to_string(), tunnel: Some(tunnel.to_string()), until: None });
        Ok(name)
    }

    /// Releases a name held by `tunnel`; it stays reserved to its owner for the grace period.
    pub fn release_subdomain(&mut self, now: Instant, name: &str, tunnel: &str) {
        if let Some(h) = self.subdomains.get_mut(name) {
            if h.tunnel.as_deref() == Some(tunnel) {
                h.tunnel = None;
                h.until = Some(now + self.grace);
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
        if self.ports.get(&(kind, port)).is_some_and(|h| h.blocks(owner, now)) {
            return Err(ClaimError::PortTaken(port));
        }
        self.ports
            .insert((kind, port), Holder { owner: owner.to_string(), tunnel: Some(tunnel.to_string()), until: None });
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
        }
    }

    /// Which tunnel holds `name` right now.
    pub fn subdomain_holder(&self, name: &str) -> Option<&str> {
        self.subdomains.get(name).and_then(|h| h.tunnel.as_deref())
    }

    /// Drops reservations whose grace period is over.
    fn expire(&mut self, now: Instant) {
        let live = |h: &Holder| h.tunnel.is_some() || h.until.is_some_and(|u| now < u);
        self.subdomains.retain(|_, h| live(h));
        self.ports.retain(|_, h| live(h));
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
        r.release_subdomain(now, "app", "t1");
        assert!(r.claim_subdomain(now + Duration::from_secs(30), "b", "t2", Some("app"), &mut rng).is_err());
        assert!(r.claim_subdomain(now + Duration::from_secs(30), "a", "t3", Some("app"), &mut rng).is_ok());
        r.release_subdomain(now + Duration::from_secs(30), "app", "t3");
        // After the grace period anyone may take it.
        assert!(r.claim_subdomain(now + Duration::from_secs(91), "b", "t4", Some("app"), &mut rng).is_ok());
    }

    #[test]
    fn release_by_a_stale_tunnel_is_ignored() {
        let mut r = reg();
        let now = Instant::now();
        let mut rng = rand::rng();
        r.claim_subdomain(now, "a", "t1", Some("app"), &mut rng).unwrap();
        r.release_subdomain(now, "app", "other");
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
}
