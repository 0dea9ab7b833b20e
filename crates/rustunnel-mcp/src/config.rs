//! What the MCP server needs to know: where the rustunnel server is, how to trust it, and the
//! default token. Built from the `--server`, `--api`, `--insecure`, `--ca` flags and `RUSTUNNEL_TOKEN`.
use rustunnel_client::TlsOptions;

/// Default control-plane address (`--server`).
pub const DEFAULT_SERVER: &str = rustunnel_client::config::DEFAULT_SERVER;
/// Default management API base URL (`--api`).
pub const DEFAULT_API: &str = "http://localhost:4041";

/// Runtime configuration of the MCP server.
#[derive(Clone)]
pub struct McpConfig {
    /// Control-plane `host:port` tunnels connect to.
    pub server: String,
    /// Management API base URL (`http://host:port` or `https://...`), no trailing slash.
    pub api: String,
    /// Skip TLS certificate verification (self-signed development servers).
    pub insecure: bool,
    /// Trust this CA certificate (PEM) for the server, e.g. a dev server's `tls-cert.pem`.
    pub ca: Option<std::path::PathBuf>,
    /// Token used when a tool call does not pass one (`RUSTUNNEL_TOKEN`).
    pub default_token: Option<String>,
}

impl std::fmt::Debug for McpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpConfig")
            .field("server", &self.server)
            .field("api", &self.api)
            .field("insecure", &self.insecure)
            .field("ca", &self.ca)
            .field("default_token", &self.default_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            server: DEFAULT_SERVER.into(),
            api: DEFAULT_API.into(),
            insecure: false,
            ca: None,
            default_token: None,
        }
    }
}

impl McpConfig {
    pub fn new(server: impl Into<String>, api: impl Into<String>, insecure: bool, token: Option<String>) -> Self {
        let api: String = api.into();
        McpConfig {
            server: server.into(),
            api: api.trim_end_matches('/').to_string(),
            insecure,
            ca: None,
            default_token: token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        }
    }

    /// The token for a call: the call's own, else the default one.
    pub fn token(&self, from_call: Option<&str>) -> Option<String> {
        from_call.map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).or_else(|| self.default_token.clone())
    }

    pub fn tls(&self) -> TlsOptions {
        TlsOptions { insecure: self.insecure, ca: self.ca.clone() }
    }

    /// Trusts this CA certificate (PEM) for the server.
    pub fn with_ca(mut self, ca: Option<std::path::PathBuf>) -> Self {
        self.ca = ca;
        self
    }
}
