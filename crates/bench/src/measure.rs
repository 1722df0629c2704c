//! The sender side of each measurement, the same code for direct TCP and relayed streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferry_sdk::Endpoint;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::peer::{MODE_ECHO, MODE_IDLE, MODE_SINK};

/// TCP connect plus, when relayed, the two WebSocket upgrades and the rendezvous.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// One bulk transfer, whatever its size (at 10 MB/s, 1 GiB takes 107 s).
const BULK_LIMIT: Duration = Duration::from_secs(300);
/// A whole round-trip series.
const RTT_LIMIT: Duration = Duration::from_secs(120);
/// Closing: Close (or FIN), then reading to the peer's end.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// One connection of the connection-rate or idle phase, set-up and first round trip.
const SETUP_LIMIT: Duration = Duration::from_secs(30);

/// Size of each write of a bulk sender: large, so the stream cuts it into its largest
/// messages (64 KiB for relayed streams).
const WRITE_CHUNK: usize = 1 << 20;

/// A byte stream of either kind.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to the listener process.
pub(crate) type Conn = Box<dyn Io>;

/// Where the sender connects.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// The listener process's TCP server.
    Direct(SocketAddr),
    /// Through the gateway.
    Relay(Endpoint),
}

impl Target {
    /// Connects (bounded).
    pub(crate) async fn connect(&self) -> Result<Conn> {
        match self {
            Self::Direct(addr) => {
                let s = timeout(CONNECT_LIMIT, TcpStream::connect(addr))
                    .await
                    .context("direct connect timed out")??;
                s.set_nodelay(true)?;
                Ok(Box::new(s))
            }
            Self::Relay(endpoint) => {
                let s = timeout(CONNECT_LIMIT, ferry_sdk::connect(endpoint, &[]))
                    .await
                    .context("relayed connect timed out")??;
                Ok(Box::new(s))
            }
        }
    }
}

/// Ends a connection politely (bounded): shut down writing, read to the peer's end.
async fn close(mut c: Conn) {
    let _ = timeout(CLOSE_LIMIT, async {
        c.shutdown().await?;
        let mut buf = [0u8; 256];
        while c.read(&mut buf).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// Sends `total` bytes split over `streams` parallel connections to sinks; returns
/// 10^6 bytes per second, from the first byte sent to the last ack (connections are
/// opened before the clock starts).
pub(crate) async fn bulk(target: &Target, streams: usize, total: u64) -> Result<f64> {
    let per = total / streams as u64;
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams {
        conns.push(target.connect().await?);
    }
    let start = Instant::now();
    let mut set = JoinSet::new();
    for c in conns {
        set.spawn(send_bulk(c, per));
    }
    let mut closing = Vec::with_capacity(streams);
    while let Some(r) = set.join_next().await {
        closing.push(r??);
    }
    let secs = start.elapsed().as_secs_f64();
    for c in closing {
        close(c).await;
    }
    Ok((per * streams as u64) as f64 / secs / 1e6)
}

async fn send_bulk(mut c: Conn, n: u64) -> Result<Conn> {
    let chunk = vec![0xa5u8; WRITE_CHUNK];
    timeout(BULK_LIMIT, async {
        let mut head = [0u8; 9];
        head[0] = MODE_SINK;
        head[1..].copy_from_slice(&n.to_le_bytes());
        c.write_all(&head).await?;
        let mut left = n;
        while left > 0 {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
            c.write_all(&chunk[..k]).await?;
            left -= k as u64;
        }
        c.flush().await?;
        let mut ack = [0u8; 1];
        c.read_exact(&mut ack).await?;
        std::io::Result::Ok(())
    })
    .await
    .context("bulk transfer timed out")??;
    Ok(c)
}

/// Round trips of a `size`-byte message on one connection: `count` timed after `warmup`
/// untimed ones. Returns each round trip in nanoseconds.
pub(crate) async fn round_trips(
    target: &Target,
    size: usize,
    warmup: usize,
    count: usize,
) -> Result<Vec<u64>> {
    let mut c = target.connect().await?;
    let msg = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut times = Vec::with_capacity(count);
    timeout(RTT_LIMIT, async {
        c.write_all(&[MODE_ECHO]).await?;
        c.flush().await?;
        for i in 0..warmup + count {
            let t = Instant::now();
            c.write_all(&msg).await?;
            c.flush().await?;
            c.read_exact(&mut back).await?;
            if i >= warmup {
                times.push(t.elapsed().as_nanos() as u64);
            }
        }
        std::io::Result::Ok(())
    })
    .await
    .context("round trips timed out")??;
    close(c).await;
    Ok(times)
}

/// Result of the connection-rate phase.
#[derive(Debug)]
pub(crate) struct ConnRate {
    /// Seconds from the first connect to the last close.
    pub(crate) secs: f64,
    /// Set-up times (connect, accept, first byte back), nanoseconds.
    pub(crate) setup_ns: Vec<u64>,
    /// Connections that failed or timed out.
    pub(crate) failures: usize,
}

/// Opens connections from `workers` tasks for `duration` or until `max` were started. Each
/// one is connected, sends one byte, reads it back, and is closed.
pub(crate) async fn conn_rate(
    target: &Target,
    workers: usize,
    duration: Duration,
    max: usize,
) -> Result<ConnRate> {
    let started = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (target, started) = (target.clone(), started.clone());
        set.spawn(async move {
            let mut times = Vec::new();
            let mut failures = 0usize;
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                match timeout(SETUP_LIMIT, first_byte(&target, MODE_ECHO)).await {
                    Ok(Ok(c)) => {
                        times.push(t.elapsed().as_nanos() as u64);
                        close(c).await;
                    }
                    _ => failures += 1,
                }
            }
            (times, failures)
        });
    }
    let mut setup_ns = Vec::new();
    let mut failures = 0;
    while let Some(r) = set.join_next().await {
        let (t, f) = r?;
        setup_ns.extend(t);
        failures += f;
    }
    Ok(ConnRate {
        secs: start.elapsed().as_secs_f64(),
        setup_ns,
        failures,
    })
}

/// Connects and makes one round trip of one byte in `mode`.
async fn first_byte(target: &Target, mode: u8) -> Result<Conn> {
    let mut c = target.connect().await?;
    c.write_all(&[mode, b'x']).await?;
    c.flush().await?;
    let mut back = [0u8; 1];
    c.read_exact(&mut back).await?;
    if back[0] != b'x' {
        bail!("echo returned {:?}", back[0]);
    }
    Ok(c)
}

/// Opens `n` idle connections, `parallel` at a time, each proven live by one round trip.
pub(crate) async fn open_idle(target: &Target, n: usize, parallel: usize) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut launched = 0;
    while conns.len() < n {
        while launched < n && set.len() < parallel {
            let target = target.clone();
            set.spawn(async move {
                timeout(SETUP_LIMIT, first_byte(&target, MODE_IDLE))
                    .await
                    .context("idle connection set-up timed out")?
            });
            launched += 1;
        }
        let Some(r) = set.join_next().await else {
            bail!("idle connections: nothing left to wait for");
        };
        conns.push(r?.with_context(|| format!("idle connection {}", conns.len() + 1))?);
    }
    Ok(conns)
}

/// The `p`-th percentile (0–100) of sorted values, in microseconds.
pub(crate) fn percentile_us(sorted_ns: &[u64], p: usize) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = (sorted_ns.len() * p / 100).min(sorted_ns.len() - 1);
    sorted_ns[i] as f64 / 1000.0
}
