//! What the tests of the real binaries share: where the binaries are and how a started server
//! tells its ports.
#![allow(dead_code)] // Each test file uses its own part.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

pub const CLIENT: &str = env!("CARGO_BIN_EXE_rustunnel");

/// The server binary, built beside the client by `cargo test --workspace`.
pub fn server_bin() -> PathBuf {
    let p = PathBuf::from(CLIENT).with_file_name("rustunnel-server");
    assert!(p.exists(), "{} missing: run `cargo test --workspace` (or build rustunnel-server first)", p.display());
    p
}

/// The port at the end of a line such as `control plane listening on 127.0.0.1:4040`.
pub fn port_after(line: &str) -> u16 {
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

/// The ports a started server listens on, as its start-up lines say.
pub struct Ports {
    pub control: u16,
    pub api: u16,
    pub http: u16,
}

/// Reads a just-spawned server's stdout (piped) until it has told its control and HTTP ports
/// (the API's comes between them when it is on), then keeps draining it so the server never
/// blocks on a full pipe.
pub async fn listening(child: &mut Child) -> Ports {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut p = Ports { control: 0, api: 0, http: 0 };
    while p.control == 0 || p.http == 0 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("start-up lines in time")
            .unwrap()
            .expect("server still running");
        if line.contains("control plane") {
            p.control = port_after(&line);
        } else if line.contains("management API") {
            p.api = port_after(&line);
        } else if line.contains("HTTP edge") {
            p.http = port_after(&line);
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    p
}
