//! UDP hole punching (sans-IO). Both peers send `PUNCH` packets to every candidate of the
//! other at a fixed pace; a `PUNCH` is answered with an `ACK`. A peer is done when it has
//! heard the other (so the path towards it is open) and has been acked (so its own packets
//! get through): it sends a few final `ACK`s so the other side finishes too, and reports the
//! address that worked. Past the deadline it reports failure and the link stays relayed.
//!
//! Packets start with a zero byte so a QUIC endpoint that later owns the socket drops strays.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PUNCH: &[u8] = b"\0RTP2P-PUNCH";
const ACK: &[u8] = b"\0RTP2P-PACKD";
/// Time between two rounds of punches.
pub const PUNCH_INTERVAL: Duration = Duration::from_millis(50);
const FINAL_ACKS: usize = 3;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(SocketAddr, Vec<u8>),
    /// Both directions work through this address.
    Done(SocketAddr),
    /// No path before the deadline.
    Failed,
}

pub struct Puncher {
    tag: [u8; 16],
    targets: Vec<SocketAddr>,
    deadline: Instant,
    next_round: Instant,
    heard: Option<SocketAddr>,
    acked: bool,
    finished: bool,
}

fn packet(kind: &[u8], tag: &[u8; 16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(kind.len() + 16);
    p.extend_from_slice(kind);
    p.extend_from_slice(tag);
    p
}

impl Puncher {
    pub fn new(now: Instant, tag: [u8; 16], targets: Vec<SocketAddr>, timeout: Duration) -> Self {
        Puncher { tag, targets, deadline: now + timeout, next_round: now, heard: None, acked: false, finished: false }
    }

    /// When the driver should call [`Puncher::on_tick`] next.
    pub fn next_wake(&self) -> Instant {
        self.next_round.min(self.deadline)
    }

    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        if now >= self.deadline {
            self.finished = true;
            return vec![Action::Failed];
        }
        if now < self.next_round {
            return Vec::new();
        }
        self.next_round = now + PUNCH_INTERVAL;
        let pkt = packet(PUNCH, &self.tag);
        // Once the other side was heard, its address is the one that matters.
        match self.heard {
            Some(a) => vec![Action::Send(a, pkt)],
            None => self.targets.iter().map(|a| Action::Send(*a, pkt.clone())).collect(),
        }
    }

    pub fn on_packet(&mut self, _now: Instant, from: SocketAddr, pkt: &[u8]) -> Vec<Action> {
        if self.finished || pkt.len() != PUNCH.len() + 16 || pkt[PUNCH.len()..] != self.tag {
            return Vec::new();
        }
        let mut out = Vec::new();
        if pkt.starts_with(PUNCH) {
            self.heard = Some(from);
            out.push(Action::Send(from, packet(ACK, &self.tag)));
        } else if pkt.starts_with(ACK) {
            self.heard = Some(from);
            self.acked = true;
        } else {
            return out;
        }
        if self.acked {
            if let Some(a) = self.heard {
                self.finished = true;
                out.extend((0..FINAL_ACKS).map(|_| Action::Send(a, packet(ACK, &self.tag))));
                out.push(Action::Done(a));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two punchers over a perfect network where `a`'s first packets are dropped (the other
    /// NAT has no mapping yet).
    #[test]
    fn both_sides_finish() {
        let now = Instant::now();
        let (pa, pb) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
        let tag = [9; 16];
        let mut a = Puncher::new(now, tag, vec![pb, addr("192.168.1.5:2000")], Duration::from_secs(2));
        let mut b = Puncher::new(now, tag, vec![pa], Duration::from_secs(2));
        let mut done = (None, None);
        let mut t = now;
        let mut first = true;
        for _ in 0..20 {
            let mut q: Vec<(bool, SocketAddr, Vec<u8>)> = Vec::new();
            for act in a.on_tick(t) {
                if let Action::Send(to, p) = act {
                    if !first && to == pb {
                        q.push((false, pa, p));
                    }
                }
            }
            first = false;
            for act in b.on_tick(t) {
                if let Action::Send(to, p) = act {
                    assert_eq!(to, pa);
                    q.push((true, pb, p));
                }
            }
            while let Some((to_a, from, p)) = q.pop() {
                let acts = if to_a { a.on_packet(t, from, &p) } else { b.on_packet(t, from, &p) };
                for act in acts {
                    match act {
                        Action::Send(_, p) => q.push((!to_a, if to_a { pa } else { pb }, p)),
                        Action::Done(x) if to_a => done.0 = Some(x),
                        Action::Done(x) => done.1 = Some(x),
                        Action::Failed => panic!("failed"),
                    }
                }
            }
            t += PUNCH_INTERVAL;
        }
        assert_eq!(done, (Some(pb), Some(pa)));
    }

    #[test]
    fn silence_fails_at_deadline_and_forgeries_are_ignored() {
        let now = Instant::now();
        let mut p = Puncher::new(now, [1; 16], vec![addr("10.0.0.2:2")], Duration::from_secs(2));
        assert!(p.on_packet(now, addr("6.6.6.6:6"), &packet(ACK, &[2; 16])).is_empty());
        assert!(p.on_packet(now, addr("6.6.6.6:6"), b"\0RTP2P-PACKD").is_empty());
        assert_eq!(p.on_tick(now + Duration::from_secs(3)), vec![Action::Failed]);
        assert!(p.on_tick(now + Duration::from_secs(4)).is_empty());
    }
}
