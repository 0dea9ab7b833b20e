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
//! Anything else goes to hyper ([`super::http`]) for the rest of the connection, from the first
//! byte of that request: HTTP/1.0, `Transfer-Encoding` on a request (so both framing headers get
//! the smuggling 400 there), upgrades (WebSocket), `Expect`, `CONNECT`, absolute-form targets,
//! heads over [`BUF_SIZE`](rustunnel_transport::splice::BUF_SIZE) or hyper would refuse, HTTP/2 (h2c prior knowledge; ALPN h2 never
//! comes here). hyper's answers to those are the edge's answers; this path only takes requests
//! it forwards exactly as hyper would.
//!
//! Data connections that served a request are kept per tunnel ([`IdlePool`]) and reused: a
//! visitor's kept-alive connection holds one only while a request is in flight.
//!
//! A local service's response is trusted no further than the strictest common client would
//! trust it: a head is always rebuilt, a chunked body is scanned strictly
//! ([`ChunkScan::strict`]), and a response found malformed or cut short ends the visitor's
//! connection with a reset once the bytes before the fault are out, so no client can take the
//! rest for a complete message or for the next response. A kept upstream that received
//! anything while idle is never reused, and a request is sent a second time only when it is
//! idempotent and nothing of its response came back.
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::Protocol;
use rustunnel_transport::mux::{mux, MuxConfig, MuxHandle, MuxStream, Role};
use rustunnel_transport::splice::Window;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant as TokioInstant;
use tokio_util::either::Either;

use super::framing::{content_length, is_chunked, ChunkScan, ChunkStep};
use super::pages::{self, Page};
use crate::server::{RouteTo, Shared};
use crate::session::{DataConn, DataConnError, Session};
use crate::tunnel::Tunnel;

/// Where a request goes: a data connection of its own, or a stream of the session's
/// multiplexed data connection (clients that take them).
pub(super) type Upstream = Either<DataConn, MuxStream>;

/// Most header fields a request may have; with more it gets a 431 (hyper's default limit).
pub(super) const MAX_HEADERS: usize = 100;
/// Longest request head; a longer one gets a 431 (as hyper's HTTP/1 buffer limit).
pub(super) const HEAD_LIMIT: usize = 64 * 1024;
/// Idle data connections kept per tunnel.
const MAX_IDLE: usize = 1024;

/// Request headers the edge sets itself from the real peer; the visitor's own are dropped.
const FORWARDING: [&str; 5] = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "forwarded"];
/// Hop-by-hop headers, never forwarded (`transfer-encoding` is kept on a chunked response,
/// whose chunks pass through as they are).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Who is on the other end of a visitor connection.
pub(super) struct Visitor<'a> {
    pub shared: &'a Arc<Shared>,
    pub peer: SocketAddr,
    pub scheme: &'static str,
}

/// A visitor connection whose close can be made a reset (TCP RST, SO_LINGER 0) instead of an
/// orderly end: after a response that was cut short or found malformed, an orderly end (FIN, or
/// TLS `close_notify`) could let the visitor take what it got for a complete message.
pub(super) trait ResetOnClose {
    /// Makes the connection's close, when it is dropped, a reset.
    fn reset_on_close(&self);
}

impl ResetOnClose for TcpStream {
    fn reset_on_close(&self) {
        if let Err(e) = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(error = %e, "could not make a visitor connection's close a reset");
        }
    }
}

impl<T: ResetOnClose> ResetOnClose for rustunnel_transport::splice::ReadAhead<T> {
    fn reset_on_close(&self) {
        self.get_ref().reset_on_close();
    }
}

impl<T: ResetOnClose> ResetOnClose for tokio_rustls::server::TlsStream<T> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close();
    }
}

