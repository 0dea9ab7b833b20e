//! Writes the seed corpus of every fuzz target from real messages, made with the crates' own
//! encoders: `cargo run --example seeds -- seeds` from `fuzz/`. A seed file is named after
//! what it holds; each target's first byte (where it has one) is the mode its doc describes.
use std::fs;
use std::path::{Path, PathBuf};

use rustunnel_agent::frame::{GuestMsg, HostMsg, NackCode};
use rustunnel_agent::handshake::{encode_reject, HelloKind, Initiator, RejectReason};
use rustunnel_agent::link::{InviteId, InviteKey, RelayBase, RoomId};
use rustunnel_client::p2p::proof;
use rustunnel_fuzz::input::put_part;
use rustunnel_fuzz::{block_on, Peer};
use rustunnel_proto::control::{
    ClientMsg, CloseReason, ErrorCode, Protocol, RequestLogEntry, ServerMsg, TunnelInfo, TunnelSpec,
};
use rustunnel_proto::p2p::{encode_probe, encode_reflect};
use rustunnel_proto::stream::StreamHeader;
use rustunnel_transport::mux::{KIND_DATA, KIND_FIN, KIND_OPEN, KIND_RESET, KIND_WINDOW, PING_ID};
use rustunnel_transport::plain::{client_handshake, NONCE_LEN};
use rustunnel_transport::stream::write_datagram;

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create the seed directory");
        fs::write(dir.join(name), bytes).expect("write a seed");
    }

    /// A seed made of a mode byte and a body.
    fn mode(&self, target: &str, name: &str, mode: u8, body: &[u8]) {
        self.put(target, name, &[&[mode][..], body].concat());
    }
}

fn control(s: &Seeds) {
    let spec = TunnelSpec::sample();
    let client = [
        (
            "hello",
            ClientMsg::Hello {
                version: 1,
                token: "tok".into(),
                agent: "rustunnel/0.1.0".into(),
                plain_data: true,
                mux: true,
            },
        ),
        ("open_http", ClientMsg::OpenTunnel { req_id: 7, spec }),
        (
            "open_tcp",
            ClientMsg::OpenTunnel {
                req_id: 8,
                spec: TunnelSpec { remote_port: Some(20001), ..TunnelSpec::new("db", Protocol::Tcp, "127.0.0.1:5432") },
            },
        ),
        ("health", ClientMsg::HealthReport { tunnel_id: "t".into(), healthy: false, detail: "HTTP 503".into() }),
        ("drain", ClientMsg::DrainTunnel { tunnel_id: "t".into() }),
        (
            "p2p_connect",
            ClientMsg::P2pConnect {
                link_id: "l".into(),
                name: "svc".into(),
                protocol: Protocol::Udp,
                pake: "aa".into(),
                fingerprint: "ff".into(),
                candidates: vec!["127.0.0.1:1".into(), "[::1]:2".into()],
            },
        ),
        ("ping", ClientMsg::Ping { nonce: u64::MAX }),
    ];
    for (name, m) in client {
        s.put("control_msg", &format!("client_{name}"), m.encode().as_bytes());
    }
    let server = [
        (
            "welcome",
            ServerMsg::Welcome {
                version: 1,
                session_id: "s".into(),
                data_key: "k".into(),
                heartbeat_secs: 10,
                pool_size: 4,
                server_agent: "rustunnel-server/0.1.0".into(),
                p2p_udp_port: Some(4041),
                plain_data: true,
            },
        ),
        (
            "rejected",
            ServerMsg::Rejected {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(100),
            },
        ),
        (
            "opened",
            ServerMsg::TunnelOpened {
                req_id: 7,
                tunnel: TunnelInfo {
                    tunnel_id: "t".into(),
                    name: "web".into(),
                    protocol: Protocol::Http,
                    public_url: "http://app.example.com".into(),
                    public_urls: vec!["http://app.example.com".into(), "https://app.example.com".into()],
                    subdomain: Some("app".into()),
                    remote_port: None,
                },
            },
        ),
        (
            "closed",
            ServerMsg::TunnelClosed { tunnel_id: "t".into(), reason: CloseReason::ClosedByApi, message: "m".into() },
        ),
        (
            "request_log",
            ServerMsg::RequestLog {
                entries: vec![RequestLogEntry {
                    tunnel_id: "t".into(),
                    method: "GET".into(),
                    path: "/".into(),
                    status: 200,
                    duration_us: 1234,
                    remote_addr: "203.0.113.7".into(),
                }],
                dropped: 3,
            },
        ),
        (
            "p2p_incoming",
            ServerMsg::P2pIncoming {
                link_id: "l".into(),
                name: "svc".into(),
                protocol: Protocol::Tcp,
                pake: "aa".into(),
                fingerprint: "ff".into(),
                candidates: vec!["192.0.2.1:4000".into()],
            },
        ),
        ("need", ServerMsg::NeedDataConns { count: 8 }),
        ("shutdown", ServerMsg::Shutdown { message: "bye".into(), retry_after_ms: 500 }),
    ];
    for (name, m) in server {
        s.put("control_msg", &format!("server_{name}"), m.encode().as_bytes());
    }
}

