//! Differential test of the TLS 1.3 record layer against rustls: the same sealed record
//! streams, well-formed or not, are fed to a rustls server and to `record::Records` holding the
//! same keys, and both must hand out the same plaintext and end the same way (still open,
//! closed by `close_notify`, or failed).
//!
//! The streams are sealed under the client's real traffic secrets (taken from a key log of an
//! in-memory handshake), so they get past the AEAD and reach the rules behind it: content
//! types, padding, the inner plaintext limit, alerts, key updates and their requests,
//! handshake messages split over records and records between their pieces, tampered
//! ciphertext, a stream cut inside a record. Outer headers are left as sealed: rustls
//! authenticates a fixed header where we authenticate the one received, and refuses fewer
//! outer types and versions than we do (RFC 8446 section 5 asks for `application_data` and
//! 0x0303); those checks have their own unit tests.
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use proptest::prelude::*;
use ring::aead;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use rustls::ConnectionCommon;
use rustunnel_transport::record::{record_len, Opened, Records, Secrets, HEADER, KEY_UPDATE_ROOM, MAX_PLAIN, TAG};

#[derive(Debug, Default)]
struct KeyLog(Mutex<HashMap<String, Vec<u8>>>);

impl rustls::KeyLog for KeyLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        self.0.lock().unwrap().insert(label.to_string(), secret.to_vec());
    }
}

/// A self-signed certificate for `localhost`, made once.
fn cert() -> &'static (CertificateDer<'static>, Vec<u8>) {
    static CERT: OnceLock<(CertificateDer<'static>, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (CertificateDer::from(ck.cert.der().to_vec()), ck.signing_key.serialize_der())
    })
}

const SUITES: [(rustls::CipherSuite, &aead::Algorithm); 3] = [
    (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, &aead::AES_128_GCM),
    (rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, &aead::AES_256_GCM),
    (rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256, &aead::CHACHA20_POLY1305),
];

/// A rustls server just past an in-memory TLS 1.3 handshake on `suite`, and the client's
/// sending and receiving secrets.
fn handshake(suite: usize) -> (rustls::ServerConnection, Vec<u8>, Vec<u8>) {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| s.suite() == SUITES[suite].0);
    let provider = Arc::new(provider);
    let (cert, key) = cert();
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], PrivatePkcs8KeyDer::from(key.clone()).into())
        .unwrap();
    server.send_tls13_tickets = 0;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let log = Arc::new(KeyLog::default());
    client.key_log = log.clone();
    let mut c = rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        flight(&mut c, &mut s);
        flight(&mut s, &mut c);
    }
    let log = log.0.lock().unwrap();
    (s, log["CLIENT_TRAFFIC_SECRET_0"].clone(), log["SERVER_TRAFFIC_SECRET_0"].clone())
}

/// Hands everything `from` has to send to `to`, which processes it.
fn flight<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// One record of a stream, as the peer seals it.
#[derive(Clone, Debug)]
enum Item {
    /// Application data of `len` bytes and `pad` bytes of padding.
    Data { len: usize, pad: usize },
    /// Application data around the 2^14 + 1 limit on the inner plaintext.
    Big { len: usize, pad: usize },
    /// A key update (switching the sealer's key), asking for the peer's or not.
    KeyUpdate { request: bool },
    /// Any inner plaintext: content, a content type (0: none at all), padding.
    Inner { content: Vec<u8>, typ: u8, pad: usize },
    /// A data record with one ciphertext byte changed.
    Tampered { len: usize, at: usize },
}

fn content_for(typ: u8) -> BoxedStrategy<Vec<u8>> {
    match typ {
        // Alerts: close_notify, user_canceled, others, at warning, fatal or unknown levels;
        // or a malformed body.
        21 => prop_oneof![
            3 => (prop::sample::select(vec![1u8, 2, 3]), prop::sample::select(vec![0u8, 90, 42, 10, 20]))
                .prop_map(|(l, d)| vec![l, d]),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ]
        .boxed(),
        // Post-handshake messages, whole or in pieces: key updates (well-formed or not),
        // session tickets (a client must not send one), other types, lying lengths.
        22 => {
            let message = prop_oneof![
                (0u8..3).prop_map(|r| vec![24, 0, 0, 1, r]),
                prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| {
                    let mut m = vec![4, 0, 0, b.len() as u8];
                    m.extend(b);
                    m
                }),
                prop::collection::vec(any::<u8>(), 1..8),
            ];
            (message, any::<prop::sample::Index>(), any::<bool>())
                .prop_map(|(m, cut, first)| {
                    // Either piece of the message: the rest may follow in the next records.
                    let at = cut.index(m.len() + 1);
                    if first {
                        m[..at].to_vec()
                    } else {
                        m[at..].to_vec()
                    }
                })
                .boxed()
        }
        _ => prop::collection::vec(any::<u8>(), 0..24).boxed(),
    }
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => (0usize..48, 0usize..24).prop_map(|(len, pad)| Item::Data { len, pad }),
        1 => (MAX_PLAIN - 1..MAX_PLAIN + 2, 0usize..3).prop_map(|(len, pad)| Item::Big { len, pad }),
        2 => any::<bool>().prop_map(|request| Item::KeyUpdate { request }),
        6 => prop::sample::select(vec![21u8, 21, 22, 22, 22, 23, 0, 20, 24, 0x30])
            .prop_flat_map(|typ| (content_for(typ), Just(typ), 0usize..4))
            .prop_map(|(content, typ, pad)| Item::Inner { content, typ, pad }),
        1 => (1usize..32, any::<usize>()).prop_map(|(len, at)| Item::Tampered { len, at }),
    ]
}

fn data(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + salt * 13) as u8).collect()
}