/// How a visitor connection left the lean path.
pub(super) enum End<I> {
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

/// A request head this path forwards.
struct ReqHead {
    /// Bytes of the head in the buffer.
    len: usize,
    method: String,
    path: String,
    /// `HEAD`: the response has no body whatever its headers say.
    head_method: bool,
    /// `Content-Length` of the body (0: none).
    body: u64,
    /// The visitor asked to close after this request.
    close: bool,
    /// The host name routed on.
    host_name: String,
    /// The head to send to the local service.
    out: Vec<u8>,
    /// Where in `out` the request's one `Authorization` header line is (a tunnel with
    /// `--basic-auth` checks its value and takes the line out).
    authorization: Option<std::ops::Range<usize>>,
    /// Where in `out` the `Host` header line is (`--host-header` replaces it).
    host_line: std::ops::Range<usize>,
}

impl ReqHead {
    /// The value of the `Authorization` header, if there is one.
    fn authorization_value(&self) -> Option<&[u8]> {
        let line = &self.out[self.authorization.clone()?];
        let value = &line[line.iter().position(|&b| b == b':')? + 1..];
        Some(value.trim_ascii())
    }
}

enum Parsed {
    Partial,
    Lean(ReqHead),
    HandOver,
    /// More header fields than [`MAX_HEADERS`].
    TooLarge,
}

fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The host name without port, lowercased.
pub(super) fn host_name(raw: &str) -> String {
    let name = if raw.starts_with('[') {
        raw
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    name.to_ascii_lowercase()
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The tokens of the `Connection` headers (they name more hop-by-hop headers).
fn connection_tokens<'h>(headers: &'h [httparse::Header<'h>]) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a header is dropped on the way through: hop-by-hop, or named by `Connection` (never
/// the framing or routing headers, whatever `Connection` says).
fn dropped(name: &str, headers: &[httparse::Header<'_>]) -> bool {
    is_one_of(name, &HOP_BY_HOP)
        || (!is_one_of(name, &["content-length", "host"])
            && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name)))
}

fn parse_request(buf: &[u8], peer_ip: &str, scheme: &str) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::TooLarge,
        Err(_) => return Parsed::HandOver,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::HandOver;
    };
    // Origin-form, or `OPTIONS *` (asterisk-form, RFC 9112 3.2.4), which goes to the local
    // service as it came; anything else is hyper's path (which refuses it with a 400).
    if method.eq_ignore_ascii_case("CONNECT") || !(path.starts_with('/') || (path == "*" && method == "OPTIONS")) {
        return Parsed::HandOver;
    }
    let headers = &*req.headers;
    let (mut host, mut hosts, mut body, mut auths) = (None, 0, None::<u64>, 0);
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            match content_length(h.value) {
                Some(n) if body.is_none_or(|b| b == n) => body = Some(n),
                _ => return Parsed::HandOver,
            }
        } else if is_one_of(name, &["transfer-encoding", "upgrade", "expect"]) {
            return Parsed::HandOver;
        } else if name.eq_ignore_ascii_case("authorization") {
            auths += 1;
        }
    }
    // Several credentials: hyper's path judges (and a tunnel with a login refuses) them.
    if auths > 1 {
        return Parsed::HandOver;
    }
    let host = match host {
        Some(v) if hosts == 1 && !v.is_empty() && v.iter().all(|b| b.is_ascii_graphic()) => {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => return Parsed::HandOver,
    };
    let close = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("close"));
    let mut out = Vec::with_capacity(len + 160);
    for part in [method.as_bytes(), b" ", path.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(part);
    }
    let (mut authorization, mut host_line) = (None, 0..0);
    for h in headers {
        if !dropped(h.name, headers) && !is_one_of(h.name, &FORWARDING) {
            let start = out.len();
            put_header(&mut out, h.name.as_bytes(), h.value);
            if h.name.eq_ignore_ascii_case("authorization") {
                authorization = Some(start..out.len());
            } else if h.name.eq_ignore_ascii_case("host") {
                host_line = start..out.len();
            }
        }
    }
    put_header(&mut out, b"x-forwarded-host", host.as_bytes());
    put_header(&mut out, b"x-forwarded-for", peer_ip.as_bytes());
    put_header(&mut out, b"x-real-ip", peer_ip.as_bytes());
    put_header(&mut out, b"x-forwarded-proto", scheme.as_bytes());
    out.extend_from_slice(b"\r\n");
    Parsed::Lean(ReqHead {
        len,
        method: method.chars().take(32).collect(),
        path: path.chars().take(256).collect(),
        head_method: method == "HEAD",
        body: body.unwrap_or(0),
        close,
        host_name: host_name(&host),
        out,
        authorization,
        host_line,
    })
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked(ChunkScan),
    /// Until the local service closes: the visitor's connection closes after it too.
    Close,
}

