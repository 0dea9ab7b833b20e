//! Ending a visitor connection with a reset instead of an orderly close.
use std::time::Duration;

use tokio::net::TcpStream;

/// A visitor connection whose close can be made a reset (TCP RST, SO_LINGER 0) instead of an
/// orderly end: after a response that was cut short or found malformed, an orderly end (FIN, or
/// TLS `close_notify`) could let the visitor take what it got for a complete message.
pub trait ResetOnClose {
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

/// In-memory connections of unit tests have nothing to reset.
#[cfg(test)]
impl ResetOnClose for tokio::io::DuplexStream {
    fn reset_on_close(&self) {}
}

#[cfg(test)]
impl ResetOnClose for &[u8] {
    fn reset_on_close(&self) {}
}
