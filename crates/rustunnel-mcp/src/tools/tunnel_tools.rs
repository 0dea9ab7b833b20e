//! The six tunnel tools: `create_tunnel`, `list_tunnels`, `close_tunnel`,
//! `get_connection_info`, `list_regions`, `get_tunnel_history`.
//!
//! `create_tunnel` runs the tunnel in-process ([`crate::tunnels::TunnelManager`]): plain
//! tunnels and pool members on a `ClientHandle`, P2P publishers and visitors on a `P2pHandle`
//! (ids `p2p-...`, managed here). The others call the management API.
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{JsonObject, ToolAnnotations};
use rustunnel_client::config::StartHealthCheck;
use rustunnel_client::health::{HealthCheck, HealthKind};
use rustunnel_client::p2p::P2pRole;
use rustunnel_client::proxy_header::ProxyProtocol;
use rustunnel_client::GroupConfig;
use rustunnel_proto::basic_auth::BasicAuth;
use rustunnel_proto::ip_rules::MAX_RULES;
use rustunnel_proto::{Protocol, SpecError, TunnelSpec};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

use super::args::{check_host, check_ident, shell_quote, Args};
use super::schema::object;
use super::{route, CallCtx, ToolError, ToolSpec};
use crate::server::McpServer;
use crate::tunnels::{OpenedP2p, P2pRequest, TunnelRequest};

/// Tools of this module.
pub fn router() -> ToolRouter<McpServer> {
    ToolRouter::new()
        .with_route(route(create_tunnel_spec(), create_tunnel))
        .with_route(route(list_tunnels_spec(), list_tunnels))
        .with_route(route(close_tunnel_spec(), close_tunnel))
        .with_route(route(connection_info_spec(), get_connection_info))
        .with_route(route(list_regions_spec(), list_regions))
        .with_route(route(history_spec(), get_tunnel_history))
}

const PROTOCOLS: &[&str] = &["http", "tcp", "udp", "p2p"];
const HISTORY_DEFAULT: u32 = 25;
const HISTORY_MAX: i64 = 500;

// ---------------------------------------------------------------- schemas

fn token_prop() -> Value {
    json!({"type": "string", "description": "rustunnel API token. Optional: omit it when the MCP server was started with RUSTUNNEL_TOKEN set (the usual case). Never invent one."})
}

fn tunnel_props(for_info: bool) -> Vec<(&'static str, Value)> {
    let port_desc = if for_info {
        "Local port of the service to expose (1-65535)."
    } else {
        "Local port your service is already listening on (1-65535), e.g. 3000 for a dev server. The tool checks that something accepts connections there before opening the tunnel."
    };
    vec![
        ("token", token_prop()),
        ("local_port", json!({"type": "integer", "minimum": 1, "maximum": 65535, "description": port_desc})),
        (
            "protocol",
            json!({"type": "string", "enum": PROTOCOLS, "description": "Tunnel type: \"http\" for web apps and APIs (public URL under a subdomain), \"tcp\" for raw TCP (databases, SSH; public host:port), \"udp\" for UDP services (game servers, DNS), \"p2p\" for private peer-to-peer tcp tunnels (with secret and peer_name to publish, or secret and peer_target to connect)."}),
        ),
        (
            "subdomain",
            json!({"type": "string", "description": "HTTP only: the subdomain to ask for (3-63 characters of a-z, 0-9 and '-'). Omit for a random one."}),
        ),
        (
            "region",
            json!({"type": "string", "description": "Region id such as \"eu\" or \"us\" (see list_regions). Omit to use the server this MCP server is configured with."}),
        ),
        (
            "local_host",
            json!({"type": "string", "description": "Host the local service listens on. Default \"localhost\"; use e.g. \"127.0.0.1\" or a LAN/container host name if needed."}),
        ),
        (
            "secret",
            json!({"type": "string", "description": "P2P only (required): shared secret; publisher and visitor must use the same one. Never sent over the network."}),
        ),
        (
            "peer_name",
            json!({"type": "string", "description": "P2P publish: publish the local service on local_port under this name (1-64 characters: letters, digits, '-', '_', '.'). Returns the name and role; other machines connect with peer_target."}),
        ),
        (
            "peer_target",
            json!({"type": "string", "description": "P2P connect: reach the published P2P service with this name through a local listener on 127.0.0.1:local_port (the port must be free). Returns that address and the mode (direct or relayed)."}),
        ),
        (
            "group",
            json!({"type": "string", "description": "Load balancing (http/tcp): name of the pool to join; every member serves the same public URL (for http the group is also the default subdomain). Call create_tunnel once per member (e.g. ports 3000 and 3001) with the same group and group_key."}),
        ),
        (
            "group_key",
            json!({"type": "string", "description": "Load balancing (required with group): shared secret of the pool; the first member sets it and every later member must use the same one."}),
        ),
        (
            "basic_auth",
            json!({"type": "string", "description": "HTTP only: \"user:password\" (password 8-128 characters) every visitor must log in with (HTTP Basic); the edge checks it and does not pass it on to the local service."}),
        ),
        (
            "host_header",
            json!({"type": "string", "description": "HTTP only: the Host header the local service gets: \"rewrite\" (its own address, e.g. localhost:3000, for dev servers that reject other hosts) or a host name. The public host stays in X-Forwarded-Host."}),
        ),
        (
            "proxy_protocol",
            json!({"type": "string", "enum": ["v1", "v2"], "description": "http/tcp: start each connection to the local service with a PROXY protocol header (v1 text, v2 binary) naming the visitor, for services that read one (nginx proxy_protocol, HAProxy accept-proxy)."}),
        ),
        (
            "cidr_allow",
            json!({"type": "array", "items": {"type": "string"}, "maxItems": 64, "description": "http/tcp/udp: accept visitors only from these addresses or networks, e.g. [\"10.0.0.0/8\", \"203.0.113.7\"]. Judged on the visitor's own address."}),
        ),
        (
            "cidr_deny",
            json!({"type": "array", "items": {"type": "string"}, "maxItems": 64, "description": "http/tcp/udp: refuse visitors from these addresses or networks, even inside cidr_allow."}),
        ),
        (
            "health_check",
            json!({
                "type": "object",
                "description": "Load balancing: how each pool member's local service is checked; a member failing max_failed checks in a row gets no traffic until a check passes again. Defaults: interval 5 s, timeout 3 s, max_failed 3, expect_2xx true.",
                "properties": {
                    "type": {"type": "string", "enum": ["tcp", "http"], "description": "tcp: connect only; http: GET the path."},
                    "path": {"type": "string", "description": "HTTP path to GET, e.g. \"/health\"."},
                    "interval_secs": {"type": "integer", "minimum": 1, "description": "Seconds between checks."},
                    "timeout_secs": {"type": "integer", "minimum": 1, "description": "Seconds before a check fails."},
                    "max_failed": {"type": "integer", "minimum": 1, "description": "Failed checks before a member is taken out."},
                    "expect_2xx": {"type": "boolean", "description": "HTTP checks: require a 2xx status."},
                    "alert_webhook": {"type": "string", "description": "http:// URL the server POSTs an alert to when the pool has no healthy member left."}
                },
                "additionalProperties": false
            }),
        ),
    ]
}

