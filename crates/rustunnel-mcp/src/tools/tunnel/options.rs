//! The arguments of `create_tunnel` and `get_connection_info`: [`TunnelArgs`] as the tools
//! take them, and [`Tunnel`], the tunnel they describe once the rules that join several
//! arguments (p2p, pools, HTTP-only options) are checked.
use rustunnel_client::config::StartHealthCheck;
use rustunnel_client::health::HealthCheck;
use rustunnel_client::options::AccessOptions;
use rustunnel_client::proxy_header::ProxyProtocol;
use rustunnel_proto::basic_auth::BasicAuth;
use rustunnel_proto::ip_rules::MAX_RULES;
use rustunnel_proto::{Protocol, SpecError, TunnelSpec};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::tools::error::ToolError;
use crate::tools::fields::{Choice, Choices, Host, Ident, Nested, Port, Str, StrList};

/// The `protocol` values of the tunnel tools.
pub struct TunnelProtocols;

impl Choices for TunnelProtocols {
    const ALL: &'static [&'static str] = &["http", "tcp", "udp", "p2p"];
}

/// The `proxy_protocol` values.
pub struct ProxyVersions;

impl Choices for ProxyVersions {
    const ALL: &'static [&'static str] = &["v1", "v2"];
}

/// The `token` argument every API tool takes.
pub type TokenArg = Option<Str<512>>;

/// `create_tunnel`'s arguments (`get_connection_info` takes the same).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelArgs {
    /// rustunnel API token. Optional: omit it when the MCP server was started with RUSTUNNEL_TOKEN set (the usual
    /// case). Never invent one.
    pub token: TokenArg,
    /// Local port your service is already listening on (1-65535), e.g. 3000 for a dev server. The tool checks that
    /// something accepts connections there before opening the tunnel.
    pub local_port: Port,
    /// Tunnel type: "http" for web apps and APIs (public URL under a subdomain), "tcp" for raw TCP (databases, SSH;
    /// public host:port), "udp" for UDP services (game servers, DNS), "p2p" for private peer-to-peer tcp tunnels (with
    /// secret and peer_name to publish, or secret and peer_target to connect).
    pub protocol: Choice<TunnelProtocols>,
    /// HTTP only: the subdomain to ask for (3-63 characters of a-z, 0-9 and '-'). Omit for a random one.
    pub subdomain: Option<Str<63>>,
    /// Region id such as "eu" or "us" (see list_regions). Omit to use the server this MCP server is configured with.
    pub region: Option<Ident<64>>,
    /// Host the local service listens on. Default "localhost"; use e.g. "127.0.0.1" or a LAN/container host name if
    /// needed.
    pub local_host: Option<Host>,
    /// P2P only (required): shared secret; publisher and visitor must use the same one. Never sent over the network.
    pub secret: Option<Str<256>>,
    /// P2P publish: publish the local service on local_port under this name (1-64 characters: letters, digits, '-',
    /// '_', '.'). Returns the name and role; other machines connect with peer_target.
    pub peer_name: Option<Str<128>>,
    /// P2P connect: reach the published P2P service with this name through a local listener on 127.0.0.1:local_port
    /// (the port must be free). Returns that address and the mode (direct or relayed).
    pub peer_target: Option<Str<128>>,
    /// Load balancing (http/tcp): name of the pool to join; every member serves the same public URL (for http the
    /// group is also the default subdomain). Call create_tunnel once per member (e.g. ports 3000 and 3001) with the
    /// same group and group_key.
    pub group: Option<Str<128>>,
    /// Load balancing (required with group): shared secret of the pool; the first member sets it and every later
    /// member must use the same one.
    pub group_key: Option<Str<256>>,
    /// Load balancing: how each pool member's local service is checked; a member failing max_failed checks in a row
    /// gets no traffic until a check passes again. Defaults: interval 5 s, timeout 3 s, max_failed 3, expect_2xx
    /// true.
    pub health_check: Option<Nested<StartHealthCheck>>,
    /// HTTP only: "user:password" (password 8-128 characters) every visitor must log in with (HTTP Basic); the edge
    /// checks it and does not pass it on to the local service.
    pub basic_auth: Option<Str<256>>,
    /// http/tcp/udp: accept visitors only from these addresses or networks, e.g. ["10.0.0.0/8", "203.0.113.7"].
    /// Judged on the visitor's own address.
    pub cidr_allow: Option<StrList<MAX_RULES, 64>>,
    /// http/tcp/udp: refuse visitors from these addresses or networks, even inside cidr_allow.
    pub cidr_deny: Option<StrList<MAX_RULES, 64>>,
    /// HTTP only: the Host header the local service gets: "rewrite" (its own address, e.g. localhost:3000, for dev
    /// servers that reject other hosts) or a host name. The public host stays in X-Forwarded-Host.
    pub host_header: Option<Str<255>>,
    /// http/tcp: start each connection to the local service with a PROXY protocol header (v1 text, v2 binary) naming
    /// the visitor, for services that read one (nginx proxy_protocol, HAProxy accept-proxy).
    pub proxy_protocol: Option<Choice<ProxyVersions>>,
}

