//! Encrypted application frames (sans-IO) and the direction-specific messages they carry.
//!
//! One WebSocket binary message = one frame = one or more Noise transport messages
//! (each at most 65535 bytes, 16-byte Poly1305 tag). The decrypted plaintext is:
//!
//! ```text
//! [counter: u64 BE][header_len: u32 BE][attach_len: u32 BE][header: JSON][attachment]
//! ```
//!
//! Noise uses an implicit per-direction nonce, so a replayed, reordered or dropped
//! frame fails authentication; the explicit counter and exact lengths additionally
//! catch a frame truncated on a chunk boundary. Any such failure is
//! [`FrameError::Tampering`] and poisons the cipher: the connection must be dropped
//! and nothing from it is shown as text. Everything (sender, seq, kind, text, goal,
//! names, roster, system events, file names and data) is inside the ciphertext.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::room::{Event, MemberInfo};

/// Largest Noise transport message.
pub const NOISE_MAX: usize = 65535;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
const CHUNK_PLAIN: usize = NOISE_MAX - TAG_LEN;
const HEADER_LEN: usize = 16;
/// Largest decrypted frame.
pub const MAX_FRAME_PLAINTEXT: usize = 512 * 1024;
/// Largest WebSocket message accepted after the handshake (checked before decrypting).
pub const MAX_WIRE_FRAME: usize = MAX_FRAME_PLAINTEXT.div_ceil(CHUNK_PLAIN) * NOISE_MAX;
/// File data per chunk frame.
pub const FILE_CHUNK: usize = 128 * 1024;

/// Frame errors. `Tampering` is deliberately distinct: it means the bytes were
/// altered, replayed, reordered or cut, not that the peer said something odd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("tampering detected: a frame failed authentication (altered, replayed, reordered or truncated); connection dropped")]
    Tampering,
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("peer sent an authenticated but invalid message: {0}")]
    Malformed(String),
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

/// Per-connection transport cipher.
pub struct FrameCipher {
    t: snow::TransportState,
    send_ctr: u64,
    recv_ctr: u64,
    poisoned: bool,
}

impl FrameCipher {
    pub(crate) fn new(t: snow::TransportState) -> Self {
        FrameCipher { t, send_ctr: 0, recv_ctr: 0, poisoned: false }
    }

    /// Encrypts `msg` plus an optional binary attachment into one wire frame.
    pub fn seal<M: Serialize>(&mut self, msg: &M, attachment: &[u8]) -> Result<Vec<u8>, FrameError> {
        let header = serde_json::to_vec(msg).map_err(|e| FrameError::Encrypt(e.to_string()))?;
        let total = HEADER_LEN + header.len() + attachment.len();
        if total > MAX_FRAME_PLAINTEXT {
            return Err(FrameError::TooLarge { len: total, max: MAX_FRAME_PLAINTEXT });
        }
        let mut plain = Vec::with_capacity(total);
        plain.extend_from_slice(&self.send_ctr.to_be_bytes());
        plain.extend_from_slice(&(header.len() as u32).to_be_bytes());
        plain.extend_from_slice(&(attachment.len() as u32).to_be_bytes());
        plain.extend_from_slice(&header);
        plain.extend_from_slice(attachment);
        let mut out = vec![0u8; plain.len().div_ceil(CHUNK_PLAIN) * NOISE_MAX];
        let mut w = 0;
        for chunk in plain.chunks(CHUNK_PLAIN) {
            let n = self.t.write_message(chunk, &mut out[w..]).map_err(|e| FrameError::Encrypt(e.to_string()))?;
            w += n;
        }
        out.truncate(w);
        self.send_ctr += 1;
        Ok(out)
    }

