//! `wcf-bench`: WCF calls per second and latency, Mono's WCF talking to itself against the
//! Rust WCF stack through the gateway, side by side in one run:
//!
//! - MONO DIRECT (the baseline): Mono's WCF client (`interop/mono/CalcBench.cs`) → Mono's
//!   WCF calculator service (`interop/mono/CalcService.cs`), NetTcpBinding on loopback;
//! - RELAY: the Rust client (`ferry_wcf::NetTcpChannel`) → the gateway's net.tcp front end →
//!   a relayed connection → SDK listener → the Rust host (`ferry_wcf::Host`) serving the
//!   calculator (`ferry_wcf::calc::Calc`);
//! - MONO VIA RELAY: Mono's client → the same gateway and Rust host.
//!
//! Measured for each: calls per second and p50 / p99 latency of `Add` and of a 64 KiB
//! `ReverseBytes`, with 1 and with 16 channels (sessions) calling in closed loops, the CPU
//! each process spends per call, and the peak resident memory of every process; then the
//! ratio relay ÷ Mono direct.
//!
//! Mono's net.tcp channel sleeps 50 ms before every receive (`TcpDuplexSessionChannel.
//! TryReceive`, `interop/recordings/FINDINGS.md` §2), on the client and on the service side,
//! so a Mono channel makes about 20 calls per second whatever the network and CPU: the
//! baseline measures that sleep, and the ratio is mostly its size. Mono's service also serves
//! only 10 sessions at once by default; it runs here with `--max-sessions` raised so that 16
//! channels are 16 concurrent sessions.
//!
//! Processes: this one is the Rust client; this binary re-executed in hidden roles runs the
//! gateway and the Rust host; `mono` runs the service and, per case, the Mono client. Every
//! child is killed when the benchmark ends or fails (the Rust ones also exit when their
//! standard input closes); every wait for a child or a call has a time limit.
//!
//! ```text
//! scripts/bench-wcf.sh                              # 5 s per case after 1 s of warm-up
//! target/release/wcf-bench --secs 2 --channels 1 --transports relay
//! ```
//!
//! Numbers from 2 shared cores move with whatever else runs: the load average is printed
//! before and after.

mod load;
mod mono;
// The child-process guard and `/proc` readers are grpc-bench's: one copy of that code.
#[path = "../grpc-bench/procs.rs"]
mod procs;
mod roles;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry_sdk::{SasKeyProvider, TokenProvider as _};
use serde_json::json;

use crate::load::{Edges, Target, Window};
use crate::procs::Proc;
use crate::roles::{KEY_ENV, PATH};

#[derive(Parser)]
#[command(
    name = "wcf-bench",
    about = "WCF benchmark: Mono's WCF direct vs the Rust WCF stack through the Ferry gateway"
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
    Gateway,
    /// Internal: the Rust WCF host process.
    #[command(hide = true)]
    Host(roles::HostArgs),
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// Measured seconds per case.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds before each measured window (same load, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Channels (concurrent sessions, one closed loop each), one case each.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    channels: Vec<usize>,
    /// Operations, one case each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Op::Add, Op::Reverse])]
    ops: Vec<Op>,
    /// Array size of ReverseBytes, bytes (sent and returned).
    #[arg(long, default_value_t = 64 * 1024)]
    bytes: usize,
    /// Measure only these transports (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    transports: Vec<Transport>,
    /// The Mono service's throttle (concurrent sessions, calls and instances).
    #[arg(long, default_value_t = 64)]
    mono_max_sessions: usize,
    /// Where the C# programs are compiled to (default: a directory under the system's
    /// temporary directory).
    #[arg(long)]
    mono_build_dir: Option<PathBuf>,
}

/// The operation called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Op {
    /// `Add(i, 1)`.
    Add,
    /// `ReverseBytes` of a `--bytes` array.
    Reverse,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Reverse => "reverse",
        }
    }
}

/// Who calls whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// Mono's client → Mono's service, net.tcp on loopback.
    MonoDirect,
    /// The Rust client → gateway → SDK listener → the Rust host.
    Relay,
    /// Mono's client → gateway → SDK listener → the Rust host.
    MonoRelay,
}

