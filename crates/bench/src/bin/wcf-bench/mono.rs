//! The Mono side: the C# peers of `interop/mono` (the calculator service `CalcService.cs` and
//! the load generator `CalcBench.cs`), compiled with `mcs` against the WCF assemblies as the
//! interop tests compile them, and run with `mono`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout, timeout_at};

use crate::load::{Edges, Sampler};

/// The assemblies WCF programs reference (as `interop/src/mono.rs`).
const WCF_REFERENCES: [&str; 3] = [
    "System.ServiceModel.dll",
    "System.Runtime.Serialization.dll",
    "System.Xml.dll",
];
/// How long `mcs` may take for one program.
const COMPILE_LIMIT: Duration = Duration::from_secs(120);
/// How long the Mono service may take to print its `ready` line.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a load run may take beyond its warm-up and window: opening the channels (Mono's
/// thread pool grows slowly, so sixteen sessions take seconds), closing them, and exiting.
const RUN_SLACK: Duration = Duration::from_secs(120);

/// `interop/mono`, where the C# sources live.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/mono")
}

/// Fails unless `mono` and `mcs` run.
pub(crate) fn require() -> Result<()> {
    for tool in ["mono", "mcs"] {
        let ok = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(
            ok,
            "{tool} is not installed: install the mono-complete package (scripts/test.sh does)"
        );
    }
    Ok(())
}

/// Compiles `interop/mono/{name}.cs` with the shared contract (`CalcContract.cs`) into
/// `{out_dir}/{name}.exe` unless that is newer than both sources; returns the executable.
pub(crate) async fn compile(name: &str, out_dir: &Path) -> Result<PathBuf> {
    let source = source_dir().join(format!("{name}.cs"));
    let contract = source_dir().join("CalcContract.cs");
    let exe = out_dir.join(format!("{name}.exe"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut src_time = None;
    for s in [&source, &contract] {
        let t = modified(s).with_context(|| format!("reading {}", s.display()))?;
        src_time = src_time.max(Some(t));
    }
    if modified(&exe).is_some_and(|built| Some(built) >= src_time) {
        return Ok(exe);
    }
    std::fs::create_dir_all(out_dir)?;
    let tmp = out_dir.join(format!("{name}.{}.tmp.exe", std::process::id()));
    let mut cmd = Command::new("mcs");
    cmd.args(["-nologo", "-debug-", "-optimize+", "-target:exe"])
        .arg(format!("-out:{}", tmp.display()))
        .args(WCF_REFERENCES.iter().map(|r| format!("-r:{r}")))
        .arg(&source)
        .arg(&contract)
        .kill_on_drop(true);
    let output = timeout(COMPILE_LIMIT, cmd.output())
        .await
        .with_context(|| format!("mcs did not finish {name}.cs within {COMPILE_LIMIT:?}"))?
        .context("running mcs")?;
    ensure!(
        output.status.success(),
        "mcs failed on {name}.cs:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &exe)?;
    Ok(exe)
}

/// The Mono calculator service (`CalcService.cs`), killed when dropped.
#[derive(Debug)]
pub(crate) struct Service {
    child: Child,
    /// Its NetTcpBinding endpoint, `net.tcp://127.0.0.1:PORT/calc/tcp` (Mono drops messages
    /// whose `To` is anything else).
    pub(crate) address: String,
    /// Drains its standard output, so that it never blocks writing.
    _drain: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Starts the service on a free port with its throttle raised to `max_sessions` and waits
    /// (bounded) for its `ready` line. Mono cannot pick a port itself, so one found free is
    /// passed in; another process may take it first, hence a few attempts.
    pub(crate) async fn start(exe: &Path, max_sessions: usize) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut child = Command::new("mono")
                .arg(exe)
                .args(["--tcp", &port.to_string()])
                .args(["--max-sessions", &max_sessions.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting mono CalcService.exe")?;
            let stdout = child.stdout.take().context("no stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            let ready = timeout(START_LIMIT, async {
                while let Some(line) = lines.next_line().await? {
                    if let Some(rest) = line.strip_prefix("ready ") {
                        return Ok(Some(rest.to_owned()));
                    }
                }
                Ok::<_, std::io::Error>(None)
            })
            .await;
            match ready {
                Ok(Ok(Some(fields))) => {
                    let address = fields
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("tcp="))
                        .context("no tcp= in the service's ready line")?
                        .to_owned();
                    let drain =
                        tokio::spawn(
                            async move { while let Ok(Some(_)) = lines.next_line().await {} },
                        );
                    return Ok(Self {
                        child,
                        address,
                        _drain: drain,
                    });
                }
                Ok(Ok(None)) => last = Some("it exited before it was ready".to_owned()),
                Ok(Err(e)) => last = Some(format!("reading its output failed: {e}")),
                Err(_) => last = Some(format!("no ready line within {START_LIMIT:?}")),
            }
            let _ = child.kill().await;
        }
        bail!(
            "the Mono calculator service did not start: {}",
            last.unwrap_or_default()
        )
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// What one CalcBench run printed last.
#[derive(Debug, Deserialize)]
pub(crate) struct Report {
    pub(crate) calls: u64,
    pub(crate) secs: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) cpu_secs: Option<f64>,
    pub(crate) peak_rss_kib: u64,
}

/// One CalcBench run (`mono CalcBench.exe ADDRESS TOKEN|- --op ...`): the report, and every
/// process's CPU seconds sampled when it printed `begin` and `end`.
pub(crate) async fn bench(
    exe: &Path,
    address: &str,
    token: Option<&str>,
    args: &[String],
    window: crate::load::Window,
    sampler: Sampler<'_>,
) -> Result<(Report, Edges)> {
    let mut child = Command::new("mono")
        .arg(exe)
        .arg(address)
        .arg(token.unwrap_or("-"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting mono CalcBench.exe")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let limit = window.warmup + window.measure + RUN_SLACK;
    let deadline = Instant::now() + limit;
    let outcome = timeout_at(deadline, read_run(stdout, sampler)).await;
    let (report, edges) = match outcome {
        Ok(r) => r?,
        Err(_) => {
            let _ = child.kill().await;
            bail!("CalcBench did not finish within {limit:?}");
        }
    };
    let status = timeout_at(deadline, child.wait())
        .await
        .context("CalcBench did not exit")??;
    ensure!(
        status.success() && report.errors == 0,
        "CalcBench failed ({status}): {} error(s), first: {}",
        report.errors,
        report.first_error.as_deref().unwrap_or("-")
    );
    Ok((report, edges))
}

/// Reads CalcBench's output: samples at `begin` and `end`, then its JSON report.
async fn read_run(stdout: ChildStdout, sampler: Sampler<'_>) -> Result<(Report, Edges)> {
    let mut lines = BufReader::new(stdout).lines();
    let (mut begin, mut end) = (None, None);
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line == "begin" {
            begin = Some(sampler()?);
        } else if line == "end" {
            end = Some(sampler()?);
        } else if line.starts_with('{') {
            let report: Report = serde_json::from_str(line)
                .with_context(|| format!("CalcBench printed {line:?}"))?;
            let edges = [
                begin.context("no begin from CalcBench")?,
                end.context("no end from CalcBench")?,
            ];
            return Ok((report, edges));
        }
    }
    bail!("CalcBench exited without a report (its standard error is above)")
}
