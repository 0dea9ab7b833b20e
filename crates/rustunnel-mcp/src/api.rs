//! The MCP server's face of the management REST API: the shared client of
//! [`rustunnel_client::api`], with errors in the words an agent acts on (what failed and what to
//! do about it).
use rustunnel_api_types::{ClosedTunnel, HistoryList, P2pList, PoolList, RegionList, TunnelList};
use rustunnel_client::api::ApiError as ClientError;
pub use rustunnel_client::api::{HISTORY_PAGE, MAX_RESPONSE_BYTES, REQUEST_TIMEOUT};
use rustunnel_client::TlsOptions;

/// Why an API call failed, with a code and a hint that say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the token is missing, wrong or revoked.
    #[error("token rejected by the server: {message}")]
    Unauthorized { message: String },
    /// 404 with an API error body (unknown tunnel id, ...).
    #[error("{message}")]
    NotFound { message: String },
    /// Any other failure, in the shared client's words: `--api` is not a usable URL, nothing
    /// answered in time, another non-2xx answer, or a 2xx answer that is not the JSON expected.
    #[error(transparent)]
    Client(ClientError),
}

impl ApiError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Client(ClientError::BadUrl { .. }) => "config_error",
            ApiError::Client(
                ClientError::Unreachable { .. } | ClientError::Timeout { .. } | ClientError::Read { .. },
            ) => "api_unreachable",
            ApiError::Client(ClientError::Status { .. } | ClientError::Decode { .. }) => "api_error",
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        let e = match self {
            ApiError::Unauthorized { .. } => {
                return "pass a valid `token` argument or set RUSTUNNEL_TOKEN in the MCP server's environment".into()
            }
            ApiError::NotFound { .. } => return "call list_tunnels to see the ids of open tunnels".into(),
            ApiError::Client(e) => e,
        };
        match e {
            ClientError::BadUrl { .. } => {
                "start rustunnel-mcp with --api http://HOST:4041 (the server's management API)".into()
            }
            ClientError::Unreachable { url, .. } | ClientError::Timeout { url, .. } | ClientError::Read { url, .. } => {
                format!(
                    "is rustunnel-server running with its management API at {url}? Start rustunnel-mcp with --api pointing at it"
                )
            }
            // An error body of the API's own: it was reached and refused or failed.
            ClientError::Status { status: 429, code, .. } if !code.is_empty() => {
                "the server is limiting this caller's requests: wait a little and retry".into()
            }
            ClientError::Status { status: 400..=499, code, .. } if !code.is_empty() => {
                "the server refused the request as the message says: correct the arguments".into()
            }
            ClientError::Status { code, .. } if !code.is_empty() => {
                "the server failed to answer: retry, and see its log if it goes on".into()
            }
            ClientError::Status { .. } | ClientError::Decode { .. } => {
                "check that --api points at the rustunnel-server management API (default port 4041)".into()
            }
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Status { status: 401 | 403, message, .. } => ApiError::Unauthorized {
                message: if message.is_empty() { "missing or invalid token".into() } else { message },
            },
            ClientError::Status { status: 404, code, message } if !code.is_empty() => ApiError::NotFound { message },
            e => ApiError::Client(e),
        }
    }
}

/// The management API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiClient {
    inner: rustunnel_client::api::ApiClient,
}

impl ApiClient {
    /// `base` is the API root (`http://localhost:4041`); TLS settings apply to `https://` bases.
    pub fn new(base: &str, tls: &TlsOptions) -> Self {
        ApiClient { inner: rustunnel_client::api::ApiClient::new(base, tls) }
    }

    pub fn base(&self) -> &str {
        self.inner.base()
    }

    /// `GET /api/tunnels`
    pub async fn list_tunnels(&self, token: Option<&str>) -> Result<TunnelList, ApiError> {
        Ok(self.inner.list_tunnels(token).await?)
    }

    /// `GET /api/pools`
    pub async fn pools(&self, token: Option<&str>) -> Result<PoolList, ApiError> {
        Ok(self.inner.pools(token).await?)
    }

    /// `GET /api/p2p`
    pub async fn p2p(&self, token: Option<&str>) -> Result<P2pList, ApiError> {
        Ok(self.inner.p2p(token).await?)
    }

    /// `DELETE /api/tunnels/{id}`
    pub async fn close_tunnel(&self, token: Option<&str>, id: &str) -> Result<ClosedTunnel, ApiError> {
        Ok(self.inner.close_tunnel(token, id).await?)
    }

    /// `GET /api/history` (one page: `limit` at most [`HISTORY_PAGE`]).
    pub async fn history(
        &self,
        token: Option<&str>,
        protocol: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<HistoryList, ApiError> {
        Ok(self.inner.history(token, protocol, limit, offset).await?)
    }

    /// `GET /api/regions` (public).
    pub async fn regions(&self) -> Result<RegionList, ApiError> {
        Ok(self.inner.regions().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_blame_the_api_address_only_when_something_else_answered() {
        let status = |status: u16, code: &str| {
            ApiError::Client(ClientError::Status { status, code: code.into(), message: "m".into() })
        };
        let hint = |e: ApiError| e.hint();
        assert!(hint(status(400, "bad_request")).contains("correct the arguments"));
        assert!(hint(status(429, "rate_limited")).contains("retry"));
        assert!(hint(status(500, "internal")).contains("its log"));
        // No error body of the API's own: perhaps not the API at all.
        assert!(hint(status(400, "")).contains("--api"));
        assert!(hint(status(502, "")).contains("--api"));
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

    #[test]
    fn refusals_keep_their_words() {
        use rustunnel_client::api::ApiError as E;
        let status = |status: u16, code: &str, message: &str| {
            ApiError::from(E::Status { status, code: code.into(), message: message.into() })
        };
        assert_eq!(status(401, "", "").to_string(), "token rejected by the server: missing or invalid token");
        assert_eq!(status(403, "forbidden", "no").to_string(), "token rejected by the server: no");
        assert!(matches!(status(404, "not_found", "no tunnel x"), ApiError::NotFound { .. }));
        assert!(matches!(status(404, "", "nginx"), ApiError::Client(E::Status { status: 404, .. })));
        let timeout = ApiError::from(E::Timeout { url: "http://a".into(), after: REQUEST_TIMEOUT });
        assert_eq!(timeout.code(), "api_unreachable");
        assert!(timeout.to_string().starts_with("management API unreachable at http://a: no answer within"));
    }

    #[tokio::test]
    async fn bad_scheme_is_a_config_error() {
        let api = ApiClient::new("ftp://x", &TlsOptions::default());
        assert_eq!(api.regions().await.unwrap_err().code(), "config_error");
    }
}
