//! Copying between a plain TCP socket and a lean TLS connection whose records are ours
//! ([`Records`]), without a copy buffer in between:
//! - TCP to TLS: the socket is read (`readv`) straight into the record slots of the output
//!   buffer, each 16 KiB slot sealed in place, and the records written out as they are;
//! - TLS to TCP: the records in the input buffer are opened in place and their plaintexts
//!   written to the socket with one `writev`.
//!
//! The generic copy ([`crate::splice::splice`]) moves every byte once more each way: into its
//! own buffer, then into (or out of) the TLS buffers. Like it: both directions at once,
//! half-close preserved (EOF on TCP sends `close_notify` and a TCP half-close; the peer's
//! `close_notify` shuts the socket's write side), and buffers are held only while bytes are in
//! flight. A TLS connection that ends without `close_notify` ends the copy with an error, so
//! the caller can reset the socket instead of passing on a clean end.
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut};
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::conn::LeanTls;
use super::side::Side;
use crate::record::{record_len, sealed_len, Opened, RecordError, HEADER, KEY_UPDATE_ROOM, MAX_PLAIN};
use crate::splice::still_bulk;

/// Wire length of a full record: the stride of the record slots in the output buffer.
const SLOT: usize = sealed_len(MAX_PLAIN);
/// Records opened at most before their plaintext is written out.
const MAX_BATCH: usize = 64;

/// TCP to TLS.
#[derive(Default)]
struct Up {
    read_done: bool,
    done: bool,
    amt: u64,
}

/// TLS to TCP.
#[derive(Default)]
struct Down {
    /// Plaintext of the opened records at the front of the input not yet written (offsets into
    /// its pending bytes), from `next` on.
    batch: Vec<Range<usize>>,
    next: usize,
    /// Length of the opened records: consumed once their plaintext is written.
    batch_len: usize,
    done: bool,
    amt: u64,
}

fn not_ours() -> io::Error {
    io::Error::other("TLS records are with rustls: use the generic copy")
}

impl<C: Side> LeanTls<C> {
    /// Copies both ways between `tcp` and this connection until both directions have ended.
    /// Only for a connection whose records are ours ([`LeanTls::owns_records`]; an error
    /// otherwise). `on_up` / `on_down` are told each chunk's size as it moves (`tcp` to TLS and
    /// back). Returns the bytes moved each way.
    pub async fn splice_tcp(
        &mut self,
        tcp: &mut TcpStream,
        on_up: &(dyn Fn(usize) + Sync),
        on_down: &(dyn Fn(usize) + Sync),
    ) -> io::Result<(u64, u64)> {
        if self.records.is_none() {
            return Err(not_ours());
        }
        let mut up = Up::default();
        let mut down = Down::default();
        poll_fn(|cx| {
            let a = self.poll_up(cx, &mut up, tcp, on_up)?;
            let b = self.poll_down(cx, &mut down, tcp, on_down)?;
            match (a, b) {
                (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok((up.amt, down.amt))),
                _ => Poll::Pending,
            }
        })
        .await
    }

