//! The lean HTTP/1.1 path of the edge.
//!
//! Most visitors speak plain HTTP/1.1: one request after another on a kept-alive connection,
//! bodies framed by `Content-Length`. For them the edge does not need a general HTTP server and
//! client: it reads the request head, checks it, writes a rewritten head (hop-by-hop headers
//! removed, `X-Forwarded-*` set from the real peer) and the body to a data connection, reads the
//! response head, rewrites it the same way and passes the body through, framed exactly as the
//! local service framed it (`Content-Length`, chunked, or until close). A small response then
//! costs one read and one write on each side and no allocation beyond the two rewritten heads.
//!
//! Anything else goes to hyper ([`super::hyper`]) for the rest of the connection, from the first
//! byte of that request: HTTP/1.0, `Transfer-Encoding` on a request (so both framing headers get
//! the smuggling 400 there), upgrades (WebSocket), `Expect`, `CONNECT`, absolute-form targets,
//! heads over [`BUF_SIZE`](rustunnel_transport::splice::BUF_SIZE) or hyper would refuse, HTTP/2
//! (h2c prior knowledge; ALPN h2 never comes here). hyper's answers to those are the edge's
//! answers; this path only takes requests it forwards exactly as hyper would.
//!
//! Data connections that served a request are kept per tunnel ([`IdlePool`](super::upstream::IdlePool)) and reused: a
//! visitor's kept-alive connection holds one only while a request is in flight.
//!
//! A local service's response is trusted no further than the strictest common client would
//! trust it: a head is always rebuilt, a chunked body is scanned strictly
//! ([`ChunkScan::strict`](super::framing::ChunkScan::strict)), and a response found malformed or cut short ends the visitor's
//! connection with a reset once the bytes before the fault are out, so no client can take the
//! rest for a complete message or for the next response. A kept upstream that received
//! anything while idle is never reused, and a request is sent a second time only when it is
//! idempotent and nothing of its response came back.
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustunnel_transport::splice::Window;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant as TokioInstant;
use tokio_util::either::Either;

use super::framing::ChunkStep;
use super::head::{edit_head, parse_request, parse_response, Framing, Parsed, ReqHead};
use super::limits::HEAD_LIMIT;
use super::pages::{self, Page};
use super::policy::{self, NoAnswer};
use super::reset::ResetOnClose;
use super::upstream::{upstream, Origin};
use crate::state::Shared;

/// Who is on the other end of a visitor connection.
pub struct Visitor<'a> {
    pub shared: &'a Arc<Shared>,
    pub peer: SocketAddr,
    pub scheme: &'static str,
}

/// How a visitor connection left the lean path.
pub enum End<I> {
    /// Closed (by either side, a deadline or the server stopping).
    Closed,
    /// A request this path does not take: hyper serves the connection from `pending` on.
    HandOver(I, Vec<u8>),
}

/// Whether the pending bytes fill the window's whole buffer: a head this long will not fit.
fn is_full(w: &Window) -> bool {
    w.capacity() == Some(w.pending().len())
}

fn take_all(w: &mut Window) -> Vec<u8> {
    let v = w.pending().to_vec();
    w.consume(v.len());
    v
}

/// Reads at most `max` more bytes into `w`; `Ok(0)` is the end of the stream.
async fn fill<R: AsyncRead + Unpin>(w: &mut Window, r: &mut R, max: usize) -> io::Result<usize> {
    poll_fn(|cx| w.poll_fill(cx, Pin::new(&mut *r), max)).await
}

/// Why no response reached the visitor.
enum Fail {
    /// Nothing came back (a reused connection may have been closed meanwhile: retry).
    NoResponse,
    /// The upstream ended in order before any response byte: on a mux stream, the client is
    /// there and it is the local service that closed without answering.
    Closed,
    BadResponse,
    Timeout,
    /// The visitor's connection failed.
    Visitor,
}

/// What came of a forwarded request whose response head reached the visitor.
struct Sent {
    status: u16,
    /// The response is complete and the data connection can serve another request.
    reusable: bool,
    /// The visitor's connection must close (response delimited by close).
    close: bool,
    /// The response was cut short or turned out malformed: the visitor's connection is reset.
    reset: bool,
}

/// What becomes of a visitor's connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Keep,
    Close,
    Reset,
}

impl Then {
    fn keep_if(keep: bool) -> Then {
        if keep {
            Then::Keep
        } else {
            Then::Close
        }
    }
}

