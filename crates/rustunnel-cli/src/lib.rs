//! The `rustunnel` command line.
//!
//! - [`tunnels`]: `rustunnel http|tcp|udp <port>` and `rustunnel start --config FILE`.
//! - [`p2p`]: `rustunnel p2p <port> --secret S --name N | --target N` (private P2P tunnels).
//! - [`output`]: the human console (status block + live request log) and `--json` lines.
//! - [`demo`]: `rustunnel demo`, a self-contained tour on loopback.
//! - [`manage`]: management commands over the REST API (tokens, tunnels, history, regions).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use clap::{Parser, Subcommand};

pub mod demo;
pub mod manage;
pub mod output;
pub mod p2p;
pub mod tunnels;

#[derive(Parser, Debug)]
#[command(
    name = "rustunnel",
    version,
    about = "Put local services on the internet: HTTP(S) under a subdomain, raw TCP, UDP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More logging on stderr (or set RUSTUNNEL_LOG, e.g. RUSTUNNEL_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Expose a local HTTP service under a subdomain.
    Http(tunnels::OneTunnel),
    /// Expose a local TCP service on a public port.
    Tcp(tunnels::OneTunnel),
    /// Expose a local UDP service on a public port.
    Udp(tunnels::OneTunnel),
    /// Private P2P tunnel: publish a local service under a name (--name), or reach one
    /// (--target) through a local listener; direct when the NATs allow it, else relayed.
    P2p(p2p::P2pArgs),
    /// Start several named tunnels from a TOML file.
    Start(tunnels::StartArgs),
    /// Run a self-contained demo on loopback: dev server, sample page, tunnel, fetch.
    Demo(demo::DemoArgs),
    #[command(flatten)]
    Manage(manage::ManageCommand),
}

pub fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUSTUNNEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: escape codes are noise in a redirected log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    use rustunnel_proto::Protocol;
    match cli.command {
        Command::Http(a) => tunnels::run_one(Protocol::Http, a).await,
        Command::Tcp(a) => tunnels::run_one(Protocol::Tcp, a).await,
        Command::Udp(a) => tunnels::run_one(Protocol::Udp, a).await,
        Command::Start(a) => tunnels::run_start(a).await,
        Command::P2p(a) => p2p::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Manage(m) => manage::run(m).await,
    }
}
