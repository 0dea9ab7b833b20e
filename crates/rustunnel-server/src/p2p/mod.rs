//! P2P rendezvous: published services, links between a visitor and a publisher, the relay of
//! link streams, and the UDP address reflector used for hole punching. See `docs/p2p.md`.
//!
//! The server never sees the P2P secret: the PAKE messages and key confirmations are opaque
//! strings it forwards between the two sessions. It only lets a link carry relayed streams
//! once the publisher has accepted the visitor's proof ([`LinkState::Accepted`]).
//!
//! [`Rendezvous`] is the sans-IO core (publications, link state machine, bounds, expiry);
//! [`on_message`], [`relay`] and [`reflector`] are the thin drivers around it.
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::{ClientMsg, ServerMsg};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

use crate::edge::Counted;
use crate::session::Session;
use crate::state::Shared;

pub mod rendezvous;
pub use rendezvous::*;

fn deliver(shared: &Shared, out: Vec<Out>) {
    for (sid, msg) in out {
        if let Some(s) = shared.session(&sid) {
            let _ = s.out.try_send(msg);
        }
    }
}

/// Handles a P2P control message from `session`.
pub fn on_message(shared: &Arc<Shared>, session: &Arc<Session>, msg: ClientMsg) {
    let owner = session.principal.owner_id.clone();
    let reply = |m: ServerMsg| {
        let _ = session.out.try_send(m);
    };
    match msg {
        ClientMsg::P2pPublish { name, protocol } => {
            match shared.p2p().with_table(|t| t.publish(&owner, &session.id, &name, protocol)) {
                Ok(()) => {
                    tracing::info!(session = %session.id, %name, %protocol, "p2p service published");
                    reply(ServerMsg::P2pPublished { name });
                }
                Err(e) => reply(e.into_msg(String::new(), name)),
            }
        }
        ClientMsg::P2pConnect { link_id, name, protocol, pake, fingerprint, candidates } => {
            let r = shared.p2p().with_table(|t| {
                t.connect(Instant::now(), &owner, &session.id, &link_id, &name, protocol, pake, fingerprint, candidates)
            });
            match r {
                Ok(out) => deliver(shared, out),
                Err(e) => reply(e.into_msg(link_id, name)),
            }
        }
        other => {
            let out = shared.p2p().with_table(|t| t.step(&session.id, other));
            deliver(shared, out);
        }
    }
}

/// A session ended: withdraw its services, close its links.
pub fn session_ended(shared: &Shared, session: &Session) {
    let out = shared.p2p().with_table(|t| t.session_ended(&session.id));
    deliver(shared, out);
}

/// The link `session` may relay over, checked before the data connection is upgraded.
pub fn relayable(shared: &Shared, session: &Session, link_id: &str) -> Option<Link> {
    shared.p2p().with_table(|t| t.relayable(&session.id, link_id))
}

/// Relays one stream of an accepted link: the visitor's upgraded connection is spliced to a
/// data connection taken from the publisher's pool, which first gets a stream header naming
/// the link. Bytes are counted per link and server-wide.
pub async fn relay(shared: Arc<Shared>, link: Link, visitor_peer: SocketAddr, visitor: Upgraded) {
    let Ok(_permit) = link.streams.clone().try_acquire_owned() else {
        return;
    };
    let Some(publisher) = shared.session(&link.publisher) else {
        return;
    };
    let cancel = publisher.cancel.clone();
    let work = async {
        let Ok(conn) = publisher.take_data_conn().await else {
            return;
        };
        shared.p2p().relayed_streams.fetch_add(1, Ordering::Relaxed);
        let header = StreamHeader {
            tunnel_id: link.id.clone(),
            protocol: link.protocol,
            peer: visitor_peer.to_string(),
            mux: false,
        };
        let mut conn = conn;
        if conn.write_all(&header.encode()).await.is_err() {
            return;
        }
        let mut data = Counted::new(Counted::new(conn, link.stats.clone()), shared.p2p().relay_stats.clone());
        let mut v = TokioIo::new(visitor);
        let _ = rustunnel_transport::splice::splice(&mut v, &mut data).await;
    };
    tokio::select! {
        _ = work => {}
        _ = cancel.cancelled() => {}
        _ = shared.hard_stop().cancelled() => {}
    }
}

/// The UDP address reflector: answers each well-formed probe with the address it came from.
pub async fn reflector(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = [0u8; 512];
    let mut limiter = ReflectLimiter::default();
    loop {
        let (n, from) = tokio::select! {
            _ = shared.stop_accepting().cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Some(nonce) = rustunnel_proto::p2p::decode_probe(&buf[..n]) else {
            continue;
        };
        if !limiter.allow(Instant::now(), from.ip()) {
            continue;
        }
        let _ = sock.send_to(&rustunnel_proto::p2p::encode_reflect(nonce, from), from).await;
    }
}
