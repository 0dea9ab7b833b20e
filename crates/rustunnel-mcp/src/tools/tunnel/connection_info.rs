//! `get_connection_info`: the `rustunnel` command (and, for a pool member, the `rustunnel
//! start` config file) that opens the tunnel described by the same arguments as
//! `create_tunnel`, with every secret taken from the environment.
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::model::ToolAnnotations;
use rustunnel_client::health::HealthKind;
use rustunnel_client::proxy_header::ProxyProtocol;
use schemars::JsonSchema;
use serde::Serialize;

use super::options::{HealthArgs, Tunnel, TunnelArgs, TunnelKind, INFO_PORT_DOC};
use crate::server::McpServer;
use crate::tools::error::ToolError;
use crate::tools::route::{route_with_schema, CallCtx, ToolSpec};
use crate::tools::schema;
use crate::tools::shell::shell_quote;

pub fn tool() -> ToolRoute<McpServer> {
    let mut input = schema::input_schema::<TunnelArgs>();
    schema::describe_field(&mut input, "local_port", INFO_PORT_DOC);
    route_with_schema(spec(), input, get_connection_info)
}

fn spec() -> ToolSpec {
    ToolSpec {
        name: "get_connection_info",
        title: "Get the command to open a tunnel",
        description: "Return the exact `rustunnel` command that opens this tunnel, without starting anything. Use it \
when this MCP server cannot open the tunnel for you (the service runs on another machine or in a sandbox) or when \
a person should run it. The token is referenced as $RUSTUNNEL_TOKEN, never printed. Accepts the same arguments \
as create_tunnel.",
        annotations: ToolAnnotations::new().read_only(true).idempotent(true).open_world(false),
    }
}

/// A file to write before running the command (load-balanced tunnels).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConfigFileView {
    pub path: String,
    pub contents: String,
}

/// `get_connection_info` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ConnectionInfo {
    /// The exact command to run (POSIX shell). It reads the token from $RUSTUNNEL_TOKEN.
    pub command: String,
    pub protocol: String,
    pub local_addr: String,
    pub server: String,
    /// Environment variable holding the token the command uses.
    pub token_env: String,
    /// For load-balanced tunnels: the `rustunnel start` config file equivalent to the command
    /// (an alternative to it; merge the [tunnels.*] sections of several members into one file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<ConfigFileView>,
    /// For load-balanced tunnels: a shell command that writes config_file with the group key
    /// taken from $RUSTUNNEL_GROUP_KEY, then the command that runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_command: Option<String>,
    /// Environment variable holding the secret the command uses (P2P secret, visitors'
    /// password or group key), if any; when it uses two, the notes name the other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Things to know before running it.
    pub notes: Vec<String>,
}

