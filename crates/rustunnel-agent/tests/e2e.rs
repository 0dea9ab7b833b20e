//! End-to-end tests over loopback WebSockets, with a recording/killing/tampering
//! TCP proxy standing in for the tunnel edge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustunnel_agent::member::JoinError;
use rustunnel_agent::room::EventKind;
use rustunnel_agent::session::{AgentChannel, ChannelConfig, SessionError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

fn chan(name: &str) -> AgentChannel {
    AgentChannel::new(ChannelConfig {
        display_name: name.to_owned(),
        setup_command: "claude mcp add rustunnel -- rustunnel-mcp --server http://localhost:8080".into(),
    })
}

/// `name` opens a room on a relay bound to a free loopback port; `public(port)` is the base of
/// its links. Returns the channel, the first join link and the relay's address.
async fn open_room(name: &str, goal: &str, public: impl FnOnce(u16) -> String) -> (AgentChannel, String, SocketAddr) {
    let h = chan(name);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = h.open(goal, None, l, &public(addr.port())).await.unwrap();
    (h, r.join_link, addr)
}

async fn host(goal: &str) -> (AgentChannel, String, SocketAddr) {
    open_room("alice-host", goal, |port| format!("http://abc.localhost:{port}")).await
}

/// A TCP proxy that records every byte, can cut all connections, and can flip one
/// bit in the next host->guest read.
struct Proxy {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<u8>>>,
    kill: watch::Sender<u64>,
    flip_next_down: Arc<AtomicBool>,
    _tasks: JoinSet<()>,
}

/// Copies `r` to `w`, recording every byte in `cap`; when `flip` is set, flips one bit in the
/// next read (once) after recording it.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, cap: Arc<Mutex<Vec<u8>>>, flip: Option<Arc<AtomicBool>>) {
    let mut b = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut b).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        cap.lock().unwrap().extend_from_slice(&b[..n]);
        if flip.as_ref().is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
            b[n - 1] ^= 0x01;
        }
        if w.write_all(&b[..n]).await.is_err() {
            break;
        }
    }
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let (kill, _) = watch::channel(0u64);
        let flip = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let (cap, k, f) = (captured.clone(), kill.clone(), flip.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((down, _)) = l.accept().await else {
                    break;
                };
                let Ok(up) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cap, mut rx, f) = (cap.clone(), k.subscribe(), f.clone());
                conns.spawn(async move {
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    let upstream = pump(dr, uw, cap.clone(), None);
                    let downstream = pump(ur, dw, cap, Some(f));
                    tokio::select! {
                        _ = rx.changed() => {}
                        _ = async { tokio::join!(upstream, downstream) } => {}
                    }
                });
            }
        });
        Proxy { addr, captured, kill, flip_next_down: flip, _tasks: tasks }
    }

    fn kill_all(&self) {
        self.kill.send_modify(|g| *g += 1);
    }

    fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn listen_texts(c: &AgentChannel) -> Vec<String> {
    let r = c.listen(None, Some(Duration::from_secs(5)), None).await.unwrap();
    r.messages.into_iter().filter(|m| m.kind == EventKind::Chat).map(|m| m.text).collect()
}

