//! Raw relaying: the two connections of a pair that dropped WebSocket framing (Ferry's `raw`
//! extension, [`ferry_hc::command::FEATURE_RAW`]) are joined byte for byte.
//!
//! When both legs are plain TCP the bytes never enter user space: each direction moves them
//! with `splice(2)` through a pipe it borrows for each burst from a small process-wide pool
//! and gives back empty, so an idle connection holds no pipe and no extra descriptor. A TLS leg is decrypted and re-encrypted through
//! one buffer per busy direction, allocated while bytes flow and dropped when the source has
//! nothing to read, so an idle pair holds no buffer at all.
//!
//! End of stream is TCP's: a side that shuts down its writing half has the other side's
//! writing half shut down in turn, and the other direction goes on (half-close) until it
//! ends too or stays silent for the half-close timeout. A side that fails (reset, TLS error, the idle timeout), or the
//! relay's cancellation, has both connections reset, so a peer never mistakes a cut
//! transfer for a complete one.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::relay::{RelayConfig, RelayEnd, Side, close_code};

/// Pipe capacity asked for on each splicing direction (the kernel may give less; it holds
/// pages only while bytes are in flight).
const PIPE_SIZE: usize = 256 * 1024;

/// Relays bytes between `a` and `b` until both have ended their streams, one fails, the
/// idle timeout passes with nothing moving, or `cancel` fires. `a_pre` / `b_pre` are bytes
/// each side sent past its upgrade; they are delivered first (and not counted: the caller
/// read them). `count` learns every byte read from each side's connection.
///
/// # Cancel safety
/// Not cancel safe: dropping the future drops both connections mid-stream. Use `cancel` to
/// end it: both connections are reset.
pub async fn relay_raw(
    mut a: Conn,
    a_pre: &[u8],
    mut b: Conn,
    b_pre: &[u8],
    config: &RelayConfig,
    cancel: &CancellationToken,
    count: &(dyn Fn(Side, u64) + Sync),
) -> RelayEnd {
    let activity = Activity::new();
    // Early bytes go first, each under the idle timeout like any other write.
    for (pre, side) in [(a_pre, Side::A), (b_pre, Side::B)] {
        if pre.is_empty() {
            continue;
        }
        let dst = match side {
            Side::A => &mut b,
            Side::B => &mut a,
        };
        let sent = async {
            dst.write_all(pre).await?;
            dst.flush().await
        };
        let sent = match config.idle_timeout {
            Some(limit) => tokio::time::timeout(limit, sent)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => sent.await,
        };
        if let Err(e) = sent {
            return abort(a, b, side.other(), &e);
        }
    }

    let outcome = match (&a, &b) {
        (Conn::Plain(ta), Conn::Plain(tb)) => {
            let a2b = splice_direction(ta, tb, Side::A, count, &activity);
            let b2a = splice_direction(tb, ta, Side::B, count, &activity);
            join(a2b, b2a, config, cancel, &activity).await
        }
        _ => {
            let (mut ar, mut aw) = tokio::io::split(&mut a);
            let (mut br, mut bw) = tokio::io::split(&mut b);
            let a2b = copy_direction(&mut ar, &mut bw, config.buffer, Side::A, count, &activity);
            let b2a = copy_direction(&mut br, &mut aw, config.buffer, Side::B, count, &activity);
            join(a2b, b2a, config, cancel, &activity).await
        }
    };
    match outcome {
        Outcome::Ended => {
            // Both streams ended; each side's writing half was shut down when the other's
            // stream ended. What is left is closing the sockets: TLS's close_notify was sent
            // with the shutdown, so dropping them is enough.
            RelayEnd::Closed { a: None, b: None }
        }
        Outcome::Cancelled => {
            // A raw stream has no close code to say "going away": the cut is a reset, so
            // neither peer takes a stream stopped halfway for a finished one.
            reset(a, b);
            RelayEnd::Cancelled
        }
        Outcome::Failed(side, e) => abort(a, b, side, &e),
    }
}

/// How the two directions ended together.
enum Outcome {
    Ended,
    Cancelled,
    Failed(Side, io::Error),
}

