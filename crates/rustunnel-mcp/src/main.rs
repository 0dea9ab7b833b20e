//! `rustunnel-mcp`: parses flags, logs to stderr, serves MCP on stdin/stdout until stdin closes
//! (or SIGINT/SIGTERM), then closes every tunnel it opened and exits.
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rustunnel_mcp::{McpConfig, McpServer};
use tokio_util::sync::CancellationToken;

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "rustunnel-mcp",
    version,
    about = "MCP server (stdio) that lets AI agents open, list and close rustunnel tunnels",
    after_help = "Speaks the Model Context Protocol on stdin/stdout; configure it in your MCP client \
(see docs/agents.md). Tools: create_tunnel, list_tunnels, close_tunnel, get_connection_info, list_regions, \
get_tunnel_history; agent rooms: tunnel_open, tunnel_invite, tunnel_join, tunnel_say, tunnel_listen, tunnel_status, \
tunnel_share, tunnel_receive, tunnel_close. Logs go to stderr (RUSTUNNEL_LOG=debug for more)."
)]
struct Cli {
    /// Control-plane address of the rustunnel server (tunnels connect here).
    #[arg(long, env = "RUSTUNNEL_SERVER", default_value = rustunnel_mcp::config::DEFAULT_SERVER)]
    server: String,
    /// Management REST API base URL (list/close tunnels, history, regions).
    #[arg(long, env = "RUSTUNNEL_API", default_value = rustunnel_mcp::config::DEFAULT_API)]
    api: String,
    /// Skip TLS certificate verification (local development with a self-signed certificate).
    #[arg(long, env = "RUSTUNNEL_INSECURE", value_parser = clap::builder::FalseyValueParser::new())]
    insecure: bool,
    /// Trust this CA certificate (PEM) for the server and its API, e.g. a dev server's
    /// `<data dir>/tls-cert.pem`.
    #[arg(long, env = "RUSTUNNEL_CA")]
    ca: Option<std::path::PathBuf>,
    /// Default token for tool calls that pass none.
    #[arg(long = "token", env = "RUSTUNNEL_TOKEN", hide_env_values = true, hide = true)]
    token: Option<String>,
    /// Your display name in agent rooms (default: $USER).
    #[arg(long = "name", env = "RUSTUNNEL_AGENT_NAME")]
    name: Option<String>,
    /// Log lines on stderr as text or as one JSON object per line (stdout is the protocol's).
    #[arg(long, env = "RUSTUNNEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install the tunnel-etiquette skill (default ~/.claude/skills/tunnel-etiquette/SKILL.md).
    InstallSkill {
        /// Skills directory to install into (the skill goes in DIR/tunnel-etiquette/).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Overwrite an existing skill file.
        #[arg(long)]
        force: bool,
    },
}

fn install_skill(dir: Option<std::path::PathBuf>, force: bool) -> ExitCode {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    match rustunnel_mcp::skill::install(dir.as_deref(), home.as_deref(), force) {
        Ok(rustunnel_mcp::skill::Installed::Created(p)) => {
            println!("installed the tunnel-etiquette skill at {}", p.display());
            ExitCode::SUCCESS
        }
        Ok(rustunnel_mcp::skill::Installed::Replaced(p)) => {
            println!("replaced the tunnel-etiquette skill at {} (--force)", p.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rustunnel-mcp install-skill: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::InstallSkill { dir, force }) = cli.command {
        return install_skill(dir, force);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUSTUNNEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // stdout is the protocol channel: logs must never go there.
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rustunnel-mcp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = McpConfig::new(cli.server, cli.api, cli.insecure, cli.token).with_ca(cli.ca);
    let name = cli.name.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "agent".into());
    tracing::info!(?config, "rustunnel-mcp starting");
    let result = rt.block_on(async move {
        let stop = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(stop.clone()));
        let r = McpServer::standard(config, &name).serve_stdio(stop).await;
        signals.abort();
        r
    });
    // The stdin reader runs on a blocking thread that may still sit in read(2) after a signal;
    // do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_on_signal(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.cancel();
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
}