/// `get_connection_info`'s description of `local_port` (the tool starts nothing).
pub const INFO_PORT_DOC: &str = "Local port of the service to expose (1-65535).";

/// A validated tunnel description (create_tunnel / get_connection_info).
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub token: Option<String>,
    pub local_port: u16,
    pub local_host: String,
    pub region: Option<String>,
    pub kind: TunnelKind,
    /// Who may reach the tunnel and what the local service receives (the options the CLI
    /// flags and the config file name the same way).
    pub access: AccessOptions,
}

/// What kind of tunnel was asked for.
#[derive(Debug, Clone)]
pub enum TunnelKind {
    /// http/tcp/udp to one local service.
    Plain { protocol: Protocol, subdomain: Option<String> },
    /// Peer-to-peer (`protocol: "p2p"`, or `secret`/`peer_name`/`peer_target` given).
    P2p { secret: Option<String>, peer_name: Option<String>, peer_target: Option<String> },
    /// A member of a load-balanced pool (`group`/`group_key`/`health_check` given).
    Pooled {
        protocol: Protocol,
        subdomain: Option<String>,
        group: Option<String>,
        group_key: Option<String>,
        health_check: Option<Box<HealthArgs>>,
    },
}

/// A validated `health_check` object: the fields as given (for commands and config files) and
/// the check they make.
#[derive(Debug, Clone)]
pub struct HealthArgs {
    pub raw: StartHealthCheck,
    pub check: HealthCheck,
}

fn health_args(raw: StartHealthCheck) -> Result<HealthArgs, ToolError> {
    if raw.path.as_ref().is_some_and(|p| p.len() > 1024) {
        return Err(ToolError::invalid("'health_check.path' is longer than 1024 characters"));
    }
    if raw.alert_webhook.as_ref().is_some_and(|w| w.len() > 2048) {
        return Err(ToolError::invalid("'health_check.alert_webhook' is longer than 2048 characters"));
    }
    let check = raw.to_check().map_err(|e| ToolError::invalid(format!("'health_check': {e}")))?;
    Ok(HealthArgs { raw, check })
}

fn parse_protocol(p: &str) -> Option<Protocol> {
    match p {
        "http" => Some(Protocol::Http),
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
    }
}

/// A tunnel request the shared rules refuse, in the tools' argument names.
fn spec_error(e: SpecError) -> ToolError {
    match e {
        SpecError::NotFor(o) => ToolError::invalid(format!("'{}' applies to {} tunnels only", o.key(), o.protocols())),
        e => ToolError::invalid(e.to_string()),
    }
}

