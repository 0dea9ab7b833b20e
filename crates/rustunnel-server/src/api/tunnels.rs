//! `GET /api/tunnels`, `GET /api/tunnels/{id}`, `DELETE /api/tunnels/{id}`: open tunnels of the
//! caller's owner (all of them for the admin token). Another owner's tunnel is "not found".
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use rustunnel_api_types::{ClosedTunnel, ErrorBody, Tunnel, TunnelList};
use rustunnel_proto::control::CloseReason;

use super::convert;
use super::error::ApiError;
use super::extract::{Caller, Path};
use crate::state::Shared;

fn find(shared: &Shared, caller: &Caller, id: &str) -> Result<Arc<crate::tunnel::Tunnel>, ApiError> {
    shared.tunnel(id).filter(|t| caller.may_see(&t.session.principal.owner_id)).ok_or_else(|| {
        ApiError::not_found(format!("no open tunnel with id '{}'", id.chars().take(64).collect::<String>()))
    })
}

/// Open tunnels, oldest first.
#[utoipa::path(get, path = "/api/tunnels", tag = "tunnels", security(("bearer" = [])),
    responses(
        (status = 200, description = "Open tunnels visible to the caller", body = TunnelList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn list(State(shared): State<Arc<Shared>>, caller: Caller) -> Json<TunnelList> {
    let mut open: Vec<_> =
        shared.tunnels().into_iter().filter(|t| caller.may_see(&t.session.principal.owner_id)).collect();
    open.sort_by(|a, b| a.opened_at_ms.cmp(&b.opened_at_ms).then_with(|| a.id.cmp(&b.id)));
    Json(TunnelList { tunnels: open.iter().map(|t| convert::tunnel(&shared, t)).collect() })
}

/// One open tunnel.
#[utoipa::path(get, path = "/api/tunnels/{id}", tag = "tunnels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tunnel id")),
    responses(
        (status = 200, description = "The tunnel", body = Tunnel),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such open tunnel for this caller", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn get(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Tunnel>, ApiError> {
    let t = find(&shared, &caller, &id)?;
    Ok(Json(convert::tunnel(&shared, &t)))
}

/// Closes a tunnel: its public endpoint stops at once, the client is told (`tunnel_closed`)
/// and does not re-create it, and history records `closed_by_api`.
#[utoipa::path(delete, path = "/api/tunnels/{id}", tag = "tunnels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tunnel id")),
    responses(
        (status = 200, description = "The tunnel was closed", body = ClosedTunnel),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The tunnel's subdomain or port is outside the caller's token rights", body = ErrorBody),
        (status = 404, description = "No such open tunnel for this caller", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn close(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ClosedTunnel>, ApiError> {
    let t = find(&shared, &caller, &id)?;
    // A token limited to some names and ports closes only tunnels on them.
    let rights = &caller.0.rights;
    let inside = t.info.subdomain.as_deref().is_none_or(|s| rights.allows_subdomain(s))
        && t.info.remote_port.is_none_or(|p| rights.allows_port(p));
    if !inside {
        return Err(ApiError::forbidden(format!("this tunnel's endpoint is outside the token's rights ({rights})")));
    }
    let closed = shared.close_tunnel(&t.id, CloseReason::ClosedByApi, "closed through the management API").await;
    // A concurrent close may have won the race; either way the tunnel is gone.
    tracing::info!(tunnel = %t.id, by = %caller.0.owner_id, already = closed.is_none(), "tunnel closed by API");
    Ok(Json(ClosedTunnel { id: t.id.clone(), closed: true }))
}
