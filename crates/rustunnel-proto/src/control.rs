//! Control-plane messages. One JSON object per WebSocket text message, tagged by `type`.
//!
//! Unknown message types decode to the `Unknown` variant (never a panic), so a newer peer's
//! additions are answered with an error instead of tearing the session down.
use serde::{Deserialize, Serialize};

use crate::limits::MAX_CONTROL_FRAME;

/// Kind of tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Ok(Protocol::Http),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("unknown protocol '{other}' (expected http, tcp or udp)")),
        }
    }
}

/// What a client asks for when it opens a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// Client-side name, unique within the session (`web`, `db`, or the protocol for one-off tunnels).
    pub name: String,
    pub protocol: Protocol,
    /// Requested subdomain for HTTP tunnels; `None` asks for a random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// Requested public port for TCP/UDP tunnels; `None` lets the server choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// Local address as the user declared it (`localhost:3000`), for display and the API.
    pub local_addr: String,
    /// Join (or create) a load-balanced pool instead of holding the name or port alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupSpec>,
    /// HTTP tunnels: visitors must present these credentials (HTTP Basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<crate::basic_auth::BasicAuth>,
    /// Visitor networks (`10.0.0.0/8`, `203.0.113.7`, `2001:db8::/32`) the tunnel accepts; none:
    /// any (see [`crate::ip_rules`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_allow: Vec<String>,
    /// Visitor networks the tunnel refuses, whatever `cidr_allow` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidr_deny: Vec<String>,
    /// HTTP tunnels: the `Host` the local service gets instead of the public one (the public
    /// one stays in `X-Forwarded-Host`); see [`valid_host_header`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// The client sends each connection's visitor address on to the local service (PROXY
    /// protocol): HTTP upstreams then name their visitor in the stream header, and a kept one
    /// serves only later requests from that visitor's address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream_per_visitor: bool,
}

/// A tunnel option that only some protocols take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecOption {
    Subdomain,
    RemotePort,
    BasicAuth,
    HostHeader,
}

impl SpecOption {
    /// Its name in config files and tool arguments (`--` and `-` for `_` make the flag).
    pub fn key(self) -> &'static str {
        match self {
            SpecOption::Subdomain => "subdomain",
            SpecOption::RemotePort => "remote_port",
            SpecOption::BasicAuth => "basic_auth",
            SpecOption::HostHeader => "host_header",
        }
    }

    /// The protocols that take it, as a user reads them.
    pub fn protocols(self) -> &'static str {
        match self {
            SpecOption::RemotePort => "tcp and udp",
            _ => "http",
        }
    }
}

/// What a `host_header` must be (the client turns `rewrite` into the local address).
pub const HOST_HEADER_RULE: &str = "must be `rewrite` or a host such as localhost:3000 (1-255 visible characters)";

