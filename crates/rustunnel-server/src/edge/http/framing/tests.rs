use super::*;

/// A chunked body: each chunk with its size in hex (upper case when `upper`) and extension,
/// the last chunk, the trailer fields and the final CRLF.
pub(crate) fn chunked_bytes(chunks: &[(Vec<u8>, &str)], trailers: &[String], upper: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (data, ext) in chunks {
        let size = if upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for t in trailers {
        out.extend_from_slice(format!("{t}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Feeds all at once: (flagged index, tracker stopped).
pub(super) fn run(input: &[u8]) -> (Option<u64>, bool) {
    run_pieces(&[input])
}

/// Feeds piece by piece: (flagged index, tracker stopped).
pub(super) fn run_pieces(pieces: &[&[u8]]) -> (Option<u64>, bool) {
    let mut t = Tracker::new();
    let mut flagged = None;
    for p in pieces {
        if let Some(i) = t.feed(p) {
            assert!(flagged.is_none(), "flagged twice");
            flagged = Some(i);
        }
        assert!(t.buf.len() <= HEAD_LIMIT);
    }
    (flagged, t.is_off())
}

fn both(first: &str, second: &str) -> String {
    format!("POST /x HTTP/1.1\r\nHost: a\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\n")
}

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
const CL_BODY: &str = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
const CHUNKED: &str = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const CHUNKED_TRAILERS: &str = "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
    3;name=val\r\nabc\r\nA \r\n0123456789\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
const SMUGGLE_TEXT: &str = "POST /s HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";

fn in_cl_body(inner: &str) -> String {
    format!("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{inner}", inner.len())
}

fn in_chunked_body(inner: &str) -> String {
    format!(
        "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
        inner.len()
    )
}

/// Inputs with their expected result, used by the split tests too.
fn corpus() -> Vec<(String, (Option<u64>, bool))> {
    let flag_0 = both("Content-Length: 4", "Transfer-Encoding: chunked");
    vec![
        (flag_0.clone(), (Some(0), true)),
        (both("Transfer-Encoding: chunked", "Content-Length: 4"), (Some(0), true)),
        (both("content-LENGTH: 4", "TRANSFER-encoding: identity"), (Some(0), true)),
        (format!("{CL_BODY}{flag_0}"), (Some(1), true)),
        (format!("{CHUNKED_TRAILERS}{flag_0}"), (Some(1), true)),
        (format!("{GET}{CHUNKED}\r\n{CL_BODY}{flag_0}{GET}"), (Some(3), true)),
        (format!("{GET}{GET}{CL_BODY}{CHUNKED}{CHUNKED_TRAILERS}"), (None, false)),
        (format!("\r\n\n{GET}\r\n{CL_BODY}"), (None, false)),
        (in_cl_body(SMUGGLE_TEXT), (None, false)),
        (in_chunked_body(SMUGGLE_TEXT), (None, false)),
        (format!("{}{GET}", in_cl_body(SMUGGLE_TEXT)), (None, false)),
        ("GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".into(), (None, false)),
        ("\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\r\n\r\n".into(), (None, true)),
        ("NOT HTTP AT ALL\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".into(), (None, true)),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(), (None, true)),
    ]
}

#[test]
fn both_framing_headers_are_flagged_with_the_request_index() {
    for (input, expected) in corpus() {
        assert_eq!(run(input.as_bytes()), expected, "{input:?}");
    }
}

#[test]
fn normal_requests_are_never_flagged_and_keep_being_tracked() {
    let mut t = Tracker::new();
    for _ in 0..50 {
        for r in [GET, CL_BODY, CHUNKED, CHUNKED_TRAILERS, "\r\n"] {
            assert_eq!(t.feed(r.as_bytes()), None);
        }
    }
    assert!(!t.is_off());
    assert_eq!(t.index, 200);
    assert_eq!(t.state, State::Head);
    assert!(t.buf.is_empty());
    // Content-Length alone, also repeated with the same value, or zero.
    let same = "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
    assert_eq!(run(format!("{same}POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n{GET}").as_bytes()), (None, false));
}

#[test]
fn any_split_gives_the_same_result() {
    for (input, expected) in corpus() {
        let b = input.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(run_pieces(&[&b[..i], &b[i..]]), expected, "split at {i}: {input:?}");
            for j in i..=b.len() {
                assert_eq!(run_pieces(&[&b[..i], &b[i..j], &b[j..]]), expected, "split at {i}, {j}: {input:?}");
            }
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(run_pieces(&bytes), expected, "byte by byte: {input:?}");
    }
}

#[test]
fn what_it_cannot_frame_stops_tracking_without_flagging() {
    let later = both("Content-Length: 4", "Transfer-Encoding: chunked");
    for bad in [
        "GET / HTTP/1.1\r\nHost a\r\n\r\n".to_string(),
        "\rGET / HTTP/1.1\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nBad\u{1}: x\r\n\r\n".into(),
        "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n".into(),
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".into(),
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".into(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
        CHUNKED.replace("5\r\nhello", "zz\r\nhello"),
        CHUNKED.replace("5\r\nhello", "5\nhello"),
        CHUNKED.replace("5\r\nhello", "5;a\nhello"),
        CHUNKED.replace("5\r\nhello", "5 6\r\nhello"),
        CHUNKED.replace("hello\r\n", "hello!\r\n"),
        CHUNKED.replace("5\r\n", "10000000000000000\r\n"),
        "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n".into(),
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".into(),
        format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1)),
    ] {
        let input = format!("{bad}{later}");
        assert_eq!(run(input.as_bytes()), (None, true), "{input:?}");
    }
    // Garbage of every byte value.
    let mut junk: Vec<u8> = (0..8192u32).map(|x| (x.wrapping_mul(2654435761) >> 13) as u8).collect();
    junk.extend_from_slice(b"\r\n\r\n");
    assert_eq!(run(&junk), (None, true));
}

/// The strict scan of one whole input.
fn strict(input: &[u8]) -> ChunkStep {
    ChunkScan::strict().feed(input)
}

#[test]
fn the_strict_scan_refuses_what_clients_may_read_differently_at_the_first_bad_byte() {
    let good = b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\nafter";
    assert_eq!(strict(good), ChunkStep::Done(good.len() - 5));
    assert_eq!(strict(b"0\r\n\r\n"), ChunkStep::Done(5));
    let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(CHUNK_META_LIMIT as usize));
    let long_trailer = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(CHUNK_META_LIMIT as usize));
    for (bad, at) in [
        // A bare LF after the last chunk: the next bytes would be a response to some clients.
        (&b"5\r\nhello\r\n0\r\n\nHTTP/1.1 200 OK\r\n\r\n"[..], 13),
        (b"5\nhello\r\n0\r\n\r\n", 1),
        (b"5;a\nhello\r\n0\r\n\r\n", 3),
        (b"5\r\nhello\n0\r\n\r\n", 8),
        (b"0\r\nX-T: 1\nX-U: 2\r\n\r\n", 9),
        (b"0\r\nX-T: 1\r\n\n", 11),
        (b"0\r\nX-T: 1\r\n\r\r", 12),
        (b"0\r\n X-T: 1\r\n\r\n", 3),
        (b"0\r\nX T: 1\r\n\r\n", 4),
        (b"0\r\nX-T: a\x00b\r\n\r\n", 9),
        (b"5 \r\nhello\r\n0\r\n\r\n", 1),
        (b"5;a\x01\r\nhello\r\n0\r\n\r\n", 3),
        (b"x\r\n", 0),
        (b"10000000000000000\r\n", 16),
        (long_ext.as_bytes(), 2 + CHUNK_META_LIMIT as usize - 1),
        (long_trailer.as_bytes(), 3 + CHUNK_META_LIMIT as usize - 1),
    ] {
        assert_eq!(strict(bad), ChunkStep::Bad(at), "{:?}", String::from_utf8_lossy(bad));
        // Byte by byte, the same byte is the bad one.
        let mut scan = ChunkScan::strict();
        let bad_at = bad
            .iter()
            .enumerate()
            .find_map(|(i, b)| (scan.feed(std::slice::from_ref(b)) == ChunkStep::Bad(0)).then_some(i));
        assert_eq!(bad_at, Some(at), "{:?}", String::from_utf8_lossy(bad));
    }
    // hyper's reading (the request tracker) takes the bare LF after the last chunk as the
    // start of a trailer line: the two scans must differ exactly there.
    let lf_end = b"0\r\n\nX: 1\r\n\r\n";
    assert_eq!(ChunkScan::new().feed(lf_end), ChunkStep::Done(lf_end.len()));
    assert_eq!(strict(lf_end), ChunkStep::Bad(3));
    // Nothing more after the end.
    let mut scan = ChunkScan::strict();
    assert_eq!(scan.feed(b"0\r\n\r\n"), ChunkStep::Done(5));
    assert_eq!(scan.feed(b"junk"), ChunkStep::Done(0));
}

