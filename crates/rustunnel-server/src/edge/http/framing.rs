//! Request framing on a visitor's HTTP/1 connection, followed byte for byte beside hyper.
//!
//! hyper applies RFC 9112 6.1 to a request with both `Content-Length` and `Transfer-Encoding`:
//! the transfer coding wins, `Content-Length` is dropped from the parsed request and the
//! connection is closed after the response. That is safe, but the edge promises a 400 for such
//! a request and hyper does not let the service see that `Content-Length` was there. So the
//! edge reads the visitor's bytes through [`Tracked`], which feeds them to a [`Tracker`]: a
//! small sans-IO parser that frames the requests the way hyper does (heads with `httparse`,
//! `Content-Length` and chunked bodies) and records the index of the first request on the
//! connection (0, 1, 2, ...) whose head has both headers. The request handler counts the
//! requests hyper hands it and answers that one with a 400.
//!
//! The tracker is conservative: whenever it is not sure to frame exactly as hyper does
//! (anything it cannot parse, an upgrade, `CONNECT`, HTTP/2) it stops ([`Tracker::is_off`]) and
//! never flags anything again. It may miss a request (hyper's own handling then applies), but it
//! never flags one that does not carry both headers. Its state is bounded: one request head.
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::limits::{MAX_HEADERS, TRACKED_HEAD_LIMIT as HEAD_LIMIT};
use super::reset::ResetOnClose;
/// The HTTP/2 prior-knowledge connection preface starts with this line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What a visitor connection served by hyper shares with its request handler: the index of
/// the request its tracker found with both `Content-Length` and `Transfer-Encoding`, if any,
/// and whether a response body failed on it (see [`Tracked`]).
#[derive(Debug)]
pub struct Flag {
    both_lengths: AtomicU64,
    cut: AtomicBool,
}

const UNSET: u64 = u64::MAX;

impl Flag {
    pub fn new() -> Self {
        Flag { both_lengths: AtomicU64::new(UNSET), cut: AtomicBool::new(false) }
    }

    fn set(&self, index: u64) {
        self.both_lengths.store(index, Ordering::Release);
    }

    /// Whether request `index` of the connection had both framing headers.
    pub fn is_flagged(&self, index: u64) -> bool {
        index != UNSET && self.both_lengths.load(Ordering::Acquire) == index
    }

    /// Records that an HTTP/1 response body failed: the connection's close becomes a reset.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
    }
}

impl Default for Flag {
    fn default() -> Self {
        Flag::new()
    }
}

/// Where the tracker is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head (see [`HeadScan`]).
    Head,
    /// Inside a `Content-Length` body: this many bytes left.
    Body(u64),
    /// Inside a chunked body.
    Chunked(ChunkScan),
    /// Not tracking any more.
    Off,
}

/// Chunked body states, byte for byte the ones of hyper's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// First hex digit of a size line.
    Start,
    /// More hex digits, or what ends them.
    Size,
    /// Blanks after the size.
    SizeLws,
    /// `;ext` up to the CR.
    Extension,
    /// The LF ending the size line.
    SizeLf,
    /// Chunk data: `size` bytes left.
    Data,
    DataCr,
    DataLf,
    /// After the last chunk's size line: a trailer field, or the final CRLF.
    EndCr,
    /// Inside a trailer field line (strict: its value).
    Trailer,
    /// A trailer field's name (strict).
    TrailerName,
    TrailerLf,
    /// The LF of the final CRLF.
    EndLf,
    /// Past the final LF.
    End,
}

/// Progress through the bytes of a head that are not buffered yet.
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    /// The first byte after any leading empty lines was seen.
    started: bool,
    /// A leading empty line's CR was seen: an LF must follow.
    leading_cr: bool,
    /// 1 after an LF, 2 after LF CR: an LF now ends the head.
    nl: u8,
}

/// What a parsed head means for the bytes after it.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Both `Content-Length` and `Transfer-Encoding`.
    Flag,
    /// A body of this many bytes (0: none).
    Body(u64),
    Chunked,
    Off,
}

/// The sans-IO framing tracker of one connection; feed it every byte read, in order.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    scan: HeadScan,
    /// Head bytes of a head that arrived in pieces; empty otherwise.
    buf: Vec<u8>,
    /// Index of the request whose head comes next (or is being read).
    index: u64,
}