impl Transport {
    const ALL: [Self; 3] = [Self::MonoDirect, Self::Relay, Self::MonoRelay];

    fn key(self) -> &'static str {
        match self {
            Self::MonoDirect => "mono_direct",
            Self::Relay => "relay",
            Self::MonoRelay => "mono_relay",
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.role {
        Some(Role::Gateway) => runtime.block_on(roles::gateway()),
        Some(Role::Host(args)) => runtime.block_on(roles::host(args)),
        None => runtime.block_on(bench(cli.opts)),
    }
}

/// Indices of the processes in a CPU sample.
const CLIENT: usize = 0;
const GATEWAY: usize = 1;
const HOST: usize = 2;
const MONO_SERVICE: usize = 3;

/// The long-lived children. Fields drop in order: the host stops before the gateway, so the
/// listener does not see its gateway vanish (and log it) first.
struct Rig {
    host: Proc,
    gateway: Proc,
    mono: Option<mono::Service>,
}

impl Rig {
    fn cpu(&self) -> Result<Vec<f64>> {
        let mut v = vec![
            procs::self_cpu_secs()?,
            self.gateway.cpu_secs()?,
            self.host.cpu_secs()?,
        ];
        if let Some(m) = &self.mono {
            v.push(cpu_secs_of(m.pid())?);
        }
        Ok(v)
    }
}

/// CPU seconds (user + system) of any process, from `/proc/PID/stat`.
fn cpu_secs_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// Peak resident memory of any process (`VmHWM`), KiB.
fn peak_rss_kib_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad VmHWM")?
        .parse()?)
}

/// One case's figures.
#[derive(Clone, Copy, Debug)]
struct Fig {
    rps: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    calls: u64,
    /// CPU µs per call: client, gateway (relayed only), server.
    cpu_us: [Option<f64>; 3],
}

type Key = (Op, usize, Transport);