#[tokio::test]
async fn two_guests_talk_share_and_host_close_ends_room() {
    let (h, link1, _) = host("pair on checkout flow").await;
    let g1 = chan("bob");
    let j = g1.join(&link1).await.unwrap();
    assert_eq!(j.goal, "pair on checkout flow");
    assert_eq!(j.members.len(), 2);
    let hs = h.status().await.unwrap();
    let bob_code = hs.members.iter().find(|m| m.name == "bob").unwrap().verification_code.clone();
    assert_eq!(bob_code.as_deref(), Some(j.verification_code.as_str()));

    // Reusing the same link fails.
    let dup = chan("mallory");
    assert!(matches!(dup.join(&link1).await, Err(SessionError::Join(JoinError::AlreadyUsed))));

    let inv = h.invite(Some(2)).await.unwrap();
    assert_eq!(inv.invite_texts.len(), 2);
    assert_eq!(inv.invite_texts.len(), inv.join_links.len());
    for (text, link) in inv.invite_texts.iter().zip(&inv.join_links) {
        assert!(text.contains("claude mcp add rustunnel"));
        // Each guest's text carries that guest's link and no other.
        assert_eq!(inv.join_links.iter().filter(|l| text.contains(l.as_str())).count(), 1);
        assert!(text.contains(link.as_str()));
    }
    let g2 = chan("carol");
    g2.join(&inv.join_links[0]).await.unwrap();

    h.say("hello from host").await.unwrap();
    g1.say("hello from bob").await.unwrap();
    // Bob sees host's message and carol's join; carol sees both chats.
    let r = g1.listen(None, Some(Duration::from_secs(5)), None).await.unwrap();
    assert!(r.messages.iter().any(|m| m.text == "hello from host" && m.untrusted));
    assert!(r.messages.iter().all(|m| m.text != "hello from bob"), "own chat is not echoed");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(listen_texts(&g2).await);
    }
    assert_eq!(seen, vec!["hello from host", "hello from bob"]);
    let mut hseen = Vec::new();
    while hseen.is_empty() {
        hseen.extend(listen_texts(&h).await);
    }
    assert_eq!(hseen, vec!["hello from bob"]);

    // Listen with sinceSeq replays; status is coherent.
    let all = g2.listen(Some(0), Some(Duration::from_millis(10)), None).await.unwrap();
    assert!(all.messages.len() >= 3);
    let st = g2.status().await.unwrap();
    assert_eq!(st.members.len(), 3);
    assert!(st.connected && !st.closed);
    assert_eq!(st.goal, "pair on checkout flow");
    let hst = h.status().await.unwrap();
    assert_eq!(hst.pending_invites, Some(1), "the second link of the last invite is unused");
    assert!(hst.idle_seconds_left > 29 * 60);

    // Guest shares a file; the other guest and the host receive it verified.
    let dir = std::env::temp_dir().join(format!("rt-agent-e2e-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await.unwrap();
    let src = dir.join("notes.bin");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    tokio::fs::write(&src, &payload).await.unwrap();
    let shared = g1.share(&src).await.unwrap();
    assert_eq!(shared.size, payload.len() as u64);
    assert!(!shared.artifact_id.is_empty());
    let mut file_msg = None;
    while file_msg.is_none() {
        let r = g2.listen(None, Some(Duration::from_secs(5)), None).await.unwrap();
        file_msg = r.messages.into_iter().find(|m| m.kind == EventKind::File);
    }
    let info = file_msg.unwrap().file.unwrap();
    assert_eq!(info.sha256, shared.sha256);
    let out = dir.join("received.bin");
    let rec = g2.receive(&info.artifact_id, &out, false).await.unwrap();
    assert_eq!(rec.sha256, shared.sha256);
    assert_eq!(tokio::fs::read(&out).await.unwrap(), payload);
    // Never overwrites without consent.
    assert!(matches!(
        g2.receive(&info.artifact_id, &out, false).await,
        Err(SessionError::File(rustunnel_agent::files::FileError::Exists(_)))
    ));
    let hout = dir.join("host.bin");
    h.receive(&info.artifact_id, &hout, false).await.unwrap();
    assert_eq!(tokio::fs::read(&hout).await.unwrap(), payload);
    // Host shares; guest receives.
    let hs = h.share(&src).await.unwrap();
    let gout = dir.join("from-host.bin");
    g1.receive(&hs.artifact_id, &gout, false).await.unwrap();
    assert_eq!(tokio::fs::read(&gout).await.unwrap(), payload);
    assert!(g1.receive("a_nope", &dir.join("x"), false).await.is_err());

    // A guest close only leaves.
    g2.close(None).await.unwrap();
    assert!(g2.status().await.is_none());
    h.say("still open").await.unwrap();

    // Host close ends the room for everyone with a final system message.
    let c = h.close(Some("fixed the bug")).await.unwrap();
    assert!(c.room_ended);
    assert!(h.status().await.is_none());
    assert!(matches!(h.say("x").await, Err(SessionError::NoOpenTunnel)));
    let mut closed = false;
    let mut last = String::new();
    for _ in 0..10 {
        let r = g1.listen(None, Some(Duration::from_secs(5)), None).await.unwrap();
        if let Some(m) = r.messages.last() {
            last = m.text.clone();
        }
        if r.closed {
            closed = true;
            break;
        }
    }
    assert!(closed);
    assert!(last.contains("Summary: fixed the bug"), "{last}");
    assert!(g1.status().await.is_none(), "nothing stale after the room ended");
    tokio::fs::remove_dir_all(&dir).await.unwrap();
}

#[tokio::test]
async fn parallel_redeemers_exactly_one_wins() {
    let (h, link, _) = host("race").await;
    let mut set = JoinSet::new();
    for i in 0..8 {
        let link = link.clone();
        set.spawn(async move {
            let c = chan(&format!("g{i}"));
            let r = c.join(&link).await;
            (c, r)
        });
    }
    let mut ok = 0;
    let mut used = 0;
    let mut keep = Vec::new();
    while let Some(r) = set.join_next().await {
        let (c, r) = r.unwrap();
        match r {
            Ok(_) => ok += 1,
            Err(SessionError::Join(JoinError::AlreadyUsed)) => used += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        keep.push(c);
    }
    assert_eq!((ok, used), (1, 7));
    assert_eq!(h.status().await.unwrap().members.len(), 2);
    h.close(None).await.unwrap();
}

#[tokio::test]
async fn wrong_key_fails_and_leaves_invite_usable() {
    let (h, link, _) = host("keys").await;
    let (base, frag) = link.split_once('#').unwrap();
    // Same invite id, different key.
    use base64::Engine as _;
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(frag).unwrap();
    raw[20] ^= 0xff;
    let bad = format!("{base}#{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let g = chan("eve");
    assert!(matches!(g.join(&bad).await, Err(SessionError::Join(JoinError::BadKey))));
    assert_eq!(h.status().await.unwrap().pending_invites, Some(1));
    g.join(&link).await.unwrap();
    assert_eq!(h.status().await.unwrap().pending_invites, Some(0));
    h.close(None).await.unwrap();
}

#[tokio::test]
async fn expired_link_is_refused() {
    use rustunnel_agent::link::RelayBase;
    use rustunnel_agent::relay::HostConfig;
    let h = chan("host");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut cfg = HostConfig::new("g", "host", RelayBase::parse(&format!("ws://127.0.0.1:{port}")).unwrap());
    cfg.invite_ttl = Duration::from_millis(100);
    let r = h.open_with_config(l, cfg, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(chan("g").join(&r.join_link).await, Err(SessionError::Join(JoinError::Expired))));
    h.close(None).await.unwrap();
}

#[tokio::test]
async fn relay_sees_no_plaintext_and_resume_gets_missed_messages() {
    let goal = "GOAL-launch-codes-4711";
    let h = chan("HOSTNAME-alice");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = l.local_addr().unwrap();
    let proxy = Proxy::start(relay).await;
    let r = h.open(goal, None, l, &format!("http://p.localhost:{}", proxy.addr.port())).await.unwrap();
    let g = chan("GUESTNAME-bob");
    g.join(&r.join_link).await.unwrap();
    h.say("HOSTSECRET-one").await.unwrap();
    g.say("GUESTSECRET-two").await.unwrap();
    let _ = listen_texts(&g).await;

    // Cut the connection; messages sent meanwhile arrive after the automatic resume.
    proxy.kill_all();
    for _ in 0..100 {
        if !h.status().await.unwrap().members.iter().find(|m| m.id != 0).unwrap().connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.say("HOSTSECRET-missed-1").await.unwrap();
    h.say("HOSTSECRET-missed-2").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(listen_texts(&g).await);
        if got.len() >= 2 {
            break;
        }
    }
    assert_eq!(got, vec!["HOSTSECRET-missed-1", "HOSTSECRET-missed-2"]);
    assert!(g.status().await.unwrap().connected);

    // Tampering in flight is detected, never shown, and the member resumes.
    proxy.flip_next_down.store(true, Ordering::SeqCst);
    h.say("HOSTSECRET-after-flip").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(listen_texts(&g).await);
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, vec!["HOSTSECRET-after-flip"]);
    assert_eq!(g.status().await.unwrap().tampering_detected, 1);

    h.close(Some("SUMMARY-secret")).await.unwrap();
    let cap = proxy.captured();
    assert!(cap.len() > 1000);
    for needle in [goal, "HOSTNAME", "GUESTNAME", "HOSTSECRET", "GUESTSECRET", "SUMMARY-secret", "launch"] {
        assert!(!contains(&cap, needle), "relay saw plaintext {needle}");
    }
    // The link secret never crosses the wire either.
    let frag = r.join_link.split_once('#').unwrap().1;
    assert!(!contains(&cap, frag));
    assert!(contains(&cap, "GET /t/"), "sanity: the capture holds the upgrade request");
}

#[tokio::test]
async fn teardown_is_prompt_with_idle_unauthenticated_socket() {
    let (h, _link, addr) = host("idle").await;
    let _idle = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /t/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), h.close(None)).await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
}

