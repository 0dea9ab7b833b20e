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
//!   zero padding ([`Records::open`] strips the padding, refuses a record with no type);
//! - only `application_data` outer records after the handshake, lengths bounded by 2^14 + 256
//!   ciphertext and 2^14 plaintext ([`record_len`]);
//! - any record that fails to open ends the connection (no retry, no partial plaintext);
//! - post-handshake messages: `key_update` (follow it, answer a request with our own),
//!   `new_session_ticket` (to rustls, clients only); anything else is an error; a key update
//!   must end its record;
//! - alerts: `close_notify` is the end of the peer's stream; `user_canceled` is ignored; any
//!   other alert ends the connection with its description;
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
const MAX_CIPHER: usize = MAX_PLAIN + 256;
/// Room one record of `n` plaintext bytes takes once sealed.
pub const fn sealed_len(n: usize) -> usize {
    HEADER + n + 1 + TAG
}
/// Room a key update record takes.
pub const KEY_UPDATE_ROOM: usize = sealed_len(5);

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
/// Post-handshake message bytes kept while a message is incomplete (a session ticket is well
/// under this).
const MAX_HANDSHAKE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("TLS record type {0} after the handshake")]
    UnexpectedType(u8),
    #[error("TLS record with legacy version {0:#06x}")]
    BadVersion(u16),
    #[error("TLS record of {0} bytes exceeds the limit")]
    Overflow(usize),
    #[error("TLS record too short to hold a tag")]
    Short,
    #[error("TLS record failed to decrypt (bad_record_mac)")]
    BadRecordMac,
    #[error("TLS record without a content type")]
    NoContentType,
    #[error("TLS peer sent alert {0}")]
    Alert(u8),
    #[error("malformed TLS alert")]
    BadAlert,
    #[error("unexpected TLS handshake message {0} after the handshake")]
    UnexpectedHandshake(u8),
    #[error("malformed TLS key update")]
    BadKeyUpdate,
    #[error("TLS post-handshake message too large")]
    HandshakeTooLarge,
    #[error("empty TLS handshake record")]
    EmptyHandshake,
    #[error("TLS sequence number exhausted")]
    SequenceExhausted,
    #[error("unsupported TLS cipher suite for record protection")]
    UnsupportedSuite,
    #[error("TLS key schedule: {0}")]
    Rustls(#[from] rustls::Error),
}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One direction's key, IV and record sequence number.
struct Keys {
    key: aead::LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Keys, RecordError> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let key = aead::UnboundKey::new(alg, key.as_ref()).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv.as_ref().try_into().map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(Keys { key: aead::LessSafeKey::new(key), iv, seq })
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

/// Handles a `new_session_ticket` payload: rustls stores it on a client; a server refuses it.
pub type TicketFn<D> = fn(&mut KernelConnection<D>, &[u8]) -> Result<(), rustls::Error>;

/// Both directions of an established TLS 1.3 connection.
pub struct Records<D> {
    kernel: KernelConnection<D>,
    ticket: TicketFn<D>,
    tx: Keys,
    rx: Keys,
    /// Records sealed under one key before it is replaced.
    tx_limit: u64,
    /// A complete post-handshake message is assembled here when it spans records.
    handshake: Vec<u8>,
    /// The peer asked for a key update; ours goes before our next record.
    reply_key_update: bool,
    /// Key updates followed (the peer's) and sent (ours).
    updates: (u32, u32),
}

impl<D> Records<D> {
    /// Takes over from rustls after the handshake. Only TLS 1.3 connections qualify.
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<D>,
        ticket: TicketFn<D>,
    ) -> Result<Records<D>, RecordError> {
        let suite = kernel.negotiated_cipher_suite().tls13().ok_or(RecordError::UnsupportedSuite)?;
        // Well below the limit, so a record in flight never crosses it.
        let tx_limit = suite.common.confidentiality_limit.saturating_sub(1 << 16).max(1);
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        Ok(Records {
            kernel,
            ticket,
            tx: Keys::new(tx_seq, tx)?,
            rx: Keys::new(rx_seq, rx)?,
            tx_limit,
            handshake: Vec::new(),
            reply_key_update: false,
            updates: (0, 0),
        })
    }

    /// Key updates followed (the peer's) and sent (ours) so far.
    pub fn key_updates(&self) -> (u32, u32) {
        self.updates
    }

    /// Lowers the number of records sealed under one key (tests exercise key updates with it).
    #[cfg(test)]
    pub(crate) fn set_key_update_every(&mut self, records: u64) {
        self.tx_limit = records;
    }

    /// Seals `data` (at most [`MAX_PLAIN`] bytes) as one application data record at the start of
    /// `out`, preceded by a key update record when one is due. `out` needs
    /// `sealed_len(data.len()) + KEY_UPDATE_ROOM` bytes. Returns the bytes written.
    pub fn seal_data(&mut self, out: &mut [u8], data: &[u8]) -> Result<usize, RecordError> {
        debug_assert!(data.len() <= MAX_PLAIN);
        let mut at = 0;
        if self.key_update_due(1) {
            at = self.key_update(out, false)?;
        }
        let body = &mut out[at + HEADER..at + HEADER + data.len()];
        body.copy_from_slice(data);
        Ok(at + self.seal(&mut out[at..], data.len(), APPLICATION_DATA)?)
    }

    /// Seals the `n` (at most [`MAX_PLAIN`]) bytes already at `out[HEADER..]` in place as one
    /// application data record; `out` needs `sealed_len(n)` bytes. Check
    /// [`Records::key_update_due`] first.
    pub fn seal_in_place(&mut self, out: &mut [u8], n: usize) -> Result<usize, RecordError> {
        debug_assert!(n <= MAX_PLAIN);
        self.seal(out, n, APPLICATION_DATA)
    }

