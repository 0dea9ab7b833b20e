//! The six tunnel tools: `create_tunnel`, `list_tunnels`, `close_tunnel`,
//! `get_connection_info`, `list_regions`, `get_tunnel_history`. `create_tunnel` runs tunnels
//! in this process; the others call the management API or start nothing.
use rmcp::handler::server::router::tool::ToolRouter;

use crate::server::McpServer;

pub mod close;
pub mod connection_info;
pub mod create;
pub mod history;
pub mod list;
pub mod options;
pub mod regions;

/// Tools of this module.
pub fn router() -> ToolRouter<McpServer> {
    ToolRouter::new()
        .with_route(create::tool())
        .with_route(list::tool())
        .with_route(close::tool())
        .with_route(connection_info::tool())
        .with_route(regions::tool())
        .with_route(history::tool())
}
