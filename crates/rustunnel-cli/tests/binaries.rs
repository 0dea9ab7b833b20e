//! The real `rustunnel-server` and `rustunnel` binaries, driven as a user would: start the
//! server, run `rustunnel http|tcp|udp|start`, use the public URLs, stop with signals.
use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use rustunnel_testkit::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

mod common;
use common::{listening, port_after, server_bin, CLIENT};

struct Server {
    child: Child,
    control: u16,
    http: u16,
    _dir: tempfile::TempDir,
    admin_token: String,
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("output in time")
        .unwrap()
        .expect("process still running")
}

async fn start_server(dev: bool) -> Server {
    start_server_with(dev, &[]).await
}

async fn start_server_with(dev: bool, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(extra);
    cmd.args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--control-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
        ])
        .args(["--tcp-ports", "21000-21999", "--udp-ports", "21000-21999"])
        .env_remove("RUSTUNNEL_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if dev {
        cmd.arg("--dev");
    } else {
        cmd.args(["--admin-token", "admin-secret-for-tests"]);
    }
    let mut child = cmd.spawn().unwrap();
    let common::Ports { control, http, .. } = listening(&mut child).await;
    let admin_token = if dev {
        std::fs::read_to_string(dir.path().join("admin-token")).unwrap().trim().to_string()
    } else {
        "admin-secret-for-tests".into()
    };
    Server { child, control, http, _dir: dir, admin_token }
}

