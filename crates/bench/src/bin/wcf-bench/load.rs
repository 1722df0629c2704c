//! The Rust client: closed-loop calls of one operation over K `NetTcpChannel`s, each its own
//! net.tcp session through the gateway's front end, for a warm-up and then a measured window.
//! Only calls that begin and end inside the window count. CPU time of every process is read
//! at the window's edges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferry_wcf::generated::calculator::{Add, CalculatorClient, ReverseBytes};
use ferry_wcf::{ChannelConfig, NetTcpChannel};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use crate::Op;
use crate::roles::QUOTA;

/// Opening a channel (TCP connect, preamble, the gateway's rendezvous with the listener)
/// and one call.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// How long the load may run past its window before it counts as hung.
const GRACE: Duration = Duration::from_secs(30);

/// Warm-up and measured durations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// CPU seconds used so far by each process of interest (the order is the caller's).
pub(crate) type Sampler<'a> = &'a (dyn Fn() -> Result<Vec<f64>> + Sync);

/// CPU samples at the start and at the end of the window.
pub(crate) type Edges = [Vec<f64>; 2];

/// What one Rust measurement saw.
#[derive(Debug)]
pub(crate) struct Run {
    /// Latency of each call inside the window, ns (saturating at `u32::MAX`, 4.29 s).
    pub(crate) lat_ns: Vec<u32>,
    pub(crate) secs: f64,
    pub(crate) edges: Edges,
}

type Client = CalculatorClient<NetTcpChannel<TcpStream>>;

/// Where the relayed calculator is and how to get in.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The gateway's net.tcp port.
    pub(crate) addr: SocketAddr,
    /// `net.tcp://127.0.0.1:PORT/path`.
    pub(crate) via: String,
    /// A SAS token for the path (sent as `RelayAccessToken`).
    pub(crate) token: String,
}

impl Target {
    /// A channel, open (bounded).
    async fn open(&self) -> Result<Client> {
        let mut config = ChannelConfig::default();
        config
            .set_relay_token(self.token.clone())
            .set_max_message_size(QUOTA)
            .set_timeout(CALL_LIMIT);
        let channel = NetTcpChannel::connect(self.addr, self.via.clone(), config)
            .await
            .with_context(|| format!("opening a net.tcp session through {}", self.addr))?;
        Ok(CalculatorClient::new(channel))
    }
}

/// `channels` closed loops of `op` calls (`bytes`-byte arrays for ReverseBytes).
pub(crate) async fn run(
    target: &Target,
    op: Op,
    bytes: usize,
    channels: usize,
    window: Window,
    cpu: Sampler<'_>,
) -> Result<Run> {
    // Every channel is open, and has made one call, before the clock starts.
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels {
        let client = target.open().await?;
        call(&client, op, &Arc::new(pattern(bytes)), 0).await?;
        clients.push(client);
    }
    let data = Arc::new(pattern(bytes));
    let begin = Instant::now() + window.warmup;
    let end = begin + window.measure;
    let mut workers = JoinSet::new();
    for client in clients {
        let data = Arc::clone(&data);
        workers.spawn(timeout_at(end + GRACE, async move {
            let mut lat = Vec::new();
            let mut i = 0i32;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                call(&client, op, &data, i).await?;
                let done = Instant::now();
                if t >= begin && done <= end {
                    lat.push(u32::try_from((done - t).as_nanos()).unwrap_or(u32::MAX));
                }
                i = i.wrapping_add(1);
            }
            // End handshake; the host's End comes back at once.
            let _ = client.transport().close().await;
            anyhow::Ok(lat)
        }));
    }
    sleep_until(begin).await;
    let first = cpu()?;
    sleep_until(end).await;
    let last = cpu()?;
    let mut lat_ns = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let lat = joined
            .context("a load task panicked")?
            .context("the load did not stop within 30 s after the window")??;
        lat_ns.extend(lat);
    }
    Ok(Run {
        lat_ns,
        secs: window.measure.as_secs_f64(),
        edges: [first, last],
    })
}

/// One call, its answer checked.
async fn call(client: &Client, op: Op, data: &Arc<Vec<u8>>, i: i32) -> Result<()> {
    match op {
        Op::Add => {
            let sum = timeout(CALL_LIMIT, client.add(Add { a: i, b: 1 }))
                .await
                .context("Add timed out")?
                .context("Add failed")?
                .add_result;
            ensure!(sum == i.wrapping_add(1), "Add({i}, 1) = {sum}");
        }
        Op::Reverse => {
            let request = ReverseBytes {
                data: data.as_ref().clone(),
            };
            let reversed = timeout(CALL_LIMIT, client.reverse_bytes(request))
                .await
                .context("ReverseBytes timed out")?
                .context("ReverseBytes failed")?
                .reverse_bytes_result;
            ensure!(
                reversed.iter().eq(data.iter().rev()),
                "ReverseBytes of {} bytes came back wrong ({} bytes)",
                data.len(),
                reversed.len()
            );
        }
    }
    Ok(())
}

/// The byte pattern of the recordings (and of CalcBench.cs).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) & 0xff) as u8).collect()
}
