use std::io;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::buffers::MAX_FRAGMENT;
use super::*;
use crate::record;

pub(crate) type ServerSide = tokio_rustls::server::TlsStream<TcpStream>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed server config for `localhost` and a client config trusting it.
pub(crate) fn configs(
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Lean ends take the records over from rustls, as the server's and client's do.
    server.enable_secret_extraction = true;
    client.enable_secret_extraction = true;
    (Arc::new(server), Arc::new(client))
}

/// A lean client connected over loopback TCP (`TCP_NODELAY`, as data connections) to a
/// tokio-rustls server.
pub(crate) async fn pair(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (io::Result<LeanClient>, io::Result<ServerSide>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let srv = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        acceptor.accept(s).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let c = LeanClient::connect(client, name, tcp).await;
    (c, srv.await.unwrap())
}

pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Writes `data` to `from` and flushes it; `to` then reads exactly that.
async fn send<W, R>(from: &mut W, to: &mut R, data: &[u8])
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    from.write_all(data).await.unwrap();
    from.flush().await.unwrap();
    let mut got = vec![0u8; data.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, data);
}

#[tokio::test]
async fn large_transfers_both_ways_with_half_close_on_tls13_and_tls12() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (s, c) = configs(version);
        let (client, server) = pair(s, c).await;
        let (client, server) = (client.unwrap(), server.unwrap());
        assert_eq!(client.owns_records(), version == &rustls::version::TLS13, "{version:?}");
        let up = pattern(5_000_000);
        let down = pattern(3_000_001);
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let up2 = up.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&up2).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let down2 = down.clone();
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            sr.read_to_end(&mut got).await.unwrap();
            sw.write_all(&down2).await.unwrap();
            sw.shutdown().await.unwrap();
            got
        });
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(Sha256::digest(server_task.await.unwrap()), Sha256::digest(&up), "{version:?} up");
        assert_eq!(Sha256::digest(&got), Sha256::digest(&down), "{version:?} down");
    }
}

#[tokio::test]
async fn bulk_both_ways_at_once_does_not_deadlock() {
    // Both ends write 8 MB while reading: socket buffers fill in both directions, so a
    // reader that waited for its own pending output would never drain the peer.
    let (s, c) = configs(&rustls::version::TLS13);
    let (client, server) = pair(s, c).await;
    let (client, server) = (client.unwrap(), server.unwrap());
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let data = pattern(8 << 20);
    let (d1, d2) = (data.clone(), data.clone());
    let w1 = tokio::spawn(async move {
        cw.write_all(&d1).await.unwrap();
        cw.shutdown().await.unwrap();
    });
    let w2 = tokio::spawn(async move {
        sw.write_all(&d2).await.unwrap();
        sw.shutdown().await.unwrap();
    });
    let r1 = tokio::spawn(async move {
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), sr.read_to_end(&mut got)).await.unwrap().unwrap();
    let got1 = tokio::time::timeout(std::time::Duration::from_secs(30), r1).await.unwrap().unwrap();
    w1.await.unwrap();
    w2.await.unwrap();
    assert!(got == data && got1 == data);
}

#[tokio::test]
async fn key_updates_from_the_server_are_followed() {
    let (s, c) = configs(&rustls::version::TLS13);
    let (client, server) = pair(s, c).await;
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    assert!(client.owns_records());
    for round in 0..3u8 {
        server.get_mut().1.refresh_traffic_keys().unwrap();
        send(&mut server, &mut client, &[round; 1000]).await;
        send(&mut client, &mut server, &[round + 10; 500]).await;
    }
    // rustls asks for ours each time, and follows them.
    assert_eq!(client.records.as_ref().unwrap().key_updates(), (3, 3), "followed three, answered three");
}