#[test]
fn oversized_head_stops_tracking() {
    let big = format!(
        "GET / HTTP/1.1\r\nX-Big: {}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "a".repeat(HEAD_LIMIT)
    );
    let mut t = Tracker::new();
    for piece in big.as_bytes().chunks(1000) {
        assert_eq!(t.feed(piece), None);
        assert!(t.buf.len() <= HEAD_LIMIT);
    }
    assert!(t.is_off());
    assert_eq!(t.buf.capacity(), 0);
    // Just under the limit is still a head.
    let fits = format!(
        "GET / HTTP/1.1\r\nX-Big: {}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "a".repeat(64 * 1024 - 200)
    );
    assert_eq!(run(fits.as_bytes()), (Some(0), true));
}

#[test]
fn an_off_tracker_never_flags() {
    let mut t = Tracker::off();
    assert_eq!(t.feed(both("Content-Length: 4", "Transfer-Encoding: chunked").as_bytes()), None);
    assert!(t.is_off());
}

#[tokio::test]
async fn tracked_reads_set_the_shared_flag() {
    use tokio::io::AsyncReadExt;
    let input = format!("{GET}{}", both("Transfer-Encoding: chunked", "Content-Length: 4"));
    let flag = Arc::new(Flag::new());
    let mut io = Tracked::new(input.as_bytes(), Tracker::new(), flag.clone());
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, input.as_bytes(), "bytes pass through unchanged");
    assert!(!flag.is_flagged(0));
    assert!(flag.is_flagged(1));
    assert!(!flag.is_flagged(UNSET));
    let flag = Arc::new(Flag::new());
    let mut io = Tracked::new(input.as_bytes(), Tracker::off(), flag.clone());
    io.read_to_end(&mut Vec::new()).await.unwrap();
    assert!(!flag.is_flagged(1));
}