const TUNNEL_ARGS: &[&str] = &[
    "token",
    "local_port",
    "protocol",
    "subdomain",
    "region",
    "local_host",
    "secret",
    "peer_name",
    "peer_target",
    "group",
    "group_key",
    "health_check",
    "basic_auth",
    "cidr_allow",
    "cidr_deny",
    "host_header",
    "proxy_protocol",
];

fn create_tunnel_spec() -> ToolSpec {
    ToolSpec {
        name: "create_tunnel",
        title: "Create a tunnel",
        description: "Expose a service that is already running on this machine and get its public URL. \
Returns public_url (share or fetch it), tunnel_id (needed by close_tunnel) and protocol. The tunnel runs \
inside this MCP server and stays open until close_tunnel is called or the MCP server exits. Answers within a \
second; fails fast with a clear message when nothing listens on the local port, the server is unreachable or \
the token is rejected. Use get_connection_info instead when you only need the command for a human to run.",
        input_schema: object(tunnel_props(false), &["local_port", "protocol"]),
        annotations: ToolAnnotations::new().read_only(false).destructive(false).idempotent(false).open_world(true),
    }
}

fn list_tunnels_spec() -> ToolSpec {
    ToolSpec {
        name: "list_tunnels",
        title: "List open tunnels",
        description: "List the tunnels currently open on the rustunnel server for this token (all tunnels with an \
admin token): id, public URL, protocol, local address, traffic counters. managed_here is true for tunnels this \
MCP server opened with create_tunnel.",
        input_schema: object(vec![("token", token_prop())], &[]),
        annotations: ToolAnnotations::new().read_only(true).open_world(true),
    }
}

fn close_tunnel_spec() -> ToolSpec {
    ToolSpec {
        name: "close_tunnel",
        title: "Close a tunnel",
        description:
            "Close a tunnel by id (from create_tunnel or list_tunnels). Its public URL stops working at once. \
Tunnels opened by other clients can be closed too, if the token may manage them.",
        input_schema: object(
            vec![
                ("token", token_prop()),
                (
                    "tunnel_id",
                    json!({"type": "string", "description": "The tunnel_id returned by create_tunnel, or an id from list_tunnels."}),
                ),
            ],
            &["tunnel_id"],
        ),
        annotations: ToolAnnotations::new().read_only(false).destructive(true).idempotent(true).open_world(true),
    }
}

fn connection_info_spec() -> ToolSpec {
    ToolSpec {
        name: "get_connection_info",
        title: "Get the command to open a tunnel",
        description: "Return the exact `rustunnel` command that opens this tunnel, without starting anything. Use it \
when this MCP server cannot open the tunnel for you (the service runs on another machine or in a sandbox) or when \
a person should run it. The token is referenced as $RUSTUNNEL_TOKEN, never printed. Accepts the same arguments \
as create_tunnel.",
        input_schema: object(tunnel_props(true), &["local_port", "protocol"]),
        annotations: ToolAnnotations::new().read_only(true).idempotent(true).open_world(false),
    }
}

fn list_regions_spec() -> ToolSpec {
    ToolSpec {
        name: "list_regions",
        title: "List regions",
        description:
            "List the server regions tunnels can be opened in: id (pass it as `region` to create_tunnel), name, \
location and addresses. Needs no token.",
        input_schema: object(vec![], &[]),
        annotations: ToolAnnotations::new().read_only(true).idempotent(true).open_world(true),
    }
}

fn history_spec() -> ToolSpec {
    ToolSpec {
        name: "get_tunnel_history",
        title: "Tunnel history",
        description:
            "List past and current tunnels, newest first: when each was opened and closed, why it closed, and \
its traffic. Filter by protocol; limit the number of entries (default 25).",
        input_schema: object(
            vec![
                ("token", token_prop()),
                (
                    "protocol",
                    json!({"type": "string", "enum": ["http", "tcp", "udp", "p2p"], "description": "Only tunnels of this type (P2P services are not kept in the history: \"p2p\" is refused with a pointer to list_tunnels)."}),
                ),
                (
                    "limit",
                    json!({"type": "integer", "minimum": 1, "maximum": HISTORY_MAX, "description": "Most entries to return (default 25, at most 500)."}),
                ),
            ],
            &[],
        ),
        annotations: ToolAnnotations::new().read_only(true).open_world(true),
    }
}

// ---------------------------------------------------------------- arguments

