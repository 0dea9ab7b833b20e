//! The buffers a lean connection borrows while bytes are in flight: output buffers from a
//! per-thread pool (or the bulk pool of the copy), and the bounds on what it holds.
use crate::record;
use crate::splice::{give_buf, take_bulk, Window, BULK_SIZE};

/// Largest plaintext put in one record (the same on rustls's path and ours).
pub(super) const MAX_FRAGMENT: usize = record::MAX_PLAIN;
/// Room one record needs in the output buffer: payload, header, AEAD tag, with room to spare.
pub(super) const RECORD_ROOM: usize = MAX_FRAGMENT + 256;
/// Output buffer size: four full records, so one write to the socket carries several.
pub(super) const OUT_CAP: usize = 4 * RECORD_ROOM;
/// Output buffers kept per thread for reuse.
pub(super) const OUT_POOL_MAX: usize = 64;
/// Reading stops while more than this waits to be sent to the peer, until the socket takes it:
/// a peer that never reads must not make us queue without bound. Writers keep the output at
/// most one (bulk) buffer, so this only stops a reader whose reading queues output.
pub(super) const HELD_MAX: usize = BULK_SIZE + OUT_CAP;

thread_local! {
    static OUT_POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An output buffer: a bulk one for a bulk writer while the budget allows, else four records' worth.
pub(super) fn take_out(bulk: bool) -> Box<[u8]> {
    if let Some(b) = bulk.then(take_bulk).flatten() {
        return b;
    }
    OUT_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; OUT_CAP].into_boxed_slice())
}

/// Gives an output buffer back to the pool of its size.
pub(super) fn release(b: Box<[u8]>) {
    if b.len() == OUT_CAP {
        OUT_POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < OUT_POOL_MAX {
                p.push(b);
            }
        })
    } else {
        give_buf(b)
    }
}

/// Room for `need` more bytes in `w`, growing its buffer to at least twice what it holds when
/// it has to grow: an exact-size regrow would copy everything queued once per addition.
pub(super) fn grow_reserve(w: &mut Window, need: usize) -> &mut [u8] {
    let held = w.pending().len();
    let free = w.capacity().map_or(0, |c| c - held);
    w.reserve(if free < need { need.max(held) } else { need })
}
