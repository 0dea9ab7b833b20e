//! What the fuzz targets share: a counting allocator, so a target can assert how much memory
//! one input made the decoder hold; in-memory peers for the async decoders; and a reader that
//! cuts a fuzz input into the parts a target needs.
//!
//! Each target under `fuzz_targets/` feeds one decoder of untrusted bytes and asserts that it
//! does not panic, that its memory stays within a bound, and, where the codec has an encoder,
//! that what decodes encodes back to the same thing.

pub mod alloc;
pub mod input;
pub mod peer;

pub use alloc::measure;
pub use input::Input;
pub use peer::{block_on, Peer};
