//! Load-balanced pools and P2P tunnels through the real `rustunnel-mcp` binary over stdio,
//! against an in-process rustunnel server on loopback.
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use rustunnel_testkit::{get, http_app, tcp_echo, Service, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bodies seen on `n` GETs of `/` through the public URL.
async fn bodies(server: &TestServer, url: &str, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        let (status, body) = get(server.http_addr(), &url_host(url), "/").await;
        assert_eq!(status, 200);
        seen.insert(String::from_utf8_lossy(&body).trim().to_string());
    }
    seen
}

/// A server, two HTTP apps answering "a" and "b", and an MCP client holding the admin token.
async fn two_apps_and_a_client() -> (TestServer, Service, Service, Client) {
    let server = TestServer::start().await;
    let a = http_app("a").await;
    let b = http_app("b").await;
    let (client, _) = connect(&mcp_args(&server), Some(server.handle.admin_token()), Era::Initialize).await;
    (server, a, b, client)
}

fn member(port: u16, path: &str) -> Value {
    json!({
        "local_port": port, "protocol": "http", "local_host": "127.0.0.1",
        "group": "pool", "group_key": "pool-key",
        "health_check": {"type": "http", "path": path, "interval_secs": 0.2, "timeout_secs": 1, "max_failed": 1}
    })
}

#[tokio::test]
async fn two_members_share_a_url_and_one_can_leave() {
    let (server, a, b, client) = two_apps_and_a_client().await;

    let ma = ok(&call(&client, "create_tunnel", member(a.port(), "/")).await);
    let mb = ok(&call(&client, "create_tunnel", member(b.port(), "/")).await);
    assert_eq!(ma["public_url"], mb["public_url"], "one URL for the pool");
    assert_eq!(ma["pool"]["group"], "pool");
    let url = ma["public_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://pool."), "{url}");

    let seen = bodies(&server, &url, 12).await;
    assert_eq!(seen, HashSet::from(["hello from a".to_string(), "hello from b".to_string()]), "both members serve");

    // list_tunnels shows the pool with both members, managed here.
    let list = ok(&call(&client, "list_tunnels", json!({})).await);
    let pool = list["pools"].as_array().unwrap().iter().find(|p| p["name"] == "pool").expect("pool listed");
    assert_eq!(pool["members"].as_array().unwrap().len(), 2);
    assert!(pool["members"].as_array().unwrap().iter().all(|m| m["managed_here"] == true));

    // The command and the config file for a third member; the key is never echoed.
    let info = ok(&call(&client, "get_connection_info", member(3002, "/health")).await);
    let text = info.to_string();
    assert!(!text.contains("pool-key"), "group key echoed: {text}");
    let cmd = info["command"].as_str().unwrap();
    assert!(cmd.starts_with("rustunnel http 3002 "), "{cmd}");
    assert!(cmd.contains("--group pool --group-key \"$RUSTUNNEL_GROUP_KEY\""), "{cmd}");
    assert!(cmd.contains("--health-check http:/health"), "{cmd}");
    assert!(cmd.contains("--token \"$RUSTUNNEL_TOKEN\""), "{cmd}");
    let contents = info["config_file"]["contents"].as_str().unwrap();
    let file = rustunnel_client::StartFile::parse(contents).expect("a valid rustunnel start file");
    let t = file.tunnel_configs();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].local_port, 3002);
    assert_eq!(t[0].group.as_ref().map(|g| g.name.as_str()), Some("pool"));
    assert!(t[0].health_check.is_some());
    assert!(info["config_command"].as_str().unwrap().contains("rustunnel start --config"));

    // Closing member a leaves b serving the same URL.
    let closed = ok(&call(&client, "close_tunnel", json!({"tunnel_id": ma["tunnel_id"]})).await);
    assert_eq!(closed["closed"], true);
    let seen = bodies(&server, &url, 6).await;
    assert_eq!(seen, HashSet::from(["hello from b".to_string()]));

    // A wrong group key is refused with a clear message.
    let c = http_app("c").await;
    let mut bad = member(c.port(), "/");
    bad["group_key"] = json!("other-key");
    let msg = err(&call(&client, "create_tunnel", bad).await);
    assert!(msg.contains("group key") || msg.contains("group_key"), "{msg}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_agent_can_put_a_login_and_address_rules_on_its_tunnel() {
    let server = TestServer::start().await;
    let app = http_app("private").await;
    let (client, _) = connect(&mcp_args(&server), Some(server.handle.admin_token()), Era::Initialize).await;
    let args = json!({"local_port": app.port(), "protocol": "http", "local_host": "127.0.0.1",
        "basic_auth": "agent:a long password"});
    let created = ok(&call(&client, "create_tunnel", args).await);
    let url = created["public_url"].as_str().unwrap();
    assert_eq!(get(server.http_addr(), &url_host(url), "/").await.0, 401);
    // The login never shows in what the tool returns.
    assert!(!created.to_string().contains("a long password"), "{created}");
    // Address rules: this visitor (127.0.0.1) is outside the allowed network.
    let args = json!({"local_port": app.port(), "protocol": "http", "local_host": "127.0.0.1",
        "cidr_allow": ["10.0.0.0/8"]});
    let created = ok(&call(&client, "create_tunnel", args).await);
    let url = created["public_url"].as_str().unwrap();
    assert_eq!(get(server.http_addr(), &url_host(url), "/").await.0, 403);
    connection_info_keeps_the_protection(&client).await;
    for (bad, why) in [
        (json!({"local_port": 1, "protocol": "http", "cidr_allow": ["nonsense"]}), "not an IP address"),
        (json!({"local_port": 1, "protocol": "tcp", "basic_auth": "agent:a long password"}), "http tunnels only"),
        (json!({"local_port": 1, "protocol": "http", "basic_auth": "agent:short"}), "8-128"),
    ] {
        let msg = err(&call(&client, "create_tunnel", bad).await);
        assert!(msg.contains(why), "{msg}");
    }
    client.cancel().await.unwrap();
}

