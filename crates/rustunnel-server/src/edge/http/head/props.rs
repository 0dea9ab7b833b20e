use proptest::prelude::*;

use super::*;

const PEER: &str = "192.0.2.7";

fn name() -> impl Strategy<Value = String> {
    let known = [
        "Host",
        "host",
        "HOST",
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "connection",
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-Forwarded-Proto",
        "X-Real-IP",
        "Forwarded",
        "Keep-Alive",
        "Upgrade",
        "Expect",
        "TE",
        "Trailer",
        "Proxy-Connection",
        "Proxy-Authorization",
        "X-Custom",
        "Accept",
        "Set-Cookie",
    ];
    prop_oneof![
        12 => prop::sample::select(known.to_vec()).prop_map(String::from),
        2 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
        // Not a token: the parser must refuse it, never forward it.
        1 => "[ -~]{1,6}",
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    let known = [
        "close",
        "Close",
        "keep-alive",
        "keep-alive, X-Custom",
        "close, content-length, host",
        "upgrade",
        "x-forwarded-for, te",
        "5",
        "0",
        "+5",
        "5, 5",
        "007",
        "18446744073709551616",
        "chunked",
        "gzip, chunked",
        "chunked, gzip",
        "a.localhost",
        "A.LocalHost:8080",
        "",
        "1.2.3.4",
    ];
    prop_oneof![
        8 => prop::sample::select(known.to_vec()).prop_map(|v| v.as_bytes().to_vec()),
        2 => "[ -~]{0,20}".prop_map(String::into_bytes),
        // obs-text, control characters, CR and LF inside a value.
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

pub(crate) fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((name(), value()), 0..7)
}

pub(crate) fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("\r\n"), 1 => Just("\n")]
}

pub(crate) fn head(start: String, headers: &[(String, Vec<u8>)], eol: &str) -> Vec<u8> {
    let mut b = start.into_bytes();
    b.extend_from_slice(eol.as_bytes());
    for (n, v) in headers {
        b.extend_from_slice(n.as_bytes());
        b.extend_from_slice(b": ");
        b.extend_from_slice(v);
        b.extend_from_slice(eol.as_bytes());
    }
    b.extend_from_slice(eol.as_bytes());
    b
}

pub(crate) fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "get", "CONNECT"]);
    let path = prop_oneof![
        4 => "/[a-zA-Z0-9/?=&%.~-]{0,24}",
        1 => prop::sample::select(vec!["*", "http://a.localhost/", "a.localhost:443", ""]).prop_map(String::from),
    ];
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]);
    // Usually one routable Host among the others, anywhere.
    let host = prop::option::weighted(
        0.9,
        (prop::sample::select(vec!["a.localhost", "App.LocalHost:8080", "b.localhost."]), any::<prop::sample::Index>()),
    );
    (method, path, version, headers(), host, eol()).prop_map(|(m, p, v, mut h, host, e)| {
        if let Some((host, at)) = host {
            h.insert(at.index(h.len() + 1), ("Host".to_string(), host.as_bytes().to_vec()));
        }
        head(format!("{m} {p} {v}"), &h, e)
    })
}

pub(crate) fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        3 => prop::sample::select(vec![100u16, 101, 103, 200, 204, 206, 301, 304, 404, 500]),
        1 => 100u16..1000,
    ];
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    (version, status, "[ -~]{0,12}", headers(), eol())
        .prop_map(|(v, s, reason, h, e)| head(format!("{v} {s} {reason}"), &h, e))
}

/// The headers of a head that must parse completely.
fn reparse_request(out: &[u8]) -> (String, String, Vec<(String, Vec<u8>)>) {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut r = httparse::Request::new(&mut hs);
    assert_eq!(r.parse(out), Ok(httparse::Status::Complete(out.len())), "{}", String::from_utf8_lossy(out));
    let hs = r.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    (r.method.unwrap().to_string(), r.path.unwrap().to_string(), hs)
}

