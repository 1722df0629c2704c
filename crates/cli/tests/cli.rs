//! The `ferry` binary end to end: a gateway process, the port bridge carrying a real iperf3
//! run, and `ferry decode` on recorded WCF traffic.

// These tests are synchronous (no async runtime to block) and poll external processes, so
// short thread sleeps are what they need.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const WAIT: Duration = Duration::from_secs(30);

/// Kills the process when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a process and returns it with a channel of its stdout and stderr lines.
fn spawn(cmd: &mut Command) -> (Proc, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("process starts");
    let (tx, rx) = mpsc::sync_channel(1024);
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // A full channel only means nobody is listening any more.
                let _ = tx.try_send(line);
            }
        });
    }
    (Proc(child), rx)
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::SystemTime::now() + WAIT;
    loop {
        let left = deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

struct GatewayProc {
    _proc: Proc,
    tls_port: u16,
    key: String,
    ca: PathBuf,
}

fn gateway(dir: &Path) -> GatewayProc {
    let (plain, tls) = (free_port(), free_port());
    let ca = dir.join("ca.pem");
    let (proc_, rx) = spawn(Command::new(FERRY).args([
        "gateway",
        "--listen",
        &format!("127.0.0.1:{plain}"),
        "--nettcp-listen",
        "127.0.0.1:0",
        "--relayed-listen",
        "127.0.0.1:0",
        "--tls-listen",
        &format!("127.0.0.1:{tls}"),
        "--dev-ca-out",
        ca.to_str().unwrap(),
    ]));
    let line = wait_line(&rx, "  key ");
    let key = line
        .split_whitespace()
        .nth(1)
        .expect("key printed")
        .to_owned();
    GatewayProc {
        _proc: proc_,
        tls_port: tls,
        key,
        ca,
    }
}

fn require(tool: &str, package: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{tool} is not installed: run scripts/test.sh, which installs the {package} package"
    );
}

fn bridge(gw: &GatewayProc, args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    spawn(
        Command::new(FERRY)
            .arg("bridge")
            .args(args)
            .env("FERRY_GATEWAY", format!("wss://localhost:{}", gw.tls_port))
            .env("FERRY_KEY_NAME", "RootManageSharedAccessKey")
            .env("FERRY_KEY", &gw.key)
            .env("FERRY_CA", &gw.ca),
    )
}

/// Runs `iperf3 -c` (killed after 60 s by `timeout`) and returns its JSON report.
fn iperf_client(port: u16, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("timeout")
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

#[test]
fn iperf3_through_ferry_bridge_arrives_intact() {
    require("iperf3", "iperf3");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let (server_port, local_port) = (free_port(), free_port());

    let received = dir.path().join("received.bin");
    // iperf3 is spawned directly (not under `timeout`), so the guard kills the server
    // itself when the test ends; a wrapper's death would leave it running.
    let _server = spawn(
        Command::new("iperf3")
            .args(["-s", "-p", &server_port.to_string(), "-F"])
            .arg(&received),
    );
    let (_remote, remote_log) = bridge(
        &gw,
        &["remote", "perf", &format!("127.0.0.1:{server_port}")],
    );
    wait_line(&remote_log, "bridge remote side running");
    let (_local, _local_log) = bridge(&gw, &["local", &format!("127.0.0.1:{local_port}"), "perf"]);
    let deadline = std::time::SystemTime::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", local_port)).is_err() {
        assert!(
            std::time::SystemTime::now() < deadline,
            "local bridge never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Forward: a file with a known pattern, written by the server as it arrives. iperf3 stops
    // reading when its control channel says the test is over (even on a direct connection),
    // so what arrived must be an exact prefix of what was sent, and as long as iperf3 says.
    let sent: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let input = dir.path().join("input.bin");
    std::fs::write(&input, &sent).unwrap();
    let report = iperf_client(local_port, &["-F", input.to_str().unwrap()]);
    let got_bytes = report["end"]["sum_received"]["bytes"]
        .as_u64()
        .expect("received bytes");
    let deadline = std::time::SystemTime::now() + WAIT;
    let got = loop {
        let got = std::fs::read(&received).unwrap_or_default();
        if got.len() as u64 >= got_bytes || std::time::SystemTime::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        got_bytes > 1 << 20,
        "at least 1 MiB crossed the bridge: {got_bytes}"
    );
    assert_eq!(
        got.len() as u64,
        got_bytes,
        "server wrote what iperf3 counted"
    );
    assert!(
        got == sent[..got.len()],
        "bytes through the bridge differ from the bytes sent"
    );

    // Reverse (server → client) and several parallel streams: the control connection and
    // the data connections all travel the one path.
    let report = iperf_client(local_port, &["-R", "-P", "4", "-t", "2"]);
    let rx_bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("rate");
    assert!(rx_bits > 0.0, "reverse run moved data: {report}");
    eprintln!(
        "iperf3 through ferry bridge (debug build): forward {got_bytes} bytes verified, reverse 4 streams {:.0} Mbit/s",
        rx_bits / 1e6
    );
}

#[test]
fn decode_prints_recorded_envelopes_as_xml_and_json() {
    let recording =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/recordings/tcp-fault");
    let out = Command::new(FERRY)
        .arg("decode")
        .arg(&recording)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Via net.tcp://127.0.0.1:9701/calc/tcp"),
        "{text}"
    );
    assert!(text.contains("<s:Envelope"), "{text}");
    assert!(
        text.contains("Cannot divide by zero"),
        "the typed fault's reason is decoded"
    );
    let out = Command::new(FERRY)
        .arg("decode")
        .arg("--json")
        .arg(&recording)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert!(json.to_string().contains("SafeDivide"), "{json}");
    // Garbage is an error with a message, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, [0xFFu8; 64]).unwrap();
    let out = Command::new(FERRY)
        .arg("decode")
        .arg(&junk)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn gateway_survives_a_closed_stdout() {
    // Whoever started the gateway stopped reading its stdout before the banner was printed:
    // the banner is lost, the gateway must not be.
    let plain = free_port();
    let mut child = Command::new(FERRY)
        .args([
            "gateway",
            "--listen",
            &format!("127.0.0.1:{plain}"),
            "--nettcp-listen",
            "127.0.0.1:0",
            "--relayed-listen",
            "127.0.0.1:0",
            "--tls-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut proc_ = Proc(child);
    let deadline = std::time::SystemTime::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", plain)).is_err() {
        assert!(proc_.0.try_wait().unwrap().is_none(), "gateway exited");
        assert!(
            std::time::SystemTime::now() < deadline,
            "gateway never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        proc_.0.try_wait().unwrap().is_none(),
        "gateway died after its banner hit a closed pipe"
    );
}
