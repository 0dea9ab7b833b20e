//! The multiplexer's frame dispatch (`rustunnel_transport::mux`), through its sans-IO face: the
//! peer's bytes (any stream id, any credit, any kind, cut anywhere) interleaved with what the
//! local side does to its streams (open, accept, read, write, finish, drop), at either role.
//!
//! The first byte picks the role (bit 0) and the window configuration (bit 1: windows that
//! grow, as on a data link). Then steps, each a byte then its arguments: 0 peer bytes (a part),
//! 1 open a stream (a meta), 2 accept, 3 read (stream, size), 4 write (stream, a part),
//! 5 finish (stream), 6 drop (stream), 7 take what is queued for the peer. Asserted: no panic;
//! a stream never holds more unread bytes than its window; the memory the peer's input holds
//! stays within the windows, the output bound and the metas; every frame the mux queues for the
//! peer is one a correct peer accepts.
#![no_main]

use std::task::Poll;

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::Input;
use rustunnel_transport::mux::sans_io::SansIo;
use rustunnel_transport::mux::{
    MuxConfig, Role, HEADER_LEN, KIND_DATA, KIND_FIN, KIND_OPEN, KIND_RESET, KIND_WINDOW, MAX_META, MAX_PAYLOAD,
};

/// Checks every frame the mux queued for its peer.
fn check_out(out: &[u8], role: Role) {
    let mut rest = out;
    while !rest.is_empty() {
        assert!(rest.len() >= HEADER_LEN, "a partial frame queued");
        let id = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let (kind, flags) = (rest[4], rest[5]);
        let len = usize::from(u16::from_be_bytes([rest[6], rest[7]]));
        assert_ne!(id, 0);
        assert_eq!(flags, 0);
        match kind {
            KIND_OPEN => {
                assert_eq!(role, Role::Opener, "an acceptor opened a stream");
                assert!(len <= MAX_META);
            }
            KIND_DATA => assert!(len <= MAX_PAYLOAD),
            KIND_FIN | KIND_RESET => assert_eq!(len, 0),
            KIND_WINDOW => assert_eq!(len, 4),
            k => panic!("frame of unknown kind {k} queued"),
        }
        assert!(rest.len() >= HEADER_LEN + len, "a partial frame queued");
        rest = &rest[HEADER_LEN + len..];
    }
}

/// A local stream picked by the input (an id that is not one of ours now and then).
fn pick(m: &SansIo, b: u8) -> u32 {
    let ids = m.stream_ids();
    match ids.get(usize::from(b) % (ids.len() + 1)) {
        Some(id) => *id,
        None => u32::from(b),
    }
}

fn check_bounds(m: &SansIo) {
    let windows = m.windows();
    assert!(m.buffered() as u64 <= windows, "{} bytes buffered over windows of {windows}", m.buffered());
    let metas = (m.stream_count() * MAX_META) as u64;
    let bound = 2 * (windows + m.out_limit() as u64 + metas) + 256 * 1024;
    assert!(m.held() as u64 <= bound, "the mux held {} bytes (bound {bound})", m.held());
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let how = input.byte();
    let role = if how & 1 == 0 { Role::Acceptor } else { Role::Opener };
    let cfg = if how & 2 == 0 { MuxConfig::default() } else { MuxConfig::data_link() };
    let mut m = SansIo::new(role, cfg);
    let mut buf = vec![0u8; 64 * 1024];
    while !input.is_empty() {
        match input.byte() % 8 {
            0 => {
                let mut bytes = input.part();
                loop {
                    match m.feed(bytes) {
                        Ok(n) => bytes = &bytes[n..],
                        // The mux ended: the local side only drops what it holds.
                        Err(_) => return,
                    }
                    if bytes.is_empty() {
                        break;
                    }
                    // The driver stopped reading: it writes what is queued, then reads on.
                    assert!(m.paused());
                    check_out(&m.take_out(), role);
                }
            }
            1 => {
                let r = m.open(input.part());
                assert!(role == Role::Opener || r.is_err(), "an acceptor opened a stream");
            }
            2 => {
                let ids = m.accept();
                assert!(role == Role::Acceptor || ids.is_empty());
            }
            3 => {
                let id = pick(&m, input.byte());
                let n = usize::from(input.u16()).min(buf.len());
                if let Poll::Ready(Ok(got)) = m.read(id, &mut buf[..n]) {
                    assert!(got <= n);
                }
            }
            4 => {
                let id = pick(&m, input.byte());
                let data = input.part();
                if let Poll::Ready(Ok(n)) = m.write(id, data) {
                    assert!(n <= data.len());
                }
            }
            5 => {
                let id = pick(&m, input.byte());
                let _ = m.shutdown(id);
            }
            6 => {
                let id = pick(&m, input.byte());
                m.drop_stream(id);
            }
            _ => check_out(&m.take_out(), role),
        }
        check_bounds(&m);
    }
    m.close();
    check_out(&m.take_out(), role);
});
