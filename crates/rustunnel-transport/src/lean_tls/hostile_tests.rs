//! Hostile peers against both ends of a lean TLS connection: records a correct peer never
//! sends, and connections cut short. The peer is a rustls connection whose traffic secrets are
//! logged, so the test seals records of its own choosing under the peer's keys and writes them
//! to the socket under rustls; rustls then reads what our end answers (its alert).
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ring::aead;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::buffers::HELD_MAX;
use super::tests::{configs, ServerSide};
use super::*;
use crate::record::{self, record_len, sealed_len, Opened, Records, Secrets, HEADER, KEY_UPDATE_ROOM};

type ClientSide = tokio_rustls::client::TlsStream<TcpStream>;

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const UNEXPECTED_MESSAGE: u8 = 10;
const DECODE_ERROR: u8 = 50;

/// Traffic secrets by key log label.
#[derive(Debug, Default)]
struct Secrets0(Mutex<HashMap<String, Vec<u8>>>);

impl rustls::KeyLog for Secrets0 {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        self.0.lock().insert(label.to_string(), secret.to_vec());
    }
}

/// The rustls end, its socket, and (TLS 1.3) a sealer under its sending keys.
struct Peer<T> {
    tls: T,
    sealer: Option<Records<Secrets>>,
}

trait Socket {
    fn tcp(&mut self) -> &mut TcpStream;
    fn suite(&self) -> rustls::CipherSuite;
}

impl Socket for ServerSide {
    fn tcp(&mut self) -> &mut TcpStream {
        self.get_mut().0
    }
    fn suite(&self) -> rustls::CipherSuite {
        self.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    }
}

impl Socket for ClientSide {
    fn tcp(&mut self) -> &mut TcpStream {
        self.get_mut().0
    }
    fn suite(&self) -> rustls::CipherSuite {
        self.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    }
}

fn sealer(suite: rustls::CipherSuite, log: &Secrets0, tx: &str, rx: &str) -> Option<Records<Secrets>> {
    let alg = match suite {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => &aead::AES_128_GCM,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => &aead::AES_256_GCM,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => &aead::CHACHA20_POLY1305,
        _ => return None,
    };
    let log = log.0.lock();
    Some(Records::from_secrets(alg, &log[tx], &log[rx], 0).unwrap())
}

/// A lean client of a rustls server (which sends no session tickets, so its first record
/// after the handshake has sequence number 0).
async fn lean_client(version: &'static rustls::SupportedProtocolVersion) -> (LeanClient, Peer<ServerSide>) {
    let (s, c) = configs(version);
    let log = Arc::new(Secrets0::default());
    let mut s = (*s).clone();
    s.key_log = log.clone();
    s.send_tls13_tickets = 0;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(s));
    let srv = tokio::spawn(async move { acceptor.accept(l.accept().await.unwrap().0).await.unwrap() });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let lean = LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let tls = srv.await.unwrap();
    let sealer = sealer(tls.suite(), &log, "SERVER_TRAFFIC_SECRET_0", "CLIENT_TRAFFIC_SECRET_0");
    (lean, Peer { tls, sealer })
}

/// A lean server with a rustls client.
async fn lean_server(version: &'static rustls::SupportedProtocolVersion) -> (LeanServer, Peer<ClientSide>) {
    let (s, c) = configs(version);
    let log = Arc::new(Secrets0::default());
    let mut c = (*c).clone();
    c.key_log = log.clone();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move { LeanServer::accept(s, l.accept().await.unwrap().0).await.unwrap() });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(c))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let lean = srv.await.unwrap();
    let sealer = sealer(tls.suite(), &log, "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0");
    (lean, Peer { tls, sealer })
}

/// Seals each inner plaintext (content, type, padding) as one record.
fn seal_all(sealer: &mut Records<Secrets>, inners: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for inner in inners {
        let at = out.len();
        out.resize(at + HEADER + inner.len() + 16, 0);
        let n = sealer.seal_inner(&mut out[at..], inner).unwrap();
        out.truncate(at + n);
    }
    out
}

/// Everything a lean end reads until the end of its stream, and how it ended.
async fn read_all<R: AsyncRead + Unpin>(lean: &mut R) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), lean.read(&mut buf)).await.expect("no hang") {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// The alert rustls received from our end, read on the rustls end.
async fn alert_received<T: AsyncRead + Unpin>(tls: &mut T) -> u8 {
    let (_, end) = read_all(tls).await;
    let e = end.expect_err("rustls reads our alert as an error");
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(d)) => u8::from(*d),
        _ => panic!("rustls got no alert but {e}"),
    }
}

