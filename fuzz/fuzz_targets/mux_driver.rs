//! The multiplexer's driver (`rustunnel_transport::mux::mux`) over an in-memory connection: the
//! bytes a peer sends (any stream id, any credit, any kind), cut into reads anywhere, at either
//! role, with the streams opened or accepted read and answered by tasks as a server or client
//! would. The first byte picks the role and how the bytes are cut. Where `mux_frames` drives the
//! dispatch by hand, this runs the real tasks and the end of the connection: the driver never
//! panics, always ends once the peer's input ends, and its memory stays bounded.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustunnel_fuzz::{measure, Input};
use rustunnel_transport::mux::{mux, MuxConfig, MuxStream, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Heap one input may make the mux hold: its 64 KiB read buffer, the windows of the few streams
/// an input of this size can open, the answers queued, and the runtime's own.
const BOUND: usize = 8 << 20;

/// Reads a stream to its end, answering each read, then finishes it.
async fn serve(mut s: MuxStream) {
    let mut buf = [0u8; 256];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
        if s.write_all(b"answer").await.is_err() {
            break;
        }
    }
    let _ = s.shutdown().await;
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let how = input.byte();
    let role = if how & 1 == 0 { Role::Acceptor } else { Role::Opener };
    let piece = usize::from(how >> 1) + 1;
    let bytes = input.rest();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    let (ended, peak) = measure(|| {
        rt.block_on(async move {
            let (raw, io) = tokio::io::duplex(1 << 20);
            let (h, mut acc, driver) = mux(io, role, MuxConfig::default());
            let driver = tokio::spawn(driver);
            if role == Role::Opener {
                // Streams 1 and 2 of our own, for the input's frames to hit.
                for _ in 0..2 {
                    tokio::spawn(serve(h.open(b"meta").expect("a stream opens")));
                }
            }
            tokio::spawn(async move {
                while let Some((_, s)) = acc.accept().await {
                    tokio::spawn(serve(s));
                }
            });
            let (mut rr, mut rw) = tokio::io::split(raw);
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(rr.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            for p in bytes.chunks(piece) {
                if rw.write_all(p).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = rw.shutdown().await;
            drop(h);
            // Paused time: this waits on the runtime's clock, which jumps ahead when all is idle.
            tokio::time::timeout(Duration::from_secs(60), driver).await.is_ok()
        })
    });
    assert!(ended, "the driver did not end after the peer's input ended");
    assert!(peak <= BOUND, "the mux held {peak} bytes");
});
