//! The reconnect policy shared by the tunnel session and the P2P sessions: exponential backoff
//! with jitter from [`BASE_DELAY`] up to a cap, started over after a session that stayed up for
//! [`HEALTHY_PERIOD`], and the waits a server imposes (restart announced, rate limit).
//!
//! Jitter spreads the clients that lost one server together, so they do not come back together.
use std::time::Duration;

use rand::Rng as _;
use rustunnel_proto::ErrorCode;

use crate::error::ClientError;

/// The first backoff step.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// The cap of the backoff when the options name none (`ClientOptions::max_backoff`).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_millis(800);
/// A session up at least this long counts as healthy: the next loss starts the backoff over.
/// A server that accepts and drops at once keeps the backoff growing instead.
pub const HEALTHY_PERIOD: Duration = Duration::from_secs(10);
/// How long a client refused for too many failed logins from its address waits before trying
/// again. The server counts failures per IP over a fixed minute and names no retry time, so a
/// minute always outlasts the block; retrying sooner only gets refused again.
pub const RATE_LIMITED_WAIT: Duration = Duration::from_secs(60);
/// The longest wait a server's `retry_after_ms` can impose on a reconnecting client.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(600);

/// What decides the pause before the next reconnect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Jittered exponential backoff up to the cap.
    Backoff,
    /// The server announced a restart and when to come back: at most that long, spread.
    ServerAsked(Duration),
    /// The server refuses us for a while: never sooner than this (plus jitter, so clients
    /// behind one address do not return together).
    AtLeast(Duration),
}

impl Wait {
    /// The wait after a retryable error: as long as the server said (bounded), a rate limit's
    /// usual minute when it said nothing, else the backoff.
    pub fn after(e: &ClientError) -> Wait {
        match (e.retry_after(), e) {
            (Some(d), _) => Wait::AtLeast(d.clamp(Duration::from_secs(1), MAX_SERVER_WAIT)),
            (None, ClientError::Rejected { code: ErrorCode::RateLimited, .. }) => Wait::AtLeast(RATE_LIMITED_WAIT),
            (None, _) => Wait::Backoff,
        }
    }
}

/// Counts the attempts of one run and says how long to wait before each.
#[derive(Debug, Clone)]
pub struct Backoff {
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff capped at `max` (at least [`BASE_DELAY`]).
    pub fn new(max: Duration) -> Backoff {
        Backoff { max: max.max(BASE_DELAY), attempt: 0 }
    }

    /// A session that had connected ended after `up_for`: a healthy one starts the count over.
    pub fn session_ended(&mut self, up_for: Duration) {
        if up_for >= HEALTHY_PERIOD {
            self.attempt = 0;
        }
    }

    /// The number of the next attempt and the pause before it.
    pub fn next(&mut self, wait: Wait) -> (u32, Duration) {
        self.attempt = self.attempt.saturating_add(1);
        let delay = match wait {
            Wait::Backoff => {
                let step = BASE_DELAY.saturating_mul(1 << self.attempt.min(10).saturating_sub(1));
                jittered(step.min(self.max))
            }
            Wait::ServerAsked(d) => jittered(d),
            Wait::AtLeast(d) => d + jittered(d / 6),
        };
        (self.attempt, delay)
    }
}

/// Between half and all of `d`, at random.
fn jittered(d: Duration) -> Duration {
    let ms = d.as_millis().clamp(2, u64::MAX as u128) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn rate_limited_clients_wait_at_least_a_minute_others_back_off_briefly() {
        let max = Duration::from_millis(800);
        let mut b = Backoff::new(max);
        for _ in 0..100 {
            let (_, d) = b.next(Wait::AtLeast(RATE_LIMITED_WAIT));
            assert!(d >= RATE_LIMITED_WAIT && d <= RATE_LIMITED_WAIT * 2, "{d:?}");
            assert!(b.clone().next(Wait::Backoff).1 <= max);
        }
        assert!(b.next(Wait::ServerAsked(Duration::from_secs(2))).1 <= Duration::from_secs(2));
        let limited = ClientError::rejected(ErrorCode::RateLimited, "slow down".into(), None);
        assert_eq!(Wait::after(&limited), Wait::AtLeast(RATE_LIMITED_WAIT));
        let said = ClientError::rejected(ErrorCode::RateLimited, "slow down".into(), Some(45_000));
        assert_eq!(Wait::after(&said), Wait::AtLeast(Duration::from_secs(45)));
        let huge = ClientError::rejected(ErrorCode::RateLimited, "slow down".into(), Some(u64::MAX));
        assert_eq!(Wait::after(&huge), Wait::AtLeast(MAX_SERVER_WAIT));
        assert_eq!(Wait::after(&ClientError::Lost("reset".into())), Wait::Backoff);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_is_spread_at_random() {
        let max = Duration::from_secs(30);
        for attempt in 1..=12u32 {
            let base = Duration::from_millis(100 << (attempt.min(10) - 1)).min(max);
            let delays: Vec<Duration> = (0..200)
                .map(|_| {
                    let mut b = Backoff { max, attempt: attempt - 1 };
                    let (n, d) = b.next(Wait::Backoff);
                    assert_eq!(n, attempt);
                    d
                })
                .collect();
            // Between half and all of the exponential step, never the same for everyone: clients
            // that lost one server together do not come back together.
            assert!(delays.iter().all(|d| *d >= base / 2 && *d <= base), "attempt {attempt}: {delays:?}");
            let distinct: BTreeSet<_> = delays.iter().collect();
            assert!(distinct.len() > 20, "attempt {attempt}: only {} distinct delays", distinct.len());
        }
        // A server that asked for a pause is given at most that long, also spread.
        let asked: BTreeSet<_> =
            (0..100).map(|_| Backoff::new(max).next(Wait::ServerAsked(Duration::from_secs(2))).1).collect();
        assert!(asked.len() > 20 && asked.iter().all(|d| *d >= Duration::from_secs(1)));
    }

    /// Drives the policy as a session loop does, on tokio's paused clock: a server that keeps
    /// dropping the connection at once makes the waits grow to the cap; one that stayed up for
    /// the healthy period starts them over.
    #[tokio::test(start_paused = true)]
    async fn a_healthy_session_starts_the_backoff_over_a_flapping_one_does_not() {
        let max = DEFAULT_MAX_BACKOFF;
        let mut b = Backoff::new(max);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let up = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.session_ended(up.elapsed());
            let (n, d) = b.next(Wait::Backoff);
            waits.push((n, d));
            tokio::time::sleep(d).await;
        }
        assert_eq!(waits.iter().map(|w| w.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        assert!(waits[3..].iter().all(|(_, d)| *d >= max / 2 && *d <= max), "{waits:?}");

        let up = tokio::time::Instant::now();
        tokio::time::sleep(HEALTHY_PERIOD).await;
        b.session_ended(up.elapsed());
        let (n, d) = b.next(Wait::Backoff);
        assert_eq!(n, 1);
        assert!(d >= BASE_DELAY / 2 && d <= BASE_DELAY, "{d:?}");

        // Just short of healthy: the count goes on.
        let up = tokio::time::Instant::now();
        tokio::time::sleep(HEALTHY_PERIOD - Duration::from_millis(1)).await;
        b.session_ended(up.elapsed());
        assert_eq!(b.next(Wait::Backoff).0, 2);
    }

    #[test]
    fn a_cap_below_the_first_step_still_waits_a_little() {
        let mut b = Backoff::new(Duration::ZERO);
        let (_, d) = b.next(Wait::Backoff);
        assert!(d >= BASE_DELAY / 2 && d <= BASE_DELAY, "{d:?}");
    }
}
