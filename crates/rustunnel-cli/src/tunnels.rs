//! `rustunnel http|tcp|udp <port>` and `rustunnel start --config FILE`.
use std::path::PathBuf;

use clap::Args;
use rustunnel_client::options::{AccessOptions, GroupConfig, LocalTarget, PoolOptions, PublicName, TunnelOptions};
use rustunnel_client::{ClientHandle, ClientOptions, Event, StartFile, TlsOptions, TunnelConfig};
use rustunnel_proto::control::HOST_HEADER_RULE;
use rustunnel_proto::{Protocol, SpecError, SpecOption};

use crate::output::Printer;

/// Connection flags shared by every tunnel command.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Control-plane address of the rustunnel server.
    #[arg(long, env = "RUSTUNNEL_SERVER", default_value = rustunnel_client::config::DEFAULT_SERVER)]
    pub server: String,
    /// Authentication token.
    #[arg(long, env = "RUSTUNNEL_TOKEN", hide_env_values = true, default_value = "")]
    pub token: String,
    /// Skip TLS certificate verification (self-signed dev servers).
    #[arg(long)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM), e.g. the dev server's tls-cert.pem.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Region id to connect to (see `rustunnel regions`), or `auto` for the lowest latency.
    #[arg(long)]
    pub region: Option<String>,
    /// Management API URL (used to resolve --region).
    #[arg(long, env = "RUSTUNNEL_API", default_value = "http://localhost:4041")]
    pub api: String,
    /// One JSON object per line instead of the console.
    #[arg(long)]
    pub json: bool,
    /// Exit when the connection is lost instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
}

#[derive(Args, Debug, Clone)]
pub struct OneTunnel {
    /// Unencrypted data connections, spliced without copies (faster). Only on a network you
    /// trust: needs a server started with --allow-plain-data; the token stays on TLS.
    #[arg(long)]
    pub plain_data: bool,
    /// Local port of the service to expose.
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Subdomain to ask for (HTTP); random when omitted.
    #[arg(long)]
    pub subdomain: Option<String>,
    /// Public port to ask for (TCP/UDP); any free one when omitted.
    #[arg(long)]
    pub remote_port: Option<u16>,
    /// Host of the local service (an IPv6 address with or without brackets: ::1 or [::1]).
    #[arg(long, default_value = "localhost")]
    pub local_host: String,
    /// Name of the tunnel (shown in logs and the API).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub access: AccessOptions,
    #[command(flatten)]
    pub pool: PoolArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Load balancing: several tunnels (on one or many machines) behind one subdomain or port.
#[derive(Args, Debug, Clone, Default)]
pub struct PoolArgs {
    /// Join the load-balanced pool NAME (http: also the default subdomain; tcp: one shared port).
    #[arg(long, value_name = "NAME", requires = "group_key")]
    pub group: Option<String>,
    /// Shared secret of the pool; every member must use the same one.
    #[arg(long, value_name = "KEY", env = "RUSTUNNEL_GROUP_KEY", hide_env_values = true, requires = "group")]
    pub group_key: Option<String>,
    /// Check the local service: `tcp` (connect), `http` (GET /) or `http:/path`. Unhealthy
    /// members get no traffic until the check passes again.
    #[arg(long, value_name = "CHECK", requires = "group")]
    pub health_check: Option<String>,
    /// Seconds between health checks.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, requires = "health_check")]
    pub health_interval: f64,
    /// Seconds one health check may take.
    #[arg(long, value_name = "SECS", default_value_t = 3.0, requires = "health_check")]
    pub health_timeout: f64,
    /// Consecutive failed checks before the member is taken out of the pool.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "health_check")]
    pub health_max_failed: u32,
    /// HTTP checks: count any status below 500 as healthy (default: 2xx only).
    #[arg(long, requires = "health_check")]
    pub health_any_status: bool,
    /// http:// URL the server POSTs a JSON alert to when the pool has no healthy member left
    /// (and again when it recovers). Without --health-check a tcp check is used.
    #[arg(long, value_name = "URL", requires = "group")]
    pub alert_webhook: Option<String>,
}

impl PoolArgs {
    /// The pool the flags describe, or the flag that is out of range.
    pub fn options(&self) -> Result<PoolOptions, String> {
        use rustunnel_client::health::{HealthCheck, HealthKind};
        let group = GroupConfig::from_pair(self.group.as_deref(), self.group_key.as_deref());
        let health_check = if let Some(spec) = &self.health_check {
            let mut kind = HealthCheck::parse_kind(spec)?;
            if let HealthKind::Http { expect_2xx, .. } = &mut kind {
                *expect_2xx = !self.health_any_status;
            }
            let secs = |what: &str, v: f64| {
                if v.is_finite() && v > 0.0 && v <= 3600.0 {
                    Ok(std::time::Duration::from_secs_f64(v))
                } else {
                    Err(format!("--health-{what} must be between 0 and 3600 seconds"))
                }
            };
            Some(HealthCheck {
                kind,
                interval: secs("interval", self.health_interval)?,
                timeout: secs("timeout", self.health_timeout)?,
                max_failed: self.health_max_failed,
                alert_webhook: self.alert_webhook.clone(),
            })
        } else if self.alert_webhook.is_some() {
            let mut h = HealthCheck::new(HealthKind::Tcp);
            h.alert_webhook = self.alert_webhook.clone();
            Some(h)
        } else {
            None
        };
        Ok(PoolOptions { group, health_check })
    }
}

#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    /// TOML file with `server`, `token`, `insecure` and `[tunnels.<name>]` sections.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Overrides the file's server.
    #[arg(long, env = "RUSTUNNEL_SERVER")]
    pub server: Option<String>,
    /// Overrides the file's token.
    #[arg(long, env = "RUSTUNNEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long)]
    pub insecure: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub no_reconnect: bool,
    /// Unencrypted data connections (see `rustunnel http --help`); also `plain_data = true`.
    #[arg(long)]
    pub plain_data: bool,
}

