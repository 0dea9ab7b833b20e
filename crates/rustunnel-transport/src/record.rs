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
use std::ops::Range;

use ring::aead;
use rustls::kernel::KernelConnection;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

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

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
const WARNING: u8 = 1;
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const ILLEGAL_PARAMETER: u8 = 47;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;
const USER_CANCELED: u8 = 90;
/// Largest post-handshake message body (rustls's limit; a session ticket is well under it).
/// Only one message is kept while incomplete, so this bounds what is buffered.
const MAX_HANDSHAKE: usize = 0xffff;
/// Records with no content in a row (rustls and BoringSSL: 32).
const MAX_EMPTY_IN_ROW: u8 = 32;
/// Key updates in a row without application data (rustls and BoringSSL: 32).
const MAX_KEY_UPDATES_IN_ROW: u8 = 32;
/// Warning alerts in the life of a connection (rustls and BoringSSL: 4).
const MAX_WARNING_ALERTS: u8 = 4;

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

/// One epoch's traffic key and IV, as a [`KeySchedule`] hands them over.
pub struct TrafficKey {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
}

impl TrafficKey {
    /// A key of `alg` (AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305) and its IV.
    pub fn new(alg: &'static aead::Algorithm, key: &[u8], iv: &[u8]) -> Result<TrafficKey, RecordError> {
        let key = aead::UnboundKey::new(alg, key).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv.try_into().map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(TrafficKey { key: aead::LessSafeKey::new(key), iv })
    }

    fn from_rustls(secrets: ConnectionTrafficSecrets) -> Result<TrafficKey, RecordError> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return Err(RecordError::UnsupportedSuite),
        };
        TrafficKey::new(alg, key.as_ref(), iv.as_ref())
    }
}

/// Where the traffic keys of each epoch come from, and who takes session tickets.
pub trait KeySchedule {
    /// Our next sending key (after a key update) and its first sequence number.
    fn next_tx(&mut self) -> Result<(u64, TrafficKey), RecordError>;
    /// The peer's next sending key (after its key update) and its first sequence number.
    fn next_rx(&mut self) -> Result<(u64, TrafficKey), RecordError>;
    /// A `new_session_ticket` message body from the peer.
    fn ticket(&mut self, body: &[u8]) -> Result<(), RecordError>;
}

/// Handles a `new_session_ticket` payload: rustls stores it on a client; a server refuses it.
pub type TicketFn<D> = fn(&mut KernelConnection<D>, &[u8]) -> Result<(), RecordError>;

/// rustls's key schedule, taken over after a real handshake.
pub struct Kernel<D> {
    kernel: KernelConnection<D>,
    ticket: TicketFn<D>,
}

impl<D> KeySchedule for Kernel<D> {
    fn next_tx(&mut self) -> Result<(u64, TrafficKey), RecordError> {
        let (seq, secrets) = self.kernel.update_tx_secret()?;
        Ok((seq, TrafficKey::from_rustls(secrets)?))
    }
    fn next_rx(&mut self) -> Result<(u64, TrafficKey), RecordError> {
        let (seq, secrets) = self.kernel.update_rx_secret()?;
        Ok((seq, TrafficKey::from_rustls(secrets)?))
    }
    fn ticket(&mut self, body: &[u8]) -> Result<(), RecordError> {
        (self.ticket)(&mut self.kernel, body)
    }
}

