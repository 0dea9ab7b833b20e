//! `list_regions`, and the region lookup `create_tunnel` does.
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use schemars::JsonSchema;
use serde::Serialize;

use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::fields::NoArgs;
use crate::tools::route::{route, CallCtx, ToolSpec};

pub fn tool() -> ToolRoute<McpServer> {
    route(spec(), list_regions)
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "list_regions",
        title: "List regions",
        description:
            "List the server regions tunnels can be opened in: id (pass it as `region` to create_tunnel), name, \
location and addresses. Needs no token.",
        annotations: ToolAnnotations::new().read_only(true).idempotent(true).open_world(true),
    }
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

async fn list_regions(server: McpServer, _args: NoArgs, _ctx: CallCtx) -> Result<RegionListView, ToolError> {
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

pub async fn resolve_region(server: &McpServer, region: &str) -> Result<String, ToolError> {
    let list = server.api().regions().await?;
    match list.regions.iter().find(|r| r.id.eq_ignore_ascii_case(region)) {
        Some(r) => Ok(r.control_addr.clone()),
        None => Err(ToolError::UnknownRegion {
            region: region.to_string(),
            known: list.regions.iter().map(|r| r.id.clone()).collect(),
        }),
    }
}