#[tokio::test]
async fn our_key_updates_are_followed_by_rustls() {
    // Our sending key is replaced every 3 records (the suite's limit is millions); a rustls
    // server echoes everything back.
    let (s, c) = configs(&rustls::version::TLS13);
    let (client, server) = pair(s, c).await;
    let (mut client, server) = (client.unwrap(), server.unwrap());
    client.records.as_mut().unwrap().set_key_update_every(3);
    let data = pattern(2_000_000);
    let (mut sr, mut sw) = tokio::io::split(server);
    let echo = tokio::spawn(async move {
        let n = tokio::io::copy(&mut sr, &mut sw).await?;
        sw.shutdown().await.map(|()| n)
    });
    let d2 = data.clone();
    let (mut cr, mut cw) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        cw.write_all(&d2).await.unwrap();
        cw.shutdown().await.unwrap();
        cw
    });
    let mut back = Vec::new();
    cr.read_to_end(&mut back).await.unwrap();
    let cw = writer.await.unwrap();
    echo.await.unwrap().unwrap();
    assert!(back == data, "echo through rustls after our key updates");
    let client = cr.unsplit(cw);
    let (_, sent) = client.records.as_ref().unwrap().key_updates();
    assert!(sent >= 2_000_000 / MAX_FRAGMENT as u32 / 3, "sent {sent} key updates");
}

#[tokio::test]
async fn a_requested_key_update_is_answered_by_rustls_and_followed() {
    let (s, c) = configs(&rustls::version::TLS13);
    let (client, server) = pair(s, c).await;
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    for round in 0..3u8 {
        // Our key update asking for the peer's: rustls answers with its own, and the
        // records after it open under the peer's new key.
        let records = client.records.as_mut().unwrap();
        let n = records.key_update(client.out.reserve(record::KEY_UPDATE_ROOM), true).unwrap();
        client.out.commit(n);
        send(&mut client, &mut server, &[round; 3000]).await;
        send(&mut server, &mut client, &[round + 1; 2000]).await;
        assert_eq!(client.records.as_ref().unwrap().key_updates(), (u32::from(round) + 1, u32::from(round) + 1));
    }
}

#[tokio::test]
async fn session_tickets_after_the_hand_over_reach_rustls() {
    // A rustls server that sends tickets: the lean client, past the hand-over, gives them to
    // rustls, so its next connection resumes.
    let (s, c) = configs(&rustls::version::TLS13);
    for attempt in 0..2 {
        let (client, server) = pair(s.clone(), c.clone()).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        assert!(client.owns_records());
        let kind = server.get_ref().1.handshake_kind();
        let want = if attempt == 0 { rustls::HandshakeKind::Full } else { rustls::HandshakeKind::Resumed };
        assert_eq!(kind, Some(want), "attempt {attempt}");
        send(&mut server, &mut client, b"tickets came first").await;
    }
}

/// Changes the bytes past a point of a TLS stream.
pub(crate) type Spoil = fn(&mut Vec<u8>);

/// A lean client of a rustls server that sends `pattern(1_000_000)`, through a relay that
/// `spoil`s the server's bytes once `after` of them have passed (well past the handshake).
pub(crate) async fn spoiled_client(after: usize, spoil: Spoil) -> LeanClient {
    let (s, c) = configs(&rustls::version::TLS13);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, backend_addr) = (l.local_addr().unwrap(), backend.local_addr().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(s);
    tokio::spawn(async move {
        let (tcp, _) = backend.accept().await.unwrap();
        let mut t = acceptor.accept(tcp).await.unwrap();
        let _ = t.write_all(&pattern(1_000_000)).await;
        let _ = t.shutdown().await;
    });
    tokio::spawn(async move {
        let (mut front, _) = l.accept().await.unwrap();
        let back = TcpStream::connect(backend_addr).await.unwrap();
        let (mut br, mut bw) = back.into_split();
        let (mut fr, mut fw) = front.split();
        let up = tokio::io::copy(&mut fr, &mut bw);
        let down = async {
            // The first `after` bytes (the handshake among them) pass as they come.
            let mut passed = 0;
            let mut buf = vec![0u8; 16 * 1024];
            while passed < after {
                let n = br.read(&mut buf[..(after - passed).min(16 * 1024)]).await.unwrap();
                assert!(n > 0, "the server sends more than {after} bytes");
                fw.write_all(&buf[..n]).await.unwrap();
                passed += n;
            }
            let mut rest = Vec::new();
            let _ = br.read_to_end(&mut rest).await;
            spoil(&mut rest);
            let _ = fw.write_all(&rest).await;
            let _ = fw.shutdown().await;
        };
        let _ = tokio::join!(up, down);
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert!(client.owns_records());
    client
}

/// What a lean client read of a spoiled stream before the error, and the error.
async fn read_spoiled(after: usize, spoil: Spoil) -> (Vec<u8>, io::Error) {
    let mut client = spoiled_client(after, spoil).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buf)).await.unwrap() {
            Ok(0) => panic!("spoiled stream read to its end without an error"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, e),
        }
    }
}

