//! Log output on stderr, shared with the `rustunnel` client binary: the module lives in the
//! client library so that binary links no server code.
pub use rustunnel_client::logging::*;