    /// Decrypts and authenticates one wire frame. Never panics on any input.
    pub fn open<M: DeserializeOwned>(&mut self, wire: &[u8]) -> Result<(M, Vec<u8>), FrameError> {
        if self.poisoned {
            return Err(FrameError::Tampering);
        }
        if wire.len() > MAX_WIRE_FRAME {
            self.poisoned = true;
            return Err(FrameError::TooLarge { len: wire.len(), max: MAX_WIRE_FRAME });
        }
        match self.open_inner(wire) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    fn open_inner<M: DeserializeOwned>(&mut self, wire: &[u8]) -> Result<(M, Vec<u8>), FrameError> {
        let mut plain = vec![0u8; wire.len()];
        let mut w = 0;
        for chunk in wire.chunks(NOISE_MAX) {
            if chunk.len() < TAG_LEN {
                return Err(FrameError::Tampering);
            }
            let n = self.t.read_message(chunk, &mut plain[w..]).map_err(|_| FrameError::Tampering)?;
            w += n;
        }
        plain.truncate(w);
        self.decode_plain(&plain)
    }

    /// The part of [`FrameCipher::open`] after decryption: checks the counter and lengths of a
    /// decrypted frame and decodes it. Public for the fuzz targets, which reach it with
    /// plaintexts only a peer holding the key could send.
    #[doc(hidden)]
    pub fn decode_plain<M: DeserializeOwned>(&mut self, plain: &[u8]) -> Result<(M, Vec<u8>), FrameError> {
        if plain.len() < HEADER_LEN {
            return Err(FrameError::Tampering);
        }
        let ctr = u64::from_be_bytes(arr8(&plain[0..8]));
        let hlen = u32::from_be_bytes(arr4(&plain[8..12])) as usize;
        let alen = u32::from_be_bytes(arr4(&plain[12..16])) as usize;
        if ctr != self.recv_ctr || HEADER_LEN + hlen + alen != plain.len() {
            return Err(FrameError::Tampering);
        }
        self.recv_ctr += 1;
        let msg = serde_json::from_slice(&plain[HEADER_LEN..HEADER_LEN + hlen])
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        let attachment = plain[HEADER_LEN + hlen..].to_vec();
        Ok((msg, attachment))
    }
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}
fn arr4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    a
}

/// Guest -> host. There is no sender, seq or roster field: the host derives those
/// from the authenticated connection, so a guest cannot forge them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase", deny_unknown_fields)]
pub enum GuestMsg {
    /// First frame after a Join handshake (key confirmation).
    Join {
        name: String,
    },
    /// First frame after a Resume handshake.
    #[serde(rename_all = "camelCase")]
    Resume {
        last_seq: u64,
    },
    Say {
        req: u64,
        text: String,
    },
    /// Announces an upload; `size` is checked against caps before any allocation.
    FileBegin {
        req: u64,
        name: String,
        size: u64,
        sha256: String,
    },
    /// Attachment holds the bytes at `offset`.
    FileChunk {
        req: u64,
        offset: u64,
    },
    FileEnd {
        req: u64,
    },
    /// Ask the host to stream an artifact.
    #[serde(rename_all = "camelCase")]
    Fetch {
        req: u64,
        artifact_id: String,
    },
    /// Member leaves for good (the room stays open).
    Leave,
}

/// Outcome code in a `Nack`, so the guest can map it to a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NackCode {
    TooLarge,
    RateLimited,
    Closed,
    NotFound,
    Invalid,
    QuotaExceeded,
}