/// How a stream cut short ends at our end.
enum Cut {
    /// A FIN after whole records, no close_notify.
    AtRecord,
    /// A FIN inside a record.
    InRecord,
    /// A FIN inside a handshake message that spans records.
    InHandshakeMessage,
    /// close_notify inside a handshake message that spans records.
    CloseNotifyInHandshakeMessage,
    /// close_notify, then the FIN: the one clean end.
    CloseNotify,
}

const CUTS: [(Cut, Option<&str>); 5] = [
    (Cut::AtRecord, Some("without close_notify")),
    (Cut::InRecord, Some("inside a record")),
    (Cut::InHandshakeMessage, Some("inside a handshake message")),
    (Cut::CloseNotifyInHandshakeMessage, Some("inside a fragmented handshake message")),
    (Cut::CloseNotify, None),
];

/// What the peer sends for `cut` after "hello": sealed records, then a FIN.
async fn send_cut<T: Socket>(peer: &mut Peer<T>, cut: &Cut) {
    let sealer = peer.sealer.as_mut().unwrap();
    let mut bytes = seal_all(sealer, &[b"hello\x17"]);
    match cut {
        Cut::AtRecord => {}
        Cut::InRecord => {
            let rec = seal_all(sealer, &[b"more\x17"]);
            bytes.extend_from_slice(&rec[..rec.len() - 3]);
        }
        Cut::InHandshakeMessage => bytes.extend(seal_all(sealer, &[&[24, 0, HANDSHAKE]])),
        Cut::CloseNotifyInHandshakeMessage => {
            bytes.extend(seal_all(sealer, &[&[24, 0, HANDSHAKE], &[1, 0, ALERT]]));
        }
        Cut::CloseNotify => bytes.extend(seal_all(sealer, &[&[1, 0, ALERT]])),
    }
    peer.tls.tcp().write_all(&bytes).await.unwrap();
    peer.tls.tcp().shutdown().await.unwrap();
}

/// What a TLS 1.2 peer sends for `cut` after "hello": rustls seals the records itself, and a
/// cut inside a record is a bare header with part of its body.
async fn send_cut_tls12<T: Socket + AsyncWrite + Unpin>(peer: &mut Peer<T>, cut: &Cut) {
    peer.tls.write_all(b"hello").await.unwrap();
    peer.tls.flush().await.unwrap();
    match cut {
        Cut::CloseNotify => peer.tls.shutdown().await.unwrap(),
        Cut::InRecord => {
            peer.tls.tcp().write_all(&[23, 3, 3, 0, 64, 1, 2, 3]).await.unwrap();
            peer.tls.tcp().shutdown().await.unwrap();
        }
        _ => peer.tls.tcp().shutdown().await.unwrap(),
    }
}

fn check_end(what: &str, got: &[u8], end: io::Result<()>, want: Option<&str>) {
    assert_eq!(got, b"hello", "{what}: the data before the cut ({end:?})");
    match (end, want) {
        (Ok(()), None) => {}
        (Err(e), Some(msg)) => {
            assert!(e.to_string().contains(msg), "{what}: {e}");
            let kind =
                if msg.contains("fragmented") { io::ErrorKind::InvalidData } else { io::ErrorKind::UnexpectedEof };
            assert_eq!(e.kind(), kind, "{what}: {e}");
        }
        (end, want) => panic!("{what}: ended with {end:?}, wanted {want:?}"),
    }
}

#[tokio::test]
async fn a_cut_stream_is_an_error_never_a_clean_end_on_both_ends() {
    for (cut, want) in CUTS {
        let (mut lean, mut peer) = lean_client(&rustls::version::TLS13).await;
        send_cut(&mut peer, &cut).await;
        let (got, end) = read_all(&mut lean).await;
        check_end("lean client", &got, end, want);

        let (mut lean, mut peer) = lean_server(&rustls::version::TLS13).await;
        send_cut(&mut peer, &cut).await;
        let (got, end) = read_all(&mut lean).await;
        check_end("lean server", &got, end, want);
    }
}

