//! A local service that answers in ways a visitor's client could read differently from the edge
//! (bare LFs in chunked framing, overlong chunk extensions, raw interim heads), sends bytes
//! after a bodiless response, or closes on a request it never answers. Through the real edge:
//! nothing past a fault reaches the visitor, whose connection is then reset; nothing is ever
//! taken for the next request's response; a POST is never sent twice.
use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustunnel_proto::Protocol;
use rustunnel_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod common;
use common::scripted::{read_body, read_head, Head};

/// What the local service counts and how the test talks to it.
#[derive(Default)]
struct Seen {
    /// `POST /vanish` requests received.
    posts: AtomicUsize,
    /// `GET /vanish` requests received.
    gets: AtomicUsize,
    /// Connections accepted.
    conns: AtomicUsize,
}

/// Signals for the stray-bytes script: the test says when to send them, the service says when
/// they are sent.
struct Stray {
    go: tokio::sync::Mutex<mpsc::Receiver<()>>,
    sent: mpsc::Sender<()>,
}

const STRAY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Smuggled: yes\r\n\r\nevil";

/// A local service answering by path with hand-written responses.
async fn hostile(stray: Option<Stray>) -> (u16, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let (s2, stray) = (seen.clone(), stray.map(Arc::new));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            s2.conns.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(s, s2.clone(), stray.clone()));
        }
    });
    (port, seen)
}

async fn serve(mut s: TcpStream, seen: Arc<Seen>, stray: Option<Arc<Stray>>) {
    let mut buf = Vec::new();
    loop {
        let Some(Head { method, path, content_length: cl, .. }) = read_head(&mut s, &mut buf).await else {
            return;
        };
        if read_body(&mut s, &mut buf, cl).await.is_none() {
            return;
        }
        let chunked = |body: &[u8]| [&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..], body].concat();
        let resp: Vec<u8> = match path.as_str() {
            // `0\r\n\n`: the end of the body for some clients, the start of a trailer for others.
            "/split" => chunked(&[&b"5\r\nhello\r\n0\r\n\n"[..], STRAY].concat()),
            "/lf-size" => chunked(b"5\nMARK-\r\n0\r\n\r\n"),
            "/lf-data-end" => chunked(b"5\r\nhello\nMARK\r\n0\r\n\r\n"),
            "/lf-trailer" => chunked(b"5\r\nhello\r\n0\r\nX-T: 1\nMARK: 1\r\n\r\n"),
            "/lf-after-trailer" => chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n\nMARK: 1\r\n\r\n"),
            "/long-ext" => chunked(format!("5;{}\r\nMARK-\r\n0\r\n\r\n", "e".repeat(20_000)).as_bytes()),
            "/hints" => b"HTTP/1.1 103 Early Hints\nLink: </a.css>\nConnection: x-hop\nX-Hop: 1\nKeep-Alive: 5\n\
                          Content-Length: 5\nTransfer-Encoding: chunked\n\n\
                          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            "/short" | "/short-chunked" => {
                // A body cut short by the local service's close.
                let cut: &[u8] = if path == "/short" {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"
                } else {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                };
                let _ = s.write_all(cut).await;
                return;
            }
            "/vanish" => {
                // Closes on the request without a byte of answer.
                let counter = if method == "POST" { &seen.posts } else { &seen.gets };
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
            "/204" | "/len" => {
                let answer: &[u8] = if path == "/204" {
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                if s.write_all(answer).await.is_err() {
                    return;
                }
                // Then, once told to, bytes that look like the next request's response; the
                // connection stays open and serves on.
                if let Some(stray) = &stray {
                    let _ = stray.go.lock().await.recv().await;
                    let _ = s.write_all(STRAY).await;
                    let _ = stray.sent.send(()).await;
                }
                continue;
            }
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain".to_vec(),
        };
        if s.write_all(&resp).await.is_err() {
            return;
        }
    }
}

/// Reads until the edge ends the connection: the bytes, and whether it ended with a reset.
async fn until_end(s: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        match read.expect("the edge ends the connection") {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (String::from_utf8_lossy(&out).into_owned(), e.kind() == ErrorKind::ConnectionReset),
        }
    }
}

async fn send(edge: std::net::SocketAddr, request: String) -> TcpStream {
    let mut s = TcpStream::connect(edge).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

/// A chunked body ended by `0\r\n\n` and followed by a whole response: a visitor that pipelined
/// two requests never gets those bytes as its second response; its connection is reset.
#[tokio::test]
async fn a_bare_lf_after_the_last_chunk_never_makes_a_second_response() {
    let server = TestServer::start().await;
    let (port, _) = hostile(None).await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let two = format!("GET /split HTTP/1.1\r\nHost: {host}\r\n\r\nGET /next HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (out, reset) = until_end(&mut send(edge, two).await).await;
    assert!(!out.contains("X-Smuggled") && !out.contains("evil"), "{out:?}");
    assert!(!out.contains("plain"), "nothing more is served on the connection: {out:?}");
    assert!(reset, "reset, not closed in order: {out:?}");
}

/// Bare LFs in chunk size lines, after chunk data, in and after trailers, and chunk extensions
/// over 16 KiB: nothing from the bad byte on reaches the visitor, and its connection is reset.
#[tokio::test]
async fn malformed_chunked_framing_is_cut_at_the_bad_byte_with_a_reset() {
    let server = TestServer::start().await;
    let (port, _) = hostile(None).await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    for path in ["/lf-size", "/lf-data-end", "/lf-trailer", "/lf-after-trailer", "/long-ext"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\nGET /next HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (out, reset) = until_end(&mut send(edge, req).await).await;
        assert!(!out.contains("MARK"), "{path}: {out:?}");
        assert!(!out.contains("plain"), "{path}: the connection was kept: {out:?}");
        assert!(reset, "{path}: reset, not closed in order: {out:?}");
    }
    // The same service's well-formed answers still pass.
    let (status, body) = get(edge, &host, "/").await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"plain"[..]));
}

