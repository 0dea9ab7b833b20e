//! Client options, and the `rustunnel start` TOML file (several named tunnels in one client).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustunnel_proto::Protocol;
use serde::Deserialize;

use crate::error::ClientError;
use crate::tls::TlsOptions;

/// Default control-plane address.
pub const DEFAULT_SERVER: &str = "localhost:4040";

/// One tunnel the client keeps open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    pub name: String,
    pub protocol: Protocol,
    pub local_host: String,
    pub local_port: u16,
    pub subdomain: Option<String>,
    pub remote_port: Option<u16>,
}

impl TunnelConfig {
    pub fn new(name: impl Into<String>, protocol: Protocol, local_port: u16) -> Self {
        TunnelConfig {
            name: name.into(),
            protocol,
            local_host: "localhost".into(),
            local_port,
            subdomain: None,
            remote_port: None,
        }
    }
    pub fn local_addr(&self) -> String {
        if self.local_host.contains(':') {
            format!("[{}]:{}", self.local_host, self.local_port)
        } else {
            format!("{}:{}", self.local_host, self.local_port)
        }
    }
}

/// Everything a client run needs.
#[derive(Clone)]
pub struct ClientOptions {
    /// Control-plane `host:port`.
    pub server: String,
    pub token: String,
    pub tls: TlsOptions,
    /// Retry forever on lost connections (default) or give up at the first loss.
    pub reconnect: bool,
    pub tunnels: Vec<TunnelConfig>,
    /// Upper bound of the reconnect backoff.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("server", &self.server)
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .field("tls", &self.tls)
            .field("reconnect", &self.reconnect)
            .field("tunnels", &self.tunnels)
            .finish()
    }
}

impl ClientOptions {
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Self {
        ClientOptions {
            server: server.into(),
            token: token.into(),
            tls: TlsOptions::default(),
            reconnect: true,
            tunnels: Vec::new(),
            max_backoff: Duration::from_millis(800),
        }
    }
}

/// The `rustunnel start --config FILE.toml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartFile {
    pub server: Option<String>,
    pub token: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    pub region: Option<String>,
    #[serde(default)]
    pub tunnels: BTreeMap<String, StartTunnel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTunnel {
    pub protocol: Protocol,
    pub local_port: u16,
    pub local_host: Option<String>,
    pub subdomain: Option<String>,
    pub remote_port: Option<u16>,
}

impl StartFile {
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ClientError::Config(format!("invalid config {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let f: StartFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if f.tunnels.is_empty() {
            return Err("no [tunnels.<name>] sections: nothing to start".into());
        }
        for (name, t) in &f.tunnels {
            if t.local_port == 0 {
                return Err(format!("tunnel '{name}': local_port must be 1-65535"));
            }
            if t.subdomain.is_some() && t.protocol != Protocol::Http {
                return Err(format!("tunnel '{name}': subdomain only applies to http tunnels"));
            }
        }
        Ok(f)
    }

    pub fn tunnel_configs(&self) -> Vec<TunnelConfig> {
        self.tunnels
            .iter()
            .map(|(name, t)| TunnelConfig {
                name: name.clone(),
                protocol: t.protocol,
                local_host: t.local_host.clone().unwrap_or_else(|| "localhost".into()),
                local_port: t.local_port,
                subdomain: t.subdomain.clone(),
                remote_port: t.remote_port,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let f = StartFile::parse(include_str!("../../../examples/client.toml")).unwrap();
        let t = f.tunnel_configs();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "db");
        assert_eq!(t[0].protocol, Protocol::Tcp);
        assert_eq!(t[1].subdomain.as_deref(), Some("web"));
        assert!(f.insecure);
    }

    #[test]
    fn refuses_nonsense() {
        assert!(StartFile::parse("server = 1").is_err());
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"ftp\"\nlocal_port = 1").is_err());
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 0").is_err());
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 1\nsubdomain = \"x\"").is_err());
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 1\nbogus = 1").is_err());
        assert!(StartFile::parse("server = \"x\"").is_err());
    }
}
