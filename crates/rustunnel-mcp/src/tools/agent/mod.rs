//! The nine agent-channel tools, with tunnel-mcp's names and parameters: `tunnel_open`,
//! `tunnel_invite`, `tunnel_join`, `tunnel_say`, `tunnel_listen`, `tunnel_status`,
//! `tunnel_share`, `tunnel_receive`, `tunnel_close`.
//!
//! They drive one [`rustunnel_agent::session::AgentChannel`] (at most one room per MCP server
//! process), owned by [`state::AgentState`]. The host's room relay listens on `127.0.0.1:0`
//! inside this process and is published through an in-process rustunnel HTTP tunnel (its own
//! [`crate::tunnels::TunnelManager`], so `close_tunnel`/`list_tunnels` never see or stop it);
//! guests dial the tunnel's public `ws://` URL. Everything after the WebSocket upgrade is
//! end-to-end encrypted by `rustunnel-agent` (see `docs/agent-channel.md`).
//!
//! Lifetime: a watcher task on [`crate::server::McpServer::tasks`] tears the room and the tunnel
//! down when the server shuts down (stdin closed): the host's room ends for everyone with a
//! final system message, a guest leaves. It also stops the tunnel once a room has ended by
//! itself (idle timeout). Nothing is written to disk except the `savePath` of `tunnel_receive`.
use rmcp::handler::server::router::tool::ToolRouter;

use crate::server::McpServer;

pub mod chat;
pub mod error;
pub mod files;
pub mod room;
pub mod state;
pub mod views;

/// Tools of this module.
pub fn router() -> ToolRouter<McpServer> {
    ToolRouter::new()
        .with_route(room::open())
        .with_route(room::invite())
        .with_route(room::join())
        .with_route(chat::say())
        .with_route(chat::listen())
        .with_route(chat::status())
        .with_route(files::share())
        .with_route(files::receive())
        .with_route(room::close())
}