/// The command and config file get_connection_info offers carry the login, the address rules
/// and the Host header (the password stays in the environment): run through a shell they give
/// the CLI exactly what the agent asked for, not a tunnel open to everyone.
async fn connection_info_keeps_the_protection(client: &Client) {
    let password = r#"a 'long' "pass" $word\"#;
    let access = json!({"local_port": 3000, "protocol": "http", "basic_auth": format!("agent:{password}"),
        "cidr_allow": ["10.0.0.0/8", "192.168.0.0/16"], "cidr_deny": ["10.9.0.0/16"], "host_header": "rewrite"});
    let shell = |script: &str, dir: &std::path::Path| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("RUSTUNNEL_BASIC_AUTH_PASSWORD", password)
            .env("RUSTUNNEL_GROUP_KEY", "the-group-key")
            .env("RUSTUNNEL_TOKEN", "tok")
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let info = ok(&call(client, "get_connection_info", access.clone()).await);
    assert!(!info.to_string().contains("long"), "password echoed: {info}");
    assert_eq!(info["secret_env"], "RUSTUNNEL_BASIC_AUTH_PASSWORD");
    let cmd = info["command"].as_str().unwrap();
    let argv = shell(&format!("set -- {cmd}; printf '%s\\n' \"$@\""), dir.path());
    let argv: Vec<&str> = argv.lines().collect();
    let after = |flag: &str| argv.iter().position(|a| *a == flag).map(|i| argv[i + 1]);
    assert_eq!(after("--basic-auth"), Some(format!("agent:{password}").as_str()), "{cmd}");
    assert_eq!(after("--cidr-allow"), Some("10.0.0.0/8,192.168.0.0/16"), "{cmd}");
    assert_eq!(after("--cidr-deny"), Some("10.9.0.0/16"), "{cmd}");
    assert_eq!(after("--host-header"), Some("rewrite"), "{cmd}");

    // A pool member: config_command writes a file holding all of it.
    let mut pooled = access;
    pooled["group"] = json!("private");
    pooled["group_key"] = json!("the-group-key");
    let info = ok(&call(client, "get_connection_info", pooled).await);
    assert!(!info.to_string().contains("long"), "password echoed: {info}");
    let script = info["config_command"].as_str().expect("a config command");
    let write = script.lines().filter(|l| !l.starts_with("rustunnel start")).collect::<Vec<_>>().join("\n");
    shell(&write, dir.path());
    let path = dir.path().join(info["config_file"]["path"].as_str().unwrap());
    let file = rustunnel_client::StartFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t = &file.tunnel_configs()[0];
    assert_eq!(t.basic_auth.as_ref().map(|b| b.as_str()), Some(format!("agent:{password}").as_str()));
    assert_eq!(t.cidr_allow, ["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!(t.cidr_deny, ["10.9.0.0/16"]);
    assert_eq!(t.host_header.as_deref(), Some("rewrite"));
    assert_eq!(t.group.as_ref().map(|g| g.key.as_str()), Some("the-group-key"));
}

#[tokio::test]
async fn a_failing_health_check_takes_the_member_out() {
    let (server, a, b, client) = two_apps_and_a_client().await;
    let ma = ok(&call(&client, "create_tunnel", member(a.port(), "/")).await);
    // b's check GETs a path its app does not serve (404): it fails.
    let mb = ok(&call(&client, "create_tunnel", member(b.port(), "/no-such-health")).await);
    let url = ma["public_url"].as_str().unwrap().to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = ok(&call(&client, "list_tunnels", json!({})).await);
        let pool = list["pools"].as_array().unwrap().iter().find(|p| p["name"] == "pool").cloned().unwrap();
        let bad = pool["members"].as_array().unwrap().iter().find(|m| m["tunnel_id"] == mb["tunnel_id"]).cloned();
        if bad.is_some_and(|m| m["healthy"] == false) {
            assert_eq!(pool["healthy_members"], 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "member b never marked unhealthy: {pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = bodies(&server, &url, 8).await;
    assert_eq!(seen, HashSet::from(["hello from a".to_string()]), "the unhealthy member gets no traffic");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn p2p_publish_and_connect_from_two_mcp_servers() {
    let server = TestServer::start().await;
    let echo = tcp_echo().await;
    let token = server.handle.admin_token();
    let (publisher, _) = connect(&mcp_args(&server), Some(token), Era::Initialize).await;
    let (visitor, _) = connect(&mcp_args(&server), Some(token), Era::Initialize).await;

    let p = ok(&call(
        &publisher,
        "create_tunnel",
        json!({"local_port": echo.port(), "local_host": "127.0.0.1", "protocol": "p2p", "peer_name": "svc", "secret": "s3cret"}),
    )
    .await);
    assert_eq!(p["protocol"], "p2p");
    assert_eq!(p["p2p"]["role"], "publish");
    assert_eq!(p["p2p"]["name"], "svc");
    assert!(p["tunnel_id"].as_str().unwrap().starts_with("p2p-"));

    // A wrong secret is an error result that says what to do.
    let msg = err(&call(
        &visitor,
        "create_tunnel",
        json!({"local_port": closed_port(), "protocol": "p2p", "peer_target": "svc", "secret": "wrong"}),
    )
    .await);
    assert!(msg.contains("wrong secret for 'svc'") && msg.contains("same `secret`"), "{msg}");
    // So is an unknown name.
    let msg = err(&call(
        &visitor,
        "create_tunnel",
        json!({"local_port": closed_port(), "protocol": "p2p", "peer_target": "nope", "secret": "s3cret"}),
    )
    .await);
    assert!(msg.contains("no P2P service named 'nope'"), "{msg}");

    let port = closed_port();
    let v = ok(&call(
        &visitor,
        "create_tunnel",
        json!({"local_port": port, "protocol": "p2p", "peer_target": "svc", "secret": "s3cret"}),
    )
    .await);
    assert_eq!(v["p2p"]["role"], "connect");
    assert_eq!(v["p2p"]["local_addr"], format!("127.0.0.1:{port}"));
    let mode = v["p2p"]["mode"].as_str().unwrap_or_default().to_string();
    assert!(mode == "direct" || mode == "relayed", "{v}");

    // Bytes flow through the local address.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"ping over p2p").await.unwrap();
    let mut buf = [0u8; 13];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping over p2p");
    drop(s);

    // list_tunnels shows our P2P endpoint; close_tunnel stops it.
    let list = ok(&call(&visitor, "list_tunnels", json!({})).await);
    let mine = list["p2p"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{list}");
    assert_eq!(mine[0]["tunnel_id"], v["tunnel_id"]);
    let svc = list["p2p_services"].as_array().unwrap().iter().find(|s| s["name"] == "svc").cloned();
    let svc = svc.unwrap_or_else(|| panic!("service listed from /api/p2p: {list}"));
    assert!(!svc["links"].as_array().unwrap().is_empty(), "{svc}");

    // The command for a person: secret and token as placeholders only.
    let info = ok(&call(
        &visitor,
        "get_connection_info",
        json!({"local_port": port, "protocol": "p2p", "peer_target": "svc", "secret": "s3cret"}),
    )
    .await);
    let cmd = info["command"].as_str().unwrap();
    assert!(cmd.starts_with(&format!("rustunnel p2p {port} --target svc --secret \"$RUSTUNNEL_P2P_SECRET\"")), "{cmd}");
    assert!(!info.to_string().contains("s3cret"));

    let closed = ok(&call(&visitor, "close_tunnel", json!({"tunnel_id": v["tunnel_id"]})).await);
    assert_eq!(closed["closed"], true);
    let list = ok(&call(&visitor, "list_tunnels", json!({})).await);
    assert!(list["p2p"].as_array().unwrap().is_empty());
    eventually("the local listener is closed", || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()).await;
    let msg = err(&call(&visitor, "close_tunnel", json!({"tunnel_id": v["tunnel_id"]})).await);
    assert!(msg.contains("no P2P tunnel"), "{msg}");

    visitor.cancel().await.unwrap();
    publisher.cancel().await.unwrap();
}
