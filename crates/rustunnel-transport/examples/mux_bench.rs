//! Micro benchmark of [`rustunnel_transport::mux`]: request/response round trips per second of 50
//! concurrent "connections" on loopback, each looping write 120-byte request / read 200-byte
//! response, (a) as 50 plain TCP connections, (b) as 50 mux streams over one TCP connection
//! (with and without the writer's yield before a batch). The responder runs in a second process
//! (this program re-executed with `serve`); each side has a 2-worker tokio runtime.
//!
//! `mux_bench [SECONDS] [ROUNDS] [CONNS]` (default 3 s, 1 round, 50 connections). Also prints
//! the write and read calls on the mux connection per request, and the CPU time (user + system,
//! from `/proc`) each process spent per request: wall-clock rates swing with whatever else runs
//! on the machine, CPU per request much less.
use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustunnel_transport::mux::{mux, MuxConfig, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const REQ: usize = 120;
const RESP: usize = 200;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if args.get(1).map(String::as_str) == Some("serve") {
        return rt.block_on(serve());
    }
    let secs: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let conns: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(50);
    rt.block_on(drive(Duration::from_secs_f64(secs), rounds, conns))
}

/// Counts successful read and write calls on the wrapped connection.
struct Counting<I> {
    inner: I,
    writes: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counting<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counting<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = r {
            this.writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn counting(s: TcpStream) -> (Counting<TcpStream>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (w, r) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    (Counting { inner: s, writes: w.clone(), reads: r.clone() }, w, r)
}

/// Answers every 120-byte request with a 200-byte response until EOF.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut req = [0u8; REQ];
    let resp = [b'r'; RESP];
    while s.read_exact(&mut req).await.is_ok() {
        if s.write_all(&resp).await.is_err() {
            return;
        }
    }
    let _ = s.shutdown().await;
}

/// The responder process: prints its two ports, serves until stdin closes. After each mux
/// connection ends it prints `MUXSTATS writes reads` for it.
async fn serve() -> Res<()> {
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let muxl = TcpListener::bind("127.0.0.1:0").await?;
    println!("{} {}", plain.local_addr()?.port(), muxl.local_addr()?.port());
    std::io::stdout().flush()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = plain.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(respond(s));
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = muxl.accept().await {
            let _ = s.set_nodelay(true);
            let mut mode = [0u8; 1];
            if s.read_exact(&mut mode).await.is_err() {
                continue;
            }
            let (io, writes, reads) = counting(s);
            let cfg = MuxConfig { yield_before_write: mode[0] == 1, ..MuxConfig::default() };
            let (_h, mut acc, driver) = mux(io, Role::Acceptor, cfg);
            let driver = tokio::spawn(driver);
            tokio::spawn(async move {
                while let Some((_, st)) = acc.accept().await {
                    tokio::spawn(respond(st));
                }
            });
            tokio::spawn(async move {
                let _ = driver.await;
                println!("MUXSTATS {} {}", writes.load(Ordering::Relaxed), reads.load(Ordering::Relaxed));
                let _ = std::io::stdout().flush();
            });
        }
    });
    // Until the parent closes our stdin.
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    Ok(())
}

/// One "connection": request/response until the deadline; returns the round trips done.
async fn client_loop<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, deadline: Instant) -> Res<u64> {
    let req = [b'q'; REQ];
    let mut resp = [0u8; RESP];
    let mut n = 0;
    while Instant::now() < deadline {
        s.write_all(&req).await?;
        s.read_exact(&mut resp).await?;
        n += 1;
    }
    let _ = s.shutdown().await;
    Ok(n)
}

/// CPU time (user + system) a process has used so far, in seconds, from `/proc/PID/stat`
/// (clock ticks, assumed 100 per second).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) / 100.0
}

/// CPU microseconds per request of this process and of the responder over one run.
struct Cpu {
    me: f64,
    child: f64,
}

