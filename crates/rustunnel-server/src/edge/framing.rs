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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A head hyper accepts fits in the edge's 64 KiB read buffer; anything longer stops tracking.
const HEAD_LIMIT: usize = 64 * 1024 + 1024;
/// hyper's default maximum number of request headers.
const MAX_HEADERS: usize = 100;
/// The HTTP/2 prior-knowledge connection preface starts with this line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The shared result of a connection's tracker: the index of the request that had both
/// `Content-Length` and `Transfer-Encoding`, if any.
#[derive(Debug)]
pub struct Flag(AtomicU64);

const UNSET: u64 = u64::MAX;

impl Flag {
    pub fn new() -> Self {
        Flag(AtomicU64::new(UNSET))
    }

    fn set(&self, index: u64) {
        self.0.store(index, Ordering::Release);
    }

    /// Whether request `index` of the connection had both framing headers.
    pub fn is_flagged(&self, index: u64) -> bool {
        index != UNSET && self.0.load(Ordering::Acquire) == index
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
pub struct Tracked<T> {
    inner: T,
    tracker: Tracker,
    /// HTTP/2 connections: the bound on frames the edge must answer.
    flood: super::h2flood::FloodGuard,
    flag: Arc<Flag>,
    /// Bytes of the connection already read elsewhere (the lean path), read again first.
    replay: Vec<u8>,
    replayed: usize,
}

impl<T: super::h1::ResetOnClose> super::h1::ResetOnClose for Tracked<T> {
    fn reset_on_close(&self) {
        self.inner.reset_on_close();
    }
}

impl<T> Tracked<T> {
    pub fn new(inner: T, tracker: Tracker, flag: Arc<Flag>) -> Self {
        Tracked::replaying(Vec::new(), inner, tracker, flag)
    }

    /// Like [`Tracked::new`], reading `replay` before the connection's next bytes.
    pub fn replaying(replay: Vec<u8>, inner: T, tracker: Tracker, flag: Arc<Flag>) -> Self {
        Tracked { inner, tracker, flood: Default::default(), flag, replay, replayed: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
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

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds all at once: (flagged index, tracker stopped).
    pub(super) fn run(input: &[u8]) -> (Option<u64>, bool) {
        run_pieces(&[input])
    }

    /// Feeds piece by piece: (flagged index, tracker stopped).
    pub(super) fn run_pieces(pieces: &[&[u8]]) -> (Option<u64>, bool) {
        let mut t = Tracker::new();
        let mut flagged = None;
        for p in pieces {
            if let Some(i) = t.feed(p) {
                assert!(flagged.is_none(), "flagged twice");
                flagged = Some(i);
            }
            assert!(t.buf.len() <= HEAD_LIMIT);
        }
        (flagged, t.is_off())
    }

    fn both(first: &str, second: &str) -> String {
        format!("POST /x HTTP/1.1\r\nHost: a\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\n")
    }

    const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const CL_BODY: &str = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    const CHUNKED: &str = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const CHUNKED_TRAILERS: &str = "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
        3;name=val\r\nabc\r\nA \r\n0123456789\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
    const SMUGGLE_TEXT: &str = "POST /s HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn in_cl_body(inner: &str) -> String {
        format!("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{inner}", inner.len())
    }

    fn in_chunked_body(inner: &str) -> String {
        format!(
            "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
            inner.len()
        )
    }

    /// Inputs with their expected result, used by the split tests too.
    fn corpus() -> Vec<(String, (Option<u64>, bool))> {
        let flag_0 = both("Content-Length: 4", "Transfer-Encoding: chunked");
        vec![
            (flag_0.clone(), (Some(0), true)),
            (both("Transfer-Encoding: chunked", "Content-Length: 4"), (Some(0), true)),
            (both("content-LENGTH: 4", "TRANSFER-encoding: identity"), (Some(0), true)),
            (format!("{CL_BODY}{flag_0}"), (Some(1), true)),
            (format!("{CHUNKED_TRAILERS}{flag_0}"), (Some(1), true)),
            (format!("{GET}{CHUNKED}\r\n{CL_BODY}{flag_0}{GET}"), (Some(3), true)),
            (format!("{GET}{GET}{CL_BODY}{CHUNKED}{CHUNKED_TRAILERS}"), (None, false)),
            (format!("\r\n\n{GET}\r\n{CL_BODY}"), (None, false)),
            (in_cl_body(SMUGGLE_TEXT), (None, false)),
            (in_chunked_body(SMUGGLE_TEXT), (None, false)),
            (format!("{}{GET}", in_cl_body(SMUGGLE_TEXT)), (None, false)),
            ("GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".into(), (None, false)),
            ("\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\r\n\r\n".into(), (None, true)),
            ("NOT HTTP AT ALL\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".into(), (None, true)),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(), (None, true)),
        ]
    }

    #[test]
    fn both_framing_headers_are_flagged_with_the_request_index() {
        for (input, expected) in corpus() {
            assert_eq!(run(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn normal_requests_are_never_flagged_and_keep_being_tracked() {
        let mut t = Tracker::new();
        for _ in 0..50 {
            for r in [GET, CL_BODY, CHUNKED, CHUNKED_TRAILERS, "\r\n"] {
                assert_eq!(t.feed(r.as_bytes()), None);
            }
        }
        assert!(!t.is_off());
        assert_eq!(t.index, 200);
        assert_eq!(t.state, State::Head);
        assert!(t.buf.is_empty());
        // Content-Length alone, also repeated with the same value, or zero.
        let same = "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(run(format!("{same}POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n{GET}").as_bytes()), (None, false));
    }

    #[test]
    fn any_split_gives_the_same_result() {
        for (input, expected) in corpus() {
            let b = input.as_bytes();
            for i in 0..=b.len() {
                assert_eq!(run_pieces(&[&b[..i], &b[i..]]), expected, "split at {i}: {input:?}");
                for j in i..=b.len() {
                    assert_eq!(run_pieces(&[&b[..i], &b[i..j], &b[j..]]), expected, "split at {i}, {j}: {input:?}");
                }
            }
            let bytes: Vec<&[u8]> = b.chunks(1).collect();
            assert_eq!(run_pieces(&bytes), expected, "byte by byte: {input:?}");
        }
    }

    #[test]
    fn what_it_cannot_frame_stops_tracking_without_flagging() {
        let later = both("Content-Length: 4", "Transfer-Encoding: chunked");
        for bad in [
            "GET / HTTP/1.1\r\nHost a\r\n\r\n".to_string(),
            "\rGET / HTTP/1.1\r\n\r\n".into(),
            "GET / HTTP/1.1\r\nBad\u{1}: x\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            CHUNKED.replace("5\r\nhello", "zz\r\nhello"),
            CHUNKED.replace("5\r\nhello", "5\nhello"),
            CHUNKED.replace("5\r\nhello", "5;a\nhello"),
            CHUNKED.replace("5\r\nhello", "5 6\r\nhello"),
            CHUNKED.replace("hello\r\n", "hello!\r\n"),
            CHUNKED.replace("5\r\n", "10000000000000000\r\n"),
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".into(),
            "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n".into(),
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".into(),
            format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1)),
        ] {
            let input = format!("{bad}{later}");
            assert_eq!(run(input.as_bytes()), (None, true), "{input:?}");
        }
        // Garbage of every byte value.
        let mut junk: Vec<u8> = (0..8192u32).map(|x| (x.wrapping_mul(2654435761) >> 13) as u8).collect();
        junk.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&junk), (None, true));
    }

    /// The strict scan of one whole input.
    fn strict(input: &[u8]) -> ChunkStep {
        ChunkScan::strict().feed(input)
    }

    #[test]
    fn the_strict_scan_refuses_what_clients_may_read_differently_at_the_first_bad_byte() {
        let good = b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\nafter";
        assert_eq!(strict(good), ChunkStep::Done(good.len() - 5));
        assert_eq!(strict(b"0\r\n\r\n"), ChunkStep::Done(5));
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(CHUNK_META_LIMIT as usize));
        let long_trailer = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(CHUNK_META_LIMIT as usize));
        for (bad, at) in [
            // A bare LF after the last chunk: the next bytes would be a response to some clients.
            (&b"5\r\nhello\r\n0\r\n\nHTTP/1.1 200 OK\r\n\r\n"[..], 13),
            (b"5\nhello\r\n0\r\n\r\n", 1),
            (b"5;a\nhello\r\n0\r\n\r\n", 3),
            (b"5\r\nhello\n0\r\n\r\n", 8),
            (b"0\r\nX-T: 1\nX-U: 2\r\n\r\n", 9),
            (b"0\r\nX-T: 1\r\n\n", 11),
            (b"0\r\nX-T: 1\r\n\r\r", 12),
            (b"0\r\n X-T: 1\r\n\r\n", 3),
            (b"0\r\nX T: 1\r\n\r\n", 4),
            (b"0\r\nX-T: a\x00b\r\n\r\n", 9),
            (b"5 \r\nhello\r\n0\r\n\r\n", 1),
            (b"5;a\x01\r\nhello\r\n0\r\n\r\n", 3),
            (b"x\r\n", 0),
            (b"10000000000000000\r\n", 16),
            (long_ext.as_bytes(), 2 + CHUNK_META_LIMIT as usize - 1),
            (long_trailer.as_bytes(), 3 + CHUNK_META_LIMIT as usize - 1),
        ] {
            assert_eq!(strict(bad), ChunkStep::Bad(at), "{:?}", String::from_utf8_lossy(bad));
            // Byte by byte, the same byte is the bad one.
            let mut scan = ChunkScan::strict();
            let bad_at = bad
                .iter()
                .enumerate()
                .find_map(|(i, b)| (scan.feed(std::slice::from_ref(b)) == ChunkStep::Bad(0)).then_some(i));
            assert_eq!(bad_at, Some(at), "{:?}", String::from_utf8_lossy(bad));
        }
        // hyper's reading (the request tracker) takes the bare LF after the last chunk as the
        // start of a trailer line: the two scans must differ exactly there.
        let lf_end = b"0\r\n\nX: 1\r\n\r\n";
        assert_eq!(ChunkScan::new().feed(lf_end), ChunkStep::Done(lf_end.len()));
        assert_eq!(strict(lf_end), ChunkStep::Bad(3));
        // Nothing more after the end.
        let mut scan = ChunkScan::strict();
        assert_eq!(scan.feed(b"0\r\n\r\n"), ChunkStep::Done(5));
        assert_eq!(scan.feed(b"junk"), ChunkStep::Done(0));
    }

