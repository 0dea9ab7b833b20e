//! `close_tunnel`: through the management API (the URL stops at once), and the local client
//! too when this MCP server runs it.
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::options::TokenArg;
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::fields::Ident;
use crate::tools::route::{route, CallCtx, ToolSpec};

pub fn tool() -> ToolRoute<McpServer> {
    route(spec(), close_tunnel)
}

/// `close_tunnel`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseArgs {
    /// rustunnel API token. Optional: omit it when the MCP server was started with RUSTUNNEL_TOKEN set (the usual
    /// case). Never invent one.
    pub token: TokenArg,
    /// The tunnel_id returned by create_tunnel, or an id from list_tunnels.
    pub tunnel_id: Ident<128>,
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "close_tunnel",
        title: "Close a tunnel",
        description:
            "Close a tunnel by id (from create_tunnel or list_tunnels). Its public URL stops working at once. \
Tunnels opened by other clients can be closed too, if the token may manage them.",
        annotations: ToolAnnotations::new().read_only(false).destructive(true).idempotent(true).open_world(true),
    }
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

async fn close_tunnel(server: McpServer, args: CloseArgs, _ctx: CallCtx) -> Result<ClosedView, ToolError> {
    let token = server.config().token(args.token.as_ref().map(|t| t.0.as_str()));
    let id = args.tunnel_id.0;
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
