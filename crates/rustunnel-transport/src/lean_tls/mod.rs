//! A TLS stream on rustls's unbuffered API, for the connections both ends hold many of (data
//! connections, and on the server everything on the control port). The buffered API
//! (tokio-rustls) keeps a 4 KiB read buffer per connection for its whole life; each held
//! visitor connection is one TLS data connection on each end, so that buffer was most of what
//! an idle held connection cost. Here the buffers are borrowed from the pool of
//! [`crate::splice`] only while bytes are in flight: an idle connection holds its TLS state and
//! socket, nothing else. Records are read straight from the socket into the pooled buffer (no
//! read-ahead layer needed) and decrypted there.
//!
//! rustls does the handshake, certificate checks and key schedule. Once a TLS 1.3 handshake is
//! over (and the config allows secret extraction), rustls hands over the traffic keys and
//! [`crate::record`] seals each record where its plaintext was put in the output buffer and
//! opens it where it arrived in the input buffer; rustls's own record path copies every
//! record into an allocation on both sides. TLS 1.2 connections stay on rustls throughout.
//!
//! On either path a connection ends in one of two ways: the peer's `close_notify` (a clean
//! end of stream, `Ok(0)`), or an error. A TCP close without `close_notify`, inside a record
//! or inside a handshake message, is an `UnexpectedEof` error: whoever can inject a FIN must
//! not make a cut-off stream look complete. A record that breaks the rules ends the
//! connection with the alert rustls would send (`bad_record_mac`, `record_overflow`,
//! `unexpected_message`, `decode_error`), written before the error is returned.
use std::io;
use std::ops::{Deref, Range};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus};
use rustls::ProtocolVersion;

use crate::record::{self, record_len, Kernel, Opened, RecordError, Records, ALERT_ROOM};

#[cfg(test)]
mod hostile_tests;
mod tcp;

use crate::splice::{give_buf, still_bulk, take_bulk, take_sized, Window, BULK_SIZE};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest plaintext put in one record (the same on rustls's path and ours).
const MAX_FRAGMENT: usize = record::MAX_PLAIN;
/// Room one record needs in the output buffer: payload, header, AEAD tag, with room to spare.
const RECORD_ROOM: usize = MAX_FRAGMENT + 256;
/// Output buffer size: four full records, so one write to the socket carries several.
const OUT_CAP: usize = 4 * RECORD_ROOM;
/// Output buffers kept per thread for reuse.
const OUT_POOL_MAX: usize = 64;
/// Reading stops while more than this waits to be sent to the peer, until the socket takes it:
/// a peer that never reads must not make us queue without bound. Writers keep the output at
/// most one (bulk) buffer, so this only stops a reader whose reading queues output.
const HELD_MAX: usize = BULK_SIZE + OUT_CAP;

thread_local! {
    static OUT_POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An output buffer: a bulk one for a bulk writer while the budget allows, else four records' worth.
fn take_out(bulk: bool) -> Box<[u8]> {
    if let Some(b) = bulk.then(take_bulk).flatten() {
        return b;
    }
    OUT_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; OUT_CAP].into_boxed_slice())
}

/// Gives an output buffer back to the pool of its size.
fn release(b: Box<[u8]>) {
    if b.len() == OUT_CAP {
        OUT_POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < OUT_POOL_MAX {
                p.push(b);
            }
        })
    } else {
        give_buf(b)
    }
}

/// Room for `need` more bytes in `w`, growing its buffer to at least twice what it holds when
/// it has to grow: an exact-size regrow would copy everything queued once per addition.
fn grow_reserve(w: &mut Window, need: usize) -> &mut [u8] {
    let held = w.pending().len();
    let free = w.capacity().map_or(0, |c| c - held);
    w.reserve(if free < need { need.max(held) } else { need })
}

