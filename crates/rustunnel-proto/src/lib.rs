//! The rustunnel wire protocol, shared by `rustunnel-server` and the client library.
//!
//! Component map:
//! - [`control`]: messages on the control WebSocket, one enum per direction
//!   ([`control::ClientMsg`], [`control::ServerMsg`]) so a wrong-way message cannot be built;
//!   JSON text frames, each bounded by [`limits::MAX_CONTROL_FRAME`].
//! - [`stream`]: the header the server writes at the start of every data connection it hands
//!   out (which tunnel, which visitor), and the datagram framing used by UDP tunnels.
//! - [`names`]: subdomain rules shared by both ends so the client can refuse early; and
//!   [`basic_auth`]: the rules for credentials a tunnel asks of its visitors; [`ip_rules`]:
//!   the visitor addresses a tunnel accepts.
//! - [`limits`]: every bound and timeout in one place.
//!
//! Moving these messages over sockets (TLS, the multiplexer, splicing) is `rustunnel-transport`.
//! This crate has no sockets and no business logic; see `docs/protocol.md` for the exchange.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod basic_auth;
pub mod control;
pub mod ip_rules;
pub mod limits;
pub mod names;
pub mod p2p;
pub mod stream;

/// Version of the wire protocol. Bumped on any incompatible change; a peer speaking another
/// version is refused with a human "upgrade rustunnel" message.
pub const PROTOCOL_VERSION: u32 = 1;

/// HTTP path on the control port that upgrades to the control WebSocket.
pub const CONTROL_PATH: &str = "/v1/control";
/// HTTP path on the control port that upgrades to a raw data connection.
pub const DATA_PATH: &str = "/v1/data";
/// Upgrade token used for data connections.
pub const DATA_UPGRADE: &str = "rustunnel-data";
/// Header carrying the session id on a data connection upgrade.
pub const HEADER_SESSION: &str = "x-rustunnel-session";
/// Header carrying the per-session data key on a data connection upgrade.
pub const HEADER_DATA_KEY: &str = "x-rustunnel-data-key";
/// On a data connection: relay this P2P link instead of joining the pool (see `docs/p2p.md`).
pub const HEADER_P2P_LINK: &str = "x-rustunnel-p2p-link";

/// The message shown when two ends speak different protocol versions.
pub fn version_mismatch_message(server: u32, client: u32) -> String {
    if server > client {
        format!("server speaks protocol {server}, this client {client}: upgrade rustunnel on this machine")
    } else {
        format!(
            "server speaks protocol {server}, this client {client}: the server is older, upgrade rustunnel-server or use an older client"
        )
    }
}

pub use control::{
    ClientMsg, ErrorCode, GroupSpec, Protocol, ServerMsg, SpecError, SpecOption, TunnelInfo, TunnelSpec,
};
