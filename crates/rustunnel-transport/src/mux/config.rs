//! What a mux can be tuned with.
use std::time::Duration;

use super::frame::{INITIAL_WINDOW, MAX_WINDOW};

/// The reader stops reading, and [`MuxHandle::open`](super::MuxHandle::open) refuses, while the outgoing buffer holds
/// this much more than the batch limit (only control frames and OPENs can grow it that far: a
/// peer that floods us with frames needing an answer, or stops reading, while visitors keep
/// coming).
pub const OUT_PAUSE_SLACK: usize = 1024 * 1024;

/// Tunables of one mux. Out-of-range values are clamped.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Largest receive window per stream, in bytes: at most this many bytes of a stream are
    /// buffered here unread. Streams start at [`INITIAL_WINDOW`] and grow towards this as the
    /// round trip requires (see the [multiplexer doc](super)). At least [`INITIAL_WINDOW`] (no growth), at
    /// most [`MAX_WINDOW`].
    pub window: u32,
    /// Bytes by which all streams' windows together may grow past [`INITIAL_WINDOW`] each.
    pub window_budget: usize,
    /// Streams open at once: `open` beyond this fails, an acceptor resets the extra ones.
    pub max_streams: usize,
    /// Bytes of DATA queued for the connection before writers wait (one batch).
    pub batch_limit: usize,
    /// Size of the driver's read buffer (at least 64 KiB).
    pub read_buffer: usize,
    /// Yield to the scheduler before writing a batch that starts after the writer was idle, so
    /// that the other tasks made ready in the same tick add their frames to it (adaptive: see
    /// the [multiplexer doc](super)). Off: each batch is written as soon as the driver runs.
    pub yield_before_write: bool,
    /// On a clean close: how long the driver goes on flushing what is queued and reading
    /// until the peer's EOF before it gives up.
    pub close_linger: Duration,
}

impl MuxConfig {
    /// For a data connection between server and client: windows grow up to 32 MiB per stream,
    /// 64 MiB more for all streams together, so one stream is not held to a 256 KiB window per
    /// round trip on a long link (40 Mbit/s at 50 ms) while a session whose readers stall holds
    /// at most its initial windows and that budget.
    pub fn data_link() -> Self {
        MuxConfig { window: MAX_WINDOW, window_budget: 64 * 1024 * 1024, ..MuxConfig::default() }
    }
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            window: INITIAL_WINDOW,
            window_budget: 0,
            max_streams: 4096,
            batch_limit: 256 * 1024,
            read_buffer: 64 * 1024,
            yield_before_write: true,
            close_linger: Duration::from_secs(2),
        }
    }
}
