//! What every end that parses WebSocket messages (the control channel on both ends, the agent
//! channel's host) does with one over its size limit.
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::WebSocketStream;

/// Most of a refused message read and dropped after the close frame.
const DISCARD_MAX: usize = 4 << 20;

/// Closes a WebSocket whose peer sent a message over `limit` bytes with code 1009 ("message
/// too big") and a reason naming the limit, then drops the rest of that message until the peer
/// pauses ([`crate::tcp::discard_until_pause`]): closing with it unread would reset the
/// connection, and the peer could lose the close frame to the reset. All of it within
/// `within`: the peer may neither read nor stop.
pub async fn close_too_big<S>(ws: &mut WebSocketStream<S>, limit: usize, within: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame { code: CloseCode::Size, reason: format!("message over {limit} bytes").into() };
    let linger = async {
        if ws.close(Some(frame)).await.is_ok() {
            crate::tcp::discard_until_pause(ws.get_mut(), DISCARD_MAX, Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(within, linger).await;
}