/// One side of an unbuffered rustls connection.
pub trait Side: Deref<Target = UnbufferedConnectionCommon<Self::Data>> + Send + Unpin + 'static {
    type Data: Send + Unpin + 'static;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn is_tls13(&self) -> bool {
        self.protocol_version() == Some(ProtocolVersion::TLSv1_3)
    }
    /// rustls hands over the traffic keys after the handshake.
    fn into_records(self) -> Result<Records<Kernel<Self::Data>>, RecordError>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_records(self) -> Result<Records<Kernel<Self::Data>>, RecordError> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        // Session tickets from the server are stored by rustls for resumption.
        Records::new(secrets, kernel, |k, ticket| Ok(k.handle_new_session_ticket(ticket)?))
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_records(self) -> Result<Records<Kernel<Self::Data>>, RecordError> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        // A client never sends session tickets (handshake message type 4).
        Records::new(secrets, kernel, |_, _| Err(RecordError::UnexpectedHandshake(4)))
    }
}

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
    conn: Option<Box<C>>,
    /// Record protection once rustls has handed over the keys (TLS 1.3).
    records: Option<Records<Kernel<C::Data>>>,
    /// The opened record at the front of `inbuf` while its plaintext is being read: the part
    /// not read yet (offsets into the pending bytes) and the record's length.
    opened: Option<(Range<usize>, usize)>,
    io: TcpStream,
    /// Received TLS bytes rustls has not processed yet.
    inbuf: Window,
    /// Encrypted bytes waiting for the socket.
    out: Window,
    /// Decrypted bytes waiting for the reader.
    plain: Vec<u8>,
    plain_pos: usize,
    peer_closed: bool,
    closed: bool,
    close_sent: bool,
    /// The handshake is on and its records will be handed over to [`Records`] after it.
    hand_over: bool,
    /// The error that ended the connection after the plaintext before it was handed out:
    /// returned by the next read.
    failed: Option<io::Error>,
}

