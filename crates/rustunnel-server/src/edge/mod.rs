//! The public side: where visitors connect.
//! - [`http`]: HTTP and HTTPS edges, routed by `Host: <sub>.<domain>`.
//! - [`tcp`]: one listener per TCP tunnel on a port from the configured range.
//! - [`udp`]: one socket per UDP tunnel; one stream per remote address.
//! - [`pages`]: the edge's own error pages.
pub mod http;
pub mod pages;
pub mod tcp;
pub mod udp;

mod counted;
mod framing;
pub use counted::Counted;