struct Client {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

async fn client(args: &[&str]) -> Client {
    let mut child = Command::new(CLIENT)
        .args(args)
        .env_remove("RUSTUNNEL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Client { child, lines }
}

impl Client {
    async fn event(&mut self, name: &str) -> serde_json::Value {
        loop {
            let line = next_line(&mut self.lines).await;
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if v["event"] == name {
                return v;
            }
        }
    }
}

fn host_of(url: &str) -> String {
    url.split("://").nth(1).unwrap().to_string()
}

#[tokio::test]
async fn http_tunnel_with_the_json_event_stream() {
    let server = start_server(true).await;
    let app = http_app("cli-app").await;
    let control = format!("127.0.0.1:{}", server.control);
    let mut c = client(&[
        "http",
        &app.port().to_string(),
        "--server",
        &control,
        "--insecure",
        "--json",
        "--subdomain",
        "clihttp",
    ])
    .await;
    let ready = c.event("tunnel_ready").await;
    assert_eq!(ready["protocol"], "http");
    assert_eq!(ready["public_url"], format!("http://clihttp.localhost:{}", server.http));
    assert!(ready["tunnel_id"].as_str().unwrap().len() > 10);
    let edge = ([127, 0, 0, 1], server.http).into();
    let (status, body) = get(edge, &host_of(ready["public_url"].as_str().unwrap()), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from cli-app\n");
    let req = c.event("request").await;
    assert_eq!(req["method"], "GET");
    assert_eq!(req["status"], 200);
    drop(server);
}

/// `--basic-auth`: curl without the login is challenged, with `-u` it gets the page; the flag
/// is refused with a clear message for a tcp tunnel or a short password.
#[tokio::test]
async fn basic_auth_through_the_real_binaries() {
    let server = start_server(true).await;
    let app = http_app("locked-app").await;
    let control = format!("127.0.0.1:{}", server.control);
    let port = app.port().to_string();
    let common = ["--server", &control, "--insecure", "--json"];
    let mut c = client(
        &[&["http", &port, "--subdomain", "locked", "--basic-auth", "ana:correct horse"][..], &common[..]].concat(),
    )
    .await;
    c.event("tunnel_ready").await;
    let url = format!("http://locked.localhost:{}/", server.http);
    let curl = |extra: &'static [&'static str]| {
        let url = url.clone();
        let resolve = format!("locked.localhost:{}:127.0.0.1", server.http);
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--resolve", &resolve])
                .args(extra)
                .arg(&url)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed: skipping the curl part");
    } else {
        assert!(curl(&[]).await.unwrap().ends_with("\n401"));
        assert!(curl(&["-u", "ana:wrong horse"]).await.unwrap().ends_with("\n401"));
        assert_eq!(curl(&["-u", "ana:correct horse"]).await.unwrap(), "hello from locked-app\n\n200");
    }
    for (args, why) in [
        (&["tcp", "22", "--basic-auth", "ana:correct horse"][..], "--basic-auth applies to http tunnels only"),
        (&["http", "3000", "--basic-auth", "ana:short"][..], "8-128"),
        (&["udp", "53", "--subdomain", "dns"][..], "--subdomain applies to http tunnels only"),
        (&["http", "3000", "--remote-port", "20001"][..], "--remote-port applies to tcp and udp tunnels only"),
        (&["tcp", "22", "--host-header", "rewrite"][..], "--host-header applies to http tunnels only"),
        (&["http", "3000", "--host-header", "two words"][..], "--host-header must be `rewrite`"),
        (&["http", "3000", "--health-check", "tcp"][..], "--group <NAME>"),
    ] {
        let out = run_to_end(args).await;
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// `--cidr-allow` / `--cidr-deny` through the real binaries: a loopback visitor outside the
/// allowed network gets 403, inside it the page; a malformed network is refused up front.
#[tokio::test]
async fn address_rules_through_the_real_binaries() {
    let server = start_server(true).await;
    let app = http_app("ruled-app").await;
    let control = format!("127.0.0.1:{}", server.control);
    let port = app.port().to_string();
    let edge = ([127, 0, 0, 1], server.http).into();
    for (sub, rules, want) in [
        ("lan-only", &["--cidr-allow", "10.0.0.0/8,192.168.0.0/16"][..], StatusCode::FORBIDDEN),
        ("loopback", &["--cidr-allow", "127.0.0.0/8", "--cidr-deny", "127.0.0.2"][..], StatusCode::OK),
    ] {
        let args =
            [&["http", &port, "--subdomain", sub, "--server", &control, "--insecure", "--json"][..], rules].concat();
        let mut c = client(&args).await;
        c.event("tunnel_ready").await;
        assert_eq!(get(edge, &format!("{sub}.localhost:{}", server.http), "/").await.0, want, "{sub}");
    }
    let out = run_to_end(&["tcp", "22", "--cidr-deny", "10.0.0.0/40"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'10.0.0.0/40' is not an IP address or network"), "{err}");
}

#[tokio::test]
async fn human_console_shows_url_and_request_log() {
    let server = start_server(true).await;
    let app = http_app("console").await;
    let control = format!("127.0.0.1:{}", server.control);
    let mut c =
        client(&["http", &app.port().to_string(), "--server", &control, "--insecure", "--subdomain", "console"]).await;
    let url = format!("http://console.localhost:{}", server.http);
    loop {
        let line = next_line(&mut c.lines).await;
        if line.contains(&url) {
            break;
        }
    }
    let edge = ([127, 0, 0, 1], server.http).into();
    assert_eq!(get(edge, &host_of(&url), "/some/path").await.0, StatusCode::NOT_FOUND);
    loop {
        let line = next_line(&mut c.lines).await;
        if line.contains("GET") && line.contains("404") && line.contains("/some/path") {
            break;
        }
    }
    // A visitor's path with a right-to-left override is shown written out, not obeyed.
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    let req = format!("GET /spoof\u{202e}txt.exe HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", host_of(&url));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
    loop {
        let line = next_line(&mut c.lines).await;
        if line.contains("/spoof") {
            assert!(line.contains("/spoof\\u{202e}txt.exe") && !line.contains('\u{202e}'), "{line:?}");
            break;
        }
    }
}

#[tokio::test]
async fn tcp_and_udp_tunnels_and_graceful_server_stop() {
    let server = start_server(true).await;
    let echo = tcp_echo().await;
    let uecho = udp_echo().await;
    let control = format!("127.0.0.1:{}", server.control);
    let mut t = client(&["tcp", &echo.port().to_string(), "--server", &control, "--insecure", "--json"]).await;
    let ready = t.event("tunnel_ready").await;
    let url = ready["public_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("tcp://localhost:21"), "{url}");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port_after(&url))).await.unwrap();
    s.write_all(b"over tcp").await.unwrap();
    assert_eq!(read_n(&mut s, 8).await, b"over tcp");

    let mut u = client(&["udp", &uecho.port().to_string(), "--server", &control, "--insecure", "--json"]).await;
    let ready = u.event("tunnel_ready").await;
    let url = ready["public_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("udp://localhost:21"), "{url}");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", port_after(&url))).await.unwrap();
    let mut buf = [0u8; 64];
    let mut got = false;
    for _ in 0..10 {
        sock.send(b"over udp").await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await {
            assert_eq!(&buf[..n], b"over udp");
            got = true;
            break;
        }
    }
    assert!(got);

    // SIGTERM: the server exits 0; clients are told and keep trying to reconnect, not exit.
    let Server { mut child, .. } = server;
    Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    t.event("reconnecting").await;
    assert!(t.child.try_wait().unwrap().is_none(), "client keeps running after a graceful server stop");
}

#[tokio::test]
async fn plain_data_connections_through_the_real_binaries() {
    let server = start_server_with(true, &["--allow-plain-data"]).await;
    let echo = tcp_echo().await;
    let app = http_app("plain-app").await;
    let control = format!("127.0.0.1:{}", server.control);
    let port = echo.port().to_string();
    let mut t = client(&["tcp", &port, "--server", &control, "--insecure", "--plain-data", "--json"]).await;
    let url = t.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port_after(&url))).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = pattern(8 << 20);
    let expect = sha256_hex(&data);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(sha256_hex(&got), expect);

    let app_port = app.port().to_string();
    let mut h = client(&["http", &app_port, "--server", &control, "--insecure", "--plain-data", "--json"]).await;
    let url = h.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();
    let (status, body) = get(([127, 0, 0, 1], server.http).into(), &host_of(&url), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from plain-app\n");

    // A server that does not allow it: the client says so, then works over TLS.
    let tls_only = start_server(true).await;
    let control = format!("127.0.0.1:{}", tls_only.control);
    let mut c = client(&["tcp", &port, "--server", &control, "--insecure", "--plain-data", "--json"]).await;
    let warning = c.event("error").await;
    assert_eq!(warning["code"], "plain_data_refused");
    let url = c.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port_after(&url))).await.unwrap();
    s.write_all(b"over tls").await.unwrap();
    assert_eq!(read_n(&mut s, 8).await, b"over tls");
}

#[tokio::test]
async fn start_runs_several_named_tunnels_from_a_file() {
    let server = start_server(true).await;
    let (a, b) = (http_app("first").await, http_app("second").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "server = \"127.0.0.1:{}\"\ntoken = \"{}\"\ninsecure = true\n\n[tunnels.one]\nprotocol = \"http\"\nlocal_port = {}\nsubdomain = \"one-site\"\n\n[tunnels.two]\nprotocol = \"http\"\nlocal_port = {}\nsubdomain = \"two-site\"\n",
            server.control,
            server.admin_token,
            a.port(),
            b.port()
        ),
    )
    .unwrap();
    let mut c = client(&["start", "--config", file.to_str().unwrap(), "--json"]).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = c.event("tunnel_ready").await;
        seen.push((r["name"].as_str().unwrap().to_string(), r["public_url"].as_str().unwrap().to_string()));
    }
    let edge = ([127, 0, 0, 1], server.http).into();
    for (name, url) in seen {
        let expect = if name == "one" { "hello from first\n" } else { "hello from second\n" };
        assert_eq!(get(edge, &host_of(&url), "/").await.1, expect, "{name}");
    }
}

#[tokio::test]
async fn wrong_token_exits_non_zero_with_a_clear_message() {
    let server = start_server(false).await;
    let control = format!("127.0.0.1:{}", server.control);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!("server = \"{control}\"\ntoken = \"wrong\"\ninsecure = true\n[tunnels.web]\nprotocol = \"http\"\nlocal_port = 3000\n"),
    )
    .unwrap();
    let file = file.to_string_lossy().to_string();
    // Every documented way of giving the token: the flag, the environment, the file.
    let ways: [(&str, Vec<&str>, Option<&str>); 3] = [
        ("flag", vec!["http", "3000", "--server", &control, "--insecure", "--token", "wrong"], None),
        ("RUSTUNNEL_TOKEN", vec!["http", "3000", "--server", &control, "--insecure"], Some("wrong")),
        ("config file", vec!["start", "--config", &file], None),
    ];
    for (way, args, env) in ways {
        let mut cmd = Command::new(CLIENT);
        cmd.args(&args).env_remove("RUSTUNNEL_TOKEN");
        if let Some(token) = env {
            cmd.env("RUSTUNNEL_TOKEN", token);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.unwrap().unwrap();
        assert!(!out.status.success(), "{way}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("token rejected by the server"), "{way}: {err}");
    }
}

#[tokio::test]
async fn unreachable_server_with_no_reconnect_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(CLIENT)
        .args(["tcp", "22", "--server", &format!("127.0.0.1:{port}"), "--no-reconnect", "--json"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("\"code\":\"server_unreachable\""), "{line}");
    assert!(line.contains("is rustunnel-server running"), "{line}");
}

#[tokio::test]
async fn demo_runs_end_to_end() {
    let out = tokio::time::timeout(Duration::from_secs(60), Command::new(server_bin()).arg("demo").output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("200 OK"), "{text}");
    assert!(text.contains("got 'ping through rustunnel' back"), "{text}");
}

/// Runs the client to its end (it must end by itself) without a token in the environment.
async fn run_to_end(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(CLIENT).args(args).env_remove("RUSTUNNEL_TOKEN").env_remove("RUSTUNNEL_SERVER").output(),
    )
    .await
    .expect("the client ends by itself")
    .unwrap()
}

#[tokio::test]
async fn bad_input_found_before_connecting_is_reported_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let toml = dir.path().join("ca.toml");
    std::fs::write(&toml, "ca = \"/nonexistent/ca.pem\"\n[tunnels.a]\nprotocol = \"http\"\nlocal_port = 3000\n")
        .unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let toml = toml.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["http", "30501", "--ca", "/nonexistent/ca.pem"], "invalid_ca"),
        (&["http", "30501", "--ca", not_pem], "invalid_ca"),
        (&["http", "30501", "--server", "127.0.0.1:notaport"], "invalid_server_address"),
        (&["http", "30501", "--server", "127.0.0.1:99999"], "invalid_server_address"),
        (&["http", "30501", "--server", "[::1"], "invalid_server_address"),
        (&["http", "30501", "--server", ""], "invalid_server_address"),
        (&["start", "-c", toml], "invalid_ca"),
        (&["p2p", "0", "--secret", "s", "--target", "svc", "--server", "127.0.0.1:notaport"], "invalid_server_address"),
    ];
    for (args, code) in cases {
        let mut json = args.to_vec();
        json.push("--json");
        let out = run_to_end(&json).await;
        assert!(!out.status.success(), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|_| panic!("{args:?}: no JSON event: {stdout:?}"));
        assert_eq!(last["event"], "error", "{args:?}");
        assert_eq!(last["code"], *code, "{args:?}");
        assert_eq!(last["fatal"], true, "{args:?}");
        assert!(last["hint"].as_str().unwrap().len() > 10, "{args:?}: {last}");

        let out = run_to_end(args).await;
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error: ") && err.contains("hint: "), "{args:?}: {err:?}");
    }
}