/// A validated tunnel description (create_tunnel / get_connection_info).
#[derive(Debug, Clone)]
pub struct TunnelArgs {
    pub token: Option<String>,
    pub local_port: u16,
    pub local_host: String,
    pub region: Option<String>,
    pub kind: TunnelKind,
    /// HTTP tunnels (plain or pooled): the login visitors must present.
    pub basic_auth: Option<BasicAuth>,
    /// Visitor networks accepted (none: any) and refused.
    pub cidr_allow: Vec<String>,
    pub cidr_deny: Vec<String>,
    /// HTTP: `rewrite` or the Host the local service gets.
    pub host_header: Option<String>,
    /// HTTP/TCP: the PROXY protocol header each local connection starts with.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// What kind of tunnel was asked for.
#[derive(Debug, Clone)]
pub enum TunnelKind {
    /// http/tcp/udp to one local service.
    Plain { protocol: Protocol, subdomain: Option<String> },
    /// Peer-to-peer (`protocol: "p2p"`, or `secret`/`peer_name`/`peer_target` given).
    P2p { secret: Option<String>, peer_name: Option<String>, peer_target: Option<String> },
    /// A member of a load-balanced pool (`group`/`group_key`/`health_check` given).
    Pooled {
        protocol: Protocol,
        subdomain: Option<String>,
        group: Option<String>,
        group_key: Option<String>,
        health_check: Option<Box<HealthArgs>>,
    },
}

/// A validated `health_check` object: the fields as given (for commands and config files) and
/// the check they make.
#[derive(Debug, Clone)]
pub struct HealthArgs {
    pub raw: StartHealthCheck,
    pub check: HealthCheck,
}

fn parse_health_check(obj: &JsonObject) -> Result<HealthArgs, ToolError> {
    let raw: StartHealthCheck = serde_json::from_value(Value::Object(obj.clone()))
        .map_err(|e| ToolError::invalid(format!("'health_check': {e}")))?;
    if raw.path.as_ref().is_some_and(|p| p.len() > 1024) {
        return Err(ToolError::invalid("'health_check.path' is longer than 1024 characters"));
    }
    if raw.alert_webhook.as_ref().is_some_and(|w| w.len() > 2048) {
        return Err(ToolError::invalid("'health_check.alert_webhook' is longer than 2048 characters"));
    }
    let check = raw.to_check().map_err(|e| ToolError::invalid(format!("'health_check': {e}")))?;
    Ok(HealthArgs { raw, check })
}

fn parse_protocol(p: &str) -> Option<Protocol> {
    match p {
        "http" => Some(Protocol::Http),
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
    }
}

/// A tunnel request the shared rules refuse, in the tools' argument names.
fn spec_error(e: SpecError) -> ToolError {
    match e {
        SpecError::NotFor(o) => ToolError::invalid(format!("'{}' applies to {} tunnels only", o.key(), o.protocols())),
        e => ToolError::invalid(e.to_string()),
    }
}

pub fn parse_tunnel_args(map: &JsonObject) -> Result<TunnelArgs, ToolError> {
    let a = Args::new(map, TUNNEL_ARGS)?;
    let token = a.opt_str("token", 512)?;
    let protocol = a
        .opt_choice("protocol", PROTOCOLS)?
        .ok_or_else(|| ToolError::invalid("'protocol' is required: http, tcp, udp or p2p"))?;
    let local_port = a.req_port("local_port")?;
    let local_host = a.opt_str("local_host", 253)?.unwrap_or_else(|| "localhost".into());
    check_host("local_host", &local_host)?;
    let region = a.opt_str("region", 64)?;
    if let Some(r) = &region {
        check_ident("region", r, 64)?;
    }
    let subdomain = a.opt_str("subdomain", 63)?.map(|s| s.to_ascii_lowercase());
    let secret = a.opt_str("secret", 256)?;
    let peer_name = a.opt_str("peer_name", 128)?;
    let peer_target = a.opt_str("peer_target", 128)?;
    let group = a.opt_str("group", 128)?;
    let group_key = a.opt_str("group_key", 256)?;
    let health_check = a.opt_object("health_check")?.map(parse_health_check).transpose()?.map(Box::new);
    let basic_auth = a
        .opt_str("basic_auth", 256)?
        .map(|s| BasicAuth::parse(&s).map_err(|e| ToolError::invalid(format!("'basic_auth': {e}"))))
        .transpose()?;
    let cidr_allow = a.opt_str_list("cidr_allow", MAX_RULES, 64)?;
    let cidr_deny = a.opt_str_list("cidr_deny", MAX_RULES, 64)?;
    let host_header = a.opt_str("host_header", 255)?;
    let proxy_protocol = match a.opt_choice("proxy_protocol", &["v1", "v2"])? {
        Some("v1") => Some(ProxyProtocol::V1),
        Some(_) => Some(ProxyProtocol::V2),
        None => None,
    };
    if proxy_protocol.is_some() && !matches!(protocol, "http" | "tcp") {
        return Err(ToolError::invalid("'proxy_protocol' applies to http and tcp tunnels only"));
    }
    // The rules the server checks, told in the tool's argument names; a P2P service is a raw
    // TCP/UDP one, so the HTTP-only options are refused for it the same way.
    let probe = |protocol: Protocol| {
        TunnelSpec {
            subdomain: subdomain.clone(),
            basic_auth: basic_auth.clone(),
            cidr_allow: cidr_allow.clone(),
            cidr_deny: cidr_deny.clone(),
            host_header: host_header.clone(),
            ..TunnelSpec::new(protocol.as_str(), protocol, "")
        }
        .check()
        .map_err(spec_error)
    };
    if protocol == "p2p" {
        if !(cidr_allow.is_empty() && cidr_deny.is_empty()) {
            return Err(ToolError::invalid("'cidr_allow' and 'cidr_deny' do not apply to p2p tunnels"));
        }
        probe(Protocol::Tcp)?;
    }

    let p2p = protocol == "p2p" || secret.is_some() || peer_name.is_some() || peer_target.is_some();
    let pooled = group.is_some() || group_key.is_some() || health_check.is_some();
    let kind =
        if p2p {
            if protocol != "p2p" {
                return Err(ToolError::invalid("secret, peer_name and peer_target apply to protocol \"p2p\" only"));
            }
            if pooled {
                return Err(ToolError::invalid("group, group_key and health_check do not apply to p2p tunnels"));
            }
            match (&peer_name, &peer_target) {
                (Some(_), Some(_)) => {
                    return Err(ToolError::invalid("pass peer_name (publish) or peer_target (connect), not both"))
                }
                (None, None) => return Err(ToolError::invalid(
                    "p2p needs peer_name (publish local_port under this name) or peer_target (connect to that name)",
                )),
                _ => {}
            }
            if secret.as_deref().is_none_or(str::is_empty) {
                return Err(ToolError::invalid("p2p needs 'secret': the shared secret of the P2P service"));
            }
            for n in [&peer_name, &peer_target].into_iter().flatten() {
                if n.is_empty()
                    || n.len() > 64
                    || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                {
                    return Err(ToolError::invalid(format!(
                        "P2P name '{n}': 1-64 characters of letters, digits, '-', '_' and '.'"
                    )));
                }
            }
            TunnelKind::P2p { secret, peer_name, peer_target }
        } else {
            let Some(proto) = parse_protocol(protocol) else {
                return Err(ToolError::invalid(format!("unknown protocol '{protocol}'")));
            };
            probe(proto)?;
            if let Some(s) = &subdomain {
                rustunnel_proto::names::validate_subdomain(s)
                    .map_err(|e| ToolError::invalid(format!("'subdomain': {e}")))?;
            }
            if pooled {
                if proto == Protocol::Udp {
                    return Err(ToolError::invalid("load balancing (group) applies to http and tcp tunnels only"));
                }
                if group.is_some() != group_key.is_some() {
                    return Err(ToolError::invalid("'group' and 'group_key' go together: pass both to join a pool"));
                }
                if group.is_none() {
                    return Err(ToolError::invalid(
                        "'health_check' is for load-balanced pools: pass 'group' and 'group_key' too",
                    ));
                }
                if let Some(g) = &group {
                    if g.is_empty() || !g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        return Err(ToolError::invalid(
                            "'group': use a-z, 0-9 and '-' (for http it is also the subdomain)",
                        ));
                    }
                }
                if group_key.as_deref() == Some("") {
                    return Err(ToolError::invalid("'group_key' must not be empty"));
                }
                TunnelKind::Pooled { protocol: proto, subdomain, group, group_key, health_check }
            } else {
                TunnelKind::Plain { protocol: proto, subdomain }
            }
        };
    Ok(TunnelArgs {
        token,
        local_port,
        local_host,
        region,
        kind,
        basic_auth,
        cidr_allow,
        cidr_deny,
        host_header,
        proxy_protocol,
    })
}

// ---------------------------------------------------------------- outputs

/// `create_tunnel` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedTunnel {
    /// The public URL: http://name.domain for http, tcp://host:port or udp://host:port otherwise.
    pub public_url: String,
    /// Every public URL of the tunnel (e.g. http and https); the first is public_url.
    pub public_urls: Vec<String>,
    /// Id to pass to close_tunnel.
    pub tunnel_id: String,
    /// http, tcp or udp.
    pub protocol: String,
    /// Tunnel name.
    pub name: String,
    /// The local address traffic is forwarded to.
    pub local_addr: String,
    /// Control-plane address of the server the tunnel runs on.
    pub server: String,
    /// Region id, when one was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Load-balanced tunnels: the pool this member joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolInfo>,
    /// P2P tunnels: the role, name, local address and path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p2p: Option<P2pView>,
    /// How long the tunnel lives.
    pub note: String,
}

/// Pool membership of a tunnel this MCP server opened.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolInfo {
    /// The group (pool) name.
    pub group: String,
    /// This member's health as last reported; absent until its first health check (members
    /// without a health_check count as healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Members of the pool taking traffic now, when the management API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_members: Option<u64>,
    /// Members of the pool visible to this token, when the management API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
}

/// A P2P publisher or visitor run by this MCP server.
#[derive(Debug, Serialize, JsonSchema)]
pub struct P2pView {
    /// Id for close_tunnel (p2p-...).
    pub tunnel_id: String,
    /// "publish" or "connect".
    pub role: String,
    /// The published service name (publish) or the target (connect).
    pub name: String,
    /// Publish: the local service shared. Connect: the address to use (127.0.0.1:port).
    pub local_addr: String,
    /// "direct" or "relayed" once a link is up; absent before (a publisher before any visitor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl From<OpenedP2p> for P2pView {
    fn from(p: OpenedP2p) -> Self {
        P2pView { tunnel_id: p.id, role: p.role, name: p.name, local_addr: p.local_addr, mode: p.mode }
    }
}