async fn get_connection_info(server: McpServer, args: TunnelArgs, _ctx: CallCtx) -> Result<ConnectionInfo, ToolError> {
    let a = args.validate()?;
    let cfg = server.config();
    let local_addr = if a.local_host.contains(':') {
        format!("[{}]:{}", a.local_host, a.local_port)
    } else {
        format!("{}:{}", a.local_host, a.local_port)
    };
    let mut notes = vec![
        "Set RUSTUNNEL_TOKEN to your rustunnel token first (export RUSTUNNEL_TOKEN=...); a loopback dev server needs none.".to_string(),
    ];
    let mut config_file = None;
    let mut config_command = None;
    let mut secret_env = None;
    let (protocol, mut cmd) = match &a.kind {
        TunnelKind::Plain { protocol, subdomain } | TunnelKind::Pooled { protocol, subdomain, .. } => {
            let mut cmd = vec!["rustunnel".to_string(), protocol.as_str().to_string(), a.local_port.to_string()];
            if a.local_host != "localhost" {
                cmd.extend(["--local-host".into(), shell_quote(&a.local_host)]);
            }
            if let Some(s) = subdomain {
                cmd.extend(["--subdomain".into(), shell_quote(s)]);
            }
            cmd.extend(access_flags(&a));
            if let Some(login) = &a.access.basic_auth {
                secret_env = Some(PASSWORD_ENV.to_string());
                notes.push(format!(
                    "Set {PASSWORD_ENV} to the visitors' password (user {}); the command reads it from there. While the command runs, the password shows in the process list; a config file (rustunnel start) keeps it out.",
                    shell_quote(login.user())
                ));
            }
            if let TunnelKind::Pooled { group, health_check, .. } = &a.kind {
                if let Some(g) = group {
                    cmd.extend([
                        "--group".into(),
                        shell_quote(g),
                        "--group-key".into(),
                        "\"$RUSTUNNEL_GROUP_KEY\"".into(),
                    ]);
                    secret_env.get_or_insert_with(|| "RUSTUNNEL_GROUP_KEY".to_string());
                    notes.push(
                        "Set RUSTUNNEL_GROUP_KEY to the pool's shared key; every member must use the same one.".into(),
                    );
                }
                if let Some(h) = health_check {
                    cmd.extend(health_flags(h));
                }
                let file = pool_config(&a, cfg);
                // The heredoc is unquoted so the shell fills in $RUSTUNNEL_GROUP_KEY; any other
                // shell-active character would be expanded too, so then no command is offered.
                let rest = file.contents.replace("$RUSTUNNEL_GROUP_KEY", "").replace(&format!("${PASSWORD_ENV}"), "");
                if !rest.contains(['$', '`', '\\']) {
                    config_command = Some(format!(
                        "cat > {path} <<EOF\n{contents}EOF\nrustunnel start --config {path}",
                        path = file.path,
                        contents = file.contents
                    ));
                }
                let vars = if a.access.basic_auth.is_some() {
                    format!("$RUSTUNNEL_GROUP_KEY and ${PASSWORD_ENV}")
                } else {
                    "$RUSTUNNEL_GROUP_KEY".to_string()
                };
                notes.push(format!(
                    "Alternatively write config_file (config_command does it, filling in {vars}; by hand, replace them with the values) and run `rustunnel start --config {}`; put several members' [tunnels.*] sections in one file to run them in one client.",
                    file.path
                ));
                config_file = Some(file);
            }
            (protocol.as_str().to_string(), cmd)
        }
        TunnelKind::P2p { peer_name, peer_target, .. } => {
            let mut cmd = vec!["rustunnel".to_string(), "p2p".to_string(), a.local_port.to_string()];
            match (peer_name, peer_target) {
                (Some(n), _) => {
                    cmd.extend(["--name".into(), shell_quote(n)]);
                    if a.local_host != "localhost" {
                        cmd.extend(["--local-host".into(), shell_quote(&a.local_host)]);
                    }
                }
                (None, Some(t)) => {
                    cmd.extend(["--target".into(), shell_quote(t)]);
                    notes.push(format!(
                        "The command listens on 127.0.0.1:{} and prints the mode (direct or relayed) when the link is up; connect there.",
                        a.local_port
                    ));
                }
                (None, None) => {}
            }
            cmd.extend(["--secret".into(), "\"$RUSTUNNEL_P2P_SECRET\"".into()]);
            secret_env = Some("RUSTUNNEL_P2P_SECRET".to_string());
            notes.push("Set RUSTUNNEL_P2P_SECRET to the shared secret (the same on both sides); it is never sent over the network.".into());
            ("p2p".to_string(), cmd)
        }
    };
    match &a.region {
        Some(r) => cmd.extend(["--region".into(), shell_quote(r), "--api".into(), shell_quote(&cfg.api)]),
        None => cmd.extend(["--server".into(), shell_quote(&cfg.server)]),
    }
    cmd.extend(["--token".into(), "\"$RUSTUNNEL_TOKEN\"".into()]);
    if cfg.insecure {
        cmd.push("--insecure".into());
    } else if let Some(ca) = &cfg.ca {
        cmd.extend(["--ca".into(), shell_quote(&ca.to_string_lossy())]);
    }
    notes.push("The command prints its status when ready and keeps running; stop it with Ctrl+C. Add --json for machine-readable events.".to_string());
    if cfg.insecure {
        notes.push(
            "--insecure skips certificate checks: only for development servers with a self-signed certificate.".into(),
        );
    }
    Ok(ConnectionInfo {
        command: cmd.join(" "),
        protocol,
        local_addr,
        server: cfg.server.clone(),
        token_env: "RUSTUNNEL_TOKEN".into(),
        config_file,
        config_command,
        secret_env,
        notes,
    })
}

/// Environment variable the offered command and config file read the visitors' password from.
const PASSWORD_ENV: &str = "RUSTUNNEL_BASIC_AUTH_PASSWORD";

/// `rustunnel http|tcp|udp` flags for who may reach the tunnel and the Host header, one-to-one
/// with the tool's fields: a command that dropped them would publish the service to everyone.
/// The password is not written: the shell takes it from [`PASSWORD_ENV`].
fn proxy_version(p: ProxyProtocol) -> &'static str {
    match p {
        ProxyProtocol::V1 => "v1",
        ProxyProtocol::V2 => "v2",
    }
}

