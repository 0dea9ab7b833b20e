//! A connected client: its outgoing control queue, its pool of idle data connections, its
//! multiplexed HTTP data connection and its batched request log.
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustunnel_proto::control::RequestLogEntry;
use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::{Protocol, ServerMsg};
use rustunnel_transport::mux::{MuxError, MuxHandle, MuxStream};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;

/// How often a session's served requests go to its client as one batch.
pub(crate) const LOG_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// A pooled data connection: TLS (upgraded on the control port) or, when granted, plain TCP.
/// Boxed: the TLS state is large, and futures holding a data connection should not be.
pub type DataConn = rustunnel_transport::plain::DataConn<Box<rustunnel_transport::lean_tls::LeanServer>>;

/// Most idle data connections the server keeps for one session; more are refused.
pub const MAX_IDLE_DATA_CONNS: usize = 256;
/// Most request-log entries buffered between two flushes; the rest are dropped (the log is a
/// convenience, not an audit trail).
const MAX_PENDING_LOG: usize = 1024;
/// How long a visitor waits for the client to supply a data connection.
pub const DATA_CONN_WAIT: Duration = Duration::from_secs(10);
/// With visitors waiting, how long the client may stay silent before it is asked to answer
/// ([`Session::demand`]); the heartbeat interval when that is shorter.
pub const PROBE_AFTER: Duration = Duration::from_secs(3);
/// How long the client then has to answer before its session ends.
pub const PROBE_WINDOW: Duration = Duration::from_secs(5);

/// Why no data connection could be had.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum DataConnError {
    #[error("the tunnel client is gone")]
    Gone,
    #[error("the tunnel client did not supply a data connection in time")]
    Timeout,
    #[error("the multiplexed data connection carries as many streams as it may")]
    MuxFull,
}

pub struct Session {
    pub id: String,
    pub principal: Principal,
    pub data_key: String,
    pub peer: SocketAddr,
    pub agent: String,
    /// Plain data connections were asked for and granted.
    pub plain_data: bool,
    /// The client takes multiplexed data connections: HTTP streams ride on one
    /// ([`Session::http_mux`]).
    pub mux: bool,
    /// The multiplexed data connection carrying this session's HTTP streams, once opened.
    http_mux: Mutex<Option<MuxHandle>>,
    /// Held while one is being opened, so concurrent requests open one, not many.
    mux_opening: tokio::sync::Mutex<()>,
    /// Control messages to the client. Bounded: a client that does not read its control
    /// connection is disconnected rather than buffered for.
    pub out: mpsc::Sender<ServerMsg>,
    /// Cancelled when the session ends.
    pub cancel: CancellationToken,
    pool: Mutex<VecDeque<DataConn>>,
    pool_notify: Notify,
    /// Last time we asked the client for more connections, in ms since `created`.
    last_request_ms: AtomicU64,
    created: Instant,
    log: Mutex<PendingLog>,
    /// Visitors came for this client's tunnels since the control loop last confirmed the
    /// client is alive ([`Session::demand`]).
    demand: AtomicBool,
    demand_notify: Notify,
}

/// Request-log entries waiting for the next flush, and how many did not fit.
#[derive(Default)]
struct PendingLog {
    entries: Vec<RequestLogEntry>,
    dropped: u64,
}

impl Session {
    pub fn new(
        id: String,
        principal: Principal,
        data_key: String,
        peer: SocketAddr,
        agent: String,
        out: mpsc::Sender<ServerMsg>,
        cancel: CancellationToken,
    ) -> Self {
        Session {
            id,
            principal,
            data_key,
            peer,
            agent,
            plain_data: false,
            mux: false,
            http_mux: Mutex::new(None),
            mux_opening: tokio::sync::Mutex::new(()),
            out,
            cancel,
            pool: Mutex::new(VecDeque::new()),
            pool_notify: Notify::new(),
            last_request_ms: AtomicU64::new(u64::MAX),
            created: Instant::now(),
            log: Mutex::new(PendingLog::default()),
            demand: AtomicBool::new(false),
            demand_notify: Notify::new(),
        }
    }

    /// A visitor is waiting on this client. The control loop then makes sure the client still
    /// answers: after [`PROBE_AFTER`] without a word from it, a ping it must answer within
    /// [`PROBE_WINDOW`], or the session ends and its visitors get a 502 at once, instead of
    /// waiting out three missed heartbeats (up to 30 s) for a client that froze or whose path
    /// was cut. Costs an atomic load per request while a check is pending.
    pub fn demand(&self) {
        if !self.demand.load(Ordering::Relaxed) && !self.demand.swap(true, Ordering::Relaxed) {
            self.demand_notify.notify_one();
        }
    }

