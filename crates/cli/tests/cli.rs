//! The `ferry` binary end to end: a gateway process, the port bridge carrying checksummed
//! streams both ways and a real iperf3 run, and `ferry decode` on recorded WCF traffic.

// These tests are synchronous (no async runtime to block) and poll external processes, so
// short thread sleeps are what they need.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Proc, free_port, gateway_command, iperf_client, pattern};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const WAIT: Duration = Duration::from_secs(30);

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
    process: Proc,
    tls_port: u16,
    key: String,
    ca: PathBuf,
}

fn gateway(dir: &Path) -> GatewayProc {
    let (plain, tls) = (free_port(), free_port());
    let ca = dir.join("ca.pem");
    let (proc_, rx) = spawn(gateway_command(plain, tls, 0).arg("--dev-ca-out").arg(&ca));
    let line = wait_line(&rx, "  key ");
    let key = line
        .split_whitespace()
        .nth(1)
        .expect("key printed")
        .to_owned();
    GatewayProc {
        process: proc_,
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

/// A gateway, a `bridge remote` to `target` and a `bridge local` port in front of it; returns
/// the processes to keep and the local port, once it accepts connections.
fn bridge_pair(dir: &Path, target: &str) -> (Vec<Proc>, u16) {
    let gw = gateway(dir);
    let local_port = free_port();
    let (remote, remote_log) = bridge(&gw, &["remote", "perf", target]);
    wait_line(&remote_log, "bridge remote side running");
    let (local, local_log) = bridge(&gw, &["local", &format!("127.0.0.1:{local_port}"), "perf"]);
    // Its log line, not a probe connection: a probe would reach the target as a connection of
    // its own (an iperf3 server takes it for a client and is busy when the real one comes).
    wait_line(&local_log, "bridge local side running");
    (vec![gw.process, remote, local], local_port)
}

#[test]
fn bytes_through_ferry_bridge_arrive_intact_both_ways() {
    // Integrity is checked here with a transfer of the test's own rather than `iperf3 -F`:
    // iperf3 3.12 (Debian's) corrupts what it sends with -F whenever a socket write is partial
    // (`diskfile_send` reads the next block over the unsent tail it just saved), so under load
    // its file differed from the input with no relay in between at all.
    const STREAMS: u32 = 4;
    const LEN: usize = 16 << 20;
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    // Every connection is served, for the test's lifetime.
    std::thread::spawn(move || {
        for conn in echo.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().expect("clone");
                let mut writer = conn;
                // Echo until the sender's half-close, then close our side.
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (_procs, local_port) = bridge_pair(dir.path(), &echo_addr.to_string());

    let streams: Vec<_> = (0..STREAMS)
        .map(|n| {
            std::thread::spawn(move || {
                let sent = pattern(n, LEN);
                let conn = std::net::TcpStream::connect(("127.0.0.1", local_port)).unwrap();
                conn.set_read_timeout(Some(WAIT)).unwrap();
                let mut writer = conn.try_clone().unwrap();
                let to_send = sent.clone();
                let write = std::thread::spawn(move || {
                    writer.write_all(&to_send).expect("send");
                    writer
                        .shutdown(std::net::Shutdown::Write)
                        .expect("half-close");
                });
                let mut back = Vec::with_capacity(LEN);
                let mut reader = conn;
                reader.read_to_end(&mut back).expect("echo arrives");
                write.join().expect("writer");
                (n, sent, back)
            })
        })
        .collect();
    for s in streams {
        let (n, sent, back) = s.join().expect("stream thread");
        assert_eq!(back.len(), sent.len(), "stream {n}: every byte came back");
        let first = sent.iter().zip(&back).position(|(a, b)| a != b);
        assert_eq!(
            first, None,
            "stream {n}: the bytes differ from this offset on"
        );
    }
}

#[test]
fn iperf3_through_ferry_bridge_moves_data_both_ways() {
    require("iperf3", "iperf3");
    let dir = tempfile::tempdir().unwrap();
    let server_port = free_port();
    // iperf3 is spawned directly (not under `timeout`), so the guard kills the server
    // itself when the test ends; a wrapper's death would leave it running.
    let _server = spawn(Command::new("iperf3").args(["-s", "-p", &server_port.to_string()]));
    let (_procs, local_port) = bridge_pair(dir.path(), &format!("127.0.0.1:{server_port}"));

    // Forward, then reverse with several parallel streams: the control connection and the
    // data connections all travel the one path.
    let report = iperf_client(local_port, &["-t", "2"]);
    let forward = report["end"]["sum_received"]["bytes"]
        .as_u64()
        .expect("received bytes");
    assert!(
        forward > 1 << 20,
        "at least 1 MiB crossed the bridge: {forward}"
    );
    let report = iperf_client(local_port, &["-R", "-P", "4", "-t", "2"]);
    let rx_bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("rate");
    assert!(rx_bits > 0.0, "reverse run moved data: {report}");
    eprintln!(
        "iperf3 through ferry bridge (debug build): forward {forward} bytes, reverse 4 streams {:.0} Mbit/s",
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
    let mut child = gateway_command(plain, free_port(), 0)
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

#[test]
fn a_gateway_out_of_descriptors_says_so_and_recovers() {
    // A hard limit of 48 descriptors: the gateway takes all of it and reports it, and the
    // connections past it wait, with a log line that names the cause, instead of failing
    // silently.
    let plain = free_port();
    let script = format!(
        "ulimit -n 48 && exec {FERRY} gateway --listen 127.0.0.1:{plain} --nettcp-listen 127.0.0.1:0 --relayed-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --tls-listen 127.0.0.1:{}",
        free_port()
    );
    let (_gw, log) = spawn(Command::new("sh").args(["-c", &script]));
    let line = wait_line(&log, "open-file limit");
    assert!(line.contains("48"), "the limit is reported: {line}");
    let deadline = std::time::SystemTime::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", plain)).is_err() {
        assert!(
            std::time::SystemTime::now() < deadline,
            "gateway never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let held: Vec<_> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", plain)).ok())
        .collect();
    wait_line(&log, "out of file descriptors");
    drop(held);
    // Served again once connections close: a plain HTTP request gets an answer.
    let deadline = std::time::SystemTime::now() + WAIT;
    loop {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", plain)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        tcp.write_all(b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 ") {
            break;
        }
        assert!(
            std::time::SystemTime::now() < deadline,
            "the gateway never served again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