fn stream(s: &Seeds) {
    let tcp =
        StreamHeader { tunnel_id: "t1".into(), protocol: Protocol::Tcp, peer: "203.0.113.7:5000".into(), mux: false };
    s.put("stream_header", "tcp", &tcp.encode());
    let http = StreamHeader { protocol: Protocol::Http, peer: "[2001:db8::1]:443".into(), mux: true, ..tcp.clone() };
    s.put("stream_header", "http_mux", &http.encode());
    let mut dgrams = Vec::new();
    let mut scratch = Vec::new();
    for d in [&b"ping"[..], b"", &[0xff; 300]] {
        block_on(write_datagram(&mut dgrams, d, &mut scratch)).expect("write to memory");
    }
    s.put("stream_header", "datagrams", &dgrams);
}

fn plain(s: &Seeds) {
    // What a real client sends, captured against the fixed nonce the target serves.
    let answer = [&[7u8; NONCE_LEN][..], &[0]].concat();
    let mut peer = Peer::new(&answer);
    block_on(client_handshake(&mut peer, "sess-1", "k3y")).expect("accepted");
    s.mode("plain_handshake", "server_accepts", 0, &peer.written);
    s.mode("plain_handshake", "client_accepted", 1, &answer);
    s.mode("plain_handshake", "client_refused", 1, &[&[7u8; NONCE_LEN][..], &[1]].concat());
}

fn p2p(s: &Seeds) {
    s.put("p2p_reflect", "probe", &encode_probe(42));
    s.put("p2p_reflect", "reflect_v4", &encode_reflect(42, "203.0.113.7:4000".parse().expect("an address")));
    s.put("p2p_reflect", "reflect_v6", &encode_reflect(42, "[2001:db8::1]:4000".parse().expect("an address")));

    s.put(
        "p2p_proof",
        "pake",
        &[&[0u8, 0][..], proof::start(false, "correct horse battery staple").msg.as_bytes()].concat(),
    );
    let mut confirm = vec![1];
    for f in ["link", "svc", "tcp", "aa", "bb", "ff", "ee", "127.0.0.1:1", "127.0.0.1:2"] {
        put_part(&mut confirm, f.as_bytes());
    }
    confirm.extend_from_slice(&[b'0'; 64]);
    s.put("p2p_proof", "confirm", &confirm);
    s.put("p2p_proof", "stream_auth", &[&[2u8][..], &[0x42; 48]].concat());
    let mut punch = vec![3];
    for kind in [&b"\0RTP2P-PUNCH"[..], b"\0RTP2P-PACKD"] {
        punch.extend_from_slice(&4000u16.to_be_bytes());
        put_part(&mut punch, &[kind, &[9; 16]].concat());
    }
    s.put("p2p_proof", "punch_ack", &punch);
}