/// Runs both directions: the first to fail ends the relay; the first to end cleanly leaves
/// the other running for at most the half-close timeout.
async fn join<F1, F2>(
    a2b: F1,
    b2a: F2,
    config: &RelayConfig,
    cancel: &CancellationToken,
    activity: &Activity,
) -> Outcome
where
    F1: Future<Output = Result<(), (Side, io::Error)>>,
    F2: Future<Output = Result<(), (Side, io::Error)>>,
{
    tokio::pin!(a2b, b2a);
    let idle = activity.expired(config.idle_timeout);
    tokio::pin!(idle);
    let first = tokio::select! {
        r = &mut a2b => (Side::A, r),
        r = &mut b2a => (Side::B, r),
        () = &mut idle => return Outcome::Failed(Side::A, io::ErrorKind::TimedOut.into()),
        () = cancel.cancelled() => return Outcome::Cancelled,
    };
    let ended = match first {
        (side, Ok(())) => side,
        (_, Err((side, e))) => return Outcome::Failed(side, e),
    };
    // Unlike a WebSocket relay's, the half-closed direction is cut only when it stops
    // moving: a download after the request's end of stream (HTTP/1.0, `nc -N`) may take as
    // long as it needs. The end of stream counts as a move, so a pair that was quiet before
    // it still gives the other side the whole timeout to answer.
    activity.touch();
    let half_closed = activity.expired(config.half_close_timeout);
    let second = tokio::select! {
        r = &mut a2b, if ended == Side::B => r,
        r = &mut b2a, if ended == Side::A => r,
        () = half_closed => Err((ended.other(), io::ErrorKind::TimedOut.into())),
        () = &mut idle => Err((ended.other(), io::ErrorKind::TimedOut.into())),
        () = cancel.cancelled() => return Outcome::Cancelled,
    };
    match second {
        Ok(()) => Outcome::Ended,
        Err((side, e)) => Outcome::Failed(side, e),
    }
}

/// Resets both connections (so neither peer reads a cut stream as complete) and reports why.
fn abort(a: Conn, b: Conn, side: Side, e: &io::Error) -> RelayEnd {
    reset(a, b);
    RelayEnd::Aborted {
        side,
        reason: format!("connection lost: {e}"),
        code: close_code::GOING_AWAY,
    }
}

/// Closes both connections with a reset.
fn reset(a: Conn, b: Conn) {
    reset_one(a);
    reset_one(b);
}

/// Closes a raw connection with a reset (`SO_LINGER` zero, then close): its peer reads an
/// error, never a clean end of stream. For a raw pair that falls apart before it is relayed.
pub fn reset_one(conn: Conn) {
    let _ = tcp_of(&conn).set_zero_linger();
}

fn tcp_of(conn: &Conn) -> &TcpStream {
    match conn {
        Conn::Plain(tcp) => tcp,
        Conn::Tls(tls) => tls.get_ref().0,
    }
}

/// One direction between plain sockets: source → pipe → destination, in the kernel. The
/// pipe is borrowed from [`PIPES`] for each burst and given back empty, so an idle
/// connection holds no pipe and the descriptors in use follow the bursts in flight.
async fn splice_direction(
    src: &TcpStream,
    dst: &TcpStream,
    side: Side,
    count: &(dyn Fn(Side, u64) + Sync),
    activity: &Activity,
) -> Result<(), (Side, io::Error)> {
    loop {
        src.readable().await.map_err(|e| (side, e))?;
        let Ok(pipe) = Pipe::take() else {
            // Out of descriptors for a pipe: this burst goes through user space instead.
            if copy_burst(src, dst, side, count, activity).await? {
                continue;
            }
            return socket2::SockRef::from(dst)
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| (side.other(), e));
        };
        let moved = src.try_io(Interest::READABLE, || {
            rustix::pipe::splice(src, None, &pipe.w, None, pipe.capacity, splice_flags())
                .map_err(io::Error::from)
        });
        let n = match moved {
            Ok(0) => {
                pipe.give_back();
                // The source ended its stream: so does the destination's writing half.
                return socket2::SockRef::from(dst)
                    .shutdown(std::net::Shutdown::Write)
                    .map_err(|e| (side.other(), e));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give_back();
                continue;
            }
            Err(e) => return Err((side, e)),
        };
        count(side, n as u64);
        activity.touch();
        let mut left = n;
        // An error here drops the pipe with bytes in it: closed, never given back.
        while left > 0 {
            dst.writable().await.map_err(|e| (side.other(), e))?;
            let moved = dst.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(&pipe.r, None, dst, None, left, splice_flags())
                    .map_err(io::Error::from)
            });
            match moved {
                Ok(0) => return Err((side.other(), io::ErrorKind::WriteZero.into())),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err((side.other(), e)),
            }
            activity.touch();
        }
        pipe.give_back();
    }
}

