//! The `rustunnel` binary's management commands against a real running server, as a user
//! would run them: tokens, tunnels, history, regions, `--region`, errors.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use rustunnel_client::Event;
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn rustunnel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rustunnel"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RUSTUNNEL_") {
            c.env_remove(k);
        }
    }
    c.kill_on_drop(true);
    c
}

async fn run(args: &[&str]) -> Out {
    run_env(args, &[]).await
}

async fn run_env(args: &[&str], env: &[(&str, &Path)]) -> Out {
    let mut c = rustunnel();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = tokio::time::timeout(Duration::from_secs(30), c.output()).await.expect("rustunnel finished").unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn ok(o: &Out, what: &str) {
    assert_eq!(o.code, 0, "{what}: stdout {} stderr {}", o.stdout, o.stderr);
}

#[tokio::test]
async fn management_commands_against_a_running_server() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.handle.api_addr().unwrap());
    let admin = server.handle.admin_token().to_string();

    // The admin mints a token for a new tenant; it is printed once.
    let o = run(&["token", "create", "--label", "alice", "--api", &api, "--admin-token", &admin, "--json"]).await;
    ok(&o, "token create");
    let created: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let tok = created["token"].as_str().unwrap().to_string();
    let tok_id = created["id"].as_str().unwrap().to_string();
    let o = run(&["token", "create", "--label", "bob", "--api", &api, "--admin-token", &admin]).await;
    ok(&o, "token create (human)");
    assert!(o.stdout.starts_with("rt_") && o.stdout.contains("shown only this once"), "{}", o.stdout);
    assert!(o.stdout.contains("subdomains any, ports any"), "{}", o.stdout);
    // A token with rights: shown at creation and in the list; a malformed right is refused.
    let args = ["--subdomains", "ci-*,docs", "--ports", "20100-20199"];
    let o =
        run(&[&["token", "create", "--label", "carol", "--api", &api, "--admin-token", &admin][..], &args].concat())
            .await;
    ok(&o, "token create with rights");
    assert!(o.stdout.contains("subdomains ci-*,docs, ports 20100-20199"), "{}", o.stdout);
    let o = run(&["token", "list", "--api", &api, "--admin-token", &admin]).await;
    let carol = o.stdout.lines().find(|l| l.contains("carol")).unwrap_or_default().to_string();
    assert!(o.stdout.lines().next().unwrap().ends_with("SUBDOMAINS  PORTS"), "{}", o.stdout);
    assert!(carol.trim_end().ends_with("ci-*,docs   20100-20199"), "{}", o.stdout);
    let o =
        run(&["token", "create", "--label", "x", "--subdomains", "Bad!", "--api", &api, "--admin-token", &admin]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("subdomain pattern 'Bad!'"), "{}", o.stderr);

    // Alice's client opens a tunnel with her token.
    let app = http_app("app").await;
    let mut opts = server.client_options(vec![tunnel("web", Protocol::Http, app.port())]);
    opts.token = tok.clone();
    let (mut client, ready) = spawn_ready(opts).await;
    let web = ready[0].clone();
    assert_eq!(get(server.http_addr(), &web.host(), "/").await.0, StatusCode::OK);

    let o = run(&["tunnels", "list", "--api", &api, "--token", &tok]).await;
    ok(&o, "tunnels list");
    let mut lines = o.stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ID") && header.contains("PUBLIC URL"), "{}", o.stdout);
    let row = lines.next().unwrap();
    assert!(row.contains(&web.tunnel_id) && row.contains(&web.public_url), "{}", o.stdout);
    // Columns line up: the URL starts at the same offset in the header and the row.
    assert_eq!(header.find("PUBLIC URL"), row.find(&web.public_url), "{}", o.stdout);

    // Bob sees none of it.
    let bob = run(&["token", "create", "--label", "bob2", "--api", &api, "--admin-token", &admin, "--json"]).await;
    let bob_tok =
        serde_json::from_str::<serde_json::Value>(&bob.stdout).unwrap()["token"].as_str().unwrap().to_string();
    let o = run(&["tunnels", "list", "--api", &api, "--token", &bob_tok, "--json"]).await;
    ok(&o, "bob list");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap()["tunnels"], serde_json::json!([]));
    let o = run(&["tunnels", "close", &web.tunnel_id, "--api", &api, "--token", &bob_tok]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not_found"), "{}", o.stderr);

    // Alice closes it: the URL stops within a second and the client is told.
    let o = run(&["tunnels", "close", &web.tunnel_id, "--api", &api, "--token", &tok]).await;
    ok(&o, "tunnels close");
    assert!(o.stdout.contains(&format!("closed tunnel {}", web.tunnel_id)));
    let closed = next_event(&mut client, |e| matches!(e, Event::TunnelClosed { .. }), Duration::from_secs(1)).await;
    assert!(matches!(closed, Event::TunnelClosed { ref reason, .. } if reason == "closed_by_api"), "{closed:?}");
    assert_eq!(get(server.http_addr(), &web.host(), "/").await.0, StatusCode::NOT_FOUND);

    let o = run(&["history", "--protocol", "http", "--limit", "5", "--api", &api, "--token", &tok]).await;
    ok(&o, "history");
    assert!(o.stdout.contains(&web.tunnel_id) && o.stdout.contains("closed_by_api"), "{}", o.stdout);
    let o = run(&["history", "--limit", "0", "--api", &api, "--token", &tok]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("limit must be between 1 and 200"), "{}", o.stderr);

    let o = run(&["token", "list", "--api", &api, "--token", &tok]).await;
    ok(&o, "token list");
    assert!(o.stdout.contains("alice") && o.stdout.contains(&tok_id), "{}", o.stdout);
    assert!(!o.stdout.contains("bob") && !o.stdout.contains(&tok), "{}", o.stdout);

    let o = run(&["regions", "--api", &api]).await;
    ok(&o, "regions");
    assert!(
        o.stdout.contains("local") && o.stdout.contains(&format!("localhost:{}", server.handle.control_addr().port()))
    );

    // Revoked: refused at once.
    let o = run(&["token", "revoke", &tok_id, "--api", &api, "--admin-token", &admin]).await;
    ok(&o, "token revoke");
    let o = run(&["tunnels", "list", "--api", &api, "--token", &tok]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("unauthorized") && o.stderr.contains("--token"), "{}", o.stderr);

    // A server that is not there: a clear message, exit 1.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let o = run(&["regions", "--api", &dead_url]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("cannot reach the management API"), "{}", o.stderr);
    let o = run(&["regions", "--api", "localhost:4041"]).await;
    assert!(o.code == 1 && o.stderr.contains("invalid --api URL"), "{}", o.stderr);
}

