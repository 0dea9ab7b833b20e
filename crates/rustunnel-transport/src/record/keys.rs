//! Where each epoch's traffic keys come from (rustls after a real handshake, or known
//! secrets), and one direction's key with its record sequence.
use ring::aead;
use rustls::kernel::KernelConnection;
use rustls::ConnectionTrafficSecrets;

use super::error::RecordError;
use super::wire::NEW_SESSION_TICKET;

/// One epoch's traffic key and IV, as a [`KeySchedule`] hands them over.
pub struct TrafficKey {
    pub(super) key: aead::LessSafeKey,
    pub(super) iv: [u8; aead::NONCE_LEN],
}

impl TrafficKey {
    /// A key of `alg` (AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305) and its IV.
    pub fn new(alg: &'static aead::Algorithm, key: &[u8], iv: &[u8]) -> Result<TrafficKey, RecordError> {
        let key = aead::UnboundKey::new(alg, key).map_err(|_| RecordError::UnsupportedSuite)?;
        let iv = iv.try_into().map_err(|_| RecordError::UnsupportedSuite)?;
        Ok(TrafficKey { key: aead::LessSafeKey::new(key), iv })
    }

    pub(super) fn from_rustls(secrets: ConnectionTrafficSecrets) -> Result<TrafficKey, RecordError> {
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
    pub(super) kernel: KernelConnection<D>,
    pub(super) ticket: TicketFn<D>,
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
    pub(super) alg: &'static aead::Algorithm,
    pub(super) hkdf: ring::hkdf::Algorithm,
    pub(super) tx: Vec<u8>,
    pub(super) rx: Vec<u8>,
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

    pub(super) fn key(&self, secret: &[u8]) -> Result<(u64, TrafficKey), RecordError> {
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
pub(super) struct Keys {
    pub(super) key: aead::LessSafeKey,
    pub(super) iv: [u8; aead::NONCE_LEN],
    pub(super) seq: u64,
}

impl Keys {
    pub(super) fn new((seq, k): (u64, TrafficKey)) -> Keys {
        Keys { key: k.key, iv: k.iv, seq }
    }

    /// The nonce of the next record; advances the sequence.
    pub(super) fn next_nonce(&mut self) -> Result<aead::Nonce, RecordError> {
        let mut nonce = self.iv;
        for (b, s) in nonce[aead::NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        Ok(aead::Nonce::assume_unique_for_key(nonce))
    }
}
