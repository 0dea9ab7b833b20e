//! Client options, and the `rustunnel start` TOML file (several named tunnels in one client).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustunnel_proto::basic_auth::BasicAuth;
use rustunnel_proto::Protocol;
use rustunnel_proto::{GroupSpec, TunnelSpec};
use serde::Deserialize;

use crate::error::ClientError;
use crate::health::{normalize_path, HealthCheck, HealthKind};
pub use crate::options::GroupConfig;
use crate::options::{AccessOptions, LocalTarget, PoolOptions, PublicName, TunnelOptions};
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
    /// Join a load-balanced pool (HTTP subdomain or TCP port shared with other members).
    pub group: Option<GroupConfig>,
    /// Check the local service and report its health; unhealthy pool members get no traffic.
    pub health_check: Option<HealthCheck>,
    /// HTTP tunnels: visitors must present these credentials (HTTP Basic) at the edge.
    pub basic_auth: Option<BasicAuth>,
    /// Visitor networks the tunnel accepts (none: any) and refuses; see [`IpRules`].
    pub cidr_allow: Vec<String>,
    pub cidr_deny: Vec<String>,
    /// HTTP tunnels: the `Host` the local service gets; `rewrite`: its own address
    /// ([`TunnelConfig::host_header_value`]).
    pub host_header: Option<String>,
    /// Send each visitor's address to the local service in a PROXY header (v1 or v2).
    pub proxy_protocol: Option<crate::proxy_header::ProxyProtocol>,
}

impl From<TunnelOptions> for TunnelConfig {
    /// The one place a tunnel's options (from flags, a start file, the MCP or agent tools)
    /// become a tunnel definition.
    fn from(o: TunnelOptions) -> Self {
        let TunnelOptions { name, protocol, target, public, access, pool } = o;
        TunnelConfig {
            name,
            protocol,
            // Kept as written (errors quote it); `local_addr` reads `[::1]` as `::1`.
            local_host: target.host,
            local_port: target.port,
            subdomain: public.subdomain,
            remote_port: public.remote_port,
            group: pool.group,
            health_check: pool.health_check,
            basic_auth: access.basic_auth,
            cidr_allow: access.cidr_allow,
            cidr_deny: access.cidr_deny,
            host_header: access.host_header,
            proxy_protocol: access.proxy_protocol,
        }
    }
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
            group: None,
            health_check: None,
            basic_auth: None,
            cidr_allow: Vec::new(),
            cidr_deny: Vec::new(),
            host_header: None,
            proxy_protocol: None,
        }
    }

    /// The `Host` to ask the edge to send: `rewrite` is the local address (`localhost:3000`).
    pub fn host_header_value(&self) -> Option<String> {
        self.host_header.as_deref().map(|h| {
            if h.eq_ignore_ascii_case("rewrite") {
                self.local_addr()
            } else {
                h.to_string()
            }
        })
    }

    /// Makes this tunnel a member of pool `name` with the shared `key`.
    pub fn with_group(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.group = Some(GroupConfig { name: name.into(), key: key.into() });
        self
    }

    /// Checks pool and health-check settings before anything connects.
    pub fn validate(&self) -> Result<(), String> {
        let host = local_host(&self.local_host);
        if host.is_empty() {
            return Err(format!("tunnel '{}': the local host is empty", self.name));
        }
        if !valid_local_host(host) {
            return Err(format!(
                "tunnel '{}': local host '{}' is not a host name or IP address (the port is given separately)",
                self.name, self.local_host
            ));
        }
        if self.proxy_protocol.is_some() && self.protocol == Protocol::Udp {
            return Err(format!("tunnel '{}': proxy_protocol is for http and tcp tunnels", self.name));
        }
        if let Some(g) = &self.group {
            if self.protocol == Protocol::Udp {
                return Err(format!("tunnel '{}': load-balanced pools are for http and tcp tunnels", self.name));
            }
            if g.name.is_empty() || g.key.is_empty() {
                return Err(format!("tunnel '{}': a pool needs both a group name and a group key", self.name));
            }
        }
        // The rules the server checks again.
        self.spec().check().map_err(|e| format!("tunnel '{}': {e}", self.name))?;
        if let Some(h) = &self.health_check {
            if self.group.is_none() {
                // Only a pool acts on a member's health: alone it would check for nothing.
                return Err(format!(
                    "tunnel '{}': a health check (or alert webhook) is for load-balanced pools: add group and group_key",
                    self.name
                ));
            }
            h.validate().map_err(|e| format!("tunnel '{}': {e}", self.name))?;
            if matches!(h.kind, HealthKind::Http { .. }) && self.protocol == Protocol::Udp {
                return Err(format!("tunnel '{}': udp services take no health check", self.name));
            }
        }
        Ok(())
    }
    /// What the client asks the server for.
    pub fn spec(&self) -> TunnelSpec {
        TunnelSpec {
            name: self.name.clone(),
            protocol: self.protocol,
            subdomain: self.subdomain.clone(),
            remote_port: self.remote_port,
            local_addr: self.local_addr(),
            group: self.group.as_ref().map(|g| GroupSpec {
                name: g.name.clone(),
                key: g.key.clone(),
                alert_webhook: self.health_check.as_ref().and_then(|h| h.alert_webhook.clone()),
                health_check: self.health_check.as_ref().map(|h| h.describe()),
            }),
            basic_auth: self.basic_auth.clone(),
            cidr_allow: self.cidr_allow.clone(),
            cidr_deny: self.cidr_deny.clone(),
            host_header: self.host_header_value(),
            upstream_per_visitor: self.proxy_protocol.is_some() && self.protocol == Protocol::Http,
        }
    }

    pub fn local_addr(&self) -> String {
        host_port(&self.local_host, self.local_port)
    }
}

