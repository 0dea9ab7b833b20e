//! How rustunnel moves bytes: the TLS connections, the multiplexer and the copies between
//! sockets that carry the messages of `rustunnel-proto`. Shared by the server, the client and
//! the agent channel.
//!
//! Component map:
//! - [`lean_tls`]: TLS 1.3 on rustls's unbuffered API with the records sealed and opened by
//!   [`record`] (sans-IO), so an idle connection holds no buffer; [`lean_tls::tcp`] copies
//!   between such a connection and a plain socket.
//! - [`mux`]: many streams over one data connection (flow-controlled, frames of many streams
//!   batched into one write).
//! - [`stream`]: reading the stream header and the datagrams of a data connection.
//! - [`splice`], [`zerocopy`]: moving bytes between two connections (buffer-pooled copy;
//!   `splice(2)` between plain sockets), and [`plain`]: the opt-in unencrypted data connection.
//! - [`tcp`]: socket options, and reading off what a peer still sends before a close; [`ws`]:
//!   closing a WebSocket whose peer sent a message over the limit (code 1009).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[doc(hidden)]
pub mod forward;
pub mod lean_tls;
pub mod mux;
pub mod plain;
pub mod record;
pub mod splice;
pub mod stream;
pub mod tcp;
pub mod ws;
pub mod zerocopy;
