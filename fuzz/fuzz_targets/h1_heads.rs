//! The lean HTTP/1 path's head parsers (`rustunnel_server::edge::fuzzing`): a visitor's
//! request head and a local service's response head. Each parser asserts, inside, what the edge
//! relies on when it accepts a head: what it forwards is one complete, well-formed head no
//! longer than the input, with CRLF line ends only. The first byte picks the parser and, for a
//! response, whether it answers a HEAD request and whether the visitor asked to close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::{measure, Input};
use rustunnel_server::edge::fuzzing::{request_head, response_head};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let how = input.byte();
    let head = input.rest();
    let ((), peak) = measure(|| {
        if how & 1 == 0 {
            request_head(head);
        } else {
            response_head(head, how & 2 != 0, how & 4 != 0);
        }
    });
    // The rewritten head, the forwarding headers added to it, and small change.
    assert!(peak <= 4 * head.len() + 16 * 1024, "a head parser held {peak} bytes for {} bytes", head.len());
});
