//! The client of the management REST API (`/api/tunnels`, `/api/tokens`, `/api/history`,
//! `/api/pools`, `/api/p2p`, `/api/regions`), shared by the `rustunnel` management commands and
//! the MCP server. Typed on the API's DTOs (`rustunnel-api-types`), over hyper-util's pooled
//! client, plain HTTP or HTTPS (which honours the TLS options: `--insecure`, `--ca`). Answers
//! are bounded in size and time; errors carry what each front end needs for its own message.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustunnel_api_types::{ClosedTunnel, ErrorBody, HistoryList, P2pList, PoolList, RegionList, TunnelList};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;

use crate::tls::TlsOptions;

/// Largest API answer read (a long history page or token list is well below this).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Deadline for one API call, connection and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most history rows the API returns per page.
pub const HISTORY_PAGE: u32 = 200;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API root is not an `http://` or `https://` URL with a host.
    #[error("invalid management API URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Nothing answered (connection refused, DNS, TLS).
    #[error("management API unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// No complete answer before [`REQUEST_TIMEOUT`].
    #[error("management API unreachable at {url}: no answer within {}s", after.as_secs())]
    Timeout { url: String, after: Duration },
    /// The connection failed while the answer was read, or the answer was too large.
    #[error("management API unreachable at {url}: reading the answer: {detail}")]
    Read { url: String, detail: String },
    /// A non-2xx answer. `code` and `message` come from the API's error body; without one,
    /// `code` is empty and `message` is the start of the body.
    #[error("management API answered {status}: {message}")]
    Status { status: u16, code: String, message: String },
    /// A 2xx answer that is not the JSON expected.
    #[error("unexpected answer from the management API at {url}: {detail}")]
    Decode { url: String, detail: String },
}

/// The management API client. Cheap to clone; connections are pooled.
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
    /// A bad root is reported by [`ApiClient::check`] and by every call.
    pub fn new(base: &str, tls: &TlsOptions) -> Self {
        // A bad TLS setup surfaces on the first https call instead of failing construction:
        // plain-HTTP deployments never need it.
        let tls = crate::tls::client_config(tls, &[b"http/1.1"]).map_err(|e| e.to_string());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            // Idle connections to the API close on time, not at the next call.
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(ApiConnector { tls: Arc::new(tls) });
        ApiClient { base: base.trim().trim_end_matches('/').to_string(), client }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the root is an `http://` or `https://` URL with a host.
    pub fn check(&self) -> Result<Uri, ApiError> {
        let bad = |reason: String| ApiError::BadUrl { url: self.base.clone(), reason };
        let uri: Uri = self.base.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("must start with http:// or https://".into())),
        }
        if uri.host().is_none() {
            return Err(bad("no host".into()));
        }
        Ok(uri)
    }

    /// `GET /api/tunnels`
    pub async fn list_tunnels(&self, token: Option<&str>) -> Result<TunnelList, ApiError> {
        self.call(Method::GET, "/api/tunnels", token, None).await
    }

    /// `GET /api/pools`
    pub async fn pools(&self, token: Option<&str>) -> Result<PoolList, ApiError> {
        self.call(Method::GET, "/api/pools", token, None).await
    }

    /// `GET /api/p2p`
    pub async fn p2p(&self, token: Option<&str>) -> Result<P2pList, ApiError> {
        self.call(Method::GET, "/api/p2p", token, None).await
    }

    /// `DELETE /api/tunnels/{id}`
    pub async fn close_tunnel(&self, token: Option<&str>, id: &str) -> Result<ClosedTunnel, ApiError> {
        self.call(Method::DELETE, &format!("/api/tunnels/{}", encode_path_segment(id)), token, None).await
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
        self.call(Method::GET, &path, token, None).await
    }

    /// `GET /api/regions` (public).
    pub async fn regions(&self) -> Result<RegionList, ApiError> {
        self.call(Method::GET, "/api/regions", None, None).await
    }

    /// One call to `path` (below the root, query included) with an optional bearer token and
    /// JSON body; decodes the JSON answer, or the API's error body into [`ApiError::Status`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        self.check()?;
        let url = format!("{}{}", self.base, path);
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ApiError::BadUrl { url: self.base.clone(), reason: e.to_string() })?;
        let mut req = Request::builder().method(method).uri(uri).header(header::ACCEPT, "application/json");
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| ApiError::BadUrl { url: self.base.clone(), reason: e.to_string() })?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ApiError::Unreachable { url: self.base.clone(), detail: error_chain(&e) })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ApiError::Read { url: self.base.clone(), detail: e.to_string() })?
                .to_bytes();
            Ok::<_, ApiError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ApiError::Timeout { url: self.base.clone(), after: REQUEST_TIMEOUT })??;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ApiError::Decode { url: url.clone(), detail: e.to_string() });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (String::new(), String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string()),
        };
        Err(ApiError::Status { status: status.as_u16(), code, message })
    }
}

/// Percent-encodes everything but unreserved characters (ids are UUIDs; this keeps odd input
/// from changing the path).
pub fn encode_path_segment(s: &str) -> String {
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
            let tcp = crate::net::connect_tcp(&host, port, CONNECT_TIMEOUT).await?;
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
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("a1-b_c.d~"), "a1-b_c.d~");
        assert_eq!(encode_path_segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn roots_must_be_http_or_https_with_a_host() {
        let tls = TlsOptions::default();
        assert!(ApiClient::new("http://localhost:4041/", &tls).check().is_ok());
        assert!(ApiClient::new("https://api.example.com", &tls).check().is_ok());
        for bad in ["localhost:4041", "ftp://x", "http://", ""] {
            assert!(matches!(ApiClient::new(bad, &tls).check(), Err(ApiError::BadUrl { .. })), "{bad}");
        }
    }

    #[tokio::test]
    async fn unreachable_api_is_reported_with_its_url() {
        // Bind then drop: nothing listens on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), &TlsOptions::default());
        let e = api.regions().await.unwrap_err();
        assert!(matches!(e, ApiError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    /// An answer without the API's error body keeps its status and the start of its text; one
    /// with it keeps the code and message.
    #[tokio::test]
    async fn error_answers_keep_status_code_and_message() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let answers = [
                "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 54\r\n\r\n{\"error\":{\"code\":\"not_found\",\"message\":\"no tunnel x\"}}",
            ];
            for a in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                s.write_all(a.as_bytes()).await.unwrap();
            }
        });
        let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), &TlsOptions::default());
        match api.regions().await.unwrap_err() {
            ApiError::Status { status: 502, code, message } => {
                assert!(code.is_empty() && message == "upstream", "{message}")
            }
            e => panic!("{e:?}"),
        }
        match api.close_tunnel(None, "x").await.unwrap_err() {
            ApiError::Status { status: 404, code, message } => assert!(code == "not_found" && message == "no tunnel x"),
            e => panic!("{e:?}"),
        }
    }
}
