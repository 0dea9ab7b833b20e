//! Client errors, each with a stable code and a hint a person (or an agent) can act on.
use std::time::Duration;

use rustunnel_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server unreachable at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("control connection failed: {0}")]
    Handshake(String),
    #[error("{message}")]
    Rejected { code: ErrorCode, message: String, retry_after: Option<Duration> },
    /// The server wants a token and the client sent none.
    #[error("the server requires a token and none was given")]
    TokenRequired,
    #[error("tunnel '{name}' refused: {message}")]
    TunnelRejected { name: String, code: ErrorCode, message: String, retry_after: Option<Duration> },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Config(String),
    /// `--server` (or `server` in the config file) is not a usable `host:port`.
    #[error("invalid server address '{0}': expected host:port with a port 1-65535")]
    ServerAddress(String),
    /// The `--ca` file (or `ca` in the config file) cannot be used.
    #[error(transparent)]
    TlsSetup(#[from] crate::tls::TlsSetupError),
    #[error("connection lost: {0}")]
    Lost(String),
    /// The connection was lost (what was lost, and why) and reconnecting is off: the run ends.
    #[error("{0}; exiting (--no-reconnect)")]
    GaveUp(String),
}

impl ClientError {
    /// Errors that retrying cannot fix.
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::Rejected { code, .. } => code.is_fatal(),
            ClientError::TunnelRejected { .. }
            | ClientError::TokenRequired
            | ClientError::Config(_)
            | ClientError::ServerAddress(_)
            | ClientError::TlsSetup(_)
            | ClientError::GaveUp(_) => true,
            ClientError::Tls(m) => m.contains("certificate") || m.contains("Certificate"),
            _ => false,
        }
    }

    /// A refusal as the server sent it (`rejected`, `p2p_error`).
    pub fn rejected(code: ErrorCode, message: String, retry_after_ms: Option<u64>) -> Self {
        ClientError::Rejected { code, message, retry_after: retry_after_ms.map(Duration::from_millis) }
    }

    /// When the server said the same attempt can succeed (a rate limit's or a reservation's end).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Rejected { retry_after, .. } | ClientError::TunnelRejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Stable machine-readable code for `--json` output and MCP results.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "server_unreachable",
            ClientError::Tls(_) => "tls_error",
            ClientError::Handshake(_) => "handshake_failed",
            // The same code as a rejected token: both are "no valid credentials" to a program.
            ClientError::Rejected { code: ErrorCode::Unauthorized, .. } | ClientError::TokenRequired => "unauthorized",
            ClientError::Rejected { code: ErrorCode::VersionMismatch, .. } => "version_mismatch",
            ClientError::Rejected { code: ErrorCode::RateLimited, .. } => "rate_limited",
            ClientError::Rejected { code: ErrorCode::P2pWrongSecret, .. } => "p2p_wrong_secret",
            ClientError::Rejected { code: ErrorCode::P2pUnknownName, .. } => "p2p_unknown_name",
            ClientError::Rejected { .. } => "rejected",
            ClientError::TunnelRejected { code: ErrorCode::SubdomainTaken, .. } => "subdomain_taken",
            ClientError::TunnelRejected { code: ErrorCode::SubdomainReserved, .. } => "subdomain_reserved",
            ClientError::TunnelRejected { code: ErrorCode::PortReserved, .. } => "port_reserved",
            ClientError::TunnelRejected { code: ErrorCode::InvalidSubdomain, .. } => "invalid_subdomain",
            ClientError::TunnelRejected { code: ErrorCode::PortUnavailable | ErrorCode::NoPortsAvailable, .. } => {
                "port_unavailable"
            }
            ClientError::TunnelRejected { code: ErrorCode::GroupKeyMismatch, .. } => "group_key_mismatch",
            ClientError::TunnelRejected { code: ErrorCode::GroupTaken, .. } => "group_taken",
            ClientError::TunnelRejected { code: ErrorCode::NotPermitted, .. } => "not_permitted",
            ClientError::TunnelRejected { .. } => "tunnel_rejected",
            ClientError::Protocol(_) => "protocol_error",
            ClientError::Config(_) => "config_error",
            ClientError::ServerAddress(_) => "invalid_server_address",
            ClientError::TlsSetup(_) => "invalid_ca",
            ClientError::Lost(_) | ClientError::GaveUp(_) => "connection_lost",
        }
    }

    /// What to do about it.
    pub fn hint(&self, server: &str) -> String {
        match self {
            ClientError::Connect { .. } => format!("is rustunnel-server running at {server}? Check --server"),
            ClientError::Tls(m) if m.to_lowercase().contains("certificate") => {
                "the server's certificate is not trusted: for a self-signed dev server pass --insecure, or --ca <server data dir>/tls-cert.pem".into()
            }
            // The server hung up mid-handshake: what a busy server does with connections past
            // its cap of pending handshakes (it answers nothing before authentication).
            ClientError::Tls(m) if m.to_lowercase().contains("eof") => {
                "the server closed the connection during the TLS handshake: check that --server points at \
                 the control port (default 4040); if it does, the server is refusing new connections \
                 for now (too many pending from this address or in all) and the client will retry"
                    .into()
            }
            ClientError::Tls(_) => "check that --server points at the control port (default 4040)".into(),
            ClientError::Rejected { code: ErrorCode::Unauthorized, .. } => {
                "check --token or RUSTUNNEL_TOKEN (create one with `rustunnel token create` or `rustunnel-server token create`)".into()
            }
            ClientError::TokenRequired => {
                "pass --token TOKEN or set RUSTUNNEL_TOKEN (or `token` in the config file); the server's admin mints one with `rustunnel-server token create --label NAME`".into()
            }
            ClientError::Rejected { code: ErrorCode::VersionMismatch, message, .. } => message.clone(),
            ClientError::Rejected { code: ErrorCode::RateLimited, retry_after, .. } => {
                let wait = retry_after.map_or("a minute".into(), |d| format!("{} s", rustunnel_proto::limits::whole_secs(d).max(1)));
                format!("too many failed logins from this address: wait {wait} (the client does, unless --no-reconnect) and check for clients with a wrong token behind the same address")
            },
            ClientError::Rejected { code: ErrorCode::P2pWrongSecret, .. } => {
                "use the same --secret as the publisher (`rustunnel p2p <port> --secret S --name N`)".into()
            }
            ClientError::Rejected { code: ErrorCode::P2pUnknownName, .. } => {
                "start the publisher first (`rustunnel p2p <port> --secret S --name N`) with a token of the same owner".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::SubdomainReserved, .. } => {
                "its previous client may still come back for it: choose another --subdomain, omit it for a random one, or try again when the reservation ends".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::SubdomainTaken, .. } => {
                "choose another --subdomain, or omit it for a random one".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::GroupTaken, .. } => {
                "choose another --group name, or run this member with a token of the pool's owner".into()
            }
            // The server's message says which rule failed (rustunnel_proto::names::SubdomainError);
            // a reserved or punycode name is well-formed, so the syntax rules would not help.
            ClientError::TunnelRejected { code: ErrorCode::InvalidSubdomain, message, .. } if message.contains("reserved") => {
                "that name is kept for the server's own use (www, api, admin, mail, ...): choose another --subdomain, or omit it for a random one".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::InvalidSubdomain, message, .. } if message.contains("xn--") => {
                "punycode names are refused (they can imitate other names): choose another --subdomain in plain a-z, 0-9 and '-'".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::InvalidSubdomain, .. } => {
                "subdomains are 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::PortReserved, .. } => {
                "its previous client may still come back for it: omit the remote port to get a free one, or try again when the reservation ends".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::PortUnavailable, .. } => "omit the remote port to get a free one".into(),
            ClientError::TunnelRejected { code: ErrorCode::NotPermitted, .. } => {
                "this token may only open what the message lists: choose a --subdomain or remote port inside it, or ask the server's admin for a token with wider rights".into()
            }
            ClientError::TunnelRejected { code: ErrorCode::GroupKeyMismatch, .. } => {
                "every member of a pool must use the same --group-key (or group_key in the config)".into()
            }
            ClientError::ServerAddress(_) => {
                "pass --server host:port, e.g. localhost:4040 or [::1]:4040 (also RUSTUNNEL_SERVER, or `server` in the config file)".into()
            }
            ClientError::TlsSetup(crate::tls::TlsSetupError::Read { .. }) => {
                "check the path given to --ca (or `ca` in the config file): the server's certificate, e.g. <server data dir>/tls-cert.pem".into()
            }
            ClientError::TlsSetup(_) => {
                "--ca takes a PEM certificate (-----BEGIN CERTIFICATE-----), e.g. <server data dir>/tls-cert.pem; for a self-signed dev server --insecure also works".into()
            }
            ClientError::GaveUp(_) => {
                "run the command again once the server is back, or leave out --no-reconnect to reconnect automatically".into()
            }
            ClientError::Config(_) => "fix the arguments (or the config file) and run again".into(),
            e if e.is_fatal() => "retrying would not help: change what the message names and run again".into(),
            _ => "the client retries automatically unless --no-reconnect is set".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustunnel_proto::names::{validate_subdomain, SubdomainError};

    fn invalid(e: SubdomainError) -> ClientError {
        ClientError::TunnelRejected {
            name: "web".into(),
            code: ErrorCode::InvalidSubdomain,
            message: e.to_string(),
            retry_after: None,
        }
    }

    #[test]
    fn a_refused_subdomain_gets_the_hint_for_the_rule_it_broke() {
        for name in ["www", "api", "admin"] {
            let hint = invalid(validate_subdomain(name).unwrap_err()).hint("s");
            assert!(hint.contains("choose another --subdomain") && !hint.contains("3-63"), "{name}: {hint}");
        }
        let hint = invalid(validate_subdomain("xn--abc").unwrap_err()).hint("s");
        assert!(hint.contains("punycode"), "{hint}");
        for name in ["ab", "Bad", "-ab"] {
            assert!(invalid(validate_subdomain(name).unwrap_err()).hint("s").contains("3-63"), "{name}");
        }
        // A name held for its previous owner's grace period: its own code, and when it ends.
        let held = ClientError::TunnelRejected {
            name: "web".into(),
            code: ErrorCode::SubdomainReserved,
            message: "subdomain 'app' is reserved for its previous owner for another 90 s".into(),
            retry_after: Some(Duration::from_secs(90)),
        };
        assert!(held.hint("s").contains("try again when the reservation ends"));
        assert_eq!((held.code(), held.retry_after()), ("subdomain_reserved", Some(Duration::from_secs(90))));
        assert!(held.is_fatal(), "a refused tunnel ends the run; the user picks another name");
        let taken = ClientError::TunnelRejected {
            name: "web".into(),
            code: ErrorCode::SubdomainTaken,
            message: "subdomain 'app' is already in use".into(),
            retry_after: None,
        };
        assert!(!taken.hint("s").contains("reservation"));
    }

    #[test]
    fn a_rate_limit_hint_says_how_long_the_server_asked_for() {
        let limited =
            |retry_after| ClientError::Rejected { code: ErrorCode::RateLimited, message: "m".into(), retry_after };
        assert!(limited(Some(Duration::from_millis(41_500))).hint("s").contains("wait 42 s"));
        assert!(limited(None).hint("s").contains("wait a minute"));
    }

    #[test]
    fn a_handshake_cut_short_may_be_a_busy_server() {
        let hint = ClientError::Tls("tls handshake eof".into()).hint("s");
        assert!(hint.contains("control port") && hint.contains("refusing new connections"), "{hint}");
        let other = ClientError::Tls("received corrupt message".into()).hint("s");
        assert!(!other.contains("refusing"), "{other}");
    }
}
