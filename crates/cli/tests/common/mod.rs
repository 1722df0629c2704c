//! Shared helpers for the `ferry` binary's tests: the Mono calculator service
//! (`interop/mono/CalcService.cs`, the real peer), `ferry` subprocesses and their memory, and
//! the recordings.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The `ferry` binary under test.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Longest any one test may take.
pub const LIMIT: Duration = Duration::from_secs(180);
/// Longest a process may take to say it is ready.
const READY: Duration = Duration::from_secs(60);

/// `interop/recordings/NAME`.
pub fn recording(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../interop/recordings")
        .join(name)
}

/// A port nothing listens on right now (WCF cannot pick one itself, so the test does).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process started with `std`, killed when the test ends, however it ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ferry gateway` on loopback: the plain port `plain`, the TLS port `tls`, the net.tcp port
/// `nettcp` (0 for any free one), and relayed and admin ports on any free ones.
pub fn gateway_command(plain: u16, tls: u16, nettcp: u16) -> std::process::Command {
    let mut cmd = std::process::Command::new(FERRY);
    cmd.args([
        "gateway",
        "--listen",
        &format!("127.0.0.1:{plain}"),
        "--nettcp-listen",
        &format!("127.0.0.1:{nettcp}"),
        "--relayed-listen",
        "127.0.0.1:0",
        "--tls-listen",
        &format!("127.0.0.1:{tls}"),
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    cmd
}

/// Peak resident set size of a process, in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process alive");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM line");
    kb * 1024
}

/// The Mono calculator service, killed on drop.
pub struct Calc {
    child: Child,
    /// How it was started, to start it again the same way.
    exe: PathBuf,
    args: [String; 6],
    /// `net.tcp://127.0.0.1:PORT/calc/tcp`, its NetTcpBinding endpoint address.
    pub tcp: String,
    /// `http://127.0.0.1:PORT/calc/basic`, its BasicHttpBinding endpoint.
    pub http: String,
    /// `net.tcp://127.0.0.1:PORT/calc/mex`, its mexTcpBinding endpoint.
    pub mex: String,
    /// `http://127.0.0.1:PORT/calc`, where its WSDL is (`?wsdl`).
    pub base: String,
}

impl Calc {
    /// Compiles (once) and starts the service on free ports; waits for its `ready` line.
    pub async fn start() -> Self {
        let exe =
            ferry_interop::mono::compile("CalcService", &["CalcService.cs", "CalcContract.cs"]);
        // A port picked free may be taken before Mono binds it: try again with others.
        for _ in 0..3 {
            let (tcp, http, mex) = (free_port(), free_port(), free_port());
            let args = [
                "--tcp",
                &tcp.to_string(),
                "--http",
                &http.to_string(),
                "--mex",
                &mex.to_string(),
            ]
            .map(str::to_owned);
            let mut child = ferry_interop::mono::run(&exe, &args);
            let stdout = child.stdout.take().expect("stdout piped");
            if let Some(line) = line_containing(stdout, "ready tcp=").await {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_owned))
                        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                };
                return Self {
                    tcp: field("tcp"),
                    http: field("http"),
                    mex: field("mex"),
                    base: format!("http://127.0.0.1:{http}/calc"),
                    child,
                    exe,
                    args,
                };
            }
        }
        panic!("the Mono calculator service did not start (see its stderr above)");
    }

    /// Starts the service again on the same ports if it has exited (Mono's runtime can die of
    /// an unhandled exception in its own socket code when connections are cut under it):
    /// `true` when it had to and did.
    pub async fn revive(&mut self) -> bool {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let mut child = ferry_interop::mono::run(&self.exe, &self.args);
        let stdout = child.stdout.take().expect("stdout piped");
        self.child = child;
        line_containing(stdout, "ready tcp=").await.is_some()
    }
}

