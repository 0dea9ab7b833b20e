//! Noise handshake (sans-IO) binding a connection to an invite or resume secret.
//!
//! Pattern `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, guest = initiator:
//!
//! ```text
//! guest -> host : ClientHello = [ver][kind][id:16][noise: psk, e + AEAD(empty)]
//! host  -> guest: ServerHello = [ver][0x01][noise: e, ee + AEAD(empty)]   (accept)
//!                             | [ver][0x02][reason]                        (reject, pre-auth)
//! guest -> host : first transport frame (Join/Resume)  -> key confirmation
//! ```
//!
//! The PSK is mixed in before the first message, so the host learns from message 1
//! that the guest holds the key, and the guest learns from message 2 that the host
//! does (mutual authentication by the shared secret). `ee` gives forward secrecy: a
//! link that leaks after the session cannot decrypt a capture of it. Message 1 alone
//! can be replayed, so the host consumes the invite only after the guest's first
//! transport frame authenticates (key confirmation). The prologue binds the protocol
//! version, room id, hello kind and id, so none of them can be swapped in flight.

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::frame::FrameCipher;
use crate::link::{RoomId, INVITE_ID_LEN};

/// Wire protocol version carried in both hellos.
pub const PROTOCOL_VERSION: u8 = 1;
/// Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Largest hello either side will parse.
pub const MAX_HELLO_LEN: usize = 256;

/// What the guest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloKind {
    /// Redeem an invite; id is the invite id, PSK is the invite key.
    Join = 1,
    /// Reconnect; id is the resume id, PSK is the resumption secret.
    Resume = 2,
}

/// Pre-authentication rejection reasons (sent in clear; they reveal nothing secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Unknown = 1,
    Expired = 2,
    AlreadyUsed = 3,
    Version = 4,
    Busy = 5,
    Closed = 6,
    /// The hello did not authenticate under the invite/resume key (the invite stays usable).
    BadKey = 7,
}

impl RejectReason {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Unknown,
            2 => Self::Expired,
            3 => Self::AlreadyUsed,
            4 => Self::Version,
            5 => Self::Busy,
            6 => Self::Closed,
            7 => Self::BadKey,
            _ => return None,
        })
    }
}

/// Errors while running the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake failed: the link key does not match (wrong or altered link) or the message was tampered with")]
    Auth,
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    #[error("host speaks agent protocol {host}, this side {ours}: upgrade rustunnel on the older side")]
    Version { host: u8, ours: u8 },
    #[error("host rejected the connection: {0:?}")]
    Rejected(RejectReason),
    #[error("noise setup failed: {0}")]
    Setup(String),
}

/// Guest's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u8,
    pub kind: HelloKind,
    pub id: [u8; INVITE_ID_LEN],
    pub noise: Vec<u8>,
}

impl ClientHello {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + INVITE_ID_LEN + self.noise.len());
        v.push(self.version);
        v.push(self.kind as u8);
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.noise);
        v
    }

    /// Parses without trusting anything; version is checked by the caller so it can
    /// answer with a precise rejection.
    pub fn decode(b: &[u8]) -> Result<Self, HandshakeError> {
        if b.len() > MAX_HELLO_LEN {
            return Err(HandshakeError::Malformed("hello too long"));
        }
        if b.len() < 2 + INVITE_ID_LEN + 32 + 16 {
            return Err(HandshakeError::Malformed("hello too short"));
        }
        let kind = match b[1] {
            1 => HelloKind::Join,
            2 => HelloKind::Resume,
            _ => return Err(HandshakeError::Malformed("unknown hello kind")),
        };
        let mut id = [0u8; INVITE_ID_LEN];
        id.copy_from_slice(&b[2..2 + INVITE_ID_LEN]);
        Ok(ClientHello { version: b[0], kind, id, noise: b[2 + INVITE_ID_LEN..].to_vec() })
    }
}

/// Encodes a pre-auth rejection.
pub fn encode_reject(reason: RejectReason) -> Vec<u8> {
    vec![PROTOCOL_VERSION, 2, reason as u8]
}

