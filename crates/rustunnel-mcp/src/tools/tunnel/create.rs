//! `create_tunnel`: runs the tunnel in-process ([`crate::tunnels::TunnelManager`]): plain
//! tunnels and pool members on a `ClientHandle`, P2P publishers and visitors on a `P2pHandle`
//! (ids `p2p-...`, managed here).
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use rustunnel_client::options::{GroupConfig, LocalTarget, PoolOptions, TunnelOptions};
use rustunnel_client::p2p::P2pRole;
use rustunnel_client::TunnelConfig;
use schemars::JsonSchema;
use serde::Serialize;

use super::options::{TunnelArgs, TunnelKind};
use super::regions::resolve_region;
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::route::{route, CallCtx, ToolSpec};
use crate::tunnels::{named_tunnel, OpenedP2p, P2pRequest, TunnelRequest};

pub fn tool() -> ToolRoute<McpServer> {
    route(spec(), create_tunnel)
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "create_tunnel",
        title: "Create a tunnel",
        description: "Expose a service that is already running on this machine and get its public URL. \
Returns public_url (share or fetch it), tunnel_id (needed by close_tunnel) and protocol. The tunnel runs \
inside this MCP server and stays open until close_tunnel is called or the MCP server exits. Answers within a \
second; fails fast with a clear message when nothing listens on the local port, the server is unreachable or \
the token is rejected. Use get_connection_info instead when you only need the command for a human to run.",
        annotations: ToolAnnotations::new().read_only(false).destructive(false).idempotent(false).open_world(true),
    }
}

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

const LIFETIME_NOTE: &str =
    "The tunnel stays open until close_tunnel is called with this tunnel_id or this MCP server exits.";

async fn create_tunnel(server: McpServer, args: TunnelArgs, ctx: CallCtx) -> Result<CreatedTunnel, ToolError> {
    let a = args.validate()?;
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
    let (protocol, subdomain, pool) = match a.kind {
        TunnelKind::Plain { protocol, subdomain } => (protocol, subdomain, PoolOptions::default()),
        TunnelKind::Pooled { protocol, subdomain, group, group_key, health_check } => {
            let group = GroupConfig::from_pair(group.as_deref(), group_key.as_deref());
            (protocol, subdomain, PoolOptions { group, health_check: health_check.map(|h| h.check) })
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
    let tunnel = TunnelConfig::from(TunnelOptions {
        target: LocalTarget { host: a.local_host, port: a.local_port },
        access: a.access,
        pool,
        ..named_tunnel(protocol, a.local_port, subdomain)
    });
    let req = TunnelRequest { tunnel, server: control, token, tls: cfg.tls() };
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
