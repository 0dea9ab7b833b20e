//! The real `rustunnel-mcp` binary over stdio, in both protocol eras, against an in-process
//! rustunnel server on port 0.
mod common;

use std::time::{Duration, Instant};

use common::*;
use rmcp::model::{CallToolRequestParams, ClientRequest, NumberOrString, ProgressToken, Request};
use rustunnel_testkit::{get, http_app, TestServer};
use serde_json::{json, Value};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/tools_list.json");

#[tokio::test]
async fn tools_list_matches_the_snapshot_in_both_eras() {
    let server = TestServer::start().await;
    let args = mcp_args(&server);
    let mut lists = Vec::new();
    for era in [Era::Initialize, Era::Discover] {
        let (client, _) = connect(&args, None, era).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        lists.push(serde_json::to_value(&tools).unwrap());
        client.cancel().await.unwrap();
    }
    assert_eq!(lists[0], lists[1], "both eras list the same tools");
    let actual = serde_json::to_string_pretty(&lists[0]).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(SNAPSHOT).expect("snapshot file (UPDATE_SNAPSHOTS=1 writes it)");
    assert_eq!(actual, expected, "tools/list changed: review and rerun with UPDATE_SNAPSHOTS=1");

    let names: Vec<&str> = lists[0].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "close_tunnel",
            "create_tunnel",
            "get_connection_info",
            "get_tunnel_history",
            "list_regions",
            "list_tunnels",
            "tunnel_close",
            "tunnel_invite",
            "tunnel_join",
            "tunnel_listen",
            "tunnel_open",
            "tunnel_receive",
            "tunnel_say",
            "tunnel_share",
            "tunnel_status"
        ]
    );
    for t in lists[0].as_array().unwrap() {
        assert_eq!(t["inputSchema"]["type"], "object", "{}", t["name"]);
        assert_eq!(t["outputSchema"]["type"], "object", "{} declares an outputSchema", t["name"]);
        let text = t.to_string();
        assert!(!text.contains("$ref") && !text.contains("\"format\""), "plain schema for {}", t["name"]);
    }
}

/// Checks `value` against the tool's declared output schema.
fn assert_matches_output_schema(tools: &[rmcp::model::Tool], name: &str, value: &Value) {
    let tool = tools.iter().find(|t| t.name == name).unwrap();
    let schema = Value::Object((*tool.output_schema.clone().unwrap()).clone());
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name} output does not match its schema: {errors:?}\n{value}");
}

