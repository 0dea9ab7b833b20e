//! `GET/POST /api/tokens`, `DELETE /api/tokens/{id}`: the caller's owner's tokens. A token's
//! value is returned once, at creation; only its hash is stored, and it is never logged.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use rustunnel_api_types::{CreateToken, CreatedToken, ErrorBody, RevokedToken, TokenList};
use rustunnel_proto::control::CloseReason;

use super::convert;
use super::error::ApiError;
use super::extract::{Caller, Json, Path};
use crate::rights::Rights;
use crate::session::Session;
use crate::state::Shared;

pub use crate::store::MAX_LABEL;
const MAX_ID: usize = 128;

/// Tokens of the caller's owner (every owner's for the admin token), newest first.
#[utoipa::path(get, path = "/api/tokens", tag = "tokens", security(("bearer" = [])),
    responses(
        (status = 200, description = "Tokens (never their values or hashes)", body = TokenList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn list(State(shared): State<Arc<Shared>>, caller: Caller) -> Result<axum::Json<TokenList>, ApiError> {
    let tokens = shared.store().list_tokens(caller.scope()).await?;
    Ok(axum::Json(TokenList { tokens: tokens.into_iter().map(convert::token).collect() }))
}

/// Mints a token. The admin token mints for a new owner, or for an existing one given
/// `owner_id`; any other token mints for its own owner.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", security(("bearer" = [])),
    request_body = CreateToken,
    responses(
        (status = 201, description = "The new token; its value is shown only this once", body = CreatedToken),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The anonymous dev-server owner cannot mint tokens, or the rights asked for go beyond the caller's", body = ErrorBody),
        (status = 404, description = "No such owner", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Body has wrong types, missing or unknown fields", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn create(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    // Through a map first: serde would otherwise accept a JSON array for the struct.
    let body: CreateToken = serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", format!("invalid token request: {e}"))
    })?;
    let label = crate::store::check_label(&body.label).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let p = &caller.0;
    let owner = if p.is_admin {
        match body.owner_id.as_deref() {
            None => None,
            Some(o) if o.len() <= MAX_ID && shared.store().owner_exists(o).await? => Some(o.to_string()),
            Some(_) => return Err(ApiError::not_found("no such owner")),
        }
    } else if p.token_id.is_none() {
        return Err(ApiError::forbidden("the anonymous owner of a dev server cannot mint tokens; use the admin token"));
    } else {
        match body.owner_id.as_deref() {
            None => Some(p.owner_id.clone()),
            Some(o) if o == p.owner_id => Some(p.owner_id.clone()),
            // Another tenant's owner: same answer as a missing one.
            Some(_) => return Err(ApiError::not_found("no such owner")),
        }
    };
    let asked = Rights::parse(body.subdomains.as_deref(), body.ports.as_deref())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let rights = asked.minted_by(&p.rights).map_err(|e| ApiError::forbidden(e.to_string()))?;
    let (rec, raw) = shared.store().create_token_with(owner.as_deref(), label, &rights).await?;
    tracing::info!(token_id = %rec.id, owner = %rec.owner_id, "token created through the API");
    let t = convert::token(rec);
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            token: raw,
            id: t.id,
            label: t.label,
            owner_id: t.owner_id,
            created_at: t.created_at,
            subdomains: t.subdomains,
            ports: t.ports,
        }),
    ))
}

/// Revokes a token: it is refused from now on, the tunnels opened with it are closed at once
/// (`token_revoked`) and its client sessions are ended.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked", body = RevokedToken),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token has rights beyond the caller's", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<RevokedToken>, ApiError> {
    let not_found = || ApiError::not_found("no such token");
    if id.len() > MAX_ID {
        return Err(not_found());
    }
    // A token limited to some names and ports revokes only tokens within them (not, say, its
    // owner's unlimited one).
    let rights = &caller.0.rights;
    if !rights.is_unrestricted() {
        let target = shared.store().token(&id, caller.scope()).await?.ok_or_else(not_found)?;
        if !target.rights.within(rights) {
            return Err(ApiError::forbidden(format!(
                "that token has rights beyond this one's ({rights}); revoke it with a token that has them"
            )));
        }
    }
    let rec = shared.store().revoke_token(&id, caller.scope()).await?.ok_or_else(not_found)?;
    let closed_tunnels = revoke_sessions(&shared, &rec.id).await;
    tracing::info!(token_id = %rec.id, closed_tunnels, "token revoked through the API");
    Ok(axum::Json(RevokedToken { id: rec.id, revoked: true, closed_tunnels }))
}

/// Closes every tunnel held by sessions of `token_id` and ends those sessions. The tunnels
/// close before this returns; the sessions end once their `tunnel_closed` messages are
/// flushed (bounded wait), so clients learn why and do not re-create the tunnels.
async fn revoke_sessions(shared: &Arc<Shared>, token_id: &str) -> u32 {
    let sessions: Vec<Arc<Session>> =
        shared.sessions().into_iter().filter(|s| s.principal.token_id.as_deref() == Some(token_id)).collect();
    let tunnel_ids: Vec<String> = shared
        .tunnels()
        .iter()
        .filter(|t| t.session.principal.token_id.as_deref() == Some(token_id))
        .map(|t| t.id.clone())
        .collect();
    let mut closed = 0u32;
    for id in tunnel_ids {
        if shared.close_tunnel(&id, CloseReason::TokenRevoked, "the token of this tunnel was revoked").await.is_some() {
            closed += 1;
        }
    }
    for s in sessions {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while s.out.capacity() < s.out.max_capacity() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.end_session(&s, CloseReason::TokenRevoked).await;
    }
    closed
}
