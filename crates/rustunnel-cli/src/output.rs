//! What the tunnel commands print: a status block and a live request log for people, or one
//! JSON object per line (`--json`) for programs and agents.
use std::io::Write;
use std::time::{Duration, Instant};

use rustunnel_client::Event;
use rustunnel_proto::names::is_hidden;

/// How often the console says it is still reconnecting while the server stays away.
const STILL_RECONNECTING_EVERY: Duration = Duration::from_secs(30);

/// Keeps the console calm while the server is away (ngrok-like): the first failure is shown
/// with its hint, an error identical to the one before it is not shown again, and reconnect
/// attempts after the first are summarised every [`STILL_RECONNECTING_EVERY`].
#[derive(Debug, Default)]
pub struct Outage {
    /// Code and message of the last non-fatal error of this outage.
    last_error: Option<(String, String)>,
    /// When the first reconnect attempt of this outage was reported.
    since: Option<Instant>,
    /// When a reconnect line was last shown.
    last_line: Option<Instant>,
}

/// What the console shows for a `reconnecting` event.
#[derive(Debug, PartialEq, Eq)]
pub enum ReconnectLine {
    /// The first of an outage: say what happened and when the client retries.
    First,
    /// A later one, after a while: how long the server has been away.
    Still {
        offline: Duration,
    },
    Quiet,
}

impl Outage {
    /// Records a non-fatal error; returns whether it repeats the one before it. A visitor that
    /// found the local service down is news each time, not part of an outage.
    pub fn repeated_error(&mut self, code: &str, message: &str) -> bool {
        if code == "local_unreachable" {
            return false;
        }
        let same = self.last_error.as_ref().is_some_and(|(c, m)| c == code && m == message);
        if !same {
            self.last_error = Some((code.to_string(), message.to_string()));
        }
        same
    }

    /// Records a reconnect attempt at `now`; says what to show for it.
    pub fn reconnecting(&mut self, now: Instant) -> ReconnectLine {
        let Some(since) = self.since else {
            self.since = Some(now);
            self.last_line = Some(now);
            return ReconnectLine::First;
        };
        if self.last_line.is_some_and(|l| now.duration_since(l) < STILL_RECONNECTING_EVERY) {
            return ReconnectLine::Quiet;
        }
        self.last_line = Some(now);
        ReconnectLine::Still { offline: now.duration_since(since) }
    }

    /// The tunnels are back: the next failure starts a new outage.
    pub fn over(&mut self) {
        *self = Outage::default();
    }
}

