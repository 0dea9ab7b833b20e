//! Guards in front of rmcp's stdio transport.
//!
//! rmcp answers well-formed JSON of the wrong shape with a JSON-RPC "Invalid request" error,
//! but skips lines that are not JSON at all without a word, so a client that sent a broken
//! request would wait for an answer until its own timeout. [`filter_lines`] sits between stdin
//! and rmcp: lines that are not JSON stop there, and [`Lenient`] answers each with a JSON-RPC
//! "Parse error". An error about a request whose id could not be read carries `"id": null`
//! as JSON-RPC 2.0 asks; rmcp leaves the member out, so [`fill_null_ids`] adds it on the way
//! to stdout.
//!
//! Before the session starts (`initialize`, or a first request carrying complete 2026-07-28
//! metadata) rmcp ends the session on any message that is not a request — a stray
//! notification or response would kill the server. [`Lenient`] drops such messages (with a
//! log line on stderr) until the session has started.
use std::future::Future;
use std::sync::Arc;

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, ErrorData, GetMeta, ProtocolVersion};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};

/// Longest line taken from the client (rmcp's own bound); longer ones are answered with a
/// parse error and dropped without being held.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Parse errors waiting for their answer; more are dropped (a client flooding garbage gets
/// some answers, not an unbounded queue).
const PENDING_ERRORS: usize = 64;

/// Why a line from the client never reached rmcp.
pub type ParseErrors = mpsc::Receiver<String>;

/// Copies JSON lines from `from` to `to` until `from` ends; each line that is not JSON (or is
/// longer than [`MAX_LINE`]) is left out and reported on the returned channel, for
/// [`Lenient::with_parse_errors`] to answer.
pub fn filter_lines<R, W>(from: R, to: W) -> (impl Future<Output = ()> + Send, ParseErrors)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let (tx, rx) = mpsc::channel(PENDING_ERRORS);
    (copy_json_lines(from, to, tx), rx)
}

async fn copy_json_lines<R, W>(from: R, mut to: W, errors: mpsc::Sender<String>)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut from).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n > MAX_LINE && line.last() != Some(&b'\n') {
            // Drop the rest of the oversized line as it arrives, holding none of it.
            loop {
                let buf = match from.fill_buf().await {
                    Ok([]) | Err(_) => return,
                    Ok(b) => b,
                };
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        from.consume(i + 1);
                        break;
                    }
                    None => {
                        let k = buf.len();
                        from.consume(k);
                    }
                }
            }
            let _ = errors.try_send(format!("line longer than {MAX_LINE} bytes"));
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = text.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                if to.write_all(&line).await.is_err() || to.flush().await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = errors.try_send(e.to_string());
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Copies the server's messages (one per line) from `from` to `to`, giving an error reply
/// without an `id` the `"id": null` JSON-RPC 2.0 requires.
pub async fn fill_null_ids<R, W>(from: R, mut to: W)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    #[derive(serde::Deserialize)]
    struct Reply {
        error: Option<serde::de::IgnoredAny>,
        id: Option<serde::de::IgnoredAny>,
    }
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let anonymous_error = line.first() == Some(&b'{')
            && serde_json::from_slice::<Reply>(line.trim_ascii_end())
                .is_ok_and(|r| r.error.is_some() && r.id.is_none());
        let written = if anonymous_error {
            let mut fixed = Vec::with_capacity(line.len() + 10);
            fixed.extend_from_slice(b"{\"id\":null,");
            fixed.extend_from_slice(&line[1..]);
            to.write_all(&fixed).await
        } else {
            to.write_all(&line).await
        };
        if written.is_err() || to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Wraps a server transport; see the module docs.
pub struct Lenient<T> {
    inner: T,
    started: bool,
    parse_errors: Option<ParseErrors>,
    /// Parse-error answers being written: at most [`PENDING_ERRORS`] (a client that floods
    /// garbage and reads nothing does not pile up tasks).
    answering: Arc<Semaphore>,
}

impl<T> Lenient<T> {
    pub fn new(inner: T) -> Self {
        Lenient { inner, started: false, parse_errors: None, answering: Arc::new(Semaphore::new(PENDING_ERRORS)) }
    }

    /// Answers the lines [`filter_lines`] left out.
    pub fn with_parse_errors(mut self, errors: ParseErrors) -> Self {
        self.parse_errors = Some(errors);
        self
    }
}

/// Whether this message starts a session in rmcp's pre-session loop.
fn starts_session(m: &ClientJsonRpcMessage) -> bool {
    let ClientJsonRpcMessage::Request(r) = m else { return false };
    match &r.request {
        ClientRequest::InitializeRequest(_) => true,
        ClientRequest::PingRequest(_) | ClientRequest::DiscoverRequest(_) => false,
        other => {
            let meta = other.get_meta();
            meta.protocol_version().is_some_and(|v| ProtocolVersion::KNOWN_VERSIONS.contains(&v))
                && meta.missing_required_keys(&ProtocolVersion::V_2026_07_28).is_empty()
        }
    }
}

impl<T> Transport<RoleServer> for Lenient<T>
where
    T: Transport<RoleServer>,
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // Both branches are cancel-safe (rmcp polls `receive` in a `select!`), and the
            // answer is sent by a task of its own, so it is never half written.
            let m = match &mut self.parse_errors {
                Some(errors) => tokio::select! {
                    m = self.inner.receive() => m?,
                    Some(why) = errors.recv() => {
                        let Ok(slot) = self.answering.clone().try_acquire_owned() else {
                            tracing::warn!("not answering a line that is not JSON ({why}): too many answers unread");
                            continue;
                        };
                        tracing::debug!("answering a line that is not JSON: {why}");
                        let reply = TxJsonRpcMessage::<RoleServer>::error(ErrorData::parse_error("Parse error", None), None);
                        let send = self.inner.send(reply);
                        tokio::spawn(async move {
                            let _ = send.await;
                            drop(slot);
                        });
                        continue;
                    }
                },
                None => self.inner.receive().await?,
            };
            if self.started {
                return Some(m);
            }
            match &m {
                ClientJsonRpcMessage::Request(_) => {
                    self.started = starts_session(&m);
                    return Some(m);
                }
                other => {
                    let kind = match other {
                        ClientJsonRpcMessage::Notification(_) => "notification",
                        ClientJsonRpcMessage::Response(_) => "response",
                        _ => "error message",
                    };
                    tracing::warn!("ignoring a {kind} received before initialization");
                }
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
