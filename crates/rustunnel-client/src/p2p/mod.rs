//! Private P2P tunnels (`rustunnel p2p`): a publisher shares a local service under a name; a
//! visitor who knows the secret opens a local listener whose connections reach it.
//!
//! Component map:
//! - [`proof`]: the secret proof (SPAKE2 + transcript-bound key confirmation), sans-IO.
//! - [`punch`]: the UDP hole-punching state machine, sans-IO.
//! - `quic`: QUIC endpoints on the punched socket, pinned to the PAKE-authenticated certificate.
//! - `options`: what to publish or reach, and how ([`P2pOptions`]).
//! - `control`: the control session both roles share, the relay path over data connections.
//! - `direct`: candidate gathering through the server's reflector and the punch on the socket.
//! - `visitor`, `publisher`: the two roles' sessions.
//! - this module: running a role with reconnects ([`run`], [`P2pHandle`]).
//!
//! Every stream of a link (direct QUIC stream or relayed data connection) starts with the
//! link's stream authenticator; the publisher connects to its service only after checking it.
//! Wire details: `docs/p2p.md`.
mod control;
mod direct;
mod options;
pub mod proof;
mod publisher;
pub mod punch;
mod quic;
mod visitor;

use std::sync::Arc;
use std::time::Duration;

use rustunnel_proto::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ClientError;
use crate::events::Event;
use crate::net::{split_host_port, Dialer};
use crate::reconnect::{Backoff, Wait, DEFAULT_MAX_BACKOFF};
use crate::tls::client_config;

pub use options::{P2pOptions, P2pRole, DEFAULT_PUNCH_TIMEOUT};

use control::{End, LINK_CLOSED};
use publisher::publisher_session;
use visitor::{tcp_listener, udp_listener, visitor_session, ActiveLink, VisitorCtx};

/// Runs a P2P publisher or visitor until cancelled or a fatal error.
pub async fn run(opts: P2pOptions, events: mpsc::Sender<Event>, cancel: CancellationToken) -> Result<(), ClientError> {
    let r = run_inner(&opts, &events, &cancel).await;
    if let Err(e) = &r {
        let _ = events.try_send(Event::Error {
            code: e.code().into(),
            message: e.to_string(),
            hint: e.hint(&opts.server),
            fatal: true,
        });
    }
    r
}

async fn run_inner(
    opts: &P2pOptions,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    opts.validate()?;
    let (host, port) = split_host_port(&opts.server, 4040)?;
    let tls = client_config(&opts.tls, &[b"http/1.1"])?;
    let dialer = Dialer { host, port, tls };
    let tasks = TaskTracker::new();
    let stop = cancel.child_token();
    let (link_tx, link_rx) = watch::channel::<Option<Arc<ActiveLink>>>(None);
    // The visitor's listener outlives control reconnects.
    if let P2pRole::Connect { bind, .. } = &opts.role {
        let ctx =
            Arc::new(VisitorCtx { opts: opts.clone(), link: link_rx, events: events.clone(), tasks: tasks.clone() });
        let local_addr = match opts.protocol {
            Protocol::Udp => {
                let sock = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| ClientError::Config(format!("cannot listen on {bind} (udp): {e}")))?;
                let a = sock.local_addr().map_err(|e| ClientError::Config(e.to_string()))?;
                tasks.spawn(udp_listener(Arc::new(sock), ctx, stop.clone()));
                a
            }
            _ => {
                let l = TcpListener::bind(bind)
                    .await
                    .map_err(|e| ClientError::Config(format!("cannot listen on {bind}: {e}")))?;
                let a = l.local_addr().map_err(|e| ClientError::Config(e.to_string()))?;
                tasks.spawn(tcp_listener(l, ctx, stop.clone()));
                a
            }
        };
        let result = reconnect_loop(opts, events, cancel, || async {
            let r = visitor_session(opts, &dialer, &link_tx, events, cancel, local_addr).await;
            let _ = link_tx.send(None);
            r
        })
        .await;
        stop.cancel();
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
        return result;
    }
    let result =
        reconnect_loop(opts, events, cancel, || publisher_session(opts, &dialer, events, cancel, &tasks, &stop)).await;
    stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    result
}

/// Runs `session` until it is cancelled or fails for good, reconnecting after a lost
/// connection or a retryable error (unless reconnecting is off), with the policy the tunnel
/// session uses ([`crate::reconnect`]).
async fn reconnect_loop<F, Fut>(
    opts: &P2pOptions,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    mut session: F,
) -> Result<(), ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<End, ClientError>>,
{
    let mut backoff = Backoff::new(DEFAULT_MAX_BACKOFF);
    loop {
        let started = tokio::time::Instant::now();
        let (reason, wait) = match session().await {
            Ok(End::Cancelled) => return Ok(()),
            Err(e) if e.is_fatal() || !opts.reconnect => return Err(e),
            Ok(End::Lost(reason)) if !opts.reconnect => {
                // A visitor's link can end while the server stays: say which was lost.
                let what = if reason.starts_with(LINK_CLOSED) {
                    reason
                } else {
                    format!("connection to the server lost ({reason})")
                };
                return Err(ClientError::GaveUp(what));
            }
            // Only a session that had its control connection ends as lost.
            Ok(End::Lost(reason)) => {
                backoff.session_ended(started.elapsed());
                (reason, Wait::Backoff)
            }
            Err(e) => (e.to_string(), Wait::after(&e)),
        };
        let (attempt, delay) = backoff.next(wait);
        let _ = events.try_send(Event::Reconnecting { attempt, delay_ms: delay.as_millis() as u64, reason });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// A P2P client running in the background.
pub struct P2pHandle {
    pub events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl P2pHandle {
    pub fn spawn(opts: P2pOptions) -> P2pHandle {
        let (tx, rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(opts, tx, cancel.clone()));
        P2pHandle { events: rx, cancel, task }
    }

    /// Waits for `p2p_ready`; a fatal error comes back as `Err`.
    pub async fn wait_ready(&mut self) -> Result<Event, ClientError> {
        loop {
            match self.events.recv().await {
                Some(e @ Event::P2pReady { .. }) => return Ok(e),
                Some(Event::Error { code, message, fatal: true, .. }) => {
                    return Err(ClientError::Protocol(format!("{code}: {message}")))
                }
                Some(_) => {}
                None => return Err(ClientError::Lost("client stopped".into())),
            }
        }
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the client to end by itself.
    pub async fn join(self) -> Result<(), ClientError> {
        self.task.await.unwrap_or_else(|e| Err(ClientError::Lost(e.to_string())))
    }

    pub async fn stop(self) -> Result<(), ClientError> {
        self.cancel.cancel();
        self.task.await.unwrap_or_else(|e| Err(ClientError::Lost(e.to_string())))
    }
}
