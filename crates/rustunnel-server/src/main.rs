//! `rustunnel-server`: parses flags and config, sets up logging and signals, runs the library.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rustunnel_server::logging::{LogControl, LogFormat};
use rustunnel_server::{Config, FileConfig, ServerHandle};

mod demo;

#[derive(Parser)]
#[command(
    name = "rustunnel-server",
    version,
    about = "The rustunnel edge server: HTTP(S), TCP and UDP tunnels over a TLS WebSocket control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Default)]
struct RunArgs {
    /// TOML configuration file; flags and environment override it.
    #[arg(long, env = "RUSTUNNEL_CONFIG")]
    config: Option<PathBuf>,
    /// Loopback development server with embedded defaults (domain localhost, control 127.0.0.1:4040,
    /// API :4041, HTTP :8080, HTTPS :8443, ports 20000-20999, data in ./.rustunnel, a private CA).
    #[arg(long)]
    dev: bool,
    /// Base domain: HTTP tunnels are served at <subdomain>.<domain>.
    #[arg(long, env = "RUSTUNNEL_DOMAIN")]
    domain: Option<String>,
    /// Control-plane address (TLS WebSocket) [default: 0.0.0.0:4040, --dev 127.0.0.1:4040].
    #[arg(long, env = "RUSTUNNEL_CONTROL_ADDR")]
    control_addr: Option<String>,
    /// Management API address [default: :4041]; "off" disables it.
    #[arg(long, env = "RUSTUNNEL_API_ADDR")]
    api_addr: Option<String>,
    /// Public HTTP edge address [default: :80, --dev :8080]; "off" disables it.
    #[arg(long, env = "RUSTUNNEL_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Public HTTPS edge address [default: :443, --dev :8443]; "off" disables it.
    #[arg(long, env = "RUSTUNNEL_HTTPS_ADDR")]
    https_addr: Option<String>,
    /// Port range for TCP tunnels [default: 20000-20999].
    #[arg(long, env = "RUSTUNNEL_TCP_PORTS")]
    tcp_ports: Option<String>,
    /// Port range for UDP tunnels [default: 20000-20999].
    #[arg(long, env = "RUSTUNNEL_UDP_PORTS")]
    udp_ports: Option<String>,
    /// Data directory: SQLite database, generated certificate, admin token [default: ./.rustunnel].
    #[arg(long, env = "RUSTUNNEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Admin token: opens tunnels and mints client tokens.
    #[arg(long, env = "RUSTUNNEL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// TLS certificate chain (PEM); without it a private CA is generated in the data directory
    /// (tls-cert.pem, for clients' --ca) and signs a certificate for each name asked for.
    #[arg(long, env = "RUSTUNNEL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "RUSTUNNEL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Database URL (postgres://...); default is the SQLite file in the data directory.
    #[arg(long, env = "RUSTUNNEL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// UDP address of the P2P hole-punching reflector [default: the control address on UDP];
    /// "off" disables direct P2P (links are relayed).
    #[arg(long, env = "RUSTUNNEL_P2P_UDP_ADDR")]
    p2p_udp_addr: Option<String>,
    /// Grant unencrypted data connections to clients that ask (`rustunnel --plain-data`),
    /// spliced without copies: only for clients on a network you already trust. The control
    /// connection and tokens stay on TLS.
    #[arg(long, env = "RUSTUNNEL_ALLOW_PLAIN_DATA")]
    allow_plain_data: bool,
    /// Seconds a local service has to start its response before the visitor gets a 504
    /// [default: 60]; streaming bodies and WebSockets are not cut afterwards, but a visitor
    /// that accepts no byte of a response (or, over HTTP/2, opens no window for it) for this
    /// long is.
    #[arg(long, env = "RUSTUNNEL_RESPONSE_TIMEOUT_SECS")]
    response_timeout_secs: Option<u64>,
    /// Seconds SIGTERM/SIGINT leave in-flight requests to finish [default: 10].
    #[arg(long, env = "RUSTUNNEL_DRAIN_TIMEOUT_SECS")]
    drain_timeout_secs: Option<u64>,
    /// Seconds a name or port freed by a dropped client stays reserved to its owner [default: 120].
    #[arg(long, env = "RUSTUNNEL_RESERVATION_GRACE_SECS")]
    reservation_grace_secs: Option<u64>,
    /// Heartbeat interval told to clients; three silent intervals end a session [default: 10].
    #[arg(long, env = "RUSTUNNEL_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// Seconds a UDP tunnel keeps a quiet remote peer's session [default: 60].
    #[arg(long, env = "RUSTUNNEL_UDP_IDLE_SECS")]
    udp_idle_secs: Option<u64>,
    /// Concurrent requests per HTTP tunnel; past it visitors get a 503 [default: 1024].
    #[arg(long, env = "RUSTUNNEL_MAX_REQUESTS_PER_TUNNEL")]
    max_requests_per_tunnel: Option<usize>,
    /// Idle data connections each client keeps open for new visitors [default: 8, 1-64].
    #[arg(long, env = "RUSTUNNEL_POOL_SIZE")]
    pool_size: Option<u16>,
    /// Days of tunnel history kept [default: 30].
    #[arg(long, env = "RUSTUNNEL_HISTORY_RETENTION_DAYS")]
    history_retention_days: Option<u64>,
    /// Port shown in public HTTP URLs when it differs from the bound one (NAT, load balancer).
    #[arg(long, env = "RUSTUNNEL_PUBLIC_HTTP_PORT")]
    public_http_port: Option<u16>,
    /// Port shown in public HTTPS URLs when it differs from the bound one.
    #[arg(long, env = "RUSTUNNEL_PUBLIC_HTTPS_PORT")]
    public_https_port: Option<u16>,
    /// This server's region id (`rustunnel --region`) [default: local].
    #[arg(long, env = "RUSTUNNEL_REGION_ID")]
    region_id: Option<String>,
    /// This region's display name [default: the id].
    #[arg(long, env = "RUSTUNNEL_REGION_NAME")]
    region_name: Option<String>,
    /// This region's location, e.g. a city.
    #[arg(long, env = "RUSTUNNEL_REGION_LOCATION")]
    region_location: Option<String>,
    /// `http://` URL POSTed a JSON alert when a load-balanced pool has no healthy member left
    /// (and when it recovers).
    #[arg(long, env = "RUSTUNNEL_ALERT_WEBHOOK")]
    alert_webhook: Option<String>,
    /// Log level or filter directives, e.g. `debug` or `rustunnel_server=debug,info`
    /// [default: info]; RUSTUNNEL_LOG overrides it. SIGHUP applies a changed config file's.
    #[arg(long, env = "RUSTUNNEL_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log lines on stderr as human-readable text, or as one JSON object per line
    /// (timestamp, level, target, message, fields) [default: human].
    #[arg(long, env = "RUSTUNNEL_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Load balancers in front of the edges that send a PROXY protocol header (v1 or v2):
    /// addresses or networks, comma-separated (`10.0.0.0/24,192.0.2.7`). Their connections to
    /// the HTTP, HTTPS and TCP edges must start with one, and the visitor it names is used for
    /// X-Forwarded-For, address rules and logs; nobody else's is read.
    #[arg(long, env = "RUSTUNNEL_PROXY_PROTOCOL_FROM", value_delimiter = ',', value_name = "CIDR")]
    proxy_protocol_from: Option<Vec<String>>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (rustunnel-server.1 and one per subcommand) into a directory.
    Man {
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// Run a self-contained demo on loopback: dev server, sample page, tunnel, fetch.
    Demo(demo::DemoArgs),
    /// Manage client tokens directly in the database (no running server needed).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a client token and print it (shown once; only its hash is stored).
    Create {
        #[arg(long)]
        label: String,
        /// Add the token to this existing owner instead of creating a new one.
        #[arg(long)]
        owner: Option<String>,
        /// Only these subdomains: exact names and `prefix*` patterns, comma-separated
        /// (`docs,ci-*`). Random names for this token then start with the first prefix.
        #[arg(long, value_delimiter = ',')]
        subdomains: Option<Vec<String>>,
        /// Only these TCP/UDP ports: ports and ranges, comma-separated (`20000-20099,20500`).
        #[arg(long, value_delimiter = ',')]
        ports: Option<Vec<String>>,
        #[arg(long, env = "RUSTUNNEL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "RUSTUNNEL_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Read other settings (data_dir, database_url) from this config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

impl RunArgs {
    fn file_config(&self) -> anyhow::Result<FileConfig> {
        let base = match &self.config {
            Some(p) => FileConfig::from_file(p)?,
            None => FileConfig::default(),
        };
        let flags = FileConfig {
            dev: self.dev.then_some(true),
            domain: self.domain.clone(),
            control_addr: self.control_addr.clone(),
            api_addr: self.api_addr.clone(),
            http_addr: self.http_addr.clone(),
            https_addr: self.https_addr.clone(),
            tcp_ports: self.tcp_ports.clone(),
            udp_ports: self.udp_ports.clone(),
            data_dir: self.data_dir.clone(),
            admin_token: self.admin_token.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            database_url: self.database_url.clone(),
            p2p_udp_addr: self.p2p_udp_addr.clone(),
            allow_plain_data: self.allow_plain_data.then_some(true),
            response_timeout_secs: self.response_timeout_secs,
            drain_timeout_secs: self.drain_timeout_secs,
            reservation_grace_secs: self.reservation_grace_secs,
            heartbeat_secs: self.heartbeat_secs,
            udp_idle_secs: self.udp_idle_secs,
            max_requests_per_tunnel: self.max_requests_per_tunnel,
            pool_size: self.pool_size,
            history_retention_days: self.history_retention_days,
            public_http_port: self.public_http_port,
            public_https_port: self.public_https_port,
            region_id: self.region_id.clone(),
            region_name: self.region_name.clone(),
            region_location: self.region_location.clone(),
            alert_webhook: self.alert_webhook.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            proxy_protocol_from: self.proxy_protocol_from.clone(),
            ..Default::default()
        };
        Ok(base.merge(flags))
    }
}

fn main() -> std::process::ExitCode {
    let result =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(
            |runtime| {
                let result = runtime.block_on(async_main());
                // Bounded teardown: nothing left behind may keep the process alive after shutdown.
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
                result
            },
        );
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", explained(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and the causes its own message does not already tell, one per line.
fn explained(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    let mut told = text.clone();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !told.contains(&c) {
            text.push_str(&format!("\n  because: {c}"));
        }
        told = c;
    }
    text
}

async fn async_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            use std::io::Write as _;
            // Into memory first: the generator panics on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "rustunnel-server", &mut script);
            let _ = std::io::stdout().write_all(&script);
            Ok(())
        }
        Some(Command::Man { out_dir }) => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out_dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &out_dir))
                .with_context(|| format!("writing man pages to {}", out_dir.display()))?;
            println!("man pages written to {}", out_dir.display());
            Ok(())
        }
        Some(Command::Demo(args)) => {
            // Warnings only unless asked: the demo prints its own steps.
            let level = cli.run.log_level.as_deref().unwrap_or("warn");
            rustunnel_server::logging::init(cli.run.log_format.unwrap_or_default(), level)?;
            match demo::run(args).await {
                0 => Ok(()),
                code => std::process::exit(code),
            }
        }
        Some(Command::Token {
            action: TokenAction::Create { label, owner, subdomains, ports, data_dir, database_url, config },
        }) => {
            let level = cli.run.log_level.as_deref().unwrap_or("info");
            rustunnel_server::logging::init(cli.run.log_format.unwrap_or_default(), level)?;
            let rights = rustunnel_server::rights::Rights::parse(subdomains.as_deref(), ports.as_deref())?;
            let file = match &config {
                Some(p) => FileConfig::from_file(p)?,
                None => FileConfig::default(),
            };
            let data_dir = data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./.rustunnel"));
            let url = database_url.or(file.database_url);
            let store = rustunnel_server::store::Store::open(url.as_deref(), &data_dir)
                .await
                .context("opening the database")?;
            if let Some(o) = &owner {
                anyhow::ensure!(store.owner_exists(o).await?, "no owner with id {o}");
            }
            let (rec, raw) = store.create_token_with(owner.as_deref(), &label, &rights).await?;
            println!("{raw}");
            let limits = if rights.is_unrestricted() { String::new() } else { format!(", {rights}") };
            eprintln!(
                "created token {} (label {}, owner {}{limits}); it is shown only once",
                rec.id, rec.label, rec.owner_id
            );
            store.close().await;
            Ok(())
        }
        None => run(cli.run).await,
    }
}