/// Host -> guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase", deny_unknown_fields)]
pub enum HostMsg {
    #[serde(rename_all = "camelCase")]
    Welcome {
        member_id: u32,
        goal: String,
        roster: Vec<MemberInfo>,
        last_seq: u64,
        /// Opaque id to present when resuming (hex).
        resume_id: String,
        /// Random seed mixed with the handshake hash into the resumption secret (hex).
        resume_seed: String,
        idle_timeout_secs: u64,
    },
    /// Post-handshake refusal (e.g. invite won by someone else, room full).
    Rejected {
        reason: String,
    },
    /// A transcript entry.
    Event {
        event: Event,
    },
    Ack {
        req: u64,
        seq: Option<u64>,
    },
    Nack {
        req: u64,
        code: NackCode,
        message: String,
    },
    FileHeader {
        req: u64,
        size: u64,
        sha256: String,
    },
    /// Attachment holds the bytes at `offset`.
    FileData {
        req: u64,
        offset: u64,
    },
    FileDone {
        req: u64,
    },
    /// Room is over; the final system event was sent just before.
    Closed {
        summary: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{respond, ClientHello, HelloKind, Initiator};
    use crate::link::RoomId;
    use proptest::prelude::*;

    pub(crate) fn pair() -> (FrameCipher, FrameCipher) {
        let room = RoomId::parse("room1234abcd").unwrap();
        let (ini, hello) = Initiator::start(&room, HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        let (host, reply) = respond(&room, &ClientHello::decode(&hello).unwrap(), &[5; 32]).unwrap();
        (ini.finish(&reply).unwrap().cipher, host.cipher)
    }

    fn say(i: u64) -> GuestMsg {
        GuestMsg::Say { req: i, text: format!("secret message {i}") }
    }

    #[test]
    fn round_trip_large_frame_with_attachment() {
        let (mut g, mut h) = pair();
        let data: Vec<u8> = (0..FILE_CHUNK).map(|i| i as u8).collect();
        let wire = g.seal(&GuestMsg::FileChunk { req: 1, offset: 0 }, &data).unwrap();
        assert!(wire.len() > NOISE_MAX);
        let (m, att): (GuestMsg, _) = h.open(&wire).unwrap();
        assert_eq!(m, GuestMsg::FileChunk { req: 1, offset: 0 });
        assert_eq!(att, data);
    }

    #[test]
    fn replay_reorder_truncate_flip_are_tampering() {
        let (mut g, mut h) = pair();
        let a = g.seal(&say(1), &[]).unwrap();
        let b = g.seal(&say(2), &[]).unwrap();
        // Replay.
        let (_, _) = h.open::<GuestMsg>(&a).unwrap();
        assert_eq!(h.open::<GuestMsg>(&a).unwrap_err(), FrameError::Tampering);
        // Poisoned afterwards even for the genuine next frame.
        assert_eq!(h.open::<GuestMsg>(&b).unwrap_err(), FrameError::Tampering);

        let (mut g, mut h) = pair();
        let a = g.seal(&say(1), &[]).unwrap();
        let b = g.seal(&say(2), &[]).unwrap();
        let _ = a;
        assert_eq!(h.open::<GuestMsg>(&b).unwrap_err(), FrameError::Tampering);

        // Truncation on a chunk boundary of a multi-chunk frame.
        let (mut g, mut h) = pair();
        let big = g.seal(&GuestMsg::FileChunk { req: 1, offset: 0 }, &vec![7u8; 100_000]).unwrap();
        assert_eq!(h.open::<GuestMsg>(&big[..NOISE_MAX]).unwrap_err(), FrameError::Tampering);
    }

    #[test]
    fn oversize_rejected_before_decrypting() {
        let (_g, mut h) = pair();
        let e = h.open::<GuestMsg>(&vec![0u8; MAX_WIRE_FRAME + 1]).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }));
        let (mut g, _) = pair();
        assert!(matches!(g.seal(&say(1), &vec![0u8; MAX_FRAME_PLAINTEXT]), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn wrong_direction_or_unknown_message_is_malformed_not_text() {
        let (mut g, mut h) = pair();
        // A guest trying to send a host-only Event (forged sender/seq) cannot be decoded.
        let forged = HostMsg::Closed { summary: None };
        let wire = g.seal(&forged, &[]).unwrap();
        assert!(matches!(h.open::<GuestMsg>(&wire), Err(FrameError::Malformed(_))));
    }

    /// A relay that forwards host->guest frames but can misbehave.
    struct MaliciousRelay {
        seen: Vec<Vec<u8>>,
    }

    impl MaliciousRelay {
        fn replay(&self) -> Vec<u8> {
            self.seen[0].clone()
        }
        fn flip(&self, i: usize, idx: usize) -> Vec<u8> {
            let mut f = self.seen[i].clone();
            let n = f.len();
            f[idx % n] ^= 0x80;
            f
        }
        fn truncate(&self, i: usize) -> Vec<u8> {
            let f = &self.seen[i];
            f[..f.len() - 1].to_vec()
        }
    }

    #[test]
    fn malicious_relay_is_detected_every_time() {
        type Attack = fn(&MaliciousRelay) -> Vec<u8>;
        let attacks: [(&str, Attack); 5] = [
            ("replay", |r| r.replay()),
            ("reorder", |r| r.seen[2].clone()),
            ("truncate", |r| r.truncate(1)),
            ("flip-header", |r| r.flip(1, 3)),
            ("flip-tail", |r| r.flip(1, usize::MAX)),
        ];
        for (name, attack) in attacks {
            let (mut guest, mut host) = pair();
            let mut relay = MaliciousRelay { seen: Vec::new() };
            for i in 0..3 {
                let ev = HostMsg::Closed { summary: Some(format!("secret {i}")) };
                relay.seen.push(host.seal(&ev, &[]).unwrap());
            }
            let _ = guest.open::<HostMsg>(&relay.seen[0]).unwrap();
            let forged = attack(&relay);
            assert_eq!(guest.open::<HostMsg>(&forged).unwrap_err(), FrameError::Tampering, "{name}");
            // Once tampering is seen the connection's cipher stays dead.
            assert!(guest.open::<HostMsg>(&relay.seen[1]).is_err(), "{name}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let (_g, mut h) = pair();
            prop_assert!(h.open::<GuestMsg>(&b).is_err());
        }

        #[test]
        fn any_mutation_is_tampering(idx in any::<usize>(), bit in 0u8..8, cut in any::<usize>(), mode in 0u8..3) {
            let (mut g, mut h) = pair();
            let wire = g.seal(&say(42), b"attach").unwrap();
            let bad = match mode {
                0 => { let mut w = wire.clone(); let i = idx % w.len(); w[i] ^= 1 << bit; w }
                1 => wire[..cut % wire.len()].to_vec(),
                _ => { let mut w = wire.clone(); w.push(bit); w }
            };
            prop_assert_eq!(h.open::<GuestMsg>(&bad).unwrap_err(), FrameError::Tampering);
        }
    }
}