/// A response head, rewritten for the visitor.
struct RespHead {
    len: usize,
    status: u16,
    /// An interim (1xx) response: passed on as it is, the final one follows.
    interim: bool,
    framing: Framing,
    /// The data connection may serve another request after this response.
    reusable: bool,
    out: Vec<u8>,
}

/// Parses a response head: `Ok(None)` while incomplete, `Err` for one the edge will not pass on.
fn parse_response(buf: &[u8], head_method: bool, close_visitor: bool) -> Result<Option<RespHead>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else { return Err(()) };
    if status == 101 || status < 100 {
        // 101 was not asked for (upgrades never take this path). Below 100 is not a status
        // (httparse takes any three digits) and would go out as a status line no client reads.
        return Err(());
    }
    let headers = &*resp.headers;
    let mut out = Vec::with_capacity(len + 32);
    out.extend_from_slice(format!("HTTP/1.1 {status} ").as_bytes());
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if (100..200).contains(&status) {
        // Rebuilt as a final head is: no line ends but CRLF, nothing hop-by-hop, no framing
        // header (an interim response has no body whatever it says).
        for h in headers {
            if !dropped(h.name, headers) && !h.name.eq_ignore_ascii_case("content-length") {
                put_header(&mut out, h.name.as_bytes(), h.value);
            }
        }
        out.extend_from_slice(b"\r\n");
        return Ok(Some(RespHead { len, status, interim: true, framing: Framing::Empty, reusable: false, out }));
    }
    let (mut te, mut cl) = (None, None::<u64>);
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Several fields read as one list, last coding last. A value that is not text
            // could be read differently by the visitor (chunked or not): not passed on.
            if !h.value.iter().all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t') {
                return Err(());
            }
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match content_length(h.value) {
                Some(n) if cl.is_none_or(|c| c == n) => cl = Some(n),
                _ => return Err(()),
            }
        }
    }
    // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (hyper's client
    // refuses it; read as chunked here, it would be read otherwise by others).
    if version == 0 && te.is_some() {
        return Err(());
    }
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (te, cl) {
            (Some(v), _) if is_chunked(v) => Framing::Chunked(ChunkScan::strict()),
            (Some(_), _) | (None, None) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let upstream_close = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("close"));
    let close_visitor = close_visitor || framing == Framing::Close;
    let chunked = matches!(framing, Framing::Chunked(_));
    for h in headers {
        let keep_te = chunked && h.name.eq_ignore_ascii_case("transfer-encoding");
        let stale_cl = te.is_some() && h.name.eq_ignore_ascii_case("content-length");
        if (keep_te || !dropped(h.name, headers)) && !stale_cl {
            put_header(&mut out, h.name.as_bytes(), h.value);
        }
    }
    if close_visitor {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let reusable = version == 1 && !upstream_close && framing != Framing::Close;
    Ok(Some(RespHead { len, status, interim: false, framing, reusable, out }))
}

/// Data connections (or mux streams) of one tunnel that served an HTTP request and can serve
/// another (the client keeps each one's connection to the local service open).
#[derive(Default)]
pub struct IdlePool {
    /// Oldest first; each with the visitor address it belongs to, for tunnels whose upstreams
    /// carry one (PROXY protocol to the local service), else `None`.
    conns: Mutex<Vec<(Instant, Upstream, Option<IpAddr>)>>,
}

