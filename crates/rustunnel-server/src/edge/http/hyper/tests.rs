use super::*;
use crate::edge::http::framing::Tracker;

#[test]
fn a_visitor_named_in_the_upstream_uri_reads_back() {
    for a in ["203.0.113.7:51000", "[2001:db8::7]:1", "127.0.0.1:0"] {
        let a: SocketAddr = a.parse().unwrap();
        assert_eq!(parse_visitor_label(&visitor_label(a)), Some(a));
    }
    assert_eq!(parse_visitor_label("zz"), None);
    assert_eq!(parse_visitor_label("0102"), None);
}

#[test]
fn a_request_must_name_exactly_one_host() {
    let req = |uri: &str, hosts: &[&str]| {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        host_of(&b.body(()).unwrap())
    };
    assert_eq!(req("/", &["App.localhost:8080"]), Ok(("app.localhost".into(), "App.localhost:8080".into())));
    assert_eq!(req("https://app.localhost/x", &[]), Ok(("app.localhost".into(), "app.localhost".into())));
    assert_eq!(req("https://app.localhost/x", &["APP.localhost"]).map(|h| h.0), Ok("app.localhost".into()));
    for (uri, hosts) in [
        ("/", &["a.localhost", "evil.example"][..]),
        ("/", &["a.localhost", "a.localhost"]),
        ("/", &[""]),
        ("/", &[]),
        ("https://a.localhost/", &["b.localhost"]),
    ] {
        assert!(req(uri, hosts).is_err(), "{uri} {hosts:?}");
    }
}

/// An upstream whose end is an error, as a tunnel's data stream cut without a proper close.
struct FailsAtEnd(tokio::io::DuplexStream);

impl AsyncRead for FailsAtEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut")))
            }
            other => other,
        }
    }
}

impl AsyncWrite for FailsAtEnd {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A response read by hyper's client from an upstream that answers with a body delimited by
/// close and then fails, wrapped as the edge wraps the bodies it forwards.
async fn cut_response(cut: Option<Arc<Flag>>) -> PermitBody {
    use tokio::io::AsyncReadExt;
    let (edge, mut local) = tokio::io::duplex(1 << 16);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(FailsAtEnd(edge))).await.unwrap();
    tokio::spawn(conn);
    tokio::spawn(async move {
        let mut head = [0u8; 1024];
        let _ = local.read(&mut head).await;
        let _ = local.write_all(b"HTTP/1.1 200 OK\r\n\r\nthe first part").await;
    });
    let resp = send.send_request(Request::get("/").body(http_body_util::Empty::<Bytes>::new()).unwrap());
    let resp = resp.await.unwrap();
    let permit = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap();
    PermitBody { inner: resp.into_body(), stats: Arc::default(), log: None, cut, _permit: permit }
}

fn answer_with(
    body: PermitBody,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<PermitBody>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<PermitBody>, Infallible>>,
> + Clone {
    let body = Arc::new(parking_lot::Mutex::new(Some(body)));
    hyper::service::service_fn(move |_| {
        let b = body.lock().take().unwrap();
        std::future::ready(Ok(Response::new(b)))
    })
}

/// A body delimited by close on an HTTP/1.0 visitor's connection, whose upstream fails: the
/// visitor's connection is reset, not closed in order as if the body were complete.
#[tokio::test]
async fn an_http1_response_cut_upstream_resets_the_visitor() {
    use tokio::io::AsyncReadExt;
    let flag = Arc::new(Flag::new());
    let body = cut_response(Some(flag.clone())).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut visitor = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (edge, _) = l.accept().await.unwrap();
    let io = TokioIo::new(Tracked::new(edge, Tracker::off(), flag));
    tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, answer_with(body)));
    visitor.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), visitor.read_to_end(&mut got)).await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert_eq!(end.map_err(|e| e.kind()).err(), Some(std::io::ErrorKind::ConnectionReset), "{got}");
}

/// Over HTTP/2 the same cut resets the stream: its body ends in an error, not as complete.
#[tokio::test]
async fn an_http2_response_cut_upstream_resets_the_stream() {
    use http_body_util::BodyExt;
    let body = cut_response(None).await;
    let (client, server) = tokio::io::duplex(1 << 16);
    let exec = hyper_util::rt::TokioExecutor::new();
    let serve = hyper::server::conn::http2::Builder::new(exec.clone());
    tokio::spawn(serve.serve_connection(TokioIo::new(server), answer_with(body)));
    let (mut send, conn) = hyper::client::conn::http2::handshake(exec, TokioIo::new(client)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://a.localhost/").body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await.unwrap() {
            Some(Ok(_)) => {}
            other => break other,
        }
    };
    assert!(matches!(end, Some(Err(_))), "reset, not ended as if complete: {end:?}");
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("x-keep", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h, false);
    assert!(h.get("x-secret").is_none());
    assert!(h.get(header::TRANSFER_ENCODING).is_none());
    assert!(h.get(header::UPGRADE).is_none());
    assert!(h.get("x-keep").is_some());
}
