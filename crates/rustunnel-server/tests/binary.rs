//! The `rustunnel-server` binary as an operator runs it.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rustunnel-server");

/// `rustunnel-server --dev` on loopback port 0 in `dir`, its banner on a pipe.
fn dev_server(dir: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .arg("--dev")
        .args(loopback_flags(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Asks the server to stop, as a supervisor would.
fn sigterm(child: &std::process::Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

fn loopback_flags(dir: &std::path::Path) -> Vec<String> {
    [
        "--data-dir",
        dir.to_str().unwrap(),
        "--control-addr",
        "127.0.0.1:0",
        "--api-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--https-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dev",
        "--domain",
        "--control-addr",
        "--api-addr",
        "--http-addr",
        "--https-addr",
        "--tcp-ports",
        "--udp-ports",
        "--data-dir",
        "--admin-token",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn refuses_to_start_without_auth_unless_dev() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(loopback_flags(dir.path())).env_remove("RUSTUNNEL_ADMIN_TOKEN").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to start without authentication"), "{out:?}");
}

#[test]
fn refuses_a_weak_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    for (how, weak) in [("flag", "x"), ("env", "change-me-to-a-long-random-string")] {
        let mut cmd = Command::new(BIN);
        cmd.args(loopback_flags(dir.path())).env_remove("RUSTUNNEL_ADMIN_TOKEN");
        match how {
            "flag" => cmd.args(["--admin-token", weak]),
            _ => cmd.env("RUSTUNNEL_ADMIN_TOKEN", weak),
        };
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{weak} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("admin_token") && err.contains("openssl rand -hex 24"), "{err}");
        assert!(weak.len() < 4 || !err.contains(weak), "the token itself is not echoed: {err}");
    }
}

#[test]
fn token_create_prints_a_token_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["token", "create", "--label", "laptop", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("rt_") && token.len() > 40, "{token}");
    let db = std::fs::read(dir.path().join("rustunnel.db")).unwrap();
    let wal = std::fs::read(dir.path().join("rustunnel.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "raw token must not be stored");
    }
}

/// `token create` takes the labels the API takes: a label that would be empty, too long, or
/// carry terminal escapes or bidirectional overrides into `token list` is refused.
#[test]
fn token_create_refuses_labels_the_api_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(65);
    for label in ["", "  ", "a\tb", "red \x1b[31m", "a\u{202e}b", long.as_str()] {
        let out = Command::new(BIN)
            .args(["token", "create", "--label", label, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{label:?} accepted");
        assert!(out.stdout.is_empty(), "{label:?}: a token was printed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("label must be 1-64 printable characters"), "{label:?}: {err}");
    }
    let out = Command::new(BIN)
        .args(["token", "create", "--label", " ci runner ", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(label ci runner,"), "{out:?}");
}

#[test]
fn dev_server_prints_its_token_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = dev_server(dir.path());
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut token = None;
    let mut ready = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        ready |= line.contains("ready");
        if let Some(t) = line.trim().strip_prefix("admin token") {
            token = Some(t.trim().to_string());
            break;
        }
    }
    assert!(ready);
    let token = token.expect("admin token printed");
    let saved = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    assert_eq!(saved.trim(), token);
    assert!(dir.path().join("tls-cert.pem").exists());
    let started = Instant::now();
    sigterm(&child);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// CPU ticks (user + system) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces), from field 3 on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A server whose stdout nobody reads (closed at once, as `| head -1` or a supervisor would)
/// keeps running: the banner's write errors are not fatal.
#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = dev_server(dir.path());
    drop(child.stdout.take());
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the server died when its stdout closed");
    sigterm(&child);
    let _ = child.wait();
}

/// Out of file descriptors: the accept loop backs off instead of spinning on
/// EMFILE, nothing crashes, and the edge serves again once descriptors are free.
#[cfg(target_os = "linux")]
#[test]
fn out_of_file_descriptors_the_server_backs_off_and_recovers() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", BIN, "--dev"])
        .args(loopback_flags(dir.path()))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let mut http = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("HTTP edge") {
            http = line.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok());
        }
        if line.contains("admin token") {
            break;
        }
    }
    let port = http.expect("HTTP edge port printed");
    // More connections than descriptors: the kernel completes them, the server accepts until
    // it runs out and the rest wait in the listen queue (kept short of its 128 places).
    let held: Vec<TcpStream> = (0..120).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.id()) - before;
    // Clock ticks are 1/100 s: 2 s of a spinning accept loop would be ~200.
    assert!(used < 40, "{used} ticks in 2 s while out of descriptors: the accept loop spins");
    assert!(child.try_wait().unwrap().is_none(), "the server died; its log:\n{}", log());
    drop(held);
    // Descriptors come back as the dropped connections are seen closed: the edge answers again.
    let started = Instant::now();
    loop {
        let answer = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        });
        if answer.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 404")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the edge did not recover: {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&child);
    let _ = child.wait();
}

/// One HTTP/1.1 request to `addr`; the status code and the body.
fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Tokens are shown once (the banner, the answer that mints one) and never reach the logs,
/// even at trace level: the admin token, a minted token in use, and a wrong one.
#[test]
fn tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--dev")
        .args(loopback_flags(dir.path()))
        .env("RUSTUNNEL_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut all);
        all
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut admin) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.trim().strip_prefix("management API") {
            api = url.trim().strip_prefix("http://localhost:").map(|p| format!("127.0.0.1:{p}"));
        }
        if let Some(t) = line.trim().strip_prefix("admin token") {
            admin = Some(t.trim().to_string());
            break;
        }
    }
    let (api, admin) = (api.expect("API address printed"), admin.expect("admin token printed"));
    let (status, body) = http(&api, "POST", "/api/tokens", &admin, r#"{"label":"log check"}"#);
    assert_eq!(status, 201, "{body}");
    let minted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let minted = minted["token"].as_str().unwrap().to_string();
    assert_eq!(http(&api, "GET", "/api/tunnels", &minted, "").0, 200);
    let wrong = "rt_0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(http(&api, "GET", "/api/tunnels", wrong, "").0, 401);
    sigterm(&child);
    let _ = child.wait();
    let logs = logs.join().unwrap();
    assert!(logs.contains("DEBUG") && logs.contains("token"), "the server logged at trace level: {logs}");
    eprintln!("{} bytes of logs checked", logs.len());
    for (what, token) in [("admin", admin.as_str()), ("minted", minted.as_str()), ("wrong", wrong)] {
        // Not in full, and not the secret part after the prefix either.
        assert!(!logs.contains(&token[3..]), "the {what} token is in the logs:\n{logs}");
    }
}