/// The result of a completed Noise handshake.
pub struct Established {
    pub cipher: FrameCipher,
    /// Noise handshake hash `h`: unique per session, identical on both sides.
    pub handshake_hash: [u8; 32],
}

impl Established {
    /// Short code both humans can compare out of band.
    pub fn verification_code(&self) -> String {
        verification_code(&self.handshake_hash)
    }
}

/// 6-digit code derived from the handshake hash, formatted `123-456`.
pub fn verification_code(h: &[u8; 32]) -> String {
    let d = Sha256::new().chain_update(b"rustunnel-agent verification code v1").chain_update(h).finalize();
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000;
    format!("{:03}-{:03}", n / 1000, n % 1000)
}

fn prologue(room: &RoomId, kind: HelloKind, id: &[u8; INVITE_ID_LEN]) -> Vec<u8> {
    let mut p = b"rustunnel-agent\0".to_vec();
    p.push(PROTOCOL_VERSION);
    p.push(kind as u8);
    p.extend_from_slice(id);
    p.extend_from_slice(room.as_str().as_bytes());
    p
}

fn builder_err(e: snow::Error) -> HandshakeError {
    HandshakeError::Setup(e.to_string())
}

fn params() -> Result<snow::params::NoiseParams, HandshakeError> {
    NOISE_PARAMS.parse().map_err(|e: snow::Error| HandshakeError::Setup(e.to_string()))
}

fn finish(hs: snow::HandshakeState) -> Result<Established, HandshakeError> {
    let mut h = [0u8; 32];
    let raw = hs.get_handshake_hash();
    if raw.len() != 32 {
        return Err(HandshakeError::Setup("unexpected hash length".into()));
    }
    h.copy_from_slice(raw);
    let t = hs.into_transport_mode().map_err(builder_err)?;
    Ok(Established { cipher: FrameCipher::new(t), handshake_hash: h })
}

/// Guest side: waiting for the host's reply.
pub struct Initiator {
    hs: snow::HandshakeState,
}

impl Initiator {
    /// Builds the ClientHello bytes to send.
    pub fn start(
        room: &RoomId,
        kind: HelloKind,
        id: [u8; INVITE_ID_LEN],
        psk: &[u8; 32],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let pro = prologue(room, kind, &id);
        let mut hs = snow::Builder::new(params()?)
            .prologue(&pro)
            .map_err(builder_err)?
            .psk(0, psk)
            .map_err(builder_err)?
            .build_initiator()
            .map_err(builder_err)?;
        let mut buf = [0u8; 128];
        let n = hs.write_message(&[], &mut buf).map_err(builder_err)?;
        let hello = ClientHello { version: PROTOCOL_VERSION, kind, id, noise: buf[..n].to_vec() };
        Ok((Initiator { hs }, hello.encode()))
    }

    /// Processes the ServerHello; success proves the host holds the same secret.
    pub fn finish(mut self, reply: &[u8]) -> Result<Established, HandshakeError> {
        if reply.len() < 3 || reply.len() > MAX_HELLO_LEN {
            return Err(HandshakeError::Malformed("bad server hello length"));
        }
        if reply[0] != PROTOCOL_VERSION {
            return Err(HandshakeError::Version { host: reply[0], ours: PROTOCOL_VERSION });
        }
        match reply[1] {
            1 => {}
            2 => {
                return Err(match RejectReason::from_u8(reply[2]) {
                    Some(r) => HandshakeError::Rejected(r),
                    None => HandshakeError::Malformed("unknown reject reason"),
                })
            }
            _ => return Err(HandshakeError::Malformed("unknown server hello kind")),
        }
        let mut out = [0u8; 128];
        self.hs.read_message(&reply[2..], &mut out).map_err(|_| HandshakeError::Auth)?;
        finish(self.hs)
    }
}