/// A load-balanced pool (from the management API).
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolView {
    pub name: String,
    /// http or tcp.
    pub protocol: String,
    pub public_url: String,
    pub healthy_members: u64,
    pub members: Vec<PoolMemberView>,
}

/// One pool member.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PoolMemberView {
    /// Tunnel id (close_tunnel takes it).
    pub tunnel_id: String,
    pub healthy: bool,
    pub draining: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<String>,
    pub local_addr: String,
    pub requests: u64,
    pub connections: u64,
    /// True when this MCP server opened it.
    pub managed_here: bool,
}

/// A published P2P service and its links (from the management API).
#[derive(Debug, Serialize, JsonSchema)]
pub struct P2pServiceView {
    pub name: String,
    /// tcp or udp.
    pub protocol: String,
    /// False when only links of a withdrawn service remain.
    pub published: bool,
    pub links: Vec<P2pLinkView>,
}

/// One visitor link of a P2P service.
#[derive(Debug, Serialize, JsonSchema)]
pub struct P2pLinkView {
    pub link_id: String,
    /// direct, relayed or pending.
    pub mode: String,
    /// Bytes relayed through the server (none on the direct path).
    pub relayed_bytes: u64,
    pub visitor_addr: String,
}

/// One open tunnel.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TunnelView {
    pub tunnel_id: String,
    pub name: String,
    /// http, tcp or udp.
    pub protocol: String,
    pub public_url: String,
    pub public_urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub local_addr: String,
    pub client_addr: String,
    pub region: String,
    /// RFC 3339 time the tunnel opened.
    pub created_at: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    pub connections: u64,
    pub status: String,
    /// True when this MCP server opened it (create_tunnel) and keeps it running.
    pub managed_here: bool,
}

/// `list_tunnels` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TunnelListView {
    pub count: usize,
    pub tunnels: Vec<TunnelView>,
    /// Load-balanced pools visible to the token (their members are also in `tunnels`).
    pub pools: Vec<PoolView>,
    /// P2P publishers and visitors this MCP server runs (close them with close_tunnel).
    pub p2p: Vec<P2pView>,
    /// P2P services and links on the server visible to the token, with each link's mode.
    pub p2p_services: Vec<P2pServiceView>,
    /// Parts of the listing that could not be fetched (older server, API error).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `close_tunnel` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ClosedView {
    pub tunnel_id: String,
    /// True when the tunnel is closed now.
    pub closed: bool,
    /// True when this MCP server had opened the tunnel and has stopped its client.
    pub stopped_local_client: bool,
    /// What happened, in words.
    pub message: String,
}

/// A file to write before running the command (load-balanced tunnels).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConfigFileView {
    pub path: String,
    pub contents: String,
}

/// `get_connection_info` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConnectionInfo {
    /// The exact command to run (POSIX shell). It reads the token from $RUSTUNNEL_TOKEN.
    pub command: String,
    pub protocol: String,
    pub local_addr: String,
    pub server: String,
    /// Environment variable holding the token the command uses.
    pub token_env: String,
    /// For load-balanced tunnels: the `rustunnel start` config file equivalent to the command
    /// (an alternative to it; merge the [tunnels.*] sections of several members into one file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<ConfigFileView>,
    /// For load-balanced tunnels: a shell command that writes config_file with the group key
    /// taken from $RUSTUNNEL_GROUP_KEY, then the command that runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_command: Option<String>,
    /// Environment variable holding the secret the command uses (P2P secret, visitors'
    /// password or group key), if any; when it uses two, the notes name the other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Things to know before running it.
    pub notes: Vec<String>,
}

/// One region.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RegionView {
    /// Pass as `region` to create_tunnel.
    pub id: String,
    pub name: String,
    pub location: String,
    /// Control-plane host:port.
    pub control_addr: String,
    pub api_url: String,
}

/// `list_regions` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RegionListView {
    pub count: usize,
    pub regions: Vec<RegionView>,
}

/// One history row.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryView {
    pub tunnel_id: String,
    pub name: String,
    pub protocol: String,
    pub public_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub local_addr: String,
    pub region: String,
    /// RFC 3339.
    pub opened_at: String,
    /// RFC 3339; absent while open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    pub active: bool,
    /// closed_by_api, client_request, session_ended, server_shutdown, server_restart, token_revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    pub connections: u64,
}

/// `get_tunnel_history` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryListView {
    pub count: usize,
    pub limit: u32,
    pub entries: Vec<HistoryView>,
}

// ---------------------------------------------------------------- handlers

const LIFETIME_NOTE: &str =
    "The tunnel stays open until close_tunnel is called with this tunnel_id or this MCP server exits.";

async fn create_tunnel(server: McpServer, args: JsonObject, ctx: CallCtx) -> Result<CreatedTunnel, ToolError> {
    let a = parse_tunnel_args(&args)?;
    let cfg = server.config();
    let control = match &a.region {
        Some(r) => {
            ctx.progress(format!("looking up region {r}"), Some(4)).await;
            resolve_region(&server, r).await?
        }
        None => cfg.server.clone(),
    };
    let token = cfg.token(a.token.as_deref()).unwrap_or_default();
    let total = if a.region.is_some() { 4 } else { 3 };
    let progress_ctx = ctx.clone();
    let progress = move |m: String| {
        let c = progress_ctx.clone();
        async move { c.progress(m, Some(total)).await }
    };
    let (protocol, subdomain, group, health_check) = match a.kind {
        TunnelKind::Plain { protocol, subdomain } => (protocol, subdomain, None, None),
        TunnelKind::Pooled { protocol, subdomain, group, group_key, health_check } => {
            let group = group.zip(group_key).map(|(name, key)| GroupConfig { name, key });
            (protocol, subdomain, group, health_check.map(|h| h.check))
        }
        TunnelKind::P2p { secret, peer_name, peer_target } => {
            let role = match (peer_name, peer_target) {
                (Some(name), _) => P2pRole::Publish { name, local_host: a.local_host, local_port: a.local_port },
                (None, Some(target)) => {
                    P2pRole::Connect { target, bind: std::net::SocketAddr::from(([127, 0, 0, 1], a.local_port)) }
                }
                (None, None) => return Err(ToolError::invalid("p2p needs peer_name or peer_target")),
            };
            let req = P2pRequest { role, server: control, token, secret: secret.unwrap_or_default(), tls: cfg.tls() };
            let opened = server.tunnels().open_p2p(req, ctx.cancelled(), progress).await?;
            let public_url = match opened.role.as_str() {
                "connect" => format!("tcp://{}", opened.local_addr),
                _ => format!("p2p://{}", opened.name),
            };
            return Ok(CreatedTunnel {
                public_urls: vec![public_url.clone()],
                public_url,
                tunnel_id: opened.id.clone(),
                protocol: "p2p".into(),
                name: opened.name.clone(),
                local_addr: opened.local_addr.clone(),
                server: opened.server.clone(),
                region: a.region,
                pool: None,
                note: if opened.role == "connect" {
                    format!(
                        "Connect to {} (TCP) to reach the published service '{}'. {P2P_LIFETIME_NOTE}",
                        opened.local_addr, opened.name
                    )
                } else {
                    format!(
                        "Published as '{}': a visitor with the same secret calls create_tunnel with protocol \"p2p\", \
peer_target \"{}\" and a free local_port. {P2P_LIFETIME_NOTE}",
                        opened.name, opened.name
                    )
                },
                p2p: Some(opened.into()),
            });
        }
    };
    let req = TunnelRequest {
        protocol,
        local_host: a.local_host,
        local_port: a.local_port,
        subdomain,
        remote_port: None,
        server: control,
        token,
        tls: cfg.tls(),
        group,
        health_check,
        basic_auth: a.basic_auth.clone(),
        cidr_allow: a.cidr_allow.clone(),
        cidr_deny: a.cidr_deny.clone(),
        host_header: a.host_header.clone(),
        proxy_protocol: a.proxy_protocol,
    };
    let opened = server.tunnels().open(req, ctx.cancelled(), progress).await?;
    let pool = match &opened.group {
        Some(g) => {
            // Best effort: the member is up either way; the API adds the pool's health.
            let token = cfg.token(a.token.as_deref());
            let listed = server.api().pools(token.as_deref()).await.ok();
            let p = listed
                .as_ref()
                .and_then(|l| l.pools.iter().find(|p| p.members.iter().any(|m| m.tunnel_id == opened.tunnel_id)));
            let me = p.and_then(|p| p.members.iter().find(|m| m.tunnel_id == opened.tunnel_id));
            Some(PoolInfo {
                group: g.clone(),
                healthy: opened.healthy.or(me.map(|m| m.healthy)),
                healthy_members: p.map(|p| p.healthy_members),
                members: p.map(|p| p.members.len() as u64),
            })
        }
        None => None,
    };
    Ok(CreatedTunnel {
        public_url: opened.public_url,
        public_urls: opened.public_urls,
        tunnel_id: opened.tunnel_id,
        protocol: opened.protocol,
        name: opened.name,
        local_addr: opened.local_addr,
        server: opened.server,
        region: a.region,
        note: if pool.is_some() {
            format!("{LIFETIME_NOTE} Add more members by calling create_tunnel again with the same group and group_key; closing one member leaves the others serving.")
        } else {
            LIFETIME_NOTE.into()
        },
        pool,
        p2p: None,
    })
}