fn fail(printer: &mut Printer, code: &str, message: String, hint: &str) -> i32 {
    printer.event(&Event::Error { code: code.into(), message, hint: hint.into(), fatal: true });
    1
}

const OPTIONS_HINT: &str = "see `rustunnel http --help` (or tcp, udp) for the options";

/// The flag that sets `o`, and what to use instead.
fn flag_of(o: SpecOption) -> (&'static str, &'static str) {
    match o {
        SpecOption::Subdomain => ("--subdomain", "use --remote-port for tcp/udp"),
        SpecOption::RemotePort => ("--remote-port", "use --subdomain for http"),
        SpecOption::BasicAuth => ("--basic-auth", "a tcp or udp service checks its own credentials"),
        SpecOption::HostHeader => ("--host-header", "a tcp or udp service gets no Host header to rewrite"),
    }
}

pub async fn run_one(protocol: Protocol, a: OneTunnel) -> i32 {
    let mut printer = Printer::new(a.connect.json);
    // A bad pool flag is reported after the access options, as the server would judge them.
    let pool = a.pool.options();
    let t = TunnelConfig::from(TunnelOptions {
        // `[::1]` is read as `::1` by the client library, like every other way in.
        target: LocalTarget { host: a.local_host.clone(), port: a.port },
        public: PublicName { subdomain: a.subdomain.clone(), remote_port: a.remote_port },
        access: a.access.clone(),
        pool: pool.clone().unwrap_or_default(),
        ..TunnelOptions::new(a.name.clone().unwrap_or_else(|| protocol.to_string()), protocol, a.port)
    });
    if t.proxy_protocol.is_some() && protocol == Protocol::Udp {
        return fail(
            &mut printer,
            "bad_arguments",
            "--proxy-protocol applies to http and tcp tunnels only".into(),
            OPTIONS_HINT,
        );
    }
    // The rules the server checks, told in the flags' names.
    if let Err(e) = t.spec().check() {
        let (message, hint) = match e {
            SpecError::NotFor(o) => {
                let (flag, hint) = flag_of(o);
                (format!("{flag} applies to {} tunnels only", o.protocols()), hint)
            }
            SpecError::IpRules(e) => (e.to_string(), "--cidr-allow and --cidr-deny take addresses or networks"),
            SpecError::HostHeader => (format!("--host-header {HOST_HEADER_RULE}"), OPTIONS_HINT),
            e => (e.to_string(), OPTIONS_HINT),
        };
        return fail(&mut printer, "bad_arguments", message, hint);
    }
    if let Err(e) = pool.and_then(|_| t.validate()) {
        return fail(&mut printer, "bad_arguments", e, OPTIONS_HINT);
    }
    let server = match crate::manage::resolve_server(&a.connect).await {
        Ok(s) => s,
        Err(e) => return fail(&mut printer, "region_error", e.to_string(), "list regions with `rustunnel regions`"),
    };
    let mut opts = ClientOptions::new(server, a.connect.token.trim());
    opts.tls = TlsOptions { insecure: a.connect.insecure, ca: a.connect.ca.clone() };
    opts.reconnect = !a.connect.no_reconnect;
    opts.plain_data = a.plain_data;
    opts.tunnels = vec![t];
    drive(opts, printer).await
}

