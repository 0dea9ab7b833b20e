//! A TCP relay that adds a fixed delay each way, for the benchmarks' long-link figures
//! (`bench/bench.py --only longlink`): a stand-in for `tc netem delay` where the kernel has no
//! netem. Each direction reads what arrives at once and writes it out `DELAY_MS` after its
//! arrival, so the delay does not cap the bandwidth (up to 64 MiB in flight per direction).
//!
//! `delay_relay LISTEN TARGET DELAY_MS`
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes per chunk read; chunks in flight per direction.
const CHUNK: usize = 64 * 1024;
const IN_FLIGHT: usize = 1024;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, delay] = &args[..] else {
        eprintln!("usage: delay_relay LISTEN_ADDR TARGET_ADDR DELAY_MS");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().map_err(std::io::Error::other)?;
    let target: SocketAddr = target.parse().map_err(std::io::Error::other)?;
    let delay = Duration::from_millis(delay.parse().map_err(std::io::Error::other)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let l = TcpListener::bind(listen).await?;
        loop {
            let (a, _) = l.accept().await?;
            tokio::spawn(async move {
                let Ok(b) = TcpStream::connect(target).await else { return };
                let _ = (a.set_nodelay(true), b.set_nodelay(true));
                let (ar, aw) = a.into_split();
                let (br, bw) = b.into_split();
                direction(ar, bw, delay);
                direction(br, aw, delay);
            });
        }
    })
}

/// Moves `from` to `to`, each chunk `delay` after it was read; EOF is passed on in order.
fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            // An empty chunk carries the EOF.
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() || n == 0 {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}