/// Waits for a client to exit by itself; returns its status and the rest of its stdout/stderr.
async fn finish(mut c: Client) -> (std::process::ExitStatus, Vec<String>, String) {
    let mut stderr = c.child.stderr.take().unwrap();
    let read_err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    let mut out = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = c.lines.next_line().await {
            out.push(line);
        }
        c.child.wait().await.unwrap()
    })
    .await
    .expect("the client exits by itself");
    (status, out, read_err.await.unwrap())
}

async fn kill_server(server: Server, signal: &str) {
    let Server { mut child, .. } = server;
    Command::new("kill").args([signal, &child.id().unwrap().to_string()]).status().await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
}

#[tokio::test]
async fn no_reconnect_says_why_it_exits_when_the_server_goes_away() {
    let echo = tcp_echo().await;
    let port = echo.port().to_string();
    for signal in ["-KILL", "-TERM"] {
        // --json: the last event is a fatal error with a code and a hint.
        let server = start_server(true).await;
        let control = format!("127.0.0.1:{}", server.control);
        let mut c = client(&["tcp", &port, "--server", &control, "--insecure", "--no-reconnect", "--json"]).await;
        c.event("tunnel_ready").await;
        kill_server(server, signal).await;
        let (status, out, _) = finish(c).await;
        assert!(!status.success(), "{signal}");
        let last: serde_json::Value = serde_json::from_str(out.last().expect("an event")).unwrap();
        assert_eq!(last["event"], "error", "{signal}: {out:?}");
        assert_eq!(last["code"], "connection_lost", "{signal}");
        assert_eq!(last["fatal"], true, "{signal}");
        assert!(last["hint"].as_str().unwrap().contains("--no-reconnect"), "{signal}: {last}");

        // People see the reason too.
        let server = start_server(true).await;
        let control = format!("127.0.0.1:{}", server.control);
        let mut c = client(&["tcp", &port, "--server", &control, "--insecure", "--no-reconnect"]).await;
        while !next_line(&mut c.lines).await.contains("tcp://") {}
        kill_server(server, signal).await;
        let (status, _, err) = finish(c).await;
        assert!(!status.success(), "{signal}");
        assert!(
            err.contains("connection to the server lost") && err.contains("exiting (--no-reconnect)"),
            "{signal}: {err}"
        );
    }
}

