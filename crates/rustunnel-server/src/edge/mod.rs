//! The public side: where visitors connect.
//! - [`http`]: HTTP and HTTPS edges, routed by `Host: <sub>.<domain>`.
//! - [`tcp`]: one listener per TCP tunnel on a port from the configured range.
//! - [`udp`]: one socket per UDP tunnel; one stream per remote address.
//! - [`pages`]: the edge's own error pages.
//! - [`proxy_header`]: PROXY protocol headers from a load balancer in front of the edges.
//! - `h1`: the lean HTTP/1.1 path most visitor requests take (the rest go to hyper).
//! - `h2flood`: the bound on HTTP/2 PING/SETTINGS frames a visitor can make the edge answer.
//! - `stall`: the slow-reader bound on connections served by hyper.
pub mod access;
pub mod http;
pub mod pages;
pub mod proxy_header;
pub mod tcp;
pub mod udp;

mod counted;
mod framing;
mod h1;
mod h2flood;
mod stall;
pub use counted::Counted;

/// The lean HTTP/1.1 path's decoders of untrusted bytes, reachable for fuzz targets only.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::framing::{ChunkScan, ChunkStep, Tracker};
    pub use super::h1::fuzzing::{request_head, response_head};
}
pub use h1::IdlePool;