/// Starts `rustunnel http` and returns its `tunnel_ready` event line.
async fn tunnel_ready_line(args: &[&str], env: &[(&str, &Path)]) -> (serde_json::Value, tokio::process::Child) {
    let mut c = rustunnel();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ev = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v["event"] == "tunnel_ready" {
                return v;
            }
            assert_ne!(v["event"], "error", "{l}");
        }
        panic!("rustunnel exited before tunnel_ready");
    })
    .await
    .expect("tunnel ready in time");
    // Keep reading, so later output never hits a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (ev, child)
}

#[tokio::test]
async fn region_flag_resolves_through_the_api() {
    let server = TestServer::start().await;
    let api = format!("http://{}", server.handle.api_addr().unwrap());
    let app = http_app("app").await;
    let port = app.port().to_string();
    let cache = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", cache.path())];
    // `--server` points nowhere useful: only the region lookup can find the server.
    let base = ["http", port.as_str(), "--server", "127.0.0.1:9", "--insecure", "--json", "--api", api.as_str()];

    let args: Vec<&str> = base.iter().copied().chain(["--region", "local"]).collect();
    let (ev, mut child) = tunnel_ready_line(&args, &env).await;
    let host = ev["public_url"].as_str().unwrap().split("://").nth(1).unwrap().to_string();
    assert_eq!(get(server.http_addr(), &host, "/").await.1, "hello from app\n");
    child.kill().await.unwrap();

    let args: Vec<&str> = base.iter().copied().chain(["--region", "auto"]).collect();
    let (_, mut child) = tunnel_ready_line(&args, &env).await;
    child.kill().await.unwrap();
    let cached: PathBuf = cache.path().join("rustunnel/region-auto.json");
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cached).unwrap()).unwrap();
    assert_eq!(c["region"], "local");
    assert_eq!(c["api"], api.as_str());

    let args: Vec<&str> = base.iter().copied().chain(["--region", "mars"]).collect();
    let o = run_env(&args, &env).await;
    assert_ne!(o.code, 0);
    assert!(o.stdout.contains("no region 'mars'") || o.stderr.contains("no region 'mars'"), "{}{}", o.stdout, o.stderr);
}

/// The real server binary, stopped and started again: history is still there.
#[tokio::test]
async fn history_survives_a_restart_of_the_server_binary() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rustunnel")).with_file_name("rustunnel-server");
    if !bin.exists() {
        // Built by `cargo test --workspace` (CI); `cargo test -p rustunnel-cli` alone does not build it.
        let build = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "rustunnel-server", "--bin", "rustunnel-server"])
            .status();
        let st = tokio::time::timeout(Duration::from_secs(600), build).await.expect("build in time").unwrap();
        assert!(st.success(), "building rustunnel-server");
    }
    let data = tempfile::tempdir().unwrap();
    let start = || async {
        let mut c = Command::new(&bin);
        c.args(["--dev", "--control-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--https-addr", "off", "--admin-token", "adm-secret-0123456789"])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("RUSTUNNEL_") {
                c.env_remove(k);
            }
        }
        let mut child = c.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut control, mut api) = (String::new(), String::new());
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                let port = || l.rsplit(':').next().unwrap().trim().to_string();
                if l.contains("control plane") {
                    control = format!("127.0.0.1:{}", port());
                } else if l.contains("management API") {
                    api = format!("http://127.0.0.1:{}", port());
                }
                if l.contains("data directory") {
                    return;
                }
            }
        })
        .await
        .expect("server ready");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, control, api)
    };
    let (mut srv, control, api) = start().await;
    let app = http_app("app").await;
    let mut opts = rustunnel_client::ClientOptions::new(control, "adm-secret-0123456789");
    opts.tls = rustunnel_client::TlsOptions { insecure: true, ca: None };
    opts.tunnels = vec![tunnel("web", Protocol::Http, app.port())];
    opts.reconnect = false;
    let (client, ready) = spawn_ready(opts).await;
    let id = ready[0].tunnel_id.clone();
    let o = run(&["tunnels", "close", &id, "--api", &api, "--admin-token", "adm-secret-0123456789"]).await;
    ok(&o, "close");
    drop(client);
    // SIGTERM-free stop is enough here: the close was already recorded.
    srv.kill().await.unwrap();
    let (_srv, _, api) = start().await;
    let o = run(&["history", "--json", "--api", &api, "--admin-token", "adm-secret-0123456789"]).await;
    ok(&o, "history after restart");
    let h: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let e = &h["entries"][0];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["close_reason"], "closed_by_api");
}
