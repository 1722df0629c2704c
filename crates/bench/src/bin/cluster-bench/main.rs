//! `cluster-bench`: what a cluster costs, in one run, on loopback: a 3-member etcd (Debian's
//! `etcd`, from PATH) and three `ferry gateway` processes in cluster mode, plus one standalone
//! gateway for comparison; an SDK echo listener in this process, on node 0.
//!
//! 1. connect to first byte (WebSocket upgrade, accept, rendezvous, a 1-byte echo), p50 and
//!    p99, with the sender on the listener's node and on another node;
//! 2. new connections per second, the same two ways;
//! 3. one-stream throughput through a cross-node pair, a same-node pair and the standalone
//!    gateway (the bytes never cross nodes, so these should match);
//! 4. recovery: the listener's node is killed (SIGKILL) and the time until senders on both
//!    other nodes reach the listener again is measured.
//!
//! ```text
//! cargo build --release -p ferry-cli -p ferry-bench
//! target/release/cluster-bench            # about a minute
//! target/release/cluster-bench --quick
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ferry_sdk::{Endpoint, Listener, SasKeyProvider};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

const RULE: &str = "RootManageSharedAccessKey";
const LEASE_TTL: u64 = 3;

#[derive(Parser)]
#[command(
    name = "cluster-bench",
    about = "Same-node vs cross-node pairing on a 3-node cluster"
)]
struct Cli {
    /// Fewer connections and bytes: a few seconds per phase.
    #[arg(long)]
    quick: bool,
    /// The `ferry` binary (default: next to this one).
    #[arg(long)]
    ferry: Option<PathBuf>,
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Three etcd members on loopback; their client URLs.
fn etcd(dir: &Path) -> Result<(Vec<Proc>, Vec<String>)> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let client = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("etcd is not installed (Debian package etcd-server)")?;
        procs.push(Proc(child));
    }
    Ok((
        procs,
        ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect(),
    ))
}