impl Tracker {
    /// A tracker at the start of a connection.
    pub fn new() -> Self {
        Tracker { state: State::Head, scan: HeadScan::default(), buf: Vec::new(), index: 0 }
    }

    /// A tracker that never tracks (HTTP/2 connections).
    pub fn off() -> Self {
        Tracker { state: State::Off, ..Tracker::new() }
    }

    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Takes the next bytes of the connection; returns the index of a request found to have both
    /// `Content-Length` and `Transfer-Encoding` (at most once per tracker: it stops there).
    pub fn feed(&mut self, mut data: &[u8]) -> Option<u64> {
        while !data.is_empty() {
            let used = match self.state {
                State::Off => return None,
                State::Head => match self.feed_head(data) {
                    Ok(used) => used,
                    Err(index) => return Some(index),
                },
                State::Body(left) => {
                    let n = left.min(data.len() as u64);
                    self.state = if n == left { State::Head } else { State::Body(left - n) };
                    n as usize
                }
                State::Chunked(scan) => self.feed_chunked(scan, data),
            };
            data = &data[used..];
        }
        None
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    /// Reads head bytes; returns how many were used, or the flagged index.
    fn feed_head(&mut self, data: &[u8]) -> Result<usize, u64> {
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if !self.scan.started {
                // Leading empty lines are skipped, as httparse does: CRLF or a bare LF.
                if self.scan.leading_cr {
                    if b != b'\n' {
                        self.stop();
                        return Ok(data.len());
                    }
                    self.scan.leading_cr = false;
                    continue;
                }
                match b {
                    b'\r' => self.scan.leading_cr = true,
                    b'\n' => {}
                    _ => {
                        self.scan.started = true;
                        start = i;
                    }
                }
                if !self.scan.started {
                    continue;
                }
            }
            // The first empty line (LF LF or LF CR LF) ends the head.
            let end = b == b'\n' && self.scan.nl != 0;
            self.scan.nl = match b {
                b'\n' => 1,
                b'\r' if self.scan.nl == 1 => 2,
                _ => 0,
            };
            if self.buf.len() + (i + 1 - start) > HEAD_LIMIT {
                self.stop();
                return Ok(data.len());
            }
            if end {
                let head = &data[start..=i];
                let next = if self.buf.is_empty() {
                    classify(head)
                } else {
                    self.buf.extend_from_slice(head);
                    classify(&self.buf)
                };
                self.buf = Vec::new();
                self.scan = HeadScan::default();
                let index = self.index;
                self.index += 1;
                match next {
                    Next::Flag => {
                        self.stop();
                        return Err(index);
                    }
                    Next::Body(0) => self.state = State::Head,
                    Next::Body(n) => self.state = State::Body(n),
                    Next::Chunked => self.state = State::Chunked(ChunkScan::new()),
                    Next::Off => self.stop(),
                }
                return Ok(i + 1);
            }
        }
        if self.scan.started {
            self.buf.extend_from_slice(&data[start..]);
        }
        Ok(data.len())
    }

    /// Reads chunked body bytes; returns how many were used.
    fn feed_chunked(&mut self, mut scan: ChunkScan, data: &[u8]) -> usize {
        match scan.feed(data) {
            ChunkStep::Done(used) => {
                self.state = State::Head;
                used
            }
            ChunkStep::More => {
                self.state = State::Chunked(scan);
                data.len()
            }
            ChunkStep::Bad(_) => {
                self.stop();
                data.len()
            }
        }
    }
}

/// What a [`ChunkScan`] made of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStep {
    /// The body ended after this many of the bytes.
    Done(usize),
    /// All the bytes belong to the body, which goes on.
    More,
    /// The bytes are not a chunked body this scanner accepts: this many of them came before the
    /// first bad byte.
    Bad(usize),
}

/// Most bytes of chunk extensions in one body, and of its trailer section (hyper's limits).
const CHUNK_META_LIMIT: u32 = 16 * 1024;

/// Finds where a chunked body ends; it never buffers anything.
///
/// [`ChunkScan::new`] reads byte for byte as hyper's decoder does (sizes, extensions, trailers),
/// to predict how hyper frames a visitor's requests. [`ChunkScan::strict`] is for responses the
/// edge passes on: it takes only what every common client reads the same way (RFC 9112 7.1 with
/// CRLF line ends only, no blank after the size, extensions and trailer fields of visible text,
/// hyper's size limits on both), so a local service cannot make the body end in one place for
/// the edge and in another for the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkScan {
    at: Chunk,
    strict: bool,
    size: u64,
    /// Extension bytes of the body so far (strict).
    ext: u32,
    /// Trailer section bytes so far (strict).
    trailer: u32,
}