fn access_flags(a: &Tunnel) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(login) = &a.access.basic_auth {
        v.extend(["--basic-auth".into(), format!("{}\":${PASSWORD_ENV}\"", shell_quote(login.user()))]);
    }
    for (flag, list) in [("--cidr-allow", &a.access.cidr_allow), ("--cidr-deny", &a.access.cidr_deny)] {
        if !list.is_empty() {
            v.extend([flag.into(), shell_quote(&list.join(","))]);
        }
    }
    if let Some(h) = &a.access.host_header {
        v.extend(["--host-header".into(), shell_quote(h)]);
    }
    if let Some(p) = a.access.proxy_protocol {
        v.extend(["--proxy-protocol".into(), proxy_version(p).into()]);
    }
    v
}

/// `rustunnel http|tcp` flags for a health check, one-to-one with the tool's fields.
fn health_flags(h: &HealthArgs) -> Vec<String> {
    let spec = match &h.check.kind {
        HealthKind::Tcp => "tcp".to_string(),
        HealthKind::Http { path, .. } => format!("http:{path}"),
    };
    let mut v = vec!["--health-check".into(), shell_quote(&spec)];
    if let Some(i) = h.raw.interval_secs {
        v.extend(["--health-interval".into(), i.to_string()]);
    }
    if let Some(t) = h.raw.timeout_secs {
        v.extend(["--health-timeout".into(), t.to_string()]);
    }
    if let Some(m) = h.raw.max_failed {
        v.extend(["--health-max-failed".into(), m.to_string()]);
    }
    if matches!(h.check.kind, HealthKind::Http { expect_2xx: false, .. }) {
        v.push("--health-any-status".into());
    }
    if let Some(w) = &h.raw.alert_webhook {
        v.extend(["--alert-webhook".into(), shell_quote(w)]);
    }
    v
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `rustunnel start` file (examples/pool.toml format) for one pool member. The group key is
/// the placeholder `$RUSTUNNEL_GROUP_KEY`, filled in by the unquoted heredoc of config_command.
fn pool_config(a: &Tunnel, cfg: &crate::config::McpConfig) -> ConfigFileView {
    let TunnelKind::Pooled { protocol, subdomain, group, health_check, .. } = &a.kind else {
        return ConfigFileView { path: String::new(), contents: String::new() };
    };
    let base = group.clone().unwrap_or_else(|| format!("mcp-{}", protocol.as_str()));
    let name = format!("{base}-{}", a.local_port);
    let mut t = String::new();
    t.push_str(
        "# rustunnel start --config <this file>; the token comes from the RUSTUNNEL_TOKEN environment variable\n",
    );
    t.push_str(&format!("server = {}\n", toml_str(&cfg.server)));
    if cfg.insecure {
        t.push_str("insecure = true\n");
    } else if let Some(ca) = &cfg.ca {
        t.push_str(&format!("ca = {}\n", toml_str(&ca.to_string_lossy())));
    }
    if let Some(r) = &a.region {
        t.push_str(&format!("region = {}\n", toml_str(r)));
    }
    t.push_str(&format!("\n[tunnels.{name}]\n"));
    t.push_str(&format!("protocol = {}\n", toml_str(protocol.as_str())));
    t.push_str(&format!("local_port = {}\n", a.local_port));
    if a.local_host != "localhost" {
        t.push_str(&format!("local_host = {}\n", toml_str(&a.local_host)));
    }
    if let Some(s) = subdomain {
        t.push_str(&format!("subdomain = {}\n", toml_str(s)));
    }
    if let Some(g) = group {
        t.push_str(&format!("group = {}\n", toml_str(g)));
        t.push_str("group_key = \"$RUSTUNNEL_GROUP_KEY\"\n");
    }
    for (key, list) in [("cidr_allow", &a.access.cidr_allow), ("cidr_deny", &a.access.cidr_deny)] {
        if !list.is_empty() {
            let items: Vec<String> = list.iter().map(|s| toml_str(s)).collect();
            t.push_str(&format!("{key} = [{}]\n", items.join(", ")));
        }
    }
    if let Some(login) = &a.access.basic_auth {
        // The pool's login, which every member must use. The password comes from the
        // environment through config_command's heredoc; a TOML literal string takes it as it is
        // (quotes and backslashes included).
        t.push_str(&format!("basic_auth = '''{}:${PASSWORD_ENV}'''\n", login.user()));
    }
    if let Some(h) = &a.access.host_header {
        t.push_str(&format!("host_header = {}\n", toml_str(h)));
    }
    if let Some(p) = a.access.proxy_protocol {
        t.push_str(&format!("proxy_protocol = \"{}\"\n", proxy_version(p)));
    }
    if let Some(h) = health_check {
        t.push_str(&format!("\n[tunnels.{name}.health_check]\n"));
        let kind = match &h.check.kind {
            HealthKind::Tcp => "tcp",
            HealthKind::Http { .. } => "http",
        };
        t.push_str(&format!("type = {}\n", toml_str(kind)));
        if let HealthKind::Http { path, expect_2xx } = &h.check.kind {
            t.push_str(&format!("path = {}\n", toml_str(path)));
            t.push_str(&format!("expect_2xx = {expect_2xx}\n"));
        }
        t.push_str(&format!("interval_secs = {}\n", h.check.interval.as_secs_f64()));
        t.push_str(&format!("timeout_secs = {}\n", h.check.timeout.as_secs_f64()));
        t.push_str(&format!("max_failed = {}\n", h.check.max_failed));
        if let Some(w) = &h.check.alert_webhook {
            t.push_str(&format!("alert_webhook = {}\n", toml_str(w)));
        }
    }
    ConfigFileView { path: format!("rustunnel-{base}.toml"), contents: t }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::tunnel::options::tests::tunnel;
    use serde_json::json;

    #[test]
    fn basic_auth_is_for_http_and_hidden() {
        let a = tunnel(json!({"local_port": 3000, "protocol": "http", "group": "pool",
            "group_key": "k", "basic_auth": "ana:correct horse"}))
        .unwrap();
        assert_eq!(a.access.basic_auth.as_ref().map(|b| b.as_str()), Some("ana:correct horse"));
        assert!(!format!("{a:?}").contains("correct horse"));
        // The pool's config file names the user; the password comes from the environment.
        let cfg = crate::config::McpConfig::new("127.0.0.1:4040", "http://127.0.0.1:4041", true, None);
        let f = pool_config(&a, &cfg);
        assert!(
            f.contents.contains("basic_auth = '''ana:$RUSTUNNEL_BASIC_AUTH_PASSWORD'''")
                && !f.contents.contains("horse"),
            "{}",
            f.contents
        );
        let a = tunnel(json!({"local_port": 3000, "protocol": "tcp", "group": "pool",
            "group_key": "k", "cidr_allow": ["10.0.0.0/8"], "cidr_deny": ["10.9.0.0/16"]}))
        .unwrap();
        let f = pool_config(&a, &cfg);
        let t = &rustunnel_client::StartFile::parse(&f.contents).unwrap().tunnel_configs()[0];
        assert_eq!(
            (t.cidr_allow.as_slice(), t.cidr_deny.as_slice()),
            (&["10.0.0.0/8".to_string()][..], &["10.9.0.0/16".to_string()][..])
        );
        let a = tunnel(json!({"local_port": 3000, "protocol": "http", "host_header": "rewrite"})).unwrap();
        assert_eq!(a.access.host_header.as_deref(), Some("rewrite"));
        for v in [
            json!({"local_port": 1, "protocol": "tcp", "host_header": "rewrite"}),
            json!({"local_port": 1, "protocol": "http", "host_header": "two words"}),
            json!({"local_port": 1, "protocol": "http", "cidr_allow": ["10.0.0.0/33"]}),
            json!({"local_port": 1, "protocol": "http", "cidr_deny": "10.0.0.0/8"}),
            json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "cidr_allow": ["10.0.0.0/8"]}),
            json!({"local_port": 1, "protocol": "tcp", "basic_auth": "ana:correct horse"}),
            json!({"local_port": 1, "protocol": "p2p", "secret": "s", "peer_name": "a", "basic_auth": "ana:correct horse"}),
            json!({"local_port": 1, "protocol": "http", "basic_auth": "ana"}),
            json!({"local_port": 1, "protocol": "udp", "proxy_protocol": "v1"}),
            json!({"local_port": 1, "protocol": "tcp", "proxy_protocol": "v3"}),
        ] {
            assert!(tunnel(v.clone()).is_err(), "{v}");
        }
        let a = tunnel(json!({"local_port": 5432, "protocol": "tcp", "proxy_protocol": "V2"})).unwrap();
        assert_eq!(a.access.proxy_protocol, Some(ProxyProtocol::V2));
        assert_eq!(access_flags(&a), ["--proxy-protocol", "v2"]);
    }

    #[test]
    fn pool_config_parses_and_hides_the_key() {
        let a = tunnel(json!({"local_port": 3000, "protocol": "http", "group": "pool",
            "group_key": "secret-key", "health_check": {"type": "http", "path": "/health"}}))
        .unwrap();
        let cfg = crate::config::McpConfig::new("127.0.0.1:4040", "http://127.0.0.1:4041", true, None);
        let f = pool_config(&a, &cfg);
        assert!(!f.contents.contains("secret-key"));
        let parsed = rustunnel_client::StartFile::parse(&f.contents).unwrap();
        let t = parsed.tunnel_configs();
        assert_eq!(t[0].group.as_ref().map(|g| g.name.as_str()), Some("pool"));
        assert_eq!(
            t[0].health_check.as_ref().map(|h| h.kind.clone()),
            Some(HealthKind::Http { path: "/health".into(), expect_2xx: true })
        );
    }
}
