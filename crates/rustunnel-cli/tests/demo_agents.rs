//! `rustunnel-server demo agents` as a user runs it: exits 0 and shows each promised step.
use std::time::Duration;

use tokio::process::Command;

mod common;
use common::server_bin;

#[tokio::test]
async fn demo_agents_runs_end_to_end() {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(server_bin()).args(["demo", "agents"]).env_remove("RUSTUNNEL_LOG").kill_on_drop(true).output(),
    )
    .await
    .expect("demo agents finishes in time")
    .expect("run rustunnel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for want in [
        "dev server up",
        "bob-agent joined",
        "verification codes match",
        "bob -> alice",
        "alice -> bob",
        "reusing the same link is rejected",
        "already used",
        "closed the room",
        "server stopped",
    ] {
        assert!(stdout.contains(want), "missing '{want}' in:\n{stdout}");
    }
    // The printed link never shows the whole secret.
    let link_line = stdout.lines().find(|l| l.contains("/t/")).expect("the invite link is shown");
    assert!(link_line.contains("(secret,"), "{link_line}");
}
