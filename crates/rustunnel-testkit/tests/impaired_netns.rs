//! Tunnels over a bad link: the client and its local services in one network namespace, the
//! server and the visitors in another, joined only by `impaired_link.py`, which forwards each
//! packet after a random delay (packets overtake each other), drops some and duplicates some
//! (this kernel has no `sch_netem`; the script stands in for `tc qdisc ... netem`). Driving the
//! real `rustunnel-server` and `rustunnel` binaries, every byte through the tunnels must arrive
//! whole and in order, or not at all, and nothing may deadlock:
//!
//! - three TCP tunnel connections at once, each echoing 1.5 MB, checked by SHA-256;
//! - three HTTP downloads at once through the HTTP edge (the multiplexed data connection),
//!   checked by SHA-256;
//! - a link cut for seconds: with one-second heartbeats the client notices within about four
//!   seconds, comes back once the link does, and its public port works again.
//!
//! Addresses are inside namespaces created here (10.202.0.x); everything is deleted at the end,
//! also on failure. Without root, `ip` or `python3` the test prints "skipped: <reason>".
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{ns_exec, run, unique_tag, Lab, TOKEN};
use sha2::{Digest, Sha256};

const SERVER_IP: &str = "10.202.0.1";
const CLIENT_IP: &str = "10.202.0.2";
const HELPER_ENV: &str = "RT_IMPAIRED_HELPER";
const ECHO_BYTES: usize = 1_500_000;
const PAGE_BYTES: usize = 1_000_000;

fn page() -> Vec<u8> {
    (0..PAGE_BYTES).map(|i| (i as u32).wrapping_mul(2_246_822_519).to_be_bytes()[1]).collect()
}

/// Not a test on its own: the helper roles when re-executed inside a namespace.
#[test]
fn helper() {
    let Some((role, arg)) = common::helper_role(HELPER_ENV) else { return };
    match role.as_str() {
        // An HTTP/1.1 service answering every request with the same page.
        "web" => {
            let port = arg;
            let l = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind web");
            println!("web ready");
            let body = page();
            for s in l.incoming().map_while(Result::ok) {
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).is_ok_and(|n| n == 1) {
                        head.push(b[0]);
                    }
                    let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(&body);
                });
            }
        }
        // GET through the HTTP edge; prints "page <status line> <body bytes> hash-ok|hash-mismatch".
        "fetch" => {
            let mut s = TcpStream::connect(&arg).expect("connect to the edge");
            s.set_read_timeout(Some(Duration::from_secs(60))).ok();
            s.write_all(b"GET /page HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n").expect("write");
            let mut all = Vec::new();
            s.read_to_end(&mut all).expect("read");
            let split = all.windows(4).position(|w| w == b"\r\n\r\n").map_or(all.len(), |p| p + 4);
            let status = String::from_utf8_lossy(&all[..split]).lines().next().unwrap_or("").to_string();
            let body = &all[split..];
            let ok = Sha256::digest(body) == Sha256::digest(page());
            println!("page {status} {} {}", body.len(), if ok { "hash-ok" } else { "hash-mismatch" });
        }
        _ => panic!("unknown helper role {role}"),
    }
}

struct Link {
    server_ns: String,
    client_ns: String,
    stats: std::path::PathBuf,
    /// The relay process's index in the lab.
    relay: usize,
    lab: Lab,
}

