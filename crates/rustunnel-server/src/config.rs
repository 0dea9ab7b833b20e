//! Server configuration in two layers: [`FileConfig`] is what a TOML file, flags and the
//! environment say (every field optional, unknown keys refused); [`Config`] is the typed,
//! validated runtime configuration with every default filled in.
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::logging::LogFormat;

/// Configuration problems, reported before anything binds.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid port range '{0}': expected START-END, e.g. 20000-20999")]
    PortRange(String),
    #[error("invalid address for {field}: '{value}'")]
    Addr { field: &'static str, value: String },
    #[error("tls_cert and tls_key must be given together")]
    TlsPair,
    #[error(
        "refusing to start without authentication: set admin_token (or RUSTUNNEL_ADMIN_TOKEN); \
         only a loopback --dev server may run without one"
    )]
    NoAuth,
    #[error("{0}")]
    Invalid(String),
}

/// A configured region, listed by the management API and used by `--region`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub location: String,
    pub control_addr: String,
    #[serde(default)]
    pub api_url: String,
}

/// The file/flag layer. Field names are the TOML keys.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub dev: Option<bool>,
    pub domain: Option<String>,
    pub control_addr: Option<String>,
    pub api_addr: Option<String>,
    pub http_addr: Option<String>,
    pub https_addr: Option<String>,
    /// Disable the HTTPS edge.
    pub no_https: Option<bool>,
    pub tcp_ports: Option<String>,
    pub udp_ports: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub database_url: Option<String>,
    /// Port to show in public HTTP URLs when it differs from the bound one (NAT, load balancer).
    pub public_http_port: Option<u16>,
    pub public_https_port: Option<u16>,
    pub region_id: Option<String>,
    pub region_name: Option<String>,
    pub region_location: Option<String>,
    pub regions: Option<Vec<RegionConfig>>,
    pub reservation_grace_secs: Option<u64>,
    pub response_timeout_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
    pub heartbeat_secs: Option<u64>,
    pub udp_idle_secs: Option<u64>,
    pub history_retention_days: Option<u64>,
    pub max_requests_per_tunnel: Option<usize>,
    pub pool_size: Option<u16>,
    /// `http://` URL the server POSTs a JSON alert to when a load-balanced pool has no healthy
    /// member left, and again when it recovers.
    pub alert_webhook: Option<String>,
    /// UDP address of the P2P address reflector [default: the control address, on UDP];
    /// "off" disables hole punching (P2P links are then always relayed).
    pub p2p_udp_addr: Option<String>,
    /// Let clients that ask for it (`rustunnel --plain-data`) open unencrypted data
    /// connections, spliced without copies. Only for clients on a network you already trust:
    /// visitors' bytes then cross the client-server link in the clear. The control connection
    /// and the token always stay on TLS.
    pub allow_plain_data: Option<bool>,
    /// Log level or filter directives (`info`, `rustunnel_server=debug,warn`) [default: info];
    /// `RUSTUNNEL_LOG` overrides it.
    pub log_level: Option<String>,
    /// `human` (default) or `json` (one object per line).
    pub log_format: Option<LogFormat>,
    /// Load balancers whose PROXY protocol headers (v1 or v2) the HTTP, HTTPS and TCP edges
    /// read: addresses or networks. Connections from them must start with one; see
    /// docs/proxy-protocol.md.
    pub proxy_protocol_from: Option<Vec<String>>,
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets masked: configs end up in logs.
        f.debug_struct("FileConfig")
            .field("dev", &self.dev)
            .field("domain", &self.domain)
            .field("control_addr", &self.control_addr)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Fields set in `over` win over fields set in `self`.
    pub fn merge(self, over: FileConfig) -> FileConfig {
        macro_rules! pick {
            ($($f:ident),*) => { FileConfig { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            dev,
            domain,
            control_addr,
            api_addr,
            http_addr,
            https_addr,
            no_https,
            tcp_ports,
            udp_ports,
            data_dir,
            admin_token,
            tls_cert,
            tls_key,
            database_url,
            public_http_port,
            public_https_port,
            region_id,
            region_name,
            region_location,
            regions,
            reservation_grace_secs,
            response_timeout_secs,
            drain_timeout_secs,
            heartbeat_secs,
            udp_idle_secs,
            history_retention_days,
            max_requests_per_tunnel,
            pool_size,
            alert_webhook,
            p2p_udp_addr,
            allow_plain_data,
            log_level,
            log_format,
            proxy_protocol_from
        )
    }
}

/// Validated runtime configuration.
#[derive(Clone)]
pub struct Config {
    pub dev: bool,
    pub domain: String,
    pub control_addr: SocketAddr,
    pub api_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub tcp_ports: RangeInclusive<u16>,
    pub udp_ports: RangeInclusive<u16>,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub tls: TlsSource,
    pub database_url: Option<String>,
    pub public_http_port: Option<u16>,
    pub public_https_port: Option<u16>,
    pub region: RegionConfig,
    pub regions: Vec<RegionConfig>,
    pub reservation_grace: Duration,
    pub response_timeout: Duration,
    pub drain_timeout: Duration,
    pub heartbeat: Duration,
    pub udp_idle: Duration,
    pub history_retention: Duration,
    /// How often open tunnels' traffic counters are written to the history (a crash loses at
    /// most this much of their counts).
    pub history_flush: Duration,
    /// A connection to a tunnel's local service kept for the next HTTP request (HTTP/1.1 and
    /// HTTP/2 alike) is closed after this long unused.
    pub upstream_idle: Duration,
    pub max_requests_per_tunnel: usize,
    pub pool_size: u16,
    /// Accept clients that present no token (loopback dev servers only).
    pub allow_anonymous: bool,
    /// Server-wide webhook for pool down/recovered alerts.
    pub alert_webhook: Option<String>,
    /// Deadline for TLS, upgrade and hello on the control port and TLS on the HTTPS edge.
    pub handshake_timeout: Duration,
    /// Deadline for a visitor to send complete request headers (slowloris).
    pub header_timeout: Duration,
    /// Where the P2P address reflector listens.
    pub p2p_udp: P2pUdp,
    /// Grant plain (unencrypted) data connections to clients that ask; see `FileConfig`.
    pub allow_plain_data: bool,
    /// Log filter directives (checked).
    pub log_level: String,
    pub log_format: LogFormat,
    /// Peers whose connections to the public edges start with a PROXY header naming the visitor.
    pub proxy_protocol_from: crate::proxy_from::ProxyFrom,
}

/// The placeholder of `examples/server.toml`, refused so a copied example cannot run with it.
const EXAMPLE_ADMIN_TOKEN: &str = "change-me-to-a-long-random-string";
/// Shortest admin token a public server accepts: whoever guesses it controls the server.
const MIN_ADMIN_TOKEN: usize = 16;

fn check_admin_token(t: &str) -> Result<(), ConfigError> {
    let why = if t == EXAMPLE_ADMIN_TOKEN {
        "admin_token is still the example's placeholder"
    } else if t.chars().count() < MIN_ADMIN_TOKEN {
        "admin_token is too short (at least 16 characters)"
    } else if t.trim() != t {
        "admin_token starts or ends with whitespace (a stray newline from a file?)"
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid(format!("{why}: use a long random one, e.g. `openssl rand -hex 24`")))
}

/// Where the P2P address reflector (UDP) listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P2pUdp {
    /// Disabled: P2P links are always relayed.
    Off,
    /// The control port's number, on UDP (a bind failure only disables hole punching).
    SameAsControl,
    /// This address (a bind failure is a startup error).
    Addr(SocketAddr),
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("dev", &self.dev)
            .field("domain", &self.domain)
            .field("control_addr", &self.control_addr)
            .field("api_addr", &self.api_addr)
            .field("http_addr", &self.http_addr)
            .field("https_addr", &self.https_addr)
            .field("tcp_ports", &self.tcp_ports)
            .field("udp_ports", &self.udp_ports)
            .field("data_dir", &self.data_dir)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files given by the operator.
    Files { cert: PathBuf, key: PathBuf },
    /// A private CA generated into the data directory on first start (and reused afterwards),
    /// signing a certificate for each name a client asks for ([`crate::tls`]).
    SelfSigned,
}

fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Addr { field, value: value.to_string() })
}

/// Parses `START-END` (or a single port).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let err = || ConfigError::PortRange(s.to_string());
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: u16 = a.parse().map_err(|_| err())?;
    let b: u16 = b.parse().map_err(|_| err())?;
    if a == 0 || a > b {
        return Err(err());
    }
    Ok(a..=b)
}

impl Config {
    /// Fills defaults and validates. `--dev` defaults are loopback addresses and `localhost`.
    pub fn from_file_config(f: FileConfig) -> Result<Config, ConfigError> {
        let dev = f.dev.unwrap_or(false);
        let default_host = if dev { "127.0.0.1" } else { "0.0.0.0" };
        let domain =
            f.domain.clone().unwrap_or_else(|| "localhost".to_string()).trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() {
            return Err(ConfigError::Invalid("domain must not be empty".into()));
        }
        let control_addr =
            parse_addr("control_addr", f.control_addr.as_deref().unwrap_or(&format!("{default_host}:4040")))?;
        let api_addr = optional_addr("api_addr", f.api_addr.as_deref(), &format!("{default_host}:4041"))?;
        let http_addr = optional_addr(
            "http_addr",
            f.http_addr.as_deref(),
            &format!("{default_host}:{}", if dev { 8080 } else { 80 }),
        )?;
        let https_addr = if f.no_https.unwrap_or(false) {
            None
        } else {
            optional_addr(
                "https_addr",
                f.https_addr.as_deref(),
                &format!("{default_host}:{}", if dev { 8443 } else { 443 }),
            )?
        };
        let tcp_ports = parse_port_range(f.tcp_ports.as_deref().unwrap_or("20000-20999"))?;
        let udp_ports = parse_port_range(f.udp_ports.as_deref().unwrap_or("20000-20999"))?;
        let data_dir = f.data_dir.clone().unwrap_or_else(|| PathBuf::from("./.rustunnel"));
        let tls = match (&f.tls_cert, &f.tls_key) {
            (Some(c), Some(k)) => TlsSource::Files { cert: c.clone(), key: k.clone() },
            (None, None) => TlsSource::SelfSigned,
            _ => return Err(ConfigError::TlsPair),
        };
        let admin_token = f.admin_token.clone().filter(|t| !t.is_empty());
        let all_loopback =
            [Some(control_addr), api_addr, http_addr, https_addr].into_iter().flatten().all(|a| a.ip().is_loopback());
        if admin_token.is_none() && !dev {
            return Err(ConfigError::NoAuth);
        }
        if let Some(t) = admin_token.as_deref().filter(|_| !dev) {
            check_admin_token(t)?;
        }
        for (key, value) in [
            ("response_timeout_secs", f.response_timeout_secs),
            ("heartbeat_secs", f.heartbeat_secs),
            ("udp_idle_secs", f.udp_idle_secs),
            ("max_requests_per_tunnel", f.max_requests_per_tunnel.map(|n| n as u64)),
        ] {
            if value == Some(0) {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        if f.pool_size.is_some_and(|n| !(1..=64).contains(&n)) {
            return Err(ConfigError::Invalid("pool_size must be 1-64".into()));
        }
        let region_id = f.region_id.clone().unwrap_or_else(|| "local".to_string());
        let region = RegionConfig {
            id: region_id.clone(),
            name: f.region_name.clone().unwrap_or_else(|| region_id.clone()),
            location: f.region_location.clone().unwrap_or_default(),
            control_addr: format!("{domain}:{}", control_addr.port()),
            api_url: api_addr.map(|a| format!("http://{domain}:{}", a.port())).unwrap_or_default(),
        };
        let alert_webhook = f.alert_webhook.clone().filter(|w| !w.is_empty());
        if let Some(w) = &alert_webhook {
            crate::webhook::parse_webhook(w).map_err(|e| ConfigError::Invalid(format!("alert_webhook: {e}")))?;
        }
        let log_level = f.log_level.clone().unwrap_or_else(|| "info".to_string());
        crate::logging::parse_level(&log_level).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let secs = |v: Option<u64>, d: u64| Duration::from_secs(v.unwrap_or(d));
        Ok(Config {
            alert_webhook,
            dev,
            allow_anonymous: dev && all_loopback,
            domain,
            control_addr,
            api_addr,
            http_addr,
            https_addr,
            tcp_ports,
            udp_ports,
            data_dir,
            admin_token,
            tls,
            database_url: f.database_url.clone(),
            public_http_port: f.public_http_port,
            public_https_port: f.public_https_port,
            regions: f.regions.clone().unwrap_or_default(),
            region,
            reservation_grace: secs(f.reservation_grace_secs, 120),
            response_timeout: secs(f.response_timeout_secs, 60),
            drain_timeout: secs(f.drain_timeout_secs, 10),
            heartbeat: secs(f.heartbeat_secs, rustunnel_proto::limits::HEARTBEAT_INTERVAL.as_secs()),
            udp_idle: secs(f.udp_idle_secs, 60),
            history_retention: secs(f.history_retention_days.map(|d| d * 86_400), 30 * 86_400),
            history_flush: Duration::from_secs(60),
            upstream_idle: Duration::from_secs(60),
            max_requests_per_tunnel: f.max_requests_per_tunnel.unwrap_or(1024),
            pool_size: f.pool_size.unwrap_or(8),
            handshake_timeout: rustunnel_proto::limits::HANDSHAKE_TIMEOUT,
            allow_plain_data: f.allow_plain_data.unwrap_or(false),
            log_level,
            log_format: f.log_format.unwrap_or_default(),
            proxy_protocol_from: crate::proxy_from::ProxyFrom::parse(
                f.proxy_protocol_from.as_deref().unwrap_or_default(),
            )
            .map_err(|e| ConfigError::Invalid(e.to_string()))?,
            header_timeout: Duration::from_secs(30),
            p2p_udp: match f.p2p_udp_addr.as_deref() {
                None => P2pUdp::SameAsControl,
                Some(v) => match optional_addr("p2p_udp_addr", Some(v), "")? {
                    Some(a) => P2pUdp::Addr(a),
                    None => P2pUdp::Off,
                },
            },
        })
    }

    /// What in this configuration will surprise its user, said once at startup.
    pub fn caveats(&self) -> Vec<String> {
        let ip = self.control_addr.ip();
        let local_name = self.domain == "localhost" || self.domain.ends_with(".localhost");
        if local_name && !ip.is_loopback() && !ip.is_unspecified() {
            return vec![format!(
                "public URLs name {} (this machine only), but tunnels listen on {ip}: pass --domain with a name that resolves to {ip}",
                self.domain
            )];
        }
        Vec::new()
    }

    /// A loopback configuration on port 0 everywhere, for tests and the in-process demo.
    pub fn ephemeral(data_dir: &Path) -> Config {
        let f = FileConfig {
            dev: Some(true),
            control_addr: Some("127.0.0.1:0".into()),
            api_addr: Some("127.0.0.1:0".into()),
            http_addr: Some("127.0.0.1:0".into()),
            https_addr: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        };
        // The literal above is valid by construction.
        match Config::from_file_config(f) {
            Ok(c) => c,
            Err(e) => unreachable!("ephemeral config is valid: {e}"),
        }
    }
}

fn optional_addr(field: &'static str, v: Option<&str>, default: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match v {
        Some("") | Some("off") | Some("none") => Ok(None),
        Some(v) => parse_addr(field, v).map(Some),
        None => parse_addr(field, default).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_domain_on_a_network_address_is_pointed_out() {
        let cfg = |addr: &str, domain: Option<&str>| {
            let f = FileConfig {
                dev: Some(true),
                control_addr: Some(addr.into()),
                domain: domain.map(str::to_string),
                ..Default::default()
            };
            Config::from_file_config(f).unwrap()
        };
        assert!(cfg("127.0.0.1:4040", None).caveats().is_empty());
        assert!(cfg("0.0.0.0:4040", None).caveats().is_empty());
        assert!(cfg("10.0.0.5:4040", Some("tunnel.example.com")).caveats().is_empty());
        let c = cfg("10.0.0.5:4040", None).caveats();
        assert!(c.len() == 1 && c[0].contains("pass --domain with a name that resolves to 10.0.0.5"), "{c:?}");
    }

    #[test]
    fn dev_defaults() {
        let c = Config::from_file_config(FileConfig { dev: Some(true), ..Default::default() }).unwrap();
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.control_addr, "127.0.0.1:4040".parse().unwrap());
        assert_eq!(c.api_addr, Some("127.0.0.1:4041".parse().unwrap()));
        assert_eq!(c.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.https_addr, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(c.tcp_ports, 20000..=20999);
        assert!(c.allow_anonymous);
    }

    #[test]
    fn production_requires_auth() {
        assert!(matches!(Config::from_file_config(FileConfig::default()), Err(ConfigError::NoAuth)));
        let c =
            Config::from_file_config(FileConfig { admin_token: Some("x".repeat(32)), ..Default::default() }).unwrap();
        assert!(!c.allow_anonymous);
    }

    #[test]
    fn dev_on_public_address_still_needs_a_token() {
        let c = Config::from_file_config(FileConfig {
            dev: Some(true),
            control_addr: Some("0.0.0.0:4040".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!c.allow_anonymous);
    }

    #[test]
    fn unknown_keys_refused() {
        assert!(FileConfig::from_toml("domian = \"x\"").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-20010").unwrap(), 20000..=20010);
        assert_eq!(parse_port_range("5000").unwrap(), 5000..=5000);
        assert!(parse_port_range("10-1").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("a-b").is_err());
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../../examples/server.toml");
        let f = FileConfig::from_toml(text).unwrap();
        // Its placeholder token is refused; with a real one (flag or environment) it runs.
        let e = Config::from_file_config(f.clone()).unwrap_err();
        assert!(e.to_string().contains("placeholder"), "{e}");
        let token = FileConfig { admin_token: Some("a".repeat(48)), ..Default::default() };
        Config::from_file_config(f.merge(token)).unwrap();
    }

    #[test]
    fn weak_admin_tokens_are_refused_on_a_public_server() {
        let with = |t: &str, dev: bool| {
            Config::from_file_config(FileConfig { admin_token: Some(t.into()), dev: Some(dev), ..Default::default() })
        };
        for weak in ["x", "short-token", "change-me-to-a-long-random-string", "0123456789abcdef\n"] {
            let e = with(weak, false).err().unwrap_or_else(|| panic!("{weak:?} accepted"));
            assert!(e.to_string().contains("openssl rand -hex 24"), "{e}");
        }
        with("0123456789abcdef", false).unwrap();
        // A loopback dev server is the operator's own business.
        with("x", true).unwrap();
    }

    #[test]
    fn zero_timeouts_and_limits_are_refused() {
        let token = Some("a".repeat(32));
        for toml in
            ["response_timeout_secs = 0", "heartbeat_secs = 0", "udp_idle_secs = 0", "max_requests_per_tunnel = 0"]
        {
            let f = FileConfig { admin_token: token.clone(), ..FileConfig::from_toml(toml).unwrap() };
            let e = Config::from_file_config(f).unwrap_err();
            assert!(e.to_string().ends_with("must be at least 1"), "{toml}: {e}");
        }
        for toml in ["pool_size = 0", "pool_size = 65"] {
            let f = FileConfig { admin_token: token.clone(), ..FileConfig::from_toml(toml).unwrap() };
            assert!(Config::from_file_config(f).unwrap_err().to_string().contains("pool_size must be 1-64"), "{toml}");
        }
        let f = FileConfig { admin_token: token, ..FileConfig::from_toml("reservation_grace_secs = 0").unwrap() };
        assert_eq!(Config::from_file_config(f).unwrap().reservation_grace, Duration::ZERO);
    }
}