    fn poll_up(
        &mut self,
        cx: &mut Context<'_>,
        st: &mut Up,
        tcp: &TcpStream,
        on: &(dyn Fn(usize) + Sync),
    ) -> Poll<io::Result<()>> {
        if st.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if st.read_done {
                // Flushes, then close_notify and the TCP half-close.
                ready!(Pin::new(&mut *self).poll_shutdown(cx))?;
                st.done = true;
                return Poll::Ready(Ok(()));
            }
            // What the socket takes now goes; waiting for it only when no record fits.
            self.try_flush_out()?;
            if self.out_room() < SLOT + KEY_UPDATE_ROOM {
                ready!(self.poll_flush_out(cx))?;
                continue;
            }
            // The reads below do not go through tokio's budget: a source and a sink that are
            // always ready must not keep this task (and the other direction) from yielding.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            match self.seal_from(tcp) {
                Ok(0) => st.read_done = true,
                Ok(n) => {
                    coop.made_progress();
                    st.amt += n as u64;
                    on(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing to read: the records held go out while we wait.
                    ready!(self.poll_flush_out(cx))?;
                    ready!(tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// One read from `tcp` into record slots of the output buffer, sealed in place (after a key
    /// update record when one is due). Returns the plaintext bytes read; `WouldBlock` when
    /// there were none.
    fn seal_from(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        let LeanTls { records, out, .. } = self;
        let records = records.as_mut().ok_or_else(not_ours)?;
        // Takes a buffer if none is held (a bulk one while the process's budget allows), then
        // as many slots as it has room for; never more records than one key may seal.
        let room = out.reserve(KEY_UPDATE_ROOM + SLOT).len();
        let slots = ((room - KEY_UPDATE_ROOM) / SLOT).min(records.records_per_key());
        let buf = out.reserve(KEY_UPDATE_ROOM + slots * SLOT);
        let mut at = 0;
        if records.key_update_due(slots as u64) {
            at = records.key_update(buf, false)?;
        }
        let mut iovs: Vec<IoSliceMut<'_>> = buf[at..at + slots * SLOT]
            .chunks_mut(SLOT)
            .map(|slot| IoSliceMut::new(&mut slot[HEADER..HEADER + MAX_PLAIN]))
            .collect();
        let read = tcp.try_read_vectored(&mut iovs);
        drop(iovs);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                out.commit(at);
                return Err(e);
            }
        };
        // Every slot but the last one filled is full, so the records lie back to back.
        let mut left = n;
        while left > 0 {
            let k = left.min(MAX_PLAIN);
            at += records.seal_in_place(&mut buf[at..], k)?;
            left -= k;
        }
        out.commit(at);
        let bulk = still_bulk(out.is_bulk(), n, slots * MAX_PLAIN);
        out.set_bulk(bulk);
        Ok(n)
    }

    fn poll_down(
        &mut self,
        cx: &mut Context<'_>,
        st: &mut Down,
        tcp: &mut TcpStream,
        on: &(dyn Fn(usize) + Sync),
    ) -> Poll<io::Result<()>> {
        if st.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Bytes read ahead of the copy (an upgrade's leftovers, rustls's last plaintext).
            if self.plain_pos < self.plain.len() {
                let n = ready!(Pin::new(&mut *tcp).poll_write(cx, &self.plain[self.plain_pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.plain_pos += n;
                if self.plain_pos == self.plain.len() {
                    self.plain = Vec::new();
                    self.plain_pos = 0;
                }
                st.amt += n as u64;
                on(n);
                continue;
            }
            // A record a reader had opened and not finished.
            if st.batch_len == 0 {
                if let Some((range, len)) = self.opened.take() {
                    st.batch.push(range);
                    st.batch_len = len;
                }
            }
            if st.next < st.batch.len() {
                let pending = self.inbuf.pending();
                let iovs: Vec<IoSlice<'_>> =
                    st.batch[st.next..].iter().map(|r| IoSlice::new(&pending[r.clone()])).collect();
                let n = ready!(Pin::new(&mut *tcp).poll_write_vectored(cx, &iovs))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                let mut left = n;
                while left > 0 {
                    let r = &mut st.batch[st.next];
                    let k = left.min(r.len());
                    r.start += k;
                    left -= k;
                    if r.start == r.end {
                        st.next += 1;
                    }
                }
                st.amt += n as u64;
                on(n);
                continue;
            }
            if st.batch_len > 0 {
                self.inbuf.consume(st.batch_len);
                // Nothing held between batches.
                st.batch = Vec::new();
                st.next = 0;
                st.batch_len = 0;
                continue;
            }
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Err(e));
            }
            if self.peer_closed {
                ready!(Pin::new(&mut *tcp).poll_shutdown(cx))?;
                st.done = true;
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = self.open_batch(st) {
                let e = self.fail(e);
                // The plaintext of the records before the bad one is written out first.
                if st.batch_len == 0 {
                    return Poll::Ready(Err(e));
                }
                self.failed = Some(e);
            }
            if st.batch_len == 0 {
                // No complete record: more bytes are read.
                ready!(self.poll_held(cx))?;
                if ready!(self.poll_fill(cx))? == 0 {
                    return Poll::Ready(Err(self.truncated()));
                }
            }
        }
    }

    /// Opens the complete records at the front of the input, up to [`MAX_BATCH`].
    fn open_batch(&mut self, st: &mut Down) -> Result<(), RecordError> {
        let LeanTls { inbuf, records, peer_closed, .. } = self;
        let Some(records) = records.as_mut() else { return Ok(()) };
        let pending = inbuf.pending_mut();
        let mut at = 0;
        while st.batch.len() < MAX_BATCH {
            // On an error, the records before the bad one are the batch.
            st.batch_len = at;
            let Some(len) = record_len(&pending[at..])? else { break };
            if at + len > pending.len() {
                break;
            }
            match records.open(&mut pending[at..at + len])? {
                Opened::Data(r) if !r.is_empty() => st.batch.push(at + r.start..at + r.end),
                Opened::Data(_) => {}
                Opened::Control => {}
                Opened::Closed => {
                    *peer_closed = true;
                    at += len;
                    break;
                }
            }
            at += len;
        }
        st.batch_len = at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::super::tests::{configs, pair, pattern, spoiled_client};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // (the app's end, the end the copy gets)
    use super::*;
    use crate::zerocopy::tests::pair as tcp_pair;

    #[tokio::test]
    async fn both_ways_with_half_close_key_updates_and_read_ahead_bytes() {
        // app <-> tcp <-> [lean, our records] <-> rustls peer. Our key changes every 2 records;
        // the peer changes its own (and asks for ours) before answering; bytes the lean end had
        // read ahead before the copy (an upgrade's leftovers, a record half read) come first.
        let (s, c) = configs(&rustls::version::TLS13);
        let (lean, peer) = pair(s, c).await;
        let (mut lean, mut peer) = (lean.unwrap(), peer.unwrap());
        lean.records.as_mut().unwrap().set_key_update_every(2);
        peer.write_all(b"0123456789").await.unwrap();
        peer.flush().await.unwrap();
        let mut first = [0u8; 4];
        lean.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"0123");
        assert!(lean.opened.is_some(), "the record is half read");
        lean.unread(b"ahead:");
        let (mut app, mut ours) = tcp_pair().await;
        let (up, down) = (pattern(8_000_000), pattern(6_000_001));
        let (counted_up, counted_down) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let copy = async {
            let moved = lean
                .splice_tcp(&mut ours, &|n| _ = counted_up.fetch_add(n, Ordering::Relaxed), &|n| {
                    _ = counted_down.fetch_add(n, Ordering::Relaxed)
                })
                .await
                .unwrap();
            (moved, lean)
        };
        let up2 = up.clone();
        let down2 = down.clone();
        let peer_side = async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            peer.get_mut().1.refresh_traffic_keys().unwrap();
            peer.write_all(&down2).await.unwrap();
            peer.shutdown().await.unwrap();
            got
        };
        let app_side = async move {
            let (mut r, mut w) = app.split();
            let writer = async {
                w.write_all(&up2).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let reader = r.read_to_end(&mut got);
            let (_, n) = tokio::join!(writer, reader);
            n.unwrap();
            got
        };
        let ((moved, lean), peer_got, app_got) =
            tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(copy, peer_side, app_side) })
                .await
                .expect("no deadlock");
        assert_eq!(Sha256::digest(&peer_got), Sha256::digest(&up), "up");
        let mut want = b"ahead:456789".to_vec();
        want.extend_from_slice(&down);
        assert_eq!(Sha256::digest(&app_got), Sha256::digest(&want), "down, read-ahead bytes first");
        assert_eq!(moved, (up.len() as u64, want.len() as u64));
        assert_eq!((counted_up.load(Ordering::Relaxed), counted_down.load(Ordering::Relaxed)), (up.len(), want.len()));
        let (followed, sent) = lean.records.as_ref().unwrap().key_updates();
        assert!(followed == 1 && sent >= 8_000_000 / MAX_PLAIN as u32 / 2, "followed {followed}, sent {sent}");
        assert!(!lean.out.is_held() && !lean.inbuf.is_held(), "nothing held after the copy");
    }

    #[tokio::test]
    async fn a_spoiled_record_ends_the_copy_with_an_error_and_no_bad_plaintext() {
        let mut lean = spoiled_client(300_000, |r| r[5000] ^= 1).await;
        let (mut app, mut ours) = tcp_pair().await;
        let app_side = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = app.read_to_end(&mut got).await;
            got
        });
        let r = tokio::time::timeout(Duration::from_secs(10), lean.splice_tcp(&mut ours, &|_| {}, &|_| {}))
            .await
            .expect("no hang");
        let e = r.unwrap_err();
        assert!(e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("bad_record_mac"), "{e}");
        drop(ours);
        let got = app_side.await.unwrap();
        assert!(got.len() < 300_000 && got[..] == pattern(1_000_000)[..got.len()], "only good plaintext");
    }

    #[tokio::test]
    async fn connections_on_rustls_records_are_refused() {
        let (s, c) = configs(&rustls::version::TLS12);
        let (lean, _peer) = pair(s, c).await;
        let mut lean = lean.unwrap();
        let (_app, mut ours) = tcp_pair().await;
        let e = lean.splice_tcp(&mut ours, &|_| {}, &|_| {}).await.unwrap_err();
        assert!(e.to_string().contains("generic copy"), "{e}");
    }
}
