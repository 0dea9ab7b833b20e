//! Data connections on the client side: open one to the server, wait in the pool until the
//! server hands it a visitor, then forward to the local service (TCP/HTTP splice, or UDP
//! datagrams); or, when the server makes it a multiplexed one, serve each of its streams so.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use rustunnel_proto::stream::StreamHeader;
use rustunnel_proto::{Protocol, DATA_PATH, DATA_UPGRADE, HEADER_DATA_KEY, HEADER_SESSION};
use rustunnel_transport::lean_tls::LeanClient;
use rustunnel_transport::mux::{mux, MuxConfig, MuxStream, Role};
use rustunnel_transport::stream::{read_datagram, read_header, write_datagram};
use rustunnel_transport::tcp::reset_on_close;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ClientError;
use crate::net::{connect_tcp, resolve, Dialer};

const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a tunnel's visitors go.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    pub name: String,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// Each connection to the local service starts with a PROXY header naming the visitor.
    pub proxy_protocol: Option<crate::proxy_header::ProxyProtocol>,
}

/// tunnel id -> local target; shared by the session and its streams.
pub type Targets = Arc<RwLock<HashMap<String, LocalTarget>>>;

/// A data connection: TLS (upgraded on the control port) or, when the server granted it,
/// plain TCP (see `rustunnel_transport::plain`).
/// Boxed: the TLS state is large, and futures holding a data connection should not be.
pub type DataConn = rustunnel_transport::plain::DataConn<Box<LeanClient>>;

/// Opens a data connection. TLS: TLS to the control port, `GET /v1/data` with the session's
/// credentials, `101 Switching Protocols`. Plain: TCP to the control port and the plain
/// handshake, which proves the data key without sending it.
pub async fn open_data_conn(
    dialer: &Dialer,
    session_id: &str,
    data_key: &str,
    plain: bool,
) -> Result<DataConn, ClientError> {
    if !plain {
        // Taken back out of the upgrade (with any bytes it had read ahead): a TCP stream's
        // records are then copied straight to and from the local socket.
        let upgraded = upgrade_data_conn(dialer, session_id, data_key, None).await?;
        let parts = upgraded
            .downcast::<TokioIo<LeanClient>>()
            .map_err(|_| ClientError::Protocol("data connection of an unexpected type".into()))?;
        let mut lean = parts.io.into_inner();
        lean.unread(&parts.read_buf);
        return Ok(DataConn::Tls(Box::new(lean)));
    }
    let mut tcp = dialer.dial_tcp().await?;
    tokio::time::timeout(
        rustunnel_proto::limits::HANDSHAKE_TIMEOUT,
        rustunnel_transport::plain::client_handshake(&mut tcp, session_id, data_key),
    )
    .await
    .map_err(|_| ClientError::Handshake("plain data connection: timed out".into()))?
    .map_err(|e| ClientError::Handshake(format!("plain data connection: {e}")))?;
    Ok(DataConn::Plain(tcp))
}

/// The data-connection upgrade; with `p2p_link` the server splices the connection to that
/// P2P link's publisher instead of adding it to the pool.
pub(crate) async fn upgrade_data_conn(
    dialer: &Dialer,
    session_id: &str,
    data_key: &str,
    p2p_link: Option<&str>,
) -> Result<Upgraded, ClientError> {
    let tls = dialer.dial_lean().await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|e| ClientError::Handshake(e.to_string()))?;
    let mut req = http::Request::get(DATA_PATH)
        .header(http::header::HOST, format!("{}:{}", dialer.host, dialer.port))
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, DATA_UPGRADE)
        .header(HEADER_SESSION, session_id)
        .header(HEADER_DATA_KEY, data_key);
    if let Some(link) = p2p_link {
        req = req.header(rustunnel_proto::HEADER_P2P_LINK, link);
    }
    let req = req.body(Empty::new()).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let (resp, _) = tokio::join!(sender.send_request(req), conn.with_upgrades());
    let resp = resp.map_err(|e| ClientError::Handshake(e.to_string()))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(ClientError::Handshake(format!("data connection refused: {}", resp.status())));
    }
    hyper::upgrade::on(resp).await.map_err(|e| ClientError::Handshake(e.to_string()))
}