/// What is wrong with a tunnel request: one set of rules for every way in (flags, config
/// files, MCP tools) and for the server, which checks again whatever a client says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the tunnel name must be 1-{} characters", crate::limits::MAX_TUNNEL_NAME)]
    Name,
    #[error("{} applies to {} tunnels only", .0.key(), .0.protocols())]
    NotFor(SpecOption),
    #[error(transparent)]
    BasicAuth(#[from] crate::basic_auth::BasicAuthError),
    #[error(transparent)]
    IpRules(#[from] crate::ip_rules::IpRuleError),
    #[error("host_header {HOST_HEADER_RULE}")]
    HostHeader,
}

impl TunnelSpec {
    /// A request for a `protocol` tunnel named `name` to `local_addr`, with nothing else asked
    /// for (the other fields are set with struct update syntax).
    pub fn new(name: impl Into<String>, protocol: Protocol, local_addr: impl Into<String>) -> Self {
        TunnelSpec {
            name: name.into(),
            protocol,
            subdomain: None,
            remote_port: None,
            local_addr: local_addr.into(),
            group: None,
            basic_auth: None,
            cidr_allow: Vec::new(),
            cidr_deny: Vec::new(),
            host_header: None,
            upstream_per_visitor: false,
        }
    }

    /// A request that sets every option an HTTP tunnel takes, for round-trip tests and fuzz
    /// seeds; not part of the API.
    #[doc(hidden)]
    pub fn sample() -> Self {
        TunnelSpec {
            subdomain: Some("app".into()),
            group: Some(GroupSpec {
                name: "pool".into(),
                key: "k".into(),
                alert_webhook: Some("http://127.0.0.1:9/alert".into()),
                health_check: Some("http GET /health every 5s".into()),
            }),
            basic_auth: crate::basic_auth::BasicAuth::parse("ana:correct horse").ok(),
            cidr_allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            cidr_deny: vec!["10.9.0.0/16".into()],
            host_header: Some("localhost:3000".into()),
            ..TunnelSpec::new("web", Protocol::Http, "localhost:3000")
        }
    }

    /// Checks the request against the rules every end shares (the server adds its own: names
    /// taken, ports in range, pools).
    pub fn check(&self) -> Result<(), SpecError> {
        if self.name.is_empty() || self.name.len() > crate::limits::MAX_TUNNEL_NAME {
            return Err(SpecError::Name);
        }
        let http = self.protocol == Protocol::Http;
        let misplaced = [
            (SpecOption::Subdomain, self.subdomain.is_some() && !http),
            (SpecOption::RemotePort, self.remote_port.is_some() && http),
            (SpecOption::BasicAuth, self.basic_auth.is_some() && !http),
            (SpecOption::HostHeader, self.host_header.is_some() && !http),
        ];
        if let Some((option, _)) = misplaced.into_iter().find(|(_, wrong)| *wrong) {
            return Err(SpecError::NotFor(option));
        }
        if let Some(a) = &self.basic_auth {
            a.checked()?;
        }
        crate::ip_rules::IpRules::parse(&self.cidr_allow, &self.cidr_deny)?;
        if self.host_header.as_deref().is_some_and(|h| !valid_host_header(h)) {
            return Err(SpecError::HostHeader);
        }
        Ok(())
    }
}

/// Whether `v` can be sent as a `Host` header: 1-255 visible ASCII characters.
pub fn valid_host_header(v: &str) -> bool {
    !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Membership of a load-balanced pool. Every member of a pool names the same group and
/// presents the same key; the key travels only inside the TLS control channel and the server
/// keeps nothing but a keyed hash of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Pool name; for HTTP pools also the default subdomain.
    pub name: String,
    /// Shared secret of the pool.
    pub key: String,
    /// Where the server POSTs an alert when the pool has no healthy member left (http:// URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_webhook: Option<String>,
    /// Human description of the member's health check (`http GET /health every 5s`), for the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
}

impl std::fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSpec")
            .field("name", &self.name)
            .field("key", &"***")
            .field("alert_webhook", &self.alert_webhook)
            .field("health_check", &self.health_check)
            .finish()
    }
}

/// A tunnel the server has opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    pub tunnel_id: String,
    pub name: String,
    pub protocol: Protocol,
    /// Complete, usable public URL (`http://app.example.com`, `tcp://example.com:20001`).
    pub public_url: String,
    /// Every public URL of the tunnel (HTTP and HTTPS edges for HTTP tunnels).
    #[serde(default)]
    pub public_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
}

/// Machine-readable error codes carried by rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    VersionMismatch,
    Unauthorized,
    RateLimited,
    InvalidSubdomain,
    SubdomainTaken,
    /// The name is held for the client that had it until its grace period ends.
    SubdomainReserved,
    PortUnavailable,
    /// The port is held for the client that had it until its grace period ends.
    PortReserved,
    NoPortsAvailable,
    TooManyTunnels,
    DuplicateName,
    ProtocolDisabled,
    BadRequest,
    ShuttingDown,
    Internal,
    /// The pool exists and this member's group key does not match it.
    GroupKeyMismatch,
    /// A pool of that name belongs to another owner (members of a pool share one owner).
    GroupTaken,
    /// No P2P service of that name is published for this owner.
    P2pUnknownName,
    /// A P2P service of that name is already published for this owner.
    P2pNameTaken,
    /// The P2P secret proof failed.
    P2pWrongSecret,
    /// The subdomain or port is outside the rights of the client's token.
    NotPermitted,
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Errors after which retrying the same thing cannot succeed.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::VersionMismatch
                | ErrorCode::Unauthorized
                | ErrorCode::BadRequest
                | ErrorCode::GroupKeyMismatch
                | ErrorCode::P2pWrongSecret
                | ErrorCode::P2pUnknownName
                | ErrorCode::NotPermitted
        )
    }
}

