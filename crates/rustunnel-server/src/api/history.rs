//! `GET /api/history`: persisted tunnel history of the caller's owner, newest first.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use rustunnel_api_types::{ErrorBody, HistoryList};
use serde::Deserialize;

use super::convert;
use super::error::ApiError;
use super::extract::{Caller, Query};
use crate::state::Shared;
use crate::store::HistoryQuery;

pub const DEFAULT_LIMIT: i64 = 25;
pub const MAX_LIMIT: i64 = 200;
/// Deep pagination is refused rather than left to scan the table.
pub const MAX_OFFSET: i64 = 1_000_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `http`, `tcp` or `udp`.
    pub protocol: Option<String>,
    /// `true`: only open tunnels; `false`: only closed ones.
    pub active: Option<bool>,
    /// Rows per page, 1-200 (default 25).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Rows to skip, 0-1000000 (default 0).
    #[param(minimum = 0, maximum = 1000000)]
    pub offset: Option<i64>,
}

impl HistoryParams {
    /// Validates and turns the parameters into a store query for `owner` (`None`: every owner).
    pub fn to_query(&self, owner: Option<&str>) -> Result<HistoryQuery, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, got {limit}")));
        }
        let offset = self.offset.unwrap_or(0);
        if !(0..=MAX_OFFSET).contains(&offset) {
            return Err(ApiError::bad_request(format!("offset must be between 0 and {MAX_OFFSET}, got {offset}")));
        }
        let protocol = match self.protocol.as_deref() {
            None => None,
            Some(p @ ("http" | "tcp" | "udp")) => Some(p.to_string()),
            Some(_) => return Err(ApiError::bad_request("protocol must be one of http, tcp, udp")),
        };
        Ok(HistoryQuery { owner_id: owner.map(String::from), protocol, active: self.active, limit, offset })
    }
}

/// Tunnel history, newest first. Survives restarts; kept for the configured retention.
#[utoipa::path(get, path = "/api/history", tag = "history", security(("bearer" = [])),
    params(HistoryParams),
    responses(
        (status = 200, description = "History rows visible to the caller", body = HistoryList),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    caller: Caller,
    Query(params): Query<HistoryParams>,
) -> Result<Json<HistoryList>, ApiError> {
    let q = params.to_query(caller.scope())?;
    let rows = shared.store().list_history(&q).await?;
    Ok(Json(HistoryList {
        entries: rows.into_iter().map(|h| convert::history(&shared, h)).collect(),
        // Both were range-checked above.
        limit: q.limit as u32,
        offset: q.offset as u32,
    }))
}
