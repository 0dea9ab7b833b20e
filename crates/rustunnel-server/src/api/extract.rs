//! Request extractors: the caller's identity from `Authorization: Bearer`, and JSON / query /
//! path extractors whose rejections are [`ApiError`]s.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::Principal;
use crate::state::Shared;

/// A JSON body (`Content-Type: application/json`, at most [`super::MAX_BODY`] bytes).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Query parameters (`serde_urlencoded`).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The authenticated caller. Failures are counted per source IP by the shared
/// [`crate::auth::FailureLimiter`] (the same one the control plane uses), so guessing tokens
/// over the API is rate-limited too (429).
pub struct Caller(pub Principal);

impl Caller {
    /// Owner filter for store queries: `None` (everything) for the admin token.
    pub fn scope(&self) -> Option<&str> {
        (!self.0.is_admin).then_some(self.0.owner_id.as_str())
    }

    /// Whether this caller may see an object owned by `owner_id`.
    pub fn may_see(&self, owner_id: &str) -> bool {
        self.0.is_admin || self.0.owner_id == owner_id
    }
}

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let token = match parts.headers.get(AUTHORIZATION) {
            // No header: the anonymous owner on a loopback dev server, a 401 elsewhere.
            None => String::new(),
            Some(v) => match v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).map(str::trim) {
                Some(t) if !t.is_empty() => t.to_string(),
                // Malformed or empty: must fail, and count as a failure, never fall back to
                // anonymous.
                _ => "\u{0}malformed".to_string(),
            },
        };
        let principal = shared.auth().authenticate(shared.store(), ip, &token).await?;
        Ok(Caller(principal))
    }
}