/// Why a tunnel was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Closed through the management API; the client must not re-create it.
    ClosedByApi,
    /// The token that opened it was revoked.
    TokenRevoked,
    /// The client asked for it.
    ClientRequest,
    /// The client's session ended.
    SessionEnded,
    /// The server shut down.
    ServerShutdown,
    #[serde(other)]
    Other,
}

/// One HTTP request served through a tunnel, reported to the client for its live log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    pub tunnel_id: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_us: u64,
    pub remote_addr: String,
}

/// Client -> server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message: protocol version and credentials.
    Hello {
        version: u32,
        /// Absent is the same as empty: a missing token gets the same answer as a wrong one.
        #[serde(default)]
        token: String,
        /// Free-form client description (`rustunnel/0.1.0`), for logs.
        #[serde(default)]
        agent: String,
        /// The client asks for plain (unencrypted) data connections; see [`crate::plain`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        plain_data: bool,
        /// The client takes multiplexed data connections ([`crate::stream::StreamHeader::mux`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        mux: bool,
    },
    OpenTunnel {
        req_id: u64,
        spec: TunnelSpec,
    },
    CloseTunnel {
        tunnel_id: String,
    },
    /// Result of the member's own health check on its local service; sent when it changes.
    HealthReport {
        tunnel_id: String,
        healthy: bool,
        /// What the last check saw (`HTTP 503`, `connection refused`), for the API.
        #[serde(default)]
        detail: String,
    },
    /// Leave gracefully: stop sending new traffic, let in-flight traffic finish, then close
    /// the tunnel and answer `TunnelDrained`.
    DrainTunnel {
        tunnel_id: String,
    },
    /// Publish a P2P service under `name` (scoped to the token's owner). See `docs/p2p.md`.
    P2pPublish {
        name: String,
        protocol: Protocol,
    },
    /// Open a P2P link to the owner's service `name`: the visitor's PAKE message, its QUIC
    /// certificate fingerprint and its UDP candidates. `link_id` is chosen by the visitor.
    P2pConnect {
        link_id: String,
        name: String,
        protocol: Protocol,
        pake: String,
        fingerprint: String,
        #[serde(default)]
        candidates: Vec<String>,
    },
    /// The publisher's answer to `p2p_incoming`: its PAKE message and key confirmation.
    P2pAnswer {
        link_id: String,
        pake: String,
        confirm: String,
        fingerprint: String,
        #[serde(default)]
        candidates: Vec<String>,
    },
    /// The visitor's key confirmation.
    P2pConfirm {
        link_id: String,
        confirm: String,
    },
    /// The publisher's verdict on the visitor's confirmation.
    P2pResult {
        link_id: String,
        accepted: bool,
    },
    /// The path the visitor uses for the link (`direct` or `relayed`), for the API.
    P2pMode {
        link_id: String,
        mode: String,
    },
    /// Ends a link (either side).
    P2pClose {
        link_id: String,
        #[serde(default)]
        reason: String,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    #[serde(other)]
    Unknown,
}

