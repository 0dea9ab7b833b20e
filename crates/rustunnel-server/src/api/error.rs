//! The one error shape of the API, `{"error":{"code":"...","message":"..."}}`, and the mapping
//! of every extractor rejection into it, so bad input is always a JSON 4xx and never a 500.
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rustunnel_api_types::ErrorBody;

use crate::auth::AuthError;
use crate::store::StoreError;

/// An error answer: status, stable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds until a retry can succeed, sent as `Retry-After`.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_secs: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid token: send 'Authorization: Bearer <token>'",
        )
    }
    /// A server-side failure. The detail goes to the log, not to the caller.
    pub fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "management API internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let retry_after = self.retry_after_secs;
        let mut resp = (self.status, axum::Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if unauthorized {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadLabel => ApiError::bad_request(e.to_string()),
            e => ApiError::internal(&e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected => ApiError::unauthorized(),
            AuthError::RateLimited { retry_after } => ApiError {
                // Whole seconds, rounded up: a client that waits this long is let in.
                retry_after_secs: Some(rustunnel_proto::limits::whole_secs(retry_after)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            },
            AuthError::Store(s) => ApiError::internal(&s),
        }
    }
}

/// Maps a rejection's status to a code; the status itself is kept (400, 413, 415, 422).
fn rejection(status: StatusCode, text: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        _ => "bad_request",
    };
    // A rejection is always the caller's fault: never let one surface as a 5xx.
    let status = if status.is_client_error() { status } else { StatusCode::BAD_REQUEST };
    ApiError::new(status, code, text)
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}
