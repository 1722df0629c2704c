//! A write stall limit for any stream: a peer that stops reading cannot hold our writes for
//! ever.
//!
//! TCP flow control makes a write wait while the peer's receive window is full. A peer that
//! asks for a large answer and never reads it therefore keeps the writing task, its buffers and
//! whatever feeds it pending indefinitely. [`WriteStall`] wraps a stream and fails a write,
//! flush or shutdown that has made no progress for the configured limit with
//! [`io::ErrorKind::TimedOut`]; the caller then drops the connection as for any write error.
//!
//! The clock runs only while the stream is stalled: it is armed when the inner stream first
//! answers `Pending` and disarmed by any write, flush or shutdown that completes, so a slow
//! but steady reader is never cut off, and a stream that keeps up costs one flag check per
//! call. The timer is allocated on the first stall and reused after.
//!
//! To serve a wrapped stream with hyper, wrap it once more in `hyper_util::rt::TokioIo`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

/// A stream whose writes fail with [`io::ErrorKind::TimedOut`] once they have been pending
/// without progress for longer than a limit. Reads pass through untouched.
#[derive(Debug)]
pub struct WriteStall<T> {
    inner: T,
    limit: Duration,
    /// Fires `limit` after the current stall began; allocated on the first stall.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is pending and `timer` is counting it.
    armed: bool,
}

impl<T> WriteStall<T> {
    /// Wraps `inner`; a write pending without progress for `limit` fails. A zero limit, or
    /// one too large to add to the current time, never fires.
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably. Writing to it directly bypasses the limit.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The stall limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Bookkeeping after the inner stream answered: progress disarms the clock; `Pending`
    /// arms it (if not yet armed) and fails the call once it has fired.
    fn check<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            // A new stall starts now. A zero limit means no limit, and so does one too far
            // away to be a point in time.
            let Some(deadline) = Instant::now()
                .checked_add(self.limit)
                .filter(|_| !self.limit.is_zero())
            else {
                return Poll::Pending;
            };
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(sleep_until(deadline))),
            }
            self.armed = true;
        }
        let Some(timer) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        // Polling registers the waker, so the task wakes when the limit passes even if the
        // peer never reads again. The clock stays armed after it fires: the stall goes on,
        // and every later pending write fails at once.
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("write stalled for more than {:?}", self.limit),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS close_notify is a write too, and can stall like any other.
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    // Real time (ferry-net's tests do not build tokio's paused clock): short, with slack in
    // every upper bound for a loaded machine.
    const LIMIT: Duration = Duration::from_millis(300);
    const SLACK: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_write_nobody_reads_times_out_after_the_limit() {
        let (near, _far) = duplex(16);
        let mut io = WriteStall::new(near, LIMIT);
        let start = Instant::now();
        let err = io
            .write_all(&[1u8; 64])
            .await
            .expect_err("the far end never reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(waited >= LIMIT && waited < LIMIT + SLACK, "{waited:?}");
        // The stall goes on: the next write fails at once.
        let again = io.write_all(&[1u8; 64]).await.expect_err("still stalled");
        assert_eq!(again.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() - waited < LIMIT, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_zero_or_huge_limit_never_fires() {
        for limit in [Duration::ZERO, Duration::MAX] {
            let (near, mut far) = duplex(16);
            let mut io = WriteStall::new(near, limit);
            // Stalled well past what any real limit would allow, then read: no error.
            let write = tokio::spawn(async move {
                io.write_all(&[1u8; 64]).await?;
                Ok::<_, io::Error>(io)
            });
            tokio::time::sleep(LIMIT * 2).await;
            let mut got = [0u8; 64];
            far.read_exact(&mut got).await.expect("the far end reads");
            let io = tokio::time::timeout(SLACK, write)
                .await
                .expect("the write completes once read")
                .expect("write task");
            assert!(io.is_ok(), "limit {limit:?}: {:?}", io.err());
        }
    }

    #[tokio::test]
    async fn progress_restarts_the_clock() {
        let (near, mut far) = duplex(16);
        let mut io = WriteStall::new(near, LIMIT);
        // The reader takes 16 bytes every 100 ms: each pause is under the limit, the whole
        // transfer (about 1.6 s) over five times it.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match far.read(&mut buf).await.expect("read") {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let start = Instant::now();
        let data: Vec<u8> = (0..=255u8).collect();
        io.write_all(&data)
            .await
            .expect("steady progress is no stall");
        io.shutdown().await.expect("shutdown");
        drop(io);
        assert_eq!(reader.await.expect("reader"), data);
        assert!(start.elapsed() > LIMIT * 5, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_stall_after_progress_is_timed_from_its_own_start() {
        let (near, mut far) = duplex(16);
        let mut io = WriteStall::new(near, LIMIT);
        io.write_all(&[1u8; 16]).await.expect("fits the buffer");
        // Blocks, then is unblocked after 200 ms: this stall ends within the limit.
        let drain = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 16];
            far.read_exact(&mut buf).await.expect("read");
            far
        });
        io.write_all(&[2u8; 16]).await.expect("drained in time");
        let _far = drain.await.expect("drain");
        // Now a fresh stall: it gets the whole limit again, counted from here.
        let start = Instant::now();
        let err = io.write_all(&[3u8; 16]).await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= LIMIT, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn reads_pass_through_and_do_not_arm_the_clock() {
        let (near, mut far) = duplex(64);
        let mut io = WriteStall::new(near, LIMIT);
        far.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
        tokio::time::sleep(LIMIT * 2).await;
        io.write_all(b"world")
            .await
            .expect("no stall after a quiet time");
        far.read_exact(&mut buf).await.expect("read back");
        assert_eq!(&buf, b"world");
    }
}
