//! `rustunnel`: the command-line client. Parses flags, sets up logging, dispatches to the
//! library modules of this crate.
use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = rustunnel_cli::Cli::parse();
    rustunnel_cli::init_logging(cli.verbose, cli.log_format);
    let code = rustunnel_cli::run(cli).await;
    std::process::exit(code);
}