const P2P_LIFETIME_NOTE: &str =
    "It runs until close_tunnel is called with this tunnel_id (p2p-...) or this MCP server exits.";

async fn resolve_region(server: &McpServer, region: &str) -> Result<String, ToolError> {
    let list = server.api().regions().await?;
    match list.regions.iter().find(|r| r.id.eq_ignore_ascii_case(region)) {
        Some(r) => Ok(r.control_addr.clone()),
        None => Err(ToolError::UnknownRegion {
            region: region.to_string(),
            known: list.regions.iter().map(|r| r.id.clone()).collect(),
        }),
    }
}

async fn list_tunnels(server: McpServer, args: JsonObject, _ctx: CallCtx) -> Result<TunnelListView, ToolError> {
    let a = Args::new(&args, &["token"])?;
    let token = server.config().token(a.opt_str("token", 512)?.as_deref());
    let (list, pools, p2p) = tokio::join!(
        server.api().list_tunnels(token.as_deref()),
        server.api().pools(token.as_deref()),
        server.api().p2p(token.as_deref()),
    );
    let list = list?;
    let mut warnings = Vec::new();
    let tunnels: Vec<TunnelView> = list
        .tunnels
        .into_iter()
        .map(|t| TunnelView {
            managed_here: server.tunnels().is_ours(&t.id),
            tunnel_id: t.id,
            name: t.name,
            protocol: t.protocol,
            public_url: t.public_url,
            public_urls: t.public_urls,
            subdomain: t.subdomain,
            port: t.port,
            local_addr: t.local_addr,
            client_addr: t.client_addr,
            region: t.region,
            created_at: t.created_at,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            requests: t.requests,
            connections: t.connections,
            status: t.status,
        })
        .collect();
    let pools: Vec<PoolView> = match pools {
        Ok(l) => l
            .pools
            .into_iter()
            .map(|p| PoolView {
                name: p.name,
                protocol: p.protocol,
                public_url: p.public_url,
                healthy_members: p.healthy_members,
                members: p
                    .members
                    .into_iter()
                    .map(|m| PoolMemberView {
                        managed_here: server.tunnels().is_ours(&m.tunnel_id),
                        tunnel_id: m.tunnel_id,
                        healthy: m.healthy,
                        draining: m.draining,
                        health_detail: m.health_detail,
                        local_addr: m.local_addr,
                        requests: m.requests,
                        connections: m.connections,
                    })
                    .collect(),
            })
            .collect(),
        Err(e) => {
            warnings.push(format!("pools not listed: {e}"));
            Vec::new()
        }
    };
    let p2p_services: Vec<P2pServiceView> = match p2p {
        Ok(l) => l
            .services
            .into_iter()
            .map(|s| P2pServiceView {
                name: s.name,
                protocol: s.protocol,
                published: s.publisher.is_some(),
                links: s
                    .links
                    .into_iter()
                    .map(|l| P2pLinkView {
                        link_id: l.link_id,
                        mode: l.mode,
                        relayed_bytes: l.relayed_bytes_in.saturating_add(l.relayed_bytes_out),
                        visitor_addr: l.visitor.client_addr,
                    })
                    .collect(),
            })
            .collect(),
        Err(e) => {
            warnings.push(format!("P2P services not listed: {e}"));
            Vec::new()
        }
    };
    let p2p: Vec<P2pView> = server.tunnels().list_p2p().into_iter().map(P2pView::from).collect();
    Ok(TunnelListView { count: tunnels.len(), tunnels, pools, p2p, p2p_services, warnings })
}

async fn close_tunnel(server: McpServer, args: JsonObject, _ctx: CallCtx) -> Result<ClosedView, ToolError> {
    let a = Args::new(&args, &["token", "tunnel_id"])?;
    let token = server.config().token(a.opt_str("token", 512)?.as_deref());
    let id = a.req_str("tunnel_id", 128)?;
    check_ident("tunnel_id", &id, 128)?;
    if id.starts_with("p2p-") {
        // P2P endpoints have no server tunnel: stopping the client ends its links.
        return if server.tunnels().close_p2p(&id).await {
            Ok(ClosedView {
                tunnel_id: id.clone(),
                closed: true,
                stopped_local_client: true,
                message: format!("P2P tunnel {id} is closed; its links and local listener are gone"),
            })
        } else {
            Err(ToolError::Api(crate::api::ApiError::NotFound {
                message: format!("no P2P tunnel {id} is running in this MCP server"),
            }))
        };
    }
    let ours = server.tunnels().is_ours(&id);
    // The API close is what makes the URL stop at once (the server drops the route before it
    // answers); then our client, if it is ours, is stopped so it does not linger.
    let api = server.api().close_tunnel(token.as_deref(), &id).await;
    // If the server's close notice reached our client first, its monitor already stopped it.
    let stopped = server.tunnels().close(&id).await || ours;
    match api {
        Ok(c) => Ok(ClosedView {
            message: if c.closed {
                format!(
                    "tunnel {id} is closed; its public URL no longer reaches it (a load-balanced pool's URL stays up while other members remain)"
                )
            } else {
                format!("tunnel {id} was already closed")
            },
            tunnel_id: c.id,
            closed: true,
            stopped_local_client: stopped,
        }),
        // Not known to the API (or the API is unreachable) but it was ours: stopping our client
        // ended its control connection, which closes it on the server.
        Err(e) if ours => Ok(ClosedView {
            tunnel_id: id.clone(),
            closed: true,
            stopped_local_client: stopped,
            message: format!("tunnel {id} is closed (its client in this MCP server was stopped; the API said: {e})"),
        }),
        Err(e) => Err(e.into()),
    }
}

