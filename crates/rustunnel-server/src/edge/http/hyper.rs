//! The hyper path of the HTTP edge: HTTP/2, and the HTTP/1 requests the lean path hands over
//! (HTTP/1.0, upgrades, chunked requests, ...). They are forwarded by hyper through a pooled
//! HTTP/1.1 client keyed by tunnel, over the same upstreams as the lean path: streams of the
//! session's multiplexed data connection, or data connections of their own for clients without
//! one. A kept-alive upstream serves many requests, so a visitor's request normally costs no new
//! connection anywhere. Bodies stream both ways; upgrades (WebSocket) are spliced end to end.
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::framing::{Flag, Tracked};
use super::limits::{HEAD_LIMIT, HOP_BY_HOP, MAX_HEADERS};
use super::policy::{Carries, NoAnswer};
use super::reset::ResetOnClose;
use super::upstream::{upstream, Origin, Upstream};
use super::{pages, policy, stall};
use crate::state::Shared;
use crate::tunnel::{Tunnel, TunnelStats};

/// Response body: the local service's streamed body, or one of the edge's own pages.
pub type Body = Either<Either<PermitBody, stall::StreamStall<PermitBody>>, Full<Bytes>>;

pub type TunnelClient = Client<TunnelConnector, VisitorBody>;

/// Spawns hyper's background tasks (connection drivers, HTTP/2 streams) on the server's task
/// tracker, ended by the hard stop, so nothing outlives the server.
#[derive(Clone)]
pub struct TrackedExecutor {
    shared: Arc<Shared>,
}

impl TrackedExecutor {
    pub fn new(shared: Arc<Shared>) -> Self {
        TrackedExecutor { shared }
    }
}

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let stop = self.shared.hard_stop().clone();
        self.shared.tasks().spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The pooled client through which a listener's hyper connections reach the tunnels.
pub fn client(shared: &Arc<Shared>, exec: TrackedExecutor) -> TunnelClient {
    Client::builder(exec)
        .pool_idle_timeout(shared.config().upstream_idle)
        .pool_max_idle_per_host(1024)
        .set_host(false)
        .timer(TokioTimer::new())
        // Without a pool timer idle connections are only noticed when the tunnel's next
        // request checks one out: a burst of HTTP/2 requests followed by silence would hold
        // up to 1024 connections to the local service for as long as the tunnel stays quiet.
        .pool_timer(TokioTimer::new())
        .build(TunnelConnector { shared: shared.clone() })
}

/// Serves a visitor connection with hyper until it closes, the listener's graceful shutdown
/// ends it or the server stops.
pub async fn serve_conn<I>(
    io: Tracked<I>,
    ctx: Ctx,
    watcher: hyper_util::server::graceful::Watcher,
    exec: TrackedExecutor,
    stop: &tokio_util::sync::CancellationToken,
) where
    I: AsyncRead + AsyncWrite + ResetOnClose + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(exec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.shared.config().header_timeout)
        .max_buf_size(HEAD_LIMIT)
        // Past hyper's own limit (an empty 431), the edge's check in `handle` answers.
        .max_headers(1000);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250)
        // Twice the edge's limit: between the two `handle` answers a 431 page; past it, h2
        // answers 431 itself and refuses the stream.
        .max_header_list_size(2 * HEAD_LIMIT as u32)
        .max_pending_accept_reset_streams(64)
        .keep_alive_interval(Duration::from_secs(30));
    let response_timeout = ctx.shared.config().response_timeout;
    let service = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
    // A visitor that stops reading is cut off after the response timeout, as on the lean path.
    let io = stall::WriteStall::new(io, response_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    tokio::select! {
        _ = watcher.watch(conn) => {}
        _ = stop.cancelled() => {}
    }
}