#[tokio::test]
async fn no_token_against_a_server_that_wants_one_says_how_to_give_one() {
    let server = start_server(false).await;
    let control = format!("127.0.0.1:{}", server.control);
    let out = run_to_end(&["http", "3000", "--server", &control, "--insecure"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the server requires a token and none was given"), "{err}");
    assert!(!err.contains("token rejected"), "{err}");
    assert!(err.contains("--token") && err.contains("RUSTUNNEL_TOKEN"), "{err}");
    assert!(err.contains("rustunnel-server token create --label NAME"), "{err}");
    let out = run_to_end(&["http", "3000", "--server", &control, "--insecure", "--json"]).await;
    let last: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(last["code"], "unauthorized");
    assert_eq!(last["fatal"], true);
}

#[tokio::test]
async fn bracketed_ipv6_local_host_reaches_the_local_service() {
    // A TCP echo on the IPv6 loopback.
    let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let echo_port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let server = start_server(true).await;
    let control = format!("127.0.0.1:{}", server.control);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v6.toml");
    std::fs::write(
        &file,
        format!("server = \"{control}\"\ninsecure = true\n[tunnels.v6]\nprotocol = \"tcp\"\nlocal_port = {echo_port}\nlocal_host = \"[::1]\"\n"),
    )
    .unwrap();
    let port = echo_port.to_string();
    let by_flag = ["tcp", &port, "--server", &control, "--insecure", "--local-host", "[::1]", "--json"];
    let by_file = ["start", "-c", file.to_str().unwrap(), "--json"];
    for args in [&by_flag[..], &by_file[..]] {
        let mut c = client(args).await;
        let ready = c.event("tunnel_ready").await;
        assert_eq!(ready["local_addr"], format!("[::1]:{echo_port}"), "{args:?}");
        let url = ready["public_url"].as_str().unwrap().to_string();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port_after(&url))).await.unwrap();
        s.write_all(b"over v6").await.unwrap();
        assert_eq!(read_n(&mut s, 7).await, b"over v6", "{args:?}");
    }
}