    #[test]
    fn oversized_head_stops_tracking() {
        let big = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a".repeat(HEAD_LIMIT)
        );
        let mut t = Tracker::new();
        for piece in big.as_bytes().chunks(1000) {
            assert_eq!(t.feed(piece), None);
            assert!(t.buf.len() <= HEAD_LIMIT);
        }
        assert!(t.is_off());
        assert_eq!(t.buf.capacity(), 0);
        // Just under the limit is still a head.
        let fits = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a".repeat(64 * 1024 - 200)
        );
        assert_eq!(run(fits.as_bytes()), (Some(0), true));
    }

    #[test]
    fn an_off_tracker_never_flags() {
        let mut t = Tracker::off();
        assert_eq!(t.feed(both("Content-Length: 4", "Transfer-Encoding: chunked").as_bytes()), None);
        assert!(t.is_off());
    }

    #[tokio::test]
    async fn tracked_reads_set_the_shared_flag() {
        use tokio::io::AsyncReadExt;
        let input = format!("{GET}{}", both("Transfer-Encoding: chunked", "Content-Length: 4"));
        let flag = Arc::new(Flag::new());
        let mut io = Tracked::new(input.as_bytes(), Tracker::new(), flag.clone());
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, input.as_bytes(), "bytes pass through unchanged");
        assert!(!flag.is_flagged(0));
        assert!(flag.is_flagged(1));
        assert!(!flag.is_flagged(UNSET));
        let flag = Arc::new(Flag::new());
        let mut io = Tracked::new(input.as_bytes(), Tracker::off(), flag.clone());
        io.read_to_end(&mut Vec::new()).await.unwrap();
        assert!(!flag.is_flagged(1));
    }

    /// Serves `input` with a hyper HTTP/1 server behind [`Tracked`] with the edge's check, and
    /// returns, for each response, `index:body length` of the request it answered, or `400`.
    /// A flagged request without `Transfer-Encoding` (hyper drops the `Content-Length` of a
    /// request with both) is answered `WRONG`. Unless `eof`, the input must end the connection
    /// itself (a flagged request or `Connection: close`); with it, the input is followed by EOF,
    /// and hyper drops the response in progress.
    pub(super) async fn through_hyper(input: &[u8], eof: bool) -> String {
        use std::convert::Infallible;

        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut client, server) = tokio::io::duplex(1 << 16);
        let flag = Arc::new(Flag::new());
        let count = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Tracked::new(server, Tracker::new(), flag.clone()));
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (flag, count) = (flag.clone(), count.clone());
            async move {
                let i = count.fetch_add(1, Ordering::Relaxed);
                if flag.is_flagged(i) {
                    let both = req.headers().contains_key(http::header::TRANSFER_ENCODING);
                    let r = http::Response::builder().status(400).header("connection", "close");
                    let body = if both { "400" } else { "WRONG" };
                    return Ok::<_, Infallible>(r.body(Full::new(Bytes::from(body))).unwrap());
                }
                let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(999);
                Ok(http::Response::new(Full::new(Bytes::from(format!("{i}:{n}")))))
            }
        });
        let conn = tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
        // hyper answers while the rest is still being written: write and read at once.
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let write = async {
            let _ = wr.write_all(input).await;
            if eof {
                let _ = wr.shutdown().await;
            }
        };
        let mut out = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), rd.read_to_end(&mut out));
        let (_, r) = tokio::join!(write, read);
        r.expect("the connection is closed").unwrap();
        let _ = conn.await;
        let out = String::from_utf8(out).unwrap();
        let bodies: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| r.rsplit("\r\n\r\n").next().unwrap()).collect();
        bodies.join(" ")
    }

    /// The tracker's index lines up with the requests hyper hands to the service: a hyper
    /// HTTP/1 server behind [`Tracked`], with the edge's check, answers exactly the flagged one
    /// with 400 and nothing after it.
    #[tokio::test]
    async fn indexes_line_up_with_the_requests_hyper_serves() {
        let te_first = both("Transfer-Encoding: chunked", "Content-Length: 4");
        let close = "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let cases = [
            (format!("{GET}{CHUNKED_TRAILERS}\r\n{CL_BODY}{te_first}{GET}"), "0:0 1:13 2:5 400".to_string()),
            (format!("{}{te_first}{GET}", in_cl_body(SMUGGLE_TEXT)), format!("0:{} 400", SMUGGLE_TEXT.len())),
            (
                format!("GET / HTTP/1.1\nHost: a\n\n{}{GET}", both("Content-Length: 4", "Transfer-Encoding: chunked")),
                "0:0 400".to_string(),
            ),
            (
                format!("{GET}{CHUNKED}{}{close}", in_chunked_body(SMUGGLE_TEXT)),
                format!("0:0 1:5 2:{} 3:0", SMUGGLE_TEXT.len()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(through_hyper(input.as_bytes(), false).await, expected, "{input:?}");
        }
    }
}

/// Generated request streams (pipelined GETs, bodies with `Content-Length`, chunked bodies with
/// extensions and trailers, smuggling text inside bodies, requests with both framing headers):
/// the tracker flags exactly the first request with both headers however the bytes arrive, and
/// hyper, serving the same bytes, answers that very request with the 400.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::tests::{run, run_pieces, through_hyper};
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
                let mut out = head(&format!("Transfer-Encoding: chunked{eol}"));
                for (data, ext) in chunks {
                    let size = if *upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
                    out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for t in trailers {
                    out.extend_from_slice(format!("{t}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out
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
        let item =
            (req(), prop_oneof![4 => Just("\r\n"), 1 => Just("\n")], prop::sample::select(vec!["", "", "", "\r\n"]));
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
}
