//! The options of one tunnel, described once for every front end: the `rustunnel
//! http|tcp|udp` flags, the `[tunnels.<name>]` keys of a `rustunnel start` file, the MCP
//! tools and the agent tools each fill a [`TunnelOptions`], and `TunnelConfig::from` turns it
//! into the tunnel definition that makes the protocol's `TunnelSpec`. [`AccessOptions`] is
//! shared as is (a clap `Args` the CLI flattens, a serde struct the start file flattens).
use rustunnel_proto::basic_auth::BasicAuth;
use rustunnel_proto::Protocol;
use serde::Deserialize;

use crate::health::HealthCheck;
use crate::proxy_header::ProxyProtocol;

/// Everything one tunnel is made of: the local service it forwards to, the public name or
/// port it asks for, who may reach it and the pool it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelOptions {
    /// Shown in logs and the API.
    pub name: String,
    pub protocol: Protocol,
    pub target: LocalTarget,
    pub public: PublicName,
    pub access: AccessOptions,
    pub pool: PoolOptions,
}

impl TunnelOptions {
    /// A tunnel to `localhost:port` with every other option at its default.
    pub fn new(name: impl Into<String>, protocol: Protocol, port: u16) -> Self {
        TunnelOptions {
            name: name.into(),
            protocol,
            target: LocalTarget { host: "localhost".into(), port },
            public: PublicName::default(),
            access: AccessOptions::default(),
            pool: PoolOptions::default(),
        }
    }
}

/// The local service a tunnel forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTarget {
    /// As written (`[::1]` and `::1` both work); errors quote it so.
    pub host: String,
    pub port: u16,
}

/// What a tunnel asks the server to publish it under; the server picks when `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicName {
    /// HTTP: the subdomain.
    pub subdomain: Option<String>,
    /// TCP/UDP: the public port.
    pub remote_port: Option<u16>,
}

/// Load balancing: the pool a tunnel joins and how its local service is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolOptions {
    /// Join a load-balanced pool (HTTP subdomain or TCP port shared with other members).
    pub group: Option<GroupConfig>,
    /// Check the local service and report its health; unhealthy pool members get no traffic.
    pub health_check: Option<HealthCheck>,
}

/// Pool membership: the pool's name and its shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub key: String,
}

impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig").field("name", &self.name).field("key", &"***").finish()
    }
}

impl GroupConfig {
    /// The pool named by a `group`/`group_key` pair, when both are given.
    pub fn from_pair(name: Option<&str>, key: Option<&str>) -> Option<Self> {
        Some(GroupConfig { name: name?.to_string(), key: key?.to_string() })
    }
}

/// Access and upstream options of one tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
pub struct AccessOptions {
    /// HTTP: visitors must log in with these credentials (HTTP Basic, checked at the edge and
    /// not passed on). The password is 8-128 characters; `basic_auth` in a `start` config
    /// file keeps it out of the process list.
    #[arg(long, value_name = "USER:PASSWORD", value_parser = parse_basic_auth)]
    pub basic_auth: Option<BasicAuth>,
    /// Accept visitors only from these networks (e.g. 10.0.0.0/8, 203.0.113.7, 2001:db8::/32;
    /// repeat the flag or separate with commas). Judged on the visitor's own address.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    #[serde(default)]
    pub cidr_allow: Vec<String>,
    /// Refuse visitors from these networks, even inside --cidr-allow.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    #[serde(default)]
    pub cidr_deny: Vec<String>,
    /// HTTP: the Host header the local service gets: `rewrite` (its own address, e.g.
    /// localhost:3000, for dev servers that check it) or a host name. The public host stays in
    /// X-Forwarded-Host.
    #[arg(long, value_name = "rewrite|HOST")]
    pub host_header: Option<String>,
    /// HTTP and TCP: start each connection to the local service with a PROXY protocol header
    /// (v1 text or v2 binary) naming the visitor, for services that read one (nginx
    /// `proxy_protocol`, HAProxy `accept-proxy`, PostgreSQL poolers).
    #[arg(long, value_name = "v1|v2")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

fn parse_basic_auth(s: &str) -> Result<BasicAuth, String> {
    BasicAuth::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TunnelConfig;
    use rustunnel_proto::Protocol;

    #[test]
    fn options_reach_the_spec() {
        let o: AccessOptions = toml::from_str(
            "basic_auth = \"ana:correct horse\"\ncidr_allow = [\"10.0.0.0/8\"]\nhost_header = \"rewrite\"\nproxy_protocol = \"v2\"",
        )
        .unwrap();
        let t = TunnelConfig::from(TunnelOptions { access: o, ..TunnelOptions::new("web", Protocol::Http, 3000) });
        let spec = t.spec();
        assert_eq!(spec.basic_auth.as_ref().map(|b| b.user()), Some("ana"));
        assert_eq!(spec.cidr_allow, ["10.0.0.0/8"]);
        assert_eq!(spec.host_header.as_deref(), Some("localhost:3000"));
        assert!(spec.upstream_per_visitor);
    }

    #[test]
    fn every_option_reaches_the_config() {
        let mut o = TunnelOptions::new("db", Protocol::Tcp, 5432);
        o.target.host = "[::1]".into();
        o.public.remote_port = Some(15432);
        o.pool.group = GroupConfig::from_pair(Some("pg"), Some("k"));
        o.pool.health_check = Some(HealthCheck::new(crate::health::HealthKind::Tcp));
        let t = TunnelConfig::from(o);
        assert_eq!(t.local_addr(), "[::1]:5432");
        assert_eq!(t.remote_port, Some(15432));
        let spec = t.spec();
        let g = spec.group.expect("pool");
        assert_eq!((g.name.as_str(), g.key.as_str()), ("pg", "k"));
        assert!(g.health_check.is_some());
        assert!(GroupConfig::from_pair(Some("pg"), None).is_none());
    }
}
