//! The lean TLS connection: the handshake on rustls, then records on rustls (TLS 1.2) or on
//! [`crate::record`] (TLS 1.3), read and written through the pooled buffers.
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::buffers::{grow_reserve, release, take_out, HELD_MAX, MAX_FRAGMENT, OUT_CAP, RECORD_ROOM};
use super::side::Side;
use crate::record::{record_len, Kernel, Opened, RecordError, Records, ALERT_ROOM};
use crate::splice::{give_buf, still_bulk, take_sized, Window, BULK_SIZE};

/// A connection taken apart by [`LeanTls::into_records`] (for tests).
#[doc(hidden)]
pub struct TakenOver<D> {
    pub tcp: TcpStream,
    pub records: Records<Kernel<D>>,
    /// Bytes received and not yet opened.
    pub received: Vec<u8>,
}

/// The client end.
pub type LeanClient = LeanTls<UnbufferedClientConnection>;
/// The server end.
pub type LeanServer = LeanTls<UnbufferedServerConnection>;

pub struct LeanTls<C: Side> {
    /// rustls: the handshake, and all records of a TLS 1.2 connection. Boxed: after a TLS 1.3
    /// hand-over it is gone, and a held connection should not keep its room.
    pub(super) conn: Option<Box<C>>,
    /// Record protection once rustls has handed over the keys (TLS 1.3).
    pub(super) records: Option<Records<Kernel<C::Data>>>,
    /// The opened record at the front of `inbuf` while its plaintext is being read: the part
    /// not read yet (offsets into the pending bytes) and the record's length.
    pub(super) opened: Option<(Range<usize>, usize)>,
    pub(super) io: TcpStream,
    /// Received TLS bytes rustls has not processed yet.
    pub(super) inbuf: Window,
    /// Encrypted bytes waiting for the socket.
    pub(super) out: Window,
    /// Decrypted bytes waiting for the reader.
    pub(super) plain: Vec<u8>,
    pub(super) plain_pos: usize,
    pub(super) peer_closed: bool,
    pub(super) closed: bool,
    pub(super) close_sent: bool,
    /// The handshake is on and its records will be handed over to [`Records`] after it.
    pub(super) hand_over: bool,
    /// The error that ended the connection after the plaintext before it was handed out:
    /// returned by the next read.
    pub(super) failed: Option<io::Error>,
}

/// What one turn of rustls's state machine asks for.
pub(super) enum Step {
    /// Something was done; turn again.
    Again,
    /// More bytes from the peer are needed.
    NeedRead,
    /// Established, nothing to process: reading needs more bytes from the peer.
    Idle,
    /// Application data was encrypted (this many bytes; 0 once closed for writing).
    Wrote(usize),
    /// Both sides sent close_notify.
    Closed,
}

pub(super) fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl LeanClient {
    /// Client handshake over `io` (already connected, TCP_NODELAY set).
    pub async fn connect(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        io: TcpStream,
    ) -> io::Result<LeanClient> {
        let own_records = config.enable_secret_extraction;
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_err)?;
        LeanTls::handshake(conn, io, own_records).await
    }
}

impl LeanServer {
    /// Server handshake over an accepted `io`.
    pub async fn accept(config: Arc<rustls::ServerConfig>, io: TcpStream) -> io::Result<LeanServer> {
        let own_records = config.enable_secret_extraction;
        let conn = UnbufferedServerConnection::new(config).map_err(tls_err)?;
        LeanTls::handshake(conn, io, own_records).await
    }
}

