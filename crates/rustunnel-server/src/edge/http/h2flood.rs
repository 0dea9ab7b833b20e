//! A bound on the HTTP/2 frames a visitor can make the edge answer. Every PING and every
//! SETTINGS frame without the ACK flag obliges the server to send a frame back; hyper/h2 answer
//! each one and have no limit to turn on, so a visitor streaming tiny PINGs (17 bytes each)
//! made the edge spend CPU in step with the visitor's bandwidth. [`FloodGuard`] watches the
//! frame headers of a connection's incoming bytes, sans-IO, and refuses a connection whose
//! answered frames exceed a token bucket: [`BURST`] at once, [`RATE`] a second after that.
//! Legitimate clients stay far below it (browsers send a handful; gRPC's bandwidth probe at
//! most one PING per round trip).
use std::time::Instant;

/// The client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Answered frames a connection may send at once.
pub const BURST: f64 = 2000.0;
/// Answered frames a connection may send per second, sustained.
pub const RATE: f64 = 1000.0;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;

/// The connection sent more answered frames than the bucket allows.
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 control-frame flood: more than {BURST} PING/SETTINGS frames at once or {RATE} a second")]
pub struct Flood;

/// Tracks one connection's incoming bytes (feed every byte read, in order). A connection that
/// does not start with the HTTP/2 preface (HTTP/1) is not watched.
#[derive(Debug)]
pub struct FloodGuard {
    /// Bytes of the preface matched so far.
    preface: usize,
    /// Not an HTTP/2 connection.
    off: bool,
    /// Frame header bytes gathered so far.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Default for FloodGuard {
    fn default() -> Self {
        FloodGuard { preface: 0, off: false, header: [0; 9], have: 0, skip: 0, tokens: BURST, refilled: None }
    }
}

impl FloodGuard {
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Flood> {
        while !data.is_empty() && !self.off {
            if self.preface < PREFACE.len() {
                let n = (PREFACE.len() - self.preface).min(data.len());
                if data[..n] != PREFACE[self.preface..self.preface + n] {
                    self.off = true;
                    return Ok(());
                }
                self.preface += n;
                data = &data[n..];
            } else if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
            } else {
                let n = (9 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == 9 {
                    self.have = 0;
                    let h = self.header;
                    self.skip = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
                    if matches!(h[3], FRAME_SETTINGS | FRAME_PING) && h[4] & FLAG_ACK == 0 {
                        self.spend()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn spend(&mut self) -> Result<(), Flood> {
        let now = Instant::now();
        if let Some(then) = self.refilled {
            self.tokens = (self.tokens + now.duration_since(then).as_secs_f64() * RATE).min(BURST);
        }
        self.refilled = Some(now);
        if self.tokens < 1.0 {
            return Err(Flood);
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(typ: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], typ, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    fn ping(ack: bool) -> Vec<u8> {
        frame(FRAME_PING, if ack { FLAG_ACK } else { 0 }, &[7; 8])
    }

    #[test]
    fn a_ping_flood_is_refused_and_acks_and_other_frames_are_not_counted() {
        let mut g = FloodGuard::default();
        g.feed(PREFACE).unwrap();
        g.feed(&frame(FRAME_SETTINGS, 0, &[0; 12])).unwrap();
        // ACKs and other frames (DATA with a payload that looks like PING headers) are free.
        for _ in 0..10_000 {
            g.feed(&ping(true)).unwrap();
            g.feed(&frame(FRAME_SETTINGS, FLAG_ACK, &[])).unwrap();
            g.feed(&frame(0x0, 0, &ping(false))).unwrap();
        }
        let flood: Vec<u8> = (0..3 * BURST as usize).flat_map(|_| ping(false)).collect();
        assert!(g.feed(&flood).is_err());
    }

    #[test]
    fn the_bucket_refills_with_time() {
        let mut g = FloodGuard::default();
        g.feed(PREFACE).unwrap();
        let burst: Vec<u8> = (0..BURST as usize).flat_map(|_| ping(false)).collect();
        g.feed(&burst).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        // About 50 ms' worth of the rate is available again.
        let some: Vec<u8> = (0..(RATE * 0.03) as usize).flat_map(|_| ping(false)).collect();
        g.feed(&some).unwrap();
    }

    #[test]
    fn http1_connections_are_not_watched() {
        let mut g = FloodGuard::default();
        g.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let flood: Vec<u8> = (0..3 * BURST as usize).flat_map(|_| ping(false)).collect();
        g.feed(&flood).unwrap();
    }

    proptest! {
        /// The same verdict however the bytes are split across reads.
        #[test]
        fn splitting_does_not_matter(
            cuts in proptest::collection::vec(1usize..64, 1..400),
            // Well below or well above the burst: the verdict must not depend on timing.
            pings in prop_oneof![0usize..2000, 4000usize..5000],
        ) {
            let mut stream = PREFACE.to_vec();
            stream.extend(frame(FRAME_SETTINGS, 0, &[0; 6]));
            for i in 0..pings {
                stream.extend(frame(0x0, 0, &[1; 5]));
                stream.extend(ping(i % 3 == 0));
            }
            let mut whole = FloodGuard::default();
            let want = whole.feed(&stream).is_ok();
            let mut g = FloodGuard::default();
            let mut rest = &stream[..];
            let mut ok = true;
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = (*c).min(rest.len());
                if g.feed(&rest[..n]).is_err() {
                    ok = false;
                    break;
                }
                rest = &rest[n..];
            }
            prop_assert_eq!(ok, want);
        }
    }
}
