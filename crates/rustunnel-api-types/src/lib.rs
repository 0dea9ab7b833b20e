//! REST API data types shared by `rustunnel-server` (which serves them), the `rustunnel` CLI
//! and `rustunnel-mcp` (which consume them), so the wire cannot drift between them.
//!
//! Conventions: JSON, snake_case fields, times as RFC 3339 UTC strings, optional fields are
//! omitted when absent. Every error is [`ErrorBody`]: `{"error":{"code":"...","message":"..."}}`.
use serde::{Deserialize, Serialize};

/// `{"error":{"code":"...","message":"..."}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code: `bad_request`, `unauthorized`, `not_found`, `rate_limited`, ...
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

/// Tunnel counts by protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProtocolCounts {
    pub http: u64,
    pub tcp: u64,
    pub udp: u64,
}

/// `GET /api/status` (public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    pub version: String,
    pub region: String,
    pub sessions: u64,
    pub tunnels: ProtocolCounts,
}

/// One region (`GET /api/regions`, public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Region {
    pub id: String,
    pub name: String,
    pub location: String,
    /// Control-plane `host:port` clients connect to (`--server`).
    pub control_addr: String,
    /// Management API base URL.
    pub api_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionList {
    pub regions: Vec<Region>,
}

/// An open tunnel (`GET /api/tunnels`, `GET /api/tunnels/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tunnel {
    pub id: String,
    pub name: String,
    /// `http`, `tcp` or `udp`.
    pub protocol: String,
    /// Complete, usable URL (`http://app.example.com`, `tcp://example.com:20001`).
    pub public_url: String,
    pub public_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Local address as the client declared it (`localhost:3000`).
    pub local_addr: String,
    /// Address the client connected from.
    pub client_addr: String,
    pub region: String,
    pub owner_id: String,
    /// RFC 3339.
    pub created_at: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    pub connections: u64,
    /// `active`.
    pub status: String,
    /// Visitors must log in (the tunnel was opened with `--basic-auth`); omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub basic_auth: bool,
    /// Visitor networks accepted (empty: any) and refused (`--cidr-allow`, `--cidr-deny`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TunnelList {
    pub tunnels: Vec<Tunnel>,
}

/// A load-balanced pool (`GET /api/pools`): members share one HTTP subdomain or TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pool {
    /// Group name the members joined with.
    pub name: String,
    /// `http` or `tcp`.
    pub protocol: String,
    pub public_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Members that take traffic now (healthy and not leaving).
    pub healthy_members: u64,
    /// The members visible to the caller (the admin sees all).
    pub members: Vec<PoolMember>,
}

/// One member of a pool: a tunnel (see `GET /api/tunnels/{tunnel_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolMember {
    pub tunnel_id: String,
    pub name: String,
    /// As the member's own health check last saw its local service.
    pub healthy: bool,
    /// Leaving gracefully: finishing in-flight traffic, getting no new traffic.
    pub draining: bool,
    /// What the last failed health check saw (`HTTP 503`, `connection refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<String>,
    /// The member's health check (`http GET /health every 5s`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    pub local_addr: String,
    pub client_addr: String,
    pub owner_id: String,
    /// Traffic this member served: HTTP requests, TCP connections, bytes.
    pub requests: u64,
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests or connections being served right now.
    pub in_flight: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolList {
    pub pools: Vec<Pool>,
}

/// One end of a P2P service or link: a client's control session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct P2pPeer {
    pub session_id: String,
    /// Address the client's control connection comes from (empty once it is gone).
    pub client_addr: String,
    /// The client's user agent (`rustunnel/0.x`).
    pub agent: String,
}

/// A visitor's link to a published P2P service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct P2pLink {
    pub link_id: String,
    pub visitor: P2pPeer,
    /// `direct` (hole-punched, no bytes through the server), `relayed`, or `pending` (secret
    /// proof or path selection not finished).
    pub mode: String,
    /// Bytes relayed through the server for this link (visitor -> publisher, and back); the
    /// direct path carries none.
    pub relayed_bytes_in: u64,
    pub relayed_bytes_out: u64,
    /// Seconds since the link was requested.
    pub age_secs: u64,
}

/// A published P2P service and its links (`GET /api/p2p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct P2pService {
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub owner_id: String,
    /// The publisher's session; absent when only links of a service that was withdrawn remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<P2pPeer>,
    pub links: Vec<P2pLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct P2pList {
    pub services: Vec<P2pService>,
}

/// `DELETE /api/tunnels/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClosedTunnel {
    pub id: String,
    pub closed: bool,
}

/// A history row (`GET /api/history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub id: String,
    pub name: String,
    pub protocol: String,
    pub public_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub local_addr: String,
    pub client_addr: String,
    pub region: String,
    pub owner_id: String,
    pub opened_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    pub active: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    pub connections: u64,
    /// `closed_by_api`, `client_request`, `session_ended`, `server_shutdown`, `server_restart`, `token_revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryList {
    pub entries: Vec<HistoryEntry>,
    pub limit: u32,
    pub offset: u32,
}

/// A token as listed (never its value or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Token {
    pub id: String,
    pub label: String,
    pub owner_id: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// Subdomains it may use (exact names, `prefix*` patterns); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomains: Option<Vec<String>>,
    /// TCP/UDP ports it may use (`20000-20099`, `20500`); absent: any in the server's ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

/// `POST /api/tokens` body. `owner_id` is for the admin token only: mint for an existing owner
/// (omitted: a new owner). A non-admin token always mints for its own owner.
///
/// `subdomains` and `ports` limit what the new token may open. Left out, a token minted by the
/// admin token has no limit there and one minted by another token inherits that token's; a
/// token can never mint one with rights beyond its own (403).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Exact subdomains and `prefix*` patterns (`["docs", "ci-*"]`; `["*"]`: any), at most 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomains: Option<Vec<String>>,
    /// Ports and port ranges (`["20000-20099", "20500"]`), at most 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
}

/// `POST /api/tokens` answer: the only time the token value is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub token: String,
    pub id: String,
    pub label: String,
    pub owner_id: String,
    pub created_at: String,
    /// The rights it got (absent: no limit there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
}

/// `DELETE /api/tokens/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedToken {
    pub id: String,
    pub revoked: bool,
    /// Tunnels that were open with this token and are now closed.
    pub closed_tunnels: u32,
}
