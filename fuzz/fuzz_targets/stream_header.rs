//! Data connection framing (`rustunnel_proto::stream`, read off a connection by
//! `rustunnel_transport::stream`): the stream header the server writes at the start of a
//! handed-out data connection (read by the client), and the length-prefixed datagrams of UDP
//! tunnels (read by both ends). `read_header` and `decode` agree, a header that
//! decodes encodes back to itself, and datagrams written back give the bytes they came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::{block_on, measure};
use rustunnel_proto::limits::{MAX_DATAGRAM, MAX_STREAM_HEADER};
use rustunnel_proto::stream::StreamHeader;
use rustunnel_transport::stream::{read_datagram, read_header, write_datagram};

/// Heap a header read may hold: its buffer (at most the limit) and serde's strings.
const HEADER_BOUND: usize = 8 * MAX_STREAM_HEADER;
/// Heap reading datagrams may hold: one buffer of the largest datagram.
const DATAGRAM_BOUND: usize = MAX_DATAGRAM + 1024;

fuzz_target!(|data: &[u8]| {
    let (decoded, peak) = measure(|| StreamHeader::decode(data));
    assert!(peak <= HEADER_BOUND, "StreamHeader::decode held {peak} bytes");
    if let Ok(h) = &decoded {
        assert!(data.len() <= 2 + MAX_STREAM_HEADER);
        assert_eq!(&StreamHeader::decode(&h.encode()).expect("an encoded header decodes"), h);
    }

    let mut r = data;
    let (read, peak) = measure(|| block_on(read_header(&mut r)));
    assert!(peak <= HEADER_BOUND, "read_header held {peak} bytes");
    if let Ok(h) = read {
        // `read_header` takes exactly one header off the connection: the same bytes decode alike.
        let used = data.len() - r.len();
        assert_eq!(StreamHeader::decode(&data[..used]).expect("what read took decodes"), h);
    }

    let mut r = data;
    let mut datagrams = Vec::new();
    let (_, peak) = measure(|| {
        let mut buf = Vec::new();
        while block_on(read_datagram(&mut r, &mut buf)).is_ok() {
            assert!(buf.len() <= MAX_DATAGRAM);
            datagrams.push(buf.clone());
            buf.clear();
            if datagrams.len() > data.len() / 2 {
                panic!("more datagrams than the input has length prefixes");
            }
        }
    });
    let held: usize = datagrams.iter().map(Vec::len).sum();
    assert!(peak <= DATAGRAM_BOUND + held + datagrams.capacity() * 24, "read_datagram held {peak} bytes");
    let used = data.len() - r.len();
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for d in &datagrams {
        block_on(write_datagram(&mut out, d, &mut scratch)).expect("a datagram read is written back");
    }
    // A datagram cut short at the end is not taken, so `used` may include a partial one.
    assert!(data[..used].starts_with(&out));
});
