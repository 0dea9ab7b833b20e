//! The options that say who may reach a tunnel and what its local service receives, described
//! once for every front end: the `rustunnel http|tcp|udp` flags (a clap `Args` the CLI
//! flattens), the `[tunnels.<name>]` keys of a `rustunnel start` file
//! (flattened into [`crate::config::StartTunnel`]) and the MCP tools, each under the same
//! names; `TunnelConfig::set_access` sets them on a tunnel definition, which makes the
//! protocol's `TunnelSpec`.
use rustunnel_proto::basic_auth::BasicAuth;
use serde::Deserialize;

use crate::proxy_header::ProxyProtocol;

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
        let mut t = TunnelConfig::new("web", Protocol::Http, 3000);
        t.set_access(&o);
        let spec = t.spec();
        assert_eq!(spec.basic_auth.as_ref().map(|b| b.user()), Some("ana"));
        assert_eq!(spec.cidr_allow, ["10.0.0.0/8"]);
        assert_eq!(spec.host_header.as_deref(), Some("localhost:3000"));
        assert!(spec.upstream_per_visitor);
    }
}
