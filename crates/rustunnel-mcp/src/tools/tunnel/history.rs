//! `get_tunnel_history`: past and current tunnels from the management API, page by page.
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::options::{TokenArg, TunnelProtocols};
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::fields::{Choice, Int};
use crate::tools::route::{route, CallCtx, ToolSpec};

pub fn tool() -> ToolRoute<McpServer> {
    route(spec(), get_tunnel_history)
}

const HISTORY_DEFAULT: u32 = 25;
const HISTORY_MAX: i64 = 500;

/// `get_tunnel_history`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// rustunnel API token. Optional: omit it when the MCP server was started with RUSTUNNEL_TOKEN set (the usual
    /// case). Never invent one.
    pub token: TokenArg,
    /// Only tunnels of this type (P2P services are not kept in the history: "p2p" is refused with a pointer to
    /// list_tunnels).
    pub protocol: Option<Choice<TunnelProtocols>>,
    /// Most entries to return (default 25, at most 500).
    pub limit: Option<Int<1, HISTORY_MAX>>,
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "get_tunnel_history",
        title: "Tunnel history",
        description:
            "List past and current tunnels, newest first: when each was opened and closed, why it closed, and \
its traffic. Filter by protocol; limit the number of entries (default 25).",
        annotations: ToolAnnotations::new().read_only(true).open_world(true),
    }
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

async fn get_tunnel_history(server: McpServer, args: HistoryArgs, _ctx: CallCtx) -> Result<HistoryListView, ToolError> {
    let token = server.config().token(args.token.as_ref().map(|t| t.0.as_str()));
    let protocol = args.protocol.map(|p| p.0);
    let limit = args.limit.map(|l| l.0 as u32).unwrap_or(HISTORY_DEFAULT);
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