/// One visitor connection as the request handler sees it.
#[derive(Clone)]
pub struct Ctx {
    pub(super) shared: Arc<Shared>,
    client: TunnelClient,
    pub(super) peer: SocketAddr,
    pub(super) scheme: &'static str,
    /// Which HTTP/1 request of this connection had both `Content-Length` and
    /// `Transfer-Encoding` (set by the connection's [`Tracker`](super::framing::Tracker) as
    /// hyper reads the head), and whether a response body failed on it.
    pub(super) flag: Arc<Flag>,
    /// HTTP/1 requests of this connection handed to [`handle`] so far. hyper serves them one at
    /// a time, in order, once per parsed head: the count is the tracker's request index.
    h1_requests: Arc<AtomicU64>,
}

impl Ctx {
    pub fn new(shared: Arc<Shared>, client: TunnelClient, peer: SocketAddr, scheme: &'static str) -> Self {
        let (flag, h1_requests) = (Arc::new(Flag::new()), Arc::new(AtomicU64::new(0)));
        Ctx { shared, client, peer, scheme, flag, h1_requests }
    }
}

fn page(p: pages::Page) -> Result<Response<Body>, Infallible> {
    Ok(p.response().map(Either::Right))
}

/// A page after which an HTTP/1 connection closes (the request was not read to its end);
/// HTTP/2 resets just the stream and has no `Connection` header.
fn closing(p: pages::Page, version: Version) -> Result<Response<Body>, Infallible> {
    let mut r = p.response();
    if version != Version::HTTP_2 {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(r.map(Either::Right))
}

/// Whether a head is over the edge's limits: more than [`MAX_HEADERS`] fields, or more
/// than [`HEAD_LIMIT`] bytes counted as HTTP/2 counts a header list (name, value and 32
/// bytes per field).
fn too_large(headers: &HeaderMap) -> bool {
    let size: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
    headers.len() > MAX_HEADERS || size > HEAD_LIMIT
}

/// The request's host name without port, lowercased, and the original value; or why the
/// request names no single host (RFC 9112 3.2: a 400).
fn host_of<B>(req: &Request<B>) -> Result<(String, String), &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("The request has more than one Host header."),
        (Some(v), None) => Some(v.to_str().map_err(|_| "The Host header is not valid.")?),
        (None, None) => None,
    };
    // HTTP/2 names the host in :authority; a Host header beside it must agree (RFC 9113 8.3.1).
    let authority = req.uri().authority().map(|a| a.as_str());
    let raw = match (authority, host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err("The Host header and the request's authority name different hosts.")
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err("The request has no Host header."),
    };
    if raw.is_empty() {
        return Err("The Host header is empty.");
    }
    Ok((policy::host_name(raw), raw.to_string()))
}

/// The 400 page's reason for a request target that is neither a path nor (on the lean path)
/// `OPTIONS *`.
const NOT_A_PATH: &str = "The request target must be a path, such as /index.html.";

/// Whether the request's Transfer-Encoding fields name exactly one coding, `chunked`.
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    matches!((codings.next(), codings.next()), (Some(c), None) if c.eq_ignore_ascii_case("chunked"))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case("upgrade"))).unwrap_or(false)
        })
}

