//! A one-hop TCP relay for the benchmarks' reference figures (`bench/relay-lab.sh`): two of them
//! chained are the two hops a plain tunnel adds (server and client), without the rest of
//! rustunnel.
//!
//! `splice_relay MODE LISTEN TARGET`, MODE:
//! - `tokio`: rustunnel's own socket-to-socket copy ([`rustunnel_transport::zerocopy::splice_tcp`]);
//! - `threads`: the simplest relay there is, one blocking thread per direction moving bytes with
//!   `splice(2)` through a pipe (Linux only).
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, listen, target] = &args[..] else {
        eprintln!("usage: splice_relay tokio|threads LISTEN_ADDR TARGET_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().map_err(std::io::Error::other)?;
    let target: SocketAddr = target.parse().map_err(std::io::Error::other)?;
    match mode.as_str() {
        "tokio" => tokio_relay(listen, target),
        "threads" => threads::relay(listen, target),
        _ => {
            eprintln!("unknown mode {mode}: tokio or threads");
            std::process::exit(2);
        }
    }
}

fn tokio_relay(listen: SocketAddr, target: SocketAddr) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (mut a, _) = l.accept().await?;
            tokio::spawn(async move {
                let Ok(mut b) = tokio::net::TcpStream::connect(target).await else { return };
                let _ = (a.set_nodelay(true), b.set_nodelay(true));
                let _ = rustunnel_transport::zerocopy::splice_tcp(&mut a, &mut b, &|_| {}, &|_| {}).await;
            });
        }
    })
}

#[cfg(target_os = "linux")]
mod threads {
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

    use rustix::pipe::{fcntl_setpipe_size, pipe, splice, SpliceFlags};

    fn one_way(r: TcpStream, w: TcpStream) {
        let Ok((pr, pw)) = pipe() else { return };
        let cap = fcntl_setpipe_size(&pw, 256 * 1024).unwrap_or(64 * 1024);
        while let Ok(n) = splice(&r, None, &pw, None, cap, SpliceFlags::MOVE) {
            if n == 0 {
                let _ = w.shutdown(Shutdown::Write);
                return;
            }
            let mut left = n;
            while left > 0 {
                match splice(&pr, None, &w, None, left, SpliceFlags::MOVE) {
                    Ok(m) => left -= m,
                    Err(_) => return,
                }
            }
        }
    }

    pub fn relay(listen: SocketAddr, target: SocketAddr) -> std::io::Result<()> {
        let l = TcpListener::bind(listen)?;
        loop {
            let (a, _) = l.accept()?;
            let b = TcpStream::connect(target)?;
            a.set_nodelay(true)?;
            b.set_nodelay(true)?;
            let (a2, b2) = (a.try_clone()?, b.try_clone()?);
            std::thread::spawn(move || one_way(a, b));
            std::thread::spawn(move || one_way(b2, a2));
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod threads {
    pub fn relay(_: std::net::SocketAddr, _: std::net::SocketAddr) -> std::io::Result<()> {
        Err(std::io::Error::other("the threads mode needs Linux splice(2)"))
    }
}
