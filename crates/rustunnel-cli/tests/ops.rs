//! Operating the real binaries: JSON log lines, SIGHUP reloads while a tunnel carries traffic,
//! shell completions and man pages.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rustunnel_client::{ClientOptions, TlsOptions};
use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

mod common;
use common::{listening, server_bin, CLIENT};

/// A loopback dev server from a config file, with JSON logs read line by line.
struct Server {
    child: Child,
    control: u16,
    api: u16,
    http: u16,
    logs: mpsc::UnboundedReceiver<String>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn loopback_config(dir: &Path, extra: &str) -> String {
    format!(
        "dev = true\ndata_dir = \"{}\"\ncontrol_addr = \"127.0.0.1:0\"\napi_addr = \"127.0.0.1:0\"\n\
         http_addr = \"127.0.0.1:0\"\nhttps_addr = \"127.0.0.1:0\"\n{extra}",
        dir.join("data").display()
    )
}

async fn start_server(extra_config: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, loopback_config(dir.path(), extra_config)).unwrap();
    let mut child = Command::new(server_bin())
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env_remove("RUSTUNNEL_LOG")
        .env_remove("RUSTUNNEL_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let common::Ports { control, api, http } = listening(&mut child).await;
    let (tx, logs) = mpsc::unbounded_channel();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            let _ = tx.send(line);
        }
    });
    Server { child, control, api, http, logs, config, _dir: dir }
}

/// Every log line is one JSON object with the fields a log pipeline expects.
fn parse_log(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    for key in ["timestamp", "level", "target", "message"] {
        assert!(v[key].is_string(), "no {key} in {line}");
    }
    v
}