/// Host side: answer a ClientHello with the given PSK. Failure means the guest does
/// not hold the key (or the hello was altered); the caller must not consume anything.
pub fn respond(room: &RoomId, hello: &ClientHello, psk: &[u8; 32]) -> Result<(Established, Vec<u8>), HandshakeError> {
    if hello.version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { host: PROTOCOL_VERSION, ours: hello.version });
    }
    let pro = prologue(room, hello.kind, &hello.id);
    let mut hs = snow::Builder::new(params()?)
        .prologue(&pro)
        .map_err(builder_err)?
        .psk(0, psk)
        .map_err(builder_err)?
        .build_responder()
        .map_err(builder_err)?;
    let mut scratch = [0u8; 128];
    hs.read_message(&hello.noise, &mut scratch).map_err(|_| HandshakeError::Auth)?;
    let mut buf = [0u8; 128];
    let n = hs.write_message(&[], &mut buf).map_err(builder_err)?;
    scratch.zeroize();
    let mut reply = vec![PROTOCOL_VERSION, 1];
    reply.extend_from_slice(&buf[..n]);
    Ok((finish(hs)?, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::GuestMsg;

    fn room() -> RoomId {
        RoomId::parse("room1234abcd").unwrap()
    }

    #[test]
    fn matching_keys_agree_on_code_and_traffic() {
        let (ini, hello) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        let parsed = ClientHello::decode(&hello).unwrap();
        let (mut host, reply) = respond(&room(), &parsed, &[5; 32]).unwrap();
        let mut guest = ini.finish(&reply).unwrap();
        assert_eq!(host.handshake_hash, guest.handshake_hash);
        assert_eq!(host.verification_code(), guest.verification_code());
        assert_eq!(guest.verification_code().len(), 7);
        let wire = guest.cipher.seal(&GuestMsg::Join { name: "bob".into() }, &[]).unwrap();
        let (m, _): (GuestMsg, _) = host.cipher.open(&wire).unwrap();
        assert_eq!(m, GuestMsg::Join { name: "bob".into() });
    }

    #[test]
    fn wrong_key_fails_on_host() {
        let (_ini, hello) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        let parsed = ClientHello::decode(&hello).unwrap();
        assert_eq!(respond(&room(), &parsed, &[6; 32]).err(), Some(HandshakeError::Auth));
    }

    #[test]
    fn host_without_key_cannot_impersonate() {
        // A relay that answers with its own Noise reply (different PSK) is detected by the guest.
        let (ini, hello) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        let (fake_ini, _) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[9; 32]).unwrap();
        drop(fake_ini);
        let parsed = ClientHello::decode(&hello).unwrap();
        // Responder with a wrong PSK cannot even read msg1; emulate a forged reply instead.
        assert!(respond(&room(), &parsed, &[9; 32]).is_err());
        let forged = [vec![PROTOCOL_VERSION, 1], vec![0x42; 48]].concat();
        assert_eq!(ini.finish(&forged).err(), Some(HandshakeError::Auth));
    }

    #[test]
    fn swapped_room_or_id_fails() {
        let (_i, hello) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        let mut parsed = ClientHello::decode(&hello).unwrap();
        let other = RoomId::parse("otherroom123").unwrap();
        assert!(respond(&other, &parsed, &[5; 32]).is_err());
        parsed.id[0] ^= 1;
        assert!(respond(&room(), &parsed, &[5; 32]).is_err());
    }

    #[test]
    fn rejects_and_versions() {
        let (ini, _) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        assert_eq!(
            ini.finish(&encode_reject(RejectReason::Expired)).err(),
            Some(HandshakeError::Rejected(RejectReason::Expired))
        );
        let (ini, _) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).unwrap();
        assert!(matches!(ini.finish(&[9, 1, 0]).err(), Some(HandshakeError::Version { host: 9, .. })));
        assert!(ClientHello::decode(&[1, 2, 3]).is_err());
        assert!(ClientHello::decode(&[0u8; 1000]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn hello_decode_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(h) = ClientHello::decode(&b) {
                let _ = respond(&room(), &h, &[5; 32]);
            }
            if let Ok((ini, _)) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]) {
                proptest::prop_assert!(ini.finish(&b).is_err());
            }
        }
    }
}
