//! `relay-bench`: Ferry's loopback benchmark, direct TCP against the gateway's plain (`ws`)
//! and TLS (`wss`) relays, in one run:
//!
//! 1. bulk throughput with 1 and 8 streams;
//! 2. 64-byte round trip p50 / p99, and the round trip the relay adds;
//! 3. new connections per second (connect, accept, first byte back, close);
//! 4. gateway and listener resident memory per idle relayed connection.
//!
//! Three processes: this one sends; `ferry gateway` (spawned from the same target directory)
//! relays; this binary again, in its `listener` role, runs the SDK listeners and a direct TCP
//! server, so each side's memory is read apart from `/proc/PID/status`.
//!
//! ```text
//! cargo build --release -p ferry-cli -p ferry-bench
//! target/release/relay-bench --quick            # < 1 minute
//! target/release/relay-bench --json bench.json  # a few minutes
//! ```
//!
//! Numbers from 2 shared cores move with whatever else runs: the load average is printed
//! before and after. On a virtual machine, round trips also depend on how fast an idle vCPU
//! wakes: with both cores otherwise idle every hop pays a wake-up of tens of µs, while one
//! busy core elsewhere can cut the direct p50 to a third. Compare runs made in the same
//! state. The throughput rows give each process's CPU seconds per GB, which shows where the
//! relayed path spends its time.

mod measure;
mod peer;
mod procs;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::measure::{Target, percentile_us};
use crate::procs::{GatewayProc, ListenerProc};

#[derive(Parser)]
#[command(
    name = "relay-bench",
    about = "Loopback benchmark: direct TCP vs the Ferry gateway (ws and wss)"
)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Role {
    /// Internal: the listener process.
    #[command(hide = true)]
    Listener(peer::ListenerArgs),
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// Small sizes and short phases: finishes in under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The `ferry` binary (default: next to this one).
    #[arg(long)]
    ferry: Option<PathBuf>,
    /// MiB sent per bulk measurement (split over the streams). Default 2048, quick 128.
    #[arg(long)]
    bulk_mib: Option<u64>,
    /// Bulk measurements per case (the median is reported), and rounds of the round-trip
    /// and connection phases, interleaving the transports. Default 5, quick 1.
    #[arg(long)]
    repeat: Option<usize>,
    /// Timed 64-byte round trips per transport. Default 20000, quick 2000.
    #[arg(long)]
    rtt_count: Option<usize>,
    /// Upper bound, in seconds, of the connection-rate phase per transport. Default 10,
    /// quick 4.
    #[arg(long)]
    conn_secs: Option<f64>,
    /// Connections per transport in the connection-rate phase, the same count for each
    /// (closed ports stay in TIME_WAIT for a minute). Default 4000, quick 1000.
    #[arg(long)]
    conn_max: Option<usize>,
    /// Concurrent connectors in the connection-rate phase.
    #[arg(long, default_value_t = 8)]
    conn_concurrency: usize,
    /// Idle relayed connections held open for the memory phase.
    #[arg(long, default_value_t = 2000)]
    idle_conns: usize,
    /// Run only these phases (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Measure only these transports (comma-separated), e.g. to profile one of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    transports: Vec<Transport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Throughput,
    Rtt,
    Conn,
    Idle,
}

/// Settings after `--quick` and the defaults are applied.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    quick: bool,
    bulk_mib: u64,
    repeat: usize,
    rtt_size: usize,
    rtt_count: usize,
    rtt_warmup: usize,
    conn_secs: f64,
    conn_max: usize,
    conn_concurrency: usize,
    idle_conns: usize,
}

impl Settings {
    fn from(o: &Opts) -> Self {
        let q = o.quick;
        Self {
            quick: q,
            bulk_mib: o.bulk_mib.unwrap_or(if q { 128 } else { 2048 }).max(8),
            repeat: o.repeat.unwrap_or(if q { 1 } else { 5 }).max(1),
            rtt_size: 64,
            rtt_count: o.rtt_count.unwrap_or(if q { 2000 } else { 20_000 }).max(10),
            rtt_warmup: if q { 200 } else { 1000 },
            conn_secs: o.conn_secs.unwrap_or(if q { 4.0 } else { 10.0 }).max(0.1),
            conn_max: o.conn_max.unwrap_or(if q { 1000 } else { 4000 }).max(1),
            conn_concurrency: o.conn_concurrency.max(1),
            idle_conns: o.idle_conns.max(1),
        }
    }
}