/// Serves `input` with a hyper HTTP/1 server behind [`Tracked`] with the edge's check, and
/// returns, for each response, `index:body length` of the request it answered, or `400`.
/// A flagged request without `Transfer-Encoding` (hyper drops the `Content-Length` of a
/// request with both) is answered `WRONG`. Unless `eof`, the input must end the connection
/// itself (a flagged request or `Connection: close`); with it, the input is followed by EOF,
/// and hyper drops the response in progress.
pub(super) async fn through_hyper(input: &[u8], eof: bool) -> String {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (mut client, server) = tokio::io::duplex(1 << 16);
    let flag = Arc::new(Flag::new());
    let count = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked::new(server, Tracker::new(), flag.clone()));
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (flag, count) = (flag.clone(), count.clone());
        async move {
            let i = count.fetch_add(1, Ordering::Relaxed);
            if flag.is_flagged(i) {
                let both = req.headers().contains_key(http::header::TRANSFER_ENCODING);
                let r = http::Response::builder().status(400).header("connection", "close");
                let body = if both { "400" } else { "WRONG" };
                return Ok::<_, Infallible>(r.body(Full::new(Bytes::from(body))).unwrap());
            }
            let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(999);
            Ok(http::Response::new(Full::new(Bytes::from(format!("{i}:{n}")))))
        }
    });
    let conn = tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
    // hyper answers while the rest is still being written: write and read at once.
    let (mut rd, mut wr) = tokio::io::split(&mut client);
    let write = async {
        let _ = wr.write_all(input).await;
        if eof {
            let _ = wr.shutdown().await;
        }
    };
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut out));
    let (_, r) = tokio::join!(write, read);
    r.expect("the connection is closed").unwrap();
    let _ = conn.await;
    let out = String::from_utf8(out).unwrap();
    let bodies: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| r.rsplit("\r\n\r\n").next().unwrap()).collect();
    bodies.join(" ")
}

/// The tracker's index lines up with the requests hyper hands to the service: a hyper
/// HTTP/1 server behind [`Tracked`], with the edge's check, answers exactly the flagged one
/// with 400 and nothing after it.
#[tokio::test]
async fn indexes_line_up_with_the_requests_hyper_serves() {
    let te_first = both("Transfer-Encoding: chunked", "Content-Length: 4");
    let close = "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let cases = [
        (format!("{GET}{CHUNKED_TRAILERS}\r\n{CL_BODY}{te_first}{GET}"), "0:0 1:13 2:5 400".to_string()),
        (format!("{}{te_first}{GET}", in_cl_body(SMUGGLE_TEXT)), format!("0:{} 400", SMUGGLE_TEXT.len())),
        (
            format!("GET / HTTP/1.1\nHost: a\n\n{}{GET}", both("Content-Length: 4", "Transfer-Encoding: chunked")),
            "0:0 400".to_string(),
        ),
        (
            format!("{GET}{CHUNKED}{}{close}", in_chunked_body(SMUGGLE_TEXT)),
            format!("0:0 1:5 2:{} 3:0", SMUGGLE_TEXT.len()),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(through_hyper(input.as_bytes(), false).await, expected, "{input:?}");
    }
}