fn values<'a>(hs: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    hs.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn forwarded_requests_are_well_formed_and_carry_only_the_edges_forwarding_headers(
        req in request(),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut buf = req.clone();
        buf.extend_from_slice(&tail);
        let Parsed::Lean(h) = parse_request(&buf, PEER, "https") else { return Ok(()) };
        // A value with a line break in it may end the head early.
        prop_assert!(h.len <= req.len());
        let req = &req[..h.len];
        // Every shorter prefix is incomplete: the lean path never acts on half a head.
        for cut in 0..req.len() {
            prop_assert!(matches!(parse_request(&req[..cut], PEER, "https"), Parsed::Partial), "cut at {}", cut);
        }
        let (_, _, original) = reparse_request(req);
        let (method, path, out) = reparse_request(&h.out);
        let start = format!("{method} {path} HTTP/1.1");
        let line = start.clone() + "\r\n";
        prop_assert!(h.out.starts_with(line.as_bytes()));
        prop_assert!(req.starts_with(start.as_bytes()));
        prop_assert!(
            !method.eq_ignore_ascii_case("CONNECT") && (path.starts_with('/') || (method == "OPTIONS" && path == "*"))
        );
        // Nothing that changes framing or protocol was in the request.
        for n in ["transfer-encoding", "upgrade", "expect"] {
            prop_assert!(values(&original, n).is_empty(), "{} was forwarded on the lean path", n);
        }
        let host = values(&original, "host");
        prop_assert_eq!(host.len(), 1);
        prop_assert_eq!(values(&out, "host"), host.clone());
        prop_assert_eq!(values(&out, "x-forwarded-host"), host);
        prop_assert_eq!(values(&out, "x-forwarded-for"), vec![PEER.as_bytes()]);
        prop_assert_eq!(values(&out, "x-real-ip"), vec![PEER.as_bytes()]);
        prop_assert_eq!(values(&out, "x-forwarded-proto"), vec![&b"https"[..]]);
        prop_assert!(values(&out, "forwarded").is_empty());
        for n in HOP_BY_HOP {
            prop_assert!(values(&out, n).is_empty(), "hop-by-hop {} forwarded", n);
        }
        let lengths = values(&out, "content-length");
        prop_assert_eq!(lengths.len(), values(&original, "content-length").len());
        prop_assert!(lengths.iter().all(|v| content_length(v) == Some(h.body)));
        prop_assert_eq!(h.body > 0, !lengths.is_empty() && h.body > 0);
        let close = values(&original, "connection").iter().any(|v| {
            String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        });
        prop_assert_eq!(h.close, close);
    }

    #[test]
    fn responses_are_passed_on_with_the_framing_they_were_read_with(
        resp in response(),
        head_method in any::<bool>(),
        close_visitor in any::<bool>(),
    ) {
        let parsed = parse_response(&resp, head_method, close_visitor);
        let Ok(Some(h)) = parsed else { return Ok(()) };
        prop_assert!(h.len <= resp.len());
        let resp = &resp[..h.len];
        for cut in 0..resp.len() {
            prop_assert!(matches!(parse_response(&resp[..cut], head_method, close_visitor), Ok(None)), "cut at {}", cut);
        }
        prop_assert!(h.status != 101, "an upgrade nobody asked for is refused");
        prop_assert!(!h.out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "only CRLF line ends");
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
        let mut r = httparse::Response::new(&mut hs);
        prop_assert_eq!(r.parse(&h.out), Ok(httparse::Status::Complete(h.out.len())));
        prop_assert_eq!(r.code, Some(h.status));
        prop_assert_eq!(r.version, Some(1));
        let out: Vec<(String, Vec<u8>)> =
            r.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
        if h.interim {
            // Rebuilt like a final head, with no framing header at all.
            prop_assert!((100..200).contains(&h.status));
            for n in HOP_BY_HOP.iter().chain(&["content-length"]) {
                prop_assert!(values(&out, n).is_empty(), "{} passed on in an interim head", n);
            }
            return Ok(());
        }
        let te = values(&out, "transfer-encoding");
        let cl = values(&out, "content-length");
        let conn = values(&out, "connection");
        match h.framing {
            Framing::Length(n) => {
                prop_assert!(te.is_empty());
                prop_assert!(!cl.is_empty() && cl.iter().all(|v| content_length(v) == Some(n)));
            }
            Framing::Chunked(_) => {
                prop_assert!(cl.is_empty());
                // As the visitor reads them: all the values in order, chunked last.
                let joined: Vec<u8> = te.join(&b", "[..]);
                prop_assert!(is_chunked(&joined), "{:?}", String::from_utf8_lossy(&joined));
            }
            Framing::Close => {
                prop_assert!(te.is_empty() && cl.is_empty());
                prop_assert!(!h.reusable);
            }
            Framing::Empty => prop_assert!(head_method || h.status == 204 || h.status == 304),
        }
        let closes = close_visitor || h.framing == Framing::Close;
        prop_assert_eq!(conn, if closes { vec![&b"close"[..]] } else { Vec::new() });
        for n in HOP_BY_HOP.iter().filter(|n| !matches!(**n, "transfer-encoding" | "connection")) {
            prop_assert!(values(&out, n).is_empty(), "hop-by-hop {} passed on", n);
        }
    }

    #[test]
    fn random_bytes_never_panic_either_parser(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        head_method in any::<bool>(),
    ) {
        let _ = parse_request(&bytes, PEER, "http");
        let _ = parse_response(&bytes, head_method, false);
    }
}
