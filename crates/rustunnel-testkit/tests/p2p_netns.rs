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
mod common;

use std::time::Duration;

use common::{nft, ns_exec, run, unique_tag, Lab, TOKEN};

const SERVER_IP: &str = "10.201.0.1";
/// The environment variable that makes this test binary a helper (see [`helper`]).
const HELPER_ENV: &str = "RT_P2P_HELPER";

/// The topology; its lab deletes the namespaces (and so every veth and process network) on drop.
struct Topology {
    public: String,
    peer_a: String,
    peer_b: String,
    lab: Lab,
}

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
        let tag = unique_tag();
        let name = |s: &str| format!("{tag}{s}");
        let (public, ra, rb, a, b) = (name("pub"), name("ra"), name("rb"), name("a"), name("b"));
        let mut t = Topology { public: public.clone(), peer_a: a.clone(), peer_b: b.clone(), lab: Lab::new()? };
        for ns in [&public, &ra, &rb, &a, &b] {
            t.lab.add_namespace(ns)?;
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

    fn start_server(&mut self) -> Result<(), String> {
        let ns = self.public.clone();
        let args = [
            "--control-addr",
            "10.201.0.1:4040",
            "--api-addr",
            "10.201.0.1:4041",
            "--http-addr",
            "off",
            "--https-addr",
            "off",
        ];
        self.lab.server(&ns, &args)?;
        Ok(())
    }

    fn helper(&mut self, ns: &str, mode: &str) -> Result<usize, String> {
        self.lab.helper(ns, HELPER_ENV, mode)
    }

    fn p2p(&mut self, ns: &str, args: &[&str]) -> Result<usize, String> {
        let cli = common::bin("rustunnel").to_string_lossy().to_string();
        let server = format!("{SERVER_IP}:4040");
        let mut all = vec!["p2p", "--server", &server, "--token", TOKEN, "--insecure", "--json"];
        all.extend_from_slice(args);
        self.lab.spawn(Some(ns), &cli, &all, &[])
    }

    fn wait_line(&mut self, idx: usize, want: &str, deadline: Duration) -> Result<String, String> {
        self.lab.wait_line(idx, want, deadline)
    }

    fn wait_exit(&mut self, idx: usize, deadline: Duration) -> Option<i32> {
        self.lab.wait_exit(idx, deadline)
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
    let Some((role, arg)) = common::helper_role(HELPER_ENV) else { return };
    match role.as_str() {
        "get" => common::roles::http_get(&arg, "x", "/metrics"),
        _ => panic!("unknown helper role {role}"),
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
    if common::skipped(&["ip", "nft"], &[]) {
        return;
    }
    if let Err(e) = scenario(false) {
        panic!("{e}");
    }
}

#[test]
fn relay_fallback_behind_a_symmetric_nat() {
    if common::skipped(&["ip", "nft"], &[]) {
        return;
    }
    if let Err(e) = scenario(true) {
        panic!("{e}");
    }
}
