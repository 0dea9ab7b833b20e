use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::AsyncReadExt;

use super::*;
use crate::edge::http::framing::tests::chunked_bytes;
use crate::edge::http::head::props::{eol, head, headers, request, response};
use crate::edge::http::head::{parse_request, Parsed};

/// What a reader of a message can tell apart: status (or method and target), end-to-end
/// headers in order per name, body, trailers.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    start: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

/// The end-to-end fields: what is left after the edge's rules for hop-by-hop fields, without
/// the framing ones (each hop frames for itself).
fn end_to_end(mut map: http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    // The edge's hyper path puts the request's Host back whatever Connection named.
    let host: Vec<_> = map.get_all(http::header::HOST).iter().cloned().collect();
    crate::edge::http::hyper::strip_hop_by_hop(&mut map, false);
    if !map.contains_key(http::header::HOST) {
        for v in host {
            map.append(http::header::HOST, v);
        }
    }
    let mut out: Vec<(String, Vec<u8>)> = map
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "content-length" | "transfer-encoding"))
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    // Order across names is not part of the message; order within a name is.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// hyper's client reading one response to a GET from `bytes` (then the end of the stream).
async fn hyper_reads(bytes: Vec<u8>) -> Option<Message> {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await.ok()?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        let mut req = [0u8; 4096];
        let _ = server.read(&mut req).await;
        let _ = server.write_all(&bytes).await;
    });
    let req = http::Request::get("/").header("host", "a").body(Empty::<Bytes>::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req)).await.ok()?.ok()?;
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.ok()?.ok()?;
    let trailers = collected.trailers().cloned().map(end_to_end).unwrap_or_default();
    Some(Message {
        start: parts.status.as_u16().to_string(),
        headers: end_to_end(parts.headers),
        body: collected.to_bytes().to_vec(),
        trailers,
    })
}

/// What the lean path passes to the visitor for `bytes`, or `None` when it refuses them.
async fn lean_passes(bytes: &[u8]) -> Option<Vec<u8>> {
    let (mut up, mut local) = tokio::io::duplex(1 << 20);
    local.write_all(bytes).await.ok()?;
    drop(local);
    let mut visitor = Vec::new();
    let stats = crate::tunnel::TunnelStats::default();
    let sent = respond(&mut up, &mut visitor, false, false, Duration::from_secs(5), &stats).await.ok()?;
    (!sent.reset).then_some(visitor)
}

fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let ext = prop::sample::select(vec!["", "", ";a", ";a=b", "; q=\"x\""]);
    let chunks = prop::collection::vec((prop::collection::vec(any::<u8>(), 1..12), ext), 0..4);
    let trailers = prop::collection::vec("X-[a-z]{1,6}: [a-z0-9]{0,6}", 0..3);
    (chunks, trailers).prop_map(|(chunks, trailers)| chunked_bytes(&chunks, &trailers, false))
}

/// Responses of every framing, well-formed and not: generated heads with any body, and
/// framed ones whose framing bytes may be damaged (a CRLF made a bare LF, a byte changed).
fn responses() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![200u16, 201, 204, 206, 304, 404, 500]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let interim = prop::option::weighted(0.2, prop::sample::select(vec![100u16, 102, 103]));
    let damage = prop::option::weighted(
        0.4,
        (any::<prop::sample::Index>(), prop::sample::select(vec![b'\n', b'\r', b' ', b';', b'0', b'x'])),
    );
    let framed = (
        version,
        status,
        headers(),
        eol(),
        interim,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..24),
        chunked_body(),
        damage,
    )
        .prop_map(|(v, s, mut h, e, interim, chunked, raw, chunks, damage)| {
            h.retain(|(n, _)| {
                !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("transfer-encoding")
            });
            let mut body = if chunked {
                h.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
                chunks
            } else {
                h.push(("Content-Length".into(), raw.len().to_string().into_bytes()));
                raw
            };
            if let (Some((at, b)), false) = (damage, body.is_empty()) {
                let i = at.index(body.len());
                body[i] = b;
            }
            let mut out = Vec::new();
            if let Some(code) = interim {
                out.extend_from_slice(&head(format!("HTTP/1.1 {code} Info"), &[("Link".into(), b"</a>".to_vec())], e));
            }
            out.extend_from_slice(&head(format!("{v} {s} X"), &h, e));
            out.extend_from_slice(&body);
            out
        });
    prop_oneof![
        1 => (response(), prop::collection::vec(any::<u8>(), 0..32)).prop_map(|(h, b)| [h, b].concat()),
        3 => framed,
    ]
}

proptest! {
    // Each case runs hyper a few times: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn a_response_passed_on_whole_reads_as_hyper_reads_it_from_the_local_service(bytes in responses()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Some(passed) = lean_passes(&bytes).await else { return Ok(()) };
            let at_visitor = hyper_reads(passed.clone()).await;
            let direct = hyper_reads(bytes.clone()).await;
            prop_assert!(at_visitor.is_some(), "the visitor cannot read what the lean path sent: {:?} from {:?}",
                String::from_utf8_lossy(&passed), String::from_utf8_lossy(&bytes));
            prop_assert_eq!(at_visitor, direct, "{:?} -> {:?}", String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&passed));
            Ok(())
        })?;
    }

    #[test]
    fn a_request_taken_by_the_lean_path_is_the_one_hyper_serves(
        req in request(),
        body in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let Parsed::Lean(h) = parse_request(&req, "192.0.2.7", "http") else { return Ok(()) };
        let req = &req[..h.len];
        // The whole body its head announces, when it is short enough to send.
        let Some(lean_body) = (h.body <= 64).then(|| body.iter().copied().cycle().chain(std::iter::repeat(b'x')).take(h.body as usize).collect::<Vec<u8>>()) else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (served, at_service) = rt.block_on(async {
            let mut input = req.to_vec();
            input.extend_from_slice(&lean_body);
            let mut forwarded = h.out.clone();
            forwarded.extend_from_slice(&lean_body);
            (hyper_serves(input).await, hyper_serves(forwarded).await)
        });
        let served = served.ok_or_else(|| TestCaseError::fail(format!("hyper refuses a request the lean path took: {:?}", String::from_utf8_lossy(req))))?;
        let mut at_service = at_service.ok_or_else(|| TestCaseError::fail("the local service cannot read the forwarded head"))?;
        // The edge's own forwarding fields are the one difference.
        at_service.headers.retain(|(n, _)| !matches!(n.as_str(), "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto" | "x-real-ip"));
        let mut served = served;
        served.headers.retain(|(n, _)| !matches!(n.as_str(), "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto" | "x-real-ip" | "forwarded"));
        prop_assert_eq!(served, at_service, "{:?}", String::from_utf8_lossy(req));
    }
}

/// hyper's server reading one request from `bytes` (then the end of the stream), with a body
/// of at most the bytes given.
async fn hyper_serves(bytes: Vec<u8>) -> Option<Message> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = parking_lot::Mutex::new(Some(tx));
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.lock().take();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes().to_vec());
            if let (Some(tx), Ok(body)) = (tx, body) {
                let start = format!("{} {}", parts.method, parts.uri);
                let _ = tx.send(Message { start, headers: end_to_end(parts.headers), body, trailers: Vec::new() });
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), svc);
    tokio::spawn(conn);
    client.write_all(&bytes).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), rx).await.ok()?.ok()
}