fn room() -> RoomId {
    RoomId::parse("room1234abcd").expect("a valid room id")
}

fn agent(s: &Seeds) {
    let base = RelayBase::parse("http://abc.localhost:8080/relay").expect("a base URL");
    let link = base.join_link(&room(), InviteId([7; 16]), &InviteKey([9; 32]));
    s.put("agent_link", "link", link.to_string().as_bytes());
    s.put("agent_link", "base", b"https://example.com/relay/");

    let (_, hello) = Initiator::start(&room(), HelloKind::Join, [1; 16], &[5; 32]).expect("a handshake starts");
    s.mode("agent_hello", "client_hello", 0, &hello);
    let (_, resume) = Initiator::start(&room(), HelloKind::Resume, [2; 16], &[5; 32]).expect("a handshake starts");
    s.mode("agent_hello", "client_hello_resume", 0, &resume);
    // Mode 1: the host's real reply, unaltered (join, no cut, nothing added, no edits).
    s.mode("agent_hello", "server_hello", 1, &[0, 0, 0, 0]);
    s.mode("agent_hello", "server_reject", 1, &[&[0, 3][..], &[0, 3], &encode_reject(RejectReason::Expired)].concat());
    let mut fields = Vec::new();
    put_part(&mut fields, hex::encode([4u8; 16]).as_bytes());
    fields.extend_from_slice(hex::encode([6u8; 32]).as_bytes());
    s.mode("agent_hello", "resume_fields", 2, &fields);

    let mut say = Vec::new();
    put_part(&mut say, b"hello, room");
    put_part(&mut say, b"attachment");
    say.extend_from_slice(&[0, 0, 0, 0]);
    s.mode("agent_frame", "wire_say", 0, &say);
    let guest = [
        ("join", GuestMsg::Join { name: "ana".into() }, &b""[..]),
        ("resume", GuestMsg::Resume { last_seq: 41 }, b""),
        ("say", GuestMsg::Say { req: 1, text: "hi".into() }, b""),
        (
            "file_begin",
            GuestMsg::FileBegin {
                req: 2,
                name: "../notes.txt".into(),
                size: 5,
                sha256: rustunnel_agent::files::sha256_hex(b"hello"),
            },
            b"hello",
        ),
        ("file_chunk", GuestMsg::FileChunk { req: 2, offset: 0 }, b"hello"),
        ("fetch", GuestMsg::Fetch { req: 3, artifact_id: "a1".into() }, b""),
        ("leave", GuestMsg::Leave, b""),
    ];
    for (name, m, att) in guest {
        s.mode("agent_frame", &format!("guest_{name}"), 1, &plaintext(&m, att));
    }
    let host = [
        ("ack", HostMsg::Ack { req: 1, seq: Some(9) }),
        ("nack", HostMsg::Nack { req: 1, code: NackCode::RateLimited, message: "slow".into() }),
        ("file_header", HostMsg::FileHeader { req: 3, size: 5, sha256: "00".repeat(32) }),
        ("closed", HostMsg::Closed { summary: Some("done".into()) }),
    ];
    for (name, m) in host {
        s.mode("agent_frame", &format!("host_{name}"), 2, &plaintext(&m, b""));
    }
}

/// A decrypted frame as `FrameCipher::seal` lays it out: counter 0, lengths, JSON, attachment.
fn plaintext<M: serde::Serialize>(m: &M, att: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(m).expect("a message serialises");
    let mut p = Vec::new();
    p.extend_from_slice(&0u64.to_be_bytes());
    p.extend_from_slice(&(header.len() as u32).to_be_bytes());
    p.extend_from_slice(&(att.len() as u32).to_be_bytes());
    p.extend_from_slice(&header);
    p.extend_from_slice(att);
    p
}

