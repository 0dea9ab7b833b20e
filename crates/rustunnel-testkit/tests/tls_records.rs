//! TLS records that carry no application data (key update requests, empty records, warning
//! alerts), sent in floods to the server's control port before any login by a peer that never
//! reads: the server ends the connection after a few dozen, with an alert, as rustls would,
//! and its memory stays flat. The flooding client does a real TLS 1.3 handshake, then takes its
//! traffic keys over (as our own client does) and seals the records itself.
use std::time::{Duration, Instant};

use rustunnel_testkit::*;
use rustunnel_transport::lean_tls::LeanClient;
use rustunnel_transport::record::{record_len, Kernel, Opened, RecordError, Records, KEY_UPDATE_ROOM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::ClientConnectionData;

type Flooder = Records<Kernel<ClientConnectionData>>;

const UNEXPECTED_MESSAGE: u8 = 10;

/// A server whose own deadlines are far away: whatever ends a connection here is the record
/// layer, not the wait for an HTTP request.
async fn patient_server() -> TestServer {
    TestServer::start_with(|c| {
        c.handshake_timeout = Duration::from_secs(300);
        c.header_timeout = Duration::from_secs(300);
    })
    .await
}

/// A TLS 1.3 connection to the control port whose records are ours to seal, and the bytes
/// that came with the end of the handshake (the server's session tickets, some of the time).
async fn flooder(server: &TestServer) -> (TcpStream, Flooder, Vec<u8>) {
    let tls = rustunnel_client::tls::client_config(
        &rustunnel_client::TlsOptions { insecure: true, ca: None },
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = TcpStream::connect(server.handle.control_addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let lean = LeanClient::connect(tls, name, tcp).await.unwrap();
    let t = lean.into_records().expect("TLS 1.3, records taken over");
    (t.tcp, t.records, t.received)
}

#[derive(Clone, Copy, Debug)]
enum Flood {
    KeyUpdateRequests,
    EmptyRecords,
    UserCanceledWarnings,
}

const FLOODS: [(Flood, usize); 3] =
    [(Flood::KeyUpdateRequests, 32), (Flood::EmptyRecords, 32), (Flood::UserCanceledWarnings, 4)];

/// Seals `n` records of the flood into `out`; returns their length.
fn seal(rec: &mut Flooder, flood: Flood, n: usize, out: &mut Vec<u8>) -> usize {
    out.resize(n * KEY_UPDATE_ROOM, 0);
    let mut at = 0;
    for _ in 0..n {
        at += match flood {
            Flood::KeyUpdateRequests => rec.key_update(&mut out[at..], true),
            Flood::EmptyRecords => rec.seal_inner(&mut out[at..], &[23]),
            Flood::UserCanceledWarnings => rec.seal_inner(&mut out[at..], &[1, 90, 21]),
        }
        .unwrap();
    }
    at
}

/// What the server sent until it closed (after `wire`, received already): the application
/// data, and the error that ended its records (the alert it sent), if any. Fails the test if
/// it is still open after 30 s.
async fn server_records(tcp: &mut TcpStream, rec: &mut Flooder, mut wire: Vec<u8>) -> (Vec<u8>, Option<RecordError>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => wire.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server still holds the connection after 30 s"),
        }
    }
    let mut data = Vec::new();
    let mut at = 0;
    while let Ok(Some(len)) = record_len(&wire[at..]) {
        if at + len > wire.len() {
            break;
        }
        match rec.open(&mut wire[at..at + len]) {
            Ok(Opened::Data(r)) => data.extend_from_slice(&wire[at + r.start..at + r.end]),
            Ok(Opened::Control) => {}
            Ok(Opened::Closed) => break,
            Err(e) => return (data, Some(e)),
        }
        at += len;
    }
    (data, None)
}

#[tokio::test]
async fn as_many_as_rustls_allows_pass_and_one_more_ends_the_connection_with_an_alert() {
    let server = patient_server().await;
    for (flood, allowed) in FLOODS {
        // The most allowed in a row, then a request: the server answers it, after a single
        // key update of its own however many were asked for.
        let (mut tcp, mut rec, received) = flooder(&server).await;
        let mut out = Vec::new();
        let n = seal(&mut rec, flood, allowed, &mut out);
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        out.resize(n + request.len() + 64, 0);
        let m = rec.seal_data(&mut out[n..], request).unwrap();
        tcp.write_all(&out[..n + m]).await.unwrap();
        let (data, end) = server_records(&mut tcp, &mut rec, received).await;
        assert!(data.starts_with(b"HTTP/1.1 "), "{flood:?}: answered ({end:?})");
        assert_eq!(end, None, "{flood:?}");
        let followed = rec.key_updates().0;
        match flood {
            Flood::KeyUpdateRequests => assert_eq!(followed, 1, "one key update answers {allowed} requests"),
            _ => assert_eq!(followed, 0, "{flood:?}"),
        }

        // One more: the connection ends with unexpected_message.
        let (mut tcp, mut rec, received) = flooder(&server).await;
        let n = seal(&mut rec, flood, allowed + 1, &mut out);
        tcp.write_all(&out[..n]).await.unwrap();
        let (data, end) = server_records(&mut tcp, &mut rec, received).await;
        assert!(data.is_empty(), "{flood:?}");
        assert_eq!(end, Some(RecordError::Alert(UNEXPECTED_MESSAGE)), "{flood:?}");
    }
}

/// The resident memory of this process (test and in-process server), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn floods_of_100_000_records_without_data_are_cut_off_and_memory_stays_flat() {
    let server = patient_server().await;
    // One connection first, so the baseline includes what any connection costs.
    let (mut tcp, mut rec, _) = flooder(&server).await;
    let mut out = Vec::new();
    let n = seal(&mut rec, Flood::EmptyRecords, 1, &mut out);
    tcp.write_all(&out[..n]).await.unwrap();
    let before = rss_kib();
    for (flood, _) in FLOODS {
        let (mut tcp, mut rec, received) = flooder(&server).await;
        let start = Instant::now();
        let mut sent = 0;
        while sent < 100_000 {
            let n = seal(&mut rec, flood, 1000, &mut out);
            // The server closes after a few dozen: a write fails once it has (or all of them
            // fit in the sockets' buffers). It must never stop reading and stay open.
            match tokio::time::timeout(Duration::from_secs(30), tcp.write_all(&out[..n])).await {
                Ok(Ok(())) => sent += 1000,
                Ok(Err(_)) => break,
                Err(_) => panic!("{flood:?}: the server stopped reading after {sent} records without closing"),
            }
        }
        // The close is a reset when our records were still unread, and the alert before it
        // may be lost with it; when it arrived, it is unexpected_message.
        let (data, end) = server_records(&mut tcp, &mut rec, received).await;
        assert!(data.is_empty(), "{flood:?}");
        assert!(matches!(end, None | Some(RecordError::Alert(UNEXPECTED_MESSAGE))), "{flood:?}: {end:?}");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(30), "{flood:?}: closed after {took:?}");
        eprintln!("{flood:?}: {sent} records written before the close was seen, closed after {took:?}");
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!("resident memory grew by {grown} KiB over three floods");
    // Each flood is 2.7 MB or more on the wire; a server that kept any per-record state or
    // answer would hold that much per connection.
    assert!(grown < 16 * 1024, "resident memory grew by {grown} KiB");
}