async fn get_connection_info(server: McpServer, args: JsonObject, _ctx: CallCtx) -> Result<ConnectionInfo, ToolError> {
    let a = parse_tunnel_args(&args)?;
    let cfg = server.config();
    let local_addr = if a.local_host.contains(':') {
        format!("[{}]:{}", a.local_host, a.local_port)
    } else {
        format!("{}:{}", a.local_host, a.local_port)
    };
    let mut notes = vec![
        "Set RUSTUNNEL_TOKEN to your rustunnel token first (export RUSTUNNEL_TOKEN=...); a loopback dev server needs none.".to_string(),
    ];
    let mut config_file = None;
    let mut config_command = None;
    let mut secret_env = None;
    let (protocol, mut cmd) = match &a.kind {
        TunnelKind::Plain { protocol, subdomain } | TunnelKind::Pooled { protocol, subdomain, .. } => {
            let mut cmd = vec!["rustunnel".to_string(), protocol.as_str().to_string(), a.local_port.to_string()];
            if a.local_host != "localhost" {
                cmd.extend(["--local-host".into(), shell_quote(&a.local_host)]);
            }
            if let Some(s) = subdomain {
                cmd.extend(["--subdomain".into(), shell_quote(s)]);
            }
            cmd.extend(access_flags(&a));
            if let Some(login) = &a.basic_auth {
                secret_env = Some(PASSWORD_ENV.to_string());
                notes.push(format!(
                    "Set {PASSWORD_ENV} to the visitors' password (user {}); the command reads it from there. While the command runs, the password shows in the process list; a config file (rustunnel start) keeps it out.",
                    shell_quote(login.user())
                ));
            }
            if let TunnelKind::Pooled { group, health_check, .. } = &a.kind {
                if let Some(g) = group {
                    cmd.extend([
                        "--group".into(),
                        shell_quote(g),
                        "--group-key".into(),
                        "\"$RUSTUNNEL_GROUP_KEY\"".into(),
                    ]);
                    secret_env.get_or_insert_with(|| "RUSTUNNEL_GROUP_KEY".to_string());
                    notes.push(
                        "Set RUSTUNNEL_GROUP_KEY to the pool's shared key; every member must use the same one.".into(),
                    );
                }
                if let Some(h) = health_check {
                    cmd.extend(health_flags(h));
                }
                let file = pool_config(&a, cfg);
                // The heredoc is unquoted so the shell fills in $RUSTUNNEL_GROUP_KEY; any other
                // shell-active character would be expanded too, so then no command is offered.
                let rest = file.contents.replace("$RUSTUNNEL_GROUP_KEY", "").replace(&format!("${PASSWORD_ENV}"), "");
                if !rest.contains(['$', '`', '\\']) {
                    config_command = Some(format!(
                        "cat > {path} <<EOF\n{contents}EOF\nrustunnel start --config {path}",
                        path = file.path,
                        contents = file.contents
                    ));
                }
                let vars = if a.basic_auth.is_some() {
                    format!("$RUSTUNNEL_GROUP_KEY and ${PASSWORD_ENV}")
                } else {
                    "$RUSTUNNEL_GROUP_KEY".to_string()
                };
                notes.push(format!(
                    "Alternatively write config_file (config_command does it, filling in {vars}; by hand, replace them with the values) and run `rustunnel start --config {}`; put several members' [tunnels.*] sections in one file to run them in one client.",
                    file.path
                ));
                config_file = Some(file);
            }
            (protocol.as_str().to_string(), cmd)
        }
        TunnelKind::P2p { peer_name, peer_target, .. } => {
            let mut cmd = vec!["rustunnel".to_string(), "p2p".to_string(), a.local_port.to_string()];
            match (peer_name, peer_target) {
                (Some(n), _) => {
                    cmd.extend(["--name".into(), shell_quote(n)]);
                    if a.local_host != "localhost" {
                        cmd.extend(["--local-host".into(), shell_quote(&a.local_host)]);
                    }
                }
                (None, Some(t)) => {
                    cmd.extend(["--target".into(), shell_quote(t)]);
                    notes.push(format!(
                        "The command listens on 127.0.0.1:{} and prints the mode (direct or relayed) when the link is up; connect there.",
                        a.local_port
                    ));
                }
                (None, None) => {}
            }
            cmd.extend(["--secret".into(), "\"$RUSTUNNEL_P2P_SECRET\"".into()]);
            secret_env = Some("RUSTUNNEL_P2P_SECRET".to_string());
            notes.push("Set RUSTUNNEL_P2P_SECRET to the shared secret (the same on both sides); it is never sent over the network.".into());
            ("p2p".to_string(), cmd)
        }
    };
    match &a.region {
        Some(r) => cmd.extend(["--region".into(), shell_quote(r), "--api".into(), shell_quote(&cfg.api)]),
        None => cmd.extend(["--server".into(), shell_quote(&cfg.server)]),
    }
    cmd.extend(["--token".into(), "\"$RUSTUNNEL_TOKEN\"".into()]);
    if cfg.insecure {
        cmd.push("--insecure".into());
    } else if let Some(ca) = &cfg.ca {
        cmd.extend(["--ca".into(), shell_quote(&ca.to_string_lossy())]);
    }
    notes.push("The command prints its status when ready and keeps running; stop it with Ctrl+C. Add --json for machine-readable events.".to_string());
    if cfg.insecure {
        notes.push(
            "--insecure skips certificate checks: only for development servers with a self-signed certificate.".into(),
        );
    }
    Ok(ConnectionInfo {
        command: cmd.join(" "),
        protocol,
        local_addr,
        server: cfg.server.clone(),
        token_env: "RUSTUNNEL_TOKEN".into(),
        config_file,
        config_command,
        secret_env,
        notes,
    })
}

/// Environment variable the offered command and config file read the visitors' password from.
const PASSWORD_ENV: &str = "RUSTUNNEL_BASIC_AUTH_PASSWORD";

/// `rustunnel http|tcp|udp` flags for who may reach the tunnel and the Host header, one-to-one
/// with the tool's fields: a command that dropped them would publish the service to everyone.
/// The password is not written: the shell takes it from [`PASSWORD_ENV`].
fn proxy_version(p: ProxyProtocol) -> &'static str {
    match p {
        ProxyProtocol::V1 => "v1",
        ProxyProtocol::V2 => "v2",
    }
}

fn access_flags(a: &TunnelArgs) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(login) = &a.basic_auth {
        v.extend(["--basic-auth".into(), format!("{}\":${PASSWORD_ENV}\"", shell_quote(login.user()))]);
    }
    for (flag, list) in [("--cidr-allow", &a.cidr_allow), ("--cidr-deny", &a.cidr_deny)] {
        if !list.is_empty() {
            v.extend([flag.into(), shell_quote(&list.join(","))]);
        }
    }
    if let Some(h) = &a.host_header {
        v.extend(["--host-header".into(), shell_quote(h)]);
    }
    if let Some(p) = a.proxy_protocol {
        v.extend(["--proxy-protocol".into(), proxy_version(p).into()]);
    }
    v
}