impl Cpu {
    fn measure(child: u32) -> (f64, f64) {
        (cpu_secs(std::process::id()), cpu_secs(child))
    }
    fn since(start: (f64, f64), child: u32, requests: f64) -> Cpu {
        let (me, ch) = Cpu::measure(child);
        Cpu { me: (me - start.0) * 1e6 / requests, child: (ch - start.1) * 1e6 / requests }
    }
}

async fn run_plain(port: u16, dur: Duration, conns: usize) -> Res<(f64, u64)> {
    let mut socks = Vec::new();
    for _ in 0..conns {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        socks.push(s);
    }
    request_loops(socks, dur).await
}

/// Runs one request loop per connection or stream for `dur`: requests per second, and in all.
async fn request_loops<S>(conns: Vec<S>, dur: Duration) -> Res<(f64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + dur;
    let tasks: Vec<_> = conns.into_iter().map(|s| tokio::spawn(client_loop(s, deadline))).collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total as f64 / start.elapsed().as_secs_f64(), total))
}

struct MuxRun {
    rps: f64,
    requests: u64,
    writes: u64,
    reads: u64,
}

async fn run_mux(port: u16, dur: Duration, conns: usize, yield_before_write: bool) -> Res<MuxRun> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    s.write_all(&[u8::from(yield_before_write)]).await?;
    let (io, writes, reads) = counting(s);
    let (h, _acc, driver) = mux(io, Role::Opener, MuxConfig { yield_before_write, ..MuxConfig::default() });
    let driver = tokio::spawn(driver);
    let streams = (0..conns).map(|_| h.open(b"bench")).collect::<Result<Vec<_>, _>>()?;
    let (rps, total) = request_loops(streams, dur).await?;
    drop((h, _acc));
    driver.await??;
    Ok(MuxRun { rps, requests: total, writes: writes.load(Ordering::Relaxed), reads: reads.load(Ordering::Relaxed) })
}

async fn drive(dur: Duration, rounds: usize, conns: usize) -> Res<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe).arg("serve").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no child stdout")?).lines();
    let ports = lines.next().ok_or("responder printed nothing")??;
    let (plain, muxp) = ports.split_once(' ').ok_or("bad ports line")?;
    let (plain, muxp): (u16, u16) = (plain.parse()?, muxp.parse()?);
    println!("{conns} concurrent request/response loops ({REQ} B request, {RESP} B response), {dur:?} each, loopback, 2 workers per side");
    let pid = child.id();
    for round in 1..=rounds {
        let c0 = Cpu::measure(pid);
        let (p, n) = run_plain(plain, dur, conns).await?;
        let cpu = Cpu::since(c0, pid, n.max(1) as f64);
        println!(
            "round {round}: (a) {conns} plain TCP connections:   {p:>9.0} req/s;            CPU per request: {:.1} us + {:.1} us",
            cpu.me, cpu.child
        );
        for y in [true, false] {
            let c0 = Cpu::measure(pid);
            let m = run_mux(muxp, dur, conns, y).await?;
            let stats = lines.next().ok_or("responder gone")??;
            let mut it = stats.split_whitespace().skip(1).map(str::parse::<u64>);
            let (sw, sr) = (it.next().ok_or("stats")??, it.next().ok_or("stats")??);
            let req = m.requests.max(1) as f64;
            let cpu = Cpu::since(c0, pid, req);
            println!(
                "round {round}: (b) {conns} mux streams, 1 conn{}: {:>9.0} req/s = {:.2}x plain; CPU per request: {:.1} us + {:.1} us; per request: opener {:.3} writes {:.3} reads, acceptor {:.3} writes {:.3} reads",
                if y { ", yield   " } else { ", no yield" },
                m.rps,
                m.rps / p,
                cpu.me,
                cpu.child,
                m.writes as f64 / req,
                m.reads as f64 / req,
                sw as f64 / req,
                sr as f64 / req,
            );
        }
    }
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
}
