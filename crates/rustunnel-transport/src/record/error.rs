//! Why a record failed, and the alert that tells the peer.
use super::wire::{
    BAD_RECORD_MAC, DECODE_ERROR, ILLEGAL_PARAMETER, INTERNAL_ERROR, MAX_EMPTY_IN_ROW, MAX_KEY_UPDATES_IN_ROW,
    MAX_WARNING_ALERTS, RECORD_OVERFLOW, UNEXPECTED_MESSAGE,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("TLS record type {0} after the handshake")]
    UnexpectedType(u8),
    #[error("TLS record with legacy version {0:#06x}")]
    BadVersion(u16),
    #[error("TLS record of {0} bytes exceeds the limit (record_overflow)")]
    Overflow(usize),
    #[error("TLS record too short to hold a tag")]
    Short,
    #[error("TLS record length does not match its header")]
    LengthMismatch,
    #[error("TLS record failed to decrypt (bad_record_mac)")]
    BadRecordMac,
    #[error("TLS record without a content type")]
    NoContentType,
    #[error("TLS peer sent alert {0}")]
    Alert(u8),
    #[error("TLS peer sent warning alert {0}, which TLS 1.3 does not allow")]
    WarningAlert(u8),
    #[error("malformed TLS alert")]
    BadAlert,
    #[error("TLS alert of unknown level {0}")]
    BadAlertLevel(u8),
    #[error("unexpected TLS handshake message {0} after the handshake")]
    UnexpectedHandshake(u8),
    #[error("malformed TLS key update")]
    BadKeyUpdate,
    #[error("TLS key update not at the end of its record")]
    KeyUpdateNotLast,
    #[error("TLS post-handshake message too large")]
    HandshakeTooLarge,
    #[error("TLS record of type {0} inside a fragmented handshake message")]
    Interleaved(u8),
    #[error("more than {MAX_EMPTY_IN_ROW} empty TLS records in a row")]
    TooManyEmpty,
    #[error("more than {MAX_KEY_UPDATES_IN_ROW} TLS key updates without application data")]
    TooManyKeyUpdates,
    #[error("more than {MAX_WARNING_ALERTS} TLS warning alerts")]
    TooManyWarnings,
    #[error("TLS sequence number exhausted")]
    SequenceExhausted,
    #[error("no room for the TLS record in the output buffer")]
    NoRoom,
    #[error("TLS connection failed earlier")]
    Failed,
    #[error("unsupported TLS cipher suite for record protection")]
    UnsupportedSuite,
    #[error("TLS key schedule: {0}")]
    Rustls(#[from] rustls::Error),
}

impl RecordError {
    /// The alert that tells the peer why we end the connection (RFC 8446 section 6.2), as
    /// rustls would send it; `None` when the peer ended it (its alert) or is past telling.
    pub fn alert(&self) -> Option<u8> {
        use RecordError::*;
        Some(match self {
            BadRecordMac => BAD_RECORD_MAC,
            Overflow(_) => RECORD_OVERFLOW,
            UnexpectedType(_)
            | NoContentType
            | UnexpectedHandshake(_)
            | KeyUpdateNotLast
            | Interleaved(_)
            | TooManyEmpty
            | TooManyKeyUpdates
            | TooManyWarnings => UNEXPECTED_MESSAGE,
            BadVersion(_) | Short | LengthMismatch | WarningAlert(_) | BadAlert | BadKeyUpdate | HandshakeTooLarge => {
                DECODE_ERROR
            }
            BadAlertLevel(_) => ILLEGAL_PARAMETER,
            SequenceExhausted | NoRoom | UnsupportedSuite | Rustls(_) => INTERNAL_ERROR,
            Alert(_) | Failed => return None,
        })
    }
}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
