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

/// Out of file descriptors (SECURITY.md): the accept loop backs off instead of spinning on
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