/// Random bytes, a TLS hello on a plaintext port, an HTTP request on a TLS port
/// and a port scan are closed quietly, with logging kept in bounds. Against every port of the
/// real binary at its default log level: 100 connect-then-close probes, 30 connections of
/// random bytes, 30 TLS ClientHello-shaped openings and 30 plain HTTP requests each; the
/// connections all end, the log stays (nearly) silent, and the edge still answers.
#[test]
fn probes_and_garbage_on_every_port_are_closed_quietly() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--dev")
        .args(loopback_flags(dir.path()))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut ports = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        for label in ["control plane", "management API", "HTTP edge", "HTTPS edge"] {
            if line.trim().starts_with(label) {
                ports.push(line.rsplit(':').next().unwrap().trim().parse::<u16>().unwrap());
            }
        }
        if line.contains("admin token") {
            break;
        }
    }
    assert_eq!(ports.len(), 4, "{ports:?}");
    let log_before = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap().lines().count();
    // A whole ClientHello record (512 bytes after its header) of junk after the version.
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    hello.extend((0..506u32).map(|i| (i * 7) as u8));
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    // (Closing: on the HTTP ports a well-formed request is served, and kept alive if asked.)
    let http = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    let started = Instant::now();
    for &port in &ports {
        for _ in 0..100 {
            drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
        let mut open = Vec::new();
        for payload in [&random, &hello, &http] {
            for _ in 0..30 {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let _ = s.write_all(payload);
                open.push(s);
            }
        }
        // Every connection is ended by the server (or answered and closed) in bounded time.
        for mut s in open {
            s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
            let mut sink = Vec::new();
            let r = s.read_to_end(&mut sink);
            assert!(
                r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "port {port}: {r:?}"
            );
        }
    }
    eprintln!("{} probes on 4 ports answered in {:?}", 4 * 190, started.elapsed());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    let new_lines: Vec<&str> = log.lines().skip(log_before).collect();
    assert!(new_lines.len() <= 4, "760 bad connections logged {} lines:\n{}", new_lines.len(), new_lines.join("\n"));
    // The edge still answers.
    let mut s = TcpStream::connect(("127.0.0.1", ports[2])).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(child.try_wait().unwrap().is_none(), "the server is still running");
    sigterm(&child);
    let _ = child.wait();
}