/// The ways of reaching the listener process: directly, and through the gateway with
/// Azure's protocol (WebSocket frames) or with Ferry's raw streams, each plain and TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
enum Transport {
    Direct,
    Plain,
    Tls,
    PlainRaw,
    TlsRaw,
}

impl Transport {
    const ALL: [Self; 5] = [
        Self::Direct,
        Self::Plain,
        Self::Tls,
        Self::PlainRaw,
        Self::TlsRaw,
    ];
    const RELAYED: [Self; 4] = [Self::Plain, Self::Tls, Self::PlainRaw, Self::TlsRaw];

    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct TCP",
            Self::Plain => "gateway ws",
            Self::Tls => "gateway wss",
            Self::PlainRaw => "ws raw",
            Self::TlsRaw => "wss raw",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Self::Tls | Self::TlsRaw)
    }
}

#[derive(Debug, Serialize)]
struct ThroughputRow {
    transport: Transport,
    streams: usize,
    /// Median of the runs, 10^6 bytes per second.
    mb_per_s: f64,
    runs: Vec<f64>,
    /// Of the direct figure with the same number of streams.
    ratio_to_direct: Option<f64>,
    /// CPU cores the gateway process used while relaying (CPU time / wall time).
    gateway_cpu_cores: Option<f64>,
    /// CPU cores the listener process used.
    listener_cpu_cores: f64,
    /// CPU cores this (sending) process used.
    sender_cpu_cores: f64,
}

impl ThroughputRow {
    /// CPU seconds per 10^9 bytes moved, of the sender, gateway and listener processes.
    fn cpu_per_gb(&self) -> String {
        let gb_per_s = self.mb_per_s / 1000.0;
        let gw = self
            .gateway_cpu_cores
            .map_or_else(|| "-".to_owned(), |g| format!("{:.2}", g / gb_per_s));
        format!(
            "{:.2}/{gw}/{:.2}",
            self.sender_cpu_cores / gb_per_s,
            self.listener_cpu_cores / gb_per_s
        )
    }
}

#[derive(Debug, Serialize)]
struct RttRow {
    transport: Transport,
    size: usize,
    count: usize,
    p50_us: f64,
    p99_us: f64,
    /// This p50 minus the direct p50.
    added_p50_us: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ConnRow {
    transport: Transport,
    concurrency: usize,
    connections: usize,
    failures: usize,
    per_sec: f64,
    ratio_to_direct: Option<f64>,
    setup_p50_us: f64,
    setup_p99_us: f64,
}

#[derive(Debug, Serialize)]
struct IdleRow {
    transport: Transport,
    connections: usize,
    gateway_rss_before_kib: u64,
    gateway_rss_after_kib: u64,
    listener_rss_before_kib: u64,
    listener_rss_after_kib: u64,
    sender_rss_before_kib: u64,
    sender_rss_after_kib: u64,
    gateway_bytes_per_conn: f64,
    listener_bytes_per_conn: f64,
    /// Gateway + listener: what the issue's goal is about.
    total_bytes_per_conn: f64,
    /// The sending process, for information.
    sender_bytes_per_conn: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    settings: Settings,
    cores: usize,
    nofile_limit: u64,
    load_before: String,
    load_after: String,
    throughput: Vec<ThroughputRow>,
    rtt: Vec<RttRow>,
    conn_rate: Vec<ConnRow>,
    idle: Vec<IdleRow>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.role {
        Some(Role::Listener(args)) => runtime.block_on(peer::run(args)),
        None => runtime.block_on(bench(cli.opts)),
    }
}

/// The processes one phase runs against.
struct Rig {
    gw: GatewayProc,
    listener: ListenerProc,
    ca_file: PathBuf,
}

impl Rig {
    async fn start(ferry: &std::path::Path, tag: &str) -> Result<Self> {
        let ca_file =
            std::env::temp_dir().join(format!("relay-bench-{}-{tag}-ca.pem", std::process::id()));
        let gw = procs::start_gateway(ferry, &ca_file).await?;
        let listener = procs::start_listener(&gw).await?;
        Ok(Self {
            gw,
            listener,
            ca_file,
        })
    }

