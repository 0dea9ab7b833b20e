//! What the tunnel commands print: a status block and a live request log for people, or one
//! JSON object per line (`--json`) for programs and agents.
use std::io::Write;

use rustunnel_client::Event;

pub struct Printer {
    pub json: bool,
    header_printed: bool,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer { json, header_printed: false }
    }

    /// Prints an event. Human output goes to stdout except errors (stderr).
    pub fn event(&mut self, e: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(e) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        match e {
            Event::TunnelReady { name, public_url, public_urls, local_addr, .. } => {
                if !self.header_printed {
                    println!("rustunnel {}  (Ctrl+C to quit)\n", env!("CARGO_PKG_VERSION"));
                    self.header_printed = true;
                }
                println!("  {name:<12} {public_url} -> {local_addr}");
                for u in public_urls.iter().filter(|u| *u != public_url) {
                    println!("  {:<12} {u} -> {local_addr}", "");
                }
            }
            Event::Request { name, method, path, status, duration_ms, remote_addr } => {
                println!("  {name:<12} {method:<7} {status} {duration_ms:>8.1}ms  {path}  ({remote_addr})");
            }
            Event::RequestsNotShown { count } => println!("  ... {count} more requests not shown (too many to list)"),
            Event::Reconnecting { attempt, delay_ms, reason } => {
                eprintln!("  connection lost ({reason}); reconnecting in {delay_ms} ms (attempt {attempt})");
            }
            Event::Reconnected { name, public_url, .. } => println!("  {name:<12} back online at {public_url}"),
            Event::TunnelClosed { name, reason, message, .. } => {
                println!("  {name:<12} closed by the server ({reason}): {message}")
            }
            Event::ServerShutdown { message } => eprintln!("  server: {message}"),
            Event::Health { name, healthy: true, .. } => println!("  {name:<12} healthy again: back in the pool"),
            Event::Health { name, healthy: false, detail, .. } => {
                println!("  {name:<12} unhealthy ({detail}): taken out of the pool")
            }
            Event::Draining { names } => {
                eprintln!("  leaving the pool gracefully ({}); finishing in-flight requests", names.join(", "))
            }
            Event::P2pReady { role, name, protocol, mode, local_addr } => {
                if !self.header_printed {
                    println!("rustunnel {}  (Ctrl+C to quit)\n", env!("CARGO_PKG_VERSION"));
                    self.header_printed = true;
                }
                match mode {
                    Some(mode) => println!("  p2p {name:<12} {protocol} listening on {local_addr} ({mode}; {role})"),
                    None => println!("  p2p {name:<12} {protocol} {local_addr} published; waiting for visitors"),
                }
            }
            Event::P2pLink { name, mode, role, .. } => println!("  p2p {name:<12} link up: {mode} ({role})"),
            Event::P2pConnection { name, mode, peer, .. } => {
                println!("  p2p {name:<12} connection from {peer} ({mode})")
            }
            Event::Error { message, hint, .. } => eprintln!("  error: {message}\n  hint: {hint}"),
        }
    }
}