#[tokio::test]
async fn wrong_path_and_garbage_are_refused() {
    let (h, _link, addr) = host("paths").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /t/otherroom1234 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("404"));
    let mut g = TcpStream::connect(addr).await.unwrap();
    g.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), g.read(&mut buf)).await.unwrap().unwrap_or(0);
    let _ = n;
    h.say("relay still serves").await.unwrap();
    h.close(None).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn listen_waits_with_progress_and_caps_timeout() {
    let (h, _link, _addr) = open_room("host", "g", |port| format!("ws://127.0.0.1:{port}")).await;
    // The opening system message is returned immediately.
    let first = h.listen(None, None, None).await.unwrap();
    assert!(first.messages[0].text.contains("opened the room") && !first.timed_out);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let t = tokio::time::Instant::now();
    let r = h.listen(None, Some(Duration::from_secs(600)), Some(tx)).await.unwrap();
    assert!(r.timed_out && r.messages.is_empty());
    assert_eq!(t.elapsed(), Duration::from_secs(45));
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 8, "progress every 5 s within 45 s");
    h.close(None).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_room_closes_after_30_minutes() {
    let (h, _link, _addr) = open_room("host", "g", |port| format!("ws://127.0.0.1:{port}")).await;
    tokio::time::sleep(Duration::from_secs(29 * 60)).await;
    assert!(!h.status().await.unwrap().closed);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let r = h.listen(None, Some(Duration::from_secs(1)), None).await.unwrap();
    assert!(r.closed);
    assert!(r.messages.iter().any(|m| m.text.contains("30 minutes")));
    assert!(h.status().await.is_none());
}
