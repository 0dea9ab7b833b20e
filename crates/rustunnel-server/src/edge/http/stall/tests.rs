use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Chunks = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

/// A body fed by hand: what is sent on the channel, frame by frame.
fn fed() -> (tokio::sync::mpsc::Sender<Bytes>, Chunks) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(Frame::data(b)), rx)) });
    (tx, StreamBody::new(Box::pin(stream) as futures_util::stream::BoxStream<'static, _>))
}

#[tokio::test(start_paused = true)]
async fn a_stream_not_asked_past_its_frame_is_let_go_one_waiting_on_its_service_is_not() {
    let tasks = TaskTracker::new();
    let limit = Duration::from_secs(10);
    // Waiting on its local service (asked, nothing to give) for 5 limits: kept.
    let (tx, body) = fed();
    let mut quiet = StreamStall::new(body, limit, &tasks, CancellationToken::new());
    let next = tokio::time::timeout(limit * 5, quiet.frame()).await;
    assert!(next.is_err(), "nothing came, nothing failed");
    tx.send(Bytes::from_static(b"late")).await.unwrap();
    assert_eq!(quiet.frame().await.unwrap().unwrap().into_data().unwrap(), "late");
    // Handed a frame, then not asked again (no window) for 1.5 limits: let go, and the
    // next ask fails instead of ending the stream.
    tokio::time::sleep(limit * 3 / 2).await;
    assert!(!quiet.is_end_stream());
    let after = quiet.frame().await.unwrap();
    assert!(after.is_err(), "{after:?}");
    assert!(tx.is_closed(), "the body (and what it held) was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_write_nobody_reads_times_out_and_progress_resets_the_clock() {
    let (a, mut b) = tokio::io::duplex(1024);
    let mut w = WriteStall::new(a, Duration::from_secs(5));
    // Room in the pipe: no stall.
    w.write_all(&[1u8; 1024]).await.unwrap();
    // Full: the reader takes a little every 3 s, so every stall is shorter than the limit.
    let reader = async {
        let mut buf = [0u8; 256];
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            b.read_exact(&mut buf).await.unwrap();
        }
        b
    };
    let (r, mut b) = tokio::join!(w.write_all(&[2u8; 2048]), reader);
    r.unwrap();
    // Now nobody reads: the next write that does not fit fails after 5 s.
    let started = Instant::now();
    let err = w.write_all(&[3u8; 4096]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let mut rest = Vec::new();
    drop(w);
    b.read_to_end(&mut rest).await.unwrap();
}