/// An interim (1xx) head is rebuilt like any other: CRLF line ends, nothing hop-by-hop, no
/// framing header; the final response follows on the kept connection.
#[tokio::test]
async fn interim_heads_are_rebuilt() {
    let server = TestServer::start().await;
    let (port, _) = hostile(None).await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    let req = format!(
        "GET /hints HTTP/1.1\r\nHost: {host}\r\n\r\nGET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let (out, reset) = until_end(&mut send(edge, req).await).await;
    assert!(!reset, "{out:?}");
    let (hints, rest) = out.split_once("\r\n\r\n").expect("a whole interim head");
    assert_eq!(hints, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>", "{out:?}");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.contains("\r\n\r\nok"), "{out:?}");
    assert!(rest.ends_with("plain"), "{out:?}");
}

/// A kept-alive upstream that closes on a request without answering: a POST is not sent again
/// (the local service saw it once) and the visitor gets a 502; a GET may be, once. With and
/// without the multiplexer.
#[tokio::test]
async fn a_post_is_never_sent_twice() {
    let server = TestServer::start().await;
    for mux in [true, false] {
        let (port, seen) = hostile(None).await;
        let name = if mux { "post-mux" } else { "post-conns" };
        let mut opts = server.client_options(vec![tunnel(name, Protocol::Http, port)]);
        opts.mux = mux;
        let (_c, ready) = spawn_ready(opts).await;
        let (edge, host) = (server.http_addr(), ready[0].host());
        for (method, counter) in [("POST", &seen.posts), ("GET", &seen.gets)] {
            // The request before leaves a kept upstream, which the next one reuses.
            let mut conn = http1_conn(edge).await;
            let warm = http::Request::get("/").header("host", &host).body(body("")).unwrap();
            assert_eq!(conn.send_request(warm).await.unwrap().status(), 200);
            let req = http::Request::builder().method(method).uri("/vanish").header("host", &host);
            let resp = conn.send_request(req.body(body("payload")).unwrap()).await.unwrap();
            assert_eq!(resp.status(), 502, "mux {mux}: {method}");
            let expected = if method == "POST" { 1 } else { 2 };
            assert_eq!(counter.load(Ordering::Relaxed), expected, "mux {mux}: {method} sent to the local service");
        }
    }
}

/// A local service that sends a response's worth of bytes after a bodiless 204 (or after a
/// response with Content-Length), while its connection waits in the edge's pool: the next
/// visitor gets the service's real answer on a new connection, never those bytes.
#[tokio::test]
async fn stray_bytes_after_a_response_never_reach_the_next_visitor() {
    let server = TestServer::start().await;
    for mux in [false, true] {
        for path in ["/204", "/len"] {
            let (go, go_rx) = mpsc::channel(1);
            let (sent_tx, mut sent) = mpsc::channel(1);
            let stray = Stray { go: tokio::sync::Mutex::new(go_rx), sent: sent_tx };
            let (port, seen) = hostile(Some(stray)).await;
            let name = format!("stray{}{}", u8::from(mux), &path[1..]);
            let mut opts = server.client_options(vec![tunnel(&name, Protocol::Http, port)]);
            opts.mux = mux;
            let (_c, ready) = spawn_ready(opts).await;
            let (edge, host) = (server.http_addr(), ready[0].host());
            let (status, _) = get(edge, &host, path).await;
            assert!(status.is_success(), "{path}");
            go.send(()).await.unwrap();
            sent.recv().await.unwrap();
            // Time for the bytes to cross the tunnel into the kept upstream (well under the
            // second after which the edge used to check an idle data connection at all).
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (status, body) = get(edge, &host, "/").await;
            assert_eq!((status.as_u16(), &body[..]), (200, &b"plain"[..]), "mux {mux} {path}");
            assert_eq!(seen.conns.load(Ordering::Relaxed), 2, "mux {mux} {path}: the kept one was dropped");
        }
    }
}

/// A body cut short (the local service closes before its Content-Length or last chunk) is not
/// ended as if whole: the visitor's connection is reset, on the lean path and on hyper's
/// (HTTP/1.0 there).
#[tokio::test]
async fn a_body_cut_short_ends_in_a_reset() {
    let server = TestServer::start().await;
    let (port, _) = hostile(None).await;
    let (_c, ready) = server.client(vec![tunnel("web", Protocol::Http, port)]).await;
    let (edge, host) = (server.http_addr(), ready[0].host());
    for (path, version) in [("/short", "1.1"), ("/short-chunked", "1.1"), ("/short", "1.0"), ("/short-chunked", "1.0")]
    {
        let req = format!("GET {path} HTTP/{version}\r\nHost: {host}\r\n\r\n");
        let (out, reset) = until_end(&mut send(edge, req).await).await;
        assert!(reset, "{path} HTTP/{version}: reset, not closed in order: {out:?}");
    }
}
