use proptest::prelude::*;

use super::tests::{chunked_bytes, run, run_pieces, through_hyper};
use super::*;

#[derive(Debug, Clone)]
enum Req {
    Get,
    Length(Vec<u8>),
    /// Chunks (never empty: a zero-size chunk is the last one) with their extensions, then
    /// trailer lines; sizes in upper-case hex when set.
    Chunked(Vec<(Vec<u8>, &'static str)>, Vec<String>, bool),
    /// Both framing headers; `Transfer-Encoding` first when set.
    Both(bool),
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 1..40),
        // Request text inside a body is body, not a request.
        1 => Just(b"POST /s HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        1 => Just(b"0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
    ]
}

fn req() -> impl Strategy<Value = Req> {
    let ext = prop::sample::select(vec!["", "", ";a", ";name=val", "; x=\"q\"", ";;"]);
    let chunks = prop::collection::vec((body(), ext), 0..4);
    let trailers = prop::collection::vec("X-[a-z]{1,6}: [a-z0-9 ]{0,6}", 0..3);
    prop_oneof![
        3 => Just(Req::Get),
        3 => body().prop_map(Req::Length),
        3 => (chunks, trailers, any::<bool>()).prop_map(|(c, t, upper)| Req::Chunked(c, t, upper)),
        1 => any::<bool>().prop_map(Req::Both),
    ]
}

fn encode(r: &Req, eol: &str, i: usize) -> Vec<u8> {
    let head = |extra: &str| format!("POST /{i} HTTP/1.1{eol}Host: a{eol}{extra}{eol}").into_bytes();
    match r {
        Req::Get => format!("GET /{i} HTTP/1.1{eol}Host: a{eol}{eol}").into_bytes(),
        Req::Length(b) => [head(&format!("Content-Length: {}{eol}", b.len())), b.clone()].concat(),
        Req::Chunked(chunks, trailers, upper) => {
            [head(&format!("Transfer-Encoding: chunked{eol}")), chunked_bytes(chunks, trailers, *upper)].concat()
        }
        Req::Both(te_first) => {
            let (a, b) = ("Transfer-Encoding: chunked", "Content-Length: 4");
            let (a, b) = if *te_first { (a, b) } else { (b, a) };
            [head(&format!("{a}{eol}{b}{eol}")), b"0\r\n\r\n".to_vec()].concat()
        }
    }
}

/// The stream's bytes and the index of the first request with both headers.
fn stream() -> impl Strategy<Value = (Vec<u8>, Option<u64>)> {
    let item = (req(), prop_oneof![4 => Just("\r\n"), 1 => Just("\n")], prop::sample::select(vec!["", "", "", "\r\n"]));
    prop::collection::vec(item, 1..8).prop_map(|reqs| {
        let mut bytes = Vec::new();
        for (i, (r, eol, lead)) in reqs.iter().enumerate() {
            bytes.extend_from_slice(lead.as_bytes());
            bytes.extend_from_slice(&encode(r, eol, i));
        }
        let flagged = reqs.iter().position(|(r, _, _)| matches!(r, Req::Both(_))).map(|i| i as u64);
        (bytes, flagged)
    })
}

fn pieces<'b>(bytes: &'b [u8], cuts: &[prop::sample::Index]) -> Vec<&'b [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_first_request_with_both_headers_is_flagged_however_the_bytes_arrive(
        (bytes, flagged) in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let expected = (flagged, flagged.is_some());
        prop_assert_eq!(run(&bytes), expected);
        prop_assert_eq!(run_pieces(&pieces(&bytes, &cuts)), expected);
    }

    #[test]
    fn damaged_streams_never_panic_and_give_the_same_result_in_pieces(
        (mut bytes, _) in stream(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        for (at, b) in damage {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        prop_assert_eq!(run(&bytes), run_pieces(&pieces(&bytes, &cuts)));
    }

    #[test]
    fn a_chunked_body_ends_exactly_where_it_was_encoded(
        chunks in prop::collection::vec((body(), prop::sample::select(vec!["", ";a=b", "; ext"])), 0..5),
        trailers in prop::collection::vec("X-[a-z]{1,6}: [a-z0-9 ]{0,6}", 0..3),
        upper in any::<bool>(),
        after in prop::collection::vec(any::<u8>(), 0..20),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let full = encode(&Req::Chunked(chunks, trailers, upper), "\r\n", 0);
        let body_at = full.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &full[body_at..];
        let input = [body, &after[..]].concat();
        for mut scan in [ChunkScan::new(), ChunkScan::strict()] {
            let mut seen = 0;
            let mut end = None;
            for p in pieces(&input, &cuts) {
                match scan.feed(p) {
                    ChunkStep::Done(n) => {
                        end = Some(seen + n);
                        break;
                    }
                    ChunkStep::More => seen += p.len(),
                    ChunkStep::Bad(_) => prop_assert!(false, "a valid body was refused"),
                }
            }
            prop_assert_eq!(end, Some(body.len()));
        }
    }
}

proptest! {
    // Each case runs a hyper server: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn hyper_answers_the_flagged_request_with_the_400(
        (mut bytes, flagged) in stream(),
    ) {
        // Each request is answered with `index:body length`; a last request closes.
        bytes.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let answers = rt.block_on(through_hyper(&bytes, false));
        let answers: Vec<&str> = answers.split(' ').collect();
        match flagged {
            Some(i) => {
                prop_assert_eq!(answers.len() as u64, i + 1, "{:?}", answers);
                prop_assert_eq!(answers[i as usize], "400");
            }
            None => prop_assert!(!answers.contains(&"400"), "{:?}", answers),
        }
        for (i, a) in answers.iter().enumerate().filter(|(_, a)| **a != "400") {
            prop_assert!(a.starts_with(&format!("{i}:")), "{:?}", answers);
        }
    }

    #[test]
    fn on_damaged_streams_hyper_never_sees_a_flag_on_a_request_without_both_headers(
        (mut bytes, _) in stream(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for (at, b) in damage {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let answers = rt.block_on(through_hyper(&bytes, true));
        prop_assert!(!answers.contains("WRONG"), "{:?}: {}", String::from_utf8_lossy(&bytes), answers);
    }
}