impl ChunkScan {
    /// hyper's reading of a chunked body.
    pub fn new() -> Self {
        ChunkScan { at: Chunk::Start, strict: false, size: 0, ext: 0, trailer: 0 }
    }

    /// The strict reading, for responses.
    pub fn strict() -> Self {
        ChunkScan { strict: true, ..ChunkScan::new() }
    }

    /// Takes the next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) -> ChunkStep {
        if self.at == Chunk::End {
            return ChunkStep::Done(0);
        }
        let mut used = 0;
        while used < data.len() {
            if self.at == Chunk::Data {
                let n = self.size.min((data.len() - used) as u64);
                self.size -= n;
                used += n as usize;
                if self.size == 0 {
                    self.at = Chunk::DataCr;
                }
                continue;
            }
            let b = data[used];
            let next = if self.strict { self.strict_step(b) } else { self.step(b) };
            match next {
                Some(Chunk::End) => {
                    self.at = Chunk::End;
                    return ChunkStep::Done(used + 1);
                }
                Some(n) => self.at = n,
                None => return ChunkStep::Bad(used),
            }
            used += 1;
        }
        ChunkStep::More
    }

    /// hyper's transitions.
    fn step(&mut self, b: u8) -> Option<Chunk> {
        let size = &mut self.size;
        match (self.at, b) {
            (Chunk::Start, _) => hex(b).map(|d| {
                *size = d;
                Chunk::Size
            }),
            (Chunk::Size, _) if hex(b).is_some() => {
                size.checked_mul(16).and_then(|s| s.checked_add(hex(b)?)).map(|s| {
                    *size = s;
                    Chunk::Size
                })
            }
            (Chunk::Size | Chunk::SizeLws, b'\t' | b' ') => Some(Chunk::SizeLws),
            (Chunk::Size | Chunk::SizeLws, b';') => Some(Chunk::Extension),
            (Chunk::Size | Chunk::SizeLws | Chunk::Extension, b'\r') => Some(Chunk::SizeLf),
            (Chunk::Size | Chunk::SizeLws | Chunk::Extension, b'\n') => None,
            (Chunk::Extension, _) => Some(Chunk::Extension),
            (Chunk::SizeLf, b'\n') if *size == 0 => Some(Chunk::EndCr),
            (Chunk::SizeLf, b'\n') => Some(Chunk::Data),
            (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => Some(Chunk::Start),
            (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
            (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
            (Chunk::EndCr | Chunk::Trailer, _) => Some(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
            (Chunk::EndLf, b'\n') => Some(Chunk::End),
            _ => None,
        }
    }

    /// The strict transitions: every line ends in CRLF, nothing else is a line end.
    fn strict_step(&mut self, b: u8) -> Option<Chunk> {
        let next = match (self.at, b) {
            (Chunk::Start | Chunk::Size, _) if hex(b).is_some() => {
                // The size is 0 at the start of every size line.
                self.size = self.size.checked_mul(16)?.checked_add(hex(b)?)?;
                Chunk::Size
            }
            (Chunk::Size, b';') => Chunk::Extension,
            (Chunk::Size | Chunk::Extension, b'\r') => Chunk::SizeLf,
            (Chunk::Extension, _) if field_byte(b) => {
                self.ext += 1;
                Chunk::Extension
            }
            (Chunk::SizeLf, b'\n') if self.size == 0 => Chunk::EndCr,
            (Chunk::SizeLf, b'\n') => Chunk::Data,
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::EndCr | Chunk::TrailerName, _) if token_byte(b) => Chunk::TrailerName,
            (Chunk::TrailerName, b':') => Chunk::Trailer,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::Trailer, _) if field_byte(b) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::EndLf, b'\n') => Chunk::End,
            _ => return None,
        };
        if matches!(next, Chunk::TrailerName | Chunk::Trailer | Chunk::TrailerLf) {
            self.trailer += 1;
        }
        (self.ext < CHUNK_META_LIMIT && self.trailer < CHUNK_META_LIMIT).then_some(next)
    }
}

/// A byte of a field value or chunk extension: visible text, obs-text, blank (no control
/// character, no line end).
fn field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (b > 0x20 && b != 0x7f)
}

