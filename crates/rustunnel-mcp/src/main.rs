//! `rustunnel-mcp`: parses flags, logs to stderr, serves MCP on stdin/stdout until stdin closes
//! (or SIGINT/SIGTERM), then closes every tunnel it opened and exits.
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rustunnel_mcp::{McpConfig, McpServer};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "rustunnel-mcp",
    version,
    about = "MCP server (stdio) that lets AI agents open, list and close rustunnel tunnels",
    after_help = "Speaks the Model Context Protocol on stdin/stdout; configure it in your MCP client \
(see docs/agents.md). Tools: create_tunnel, list_tunnels, close_tunnel, get_connection_info, list_regions, \
get_tunnel_history. Logs go to stderr (RUSTUNNEL_LOG=debug for more)."
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
    /// Default token for tool calls that pass none.
    #[arg(long = "token", env = "RUSTUNNEL_TOKEN", hide_env_values = true, hide = true)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUSTUNNEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // stdout is the protocol channel: logs must never go there.
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rustunnel-mcp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = McpConfig::new(cli.server, cli.api, cli.insecure, cli.token);
    tracing::info!(?config, "rustunnel-mcp starting");
    let result = rt.block_on(async move {
        let stop = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(stop.clone()));
        let r = McpServer::new(config).serve_stdio(stop).await;
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
