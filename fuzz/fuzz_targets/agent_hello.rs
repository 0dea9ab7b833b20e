//! The agent channel's Noise handshake messages (`rustunnel_agent::handshake`, `resume`): the
//! `ClientHello` the relay reads from anyone who opens its WebSocket, the answer (accept or
//! reject) a guest reads, and the resume fields of the host's welcome. The first byte picks
//! the decoder. A hello that decodes encodes back to the same bytes, and a hello is accepted
//! only under the invite key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_agent::handshake::{respond, ClientHello, HelloKind, Initiator, MAX_HELLO_LEN};
use rustunnel_agent::link::RoomId;
use rustunnel_agent::resume;
use rustunnel_fuzz::{measure, Input};

/// The room and key the seeds were made with (`examples/seeds.rs`).
const ROOM: &str = "room1234abcd";
const PSK: [u8; 32] = [5; 32];
const ID: [u8; 16] = [1; 16];

fuzz_target!(|data: &[u8]| {
    let room = RoomId::parse(ROOM).expect("a valid room id");
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => {
            let bytes = input.rest();
            let (hello, peak) = measure(|| ClientHello::decode(bytes));
            assert!(peak <= 2 * MAX_HELLO_LEN, "ClientHello::decode held {peak} bytes");
            if let Ok(h) = hello {
                assert_eq!(h.encode(), bytes);
                if let Ok((est, reply)) = respond(&room, &h, &PSK) {
                    // Only a guest holding the key gets here; its reply must be one it reads.
                    assert!(reply.len() <= MAX_HELLO_LEN);
                    assert_eq!(est.verification_code().len(), 7);
                }
            }
        }
        1 => {
            // The host's answer as a guest reads it: the real one, altered by the input. Only
            // the very reply the host made completes the handshake.
            let kind = if input.byte().is_multiple_of(2) { HelloKind::Join } else { HelloKind::Resume };
            let (ini, hello) = Initiator::start(&room, kind, ID, &PSK).expect("a handshake starts");
            let hello = ClientHello::decode(&hello).expect("our hello decodes");
            let (_, real) = respond(&room, &hello, &PSK).expect("the host accepts our hello");
            let mut reply = real.clone();
            let cut = usize::from(input.byte());
            reply.truncate(reply.len().saturating_sub(cut % 4));
            reply.extend_from_slice(input.part());
            while !input.is_empty() {
                let at = usize::from(input.byte());
                let xor = input.byte();
                if let Some(b) = reply.get_mut(at) {
                    *b ^= xor;
                }
            }
            let r = ini.finish(&reply);
            assert_eq!(r.is_ok(), reply == real, "{:?}", r.err());
        }
        _ => {
            let id = String::from_utf8_lossy(input.part()).into_owned();
            let seed = String::from_utf8_lossy(input.rest()).into_owned();
            if let Some(t) = resume::accept(&[3; 32], &id, &seed) {
                assert_eq!(hex::encode(t.id), id.to_ascii_lowercase());
            }
        }
    }
});
