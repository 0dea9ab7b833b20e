//! What a running client reports: the CLI prints these (as a console or as JSON lines) and the
//! MCP server consumes them in-process.
use rustunnel_proto::{Protocol, TunnelInfo};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A tunnel is open and its public URL works.
    TunnelReady {
        tunnel_id: String,
        name: String,
        protocol: Protocol,
        public_url: String,
        public_urls: Vec<String>,
        local_addr: String,
    },
    /// The connection was lost; retrying after `delay_ms`.
    Reconnecting { attempt: u32, delay_ms: u64, reason: String },
    /// A tunnel is back after a reconnect (same URL unless the name was lost).
    Reconnected { tunnel_id: String, name: String, public_url: String },
    /// An HTTP request went through a tunnel.
    Request { name: String, method: String, path: String, status: u16, duration_ms: f64, remote_addr: String },
    /// More requests went through than the live log shows (under heavy traffic).
    RequestsNotShown { count: u64 },
    /// The server closed a tunnel (API close, revoked token); it is not re-created.
    TunnelClosed { tunnel_id: String, name: String, reason: String, message: String },
    /// The server announced a graceful shutdown; the client reconnects when it is back.
    ServerShutdown { message: String },
    /// A pool member's health check changed state (unhealthy members get no traffic).
    Health { tunnel_id: String, name: String, healthy: bool, detail: String },
    /// The client is stopping and its tunnels leave gracefully: in-flight requests and
    /// connections finish, new ones are refused (a pool's go to its other members).
    Draining { names: Vec<String> },
    /// A P2P publisher is published (`role` "publish", `mode` null), or a P2P visitor's link is
    /// up and its local listener accepts connections (`role` "connect", `mode` "direct" or
    /// "relayed").
    P2pReady { role: String, name: String, protocol: Protocol, mode: Option<String>, local_addr: String },
    /// A P2P link was established with a peer (both sides report it), with the path in use.
    P2pLink { role: String, name: String, link_id: String, mode: String },
    /// A connection (or UDP flow) went through a P2P link.
    P2pConnection { role: String, name: String, mode: String, peer: String },
    /// Something went wrong (fatal ones end the run).
    Error { code: String, message: String, hint: String, fatal: bool },
}

impl Event {
    pub fn ready(info: &TunnelInfo, local_addr: String) -> Self {
        Event::TunnelReady {
            tunnel_id: info.tunnel_id.clone(),
            name: info.name.clone(),
            protocol: info.protocol,
            public_url: info.public_url.clone(),
            public_urls: info.public_urls.clone(),
            local_addr,
        }
    }
}