/// The TLS 1.3 key schedule from known traffic secrets (RFC 8446 section 7.3): keys, IVs and
/// the secrets after each key update, as rustls derives them. For tests and fuzzers, which
/// seal and open records under secrets they know (from a key log, or made up); a real
/// connection's secrets stay with rustls ([`Kernel`]). Session tickets are refused.
#[doc(hidden)]
pub struct Secrets {
    alg: &'static aead::Algorithm,
    hkdf: ring::hkdf::Algorithm,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

/// An output length for ring's HKDF.
struct Len(usize);

impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Secrets {
    /// HKDF-Expand-Label(secret, label, "", len).
    fn expand(&self, secret: &[u8], label: &[u8], len: usize) -> Result<Vec<u8>, RecordError> {
        let prk = ring::hkdf::Prk::new_less_safe(self.hkdf, secret);
        let out_len = u16::try_from(len).map_err(|_| RecordError::UnsupportedSuite)?.to_be_bytes();
        let label_len = [u8::try_from(6 + label.len()).map_err(|_| RecordError::UnsupportedSuite)?];
        let info: [&[u8]; 5] = [&out_len, &label_len, b"tls13 ", label, &[0]];
        let mut out = vec![0u8; len];
        prk.expand(&info, Len(len)).and_then(|okm| okm.fill(&mut out)).map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(out)
    }

    fn key(&self, secret: &[u8]) -> Result<(u64, TrafficKey), RecordError> {
        let key = self.expand(secret, b"key", self.alg.key_len())?;
        let iv = self.expand(secret, b"iv", aead::NONCE_LEN)?;
        Ok((0, TrafficKey::new(self.alg, &key, &iv)?))
    }

    fn next(&self, secret: &[u8]) -> Result<Vec<u8>, RecordError> {
        self.expand(secret, b"traffic upd", ring::hkdf::KeyType::len(&self.hkdf))
    }
}

impl KeySchedule for Secrets {
    fn next_tx(&mut self) -> Result<(u64, TrafficKey), RecordError> {
        self.tx = self.next(&self.tx)?;
        self.key(&self.tx)
    }
    fn next_rx(&mut self) -> Result<(u64, TrafficKey), RecordError> {
        self.rx = self.next(&self.rx)?;
        self.key(&self.rx)
    }
    fn ticket(&mut self, _: &[u8]) -> Result<(), RecordError> {
        Err(RecordError::UnexpectedHandshake(NEW_SESSION_TICKET))
    }
}

/// One direction's key, IV and record sequence number.
struct Keys {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new((seq, k): (u64, TrafficKey)) -> Keys {
        Keys { key: k.key, iv: k.iv, seq }
    }

    /// The nonce of the next record; advances the sequence.
    fn next_nonce(&mut self) -> Result<aead::Nonce, RecordError> {
        let mut nonce = self.iv;
        for (b, s) in nonce[aead::NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        Ok(aead::Nonce::assume_unique_for_key(nonce))
    }
}

/// What one opened record was.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data, at this range of the record buffer (possibly empty).
    Data(Range<usize>),
    /// A post-handshake message or an ignorable alert, dealt with.
    Control,
    /// The peer's `close_notify`: its stream has ended.
    Closed,
}

/// Both directions of an established TLS 1.3 connection.
pub struct Records<S> {
    schedule: S,
    tx: Keys,
    rx: Keys,
    /// Records sealed under one key before it is replaced.
    tx_limit: u64,
    /// A complete post-handshake message is assembled here when it spans records.
    handshake: Vec<u8>,
    /// The peer asked for a key update; ours goes before our next record (one for any number
    /// of requests: RFC 8446 section 4.6.3).
    reply_key_update: bool,
    /// Key updates followed (the peer's) and sent (ours).
    updates: (u32, u32),
    /// Records with no content since the last one with some.
    empty_in_row: u8,
    /// The peer's key updates since its last application data.
    key_updates_in_row: u8,
    /// Warning alerts received.
    warnings: u8,
    /// A record failed to open: nothing is opened or sealed any more, but our one alert.
    failed: bool,
    alert_sent: bool,
}

impl<D> Records<Kernel<D>> {
    /// Takes over from rustls after the handshake. Only TLS 1.3 connections qualify.
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<D>,
        ticket: TicketFn<D>,
    ) -> Result<Records<Kernel<D>>, RecordError> {
        let suite = kernel.negotiated_cipher_suite().tls13().ok_or(RecordError::UnsupportedSuite)?;
        // Well below the limit, so a record in flight never crosses it.
        let tx_limit = suite.common.confidentiality_limit.saturating_sub(1 << 16).max(1);
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let tx = (tx_seq, TrafficKey::from_rustls(tx)?);
        let rx = (rx_seq, TrafficKey::from_rustls(rx)?);
        Ok(Records::with_schedule(Kernel { kernel, ticket }, tx, rx, tx_limit))
    }
}

impl Records<Secrets> {
    /// Records under known traffic secrets (ours `tx`, the peer's `rx`), both sequences at
    /// `seq`, for a suite of `alg` (AES-128-GCM and ChaCha20-Poly1305 go with SHA-256,
    /// AES-256-GCM with SHA-384): for tests, and for fuzzing [`Records::open`] and the
    /// reassembly of handshake messages, with a second one (secrets swapped) sealing what the
    /// first opens ([`Records::seal_inner`]). Never for a real connection.
    #[doc(hidden)]
    pub fn from_secrets(
        alg: &'static aead::Algorithm,
        tx: &[u8],
        rx: &[u8],
        seq: u64,
    ) -> Result<Records<Secrets>, RecordError> {
        let hkdf = if alg == &aead::AES_256_GCM { ring::hkdf::HKDF_SHA384 } else { ring::hkdf::HKDF_SHA256 };
        let schedule = Secrets { alg, hkdf, tx: tx.to_vec(), rx: rx.to_vec() };
        let ((_, txk), (_, rxk)) = (schedule.key(tx)?, schedule.key(rx)?);
        Ok(Records::with_schedule(schedule, (seq, txk), (seq, rxk), u64::MAX))
    }
}

