use std::task::{Context, Poll};

use tokio::io::ReadBuf;
use tokio::net::TcpStream;

use super::*;

/// An upstream that yields its bytes a few at a time, then ends: in order, or with an error
/// (a data connection cut without a proper close, a failed multiplexed connection).
struct FakeUpstream {
    data: Vec<u8>,
    at: usize,
    fail: bool,
}

impl AsyncRead for FakeUpstream {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = (self.data.len() - self.at).min(7).min(buf.remaining());
        if n > 0 {
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        if self.fail {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut without close_notify")));
        }
        Poll::Ready(Ok(()))
    }
}

/// Passes `response` from an upstream that ends as told: what the visitor got, and the outcome.
async fn through(response: &str, fail: bool) -> (String, Result<Sent, Fail>) {
    let mut up = FakeUpstream { data: response.as_bytes().to_vec(), at: 0, fail };
    let mut visitor = Vec::new();
    let stats = crate::tunnel::TunnelStats::default();
    let r = respond(&mut up, &mut visitor, false, false, Duration::from_secs(5), &stats).await;
    (String::from_utf8(visitor).unwrap(), r)
}

#[tokio::test]
async fn a_body_cut_by_an_upstream_error_is_never_presented_as_complete() {
    // Delimited by close: the same bytes are a whole response when the upstream ends in
    // order, and a reset when it fails.
    let close10 = "HTTP/1.0 200 OK\r\n\r\nuntil the end";
    let (got, r) = through(close10, false).await;
    let sent = r.ok().unwrap();
    assert!(got.ends_with("connection: close\r\n\r\nuntil the end"), "{got}");
    assert!(sent.close && !sent.reset && !sent.reusable);
    let (got, r) = through(close10, true).await;
    let sent = r.ok().unwrap();
    assert!(got.ends_with("until the end"), "{got}");
    assert!(sent.reset && !sent.reusable, "a failed upstream resets the visitor");
    // Framed bodies cut short, whichever way the upstream ends.
    for cut in [
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nonly this\r\n",
    ] {
        for fail in [false, true] {
            let (_, r) = through(cut, fail).await;
            let sent = r.ok().unwrap();
            assert!(sent.reset && !sent.reusable, "{cut:?} fail {fail}");
        }
    }
    // Whole ones are not.
    for whole in [
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwhole",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwhol\r\n0\r\n\r\n",
    ] {
        let (_, r) = through(whole, true).await;
        let sent = r.ok().unwrap();
        assert!(!sent.reset && !sent.close, "{whole:?}");
    }
    // An upstream that fails before a whole head: nothing reaches the visitor (a 502).
    let (got, r) = through("HTTP/1.1 200 OK\r\nContent-", true).await;
    assert!(got.is_empty() && matches!(r, Err(Fail::BadResponse)), "{got}");
}

#[tokio::test]
async fn a_malformed_chunked_body_goes_on_only_up_to_the_bad_byte() {
    let (got, r) = through(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\nHTTP/1.1 200 OK\r\n\r\n",
        false,
    )
    .await;
    assert!(got.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n"), "{got:?}");
    assert_eq!(got.matches("HTTP/1.1").count(), 1, "{got:?}");
    let sent = r.ok().unwrap();
    assert!(sent.reset && !sent.reusable);
}

#[tokio::test]
async fn a_reset_visitor_connection_ends_with_a_tcp_reset() {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut visitor = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (mut edge, _) = l.accept().await.unwrap();
    edge.write_all(b"partial").await.unwrap();
    edge.reset_on_close();
    drop(edge);
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), visitor.read_to_end(&mut got)).await.unwrap();
    assert_eq!(end.map_err(|e| e.kind()).err(), Some(io::ErrorKind::ConnectionReset), "{got:?}");
}