#[tokio::test]
async fn a_cut_stream_ends_the_tcp_copy_with_an_error() {
    use crate::zerocopy::tests::pair as tcp_pair;
    for (cut, want) in CUTS {
        let (mut lean, mut peer) = lean_client(&rustls::version::TLS13).await;
        let (mut app, mut ours) = tcp_pair().await;
        // The app has nothing to send: only the direction toward it is at stake.
        app.shutdown().await.unwrap();
        send_cut(&mut peer, &cut).await;
        let copy = tokio::time::timeout(Duration::from_secs(20), lean.splice_tcp(&mut ours, &|_| {}, &|_| {}))
            .await
            .expect("no hang");
        drop(ours);
        let mut got = Vec::new();
        let _ = app.read_to_end(&mut got).await;
        check_end("copy", &got, copy.map(|_| ()), want);
    }
}

#[tokio::test]
async fn a_cut_stream_is_an_error_on_rustls_records_too() {
    // TLS 1.2 stays on rustls's record path: a FIN without close_notify, or inside a record,
    // is an error there as well; close_notify is the clean end.
    for cut in [Cut::AtRecord, Cut::InRecord, Cut::CloseNotify] {
        let (mut lean, mut peer) = lean_client(&rustls::version::TLS12).await;
        assert!(!lean.owns_records());
        send_cut_tls12(&mut peer, &cut).await;
        let (got, end) = read_all(&mut lean).await;
        let want = match cut {
            Cut::AtRecord => Some("without close_notify"),
            Cut::InRecord => Some("inside a record"),
            _ => None,
        };
        check_end("TLS 1.2 lean client", &got, end, want);

        let (mut lean, mut peer) = lean_server(&rustls::version::TLS12).await;
        send_cut_tls12(&mut peer, &cut).await;
        let (got, end) = read_all(&mut lean).await;
        check_end("TLS 1.2 lean server", &got, end, want);
    }
}

/// A record stream that breaks a rule of RFC 8446 section 5, and the alert it calls for.
type Spoiler = fn(&mut Records<Secrets>) -> Vec<u8>;

fn bad_streams() -> Vec<(&'static str, Spoiler, u8)> {
    vec![
        (
            "a flipped bit",
            |s| {
                let mut r = seal_all(s, &[b"hello\x17"]);
                r[7] ^= 1;
                r
            },
            BAD_RECORD_MAC,
        ),
        (
            "an inner plaintext over 2^14 + 1 bytes (padding)",
            |s| {
                let mut inner = b"hi\x17".to_vec();
                inner.resize(record::MAX_PLAIN + 2, 0);
                seal_all(s, &[&inner])
            },
            RECORD_OVERFLOW,
        ),
        (
            "a record header over 2^14 + 256 bytes",
            // Refused from its header: the rest is not sent, so nothing is left unread (a close
            // with unread bytes is a reset, which could overtake the alert).
            |_| vec![23, 3, 3, 0x41, 0x01, 0, 0, 0],
            RECORD_OVERFLOW,
        ),
        (
            "application data inside a fragmented handshake message",
            |s| seal_all(s, &[&[24, 0, HANDSHAKE], b"hi\x17"]),
            UNEXPECTED_MESSAGE,
        ),
        ("33 empty records in a row", |s| seal_all(s, &[&[APPLICATION_DATA][..]; 33]), UNEXPECTED_MESSAGE),
        (
            "33 key update requests in a row",
            |s| {
                let mut out = vec![0u8; 33 * KEY_UPDATE_ROOM];
                let mut at = 0;
                for _ in 0..33 {
                    at += s.key_update(&mut out[at..], true).unwrap();
                }
                out.truncate(at);
                out
            },
            UNEXPECTED_MESSAGE,
        ),
        ("5 warning alerts", |s| seal_all(s, &[&[1, 90, ALERT][..]; 5]), UNEXPECTED_MESSAGE),
        ("a record with no content type", |s| seal_all(s, &[&[0, 0, 0]]), UNEXPECTED_MESSAGE),
        ("an unknown content type", |s| seal_all(s, &[b"x\x30"]), UNEXPECTED_MESSAGE),
        (
            "an outer record type other than application data",
            |s| {
                let mut r = seal_all(s, &[b"hello\x17"]);
                r[0] = HANDSHAKE;
                r
            },
            UNEXPECTED_MESSAGE,
        ),
        ("a client hello after the handshake", |s| seal_all(s, &[&[1, 0, 0, 0, HANDSHAKE]]), UNEXPECTED_MESSAGE),
        ("a malformed alert", |s| seal_all(s, &[&[1, 0, 0, ALERT]]), DECODE_ERROR),
        ("a warning alert TLS 1.3 does not allow", |s| seal_all(s, &[&[1, 42, ALERT]]), DECODE_ERROR),
        ("a malformed key update", |s| seal_all(s, &[&[24, 0, 0, 1, 7, HANDSHAKE]]), DECODE_ERROR),
    ]
}