/// Empty pipes kept for the next burst, process-wide.
static PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// At most this many empty pipes are kept (two descriptors each); more are closed.
const PIPES_KEPT: usize = 64;

/// A pipe for splicing; empty whenever it is not in a direction's hands.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// What it holds, as the kernel granted.
    capacity: usize,
}

impl Pipe {
    fn take() -> io::Result<Self> {
        if let Some(pipe) = Self::pool().pop() {
            return Ok(pipe);
        }
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // Fewer, larger moves; the default (64 KiB) when the kernel refuses.
        let capacity = rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(Self { r, w, capacity })
    }

    /// Returns an empty pipe to the pool (or closes it when the pool is full).
    fn give_back(self) {
        let mut pool = Self::pool();
        if pool.len() < PIPES_KEPT {
            pool.push(self);
        }
    }

    fn pool() -> std::sync::MutexGuard<'static, Vec<Self>> {
        // Each critical section is one push or pop: a panic cannot leave it half done.
        PIPES.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Moves what the source has now through a small buffer; `false` at its end of stream.
async fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    side: Side,
    count: &(dyn Fn(Side, u64) + Sync),
    activity: &Activity,
) -> Result<bool, (Side, io::Error)> {
    let mut buf = vec![0u8; 16 * 1024];
    let n = match src.try_read(&mut buf) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
        Err(e) => return Err((side, e)),
    };
    count(side, n as u64);
    activity.touch();
    let mut done = 0;
    while done < n {
        dst.writable().await.map_err(|e| (side.other(), e))?;
        match dst.try_write(&buf[done..n]) {
            Ok(m) => done += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err((side.other(), e)),
        }
        activity.touch();
    }
    Ok(true)
}

fn splice_flags() -> SpliceFlags {
    SpliceFlags::MOVE | SpliceFlags::NONBLOCK
}

/// One direction through user space (a TLS leg): read, write, flush, with a buffer held only
/// while the source has bytes (allocated, never zeroed, when bytes arrive; dropped when the
/// source has nothing more to give).
async fn copy_direction<R, W>(
    src: &mut R,
    dst: &mut W,
    buffer: usize,
    side: Side,
    count: &(dyn Fn(Side, u64) + Sync),
    activity: &Activity,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut held: Option<BytesMut> = None;
    loop {
        let n = std::future::poll_fn(|cx| {
            let buf = held.get_or_insert_with(|| BytesMut::with_capacity(buffer));
            match tokio_util::io::poll_read_buf(Pin::new(&mut *src), cx, buf) {
                Poll::Pending => {
                    // Nothing to read: an idle direction keeps no buffer.
                    held = None;
                    Poll::Pending
                }
                ready => ready,
            }
        })
        .await
        .map_err(|e| (side, e))?;
        if n == 0 {
            return dst.shutdown().await.map_err(|e| (side.other(), e));
        }
        count(side, n as u64);
        activity.touch();
        let Some(buf) = &mut held else {
            unreachable!("a read that returned bytes had a buffer")
        };
        let written = async {
            dst.write_all(buf).await?;
            dst.flush().await
        };
        written.await.map_err(|e| (side.other(), e))?;
        buf.clear();
        activity.touch();
    }
}

/// When bytes last moved either way, for the idle timeout.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last move.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit` (never without one).
    async fn expired(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Side {
    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}
