//! `GET /api/status` and `GET /api/regions`: public, no token needed.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use rustunnel_api_types::{ProtocolCounts, RegionList, StatusResponse};
use rustunnel_proto::Protocol;

use super::convert;
use crate::state::Shared;

/// Server version, region, and how many sessions and tunnels are open.
#[utoipa::path(get, path = "/api/status", tag = "server",
    responses((status = 200, description = "Server status", body = StatusResponse)))]
pub async fn status(State(shared): State<Arc<Shared>>) -> Json<StatusResponse> {
    let mut tunnels = ProtocolCounts::default();
    for t in shared.tunnels() {
        match t.protocol {
            Protocol::Http => tunnels.http += 1,
            Protocol::Tcp => tunnels.tcp += 1,
            Protocol::Udp => tunnels.udp += 1,
        }
    }
    Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        region: shared.config().region.id.clone(),
        sessions: shared.session_count() as u64,
        tunnels,
    })
}

/// The configured regions; a server with none configured lists itself.
#[utoipa::path(get, path = "/api/regions", tag = "server",
    responses((status = 200, description = "Regions clients can connect to", body = RegionList)))]
pub async fn regions(State(shared): State<Arc<Shared>>) -> Json<RegionList> {
    Json(RegionList { regions: region_list(&shared) })
}

pub fn region_list(shared: &Shared) -> Vec<rustunnel_api_types::Region> {
    let regions = shared.live().regions();
    if regions.is_empty() {
        vec![convert::region(&shared.config().region)]
    } else {
        regions.iter().map(convert::region).collect()
    }
}
