//! Stream multiplexer: many byte streams over one connection, so that the frames of every
//! stream that became ready in the same scheduler tick leave in ONE write and arrive in ONE read.
//!
//! [`mux`] wraps any `AsyncRead + AsyncWrite` connection and returns a [`MuxHandle`] (opens
//! streams, closes the mux), an [`Acceptor`] (yields the streams the peer opened) and the
//! driver future, which the caller spawns and owns. Only the [`Role::Opener`] side (the server)
//! opens streams; the [`Role::Acceptor`] side (the client) accepts them. Each [`MuxStream`] is
//! an `AsyncRead + AsyncWrite` with TCP-like semantics:
//! - `poll_shutdown` half-closes (FIN): the peer reads the buffered bytes, then EOF; the other
//!   direction stays open. It queues the FIN and returns at once (so does `poll_flush`): the
//!   driver sends queued frames in order.
//! - dropping a stream that was not finished both ways (FIN sent and FIN received) sends RESET:
//!   the peer's writes fail with `ConnectionReset` at once, its reads return the bytes that had
//!   already arrived and then `ConnectionReset`.
//! - when the mux ends (driver error, peer EOF, [`MuxHandle::close`], the last handle and stream
//!   dropped), every stream's pending and later I/O fails with `ConnectionAborted` (reads first
//!   return the bytes already buffered, and EOF if the peer had finished).
//!
//! # Wire format
//! A sequence of frames, each an 8-byte header and a payload:
//! ```text
//! stream id  u32 BE   never 0; allocated by the opener 1, 2, 3, ... and never reused
//! kind       u8       1 OPEN, 2 DATA, 3 FIN, 4 RESET, 5 WINDOW
//! flags      u8       reserved, must be 0
//! length     u16 BE   payload bytes: OPEN <= 1024 (the meta), DATA <= 32768,
//!                     FIN 0, RESET 0, WINDOW 4 (credit increment, u32 BE)
//! ```
//! Anything else (unknown kind, nonzero flags, a length out of its bound, stream id 0, an OPEN
//! arriving at the opener, for an id not above the last one or for [`PING_ID`]) is a protocol
//! error that ends the mux. Frames for unknown or finished streams are ignored; DATA ones still give their credit
//! back with a WINDOW frame. The meta is opaque here. There is no handshake or version byte:
//! whoever sets up the connection must agree that it carries this mux (e.g. in the data
//! connection's upgrade) before handing it to [`mux`].
//!
//! # Flow control
//! Each stream has, per direction, a credit window of [`INITIAL_WINDOW`] bytes from its OPEN.
//! A sender never has more DATA in flight than the credit it holds: a write without credit
//! returns `Pending` and is woken by the WINDOW frame that returns credit. The receiver returns
//! credit once the reading side has consumed half the stream's window (or 1 MiB of a window
//! over 2 MiB), so a stream's inbound buffer never holds more than its window and one slow
//! reader never holds up the other streams. DATA beyond the granted window is a protocol error,
//! and so is a WINDOW frame that takes a stream's send credit past [`MAX_WINDOW`] (no receiver
//! may grant more than its window).
//!
//! # Bounds
//! What a peer can make this end hold: per stream, its receive window of unread bytes; per
//! connection, the OPEN metas not accepted yet ([`MuxConfig::max_streams`] of them), and the
//! frames queued for the peer. DATA writers wait once [`MuxConfig::batch_limit`] is queued;
//! answers the peer's frames call for (credit, resets) stop the reader once the queue is
//! [`OUT_PAUSE_SLACK`] past that, and [`MuxHandle::open`] fails with
//! [`MuxError::Backlogged`] there, so a peer that never reads cannot grow it further.
//!
//! Window growth is the receiver's own decision (the wire only carries credit): a receiver
//! configured with a [`MuxConfig::window`] above [`INITIAL_WINDOW`] doubles a stream's window
//! when the reader consumed the last half-window in less than one round trip (the window, not
//! the reader, was holding the stream back), up to that maximum and while the sum of what its
//! streams grew stays within [`MuxConfig::window_budget`]. A grown window goes back to the
//! budget when its stream ends. So a bulk stream on a long link gets the window its bandwidth
//! times delay needs, while thousands of quiet or stalled streams cost their initial windows
//! only. The round trip is measured with a one-byte DATA frame on the reserved stream id
//! [`PING_ID`], which no stream ever has: the peer gives its credit back like for any frame of
//! an unknown stream, and the WINDOW frame coming back times the trip (peers that predate
//! growth do the same; nothing else is needed from them).
//!
//! # Batching
//! A stream's `poll_write` copies its frames straight into the mux's shared outgoing buffer
//! (no allocation per frame). The driver is woken only when that buffer goes from empty to
//! non-empty; it then yields to the scheduler ([`MuxConfig::yield_before_write`]) so that the
//! other tasks made ready in the same tick queue their frames too (again while they keep adding,
//! up to 4 yields), swaps the whole buffer out and writes it with one `write` (more only on a
//! short write). While yields gather nothing (a lone stream), the driver stops yielding, except
//! for one batch in 8 that checks whether they would again. Streams fill the second buffer
//! while the first is being written; they wait once it holds [`MuxConfig::batch_limit`]. The
//! reader reads into a 64 KiB buffer, dispatches every complete frame in it under one lock, and
//! wakes each stream's reader only when that stream got new bytes.

mod config;
mod driver;
mod error;
mod frame;
#[doc(hidden)]
pub mod sans_io;
mod state;
mod stream;

pub use config::{MuxConfig, OUT_PAUSE_SLACK};
pub use driver::mux;
pub use error::MuxError;
pub use frame::{
    ProtocolError, Role, HEADER_LEN, INITIAL_WINDOW, KIND_DATA, KIND_FIN, KIND_OPEN, KIND_RESET, KIND_WINDOW, MAX_META,
    MAX_PAYLOAD, MAX_WINDOW, PING_ID,
};
pub use stream::{Acceptor, MuxHandle, MuxStream};

#[cfg(test)]
mod tests;
