//! Agent-channel frames (`rustunnel_agent::frame`, `files`): what the relay opens from a guest
//! (`GuestMsg`) and a guest opens from the host (`HostMsg`). The first byte picks the layer:
//! whole wire frames through a real cipher (a relay that alters bytes, a guest that sends
//! garbage), or decrypted plaintexts (counter, lengths, JSON header, attachment), which only
//! a member holding the key can send. A frame that decodes seals and opens back to itself, and
//! what the host does with a file announcement stays within the file caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_agent::files::{sanitize_display_name, Assembly, FileLimits};
use rustunnel_agent::frame::{FrameCipher, GuestMsg, HostMsg, MAX_WIRE_FRAME};
use rustunnel_agent::handshake::{respond, ClientHello, HelloKind, Initiator};
use rustunnel_agent::link::RoomId;
use rustunnel_agent::room::sanitize_member_name;
use rustunnel_fuzz::{measure, Input};

/// Ciphers of both ends of one fresh connection: (guest, host).
fn pair() -> (FrameCipher, FrameCipher) {
    let room = RoomId::parse("room1234abcd").expect("a valid room id");
    let (ini, hello) = Initiator::start(&room, HelloKind::Join, [1; 16], &[5; 32]).expect("a handshake starts");
    let hello = ClientHello::decode(&hello).expect("our hello decodes");
    let (host, reply) = respond(&room, &hello, &[5; 32]).expect("the host accepts our hello");
    (ini.finish(&reply).expect("the guest accepts the reply").cipher, host.cipher)
}

/// What the relay does with a guest's message before any I/O: names and file announcements.
fn host_acts_on(msg: &GuestMsg, attachment: &[u8]) {
    let max = FileLimits::default().max_file_bytes;
    match msg {
        GuestMsg::Join { name } => {
            let n = sanitize_member_name(name, "guest");
            assert!(!n.is_empty() && n.chars().count() <= 64);
        }
        GuestMsg::FileBegin { name, size, sha256, .. } => {
            let _ = sanitize_display_name(name);
            let (a, peak) = measure(|| Assembly::new(*size, sha256, max));
            // An announcement reserves at most the announced size, and only within the cap.
            assert!(peak as u64 <= size.min(&max) + 1024, "Assembly::new held {peak} bytes for size {size}");
            if let Ok(mut a) = a {
                let _ = a.push(0, attachment);
                let _ = a.finish();
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (mut guest, mut host) = pair();
    match input.byte() % 3 {
        0 => {
            // A real frame, altered by the input on the way (a relay that tampers): only the
            // frame as sealed opens, and a cipher that saw tampering stays dead.
            let text = String::from_utf8_lossy(input.part()).into_owned();
            let real = guest.seal(&GuestMsg::Say { req: 1, text }, input.part()).expect("a message seals");
            let mut wire = real.clone();
            let cut = usize::from(input.u16());
            wire.truncate(wire.len().saturating_sub(cut % 64));
            wire.extend_from_slice(input.part());
            while !input.is_empty() {
                let at = usize::from(input.u16());
                let xor = input.byte();
                if let Some(b) = wire.get_mut(at) {
                    *b ^= xor;
                }
            }
            let (r, peak) = measure(|| host.open::<GuestMsg>(&wire));
            assert!(peak <= 2 * wire.len().min(MAX_WIRE_FRAME) + 4096, "open held {peak} bytes");
            assert_eq!(r.is_ok(), wire == real, "{:?}", r.err());
            if wire != real {
                assert!(host.open::<GuestMsg>(&real).is_err(), "a cipher that saw tampering opened a frame");
            }
        }
        1 => {
            // A guest's plaintext, as the relay decodes it; what decodes goes through a fresh
            // connection's ciphers unchanged.
            if let Ok((msg, att)) = host.decode_plain::<GuestMsg>(input.rest()) {
                host_acts_on(&msg, &att);
                let (mut g, mut h) = pair();
                let wire = g.seal(&msg, &att).expect("a decoded message seals");
                assert_eq!(h.open::<GuestMsg>(&wire).expect("a sealed frame opens"), (msg, att));
            }
        }
        _ => {
            // The host's plaintext, as a guest decodes it.
            if let Ok((msg, att)) = guest.decode_plain::<HostMsg>(input.rest()) {
                let (mut g, mut h) = pair();
                let wire = h.seal(&msg, &att).expect("a decoded message seals");
                assert_eq!(g.open::<HostMsg>(&wire).expect("a sealed frame opens"), (msg, att));
            }
        }
    }
});