/// What one turn of rustls's state machine asks for.
enum Step {
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

fn tls_err(e: rustls::Error) -> io::Error {
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
    fn fail(&mut self, e: RecordError) -> io::Error {
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
    fn fail_rustls(&mut self, e: rustls::Error) -> io::Error {
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
    fn truncated(&self) -> io::Error {
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
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.pending().len() > HELD_MAX {
            self.try_flush_out()?;
            while self.out.pending().len() > HELD_MAX {
                ready!(self.poll_flush_some(cx))?;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    fn step(&mut self, data: Option<&[u8]>, mut dest: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
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
    fn queue_close_notify(&mut self) {
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
    fn poll_read_records(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
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
    fn seal_records(&mut self, data: &[u8]) -> io::Result<usize> {
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
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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
    fn out_room(&self) -> usize {
        let next = if self.out.is_bulk() { BULK_SIZE } else { OUT_CAP };
        self.out.capacity().unwrap_or(next) - self.out.pending().len()
    }

    /// Writes what the socket takes now of the pending encrypted bytes, without waiting.
    fn try_flush_out(&mut self) -> io::Result<()> {
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
    fn poll_flush_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.out.pending()))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.out.consume(n);
        Poll::Ready(Ok(()))
    }

    /// Writes pending encrypted bytes to the socket.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    pub(crate) type ServerSide = tokio_rustls::server::TlsStream<TcpStream>;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed server config for `localhost` and a client config trusting it.
    pub(crate) fn configs(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(ck.cert.der().to_vec());
        let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.into())
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Lean ends take the records over from rustls, as the server's and client's do.
        server.enable_secret_extraction = true;
        client.enable_secret_extraction = true;
        (Arc::new(server), Arc::new(client))
    }

    /// A lean client connected over loopback TCP (`TCP_NODELAY`, as data connections) to a
    /// tokio-rustls server.
    pub(crate) async fn pair(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> (io::Result<LeanClient>, io::Result<ServerSide>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            acceptor.accept(s).await
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let c = LeanClient::connect(client, name, tcp).await;
        (c, srv.await.unwrap())
    }

    pub(crate) fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn large_transfers_both_ways_with_half_close_on_tls13_and_tls12() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (s, c) = configs(version);
            let (client, server) = pair(s, c).await;
            let (client, server) = (client.unwrap(), server.unwrap());
            assert_eq!(client.owns_records(), version == &rustls::version::TLS13, "{version:?}");
            let up = pattern(5_000_000);
            let down = pattern(3_000_001);
            let (mut cr, mut cw) = tokio::io::split(client);
            let (mut sr, mut sw) = tokio::io::split(server);
            let up2 = up.clone();
            let writer = tokio::spawn(async move {
                cw.write_all(&up2).await.unwrap();
                cw.shutdown().await.unwrap();
            });
            let down2 = down.clone();
            let server_task = tokio::spawn(async move {
                let mut got = Vec::new();
                sr.read_to_end(&mut got).await.unwrap();
                sw.write_all(&down2).await.unwrap();
                sw.shutdown().await.unwrap();
                got
            });
            let mut got = Vec::new();
            cr.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert_eq!(Sha256::digest(server_task.await.unwrap()), Sha256::digest(&up), "{version:?} up");
            assert_eq!(Sha256::digest(&got), Sha256::digest(&down), "{version:?} down");
        }
    }

    #[tokio::test]
    async fn bulk_both_ways_at_once_does_not_deadlock() {
        // Both ends write 8 MB while reading: socket buffers fill in both directions, so a
        // reader that waited for its own pending output would never drain the peer.
        let (s, c) = configs(&rustls::version::TLS13);
        let (client, server) = pair(s, c).await;
        let (client, server) = (client.unwrap(), server.unwrap());
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let data = pattern(8 << 20);
        let (d1, d2) = (data.clone(), data.clone());
        let w1 = tokio::spawn(async move {
            cw.write_all(&d1).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let w2 = tokio::spawn(async move {
            sw.write_all(&d2).await.unwrap();
            sw.shutdown().await.unwrap();
        });
        let r1 = tokio::spawn(async move {
            let mut got = Vec::new();
            cr.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(30), sr.read_to_end(&mut got)).await.unwrap().unwrap();
        let got1 = tokio::time::timeout(std::time::Duration::from_secs(30), r1).await.unwrap().unwrap();
        w1.await.unwrap();
        w2.await.unwrap();
        assert!(got == data && got1 == data);
    }

    #[tokio::test]
    async fn key_updates_from_the_server_are_followed() {
        let (s, c) = configs(&rustls::version::TLS13);
        let (client, server) = pair(s, c).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        assert!(client.owns_records());
        for round in 0..3u8 {
            server.get_mut().1.refresh_traffic_keys().unwrap();
            server.write_all(&[round; 1000]).await.unwrap();
            server.flush().await.unwrap();
            let mut buf = [0u8; 1000];
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [round; 1000]);
            client.write_all(&[round + 10; 500]).await.unwrap();
            client.flush().await.unwrap();
            let mut back = [0u8; 500];
            server.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round + 10; 500]);
        }
        // rustls asks for ours each time, and follows them.
        assert_eq!(client.records.as_ref().unwrap().key_updates(), (3, 3), "followed three, answered three");
    }

    #[tokio::test]
    async fn our_key_updates_are_followed_by_rustls() {
        // Our sending key is replaced every 3 records (the suite's limit is millions); a rustls
        // server echoes everything back.
        let (s, c) = configs(&rustls::version::TLS13);
        let (client, server) = pair(s, c).await;
        let (mut client, server) = (client.unwrap(), server.unwrap());
        client.records.as_mut().unwrap().set_key_update_every(3);
        let data = pattern(2_000_000);
        let (mut sr, mut sw) = tokio::io::split(server);
        let echo = tokio::spawn(async move {
            let n = tokio::io::copy(&mut sr, &mut sw).await?;
            sw.shutdown().await.map(|()| n)
        });
        let d2 = data.clone();
        let (mut cr, mut cw) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            cw.write_all(&d2).await.unwrap();
            cw.shutdown().await.unwrap();
            cw
        });
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        let cw = writer.await.unwrap();
        echo.await.unwrap().unwrap();
        assert!(back == data, "echo through rustls after our key updates");
        let client = cr.unsplit(cw);
        let (_, sent) = client.records.as_ref().unwrap().key_updates();
        assert!(sent >= 2_000_000 / MAX_FRAGMENT as u32 / 3, "sent {sent} key updates");
    }

    #[tokio::test]
    async fn a_requested_key_update_is_answered_by_rustls_and_followed() {
        let (s, c) = configs(&rustls::version::TLS13);
        let (client, server) = pair(s, c).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        for round in 0..3u8 {
            // Our key update asking for the peer's: rustls answers with its own, and the
            // records after it open under the peer's new key.
            let records = client.records.as_mut().unwrap();
            let n = records.key_update(client.out.reserve(record::KEY_UPDATE_ROOM), true).unwrap();
            client.out.commit(n);
            client.write_all(&[round; 3000]).await.unwrap();
            client.flush().await.unwrap();
            let mut got = [0u8; 3000];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 3000]);
            server.write_all(&[round + 1; 2000]).await.unwrap();
            server.flush().await.unwrap();
            let mut back = [0u8; 2000];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round + 1; 2000]);
            assert_eq!(client.records.as_ref().unwrap().key_updates(), (u32::from(round) + 1, u32::from(round) + 1));
        }
    }