#[tokio::test]
async fn logs_to_a_redirected_stderr_carry_no_colour_codes() {
    let server = start_server(true).await;
    let control = format!("127.0.0.1:{}", server.control);
    // Nothing listens on the local port: the first visitor makes the client log a warning.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut c = client(&["tcp", &closed, "--server", &control, "--insecure", "--json"]).await;
    let url = c.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();
    let _visitor = tokio::net::TcpStream::connect(("127.0.0.1", port_after(&url))).await.unwrap();
    let mut err = BufReader::new(c.child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = err.next_line().await.unwrap().expect("client still running");
            if line.contains("WARN") {
                return line;
            }
        }
    })
    .await
    .expect("a warning in time");
    assert!(!line.contains('\x1b'), "{line:?}");
}

#[tokio::test]
async fn a_server_that_stays_away_gets_a_calm_console_and_every_json_event() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("127.0.0.1:{port}");
    // --json: each attempt is an error event and a reconnecting event; only the first error
    // carries the hint.
    let mut c = client(&["tcp", "22", "--server", &server, "--json"]).await;
    for attempt in 1..=4 {
        let e = c.event("error").await;
        assert_eq!(e["code"], "server_unreachable");
        assert_eq!(e["hint"].as_str().unwrap().is_empty(), attempt > 1, "{e}");
        assert_eq!(c.event("reconnecting").await["attempt"], attempt);
    }
    // People: the error and its hint once, one line saying it keeps retrying, then quiet
    // (an observation window of several attempts; the next line is due after 30 s).
    let mut c = client(&["tcp", "22", "--server", &server]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.child.start_kill().unwrap();
    let (_, _, err) = finish(c).await;
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].contains("error: server unreachable"), "{err}");
    assert!(lines[1].contains("hint: is rustunnel-server running"), "{err}");
    assert!(lines[2].contains("reconnecting in") && lines[2].contains("keeps trying"), "{err}");
}

