//! What both roles share: the control session with the server (open, send, wait for an
//! answer), the relay path over data connections, and how a session ends.
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use rustunnel_proto::{ClientMsg, ErrorCode, ServerMsg};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

use crate::error::ClientError;
use crate::net::{resolve, Dialer};

/// Time a peer has to finish each step of the secret proof.
pub(super) const PROOF_STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a quiet UDP flow of a link is kept.
pub(super) const UDP_FLOW_IDLE: Duration = Duration::from_secs(120);
/// QUIC handshake deadline after a successful punch.
pub(super) const QUIC_TIMEOUT: Duration = Duration::from_millis(1500);

/// Any byte stream of a link: a QUIC stream or a relayed data connection.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type BoxIo = Box<dyn Io>;

pub(super) type Ws = crate::session::ControlWs;

pub(super) struct Control {
    pub(super) ws: Ws,
    pub(super) session_id: String,
    pub(super) data_key: String,
    pub(super) reflector: Option<SocketAddr>,
    pub(super) heartbeat: Duration,
    pub(super) pool_size: u16,
}

/// How a visitor's lost link starts its [`End::Lost`] reason.
pub(super) const LINK_CLOSED: &str = "P2P link closed";

pub(super) enum End {
    Cancelled,
    Lost(String),
}

pub(super) fn wrong_secret(name: &str) -> ClientError {
    ClientError::rejected(ErrorCode::P2pWrongSecret, format!("wrong secret for '{name}'"), None)
}

pub(super) async fn open_control(dialer: &Dialer, token: &str) -> Result<Control, ClientError> {
    let tls = dialer.dial().await?;
    let agent = format!("rustunnel-p2p/{}", env!("CARGO_PKG_VERSION"));
    let (ws, w) = crate::session::open_control(dialer, tls, token, agent, false, false).await?;
    let reflector = match w.p2p_udp_port {
        Some(p) => resolve(&dialer.host, p).await.ok().and_then(|a| a.into_iter().next()),
        None => None,
    };
    Ok(Control {
        ws,
        session_id: w.session_id,
        data_key: w.data_key,
        reflector,
        heartbeat: w.heartbeat,
        pool_size: w.pool_size,
    })
}

pub(super) async fn send(ws: &mut Ws, msg: ClientMsg) -> Result<(), ClientError> {
    ws.send(Message::text(msg.encode())).await.map_err(|e| ClientError::Lost(e.to_string()))
}

/// Reads control messages until `pick` returns something, answering pings meanwhile.
pub(super) async fn wait_for<T>(
    ws: &mut Ws,
    deadline: Duration,
    mut pick: impl FnMut(ServerMsg) -> Option<Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let work = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                    Ok(ServerMsg::Ping { nonce }) => send(ws, ClientMsg::Pong { nonce }).await?,
                    Ok(m) => {
                        if let Some(r) = pick(m) {
                            return r;
                        }
                    }
                    Err(_) => {}
                },
                Some(Ok(_)) => {}
                _ => return Err(ClientError::Lost("control connection closed".into())),
            }
        }
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| ClientError::Lost("the P2P peer did not answer in time".into()))?
}

/// Opens a relayed stream of `link_id`: a data connection the server splices to the publisher.
pub(super) async fn open_relay(
    dialer: &Dialer,
    session_id: &str,
    data_key: &str,
    link_id: &str,
) -> Result<Upgraded, ClientError> {
    crate::forward::upgrade_data_conn(dialer, session_id, data_key, Some(link_id)).await
}