    #[tokio::test]
    async fn session_tickets_after_the_hand_over_reach_rustls() {
        // A rustls server that sends tickets: the lean client, past the hand-over, gives them to
        // rustls, so its next connection resumes.
        let (s, c) = configs(&rustls::version::TLS13);
        for attempt in 0..2 {
            let (client, server) = pair(s.clone(), c.clone()).await;
            let (mut client, mut server) = (client.unwrap(), server.unwrap());
            assert!(client.owns_records());
            let kind = server.get_ref().1.handshake_kind();
            let want = if attempt == 0 { rustls::HandshakeKind::Full } else { rustls::HandshakeKind::Resumed };
            assert_eq!(kind, Some(want), "attempt {attempt}");
            server.write_all(b"tickets came first").await.unwrap();
            server.flush().await.unwrap();
            let mut got = [0u8; 18];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"tickets came first");
        }
    }

    /// Changes the bytes past a point of a TLS stream.
    pub(crate) type Spoil = fn(&mut Vec<u8>);

    /// A lean client of a rustls server that sends `pattern(1_000_000)`, through a relay that
    /// `spoil`s the server's bytes once `after` of them have passed (well past the handshake).
    pub(crate) async fn spoiled_client(after: usize, spoil: Spoil) -> LeanClient {
        let (s, c) = configs(&rustls::version::TLS13);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, backend_addr) = (l.local_addr().unwrap(), backend.local_addr().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(s);
        tokio::spawn(async move {
            let (tcp, _) = backend.accept().await.unwrap();
            let mut t = acceptor.accept(tcp).await.unwrap();
            let _ = t.write_all(&pattern(1_000_000)).await;
            let _ = t.shutdown().await;
        });
        tokio::spawn(async move {
            let (mut front, _) = l.accept().await.unwrap();
            let back = TcpStream::connect(backend_addr).await.unwrap();
            let (mut br, mut bw) = back.into_split();
            let (mut fr, mut fw) = front.split();
            let up = tokio::io::copy(&mut fr, &mut bw);
            let down = async {
                // The first `after` bytes (the handshake among them) pass as they come.
                let mut passed = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while passed < after {
                    let n = br.read(&mut buf[..(after - passed).min(16 * 1024)]).await.unwrap();
                    assert!(n > 0, "the server sends more than {after} bytes");
                    fw.write_all(&buf[..n]).await.unwrap();
                    passed += n;
                }
                let mut rest = Vec::new();
                let _ = br.read_to_end(&mut rest).await;
                spoil(&mut rest);
                let _ = fw.write_all(&rest).await;
                let _ = fw.shutdown().await;
            };
            let _ = tokio::join!(up, down);
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client = LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        assert!(client.owns_records());
        client
    }

    /// What a lean client read of a spoiled stream before the error, and the error.
    async fn read_spoiled(after: usize, spoil: Spoil) -> (Vec<u8>, io::Error) {
        let mut client = spoiled_client(after, spoil).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buf)).await.unwrap() {
                Ok(0) => panic!("spoiled stream read to its end without an error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, e),
            }
        }
    }

    #[tokio::test]
    async fn spoiled_records_end_the_stream_with_an_error_and_no_bad_plaintext() {
        let cases: [(&str, Spoil, &str); 4] = [
            ("a flipped bit", |r| r[3000] ^= 0x20, "bad_record_mac"),
            (
                "a record header lying about its length",
                |r| {
                    // The records are 16 KiB + 22 bytes long on the wire; find the next header.
                    let at = r.windows(3).position(|w| w == [23, 3, 3]).unwrap();
                    r[at + 4] ^= 0x01;
                },
                "bad_record_mac",
            ),
            (
                "a record of another type",
                |r| {
                    let at = r.windows(3).position(|w| w == [23, 3, 3]).unwrap();
                    r[at] = 22;
                },
                "record type 22",
            ),
            ("garbage instead of records", |r| r.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8), ""),
        ];
        let want = pattern(1_000_000);
        for (what, spoil, msg) in cases {
            let (got, err) = read_spoiled(200_000, spoil).await;
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert!(err.to_string().contains(msg), "{what}: {err}");
            assert!(
                // Plaintext of the good records before the spoiled one, and no more.
                got.len() < 200_000 + MAX_FRAGMENT && got[..] == want[..got.len()],
                "{what}: only good plaintext before the error"
            );
        }
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_refused() {
        let (s, _) = configs(&rustls::version::TLS13);
        let (_, other) = configs(&rustls::version::TLS13);
        let (client, _server) = pair(s, other).await;
        let e = client.err().expect("refused");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer_and_close_notify_is_eof() {
        let (s, c) = configs(&rustls::version::TLS13);
        let (client, server) = pair(s, c).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        server.write_all(b"ping").await.unwrap();
        server.flush().await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        client.write_all(b"pong").await.unwrap();
        client.flush().await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert!(!client.inbuf.is_held() && client.inbuf.is_empty(), "no input buffer while idle");
        assert!(!client.out.is_held() && client.plain.capacity() == 0, "no output or plaintext buffer");
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), client.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn lean_server_with_buffered_and_lean_clients() {
        let (s, c) = configs(&rustls::version::TLS13);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let s2 = s.clone();
        let srv = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = l.accept().await.unwrap();
                let mut t = LeanServer::accept(s2.clone(), tcp).await.unwrap();
                // Echo until EOF, then close.
                let mut all = Vec::new();
                t.read_to_end(&mut all).await.unwrap();
                t.write_all(&all).await.unwrap();
                t.shutdown().await.unwrap();
            }
        });
        let data = pattern(2_000_000);
        // A buffered (tokio-rustls) client.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut t = tokio_rustls::TlsConnector::from(c.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        t.write_all(&data).await.unwrap();
        t.shutdown().await.unwrap();
        let mut back = Vec::new();
        t.read_to_end(&mut back).await.unwrap();
        assert!(back == data);
        // A lean client.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut t = LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        t.write_all(&data).await.unwrap();
        t.shutdown().await.unwrap();
        let mut back = Vec::new();
        t.read_to_end(&mut back).await.unwrap();
        assert!(back == data);
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_from_the_server_is_an_error_not_a_hang() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(&[0x17; 40_000]).await;
        });
        let (_, c) = configs(&rustls::version::TLS13);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            LeanClient::connect(c, ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("no hang");
        assert!(r.is_err());
    }
}