impl<S: KeySchedule> Records<S> {
    /// Records with these first keys (and sequence numbers), further ones from `schedule`;
    /// ours are replaced after `tx_limit` records.
    pub fn with_schedule(schedule: S, tx: (u64, TrafficKey), rx: (u64, TrafficKey), tx_limit: u64) -> Records<S> {
        Records {
            schedule,
            tx: Keys::new(tx),
            rx: Keys::new(rx),
            tx_limit: tx_limit.max(1),
            handshake: Vec::new(),
            reply_key_update: false,
            updates: (0, 0),
            empty_in_row: 0,
            key_updates_in_row: 0,
            warnings: 0,
            failed: false,
            alert_sent: false,
        }
    }

    /// Key updates followed (the peer's) and sent (ours) so far.
    pub fn key_updates(&self) -> (u32, u32) {
        self.updates
    }

    /// Lowers the number of records sealed under one key (tests exercise key updates with it).
    #[cfg(test)]
    pub(crate) fn set_key_update_every(&mut self, records: u64) {
        self.tx_limit = records.max(1);
    }

    /// Whether part of a handshake message is waiting for the rest (the connection must not
    /// end here).
    pub fn in_handshake_message(&self) -> bool {
        !self.handshake.is_empty()
    }

    /// Seals `data` (at most [`MAX_PLAIN`] bytes) as one application data record at the start of
    /// `out`, preceded by a key update record when one is due. `out` needs
    /// `sealed_len(data.len()) + KEY_UPDATE_ROOM` bytes. Returns the bytes written.
    pub fn seal_data(&mut self, out: &mut [u8], data: &[u8]) -> Result<usize, RecordError> {
        let mut at = 0;
        if self.key_update_due(1) {
            at = self.key_update(out, false)?;
        }
        let body = out.get_mut(at + HEADER..at + HEADER + data.len()).ok_or(RecordError::NoRoom)?;
        body.copy_from_slice(data);
        Ok(at + self.seal(&mut out[at..], data.len(), APPLICATION_DATA)?)
    }

    /// Seals the `n` (at most [`MAX_PLAIN`]) bytes already at `out[HEADER..]` in place as one
    /// application data record; `out` needs `sealed_len(n)` bytes. Check
    /// [`Records::key_update_due`] first.
    pub fn seal_in_place(&mut self, out: &mut [u8], n: usize) -> Result<usize, RecordError> {
        self.seal(out, n, APPLICATION_DATA)
    }

    /// Whether a key update must go out before the next `records` records: the peer asked for
    /// one, or they would reach the limit of our current key.
    pub fn key_update_due(&self, records: u64) -> bool {
        self.reply_key_update || self.tx.seq.saturating_add(records) >= self.tx_limit
    }

    /// Records one key seals at most.
    pub fn records_per_key(&self) -> usize {
        usize::try_from(self.tx_limit).unwrap_or(usize::MAX)
    }

    /// Seals our `close_notify` alert into `out` (room [`ALERT_ROOM`]).
    pub fn seal_close_notify(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        self.seal_content(out, &[WARNING, CLOSE_NOTIFY], ALERT)
    }

    /// Seals the fatal alert that `err` calls for into `out` (room [`ALERT_ROOM`]), once, and
    /// refuses to seal anything after it. Returns the bytes written (0: no alert to send).
    pub fn seal_fatal_alert(&mut self, out: &mut [u8], err: &RecordError) -> Result<usize, RecordError> {
        self.failed = true;
        match err.alert() {
            Some(desc) if !self.alert_sent => {
                self.alert_sent = true;
                self.seal_unchecked(out, &[FATAL, desc], ALERT)
            }
            _ => Ok(0),
        }
    }

