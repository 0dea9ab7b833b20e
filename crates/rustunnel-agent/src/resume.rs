//! Session resumption (sans-IO).
//!
//! After a Join or Resume handshake the host sends, inside the encrypted Welcome, a
//! fresh random `resume_id` and `seed`. Both sides derive
//! `secret = SHA-256("rustunnel-agent resume v1" || h || seed)` where `h` is the
//! Noise handshake hash. The secret depends on the forward-secret channel (the seed
//! never crosses in clear), so someone who later learns the invite link cannot
//! resume. A Resume handshake uses it as the Noise PSK; each resume rotates it.

use rand::RngCore as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// What a member needs to reconnect. Zeroized on drop; `Debug` masked.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeTicket {
    pub id: [u8; 16],
    pub secret: [u8; 32],
}

impl Drop for ResumeTicket {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResumeTicket({}, ***)", hex::encode(self.id))
    }
}

/// Derives the resumption secret from the handshake hash and the host's seed.
pub fn derive_secret(handshake_hash: &[u8; 32], seed: &[u8; 32]) -> [u8; 32] {
    let d = Sha256::new()
        .chain_update(b"rustunnel-agent resume v1")
        .chain_update(handshake_hash)
        .chain_update(seed)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

/// Host side: a new id and seed for a member, plus the resulting ticket.
pub fn issue(handshake_hash: &[u8; 32]) -> ([u8; 32], ResumeTicket) {
    let mut id = [0u8; 16];
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut seed);
    let secret = derive_secret(handshake_hash, &seed);
    (seed, ResumeTicket { id, secret })
}

/// Guest side: rebuilds the ticket from the Welcome fields (hex).
pub fn accept(handshake_hash: &[u8; 32], id_hex: &str, seed_hex: &str) -> Option<ResumeTicket> {
    let mut id = [0u8; 16];
    let mut seed = [0u8; 32];
    hex::decode_to_slice(id_hex, &mut id).ok()?;
    hex::decode_to_slice(seed_hex, &mut seed).ok()?;
    let secret = derive_secret(handshake_hash, &seed);
    seed.zeroize();
    Some(ResumeTicket { id, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_ticket() {
        let h = [3u8; 32];
        let (seed, host) = issue(&h);
        let guest = accept(&h, &hex::encode(host.id), &hex::encode(seed)).unwrap();
        assert_eq!(host, guest);
        // A different handshake (e.g. someone replaying the invite) gives another secret.
        let other = accept(&[4u8; 32], &hex::encode(host.id), &hex::encode(seed)).unwrap();
        assert_ne!(other.secret, host.secret);
        assert!(accept(&h, "zz", &hex::encode(seed)).is_none());
        assert!(!format!("{host:?}").contains(&hex::encode(host.secret)));
    }
}