    /// Whether a key update must go out before the next `records` records: the peer asked for
    /// one, or they would reach the limit of our current key.
    pub fn key_update_due(&self, records: u64) -> bool {
        self.reply_key_update || self.tx.seq.saturating_add(records) >= self.tx_limit
    }

    /// A key update that is due without data to send (the peer asked for one): written to
    /// `out` (room [`KEY_UPDATE_ROOM`]) if due. Returns the bytes written.
    pub fn seal_pending(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        if self.reply_key_update {
            return self.key_update(out, false);
        }
        Ok(0)
    }

    /// Records one key seals at most.
    pub fn records_per_key(&self) -> usize {
        usize::try_from(self.tx_limit).unwrap_or(usize::MAX)
    }

    /// Forgets the peer's request for our key update (we have closed our side).
    pub fn cancel_pending(&mut self) {
        self.reply_key_update = false;
    }

    /// Whether a key update must go out before anything else.
    pub fn has_pending(&self) -> bool {
        self.reply_key_update
    }

    /// Seals our `close_notify` alert into `out` (room `sealed_len(2)`).
    pub fn seal_close_notify(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        out[HEADER..HEADER + 2].copy_from_slice(&[1, CLOSE_NOTIFY]);
        self.seal(out, 2, ALERT)
    }

    /// Sends a key update (asking the peer for one too when `request`) and switches our sending
    /// key: everything sealed after it uses the new one.
    pub fn key_update(&mut self, out: &mut [u8], request: bool) -> Result<usize, RecordError> {
        out[HEADER..HEADER + 5].copy_from_slice(&[KEY_UPDATE, 0, 0, 1, u8::from(request)]);
        let n = self.seal(out, 5, HANDSHAKE)?;
        let (seq, secrets) = self.kernel.update_tx_secret()?;
        self.tx = Keys::new(seq, secrets)?;
        self.reply_key_update = false;
        self.updates.1 = self.updates.1.saturating_add(1);
        Ok(n)
    }

    /// Seals the `n` content bytes at `out[HEADER..]` in place as a record of type `typ`.
    fn seal(&mut self, out: &mut [u8], n: usize, typ: u8) -> Result<usize, RecordError> {
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

    /// Opens the whole record `rec` (its length from [`record_len`]) in place.
    pub fn open(&mut self, rec: &mut [u8]) -> Result<Opened, RecordError> {
        let header: [u8; HEADER] = rec[..HEADER].try_into().map_err(|_| RecordError::Short)?;
        let nonce = self.rx.next_nonce()?;
        let plain = self
            .rx
            .key
            .open_in_place(nonce, aead::Aad::from(header), &mut rec[HEADER..])
            .map_err(|_| RecordError::BadRecordMac)?;
        // Inner plaintext: content, type, zero padding.
        let end = plain.iter().rposition(|&b| b != 0).ok_or(RecordError::NoContentType)?;
        let typ = plain[end];
        if end > MAX_PLAIN {
            return Err(RecordError::Overflow(end));
        }
        match typ {
            APPLICATION_DATA => Ok(Opened::Data(HEADER..HEADER + end)),
            ALERT => match plain[..end] {
                [_, CLOSE_NOTIFY] => Ok(Opened::Closed),
                [_, USER_CANCELED] => Ok(Opened::Control),
                [_, d] => Err(RecordError::Alert(d)),
                _ => Err(RecordError::BadAlert),
            },
            HANDSHAKE if end == 0 => Err(RecordError::EmptyHandshake),
            HANDSHAKE => {
                self.handshake_bytes(&plain[..end])?;
                Ok(Opened::Control)
            }
            t => Err(RecordError::UnexpectedType(t)),
        }
    }

    /// Adds one record's post-handshake bytes and acts on every complete message.
    fn handshake_bytes(&mut self, content: &[u8]) -> Result<(), RecordError> {
        if self.handshake.len() + content.len() > MAX_HANDSHAKE {
            return Err(RecordError::HandshakeTooLarge);
        }
        self.handshake.extend_from_slice(content);
        let mut at = 0;
        while let [typ, a, b, c, ..] = self.handshake[at..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE {
                return Err(RecordError::HandshakeTooLarge);
            }
            let Some(body) = self.handshake.get(at + 4..at + 4 + len) else { break };
            match typ {
                NEW_SESSION_TICKET => (self.ticket)(&mut self.kernel, body)?,
                KEY_UPDATE => {
                    // A key update must be the last message of its record (RFC 8446 5.1).
                    let request = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(RecordError::BadKeyUpdate),
                    };
                    if at + 4 + len != self.handshake.len() {
                        return Err(RecordError::BadKeyUpdate);
                    }
                    let (seq, secrets) = self.kernel.update_rx_secret()?;
                    self.rx = Keys::new(seq, secrets)?;
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
        assert!(Keys::new(0, secrets).is_err());
        let mut k = Keys {
            key: aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &[7u8; 16]).unwrap()),
            iv: [0xf0; aead::NONCE_LEN],
            seq: 0x0102,
        };
        let n = k.next_nonce().unwrap();
        let mut want = [0xf0; aead::NONCE_LEN];
        want[10] ^= 0x01;
        want[11] ^= 0x02;
        assert_eq!(n.as_ref(), &want);
        assert_eq!(k.seq, 0x0103);
        k.seq = u64::MAX;
        assert!(k.next_nonce().is_err(), "a sequence number never wraps");
    }
}
