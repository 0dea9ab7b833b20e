//! The lean HTTP/1 path's body framing (`rustunnel_server::edge::framing`): the chunked body
//! scanner, in hyper's reading (a visitor's requests) and the strict one (a local service's
//! responses passed on to visitors), and the request framing tracker that reads a visitor's
//! bytes beside hyper. Bytes arrive cut anywhere, so each is fed the input whole and in pieces
//! (the first byte sets their size) and must reach the same verdict at the same byte. A body
//! the strict scanner passes on ends where hyper's reading ends it and is well-formed chunked
//! framing with CRLF line ends only (checked by a separate reading below).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::{measure, Input};
use rustunnel_server::edge::fuzzing::{ChunkScan, ChunkStep, Tracker};

/// Where a scan ended: `Ok(Some(n))` done after byte n, `Ok(None)` wants more, `Err(n)` bad at n.
type Verdict = Result<Option<usize>, usize>;

fn scan(mut s: ChunkScan, data: &[u8], piece: usize) -> Verdict {
    let mut at = 0;
    for p in data.chunks(piece) {
        match s.feed(p) {
            ChunkStep::Done(n) => {
                assert!(n <= p.len());
                return Ok(Some(at + n));
            }
            ChunkStep::Bad(n) => {
                assert!(n < p.len());
                return Err(at + n);
            }
            ChunkStep::More => at += p.len(),
        }
    }
    Ok(None)
}

/// A strict reading of a complete chunked body (RFC 9112 section 7.1, CRLF line ends only),
/// written apart from the scanner: how many bytes it takes, or `None` if it is not one.
fn reference(b: &[u8]) -> Option<usize> {
    let line = |at: usize| -> Option<usize> {
        // The end of the line starting at `at`: the index of its CR, which an LF follows; no
        // other CR or LF before it.
        let cr = at + b.get(at..)?.iter().position(|&c| c == b'\r' || c == b'\n')?;
        (b[cr] == b'\r' && b.get(cr + 1) == Some(&b'\n')).then_some(cr)
    };
    let mut at = 0;
    loop {
        let end = line(at)?;
        let size_line = &b[at..end];
        let digits = size_line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits == 0 || (digits < size_line.len() && size_line[digits] != b';') {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).ok()?, 16).ok()?;
        at = end + 2;
        if size == 0 {
            break;
        }
        at = at.checked_add(usize::try_from(size).ok()?)?;
        if b.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
    // Trailer fields, each `name: value` CRLF, then the final CRLF.
    loop {
        let end = line(at)?;
        if end == at {
            return Some(at + 2);
        }
        let field = &b[at..end];
        let colon = field.iter().position(|&c| c == b':')?;
        if colon == 0 {
            return None;
        }
        at = end + 2;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let piece = usize::from(input.byte()) + 1;
    let body = input.rest();

    let lenient = scan(ChunkScan::new(), body, body.len().max(1));
    assert_eq!(scan(ChunkScan::new(), body, piece), lenient, "hyper's reading depends on how bytes are cut");
    let strict = scan(ChunkScan::strict(), body, body.len().max(1));
    assert_eq!(scan(ChunkScan::strict(), body, piece), strict, "the strict reading depends on how bytes are cut");
    if let Ok(Some(n)) = strict {
        assert_eq!(lenient, Ok(Some(n)), "the edge and hyper would end the body in different places");
        assert_eq!(reference(&body[..n]), Some(n), "the strict scanner passed on a body that is not chunked framing");
    }

    // The tracker, over the same bytes as a visitor's connection.
    let whole = {
        let mut t = Tracker::new();
        t.feed(body)
    };
    let (cut, peak) = measure(|| {
        let mut t = Tracker::new();
        body.chunks(piece).find_map(|p| t.feed(p))
    });
    assert_eq!(cut, whole, "the tracker's verdict depends on how bytes are cut");
    assert!(peak <= 4 * 66 * 1024, "the tracker held {peak} bytes");
});
