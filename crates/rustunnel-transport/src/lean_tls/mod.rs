//! A TLS stream on rustls's unbuffered API, for the connections both ends hold many of (data
//! connections, and on the server everything on the control port). The buffered API
//! (tokio-rustls) keeps a 4 KiB read buffer per connection for its whole life; each held
//! visitor connection is one TLS data connection on each end, so that buffer was most of what
//! an idle held connection cost. Here the buffers are borrowed from the pool of
//! [`crate::splice`] only while bytes are in flight: an idle connection holds its TLS state and
//! socket, nothing else. Records are read straight from the socket into the pooled buffer (no
//! read-ahead layer needed) and decrypted there.
//!
//! rustls does the handshake, certificate checks and key schedule. Once a TLS 1.3 handshake is
//! over (and the config allows secret extraction), rustls hands over the traffic keys and
//! [`crate::record`] seals each record where its plaintext was put in the output buffer and
//! opens it where it arrived in the input buffer; rustls's own record path copies every
//! record into an allocation on both sides. TLS 1.2 connections stay on rustls throughout.
//!
//! On either path a connection ends in one of two ways: the peer's `close_notify` (a clean
//! end of stream, `Ok(0)`), or an error. A TCP close without `close_notify`, inside a record
//! or inside a handshake message, is an `UnexpectedEof` error: whoever can inject a FIN must
//! not make a cut-off stream look complete. A record that breaks the rules ends the
//! connection with the alert rustls would send (`bad_record_mac`, `record_overflow`,
//! `unexpected_message`, `decode_error`), written before the error is returned.

mod buffers;
mod conn;
#[cfg(test)]
mod hostile_tests;
mod side;
mod tcp;
#[cfg(test)]
pub(crate) mod tests;

pub use conn::{LeanClient, LeanServer, LeanTls, TakenOver};
pub use side::Side;
