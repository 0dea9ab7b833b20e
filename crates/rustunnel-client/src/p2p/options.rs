//! What a P2P client is told to do: publish a service or reach one, and how.
use std::net::SocketAddr;
use std::time::Duration;

use rustunnel_proto::Protocol;

use crate::error::ClientError;
use crate::tls::TlsOptions;

/// Default time allowed for hole punching before falling back to the relay.
pub const DEFAULT_PUNCH_TIMEOUT: Duration = Duration::from_secs(2);

/// What this client does.
#[derive(Debug, Clone)]
pub enum P2pRole {
    /// Share `local_host:local_port` under `name`.
    Publish { name: String, local_host: String, local_port: u16 },
    /// Reach the service `target` through a local listener on `bind`.
    Connect { target: String, bind: SocketAddr },
}

#[derive(Clone)]
pub struct P2pOptions {
    pub server: String,
    pub token: String,
    pub tls: TlsOptions,
    pub secret: String,
    pub protocol: Protocol,
    pub role: P2pRole,
    /// Try the direct (hole-punched QUIC) path; false forces the relay.
    pub direct: bool,
    pub punch_timeout: Duration,
    pub reconnect: bool,
}

impl std::fmt::Debug for P2pOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pOptions")
            .field("server", &self.server)
            .field("secret", &"***")
            .field("protocol", &self.protocol)
            .field("role", &self.role)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl P2pOptions {
    pub fn new(server: impl Into<String>, token: impl Into<String>, secret: impl Into<String>, role: P2pRole) -> Self {
        P2pOptions {
            server: server.into(),
            token: token.into(),
            tls: TlsOptions::default(),
            secret: secret.into(),
            protocol: Protocol::Tcp,
            role,
            direct: true,
            punch_timeout: DEFAULT_PUNCH_TIMEOUT,
            reconnect: true,
        }
    }

    /// The service name this client publishes or connects to.
    pub fn name(&self) -> &str {
        match &self.role {
            P2pRole::Publish { name, .. } => name,
            P2pRole::Connect { target, .. } => target,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ClientError> {
        if self.secret.is_empty() || self.secret.len() > 1024 {
            return Err(ClientError::Config("--secret must be 1-1024 characters".into()));
        }
        let n = self.name();
        if n.is_empty()
            || n.len() > 64
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ClientError::Config("P2P names are 1-64 characters: letters, digits, '-', '_', '.'".into()));
        }
        if self.protocol == Protocol::Http {
            return Err(ClientError::Config("P2P tunnels are tcp or udp".into()));
        }
        Ok(())
    }
}