fn frame(out: &mut Vec<u8>, id: u32, kind: u8, payload: &[u8]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

fn mux(s: &Seeds) {
    let meta =
        StreamHeader { tunnel_id: "t1".into(), protocol: Protocol::Http, peer: "203.0.113.7:5000".into(), mux: false }
            .encode();
    // Acceptor (first byte even): the server opens streams and sends requests.
    let mut acc = vec![0];
    frame(&mut acc, 1, KIND_OPEN, &meta);
    frame(&mut acc, 1, KIND_DATA, b"GET / HTTP/1.1\r\nhost: app.example.com\r\n\r\n");
    frame(&mut acc, 1, KIND_WINDOW, &65536u32.to_be_bytes());
    frame(&mut acc, 1, KIND_FIN, b"");
    frame(&mut acc, 2, KIND_OPEN, &meta);
    frame(&mut acc, 2, KIND_RESET, b"");
    frame(&mut acc, PING_ID, KIND_DATA, b"p");
    s.put("mux_driver", "acceptor_streams", &acc);
    // Opener (first byte odd, cut in 8-byte reads): answers on the streams opened here.
    let mut op = vec![15];
    frame(&mut op, 1, KIND_DATA, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    frame(&mut op, 1, KIND_WINDOW, &(u32::MAX).to_be_bytes());
    frame(&mut op, 1, KIND_FIN, b"");
    frame(&mut op, 2, KIND_DATA, &[0x55; 1024]);
    frame(&mut op, 2, KIND_RESET, b"");
    frame(&mut op, PING_ID, KIND_WINDOW, &1u32.to_be_bytes());
    s.put("mux_driver", "opener_answers", &op);
}

fn tls(s: &Seeds) {
    // The first byte picks the suite: AES-128-GCM (0), AES-256-GCM (1), ChaCha20-Poly1305 (2).
    const SUITE: u8 = 0;
    let step = |out: &mut Vec<u8>, kind: u8, part: &[u8]| {
        out.push(kind);
        put_part(out, part);
    };
    let mut data = vec![SUITE];
    step(&mut data, 1, b"GET / HTTP/1.1\r\n\r\n");
    data.push(0);
    step(&mut data, 1, &[0x42; 1000]);
    data.push(16);
    s.put("tls_records", "application_data", &data);
    let mut ku = vec![2];
    step(&mut ku, 2, &[24, 0, 0, 1, 1]);
    step(&mut ku, 1, b"after a key update");
    ku.push(0);
    // A key update split over two records.
    step(&mut ku, 2, &[24, 0]);
    step(&mut ku, 2, &[0, 1, 0]);
    step(&mut ku, 1, b"again");
    ku.push(0);
    s.put("tls_records", "key_updates", &ku);
    let mut alerts = vec![1];
    step(&mut alerts, 3, &[1, 90, 21]);
    step(&mut alerts, 3, &[23, 0, 0, 0]);
    step(&mut alerts, 3, &[1, 0, 21]);
    s.put("tls_records", "alerts", &alerts);
    let mut ticket = vec![SUITE];
    step(&mut ticket, 2, &[4, 0, 0, 8, 0, 0, 0, 60, 1, 2, 3, 4]);
    s.put("tls_records", "ticket", &ticket);
    let mut raw = vec![SUITE];
    step(&mut raw, 1, b"ok");
    raw.push(0);
    step(&mut raw, 0, &[23, 3, 3, 0, 17]);
    s.put("tls_records", "raw_header", &raw);
}

fn mux_sans_io(s: &Seeds) {
    let meta =
        StreamHeader { tunnel_id: "t1".into(), protocol: Protocol::Http, peer: "203.0.113.7:5000".into(), mux: false }
            .encode();
    let feed = |out: &mut Vec<u8>, frames: &[u8]| {
        out.push(0);
        put_part(out, frames);
    };
    // Acceptor: the peer opens a stream and sends a request; it is accepted, read, answered.
    let mut acc = vec![0];
    let mut f = Vec::new();
    frame(&mut f, 1, KIND_OPEN, &meta);
    frame(&mut f, 1, KIND_DATA, b"GET / HTTP/1.1\r\nhost: app.example.com\r\n\r\n");
    feed(&mut acc, &f);
    acc.push(2);
    acc.extend_from_slice(&[3, 0, 4, 0]);
    acc.extend_from_slice(&[4, 0]);
    put_part(&mut acc, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    acc.push(7);
    let mut f = Vec::new();
    frame(&mut f, 1, KIND_WINDOW, &65536u32.to_be_bytes());
    frame(&mut f, 1, KIND_FIN, b"");
    frame(&mut f, 2, KIND_OPEN, &meta);
    frame(&mut f, 2, KIND_RESET, b"");
    frame(&mut f, PING_ID, KIND_DATA, b"p");
    feed(&mut acc, &f);
    acc.extend_from_slice(&[5, 0, 6, 0, 7]);
    s.put("mux_frames", "acceptor", &acc);
    // Opener with growing windows: two streams opened here, the peer answers on them.
    let mut op = vec![3, 1];
    put_part(&mut op, &meta);
    op.push(1);
    put_part(&mut op, &meta);
    op.extend_from_slice(&[4, 0]);
    put_part(&mut op, b"GET / HTTP/1.1\r\nhost: app.example.com\r\n\r\n");
    op.push(7);
    let mut f = Vec::new();
    frame(&mut f, 1, KIND_DATA, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    frame(&mut f, 1, KIND_WINDOW, &(u32::MAX).to_be_bytes());
    frame(&mut f, 1, KIND_FIN, b"");
    frame(&mut f, 2, KIND_DATA, &[0x55; 1024]);
    frame(&mut f, 2, KIND_RESET, b"");
    frame(&mut f, PING_ID, KIND_WINDOW, &1u32.to_be_bytes());
    feed(&mut op, &f);
    op.extend_from_slice(&[3, 1, 255, 255, 7]);
    s.put("mux_frames", "opener", &op);
}

fn h1(s: &Seeds) {
    let bodies: [(&str, &[u8]); 5] = [
        ("chunked", b"5\r\nhello\r\n0\r\n\r\n"),
        ("chunked_ext_trailer", b"5;name=value\r\nhello\r\n0\r\nexpires: never\r\n\r\n"),
        ("chunked_bare_lf", b"5\r\nhello\r\n0\r\n\nHTTP/1.1 200 OK\r\n\r\n"),
        (
            "requests",
            b"POST /a HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
GET /b HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 2\r\n\r\nhi",
        ),
        (
            "smuggle",
            b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (name, body) in bodies {
        s.put("h1_chunked", name, &[&[255u8][..], body].concat());
        s.put("h1_chunked", &format!("{name}_bytewise"), &[&[0u8][..], body].concat());
    }
    let heads: [(&str, u8, &[u8]); 6] = [
        (
            "request",
            0,
            b"GET /path?q=1 HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive, x-drop\r\nx-drop: 1\r\n\
Authorization: Basic YW5hOmNvcnJlY3QgaG9yc2U=\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 0\r\n\r\n",
        ),
        ("request_options", 0, b"OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\n\r\n"),
        ("response", 1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok"),
        ("response_chunked", 1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"),
        ("response_head", 3, b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
        ("response_interim", 5, b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"),
    ];
    for (name, how, head) in heads {
        s.put("h1_heads", name, &[&[how][..], head].concat());
    }
}

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| Path::new("seeds").to_path_buf());
    let s = Seeds { root };
    control(&s);
    stream(&s);
    plain(&s);
    p2p(&s);
    agent(&s);
    mux(&s);
    mux_sans_io(&s);
    tls(&s);
    h1(&s);
}
