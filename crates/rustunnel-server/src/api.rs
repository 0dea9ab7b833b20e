//! The management REST API (tokens, tunnels, history, regions, metrics).
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::server::Shared;

/// Serves the management API until the server stops accepting.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // The full API lands with the management-plane work; until then the port is bound and
    // held so addresses and flags are already final.
    let _listener = listener;
    shared.stop_accepting.cancelled().await;
}