/// Starts `ferry gateway --config FILE` and waits for its ready line.
fn gateway(ferry: &Path, config: &Path) -> Result<Proc> {
    let mut child = Command::new(ferry)
        .args(["gateway", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", ferry.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let proc_ = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("ferry gateway ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .context("the gateway did not start")?;
    Ok(proc_)
}

/// Writes a gateway configuration: plain ws on `port`, in cluster mode when `etcd` is given.
fn config(
    dir: &Path,
    name: &str,
    port: u16,
    key: &str,
    etcd: Option<&[String]>,
) -> Result<PathBuf> {
    let mut text = format!(
        "namespace = \"localhost\"\naliases = [\"127.0.0.1\"]\ndynamic_paths = true\n[listen]\nplain = \"127.0.0.1:{port}\"\n\
         [[rules]]\nname = \"{RULE}\"\nkey = \"{key}\"\nrights = [\"Manage\"]\n\
         [limits]\nmax_connections_per_source = 0\nhandshakes_per_source_per_second = 0\n"
    );
    if let Some(etcd) = etcd {
        let endpoints = etcd
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(
            "[cluster]\nnode = \"{name}\"\nrpc = \"127.0.0.1:{rpc}\"\nsecret = \"cluster-bench shared secret\"\n\
             lease_ttl = {LEASE_TTL}\ndrain = 1\n[cluster.etcd]\nendpoints = [{endpoints}]\n",
            rpc = free_port()?
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn endpoint(bases: &[String], path: &str, key: &str) -> Result<Endpoint> {
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    let mut e = Endpoint::cluster(&bases, path)?;
    e.set_token_provider(SasKeyProvider::new(RULE, key, Duration::from_secs(3600)));
    Ok(e)
}

/// Serves `endpoint` with a listener that echoes what it reads and, after a sender's
/// half-close, closes its side.
async fn serve(endpoint: Endpoint) -> Result<()> {
    let mut listener = Listener::open(endpoint).await?;
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(stream) = incoming.accept().await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(stream);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(())
}

/// Connect, one byte out and back, close: how long to the first byte back.
async fn first_byte(e: &Endpoint) -> Result<Duration> {
    let started = Instant::now();
    let mut s = timeout(Duration::from_secs(30), ferry_sdk::connect(e, &[]))
        .await
        .with_context(|| format!("connect through {} timed out", e.base()))??;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    timeout(Duration::from_secs(30), s.read_exact(&mut b))
        .await
        .with_context(|| format!("no echo through {}", e.base()))??;
    let took = started.elapsed();
    s.shutdown().await?;
    Ok(took)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

async fn latency(e: &Endpoint, n: usize) -> Result<(f64, f64)> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(first_byte(e).await?);
    }
    all.sort();
    Ok((percentile_ms(&all, 50), percentile_ms(&all, 99)))
}

async fn rate(e: &Endpoint, n: usize, concurrency: usize) -> Result<f64> {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..concurrency {
        let e = e.clone();
        let count = n / concurrency + usize::from(w < n % concurrency);
        set.spawn(async move {
            for _ in 0..count {
                first_byte(&e).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// One stream: `bytes` out, echoed back; 10^6 bytes per second each way.
async fn throughput(e: &Endpoint, bytes: u64) -> Result<f64> {
    let s = timeout(Duration::from_secs(30), ferry_sdk::connect(e, &[])).await??;
    let (mut r, mut w) = tokio::io::split(s);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 1 << 20];
        let mut sent = 0;
        while sent < bytes {
            w.write_all(&chunk).await?;
            sent += chunk.len() as u64;
        }
        w.shutdown().await?;
        anyhow::Ok(sent)
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let sent = writer.await??;
    if got != sent {
        bail!("{got} of {sent} bytes came back");
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64() / 1e6)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let ferry = match cli.ferry {
        Some(f) => f,
        None => std::env::current_exe()?.with_file_name("ferry"),
    };
    let (n_lat, n_conn, bulk) = if cli.quick {
        (200, 600, 256u64 << 20)
    } else {
        (1000, 3000, 1u64 << 30)
    };
    let dir = tempfile::tempdir()?;

    let key = ferry_gateway::config::random_key();
    let (_etcd, endpoints) = etcd(dir.path())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect::<Result<_>>()?;
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().take(3).enumerate() {
        let file = config(
            dir.path(),
            &format!("node-{i}"),
            *port,
            &key,
            Some(&endpoints),
        )?;
        nodes.push(Some(gateway(&ferry, &file)?));
    }
    let single = gateway(&ferry, &config(dir.path(), "single", ports[3], &key, None)?)?;
    let bases: Vec<String> = ports
        .iter()
        .take(3)
        .map(|p| format!("ws://127.0.0.1:{p}"))
        .collect();
    let on = |i: usize| endpoint(&bases, "bench", &key).map(|e| e.on_gateway(i));
    serve(on(0)?).await?;
    serve(endpoint(
        &[format!("ws://127.0.0.1:{}", ports[3])],
        "bench",
        &key,
    )?)
    .await?;
    // Every node sees the listener before measuring.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while first_byte(&on(i)?).await.is_err() {
            if Instant::now() > deadline {
                bail!("no echo through node {i}");
            }
        }
    }
    let single_e = endpoint(&[format!("ws://127.0.0.1:{}", ports[3])], "bench", &key)?;

    println!(
        "cluster-bench: 3 etcd members, 3 gateway nodes and a standalone gateway, loopback, ws"
    );
    println!("\nconnect to first byte (n = {n_lat}, sequential)      p50 ms    p99 ms");
    // A warm-up of each path first, then the measured runs.
    for e in [on(0)?, on(1)?, single_e.clone()] {
        latency(&e, n_lat / 10).await?;
    }
    let same = latency(&on(0)?, n_lat).await?;
    let cross = latency(&on(1)?, n_lat).await?;
    let lone = latency(&single_e, n_lat).await?;
    println!(
        "  standalone gateway                              {:>7.3}   {:>7.3}",
        lone.0, lone.1
    );
    println!(
        "  cluster, sender on the listener's node          {:>7.3}   {:>7.3}",
        same.0, same.1
    );
    println!(
        "  cluster, sender on another node                 {:>7.3}   {:>7.3}",
        cross.0, cross.1
    );
    println!(
        "  cross-node adds (p50)                           {:>7.3} ms",
        cross.0 - same.0
    );

    // Rates and throughput: interleaved rounds, the median of each reported.
    let rounds = if cli.quick { 1 } else { 3 };
    let (mut rates, mut tps) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    for _ in 0..rounds {
        for (i, e) in [single_e.clone(), on(0)?, on(1)?].iter().enumerate() {
            rates[i].push(rate(e, n_conn, 8).await?);
            tps[i].push(throughput(e, bulk).await?);
        }
    }
    let [lone_rate, same_rate, cross_rate] = rates.map(median);
    let [lone_tp, same_tp, cross_tp] = tps.map(median);
    println!("\nnew connections per second (n = {n_conn}, 8 at a time; median of {rounds})");
    println!("  standalone gateway                              {lone_rate:>8.0}");
    println!("  cluster, same node                              {same_rate:>8.0}");
    println!(
        "  cluster, cross node                             {cross_rate:>8.0}  ({:.2} of same node)",
        cross_rate / same_rate
    );
    println!(
        "\none-stream echo throughput ({} MiB each way; median of {rounds})",
        bulk >> 20
    );
    println!("  standalone gateway                              {lone_tp:>8.0} MB/s");
    println!(
        "  cluster, same node                              {same_tp:>8.0} MB/s  ({:.2} of standalone)",
        same_tp / lone_tp
    );
    println!(
        "  cluster, cross node                             {cross_tp:>8.0} MB/s  ({:.2} of standalone)",
        cross_tp / lone_tp
    );

    // Recovery: the listener's node dies; senders on the two others wait for it to move.
    drop(nodes[0].take());
    let killed = Instant::now();
    for i in [1, 2] {
        let deadline = killed + Duration::from_secs(30);
        while first_byte(&on(i)?).await.is_err() {
            if Instant::now() > deadline {
                bail!("the listener never came back through node {i}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!(
        "\nrecovery after SIGKILL of the listener's node: senders on both other nodes reach it after {:.0} ms (lease TTL {LEASE_TTL} s)",
        killed.elapsed().as_secs_f64() * 1e3
    );
    drop(single);
    Ok(())
}
