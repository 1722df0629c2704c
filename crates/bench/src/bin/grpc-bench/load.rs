//! The client side: closed-loop unary calls and server streams against one tonic channel
//! (one HTTP/2 connection), the same code for the direct and the relayed target.
//!
//! Each measurement runs `warmup + measure`; only what happens inside the measured window
//! counts. CPU time of every process is read at the window's edges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use ferry_grpc::echo::pb::echo_client::EchoClient;
use ferry_grpc::echo::pb::{EchoRequest, StreamRequest};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// TCP connect and HTTP/2 handshake of a channel.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);
/// How long a measurement may run past its window (calls in flight finishing, streams
/// being dropped) before it counts as hung.
const GRACE: Duration = Duration::from_secs(30);
/// Server-stream calls ask for this many bytes each; the stream is dropped at the window's
/// end, so it only needs to outlast it comfortably at the expected rate.
const STREAM_CALL_BYTES: u64 = 256 << 20;
/// Latency samples reserved per second of window for the whole phase (more just grow).
const SAMPLES_PER_SEC: usize = 200_000;

/// A tonic client and the metadata every call carries.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) client: EchoClient<Channel>,
    /// `authorization`: the SAS token (the direct server ignores it; sent both ways so the
    /// client does the same work for both targets).
    pub(crate) auth: MetadataValue<Ascii>,
}