    /// Sends a key update (asking the peer for one too when `request`) and switches our sending
    /// key: everything sealed after it uses the new one.
    pub fn key_update(&mut self, out: &mut [u8], request: bool) -> Result<usize, RecordError> {
        let n = self.seal_content(out, &[KEY_UPDATE, 0, 0, 1, u8::from(request)], HANDSHAKE)?;
        self.tx = Keys::new(self.schedule.next_tx()?);
        self.reply_key_update = false;
        self.updates.1 = self.updates.1.saturating_add(1);
        Ok(n)
    }

    /// Seals `inner` as the whole inner plaintext of one record (content, type and padding as
    /// given, none added), so tests and fuzzers can make records a correct peer never would.
    #[doc(hidden)]
    pub fn seal_inner(&mut self, out: &mut [u8], inner: &[u8]) -> Result<usize, RecordError> {
        let n = inner.len().checked_sub(1).ok_or(RecordError::NoContentType)?;
        if inner.len() + TAG > MAX_CIPHER {
            return Err(RecordError::Overflow(inner.len()));
        }
        let room = out.get_mut(..sealed_len(n)).ok_or(RecordError::NoRoom)?;
        room[HEADER..HEADER + n].copy_from_slice(&inner[..n]);
        self.seal_raw(room, n, inner[n])
    }

    fn seal_content(&mut self, out: &mut [u8], content: &[u8], typ: u8) -> Result<usize, RecordError> {
        let body = out.get_mut(HEADER..HEADER + content.len()).ok_or(RecordError::NoRoom)?;
        body.copy_from_slice(content);
        self.seal(out, content.len(), typ)
    }

    /// Like [`Records::seal_content`] after a failure (for the one alert that follows it).
    fn seal_unchecked(&mut self, out: &mut [u8], content: &[u8], typ: u8) -> Result<usize, RecordError> {
        let room = out.get_mut(..sealed_len(content.len())).ok_or(RecordError::NoRoom)?;
        room[HEADER..HEADER + content.len()].copy_from_slice(content);
        self.seal_raw(room, content.len(), typ)
    }

