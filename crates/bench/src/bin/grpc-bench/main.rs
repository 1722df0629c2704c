//! `grpc-bench`: gRPC calls direct against through the gateway's gRPC ingress, side by side
//! in one run:
//!
//! - DIRECT: tonic client → tonic echo server on loopback TCP (TCP_NODELAY);
//! - RELAY: tonic client over h2c → gateway gRPC ingress (routed by service name, SAS token
//!   in `authorization`) → one relayed HTTP/2 connection → SDK listener → the same tonic
//!   echo server, served over `ferry_grpc::incoming`.
//!
//! Measured for each: unary calls per second and p50 / p99 latency with 1 and with 64 calls
//! in flight (16-byte payload), server-streaming throughput (16 KiB messages), the CPU each
//! process spends per call or per GB, and the peak resident memory of every process.
//!
//! Four processes, so that no two roles share a tokio runtime: this one is the client; the
//! same binary re-executed in hidden roles runs the gateway, the relayed service (SDK
//! listener + tonic) and the direct service (tonic on TCP). Children are killed when the
//! benchmark ends or fails, and exit by themselves when their standard input closes.
//!
//! ```text
//! cargo build --release -p ferry-bench --bin grpc-bench
//! target/release/grpc-bench                       # 5 s per case after 1 s of warm-up
//! target/release/grpc-bench --secs 2 --warmup-secs 0.5 --transports relay
//! ```
//!
//! The child PIDs are printed at start, for `perf record -p PID`; `--transports`,
//! `--no-unary` / `--no-stream` and the `--*-threads` flags (tokio worker threads per
//! process, 1 for a current-thread runtime) narrow a run down for such experiments.
//!
//! Numbers from 2 shared cores move with whatever else runs: the load average is printed
//! before and after. Round trips with 1 call in flight also depend on how fast an idle vCPU
//! wakes (each hop pays a wake-up), so compare runs made in the same state, or pool
//! interleaved rounds with `--rounds`.

mod load;
mod procs;
mod roles;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::{Args, Parser, Subcommand};
use ferry_sdk::{SasKeyProvider, TokenProvider as _};
use serde_json::json;

use crate::load::{Target, Window};
use crate::procs::Proc;
use crate::roles::{KEY_ENV, PATH, Transport};

#[derive(Parser)]
#[command(
    name = "grpc-bench",
    about = "Loopback gRPC benchmark: direct tonic vs the Ferry gateway's gRPC ingress"
)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Role {
    /// Internal: the gateway process.
    #[command(hide = true)]
    Gateway(RuntimeArgs),
    /// Internal: a service process.
    #[command(hide = true)]
    Service(roles::ServiceArgs),
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// Measured seconds per case.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds before each measured window (same load, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Unary calls in flight, one case each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64])]
    inflight: Vec<usize>,
    /// Unary request payload, bytes (echoed back).
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Server-stream message payload, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    stream_msg: u32,
    /// Concurrent server streams.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Skip the server-streaming case.
    #[arg(long)]
    no_stream: bool,
    /// Skip the unary cases.
    #[arg(long)]
    no_unary: bool,
    /// Rounds of all cases, interleaving the transports; the samples are pooled.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Measure only these transports (comma-separated), e.g. to profile one of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    transports: Vec<Transport>,
    /// Tokio worker threads of this (client) process; 0: one per core, 1: a current-thread
    /// runtime. For experiments on where the time goes.
    #[arg(long, default_value_t = 0)]
    client_threads: usize,
    /// Worker threads of the gateway process (as for --client-threads).
    #[arg(long, default_value_t = 0)]
    gateway_threads: usize,
    /// Worker threads of the two service processes (as for --client-threads).
    #[arg(long, default_value_t = 0)]
    service_threads: usize,
}

/// A child's runtime settings.
#[derive(Args, Clone, Copy, Debug)]
struct RuntimeArgs {
    /// Tokio worker threads; 0: one per core, 1: a current-thread runtime.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.role {
        Some(Role::Gateway(rt)) => rt.threads,
        Some(Role::Service(args)) => args.runtime.threads,
        None => cli.opts.client_threads,
    };
    let runtime = match threads {
        0 => tokio::runtime::Builder::new_multi_thread(),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    .enable_all()
    .build()?;
    match cli.role {
        Some(Role::Gateway(_)) => runtime.block_on(roles::gateway()),
        Some(Role::Service(args)) => runtime.block_on(roles::service(args)),
        None => runtime.block_on(bench(cli.opts)),
    }
}

/// Indices of the processes in a CPU sample.
const CLIENT: usize = 0;
const GATEWAY: usize = 1;
const LISTENER: usize = 2;
const DIRECT_SERVER: usize = 3;