    fn target(&self, t: Transport) -> Result<Target> {
        let (base, path) = match t {
            Transport::Direct => return Ok(Target::Direct(self.listener.direct)),
            Transport::Plain | Transport::PlainRaw => (&self.gw.plain, peer::PLAIN_PATH),
            Transport::Tls | Transport::TlsRaw => (&self.gw.tls, peer::TLS_PATH),
        };
        let mut endpoint =
            peer::endpoint(base, path, &self.gw.rule, &self.gw.key, &self.gw.ca_pem)?;
        endpoint.set_raw_streams(matches!(t, Transport::PlainRaw | Transport::TlsRaw));
        Ok(Target::Relay(endpoint))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Raises the open-file limit as far as the hard limit allows; children inherit it.
fn raise_nofile(needed: u64) -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            if n < needed {
                eprintln!(
                    "warning: open-file limit is {n}, the idle phase wants about {needed}; \
                     raise the hard limit (ulimit -Hn) or lower --idle-conns"
                );
            }
            n
        }
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            0
        }
    }
}

async fn bench(opts: Opts) -> Result<()> {
    let s = Settings::from(&opts);
    let ferry = match &opts.ferry {
        Some(p) => p.clone(),
        None => procs::default_ferry()?,
    };
    let run = |p: Phase| opts.only.is_empty() || opts.only.contains(&p);
    let wanted = |t: Transport| opts.transports.is_empty() || opts.transports.contains(&t);
    // The gateway holds two descriptors per relayed connection.
    let nofile = raise_nofile(2 * s.idle_conns as u64 + 256);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();
    eprintln!(
        "relay-bench ({}) on {cores} cores, load average {load_before}, open-file limit {nofile}",
        if s.quick { "quick" } else { "full" }
    );

    let mut report = Report {
        settings: s.clone(),
        cores,
        nofile_limit: nofile,
        load_before,
        load_after: String::new(),
        throughput: Vec::new(),
        rtt: Vec::new(),
        conn_rate: Vec::new(),
        idle: Vec::new(),
    };

    if run(Phase::Throughput) || run(Phase::Rtt) || run(Phase::Conn) {
        let rig = Rig::start(&ferry, "main").await?;
        let targets: Vec<(Transport, Target)> = Transport::ALL
            .iter()
            .filter(|t| wanted(**t))
            .map(|&t| Ok((t, rig.target(t)?)))
            .collect::<Result<_>>()?;
        if run(Phase::Throughput) {
            report.throughput = throughput(&rig, &targets, &s).await?;
        }
        if run(Phase::Rtt) {
            report.rtt = rtt(&targets, &s).await?;
        }
        if run(Phase::Conn) {
            report.conn_rate = conn_rate(&targets, &s).await?;
        }
    }
    if run(Phase::Idle) {
        for t in Transport::RELAYED.into_iter().filter(|t| wanted(*t)) {
            // Fresh processes: memory the allocator kept from earlier phases would hide
            // part of what the idle connections cost.
            let rig = Rig::start(&ferry, "idle").await?;
            report.idle.push(idle(&rig, t, &s).await?);
        }
    }
    report.load_after = load_average();

    print_report(&report);
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn throughput(
    rig: &Rig,
    targets: &[(Transport, Target)],
    s: &Settings,
) -> Result<Vec<ThroughputRow>> {
    let total = s.bulk_mib << 20;
    let cases: Vec<(Transport, usize)> = [1, 8]
        .iter()
        .flat_map(|&n| targets.iter().map(move |&(t, _)| (t, n)))
        .collect();
    // runs[case] = (MB/s, gateway, listener, sender CPU) per repetition.
    let mut runs: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); cases.len()];
    // Repetitions interleave the cases, so a busy moment of the machine spreads over all.
    for r in 0..s.repeat {
        for (i, &(t, n)) in cases.iter().enumerate() {
            let target = &targets
                .iter()
                .find(|(x, _)| *x == t)
                .expect("all targets")
                .1;
            let (g0, l0, s0) = (
                rig.gw.proc.cpu_secs()?,
                rig.listener.proc.cpu_secs()?,
                procs::self_cpu_secs()?,
            );
            let t0 = tokio::time::Instant::now();
            let mbps = measure::bulk(target, n, total)
                .await
                .with_context(|| format!("bulk {} x{n}", t.label()))?;
            let wall = t0.elapsed().as_secs_f64();
            let (g1, l1, s1) = (
                rig.gw.proc.cpu_secs()?,
                rig.listener.proc.cpu_secs()?,
                procs::self_cpu_secs()?,
            );
            eprintln!(
                "  throughput {:<12} {n} stream(s), run {}: {mbps:8.1} MB/s",
                t.label(),
                r + 1
            );
            runs[i].push((mbps, (g1 - g0) / wall, (l1 - l0) / wall, (s1 - s0) / wall));
        }
    }
    let mut rows: Vec<ThroughputRow> = cases
        .iter()
        .zip(runs)
        .map(|(&(t, n), r)| {
            let mb: Vec<f64> = r.iter().map(|x| x.0).collect();
            let g: Vec<f64> = r.iter().map(|x| x.1).collect();
            let l: Vec<f64> = r.iter().map(|x| x.2).collect();
            let snd: Vec<f64> = r.iter().map(|x| x.3).collect();
            ThroughputRow {
                transport: t,
                streams: n,
                mb_per_s: median(&mb),
                runs: mb,
                ratio_to_direct: None,
                gateway_cpu_cores: (t != Transport::Direct).then(|| median(&g)),
                listener_cpu_cores: median(&l),
                sender_cpu_cores: median(&snd),
            }
        })
        .collect();
    let direct: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.transport == Transport::Direct)
        .map(|r| (r.streams, r.mb_per_s))
        .collect();
    for row in rows.iter_mut().filter(|r| r.transport != Transport::Direct) {
        row.ratio_to_direct = direct
            .iter()
            .find(|(n, _)| *n == row.streams)
            .map(|(_, d)| row.mb_per_s / d);
    }
    Ok(rows)
}

