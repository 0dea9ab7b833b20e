//! The P2P client's decoders of relayed and direct input (`rustunnel_client::p2p`): the other
//! side's SPAKE2 message and key confirmation (relayed by the server, so anyone who can
//! publish or connect controls them), the authenticator that opens each direct stream, and
//! UDP hole-punching packets from any address. The first byte picks the decoder.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rustunnel_client::p2p::proof::{self, LinkKey, Transcript, STREAM_AUTH_LEN};
use rustunnel_client::p2p::punch::{Action, Puncher};
use rustunnel_fuzz::Input;

const SECRET: &str = "correct horse battery staple";
/// The punch tag the seeds were made with (`examples/seeds.rs`); in use it comes from the key.
const TAG: [u8; 16] = [9; 16];

/// A key both sides agreed on, made once: the decoders after the PAKE take it as given.
fn key() -> &'static LinkKey {
    static KEY: OnceLock<LinkKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let v = proof::start(true, SECRET);
        let p = proof::start(false, SECRET);
        let pm = p.msg.clone();
        let _ = p.finish(&v.msg);
        v.finish(&pm).expect("the same secret agrees")
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 4 {
        0 => {
            // The other side's PAKE message, as hex text in a control message.
            let visitor = input.byte().is_multiple_of(2);
            let _ = proof::start(visitor, SECRET).finish(&text(input.rest()));
        }
        1 => {
            // A confirmation over a transcript of relayed fields.
            let fields: Vec<String> = (0..7).map(|_| text(input.part())).collect();
            let cands: Vec<String> = (0..2).map(|_| text(input.part())).collect();
            let t = Transcript {
                link_id: &fields[0],
                name: &fields[1],
                protocol: &fields[2],
                pake_visitor: &fields[3],
                pake_publisher: &fields[4],
                fp_visitor: &fields[5],
                fp_publisher: &fields[6],
                cand_visitor: std::slice::from_ref(&cands[0]),
                cand_publisher: std::slice::from_ref(&cands[1]),
            };
            let h = t.hash();
            let confirm = text(input.rest());
            let ok = key().verify(true, &h, &confirm).is_ok();
            assert_eq!(ok, confirm == key().confirm(true, &h), "only the right confirmation verifies");
        }
        2 => {
            // The authenticator at the start of a direct stream.
            let mut got = [0u8; STREAM_AUTH_LEN];
            let b = input.take(STREAM_AUTH_LEN);
            got[..b.len()].copy_from_slice(b);
            let mut nonce = [0u8; 16];
            nonce.copy_from_slice(&got[..16]);
            assert_eq!(key().check_stream_auth(&got), got == key().stream_auth(nonce));
        }
        _ => {
            // Punch packets from anywhere, in any order.
            let now = Instant::now();
            let target: SocketAddr = "127.0.0.1:9".parse().expect("an address");
            let mut p = Puncher::new(now, TAG, vec![target], Duration::from_secs(5));
            let mut done = false;
            while !input.is_empty() {
                let port = input.u16();
                let from = SocketAddr::from(([127, 0, 0, 2], port));
                let actions = p.on_packet(now, from, input.part());
                assert!(actions.len() <= 5, "{} actions for one packet", actions.len());
                for a in actions {
                    match a {
                        Action::Done(_) => {
                            assert!(!done, "done twice");
                            done = true;
                        }
                        Action::Failed => panic!("failed before the deadline"),
                        Action::Send(to, pkt) => {
                            assert_eq!(to, from, "answers go to who was heard");
                            assert!(pkt.len() <= 32);
                        }
                    }
                }
            }
        }
    }
});
