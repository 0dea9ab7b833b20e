//! A guard in front of rmcp's stdio transport.
//!
//! rmcp already skips lines that are not JSON and answers well-formed JSON of the wrong shape
//! with a JSON-RPC "Invalid request" error. One gap remains: before the session starts
//! (`initialize`, or a first request carrying complete 2026-07-28 metadata) rmcp ends the
//! session on any message that is not a request — a stray notification or response would kill
//! the server. [`Lenient`] drops such messages (with a log line on stderr) until the session
//! has started.
use std::future::Future;

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta, ProtocolVersion};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;

/// Wraps a server transport; see the module docs.
pub struct Lenient<T> {
    inner: T,
    started: bool,
}

impl<T> Lenient<T> {
    pub fn new(inner: T) -> Self {
        Lenient { inner, started: false }
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
            let m = self.inner.receive().await?;
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
