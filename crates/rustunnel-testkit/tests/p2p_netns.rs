//! P2P through real NATs: network namespaces this test creates (a "public" namespace with the
//! server, two NAT routers doing masquerade, a private peer behind each), driving the real
//! `rustunnel-server` and `rustunnel` binaries with `ip netns exec`.
//!
//! - Two endpoint-independent NATs: the peers connect DIRECT and the server relays no payload.
//! - One symmetric NAT (`masquerade fully-random`): punching fails, the link falls back to the
//!   RELAY and still carries the data.
//! - A large transfer is checked by SHA-256 in each mode; a wrong secret is refused.
//!
//! Every address is inside namespaces created here (10.201.x.y); each namespace is deleted at
//! the end, also on failure (Drop guard). Without root, `ip` or `nft` the tests print
//! "skipped: <reason>" and pass. Helper processes inside namespaces are this test binary
//! re-executed with `RT_P2P_HELPER` set (see [`helper`]).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const TOKEN: &str = "netns-admin-token-0123456789";
const SERVER_IP: &str = "10.201.0.1";

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {}", args, String::from_utf8_lossy(&out.stderr)))
    }
}

fn ns_exec(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    c.stdin.take().ok_or("stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    let out = c.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err() && Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("`{tool}` not installed (apt-get install iproute2 nftables)"));
        }
    }
    let probe = format!("rtprobe{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
    if run(&["ip", "netns", "add", &probe]).is_err() {
        return Some("`ip netns add` is not permitted here".into());
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    for b in ["rustunnel-server", "rustunnel"] {
        if !bin(b).exists() {
            return Some(format!("{} not built (cargo build -p rustunnel-server -p rustunnel-cli)", bin(b).display()));
        }
    }
    None
}

/// `target/<profile>/<name>`, next to this test executable's `deps/` directory.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().and_then(|d| d.parent()).map(PathBuf::from).unwrap_or_default();
    dir.join(name)
}

