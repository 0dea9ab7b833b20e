//! The host's invite table (sans-IO).
//!
//! Only the host owns an [`InviteTable`], so only the host can mint. Lookup is by
//! the non-secret [`InviteId`]; the key is never compared here: it is handed to
//! the Noise responder, and only a handshake that completes with key confirmation
//! calls [`InviteTable::redeem`]. A wrong key therefore never consumes an invite.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::link::{InviteId, InviteKey};

/// Default lifetime of an invite.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(10 * 60);
/// Most invites that may be outstanding (unredeemed, unexpired) at once.
pub const MAX_OUTSTANDING_INVITES: usize = 16;

/// Why an invite cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    #[error("this join link is unknown to the host; ask the host for a new link")]
    Unknown,
    #[error("this join link has expired; ask the host for a new link (tunnel_invite)")]
    Expired,
    #[error("this join link was already used; links are single-use, ask the host for a new one")]
    AlreadyUsed,
}

/// Why minting failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("too many outstanding invites (max {MAX_OUTSTANDING_INVITES}); wait for some to be used or expire")]
    TooMany,
}

#[derive(Debug)]
enum State {
    Pending,
    Used,
}

#[derive(Debug)]
struct Entry {
    key: InviteKey,
    expires_at: Instant,
    state: State,
}

/// A freshly minted invite.
#[derive(Debug, Clone)]
pub struct MintedInvite {
    pub id: InviteId,
    pub key: InviteKey,
    pub expires_at: Instant,
}

/// Table of invites keyed by id. All operations take `now` so tests control time.
#[derive(Debug)]
pub struct InviteTable {
    entries: HashMap<InviteId, Entry>,
    ttl: Duration,
    max_outstanding: usize,
}

impl InviteTable {
    pub fn new(ttl: Duration, max_outstanding: usize) -> Self {
        InviteTable { entries: HashMap::new(), ttl, max_outstanding }
    }

    /// Mints a random single-use invite.
    pub fn mint(&mut self, now: Instant) -> Result<MintedInvite, MintError> {
        self.gc(now);
        if self.pending(now) >= self.max_outstanding {
            return Err(MintError::TooMany);
        }
        let m = MintedInvite { id: InviteId::random(), key: InviteKey::random(), expires_at: now + self.ttl };
        self.entries.insert(m.id, Entry { key: m.key.clone(), expires_at: m.expires_at, state: State::Pending });
        Ok(m)
    }

    /// Key to run the handshake with. Does not consume anything.
    pub fn key_for(&self, id: &InviteId, now: Instant) -> Result<InviteKey, RedeemError> {
        let e = self.entries.get(id).ok_or(RedeemError::Unknown)?;
        match e.state {
            State::Used => Err(RedeemError::AlreadyUsed),
            State::Pending if now >= e.expires_at => Err(RedeemError::Expired),
            State::Pending => Ok(e.key.clone()),
        }
    }

    /// Consumes the invite after a completed handshake. Exactly one caller wins;
    /// atomicity comes from `&mut self` behind the host's lock.
    pub fn redeem(&mut self, id: &InviteId, now: Instant) -> Result<(), RedeemError> {
        let e = self.entries.get_mut(id).ok_or(RedeemError::Unknown)?;
        match e.state {
            State::Used => Err(RedeemError::AlreadyUsed),
            State::Pending if now >= e.expires_at => Err(RedeemError::Expired),
            State::Pending => {
                e.state = State::Used;
                Ok(())
            }
        }
    }

    /// Unredeemed, unexpired invites.
    pub fn pending(&self, now: Instant) -> usize {
        self.entries.values().filter(|e| matches!(e.state, State::Pending) && now < e.expires_at).count()
    }

    /// Forgets long-dead entries so the table stays bounded. Used/expired entries
    /// are kept for one extra TTL so a late redeemer still gets a precise error.
    pub fn gc(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries.retain(|_, e| now < e.expires_at + ttl || matches!(e.state, State::Pending) && now < e.expires_at);
    }

    /// Drops every invite (room closed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl Default for InviteTable {
    fn default() -> Self {
        Self::new(DEFAULT_INVITE_TTL, MAX_OUTSTANDING_INVITES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use() {
        let now = Instant::now();
        let mut t = InviteTable::default();
        let m = t.mint(now).unwrap();
        assert_eq!(t.pending(now), 1);
        assert_eq!(t.key_for(&m.id, now).unwrap(), m.key);
        t.redeem(&m.id, now).unwrap();
        assert_eq!(t.redeem(&m.id, now), Err(RedeemError::AlreadyUsed));
        assert_eq!(t.key_for(&m.id, now), Err(RedeemError::AlreadyUsed));
        assert_eq!(t.pending(now), 0);
    }

    #[test]
    fn expiry_uses_injected_clock() {
        let now = Instant::now();
        let mut t = InviteTable::default();
        let m = t.mint(now).unwrap();
        let almost = now + DEFAULT_INVITE_TTL - Duration::from_millis(1);
        assert!(t.key_for(&m.id, almost).is_ok());
        let later = now + DEFAULT_INVITE_TTL;
        assert_eq!(t.key_for(&m.id, later), Err(RedeemError::Expired));
        assert_eq!(t.redeem(&m.id, later), Err(RedeemError::Expired));
        assert_eq!(t.pending(later), 0);
        // After a further TTL the entry is forgotten entirely.
        t.gc(later + DEFAULT_INVITE_TTL);
        assert_eq!(t.key_for(&m.id, later + DEFAULT_INVITE_TTL), Err(RedeemError::Unknown));
    }

    #[test]
    fn lookup_never_consumes() {
        let now = Instant::now();
        let mut t = InviteTable::default();
        let m = t.mint(now).unwrap();
        for _ in 0..5 {
            t.key_for(&m.id, now).unwrap();
        }
        assert_eq!(t.pending(now), 1);
        assert_eq!(t.key_for(&InviteId([0; 16]), now), Err(RedeemError::Unknown));
    }

    #[test]
    fn outstanding_is_bounded() {
        let now = Instant::now();
        let mut t = InviteTable::new(DEFAULT_INVITE_TTL, 3);
        for _ in 0..3 {
            t.mint(now).unwrap();
        }
        assert_eq!(t.mint(now).unwrap_err(), MintError::TooMany);
        // Expired ones free their slot.
        assert!(t.mint(now + DEFAULT_INVITE_TTL).is_ok());
    }
}
