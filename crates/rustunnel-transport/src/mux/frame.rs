//! The frame codec: the wire constants, the rules a frame header must follow, and the
//! encoder. Everything here is pure; see the parent module's doc for the wire format.

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest DATA payload; a larger length on the wire is a protocol error.
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// Largest meta carried by an OPEN frame.
pub const MAX_META: usize = 1024;
/// Credit each stream starts with in each direction.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Largest receive window a [`MuxConfig`](super::MuxConfig) may ask for.
pub const MAX_WINDOW: u32 = 32 * 1024 * 1024;
/// Stream id that is never allocated: one-byte DATA frames on it measure the round trip.
pub const PING_ID: u32 = u32::MAX;
/// Frame kinds.
pub const KIND_OPEN: u8 = 1;
pub const KIND_DATA: u8 = 2;
pub const KIND_FIN: u8 = 3;
pub const KIND_RESET: u8 = 4;
pub const KIND_WINDOW: u8 = 5;

/// Send credit a peer may grant a stream at most (its largest possible window); more is a
/// protocol error. Kept in `u64` so that adding a WINDOW increment cannot wrap on any platform.
pub(super) const MAX_CREDIT: u64 = MAX_WINDOW as u64;

/// Which end of the mux this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (the server side); an OPEN frame arriving here is a protocol error.
    Opener,
    /// Accepts the streams the opener opens (the client side).
    Acceptor,
}

/// A peer broke the framing rules; the mux ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("nonzero reserved flags {0:#04x}")]
    BadFlags(u8),
    #[error("frame on stream id 0")]
    ZeroStreamId,
    #[error("DATA frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    FrameTooLarge(usize),
    #[error("OPEN meta of {0} bytes exceeds the {MAX_META}-byte limit")]
    MetaTooLarge(usize),
    #[error("frame of kind {kind} with a {len}-byte payload")]
    BadLength { kind: u8, len: usize },
    #[error("OPEN frame sent to the opening side")]
    OpenToOpener,
    #[error("OPEN for stream {0}, not above the last opened id")]
    StreamIdNotIncreasing(u32),
    #[error("stream {0}: peer sent more than the window it was granted")]
    WindowExceeded(u32),
    #[error("stream {0}: DATA after FIN or RESET")]
    DataAfterFin(u32),
    #[error("stream {0}: send credit grown past {MAX_CREDIT}")]
    WindowOverflow(u32),
    #[error("OPEN for the reserved stream id {PING_ID}")]
    ReservedStreamId,
}

/// Appends one frame: its header, then `payload` (at most a `u16` of bytes, checked by callers).
pub(super) fn push_frame(out: &mut Vec<u8>, id: u32, kind: u8, payload: &[u8]) {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&id.to_be_bytes());
    h[4] = kind;
    h[6..].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

/// Checks a header before its payload has arrived, so that garbage fails at once.
pub(super) fn check_header(id: u32, kind: u8, flags: u8, len: usize, role: Role) -> Result<(), ProtocolError> {
    if flags != 0 {
        return Err(ProtocolError::BadFlags(flags));
    }
    match kind {
        KIND_DATA if len > MAX_PAYLOAD => return Err(ProtocolError::FrameTooLarge(len)),
        KIND_OPEN if role == Role::Opener => return Err(ProtocolError::OpenToOpener),
        KIND_OPEN if len > MAX_META => return Err(ProtocolError::MetaTooLarge(len)),
        KIND_FIN | KIND_RESET if len != 0 => return Err(ProtocolError::BadLength { kind, len }),
        KIND_WINDOW if len != 4 => return Err(ProtocolError::BadLength { kind, len }),
        KIND_OPEN | KIND_DATA | KIND_FIN | KIND_RESET | KIND_WINDOW => {}
        _ => return Err(ProtocolError::UnknownKind(kind)),
    }
    if id == 0 {
        return Err(ProtocolError::ZeroStreamId);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_judged_before_their_payload() {
        let check = |id, kind, flags, len, role| check_header(id, kind, flags, len, role);
        assert_eq!(check(1, KIND_DATA, 0, MAX_PAYLOAD, Role::Acceptor), Ok(()));
        assert_eq!(check(1, KIND_OPEN, 0, MAX_META, Role::Acceptor), Ok(()));
        assert_eq!(
            check(1, KIND_DATA, 0, MAX_PAYLOAD + 1, Role::Acceptor),
            Err(ProtocolError::FrameTooLarge(MAX_PAYLOAD + 1))
        );
        assert_eq!(check(1, KIND_OPEN, 0, 0, Role::Opener), Err(ProtocolError::OpenToOpener));
        assert_eq!(
            check(1, KIND_OPEN, 0, MAX_META + 1, Role::Acceptor),
            Err(ProtocolError::MetaTooLarge(MAX_META + 1))
        );
        assert_eq!(check(1, KIND_FIN, 0, 1, Role::Acceptor), Err(ProtocolError::BadLength { kind: KIND_FIN, len: 1 }));
        assert_eq!(
            check(1, KIND_WINDOW, 0, 3, Role::Opener),
            Err(ProtocolError::BadLength { kind: KIND_WINDOW, len: 3 })
        );
        assert_eq!(check(1, 9, 0, 0, Role::Opener), Err(ProtocolError::UnknownKind(9)));
        assert_eq!(check(1, KIND_DATA, 1, 0, Role::Opener), Err(ProtocolError::BadFlags(1)));
        assert_eq!(check(0, KIND_DATA, 0, 0, Role::Opener), Err(ProtocolError::ZeroStreamId));
    }

    #[test]
    fn a_frame_is_its_header_then_its_payload() {
        let mut out = vec![0xee];
        push_frame(&mut out, 0x0102_0304, KIND_WINDOW, &[9, 9, 9, 9]);
        assert_eq!(out, [0xee, 1, 2, 3, 4, KIND_WINDOW, 0, 0, 4, 9, 9, 9, 9]);
    }
}