/// Whether a request may be sent again after its upstream failed (RFC 9110 9.2.2, RFC 9112
/// 9.3.1.1): a POST that reached the local service may have done its work already.
fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// Writes all of `buf` to the visitor, failing when it accepts no byte for `idle`: a visitor
/// that stops reading would otherwise hold its stream, the upstream connection and a
/// concurrency permit for as long as it likes (slow reading).
async fn write_idle<V: AsyncWrite + Unpin>(vis: &mut V, mut buf: &[u8], idle: Duration) -> Result<(), Fail> {
    while !buf.is_empty() {
        match tokio::time::timeout(idle, vis.write(buf)).await {
            Ok(Ok(n)) if n > 0 => buf = &buf[n..],
            _ => return Err(Fail::Visitor),
        }
    }
    Ok(())
}

/// Reads the response from `up` and passes it to `vis`. `timeout` bounds both the wait for the
/// response head and each wait for the visitor to accept any byte of it.
async fn respond<U, V>(
    up: &mut U,
    vis: &mut V,
    head_method: bool,
    close: bool,
    timeout: Duration,
    stats: &crate::tunnel::TunnelStats,
) -> Result<Sent, Fail>
where
    U: AsyncRead + Unpin,
    V: AsyncWrite + Unpin,
{
    let deadline = TokioInstant::now() + timeout;
    let mut rb = Window::pooled();
    let mut got_any = false;
    let head = loop {
        if !rb.is_empty() {
            match parse_response(rb.pending(), head_method, close) {
                Err(()) => return Err(Fail::BadResponse),
                Ok(Some(h)) if h.interim => {
                    rb.consume(h.len);
                    write_idle(vis, &h.out, timeout).await?;
                    stats.add_out(h.out.len());
                    continue;
                }
                Ok(Some(h)) => break h,
                Ok(None) if is_full(&rb) => return Err(Fail::BadResponse),
                Ok(None) => {}
            }
        }
        match tokio::time::timeout_at(deadline, fill(&mut rb, up, usize::MAX)).await {
            Err(_) => return Err(Fail::Timeout),
            Ok(Ok(0)) if !got_any => return Err(Fail::Closed),
            Ok(Err(_)) if !got_any => return Err(Fail::NoResponse),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Fail::BadResponse),
            Ok(Ok(_)) => got_any = true,
        }
    };
    rb.consume(head.len);
    let mut framing = head.framing;
    let mut out = head.out;
    let mut sent =
        Sent { status: head.status, reusable: head.reusable, close: close || framing == Framing::Close, reset: false };
    loop {
        // The body bytes in hand that belong to this response.
        let avail = rb.pending();
        let (take, done) = match &mut framing {
            Framing::Empty => (0, true),
            Framing::Length(left) => {
                let n = (*left).min(avail.len() as u64);
                *left -= n;
                (n as usize, *left == 0)
            }
            Framing::Chunked(scan) => match scan.feed(avail) {
                ChunkStep::Done(n) => (n, true),
                ChunkStep::More => (avail.len(), false),
                ChunkStep::Bad(n) => {
                    // The bytes before the fault go on; the rest never do.
                    sent.reusable = false;
                    sent.reset = true;
                    (n, true)
                }
            },
            Framing::Close => (avail.len(), false),
        };
        if out.is_empty() {
            // Body bytes go out from where they were read: no copy.
            if take > 0 {
                write_idle(vis, &rb.pending()[..take], timeout).await?;
                stats.add_out(take);
            }
        } else {
            // The response head leaves with the first body bytes in one write.
            out.extend_from_slice(&avail[..take]);
            write_idle(vis, &out, timeout).await?;
            stats.add_out(out.len());
            out = Vec::new();
        }
        rb.consume(take);
        if done {
            if !rb.is_empty() {
                // Bytes after the response: the connection is out of step.
                sent.reusable = false;
            }
            break;
        }
        match fill(&mut rb, up, usize::MAX).await {
            Ok(0) if framing == Framing::Close => {
                // The end of a close-delimited body.
                sent.reusable = false;
                sent.close = true;
                break;
            }
            Ok(0) | Err(_) => {
                // A body cut short, or an upstream that failed rather than ended (a transfer
                // delimited by close must not look complete).
                sent.reusable = false;
                sent.reset = true;
                break;
            }
            Ok(_) => {}
        }
    }
    match tokio::time::timeout(timeout, vis.flush()).await {
        Ok(Ok(())) => Ok(sent),
        _ => Err(Fail::Visitor),
    }
}