/// The child processes. Fields drop in order: the services stop before the gateway, so the
/// listener does not see its gateway vanish (and log it) first.
struct Rig {
    listener: Proc,
    direct: Proc,
    gateway: Proc,
}

impl Rig {
    async fn start(o: &Opts) -> Result<Self> {
        let gw_threads = o.gateway_threads.to_string();
        let svc_threads = o.service_threads.to_string();
        let gateway = Proc::start("gateway", &["gateway", "--threads", &gw_threads], &[]).await?;
        let plain = format!("ws://{}", gateway.field("plain")?);
        let rule = gateway.field("rule")?.to_owned();
        let key = gateway.field("key")?.to_owned();
        let listener = Proc::start(
            "listener",
            &[
                "service",
                "--serve",
                "relay",
                "--gateway",
                &plain,
                "--rule",
                &rule,
            ],
            &[(KEY_ENV, &key)],
        )
        .await?;
        let direct = Proc::start(
            "direct server",
            &["service", "--serve", "direct", "--threads", &svc_threads],
            &[],
        )
        .await?;
        Ok(Self {
            listener,
            direct,
            gateway,
        })
    }

    fn cpu(&self) -> Result<Vec<f64>> {
        Ok(vec![
            procs::self_cpu_secs()?,
            self.gateway.cpu_secs()?,
            self.listener.cpu_secs()?,
            self.direct.cpu_secs()?,
        ])
    }

    /// The service process's index in a CPU sample.
    fn server_index(t: Transport) -> usize {
        match t {
            Transport::Direct => DIRECT_SERVER,
            Transport::Relay => LISTENER,
        }
    }
}

/// Unary samples of one transport and concurrency, pooled over the rounds.
#[derive(Debug, Default)]
struct UnaryAcc {
    calls: u64,
    secs: f64,
    lat_ns: Vec<u32>,
    cpu: Vec<f64>,
}

#[derive(Debug, Default)]
struct StreamAcc {
    bytes: u64,
    secs: f64,
    cpu: Vec<f64>,
}

