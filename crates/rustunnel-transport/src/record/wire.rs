//! The numbers of the TLS 1.3 record format (RFC 8446 sections 5 and 6) and the bounds rustls
//! puts on records that carry no application data.

/// Record header: content type, legacy version, length.
pub const HEADER: usize = 5;
/// AEAD tag length of every TLS 1.3 suite.
pub const TAG: usize = 16;
/// Largest plaintext in one record.
pub const MAX_PLAIN: usize = 1 << 14;
/// Largest ciphertext (inner plaintext, type, padding, tag) in one record.
pub const MAX_CIPHER: usize = MAX_PLAIN + 256;
/// Room one record of `n` plaintext bytes takes once sealed.
pub const fn sealed_len(n: usize) -> usize {
    HEADER + n + 1 + TAG
}
/// Room a key update record takes.
pub const KEY_UPDATE_ROOM: usize = sealed_len(5);
/// Room an alert record takes.
pub const ALERT_ROOM: usize = sealed_len(2);

pub(super) const APPLICATION_DATA: u8 = 23;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const ALERT: u8 = 21;
pub(super) const NEW_SESSION_TICKET: u8 = 4;
pub(super) const KEY_UPDATE: u8 = 24;
pub(super) const WARNING: u8 = 1;
pub(super) const FATAL: u8 = 2;
pub(super) const CLOSE_NOTIFY: u8 = 0;
pub(super) const UNEXPECTED_MESSAGE: u8 = 10;
pub(super) const BAD_RECORD_MAC: u8 = 20;
pub(super) const RECORD_OVERFLOW: u8 = 22;
pub(super) const ILLEGAL_PARAMETER: u8 = 47;
pub(super) const DECODE_ERROR: u8 = 50;
pub(super) const INTERNAL_ERROR: u8 = 80;
pub(super) const USER_CANCELED: u8 = 90;
/// Largest post-handshake message body (rustls's limit; a session ticket is well under it).
/// Only one message is kept while incomplete, so this bounds what is buffered.
pub(super) const MAX_HANDSHAKE: usize = 0xffff;
/// Records with no content in a row (rustls and BoringSSL: 32).
pub(super) const MAX_EMPTY_IN_ROW: u8 = 32;
/// Key updates in a row without application data (rustls and BoringSSL: 32).
pub(super) const MAX_KEY_UPDATES_IN_ROW: u8 = 32;
/// Warning alerts in the life of a connection (rustls and BoringSSL: 4).
pub(super) const MAX_WARNING_ALERTS: u8 = 4;