/// Moves the rest of a `Content-Length` body from the visitor to the data connection.
async fn upload<V, U>(
    vis: &mut V,
    vb: &mut Window,
    up: &mut U,
    mut left: u64,
    stats: &crate::tunnel::TunnelStats,
) -> bool
where
    V: AsyncRead + Unpin,
    U: AsyncWrite + Unpin,
{
    while left > 0 {
        match fill(vb, vis, usize::try_from(left).unwrap_or(usize::MAX)).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let n = vb.pending().len();
        if up.write_all(vb.pending()).await.is_err() {
            return false;
        }
        stats.add_in(n);
        vb.consume(n);
        left -= n as u64;
    }
    up.flush().await.is_ok()
}

/// Serves a visitor's HTTP/1.1 connection until it closes or needs hyper.
pub async fn serve<I>(mut io: I, v: Visitor<'_>) -> End<I>
where
    I: AsyncRead + AsyncWrite + ResetOnClose + Unpin + Send,
{
    let shared = v.shared;
    let peer_ip = v.peer.ip().to_string();
    let mut vb = Window::pooled();
    loop {
        // The next request head, within the header deadline.
        let deadline = TokioInstant::now() + shared.config().header_timeout;
        let head = loop {
            if !vb.is_empty() {
                match parse_request(vb.pending(), &peer_ip, v.scheme) {
                    Parsed::Lean(h) => break h,
                    Parsed::HandOver => return End::HandOver(io, take_all(&mut vb)),
                    Parsed::TooLarge => return refuse(io, pages::headers_too_large()).await,
                    // The request line alone fills the limit: the target is what is too long.
                    Parsed::Partial if vb.pending().len() >= HEAD_LIMIT && !vb.pending().contains(&b'\n') => {
                        return refuse(io, pages::uri_too_long()).await
                    }
                    Parsed::Partial if vb.pending().len() >= HEAD_LIMIT => {
                        return refuse(io, pages::headers_too_large()).await
                    }
                    // A long head: room for the rest of it, up to the limit.
                    Parsed::Partial if is_full(&vb) => {
                        let _ = vb.reserve(HEAD_LIMIT - vb.pending().len());
                    }
                    Parsed::Partial => {}
                }
            }
            let idle = vb.is_empty();
            tokio::select! {
                r = tokio::time::timeout_at(deadline, fill(&mut vb, &mut io, usize::MAX)) => match r {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return End::Closed,
                },
                _ = shared.stop_accepting().cancelled(), if idle => return End::Closed,
                _ = shared.hard_stop().cancelled() => return End::Closed,
            }
        };
        vb.consume(head.len);
        let close = head.close || shared.stop_accepting().is_cancelled();
        let then = tokio::select! {
            t = forward(&mut io, &mut vb, head, close, &v) => t,
            _ = shared.hard_stop().cancelled() => Then::Close,
        };
        match then {
            Then::Keep => {}
            Then::Close => {
                let _ = io.shutdown().await;
                return End::Closed;
            }
            Then::Reset => {
                io.reset_on_close();
                return End::Closed;
            }
        }
    }
}

/// Answers a request the edge will not read to its end with `p` and closes. The visitor may
/// still be sending: what it sends meanwhile is read and dropped for a moment, so that closing
/// with unread bytes (a TCP reset) does not destroy the answer before the visitor reads it.
async fn refuse<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, p: Page) -> End<I> {
    page(&mut io, p, true).await;
    if io.shutdown().await.is_err() {
        return End::Closed;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 256 * 1024;
        while left > 0 {
            match tokio::io::AsyncReadExt::read(&mut io, &mut sink).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    End::Closed
}

/// Answers with one of the edge's pages; whether the connection stays open.
async fn page<I: AsyncWrite + Unpin>(io: &mut I, p: Page, close: bool) -> bool {
    io.write_all(&p.h1(close)).await.is_ok() && io.flush().await.is_ok() && !close
}

/// Routes and forwards one request; what becomes of the visitor's connection.
async fn forward<I>(io: &mut I, vb: &mut Window, head: ReqHead, close: bool, v: &Visitor<'_>) -> Then
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let shared = v.shared;
    // An unread body cannot stay on a kept-alive connection: an edge page closes it.
    let page_close = close || head.body > 0;
    let tunnel = match policy::route(shared, &head.host_name) {
        Ok(t) => t,
        Err(p) => return Then::keep_if(page(io, p, page_close).await),
    };
    let given = || head.authorization_value().into_iter().collect();
    if let Some(p) = policy::refusal(shared, &tunnel, v.peer.ip(), given) {
        policy::log_request(shared, v.peer, &tunnel, &head.method, &head.path, p.status.as_u16(), started);
        return Then::keep_if(page(io, p, page_close).await);
    }
    let _permit = match policy::admit(&tunnel) {
        Ok(permit) => permit,
        Err(p) => return Then::keep_if(page(io, p, page_close).await),
    };
    let log = |status: u16| {
        policy::log_request(shared, v.peer, &tunnel, &head.method, &head.path, status, started);
    };

    // The head and the body bytes already read go in one write.
    let in_hand = head.body.min(vb.pending().len() as u64) as usize;
    let login = head.authorization.filter(|_| tunnel.access.basic_auth.is_some());
    let mut request = head.out;
    edit_head(&mut request, login, tunnel.host_header.as_deref().map(|h| (head.host_line, h)));
    request.extend_from_slice(&vb.pending()[..in_hand]);
    vb.consume(in_hand);
    let left = head.body - in_hand as u64;

    let mut fresh = false;
    loop {
        let Some((mut up, origin)) = upstream(shared, &tunnel, fresh, v.peer).await else {
            let p = policy::no_answer_page(NoAnswer::Failed);
            log(p.status.as_u16());
            return Then::keep_if(page(io, p, page_close).await);
        };
        let reused = matches!(origin, Origin::Reused);
        let wrote = match origin {
            Origin::NewConn(mut header) => {
                header.extend_from_slice(&request);
                up.write_all(&header).await
            }
            Origin::Reused | Origin::NewStream => up.write_all(&request).await,
        };
        let wrote = wrote.is_ok() && up.flush().await.is_ok();
        if wrote {
            tunnel.stats.add_in(request.len());
        }
        let timeout = shared.config().response_timeout;
        let (result, uploaded) = if !wrote {
            (Err(Fail::NoResponse), left == 0)
        } else if left == 0 {
            (respond(&mut up, io, head.head_method, close, timeout, &tunnel.stats).await, true)
        } else {
            // The body streams up while the response may already stream down.
            let (mut vr, mut vw) = tokio::io::split(&mut *io);
            let (mut ur, mut uw) = tokio::io::split(&mut up);
            let send = upload(&mut vr, vb, &mut uw, left, &tunnel.stats);
            let recv = respond(&mut ur, &mut vw, head.head_method, close, timeout, &tunnel.stats);
            tokio::pin!(send, recv);
            let mut sent_all = None;
            let result = loop {
                tokio::select! {
                    // False: the visitor went away mid-body, or the local side stopped reading.
                    ok = &mut send, if sent_all.is_none() => sent_all = Some(ok),
                    r = &mut recv => break r,
                }
            };
            (result, sent_all == Some(true))
        };
        return match result {
            Ok(sent) => {
                log(sent.status);
                if sent.reusable && uploaded {
                    let key = tunnel.upstream_per_visitor.then(|| v.peer.ip());
                    tunnel.http_idle.push(up, shared.config().upstream_idle, key);
                }
                if sent.reset {
                    Then::Reset
                } else {
                    // A response that came before the whole body leaves the visitor out of step.
                    Then::keep_if(!(sent.close || close || !uploaded))
                }
            }
            // A reused connection the local side may have closed meanwhile: once more on a new
            // one, as hyper's client does, if nothing of the response came back, the whole
            // request is still in hand and sending it twice does no harm.
            Err(Fail::NoResponse | Fail::Closed) if reused && left == 0 && !fresh && idempotent(&head.method) => {
                fresh = true;
                continue;
            }
            Err(fail @ (Fail::NoResponse | Fail::Closed | Fail::BadResponse | Fail::Timeout)) => {
                let why = match fail {
                    Fail::Timeout => NoAnswer::Timeout,
                    Fail::Closed => NoAnswer::Closed { mux: matches!(up, Either::Right(_)) },
                    _ => NoAnswer::Failed,
                };
                let p = policy::no_answer_page(why);
                log(p.status.as_u16());
                Then::keep_if(page(io, p, true).await)
            }
            Err(Fail::Visitor) => Then::Close,
        };
    }
}

#[cfg(test)]
mod tests;

/// Differential tests: the same bytes through the lean path and through hyper (the edge's other
/// path, and the client every visitor could be). A response the lean path passes on whole reads,
/// at the visitor, as hyper reads it straight from the local service: same status, end-to-end
/// headers, body and trailers; otherwise the lean path refused it (a 502, or a reset). A request
/// the lean path takes is one hyper's server takes too, and the local service sees the same
/// method, target, end-to-end headers and body; otherwise the lean path handed it over.
#[cfg(test)]
mod differential;
