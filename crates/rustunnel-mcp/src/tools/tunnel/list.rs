//! `list_tunnels`: the server's tunnels, pools and P2P services for the token, and the P2P
//! endpoints this MCP server runs.
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::create::P2pView;
use super::options::TokenArg;
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::route::{route, CallCtx, ToolSpec};

pub fn tool() -> ToolRoute<McpServer> {
    route(spec(), list_tunnels)
}

/// `list_tunnels`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// rustunnel API token. Optional: omit it when the MCP server was started with RUSTUNNEL_TOKEN set (the usual
    /// case). Never invent one.
    pub token: TokenArg,
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "list_tunnels",
        title: "List open tunnels",
        description: "List the tunnels currently open on the rustunnel server for this token (all tunnels with an \
admin token): id, public URL, protocol, local address, traffic counters. managed_here is true for tunnels this \
MCP server opened with create_tunnel.",
        annotations: ToolAnnotations::new().read_only(true).open_world(true),
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

async fn list_tunnels(server: McpServer, args: ListArgs, _ctx: CallCtx) -> Result<TunnelListView, ToolError> {
    let token = server.config().token(args.token.as_ref().map(|t| t.0.as_str()));
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