async fn end_to_end(era: Era) {
    let server = TestServer::start().await;
    let app = http_app("mcp-app").await;
    let (client, rec) = connect(&mcp_args(&server), Some(server.handle.admin_token()), era).await;
    let tools = client.list_all_tools().await.unwrap();

    // create_tunnel, with a progress token.
    let mut params = CallToolRequestParams::new("create_tunnel")
        .with_arguments(json!({"local_port": app.port(), "protocol": "http"}).as_object().cloned().unwrap());
    let mut meta = rmcp::model::RequestMetaObject::new();
    meta.set_progress_token(ProgressToken(NumberOrString::Number(7)));
    params.meta = Some(meta);
    let t0 = Instant::now();
    let r = client.call_tool(params).await.unwrap();
    let took = t0.elapsed();
    let created = ok(&r);
    eprintln!("create_tunnel answered in {took:?}");
    assert!(took < Duration::from_secs(2), "create_tunnel took {took:?}");
    assert_matches_output_schema(&tools, "create_tunnel", &created);
    assert_eq!(created["protocol"], "http");
    let id = created["tunnel_id"].as_str().unwrap().to_string();
    let url = created["public_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://") && url.contains(".localhost"), "{url}");
    assert_eq!(server_tunnels(&server), 1);
    let progress = rec.progress.lock().unwrap().clone();
    assert!(progress.len() >= 2, "progress notifications while connecting: {progress:?}");

    // The public URL serves the local app.
    let (status, body) = get(server.http_addr(), &url_host(&url), "/").await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"hello from mcp-app\n");

    {
        let list = ok(&call(&client, "list_tunnels", json!({})).await);
        assert_matches_output_schema(&tools, "list_tunnels", &list);
        let row = list["tunnels"].as_array().unwrap().iter().find(|t| t["tunnel_id"] == id.as_str()).expect("listed");
        assert_eq!(row["public_url"], url.as_str());
        assert_eq!(row["managed_here"], true);

        let hist = ok(&call(&client, "get_tunnel_history", json!({"protocol": "http", "limit": 10})).await);
        assert_matches_output_schema(&tools, "get_tunnel_history", &hist);
        assert!(hist["entries"].as_array().unwrap().iter().any(|e| e["tunnel_id"] == id.as_str()), "{hist}");

        let regions = ok(&call(&client, "list_regions", json!({})).await);
        assert_matches_output_schema(&tools, "list_regions", &regions);
    }

    // close_tunnel: the URL stops working at once.
    let closed = ok(&call(&client, "close_tunnel", json!({"tunnel_id": id})).await);
    assert_matches_output_schema(&tools, "close_tunnel", &closed);
    assert_eq!(closed["closed"], true);
    assert_eq!(closed["stopped_local_client"], true);
    let (status, body) = get(server.http_addr(), &url_host(&url), "/").await;
    assert_ne!(&body[..], b"hello from mcp-app\n", "closed tunnel still serves (status {status})");
    assert_eq!(server_tunnels(&server), 0);

    {
        let hist = ok(&call(&client, "get_tunnel_history", json!({})).await);
        let row =
            hist["entries"].as_array().unwrap().iter().find(|e| e["tunnel_id"] == id.as_str()).expect("in history");
        assert_eq!(row["active"], false);
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn initialize_era_create_fetch_list_close() {
    end_to_end(Era::Initialize).await;
}

#[tokio::test]
async fn discover_era_create_fetch_list_close() {
    end_to_end(Era::Discover).await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors() {
    let server = TestServer::start().await;
    let (client, _) = connect(&mcp_args(&server), None, Era::Initialize).await;
    let cases = [
        ("create_tunnel", json!({"local_port": "3000x", "protocol": "http"}), "must be an integer"),
        ("create_tunnel", json!({"local_port": true, "protocol": "http"}), "must be an integer"),
        ("create_tunnel", json!({"local_port": 3000, "protocol": "ftp"}), "unknown protocol 'ftp'"),
        ("create_tunnel", json!({"local_port": 3000, "protocol": 7}), "must be a string"),
        ("create_tunnel", json!({"local_port": 0, "protocol": "http"}), "between 1 and 65535"),
        ("create_tunnel", json!({"local_port": 70000, "protocol": "tcp"}), "between 1 and 65535"),
        ("create_tunnel", json!({"protocol": "http"}), "'local_port' is required"),
        (
            "create_tunnel",
            json!({"local_port": 3000, "protocol": "http", "colour": "red"}),
            "unknown argument 'colour'",
        ),
        ("create_tunnel", json!({"local_port": 3000, "protocol": "p2p", "peer_name": "x"}), "needs 'secret'"),
        ("create_tunnel", json!({"local_port": 3000, "protocol": "http", "group": "pool"}), "go together"),
        ("get_connection_info", json!({"local_port": 99999, "protocol": "http"}), "between 1 and 65535"),
        ("close_tunnel", json!({}), "'tunnel_id' is required"),
        ("close_tunnel", json!({"tunnel_id": "../../etc"}), "may contain only"),
        ("get_tunnel_history", json!({"limit": 0}), "between 1 and 500"),
        ("get_tunnel_history", json!({"protocol": "smtp"}), "unknown protocol"),
        ("list_regions", json!({"x": 1}), "unknown argument"),
    ];
    for (tool, args, want) in cases {
        let msg = err(&call(&client, tool, args.clone()).await);
        assert!(msg.contains(want), "{tool} {args}: {msg}");
    }
    assert_eq!(server_tunnels(&server), 0);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn failures_say_what_to_do() {
    let server = TestServer::start().await;
    let (client, _) = connect(&mcp_args(&server), None, Era::Initialize).await;

    // Nothing listening locally: refused before anything is opened.
    let port = closed_port();
    let msg = err(&call(&client, "create_tunnel", json!({"local_port": port, "protocol": "http"})).await);
    assert!(msg.contains(&format!("nothing is listening on localhost:{port}")), "{msg}");

    // A token the server does not know.
    let app = http_app("x").await;
    let msg = err(&call(
        &client,
        "create_tunnel",
        json!({"local_port": app.port(), "protocol": "http", "token": "not-a-token"}),
    )
    .await);
    assert!(msg.contains("token rejected by the server"), "{msg}");

    // A region the server does not know: the answer lists the known ones.
    let msg = err(&call(
        &client,
        "create_tunnel",
        json!({"local_port": app.port(), "protocol": "http", "region": "nowhere"}),
    )
    .await);
    assert!(msg.contains("unknown region 'nowhere' (known: "), "{msg}");
    assert_eq!(server_tunnels(&server), 0);
    client.cancel().await.unwrap();

    // Without --insecure the dev server's private CA is not trusted; the hint names --ca,
    // which rustunnel-mcp takes and passes on to the commands it offers.
    let strict: Vec<String> = mcp_args(&server).into_iter().filter(|a| a != "--insecure").collect();
    let (client, _) = connect(&strict, None, Era::Initialize).await;
    let msg = err(&call(&client, "create_tunnel", json!({"local_port": app.port(), "protocol": "tcp"})).await);
    assert!(msg.contains("--ca <server data dir>/tls-cert.pem"), "{msg}");
    client.cancel().await.unwrap();
    let ca = server.dir.path().join("tls-cert.pem").display().to_string();
    let (client, _) = connect(&[strict, vec!["--ca".into(), ca.clone()]].concat(), None, Era::Initialize).await;
    let made = ok(&call(&client, "create_tunnel", json!({"local_port": app.port(), "protocol": "tcp"})).await);
    assert!(made["public_url"].as_str().unwrap().starts_with("tcp://"), "{made}");
    let info = ok(&call(&client, "get_connection_info", json!({"local_port": app.port(), "protocol": "tcp"})).await);
    let command = info["command"].as_str().unwrap();
    assert!(command.ends_with(&format!("--ca {ca}")) && !command.contains("--insecure"), "{command}");
    client.cancel().await.unwrap();

    // A control plane that is not there.
    let dead = closed_port();
    let args =
        vec!["--server".to_string(), format!("127.0.0.1:{dead}"), "--api".into(), format!("http://127.0.0.1:{dead}")];
    let (client, _) = connect(&args, None, Era::Initialize).await;
    let t0 = Instant::now();
    let msg = err(&call(&client, "create_tunnel", json!({"local_port": app.port(), "protocol": "tcp"})).await);
    assert!(msg.contains(&format!("server unreachable at 127.0.0.1:{dead}: is rustunnel-server running?")), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(3), "fails fast");
    let msg = err(&call(&client, "list_tunnels", json!({})).await);
    assert!(msg.contains("management API unreachable"), "{msg}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn connection_info_starts_nothing_and_hides_the_token() {
    let server = TestServer::start().await;
    let (client, _) = connect(&mcp_args(&server), Some("secret-token-value"), Era::Initialize).await;
    let tools = client.list_all_tools().await.unwrap();
    let info = ok(&call(
        &client,
        "get_connection_info",
        json!({"local_port": 3000, "protocol": "http", "subdomain": "myapp"}),
    )
    .await);
    assert_matches_output_schema(&tools, "get_connection_info", &info);
    assert_eq!(
        info["command"],
        format!(
            "rustunnel http 3000 --subdomain myapp --server {} --token \"$RUSTUNNEL_TOKEN\" --insecure",
            server.control()
        )
    );
    assert!(!info.to_string().contains("secret-token-value"));
    let info = ok(&call(
        &client,
        "get_connection_info",
        json!({"local_port": 5432, "protocol": "tcp", "local_host": "db.internal"}),
    )
    .await);
    assert!(
        info["command"].as_str().unwrap().starts_with("rustunnel tcp 5432 --local-host db.internal --server"),
        "{info}"
    );
    assert_eq!(server_tunnels(&server), 0);
    client.cancel().await.unwrap();
}

/// A slow create_tunnel (the "server" accepts TCP and never answers) does not block other
/// calls, and cancelling it stops it.
#[tokio::test]
async fn calls_run_concurrently_and_cancellation_is_honoured() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let app = http_app("slow").await;
    let args = vec!["--server".to_string(), silent_addr.to_string(), "--insecure".into()];
    let (client, _) = connect(&args, None, Era::Initialize).await;

    let params = CallToolRequestParams::new("create_tunnel")
        .with_arguments(json!({"local_port": app.port(), "protocol": "http"}).as_object().cloned().unwrap());
    let handle = client
        .peer()
        .send_cancellable_request(ClientRequest::CallToolRequest(Request::new(params)), Default::default())
        .await
        .unwrap();

    let t0 = Instant::now();
    let info = ok(&call(&client, "get_connection_info", json!({"local_port": 1, "protocol": "udp"})).await);
    assert!(info["command"].as_str().unwrap().starts_with("rustunnel udp 1"));
    assert!(t0.elapsed() < Duration::from_secs(2), "not blocked by the pending create_tunnel");

    let t0 = Instant::now();
    handle.cancel(Some("changed my mind".into())).await.unwrap();
    // The server is still serving after the cancellation.
    ok(&call(&client, "get_connection_info", json!({"local_port": 2, "protocol": "tcp"})).await);
    assert!(t0.elapsed() < Duration::from_secs(3));
    client.cancel().await.unwrap();
    held.abort();
}

/// Raw JSON-RPC lines: garbage is skipped or answered with an error and the server keeps
/// serving; `server/discover` then `initialize` works; closing stdin closes every tunnel and
/// ends the process.
#[tokio::test]
async fn raw_lines_discover_then_initialize_garbage_and_stdin_close() {
    let server = TestServer::start().await;
    let app = http_app("raw").await;
    let mut raw = Raw::spawn(&mcp_args(&server), None);

    raw.send_line("this is not json").await;
    raw.send_line("{\"truncated\": ").await;
    raw.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await; // before init
    raw.send(json!({"hello": "world"})).await; // JSON, wrong shape
                                               // Not JSON: a Parse error each (JSON-RPC 2.0: id null); wrong shape: Invalid Request.
    let mut codes = Vec::new();
    for _ in 0..3 {
        let m = raw.recv().await;
        // Present and null, not left out.
        assert_eq!(m.get("id"), Some(&serde_json::Value::Null), "{m}");
        codes.push(m["error"]["code"].as_i64().unwrap());
    }
    codes.sort();
    assert_eq!(codes, [-32700, -32700, -32600]);

    raw.send(json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": modern_meta()}})).await;
    let (d, _) = raw.recv_id(1).await;
    let versions = d["result"]["supportedVersions"].as_array().expect("discover result").clone();
    assert!(versions.contains(&json!("2026-07-28")) && versions.contains(&json!("2025-11-25")), "{d}");
    assert!(d["result"]["capabilities"]["tools"].is_object(), "{d}");

    raw.send(json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}))
        .await;
    let (init, _) = raw.recv_id(2).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "rustunnel-mcp");
    raw.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;

    raw.send_line("garbage again").await;
    raw.send(json!({"jsonrpc": "2.0", "id": 3, "method": "no/such/method"})).await;
    let (m, others) = raw.recv_id(3).await;
    assert!(m["error"].is_object(), "{m}");
    let mut parse_error = others.into_iter().find(|o| o["error"]["code"] == -32700);
    if parse_error.is_none() {
        parse_error = Some(raw.recv().await);
    }
    assert_eq!(parse_error.unwrap()["error"]["code"], -32700);
    // Bytes that are not UTF-8, and a line over the bound (dropped as it arrives).
    raw.send_bytes(b"\xff\xfe{\"jsonrpc\": \"2.0\", \"id\": 9, \"method\": \"ping\"}").await;
    assert_eq!(raw.recv().await["error"]["code"], -32700);
    raw.send_line(&"x".repeat(rustunnel_mcp::transport::MAX_LINE + 10)).await;
    assert_eq!(raw.recv().await["error"]["code"], -32700);

    raw.send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})).await;
    let (list, _) = raw.recv_id(4).await;
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 15);

    raw.send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "create_tunnel", "arguments": {"local_port": app.port(), "protocol": "http"}}}))
        .await;
    let (created, _) = raw.recv_id(5).await;
    let url = created["result"]["structuredContent"]["public_url"].as_str().expect("created").to_string();
    raw.send(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {
        "name": "create_tunnel", "arguments": {"local_port": app.port(), "protocol": "tcp"}}}))
        .await;
    let (tcp, _) = raw.recv_id(6).await;
    assert!(tcp["result"]["structuredContent"]["public_url"].as_str().unwrap().starts_with("tcp://"), "{tcp}");
    assert_eq!(server_tunnels(&server), 2);
    let (status, _) = get(server.http_addr(), &url_host(&url), "/").await;
    assert_eq!(status, 200);

    let status = raw.close().await;
    assert!(status.success(), "clean exit: {status:?}");
    eventually("every tunnel closed after stdin closed", || server_tunnels(&server) == 0).await;
    let (_, body) = get(server.http_addr(), &url_host(&url), "/").await;
    assert_ne!(&body[..], b"hello from raw\n");
}