async fn rtt(targets: &[(Transport, Target)], s: &Settings) -> Result<Vec<RttRow>> {
    // Rounds interleave the transports, so a change in how fast the machine wakes threads
    // (it varies with the load of the host) touches all of them alike.
    let rounds = s.repeat;
    let per_round = s.rtt_count.div_ceil(rounds);
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for ((t, target), ns) in targets.iter().zip(&mut samples) {
            ns.extend(
                measure::round_trips(target, s.rtt_size, s.rtt_warmup, per_round)
                    .await
                    .with_context(|| format!("round trips {}", t.label()))?,
            );
        }
    }
    let mut rows = Vec::new();
    for ((t, _), mut ns) in targets.iter().zip(samples) {
        ns.sort_unstable();
        let row = RttRow {
            transport: *t,
            size: s.rtt_size,
            count: ns.len(),
            p50_us: percentile_us(&ns, 50),
            p99_us: percentile_us(&ns, 99),
            added_p50_us: None,
        };
        eprintln!(
            "  round trip {:<12} p50 {:.1} µs, p99 {:.1} µs",
            t.label(),
            row.p50_us,
            row.p99_us
        );
        rows.push(row);
    }
    let direct = rows
        .iter()
        .find(|r| r.transport == Transport::Direct)
        .map(|r| r.p50_us);
    for row in rows.iter_mut().filter(|r| r.transport != Transport::Direct) {
        row.added_p50_us = direct.map(|d| row.p50_us - d);
    }
    Ok(rows)
}

