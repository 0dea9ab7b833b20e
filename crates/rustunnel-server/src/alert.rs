//! Pool alerts: a JSON POST to each webhook (the members' and the server-wide one), with a
//! deadline per attempt and a few retries. Plain `http://` webhooks; each POST drives its own
//! HTTP/1.1 connection inside the delivering task, so nothing outlives the server's tracker.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::net::TcpStream;

use crate::pool::{Alert, AlertKind};

/// Deadline of one delivery attempt (connect, send, response head).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per webhook, and the pause before each retry.
pub const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL must be http://host[:port]/path (got '{0}')")]
    BadUrl(String),
    #[error("webhook host does not resolve")]
    Resolve,
    #[error("webhook unreachable: {0}")]
    Io(#[from] std::io::Error),
    #[error("webhook request failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    #[error("webhook timed out")]
    Timeout,
}

pub use crate::webhook::parse_webhook;

impl From<crate::webhook::BadWebhookUrl> for WebhookError {
    fn from(e: crate::webhook::BadWebhookUrl) -> Self {
        WebhookError::BadUrl(e.0)
    }
}

#[derive(Debug, Serialize)]
pub struct AlertBody<'a> {
    pub event: &'a AlertKind,
    pub pool: &'a str,
    pub protocol: &'a str,
    pub public_url: &'a str,
    pub healthy_members: usize,
    pub members: Vec<AlertMember<'a>>,
    /// RFC 3339, UTC.
    pub time: String,
}

#[derive(Debug, Serialize)]
pub struct AlertMember<'a> {
    pub tunnel_id: &'a str,
    pub healthy: bool,
    pub draining: bool,
    pub detail: &'a str,
}

pub fn body(alert: &Alert, now: SystemTime) -> Vec<u8> {
    let b = AlertBody {
        event: &alert.kind,
        pool: &alert.pool.name,
        protocol: alert.pool.protocol.as_str(),
        public_url: &alert.public_url,
        healthy_members: alert.members.iter().filter(|m| m.healthy && !m.draining).count(),
        members: alert
            .members
            .iter()
            .map(|m| AlertMember {
                tunnel_id: &m.tunnel_id,
                healthy: m.healthy,
                draining: m.draining,
                detail: &m.detail,
            })
            .collect(),
        time: rfc3339(now),
    };
    serde_json::to_vec(&b).unwrap_or_default()
}

/// POSTs `body` to `url`, retrying on failure. Returns the last error when every attempt failed.
pub async fn deliver(url: &str, body: Bytes) -> Result<(), WebhookError> {
    let uri = parse_webhook(url)?;
    let mut last = WebhookError::Timeout;
    for attempt in 0..=RETRY_DELAYS.len() {
        if attempt > 0 {
            tokio::time::sleep(RETRY_DELAYS[attempt - 1]).await;
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&uri, body.clone())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = WebhookError::Timeout,
        }
    }
    Err(last)
}

/// Delivers pool alerts one after another (so a down and its recovery arrive in order) to the
/// members' webhooks and the server-wide one.
pub(crate) async fn alert_loop(
    mut rx: tokio::sync::mpsc::Receiver<Alert>,
    shared: std::sync::Arc<crate::state::Shared>,
) {
    let stop = shared.hard_stop().clone();
    loop {
        let alert = tokio::select! {
            a = rx.recv() => match a { Some(a) => a, None => return },
            _ = stop.cancelled() => return,
        };
        let mut urls = alert.webhooks.clone();
        // Read per alert: a reload may have changed it.
        urls.extend(shared.live().alert_webhook());
        urls.sort();
        urls.dedup();
        let body = Bytes::from(body(&alert, SystemTime::now()));
        for url in urls {
            tokio::select! {
                r = deliver(&url, body.clone()) => {
                    if let Err(e) = r {
                        tracing::warn!(pool = %alert.pool.name, error = %e, "pool alert not delivered");
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

async fn post(uri: &Uri, body: Bytes) -> Result<(), WebhookError> {
    let host = uri.host().ok_or_else(|| WebhookError::BadUrl(uri.to_string()))?;
    let port = uri.port_u16().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port)).await?.next().ok_or(WebhookError::Resolve)?;
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await?;
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("rustunnel-server/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|_| WebhookError::BadUrl(uri.to_string()))?;
    let send = sender.send_request(req);
    tokio::pin!(send);
    // The connection is driven here, next to the request, and dropped with it.
    let status = tokio::select! {
        r = &mut send => r?.status(),
        r = conn => {
            r?;
            // The connection ended in order: after the answer (`Connection: close`, HTTP/1.0),
            // which is waiting for us, or before any (then this is an error).
            send.await?.status()
        }
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(WebhookError::Status(status.as_u16()))
    }
}

/// `2024-05-01T12:34:56Z`: UTC, whole seconds, as webhook receivers get it.
const RFC3339_S: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// A wall-clock instant as RFC 3339 UTC in whole seconds (`2024-05-01T12:34:56Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(PrimitiveDateTime::MAX.assume_utc());
    t.format(RFC3339_S).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn webhook_urls() {
        assert!(parse_webhook("http://127.0.0.1:9/hook").is_ok());
        assert!(parse_webhook("https://example.com/hook").is_err());
        assert!(parse_webhook("file:///etc/passwd").is_err());
        assert!(parse_webhook("/relative").is_err());
        assert!(parse_webhook(&format!("http://a/{}", "x".repeat(600))).is_err());
    }

    /// Receivers that close after answering (`Connection: close`, HTTP/1.0) got their alert
    /// but were counted as failures and sent it three times.
    #[tokio::test]
    async fn an_answer_with_connection_close_is_one_delivery() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Each receiver counts the POSTs it gets until 1.5 s pass without one (retries would
        // come at +0.25 s and +1.25 s).
        let case = |answer: &'static str| async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hook", l.local_addr().unwrap());
            let posts = tokio::spawn(async move {
                let mut n = 0;
                while let Ok(Ok((mut s, _))) = tokio::time::timeout(Duration::from_millis(1500), l.accept()).await {
                    let mut buf = vec![0u8; 4096];
                    let mut got = 0;
                    // The request head and its 2-byte body.
                    while !buf[..got].windows(6).any(|w| w == b"\r\n\r\n{}") {
                        got += s.read(&mut buf[got..]).await.unwrap();
                    }
                    n += 1;
                    s.write_all(answer.as_bytes()).await.unwrap();
                }
                n
            });
            deliver(&url, Bytes::from_static(b"{}")).await.unwrap_or_else(|e| panic!("{answer:?}: {e}"));
            assert_eq!(posts.await.unwrap(), 1, "{answer:?}");
        };
        tokio::join!(
            case("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
            case("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
            case("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
        );
    }

    #[tokio::test]
    async fn unreachable_webhook_fails_after_retries() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let r = deliver(&format!("http://127.0.0.1:{port}/x"), Bytes::from_static(b"{}")).await;
        assert!(matches!(r, Err(WebhookError::Io(_))), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(1250), "retried with backoff");
    }
}
