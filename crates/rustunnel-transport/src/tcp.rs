//! Socket options both ends set on every TCP connection they open or accept, a lingering
//! close, and an abortive one.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// Congestion control for a connection whose peer is this same machine. A loopback connection
/// has no path to probe and no queue to keep short, but a pacing algorithm (BBR, the default
/// of many distributions) still paces it, with a timer per burst, which costs a loopback stream
/// about a third of its throughput. Reno is built into every Linux kernel and any process may
/// choose it.
#[cfg(target_os = "linux")]
const LOOPBACK_CONGESTION: &[u8] = b"reno";

/// `TCP_NODELAY` (every socket of the data path), and for a peer on this machine (the local
/// service, a server on the same host) a congestion control without pacing. Best effort: a
/// refused option leaves the system's choice.
pub fn tune(stream: &TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    if peer.ip().to_canonical().is_loopback() {
        let _ = socket2::SockRef::from(stream).set_tcp_congestion(LOOPBACK_CONGESTION);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = peer;
}

/// Makes the coming close of `stream` a reset (RST, `SO_LINGER` 0) instead of a FIN: for a
/// connection one of whose copies failed (the tunnel hop was cut, the other end reset), so
/// that its peer sees an error and never takes a cut-off transfer for a complete one.
pub fn reset_on_close(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Reads and drops what the peer still sends, until it pauses for `pause`, ends, or `max` bytes
/// have come; for a connection about to be closed while its peer may still be sending (the rest
/// of a refused message). Closing with bytes unread makes the kernel reset the connection, and a
/// reset can make the peer lose the last message it was sent (why it was refused). The caller
/// bounds the total time.
pub async fn discard_until_pause<R: AsyncRead + Unpin>(r: &mut R, max: usize, pause: Duration) {
    let mut sink = [0u8; 8192];
    let mut left = max;
    while left > 0 {
        match tokio::time::timeout(pause, r.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn loopback_connections_get_nodelay_and_no_pacing() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        tune(&c, addr);
        tune(&s, peer);
        for sock in [&c, &s] {
            assert!(sock.nodelay().unwrap());
            #[cfg(target_os = "linux")]
            assert!(socket2::SockRef::from(sock).tcp_congestion().unwrap().starts_with(b"reno\0"));
        }
    }
}
