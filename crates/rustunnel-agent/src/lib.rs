#![cfg_attr(not(test), deny(clippy::unwrap_used))]
//! Agent channel (placeholder doc; replaced below).

pub mod files;
pub mod frame;
pub mod handshake;
pub mod invite;
pub mod link;
pub mod resume;
pub mod room;
pub mod member;
pub mod relay;
pub mod session;