fn add(acc: &mut Vec<f64>, v: &[f64]) {
    acc.resize(v.len().max(acc.len()), 0.0);
    for (a, b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

/// One transport's unary figures.
#[derive(Debug, Clone, Copy)]
struct UnaryFig {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    calls: u64,
    /// CPU µs per call: client, gateway (relay only), server.
    cpu_us: [Option<f64>; 3],
}

#[derive(Debug, Clone, Copy)]
struct StreamFig {
    mb_s: f64,
    /// CPU s per GB: client, gateway (relay only), server.
    cpu_s_per_gb: [Option<f64>; 3],
}

/// The `p`-th percentile (0–100) of sorted nanoseconds, in µs.
fn percentile_us(sorted_ns: &[u32], p: usize) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = (sorted_ns.len() * p / 100).min(sorted_ns.len() - 1);
    f64::from(sorted_ns[i]) / 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    ensure!((0.0..=3600.0).contains(&s), "{what} must be 0–3600 s");
    Ok(Duration::from_secs_f64(s))
}

async fn bench(mut o: Opts) -> Result<()> {
    let window = Window {
        warmup: secs(o.warmup_secs, "--warmup-secs")?,
        measure: secs(o.secs, "--secs")?,
    };
    ensure!(
        window.measure >= Duration::from_millis(100),
        "--secs must be ≥ 0.1"
    );
    ensure!(
        o.inflight.iter().all(|&n| (1..=10_000).contains(&n)),
        "--inflight must be 1–10000"
    );
    ensure!((1..=1024).contains(&o.streams), "--streams must be 1–1024");
    ensure!(
        (1..=4 << 20).contains(&o.stream_msg),
        "--stream-msg must be 1 B–4 MiB"
    );
    ensure!(o.payload <= 4 << 20, "--payload must be ≤ 4 MiB");
    if o.no_unary {
        o.inflight.clear();
    }
    let transports: Vec<Transport> = [Transport::Direct, Transport::Relay]
        .into_iter()
        .filter(|t| o.transports.is_empty() || o.transports.contains(t))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();
    eprintln!("grpc-bench on {cores} cores, load average {load_before}");

    let rig = Rig::start(&o).await?;
    eprintln!(
        "  pids: client {}, gateway {}, listener {}, direct server {}",
        std::process::id(),
        rig.gateway.pid(),
        rig.listener.pid(),
        rig.direct.pid()
    );
    let token = SasKeyProvider::new(
        rig.gateway.field("rule")?,
        rig.gateway.field("key")?,
        Duration::from_secs(24 * 3600),
    )
    .token(&format!("http://localhost/{PATH}"))?
    .text;
    let mut targets = Vec::new();
    for &t in &transports {
        let addr: SocketAddr = match t {
            Transport::Direct => rig.direct.field("direct")?,
            Transport::Relay => rig.gateway.field("plain")?,
        }
        .parse()
        .context("bad address from a child")?;
        let target = Target::connect(addr, &token).await?;
        target
            .wait_ready(Duration::from_secs(20))
            .await
            .with_context(|| format!("{t:?} target not ready"))?;
        targets.push((t, target));
    }

    let sampler = || rig.cpu();
    let mut unary: Vec<((usize, Transport), UnaryAcc)> = Vec::new();
    let mut stream: Vec<(Transport, StreamAcc)> = Vec::new();
    for round in 0..o.rounds.max(1) {
        for &n in &o.inflight {
            for (t, target) in &targets {
                let run = load::unary(target, n, o.payload, window, &sampler)
                    .await
                    .with_context(|| format!("unary, {n} in flight, {t:?}"))?;
                eprintln!(
                    "  round {}: unary {:<6} {n:>3} in flight: {:>9.0} calls/s",
                    round + 1,
                    format!("{t:?}"),
                    run.calls as f64 / run.secs
                );
                let idx = match unary.iter().position(|(k, _)| *k == (n, *t)) {
                    Some(i) => i,
                    None => {
                        unary.push(((n, *t), UnaryAcc::default()));
                        unary.len() - 1
                    }
                };
                let acc = &mut unary[idx].1;
                acc.calls += run.calls;
                acc.secs += run.secs;
                acc.lat_ns.extend_from_slice(&run.lat_ns);
                add(&mut acc.cpu, &run.cpu);
            }
        }
        if !o.no_stream {
            for (t, target) in &targets {
                let run = load::server_stream(target, o.streams, o.stream_msg, window, &sampler)
                    .await
                    .with_context(|| format!("server stream, {t:?}"))?;
                eprintln!(
                    "  round {}: stream {:<6} {:>9.1} MB/s",
                    round + 1,
                    format!("{t:?}"),
                    run.bytes as f64 / run.secs / 1e6
                );
                let idx = match stream.iter().position(|(k, _)| k == t) {
                    Some(i) => i,
                    None => {
                        stream.push((*t, StreamAcc::default()));
                        stream.len() - 1
                    }
                };
                let acc = &mut stream[idx].1;
                acc.bytes += run.bytes;
                acc.secs += run.secs;
                add(&mut acc.cpu, &run.cpu);
            }
        }
    }
    drop(targets);

    let peak = [
        ("gateway", Some(rig.gateway.peak_rss_kib()?)),
        ("listener", Some(rig.listener.peak_rss_kib()?)),
        ("direct_server", Some(rig.direct.peak_rss_kib()?)),
        ("client", procs::self_peak_rss_kib().ok()),
    ];
    let load_after = load_average();
    drop(rig);

    let cpu_of = |t: Transport, cpu: &[f64], per: f64| -> [Option<f64>; 3] {
        let at = |i: usize| cpu.get(i).map(|c| c / per);
        [
            at(CLIENT),
            if t == Transport::Relay {
                at(GATEWAY)
            } else {
                None
            },
            at(Rig::server_index(t)),
        ]
    };
    let unary_figs: Vec<((usize, Transport), UnaryFig)> = unary
        .into_iter()
        .map(|(k, mut acc)| {
            acc.lat_ns.sort_unstable();
            let calls = acc.calls.max(1) as f64;
            let fig = UnaryFig {
                rps: acc.calls as f64 / acc.secs,
                p50_us: percentile_us(&acc.lat_ns, 50),
                p99_us: percentile_us(&acc.lat_ns, 99),
                calls: acc.calls,
                cpu_us: cpu_of(k.1, &acc.cpu, calls / 1e6),
            };
            (k, fig)
        })
        .collect();
    let stream_figs: Vec<(Transport, StreamFig)> = stream
        .into_iter()
        .map(|(t, acc)| {
            let gb = (acc.bytes as f64 / 1e9).max(1e-9);
            let fig = StreamFig {
                mb_s: acc.bytes as f64 / acc.secs / 1e6,
                cpu_s_per_gb: cpu_of(t, &acc.cpu, gb),
            };
            (t, fig)
        })
        .collect();

    let header = format!(
        "grpc-bench: {} s measured after {} s warm-up, {} round(s); unary {} B payload; \
         server stream {} B messages x{} stream(s); tokio threads client/gateway/services \
         {}/{}/{} (0: one per core); {cores} cores, load average {load_before} -> {load_after}",
        o.secs,
        o.warmup_secs,
        o.rounds.max(1),
        o.payload,
        o.stream_msg,
        o.streams,
        o.client_threads,
        o.gateway_threads,
        o.service_threads
    );
    print!(
        "{}",
        table(&header, &o.inflight, &unary_figs, &stream_figs, &peak)
    );
    for line in json_lines(&o, &unary_figs, &stream_figs, &peak) {
        println!("{line}");
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

fn cpu_cell(c: [Option<f64>; 3], prec: usize) -> String {
    c.iter()
        .map(|v| fmt_opt(*v, prec))
        .collect::<Vec<_>>()
        .join("/")
}

fn get<K: PartialEq + Copy, V: Copy>(rows: &[(K, V)], k: K) -> Option<V> {
    rows.iter().find(|(x, _)| *x == k).map(|(_, v)| *v)
}

fn table(
    header: &str,
    inflight: &[usize],
    unary: &[((usize, Transport), UnaryFig)],
    stream: &[(Transport, StreamFig)],
    peak: &[(&str, Option<u64>)],
) -> String {
    let mut out = String::new();
    let row = |out: &mut String, label: &str, d: String, r: String, cmp: String| {
        let _ = writeln!(out, "  {label:<32}{d:>18}{r:>18}{cmp:>18}");
    };
    let _ = writeln!(out, "\n{header}\n");
    let _ = writeln!(
        out,
        "  {:<32}{:>18}{:>18}{:>18}",
        "", "direct", "relay", "relay vs direct"
    );
    let ratio = |d: Option<f64>, r: Option<f64>| match (d, r) {
        (Some(d), Some(r)) if d > 0.0 => format!("{:.1}%", r / d * 100.0),
        _ => String::new(),
    };
    for &n in inflight {
        let d = get(unary, (n, Transport::Direct));
        let r = get(unary, (n, Transport::Relay));
        let _ = writeln!(out, "  unary, {n} in flight");
        row(
            &mut out,
            "  calls/s",
            fmt_opt(d.map(|f| f.rps), 0),
            fmt_opt(r.map(|f| f.rps), 0),
            ratio(d.map(|f| f.rps), r.map(|f| f.rps)),
        );
        let added = match (d, r) {
            (Some(d), Some(r)) => format!("{:+.1} µs", r.p50_us - d.p50_us),
            _ => String::new(),
        };
        row(
            &mut out,
            "  p50 latency, µs",
            fmt_opt(d.map(|f| f.p50_us), 1),
            fmt_opt(r.map(|f| f.p50_us), 1),
            added,
        );
        let added99 = match (d, r) {
            (Some(d), Some(r)) => format!("{:+.1} µs", r.p99_us - d.p99_us),
            _ => String::new(),
        };
        row(
            &mut out,
            "  p99 latency, µs",
            fmt_opt(d.map(|f| f.p99_us), 1),
            fmt_opt(r.map(|f| f.p99_us), 1),
            added99,
        );
        row(
            &mut out,
            "  CPU µs/call, client/gw/server",
            d.map_or_else(|| "-".to_owned(), |f| cpu_cell(f.cpu_us, 0)),
            r.map_or_else(|| "-".to_owned(), |f| cpu_cell(f.cpu_us, 0)),
            String::new(),
        );
        row(
            &mut out,
            "  calls measured",
            d.map_or_else(|| "-".to_owned(), |f| f.calls.to_string()),
            r.map_or_else(|| "-".to_owned(), |f| f.calls.to_string()),
            String::new(),
        );
    }
    if !stream.is_empty() {
        let d = get(stream, Transport::Direct);
        let r = get(stream, Transport::Relay);
        let _ = writeln!(out, "  server stream");
        row(
            &mut out,
            "  MB/s (payload, 10^6 B)",
            fmt_opt(d.map(|f| f.mb_s), 1),
            fmt_opt(r.map(|f| f.mb_s), 1),
            ratio(d.map(|f| f.mb_s), r.map(|f| f.mb_s)),
        );
        row(
            &mut out,
            "  CPU s/GB, client/gw/server",
            d.map_or_else(|| "-".to_owned(), |f| cpu_cell(f.cpu_s_per_gb, 2)),
            r.map_or_else(|| "-".to_owned(), |f| cpu_cell(f.cpu_s_per_gb, 2)),
            String::new(),
        );
    }
    let mib = |k: Option<u64>| fmt_opt(k.map(|k| k as f64 / 1024.0), 1);
    let _ = writeln!(
        out,
        "  peak RSS, MiB: {}",
        peak.iter()
            .map(|(name, kib)| format!("{name} {}", mib(*kib)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(out, "\n  goals:");
    if let (Some(d), Some(r)) = (
        get(unary, (64, Transport::Direct)),
        get(unary, (64, Transport::Relay)),
    ) {
        let ratio = r.rps / d.rps;
        let _ = writeln!(
            out,
            "    unary calls/s at 64 in flight: relay {:.1}% of direct, goal >= 75%: {}",
            ratio * 100.0,
            verdict(ratio >= 0.75)
        );
    }
    if let (Some(d), Some(r)) = (
        get(unary, (1, Transport::Direct)),
        get(unary, (1, Transport::Relay)),
    ) {
        let added = r.p50_us - d.p50_us;
        let _ = writeln!(
            out,
            "    added p50 at 1 in flight: {added:.1} µs, goal <= 80 µs: {}",
            verdict(added <= 80.0)
        );
    }
    out.push('\n');
    out
}

/// `v` rounded to `digits` decimals (for the JSON lines).
fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "MISSES" }
}

/// One JSON object per figure, each on its own line.
fn json_lines(
    o: &Opts,
    unary: &[((usize, Transport), UnaryFig)],
    stream: &[(Transport, StreamFig)],
    peak: &[(&str, Option<u64>)],
) -> Vec<String> {
    let mut lines = Vec::new();
    let ratio = |d: Option<f64>, r: Option<f64>| match (d, r) {
        (Some(d), Some(r)) if d > 0.0 => Some(round(r / d, 4)),
        _ => None,
    };
    let diff = |d: Option<f64>, r: Option<f64>| Some(round(r? - d?, 1));
    let r1 = |v: Option<f64>| v.map(|v| round(v, 1));
    let r3 = |v: Option<f64>| v.map(|v| round(v, 3));
    for &n in &o.inflight {
        let d = get(unary, (n, Transport::Direct));
        let r = get(unary, (n, Transport::Relay));
        let (drps, rrps) = (r1(d.map(|f| f.rps)), r1(r.map(|f| f.rps)));
        lines.push(json!({
            "bench": "grpc", "figure": "unary_rps", "inflight": n, "payload": o.payload,
            "direct": drps, "relay": rrps, "ratio": ratio(drps, rrps),
        }));
        let (d50, r50) = (r1(d.map(|f| f.p50_us)), r1(r.map(|f| f.p50_us)));
        lines.push(json!({
            "bench": "grpc", "figure": "unary_p50_us", "inflight": n, "payload": o.payload,
            "direct": d50, "relay": r50, "added_us": diff(d50, r50),
        }));
        let (d99, r99) = (r1(d.map(|f| f.p99_us)), r1(r.map(|f| f.p99_us)));
        lines.push(json!({
            "bench": "grpc", "figure": "unary_p99_us", "inflight": n, "payload": o.payload,
            "direct": d99, "relay": r99, "added_us": diff(d99, r99),
        }));
        let cpu = |f: Option<UnaryFig>| {
            f.map(|f| {
                json!({
                    "client": r1(f.cpu_us[0]),
                    "gateway": r1(f.cpu_us[1]),
                    "server": r1(f.cpu_us[2]),
                })
            })
        };
        lines.push(json!({
            "bench": "grpc", "figure": "unary_cpu_us_per_call", "inflight": n,
            "direct": cpu(d), "relay": cpu(r),
        }));
    }
    if !stream.is_empty() {
        let d = get(stream, Transport::Direct);
        let r = get(stream, Transport::Relay);
        let (dmb, rmb) = (r1(d.map(|f| f.mb_s)), r1(r.map(|f| f.mb_s)));
        lines.push(json!({
            "bench": "grpc", "figure": "stream_mb_s", "msg_bytes": o.stream_msg,
            "streams": o.streams, "direct": dmb, "relay": rmb, "ratio": ratio(dmb, rmb),
        }));
        let cpu = |f: Option<StreamFig>| {
            f.map(|f| {
                json!({
                    "client": r3(f.cpu_s_per_gb[0]),
                    "gateway": r3(f.cpu_s_per_gb[1]),
                    "server": r3(f.cpu_s_per_gb[2]),
                })
            })
        };
        lines.push(json!({
            "bench": "grpc", "figure": "stream_cpu_s_per_gb", "msg_bytes": o.stream_msg,
            "direct": cpu(d), "relay": cpu(r),
        }));
    }
    for (name, kib) in peak {
        lines.push(json!({
            "bench": "grpc", "figure": "peak_rss_kib", "process": name, "value": kib,
        }));
    }
    lines.into_iter().map(|v| v.to_string()).collect()
}