/// A line of the start-up banner on stdout. A closed stdout (`| head`, a supervisor that does
/// not read it) must not stop a running server, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::from_file_config(args.file_config()?)?;
    let log = rustunnel_server::logging::init(config.log_format, &config.log_level)?;
    let dev = config.dev;
    let mut signals = ShutdownSignals::install();
    let mut reloads = ReloadSignal::install();
    let handle = ServerHandle::spawn(config.clone()).await?;
    let domain = &config.domain;
    say!("rustunnel-server {} ready", env!("CARGO_PKG_VERSION"));
    say!("  control plane   wss://{}:{}", domain, handle.control_addr().port());
    if let Some(a) = handle.api_addr() {
        say!("  management API  http://{}:{}", domain, a.port());
    }
    if let Some(a) = handle.http_addr() {
        say!("  HTTP edge       http://<name>.{}:{}", domain, a.port());
    }
    if let Some(a) = handle.https_addr() {
        say!("  HTTPS edge      https://<name>.{}:{}", domain, a.port());
    }
    say!("  TCP ports       {}-{}", config.tcp_ports.start(), config.tcp_ports.end());
    say!("  UDP ports       {}-{}", config.udp_ports.start(), config.udp_ports.end());
    say!("  data directory  {}", config.data_dir.display());
    if dev {
        say!(
            "  certificate     {} (private CA: clients need --ca with it, or --insecure)",
            handle.cert_path().display()
        );
        say!("  admin token     {}", handle.admin_token());
        say!("                  (saved in {})", config.data_dir.join("admin-token").display());
        if config.allow_anonymous {
            say!("  loopback dev server: clients may connect without a token");
        }
    }
    for caveat in config.caveats() {
        say!("  warning: {caveat}");
    }
    let mut running = config.clone();
    loop {
        tokio::select! {
            _ = signals.recv() => break,
            _ = reloads.recv() => reload(&args, &handle, &mut running, &log),
        }
    }
    tracing::info!("shutting down: draining for up to {:?}", config.drain_timeout);
    // Bounded: a drain that cannot finish, or a second signal, still ends the process.
    let limit = config.drain_timeout + std::time::Duration::from_secs(10);
    tokio::select! {
        _ = handle.shutdown() => {}
        _ = tokio::time::sleep(limit) => tracing::warn!("shutdown took longer than {limit:?}; exiting anyway"),
        _ = signals.recv() => tracing::warn!("second signal: exiting without waiting for the drain"),
    }
    Ok(())
}

