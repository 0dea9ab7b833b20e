//! TLS 1.3 record protection after the handshake (RFC 8446 sections 4.6 and 5), sans-IO, for
//! [`crate::lean_tls`].
//!
//! rustls does the handshake and keeps what only it should: the key schedule (new traffic
//! secrets at each key update, through [`KernelConnection`]) and session tickets. After the
//! handshake it hands over the traffic keys, the same hand-over it offers for kernel TLS, and
//! this module seals and opens the records in place with ring's AEADs: a record is encrypted
//! where its plaintext was put and decrypted where it arrived. rustls's own record path copies
//! every record's plaintext into a fresh allocation on both sides, which on a bulk stream was
//! a copy and an allocation per 16 KiB on each end.
//!
//! What a record layer must get right, and where it is done here:
//! - nonce = IV xor the 64-bit record sequence number, one sequence per direction, reset to 0
//!   at each key update ([`Keys::next_nonce`]); a sequence never wraps;
//! - the additional data is the record header; the inner plaintext is content, content type,
//!   zero padding, at most 2^14 + 1 bytes before the padding is stripped ([`Records::open`]
//!   refuses more, and a record with no type);
//! - only `application_data` outer records after the handshake, lengths bounded by 2^14 + 256
//!   ciphertext ([`record_len`]) and 2^14 plaintext, checked on both sides;
//! - any record that fails to open ends the connection (no retry, no partial plaintext), and
//!   so does any later call: the caller sends the alert [`RecordError::alert`] names;
//! - post-handshake messages: `key_update` (follow it; a request is answered by one key update
//!   of ours before our next record, however many requests came), `new_session_ticket` (to
//!   rustls, clients only); anything else is an error; a key update must end its record, and
//!   no other record type may come between the records of one handshake message;
//! - records that carry no application data are bounded as rustls bounds them: at most 32
//!   records with no content in a row, 32 key updates in a row without application data, 4
//!   warning alerts in all; past that the connection ends with `unexpected_message`;
//! - alerts: `close_notify` is the end of the peer's stream; a warning `user_canceled` is
//!   ignored; any other alert ends the connection;
//! - the confidentiality limit of AES-GCM: our keys are updated before it is reached.

mod error;
mod keys;
mod records;
#[cfg(test)]
mod tests;
mod wire;

pub use error::RecordError;
pub use keys::{Kernel, KeySchedule, Secrets, TicketFn, TrafficKey};
pub use records::{record_len, Opened, Records};
pub use wire::{sealed_len, ALERT_ROOM, HEADER, KEY_UPDATE_ROOM, MAX_CIPHER, MAX_PLAIN, TAG};
