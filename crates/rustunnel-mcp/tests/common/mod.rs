//! Shared helpers: start the real `rustunnel-mcp` binary against an in-process server and drive
//! it with rmcp's client (either lifecycle) or with raw JSON-RPC lines.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam, ProtocolVersion};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use rustunnel_testkit::TestServer;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_rustunnel-mcp");

/// Flags that point the MCP server at `server`.
pub fn mcp_args(server: &TestServer) -> Vec<String> {
    let mut a = vec!["--server".to_string(), server.control(), "--insecure".into()];
    if let Some(api) = server.handle.api_addr() {
        a.extend(["--api".into(), format!("http://{api}")]);
    }
    a
}

pub fn mcp_command(args: &[String], token: Option<&str>) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUSTUNNEL_TOKEN")
        .env_remove("RUSTUNNEL_SERVER")
        .env_remove("RUSTUNNEL_API")
        .env_remove("RUSTUNNEL_INSECURE")
        .env("RUSTUNNEL_LOG", "rustunnel_mcp=debug,warn")
        .kill_on_drop(true);
    if let Some(t) = token {
        c.env("RUSTUNNEL_TOKEN", t);
    }
    c
}

/// A client that records progress notifications, and counts tool-list changes announced.
#[derive(Clone, Default)]
pub struct Recorder {
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    pub tool_list_changes: Arc<Mutex<usize>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(&self, params: ProgressNotificationParam, _ctx: NotificationContext<RoleClient>) {
        self.progress.lock().unwrap().push(params);
    }
    async fn on_tool_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        *self.tool_list_changes.lock().unwrap() += 1;
    }
}

pub type Client = RunningService<RoleClient, Recorder>;

pub enum Era {
    /// `initialize` handshake (2025-11-25 and older).
    Initialize,
    /// `server/discover` + per-request metadata (2026-07-28).
    Discover,
}

pub async fn connect(args: &[String], token: Option<&str>, era: Era) -> (Client, Recorder) {
    let transport = TokioChildProcess::builder(mcp_command(args, token))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rustunnel-mcp")
        .0;
    let rec = Recorder::default();
    let lifecycle = match era {
        Era::Initialize => ClientLifecycleMode::Initialize,
        Era::Discover => ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
    };
    let client = tokio::time::timeout(Duration::from_secs(20), rec.clone().serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("session starts in time")
        .expect("session starts");
    (client, rec)
}

pub async fn call(client: &Client, name: &'static str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(name).with_arguments(args.as_object().cloned().expect("object args"));
    tokio::time::timeout(Duration::from_secs(30), client.call_tool(params))
        .await
        .expect("tool answers in time")
        .expect("tool call is answered")
}

/// The structured content of a successful call (fails the test on an error result).
pub fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "tool failed: {}", text(r));
    let v = r.structured_content.clone().expect("structuredContent");
    // The text copy carries the same JSON.
    let copy: Value = serde_json::from_str(&text(r)).expect("text copy is JSON");
    assert_eq!(copy, v, "text copy matches structuredContent");
    v
}

/// The message of an error result (fails the test on success).
pub fn err(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "expected an error result, got {:?}", r.structured_content);
    text(r)
}

pub fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// Number of tunnels the server has open.
pub fn server_tunnels(server: &TestServer) -> usize {
    server.handle.shared().tunnel_count()
}

/// Waits until `f` holds (state changes that follow a socket close take a moment).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host header for an `http://name.domain:port` URL.
pub fn url_host(url: &str) -> String {
    url.split("://").nth(1).unwrap_or_default().trim_end_matches('/').to_string()
}

/// A port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A raw line-based session with the binary.
pub struct Raw {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Raw {
    pub fn spawn(args: &[String], token: Option<&str>) -> Raw {
        let mut child = mcp_command(args, token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rustunnel-mcp");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Raw { child, stdin, stdout }
    }

    pub async fn send_line(&mut self, line: &str) {
        self.send_bytes(line.as_bytes()).await;
    }

    /// One line of any bytes (a newline is added).
    pub async fn send_bytes(&mut self, line: &[u8]) {
        let s = self.stdin.as_mut().expect("stdin open");
        s.write_all(line).await.expect("write");
        s.write_all(b"\n").await.expect("write");
        s.flush().await.expect("flush");
    }

    pub async fn send(&mut self, v: Value) {
        self.send_line(&v.to_string()).await;
    }

    /// Next message on stdout; every line must be JSON (stdout is protocol-only).
    pub async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.stdout.next_line())
            .await
            .expect("a message in time")
            .expect("read stdout")
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"))
    }

    /// Next message with this id (notifications in between are returned in `skipped`).
    pub async fn recv_id(&mut self, id: i64) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let m = self.recv().await;
            if m.get("id") == Some(&json!(id)) {
                return (m, skipped);
            }
            skipped.push(m);
        }
    }

    /// Closes stdin and waits for the process to exit.
    pub async fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        // Drain stdout so the child never blocks writing.
        let drain = async { while let Ok(Some(_)) = self.stdout.next_line().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("rustunnel-mcp exits after stdin closes")
            .expect("wait")
    }
}

/// Metadata a 2026-07-28 request carries.
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1.0.0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}