/// Server -> client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        version: u32,
        session_id: String,
        /// Secret that authenticates this session's data connections.
        data_key: String,
        heartbeat_secs: u64,
        /// How many idle data connections the client should keep open.
        pool_size: u16,
        server_agent: String,
        /// UDP port of the server's P2P address reflector (same host as the control port);
        /// absent when P2P hole punching is disabled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        p2p_udp_port: Option<u16>,
        /// Plain data connections granted: asked for by the client and allowed by the server.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        plain_data: bool,
    },
    /// The hello was refused; the connection closes after this.
    Rejected {
        code: ErrorCode,
        message: String,
        /// When a retry can succeed (`rate_limited`: the end of the address's block).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    TunnelOpened {
        req_id: u64,
        tunnel: TunnelInfo,
    },
    TunnelRejected {
        req_id: u64,
        code: ErrorCode,
        message: String,
        /// When a retry can succeed (`subdomain_reserved`, `port_reserved`: the end of the
        /// reservation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    TunnelClosed {
        tunnel_id: String,
        reason: CloseReason,
        message: String,
    },
    /// Answer to `DrainTunnel`: nothing is in flight any more and the tunnel is closed.
    TunnelDrained {
        tunnel_id: String,
    },
    /// A `p2p_publish` was accepted.
    P2pPublished {
        name: String,
    },
    /// A visitor wants a link to a service this client publishes.
    P2pIncoming {
        link_id: String,
        name: String,
        protocol: Protocol,
        pake: String,
        fingerprint: String,
        #[serde(default)]
        candidates: Vec<String>,
    },
    /// The publisher's answer, relayed to the visitor.
    P2pAnswer {
        link_id: String,
        pake: String,
        confirm: String,
        fingerprint: String,
        #[serde(default)]
        candidates: Vec<String>,
    },
    /// The visitor's confirmation, relayed to the publisher.
    P2pConfirm {
        link_id: String,
        confirm: String,
    },
    /// The publisher's verdict, relayed to the visitor.
    P2pResult {
        link_id: String,
        accepted: bool,
    },
    /// The link ended (the other side left or closed it).
    P2pClosed {
        link_id: String,
        #[serde(default)]
        reason: String,
    },
    /// A P2P request failed (`link_id` empty for a refused `p2p_publish`).
    P2pError {
        #[serde(default)]
        link_id: String,
        #[serde(default)]
        name: String,
        code: ErrorCode,
        message: String,
        /// When a retry can succeed (`rate_limited`: a pending link of the owner expires).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Open this many more data connections.
    NeedDataConns {
        count: u16,
    },
    /// Requests served since the last batch. One batch may take several messages: each fits in
    /// a control frame ([`ServerMsg::request_log`]).
    RequestLog {
        entries: Vec<RequestLogEntry>,
        /// Requests served but left out of the log (too many between two batches).
        #[serde(default, skip_serializing_if = "is_zero")]
        dropped: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The server is shutting down gracefully: reconnect after the given delay.
    Shutdown {
        message: String,
        retry_after_ms: u64,
    },
    /// A non-fatal error about a message the client sent.
    Error {
        code: ErrorCode,
        message: String,
    },
    #[serde(other)]
    Unknown,
}

/// A control message that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("control message of {0} bytes exceeds the {MAX_CONTROL_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, DecodeError> {
    if text.len() > MAX_CONTROL_FRAME {
        return Err(DecodeError::TooLarge(text.len()));
    }
    Ok(serde_json::from_str(text)?)
}

