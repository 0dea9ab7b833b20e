//! The HTTP edge's decoders of untrusted bytes, for fuzz targets (re-exported as
//! `edge::fuzzing`; not a stable API). The head checks panic when a head the lean path accepts
//! breaks what the edge relies on: a forwarded head is complete, well-formed and no longer than
//! the input.
pub use super::framing::{ChunkScan, ChunkStep, Tracker};
use super::head::{parse_request, parse_response, Parsed};
use super::limits::MAX_HEADERS;

/// A visitor's request head, as the lean path reads it.
pub fn request_head(buf: &[u8]) {
    if let Parsed::Lean(h) = parse_request(buf, "192.0.2.7", "https") {
        assert!(h.len <= buf.len());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
        let parsed = httparse::Request::new(&mut headers).parse(&h.out);
        assert_eq!(parsed, Ok(httparse::Status::Complete(h.out.len())), "a forwarded head is complete");
    }
}

/// A local service's response head, as the lean path reads it.
pub fn response_head(buf: &[u8], head_method: bool, close_visitor: bool) {
    if let Ok(Some(h)) = parse_response(buf, head_method, close_visitor) {
        assert!(h.len <= buf.len());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
        let parsed = httparse::Response::new(&mut headers).parse(&h.out);
        assert_eq!(parsed, Ok(httparse::Status::Complete(h.out.len())), "a passed-on head is complete");
        assert!(!h.out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "only CRLF line ends");
    }
}
