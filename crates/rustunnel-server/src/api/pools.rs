//! `GET /api/pools`: load-balanced pools and their members, with health and traffic. A caller
//! sees the pools it has members in, and only its own members; the admin token sees everything.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use rustunnel_api_types::{ErrorBody, Pool, PoolList, PoolMember};

use super::extract::Caller;
use crate::state::Shared;

/// Open pools, by protocol then name.
#[utoipa::path(get, path = "/api/pools", tag = "tunnels", security(("bearer" = [])),
    responses(
        (status = 200, description = "Load-balanced pools visible to the caller", body = PoolList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn list(State(shared): State<Arc<Shared>>, caller: Caller) -> Json<PoolList> {
    Json(PoolList { pools: visible_pools(&shared, &caller) })
}

/// The pools and members `caller` may see, as REST DTOs.
pub fn visible_pools(shared: &Shared, caller: &Caller) -> Vec<Pool> {
    shared
        .pools()
        .into_iter()
        .filter_map(|p| {
            let members: Vec<PoolMember> = p
                .members
                .into_iter()
                .filter_map(|m| {
                    let owner = shared.tunnel(&m.tunnel_id)?.session.principal.owner_id.clone();
                    caller.may_see(&owner).then(|| PoolMember {
                        tunnel_id: m.tunnel_id,
                        name: m.name,
                        healthy: m.healthy,
                        draining: m.draining,
                        health_detail: Some(m.health_detail).filter(|d| !d.is_empty()),
                        health_check: m.health_check,
                        local_addr: m.local_addr,
                        client_addr: m.client_addr,
                        owner_id: owner,
                        requests: m.requests,
                        connections: m.connections,
                        bytes_in: m.bytes_in,
                        bytes_out: m.bytes_out,
                        in_flight: m.in_flight as u64,
                    })
                })
                .collect();
            (!members.is_empty()).then(|| Pool {
                name: p.name,
                protocol: p.protocol.to_string(),
                public_url: p.public_url,
                subdomain: p.subdomain,
                port: p.remote_port,
                healthy_members: p.healthy_members as u64,
                members,
            })
        })
        .collect()
}
