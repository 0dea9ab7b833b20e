//! `GET /healthz` and `GET /readyz`: probes for load balancers and orchestrators. Public,
//! answered without touching a tunnel.
//!
//! - `/healthz`: the process serves requests (200 while the API port accepts).
//! - `/readyz`: the server takes new visitors and clients: 200, or 503 while the database does
//!   not answer. From the first moment of a graceful shutdown (the drain) the API port refuses
//!   new connections like every other port, so every probe fails; a probe already being
//!   answered then gets 503 with `"draining": true`.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::Shared;

/// How long `/readyz` waits for the database: a probe must answer well within a load
/// balancer's own timeout (commonly 2-5 s), unreachable or not.
const DB_TIMEOUT: Duration = Duration::from_millis(1500);

/// Always 200 `{"status":"ok"}` while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "The process is alive", body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(json!({ "status": "ok" })))
}

/// 200 `{"status":"ready",...}` when the server takes new visitors and clients; 503
/// `{"status":"not_ready",...}` while it drains or its database does not answer.
#[utoipa::path(get, path = "/readyz", tag = "server",
    responses(
        (status = 200, description = "Ready for visitors", body = Object),
        (status = 503, description = "Draining, or the database is unreachable", body = Object)))]
pub async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let draining = shared.stop_accepting().is_cancelled();
    let database = match tokio::time::timeout(DB_TIMEOUT, shared.store().ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            "unreachable".to_string()
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer within {DB_TIMEOUT:?}");
            "timeout".to_string()
        }
    };
    let ready = !draining && database == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "draining": draining,
        "database": database,
    });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body))
}