/// A 2026-07-28 client that never sends `initialize`: per-request metadata on every call.
#[tokio::test]
async fn raw_modern_requests_without_initialize() {
    let server = TestServer::start().await;
    let mut raw = Raw::spawn(&mcp_args(&server), None);
    raw.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": modern_meta()}})).await;
    let (list, _) = raw.recv_id(1).await;
    assert_eq!(list["result"]["tools"].as_array().map(Vec::len), Some(15), "{list}");
    raw.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"_meta": modern_meta(),
        "name": "create_tunnel", "arguments": {"local_port": 70000, "protocol": "http"}}}))
        .await;
    let (r, _) = raw.recv_id(2).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    raw.send_line("][").await;
    raw.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"_meta": modern_meta(),
        "name": "get_connection_info", "arguments": {"local_port": 8080, "protocol": "http"}}}))
        .await;
    let (r, _) = raw.recv_id(3).await;
    assert!(r["result"]["structuredContent"]["command"].as_str().unwrap().starts_with("rustunnel http 8080"), "{r}");
    assert!(raw.close().await.success());
}

#[test]
fn help_and_version() {
    let out = std::process::Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--server", "--api", "--insecure", "localhost:4040", "http://localhost:4041"] {
        assert!(help.contains(flag), "--help mentions {flag}:\n{help}");
    }
    let out = std::process::Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("rustunnel-mcp {}", env!("CARGO_PKG_VERSION")));
}

