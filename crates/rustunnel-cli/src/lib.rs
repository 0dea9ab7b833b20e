//! The `rustunnel` command line.
//!
//! - [`tunnels`]: `rustunnel http|tcp|udp <port>` and `rustunnel start --config FILE`.
//! - [`p2p`]: `rustunnel p2p <port> --secret S --name N | --target N` (private P2P tunnels).
//! - [`output`]: the human console (status block + live request log) and `--json` lines.
//! - [`manage`]: management commands over the REST API (tokens, tunnels, history, regions).
//! - [`completions`]: `rustunnel completions <shell>` and `rustunnel man` (generated from clap).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use clap::{CommandFactory, Parser, Subcommand};

pub mod completions;
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
    /// Log lines on stderr as human-readable text, or as one JSON object per line
    /// (timestamp, level, target, message, fields) [default: human].
    #[arg(long, global = true, env = "RUSTUNNEL_LOG_FORMAT", value_enum)]
    pub log_format: Option<rustunnel_client::logging::LogFormat>,
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
    #[command(flatten)]
    Manage(manage::ManageCommand),
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish.
    Completions(completions::CompletionsArgs),
    /// Write man pages (rustunnel.1 and one per subcommand) into a directory.
    Man(completions::ManArgs),
}

/// Logs on stderr: warnings (everything with `--verbose`, or RUSTUNNEL_LOG's filter), as text
/// or JSON lines.
pub fn init_logging(verbose: bool, format: Option<rustunnel_client::logging::LogFormat>) {
    let level = if verbose { "debug" } else { "warn" };
    // Both levels are valid filters; a failure here would only leave logging off.
    let _ = rustunnel_client::logging::init(format.unwrap_or_default(), level);
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
        Command::Manage(m) => manage::run(m).await,
        Command::Completions(a) => completions::completions(a, Cli::command()),
        Command::Man(a) => completions::man(a, Cli::command()),
    }
}