/// The topology; deletes its namespaces (and so every veth and process network) on drop.
struct Topology {
    public: String,
    peer_a: String,
    peer_b: String,
    all: Vec<String>,
    children: Vec<Child>,
    data_dir: tempfile::TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.all {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn router_rules(symmetric: bool) -> String {
    let masq = if symmetric { "masquerade fully-random" } else { "masquerade" };
    // Unsolicited packets from the outside are dropped before conntrack confirms them, so
    // they never occupy the port a later outgoing mapping wants (real routers behave alike).
    format!(
        "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority 100; policy accept;\n    oifname \"wan\" {masq}\n  }}\n}}\n\
         table inet filter {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    iifname \"wan\" ct state new drop\n  }}\n}}\n"
    )
}

impl Topology {
    fn build(symmetric_a: bool) -> Result<Topology, String> {
        let tag = format!("rt{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let name = |s: &str| format!("{tag}{s}");
        let (public, ra, rb, a, b) = (name("pub"), name("ra"), name("rb"), name("a"), name("b"));
        let mut t = Topology {
            public: public.clone(),
            peer_a: a.clone(),
            peer_b: b.clone(),
            all: Vec::new(),
            children: Vec::new(),
            data_dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        for ns in [&public, &ra, &rb, &a, &b] {
            run(&["ip", "netns", "add", ns])?;
            t.all.push(ns.clone());
            ns_exec(ns, &["ip", "link", "set", "lo", "up"])?;
        }
        // public <-> routers (WAN side), routers <-> peers (LAN side).
        run(&["ip", "link", "add", "wan", "netns", &ra, "type", "veth", "peer", "name", "ra", "netns", &public])?;
        run(&["ip", "link", "add", "wan", "netns", &rb, "type", "veth", "peer", "name", "rb", "netns", &public])?;
        run(&["ip", "link", "add", "lan", "netns", &ra, "type", "veth", "peer", "name", "eth0", "netns", &a])?;
        run(&["ip", "link", "add", "lan", "netns", &rb, "type", "veth", "peer", "name", "eth0", "netns", &b])?;
        let addrs: [(&str, &str, &str); 8] = [
            (&public, "ra", "10.201.0.1/24"),
            (&public, "rb", "10.201.3.1/24"),
            (&ra, "wan", "10.201.0.2/24"),
            (&rb, "wan", "10.201.3.2/24"),
            (&ra, "lan", "10.201.1.1/24"),
            (&rb, "lan", "10.201.2.1/24"),
            (&a, "eth0", "10.201.1.2/24"),
            (&b, "eth0", "10.201.2.2/24"),
        ];
        for (ns, dev, addr) in addrs {
            ns_exec(ns, &["ip", "addr", "add", addr, "dev", dev])?;
            ns_exec(ns, &["ip", "link", "set", dev, "up"])?;
        }
        ns_exec(&ra, &["ip", "route", "add", "default", "via", "10.201.0.1"])?;
        ns_exec(&rb, &["ip", "route", "add", "default", "via", "10.201.3.1"])?;
        ns_exec(&a, &["ip", "route", "add", "default", "via", "10.201.1.1"])?;
        ns_exec(&b, &["ip", "route", "add", "default", "via", "10.201.2.1"])?;
        for ns in [&public, &ra, &rb] {
            ns_exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        nft(&ra, &router_rules(symmetric_a))?;
        nft(&rb, &router_rules(false))?;
        Ok(t)
    }

    fn spawn(&mut self, ns: &str, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<usize, String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in envs {
            c.env(k, v);
        }
        let child = c.spawn().map_err(|e| format!("spawn {program}: {e}"))?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    fn start_server(&mut self) -> Result<(), String> {
        let dir = self.data_dir.path().to_string_lossy().to_string();
        let ns = self.public.clone();
        let server = bin("rustunnel-server").to_string_lossy().to_string();
        let args = [
            "--control-addr",
            "10.201.0.1:4040",
            "--api-addr",
            "10.201.0.1:4041",
            "--http-addr",
            "off",
            "--https-addr",
            "off",
            "--admin-token",
            TOKEN,
            "--data-dir",
            &dir,
        ];
        self.spawn(&ns, &server, &args, &[])?;
        Ok(())
    }

    /// Runs this test binary as a helper inside `ns`.
    fn helper(&mut self, ns: &str, mode: &str) -> Result<usize, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?.to_string_lossy().to_string();
        self.spawn(ns, &exe, &["--exact", "helper", "--nocapture", "--test-threads=1"], &[("RT_P2P_HELPER", mode)])
    }

    fn p2p(&mut self, ns: &str, args: &[&str]) -> Result<usize, String> {
        let cli = bin("rustunnel").to_string_lossy().to_string();
        let server = format!("{SERVER_IP}:4040");
        let mut all = vec!["p2p", "--server", &server, "--token", TOKEN, "--insecure", "--json"];
        all.extend_from_slice(args);
        self.spawn(ns, &cli, &all, &[])
    }

    /// Reads the child's stdout lines until one contains `want` (returned), or the deadline.
    fn wait_line(&mut self, idx: usize, want: &str, deadline: Duration) -> Result<String, String> {
        let out = self.children[idx].stdout.take().ok_or("stdout taken")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let end = Instant::now() + deadline;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                // A leading '^' anchors the match at the start of the line.
                Ok(line) if want.strip_prefix('^').map_or(line.contains(want), |w| line.starts_with(w)) => {
                    // Keep draining so the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Ok(line);
                }
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.children[idx].stderr.take() {
            let _ = self.children[idx].kill();
            let _ = e.read_to_string(&mut err);
        }
        Err(format!("no line with {want:?}; stdout: {seen:?}; stderr: {err}"))
    }

    fn wait_exit(&mut self, idx: usize, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.children[idx].try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `rustunnel_p2p_relayed_bytes_total` from the server's metrics.
    fn relayed_bytes(&mut self) -> Result<u64, String> {
        let ns = self.public.clone();
        let i = self.helper(&ns, &format!("get:{SERVER_IP}:4041"))?;
        let line = self.wait_line(i, "^rustunnel_p2p_relayed_bytes_total ", Duration::from_secs(10))?;
        line.rsplit(' ').next().and_then(|n| n.trim().parse().ok()).ok_or(format!("bad metric line {line}"))
    }
}

/// Not a test on its own: the helper role when re-executed inside a namespace.
#[test]
fn helper() {
    let Ok(mode) = std::env::var("RT_P2P_HELPER") else { return };
    let parts: Vec<&str> = mode.splitn(2, ':').collect();
    match parts.as_slice() {
        ["echo", port] => {
            let l = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind echo");
            println!("echo ready");
            for s in l.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().expect("clone");
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            }
        }
        ["client", rest] => {
            let (addr, len) = rest.rsplit_once(':').expect("addr:len");
            let len: usize = len.parse().expect("len");
            let data: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0]).collect();
            let want = hex::encode(Sha256::digest(&data));
            let s = TcpStream::connect(addr).expect("connect to the visitor's listener");
            let mut w = s.try_clone().expect("clone");
            let t = std::thread::spawn(move || {
                w.write_all(&data).expect("write");
                w.shutdown(std::net::Shutdown::Write).expect("shutdown");
            });
            let mut got = Vec::with_capacity(len);
            let mut r = s;
            r.set_read_timeout(Some(Duration::from_secs(60))).ok();
            r.read_to_end(&mut got).expect("read");
            t.join().expect("writer");
            let h = hex::encode(Sha256::digest(&got));
            println!("transfer {} {} {}", got.len(), if h == want { "hash-ok" } else { "hash-mismatch" }, h);
        }
        ["get", addr] => {
            let mut s = TcpStream::connect(addr).expect("connect to the API");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            print!("{body}");
        }
        _ => panic!("unknown helper mode {mode}"),
    }
}

const BIG: usize = 16 * 1024 * 1024;

fn scenario(symmetric: bool) -> Result<(), String> {
    let mut t = Topology::build(symmetric)?;
    t.start_server()?;
    let (a, b) = (t.peer_a.clone(), t.peer_b.clone());
    let echo = t.helper(&b, "echo:9000")?;
    t.wait_line(echo, "echo ready", Duration::from_secs(10))?;
    let publisher = t.p2p(&b, &["9000", "--secret", "hunter2", "--name", "svc", "--local-host", "127.0.0.1"])?;
    t.wait_line(publisher, "\"p2p_ready\"", Duration::from_secs(20))?;
    let visitor = t.p2p(&a, &["7000", "--secret", "hunter2", "--target", "svc"])?;
    let ready = t.wait_line(visitor, "\"p2p_ready\"", Duration::from_secs(20))?;
    let want = if symmetric { "\"mode\":\"relayed\"" } else { "\"mode\":\"direct\"" };
    if !ready.contains(want) {
        return Err(format!("expected {want} in {ready}"));
    }
    let client = t.helper(&a, &format!("client:127.0.0.1:7000:{BIG}"))?;
    let line = t.wait_line(client, "transfer ", Duration::from_secs(120))?;
    if !line.contains(&format!("transfer {BIG} hash-ok")) {
        return Err(format!("transfer failed: {line}"));
    }
    let relayed = t.relayed_bytes()?;
    if symmetric && relayed < 2 * BIG as u64 {
        return Err(format!("relay mode should relay the payload, server counted {relayed} bytes"));
    }
    if !symmetric && relayed != 0 {
        return Err(format!("direct mode relayed {relayed} payload bytes through the server"));
    }
    // A wrong secret is refused with a clear message, and the visitor exits.
    let bad = t.p2p(&a, &["7001", "--secret", "wrong", "--target", "svc"])?;
    let err = t.wait_line(bad, "wrong secret for 'svc'", Duration::from_secs(20))?;
    if !err.contains("\"fatal\":true") {
        return Err(format!("wrong secret should be fatal: {err}"));
    }
    if t.wait_exit(bad, Duration::from_secs(10)) != Some(1) {
        return Err("visitor with a wrong secret should exit with status 1".into());
    }
    Ok(())
}

#[test]
fn direct_between_two_endpoint_independent_nats() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    if let Err(e) = scenario(false) {
        panic!("{e}");
    }
}

#[test]
fn relay_fallback_behind_a_symmetric_nat() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    if let Err(e) = scenario(true) {
        panic!("{e}");
    }
}