#[tokio::test]
async fn a_rate_limited_client_waits_until_the_block_ends_before_retrying() {
    let server = start_server(false).await;
    let control = format!("127.0.0.1:{}", server.control);
    // Ten wrong tokens from this address: the server refuses it for a minute.
    for _ in 0..10 {
        let out = run_to_end(&["tcp", "22", "--server", &control, "--insecure", "--token", "wrong", "--json"]).await;
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"code\":\"unauthorized\""));
    }
    let mut c =
        client(&["tcp", "22", "--server", &control, "--insecure", "--token", &server.admin_token, "--json"]).await;
    let e = c.event("error").await;
    assert_eq!(e["code"], "rate_limited");
    assert_eq!(e["fatal"], false);
    // The server says when the one-minute block ends; the client waits that long (plus
    // jitter), not a generic backoff, and the hint names the wait.
    let secs: u64 =
        e["message"].as_str().unwrap().split("try again in ").nth(1).unwrap().trim_end_matches(" s").parse().unwrap();
    assert!((45..=60).contains(&secs), "{e}");
    assert!(e["hint"].as_str().unwrap().contains(&format!("wait {secs} s")), "{e}");
    let r = c.event("reconnecting").await;
    let delay = r["delay_ms"].as_u64().unwrap();
    assert!(delay >= (secs - 1) * 1000 && delay <= 72_000, "{r}");
    // A P2P client from the same address too (it used to retry within 5 s).
    let mut p = client(&[
        "p2p",
        "0",
        "--target",
        "svc",
        "--secret",
        "s3cret",
        "--server",
        &control,
        "--insecure",
        "--token",
        &server.admin_token,
        "--json",
    ])
    .await;
    let r = p.event("reconnecting").await;
    assert!(r["delay_ms"].as_u64().unwrap() >= 40_000, "{r}");
}

#[tokio::test]
async fn a_reserved_subdomain_is_refused_with_advice_to_pick_another() {
    let server = start_server(true).await;
    let control = format!("127.0.0.1:{}", server.control);
    for name in ["www", "api", "admin"] {
        let out = run_to_end(&["http", "3000", "--server", &control, "--insecure", "--subdomain", name]).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("subdomain '{name}' is reserved")), "{err}");
        assert!(err.contains("choose another --subdomain") && !err.contains("3-63 characters"), "{err}");
    }
}