#[tokio::test]
async fn spoiled_records_end_the_stream_with_an_error_and_no_bad_plaintext() {
    let cases: [(&str, Spoil, &str); 4] = [
        ("a flipped bit", |r| r[3000] ^= 0x20, "bad_record_mac"),
        (
            "a record header lying about its length",
            |r| {
                // The records are 16 KiB + 22 bytes long on the wire; find the next header.
                let at = r.windows(3).position(|w| w == [23, 3, 3]).unwrap();
                r[at + 4] ^= 0x01;
            },
            "bad_record_mac",
        ),
        (
            "a record of another type",
            |r| {
                let at = r.windows(3).position(|w| w == [23, 3, 3]).unwrap();
                r[at] = 22;
            },
            "record type 22",
        ),
        ("garbage instead of records", |r| r.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8), ""),
    ];
    let want = pattern(1_000_000);
    for (what, spoil, msg) in cases {
        let (got, err) = read_spoiled(200_000, spoil).await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        assert!(err.to_string().contains(msg), "{what}: {err}");
        assert!(
            // Plaintext of the good records before the spoiled one, and no more.
            got.len() < 200_000 + MAX_FRAGMENT && got[..] == want[..got.len()],
            "{what}: only good plaintext before the error"
        );
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let (s, _) = configs(&rustls::version::TLS13);
    let (_, other) = configs(&rustls::version::TLS13);
    let (client, _server) = pair(s, other).await;
    let e = client.err().expect("refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer_and_close_notify_is_eof() {
    let (s, c) = configs(&rustls::version::TLS13);
    let (client, server) = pair(s, c).await;
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    send(&mut server, &mut client, b"ping").await;
    send(&mut client, &mut server, b"pong").await;
    assert!(!client.inbuf.is_held() && client.inbuf.is_empty(), "no input buffer while idle");
    assert!(!client.out.is_held() && client.plain.capacity() == 0, "no output or plaintext buffer");
    server.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), client.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn lean_server_with_buffered_and_lean_clients() {
    let (s, c) = configs(&rustls::version::TLS13);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s2 = s.clone();
    let srv = tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = l.accept().await.unwrap();
            let mut t = LeanServer::accept(s2.clone(), tcp).await.unwrap();
            // Echo until EOF, then close.
            let mut all = Vec::new();
            t.read_to_end(&mut all).await.unwrap();
            t.write_all(&all).await.unwrap();
            t.shutdown().await.unwrap();
        }
    });
    let data = pattern(2_000_000);
    // A buffered (tokio-rustls) client.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut t = tokio_rustls::TlsConnector::from(c.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    t.write_all(&data).await.unwrap();
    t.shutdown().await.unwrap();
    let mut back = Vec::new();
    t.read_to_end(&mut back).await.unwrap();
    assert!(back == data);
    // A lean client.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut t = LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    t.write_all(&data).await.unwrap();
    t.shutdown().await.unwrap();
    let mut back = Vec::new();
    t.read_to_end(&mut back).await.unwrap();
    assert!(back == data);
    srv.await.unwrap();
}

#[tokio::test]
async fn garbage_from_the_server_is_an_error_not_a_hang() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let _ = s.write_all(&[0x17; 40_000]).await;
    });
    let (_, c) = configs(&rustls::version::TLS13);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("no hang");
    assert!(r.is_err());
}
