//! The HTTP edge's limits and header lists, in one place for both paths: the lean HTTP/1.1
//! path applies them while parsing, the hyper path configures hyper with them and checks the
//! rest itself, and the framing tracker sizes its buffer from them.

/// Most header fields a request may have; with more it gets a 431 (hyper's default limit).
pub const MAX_HEADERS: usize = 100;

/// Longest request head; a longer one gets a 431 (as hyper's HTTP/1 buffer limit, which is
/// set to this value). On HTTP/2 a header list is counted as HTTP/2 counts it (name, value and
/// 32 bytes per field).
pub const HEAD_LIMIT: usize = 64 * 1024;

/// How much of a head the framing tracker buffers before it stops following a connection. A
/// head hyper accepts fits in [`HEAD_LIMIT`]; the slack on top makes the tracker stop only on
/// heads hyper refuses as well, never before hyper does.
pub const TRACKED_HEAD_LIMIT: usize = HEAD_LIMIT + 1024;

/// Hop-by-hop headers, never forwarded in either direction (RFC 9110 7.6.1), besides those a
/// `Connection` header names. The lean path keeps `transfer-encoding` on a chunked response,
/// whose chunks pass through as they are; the hyper path keeps `upgrade` on an upgrade.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the edge sets itself from the real peer; the visitor's own are dropped:
/// only the L4 peer (or a trusted balancer's PROXY header) is trustworthy.
pub const FORWARDING: [&str; 5] =
    ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "forwarded"];

/// Whether `name` is one of `list`, ASCII case-insensitively.
pub fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}