/// A data connection the server has handed a visitor: its header and the connection.
pub type HandedStream = (StreamHeader, DataConn);

/// A pooled data connection, from dialing to the moment the server hands it a visitor
/// (after `delay`). Boxed: a task's future is as large as its largest state, and dialing (TLS,
/// HTTP upgrade) is large; freed once the stream starts, it costs held connections nothing.
pub fn pooled_stream<'a>(
    dialer: &'a Dialer,
    session_id: &'a str,
    data_key: &'a str,
    plain: bool,
    delay: Duration,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Result<HandedStream, ClientError>> + Send + 'a>> {
    Box::pin(async move {
        tokio::time::sleep(delay).await;
        let conn = open_data_conn(dialer, session_id, data_key, plain).await?;
        wait_for_stream(conn).await
    })
}

/// Waits for the server to hand this connection a visitor.
pub async fn wait_for_stream(mut io: DataConn) -> Result<HandedStream, ClientError> {
    let header = read_header(&mut io).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok((header, io))
}

/// A local-service failure worth telling the user about.
#[derive(Debug, Clone)]
pub struct LocalFailure {
    pub name: String,
    pub addr: String,
    pub error: String,
}

/// A stream from the server: a data connection of its own, or a stream of a multiplexed one.
pub trait ServerStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The plain TCP socket under it, when there is one (kernel splice is then possible).
    fn plain_tcp(&mut self) -> Option<&mut TcpStream> {
        None
    }
    /// The TLS connection under it, when it is a data connection of its own.
    fn lean(&mut self) -> Option<&mut LeanClient> {
        None
    }
}

impl ServerStream for DataConn {
    fn plain_tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            DataConn::Plain(tcp) => Some(tcp),
            DataConn::Tls(_) => None,
        }
    }
    fn lean(&mut self) -> Option<&mut LeanClient> {
        match self {
            DataConn::Tls(lean) => Some(lean.as_mut()),
            DataConn::Plain(_) => None,
        }
    }
}

impl ServerStream for MuxStream {}

/// Serves the streams of a multiplexed data connection (each OPEN carries the stream's header)
/// until it ends: each on its own task in `tracker`, ended by `cancel`; failures to reach the
/// local service go to `report`.
pub async fn serve_mux(
    io: DataConn,
    targets: Targets,
    tracker: TaskTracker,
    cancel: CancellationToken,
    report: impl Fn(LocalFailure) + Clone + Send + Sync + 'static,
) {
    let (_handle, mut acceptor, driver) = mux(io, Role::Acceptor, MuxConfig::data_link());
    tokio::pin!(driver);
    loop {
        let (meta, stream) = tokio::select! {
            r = &mut driver => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "multiplexed data connection ended");
                }
                return;
            }
            s = acceptor.accept() => match s {
                Some(s) => s,
                None => return,
            },
            _ = cancel.cancelled() => return,
        };
        // A header that does not decode: that stream is dropped (reset), the others go on.
        let Ok(header) = StreamHeader::decode(&meta) else { continue };
        let (targets, cancel, report) = (targets.clone(), cancel.clone(), report.clone());
        tracker.spawn(async move { serve_until(header, stream, &targets, &cancel, report).await });
    }
}

/// [`serve_stream`] until it ends or `cancel`; a failure to reach the local service goes to
/// `report`.
pub async fn serve_until<S: ServerStream>(
    header: StreamHeader,
    stream: S,
    targets: &Targets,
    cancel: &CancellationToken,
    report: impl Fn(LocalFailure) + Sync,
) {
    // The stream first: once it copies, it sees `cancel` itself and resets the local connection
    // (a transfer cut short must not end like a complete one); before that, dropping it is all.
    tokio::select! {
        biased;
        r = serve_stream(header, stream, targets, cancel, &report) => if let Err(f) = r { report(f) },
        _ = cancel.cancelled() => {}
    }
}

