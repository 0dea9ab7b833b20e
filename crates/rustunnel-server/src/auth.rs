//! Authentication of control connections: the admin token, stored client tokens, and the
//! anonymous owner of loopback dev servers. Failures are answered identically whatever the
//! cause, and per-IP failures are rate-limited.
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::rights::Rights;
use crate::store::{Store, StoreError};

/// Owner id of the admin token.
pub const ADMIN_OWNER: &str = "admin";
/// Owner id of token-less clients on a loopback dev server.
pub const ANONYMOUS_OWNER: &str = "local";

/// Who a control connection (or API request) acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub owner_id: String,
    /// The token used, `None` for admin and anonymous.
    pub token_id: Option<String>,
    pub is_admin: bool,
    /// What it may open: the token's rights, no limits for admin and anonymous.
    pub rights: Rights,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed: token rejected by the server")]
    Rejected,
    #[error("too many failed authentication attempts from this address; try again in {} s", rustunnel_proto::limits::whole_secs(*retry_after))]
    RateLimited {
        /// Until the address's block ends.
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failures allowed per IP within [`WINDOW`] before further attempts are refused outright.
const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Bound on tracked addresses, so a spray of source addresses cannot grow the map forever.
const MAX_TRACKED: usize = 10_000;

/// Per-IP failure counter with a fixed window.
#[derive(Default)]
pub struct FailureLimiter {
    map: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// How long `ip` stays refused, if it is.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.map.lock();
        let (n, start) = map.get(&ip)?;
        let left = WINDOW.checked_sub(now.duration_since(*start)).filter(|d| !d.is_zero())?;
        (*n >= MAX_FAILURES).then_some(left)
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut map = self.map.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, start)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                // Still full of live entries: forget the oldest half rather than grow.
                let mut starts: Vec<Instant> = map.values().map(|(_, s)| *s).collect();
                starts.sort();
                let cutoff = starts[starts.len() / 2];
                map.retain(|_, (_, s)| *s > cutoff);
            }
        }
        let e = map.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

pub struct Authenticator {
    admin_hash: Option<[u8; 32]>,
    allow_anonymous: bool,
    pub limiter: FailureLimiter,
    /// Rejected tokens and rate-limited attempts, for `/metrics`.
    failures: AtomicU64,
    rate_limited: AtomicU64,
}

impl Authenticator {
    pub fn new(admin_token: Option<&str>, allow_anonymous: bool) -> Self {
        Authenticator {
            admin_hash: admin_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            allow_anonymous,
            limiter: FailureLimiter::default(),
            failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// `(rejected tokens, rate-limited attempts)` since start.
    pub fn failure_counts(&self) -> (u64, u64) {
        (self.failures.load(Ordering::Relaxed), self.rate_limited.load(Ordering::Relaxed))
    }

    pub fn is_admin_token(&self, token: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.admin_hash.is_some_and(|a| bool::from(a.ct_eq(&h)))
    }

    pub async fn authenticate(&self, store: &Store, ip: IpAddr, token: &str) -> Result<Principal, AuthError> {
        let now = Instant::now();
        if let Some(retry_after) = self.limiter.blocked_for(ip, now) {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(AuthError::RateLimited { retry_after });
        }
        if token.is_empty() && self.allow_anonymous {
            return Ok(Principal {
                owner_id: ANONYMOUS_OWNER.into(),
                token_id: None,
                is_admin: false,
                rights: Rights::unrestricted(),
            });
        }
        if !token.is_empty() && token.len() <= rustunnel_proto::limits::MAX_TOKEN_LEN {
            if self.is_admin_token(token) {
                return Ok(Principal {
                    owner_id: ADMIN_OWNER.into(),
                    token_id: None,
                    is_admin: true,
                    rights: Rights::unrestricted(),
                });
            }
            if let Some(t) = store.verify_token(token).await? {
                return Ok(Principal { owner_id: t.owner_id, token_id: Some(t.id), is_admin: false, rights: t.rights });
            }
        }
        self.limiter.record_failure(ip, now);
        self.failures.fetch_add(1, Ordering::Relaxed);
        Err(AuthError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_failures_and_forgives_later() {
        let l = FailureLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(l.blocked_for(ip, t0), None);
            l.record_failure(ip, t0);
        }
        // Refused until the window that counted the failures ends, and told how long.
        assert_eq!(l.blocked_for(ip, t0), Some(WINDOW));
        assert_eq!(l.blocked_for(ip, t0 + Duration::from_secs(45)), Some(WINDOW - Duration::from_secs(45)));
        assert_eq!(l.blocked_for("10.0.0.2".parse().unwrap(), t0), None);
        assert_eq!(l.blocked_for(ip, t0 + WINDOW), None);
    }

    #[test]
    fn limiter_map_is_bounded() {
        let l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            l.record_failure(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_micros(i as u64));
        }
        assert!(l.map.lock().len() <= MAX_TRACKED);
    }

    #[tokio::test]
    async fn same_answer_for_every_bad_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        let a = Authenticator::new(Some("admin-secret"), false);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let huge = "x".repeat(1 << 20);
        for bad in ["", "wrong", "admin-secret\n", huge.as_str()] {
            let e = a.authenticate(&store, ip, bad).await.unwrap_err();
            assert_eq!(e.to_string(), AuthError::Rejected.to_string());
        }
        assert!(a.authenticate(&store, ip, "admin-secret").await.unwrap().is_admin);
        let (_, raw) = store.create_token(None, "x").await.unwrap();
        assert!(!a.authenticate(&store, ip, &raw).await.unwrap().is_admin);
    }
}