/// Re-reads the config file (with the same flags and environment over it) and applies what
/// can change while running; one log line says what was applied and what needs a restart.
fn reload(args: &RunArgs, handle: &ServerHandle, running: &mut Config, log: &LogControl) {
    let new = args.file_config().and_then(|f| Ok(Config::from_file_config(f)?));
    let outcome = match new {
        Ok(new) => rustunnel_server::reload::apply(handle.shared(), running, new, Some(log)).map_err(Into::into),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(o) => tracing::info!(applied = %o.applied.join(", "), needs_restart = %o.needs_restart.join(", "), "{o}"),
        Err(e) => tracing::error!("configuration not reloaded (nothing changed): {}", explained(&e)),
    }
}

/// SIGHUP, subscribed to before the server starts (its default action ends the process).
struct ReloadSignal {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl ReloadSignal {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ReloadSignal { hup: signal(SignalKind::hangup()).ok() }
        }
        #[cfg(not(unix))]
        {
            ReloadSignal {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.hup {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// SIGTERM and SIGINT, subscribed to before the server starts so that no signal can arrive
/// unobserved (a signal that comes before a listener exists would be lost, or kill the process
/// with the default action instead of draining).
struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {}
                _ = next(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every key of the shipped example is also a flag and an environment variable, as the
    /// README promises (`regions`, a list of tables, is the file's alone).
    #[test]
    fn every_example_key_is_a_flag_and_an_environment_variable() {
        let example: toml::Table = toml::from_str(include_str!("../../../examples/server.toml")).unwrap();
        let text = include_str!("../../../examples/server.toml");
        // Commented-out keys count too: `# key = value` lines.
        let commented = text.lines().filter_map(|l| l.strip_prefix("# ")?.split_once(" = ").map(|(k, _)| k));
        let keys: Vec<&str> = example.keys().map(String::as_str).chain(commented).filter(|k| *k != "regions").collect();
        assert!(keys.len() > 20, "{keys:?}");
        let cmd = Cli::command();
        for key in keys {
            let long = key.replace('_', "-");
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str()));
            let arg = arg.unwrap_or_else(|| panic!("no --{long} for key {key}"));
            let env = format!("RUSTUNNEL_{}", key.to_ascii_uppercase());
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env.as_str()), "--{long}");
        }
    }

    #[test]
    fn flags_reach_the_runtime_configuration() {
        let cli = Cli::try_parse_from([
            "rustunnel-server",
            "--dev",
            "--response-timeout-secs",
            "3",
            "--reservation-grace-secs",
            "0",
            "--max-requests-per-tunnel",
            "7",
        ])
        .unwrap();
        let c = Config::from_file_config(cli.run.file_config().unwrap()).unwrap();
        assert_eq!(c.response_timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.reservation_grace, std::time::Duration::ZERO);
        assert_eq!(c.max_requests_per_tunnel, 7);
    }
}
