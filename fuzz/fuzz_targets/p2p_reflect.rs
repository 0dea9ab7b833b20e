//! P2P address reflection (`rustunnel_proto::p2p`): the UDP probe the server's reflector reads
//! from anyone, and the answer a client reads. What decodes encodes back to the same meaning,
//! and an answer is never larger than a probe (the reflector cannot amplify).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_proto::p2p::{decode_probe, decode_reflect, encode_probe, encode_reflect, PROBE_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(nonce) = decode_probe(data) {
        assert_eq!(data.len(), PROBE_LEN);
        assert_eq!(decode_probe(&encode_probe(nonce)), Some(nonce));
        // The reflector answers with the sender's address: whatever it is, the answer fits.
        for addr in ["255.255.255.255:65535", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"] {
            let answer = encode_reflect(nonce, addr.parse().expect("a socket address"));
            assert!(answer.len() <= PROBE_LEN, "an answer of {} bytes to a {PROBE_LEN}-byte probe", answer.len());
        }
    }
    if let Some((nonce, addr)) = decode_reflect(data) {
        let again = encode_reflect(nonce, addr);
        assert!(again.len() <= PROBE_LEN);
        assert_eq!(decode_reflect(&again), Some((nonce, addr)));
    }
});