/// Reads lines until one contains `needle` (ANSI colours ignored) and returns it, `None` if
/// the stream ends first; fails the test after [`READY`]. The rest of the stream is drained
/// in the background, so the process never blocks on a full pipe.
pub async fn line_containing<R>(stream: R, needle: &str) -> Option<String>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut lines = BufReader::new(stream).lines();
    let found = tokio::time::timeout(READY, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let line = strip_ansi(&line);
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?} within {READY:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `ferry replay RECORDING --to ADDR`; returns whether it succeeded and its report.
pub async fn replay(recording: &std::path::Path, to: &str) -> (bool, String) {
    replay_with(recording, to, &[]).await
}

/// `ferry replay` with extra arguments (e.g. `--mono-quirks`).
pub async fn replay_with(recording: &std::path::Path, to: &str, extra: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        LIMIT,
        Command::new(FERRY)
            .arg("replay")
            .arg(recording)
            .args(["--to", to, "--timeout", "20"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ferry replay finished in time")
    .expect("ferry replay runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// Starts a `ferry` subcommand with stderr (its log) piped, killed on drop; returns once a
/// log line contains `ready`.
pub async fn ferry(args: &[&str], env: &[(&str, String)], ready: &str) -> Child {
    let mut cmd = Command::new(FERRY);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("ferry starts");
    let stderr = child.stderr.take().expect("stderr piped");
    if line_containing(stderr, ready).await.is_none() {
        panic!("ferry {args:?} exited before logging {ready:?}");
    }
    child
}

/// Runs `f`, failing the test once it takes longer than [`LIMIT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

/// A valid sender token for `path`, signed with the gateway's rule, good for an hour.
pub fn token(gw: &ferry_gateway::RunningGateway, path: &str) -> String {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    ferry_hc::SasToken::create(
        &format!("http://localhost/{path}"),
        gw.rule_name(),
        gw.rule_key(),
        expiry,
    )
}

/// The environment `ferry listen` and `ferry bridge` need to reach `gw`.
pub fn ferry_env(gw: &ferry_gateway::RunningGateway) -> Vec<(&'static str, String)> {
    let plain = gw.plain_addr().expect("plain port");
    vec![
        ("FERRY_GATEWAY", format!("ws://{plain}")),
        ("FERRY_KEY_NAME", gw.rule_name().to_owned()),
        ("FERRY_KEY", gw.rule_key().to_owned()),
    ]
}

/// `ferry listen PATH --wcf-to ORIGIN EXTRA...`, once the gateway has its listener.
pub async fn wcf_listen(
    gw: &ferry_gateway::RunningGateway,
    path: &str,
    origin: &str,
    extra: &[&str],
) -> Child {
    let args = [&["listen", path, "--wcf-to", origin], extra].concat();
    let child = ferry(&args, &ferry_env(gw), "forwarding net.tcp sessions").await;
    while gw.listener_count(path) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// The next framing event of a client `session` reading from `tcp`, each read within `step`;
/// `None` when the peer closes or sends what the session refuses.
pub async fn nmf_event<R: AsyncRead + Unpin>(
    session: &mut ferry_nmf::Session,
    tcp: &mut R,
    step: Duration,
) -> Option<ferry_nmf::Event> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 8192];
    loop {
        if let Some(e) = session.poll_event() {
            return Some(e);
        }
        let n = tokio::time::timeout(step, tcp.read(&mut buf))
            .await
            .expect("an answer in time, not silence")
            .ok()?;
        if n == 0 {
            return None;
        }
        session.handle_input(&buf[..n]).ok()?;
    }
}

/// Runs `iperf3 -c` (killed after 60 s by `timeout`) and returns its JSON report.
pub fn iperf_client(port: u16, extra: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-J",
        ])
        .args(extra)
        .output()
        .expect("iperf3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {text}"));
    assert!(
        out.status.success() && json.get("error").is_none(),
        "iperf3 failed: {json}"
    );
    json
}

/// The bytes of stream `n`: a pattern that differs per stream and per position, so a byte
/// moved, lost, repeated or taken from another stream shows.
pub fn pattern(n: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(n << 28).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}