async fn conn_rate(targets: &[(Transport, Target)], s: &Settings) -> Result<Vec<ConnRow>> {
    // Interleaved rounds, as for round trips.
    let rounds = s.repeat;
    let per_round = s.conn_max.div_ceil(rounds);
    let limit = Duration::from_secs_f64(s.conn_secs / rounds as f64);
    // Per transport: set-up times, failures, seconds spent.
    let mut acc: Vec<(Vec<u64>, usize, f64)> = vec![(Vec::new(), 0, 0.0); targets.len()];
    for _ in 0..rounds {
        for ((t, target), a) in targets.iter().zip(&mut acc) {
            let r = measure::conn_rate(target, s.conn_concurrency, limit, per_round)
                .await
                .with_context(|| format!("connection rate {}", t.label()))?;
            a.0.extend(r.setup_ns);
            a.1 += r.failures;
            a.2 += r.secs;
            // Let this round's closes settle before the next transport starts.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut rows = Vec::new();
    for ((t, _), (mut ns, failures, secs)) in targets.iter().zip(acc) {
        ns.sort_unstable();
        let per_sec = ns.len() as f64 / secs;
        eprintln!(
            "  connections {:<11} {per_sec:.0}/s ({failures} failed)",
            t.label()
        );
        rows.push(ConnRow {
            transport: *t,
            concurrency: s.conn_concurrency,
            connections: ns.len(),
            failures,
            per_sec,
            ratio_to_direct: None,
            setup_p50_us: percentile_us(&ns, 50),
            setup_p99_us: percentile_us(&ns, 99),
        });
    }
    let direct = rows
        .iter()
        .find(|r| r.transport == Transport::Direct)
        .map(|r| r.per_sec);
    for row in rows.iter_mut().filter(|r| r.transport != Transport::Direct) {
        row.ratio_to_direct = direct.map(|d| row.per_sec / d);
    }
    Ok(rows)
}

async fn idle(rig: &Rig, t: Transport, s: &Settings) -> Result<IdleRow> {
    let target = rig.target(t)?;
    // One connection first, so one-time costs (TLS contexts, thread-local caches, the
    // path's registry entry) land before the "before" reading.
    let warm = measure::open_idle(&target, 8, 8).await?;
    let settle = Duration::from_millis(500);
    tokio::time::sleep(settle).await;
    let (g0, l0, s0) = (
        rig.gw.proc.rss_kib()?,
        rig.listener.proc.rss_kib()?,
        procs::self_rss_kib()?,
    );
    let conns = measure::open_idle(&target, s.idle_conns, 32)
        .await
        .with_context(|| format!("opening {} idle connections ({})", s.idle_conns, t.label()))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (g1, l1, s1) = (
        rig.gw.proc.rss_kib()?,
        rig.listener.proc.rss_kib()?,
        procs::self_rss_kib()?,
    );
    let n = conns.len() as f64;
    let per = |a: u64, b: u64| (b as f64 - a as f64) * 1024.0 / n;
    let row = IdleRow {
        transport: t,
        connections: conns.len(),
        gateway_rss_before_kib: g0,
        gateway_rss_after_kib: g1,
        listener_rss_before_kib: l0,
        listener_rss_after_kib: l1,
        sender_rss_before_kib: s0,
        sender_rss_after_kib: s1,
        gateway_bytes_per_conn: per(g0, g1),
        listener_bytes_per_conn: per(l0, l1),
        total_bytes_per_conn: per(g0, g1) + per(l0, l1),
        sender_bytes_per_conn: per(s0, s1),
    };
    eprintln!(
        "  idle {:<12} gateway {:.0} B/conn, listener {:.0} B/conn",
        t.label(),
        row.gateway_bytes_per_conn,
        row.listener_bytes_per_conn
    );
    drop(conns);
    drop(warm);
    Ok(row)
}

/// Picks one figure of an idle row.
type IdleFigure = fn(&IdleRow) -> f64;

fn pct(r: Option<f64>) -> String {
    r.map_or_else(String::new, |r| format!("({:.0}%)", r * 100.0))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "MISSES" }
}

fn print_report(r: &Report) {
    let s = &r.settings;
    println!();
    println!(
        "relay-bench ({}), {} cores, load average before {} / after {}",
        if s.quick { "quick" } else { "full" },
        r.cores,
        r.load_before,
        r.load_after
    );
    let header = |title: &str| {
        println!();
        print!("{title:<34}");
        for t in Transport::ALL {
            print!("{:>22}", t.label());
        }
        println!();
    };
    let cell = |rows: &[(Transport, String)], t: Transport| {
        rows.iter()
            .find(|(x, _)| *x == t)
            .map_or_else(|| "-".to_owned(), |(_, v)| v.clone())
    };
    let line = |label: &str, cells: &[(Transport, String)]| {
        print!("{label:<34}");
        for t in Transport::ALL {
            print!("{:>22}", cell(cells, t));
        }
        println!();
    };

    if !r.throughput.is_empty() {
        header(&format!(
            "Throughput, MB/s ({} MiB, median of {})",
            s.bulk_mib, s.repeat
        ));
        for n in [1, 8] {
            let cells: Vec<_> = r
                .throughput
                .iter()
                .filter(|x| x.streams == n)
                .map(|x| {
                    (
                        x.transport,
                        format!("{:.0} {}", x.mb_per_s, pct(x.ratio_to_direct)),
                    )
                })
                .collect();
            line(
                &format!("  {n} stream{}", if n > 1 { "s" } else { "" }),
                &cells,
            );
            let cpu: Vec<_> = r
                .throughput
                .iter()
                .filter(|x| x.streams == n)
                .map(|x| (x.transport, x.cpu_per_gb()))
                .collect();
            line("    CPU s/GB, sender/gw/listener", &cpu);
            if s.repeat > 1 {
                let spread: Vec<_> = r
                    .throughput
                    .iter()
                    .filter(|x| x.streams == n)
                    .map(|x| {
                        let lo = x.runs.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = x.runs.iter().copied().fold(0.0, f64::max);
                        (x.transport, format!("{lo:.0}-{hi:.0}"))
                    })
                    .collect();
                line("    runs, min-max", &spread);
            }
        }
    }
    if !r.rtt.is_empty() {
        header(&format!(
            "Round trip, {} B, µs ({} samples)",
            s.rtt_size, s.rtt_count
        ));
        let p50: Vec<_> = r
            .rtt
            .iter()
            .map(|x| {
                let added = x
                    .added_p50_us
                    .map_or_else(String::new, |a| format!("(+{a:.1})"));
                (x.transport, format!("{:.1} {added}", x.p50_us))
            })
            .collect();
        line("  p50 (added)", &p50);
        let p99: Vec<_> = r
            .rtt
            .iter()
            .map(|x| (x.transport, format!("{:.1}", x.p99_us)))
            .collect();
        line("  p99", &p99);
    }
    if !r.conn_rate.is_empty() {
        header(&format!(
            "New connections ({} concurrent)",
            s.conn_concurrency
        ));
        let rate: Vec<_> = r
            .conn_rate
            .iter()
            .map(|x| {
                (
                    x.transport,
                    format!("{:.0} {}", x.per_sec, pct(x.ratio_to_direct)),
                )
            })
            .collect();
        line("  per second, close included", &rate);
        let p50: Vec<_> = r
            .conn_rate
            .iter()
            .map(|x| (x.transport, format!("{:.0}", x.setup_p50_us)))
            .collect();
        line("  set-up p50, µs", &p50);
        let p99: Vec<_> = r
            .conn_rate
            .iter()
            .map(|x| (x.transport, format!("{:.0}", x.setup_p99_us)))
            .collect();
        line("  set-up p99, µs", &p99);
        let failed: Vec<_> = r
            .conn_rate
            .iter()
            .map(|x| (x.transport, format!("{}/{}", x.failures, x.connections)))
            .collect();
        line("  failed / done", &failed);
    }
    if !r.idle.is_empty() {
        header(&format!("Idle relayed conns ({}), B/conn", s.idle_conns));
        let rows: [(&str, IdleFigure); 4] = [
            ("  gateway RSS", |x| x.gateway_bytes_per_conn),
            ("  listener RSS", |x| x.listener_bytes_per_conn),
            ("  gateway + listener", |x| x.total_bytes_per_conn),
            ("  (sender RSS, see below)", |x| x.sender_bytes_per_conn),
        ];
        for (label, f) in rows {
            let cells: Vec<_> = r
                .idle
                .iter()
                .map(|x| (x.transport, format!("{:.0}", f(x))))
                .collect();
            line(label, &cells);
        }
    }

    if r.idle.len() > 1 {
        println!(
            "  (the sender process is not restarted between transports, so its figure for \
             the second one is low: it reuses memory the first one freed)"
        );
    }

    println!();
    println!("Data-plane goals (ws / wss):");
    for x in r
        .throughput
        .iter()
        .filter(|x| x.transport != Transport::Direct)
    {
        let goal = if x.transport.tls() { 0.40 } else { 0.60 };
        if let Some(ratio) = x.ratio_to_direct {
            println!(
                "  throughput {} x{}: {:.0}% of direct, goal >= {:.0}%: {}",
                x.transport.label(),
                x.streams,
                ratio * 100.0,
                goal * 100.0,
                verdict(ratio >= goal)
            );
        }
    }
    for x in &r.rtt {
        if let Some(a) = x.added_p50_us {
            println!(
                "  added round trip {}: {a:.1} µs p50, goal <= 40 µs: {}",
                x.transport.label(),
                verdict(a <= 40.0)
            );
        }
    }
    for x in &r.idle {
        let goal = if x.transport.tls() { 6.0 } else { 4.0 };
        println!(
            "  idle memory {}: {:.1} KiB/conn (gateway + listener), goal <= {goal} KiB: {}",
            x.transport.label(),
            x.total_bytes_per_conn / 1024.0,
            verdict(x.total_bytes_per_conn <= goal * 1024.0)
        );
    }
}
