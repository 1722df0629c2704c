//! Child processes (this binary in another role) and what `/proc` says about them.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

/// How long a child may take to print its `READY` line.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A child process, killed and reaped when dropped (also when the benchmark fails or
/// panics). Children also exit on their own when their standard input closes, so they do
/// not outlive a parent that was killed outright.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    pub(crate) name: &'static str,
    /// The `key=value` fields of its `READY` line.
    pub(crate) ready: HashMap<String, String>,
}

impl Proc {
    /// Starts this binary with `args` (a hidden role) and waits, bounded, for its `READY`
    /// line on standard output.
    pub(crate) async fn start(
        name: &'static str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let me = std::env::current_exe().context("locating grpc-bench")?;
        let mut cmd = Command::new(me);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} process"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        // From here on the guard owns the child: any early return kills it.
        let mut proc = Self {
            child,
            name,
            ready: HashMap::new(),
        };
        let (tx, rx) = mpsc::sync_channel::<String>(16);
        std::thread::spawn(move || {
            // Keeps draining the pipe until the child exits, so it never blocks writing.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.try_send(line);
            }
        });
        let line = tokio::task::spawn_blocking(move || -> Result<String> {
            let mut waited = Duration::ZERO;
            let step = Duration::from_millis(100);
            while waited < START_LIMIT {
                match rx.recv_timeout(step) {
                    Ok(line) if line.starts_with("READY") => return Ok(line),
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => waited += step,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        bail!("the {name} process exited before it was ready")
                    }
                }
            }
            bail!("the {name} process was not ready within {START_LIMIT:?}")
        })
        .await??;
        proc.ready = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(proc)
    }

    /// A field of the `READY` line.
    pub(crate) fn field(&self, key: &str) -> Result<&str> {
        self.ready
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("the {} process did not report {key}", self.name))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) used so far, in seconds.
    pub(crate) fn cpu_secs(&self) -> Result<f64> {
        cpu_secs(&format!("/proc/{}/stat", self.pid()))
            .with_context(|| format!("reading the {} process's CPU time", self.name))
    }

    /// Peak resident memory (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> Result<u64> {
        status_kib(&format!("/proc/{}/status", self.pid()), "VmHWM:")
            .with_context(|| format!("reading the {} process's VmHWM", self.name))
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

/// This process's peak resident memory, in KiB.
pub(crate) fn self_peak_rss_kib() -> Result<u64> {
    status_kib("/proc/self/status", "VmHWM:")
}

fn status_kib(status_file: &str, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(status_file)?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow!("no {field} line in {status_file}"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad {field} line {line:?}"))?;
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
    let tick = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short {stat_file}"))?
            .parse()?)
    };
    Ok((tick(11)? + tick(12)?) / 100.0)
}

/// Resolves once standard input reaches its end: the parent closed it, or died.
pub(crate) async fn stdin_closed() {
    // A blocking read on its own thread: the workspace's tokio has no `io-std`.
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut sink = [0u8; 64];
        while std::io::stdin().read(&mut sink).unwrap_or(0) > 0 {}
    })
    .await;
}

/// Prints the `READY` line (flushed: the parent waits for it).
pub(crate) fn announce(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