impl Server {
    /// The next log line whose message starts with `prefix`; every line on the way must parse.
    async fn log_starting(&mut self, prefix: &str) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.logs.recv())
                .await
                .unwrap_or_else(|_| panic!("no log line starting with {prefix:?} in time"))
                .expect("server still running");
            let v = parse_log(&line);
            if v["message"].as_str().unwrap().starts_with(prefix) {
                return v;
            }
        }
    }

    async fn client(&self, app_port: u16) -> (rustunnel_client::ClientHandle, Vec<Ready>) {
        let mut o = ClientOptions::new(format!("127.0.0.1:{}", self.control), "");
        o.tls = TlsOptions { insecure: true, ca: None };
        o.tunnels = vec![tunnel("web", Protocol::Http, app_port)];
        spawn_ready(o).await
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    async fn regions(&self) -> Value {
        let addr = format!("127.0.0.1:{}", self.api).parse().unwrap();
        let (status, body) = get(addr, "localhost", "/api/regions").await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test]
async fn server_logs_are_json_lines_with_structured_fields() {
    let mut server = start_server("").await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(app.port()).await;
    let connected = server.log_starting("client connected").await;
    assert!(connected["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{connected}");
    assert_eq!(connected["owner"], "local", "{connected}");
    assert_eq!(connected["level"], "INFO");
    let opened = server.log_starting("tunnel opened").await;
    assert_eq!(opened["tunnel"], ready[0].tunnel_id.as_str(), "{opened}");
    assert_eq!(opened["url"], ready[0].public_url.as_str(), "{opened}");
    server.signal("-TERM");
    server.log_starting("shutting down").await;
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn client_logs_are_json_lines() {
    let server = start_server("").await;
    let app = http_app("app").await;
    let control = format!("127.0.0.1:{}", server.control);
    let mut c = Command::new(CLIENT)
        .args(["http", &app.port().to_string(), "--server", &control, "--insecure", "--json"])
        .args(["--verbose", "--log-format", "json"])
        .env_remove("RUSTUNNEL_LOG")
        .env_remove("RUSTUNNEL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line()).await.unwrap().unwrap().unwrap();
        if serde_json::from_str::<Value>(&line).unwrap()["event"] == "tunnel_ready" {
            break;
        }
    }
    c.start_kill().unwrap();
    let output = c.wait_with_output().await.unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr.lines().map(parse_log).collect();
    // --verbose logs the connection's progress at debug level.
    assert!(lines.iter().any(|v| v["level"] == "DEBUG"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_while_a_tunnel_carries_traffic() {
    let mut server = start_server("").await;
    let app = http_app("app").await;
    let (_c, ready) = server.client(app.port()).await;
    let http = format!("127.0.0.1:{}", server.http).parse().unwrap();
    let host = ready[0].host();

    // Requests one after another through the tunnel for the whole test, on fresh connections
    // and on one kept-alive connection.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let traffic = {
        let (stop, done, failed, host) = (stop.clone(), done.clone(), failed.clone(), host.clone());
        tokio::spawn(async move {
            let mut kept = http1_conn(http).await;
            while !stop.load(Ordering::SeqCst) {
                let (status, answer) = get(http, &host, "/").await;
                let req = http::Request::get("/").header("host", &host).body(body("")).unwrap();
                let kept_status = match kept.send_request(req).await {
                    Ok(r) => {
                        let status = r.status();
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        status
                    }
                    Err(e) => {
                        failed.lock().unwrap().push(format!("kept-alive request: {e}"));
                        kept = http1_conn(http).await;
                        continue;
                    }
                };
                if status != StatusCode::OK || kept_status != StatusCode::OK {
                    failed.lock().unwrap().push(format!("{status} {kept_status} {answer:?}"));
                }
                done.fetch_add(2, Ordering::SeqCst);
            }
        })
    };
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::SeqCst) < n {
                assert!(tokio::time::Instant::now() < deadline, "traffic stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(10).await;

    // A valid change: the log level and the regions list apply at once.
    let dir = server.config.parent().unwrap().to_path_buf();
    let regions =
        "log_level = \"debug\"\n[[regions]]\nid = \"eu\"\nname = \"Europe\"\ncontrol_addr = \"eu.example:4040\"\n";
    std::fs::write(&server.config, loopback_config(&dir, regions)).unwrap();
    server.signal("-HUP");
    let line = server.log_starting("configuration reloaded").await;
    assert_eq!(
        line["message"], "configuration reloaded: applied log_level debug, regions; needs a restart: nothing",
        "{line}"
    );
    assert_eq!(server.regions().await["regions"][0]["id"], "eu");
    let seen = done.load(Ordering::SeqCst);
    wait_for(seen + 10).await;

    // An invalid file: nothing changes, the server runs on.
    std::fs::write(&server.config, loopback_config(&dir, &format!("max_requests_per_tunnel = 0\n{regions}"))).unwrap();
    server.signal("-HUP");
    let line = server.log_starting("configuration not reloaded").await;
    assert_eq!(line["level"], "ERROR");
    assert!(line["message"].as_str().unwrap().contains("max_requests_per_tunnel must be at least 1"), "{line}");
    assert_eq!(server.regions().await["regions"][0]["id"], "eu");
    let seen = done.load(Ordering::SeqCst);
    wait_for(seen + 10).await;

    // A change only a restart applies is named, and the rest still applies.
    std::fs::write(&server.config, loopback_config(&dir, "heartbeat_secs = 20\n")).unwrap();
    server.signal("-HUP");
    let line = server.log_starting("configuration reloaded").await;
    assert_eq!(
        line["message"], "configuration reloaded: applied log_level info, regions; needs a restart: heartbeat_secs",
        "{line}"
    );
    assert_eq!(server.regions().await["regions"][0]["id"], "local");
    let seen = done.load(Ordering::SeqCst);
    wait_for(seen + 10).await;

    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    let failed = failed.lock().unwrap();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), done.load(Ordering::SeqCst));
}

/// Every shell's completion script from both binaries; syntax-checked where the shell is
/// installed (CI installs bash, zsh and fish).
#[test]
fn completions_for_every_shell() {
    for (bin, subcommand) in [(PathBuf::from(CLIENT), "http"), (server_bin(), "token")] {
        for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
            let out = std::process::Command::new(&bin).args(["completions", shell]).output().unwrap();
            assert!(out.status.success(), "{bin:?} completions {shell}: {out:?}");
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(script.contains(subcommand), "{bin:?} {shell} script lacks {subcommand}");
            let check: Option<&[&str]> = match shell {
                "bash" => Some(&["bash", "-n"]),
                "zsh" => Some(&["zsh", "-n"]),
                "fish" => Some(&["fish", "--no-execute"]),
                _ => None,
            };
            let Some([sh, flag]) = check else { continue };
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &script).unwrap();
            match std::process::Command::new(sh).arg(flag).arg(file.path()).output() {
                Ok(o) => assert!(o.status.success(), "{bin:?} {shell} script: {}", String::from_utf8_lossy(&o.stderr)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && *sh != "bash" => {}
                Err(e) => panic!("{sh}: {e}"),
            }
        }
        let bad = std::process::Command::new(&bin).args(["completions", "tcsh"]).output().unwrap();
        assert!(!bad.status.success());
    }
}

/// Man pages for both binaries and each subcommand, readable by man(1)'s formatter.
#[test]
fn man_pages_for_both_binaries() {
    for (bin, name, sub) in [
        (PathBuf::from(CLIENT), "rustunnel", "rustunnel-http"),
        (server_bin(), "rustunnel-server", "rustunnel-server-token-create"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(&bin).args(["man", "--out-dir"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        for page in [name, sub] {
            let text = std::fs::read_to_string(dir.path().join(format!("{page}.1"))).unwrap();
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}.1 is not roff");
            assert!(text.contains(&page.to_ascii_uppercase()) || text.contains(page), "{page}.1 names itself");
        }
    }
}