    /// Seals the `n` content bytes at `out[HEADER..]` in place as a record of type `typ`.
    fn seal(&mut self, out: &mut [u8], n: usize, typ: u8) -> Result<usize, RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        if n > MAX_PLAIN {
            return Err(RecordError::Overflow(n));
        }
        if out.len() < sealed_len(n) {
            return Err(RecordError::NoRoom);
        }
        self.seal_raw(out, n, typ)
    }

    /// [`Records::seal`] without its checks: `out` holds `sealed_len(n)` bytes and `n` fits
    /// one record (the caller checked).
    fn seal_raw(&mut self, out: &mut [u8], n: usize, typ: u8) -> Result<usize, RecordError> {
        let len = n + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        out[..HEADER].copy_from_slice(&header);
        out[HEADER + n] = typ;
        let nonce = self.tx.next_nonce()?;
        let (body, rest) = out[HEADER..].split_at_mut(n + 1);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(header), body)
            .map_err(|_| RecordError::SequenceExhausted)?;
        rest[..TAG].copy_from_slice(tag.as_ref());
        Ok(HEADER + len)
    }

    /// Opens the whole record `rec` (its length from [`record_len`]) in place. After an error,
    /// every later call fails too; send the alert it calls for ([`Records::seal_fatal_alert`]).
    pub fn open(&mut self, rec: &mut [u8]) -> Result<Opened, RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        let opened = self.open_checked(rec);
        self.failed = opened.is_err();
        opened
    }

    fn open_checked(&mut self, rec: &mut [u8]) -> Result<Opened, RecordError> {
        if record_len(rec)? != Some(rec.len()) {
            return Err(RecordError::LengthMismatch);
        }
        let header: [u8; HEADER] = rec[..HEADER].try_into().map_err(|_| RecordError::Short)?;
        let nonce = self.rx.next_nonce()?;
        let plain = self
            .rx
            .key
            .open_in_place(nonce, aead::Aad::from(header), &mut rec[HEADER..])
            .map_err(|_| RecordError::BadRecordMac)?;
        // Inner plaintext: content, type, zero padding; at most 2^14 + 1 bytes in all.
        if plain.len() > MAX_PLAIN + 1 {
            return Err(RecordError::Overflow(plain.len()));
        }
        let end = plain.iter().rposition(|&b| b != 0).ok_or(RecordError::NoContentType)?;
        let typ = plain[end];
        // "Handshake messages MUST NOT be interleaved with other record types" (RFC 8446 5.1).
        if typ != HANDSHAKE && !self.handshake.is_empty() {
            return Err(RecordError::Interleaved(typ));
        }
        if end == 0 {
            if self.empty_in_row == MAX_EMPTY_IN_ROW {
                return Err(RecordError::TooManyEmpty);
            }
            self.empty_in_row += 1;
        } else {
            self.empty_in_row = 0;
        }
        match typ {
            APPLICATION_DATA => {
                if end > 0 {
                    self.key_updates_in_row = 0;
                }
                Ok(Opened::Data(HEADER..HEADER + end))
            }
            ALERT => self.alert(&plain[..end]),
            // An empty handshake record carries nothing (rustls too only counts it as empty).
            HANDSHAKE if end == 0 => Ok(Opened::Control),
            HANDSHAKE => {
                self.handshake_bytes(&plain[..end])?;
                Ok(Opened::Control)
            }
            t => Err(RecordError::UnexpectedType(t)),
        }
    }

    /// An alert from the peer (RFC 8446 section 6), judged as rustls does.
    fn alert(&mut self, content: &[u8]) -> Result<Opened, RecordError> {
        let [level, desc] = *content else { return Err(RecordError::BadAlert) };
        if level != WARNING && level != FATAL {
            return Err(RecordError::BadAlertLevel(level));
        }
        if desc == CLOSE_NOTIFY {
            return Ok(Opened::Closed);
        }
        if level == FATAL {
            return Err(RecordError::Alert(desc));
        }
        if self.warnings == MAX_WARNING_ALERTS {
            return Err(RecordError::TooManyWarnings);
        }
        self.warnings += 1;
        match desc {
            USER_CANCELED => Ok(Opened::Control),
            d => Err(RecordError::WarningAlert(d)),
        }
    }

    /// Adds one record's post-handshake bytes and acts on every complete message.
    fn handshake_bytes(&mut self, content: &[u8]) -> Result<(), RecordError> {
        self.handshake.extend_from_slice(content);
        let mut at = 0;
        while let [typ, a, b, c, ..] = self.handshake[at..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE {
                return Err(RecordError::HandshakeTooLarge);
            }
            let Some(body) = self.handshake.get(at + 4..at + 4 + len) else { break };
            match typ {
                NEW_SESSION_TICKET => self.schedule.ticket(body)?,
                KEY_UPDATE => {
                    if self.key_updates_in_row == MAX_KEY_UPDATES_IN_ROW {
                        return Err(RecordError::TooManyKeyUpdates);
                    }
                    self.key_updates_in_row += 1;
                    let request = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(RecordError::BadKeyUpdate),
                    };
                    // A key update must be the last message of its record (RFC 8446 5.1).
                    if at + 4 + len != self.handshake.len() {
                        return Err(RecordError::KeyUpdateNotLast);
                    }
                    self.rx = Keys::new(self.schedule.next_rx()?);
                    // However many requests come before our next record, one key update of
                    // ours answers them all.
                    self.reply_key_update |= request;
                    self.updates.0 = self.updates.0.saturating_add(1);
                }
                t => return Err(RecordError::UnexpectedHandshake(t)),
            }
            at += 4 + len;
        }
        self.handshake.drain(..at);
        if self.handshake.is_empty() {
            self.handshake = Vec::new();
        }
        Ok(())
    }
}