impl Link {
    /// Two namespaces joined by the impaired link: `delay_ms` plus up to `jitter_ms` each way
    /// per packet, `loss` and `dup` as fractions of packets.
    fn build(delay_ms: &str, jitter_ms: &str, loss: &str, dup: &str) -> Result<Link, String> {
        let tag = unique_tag();
        let (server_ns, client_ns) = (format!("{tag}s"), format!("{tag}c"));
        let mut lab = Lab::new()?;
        lab.add_namespace(&server_ns)?;
        lab.add_namespace(&client_ns)?;
        let stats = lab.data_dir.path().join("link-stats");
        let (ts, tc) = (format!("{tag}ts"), format!("{tag}tc"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/impaired_link.py");
        let stats_arg = stats.to_string_lossy().to_string();
        let relay =
            lab.spawn(None, "python3", &[script, &ts, &tc, delay_ms, jitter_ms, loss, dup, "7", &stats_arg], &[])?;
        lab.wait_line(relay, "ready", Duration::from_secs(10))?;
        for (dev, ns, me, peer) in [(&ts, &server_ns, SERVER_IP, CLIENT_IP), (&tc, &client_ns, CLIENT_IP, SERVER_IP)] {
            run(&["ip", "link", "set", dev, "netns", ns])?;
            ns_exec(ns, &["ip", "addr", "add", me, "peer", peer, "dev", dev])?;
            ns_exec(ns, &["ip", "link", "set", dev, "up"])?;
        }
        Ok(Link { server_ns, client_ns, stats, relay, lab })
    }

    /// Cuts the link (every packet dropped), or restores it.
    fn toggle_cut(&mut self) -> Result<(), String> {
        run(&["kill", "-USR1", &self.lab.children[self.relay].id().to_string()])
    }

    /// The link's counters so far.
    fn counts(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.stats).map_err(|e| format!("link stats: {e}"))
    }

    /// `rustunnel-server` in the server namespace with the control port on the link and `args`.
    fn server(&mut self, args: &[&str]) -> Result<(), String> {
        let ns = self.server_ns.clone();
        let mut all = vec!["--control-addr", "10.202.0.1:4040", "--api-addr", "off", "--https-addr", "off"];
        all.extend_from_slice(args);
        self.lab.server(&ns, &all).map(|_| ())
    }

    /// The helper `role` in the client namespace, once it printed `ready`.
    fn local_service(&mut self, role: &str, ready: &str) -> Result<(), String> {
        let ns = self.client_ns.clone();
        let i = self.lab.helper(&ns, HELPER_ENV, role)?;
        self.lab.wait_line(i, ready, Duration::from_secs(10)).map(|_| ())
    }

    /// `rustunnel <protocol> <port> --json` in the client namespace; once the tunnel is ready,
    /// its index and the `tunnel_ready` line.
    fn tunnel(&mut self, protocol: &str, port: &str, extra: &[&str]) -> Result<(usize, String), String> {
        let cli = common::bin("rustunnel").to_string_lossy().to_string();
        let server = format!("{SERVER_IP}:4040");
        let mut args = vec![
            protocol,
            port,
            "--server",
            &server,
            "--token",
            TOKEN,
            "--insecure",
            "--json",
            "--local-host",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        let ns = self.client_ns.clone();
        let i = self.lab.spawn(Some(&ns), &cli, &args, &[])?;
        Ok((i, self.lab.wait_line(i, "\"tunnel_ready\"", Duration::from_secs(60))?))
    }

    /// Runs `n` helpers in the server namespace at once and checks each one's line.
    fn visitors(&mut self, n: usize, mode: &str, want: &str) -> Result<(), String> {
        let ns = self.server_ns.clone();
        let ids: Vec<usize> = (0..n).map(|_| self.lab.helper(&ns, HELPER_ENV, mode)).collect::<Result<_, _>>()?;
        for i in ids {
            let line = self.lab.wait_line(i, want.split(' ').next().unwrap_or(want), Duration::from_secs(120))?;
            if !line.contains(want) {
                return Err(format!("{mode}: {line}"));
            }
        }
        Ok(())
    }
}

#[test]
fn tunnels_survive_reordering_loss_and_duplicates() {
    if common::skipped(&["ip", "python3"], &["/dev/net/tun"]) {
        return;
    }
    let stats = bad_link_transfers().unwrap_or_else(|e| panic!("{e}"));
    println!("impaired link: {}", stats.trim());
    // The link really was bad: packets overtook each other, some were lost, some doubled.
    assert!(counter(&stats, "reordered") > 100, "{stats}");
    assert!(counter(&stats, "dropped") > 10, "{stats}");
    assert!(counter(&stats, "duplicated") > 10, "{stats}");
}

/// TCP echoes and HTTP downloads over the impaired link; the link's counters afterwards.
fn bad_link_transfers() -> Result<String, String> {
    // 1-9 ms each way: packets sent less than 8 ms apart may overtake each other.
    let mut link = Link::build("1", "8", "0.01", "0.01")?;
    link.server(&["--http-addr", "10.202.0.1:8080"])?;
    link.local_service("echo:9000", "echo ready")?;
    link.local_service("web:9001", "web ready")?;

    let (_, ready) = link.tunnel("tcp", "9000", &[])?;
    let port = tcp_port(&ready)?;
    link.visitors(3, &format!("client:{SERVER_IP}:{port}:{ECHO_BYTES}"), &format!("transfer {ECHO_BYTES} hash-ok"))?;

    link.tunnel("http", "9001", &["--subdomain", "web"])?;
    link.visitors(3, &format!("fetch:{SERVER_IP}:8080"), &format!("page HTTP/1.1 200 OK {PAGE_BYTES} hash-ok"))?;

    std::thread::sleep(Duration::from_millis(1200));
    link.counts()
}

/// One counter of the link's `key=value` stats line (0 when absent).
fn counter(stats: &str, key: &str) -> u64 {
    stats
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The port of a `tunnel_ready` line's `tcp://host:port` URL.
fn tcp_port(ready: &str) -> Result<u16, String> {
    ready
        .split("tcp://")
        .nth(1)
        .and_then(|r| r.split(':').nth(1))
        .and_then(|p| p.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u16>().ok())
        .ok_or(format!("no TCP port in {ready}"))
}

/// Heartbeats stop (packets dropped): the server frees resources within the
/// timeout, and the client reconnects with jittered backoff and gets its port back.
#[test]
fn a_cut_link_ends_the_session_and_the_client_returns_on_the_same_port() {
    if common::skipped(&["ip", "python3"], &["/dev/net/tun"]) {
        return;
    }
    let (what, stats) = cut_and_restore().unwrap_or_else(|e| panic!("{e}"));
    println!("{what}; {}", stats.trim());
    assert!(counter(&stats, "cut") > 0, "the link was cut: {stats}");
}

/// A tunnel whose link is cut for seconds and restored; what happened, and the link's counters.
fn cut_and_restore() -> Result<(String, String), String> {
    let mut link = Link::build("1", "2", "0", "0")?;
    // One-second heartbeats: three silent ones end a session.
    link.server(&["--http-addr", "off", "--heartbeat-secs", "1"])?;
    link.local_service("echo:9000", "echo ready")?;
    let (client, ready) = link.tunnel("tcp", "9000", &[])?;
    let port = tcp_port(&ready)?;
    let echo = format!("client:{SERVER_IP}:{port}:200000");
    link.visitors(1, &echo, "transfer 200000 hash-ok")?;

    link.toggle_cut()?;
    let cut_at = std::time::Instant::now();
    link.lab.wait_line(client, "\"event\":\"reconnecting\"", Duration::from_secs(20))?;
    let noticed = cut_at.elapsed();
    // Long enough for the server to have ended the session on its side as well.
    std::thread::sleep(Duration::from_secs(4));
    link.toggle_cut()?;
    let restored = std::time::Instant::now();
    link.lab.wait_line(client, "\"event\":\"reconnected\"", Duration::from_secs(60))?;
    let back = restored.elapsed();
    // The same public port works again.
    link.visitors(1, &echo, "transfer 200000 hash-ok")?;
    let what = format!("noticed the cut after {noticed:?}, reconnected {back:?} after the link came back");
    Ok((what, link.counts()?))
}
