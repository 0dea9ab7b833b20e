//! `rustunnel tunnels list` shows load-balanced pools: a second aligned "POOLS" table, and a
//! `pools` array with `--json`.
use std::time::Duration;

use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::process::Command;

async fn run(args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rustunnel"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUSTUNNEL_") {
            c.env_remove(k);
        }
    }
    c.kill_on_drop(true).args(args);
    let o = tokio::time::timeout(Duration::from_secs(30), c.output()).await.expect("rustunnel finished").unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[tokio::test]
async fn tunnels_list_shows_pools() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.handle.api_addr().unwrap());
    let admin = server.handle.admin_token().to_string();
    let a = http_app("a").await;
    let b = http_app("b").await;
    let plain = http_app("plain").await;

    // Without pools the output is the tunnels table alone.
    let (code, out, err) = run(&["tunnels", "list", "--api", &api, "--token", &admin]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("POOLS"), "{out}");

    let members = vec![
        tunnel("a", Protocol::Http, a.port()).with_group("pool", "k"),
        tunnel("b", Protocol::Http, b.port()).with_group("pool", "k"),
        tunnel("plain", Protocol::Http, plain.port()),
    ];
    let (_client, ready) = server.client(members).await;
    assert_eq!(ready.len(), 3);

    let (code, out, err) = run(&["tunnels", "list", "--api", &api, "--token", &admin]).await;
    assert_eq!(code, 0, "{err}");
    let (tunnels, pools) = out.split_once("\nPOOLS\n").unwrap_or_else(|| panic!("a POOLS section: {out}"));
    assert_eq!(tunnels.lines().count(), 4, "header and 3 tunnels: {out}");
    let mut lines = pools.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("POOL") && header.contains("PUBLIC URL") && header.contains("HEALTHY"), "{out}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "one row per member: {out}");
    for row in &rows {
        assert!(row.starts_with("pool "), "{row}");
        assert!(row.contains("2/2") && row.contains("healthy"), "{row}");
    }
    let member_col = header.find("MEMBER").unwrap();
    for row in &rows {
        let id = &row[member_col..].split_whitespace().next().unwrap();
        assert!(ready.iter().any(|r| r.tunnel_id == *id), "{id} at the MEMBER column: {out}");
    }

    let (code, out, err) = run(&["tunnels", "list", "--api", &api, "--token", &admin, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tunnels"].as_array().unwrap().len(), 3);
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["name"], "pool");
    assert_eq!(pools[0]["members"].as_array().unwrap().len(), 2);
}