#[tokio::test]
async fn each_fatal_error_sends_its_alert_before_closing() {
    for (what, spoil, alert) in bad_streams() {
        let (mut lean, mut peer) = lean_server(&rustls::version::TLS13).await;
        let bytes = spoil(peer.sealer.as_mut().unwrap());
        // The flood cases are written whole; the lean end may close before reading them all.
        let _ = peer.tls.tcp().write_all(&bytes).await;
        let (_, end) = read_all(&mut lean).await;
        let e = end.expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
        drop(lean);
        assert_eq!(alert_received(&mut peer.tls).await, alert, "lean server, {what}: {e}");
    }
    // The client end, and the TCP copy, answer the same way.
    for (what, spoil, alert) in bad_streams().into_iter().step_by(3) {
        let (mut lean, mut peer) = lean_client(&rustls::version::TLS13).await;
        let bytes = spoil(peer.sealer.as_mut().unwrap());
        let _ = peer.tls.tcp().write_all(&bytes).await;
        let (_, end) = read_all(&mut lean).await;
        assert!(end.is_err(), "{what}");
        drop(lean);
        assert_eq!(alert_received(&mut peer.tls).await, alert, "lean client, {what}");

        let (mut lean, mut peer) = lean_client(&rustls::version::TLS13).await;
        let (_app, mut ours) = crate::zerocopy::tests::pair().await;
        let bytes = spoil(peer.sealer.as_mut().unwrap());
        let _ = peer.tls.tcp().write_all(&bytes).await;
        let copy = tokio::time::timeout(Duration::from_secs(20), lean.splice_tcp(&mut ours, &|_| {}, &|_| {}))
            .await
            .expect("no hang");
        assert!(copy.is_err(), "{what}");
        drop(lean);
        assert_eq!(alert_received(&mut peer.tls).await, alert, "copy, {what}");
    }
}

#[tokio::test]
async fn rustls_records_send_their_alert_before_closing_too() {
    // TLS 1.2: rustls judges the records and queues the alert; it goes out before the error.
    let (mut lean, mut peer) = lean_server(&rustls::version::TLS12).await;
    let mut garbage = vec![23, 3, 3, 0, 64];
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    peer.tls.tcp().write_all(&garbage).await.unwrap();
    let (_, end) = read_all(&mut lean).await;
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
    drop(lean);
    assert_eq!(alert_received(&mut peer.tls).await, BAD_RECORD_MAC);
}

#[tokio::test]
async fn a_burst_of_key_update_requests_is_answered_by_one_key_update() {
    // 32 requests (the most allowed in a row), then data: our end follows all 32 and answers
    // with one key update before its next record, which rustls follows.
    let (mut lean, mut peer) = lean_server(&rustls::version::TLS13).await;
    let sealer = peer.sealer.as_mut().unwrap();
    let mut out = vec![0u8; 32 * KEY_UPDATE_ROOM + sealed_len(5)];
    let mut at = 0;
    for _ in 0..32 {
        at += sealer.key_update(&mut out[at..], true).unwrap();
    }
    at += sealer.seal_data(&mut out[at..], b"ping!").unwrap();
    peer.tls.tcp().write_all(&out[..at]).await.unwrap();
    let mut got = [0u8; 5];
    lean.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping!");
    lean.write_all(b"pong!").await.unwrap();
    lean.flush().await.unwrap();
    peer.tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong!", "rustls followed our one key update");
    assert_eq!(lean.records.as_ref().unwrap().key_updates(), (32, 1));
}