impl Target {
    /// A channel to `addr` (h2c, TCP_NODELAY), connected now (bounded).
    pub(crate) async fn connect(addr: SocketAddr, token: &str) -> Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_LIMIT);
        let channel = timeout(CONNECT_LIMIT, endpoint.connect())
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(Self {
            client: EchoClient::new(channel),
            auth: token.parse().context("the token is not ASCII")?,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut()
            .insert("authorization", self.auth.clone());
        req
    }

    /// Calls until one succeeds (the relayed path is ready once the gateway knows the
    /// listener and has opened its HTTP/2 connection to it), for at most `limit`.
    pub(crate) async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut client = self.client.clone();
        loop {
            let attempt = timeout(
                Duration::from_secs(5),
                client.unary(self.request(echo(b"ready".to_vec()))),
            )
            .await;
            let why = match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(status)) => status.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            if Instant::now() >= deadline {
                bail!("no successful call within {limit:?}; last: {why}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn echo(payload: Vec<u8>) -> EchoRequest {
    EchoRequest {
        payload,
        message: String::new(),
        fail_code: 0,
        delay_ms: 0,
    }
}

/// Warm-up and measured durations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// CPU seconds used so far by each process of interest (the order is the caller's).
pub(crate) type CpuSampler<'a> = &'a (dyn Fn() -> Result<Vec<f64>> + Sync);

/// What one unary measurement saw.
#[derive(Debug, Default)]
pub(crate) struct UnaryRun {
    /// Calls completed inside the window.
    pub(crate) calls: u64,
    pub(crate) secs: f64,
    /// Latency of each counted call, ns (saturating at `u32::MAX`, 4.29 s).
    pub(crate) lat_ns: Vec<u32>,
    /// CPU seconds each process used during the window.
    pub(crate) cpu: Vec<f64>,
}

/// `inflight` closed loops of unary calls with a `payload`-byte payload.
pub(crate) async fn unary(
    target: &Target,
    inflight: usize,
    payload: usize,
    window: Window,
    cpu: CpuSampler<'_>,
) -> Result<UnaryRun> {
    let begin = Instant::now() + window.warmup;
    let end = begin + window.measure;
    let per_worker =
        (SAMPLES_PER_SEC * window.measure.as_secs().max(1) as usize) / inflight.max(1) + 1024;
    let mut workers = JoinSet::new();
    for _ in 0..inflight.max(1) {
        let target = target.clone();
        let body = vec![0x5a_u8; payload];
        workers.spawn(timeout_at(end + GRACE, async move {
            let mut client = target.client.clone();
            let mut lat = Vec::with_capacity(per_worker);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let reply = client
                    .unary(target.request(echo(body.clone())))
                    .await
                    .context("a unary call failed")?;
                let done = Instant::now();
                ensure!(
                    reply.get_ref().payload.len() == body.len(),
                    "the echo came back with {} bytes, not {}",
                    reply.get_ref().payload.len(),
                    body.len()
                );
                if t >= begin && done <= end {
                    lat.push(u32::try_from((done - t).as_nanos()).unwrap_or(u32::MAX));
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let (lats, [(_, cpu0), (_, cpu1)]) = run_window(begin, end, cpu, &|| 0, workers).await?;
    let lat_ns: Vec<u32> = lats.concat();
    Ok(UnaryRun {
        calls: lat_ns.len() as u64,
        secs: window.measure.as_secs_f64(),
        lat_ns,
        cpu: cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).collect(),
    })
}

/// What one streaming measurement saw.
#[derive(Debug, Default)]
pub(crate) struct StreamRun {
    /// Payload bytes received inside the window.
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    pub(crate) cpu: Vec<f64>,
}

/// `streams` concurrent server-streaming calls of `size`-byte messages, each replaced by a
/// new call when it ends; payload bytes received inside the window count.
pub(crate) async fn server_stream(
    target: &Target,
    streams: usize,
    size: u32,
    window: Window,
    cpu: CpuSampler<'_>,
) -> Result<StreamRun> {
    let begin = Instant::now() + window.warmup;
    let end = begin + window.measure;
    let received = Arc::new(AtomicU64::new(0));
    let count = u32::try_from(STREAM_CALL_BYTES / u64::from(size.max(1)))
        .unwrap_or(u32::MAX)
        .max(1);
    let mut workers = JoinSet::new();
    for _ in 0..streams.max(1) {
        let target = target.clone();
        let received = received.clone();
        workers.spawn(timeout_at(end + GRACE, async move {
            let mut client = target.client.clone();
            while Instant::now() < end {
                let req = StreamRequest {
                    count,
                    size,
                    interval_ms: 0,
                    fail_code: 0,
                };
                let mut stream = client
                    .server_stream(target.request(req))
                    .await
                    .context("a server-stream call failed")?
                    .into_inner();
                while let Some(reply) = stream.message().await.context("a server stream failed")? {
                    received.fetch_add(reply.payload.len() as u64, Ordering::Relaxed);
                    if Instant::now() >= end {
                        // Dropping the stream cancels the call (RST_STREAM).
                        return anyhow::Ok(());
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    let counter = || received.load(Ordering::Relaxed);
    let (_, [(b0, cpu0), (b1, cpu1)]) = run_window(begin, end, cpu, &counter, workers).await?;
    Ok(StreamRun {
        bytes: b1 - b0,
        secs: window.measure.as_secs_f64(),
        cpu: cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).collect(),
    })
}

/// A load task: its result, unless it overran the window by [`GRACE`].
type Worker<X> = Result<Result<X>, tokio::time::error::Elapsed>;

/// A counter and the CPU times, read at one edge of the window.
type Edge = (u64, Vec<f64>);

/// Waits for the window's start and end, reading `counter` and the CPU times at each, then
/// for every worker. The first failure ends the measurement (dropping the set aborts the
/// other workers).
async fn run_window<X: 'static>(
    begin: Instant,
    end: Instant,
    cpu: CpuSampler<'_>,
    counter: &(dyn Fn() -> u64 + Sync),
    mut workers: JoinSet<Worker<X>>,
) -> Result<(Vec<X>, [Edge; 2])> {
    let mut done = Vec::with_capacity(workers.len());
    let mut edges = Vec::with_capacity(2);
    for edge in [begin, end] {
        let sleep = sleep_until(edge);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => {
                    edges.push((counter(), cpu()?));
                    break;
                }
                // A worker may see the end a little before the timer fires: keep its result.
                Some(joined) = workers.join_next() => done.push(finished(joined)?),
            }
        }
    }
    while let Some(joined) = workers.join_next().await {
        done.push(finished(joined)?);
    }
    let edges = <[Edge; 2]>::try_from(edges)
        .map_err(|_| anyhow::anyhow!("the window was not sampled at both edges"))?;
    Ok((done, edges))
}

fn finished<X>(joined: Result<Worker<X>, tokio::task::JoinError>) -> Result<X> {
    joined
        .context("a load task panicked")?
        .context("the load did not stop within 30 s after the window")?
}
