//! In-memory peers for the async decoders: a [`Peer`] whose reads come from the fuzz input
//! and whose writes are kept, and [`block_on`] to run a future over one without a runtime.
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes a peer keeps of what is written to it; a decoder answering with more is a bug.
pub const MAX_WRITTEN: usize = 1 << 20;

/// The other end of a connection: it has sent `input` (then EOF) and reads whatever is
/// written to it into `written`.
pub struct Peer<'a> {
    pub input: &'a [u8],
    pub written: Vec<u8>,
}

impl<'a> Peer<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Peer { input, written: Vec::new() }
    }
}

impl AsyncRead for Peer<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = buf.remaining().min(self.input.len());
        let (head, rest) = self.input.split_at(n);
        buf.put_slice(head);
        self.input = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Peer<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        assert!(self.written.len() + buf.len() <= MAX_WRITTEN, "a decoder wrote more than {MAX_WRITTEN} bytes");
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `fut` to completion with a waker that does nothing. Over a [`Peer`] (always ready)
/// a decoder's future finishes without ever waiting; one that still waits after many polls
/// waits on nothing that can come, which is a hang.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a decoder over in-memory input never finished");
}
