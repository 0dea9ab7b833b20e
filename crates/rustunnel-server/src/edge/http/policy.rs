//! The HTTP edge's request policy, written once for the lean HTTP/1.1 path and the hyper path:
//! which tunnel a `Host` names, who may reach it, whether it has room for one more request,
//! and the page the edge answers with when any of these says no. Each path parses and rewrites
//! requests in its own form and asks this module the questions in the same order: route,
//! access, admission.
//!
//! Access: the tunnel's address rules (`--cidr-allow`, `--cidr-deny`) on the visitor's L4
//! address, then its HTTP Basic login (`--basic-auth`), compared as SHA-256 digests in constant
//! time, the header not passed on, and wrong guesses limited per visitor address.
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustunnel_proto::control::RequestLogEntry;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::OwnedSemaphorePermit;

use super::pages::{self, Page};
use crate::state::{RouteTo, Shared};
use crate::tunnel::Tunnel;

/// The host name without port, lowercased.
pub fn host_name(raw: &str) -> String {
    let name = if raw.starts_with('[') {
        raw
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    name.to_ascii_lowercase()
}

pub use rustunnel_proto::names::subdomain_of;

/// The tunnel a request for `host` (a [`host_name`]) goes to, or the page that answers it:
/// pools pick a healthy member per request; plain tunnels map one to one.
pub fn route(shared: &Shared, host: &str) -> Result<Arc<Tunnel>, Page> {
    let Some(sub) = subdomain_of(host, &shared.config().domain) else {
        return Err(pages::not_found());
    };
    match shared.route_to(sub) {
        RouteTo::Tunnel(t) => Ok(t),
        RouteTo::NoneAvailable => Err(pages::no_healthy_member()),
        RouteTo::ClientGone => Err(pages::bad_gateway()),
        RouteTo::NotFound => Err(pages::not_found()),
    }
}

/// Admits one more request to `tunnel` within its concurrency cap, counted in its stats; the
/// permit is held until the response is finished. A full tunnel answers 503.
pub fn admit(tunnel: &Tunnel) -> Result<OwnedSemaphorePermit, Page> {
    let permit = tunnel.admit().ok_or_else(pages::busy)?;
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    Ok(permit)
}

/// What a forwarding header set by the edge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// The host the visitor asked for, as it asked (port included).
    Host,
    /// The visitor's address (the L4 peer, or the one a trusted balancer's PROXY header names).
    PeerIp,
    /// `http` or `https`: the edge the visitor came in on.
    Scheme,
}

/// The forwarding headers the edge sets on every forwarded request, in the order it writes
/// them. The visitor's own ([`FORWARDING`](super::limits::FORWARDING)) never pass: only the
/// L4 peer is trustworthy.
pub const SET_BY_EDGE: [(&str, Carries); 4] = [
    ("x-forwarded-host", Carries::Host),
    ("x-forwarded-for", Carries::PeerIp),
    ("x-real-ip", Carries::PeerIp),
    ("x-forwarded-proto", Carries::Scheme),
];

/// Why a forwarded request got no response to pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// No response head within the response timeout.
    Timeout,
    /// The upstream ended in order before any response byte. On a multiplexed stream the
    /// client is there (a lost client aborts the stream instead): the local service closed.
    Closed { mux: bool },
    /// No upstream, or it failed, or what came back could not be passed on.
    Failed,
}

/// The page answering a forwarded request that got no response.
pub fn no_answer_page(why: NoAnswer) -> Page {
    match why {
        NoAnswer::Timeout => pages::gateway_timeout(),
        NoAnswer::Closed { mux: true } => pages::local_closed(),
        NoAnswer::Closed { mux: false } | NoAnswer::Failed => pages::bad_gateway(),
    }
}

/// Records a forwarded request: metrics, and an entry for the client's live console.
pub fn log_request(
    shared: &Shared,
    peer: SocketAddr,
    tunnel: &Tunnel,
    method: &str,
    path: &str,
    status: u16,
    started: Instant,
) {
    shared.metrics().observe_http(started.elapsed());
    tunnel.session.log_request(RequestLogEntry {
        tunnel_id: tunnel.id.clone(),
        method: method.chars().take(32).collect(),
        path: path.chars().take(256).collect(),
        status,
        duration_us: started.elapsed().as_micros() as u64,
        remote_addr: peer.ip().to_string(),
    });
}

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
    if let Some(d) = shared.visitor_logins().blocked_for(peer, now) {
        return Verdict::Blocked(d);
    }
    match values {
        [] => Verdict::Challenge,
        [one] if matches(one, want) => Verdict::Pass,
        _ => {
            shared.visitor_logins().record_failure(peer, now);
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
mod tests;