/// The length of the record at the start of `buf` once all of it is there: `Ok(None)` while
/// its header is incomplete, else the whole record's length (header included), which may be
/// more than `buf` holds yet. Checks the header first.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let [typ, v1, v2, l1, l2, ..] = *buf else { return Ok(None) };
    if typ != APPLICATION_DATA {
        return Err(RecordError::UnexpectedType(typ));
    }
    let version = u16::from_be_bytes([v1, v2]);
    if version != 0x0303 {
        return Err(RecordError::BadVersion(version));
    }
    let len = u16::from_be_bytes([l1, l2]) as usize;
    if len > MAX_CIPHER {
        return Err(RecordError::Overflow(len));
    }
    if len < TAG + 1 {
        return Err(RecordError::Short);
    }
    Ok(Some(HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_before_anything_is_buffered() {
        assert_eq!(record_len(&[23, 3, 3, 0]), Ok(None));
        assert_eq!(record_len(&[23, 3, 3, 0, 17]), Ok(Some(22)));
        assert_eq!(record_len(&[22, 3, 3, 0, 17]), Err(RecordError::UnexpectedType(22)));
        assert_eq!(record_len(&[21, 3, 3, 0, 17]), Err(RecordError::UnexpectedType(21)));
        assert_eq!(record_len(&[23, 3, 1, 0, 17]), Err(RecordError::BadVersion(0x0301)));
        assert_eq!(record_len(&[23, 3, 3, 0x41, 1]), Err(RecordError::Overflow(0x4101)));
        assert_eq!(record_len(&[23, 3, 3, 0, 16]), Err(RecordError::Short));
        let max = MAX_CIPHER.to_be_bytes();
        assert_eq!(record_len(&[23, 3, 3, max[6], max[7]]), Ok(Some(HEADER + MAX_CIPHER)));
    }

    #[test]
    fn nonces_xor_the_sequence_into_the_iv() {
        let secrets = ConnectionTrafficSecrets::Aes128Gcm { key: [7u8; 32].into(), iv: [0xf0; aead::NONCE_LEN].into() };
        // A 32-byte key is refused for AES-128: keys are checked, not truncated.
        assert!(TrafficKey::from_rustls(secrets).is_err());
        let mut k = Keys::new((0x0102, TrafficKey::new(&aead::AES_128_GCM, &[7u8; 16], &[0xf0; 12]).unwrap()));
        let n = k.next_nonce().unwrap();
        let mut want = [0xf0; aead::NONCE_LEN];
        want[10] ^= 0x01;
        want[11] ^= 0x02;
        assert_eq!(n.as_ref(), &want);
        assert_eq!(k.seq, 0x0103);
        k.seq = u64::MAX;
        assert!(k.next_nonce().is_err(), "a sequence number never wraps");
    }

    /// Two ends of a connection under made-up secrets.
    fn ends() -> (Records<Secrets>, Records<Secrets>) {
        let (a, b) = ([9u8; 32], [3u8; 32]);
        let alg = &aead::AES_128_GCM;
        (Records::from_secrets(alg, &a, &b, 0).unwrap(), Records::from_secrets(alg, &b, &a, 0).unwrap())
    }

    /// Seals `inner` (content, type, padding) and opens it.
    fn send(tx: &mut Records<Secrets>, rx: &mut Records<Secrets>, inner: &[u8]) -> Result<Opened, RecordError> {
        let mut rec = vec![0u8; HEADER + inner.len() + TAG];
        let n = tx.seal_inner(&mut rec, inner).unwrap();
        rx.open(&mut rec[..n])
    }

    fn data(n: usize) -> Vec<u8> {
        let mut v = vec![b'x'; n];
        v.push(APPLICATION_DATA);
        v
    }

    #[test]
    fn the_inner_plaintext_is_at_most_2_14_plus_1_bytes_padding_included() {
        let (mut tx, mut rx) = ends();
        // Full content and its type: the largest inner plaintext.
        assert_eq!(send(&mut tx, &mut rx, &data(MAX_PLAIN)), Ok(Opened::Data(HEADER..HEADER + MAX_PLAIN)));
        // Small content, padded past the limit: refused although the ciphertext fits a record.
        let mut padded = data(10);
        padded.resize(MAX_PLAIN + 2, 0);
        let e = send(&mut tx, &mut rx, &padded).unwrap_err();
        assert_eq!(e, RecordError::Overflow(MAX_PLAIN + 2));
        assert_eq!(e.alert(), Some(RECORD_OVERFLOW));
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &data(MAX_PLAIN + 1)), Err(RecordError::Overflow(MAX_PLAIN + 2)));
        // And nothing opens after a failure.
        assert_eq!(send(&mut tx, &mut rx, &data(1)), Err(RecordError::Failed));
    }

    #[test]
    fn sealing_more_than_a_record_is_an_error_not_a_panic() {
        let (mut tx, _) = ends();
        let mut out = vec![0u8; sealed_len(MAX_PLAIN + 1) + KEY_UPDATE_ROOM];
        assert_eq!(tx.seal_data(&mut out, &vec![1; MAX_PLAIN + 1]), Err(RecordError::Overflow(MAX_PLAIN + 1)));
        assert_eq!(tx.seal_in_place(&mut out, MAX_PLAIN + 1), Err(RecordError::Overflow(MAX_PLAIN + 1)));
        assert_eq!(tx.seal_data(&mut out[..100], &[1; 100]), Err(RecordError::NoRoom));
        assert_eq!(tx.seal_in_place(&mut out[..100], 100), Err(RecordError::NoRoom));
        // A record shorter than its header says, or longer, is refused before decrypting.
        let (mut tx, mut rx) = ends();
        let n = tx.seal_data(&mut out, b"hello").unwrap();
        assert_eq!(rx.open(&mut out[..n - 1]), Err(RecordError::LengthMismatch));
        let (_, mut rx) = ends();
        assert_eq!(rx.open(&mut out[..3]), Err(RecordError::LengthMismatch));
    }

    #[test]
    fn no_record_of_another_type_inside_a_fragmented_handshake_message() {
        let key_update_request = [KEY_UPDATE, 0, 0, 1, 1];
        for (other, want) in [
            (data(3), RecordError::Interleaved(APPLICATION_DATA)),
            (vec![APPLICATION_DATA], RecordError::Interleaved(APPLICATION_DATA)),
            (vec![WARNING, CLOSE_NOTIFY, ALERT], RecordError::Interleaved(ALERT)),
            (vec![WARNING, USER_CANCELED, ALERT], RecordError::Interleaved(ALERT)),
        ] {
            let (mut tx, mut rx) = ends();
            assert_eq!(send(&mut tx, &mut rx, &[&key_update_request[..2], &[HANDSHAKE]].concat()), Ok(Opened::Control));
            assert!(rx.in_handshake_message());
            let e = send(&mut tx, &mut rx, &other).unwrap_err();
            assert_eq!(e, want);
            assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
        }
        // The rest of the message in the next record completes it.
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[&key_update_request[..2], &[HANDSHAKE]].concat()), Ok(Opened::Control));
        assert_eq!(send(&mut tx, &mut rx, &[&key_update_request[2..], &[HANDSHAKE]].concat()), Ok(Opened::Control));
        assert!(!rx.in_handshake_message() && rx.key_update_due(0) && rx.key_updates() == (1, 0));
    }

    #[test]
    fn records_without_application_data_are_bounded_as_rustls_bounds_them() {
        // Empty records: 32 in a row, the 33rd ends the connection; content resets the count.
        let (mut tx, mut rx) = ends();
        for round in 0..3 {
            for _ in 0..MAX_EMPTY_IN_ROW {
                assert_eq!(send(&mut tx, &mut rx, &[APPLICATION_DATA, 0, 0]), Ok(Opened::Data(HEADER..HEADER)));
            }
            if round < 2 {
                assert!(matches!(send(&mut tx, &mut rx, &data(1)), Ok(Opened::Data(_))));
            }
        }
        let e = send(&mut tx, &mut rx, &[APPLICATION_DATA]).unwrap_err();
        assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
        assert_eq!(e, RecordError::TooManyEmpty);

        // Key update requests: 32 in a row, answered by one key update of ours; the 33rd ends
        // it. Application data resets the count, an empty record does not.
        let (mut tx, mut rx) = ends();
        let mut out = vec![0u8; 4 * KEY_UPDATE_ROOM];
        for _ in 0..MAX_KEY_UPDATES_IN_ROW - 1 {
            let n = tx.key_update(&mut out, true).unwrap();
            assert_eq!(rx.open(&mut out[..n]), Ok(Opened::Control));
        }
        assert!(matches!(send(&mut tx, &mut rx, &[APPLICATION_DATA]), Ok(Opened::Data(_))));
        let n = tx.key_update(&mut out, true).unwrap();
        assert_eq!(rx.open(&mut out[..n]), Ok(Opened::Control));
        // Our answer: one key update before our next record, however many were asked for.
        let n = rx.seal_data(&mut out, b"after").unwrap();
        assert_eq!(n, KEY_UPDATE_ROOM + sealed_len(5));
        assert_eq!(rx.key_updates(), (32, 1));
        assert!(!rx.key_update_due(1));
        let n = tx.key_update(&mut out, true).unwrap();
        let e = rx.open(&mut out[..n]).unwrap_err();
        assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
        assert_eq!(e, RecordError::TooManyKeyUpdates);
        // ... and application data resets it.
        let (mut tx, mut rx) = ends();
        for _ in 0..3 * MAX_KEY_UPDATES_IN_ROW {
            let n = tx.key_update(&mut out, false).unwrap();
            assert_eq!(rx.open(&mut out[..n]), Ok(Opened::Control));
            assert!(matches!(send(&mut tx, &mut rx, &data(1)), Ok(Opened::Data(_))));
        }

        // Warning alerts: user_canceled is ignored 4 times in the life of a connection.
        let (mut tx, mut rx) = ends();
        for _ in 0..MAX_WARNING_ALERTS {
            assert_eq!(send(&mut tx, &mut rx, &[WARNING, USER_CANCELED, ALERT]), Ok(Opened::Control));
            assert!(matches!(send(&mut tx, &mut rx, &data(1)), Ok(Opened::Data(_))));
        }
        let e = send(&mut tx, &mut rx, &[WARNING, USER_CANCELED, ALERT]).unwrap_err();
        assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
        assert_eq!(e, RecordError::TooManyWarnings);
    }

    #[test]
    fn alerts_are_judged_as_rustls_judges_them() {
        let cases: [(&[u8], Result<Opened, RecordError>); 7] = [
            (&[WARNING, CLOSE_NOTIFY, ALERT], Ok(Opened::Closed)),
            (&[FATAL, CLOSE_NOTIFY, ALERT], Ok(Opened::Closed)),
            (&[WARNING, USER_CANCELED, ALERT], Ok(Opened::Control)),
            (&[FATAL, USER_CANCELED, ALERT], Err(RecordError::Alert(USER_CANCELED))),
            (&[WARNING, 42, ALERT], Err(RecordError::WarningAlert(42))),
            (&[3, 42, ALERT], Err(RecordError::BadAlertLevel(3))),
            (&[WARNING, CLOSE_NOTIFY, 7, ALERT], Err(RecordError::BadAlert)),
        ];
        for (inner, want) in cases {
            let (mut tx, mut rx) = ends();
            assert_eq!(send(&mut tx, &mut rx, inner), want, "{inner:?}");
        }
        assert_eq!(RecordError::Alert(40).alert(), None, "no alert answers the peer's fatal one");
        assert_eq!(RecordError::WarningAlert(42).alert(), Some(DECODE_ERROR));
        assert_eq!(RecordError::BadAlertLevel(3).alert(), Some(ILLEGAL_PARAMETER));
        assert_eq!(RecordError::BadRecordMac.alert(), Some(BAD_RECORD_MAC));
    }

    #[test]
    fn one_fatal_alert_is_sealed_after_a_failure_and_nothing_else() {
        let (mut tx, mut rx) = ends();
        let mut rec = vec![0u8; 64];
        let n = tx.seal_data(&mut rec, b"tampered").unwrap();
        rec[8] ^= 1;
        let e = rx.open(&mut rec[..n]).unwrap_err();
        assert_eq!(e, RecordError::BadRecordMac);
        let mut out = [0u8; ALERT_ROOM];
        assert_eq!(rx.seal_fatal_alert(&mut out, &e), Ok(ALERT_ROOM));
        // Our alert opens at the other end as what it is.
        assert_eq!(tx.open(&mut out), Err(RecordError::Alert(BAD_RECORD_MAC)));
        assert_eq!(rx.seal_fatal_alert(&mut out, &e), Ok(0), "one alert");
        assert_eq!(rx.seal_data(&mut rec, b"more"), Err(RecordError::Failed));
        assert_eq!(rx.seal_close_notify(&mut rec), Err(RecordError::Failed));
    }

    #[test]
    fn a_key_update_must_end_its_record_and_be_well_formed() {
        let (mut tx, mut rx) = ends();
        let two = [KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE, 0, 0, 1, 0, HANDSHAKE];
        assert_eq!(send(&mut tx, &mut rx, &two), Err(RecordError::KeyUpdateNotLast));
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[KEY_UPDATE, 0, 0, 1, 2, HANDSHAKE]), Err(RecordError::BadKeyUpdate));
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[HANDSHAKE, 0]), Ok(Opened::Control), "empty: counted, nothing else");
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[20, 0, 0, 0, HANDSHAKE]), Err(RecordError::UnexpectedHandshake(20)));
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[4, 1, 0, 0, HANDSHAKE]), Err(RecordError::HandshakeTooLarge));
        // A message of the largest size is buffered until complete (and then refused, being a
        // ticket sent to a server).
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[4, 0, 0xff, 0xff, HANDSHAKE]), Ok(Opened::Control));
        for _ in 0..3 {
            assert_eq!(send(&mut tx, &mut rx, &[&[7u8; MAX_PLAIN][..], &[HANDSHAKE]].concat()), Ok(Opened::Control));
        }
        let rest = 0xffff - 3 * MAX_PLAIN;
        let e = send(&mut tx, &mut rx, &[&vec![7u8; rest][..], &[HANDSHAKE]].concat());
        assert_eq!(e, Err(RecordError::UnexpectedHandshake(NEW_SESSION_TICKET)));
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[0, 0, 0]), Err(RecordError::NoContentType));
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[1, 20]), Err(RecordError::UnexpectedType(20)));
    }
}