/// Seals the items in order, as one stream.
fn seal(sealer: &mut Records<Secrets>, items: &[Item]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = wire.len();
        wire.resize(at + MAX_PLAIN + 256 + HEADER + KEY_UPDATE_ROOM, 0);
        let out = &mut wire[at..];
        let inner = |content: &[u8], typ: u8, pad: usize| {
            let mut v = content.to_vec();
            if typ != 0 {
                v.push(typ);
            }
            v.resize(v.len() + pad, 0);
            v
        };
        let n = match item {
            Item::Data { len, pad } => sealer.seal_inner(out, &inner(&data(*len, i), 23, *pad)).unwrap(),
            Item::Big { len, pad } => sealer.seal_inner(out, &inner(&data(*len, i), 23, *pad)).unwrap(),
            Item::KeyUpdate { request } => sealer.key_update(out, *request).unwrap(),
            Item::Inner { content, typ, pad } => {
                let inner = inner(content, *typ, *pad);
                if inner.is_empty() {
                    // An inner plaintext of nothing at all: only the tag is sealed.
                    sealer.seal_inner(out, &[0]).unwrap()
                } else {
                    sealer.seal_inner(out, &inner).unwrap()
                }
            }
            Item::Tampered { len, at } => {
                let n = sealer.seal_inner(out, &inner(&data(*len, i), 23, 0)).unwrap();
                out[HEADER + at % (n - HEADER)] ^= 0x40;
                n
            }
        };
        wire.truncate(at + n);
    }
    wire
}

#[derive(Debug, PartialEq)]
enum End {
    /// Everything processed, more may come (a record may be incomplete).
    Open,
    /// The peer's close_notify.
    Closed,
    /// The connection failed.
    Failed,
}

/// What rustls makes of the stream: the plaintext, and how it ends.
fn rustls_reads(server: &mut rustls::ServerConnection, mut wire: &[u8]) -> (Vec<u8>, End) {
    let mut plain = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut end = End::Open;
    while !wire.is_empty() {
        if server.read_tls(&mut wire).is_err() {
            end = End::Failed;
            break;
        }
        let state = server.process_new_packets();
        loop {
            match server.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        match state {
            Err(_) => {
                end = End::Failed;
                break;
            }
            Ok(io) if io.peer_has_closed() => {
                end = End::Closed;
                break;
            }
            Ok(_) => {}
        }
    }
    (plain, end)
}

/// What our record layer makes of the stream.
fn records_read(opener: &mut Records<Secrets>, wire: &mut [u8]) -> (Vec<u8>, End) {
    let mut plain = Vec::new();
    let mut at = 0;
    loop {
        let len = match record_len(&wire[at..]) {
            Ok(Some(len)) if at + len <= wire.len() => len,
            Ok(_) => return (plain, End::Open),
            Err(_) => return (plain, End::Failed),
        };
        match opener.open(&mut wire[at..at + len]) {
            Ok(Opened::Data(r)) => plain.extend_from_slice(&wire[at + r.start..at + r.end]),
            Ok(Opened::Control) => {}
            Ok(Opened::Closed) => return (plain, End::Closed),
            Err(_) => return (plain, End::Failed),
        }
        at += len;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rustls_and_our_records_read_the_same_streams_the_same_way(
        suite in 0..SUITES.len(),
        items in prop::collection::vec(item(), 0..24),
        cut in prop::option::weighted(0.2, 1usize..(TAG + HEADER + 8)),
    ) {
        let (mut server, client_secret, server_secret) = handshake(suite);
        let alg = SUITES[suite].1;
        let mut sealer = Records::from_secrets(alg, &client_secret, &server_secret, 0).unwrap();
        let mut opener = Records::from_secrets(alg, &server_secret, &client_secret, 0).unwrap();
        let mut wire = seal(&mut sealer, &items);
        // A stream cut inside its last record.
        if let Some(cut) = cut {
            wire.truncate(wire.len().saturating_sub(cut));
        }
        let theirs = rustls_reads(&mut server, &wire);
        let ours = records_read(&mut opener, &mut wire);
        prop_assert_eq!(ours.1, theirs.1, "how the stream ends");
        prop_assert!(ours.0 == theirs.0, "plaintext: ours {} bytes, rustls {}", ours.0.len(), theirs.0.len());
    }
}

#[test]
fn the_flood_limits_are_rustls_limits() {
    // Each kind of record without application data: as many as rustls allows pass both, one
    // more fails both.
    let kinds: [(&[u8], usize); 3] = [(&[23], 32), (&[1, 90, 21], 4), (&[24, 0, 0, 1, 0, 22], 32)];
    for (inner, allowed) in kinds {
        for n in [allowed, allowed + 1] {
            let (mut server, client_secret, server_secret) = handshake(0);
            let alg = SUITES[0].1;
            let mut sealer = Records::from_secrets(alg, &client_secret, &server_secret, 0).unwrap();
            let mut opener = Records::from_secrets(alg, &server_secret, &client_secret, 0).unwrap();
            let items: Vec<Item> = (0..n)
                .map(|_| match inner {
                    [24, ..] => Item::KeyUpdate { request: false },
                    _ => {
                        Item::Inner { content: inner[..inner.len() - 1].to_vec(), typ: inner[inner.len() - 1], pad: 0 }
                    }
                })
                .collect();
            let mut wire = seal(&mut sealer, &items);
            let theirs = rustls_reads(&mut server, &wire);
            let ours = records_read(&mut opener, &mut wire);
            let want = if n == allowed { End::Open } else { End::Failed };
            assert_eq!((&ours.1, &theirs.1), (&want, &want), "{n} of {inner:?}");
        }
    }
}
