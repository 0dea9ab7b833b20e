//! Who may reach an HTTP tunnel, judged at the edge before anything reaches it, on every path a
//! request takes: the tunnel's address rules (`--cidr-allow`, `--cidr-deny`) on the visitor's
//! L4 address, then its HTTP Basic login (`--basic-auth`), compared as SHA-256 digests in
//! constant time, the header not passed on, and wrong guesses limited per visitor address.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::pages::{self, Page};
use crate::server::Shared;
use crate::tunnel::Tunnel;

/// What to do with a request to a tunnel.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No credentials required, or the right ones given: forward (without the header).
    Pass,
    /// Missing or wrong credentials: 401 with a challenge.
    Challenge,
    /// Too many wrong ones from this address: 429 until the block ends.
    Blocked(Duration),
}

impl Verdict {
    /// The page answering a request that did not pass.
    pub fn page(&self) -> Option<Page> {
        match self {
            Verdict::Pass => None,
            Verdict::Challenge => Some(pages::unauthorized()),
            Verdict::Blocked(d) => Some(pages::too_many_logins(rustunnel_proto::limits::whole_secs(*d))),
        }
    }
}

/// The page to answer a request with when the visitor at `peer` may not reach `tunnel`: outside
/// its address rules, or without its login (`authorization`: the values of the request's
/// `Authorization` headers, read only for a tunnel with a login).
pub fn refusal<'a>(
    shared: &Shared,
    tunnel: &Tunnel,
    peer: IpAddr,
    authorization: impl FnOnce() -> Vec<&'a [u8]>,
) -> Option<Page> {
    if !tunnel.access.ip_rules.permits(peer) {
        return Some(pages::address_refused());
    }
    let want = tunnel.access.basic_auth?;
    check(shared, &want, peer, &authorization()).page()
}

/// Judges the values of a request's `Authorization` headers against the login digest `want`.
fn check(shared: &Shared, want: &[u8; 32], peer: IpAddr, values: &[&[u8]]) -> Verdict {
    let now = Instant::now();
    if let Some(d) = shared.visitor_logins.blocked_for(peer, now) {
        return Verdict::Blocked(d);
    }
    match values {
        [] => Verdict::Challenge,
        [one] if matches(one, want) => Verdict::Pass,
        _ => {
            shared.visitor_logins.record_failure(peer, now);
            Verdict::Challenge
        }
    }
}

/// Whether `Basic <base64 of user:password>` carries the credentials whose digest is `want`.
fn matches(value: &[u8], want: &[u8; 32]) -> bool {
    // The scheme name is case-insensitive (RFC 9110).
    let Some((scheme, b64)) = value.split_at_checked(6) else { return false };
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return false;
    }
    // Within the longest acceptable credentials (64 + 1 + 128 characters of up to 4 bytes).
    if b64.len() > 1100 {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) else { return false };
    let digest: [u8; 32] = Sha256::digest(&given).into();
    bool::from(digest.ct_eq(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_credentials_match() {
        let want: [u8; 32] = Sha256::digest(b"ana:correct horse").into();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(matches(format!("Basic {}", b64("ana:correct horse")).as_bytes(), &want));
        assert!(matches(format!("basic {}", b64("ana:correct horse")).as_bytes(), &want));
        assert!(matches(format!("BASIC {}", b64("ana:correct horse")).as_bytes(), &want));
        assert!(!matches(b"Basic", &want));
        for wrong in ["ana:correct hors", "Ana:correct horse", "ana:correct horse ", ""] {
            assert!(!matches(format!("Basic {}", b64(wrong)).as_bytes(), &want), "{wrong}");
        }
        assert!(!matches(format!("Bearer {}", b64("ana:correct horse")).as_bytes(), &want));
        assert!(!matches(b"Basic !!!not base64", &want));
        assert!(!matches(format!("Basic {}", "A".repeat(5000)).as_bytes(), &want));
    }
}
