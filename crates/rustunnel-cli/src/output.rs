//! What the tunnel commands print: a status block and a live request log for people, or one
//! JSON object per line (`--json`) for programs and agents.
use std::io::Write;

use rustunnel_client::Event;

pub struct Printer {
    pub json: bool,
    header_printed: bool,
    /// Stdout, written in one syscall per batch of events rather than per line (a busy tunnel
    /// logs tens of thousands of requests a second).
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer { json, header_printed: false, out: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()) }
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
        if self.json {
            if let Ok(line) = serde_json::to_string(e) {
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
                let _ =
                    writeln!(out, "  {name:<12} {method:<7} {status} {duration_ms:>8.1}ms  {path}  ({remote_addr})");
            }
            Event::RequestsNotShown { count } => {
                let _ = writeln!(out, "  ... {count} more requests not shown (too many to list)");
            }
            Event::Reconnecting { attempt, delay_ms, reason } => {
                let _ = out.flush();
                eprintln!("  connection lost ({reason}); reconnecting in {delay_ms} ms (attempt {attempt})");
            }
            Event::Reconnected { name, public_url, .. } => {
                let _ = writeln!(out, "  {name:<12} back online at {public_url}");
            }
            Event::TunnelClosed { name, reason, message, .. } => {
                let _ = writeln!(out, "  {name:<12} closed by the server ({reason}): {message}");
            }
            Event::ServerShutdown { message } => {
                let _ = out.flush();
                eprintln!("  server: {message}");
            }
            Event::Health { name, healthy: true, .. } => {
                let _ = writeln!(out, "  {name:<12} healthy again: back in the pool");
            }
            Event::Health { name, healthy: false, detail, .. } => {
                let _ = writeln!(out, "  {name:<12} unhealthy ({detail}): taken out of the pool");
            }
            Event::Draining { names } => {
                let _ = out.flush();
                eprintln!("  leaving the pool gracefully ({}); finishing in-flight requests", names.join(", "));
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
            Event::Error { message, hint, .. } => {
                let _ = out.flush();
                eprintln!("  error: {message}\n  hint: {hint}");
            }
        }
    }
}