impl IdlePool {
    /// The newest kept upstream of `visitor` (`None`: of any visitor).
    fn pop(&self, visitor: Option<IpAddr>) -> Option<(Instant, Upstream)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let i = match visitor {
            None => conns.len().checked_sub(1)?,
            Some(ip) => conns.iter().rposition(|c| c.2 == Some(ip))?,
        };
        let (since, conn, _) = conns.remove(i);
        Some((since, conn))
    }

    /// Keeps `conn` (of `visitor`, see [`IdlePool::pop`]), first taking out the expired ones
    /// (dropped outside the lock); one lock per request that ends.
    fn push(&self, conn: Upstream, max_idle: Duration, visitor: Option<IpAddr>) {
        let now = Instant::now();
        let expired = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let expired = drain_older(&mut conns, now, max_idle);
            if conns.len() < MAX_IDLE {
                conns.push((now, conn, visitor));
            }
            expired
        };
        drop(expired);
    }

    /// Removes the upstreams idle longer than `max_idle`, to be dropped outside the lock.
    fn take_older_than(&self, max_idle: Duration) -> Vec<(Instant, Upstream, Option<IpAddr>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        drain_older(&mut conns, Instant::now(), max_idle)
    }

    /// Closes the upstreams idle longer than `max_idle` (the server's `upstream_idle`, and
    /// with them the client's connections to the local service); the server calls it
    /// periodically, so a tunnel whose traffic stopped does not hold them until its next request.
    pub fn sweep(&self, max_idle: Duration) {
        drop(self.take_older_than(max_idle));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Takes the entries idle longer than `max_idle` at `now` out of `conns` (oldest first).
fn drain_older<T>(
    conns: &mut Vec<(Instant, Upstream, T)>,
    now: Instant,
    max_idle: Duration,
) -> Vec<(Instant, Upstream, T)> {
    let stale = conns.iter().take_while(|(t, _, _)| now.duration_since(*t) > max_idle).count();
    conns.drain(..stale).collect()
}

/// Whether an idle upstream is still open and silent: one that closed, or received bytes (a
/// local service that sent more than its response, after a bodiless one say), is out of step
/// and must not carry the next visitor's request.
fn still_open(conn: &mut Upstream) -> bool {
    let mut byte = [0u8; 1];
    let mut rb = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(Pin::new(conn).poll_read(&mut cx, &mut rb), Poll::Pending)
}

/// Runs the driver of a session's new multiplexed data connection until it ends, the session
/// ends or the server stops.
fn start_mux(shared: &Arc<Shared>, session: &Session, conn: DataConn) -> MuxHandle {
    let (handle, _opener_accepts_nothing, driver) = mux(conn, Role::Opener, MuxConfig::data_link());
    let (stop, ended) = (shared.hard_stop.clone(), session.cancel.clone());
    shared.tasks.spawn(async move {
        tokio::select! {
            r = driver => if let Err(e) = r {
                tracing::debug!(error = %e, "multiplexed data connection ended");
            },
            _ = stop.cancelled() => {}
            _ = ended.cancelled() => {}
        }
    });
    handle
}

/// Where an upstream came from.
pub(super) enum Origin {
    /// Kept from an earlier request (the local side may have closed it meanwhile).
    Reused,
    /// A new mux stream (its header went in the OPEN frame).
    NewStream,
    /// A new data connection of its own: this stream header goes before the request.
    NewConn(Vec<u8>),
}

/// An upstream for the tunnel: an idle one, else a new mux stream or data connection. For a
/// tunnel whose upstreams each belong to one visitor address, only one of `visitor`'s, and a
/// new one names `visitor` in its stream header.
pub(super) async fn upstream(
    shared: &Arc<Shared>,
    tunnel: &Tunnel,
    fresh: bool,
    visitor: SocketAddr,
) -> Option<(Upstream, Origin)> {
    let key = tunnel.upstream_per_visitor.then(|| visitor.ip());
    while let Some((since, mut conn)) = (!fresh).then(|| tunnel.http_idle.pop(key)).flatten() {
        // Checked every time (a mux stream without a syscall): stray bytes that came while it
        // was idle would otherwise be read as the next visitor's response.
        if since.elapsed() < shared.config.upstream_idle && still_open(&mut conn) {
            return Some((conn, Origin::Reused));
        }
    }
    let peer = if tunnel.upstream_per_visitor { visitor.to_string() } else { String::new() };
    let header = StreamHeader { tunnel_id: tunnel.id.clone(), protocol: Protocol::Http, peer, mux: false }.encode();
    let session = &tunnel.session;
    if session.mux {
        match session.http_mux_stream(&header, |conn| start_mux(shared, session, conn)).await {
            Ok(stream) => return Some((Either::Right(stream), Origin::NewStream)),
            // As many streams as the multiplexer takes: this one gets a connection of its own.
            Err(DataConnError::MuxFull) => {}
            Err(_) => return None,
        }
    }
    let conn = session.take_data_conn().await.ok()?;
    Some((Either::Left(conn), Origin::NewConn(header)))
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
pub(super) async fn serve<I>(mut io: I, v: Visitor<'_>) -> End<I>
where
    I: AsyncRead + AsyncWrite + ResetOnClose + Unpin + Send,
{
    let shared = v.shared;
    let peer_ip = v.peer.ip().to_string();
    let mut vb = Window::pooled();
    loop {
        // The next request head, within the header deadline.
        let deadline = TokioInstant::now() + shared.config.header_timeout;
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
                _ = shared.stop_accepting.cancelled(), if idle => return End::Closed,
                _ = shared.hard_stop.cancelled() => return End::Closed,
            }
        };
        vb.consume(head.len);
        let close = head.close || shared.stop_accepting.is_cancelled();
        let then = tokio::select! {
            t = forward(&mut io, &mut vb, head, close, &v) => t,
            _ = shared.hard_stop.cancelled() => Then::Close,
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

/// Edits a rewritten request head for the tunnel: takes out the `login` line (the tunnel's own
/// login stays at the edge) and puts the tunnel's `Host` in place of the visitor's. The later
/// line is edited first, so the other's range stays right.
fn edit_head(out: &mut Vec<u8>, login: Option<std::ops::Range<usize>>, host: Option<(std::ops::Range<usize>, &str)>) {
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = login.into_iter().map(|r| (r, Vec::new())).collect();
    edits.extend(host.map(|(r, h)| (r, format!("Host: {h}\r\n").into_bytes())));
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    for (range, with) in edits {
        out.splice(range, with);
    }
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
    let Some(sub) = super::http::subdomain_of(&head.host_name, &shared.config.domain) else {
        return Then::keep_if(page(io, pages::not_found(), page_close).await);
    };
    let tunnel = match shared.route_to(sub) {
        RouteTo::Tunnel(t) => t,
        RouteTo::NoneAvailable => return Then::keep_if(page(io, pages::no_healthy_member(), page_close).await),
        RouteTo::ClientGone => return Then::keep_if(page(io, pages::bad_gateway(), page_close).await),
        RouteTo::NotFound => return Then::keep_if(page(io, pages::not_found(), page_close).await),
    };
    let given = || head.authorization_value().into_iter().collect();
    if let Some(p) = super::access::refusal(shared, &tunnel, v.peer.ip(), given) {
        super::http::log_request(shared, v.peer, &tunnel, &head.method, &head.path, p.status.as_u16(), started);
        return Then::keep_if(page(io, p, page_close).await);
    }
    let Some(_permit) = tunnel.admit() else {
        return Then::keep_if(page(io, pages::busy(), page_close).await);
    };
    tunnel.stats.requests.fetch_add(1, Ordering::Relaxed);
    let log = |status: u16| {
        super::http::log_request(shared, v.peer, &tunnel, &head.method, &head.path, status, started);
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
            log(502);
            return Then::keep_if(page(io, pages::bad_gateway(), page_close).await);
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
        let timeout = shared.config.response_timeout;
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
                    tunnel.http_idle.push(up, shared.config.upstream_idle, key);
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
            Err(Fail::Closed) if matches!(up, Either::Right(_)) => {
                log(502);
                Then::keep_if(page(io, pages::local_closed(), true).await)
            }
            Err(Fail::Timeout) => {
                log(504);
                Then::keep_if(page(io, pages::gateway_timeout(), true).await)
            }
            Err(Fail::NoResponse | Fail::Closed | Fail::BadResponse) => {
                log(502);
                Then::keep_if(page(io, pages::bad_gateway(), true).await)
            }
            Err(Fail::Visitor) => Then::Close,
        };
    }
}

/// The lean path's parsers of untrusted bytes, for fuzz targets (re-exported as
/// `edge::fuzzing`; not a stable API). Each one panics when a head it accepts breaks what the
/// edge relies on: a forwarded head is complete, well-formed and no longer than the input.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(req: &str) -> ReqHead {
        match parse_request(req.as_bytes(), "192.0.2.7", "http") {
            Parsed::Lean(h) => h,
            Parsed::Partial => panic!("partial: {req}"),
            Parsed::HandOver => panic!("handed over: {req}"),
            Parsed::TooLarge => panic!("too large: {req}"),
        }
    }

    fn handed_over(req: &str) -> bool {
        matches!(parse_request(req.as_bytes(), "192.0.2.7", "http"), Parsed::HandOver)
    }

    #[test]
    fn the_authorization_line_is_found_for_a_tunnel_with_a_login_to_take_out() {
        let h = lean("GET / HTTP/1.1\r\nHost: a.localhost\r\nauthorization:   Basic eDp5  \r\nAccept: */*\r\n\r\n");
        assert_eq!(h.authorization_value(), Some(&b"Basic eDp5"[..]));
        let mut out = h.out.clone();
        out.drain(h.authorization.clone().unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\nHost: a.localhost\r\nAccept: */*\r\n"), "{text}");
        assert!(!text.to_lowercase().contains("authorization"), "{text}");
        assert_eq!(lean("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n").authorization_value(), None);
        // Two of them: hyper's path judges.
        assert!(handed_over("GET / HTTP/1.1\r\nHost: a.localhost\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n"));
    }

    #[test]
    fn the_login_line_goes_and_the_host_line_is_replaced_in_either_order() {
        for req in [
            "GET / HTTP/1.1\r\nHost: app.localhost:8080\r\nAccept: */*\r\nAuthorization: Basic eDp5\r\nX-A: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nAuthorization: Basic eDp5\r\nAccept: */*\r\nHost: app.localhost:8080\r\nX-A: 1\r\n\r\n",
        ] {
            let h = lean(req);
            let mut out = h.out.clone();
            edit_head(&mut out, h.authorization.clone(), Some((h.host_line.clone(), "localhost:3000")));
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert!(lines.contains(&"Host: localhost:3000") && lines.contains(&"Accept: */*"), "{text}");
            assert!(lines.contains(&"X-A: 1") && lines.contains(&"x-forwarded-host: app.localhost:8080"), "{text}");
            assert!(!text.contains("Authorization") && !text.contains("Host: app."), "{text}");
            assert!(text.ends_with("\r\n\r\n"), "{text}");
        }
    }

    #[test]
    fn request_heads_are_rewritten_for_the_local_service() {
        let h = lean(
            "GET /a?b=1 HTTP/1.1\r\nHost: App.localhost:8080\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
             X-Forwarded-For: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\nrest",
        );
        let out = String::from_utf8(h.out).unwrap();
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: App.localhost:8080\r\nAccept: */*\r\nx-forwarded-host: App.localhost:8080\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\nx-forwarded-proto: http\r\n\r\n"
        );
        assert_eq!(h.host_name, "app.localhost");
        assert_eq!(h.len, h.len.min(1000));
        assert!(!h.close);
        assert_eq!(h.body, 0);
    }

    #[test]
    fn connection_cannot_drop_the_framing_or_routing_headers() {
        let h = lean("POST / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close, content-length, host\r\nContent-Length: 3\r\n\r\n");
        let out = String::from_utf8(h.out).unwrap();
        assert!(out.contains("Content-Length: 3\r\n") && out.contains("Host: a.localhost\r\n"), "{out}");
        assert!(h.close);
        assert_eq!(h.body, 3);
    }

    #[test]
    fn what_hyper_must_judge_is_handed_over() {
        for req in [
            "GET / HTTP/1.0\r\nHost: a.localhost\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: +4\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.localhost\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: a.localhost\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "CONNECT a.localhost:443 HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
            "GET http://a.localhost/ HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.localhost\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(handed_over(req), "{req}");
        }
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nHost: a", "x", "http"), Parsed::Partial));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.0\r\nHost: a.localhost\r\n{many}\r\n");
        assert!(matches!(parse_request(req.as_bytes(), "x", "http"), Parsed::TooLarge));
    }

    #[tokio::test]
    async fn idle_upstreams_expire_oldest_first() {
        let (a, b) = tokio::io::duplex(1024);
        let (opener, _acc, driver) = mux(a, Role::Opener, MuxConfig::default());
        let (_h, _peer, peer_driver) = mux(b, Role::Acceptor, MuxConfig::default());
        tokio::spawn(driver);
        tokio::spawn(peer_driver);
        let pool = IdlePool::default();
        let minute = Duration::from_secs(60);
        pool.push(Either::Right(opener.open(b"1").unwrap()), minute, None);
        tokio::time::sleep(Duration::from_millis(30)).await;
        pool.push(Either::Right(opener.open(b"2").unwrap()), minute, None);
        assert_eq!(pool.len(), 2);
        pool.sweep(minute);
        assert_eq!(pool.len(), 2, "nothing is idle for a minute yet");
        assert_eq!(pool.take_older_than(Duration::from_millis(20)).len(), 1, "only the older one");
        let (_, mut left) = pool.pop(None).unwrap();
        assert!(still_open(&mut left));
        assert!(pool.pop(None).is_none());
    }

    #[tokio::test]
    async fn an_upstream_kept_for_one_visitor_serves_no_other() {
        let (a, b) = tokio::io::duplex(1024);
        let (opener, _acc, driver) = mux(a, Role::Opener, MuxConfig::default());
        let (_h, _peer, peer_driver) = mux(b, Role::Acceptor, MuxConfig::default());
        tokio::spawn(driver);
        tokio::spawn(peer_driver);
        let pool = IdlePool::default();
        let minute = Duration::from_secs(60);
        let (one, two): (IpAddr, IpAddr) = ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap());
        pool.push(Either::Right(opener.open(b"1").unwrap()), minute, Some(one));
        pool.push(Either::Right(opener.open(b"2").unwrap()), minute, Some(two));
        assert!(pool.pop(Some("203.0.113.3".parse().unwrap())).is_none());
        assert!(pool.pop(Some(one)).is_some());
        assert!(pool.pop(Some(one)).is_none(), "the other visitor's upstream was handed out");
        assert!(pool.pop(Some(two)).is_some());
        assert_eq!(pool.len(), 0);
    }

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

    fn resp(r: &str, head_method: bool) -> RespHead {
        parse_response(r.as_bytes(), head_method, false).unwrap().unwrap()
    }

    #[test]
    fn response_framing_follows_the_local_service() {
        let h = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            false,
        );
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.reusable);
        assert_eq!(String::from_utf8(h.out).unwrap(), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let h = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", false);
        assert!(matches!(h.framing, Framing::Chunked(_)));
        assert_eq!(String::from_utf8(h.out).unwrap(), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let h = resp("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.reusable);
        assert!(String::from_utf8(h.out).unwrap().ends_with("connection: close\r\n\r\n"));
        let h = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty);
        let h = resp("HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Empty);
        let h = resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", false);
        assert!(!h.reusable);
        let h = resp("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false);
        assert!(h.interim);
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 003 OK\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "SSH-2.0-x\r\n\r\n",
            // Faulty framing (RFC 9112 6.1): read as chunked or not, depending on the client.
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(parse_response(bad.as_bytes(), false, false).is_err(), "{bad}");
        }
        // A coding that is not text, before a final chunked in another field: one visitor
        // would read chunked, another would not.
        let odd = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \xff\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_response(odd, false, false).is_err());
        let two = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", false);
        assert!(matches!(two.framing, Framing::Chunked(_)));
    }
}

/// Generated heads, well-formed and not, through both parsers: they never panic, a head they
/// accept is forwarded well-formed with only the edge's forwarding headers, and framing on the
/// way out always matches what was parsed.
#[cfg(test)]
mod props {
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

    pub(super) fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        prop::collection::vec((name(), value()), 0..7)
    }

    pub(super) fn eol() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just("\r\n"), 1 => Just("\n")]
    }

    pub(super) fn head(start: String, headers: &[(String, Vec<u8>)], eol: &str) -> Vec<u8> {
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

    pub(super) fn request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "get", "CONNECT"]);
        let path = prop_oneof![
            4 => "/[a-zA-Z0-9/?=&%.~-]{0,24}",
            1 => prop::sample::select(vec!["*", "http://a.localhost/", "a.localhost:443", ""]).prop_map(String::from),
        ];
        let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]);
        // Usually one routable Host among the others, anywhere.
        let host = prop::option::weighted(
            0.9,
            (
                prop::sample::select(vec!["a.localhost", "App.LocalHost:8080", "b.localhost."]),
                any::<prop::sample::Index>(),
            ),
        );
        (method, path, version, headers(), host, eol()).prop_map(|(m, p, v, mut h, host, e)| {
            if let Some((host, at)) = host {
                h.insert(at.index(h.len() + 1), ("Host".to_string(), host.as_bytes().to_vec()));
            }
            head(format!("{m} {p} {v}"), &h, e)
        })
    }

    pub(super) fn response() -> impl Strategy<Value = Vec<u8>> {
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
}

/// Differential tests: the same bytes through the lean path and through hyper (the edge's other
/// path, and the client every visitor could be). A response the lean path passes on whole reads,
/// at the visitor, as hyper reads it straight from the local service: same status, end-to-end
/// headers, body and trailers; otherwise the lean path refused it (a 502, or a reset). A request
/// the lean path takes is one hyper's server takes too, and the local service sees the same
/// method, target, end-to-end headers and body; otherwise the lean path handed it over.
#[cfg(test)]
mod differential {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    use super::props::{eol, head, headers, request, response};
    use super::*;

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
        super::super::http::strip_hop_by_hop(&mut map, false);
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
        (chunks, trailers).prop_map(|(chunks, trailers)| {
            let mut out = Vec::new();
            for (data, ext) in chunks {
                out.extend_from_slice(format!("{:x}{ext}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for t in trailers {
                out.extend_from_slice(format!("{t}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out
        })
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
                    out.extend_from_slice(&head(
                        format!("HTTP/1.1 {code} Info"),
                        &[("Link".into(), b"</a>".to_vec())],
                        e,
                    ));
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
        let tx = std::sync::Mutex::new(Some(tx));
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let tx = tx.lock().unwrap().take();
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
}