/// get_tunnel_history serves up to its documented 500 rows although the API pages at 200, in
/// the API's order (newest first); a P2P filter is refused with a pointer to list_tunnels, and
/// a refusal by the API does not blame the --api address.
#[tokio::test]
async fn history_longer_than_one_api_page() {
    use rustunnel_testkit::rustunnel_server::store::HistoryRecord;
    let server = TestServer::start().await;
    for i in 0..230 {
        let rec = HistoryRecord {
            id: format!("h{i:03}"),
            owner_id: "someone".into(),
            name: format!("t{i}"),
            protocol: "tcp".into(),
            opened_at: 1_000 + i,
            closed_at: Some(2_000 + i),
            ..Default::default()
        };
        server.handle.store().record_open(&rec).await.unwrap();
    }
    let (client, _) = connect(&mcp_args(&server), Some(server.handle.admin_token()), Era::Initialize).await;
    for (limit, want) in [(210, 210), (500, 230)] {
        let hist = ok(&call(&client, "get_tunnel_history", json!({"protocol": "tcp", "limit": limit})).await);
        let ids: Vec<&str> =
            hist["entries"].as_array().unwrap().iter().map(|e| e["tunnel_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), want, "limit {limit}");
        assert_eq!(hist["count"], want);
        let expected: Vec<String> = (0..want).map(|k| format!("h{:03}", 229 - k)).collect();
        assert_eq!(ids, expected, "newest first, no row twice");
    }
    let msg = err(&call(&client, "get_tunnel_history", json!({"protocol": "p2p"})).await);
    assert!(msg.contains("list_tunnels"), "{msg}");
    // A token the API refuses: the answer is about the token, not about where the API is.
    let (stranger, _) = connect(&mcp_args(&server), Some("not-a-token"), Era::Initialize).await;
    let msg = err(&call(&stranger, "get_tunnel_history", json!({})).await);
    assert!(!msg.contains("--api points"), "{msg}");
    stranger.cancel().await.unwrap();
    client.cancel().await.unwrap();
}