/// A `tchar` of a field name (RFC 9110 5.6.2).
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan::new()
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// hyper's `Content-Length` value syntax: ASCII digits only, no sign, no overflow.
pub fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(
        0u64,
        |n, &b| if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None },
    )
}

/// hyper's test for a chunked request: the last `Transfer-Encoding` value ends with `chunked`.
pub fn is_chunked(v: &[u8]) -> bool {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked"))
}

/// Parses one complete head (leading empty lines already skipped, ending with its empty line).
fn classify(head: &[u8]) -> Next {
    if head.starts_with(H2_PREFACE) {
        return Next::Off;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return Next::Off,
    }
    let (mut cl, mut cl_seen, mut cl_bad) = (None, false, false);
    let mut te = None;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cl_seen = true;
            match content_length(h.value) {
                Some(n) if cl.is_none_or(|prev| prev == n) => cl = Some(n),
                _ => cl_bad = true,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if cl_seen && te.is_some() {
        return Next::Flag;
    }
    // After an upgrade (hyper's test: any `Upgrade` header, or CONNECT) the bytes may not be
    // HTTP any more.
    if upgrade || req.method == Some("CONNECT") {
        return Next::Off;
    }
    match te {
        // hyper refuses Transfer-Encoding in HTTP/1.0 and a last coding other than chunked.
        Some(v) if req.version == Some(1) && is_chunked(v) => Next::Chunked,
        Some(_) => Next::Off,
        None if cl_bad => Next::Off,
        None => Next::Body(cl.unwrap_or(0)),
    }
}

/// A visitor connection whose reads are fed to a [`Tracker`]; the result goes to a [`Flag`]
/// shared with the request handler. HTTP/2 connections are also held to the bound of
/// [`super::h2flood`]. Writes pass through.
///
/// Its close is made a reset when a response body failed on it ([`Flag::cut`]): hyper ends an
/// HTTP/1 connection whose response body fails without the last chunk, but with an orderly
/// close, and a body delimited by that close (an HTTP/1.0 visitor) would look complete; an
/// HTTP/2 stream is reset by hyper itself.
pub struct Tracked<T: ResetOnClose> {
    inner: T,
    tracker: Tracker,
    /// HTTP/2 connections: the bound on frames the edge must answer.
    flood: super::h2flood::FloodGuard,
    flag: Arc<Flag>,
    /// Bytes of the connection already read elsewhere (the lean path), read again first.
    replay: Vec<u8>,
    replayed: usize,
}

impl<T: ResetOnClose> Drop for Tracked<T> {
    fn drop(&mut self) {
        if self.flag.cut.load(Ordering::Acquire) {
            self.inner.reset_on_close();
        }
    }
}

impl<T: ResetOnClose> Tracked<T> {
    pub fn new(inner: T, tracker: Tracker, flag: Arc<Flag>) -> Self {
        Tracked::replaying(Vec::new(), inner, tracker, flag)
    }

    /// Like [`Tracked::new`], reading `replay` before the connection's next bytes.
    pub fn replaying(replay: Vec<u8>, inner: T, tracker: Tracker, flag: Arc<Flag>) -> Self {
        Tracked { inner, tracker, flood: Default::default(), flag, replay, replayed: 0 }
    }
}

impl<T: AsyncRead + ResetOnClose + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = if this.replayed < this.replay.len() {
            let n = buf.remaining().min(this.replay.len() - this.replayed);
            buf.put_slice(&this.replay[this.replayed..this.replayed + n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        if let Err(e) = this.flood.feed(&buf.filled()[before..]) {
            tracing::debug!(error = %e, "closing the visitor's connection");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        if !this.tracker.is_off() {
            if let Some(index) = this.tracker.feed(&buf.filled()[before..]) {
                this.flag.set(index);
            }
        }
        r
    }
}

impl<T: AsyncWrite + ResetOnClose + Unpin> AsyncWrite for Tracked<T> {
    rustunnel_transport::forward_write!(inner: poll_write, poll_write_vectored, is_write_vectored, poll_flush, poll_shutdown);
}

#[cfg(test)]
pub(super) mod tests;

/// Generated request streams (pipelined GETs, bodies with `Content-Length`, chunked bodies with
/// extensions and trailers, smuggling text inside bodies, requests with both framing headers):
/// the tracker flags exactly the first request with both headers however the bytes arrive, and
/// hyper, serving the same bytes, answers that very request with the 400.
#[cfg(test)]
mod props;