/// `host:port` to dial, the host as [`local_host`] reads it (an IPv6 literal in brackets).
pub fn host_port(host: &str, port: u16) -> String {
    let host = local_host(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A host name (letters, digits, '-', '_' and '.', at most 253) or an IP address; no port, no
/// spaces. Checked before connecting: anything else could only fail at every visitor.
pub fn valid_local_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || (host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

/// A local host as people write it: `[::1]` (the URL form of an IPv6 literal) is `::1`, the
/// form resolvers and [`TunnelConfig::local_addr`] expect.
pub fn local_host(host: &str) -> &str {
    let host = host.trim();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
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
    /// Ask for plain (unencrypted, zero-copy) data connections; only on a trusted network.
    /// The server must allow them (`--allow-plain-data`); otherwise TLS is used.
    pub plain_data: bool,
    /// Let HTTP streams share one multiplexed data connection (default). Off: one data
    /// connection per stream, as clients before it.
    pub mux: bool,
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
            .field("plain_data", &self.plain_data)
            .field("mux", &self.mux)
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
            plain_data: false,
            mux: true,
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
    /// Plain (unencrypted, zero-copy) data connections, if the server allows them.
    #[serde(default)]
    pub plain_data: bool,
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
    /// Load-balanced pool to join; every member uses the same `group_key`.
    pub group: Option<String>,
    pub group_key: Option<String>,
    pub health_check: Option<StartHealthCheck>,
    /// `basic_auth`, `cidr_allow`, `cidr_deny`, `host_header`, `proxy_protocol`.
    #[serde(flatten)]
    pub access: AccessOptions,
}

/// `[tunnels.<name>.health_check]`, also the MCP tools' `health_check` argument (its JSON
/// Schema, with the `schema` feature, is what the tools publish).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StartHealthCheck {
    /// tcp: connect only; http: GET the path.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["tcp", "http"])))]
    pub kind: String,
    /// HTTP path to GET, e.g. "/health".
    pub path: Option<String>,
    /// Seconds between checks.
    #[cfg_attr(feature = "schema", schemars(extend("type" = "integer", "minimum" = 1)))]
    pub interval_secs: Option<f64>,
    /// Seconds before a check fails.
    #[cfg_attr(feature = "schema", schemars(extend("type" = "integer", "minimum" = 1)))]
    pub timeout_secs: Option<f64>,
    /// Failed checks before a member is taken out.
    #[cfg_attr(feature = "schema", schemars(extend("minimum" = 1)))]
    pub max_failed: Option<u32>,
    /// HTTP checks: require a 2xx status.
    pub expect_2xx: Option<bool>,
    /// http:// URL the server POSTs an alert to when the pool has no healthy member left.
    pub alert_webhook: Option<String>,
}

fn secs(field: &str, v: Option<f64>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(format!("{field} = {s}: expected seconds between 0 and 3600")),
    }
}

impl StartHealthCheck {
    pub fn to_check(&self) -> Result<HealthCheck, String> {
        let kind = match self.kind.to_ascii_lowercase().as_str() {
            "tcp" => {
                if self.path.is_some() {
                    return Err("health_check.path applies to type = \"http\" only".into());
                }
                HealthKind::Tcp
            }
            "http" => HealthKind::Http {
                path: normalize_path(self.path.as_deref().unwrap_or("/"))?,
                expect_2xx: self.expect_2xx.unwrap_or(true),
            },
            other => return Err(format!("health_check.type '{other}': expected \"tcp\" or \"http\"")),
        };
        let check = HealthCheck {
            kind,
            interval: secs("interval_secs", self.interval_secs, HealthCheck::DEFAULT_INTERVAL)?,
            timeout: secs("timeout_secs", self.timeout_secs, HealthCheck::DEFAULT_TIMEOUT)?,
            max_failed: self.max_failed.unwrap_or(HealthCheck::DEFAULT_MAX_FAILED),
            alert_webhook: self.alert_webhook.clone(),
        };
        check.validate()?;
        Ok(check)
    }
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
            if t.group.is_some() != t.group_key.is_some() {
                return Err(format!("tunnel '{name}': group and group_key go together"));
            }
            if let Some(h) = &t.health_check {
                h.to_check().map_err(|e| format!("tunnel '{name}': {e}"))?;
            }
        }
        let max = rustunnel_proto::limits::MAX_TUNNELS_PER_SESSION;
        if f.tunnels.len() > max {
            return Err(format!(
                "{} tunnels in one file: a client holds at most {max} (run several clients for more)",
                f.tunnels.len()
            ));
        }
        let configs = f.tunnel_configs();
        for t in &configs {
            t.validate()?;
        }
        // Two tunnels of one client asking for the same name or port: the server would open
        // the first and refuse the second after the first is live.
        for (i, a) in configs.iter().enumerate() {
            for b in &configs[..i] {
                let same_sub = a.subdomain.is_some() && a.subdomain == b.subdomain && a.group.is_none();
                let same_port = a.remote_port.is_some()
                    && a.remote_port == b.remote_port
                    && a.protocol == b.protocol
                    && a.group.is_none();
                if same_sub || same_port {
                    let what = if same_sub { "subdomain" } else { "remote_port" };
                    return Err(format!("tunnels '{}' and '{}' ask for the same {what}", b.name, a.name));
                }
            }
        }
        Ok(f)
    }

    pub fn tunnel_configs(&self) -> Vec<TunnelConfig> {
        self.tunnels
            .iter()
            .map(|(name, t)| {
                TunnelConfig::from(TunnelOptions {
                    target: LocalTarget {
                        host: t.local_host.as_deref().map_or("localhost", local_host).to_string(),
                        port: t.local_port,
                    },
                    public: PublicName { subdomain: t.subdomain.clone(), remote_port: t.remote_port },
                    access: t.access.clone(),
                    pool: PoolOptions {
                        group: GroupConfig::from_pair(t.group.as_deref(), t.group_key.as_deref()),
                        // Validated in `parse`; a bad one here is dropped rather than panicking.
                        health_check: t.health_check.as_ref().and_then(|h| h.to_check().ok()),
                    },
                    ..TunnelOptions::new(name.clone(), t.protocol, t.local_port)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_names_or_addresses_without_ports() {
        for ok in ["localhost", "127.0.0.1", "::1", "[::1]", "db.internal", "my_host-1.lan"] {
            let t = TunnelConfig { local_host: ok.into(), ..TunnelConfig::new("t", Protocol::Tcp, 80) };
            assert!(t.validate().is_ok(), "{ok}");
        }
        for bad in ["[::1]:80", "localhost:80", "evil host", "a..b", "x/y"] {
            let t = TunnelConfig { local_host: bad.into(), ..TunnelConfig::new("t", Protocol::Tcp, 80) };
            let e = t.validate().unwrap_err();
            assert!(e.contains("not a host name or IP address"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let f = StartFile::parse(include_str!("../../../examples/client.toml")).unwrap();
        let t = f.tunnel_configs();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "db");
        assert_eq!(t[0].protocol, Protocol::Tcp);
        assert_eq!(t[1].subdomain.as_deref(), Some("web"));
        assert!(f.insecure);
        assert!(!f.plain_data, "plain data connections are opt-in");
        let f = StartFile::parse("plain_data = true\n[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 22\n").unwrap();
        assert!(f.plain_data);
    }

    #[test]
    fn parses_the_pool_example() {
        let f = StartFile::parse(include_str!("../../../examples/pool.toml")).unwrap();
        let t = f.tunnel_configs();
        assert_eq!(t.len(), 2);
        for (t, port) in t.iter().zip([3000, 3001]) {
            assert_eq!(t.local_port, port);
            assert_eq!(t.group.as_ref().map(|g| g.name.as_str()), Some("pool"));
            let h = t.health_check.as_ref().unwrap();
            assert_eq!(h.kind, HealthKind::Http { path: "/health".into(), expect_2xx: true });
        }
        assert!(!format!("{:?}", t[0]).contains("change-me"), "group key masked");
    }

    #[test]
    fn refuses_more_tunnels_than_a_session_holds_and_duplicate_endpoints() {
        let many = |n: usize| {
            (0..n).map(|i| format!("[tunnels.t{i}]\nprotocol = \"tcp\"\nlocal_port = {}\n", i + 1)).collect::<String>()
        };
        assert!(StartFile::parse(&many(64)).is_ok());
        assert!(StartFile::parse(&many(65)).unwrap_err().contains("at most 64"));
        let two = |a: &str, b: &str| format!("[tunnels.a]\n{a}\n[tunnels.b]\n{b}\n");
        let web = |sub: &str| format!("protocol = \"http\"\nlocal_port = 1\nsubdomain = \"{sub}\"");
        let port = |p: &str, n: u16| format!("protocol = \"{p}\"\nlocal_port = 1\nremote_port = {n}");
        let e = StartFile::parse(&two(&web("same"), &web("same"))).unwrap_err();
        assert!(e.contains("tunnels 'a' and 'b' ask for the same subdomain"), "{e}");
        assert!(StartFile::parse(&two(&port("tcp", 20001), &port("tcp", 20001))).unwrap_err().contains("remote_port"));
        assert!(StartFile::parse(&two(&web("one"), &web("two"))).is_ok());
        // A TCP and a UDP port of the same number are different endpoints.
        assert!(StartFile::parse(&two(&port("tcp", 20001), &port("udp", 20001))).is_ok());
        // Members of one pool share its name on purpose.
        let member = "protocol = \"http\"\nlocal_port = 1\nsubdomain = \"pool\"\ngroup = \"pool\"\ngroup_key = \"k\"";
        assert!(StartFile::parse(&two(member, member)).is_ok());
    }

    #[test]
    fn refuses_bad_pools() {
        let base = "[tunnels.a]\nprotocol = \"http\"\nlocal_port = 1\n";
        assert!(StartFile::parse(&format!("{base}group = \"p\"")).is_err(), "group without key");
        assert!(StartFile::parse(&format!("{base}group_key = \"k\"")).is_err(), "key without group");
        let udp = "[tunnels.a]\nprotocol = \"udp\"\nlocal_port = 1\ngroup = \"p\"\ngroup_key = \"k\"";
        assert!(StartFile::parse(udp).is_err());
        let lone = format!("{base}[tunnels.a.health_check]\ntype = \"tcp\"");
        assert!(StartFile::parse(&lone).unwrap_err().contains("for load-balanced pools"), "a check without a pool");
        let pooled = format!("{base}group = \"p\"\ngroup_key = \"k\"\n");
        assert!(StartFile::parse(&format!("{pooled}[tunnels.a.health_check]\ntype = \"tcp\"")).is_ok());
        for hc in [
            "type = \"icmp\"",
            "type = \"tcp\"\npath = \"/x\"",
            "type = \"http\"\ninterval_secs = 0",
            "type = \"http\"\nmax_failed = 0",
            "type = \"http\"\nbogus = 1",
        ] {
            let text = format!("{pooled}[tunnels.a.health_check]\n{hc}");
            assert!(StartFile::parse(&text).is_err(), "{hc}");
        }
    }

    #[test]
    fn bracketed_ipv6_local_hosts_are_ipv6_literals() {
        for host in ["::1", "[::1]", " [::1] "] {
            let mut t = TunnelConfig::new("t", Protocol::Tcp, 22);
            t.local_host = host.into();
            assert_eq!(t.local_addr(), "[::1]:22", "{host}");
        }
        let f = StartFile::parse("[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 22\nlocal_host = \"[::1]\"\n").unwrap();
        assert_eq!(f.tunnel_configs()[0].local_host, "::1");
        assert_eq!(local_host("127.0.0.1"), "127.0.0.1");
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 22\nlocal_host = \"[]\"\n").is_err());
    }

    #[test]
    fn basic_auth_is_for_http_tunnels_with_a_real_password() {
        let http = "[tunnels.a]\nprotocol = \"http\"\nlocal_port = 1\n";
        let f = StartFile::parse(&format!("{http}basic_auth = \"ana:correct horse\"")).unwrap();
        let t = &f.tunnel_configs()[0];
        assert_eq!(t.basic_auth.as_ref().map(|a| a.as_str()), Some("ana:correct horse"));
        assert!(!format!("{t:?} {f:?}").contains("correct horse"), "password masked in Debug");
        let err = StartFile::parse(&format!("{http}basic_auth = \"ana:short\"")).unwrap_err();
        assert!(err.contains("8-128"), "{err}");
        let tcp = "[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 1\nbasic_auth = \"ana:correct horse\"";
        assert!(StartFile::parse(tcp).unwrap_err().contains("http tunnels only"));
    }

    #[test]
    fn address_rules_in_a_config_file() {
        let base = "[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 1\n";
        let f = StartFile::parse(&format!(
            "{base}cidr_allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ncidr_deny = [\"10.9.0.0/16\"]"
        ))
        .unwrap();
        let t = &f.tunnel_configs()[0];
        assert_eq!(t.cidr_allow, ["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(t.cidr_deny, ["10.9.0.0/16"]);
        let err = StartFile::parse(&format!("{base}cidr_allow = [\"10.0.0.0/33\"]")).unwrap_err();
        assert!(err.contains("'10.0.0.0/33' is not an IP address or network"), "{err}");
    }

    #[test]
    fn host_header_rewrite_is_the_local_address() {
        let base = "[tunnels.a]\nprotocol = \"http\"\nlocal_port = 3000\n";
        let f = StartFile::parse(&format!("{base}host_header = \"rewrite\"")).unwrap();
        assert_eq!(f.tunnel_configs()[0].host_header_value().as_deref(), Some("localhost:3000"));
        let f = StartFile::parse(&format!("{base}host_header = \"app.test\"")).unwrap();
        assert_eq!(f.tunnel_configs()[0].host_header_value().as_deref(), Some("app.test"));
        assert!(StartFile::parse(&format!("{base}host_header = \"two words\"")).is_err());
        let tcp = "[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 1\nhost_header = \"rewrite\"";
        assert!(StartFile::parse(tcp).unwrap_err().contains("http tunnels only"));
    }

    #[test]
    fn proxy_protocol_is_read_for_http_and_tcp_tunnels() {
        use crate::proxy_header::ProxyProtocol;
        let f =
            StartFile::parse("[tunnels.db]\nprotocol = \"tcp\"\nlocal_port = 5432\nproxy_protocol = \"v2\"").unwrap();
        let t = &f.tunnel_configs()[0];
        assert_eq!(t.proxy_protocol, Some(ProxyProtocol::V2));
        assert!(!t.spec().upstream_per_visitor, "tcp streams always carry their visitor");
        let f =
            StartFile::parse("[tunnels.web]\nprotocol = \"http\"\nlocal_port = 80\nproxy_protocol = \"v1\"").unwrap();
        assert!(f.tunnel_configs()[0].spec().upstream_per_visitor);
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"udp\"\nlocal_port = 1\nproxy_protocol = \"v1\"").is_err());
        assert!(StartFile::parse("[tunnels.a]\nprotocol = \"tcp\"\nlocal_port = 1\nproxy_protocol = \"v3\"").is_err());
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
