//! Errors of the mux as a whole.
use std::io;

use super::frame::{ProtocolError, MAX_META};

/// Why a mux operation or the driver failed.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("mux protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("mux connection: {0}")]
    Io(#[from] io::Error),
    #[error("mux connection closed in the middle of a frame")]
    UnexpectedEof,
    #[error("mux is closed")]
    Closed,
    #[error("too many open streams (limit {0})")]
    TooManyStreams(usize),
    #[error("stream meta of {0} bytes exceeds the {MAX_META}-byte limit")]
    MetaTooLarge(usize),
    #[error("stream ids exhausted: open a new mux")]
    IdsExhausted,
    #[error("the peer is not reading: {0} bytes queued for it")]
    Backlogged(usize),
    #[error("only the opener role opens streams")]
    NotOpener,
}
