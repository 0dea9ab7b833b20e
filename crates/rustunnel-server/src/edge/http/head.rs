//! The lean path's request and response heads: parsed with `httparse`, checked, and rebuilt
//! for the other side (hop-by-hop headers out, `X-Forwarded-*` set from the real peer, one
//! line end, one framing). What this path does not take is handed to hyper whole.
use std::ops::Range;

use super::framing::{content_length, is_chunked, ChunkScan};
use super::limits::{is_one_of, FORWARDING, HOP_BY_HOP, MAX_HEADERS};
use super::policy::{host_name, Carries, SET_BY_EDGE};

/// A request head this path forwards.
pub(super) struct ReqHead {
    /// Bytes of the head in the buffer.
    pub len: usize,
    pub method: String,
    pub path: String,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head_method: bool,
    /// `Content-Length` of the body (0: none).
    pub body: u64,
    /// The visitor asked to close after this request.
    pub close: bool,
    /// The host name routed on.
    pub host_name: String,
    /// The head to send to the local service.
    pub out: Vec<u8>,
    /// Where in `out` the request's one `Authorization` header line is (a tunnel with
    /// `--basic-auth` checks its value and takes the line out).
    pub authorization: Option<Range<usize>>,
    /// Where in `out` the `Host` header line is (`--host-header` replaces it).
    pub host_line: Range<usize>,
}

impl ReqHead {
    /// The value of the `Authorization` header, if there is one.
    pub(super) fn authorization_value(&self) -> Option<&[u8]> {
        let line = &self.out[self.authorization.clone()?];
        let value = &line[line.iter().position(|&b| b == b':')? + 1..];
        Some(value.trim_ascii())
    }
}

pub(super) enum Parsed {
    Partial,
    Lean(ReqHead),
    HandOver,
    /// More header fields than [`MAX_HEADERS`].
    TooLarge,
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The tokens of the `Connection` headers (they name more hop-by-hop headers).
pub(super) fn connection_tokens<'h>(headers: &'h [httparse::Header<'h>]) -> impl Iterator<Item = &'h str> {
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

pub(super) fn parse_request(buf: &[u8], peer_ip: &str, scheme: &str) -> Parsed {
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
    for (name, carries) in SET_BY_EDGE {
        let value = match carries {
            Carries::Host => host.as_bytes(),
            Carries::PeerIp => peer_ip.as_bytes(),
            Carries::Scheme => scheme.as_bytes(),
        };
        put_header(&mut out, name.as_bytes(), value);
    }
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
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked(ChunkScan),
    /// Until the local service closes: the visitor's connection closes after it too.
    Close,
}

/// A response head, rewritten for the visitor.
pub(super) struct RespHead {
    pub len: usize,
    pub status: u16,
    /// An interim (1xx) response: passed on as it is, the final one follows.
    pub interim: bool,
    pub framing: Framing,
    /// The data connection may serve another request after this response.
    pub reusable: bool,
    pub out: Vec<u8>,
}

/// Parses a response head: `Ok(None)` while incomplete, `Err` for one the edge will not pass on.
pub(super) fn parse_response(buf: &[u8], head_method: bool, close_visitor: bool) -> Result<Option<RespHead>, ()> {
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

/// Edits a rewritten request head for the tunnel: takes out the `login` line (the tunnel's own
/// login stays at the edge) and puts the tunnel's `Host` in place of the visitor's. The later
/// line is edited first, so the other's range stays right.
pub(super) fn edit_head(out: &mut Vec<u8>, login: Option<Range<usize>>, host: Option<(Range<usize>, &str)>) {
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = login.into_iter().map(|r| (r, Vec::new())).collect();
    edits.extend(host.map(|(r, h)| (r, format!("Host: {h}\r\n").into_bytes())));
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    for (range, with) in edits {
        out.splice(range, with);
    }
}

#[cfg(test)]
mod tests;

/// Generated heads, well-formed and not, through both parsers: they never panic, a head they
/// accept is forwarded well-formed with only the edge's forwarding headers, and framing on the
/// way out always matches what was parsed.
#[cfg(test)]
pub(super) mod props;
