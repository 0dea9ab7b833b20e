//! The management REST API on the API port (default 4041): tunnels, history, tokens,
//! regions, status, Prometheus metrics, the OpenAPI document and the agents' manual.
//!
//! - [`error`]: the one JSON error shape, and extractor rejections mapped into it.
//! - [`extract`]: the caller's identity (`Authorization: Bearer`) and JSON/query/path extractors.
//! - one file per resource: [`status`] (status, regions), [`tunnels`], [`pools`], [`p2p`], [`history`], [`tokens`],
//!   [`metrics`], [`openapi`], [`agents_md`], [`health`] (probes); [`convert`] maps state and rows to the DTOs.
//!
//! Tenancy: every route that is not public is scoped to the token's owner; the admin token
//! sees every owner; another owner's object answers 404. No CORS headers are sent: browsers
//! on other origins cannot call the authenticated routes.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::Shared;

pub mod agents_md;
pub mod convert;
pub mod error;
pub mod extract;
pub mod health;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod p2p;
pub mod pools;
pub mod status;
pub mod tokens;
pub mod tunnels;

pub use error::ApiError;

/// Largest request body accepted (the only body is `POST /api/tokens`).
pub const MAX_BODY: usize = 16 * 1024;

/// The API's routes over `shared`. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/status", get(status::status))
        .route("/api/regions", get(status::regions))
        .route("/api/tunnels", get(tunnels::list))
        .route("/api/tunnels/{id}", get(tunnels::get).delete(tunnels::close))
        .route("/api/pools", get(pools::list))
        .route("/api/p2p", get(p2p::list))
        .route("/api/history", get(history::list))
        .route("/api/tokens", get(tokens::list).post(tokens::create))
        .route("/api/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics::metrics))
        .route("/agents.md", get(agents_md::agents_md))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { ApiError::not_found("no such route; see /api/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// Rewrites this server's own region entry to the bound ports when the configuration asked
/// for port 0 (tests, ephemeral servers), so `/api/regions` lists addresses that work.
pub fn advertise_bound_ports(config: &mut Config, control: SocketAddr, api: Option<SocketAddr>) {
    let domain = config.domain.clone();
    if config.control_addr.port() == 0 {
        config.region.control_addr = format!("{domain}:{}", control.port());
    }
    if let (Some(a), Some(bound)) = (config.api_addr, api) {
        if a.port() == 0 {
            config.region.api_url = format!("http://{domain}:{}", bound.port());
        }
    }
}

/// Serves the management API until the server stops accepting; connections in flight get
/// the drain period, then end with the hard stop. Connection tasks belong to the server's
/// task tracker.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = router(shared.clone());
    let graceful = GracefulShutdown::new();
    loop {
        let Some((stream, peer)) = crate::listener::accept(&listener, shared.stop_accepting(), "management API").await
        else {
            break;
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let stop = shared.hard_stop().clone();
        shared.tasks().spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { tower_service::Service::call(&mut app, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = watcher.watch(conn) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = shared.hard_stop().cancelled() => {}
    }
}

#[cfg(test)]
mod tests;