/// Text from the server (or a visitor) as the terminal should show it: the characters that
/// would not appear as themselves ([`is_hidden`]: escape sequences, bidirectional overrides)
/// written out as `\u{..}` instead of acting.
pub fn shown(cell: &str) -> String {
    if !cell.chars().any(is_hidden) {
        return cell.to_string();
    }
    cell.chars().map(|c| if is_hidden(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// A line to stderr; a closed stderr is not a reason to stop (`eprintln!` would panic).
macro_rules! to_stderr {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `700 ms`, `63 s`: delays as people read them.
fn human_ms(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{} s", (ms + 500) / 1000)
    }
}

/// Error codes of events that report a fallback, not a failure: shown as warnings.
const WARNINGS: &[&str] = &["plain_data_refused"];

pub struct Printer {
    pub json: bool,
    header_printed: bool,
    outage: Outage,
    /// Stdout, written in one syscall per batch of events rather than per line (a busy tunnel
    /// logs tens of thousands of requests a second).
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer {
            json,
            header_printed: false,
            outage: Outage::default(),
            out: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        }
    }

    /// Prints an event and flushes. Human output goes to stdout except errors (stderr).
    pub fn event(&mut self, e: &Event) {
        self.queue(e);
        self.flush();
    }

    /// Writes what was queued.
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// Prints an event into the stdout buffer ([`Printer::flush`] sends it); what goes to
    /// stderr goes now, after what stdout holds, to keep the order.
    pub fn queue(&mut self, e: &Event) {
        let out = &mut self.out;
        if matches!(e, Event::TunnelReady { .. } | Event::Reconnected { .. }) {
            self.outage.over();
        }
        if self.json {
            // Every event goes out (programs count attempts), but the hint of an error that
            // repeats the one before it is left empty instead of repeated each attempt.
            let line = match e {
                Event::Error { code, message, hint, fatal: false } if !hint.is_empty() => {
                    if self.outage.repeated_error(code, message) {
                        serde_json::to_string(&Event::Error {
                            code: code.clone(),
                            message: message.clone(),
                            hint: String::new(),
                            fatal: false,
                        })
                    } else {
                        serde_json::to_string(e)
                    }
                }
                _ => serde_json::to_string(e),
            };
            if let Ok(line) = line {
                let _ = writeln!(out, "{line}");
            }
            return;
        }
        match e {
            Event::TunnelReady { name, public_url, public_urls, local_addr, .. } => {
                if !self.header_printed {
                    let _ = writeln!(out, "rustunnel {}  (Ctrl+C to quit)\n", env!("CARGO_PKG_VERSION"));
                    self.header_printed = true;
                }
                let _ = writeln!(out, "  {name:<12} {public_url} -> {local_addr}");
                for u in public_urls.iter().filter(|u| *u != public_url) {
                    let _ = writeln!(out, "  {:<12} {u} -> {local_addr}", "");
                }
            }
            Event::Request { name, method, path, status, duration_ms, remote_addr } => {
                // Method and path are the visitor's bytes: shown, never acted on by the terminal.
                let (method, path) = (shown(method), shown(path));
                let _ =
                    writeln!(out, "  {name:<12} {method:<7} {status} {duration_ms:>8.1}ms  {path}  ({remote_addr})");
            }
            Event::RequestsNotShown { count } => {
                let _ = writeln!(out, "  ... {count} more requests not shown (too many to list)");
            }
            Event::Reconnecting { attempt, delay_ms, reason } => {
                let delay = human_ms(*delay_ms);
                let text = match self.outage.reconnecting(Instant::now()) {
                    // The error just shown already says why.
                    ReconnectLine::First if self.outage.last_error.as_ref().is_some_and(|(_, m)| m == reason) => {
                        format!("reconnecting in {delay} (and keeps trying; Ctrl+C to quit)")
                    }
                    ReconnectLine::First => {
                        format!(
                            "connection lost ({reason}); reconnecting in {delay} (and keeps trying; Ctrl+C to quit)"
                        )
                    }
                    ReconnectLine::Still { offline } => format!(
                        "still reconnecting: offline for {}, attempt {attempt}, next in {delay}",
                        human_ms(offline.as_millis() as u64)
                    ),
                    ReconnectLine::Quiet => return,
                };
                let _ = out.flush();
                to_stderr!("  {text}");
            }
            Event::Reconnected { name, public_url, .. } => {
                let _ = writeln!(out, "  {name:<12} back online at {public_url}");
            }
            Event::TunnelClosed { name, reason, message, .. } => {
                let _ = writeln!(out, "  {name:<12} closed by the server ({reason}): {message}");
            }
            Event::ServerShutdown { message } => {
                let _ = out.flush();
                to_stderr!("  server: {message}");
            }
            Event::Health { name, healthy: true, .. } => {
                let _ = writeln!(out, "  {name:<12} healthy again: back in the pool");
            }
            Event::Health { name, healthy: false, detail, .. } => {
                let _ = writeln!(out, "  {name:<12} unhealthy ({detail}): taken out of the pool");
            }
            Event::Draining { names } => {
                let _ = out.flush();
                to_stderr!(
                    "  stopping: finishing in-flight requests and connections of {} (Ctrl+C again to quit now)",
                    names.join(", ")
                );
            }
            Event::P2pReady { role, name, protocol, mode, local_addr } => {
                if !self.header_printed {
                    let _ = writeln!(out, "rustunnel {}  (Ctrl+C to quit)\n", env!("CARGO_PKG_VERSION"));
                    self.header_printed = true;
                }
                match mode {
                    Some(mode) => {
                        let _ = writeln!(out, "  p2p {name:<12} {protocol} listening on {local_addr} ({mode}; {role})");
                    }
                    None => {
                        let _ =
                            writeln!(out, "  p2p {name:<12} {protocol} {local_addr} published; waiting for visitors");
                    }
                }
            }
            Event::P2pLink { name, mode, role, .. } => {
                let _ = writeln!(out, "  p2p {name:<12} link up: {mode} ({role})");
            }
            Event::P2pConnection { name, mode, peer, .. } => {
                let _ = writeln!(out, "  p2p {name:<12} connection from {peer} ({mode})");
            }
            Event::Error { code, message, hint, fatal } => {
                if !fatal && self.outage.repeated_error(code, message) {
                    return;
                }
                let _ = out.flush();
                let label = if WARNINGS.contains(&code.as_str()) { "warning" } else { "error" };
                to_stderr!("  {label}: {message}\n  hint: {hint}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_shows_its_first_attempt_then_a_line_every_half_minute() {
        let mut o = Outage::default();
        let t0 = Instant::now();
        assert!(!o.repeated_error("server_unreachable", "refused"));
        assert_eq!(o.reconnecting(t0), ReconnectLine::First);
        for i in 1..40 {
            assert!(o.repeated_error("server_unreachable", "refused"));
            assert_eq!(o.reconnecting(t0 + Duration::from_millis(700 * i)), ReconnectLine::Quiet, "attempt {i}");
        }
        let later = t0 + Duration::from_secs(31);
        assert_eq!(o.reconnecting(later), ReconnectLine::Still { offline: Duration::from_secs(31) });
        assert_eq!(o.reconnecting(later + Duration::from_secs(1)), ReconnectLine::Quiet);
        // A different error is shown; the same one after it is not.
        assert!(!o.repeated_error("rate_limited", "too many"));
        assert!(o.repeated_error("rate_limited", "too many"));
        o.over();
        assert!(!o.repeated_error("rate_limited", "too many"));
        for _ in 0..2 {
            assert!(!o.repeated_error("local_unreachable", "tunnel 'web': connection refused"));
        }
        assert_eq!(o.reconnecting(later), ReconnectLine::First);
    }

    #[test]
    fn delays_read_as_people_say_them() {
        assert_eq!(human_ms(700), "700 ms");
        assert_eq!(human_ms(63_400), "63 s");
    }
}
