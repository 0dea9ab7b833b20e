//! The plain data connection handshake (`rustunnel_transport::plain`): the server's side reads a
//! client's magic, session id and HMAC; the client's side reads the server's nonce and status.
//! The first byte picks the side. Only the right HMAC for the known session is accepted, and
//! neither side answers with more than the protocol's fixed messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::{block_on, measure, Input, Peer};
use rustunnel_transport::plain::{client_handshake, server_handshake, PlainError, NONCE_LEN, PLAIN_MAGIC};

/// The nonce, session and key the seeds were made with (`examples/seeds.rs`).
const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];
const SESSION: &str = "sess-1";
const KEY: &str = "k3y";
/// Heap a handshake may hold: the session id and MAC it reads, and small change.
const BOUND: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let server = input.byte().is_multiple_of(2);
    let bytes = input.rest();
    let mut peer = Peer::new(bytes);
    if server {
        let (r, peak) =
            measure(|| block_on(server_handshake(&mut peer, NONCE, |sid| (sid == SESSION).then(|| KEY.to_string()))));
        assert!(peak <= BOUND, "server handshake held {peak} bytes");
        match r {
            Ok(sid) => {
                assert_eq!(sid, SESSION);
                assert!(bytes.starts_with(PLAIN_MAGIC));
                assert_eq!(peer.written, [&NONCE[..], &[0]].concat(), "accepted: the nonce, then status 0");
            }
            Err(PlainError::BadMagic) => assert!(peer.written.is_empty(), "no nonce before the magic matched"),
            Err(PlainError::Refused) => assert_eq!(peer.written, [&NONCE[..], &[1]].concat()),
            Err(_) => assert!(peer.written.len() <= NONCE_LEN),
        }
    } else {
        let (r, peak) = measure(|| block_on(client_handshake(&mut peer, SESSION, KEY)));
        assert!(peak <= BOUND, "client handshake held {peak} bytes");
        // The client accepts exactly a status 0 after the nonce, whatever the nonce.
        assert_eq!(r.is_ok(), bytes.get(NONCE_LEN) == Some(&0), "{r:?}");
        assert!(peer.written.starts_with(PLAIN_MAGIC));
        assert!(peer.written.len() <= PLAIN_MAGIC.len() + 1 + SESSION.len() + 32);
    }
});
