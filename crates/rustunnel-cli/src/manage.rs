//! Management commands over the REST API: tokens, tunnels, history, regions.
use clap::Subcommand;

use crate::tunnels::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum ManageCommand {}

pub async fn run(cmd: ManageCommand) -> i32 {
    match cmd {}
}

/// The control address to dial: `--server`, or the region's when `--region` is given.
pub async fn resolve_server(c: &ConnectArgs) -> Result<String, String> {
    match &c.region {
        None => Ok(c.server.clone()),
        Some(r) => {
            Err(format!("--region {r}: region lookup needs the management API, which this build does not include yet"))
        }
    }
}
