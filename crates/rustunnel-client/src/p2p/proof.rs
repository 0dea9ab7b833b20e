//! The P2P secret proof (sans-IO): SPAKE2 between visitor (side A) and publisher (side B),
//! then key confirmation bound to the whole transcript (link id, service name, protocol, both
//! PAKE messages, both QUIC fingerprints, both candidate lists). The server relays these
//! messages and learns nothing about the secret; an eavesdropper cannot test guesses offline.
//!
//! From the shared key come: the confirmation MACs, the per-stream authenticator the
//! publisher checks before a single byte reaches its service, and the punch tag.
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

type HmacSha256 = Hmac<Sha256>;

const ID_VISITOR: &[u8] = b"rustunnel-p2p-visitor";
const ID_PUBLISHER: &[u8] = b"rustunnel-p2p-publisher";

/// Why a proof step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("malformed PAKE message")]
    Malformed,
    /// The other side's confirmation did not verify: different secrets (or tampering).
    #[error("wrong secret")]
    WrongSecret,
}

/// Our half of the exchange, before the other side's message arrives.
pub struct Pending {
    state: Spake2<Ed25519Group>,
    /// Our PAKE message, hex.
    pub msg: String,
}

/// Starts the exchange: `visitor` is side A, the publisher side B.
pub fn start(visitor: bool, secret: &str) -> Pending {
    let pw = Password::new(secret.as_bytes());
    let (a, b) = (Identity::new(ID_VISITOR), Identity::new(ID_PUBLISHER));
    let (state, msg) = if visitor { Spake2::start_a(&pw, &a, &b) } else { Spake2::start_b(&pw, &a, &b) };
    Pending { state, msg: hex::encode(msg) }
}

/// The shared session key after both PAKE messages.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

impl Pending {
    pub fn finish(self, theirs: &str) -> Result<LinkKey, ProofError> {
        let theirs = hex::decode(theirs).map_err(|_| ProofError::Malformed)?;
        let key = self.state.finish(&theirs).map_err(|_| ProofError::Malformed)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&Sha256::digest(&key));
        Ok(LinkKey(out))
    }
}

/// Everything both sides must agree on; hashed into the confirmations.
pub struct Transcript<'a> {
    pub link_id: &'a str,
    pub name: &'a str,
    pub protocol: &'a str,
    pub pake_visitor: &'a str,
    pub pake_publisher: &'a str,
    pub fp_visitor: &'a str,
    pub fp_publisher: &'a str,
    pub cand_visitor: &'a [String],
    pub cand_publisher: &'a [String],
}

impl Transcript<'_> {
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |s: &[u8]| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s);
        };
        part(b"rustunnel-p2p-v1");
        for s in [
            self.link_id,
            self.name,
            self.protocol,
            self.pake_visitor,
            self.pake_publisher,
            self.fp_visitor,
            self.fp_publisher,
        ] {
            part(s.as_bytes());
        }
        part(self.cand_visitor.join(",").as_bytes());
        part(self.cand_publisher.join(",").as_bytes());
        h.finalize().into()
    }
}

impl LinkKey {
    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = match <HmacSha256 as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        m.update(&(label.len() as u64).to_be_bytes());
        m.update(label);
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Confirmation sent by the visitor (`visitor` true) or the publisher.
    pub fn confirm(&self, visitor: bool, transcript: &[u8; 32]) -> String {
        hex::encode(self.mac(if visitor { b"confirm-visitor" } else { b"confirm-publisher" }, transcript))
    }

    /// Checks the other side's confirmation in constant time.
    pub fn verify(&self, from_visitor: bool, transcript: &[u8; 32], confirm: &str) -> Result<(), ProofError> {
        use subtle_eq::ct_eq;
        let want = self.confirm(from_visitor, transcript);
        if ct_eq(want.as_bytes(), confirm.as_bytes()) {
            Ok(())
        } else {
            Err(ProofError::WrongSecret)
        }
    }

    /// Authenticator that opens every stream of the link: `nonce | HMAC(key, nonce)`.
    pub fn stream_auth(&self, nonce: [u8; 16]) -> [u8; STREAM_AUTH_LEN] {
        let mut out = [0u8; STREAM_AUTH_LEN];
        out[..16].copy_from_slice(&nonce);
        out[16..].copy_from_slice(&self.mac(b"stream", &nonce));
        out
    }

    pub fn check_stream_auth(&self, got: &[u8; STREAM_AUTH_LEN]) -> bool {
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&got[..16]);
        subtle_eq::ct_eq(&self.stream_auth(nonce), got)
    }

    /// Tag carried by punch packets, so stray or forged packets are ignored.
    pub fn punch_tag(&self) -> [u8; 16] {
        let mut t = [0u8; 16];
        t.copy_from_slice(&self.mac(b"punch", &[])[..16]);
        t
    }
}

/// Length of the stream authenticator.
pub const STREAM_AUTH_LEN: usize = 48;

mod subtle_eq {
    /// Constant-time equality for equal-length inputs (lengths are public).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secret_v: &str, secret_p: &str) -> (Result<(), ProofError>, Option<Result<(), ProofError>>) {
        let v = start(true, secret_v);
        let p = start(false, secret_p);
        let (vm, pm) = (v.msg.clone(), p.msg.clone());
        let kv = v.finish(&pm).unwrap();
        let kp = p.finish(&vm).unwrap();
        let cands = vec!["1.2.3.4:5".to_string()];
        let t = Transcript {
            link_id: "l",
            name: "svc",
            protocol: "tcp",
            pake_visitor: &vm,
            pake_publisher: &pm,
            fp_visitor: "",
            fp_publisher: "ff",
            cand_visitor: &cands,
            cand_publisher: &[],
        }
        .hash();
        // Publisher confirms first; the visitor checks it before sending its own.
        let cp = kp.confirm(false, &t);
        let r1 = kv.verify(false, &t, &cp);
        if r1.is_err() {
            return (r1, None);
        }
        let cv = kv.confirm(true, &t);
        (r1, Some(kp.verify(true, &t, &cv)))
    }

    #[test]
    fn same_secret_agrees() {
        assert_eq!(run("hunter2", "hunter2"), (Ok(()), Some(Ok(()))));
    }

    #[test]
    fn wrong_secret_fails_on_the_visitor_side() {
        assert_eq!(run("hunter2", "hunter3").0, Err(ProofError::WrongSecret));
    }

    #[test]
    fn messages_do_not_contain_the_secret_or_its_hash() {
        let v = start(true, "hunter2");
        let digest = hex::encode(Sha256::digest(b"hunter2"));
        assert!(!v.msg.contains(&hex::encode("hunter2")) && !v.msg.contains(&digest));
        // Fresh randomness each time: nothing to replay.
        assert_ne!(v.msg, start(true, "hunter2").msg);
    }

    #[test]
    fn stream_auth_checks() {
        let v = start(true, "s");
        let p = start(false, "s");
        let pm = p.msg.clone();
        let kp = p.finish(&v.msg).unwrap();
        let kv = v.finish(&pm).unwrap();
        let a = kv.stream_auth([7; 16]);
        assert!(kp.check_stream_auth(&a));
        let mut bad = a;
        bad[40] ^= 1;
        assert!(!kp.check_stream_auth(&bad));
        assert_eq!(kp.punch_tag(), kv.punch_tag());
    }

    #[test]
    fn garbage_pake_is_malformed() {
        assert_eq!(start(true, "s").finish("zz").unwrap_err(), ProofError::Malformed);
        assert_eq!(start(true, "s").finish("00").unwrap_err(), ProofError::Malformed);
    }
}
