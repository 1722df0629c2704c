//! The gateway and listener processes, and what `/proc` says about them.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

/// How long a child may take to print its ready lines.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        rss_kib(&format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("reading the {} process's VmRSS", self.name))
    }

    /// CPU time (user + system) used so far, in seconds.
    pub(crate) fn cpu_secs(&self) -> Result<f64> {
        cpu_secs(&format!("/proc/{}/stat", self.pid()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) this process used so far, in seconds.
pub(crate) fn self_cpu_secs() -> Result<f64> {
    cpu_secs("/proc/self/stat")
}

/// This process's resident memory, in KiB.
pub(crate) fn self_rss_kib() -> Result<u64> {
    rss_kib("/proc/self/status")
}

fn rss_kib(status_file: &str) -> Result<u64> {
    let status = std::fs::read_to_string(status_file)?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS line in {status_file}"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad VmRSS line {line:?}"))?;
    Ok(kib.parse()?)
}

/// utime + stime from `/proc/PID/stat`, at the usual 100 ticks per second.
fn cpu_secs(stat_file: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_file)?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad {stat_file}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields
        .get(11)
        .ok_or_else(|| anyhow!("short stat"))?
        .parse()?;
    let stime: f64 = fields
        .get(12)
        .ok_or_else(|| anyhow!("short stat"))?
        .parse()?;
    Ok((utime + stime) / 100.0)
}

/// Starts `child` with piped stdout and returns it with a channel of its stdout lines, read
/// by a thread that keeps draining the pipe until the child exits.
fn spawn_lines(mut cmd: Command, name: &'static str) -> Result<(Proc, mpsc::Receiver<String>)> {
    cmd.stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {name} process"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The receiver is gone once start-up is over; keep draining anyway.
            let _ = tx.try_send(line);
        }
    });
    Ok((Proc { child, name }, rx))
}

/// Waits (bounded) for the first line `pick` accepts.
async fn wait_for<T: Send + 'static>(
    rx: mpsc::Receiver<String>,
    what: &'static str,
    mut pick: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> Result<(T, mpsc::Receiver<String>)> {
    tokio::task::spawn_blocking(move || {
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(100);
        while waited < START_LIMIT {
            match rx.recv_timeout(step) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return Ok((v, rx));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => waited += step,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the {what} process exited before it was ready")
                }
            }
        }
        bail!("the {what} process was not ready within {START_LIMIT:?}")
    })
    .await?
}

/// A running `ferry gateway` in development mode.
#[derive(Debug)]
pub(crate) struct GatewayProc {
    pub(crate) proc: Proc,
    /// `ws://127.0.0.1:PORT`.
    pub(crate) plain: String,
    /// `wss://localhost:PORT`.
    pub(crate) tls: String,
    pub(crate) rule: String,
    pub(crate) key: String,
    pub(crate) ca_file: PathBuf,
    pub(crate) ca_pem: Vec<u8>,
}

/// Starts `ferry gateway` on ephemeral loopback ports and reads its banner.
pub(crate) async fn start_gateway(ferry: &Path, ca_file: &Path) -> Result<GatewayProc> {
    let mut cmd = Command::new(ferry);
    cmd.args([
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
    ])
    .arg("--dev-ca-out")
    .arg(ca_file)
    // Per-connection info logs would cost the gateway time the benchmark measures.
    .env("RUST_LOG", "warn");
    let (proc, rx) = spawn_lines(cmd, "gateway")?;
    let mut fields: [Option<String>; 4] = Default::default();
    let (fields, _rx) = wait_for(rx, "gateway", move |line| {
        let mut words = line.split_whitespace();
        let (Some(label), Some(value)) = (words.next(), words.next()) else {
            return None;
        };
        let slot = match label {
            "plain" => 0,
            "tls" => 1,
            "rule" => 2,
            "key" => 3,
            _ => return None,
        };
        fields[slot] = Some(value.to_owned());
        fields.iter().all(Option::is_some).then(|| fields.clone())
    })
    .await?;
    let [Some(plain), Some(tls), Some(rule), Some(key)] = fields else {
        bail!("incomplete gateway banner");
    };
    let ca_pem = std::fs::read(ca_file)
        .with_context(|| format!("reading the development CA {}", ca_file.display()))?;
    Ok(GatewayProc {
        proc,
        plain,
        tls,
        rule,
        key,
        ca_file: ca_file.to_owned(),
        ca_pem,
    })
}

/// A running listener process (this binary in its `listener` role).
#[derive(Debug)]
pub(crate) struct ListenerProc {
    pub(crate) proc: Proc,
    /// Its direct TCP echo/sink server.
    pub(crate) direct: std::net::SocketAddr,
}

/// Starts this binary as the listener of `gw`.
pub(crate) async fn start_listener(gw: &GatewayProc) -> Result<ListenerProc> {
    let me = std::env::current_exe().context("locating relay-bench")?;
    let mut cmd = Command::new(me);
    cmd.args([
        "listener", "--plain", &gw.plain, "--tls", &gw.tls, "--rule", &gw.rule,
    ])
    .arg("--ca")
    .arg(&gw.ca_file)
    .env("FERRY_BENCH_KEY", &gw.key);
    let (proc, rx) = spawn_lines(cmd, "listener")?;
    let (direct, _rx) = wait_for(rx, "listener", |line| {
        line.strip_prefix("READY ")
            .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
    })
    .await?;
    Ok(ListenerProc { proc, direct })
}

/// Where the `ferry` binary is: next to this one (both built into the same target dir).
pub(crate) fn default_ferry() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().ok_or_else(|| anyhow!("no parent directory"))?;
    let ferry = dir.join("ferry");
    if !ferry.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p ferry-cli) or pass --ferry",
            ferry.display()
        );
    }
    Ok(ferry)
}
