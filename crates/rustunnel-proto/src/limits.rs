//! Bounds and timeouts of the protocol. Every value that comes from the network is bounded by
//! one of these before anything is allocated for it.
use std::time::Duration;

/// Largest control message (one WebSocket message), in bytes.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// Largest stream header on a data connection, in bytes.
pub const MAX_STREAM_HEADER: usize = 4 * 1024;
/// Largest UDP datagram carried through a tunnel.
pub const MAX_DATAGRAM: usize = 65_507;
/// Longest token accepted; longer ones are refused like any wrong token.
pub const MAX_TOKEN_LEN: usize = 512;
/// Longest tunnel name.
pub const MAX_TUNNEL_NAME: usize = 64;
/// Most tunnels one client session may hold.
pub const MAX_TUNNELS_PER_SESSION: usize = 64;
/// Time a new connection has to finish TLS, the upgrade and the hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default heartbeat interval; the server announces the one in force in `Welcome`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A peer silent for this many heartbeat intervals is considered gone.
pub const HEARTBEAT_MISSES: u32 = 3;

/// A wait as whole seconds for people and `Retry-After`, rounded up (0.3 s left is "1 s",
/// not "0 s", so a retry at that time is never early).
pub fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_secs_rounds_up_so_a_retry_is_never_early() {
        assert_eq!(whole_secs(Duration::ZERO), 0);
        assert_eq!(whole_secs(Duration::from_millis(300)), 1);
        assert_eq!(whole_secs(Duration::from_secs(5)), 5);
        assert_eq!(whole_secs(Duration::from_millis(5001)), 6);
    }
}
