//! A small client for the management REST API (`GET /api/tunnels`, `DELETE /api/tunnels/{id}`,
//! `GET /api/history`, `GET /api/regions`), on hyper-util's pooled client. Plain HTTP and HTTPS
//! (the latter honours `--insecure`). Answers are bounded in size and time.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustunnel_api_types::{ClosedTunnel, ErrorBody, HistoryList, P2pList, PoolList, RegionList, TunnelList};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;

use rustunnel_client::TlsOptions;

/// Largest API answer read (a long history page is well below this).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Deadline for one API call, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most history rows the API returns per page.
pub const HISTORY_PAGE: u32 = 200;

/// Why an API call failed. Each variant says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `--api` is not a usable URL.
    #[error("invalid management API URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Nothing answered (connection refused, DNS, TLS, timeout).
    #[error("management API unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// 401/403: the token is missing, wrong or revoked.
    #[error("token rejected by the server: {message}")]
    Unauthorized { message: String },
    /// 404 with an API error body (unknown tunnel id, ...).
    #[error("{message}")]
    NotFound { message: String },
    /// Any other non-2xx answer.
    #[error("management API answered {status}: {message}")]
    Status { status: u16, code: String, message: String },
    /// A 2xx answer that is not the JSON expected.
    #[error("unexpected answer from the management API at {url}: {detail}")]
    Decode { url: String, detail: String },
}

impl ApiError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadUrl { .. } => "config_error",
            ApiError::Unreachable { .. } => "api_unreachable",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Status { .. } => "api_error",
            ApiError::Decode { .. } => "api_error",
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ApiError::BadUrl { .. } => "start rustunnel-mcp with --api http://HOST:4041 (the server's management API)".into(),
            ApiError::Unreachable { url, .. } => format!(
                "is rustunnel-server running with its management API at {url}? Start rustunnel-mcp with --api pointing at it"
            ),
            ApiError::Unauthorized { .. } => {
                "pass a valid `token` argument or set RUSTUNNEL_TOKEN in the MCP server's environment".into()
            }
            ApiError::NotFound { .. } => "call list_tunnels to see the ids of open tunnels".into(),
            // An error body of the API's own: it was reached and refused or failed.
            ApiError::Status { status: 429, code, .. } if !code.is_empty() => {
                "the server is limiting this caller's requests: wait a little and retry".into()
            }
            ApiError::Status { status: 400..=499, code, .. } if !code.is_empty() => {
                "the server refused the request as the message says: correct the arguments".into()
            }
            ApiError::Status { code, .. } if !code.is_empty() => {
                "the server failed to answer: retry, and see its log if it goes on".into()
            }
            ApiError::Status { .. } | ApiError::Decode { .. } => {
                "check that --api points at the rustunnel-server management API (default port 4041)".into()
            }
        }
    }
}

/// The management API client. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    client: Client<ApiConnector, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("base", &self.base).finish()
    }
}