/// Serves one handed-out stream to completion. A failure that does not end it (a UDP flow
/// whose local service is down) goes to `report` as it happens. A copy still running when
/// `cancel` fires resets the local connection.
pub async fn serve_stream<S: ServerStream>(
    header: StreamHeader,
    mut data: S,
    targets: &Targets,
    cancel: &CancellationToken,
    report: &(impl Fn(LocalFailure) + Sync),
) -> Result<(), LocalFailure> {
    let target = targets.read().get(&header.tunnel_id).cloned();
    let Some(target) = target else {
        // A stream for a tunnel we no longer have: drop it.
        return Ok(());
    };
    let addr = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    match header.protocol {
        Protocol::Tcp | Protocol::Http => {
            // Boxed so the resolver/connect state is freed before the long splice.
            let mut local = match Box::pin(connect_tcp(&target.host, target.port, LOCAL_CONNECT_TIMEOUT)).await {
                Ok(s) => s,
                Err(e) => {
                    let error = describe_local_error(&e, &addr);
                    if header.protocol == Protocol::Http {
                        let body = format!("rustunnel: {error}\n");
                        let resp = format!(
                            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nx-rustunnel-error: local\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = data.write_all(resp.as_bytes()).await;
                        let _ = data.shutdown().await;
                    }
                    return Err(LocalFailure { name: target.name, addr, error });
                }
            };
            if let Some(version) = target.proxy_protocol {
                if let Err(e) = crate::proxy_header::send(version, &header.peer, &mut local).await {
                    return Err(LocalFailure { name: target.name, addr, error: e.to_string() });
                }
            }
            // A copy that fails (the data connection cut without a clean TLS close, a reset)
            // resets the local connection instead of closing it, so the local service never
            // takes a cut-off request or upload for a complete one; a plain data connection is
            // reset too, so the server resets its visitor.
            let copied = tokio::select! {
                r = copy_to_local(header.protocol, &mut data, &mut local) => r,
                _ = cancel.cancelled() => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "client stopping")),
            };
            if let Err(e) = copied {
                tracing::debug!(tunnel = %target.name, error = %e, "stream failed; local connection reset");
                reset_on_close(&local);
            }
            Ok(())
        }
        Protocol::Udp => {
            let remote = match resolve(&target.host, target.port).await.ok().and_then(|a| a.into_iter().next()) {
                Some(a) => a,
                None => {
                    return Err(LocalFailure {
                        name: target.name,
                        addr: addr.clone(),
                        error: format!("cannot resolve {addr}"),
                    })
                }
            };
            let bind = if remote.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let sock = match UdpSocket::bind(bind).await {
                Ok(s) => s,
                Err(e) => return Err(LocalFailure { name: target.name, addr, error: e.to_string() }),
            };
            if let Err(e) = sock.connect(remote).await {
                return Err(LocalFailure { name: target.name, addr, error: e.to_string() });
            }
            // Once per flow (one per remote peer): the datagrams of a service that is down
            // are lost, and the user should know why.
            let refused = std::sync::Once::new();
            let on_refused = || {
                refused.call_once(|| {
                    report(LocalFailure {
                        name: target.name.clone(),
                        addr: addr.clone(),
                        error: format!("nothing is listening on {addr} (udp): datagrams are dropped"),
                    })
                })
            };
            pump_udp(data, sock, None, on_refused).await;
            Ok(())
        }
    }
}

/// Copies both ways between a stream from the server and the local service's connection.
async fn copy_to_local<S: ServerStream>(
    protocol: Protocol,
    data: &mut S,
    local: &mut TcpStream,
) -> std::io::Result<()> {
    // Both hops plain TCP: spliced in the kernel. Not for HTTP: its small messages cost
    // fewer syscalls through user space (a read that drains the socket is known to, so
    // no extra call waits for `EAGAIN`), and a bulk download switches to big buffers
    // there anyway. The same for a TLS data connection whose TLS 1.3 records are our own:
    // opened into and sealed from the local socket directly.
    if protocol == Protocol::Tcp {
        if let Some(tcp) = data.plain_tcp() {
            let r = rustunnel_transport::zerocopy::splice_tcp(tcp, local, &|_| {}, &|_| {}).await;
            if r.is_err() {
                reset_on_close(tcp);
            }
            return r.map(drop);
        }
        if let Some(lean) = data.lean().filter(|l| l.owns_records()) {
            return lean.splice_tcp(local, &|_| {}, &|_| {}).await.map(drop);
        }
    }
    rustunnel_transport::splice::splice(data, local).await.map(drop)
}