#[tokio::test]
async fn reading_stops_while_the_output_for_the_peer_is_above_its_bound() {
    // A peer that does not read: the socket toward it is full, and more than the bound waits
    // for it. Reading waits for the socket to take the output instead of reading (and
    // perhaps queuing) more; once the peer reads, so does our end.
    let (mut lean, mut peer) = lean_server(&rustls::version::TLS13).await;
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    loop {
        match lean.io.try_write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    let held = HELD_MAX + 1;
    lean.out.reserve(held)[..held].fill(0);
    lean.out.commit(held);
    let data = seal_all(peer.sealer.as_mut().unwrap(), &[b"hello\x17"]);
    peer.tls.tcp().write_all(&data).await.unwrap();
    let mut buf = [0u8; 5];
    let r = tokio::time::timeout(Duration::from_secs(1), lean.read(&mut buf)).await;
    assert!(r.is_err(), "read returned {r:?} while {} bytes wait for the peer", lean.out.pending().len());
    assert!(lean.inbuf.is_empty(), "nothing was read");
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < sent + held {
            match peer.tls.tcp().read(&mut sink).await.unwrap() {
                0 => break,
                n => total += n,
            }
        }
        total
    });
    tokio::time::timeout(Duration::from_secs(20), lean.read_exact(&mut buf)).await.expect("reads again").unwrap();
    assert_eq!(&buf, b"hello");
    assert!(drain.await.unwrap() >= sent + held);
}

#[tokio::test]
async fn a_key_update_request_right_behind_the_finished_message_is_answered() {
    // The client's Finished, a key update request and data reach the server in one read (a
    // relay holds the client's bytes until all are written): the request is for our record
    // layer, which answers it, not for rustls before the hand-over (whose answer would be lost
    // with it, and the client left unable to read).
    let (s, c) = configs(&rustls::version::TLS13);
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let back_addr = backend.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut lean = LeanServer::accept(s, backend.accept().await.unwrap().0).await.unwrap();
        let mut got = [0u8; 5];
        lean.read_exact(&mut got).await.unwrap();
        lean.write_all(b"pong!").await.unwrap();
        lean.flush().await.unwrap();
        (got, lean)
    });
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        let (client, _) = front.accept().await.unwrap();
        let server = TcpStream::connect(back_addr).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
        // The ClientHello passes; the four records after it (change_cipher_spec, Finished,
        // the key update, the data) are held until all are there, then go in one write.
        let mut buf = vec![0u8; 64 * 1024];
        let n = cr.read(&mut buf).await.unwrap();
        sw.write_all(&buf[..n]).await.unwrap();
        released.await.unwrap();
        let mut held = Vec::new();
        let records = |wire: &[u8]| {
            let (mut at, mut n) = (0, 0);
            while let [_, _, _, l1, l2, ..] = wire[at..] {
                at += 5 + usize::from(u16::from_be_bytes([l1, l2]));
                if at > wire.len() {
                    break;
                }
                n += 1;
            }
            n
        };
        while records(&held) < 4 {
            let n = cr.read(&mut buf).await.unwrap();
            assert!(n > 0);
            held.extend_from_slice(&buf[..n]);
        }
        sw.write_all(&held).await.unwrap();
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = down.await;
    });
    let tcp = TcpStream::connect(front_addr).await.unwrap();
    let lean = LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let super::TakenOver { mut tcp, mut records, received } = lean.into_records().unwrap();
    let mut out = vec![0u8; KEY_UPDATE_ROOM + sealed_len(5)];
    let mut at = records.key_update(&mut out, true).unwrap();
    at += records.seal_data(&mut out[at..], b"ping!").unwrap();
    tcp.write_all(&out[..at]).await.unwrap();
    release.send(()).unwrap();
    let (got, _lean) = tokio::time::timeout(Duration::from_secs(20), server).await.expect("no hang").unwrap();
    assert_eq!(&got, b"ping!");
    // The server's records: its session tickets, its key update, then "pong!" under its new key.
    let mut wire = received;
    let mut plain = Vec::new();
    let mut buf = vec![0u8; 4096];
    while plain.len() < 5 {
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await.expect("no hang").unwrap();
        assert!(n > 0, "the server closed");
        wire.extend_from_slice(&buf[..n]);
        while let Ok(Some(len)) = record_len(&wire) {
            if len > wire.len() {
                break;
            }
            match records.open(&mut wire[..len]).unwrap() {
                Opened::Data(r) => plain.extend_from_slice(&wire[r]),
                Opened::Control | Opened::Closed => {}
            }
            wire.drain(..len);
        }
    }
    assert_eq!(&plain, b"pong!");
    assert_eq!(records.key_updates(), (1, 1), "the server answered our request");
    relay.abort();
}