/// `rustunnel http|tcp` flags for a health check, one-to-one with the tool's fields.
fn health_flags(h: &HealthArgs) -> Vec<String> {
    let spec = match &h.check.kind {
        HealthKind::Tcp => "tcp".to_string(),
        HealthKind::Http { path, .. } => format!("http:{path}"),
    };
    let mut v = vec!["--health-check".into(), shell_quote(&spec)];
    if let Some(i) = h.raw.interval_secs {
        v.extend(["--health-interval".into(), i.to_string()]);
    }
    if let Some(t) = h.raw.timeout_secs {
        v.extend(["--health-timeout".into(), t.to_string()]);
    }
    if let Some(m) = h.raw.max_failed {
        v.extend(["--health-max-failed".into(), m.to_string()]);
    }
    if matches!(h.check.kind, HealthKind::Http { expect_2xx: false, .. }) {
        v.push("--health-any-status".into());
    }
    if let Some(w) = &h.raw.alert_webhook {
        v.extend(["--alert-webhook".into(), shell_quote(w)]);
    }
    v
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `rustunnel start` file (examples/pool.toml format) for one pool member. The group key is
/// the placeholder `$RUSTUNNEL_GROUP_KEY`, filled in by the unquoted heredoc of config_command.
fn pool_config(a: &TunnelArgs, cfg: &crate::config::McpConfig) -> ConfigFileView {
    let TunnelKind::Pooled { protocol, subdomain, group, health_check, .. } = &a.kind else {
        return ConfigFileView { path: String::new(), contents: String::new() };
    };
    let base = group.clone().unwrap_or_else(|| format!("mcp-{}", protocol.as_str()));
    let name = format!("{base}-{}", a.local_port);
    let mut t = String::new();
    t.push_str(
        "# rustunnel start --config <this file>; the token comes from the RUSTUNNEL_TOKEN environment variable\n",
    );
    t.push_str(&format!("server = {}\n", toml_str(&cfg.server)));
    if cfg.insecure {
        t.push_str("insecure = true\n");
    } else if let Some(ca) = &cfg.ca {
        t.push_str(&format!("ca = {}\n", toml_str(&ca.to_string_lossy())));
    }
    if let Some(r) = &a.region {
        t.push_str(&format!("region = {}\n", toml_str(r)));
    }
    t.push_str(&format!("\n[tunnels.{name}]\n"));
    t.push_str(&format!("protocol = {}\n", toml_str(protocol.as_str())));
    t.push_str(&format!("local_port = {}\n", a.local_port));
    if a.local_host != "localhost" {
        t.push_str(&format!("local_host = {}\n", toml_str(&a.local_host)));
    }
    if let Some(s) = subdomain {
        t.push_str(&format!("subdomain = {}\n", toml_str(s)));
    }
    if let Some(g) = group {
        t.push_str(&format!("group = {}\n", toml_str(g)));
        t.push_str("group_key = \"$RUSTUNNEL_GROUP_KEY\"\n");
    }
    for (key, list) in [("cidr_allow", &a.cidr_allow), ("cidr_deny", &a.cidr_deny)] {
        if !list.is_empty() {
            let items: Vec<String> = list.iter().map(|s| toml_str(s)).collect();
            t.push_str(&format!("{key} = [{}]\n", items.join(", ")));
        }
    }
    if let Some(login) = &a.basic_auth {
        // The pool's login, which every member must use. The password comes from the
        // environment through config_command's heredoc; a TOML literal string takes it as it is
        // (quotes and backslashes included).
        t.push_str(&format!("basic_auth = '''{}:${PASSWORD_ENV}'''\n", login.user()));
    }
    if let Some(h) = &a.host_header {
        t.push_str(&format!("host_header = {}\n", toml_str(h)));
    }
    if let Some(p) = a.proxy_protocol {
        t.push_str(&format!("proxy_protocol = \"{}\"\n", proxy_version(p)));
    }
    if let Some(h) = health_check {
        t.push_str(&format!("\n[tunnels.{name}.health_check]\n"));
        let kind = match &h.check.kind {
            HealthKind::Tcp => "tcp",
            HealthKind::Http { .. } => "http",
        };
        t.push_str(&format!("type = {}\n", toml_str(kind)));
        if let HealthKind::Http { path, expect_2xx } = &h.check.kind {
            t.push_str(&format!("path = {}\n", toml_str(path)));
            t.push_str(&format!("expect_2xx = {expect_2xx}\n"));
        }
        t.push_str(&format!("interval_secs = {}\n", h.check.interval.as_secs_f64()));
        t.push_str(&format!("timeout_secs = {}\n", h.check.timeout.as_secs_f64()));
        t.push_str(&format!("max_failed = {}\n", h.check.max_failed));
        if let Some(w) = &h.check.alert_webhook {
            t.push_str(&format!("alert_webhook = {}\n", toml_str(w)));
        }
    }
    ConfigFileView { path: format!("rustunnel-{base}.toml"), contents: t }
}

async fn list_regions(server: McpServer, args: JsonObject, _ctx: CallCtx) -> Result<RegionListView, ToolError> {
    Args::new(&args, &[])?;
    let list = server.api().regions().await?;
    let regions: Vec<RegionView> = list
        .regions
        .into_iter()
        .map(|r| RegionView {
            id: r.id,
            name: r.name,
            location: r.location,
            control_addr: r.control_addr,
            api_url: r.api_url,
        })
        .collect();
    Ok(RegionListView { count: regions.len(), regions })
}

async fn get_tunnel_history(server: McpServer, args: JsonObject, _ctx: CallCtx) -> Result<HistoryListView, ToolError> {
    let a = Args::new(&args, &["token", "protocol", "limit"])?;
    let token = server.config().token(a.opt_str("token", 512)?.as_deref());
    let protocol = a.opt_choice("protocol", PROTOCOLS)?;
    let limit = a.opt_int("limit", 1, HISTORY_MAX)?.map(|l| l as u32).unwrap_or(HISTORY_DEFAULT);
    if protocol == Some("p2p") {
        return Err(ToolError::invalid(
            "P2P services are not kept in the tunnel history: list_tunnels shows the ones published now",
        ));
    }
    // The API serves pages of at most HISTORY_PAGE rows: a longer list takes several.
    let mut rows = Vec::new();
    while rows.len() < limit as usize {
        let want = limit - rows.len() as u32;
        let page = server.api().history(token.as_deref(), protocol, want, rows.len() as u32).await?;
        let last = page.entries.len() < want.min(crate::api::HISTORY_PAGE) as usize;
        rows.extend(page.entries);
        if last {
            break;
        }
    }
    let entries: Vec<HistoryView> = rows
        .into_iter()
        .take(limit as usize)
        .map(|e| HistoryView {
            tunnel_id: e.id,
            name: e.name,
            protocol: e.protocol,
            public_url: e.public_url,
            subdomain: e.subdomain,
            port: e.port,
            local_addr: e.local_addr,
            region: e.region,
            opened_at: e.opened_at,
            closed_at: e.closed_at,
            active: e.active,
            close_reason: e.close_reason,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            requests: e.requests,
            connections: e.connections,
        })
        .collect();
    Ok(HistoryListView { count: entries.len(), limit, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn plain_tunnels_parse() {
        let a =
            parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "http", "subdomain": "MyApp"}))).unwrap();
        assert!(
            matches!(a.kind, TunnelKind::Plain { protocol: Protocol::Http, subdomain: Some(ref s) } if s == "myapp")
        );
        assert_eq!(a.local_host, "localhost");
    }

    #[test]
    fn p2p_and_pools_parse() {
        let a =
            parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "p2p", "secret": "s", "peer_name": "svc"})))
                .unwrap();
        assert!(matches!(a.kind, TunnelKind::P2p { peer_name: Some(ref n), .. } if n == "svc"));
        let a = parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "http", "group": "pool", "group_key": "k",
            "health_check": {"type": "http", "path": "/health", "interval_secs": 1, "max_failed": 2, "expect_2xx": false,
            "alert_webhook": "http://127.0.0.1:9/a"}})))
        .unwrap();
        let TunnelKind::Pooled { health_check: Some(h), .. } = &a.kind else { panic!("pooled") };
        assert_eq!(h.check.kind, HealthKind::Http { path: "/health".into(), expect_2xx: false });
        assert_eq!(h.check.max_failed, 2);
        assert_eq!(h.check.alert_webhook.as_deref(), Some("http://127.0.0.1:9/a"));
        assert!(parse_tunnel_args(&args(json!({"local_port": 1, "protocol": "http", "secret": "s"}))).is_err());
        assert!(parse_tunnel_args(&args(json!({"local_port": 1, "protocol": "udp", "group": "g", "group_key": "k"})))
            .is_err());
        for (v, want) in [
            (json!({"local_port": 1, "protocol": "http", "group": "g"}), "go together"),
            (json!({"local_port": 1, "protocol": "p2p", "peer_name": "a"}), "secret"),
            (json!({"local_port": 1, "protocol": "p2p", "secret": "s"}), "peer_name"),
            (
                json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "peer_target": "b"}),
                "not both",
            ),
            (json!({"local_port": 1, "protocol": "http", "health_check": {"type": "ftp"}}), "health_check"),
            (json!({"local_port": 1, "protocol": "http", "health_check": {"type": "tcp", "bogus": 1}}), "health_check"),
            (json!({"local_port": 1, "protocol": "http", "health_check": {"type": "tcp"}}), "for load-balanced pools"),
            (
                json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "subdomain": "abc"}),
                "'subdomain' applies to http",
            ),
        ] {
            let e = parse_tunnel_args(&args(v.clone())).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn basic_auth_is_for_http_and_hidden() {
        let a = parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "http", "group": "pool",
            "group_key": "k", "basic_auth": "ana:correct horse"})))
        .unwrap();
        assert_eq!(a.basic_auth.as_ref().map(|b| b.as_str()), Some("ana:correct horse"));
        assert!(!format!("{a:?}").contains("correct horse"));
        // The pool's config file names the user; the password comes from the environment.
        let cfg = crate::config::McpConfig::new("127.0.0.1:4040", "http://127.0.0.1:4041", true, None);
        let f = pool_config(&a, &cfg);
        assert!(
            f.contents.contains("basic_auth = '''ana:$RUSTUNNEL_BASIC_AUTH_PASSWORD'''")
                && !f.contents.contains("horse"),
            "{}",
            f.contents
        );
        let a = parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "tcp", "group": "pool",
            "group_key": "k", "cidr_allow": ["10.0.0.0/8"], "cidr_deny": ["10.9.0.0/16"]})))
        .unwrap();
        let f = pool_config(&a, &cfg);
        let t = &rustunnel_client::StartFile::parse(&f.contents).unwrap().tunnel_configs()[0];
        assert_eq!(
            (t.cidr_allow.as_slice(), t.cidr_deny.as_slice()),
            (&["10.0.0.0/8".to_string()][..], &["10.9.0.0/16".to_string()][..])
        );
        let a = parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "http", "host_header": "rewrite"})))
            .unwrap();
        assert_eq!(a.host_header.as_deref(), Some("rewrite"));
        for v in [
            json!({"local_port": 1, "protocol": "tcp", "host_header": "rewrite"}),
            json!({"local_port": 1, "protocol": "http", "host_header": "two words"}),
            json!({"local_port": 1, "protocol": "http", "cidr_allow": ["10.0.0.0/33"]}),
            json!({"local_port": 1, "protocol": "http", "cidr_deny": "10.0.0.0/8"}),
            json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "cidr_allow": ["10.0.0.0/8"]}),
            json!({"local_port": 1, "protocol": "tcp", "basic_auth": "ana:correct horse"}),
            json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "basic_auth": "ana:correct horse"}),
            json!({"local_port": 1, "protocol": "http", "basic_auth": "ana"}),
            json!({"local_port": 1, "protocol": "udp", "proxy_protocol": "v1"}),
            json!({"local_port": 1, "protocol": "tcp", "proxy_protocol": "v3"}),
        ] {
            assert!(parse_tunnel_args(&args(v.clone())).is_err(), "{v}");
        }
        let a =
            parse_tunnel_args(&args(json!({"local_port": 5432, "protocol": "tcp", "proxy_protocol": "V2"}))).unwrap();
        assert_eq!(a.proxy_protocol, Some(ProxyProtocol::V2));
        assert_eq!(access_flags(&a), ["--proxy-protocol", "v2"]);
    }

    #[test]
    fn pool_config_parses_and_hides_the_key() {
        let a = parse_tunnel_args(&args(json!({"local_port": 3000, "protocol": "http", "group": "pool",
            "group_key": "secret-key", "health_check": {"type": "http", "path": "/health"}})))
        .unwrap();
        let cfg = crate::config::McpConfig::new("127.0.0.1:4040", "http://127.0.0.1:4041", true, None);
        let f = pool_config(&a, &cfg);
        assert!(!f.contents.contains("secret-key"));
        let parsed = rustunnel_client::StartFile::parse(&f.contents).unwrap();
        let t = parsed.tunnel_configs();
        assert_eq!(t[0].group.as_ref().map(|g| g.name.as_str()), Some("pool"));
        assert_eq!(
            t[0].health_check.as_ref().map(|h| h.kind.clone()),
            Some(HealthKind::Http { path: "/health".into(), expect_2xx: true })
        );
    }

    #[test]
    fn bad_tunnel_args() {
        for (v, want) in [
            (json!({"local_port": 3000, "protocol": "ftp"}), "unknown protocol"),
            (json!({"local_port": 0, "protocol": "http"}), "between 1 and 65535"),
            (json!({"local_port": 70000, "protocol": "http"}), "between 1 and 65535"),
            (json!({"local_port": "abc", "protocol": "http"}), "must be an integer"),
            (json!({"protocol": "http"}), "required"),
            (json!({"local_port": 3000}), "'protocol' is required"),
            (json!({"local_port": 3000, "protocol": "tcp", "subdomain": "abc"}), "http tunnels only"),
            (json!({"local_port": 3000, "protocol": "http", "subdomain": "a"}), "subdomain"),
            (json!({"local_port": 3000, "protocol": "http", "local_host": "http://x/"}), "local_host"),
        ] {
            let e = parse_tunnel_args(&args(v.clone())).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("localhost:4040"), "localhost:4040");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
