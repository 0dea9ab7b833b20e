//! Socket-to-socket copy without copying: on Linux, bytes move from one TCP socket into a
//! pipe and from the pipe into the other socket with `splice(2)`, as page references, never
//! through user space. Used where both sides of a tunnel hop are plain TCP (the public TCP
//! edge and a plain data connection on the server; a plain data connection and the local
//! service on the client).
//!
//! Like [`crate::splice::splice`]: both directions at once, half-close preserved, and an idle
//! connection holds nothing: a direction borrows a pipe from a small per-thread pool only while
//! bytes are in flight, and gives it back empty.
use std::io;

use tokio::net::TcpStream;

/// Copies both ways between `a` and `b` until both directions have ended, shutting down each
/// writer when its reader reaches EOF. `on_ab` / `on_ba` are told each chunk's size as it moves
/// (for live byte counters). Returns the bytes moved `a -> b` and `b -> a`.
pub async fn splice_tcp(
    a: &mut TcpStream,
    b: &mut TcpStream,
    on_ab: &(dyn Fn(usize) + Sync),
    on_ba: &(dyn Fn(usize) + Sync),
) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        let (a, b) = (&*a, &*b);
        tokio::try_join!(imp::one_way(a, b, on_ab), imp::one_way(b, a, on_ba))
    }
    // Elsewhere there is no splice(2): the buffered copy, counted once at the end.
    #[cfg(not(target_os = "linux"))]
    {
        let (x, y) = crate::splice::splice(a, b).await?;
        on_ab(x as usize);
        on_ba(y as usize);
        Ok((x, y))
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::RefCell;
    use std::io;
    use std::net::Shutdown;
    use std::os::fd::OwnedFd;

    use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Pipe capacity asked for; the kernel may grant less (unprivileged pipe quotas), which only
    /// costs more syscalls. 1 MiB measured no better than this within the noise, and pipe sizes
    /// count against the user's pipe quota (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by
    /// default) even while a pooled pipe is empty.
    const PIPE_SIZE: usize = 256 * 1024;
    /// Empty pipes kept per thread for reuse (a few MiB of quota at most); beyond that they
    /// are closed. Creating one costs two syscalls.
    const POOL_MAX: usize = 8;

    struct Pipe {
        r: OwnedFd,
        w: OwnedFd,
        cap: usize,
    }

    thread_local! {
        static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    }

    fn take_pipe() -> io::Result<Pipe> {
        if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Ok(p);
        }
        let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let cap = fcntl_setpipe_size(&w, PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(Pipe { r, w, cap })
    }

    /// Only empty pipes go back: a pipe still holding bytes would leak them into another stream.
    fn give_pipe(p: Pipe) {
        PIPES.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(p);
            }
        })
    }

    const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

    enum Pumped {
        /// The reader has nothing more for now; the pipe is empty.
        Idle,
        Eof,
    }

    /// Moves everything the reader has into the writer through `pipe`.
    async fn pump(
        r: &TcpStream,
        w: &TcpStream,
        pipe: &Pipe,
        on: &(dyn Fn(usize) + Sync),
        total: &mut u64,
    ) -> io::Result<Pumped> {
        loop {
            let n = match r.try_io(Interest::READABLE, || Ok(splice(r, None, &pipe.w, None, pipe.cap, FLAGS)?)) {
                Ok(0) => return Ok(Pumped::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::Idle),
                Err(e) => return Err(e),
            };
            let mut left = n;
            while left > 0 {
                let m = w.async_io(Interest::WRITABLE, || Ok(splice(&pipe.r, None, w, None, left, FLAGS)?)).await?;
                if m == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "write zero bytes"));
                }
                left -= m;
            }
            *total += n as u64;
            on(n);
        }
    }

    pub(super) async fn one_way(r: &TcpStream, w: &TcpStream, on: &(dyn Fn(usize) + Sync)) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            r.readable().await?;
            let pipe = take_pipe()?;
            match pump(r, w, &pipe, on, &mut total).await {
                Ok(Pumped::Idle) => give_pipe(pipe),
                Ok(Pumped::Eof) => {
                    give_pipe(pipe);
                    // Half-close: the peer sees EOF, the other direction goes on.
                    match socket2::SockRef::from(w).shutdown(Shutdown::Write) {
                        Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                        _ => return Ok(total),
                    }
                }
                // The pipe may still hold bytes: it is closed, not reused.
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    pub(crate) async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn moves_both_ways_with_half_close_and_counts() {
        let (outer_a, mut inner_a) = pair().await;
        let (mut inner_b, outer_b) = pair().await;
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c2 = counted.clone();
        let task = tokio::spawn(async move {
            let on_ab = move |n: usize| {
                c2.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            };
            splice_tcp(&mut inner_a, &mut inner_b, &on_ab, &|_| {}).await
        });
        crate::splice::tests::exchange_with_half_close(outer_a, outer_b, 3_000_000).await;
        let (x, y) = task.await.unwrap().unwrap();
        assert_eq!((x, y), (3_000_000, 22));
        assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 3_000_000);
    }

    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let (outer_a, mut inner_a) = pair().await;
        let (mut inner_b, _outer_b) = pair().await;
        let task = tokio::spawn(async move { splice_tcp(&mut inner_a, &mut inner_b, &|_| {}, &|_| {}).await });
        // Abortive close (RST) of one end.
        socket2::SockRef::from(&outer_a).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(outer_a);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("splice ends").unwrap();
        // An error, not a clean end: the caller then resets the other side, so that a reset
        // is never turned into a FIN that would make a cut-off transfer look complete.
        let e = r.expect_err("a reset is an error");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
}