impl TunnelArgs {
    /// Checks the rules that join several arguments and gives the tunnel they describe.
    pub fn validate(self) -> Result<Tunnel, ToolError> {
        let token = self.token.map(|t| t.0);
        let protocol = self.protocol.0;
        let local_port = self.local_port.port();
        let local_host = self.local_host.map_or_else(|| "localhost".to_string(), |h| h.0);
        let region = self.region.map(|r| r.0);
        let subdomain = self.subdomain.map(|s| s.0.to_ascii_lowercase());
        let secret = self.secret.map(|s| s.0);
        let peer_name = self.peer_name.map(|s| s.0);
        let peer_target = self.peer_target.map(|s| s.0);
        let group = self.group.map(|s| s.0);
        let group_key = self.group_key.map(|s| s.0);
        let health_check = self.health_check.map(|h| health_args(h.0)).transpose()?.map(Box::new);
        let basic_auth = self
            .basic_auth
            .map(|s| BasicAuth::parse(&s.0).map_err(|e| ToolError::invalid(format!("'basic_auth': {e}"))))
            .transpose()?;
        let cidr_allow = self.cidr_allow.unwrap_or_default().0;
        let cidr_deny = self.cidr_deny.unwrap_or_default().0;
        let host_header = self.host_header.map(|s| s.0);
        let proxy_protocol = match self.proxy_protocol.map(|p| p.0) {
            Some("v1") => Some(ProxyProtocol::V1),
            Some(_) => Some(ProxyProtocol::V2),
            None => None,
        };
        if proxy_protocol.is_some() && !matches!(protocol, "http" | "tcp") {
            return Err(ToolError::invalid("'proxy_protocol' applies to http and tcp tunnels only"));
        }
        // The rules the server checks, told in the tool's argument names; a P2P service is a raw
        // TCP/UDP one, so the HTTP-only options are refused for it the same way.
        let probe = |protocol: Protocol| {
            TunnelSpec {
                subdomain: subdomain.clone(),
                basic_auth: basic_auth.clone(),
                cidr_allow: cidr_allow.clone(),
                cidr_deny: cidr_deny.clone(),
                host_header: host_header.clone(),
                ..TunnelSpec::new(protocol.as_str(), protocol, "")
            }
            .check()
            .map_err(spec_error)
        };
        if protocol == "p2p" {
            if !(cidr_allow.is_empty() && cidr_deny.is_empty()) {
                return Err(ToolError::invalid("'cidr_allow' and 'cidr_deny' do not apply to p2p tunnels"));
            }
            probe(Protocol::Tcp)?;
        }

        let p2p = protocol == "p2p" || secret.is_some() || peer_name.is_some() || peer_target.is_some();
        let pooled = group.is_some() || group_key.is_some() || health_check.is_some();
        let kind = if p2p {
            if protocol != "p2p" {
                return Err(ToolError::invalid("secret, peer_name and peer_target apply to protocol \"p2p\" only"));
            }
            if pooled {
                return Err(ToolError::invalid("group, group_key and health_check do not apply to p2p tunnels"));
            }
            match (&peer_name, &peer_target) {
                (Some(_), Some(_)) => {
                    return Err(ToolError::invalid("pass peer_name (publish) or peer_target (connect), not both"))
                }
                (None, None) => return Err(ToolError::invalid(
                    "p2p needs peer_name (publish local_port under this name) or peer_target (connect to that name)",
                )),
                _ => {}
            }
            if secret.as_deref().is_none_or(str::is_empty) {
                return Err(ToolError::invalid("p2p needs 'secret': the shared secret of the P2P service"));
            }
            for n in [&peer_name, &peer_target].into_iter().flatten() {
                if n.is_empty()
                    || n.len() > 64
                    || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                {
                    return Err(ToolError::invalid(format!(
                        "P2P name '{n}': 1-64 characters of letters, digits, '-', '_' and '.'"
                    )));
                }
            }
            TunnelKind::P2p { secret, peer_name, peer_target }
        } else {
            let Some(proto) = parse_protocol(protocol) else {
                return Err(ToolError::invalid(format!("unknown protocol '{protocol}'")));
            };
            probe(proto)?;
            if let Some(s) = &subdomain {
                rustunnel_proto::names::validate_subdomain(s)
                    .map_err(|e| ToolError::invalid(format!("'subdomain': {e}")))?;
            }
            if pooled {
                if proto == Protocol::Udp {
                    return Err(ToolError::invalid("load balancing (group) applies to http and tcp tunnels only"));
                }
                if group.is_some() != group_key.is_some() {
                    return Err(ToolError::invalid("'group' and 'group_key' go together: pass both to join a pool"));
                }
                if group.is_none() {
                    return Err(ToolError::invalid(
                        "'health_check' is for load-balanced pools: pass 'group' and 'group_key' too",
                    ));
                }
                if let Some(g) = &group {
                    if g.is_empty() || !g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        return Err(ToolError::invalid(
                            "'group': use a-z, 0-9 and '-' (for http it is also the subdomain)",
                        ));
                    }
                }
                if group_key.as_deref() == Some("") {
                    return Err(ToolError::invalid("'group_key' must not be empty"));
                }
                TunnelKind::Pooled { protocol: proto, subdomain, group, group_key, health_check }
            } else {
                TunnelKind::Plain { protocol: proto, subdomain }
            }
        };
        Ok(Tunnel {
            token,
            local_port,
            local_host,
            region,
            kind,
            access: AccessOptions { basic_auth, cidr_allow, cidr_deny, host_header, proxy_protocol },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustunnel_client::health::HealthKind;
    use serde_json::{json, Value};

    /// `create_tunnel` arguments parsed and checked as the tool does.
    pub(crate) fn tunnel(v: Value) -> Result<Tunnel, ToolError> {
        crate::tools::parse::parse::<TunnelArgs>(v.as_object().cloned().unwrap())?.validate()
    }

    #[test]
    fn plain_tunnels_parse() {
        let a = tunnel(json!({"local_port": 3000, "protocol": "http", "subdomain": "MyApp"})).unwrap();
        assert!(
            matches!(a.kind, TunnelKind::Plain { protocol: Protocol::Http, subdomain: Some(ref s) } if s == "myapp")
        );
        assert_eq!(a.local_host, "localhost");
    }

    #[test]
    fn p2p_and_pools_parse() {
        let a = tunnel(json!({"local_port": 3000, "protocol": "p2p", "secret": "s", "peer_name": "svc"})).unwrap();
        assert!(matches!(a.kind, TunnelKind::P2p { peer_name: Some(ref n), .. } if n == "svc"));
        let a = tunnel(json!({"local_port": 3000, "protocol": "http", "group": "pool", "group_key": "k",
            "health_check": {"type": "http", "path": "/health", "interval_secs": 1, "max_failed": 2, "expect_2xx": false,
            "alert_webhook": "http://127.0.0.1:9/a"}}))
        .unwrap();
        let TunnelKind::Pooled { health_check: Some(h), .. } = &a.kind else { panic!("pooled") };
        assert_eq!(h.check.kind, HealthKind::Http { path: "/health".into(), expect_2xx: false });
        assert_eq!(h.check.max_failed, 2);
        assert_eq!(h.check.alert_webhook.as_deref(), Some("http://127.0.0.1:9/a"));
        assert!(tunnel(json!({"local_port": 1, "protocol": "http", "secret": "s"})).is_err());
        assert!(tunnel(json!({"local_port": 1, "protocol": "udp", "group": "g", "group_key": "k"})).is_err());
        for (v, want) in [
            (json!({"local_port": 1, "protocol": "http", "group": "g"}), "go together"),
            (json!({"local_port": 1, "protocol": "p2p", "peer_name": "a"}), "secret"),
            (json!({"local_port": 1, "protocol": "p2p", "secret": "s"}), "peer_name"),
            (
                json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "peer_target": "b"}),
                "not both",
            ),
            (json!({"local_port": 1, "protocol": "http", "health_check": {"type": "ftp"}}), "health_check"),
            (json!({"local_port": 1, "protocol": "http", "health_check": {"type": "tcp", "bogus": 1}}), "health_check"),
            (json!({"local_port": 1, "protocol": "http", "health_check": {"type": "tcp"}}), "for load-balanced pools"),
            (
                json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "subdomain": "abc"}),
                "'subdomain' applies to http",
            ),
        ] {
            let e = tunnel(v.clone()).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn bad_tunnel_args() {
        for (v, want) in [
            (json!({"local_port": 3000, "protocol": "ftp"}), "unknown protocol"),
            (json!({"local_port": 0, "protocol": "http"}), "between 1 and 65535"),
            (json!({"local_port": 70000, "protocol": "http"}), "between 1 and 65535"),
            (json!({"local_port": "abc", "protocol": "http"}), "must be an integer"),
            (json!({"protocol": "http"}), "required"),
            (json!({"local_port": 3000}), "'protocol' is required"),
            (json!({"local_port": 3000, "protocol": "tcp", "subdomain": "abc"}), "http tunnels only"),
            (json!({"local_port": 3000, "protocol": "http", "subdomain": "a"}), "subdomain"),
            (json!({"local_port": 3000, "protocol": "http", "local_host": "http://x/"}), "local_host"),
        ] {
            let e = tunnel(v.clone()).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
