//! The six tunnel tools: `create_tunnel`, `list_tunnels`, `close_tunnel`,
//! `get_connection_info`, `list_regions`, `get_tunnel_history`.
//!
//! `create_tunnel` runs the tunnel in-process ([`crate::tunnels::TunnelManager`]); the others
//! call the management API. P2P and load-balancing parameters are parsed into
//! [`TunnelKind::P2p`] / [`TunnelKind::Pooled`] and answered "not supported yet" in one place
//! ([`unsupported`]): wiring them is a matter of handling those variants.
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{JsonObject, ToolAnnotations};
use rustunnel_proto::Protocol;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

use super::args::{check_host, check_ident, Args};
use super::schema::object;
use super::{route, CallCtx, ToolError, ToolSpec};
use crate::server::McpServer;
use crate::tunnels::TunnelRequest;

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
            json!({"type": "string", "enum": PROTOCOLS, "description": "Tunnel type: \"http\" for web apps and APIs (public URL under a subdomain), \"tcp\" for raw TCP (databases, SSH; public host:port), \"udp\" for UDP services (game servers, DNS), \"p2p\" for peer-to-peer tunnels (not available yet)."}),
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
            json!({"type": "string", "description": "P2P only: shared secret; publisher and subscriber must use the same one. (Not available yet.)"}),
        ),
        (
            "peer_name",
            json!({"type": "string", "description": "P2P publish: publish the local service under this name. (Not available yet.)"}),
        ),
        (
            "peer_target",
            json!({"type": "string", "description": "P2P connect: connect to the published P2P service with this name. (Not available yet.)"}),
        ),
        (
            "group",
            json!({"type": "string", "description": "Load balancing (http/tcp): name of the pool to join; every member serves the same public URL. (Not available yet.)"}),
        ),
        (
            "group_key",
            json!({"type": "string", "description": "Load balancing: shared secret of the pool; all members must agree. (Not available yet.)"}),
        ),
        (
            "health_check",
            json!({
                "type": "object",
                "description": "Load balancing: how the server checks each pool member. (Not available yet.)",
                "properties": {
                    "type": {"type": "string", "enum": ["tcp", "http"], "description": "tcp: connect only; http: GET the path."},
                    "path": {"type": "string", "description": "HTTP path to GET, e.g. \"/health\"."},
                    "interval_secs": {"type": "integer", "minimum": 1, "description": "Seconds between checks."},
                    "timeout_secs": {"type": "integer", "minimum": 1, "description": "Seconds before a check fails."},
                    "max_failed": {"type": "integer", "minimum": 1, "description": "Failed checks before a member is taken out."},
                    "expect_2xx": {"type": "boolean", "description": "HTTP checks: require a 2xx status."},
                    "alert_webhook": {"type": "string", "description": "URL to POST to when a member goes down."}
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
                    json!({"type": "string", "enum": ["http", "tcp", "udp", "p2p"], "description": "Only tunnels of this type."}),
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
        health_check: Option<JsonObject>,
    },
}

fn parse_protocol(p: &str) -> Option<Protocol> {
    match p {
        "http" => Some(Protocol::Http),
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
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
    let health_check = a.opt_object("health_check")?.cloned();

    let p2p = protocol == "p2p" || secret.is_some() || peer_name.is_some() || peer_target.is_some();
    let pooled = group.is_some() || group_key.is_some() || health_check.is_some();
    let kind = if p2p {
        if protocol != "p2p" {
            return Err(ToolError::invalid("secret, peer_name and peer_target apply to protocol \"p2p\" only"));
        }
        if pooled {
            return Err(ToolError::invalid("group, group_key and health_check do not apply to p2p tunnels"));
        }
        TunnelKind::P2p { secret, peer_name, peer_target }
    } else {
        let Some(proto) = parse_protocol(protocol) else {
            return Err(ToolError::invalid(format!("unknown protocol '{protocol}'")));
        };
        if let Some(s) = &subdomain {
            if proto != Protocol::Http {
                return Err(ToolError::invalid("'subdomain' applies to http tunnels only"));
            }
            rustunnel_proto::names::validate_subdomain(s)
                .map_err(|e| ToolError::invalid(format!("'subdomain': {e}")))?;
        }
        if pooled {
            if proto == Protocol::Udp {
                return Err(ToolError::invalid("load balancing (group) applies to http and tcp tunnels only"));
            }
            TunnelKind::Pooled { protocol: proto, subdomain, group, group_key, health_check }
        } else {
            TunnelKind::Plain { protocol: proto, subdomain }
        }
    };
    Ok(TunnelArgs { token, local_port, local_host, region, kind })
}

/// The single place where not-yet-available tunnel kinds are refused.
fn unsupported(kind: &TunnelKind) -> Option<ToolError> {
    match kind {
        TunnelKind::Plain { .. } => None,
        TunnelKind::P2p { .. } => Some(ToolError::NotSupportedYet {
            what: "peer-to-peer tunnels (protocol \"p2p\", secret, peer_name, peer_target)".into(),
        }),
        TunnelKind::Pooled { .. } => {
            Some(ToolError::NotSupportedYet { what: "load-balanced tunnels (group, group_key, health_check)".into() })
        }
    }
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
    /// How long the tunnel lives.
    pub note: String,
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
    /// For load-balanced tunnels: a config file to write first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<ConfigFileView>,
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
    if let Some(e) = unsupported(&a.kind) {
        return Err(e);
    }
    let TunnelKind::Plain { protocol, subdomain } = a.kind else {
        return Err(ToolError::invalid("unsupported tunnel kind"));
    };
    let cfg = server.config();
    let control = match &a.region {
        Some(r) => {
            ctx.progress(format!("looking up region {r}"), Some(4)).await;
            resolve_region(&server, r).await?
        }
        None => cfg.server.clone(),
    };
    let req = TunnelRequest {
        protocol,
        local_host: a.local_host,
        local_port: a.local_port,
        subdomain,
        remote_port: None,
        server: control,
        token: cfg.token(a.token.as_deref()).unwrap_or_default(),
        tls: cfg.tls(),
    };
    let total = if a.region.is_some() { 4 } else { 3 };
    let progress_ctx = ctx.clone();
    let opened = server
        .tunnels()
        .open(req, ctx.cancelled(), move |m| {
            let c = progress_ctx.clone();
            async move { c.progress(m, Some(total)).await }
        })
        .await?;
    Ok(CreatedTunnel {
        public_url: opened.public_url,
        public_urls: opened.public_urls,
        tunnel_id: opened.tunnel_id,
        protocol: opened.protocol,
        name: opened.name,
        local_addr: opened.local_addr,
        server: opened.server,
        region: a.region,
        note: LIFETIME_NOTE.into(),
    })
}

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
    let list = server.api().list_tunnels(token.as_deref()).await?;
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
    Ok(TunnelListView { count: tunnels.len(), tunnels })
}

async fn close_tunnel(server: McpServer, args: JsonObject, _ctx: CallCtx) -> Result<ClosedView, ToolError> {
    let a = Args::new(&args, &["token", "tunnel_id"])?;
    let token = server.config().token(a.opt_str("token", 512)?.as_deref());
    let id = a.req_str("tunnel_id", 128)?;
    check_ident("tunnel_id", &id, 128)?;
    let ours = server.tunnels().is_ours(&id);
    // The API close is what makes the URL stop at once (the server drops the route before it
    // answers); then our client, if it is ours, is stopped so it does not linger.
    let api = server.api().close_tunnel(token.as_deref(), &id).await;
    // If the server's close notice reached our client first, its monitor already stopped it.
    let stopped = server.tunnels().close(&id).await || ours;
    match api {
        Ok(c) => Ok(ClosedView {
            message: if c.closed {
                format!("tunnel {id} is closed; its public URL no longer works")
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
    if let Some(e) = unsupported(&a.kind) {
        return Err(e);
    }
    let TunnelKind::Plain { protocol, subdomain } = &a.kind else {
        return Err(ToolError::invalid("unsupported tunnel kind"));
    };
    let cfg = server.config();
    let mut cmd = vec!["rustunnel".to_string(), protocol.as_str().to_string(), a.local_port.to_string()];
    if a.local_host != "localhost" {
        cmd.extend(["--local-host".into(), shell_quote(&a.local_host)]);
    }
    if let Some(s) = subdomain {
        cmd.extend(["--subdomain".into(), shell_quote(s)]);
    }
    match &a.region {
        Some(r) => cmd.extend(["--region".into(), shell_quote(r), "--api".into(), shell_quote(&cfg.api)]),
        None => cmd.extend(["--server".into(), shell_quote(&cfg.server)]),
    }
    cmd.extend(["--token".into(), "\"$RUSTUNNEL_TOKEN\"".into()]);
    if cfg.insecure {
        cmd.push("--insecure".into());
    }
    let local_addr = if a.local_host.contains(':') {
        format!("[{}]:{}", a.local_host, a.local_port)
    } else {
        format!("{}:{}", a.local_host, a.local_port)
    };
    let mut notes = vec![
        "Set RUSTUNNEL_TOKEN to your rustunnel token first (export RUSTUNNEL_TOKEN=...); a loopback dev server needs none.".to_string(),
        "The command prints the public URL when the tunnel is ready and keeps running; stop it with Ctrl+C. Add --json for machine-readable events.".to_string(),
    ];
    if cfg.insecure {
        notes.push(
            "--insecure skips certificate checks: only for development servers with a self-signed certificate.".into(),
        );
    }
    Ok(ConnectionInfo {
        command: cmd.join(" "),
        protocol: protocol.as_str().to_string(),
        local_addr,
        server: cfg.server.clone(),
        token_env: "RUSTUNNEL_TOKEN".into(),
        config_file: None,
        notes,
    })
}

/// Single-quotes a value for a POSIX shell unless it is plainly safe.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b'[' | b']'))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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
    let list = server.api().history(token.as_deref(), protocol, limit).await?;
    let entries: Vec<HistoryView> = list
        .entries
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
    fn p2p_and_pools_are_recognised_and_refused() {
        for v in [
            json!({"local_port": 3000, "protocol": "p2p", "secret": "s", "peer_name": "svc"}),
            json!({"local_port": 3000, "protocol": "http", "group": "pool", "group_key": "k"}),
            json!({"local_port": 3000, "protocol": "tcp", "health_check": {"type": "tcp"}}),
        ] {
            let a = parse_tunnel_args(&args(v)).unwrap();
            let e = unsupported(&a.kind).expect("refused");
            assert!(e.to_string().contains("not supported yet"), "{e}");
        }
        assert!(parse_tunnel_args(&args(json!({"local_port": 1, "protocol": "http", "secret": "s"}))).is_err());
        assert!(parse_tunnel_args(&args(json!({"local_port": 1, "protocol": "udp", "group": "g"}))).is_err());
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