fn describe_local_error(e: &std::io::Error, addr: &str) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("nothing is listening on {addr}"),
        std::io::ErrorKind::TimedOut => format!("connecting to {addr} timed out"),
        _ => format!("cannot reach {addr}: {e}"),
    }
}

/// Moves datagrams between the stream (length-prefixed) and the connected local socket until
/// either side ends.
/// With `idle`, a local service silent that long ends the flow. `refused` is told each time
/// the local port answers "unreachable" (nothing listening); the flow goes on.
pub(crate) async fn pump_udp<S>(data: S, sock: UdpSocket, idle: Option<Duration>, refused: impl Fn())
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut rd, mut wr) = tokio::io::split(data);
    let up = async {
        let mut buf = Vec::with_capacity(2048);
        while read_datagram(&mut rd, &mut buf).await.is_ok() {
            if sock.send(&buf).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; rustunnel_proto::limits::MAX_DATAGRAM];
        let mut scratch = Vec::with_capacity(2048);
        loop {
            let got = match idle {
                Some(d) => match tokio::time::timeout(d, sock.recv(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => sock.recv(&mut buf).await,
            };
            match got {
                Ok(n) => {
                    if write_datagram(&mut wr, &buf[..n], &mut scratch).await.is_err() {
                        break;
                    }
                }
                // ICMP port unreachable from a local service that is not up yet: keep going.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused(),
                Err(_) => break,
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    impl ServerStream for tokio::io::DuplexStream {}

    /// A local TCP service `name` on a fresh port, as the client's targets.
    async fn local_service(name: &str) -> (TcpListener, Targets) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let target = LocalTarget {
            name: name.into(),
            protocol: Protocol::Tcp,
            host: "127.0.0.1".into(),
            port,
            proxy_protocol: None,
        };
        (l, Arc::new(RwLock::new(HashMap::from([(name.to_string(), target)]))))
    }

    fn header(tunnel: &str) -> StreamHeader {
        StreamHeader { tunnel_id: tunnel.into(), protocol: Protocol::Tcp, peer: "127.0.0.1:1".into(), mux: false }
    }

    /// A TCP stream copied to the local service; after the first bytes, `cut` ends it (and
    /// keeps the server's end if it wants it open). Returns how the local service's next read
    /// ended.
    async fn copy_then(
        cut: impl FnOnce(tokio::io::DuplexStream, &CancellationToken) -> Option<tokio::io::DuplexStream>,
    ) -> std::io::Result<usize> {
        let (l, targets) = local_service("t").await;
        let (ours, mut server) = tokio::io::duplex(64 * 1024);
        let cancel = CancellationToken::new();
        let (t, c) = (targets.clone(), cancel.clone());
        let task = tokio::spawn(async move { serve_until(header("t"), ours, &t, &c, |_| {}).await });
        let (mut local, _) = l.accept().await.unwrap();
        server.write_all(b"part of an upload").await.unwrap();
        let mut got = [0u8; 17];
        local.read_exact(&mut got).await.unwrap();
        let _kept = cut(server, &cancel);
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(10), local.read(&mut buf)).await.expect("the read ends");
        drop(local);
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the stream ends").unwrap();
        r
    }

    #[tokio::test]
    async fn a_copy_cut_by_stopping_resets_the_local_connection() {
        let r = copy_then(|server, cancel| {
            cancel.cancel();
            // Still open: only the stop ends the copy.
            Some(server)
        })
        .await;
        let e = r.expect_err("a cut upload must not end cleanly");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }

    #[tokio::test]
    async fn a_clean_end_from_the_server_half_closes_the_local_connection() {
        let r = copy_then(|server, _| {
            drop(server);
            None
        })
        .await;
        assert_eq!(r.unwrap(), 0, "EOF after the bytes, as before");
    }
}
