//! Health checks a pool member runs on its own local service: a TCP connect, or an HTTP GET
//! of a path. The result decides whether the server sends the member traffic. The decision
//! logic ([`HealthTracker`]) is a plain state machine; [`run`] is the thin timer/socket driver.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::net::connect_tcp;

/// Longest HTTP response head read from a health endpoint.
const MAX_HEAD: usize = 4096;

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// Passes when a TCP connection to the local service opens.
    Tcp,
    /// Passes when `GET path` answers (2xx only when `expect_2xx`).
    Http { path: String, expect_2xx: bool },
}

/// A member's health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the member is reported unhealthy.
    pub max_failed: u32,
    /// Where the server POSTs an alert when the member's pool has no healthy member left.
    pub alert_webhook: Option<String>,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_MAX_FAILED: u32 = 3;

    pub fn new(kind: HealthKind) -> Self {
        HealthCheck {
            kind,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            max_failed: Self::DEFAULT_MAX_FAILED,
            alert_webhook: None,
        }
    }

    /// Parses the CLI form: `tcp`, `http` (GET /), or `http:/health`.
    pub fn parse_kind(spec: &str) -> Result<HealthKind, String> {
        let spec = spec.trim();
        match spec.split_once(':') {
            None if spec.eq_ignore_ascii_case("tcp") => Ok(HealthKind::Tcp),
            None if spec.eq_ignore_ascii_case("http") => Ok(HealthKind::Http { path: "/".into(), expect_2xx: true }),
            Some((k, path)) if k.eq_ignore_ascii_case("http") => {
                Ok(HealthKind::Http { path: normalize_path(path)?, expect_2xx: true })
            }
            _ => Err(format!("invalid health check '{spec}': expected tcp, http or http:/path")),
        }
    }

    /// One line for people and the API: `http GET /health every 5s`.
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            HealthKind::Tcp => "tcp connect".to_string(),
            HealthKind::Http { path, .. } => format!("http GET {path}"),
        };
        format!("{what} every {}s", self.interval.as_secs_f64())
    }

    /// Refuses values that make no sense (zero interval, zero failures).
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(3600) {
            return Err("health check interval must be between 10 ms and 1 hour".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            return Err("health check timeout must be between 1 ms and 5 minutes".into());
        }
        if self.max_failed == 0 || self.max_failed > 100 {
            return Err("health check max_failed must be 1-100".into());
        }
        if let HealthKind::Http { path, .. } = &self.kind {
            normalize_path(path)?;
        }
        Ok(())
    }
}

/// Paths start with `/` and hold no spaces or control characters (they go on a request line).
pub fn normalize_path(path: &str) -> Result<String, String> {
    let p = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    if p.len() > 1024 || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("invalid health check path '{path}'"));
    }
    Ok(p)
}

/// Turns check results into healthy/unhealthy transitions: `max_failed` consecutive failures
/// make a member unhealthy, one success makes it healthy again. Members start healthy.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    max_failed: u32,
    fails: u32,
    healthy: bool,
}

impl HealthTracker {
    pub fn new(max_failed: u32) -> Self {
        HealthTracker { max_failed: max_failed.max(1), fails: 0, healthy: true }
    }
    pub fn healthy(&self) -> bool {
        self.healthy
    }
    /// Records one result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.fails = 0;
            if !self.healthy {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.fails = self.fails.saturating_add(1);
            if self.healthy && self.fails >= self.max_failed {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// Runs one check; `Err` carries what was seen (`HTTP 503`, `nothing is listening`).
pub async fn check_once(kind: &HealthKind, host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut s = connect_tcp(host, port, timeout).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        })?;
        let HealthKind::Http { path, expect_2xx } = kind else { return Ok(()) };
        let host_header = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: rustunnel-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before a response".to_string());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let status = parse_status(&head).ok_or_else(|| "not an HTTP response".to_string())?;
        if (*expect_2xx && !(200..300).contains(&status)) || (!*expect_2xx && status >= 500) {
            return Err(format!("HTTP {status}"));
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..600).contains(&code).then_some(code)
}

/// A health transition to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub tunnel_id: String,
    pub name: String,
    pub healthy: bool,
    pub detail: String,
}

/// Checks every `interval` until cancelled, sending each transition on `tx`.
pub async fn run(
    check: HealthCheck,
    tunnel_id: String,
    name: String,
    host: String,
    port: u16,
    tx: mpsc::Sender<HealthChange>,
    cancel: CancellationToken,
) {
    let mut tracker = HealthTracker::new(check.max_failed);
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = check_once(&check.kind, &host, port, check.timeout) => r,
        };
        let detail = result.as_ref().err().cloned().unwrap_or_default();
        if let Some(healthy) = tracker.record(result.is_ok()) {
            let change = HealthChange { tunnel_id: tunnel_id.clone(), name: name.clone(), healthy, detail };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_needs_max_failed_in_a_row() {
        let mut t = HealthTracker::new(3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success resets the count");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), Some(true));
        assert!(t.healthy());
    }

    #[test]
    fn cli_specs() {
        assert_eq!(HealthCheck::parse_kind("tcp"), Ok(HealthKind::Tcp));
        assert_eq!(HealthCheck::parse_kind("http"), Ok(HealthKind::Http { path: "/".into(), expect_2xx: true }));
        assert_eq!(
            HealthCheck::parse_kind("http:/health"),
            Ok(HealthKind::Http { path: "/health".into(), expect_2xx: true })
        );
        assert_eq!(
            HealthCheck::parse_kind("HTTP:health"),
            Ok(HealthKind::Http { path: "/health".into(), expect_2xx: true })
        );
        assert!(HealthCheck::parse_kind("udp").is_err());
        assert!(HealthCheck::parse_kind("http:/a b").is_err());
        assert!(HealthCheck::parse_kind("http:/a\r\nX: y").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 999 x\r\n"), None);
    }

    #[tokio::test]
    async fn checks_against_real_sockets() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let http = HealthKind::Http { path: "/health".into(), expect_2xx: true };
        let t = Duration::from_secs(2);
        assert_eq!(check_once(&http, "127.0.0.1", port, t).await, Ok(()));
        assert_eq!(check_once(&http, "127.0.0.1", port, t).await, Err("HTTP 503".into()));
        server.await.unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(check_once(&HealthKind::Tcp, "127.0.0.1", closed, t).await.is_err());
    }
}