/// The `p`-th percentile (0–100) of sorted nanoseconds, in µs (as CalcBench computes it).
fn percentile_us(sorted_ns: &[u32], p: usize) -> Option<f64> {
    let i = (sorted_ns.len() * p / 100).min(sorted_ns.len().checked_sub(1)?);
    Some(f64::from(sorted_ns[i]) / 1000.0)
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

/// CPU µs per call of the client, gateway and server, from the edges of a window.
fn cpu_per_call(t: Transport, edges: &Edges, client: Option<f64>, calls: u64) -> [Option<f64>; 3] {
    let per = calls.max(1) as f64 / 1e6;
    let delta = |i: usize| Some((edges[1].get(i)? - edges[0].get(i)?) / per);
    match t {
        Transport::MonoDirect => [client.map(|c| c / per), None, delta(MONO_SERVICE)],
        Transport::Relay => [delta(CLIENT), delta(GATEWAY), delta(HOST)],
        Transport::MonoRelay => [client.map(|c| c / per), delta(GATEWAY), delta(HOST)],
    }
}

async fn bench(o: Opts) -> Result<()> {
    let window = Window {
        warmup: secs(o.warmup_secs, "--warmup-secs")?,
        measure: secs(o.secs, "--secs")?,
    };
    ensure!(
        window.measure >= Duration::from_millis(100),
        "--secs must be ≥ 0.1"
    );
    ensure!(
        o.channels.iter().all(|&n| (1..=256).contains(&n)),
        "--channels must be 1–256"
    );
    ensure!(o.bytes <= 8 << 20, "--bytes must be ≤ 8 MiB");
    let transports: Vec<Transport> = Transport::ALL
        .into_iter()
        .filter(|t| o.transports.is_empty() || o.transports.contains(t))
        .collect();
    let with_mono = transports
        .iter()
        .any(|t| matches!(t, Transport::MonoDirect | Transport::MonoRelay));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();
    eprintln!("wcf-bench on {cores} cores, load average {load_before}");

    // The C# programs first: a compile error should not wait for the children.
    let build_dir = o
        .mono_build_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-wcf-bench"));
    let (service_exe, bench_exe) = if with_mono {
        mono::require()?;
        (
            Some(mono::compile("CalcService", &build_dir).await?),
            Some(mono::compile("CalcBench", &build_dir).await?),
        )
    } else {
        (None, None)
    };

    let gateway = Proc::start("gateway", &["gateway"], &[]).await?;
    let plain = format!("ws://{}", gateway.field("plain")?);
    let nettcp: SocketAddr = gateway
        .field("nettcp")?
        .parse()
        .context("bad net.tcp address from the gateway")?;
    let rule = gateway.field("rule")?.to_owned();
    let key = gateway.field("key")?.to_owned();
    let host = Proc::start(
        "host",
        &["host", "--gateway", &plain, "--rule", &rule],
        &[(KEY_ENV, &key)],
    )
    .await?;
    let mono_service = match (&service_exe, transports.contains(&Transport::MonoDirect)) {
        (Some(exe), true) => Some(mono::Service::start(exe, o.mono_max_sessions).await?),
        _ => None,
    };
    let rig = Rig {
        host,
        gateway,
        mono: mono_service,
    };
    eprintln!(
        "  pids: client {}, gateway {}, host {}, mono service {}",
        std::process::id(),
        rig.gateway.pid(),
        rig.host.pid(),
        rig.mono.as_ref().map_or(0, mono::Service::pid)
    );
    let token = SasKeyProvider::new(&rule, &key, Duration::from_secs(24 * 3600))
        .token(&format!("http://localhost/{PATH}"))?
        .text;
    let target = Target {
        addr: nettcp,
        via: format!("net.tcp://127.0.0.1:{}/{PATH}", nettcp.port()),
        token: token.clone(),
    };

    let sampler = || rig.cpu();
    let mut figs: Vec<(Key, Fig)> = Vec::new();
    let mut mono_client_peak_kib = 0;
    for &op in &o.ops {
        for &n in &o.channels {
            for &t in &transports {
                let fig = match t {
                    Transport::Relay => {
                        let mut run = load::run(&target, op, o.bytes, n, window, &sampler)
                            .await
                            .with_context(|| format!("{op:?}, {n} channel(s), relay"))?;
                        run.lat_ns.sort_unstable();
                        let calls = run.lat_ns.len() as u64;
                        Fig {
                            rps: calls as f64 / run.secs,
                            p50_us: percentile_us(&run.lat_ns, 50),
                            p99_us: percentile_us(&run.lat_ns, 99),
                            calls,
                            cpu_us: cpu_per_call(t, &run.edges, None, calls),
                        }
                    }
                    Transport::MonoDirect | Transport::MonoRelay => {
                        let exe = bench_exe.as_deref().context("CalcBench not built")?;
                        let (address, token) = match (t, &rig.mono) {
                            (Transport::MonoDirect, Some(m)) => (m.address.clone(), None),
                            _ => (target.via.clone(), Some(token.as_str())),
                        };
                        let args = [
                            "--op".to_owned(),
                            op.name().to_owned(),
                            "--bytes".to_owned(),
                            o.bytes.to_string(),
                            "--channels".to_owned(),
                            n.to_string(),
                            "--secs".to_owned(),
                            o.secs.to_string(),
                            "--warmup-secs".to_owned(),
                            o.warmup_secs.to_string(),
                        ];
                        let (report, edges) =
                            mono::bench(exe, &address, token, &args, window, &sampler)
                                .await
                                .with_context(|| format!("{op:?}, {n} channel(s), {t:?}"))?;
                        mono_client_peak_kib = mono_client_peak_kib.max(report.peak_rss_kib);
                        Fig {
                            rps: report.calls as f64 / report.secs,
                            p50_us: report.p50_us,
                            p99_us: report.p99_us,
                            calls: report.calls,
                            cpu_us: cpu_per_call(t, &edges, report.cpu_secs, report.calls),
                        }
                    }
                };
                eprintln!(
                    "  {:<8} {n:>3} channel(s) {:<12} {:>9.1} calls/s",
                    op.name(),
                    t.key(),
                    fig.rps
                );
                figs.push(((op, n, t), fig));
            }
        }
    }

    let peak = [
        ("gateway", Some(rig.gateway.peak_rss_kib()?)),
        ("host", Some(rig.host.peak_rss_kib()?)),
        (
            "mono_service",
            rig.mono
                .as_ref()
                .and_then(|m| peak_rss_kib_of(m.pid()).ok()),
        ),
        ("rust_client", procs::self_peak_rss_kib().ok()),
        (
            "mono_client_max",
            (mono_client_peak_kib > 0).then_some(mono_client_peak_kib),
        ),
    ];
    let load_after = load_average();
    drop(rig);

    let header = format!(
        "wcf-bench: {} s measured after {} s warm-up per case; Add(i, 1) and ReverseBytes of \
         {} B; one closed loop per channel; {cores} cores, load average {load_before} -> \
         {load_after}",
        o.secs, o.warmup_secs, o.bytes
    );
    print!("{}", table(&header, &o, &figs, &peak));
    for line in json_lines(&o, &figs, &peak) {
        println!("{line}");
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

fn get(figs: &[(Key, Fig)], k: Key) -> Option<Fig> {
    figs.iter().find(|(x, _)| *x == k).map(|(_, f)| *f)
}

/// Relay calls/s ÷ Mono direct calls/s.
fn ratio(figs: &[(Key, Fig)], op: Op, n: usize) -> Option<f64> {
    let d = get(figs, (op, n, Transport::MonoDirect))?;
    let r = get(figs, (op, n, Transport::Relay))?;
    (d.rps > 0.0).then(|| r.rps / d.rps)
}

fn op_title(op: Op, bytes: usize) -> String {
    match op {
        Op::Add => "Add".to_owned(),
        Op::Reverse if bytes.is_multiple_of(1024) => format!("ReverseBytes {} KiB", bytes / 1024),
        Op::Reverse => format!("ReverseBytes {bytes} B"),
    }
}

fn table(header: &str, o: &Opts, figs: &[(Key, Fig)], peak: &[(&str, Option<u64>)]) -> String {
    let mut out = String::new();
    let row = |out: &mut String, label: &str, cells: [String; 4]| {
        let [a, b, c, d] = cells;
        let _ = writeln!(out, "  {label:<32}{a:>16}{b:>16}{c:>16}{d:>16}");
    };
    let _ = writeln!(out, "\n{header}\n");
    let _ = writeln!(
        out,
        "  {:<32}{:>16}{:>16}{:>16}{:>16}",
        "", "Mono direct", "relay (Rust)", "Mono via relay", "relay ÷ Mono"
    );
    for &op in &o.ops {
        for &n in &o.channels {
            let f = |t| get(figs, (op, n, t));
            let [d, r, m] = Transport::ALL.map(f);
            let _ = writeln!(out, "  {}, {n} channel(s)", op_title(op, o.bytes));
            let cell =
                |f: Option<Fig>, g: &dyn Fn(Fig) -> Option<f64>, prec| fmt_opt(f.and_then(g), prec);
            row(
                &mut out,
                "  calls/s",
                [
                    cell(d, &|f| Some(f.rps), 1),
                    cell(r, &|f| Some(f.rps), 1),
                    cell(m, &|f| Some(f.rps), 1),
                    ratio(figs, op, n).map_or_else(String::new, |x| format!("{x:.0}x")),
                ],
            );
            for (label, g) in [
                (
                    "  p50 latency, µs",
                    &(|f: Fig| f.p50_us) as &dyn Fn(Fig) -> Option<f64>,
                ),
                ("  p99 latency, µs", &|f: Fig| f.p99_us),
            ] {
                row(
                    &mut out,
                    label,
                    [cell(d, g, 1), cell(r, g, 1), cell(m, g, 1), String::new()],
                );
            }
            let cpu = |f: Option<Fig>| {
                f.map_or_else(
                    || "-".to_owned(),
                    |f| {
                        f.cpu_us
                            .iter()
                            .map(|v| fmt_opt(*v, 0))
                            .collect::<Vec<_>>()
                            .join("/")
                    },
                )
            };
            row(
                &mut out,
                "  CPU µs/call, client/gw/server",
                [cpu(d), cpu(r), cpu(m), String::new()],
            );
            let calls = |f: Option<Fig>| f.map_or_else(|| "-".to_owned(), |f| f.calls.to_string());
            row(
                &mut out,
                "  calls measured",
                [calls(d), calls(r), calls(m), String::new()],
            );
        }
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
    let _ = writeln!(
        out,
        "\n  note: Mono's net.tcp channel sleeps 50 ms before every receive, client and service \
         side\n  (TcpDuplexSessionChannel.TryReceive; interop/recordings/FINDINGS.md §2): a Mono \
         channel\n  makes about 20 calls/s whatever the work, so the ratios mostly measure that \
         sleep. The\n  Mono service runs with --max-sessions {} (its default throttle serves 10 \
         sessions at once).",
        o.mono_max_sessions
    );
    let _ = writeln!(out, "\n  goal: relay calls/s > 100x Mono direct calls/s");
    for &op in &o.ops {
        for &n in &o.channels {
            if let Some(x) = ratio(figs, op, n) {
                let _ = writeln!(
                    out,
                    "    {}, {n} channel(s): {x:.0}x: {}",
                    op_title(op, o.bytes),
                    if x > 100.0 { "meets" } else { "MISSES" }
                );
            }
        }
    }
    out.push('\n');
    out
}

/// `v` rounded to `digits` decimals (for the JSON lines).
fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// One JSON object per figure, each on its own line.
fn json_lines(o: &Opts, figs: &[(Key, Fig)], peak: &[(&str, Option<u64>)]) -> Vec<String> {
    let mut lines = Vec::new();
    let r1 = |v: Option<f64>| v.map(|v| round(v, 1));
    for &op in &o.ops {
        let bytes = if op == Op::Reverse { o.bytes } else { 0 };
        for &n in &o.channels {
            let f = |t: Transport| get(figs, (op, n, t));
            let per = |g: &dyn Fn(Fig) -> Option<f64>| {
                let mut m = serde_json::Map::new();
                for t in Transport::ALL {
                    m.insert(t.key().into(), json!(r1(f(t).and_then(g))));
                }
                m
            };
            let mut rps = per(&|f| Some(f.rps));
            rps.insert(
                "ratio_relay_vs_mono_direct".into(),
                json!(ratio(figs, op, n).map(|x| round(x, 1))),
            );
            lines.push(json!({
                "bench": "wcf", "figure": "calls_per_sec", "op": op.name(), "bytes": bytes,
                "channels": n, "values": rps,
            }));
            lines.push(json!({
                "bench": "wcf", "figure": "p50_us", "op": op.name(), "bytes": bytes,
                "channels": n, "values": per(&|f| f.p50_us),
            }));
            lines.push(json!({
                "bench": "wcf", "figure": "p99_us", "op": op.name(), "bytes": bytes,
                "channels": n, "values": per(&|f| f.p99_us),
            }));
            let mut cpu = serde_json::Map::new();
            for t in Transport::ALL {
                cpu.insert(
                    t.key().into(),
                    json!(f(t).map(|f| json!({
                        "client": r1(f.cpu_us[0]),
                        "gateway": r1(f.cpu_us[1]),
                        "server": r1(f.cpu_us[2]),
                    }))),
                );
            }
            lines.push(json!({
                "bench": "wcf", "figure": "cpu_us_per_call", "op": op.name(), "bytes": bytes,
                "channels": n, "values": cpu,
            }));
            let mut calls = serde_json::Map::new();
            for t in Transport::ALL {
                calls.insert(t.key().into(), json!(f(t).map(|f| f.calls)));
            }
            lines.push(json!({
                "bench": "wcf", "figure": "calls_measured", "op": op.name(), "bytes": bytes,
                "channels": n, "values": calls,
            }));
        }
    }
    for (name, kib) in peak {
        lines.push(json!({
            "bench": "wcf", "figure": "peak_rss_kib", "process": name, "value": kib,
        }));
    }
    lines.into_iter().map(|v| v.to_string()).collect()
}