/// Token rights through the real binaries: `rustunnel-server token create --subdomains
/// --ports` mints a limited token into a running server's database; the client gets a random
/// name under the allowed prefix and a port from the allowed range, and a name outside is
/// refused with the rights named and advice, exit non-zero.
#[tokio::test]
async fn a_limited_token_from_the_server_binary_is_enforced() {
    let server = start_server(false).await;
    let control = format!("127.0.0.1:{}", server.control);
    let out = std::process::Command::new(server_bin())
        .args(["token", "create", "--label", "ci", "--subdomains", "ci-*,docs", "--ports", "21990-21999"])
        .arg("--data-dir")
        .arg(server._dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("subdomains ci-*,docs, ports 21990-21999"), "{note}");
    let bad = std::process::Command::new(server_bin())
        .args(["token", "create", "--label", "x", "--ports", "21999-21000", "--data-dir"])
        .arg(server._dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success() && bad.stdout.is_empty(), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("port range '21999-21000'"), "{bad:?}");

    let common = ["--server", &control, "--insecure", "--token", &token, "--json"];
    let mut web = client(&[&["http", "3000"][..], &common[..]].concat()).await;
    let ready = web.event("tunnel_ready").await;
    assert!(ready["public_url"].as_str().unwrap().starts_with("http://ci-"), "{ready}");
    let mut db = client(&[&["tcp", "5432"][..], &common[..]].concat()).await;
    let ready = db.event("tunnel_ready").await;
    let port = port_after(ready["public_url"].as_str().unwrap());
    assert!((21990..=21999).contains(&port), "{ready}");

    let out =
        run_to_end(&["http", "3000", "--server", &control, "--insecure", "--token", &token, "--subdomain", "prod"])
            .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subdomain 'prod' is outside this token's rights; it may use ci-*,docs"), "{err}");
    assert!(err.contains("ask the server's admin for a token with wider rights"), "{err}");
}

#[tokio::test]
async fn p2p_with_no_reconnect_exits_when_the_server_goes_away() {
    let server = start_server(true).await;
    let control = format!("127.0.0.1:{}", server.control);
    let echo = tcp_echo().await;
    let port = echo.port().to_string();
    let common = ["--secret", "s3cret", "--server", &control, "--insecure", "--no-reconnect", "--json"];
    let mut publisher = client(&[&["p2p", &port, "--name", "svc"][..], &common[..]].concat()).await;
    publisher.event("p2p_ready").await;
    let mut visitor = client(&[&["p2p", "0", "--target", "svc"][..], &common[..]].concat()).await;
    visitor.event("p2p_ready").await;
    kill_server(server, "-KILL").await;
    for (who, c) in [("publisher", publisher), ("visitor", visitor)] {
        let (status, out, _) = finish(c).await;
        assert!(!status.success(), "{who}");
        assert!(!out.iter().any(|l| l.contains("\"reconnecting\"")), "{who}: {out:?}");
        let last: serde_json::Value = serde_json::from_str(out.last().unwrap()).unwrap();
        assert_eq!(last["code"], "connection_lost", "{who}: {out:?}");
        assert_eq!(last["fatal"], true, "{who}");
    }
}