pub async fn run_start(a: StartArgs) -> i32 {
    let mut printer = Printer::new(a.json);
    let file = match StartFile::load(&a.config) {
        Ok(f) => f,
        Err(e) => return fail(&mut printer, "config_error", e.to_string(), "see examples/client.toml for the format"),
    };
    let server =
        a.server.clone().or(file.server.clone()).unwrap_or_else(|| rustunnel_client::config::DEFAULT_SERVER.into());
    let token = a.token.clone().or(file.token.clone()).unwrap_or_default();
    let mut opts = ClientOptions::new(server, token.trim());
    opts.tls = TlsOptions { insecure: a.insecure || file.insecure, ca: file.ca.clone() };
    opts.reconnect = !a.no_reconnect;
    opts.plain_data = a.plain_data || file.plain_data;
    opts.tunnels = file.tunnel_configs();
    drive(opts, printer).await
}

/// Runs the client until Ctrl+C/SIGTERM, a fatal error, or every tunnel closed by the server.
async fn drive(opts: ClientOptions, mut printer: Printer) -> i32 {
    let server = opts.server.clone();
    let mut c = ClientHandle::spawn(opts);
    let cancel = c.cancel_token();
    let fatal = print_events(&mut c.events, &cancel, &mut printer).await;
    match c.join().await {
        Ok(()) if !fatal => 0,
        Ok(()) => 1,
        // Never exit non-zero without saying why (the run reports its error, but an event can
        // be lost to a full channel).
        Err(e) if !fatal => fail(&mut printer, e.code(), e.to_string(), &e.hint(&server)),
        Err(_) => 1,
    }
}

/// Prints a running client's events until it ends; the first Ctrl+C/SIGTERM cancels it (it
/// may keep reporting while it drains). Returns whether a fatal error was reported.
pub(crate) async fn print_events(
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    cancel: &tokio_util::sync::CancellationToken,
    printer: &mut Printer,
) -> bool {
    let mut fatal = false;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut signalled = false;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => {
                    fatal |= matches!(e, Event::Error { fatal: true, .. });
                    printer.queue(&e);
                    // Whatever else is already queued goes out in the same write.
                    for _ in 0..1024 {
                        let Ok(e) = events.try_recv() else { break };
                        fatal |= matches!(e, Event::Error { fatal: true, .. });
                        printer.queue(&e);
                    }
                    printer.flush();
                }
                None => return fatal,
            },
            _ = &mut signal => {
                if signalled {
                    // A second signal while the tunnels drain: quit now.
                    printer.flush();
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        b"  stopped without waiting for in-flight requests\n",
                    );
                    std::process::exit(130);
                }
                signalled = true;
                cancel.cancel();
                // Finished: a fresh one waits for the next signal.
                signal.set(shutdown_signal());
            }
        }
    }
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
