//! The public side: where visitors connect.
//! - [`http`]: HTTP and HTTPS edges, routed by `Host: <sub>.<domain>`: the request policy
//!   written once, the lean HTTP/1.1 path and the hyper path.
//! - [`tcp`]: one listener per TCP tunnel on a port from the configured range.
//! - [`udp`]: one socket per UDP tunnel; one stream per remote address.
//! - [`proxy_header`]: PROXY protocol headers from a load balancer in front of the edges.
pub mod http;
pub mod proxy_header;
pub mod tcp;
pub mod udp;

mod counted;
pub use counted::Counted;
pub use http::{fuzzing, IdlePool};
