//! The rustunnel client library.
//!
//! Component map:
//! - [`api`]: the management REST API client used by the CLI and the MCP server.
//! - [`config`]: [`ClientOptions`], tunnel definitions, the `rustunnel start` TOML file.
//! - [`session`]: the run loop (connect, hello, open tunnels, heartbeats, reconnect) and
//!   [`ClientHandle`] for running it in the background.
//! - [`reconnect`]: the backoff shared by the tunnel and P2P sessions (jitter, cap, reset).
//! - [`forward`]: data connections and forwarding to local services (TCP/HTTP splice, UDP).
//! - [`net`], [`tls`]: dialing and certificate trust (`--insecure`, `--ca`).
//! - [`proxy_header`]: PROXY protocol headers to local services (`--proxy-protocol`).
//! - [`health`]: health checks a pool member runs on its local service (tcp / http).
//! - [`events`]: what a run reports (`tunnel_ready`, `reconnecting`, requests, errors).
//! - [`error`]: typed errors with codes and hints.
//! - [`logging`]: log lines on stderr (human or JSON), shared with the server binary.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod forward;
pub mod health;
pub mod logging;
pub mod net;
pub mod options;
pub mod p2p;
pub mod proxy_header;
pub mod reconnect;
pub mod session;
pub mod tls;

pub use config::{ClientOptions, GroupConfig, StartFile, TunnelConfig};
pub use error::ClientError;
pub use events::Event;
pub use session::{run, ClientHandle};
pub use tls::TlsOptions;