impl<C: Side> LeanTls<C> {
    /// The handshake on rustls; then, with `own_records` (the config allows secret extraction)
    /// on TLS 1.3, the records on [`Records`].
    async fn handshake(conn: C, io: TcpStream, own_records: bool) -> io::Result<LeanTls<C>> {
        let mut s = LeanTls {
            conn: Some(Box::new(conn)),
            records: None,
            opened: None,
            io,
            inbuf: Window::new(take_sized, give_buf),
            out: Window::new(take_out, release),
            plain: Vec::new(),
            plain_pos: 0,
            peer_closed: false,
            closed: false,
            close_sent: false,
            hand_over: own_records,
            failed: None,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        s.hand_over = false;
        // Driven until it allows writing with nothing left to send: the state rustls requires
        // for the hand-over. Records it has not processed yet stay in `inbuf` for ours, and
        // data it decrypted already is in `plain`, read first.
        if own_records && s.conn.as_ref().is_some_and(|c| c.is_tls13()) {
            if let Some(conn) = s.conn.take() {
                s.records = Some((*conn).into_records()?);
            }
        }
        Ok(s)
    }

    /// Whether records are protected by [`Records`] (rustls handed over the keys).
    pub fn owns_records(&self) -> bool {
        self.records.is_some()
    }

    /// Puts back bytes someone read from this connection ahead of its reader (what an HTTP
    /// upgrade had buffered past its response): they are read first, before anything else.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut front = Vec::with_capacity(bytes.len() + self.plain.len() - self.plain_pos);
        front.extend_from_slice(bytes);
        front.extend_from_slice(&self.plain[self.plain_pos..]);
        self.plain = front;
        self.plain_pos = 0;
    }

    /// Takes the socket and the record layer out of a connection whose records are ours, so a
    /// test can send records a correct peer never would (floods of key updates, alerts), with
    /// the bytes received and not yet opened (records that came with the end of the
    /// handshake, such as session tickets). Plaintext already opened is dropped.
    #[doc(hidden)]
    pub fn into_records(self) -> Option<TakenOver<C::Data>> {
        let received = self.inbuf.pending().to_vec();
        let LeanTls { records, io, .. } = self;
        Some(TakenOver { tcp: io, records: records?, received })
    }

    /// Ends the connection on a record that broke the rules: the alert it calls for goes out
    /// if the socket takes it now (as rustls does, without waiting for a peer that may not
    /// read), then the error is returned.
    pub(super) fn fail(&mut self, e: RecordError) -> io::Error {
        if let Some(records) = self.records.as_mut() {
            if let Ok(n) = records.seal_fatal_alert(grow_reserve(&mut self.out, ALERT_ROOM), &e) {
                self.out.commit(n);
            }
        }
        let _ = self.try_flush_out();
        e.into()
    }