/// Removes hop-by-hop headers (and those the Connection header names). For an upgrade the
/// `Upgrade` header and `Connection: upgrade` are kept: they are the point of the request.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in &named {
        if !(keep_upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        if !(keep_upgrade && n == "upgrade") {
            headers.remove(n);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

async fn handle(mut req: Request<Incoming>, ctx: Ctx) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let version = req.version();
    let h2 = version == Version::HTTP_2;
    // hyper lets Transfer-Encoding win (and closes after the response); the edge answers such
    // a request with a 400, as the lean path hands it here and a server behind may read it otherwise.
    if !h2 {
        let index = ctx.h1_requests.fetch_add(1, Ordering::Relaxed);
        if ctx.flag.is_flagged(index) {
            let p = pages::bad_request("The request has both Content-Length and Transfer-Encoding.");
            return closing(p, version);
        }
        // A request body's only coding may be one `chunked` (RFC 9112 6.1: applied once, and
        // last); hyper reads `identity, chunked` or `chunked, chunked` as chunked, where
        // another server in the chain might not: a smuggling seam.
        if req.headers().contains_key(header::TRANSFER_ENCODING) && !only_chunked(req.headers()) {
            return closing(pages::bad_request("Transfer-Encoding must be exactly `chunked`."), version);
        }
    }
    if req.method() == Method::CONNECT {
        return page(pages::method_not_allowed());
    }
    if too_large(req.headers()) {
        return closing(pages::headers_too_large(), version);
    }
    if !h2 && req.uri().scheme().is_some() {
        return page(pages::bad_request("Absolute-form request targets are not accepted: this edge is not a proxy."));
    }
    // `GET example.com:80` (authority-form, CONNECT's form) or `GET foo` (read as one).
    if !h2 && req.uri().authority().is_some() {
        return page(pages::bad_request(NOT_A_PATH));
    }
    let (host, raw_host) = match host_of(&req) {
        Ok(h) => h,
        Err(why) => return page(pages::bad_request(why)),
    };
    let tunnel = match policy::route(&ctx.shared, &host) {
        Ok(t) => t,
        Err(p) => return page(p),
    };
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let given = || req.headers().get_all(header::AUTHORIZATION).iter().map(|v| v.as_bytes()).collect();
    if let Some(p) = policy::refusal(&ctx.shared, &tunnel, ctx.peer.ip(), given) {
        log(&ctx, &tunnel, &method, &path, p.status.as_u16(), started);
        return page(p);
    }
    // `OPTIONS *` reaches the local service on the lean HTTP/1.1 path; this one (HTTP/2, or a
    // connection already handed to hyper) forwards through a client that only sends paths.
    if !path.starts_with('/') {
        log(&ctx, &tunnel, &method, &path, 400, started);
        return page(pages::bad_request(if method == Method::OPTIONS && path == "*" {
            "OPTIONS * is forwarded on plain HTTP/1.1 connections only; ask OPTIONS / instead."
        } else {
            NOT_A_PATH
        }));
    }
    let permit = match policy::admit(&tunnel) {
        Ok(permit) => permit,
        Err(p) => return page(p),
    };
    let upgrade = !h2 && is_upgrade(req.headers());
    let visitor_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let h = &mut parts.headers;
    let host_value = HeaderValue::from_str(&raw_host).ok();
    if let Some(v) = &host_value {
        h.insert(header::HOST, v.clone());
    }
    // `--host-header`: the local service gets the Host it expects (checked when opened).
    if let Some(v) = tunnel.host_header.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(header::HOST, v);
    }
    // Client-supplied forwarding headers are replaced: only the L4 peer is trustworthy.
    h.remove(header::FORWARDED);
    // The tunnel's own login stays at the edge.
    if tunnel.access.basic_auth.is_some() {
        h.remove(header::AUTHORIZATION);
    }
    let ip = HeaderValue::from_str(&ctx.peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
    for (name, carries) in policy::SET_BY_EDGE {
        let value = match carries {
            Carries::Host => match &host_value {
                Some(v) => v.clone(),
                None => continue,
            },
            Carries::PeerIp => ip.clone(),
            Carries::Scheme => HeaderValue::from_static(ctx.scheme),
        };
        h.insert(HeaderName::from_static(name), value);
    }
    // hyper keeps upstreams per URI authority: a tunnel whose upstreams each belong to one
    // visitor address names it there (hex), so a kept one never serves another visitor.
    let uri = match tunnel.upstream_per_visitor {
        false => format!("http://{}.tunnel{}", tunnel.id, path),
        true => format!("http://{}.{}.tunnel{}", visitor_label(ctx.peer), tunnel.id, path),
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return page(pages::bad_request("The request target is not valid."));
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let body_failed = Arc::new(AtomicBool::new(false));
    let out = Request::from_parts(parts, VisitorBody { inner: body, failed: body_failed.clone() });

    let result = tokio::time::timeout(ctx.shared.config().response_timeout, ctx.client.request(out)).await;
    let mut resp = match result {
        Err(_) => {
            let p = policy::no_answer_page(NoAnswer::Timeout);
            log(&ctx, &tunnel, &method, &path, p.status.as_u16(), started);
            return page(p);
        }
        Ok(Err(_)) if body_failed.load(Ordering::Relaxed) => {
            log(&ctx, &tunnel, &method, &path, 400, started);
            return closing(pages::bad_request("The request body is malformed or was cut short."), version);
        }
        Ok(Err(e)) => {
            tracing::debug!(tunnel = %tunnel.id, error = %e, source = ?e.source(), "forwarding failed");
            // An orderly end before any response (see `NoAnswer::Closed`).
            let incomplete =
                e.source().and_then(|s| s.downcast_ref::<hyper::Error>()).is_some_and(|h| h.is_incomplete_message());
            let why = if incomplete { NoAnswer::Closed { mux: tunnel.session.mux } } else { NoAnswer::Failed };
            let p = policy::no_answer_page(why);
            log(&ctx, &tunnel, &method, &path, p.status.as_u16(), started);
            return page(p);
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // An upgraded connection may last for hours: logged as it starts.
        log(&ctx, &tunnel, &method, &path, status.as_u16(), started);
        if let Some(visitor) = visitor_upgrade {
            let local = hyper::upgrade::on(&mut resp);
            let t = tunnel.clone();
            ctx.shared.tasks().spawn(async move {
                let _permit = permit;
                let _upgraded = UpgradedGuard::count(&t);
                let (Ok(v), Ok(l)) = tokio::join!(visitor, local) else { return };
                let mut v = TokioIo::new(v);
                let mut l = TokioIo::new(l);
                tokio::select! {
                    r = rustunnel_transport::splice::splice(&mut v, &mut l) => {
                        if let Ok((up, down)) = r {
                            t.stats.add_in(up as usize);
                            t.stats.add_out(down as usize);
                        }
                    }
                    _ = t.cancel.cancelled() => {}
                }
            });
            return Ok(resp.map(|_| Either::Right(Full::new(Bytes::new()))));
        }
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    let stats = tunnel.stats.clone();
    let log = PendingLog {
        shared: ctx.shared.clone(),
        peer: ctx.peer,
        tunnel,
        method,
        path,
        status: status.as_u16(),
        started,
    };
    let limit = ctx.shared.config().response_timeout;
    Ok(resp.map(|b| {
        let cut = (!h2).then(|| ctx.flag.clone());
        let body = PermitBody { inner: b, stats, log: Some(log), cut, _permit: permit };
        // HTTP/2: a visitor can hold a stream open by never opening its window, with the
        // connection still busy, so no write stalls; the stream's own bound lets go of it.
        Either::Left(if h2 {
            Either::Right(stall::StreamStall::new(body, limit, ctx.shared.tasks(), ctx.shared.hard_stop().clone()))
        } else {
            Either::Left(body)
        })
    }))
}

fn log(ctx: &Ctx, tunnel: &Tunnel, method: &Method, path: &str, status: u16, started: Instant) {
    policy::log_request(&ctx.shared, ctx.peer, tunnel, method.as_str(), path, status, started);
}

/// A forwarded request's log entry, written when its response body has ended (or was dropped,
/// the visitor gone): its duration covers the whole response, as on the lean path.
struct PendingLog {
    shared: Arc<Shared>,
    peer: SocketAddr,
    tunnel: Arc<Tunnel>,
    method: Method,
    path: String,
    status: u16,
    started: Instant,
}

impl PendingLog {
    fn write(self) {
        let method = self.method.as_str();
        policy::log_request(&self.shared, self.peer, &self.tunnel, method, &self.path, self.status, self.started);
    }
}

/// An upgraded connection counted in its tunnel's [`Tunnel::upgraded`] while it lasts.
struct UpgradedGuard<'a>(&'a Tunnel);

impl<'a> UpgradedGuard<'a> {
    fn count(t: &'a Tunnel) -> Self {
        t.upgraded.fetch_add(1, Ordering::Relaxed);
        UpgradedGuard(t)
    }
}

impl Drop for UpgradedGuard<'_> {
    fn drop(&mut self) {
        self.0.upgraded.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds the tunnel's concurrency permit until it is finished, so the
/// cap counts streaming responses and graceful shutdown waits for them.
pub struct PermitBody {
    inner: Incoming,
    stats: Arc<TunnelStats>,
    log: Option<PendingLog>,
    /// HTTP/1: set when the body fails, so that the visitor's connection is reset.
    cut: Option<Arc<Flag>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for PermitBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.write();
        }
    }
}

impl HttpBody for PermitBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.stats.add_out(d.len());
                }
            }
            Poll::Ready(None | Some(Err(_))) => {
                if matches!(r, Poll::Ready(Some(Err(_)))) {
                    if let Some(cut) = &self.cut {
                        cut.cut();
                    }
                }
                if let Some(log) = self.log.take() {
                    log.write();
                }
            }
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A visitor's request body on its way to the tunnel. It remembers whether the visitor's side
/// failed (a malformed chunked body, a connection cut mid-body), so that a forward failing
/// because of it is answered 400, not blamed on the tunnel with a 502.
pub struct VisitorBody {
    inner: Incoming,
    failed: Arc<AtomicBool>,
}