impl ClientMsg {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode(text)
    }
    pub fn encode(&self) -> String {
        // Serialising these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ServerMsg {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        decode(text)
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A batch of the request log as messages that each fit in a control frame, in order; the
    /// count of requests left out rides on the last one. An entry too large for a frame on its
    /// own is left out and counted.
    pub fn request_log(entries: Vec<RequestLogEntry>, mut dropped: u64) -> Vec<ServerMsg> {
        // Room for the envelope (`{"type":"request_log","entries":[...],"dropped":N}`).
        const BUDGET: usize = MAX_CONTROL_FRAME - 128;
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut size = 0;
        for e in entries {
            // An upper bound of the entry's JSON (an escaped byte takes at most six), without
            // serialising it twice.
            let text = e.tunnel_id.len() + e.method.len() + e.path.len() + e.remote_addr.len();
            let n = 6 * text + 96;
            if n > BUDGET {
                dropped += 1;
                continue;
            }
            if size + n > BUDGET {
                out.push(ServerMsg::RequestLog { entries: std::mem::take(&mut batch), dropped: 0 });
                size = 0;
            }
            size += n;
            batch.push(e);
        }
        // `batch` holds the last entry accepted, so this is the last message whenever there
        // is one.
        if !batch.is_empty() || dropped > 0 {
            out.push(ServerMsg::RequestLog { entries: batch, dropped });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: String) -> RequestLogEntry {
        RequestLogEntry {
            tunnel_id: "4f1c8a52-0c47-4d2e-9a4b-1f6f3b1e2d7a".into(),
            method: "GET".into(),
            path,
            status: 200,
            duration_us: 1234,
            remote_addr: "2001:db8::1".into(),
        }
    }

    #[test]
    fn a_large_request_log_is_split_into_frames_that_fit() {
        // 1024 entries with 256-character paths, some of them escaped in JSON: far more than
        // one frame holds.
        let entries: Vec<_> = (0..1024).map(|i| entry(format!("/{i}/{}", "\u{1}".repeat(250)))).collect();
        let msgs = ServerMsg::request_log(entries.clone(), 7);
        assert!(msgs.len() > 1);
        let mut got = Vec::new();
        let mut dropped = 0;
        for m in &msgs {
            let text = m.encode();
            assert!(text.len() <= MAX_CONTROL_FRAME, "{} bytes", text.len());
            let ServerMsg::RequestLog { entries, dropped: d } = ServerMsg::decode(&text).unwrap() else { panic!() };
            got.extend(entries);
            dropped += d;
        }
        assert_eq!(got, entries, "every entry, in order");
        assert_eq!(dropped, 7);
        assert!(matches!(msgs.last(), Some(ServerMsg::RequestLog { dropped: 7, .. })));
    }

    #[test]
    fn an_entry_larger_than_a_frame_is_counted_not_sent() {
        let msgs = ServerMsg::request_log(vec![entry("/ok".into()), entry("x".repeat(MAX_CONTROL_FRAME))], 0);
        assert_eq!(msgs.len(), 1);
        let ServerMsg::RequestLog { entries, dropped } = &msgs[0] else { panic!() };
        assert_eq!((entries.len(), *dropped), (1, 1));
        assert!(ServerMsg::request_log(Vec::new(), 0).is_empty(), "nothing to say, nothing sent");
        // An older client ignores the new field; a message without it decodes as 0.
        let old = r#"{"type":"request_log","entries":[]}"#;
        assert_eq!(ServerMsg::decode(old).unwrap(), ServerMsg::RequestLog { entries: vec![], dropped: 0 });
    }
    use proptest::prelude::*;

    #[test]
    fn one_set_of_rules_for_a_tunnel_request() {
        let base = |protocol| TunnelSpec::new("t", protocol, "localhost:1");
        let auth = || Some(crate::basic_auth::BasicAuth::parse("ana:correct horse").unwrap());
        let ok = [
            TunnelSpec {
                subdomain: Some("app".into()),
                basic_auth: auth(),
                host_header: Some("rewrite".into()),
                ..base(Protocol::Http)
            },
            TunnelSpec { remote_port: Some(20001), cidr_allow: vec!["10.0.0.0/8".into()], ..base(Protocol::Tcp) },
            TunnelSpec { remote_port: Some(20002), ..base(Protocol::Udp) },
        ];
        for s in ok {
            assert_eq!(s.check(), Ok(()), "{s:?}");
        }
        let bad = [
            (TunnelSpec { name: String::new(), ..base(Protocol::Tcp) }, SpecError::Name),
            (TunnelSpec { name: "n".repeat(65), ..base(Protocol::Tcp) }, SpecError::Name),
            (
                TunnelSpec { subdomain: Some("app".into()), ..base(Protocol::Tcp) },
                SpecError::NotFor(SpecOption::Subdomain),
            ),
            (
                TunnelSpec { subdomain: Some("app".into()), ..base(Protocol::Udp) },
                SpecError::NotFor(SpecOption::Subdomain),
            ),
            (TunnelSpec { remote_port: Some(1), ..base(Protocol::Http) }, SpecError::NotFor(SpecOption::RemotePort)),
            (TunnelSpec { basic_auth: auth(), ..base(Protocol::Udp) }, SpecError::NotFor(SpecOption::BasicAuth)),
            (
                TunnelSpec { host_header: Some("x".into()), ..base(Protocol::Tcp) },
                SpecError::NotFor(SpecOption::HostHeader),
            ),
            (TunnelSpec { host_header: Some("two words".into()), ..base(Protocol::Http) }, SpecError::HostHeader),
            (TunnelSpec { host_header: Some(String::new()), ..base(Protocol::Http) }, SpecError::HostHeader),
            (
                TunnelSpec { cidr_deny: vec!["nope".into()], ..base(Protocol::Http) },
                SpecError::IpRules(crate::ip_rules::IpRuleError::Syntax("nope".into())),
            ),
        ];
        for (s, e) in bad {
            assert_eq!(s.check(), Err(e), "{s:?}");
        }
        assert_eq!(
            SpecError::NotFor(SpecOption::RemotePort).to_string(),
            "remote_port applies to tcp and udp tunnels only"
        );
        // Credentials that came in over the wire unchecked are checked here.
        let raw: TunnelSpec =
            serde_json::from_str(r#"{"name":"t","protocol":"http","local_addr":"l","basic_auth":"ana:short"}"#)
                .unwrap();
        assert!(matches!(raw.check(), Err(SpecError::BasicAuth(_))));
    }

    #[test]
    fn round_trip() {
        let msgs = vec![
            ClientMsg::Hello { version: 1, token: "t".into(), agent: "a".into(), plain_data: true, mux: false },
            ClientMsg::OpenTunnel {
                req_id: 7,
                spec: TunnelSpec { upstream_per_visitor: true, ..TunnelSpec::sample() },
            },
            ClientMsg::CloseTunnel { tunnel_id: "x".into() },
            ClientMsg::HealthReport { tunnel_id: "x".into(), healthy: false, detail: "HTTP 503".into() },
            ClientMsg::DrainTunnel { tunnel_id: "x".into() },
            ClientMsg::P2pPublish { name: "svc".into(), protocol: Protocol::Tcp },
            ClientMsg::P2pConnect {
                link_id: "l".into(),
                name: "svc".into(),
                protocol: Protocol::Udp,
                pake: "aa".into(),
                fingerprint: "ff".into(),
                candidates: vec!["127.0.0.1:1".into()],
            },
            ClientMsg::P2pResult { link_id: "l".into(), accepted: true },
            ClientMsg::Ping { nonce: 1 },
        ];
        for m in msgs {
            assert_eq!(ClientMsg::decode(&m.encode()).unwrap(), m);
        }
        let s =
            ServerMsg::TunnelClosed { tunnel_id: "t".into(), reason: CloseReason::ClosedByApi, message: "m".into() };
        assert_eq!(ServerMsg::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn group_key_is_masked_in_debug() {
        let g = GroupSpec { name: "p".into(), key: "hunter2".into(), alert_webhook: None, health_check: None };
        assert!(!format!("{g:?}").contains("hunter2"));
    }

    #[test]
    fn old_specs_without_group_still_decode() {
        let m = ClientMsg::decode(
            r#"{"type":"open_tunnel","req_id":1,"spec":{"name":"w","protocol":"http","local_addr":"l:1"}}"#,
        )
        .unwrap();
        assert!(matches!(m, ClientMsg::OpenTunnel { spec: TunnelSpec { group: None, .. }, .. }));
    }

    #[test]
    fn unknown_type_is_not_an_error() {
        assert_eq!(ClientMsg::decode(r#"{"type":"teleport"}"#).unwrap(), ClientMsg::Unknown);
        assert_eq!(ServerMsg::decode(r#"{"type":"teleport","x":1}"#).unwrap(), ServerMsg::Unknown);
        let e: ErrorCode = serde_json::from_str("\"brand_new\"").unwrap();
        assert_eq!(e, ErrorCode::Unknown);
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let big = "x".repeat(MAX_CONTROL_FRAME + 1);
        assert!(matches!(ClientMsg::decode(&big), Err(DecodeError::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn random_text_never_panics(s in ".{0,512}") {
            let _ = ClientMsg::decode(&s);
            let _ = ServerMsg::decode(&s);
        }
    }
}