    /// Ends the connection on a rustls error: the alert rustls queued for it goes out first, if
    /// the socket takes it now.
    pub(super) fn fail_rustls(&mut self, e: rustls::Error) -> io::Error {
        // rustls hands out what it queued (the alert) before anything else (plaintext it had
        // decrypted before the error comes first, and is dropped). Only while it has something
        // queued: otherwise it would process the input again, and fail again.
        for _ in 0..4 {
            let Some(conn) = self.conn.as_mut().filter(|c| c.wants_write()) else { break };
            let UnbufferedStatus { discard, state } = conn.process(self.inbuf.pending_mut());
            let again = match state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    let mut alert = [0u8; 64];
                    if let Ok(n) = enc.encode(&mut alert) {
                        grow_reserve(&mut self.out, n)[..n].copy_from_slice(&alert[..n]);
                        self.out.commit(n);
                    }
                    true
                }
                Ok(ConnectionState::ReadTraffic(mut t)) => {
                    while let Some(Ok(_)) = t.next_record() {}
                    true
                }
                _ => false,
            };
            self.inbuf.consume(discard);
            if !again {
                break;
            }
        }
        let _ = self.try_flush_out();
        tls_err(e)
    }

    /// The error for a TCP close that did not follow the peer's `close_notify`.
    pub(super) fn truncated(&self) -> io::Error {
        let msg = if !self.inbuf.is_empty() {
            "TLS connection closed inside a record"
        } else if self.records.as_ref().is_some_and(|r| r.in_handshake_message()) {
            "TLS connection closed inside a handshake message"
        } else {
            "TLS connection closed without close_notify (truncated)"
        };
        io::Error::new(io::ErrorKind::UnexpectedEof, msg)
    }

    /// Before reading more: while the output held for the peer is above [`HELD_MAX`], the
    /// socket must take some of it first. This registers for writability, which a reader
    /// otherwise never does; writers never fill the output that far.
    pub(super) fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.pending().len() > HELD_MAX {
            self.try_flush_out()?;
            while self.out.pending().len() > HELD_MAX {
                ready!(self.poll_flush_some(cx))?;
            }
        }
        Poll::Ready(Ok(()))
    }

    pub(super) fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step(None, None)? {
                Step::Again => {}
                Step::NeedRead => {
                    // Our flight must be out before the peer can answer it.
                    ready!(self.poll_flush_out(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Step::Idle | Step::Wrote(_) => return self.poll_flush_out(cx),
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
            }
        }
    }

    /// One turn: hands rustls the received bytes and does what it asks. With `data`, encrypts
    /// up to one record of it once the connection is established and idle. Decrypted bytes go
    /// to `dest` as far as it has room, the rest to `plain`.
    pub(super) fn step(&mut self, data: Option<&[u8]>, mut dest: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::other("TLS records are no longer with rustls"));
        };
        // Once a TLS 1.3 handshake is over, the records behind it are for our record layer:
        // rustls must not read them before the hand-over. It would follow a key update request
        // there and switch its sending key, and the key update announcing the switch, queued
        // for its next write, would be lost with it. (It is aligned on a record boundary after
        // the peer's Finished, so it holds no bytes of the input.)
        let incoming: &mut [u8] = if self.hand_over && !conn.is_handshaking() && conn.is_tls13() {
            &mut []
        } else {
            self.inbuf.pending_mut()
        };
        let UnbufferedStatus { mut discard, state } = conn.process(incoming);
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                self.inbuf.consume(discard);
                return Err(self.fail_rustls(e));
            }
        };
        let step = match state {
            ConnectionState::ReadTraffic(mut t) => {
                while let Some(rec) = t.next_record() {
                    let rec = rec.map_err(tls_err)?;
                    discard += rec.discard;
                    let p = rec.payload;
                    let k = match dest.as_deref_mut() {
                        Some(d) => {
                            let k = d.remaining().min(p.len());
                            d.put_slice(&p[..k]);
                            k
                        }
                        None => 0,
                    };
                    self.plain.extend_from_slice(&p[k..]);
                }
                Step::Again
            }
            ConnectionState::EncodeTlsData(mut e) => {
                let n = match e.encode(grow_reserve(&mut self.out, 4096)) {
                    Ok(n) => n,
                    // Nothing was written: retry with the size asked for.
                    Err(EncodeError::InsufficientSize(need)) => e
                        .encode(grow_reserve(&mut self.out, need.required_size))
                        .map_err(|e| io::Error::other(e.to_string()))?,
                    Err(e) => return Err(io::Error::other(e.to_string())),
                };
                self.out.commit(n);
                Step::Again
            }
            // The encoded bytes are queued in `out`, which goes to the socket in order and
            // exactly once: as far as rustls is concerned they are sent. Waiting for the socket
            // here instead would stop reading while the peer waits for us to read (deadlock
            // under bulk traffic both ways).
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::NeedRead,
            ConnectionState::PeerClosed => {
                self.peer_closed = true;
                Step::Again
            }
            ConnectionState::Closed => {
                self.peer_closed = true;
                self.closed = true;
                Step::Closed
            }
            ConnectionState::WriteTraffic(mut w) => match data {
                Some(d) if !d.is_empty() && !self.close_sent => {
                    let n = d.len().min(MAX_FRAGMENT);
                    // Payload, record header and AEAD tag, with room to spare.
                    let m = match w.encrypt(&d[..n], self.out.reserve(RECORD_ROOM)) {
                        Ok(m) => m,
                        Err(EncryptError::InsufficientSize(need)) => w
                            .encrypt(&d[..n], self.out.reserve(need.required_size))
                            .map_err(|e| io::Error::other(e.to_string()))?,
                        Err(e) => return Err(io::Error::other(e.to_string())),
                    };
                    self.out.commit(m);
                    Step::Wrote(n)
                }
                Some(_) => Step::Wrote(0),
                None => Step::Idle,
            },
            _ => return Err(io::Error::other("unexpected TLS state")),
        };
        // No compaction here: records are usually processed one per turn, and moving the rest
        // of the buffer each time would copy every byte again (`poll_fill` makes room).
        self.inbuf.consume(discard);
        Ok(step)
    }

    /// Queues close_notify; called right after [`Step::Idle`], when rustls allows writing.
    pub(super) fn queue_close_notify(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let incoming = self.inbuf.pending_mut();
        let UnbufferedStatus { discard, state } = conn.process(incoming);
        if let Ok(ConnectionState::WriteTraffic(mut w)) = state {
            let mut alert = [0u8; 64];
            if let Ok(n) = w.queue_close_notify(&mut alert) {
                grow_reserve(&mut self.out, n)[..n].copy_from_slice(&alert[..n]);
                self.out.commit(n);
            }
        }
        self.inbuf.consume(discard);
    }

    /// Reading once [`Records`] protect the connection: every complete record in the input is
    /// opened in place and its plaintext copied to `buf` as far as it has room; the rest of a
    /// record waits where it is for the next read.
    pub(super) fn poll_read_records(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        loop {
            if let Some((range, len)) = self.opened.take() {
                let src = &self.inbuf.pending()[range.clone()];
                let k = buf.remaining().min(src.len());
                buf.put_slice(&src[..k]);
                if k < src.len() {
                    self.opened = Some((range.start + k..range.end, len));
                    return Poll::Ready(Ok(()));
                }
                self.inbuf.consume(len);
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let Some(records) = self.records.as_mut() else {
                return Poll::Ready(Err(io::Error::other("TLS records are with rustls")));
            };
            let opened = match record_len(self.inbuf.pending()) {
                Ok(Some(len)) if len <= self.inbuf.pending().len() => {
                    records.open(&mut self.inbuf.pending_mut()[..len]).map(|o| Some((o, len)))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            match opened {
                Ok(Some((Opened::Data(range), len))) => self.opened = Some((range, len)),
                Ok(Some((Opened::Control, len))) => self.inbuf.consume(len),
                Ok(Some((Opened::Closed, len))) => {
                    self.inbuf.consume(len);
                    self.peer_closed = true;
                }
                Err(e) => {
                    let e = self.fail(e);
                    // Plaintext before the error goes to the reader first.
                    if buf.filled().len() > before {
                        self.failed = Some(e);
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(e));
                }
                Ok(None) if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Ok(None) => {
                    ready!(self.poll_held(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(self.truncated()));
                    }
                }
            }
        }
    }

    /// Seals as much of `data` as the output buffer has room for, one record per
    /// [`MAX_FRAGMENT`]. Returns the bytes taken.
    pub(super) fn seal_records(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        while taken < data.len() && self.out_room() >= RECORD_ROOM {
            let Some(records) = self.records.as_mut() else { break };
            let n = (data.len() - taken).min(MAX_FRAGMENT);
            let m = records.seal_data(self.out.reserve(RECORD_ROOM), &data[taken..taken + n])?;
            self.out.commit(m);
            taken += n;
        }
        Ok(taken)
    }

    /// Reads from the socket into the input buffer. `Ready(0)` is EOF.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Room for at least a full record at the end, moving the unprocessed part to the front.
        let spare = self.inbuf.spare(RECORD_ROOM + 512);
        if spare.is_empty() {
            // A record larger than the buffer cannot be valid TLS.
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS record too large")));
        }
        let room = spare.len();
        let mut rb = ReadBuf::new(spare);
        let r = Pin::new(&mut self.io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.inbuf.commit(n);
        if n > 0 {
            // A read that filled the room: the peer is sending faster than we read; read in
            // bulk steps from now on.
            let bulk = still_bulk(self.inbuf.is_bulk(), n, room);
            self.inbuf.set_bulk(bulk);
        }
        r.map_ok(|()| n)
    }

    /// Room left in the output buffer without growing it.
    pub(super) fn out_room(&self) -> usize {
        let next = if self.out.is_bulk() { BULK_SIZE } else { OUT_CAP };
        self.out.capacity().unwrap_or(next) - self.out.pending().len()
    }

    /// Writes what the socket takes now of the pending encrypted bytes, without waiting.
    pub(super) fn try_flush_out(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.io.try_write(self.out.pending()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One write of pending encrypted bytes to the socket.
    pub(super) fn poll_flush_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.out.pending()))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.out.consume(n);
        Poll::Ready(Ok(()))
    }

    /// Writes pending encrypted bytes to the socket.
    pub(super) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.out.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // The buffer goes back to the pool once drained: nothing held while idle.
            self.out.consume(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<C: Side> AsyncRead for LeanTls<C> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failed.take() {
                return Poll::Ready(Err(e));
            }
            if this.records.is_some() {
                return this.poll_read_records(cx, buf);
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let step = match this.step(None, Some(buf)) {
                Ok(step) => step,
                // Plaintext before the error goes to the reader first.
                Err(e) if buf.filled().len() > before => {
                    this.failed = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            match step {
                // More records may be complete in the input: keep filling the reader's buffer.
                Step::Again if buf.remaining() == 0 => return Poll::Ready(Ok(())),
                Step::Again => {}
                Step::NeedRead | Step::Idle | Step::Wrote(_) if buf.filled().len() > before => {
                    return Poll::Ready(Ok(()))
                }
                Step::NeedRead | Step::Idle | Step::Wrote(_) => {
                    // Answers rustls queued (alerts, tickets) go out if the socket takes them
                    // now; reading waits for that only past `HELD_MAX`, and otherwise never
                    // registers for writability (that would take the waker slot of a writer
                    // polling from another task).
                    this.try_flush_out()?;
                    ready!(this.poll_held(cx))?;
                    if ready!(this.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(this.truncated()));
                    }
                }
                Step::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<C: Side> AsyncWrite for LeanTls<C> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // A writer handing over more than a small output buffer holds is a bulk one: its
        // records go out in bulk-sized writes.
        this.out.set_bulk(data.len() > OUT_CAP);
        // Room for a full record, or the socket must take some first: the back-pressure.
        if this.out_room() < RECORD_ROOM {
            ready!(this.poll_flush_out(cx))?;
        }
        if this.records.is_some() {
            if this.close_sent {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS connection closed")));
            }
            let taken = this.seal_records(data)?;
            if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(taken));
        }
        let mut taken = 0;
        while taken < data.len() && this.out_room() >= RECORD_ROOM {
            match this.step(Some(&data[taken..]), None)? {
                Step::Again => {}
                Step::Wrote(0) | Step::Closed if taken == 0 => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS connection closed")))
                }
                Step::Wrote(0) | Step::Closed => break,
                Step::Wrote(n) => taken += n,
                // Still handshaking (not after `connect`/`accept`): the peer must answer first.
                Step::NeedRead | Step::Idle => {
                    ready!(this.poll_flush_out(cx))?;
                    if ready!(this.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
        // One write to the socket for all the records; what it does not take now waits for the
        // next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_out(cx))?;
        if let (Some(records), false) = (this.records.as_mut(), this.close_sent) {
            match records.seal_close_notify(this.out.reserve(ALERT_ROOM)) {
                Ok(n) => this.out.commit(n),
                // After a fatal alert nothing more is sent; the socket is still shut.
                Err(RecordError::Failed) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            this.close_sent = true;
            ready!(this.poll_flush_out(cx))?;
        }
        if !this.close_sent && !this.closed {
            // Let rustls finish whatever it has queued, then add close_notify when it allows
            // application data; otherwise the peer sees a plain TCP half-close, which the data
            // plane treats the same way.
            loop {
                match this.step(None, None)? {
                    Step::Again => continue,
                    Step::Idle => {
                        this.queue_close_notify();
                        break;
                    }
                    _ => break,
                }
            }
            this.close_sent = true;
            ready!(this.poll_flush_out(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