impl HttpBody for VisitorBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &r {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Opens upstreams for the pooled client (the URI host names the tunnel), new ones as the lean
/// path opens them: a stream of the session's multiplexed data connection, else a data
/// connection of its own. (The lean path's kept ones stay with it: hyper keeps its own.)
#[derive(Clone)]
pub struct TunnelConnector {
    shared: Arc<Shared>,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Uri> for TunnelConnector {
    type Response = TunnelIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TunnelIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let host = uri.host().and_then(|h| h.strip_suffix(".tunnel")).ok_or("bad tunnel uri")?;
            let (visitor, id) = match host.split_once('.') {
                Some((label, id)) => (parse_visitor_label(label).ok_or("bad tunnel uri")?, id),
                None => (SocketAddr::from(([0, 0, 0, 0], 0)), host),
            };
            let tunnel = shared.tunnel(id).ok_or("tunnel closed")?;
            let (mut io, origin) = upstream(&shared, &tunnel, true, visitor).await.ok_or("tunnel client gone")?;
            if let Origin::NewConn(header) = origin {
                io.write_all(&header).await?;
            }
            Ok(TunnelIo { inner: TokioIo::new(io), stats: tunnel.stats.clone() })
        })
    }
}

/// A visitor's address as a host label of the upstream URI: the IP's bytes, then the port's, in hex.
fn visitor_label(peer: SocketAddr) -> String {
    let ip = match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    format!("{}{:04x}", hex::encode(ip), peer.port())
}

/// The address [`visitor_label`] wrote.
fn parse_visitor_label(label: &str) -> Option<SocketAddr> {
    let bytes = hex::decode(label).ok()?;
    let (ip, port) = bytes.split_last_chunk::<2>()?;
    let ip = match ip.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(ip).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(ip).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_be_bytes(*port)))
}

/// An upstream serving HTTP/1.1 for one tunnel, counting bytes.
pub struct TunnelIo {
    inner: TokioIo<Upstream>,
    stats: Arc<TunnelStats>,
}

impl Connection for TunnelIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Bytes out are counted on the response body (`PermitBody`), where their length is known.
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TunnelIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats.add_in(*n);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.stats.add_in(*n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
