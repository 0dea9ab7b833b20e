//! The accept loop every listener of the server shares.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept: the failure (fd exhaustion) persists until connections end.
const BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per listener this often while accepts keep failing.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The next connection (with `TCP_NODELAY` set), or `None` once `stop` is cancelled.
/// Accept errors such as fd exhaustion back off briefly instead of spinning, and are logged
/// once per [`LOG_EVERY`] with the count of the failures in between, not 20 lines a second.
pub async fn accept(listener: &TcpListener, stop: &CancellationToken, what: &str) -> Option<(TcpStream, SocketAddr)> {
    let mut failed = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    rustunnel_transport::tcp::tune(&stream, peer);
                    return Some((stream, peer));
                }
                Err(e) => {
                    failed += 1;
                    if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        tracing::warn!(error = %e, failures = failed, "{what}: accept failed; backing off");
                        logged = Some(Instant::now());
                        failed = 0;
                    }
                    tokio::time::sleep(BACKOFF).await;
                }
            },
        }
    }
}