/// A client whose stdout and stderr nobody reads (closed at once, as `| head -1` or a
/// supervisor would) keeps its tunnel up: writes to the closed console are not fatal, neither
/// the request log (stdout) nor the server's shutdown notice (stderr).
#[tokio::test]
async fn a_closed_console_does_not_stop_the_client() {
    let server = start_server(true).await;
    let app = http_app("quiet").await;
    let control = format!("127.0.0.1:{}", server.control);
    let mut c =
        client(&["http", &app.port().to_string(), "--server", &control, "--insecure", "--subdomain", "quiet"]).await;
    drop(c.lines);
    drop(c.child.stderr.take());
    let edge = ([127, 0, 0, 1], server.http).into();
    let host = format!("quiet.localhost:{}", server.http);
    let mut served = 0;
    for _ in 0..200 {
        if get(edge, &host, "/").await.0 == StatusCode::OK {
            served += 1;
            if served == 20 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(served, 20, "the tunnel never served 20 requests");
    // Each request was logged to the closed stdout; give the client time to write them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.child.try_wait().unwrap().is_none(), "the client died writing to a closed stdout");
    // A graceful stop: the client tells its (closed) stderr and starts reconnecting.
    kill_server(server, "-TERM").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.child.try_wait().unwrap().is_none(), "the client died writing to a closed stderr");
}

/// Ctrl+C (SIGINT) on a tunnel client: the request in flight gets its answer before the client
/// exits 0; a second Ctrl+C while a connection keeps the drain going quits at once.
#[tokio::test]
async fn ctrl_c_finishes_in_flight_requests_and_twice_quits_now() {
    use tokio::io::AsyncReadExt;
    let server = start_server(true).await;
    let app = http_app("cli-drain").await;
    let control = format!("127.0.0.1:{}", server.control);
    let port = app.port().to_string();
    let mut c = client(&["http", &port, "--subdomain", "drainer", "--server", &control, "--insecure", "--json"]).await;
    let url = c.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();
    let edge = ([127, 0, 0, 1], server.http).into();
    let host = host_of(&url);
    let slow = tokio::spawn(async move { get(edge, &host, "/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = c.child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    assert!(c.event("draining").await["names"][0].is_string());
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"slow done\n"[..]));
    // The request that finished during the drain still reaches the live log.
    let logged = c.event("request").await;
    assert_eq!((logged["path"].as_str(), logged["status"].as_u64()), (Some("/slow?ms=1500"), Some(200)));
    let status = tokio::time::timeout(Duration::from_secs(10), c.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");

    // A TCP connection left open holds the drain; the second Ctrl+C does not wait for it.
    let echo = tcp_echo().await;
    let mut t = client(&["tcp", &echo.port().to_string(), "--server", &control, "--insecure", "--json"]).await;
    let url = t.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port_after(&url))).await.unwrap();
    conn.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    conn.read_exact(&mut one).await.unwrap();
    let pid = t.child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    t.event("draining").await;
    Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(3), t.child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn proxy_protocol_both_ways_through_the_real_binaries() {
    use tokio::io::AsyncReadExt;
    // The server believes PROXY headers from the balancer at 127.0.0.2 only; the tunnel sends
    // one (v2) to its local service, which parses it.
    let server = start_server_with(true, &["--proxy-protocol-from", "127.0.0.2/32"]).await;
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = format!("127.0.0.1:{}", server.control);
    let port = local.local_addr().unwrap().port().to_string();
    let mut t = client(&["tcp", &port, "--proxy-protocol", "v2", "--server", &control, "--insecure", "--json"]).await;
    let url = t.event("tunnel_ready").await["public_url"].as_str().unwrap().to_string();

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut visitor = sock.connect(([127, 0, 0, 1], port_after(&url)).into()).await.unwrap();
    visitor.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 5432\r\nping").await.unwrap();

    let (mut s, _) = tokio::time::timeout(Duration::from_secs(20), local.accept()).await.unwrap().unwrap();
    let mut got = Vec::new();
    let header = loop {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a whole header: {got:?}");
        got.extend_from_slice(&buf[..n]);
        if got.len() >= 16 {
            let len = 16 + usize::from(u16::from_be_bytes([got[14], got[15]]));
            if got.len() >= len + 4 {
                break ppp::v2::Header::try_from(&got[..len]).unwrap().to_owned();
            }
        }
    };
    let ppp::v2::Addresses::IPv4(a) = header.addresses else { panic!("{header:?}") };
    assert_eq!((a.source_address.to_string(), a.source_port), ("203.0.113.7".to_string(), 51000));
    assert_eq!(&got[header.len()..], b"ping");
}
