//! Server-wide counters for `GET /metrics` (Prometheus text format).
//!
//! Per-tunnel counters live on [`crate::tunnel::TunnelStats`]; the totals exported here are the
//! sum over open tunnels plus what closed tunnels had when they closed, so they only grow.
//! Nothing here carries a token, an owner or a URL: metrics are public and aggregate only.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustunnel_proto::Protocol;

use crate::tunnel::Tunnel;

/// Upper bounds (seconds) of the HTTP latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    closed_bytes_in: AtomicU64,
    closed_bytes_out: AtomicU64,
    closed_requests: AtomicU64,
    closed_connections: AtomicU64,
    tunnels_closed: AtomicU64,
}

impl Metrics {
    /// Records one HTTP request forwarded through the edge (time until the response head).
    pub fn observe_http(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves a closing tunnel's final counters into the totals.
    pub fn tunnel_closed(&self, bytes_in: u64, bytes_out: u64, requests: u64, connections: u64) {
        self.closed_bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.closed_bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        self.closed_requests.fetch_add(requests, Ordering::Relaxed);
        self.closed_connections.fetch_add(connections, Ordering::Relaxed);
        self.tunnels_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, now: &Sample<'_>) -> String {
        let mut by_proto = [0u64; 3];
        let (mut bytes_in, mut bytes_out, mut requests, mut connections) = (0u64, 0u64, 0u64, 0u64);
        for t in now.tunnels {
            by_proto[proto_index(t.protocol)] += 1;
            let (i, o, r, c) = t.stats.get();
            bytes_in += i;
            bytes_out += o;
            requests += r;
            connections += c;
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        bytes_in += load(&self.closed_bytes_in);
        bytes_out += load(&self.closed_bytes_out);
        requests += load(&self.closed_requests);
        connections += load(&self.closed_connections);

        let mut s = String::with_capacity(2048);
        family(&mut s, "rustunnel_tunnels", "gauge", "Open tunnels by protocol.");
        for (p, n) in ["http", "tcp", "udp"].iter().zip(by_proto) {
            let _ = writeln!(s, "rustunnel_tunnels{{protocol=\"{p}\"}} {n}");
        }
        one_value(&mut s, "rustunnel_sessions", "gauge", "Connected client sessions.", now.sessions);
        one_value(
            &mut s,
            "rustunnel_tunnels_closed_total",
            "counter",
            "Tunnels closed since the server started.",
            load(&self.tunnels_closed),
        );
        one_value(
            &mut s,
            "rustunnel_connections_total",
            "counter",
            "TCP connections and UDP flows served by tunnels.",
            connections,
        );
        one_value(&mut s, "rustunnel_http_requests_total", "counter", "HTTP requests served by tunnels.", requests);
        family(
            &mut s,
            "rustunnel_bytes_total",
            "counter",
            "Bytes moved through tunnels (in: visitor to local service).",
        );
        let _ = writeln!(s, "rustunnel_bytes_total{{direction=\"in\"}} {bytes_in}");
        let _ = writeln!(s, "rustunnel_bytes_total{{direction=\"out\"}} {bytes_out}");
        family(
            &mut s,
            "rustunnel_http_request_duration_seconds",
            "histogram",
            "Time from a visitor's request to the local service's response head.",
        );
        let mut cumulative = 0u64;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += load(&self.latency_buckets[i]);
            let _ = writeln!(s, "rustunnel_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += load(&self.latency_buckets[LATENCY_BUCKETS.len()]);
        let _ = writeln!(s, "rustunnel_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = load(&self.latency_sum_us) as f64 / 1e6;
        let _ = writeln!(s, "rustunnel_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(s, "rustunnel_http_request_duration_seconds_count {}", load(&self.latency_count));
        let (failures, limited) = now.auth_failures;
        one_value(
            &mut s,
            "rustunnel_auth_failures_total",
            "counter",
            "Rejected tokens (control plane and API).",
            failures,
        );
        one_value(
            &mut s,
            "rustunnel_auth_rate_limited_total",
            "counter",
            "Attempts refused because the source IP failed too often.",
            limited,
        );
        one_value(
            &mut s,
            "rustunnel_p2p_relayed_bytes_total",
            "counter",
            "Payload bytes of P2P links relayed through the server (direct links add nothing).",
            now.p2p_relayed_bytes,
        );
        one_value(
            &mut s,
            "rustunnel_p2p_relayed_streams_total",
            "counter",
            "P2P streams relayed through the server.",
            now.p2p_relayed_streams,
        );
        s
    }
}

/// What the rest of the server holds at render time: open tunnels and sessions, and the
/// counters kept by the authenticator and the P2P hub.
pub struct Sample<'a> {
    pub tunnels: &'a [Arc<Tunnel>],
    pub sessions: usize,
    /// Rejected tokens, and attempts refused by the per-address limit.
    pub auth_failures: (u64, u64),
    pub p2p_relayed_bytes: u64,
    pub p2p_relayed_streams: u64,
}

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family with one sample and no labels.
fn one_value(s: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(s, name, kind, help);
    let _ = writeln!(s, "{name} {value}");
}

fn proto_index(p: Protocol) -> usize {
    match p {
        Protocol::Http => 0,
        Protocol::Tcp => 1,
        Protocol::Udp => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_output_order() {
        let m = Metrics::default();
        m.observe_http(Duration::from_millis(1));
        m.observe_http(Duration::from_millis(40));
        m.observe_http(Duration::from_secs(100));
        assert_eq!(m.latency_buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(m.latency_buckets[3].load(Ordering::Relaxed), 1);
        assert_eq!(m.latency_buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(m.latency_count.load(Ordering::Relaxed), 3);
    }
}