    /// Waits for [`Session::demand`] (the control loop).
    pub(crate) async fn demanded(&self) {
        self.demand_notify.notified().await;
    }

    /// The client answered after the demand: the next visitor starts a new check.
    pub(crate) fn demand_met(&self) {
        self.demand.store(false, Ordering::Relaxed);
    }

    /// Grants (or not) plain data connections to this session.
    pub fn with_plain_data(mut self, granted: bool) -> Self {
        self.plain_data = granted;
        self
    }

    /// Lets this session's HTTP streams ride on a multiplexed data connection.
    pub fn with_mux(mut self, mux: bool) -> Self {
        self.mux = mux;
        self
    }

    fn live_mux(&self) -> Option<MuxHandle> {
        self.http_mux.lock().as_ref().filter(|h| !h.is_closed()).cloned()
    }

    /// A new HTTP stream with header `meta` on the session's multiplexed data connection. The
    /// first call (or the first after it ended) turns a pooled data connection into one:
    /// `start` gets it and runs its driver.
    pub async fn http_mux_stream(
        &self,
        meta: &[u8],
        start: impl FnOnce(DataConn) -> MuxHandle,
    ) -> Result<MuxStream, DataConnError> {
        let open = |h: MuxHandle| match h.open(meta) {
            Ok(s) => Ok(s),
            Err(MuxError::TooManyStreams(_)) => Err(DataConnError::MuxFull),
            Err(_) => Err(DataConnError::Gone),
        };
        if let Some(h) = self.live_mux() {
            match open(h) {
                Err(DataConnError::Gone) => {}
                r => return r,
            }
        }
        let _opening = self.mux_opening.lock().await;
        if let Some(h) = self.live_mux() {
            return open(h);
        }
        let mut conn = self.take_data_conn().await?;
        let header =
            StreamHeader { tunnel_id: String::new(), protocol: Protocol::Http, peer: String::new(), mux: true };
        conn.write_all(&header.encode()).await.map_err(|_| DataConnError::Gone)?;
        let handle = start(conn);
        *self.http_mux.lock() = Some(handle.clone());
        open(handle)
    }

    /// Adds an idle data connection; false when the pool is full (the connection is dropped).
    pub fn add_data_conn(&self, conn: DataConn) -> bool {
        let mut pool = self.pool.lock();
        if pool.len() >= MAX_IDLE_DATA_CONNS || self.cancel.is_cancelled() {
            return false;
        }
        pool.push_back(conn);
        drop(pool);
        self.pool_notify.notify_one();
        true
    }

    pub fn idle_data_conns(&self) -> usize {
        self.pool.lock().len()
    }

    fn pop(&self) -> Option<DataConn> {
        self.pool.lock().pop_front()
    }

    /// Takes an idle data connection, asking the client for more when none is idle.
    /// The client replaces every connection it sees used, so the ask is only needed in bursts.
    pub async fn take_data_conn(&self) -> Result<DataConn, DataConnError> {
        let deadline = tokio::time::Instant::now() + DATA_CONN_WAIT;
        loop {
            let notified = self.pool_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.pop() {
                return Ok(c);
            }
            if self.cancel.is_cancelled() {
                return Err(DataConnError::Gone);
            }
            self.ask_for_more();
            tokio::select! {
                _ = &mut notified => {}
                _ = self.cancel.cancelled() => return Err(DataConnError::Gone),
                _ = tokio::time::sleep_until(deadline) => return Err(DataConnError::Timeout),
            }
        }
    }

    /// Asks for a batch of connections, at most every 20 ms so a burst of visitors does not
    /// turn into a burst of control messages.
    fn ask_for_more(&self) {
        let now = self.created.elapsed().as_millis() as u64;
        let last = self.last_request_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < 20 {
            return;
        }
        self.last_request_ms.store(now, Ordering::Relaxed);
        let _ = self.out.try_send(ServerMsg::NeedDataConns { count: 8 });
    }

    /// Queues a request-log entry for the client's live console.
    pub fn log_request(&self, e: RequestLogEntry) {
        let mut log = self.log.lock();
        if log.entries.len() < MAX_PENDING_LOG {
            log.entries.push(e);
        } else {
            log.dropped += 1;
        }
    }

    /// The entries since the last call, and how many more requests were left out.
    pub fn take_log(&self) -> (Vec<RequestLogEntry>, u64) {
        let log = std::mem::take(&mut *self.log.lock());
        (log.entries, log.dropped)
    }

    /// Drops every idle data connection (session ending).
    pub fn drain_pool(&self) {
        self.pool.lock().clear();
    }
}
