//! Control messages (`rustunnel_proto::control`): JSON text frames from the other end of the
//! control WebSocket, decoded by the server (`ClientMsg`, before and after the hello) and by
//! the client (`ServerMsg`). A message that decodes encodes back to itself, and a tunnel
//! request is checked with the rules the server applies to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::measure;
use rustunnel_proto::control::{ClientMsg, ServerMsg};
use rustunnel_proto::limits::MAX_CONTROL_FRAME;
use rustunnel_proto::names::validate_subdomain;

/// Heap one decode may hold per byte of text (serde's strings and vectors), plus a constant.
const PER_BYTE: usize = 16;
const BASE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer hands over text frames only; invalid UTF-8 never reaches the decoder.
    let text = String::from_utf8_lossy(data);
    let bound = BASE + PER_BYTE * text.len();

    let (client, peak) = measure(|| ClientMsg::decode(&text));
    assert!(peak <= bound, "ClientMsg::decode held {peak} bytes for {} bytes of text", text.len());
    if let Ok(m) = client {
        assert!(text.len() <= MAX_CONTROL_FRAME);
        let again = ClientMsg::decode(&m.encode()).expect("an encoded ClientMsg decodes");
        assert_eq!(again, m);
        if let ClientMsg::OpenTunnel { spec, .. } = &m {
            let _ = spec.check();
            if let Some(s) = &spec.subdomain {
                let _ = validate_subdomain(s);
            }
        }
    }

    let (server, peak) = measure(|| ServerMsg::decode(&text));
    assert!(peak <= bound, "ServerMsg::decode held {peak} bytes for {} bytes of text", text.len());
    if let Ok(m) = server {
        let again = ServerMsg::decode(&m.encode()).expect("an encoded ServerMsg decodes");
        assert_eq!(again, m);
    }
});