impl ApiClient {
    /// `base` is the API root (`http://localhost:4041`); TLS settings apply to `https://` bases.
    pub fn new(base: &str, tls: &TlsOptions) -> Self {
        // A bad TLS setup surfaces on the first https call instead of failing construction:
        // plain-HTTP deployments never need it.
        let tls = rustunnel_client::tls::client_config(tls, &[b"http/1.1"]).map_err(|e| e.to_string());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            // Idle connections to the API close on time, not at the next call.
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(ApiConnector { tls: Arc::new(tls) });
        ApiClient { base: base.trim_end_matches('/').to_string(), client }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/tunnels`
    pub async fn list_tunnels(&self, token: Option<&str>) -> Result<TunnelList, ApiError> {
        self.call(Method::GET, "/api/tunnels", token).await
    }

    /// `GET /api/pools`
    pub async fn pools(&self, token: Option<&str>) -> Result<PoolList, ApiError> {
        self.call(Method::GET, "/api/pools", token).await
    }

    /// `GET /api/p2p`
    pub async fn p2p(&self, token: Option<&str>) -> Result<P2pList, ApiError> {
        self.call(Method::GET, "/api/p2p", token).await
    }

    /// `DELETE /api/tunnels/{id}`
    pub async fn close_tunnel(&self, token: Option<&str>, id: &str) -> Result<ClosedTunnel, ApiError> {
        self.call(Method::DELETE, &format!("/api/tunnels/{}", encode_path_segment(id)), token).await
    }

    /// `GET /api/history?protocol=&limit=&offset=` (one page: `limit` at most
    /// [`HISTORY_PAGE`]).
    pub async fn history(
        &self,
        token: Option<&str>,
        protocol: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<HistoryList, ApiError> {
        let mut path = format!("/api/history?limit={}&offset={offset}", limit.min(HISTORY_PAGE));
        if let Some(p) = protocol {
            path.push_str("&protocol=");
            path.push_str(&encode_path_segment(p));
        }
        self.call(Method::GET, &path, token).await
    }

    /// `GET /api/regions` (public).
    pub async fn regions(&self) -> Result<RegionList, ApiError> {
        self.call(Method::GET, "/api/regions", None).await
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, token: Option<&str>) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path);
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ApiError::BadUrl { url: self.base.clone(), reason: e.to_string() })?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(ApiError::BadUrl {
                    url: self.base.clone(),
                    reason: "must start with http:// or https://".into(),
                })
            }
        }
        let mut req = Request::builder().method(method).uri(uri).header("accept", "application/json");
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| ApiError::BadUrl { url: self.base.clone(), reason: e.to_string() })?;
        let unreachable = |detail: String| ApiError::Unreachable { url: self.base.clone(), detail };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ApiError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))??;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ApiError::Decode { url: url.clone(), detail: e.to_string() });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (String::new(), String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string()),
        };
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::Unauthorized {
                message: if message.is_empty() { "missing or invalid token".into() } else { message },
            },
            StatusCode::NOT_FOUND if !code.is_empty() => ApiError::NotFound { message },
            s => ApiError::Status { status: s.as_u16(), code, message },
        })
    }
}

/// Percent-encodes everything but unreserved characters (ids are UUIDs; this keeps odd input
/// from changing the path).
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Dials `http://` with TCP and `https://` with TCP + rustls.
#[derive(Clone)]
struct ApiConnector {
    tls: Arc<Result<Arc<ClientConfig>, String>>,
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<ApiStream>> + Send>>;

impl tower_service::Service<Uri> for ApiConnector {
    type Response = ApiStream;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = rustunnel_client::net::connect_tcp(&host, port, CONNECT_TIMEOUT).await?;
            if !https {
                return Ok(ApiStream::Plain(TokioIo::new(tcp)));
            }
            let cfg = match tls.as_ref() {
                Ok(c) => c.clone(),
                Err(e) => return Err(io::Error::other(format!("TLS setup: {e}"))),
            };
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(cfg).connect(name, tcp))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            Ok(ApiStream::Tls(Box::new(TokioIo::new(s))))
        })
    }
}

enum ApiStream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for ApiStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for ApiStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_blame_the_api_address_only_when_something_else_answered() {
        let status = |status: u16, code: &str| ApiError::Status { status, code: code.into(), message: "m".into() };
        let hint = |e: ApiError| e.hint();
        assert!(hint(status(400, "bad_request")).contains("correct the arguments"));
        assert!(hint(status(429, "rate_limited")).contains("retry"));
        assert!(hint(status(500, "internal")).contains("its log"));
        // No error body of the API's own: perhaps not the API at all.
        assert!(hint(status(400, "")).contains("--api"));
        assert!(hint(status(502, "")).contains("--api"));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("a1-b_c.d~"), "a1-b_c.d~");
        assert_eq!(encode_path_segment("../x?y"), "..%2Fx%3Fy");
    }

    #[tokio::test]
    async fn unreachable_api_is_reported_with_its_url() {
        // Bind then drop: nothing listens on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), &TlsOptions::default());
        let e = api.regions().await.unwrap_err();
        assert_eq!(e.code(), "api_unreachable", "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[tokio::test]
    async fn bad_scheme_is_a_config_error() {
        let api = ApiClient::new("ftp://x", &TlsOptions::default());
        assert_eq!(api.regions().await.unwrap_err().code(), "config_error");
    }
}
