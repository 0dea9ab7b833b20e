//! Sealing and opening records in place for both directions of a connection.
use std::ops::Range;

use ring::aead;
use rustls::kernel::KernelConnection;
use rustls::ExtractedSecrets;

use super::error::RecordError;
use super::keys::{Kernel, KeySchedule, Keys, Secrets, TicketFn, TrafficKey};
use super::wire::*;

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
