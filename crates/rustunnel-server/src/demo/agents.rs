//! `rustunnel-server demo agents`: the agent channel on loopback, in one process. A dev server, a room
//! whose relay is published through an HTTP tunnel (as `tunnel_open` does), a guest that joins
//! with the single-use link, encrypted messages both ways, matching verification codes, a
//! reused link refused, and a clean teardown. Each step is printed.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustunnel_agent::member::JoinError;
use rustunnel_agent::room::EventKind;
use rustunnel_agent::session::{AgentChannel, ChannelConfig, SessionError};
use rustunnel_client::{ClientHandle, ClientOptions, Event, TlsOptions, TunnelConfig};
use rustunnel_proto::Protocol;
use rustunnel_server::{Config, ServerHandle};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

fn step(n: u32, text: impl AsRef<str>) {
    println!("[{n}] {}", text.as_ref());
}

/// A join link with its secret fragment hidden, for printing.
fn masked(link: &str) -> String {
    match link.split_once('#') {
        Some((base, secret)) => {
            format!("{base}#{}… (secret, {} chars)", secret.chars().take(4).collect::<String>(), secret.len())
        }
        None => link.to_string(),
    }
}

/// Listens until `text` arrives as a chat message; returns whether it was marked untrusted.
async fn wait_chat(c: &AgentChannel, text: &str) -> anyhow::Result<bool> {
    for _ in 0..5 {
        let r = c.listen(None, Some(WAIT), None).await?;
        if let Some(m) = r.messages.iter().find(|m| m.kind == EventKind::Chat && m.text == text) {
            return Ok(m.untrusted);
        }
        anyhow::ensure!(!r.closed, "the room closed");
    }
    anyhow::bail!("message not received: {text}")
}

pub async fn run() -> i32 {
    match demo().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo agents failed: {e:#}");
            1
        }
    }
}

async fn demo() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerHandle::spawn(Config::ephemeral(dir.path())).await?;
    let control = server.control_addr();
    step(1, format!("dev server up: control localhost:{}", control.port()));

    // The host's relay on loopback, published through an HTTP tunnel (WebSocket passes through).
    let relay = TcpListener::bind("127.0.0.1:0").await?;
    let relay_port = relay.local_addr()?.port();
    let mut opts = ClientOptions::new(control.to_string(), server.admin_token());
    opts.tls = TlsOptions { insecure: true, ca: None };
    opts.tunnels = vec![TunnelConfig::new("agent-room", Protocol::Http, relay_port)];
    let started = Instant::now();
    let mut client = ClientHandle::spawn(opts);
    let ready = tokio::time::timeout(Duration::from_secs(15), client.wait_ready(1)).await??;
    let public = ready
        .iter()
        .find_map(|e| match e {
            Event::TunnelReady { public_urls, .. } => public_urls.iter().find(|u| u.starts_with("http://")).cloned(),
            _ => None,
        })
        .context("the tunnel has no http:// URL")?;
    step(
        2,
        format!(
            "room relay on 127.0.0.1:{relay_port}, published at {public} in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ),
    );

    let setup = format!("claude mcp add rustunnel -- rustunnel-mcp --server localhost:{} --insecure", control.port());
    let host = AgentChannel::new(ChannelConfig { display_name: "alice-agent".into(), setup_command: setup.clone() });
    let guest = AgentChannel::new(ChannelConfig { display_name: "bob-agent".into(), setup_command: setup.clone() });
    let opened = host.open("Pair on the failing checkout test", None, relay, &public).await?;
    step(
        3,
        format!(
            "alice-agent opened a room (tunnel_open); invite link, single-use, expires in {} s:\n      {}",
            opened.join_link_expires_in_sec,
            masked(&opened.join_link)
        ),
    );

    let joined = guest.join(&opened.join_link).await?;
    step(
        4,
        format!(
            "bob-agent joined (tunnel_join): Noise NNpsk0 handshake done; goal received encrypted: \"{}\"",
            joined.goal
        ),
    );

    let status = host.status().await.context("host has no room")?;
    let host_code = status
        .members
        .iter()
        .find(|m| m.id == joined.me.id)
        .and_then(|m| m.verification_code.clone())
        .context("the host has no code for bob-agent")?;
    anyhow::ensure!(
        host_code == joined.verification_code,
        "verification codes differ: {host_code} vs {}",
        joined.verification_code
    );
    step(
        5,
        format!(
            "verification codes match: alice sees {host_code}, bob sees {} (humans compare these out of band)",
            joined.verification_code
        ),
    );

    let q = "Hi alice, I can reproduce the checkout failure. Which seed do you use?";
    let seq = guest.say(q).await?.seq;
    anyhow::ensure!(wait_chat(&host, q).await?, "bob's message is not marked untrusted");
    step(6, format!("bob -> alice (seq {seq}, encrypted end to end): \"{q}\" (received, marked untrusted)"));

    let a = "Seed 42. Send me your stack trace when you have it.";
    let seq = host.say(a).await?.seq;
    anyhow::ensure!(wait_chat(&guest, a).await?, "alice's message is not marked untrusted");
    step(7, format!("alice -> bob (seq {seq}): \"{a}\" (received)"));

    let eve = AgentChannel::new(ChannelConfig { display_name: "eve-agent".into(), setup_command: setup });
    match eve.join(&opened.join_link).await {
        Err(SessionError::Join(JoinError::AlreadyUsed)) => {
            step(8, format!("reusing the same link is rejected: \"{}\"", JoinError::AlreadyUsed))
        }
        Err(e) => anyhow::bail!("reused link failed for another reason: {e}"),
        Ok(_) => anyhow::bail!("a reused link was accepted"),
    }

    host.close(Some("seed 42 reproduces it; bob sends the trace")).await?;
    let mut last = None;
    let mut closed = false;
    for _ in 0..5 {
        let r = guest.listen(None, Some(WAIT), None).await?;
        if let Some(m) = r.messages.iter().rev().find(|m| m.kind == EventKind::System) {
            last = Some(m.text.clone());
        }
        if r.closed {
            closed = true;
            break;
        }
    }
    anyhow::ensure!(closed, "the guest did not see the room close");
    step(9, format!("alice closed the room (tunnel_close); bob got: \"{}\"", last.unwrap_or_default()));

    client.stop().await.ok();
    server.shutdown().await;
    anyhow::ensure!(host.status().await.is_none() && guest.status().await.is_none(), "a room is still open");
    step(10, "relay, tunnel, keys and transcript are gone; server stopped. Use it for real with rustunnel-mcp:");
    println!("      rustunnel-mcp install-skill");
    println!("      claude mcp add rustunnel -- rustunnel-mcp --server <your server>");
    Ok(())
}
