//! The rustunnel edge server.
//!
//! Component map:
//! - [`config`]: file/flag configuration layer and the validated runtime [`config::Config`].
//! - [`server`]: [`ServerHandle::spawn`] binds, spawns and shuts down.
//! - [`state`]: the shared state behind a method API (lookups, routing, pool choice, snapshots).
//! - [`lifecycle`]: opening, draining and closing tunnels and pool members; end of a session.
//! - [`claims`]: the registry's stored claims (loaded at start, kept in step by a writer);
//!   [`retention`]: tunnel history counters and pruning.
//! - [`control`]: the control port (TLS, WebSocket control channel, data-connection upgrades).
//! - [`session`]: one connected client: control queue, data-connection pool, request log.
//! - [`registry`]: sans-IO ownership of subdomains and ports, with reconnect reservations.
//! - [`pool`]: sans-IO load-balanced pools (members, health, selection, down/recovered alerts);
//!   [`alert`]: delivery of pool alerts to webhooks.
//! - [`edge`]: public HTTP/HTTPS, TCP and UDP edges.
//! - [`auth`], [`store`]: tokens (hashed), owners, tunnel history (SQLite or PostgreSQL);
//!   [`rights`]: the subdomains and ports a token may open.
//! - [`api`]: the management REST API; [`metrics`]: server-wide counters for `/metrics`.
//! - [`reload`]: what SIGHUP's re-read configuration changes in a running server.
//! - [`logging`]: human or JSON log lines, with a level SIGHUP can change.
//! - [`tls`]: certificates (operator files or a generated self-signed pair for dev).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod alert;
pub mod api;
pub mod auth;
pub mod claims;
pub mod config;
pub mod control;
pub mod edge;
pub mod idle;
pub mod lifecycle;
pub mod listener;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod p2p;
pub mod pool;
pub mod proxy_from;
pub mod registry;
pub mod reload;
pub mod retention;
pub mod rights;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;
pub mod tunnel;
pub mod webhook;

pub use config::{Config, FileConfig};
pub use server::{ServerError, ServerHandle};
