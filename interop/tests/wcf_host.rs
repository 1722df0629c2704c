//! The Rust WCF service host (`ferry_wcf::Host`, `ferry_wcf::BasicHttp`) serving the interop
//! calculator (`ferry_wcf::calc::Calc`) to real WCF clients:
//!
//! - Mono's NetTcpBinding client (`interop/mono/CalcClient.cs`) on a plain TCP port, alone and
//!   two at once, and through the gateway's net.tcp front end to an SDK listener (and to the
//!   host behind a bridge that records what the listener is sent: never the token);
//! - Mono's BasicHttpBinding client through the gateway's HTTP relay to an SDK listener;
//! - PyPI pynettcp's generated client (`interop/pynettcp/calc_client.py`) on a TCP port;
//! - our own `NetTcpChannel` over a relayed stream and `BasicHttpChannel` through the relay.
//!
//! Every call's outcome is checked against what the recorded Mono service answered
//! (`interop/recordings/*/calls.json`), except where the host deliberately does what .NET does
//! rather than what Mono does (see `expect_fault`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_interop::cluster::TestCluster;
use ferry_interop::{PEER_TIMEOUT, TestGateway, finish, mono, now, require_tool};
use ferry_sdk::http::{HttpConfig, HttpListener};
use ferry_wcf::calc::{Calc, DIVIDE_BY_ZERO_REASON, SERVICE_NS};
use ferry_wcf::fault::{DISPATCHER_NS, INTERNAL_ERROR_REASON};
use ferry_wcf::generated::calculator::{
    Add, CalculatorClient, CalculatorServer, Echo, ReverseBytes, SafeDivide, SafeDivideFault,
};
use ferry_wcf::{
    BasicHttp, BasicHttpChannel, CallError, ChannelConfig, Host, HostConfig, NetTcpChannel,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;

/// Message size and reader quotas of the hosts, as the Mono client's bindings set them.
const QUOTA: usize = 64 * 1024 * 1024;

type Service = Arc<CalculatorServer<Calc>>;

fn host_config() -> HostConfig {
    let mut config = HostConfig::default();
    config.set_quotas(QUOTA);
    config
}

/// The calculator behind a net.tcp host on an ephemeral loopback port.
async fn tcp_host() -> (Host<Service>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let host = Host::with_config(Arc::new(CalculatorServer(Calc::new())), host_config());
    let serving = host.clone();
    tokio::spawn(async move { serving.serve_tcp(listener).await });
    (host, addr)
}

/// A gateway and the calculator behind an SDK listener on `path`: net.tcp sessions over the
/// listener's relayed connections, basicHttp over its HTTP requests.
async fn relayed_host(path: &str) -> (TestGateway, Host<Service>) {
    let gw = TestGateway::start().await;
    let host = host_on(gw.endpoint(path)).await;
    (gw, host)
}

/// The calculator behind an SDK listener on `endpoint`: net.tcp sessions over its relayed
/// connections, basicHttp over its HTTP requests.
async fn host_on(mut endpoint: ferry_sdk::Endpoint) -> Host<Service> {
    endpoint.set_max_message_size(QUOTA);
    let listener = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .expect("listener online");
    let (listener, requests) = listener.into_parts();
    let service = Arc::new(CalculatorServer(Calc::new()));
    let host = Host::with_config(Arc::clone(&service), host_config());
    let serving = host.clone();
    tokio::spawn(async move { serving.serve_listener(listener).await });
    tokio::spawn(BasicHttp::with_config(service, host_config()).serve(requests));
    host
}

/// A SAS token for `path` on the test gateway (audience `http://localhost/{path}`).
fn token(gw: &TestGateway, path: &str) -> String {
    ferry_hc::SasToken::create(
        &format!("http://localhost/{path}"),
        gw.gw.rule_name(),
        gw.gw.rule_key(),
        now() + 3600,
    )
}

/// Runs the Mono client with `args`; its JSON lines, after checking it succeeded. Prints the
/// call rate seen.
async fn mono_client(args: &[String]) -> Vec<Value> {
    let exe = mono::compile("CalcClient", &["CalcClient.cs", "CalcContract.cs"]);
    let started = Instant::now();
    let (ok, out) = finish(mono::run(&exe, args)).await;
    let lines = json_lines(&out);
    assert!(ok, "CalcClient {} {} failed:\n{out}", args[0], args[1]);
    // Shown with --no-capture (and on failure by the test harness).
    println!("{out}");
    let calls = lines.iter().filter(|l| l.get("op").is_some()).count();
    // Binding and address only: a third argument is a token, which is never printed.
    println!(
        "mono {} {}: {calls} calls in {:.2?} ({:.1} calls/s, process start included)",
        args[0],
        args[1],
        started.elapsed(),
        calls as f64 / started.elapsed().as_secs_f64()
    );
    lines
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn recordings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings")
}

/// Every call the recorded Mono client made, over net.tcp and HTTP.
fn recorded_calls() -> Vec<Value> {
    ["tcp-session", "tcp-oneway", "tcp-fault", "http-basic"]
        .iter()
        .flat_map(|s| {
            let text = std::fs::read_to_string(recordings().join(s).join("calls.json"))
                .expect("recording present");
            let calls: Vec<Value> = serde_json::from_str(&text).expect("calls.json parses");
            calls
        })
        .collect()
}

/// Equal as values: numbers by their f64 value (C# prints 17 digits, Rust the shortest form).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// `{"$bytes": {"len", "sha256"}}` of the recordings' byte pattern of length `n`, reversed.
fn reversed_pattern_sha256(n: usize) -> String {
    let mut data: Vec<u8> = (0..n).map(|i| ((i * 31 + 7) & 0xff) as u8).collect();
    data.reverse();
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the Mono client's binding is: faults differ in shape between SOAP 1.2 and 1.1.
#[derive(Clone, Copy, PartialEq)]
enum Binding {
    NetTcp,
    Basic,
}

/// Checks one Mono client's lines (those with this `client` id, or all without one): every
/// call present, each with the outcome the recorded service gave.
fn check_mono_calls(lines: &[Value], client: Option<u64>, binding: Binding) -> Vec<String> {
    let recorded = recorded_calls();
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("client").and_then(Value::as_u64) == client)
        .filter(|l| l.get("error").is_none() || panic!("client failed: {l}"))
        .collect();
    let calls: Vec<&Value> = mine
        .iter()
        .copied()
        .filter(|l| l.get("op").is_some())
        .collect();
    let ops: Vec<&str> = calls.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "Add",
            "Add",
            "Add",
            "Divide",
            "Divide",
            "Divide",
            "Divide",
            "Divide",
            "Echo",
            "Echo",
            "Echo",
            "Echo",
            "ReverseBytes",
            "ReverseBytes",
            "ReverseBytes",
            "SubmitOrder",
            "Notify",
            "Notify",
            "GetNotifications",
            "SafeDivide",
            "SafeDivide",
            "Fail",
            "Add",
            "Crash",
            "Add"
        ],
        "every call, in order"
    );
    let mut notified = Vec::new();
    let mut drained = Vec::new();
    for call in &calls {
        let (op, args) = (call["op"].as_str().unwrap(), &call["args"]);
        let outcome = call["outcome"].as_str().unwrap_or_default();
        match op {
            "Notify" => {
                assert_eq!(outcome, "sent", "{call}");
                notified.push(args["message"].as_str().unwrap().to_owned());
            }
            "GetNotifications" => {
                assert_eq!(outcome, "result", "{call}");
                drained.extend(
                    call["result"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned()),
                );
            }
            "SafeDivide" | "Fail" | "Crash" if outcome != "result" => {
                expect_fault(call, binding);
            }
            "ReverseBytes" if args["data"]["$bytes"]["len"] == 1024 * 1024 => {
                assert_eq!(outcome, "result", "{call}");
                assert_eq!(call["result"]["$bytes"]["len"], 1024 * 1024);
                assert_eq!(
                    call["result"]["$bytes"]["sha256"],
                    reversed_pattern_sha256(1024 * 1024)
                );
            }
            _ => {
                let expected = recorded
                    .iter()
                    .find(|r| r["op"] == op && same(&r["args"], args))
                    .unwrap_or_else(|| panic!("no recorded call like {call}"));
                assert_eq!(outcome, "result", "{call}");
                assert!(
                    same(&call["result"], &expected["result"]),
                    "{op}: got {}, the recorded service answered {}",
                    call["result"],
                    expected["result"]
                );
            }
        }
    }
    let notes: Vec<&str> = mine.iter().filter_map(|l| l["note"].as_str()).collect();
    assert_eq!(
        notes,
        [
            "channel state after Crash: Opened",
            "channel closed (Close)"
        ],
        "the session survives Crash and closes cleanly"
    );
    // Notifications: one store for every session, so with several clients at once another
    // client may drain them; the caller checks the union.
    if client.is_none() {
        assert_eq!(
            drained, notified,
            "GetNotifications drains what Notify stored"
        );
    }
    drained
}

/// The three faults. Typed: as recorded (code `DivideByZero` in the service namespace, reason,
/// detail), with the fault action .NET sends (Mono's has no slash after the namespace).
/// Untyped (Fail): the reason and Sender code .NET passes through (Mono substitutes its
/// generic fault). Unhandled (Crash): .NET's generic fault (code Receiver + subcode
/// InternalServiceFault in the dispatcher namespace; SOAP 1.1 writes the subcode as the code).
fn expect_fault(call: &Value, binding: Binding) {
    assert_eq!(call["outcome"], "fault", "{call}");
    let fault = &call["fault"];
    match call["op"].as_str().unwrap() {
        "SafeDivide" => {
            let recorded = recorded_calls()
                .into_iter()
                .find(|r| r["op"] == "SafeDivide" && r["outcome"] == "fault")
                .expect("recorded typed fault");
            assert_eq!(fault["type"], "FaultException<CalcFault>", "{call}");
            assert_eq!(fault["code"]["name"], "DivideByZero", "{call}");
            assert_eq!(fault["code"]["ns"], SERVICE_NS, "{call}");
            assert_eq!(fault["reason"], DIVIDE_BY_ZERO_REASON, "{call}");
            assert_eq!(fault["detail"], recorded["fault"]["detail"], "{call}");
            if binding == Binding::NetTcp {
                assert_eq!(
                    fault["action"],
                    "http://interop.example/calc/2024/ICalculator/SafeDivideCalcFaultFault",
                    "{call}"
                );
            }
        }
        "Fail" => {
            assert_eq!(fault["type"], "FaultException", "{call}");
            assert_eq!(fault["reason"], "boom ✗", "{call}");
            match binding {
                Binding::NetTcp => assert_eq!(fault["code"]["is_sender"], true, "{call}"),
                // SOAP 1.1's Client, which Mono's FaultCode does not count as a sender code.
                Binding::Basic => {
                    assert_eq!(fault["code"]["name"], "Client", "{call}");
                    assert_eq!(
                        fault["code"]["ns"], "http://schemas.xmlsoap.org/soap/envelope/",
                        "{call}"
                    );
                }
            }
        }
        "Crash" => {
            assert_eq!(fault["type"], "FaultException", "{call}");
            assert_eq!(fault["reason"], INTERNAL_ERROR_REASON, "{call}");
            let internal = match binding {
                Binding::NetTcp => {
                    assert_eq!(fault["code"]["is_receiver"], true, "{call}");
                    &fault["code"]["subcode"]
                }
                Binding::Basic => &fault["code"],
            };
            assert_eq!(internal["name"], "InternalServiceFault", "{call}");
            assert_eq!(internal["ns"], DISPATCHER_NS, "{call}");
        }
        other => panic!("unexpected fault from {other}: {call}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_nettcp_client_to_the_host_over_tcp() {
    let (host, addr) = tcp_host().await;
    let lines = mono_client(&[
        "nettcp".into(),
        format!("net.tcp://127.0.0.1:{}/calc", addr.port()),
    ])
    .await;
    check_mono_calls(&lines, None, Binding::NetTcp);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mono_nettcp_clients_at_once() {
    let (host, addr) = tcp_host().await;
    let lines = mono_client(&[
        "nettcp".into(),
        format!("net.tcp://127.0.0.1:{}/calc", addr.port()),
        "-".into(),
        "--clients".into(),
        "2".into(),
    ])
    .await;
    let drained: BTreeSet<String> = (0..2)
        .flat_map(|c| check_mono_calls(&lines, Some(c), Binding::NetTcp))
        .collect();
    // Each client drains after its own Notify was served, so between them they see all four
    // (one store for every session, as the recorded service's).
    let expected: BTreeSet<String> = (0..2)
        .flat_map(|c| {
            [
                format!("first one-way #{c}"),
                format!("second: ünïcödé ✓ #{c}"),
            ]
        })
        .collect();
    assert_eq!(drained, expected);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_basic_http_client_through_the_gateway_http_relay() {
    let (gw, host) = relayed_host("calc").await;
    let addr = gw.gw.plain_addr().expect("plain port");
    let lines = mono_client(&[
        "basic".into(),
        format!("http://127.0.0.1:{}/calc", addr.port()),
        token(&gw, "calc"),
    ])
    .await;
    check_mono_calls(&lines, None, Binding::Basic);
    host.shutdown().await;
    gw.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_nettcp_client_through_the_gateway_nettcp_front_end() {
    let (gw, host) = relayed_host("calc").await;
    let addr = gw.gw.nettcp_addr().expect("net.tcp port");
    // Via and To name the gateway, which the host neither owns nor filters on; the token goes
    // in the RelayAccessToken header of every message.
    let lines = mono_client(&[
        "nettcp".into(),
        format!("net.tcp://127.0.0.1:{}/calc", addr.port()),
        token(&gw, "calc"),
    ])
    .await;
    check_mono_calls(&lines, None, Binding::NetTcp);
    host.shutdown().await;
    gw.gw.shutdown().await;
}

/// Accepts every rendezvous on `path` and joins it to a new TCP connection to `host`, the way
/// `ferry bridge remote` would; every byte the gateway sends towards the host is kept in
/// `seen`.
async fn recording_bridge(gw: &TestGateway, path: &str, host: SocketAddr) -> Arc<Mutex<Vec<u8>>> {
    let mut listener = ferry_sdk::Listener::open(gw.endpoint(path))
        .await
        .expect("bridge listener opens");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let Ok(relayed) = incoming.accept().await else {
                    return;
                };
                let Ok(tcp) = tokio::net::TcpStream::connect(host).await else {
                    return;
                };
                let (mut relayed_rd, mut relayed_wr) = tokio::io::split(relayed);
                let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = relayed_rd.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record
                            .lock()
                            .expect("not poisoned")
                            .extend_from_slice(&buf[..n]);
                        if tcp_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = tcp_wr.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut tcp_rd, &mut relayed_wr).await;
                    let _ = relayed_wr.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_nettcp_client_credentials_never_reach_the_listener() {
    let gw = TestGateway::start().await;
    let (host, host_addr) = tcp_host().await;
    let seen = recording_bridge(&gw, "calc", host_addr).await;
    let port = gw.gw.nettcp_addr().expect("net.tcp port").port();
    let token = token(&gw, "calc");
    // The token on the address (so on the Via and in the To of every message) and in the
    // RelayAccessToken header of every message: every place a WCF client puts one.
    let address = format!(
        "net.tcp://127.0.0.1:{port}/calc?x=1&sb-hc-token={}",
        ferry_hc::address::encode_query_value(&token)
    );
    let lines = mono_client(&["nettcp".into(), address, token.clone()]).await;
    check_mono_calls(&lines, None, Binding::NetTcp);

    let seen = seen.lock().expect("not poisoned").clone();
    assert!(seen.len() > 10_000, "the sessions went through the bridge");
    let signature = token
        .split("sig=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("a signature");
    let base64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(token.as_bytes())
    };
    for form in [
        signature.to_owned(),
        ferry_hc::address::encode_query_value(signature),
        base64,
        "sb-hc-token".to_owned(),
        "RelayAccessToken".to_owned(),
    ] {
        assert!(
            !seen.windows(form.len()).any(|w| w == form.as_bytes()),
            "the listener received the sender's credentials ({form})"
        );
    }
    host.shutdown().await;
    gw.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynettcp_client_to_the_host_over_tcp() {
    require_tool("python3", "python3");
    let (host, addr) = tcp_host().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pynettcp/calc_client.py");
    let wsdl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wsdl/calculator");
    let check = std::process::Command::new("python3")
        .args(["-c", "import pynettcp"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        check,
        "PyPI pynettcp is not installed: run scripts/test.sh, which installs interop/requirements.txt"
    );
    let child = Command::new("python3")
        .arg(&script)
        .arg(format!("net.tcp://127.0.0.1:{}/calc", addr.port()))
        .arg(&wsdl)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let (ok, out) = finish(child).await;
    assert!(ok, "pynettcp client failed:\n{out}");
    let lines = json_lines(&out);
    assert_eq!(
        lines.last(),
        Some(&serde_json::json!({"done": true})),
        "{out}"
    );
    let by_op = |op: &str| -> Vec<&Value> { lines.iter().filter(|l| l["op"] == op).collect() };
    let results = |op: &str| -> Vec<&Value> {
        by_op(op)
            .into_iter()
            .map(|l| {
                assert_eq!(l["outcome"], "result", "{l}");
                &l["result"]
            })
            .collect()
    };
    assert_eq!(results("Add"), [5, -2147483648, 2]);
    let divide = results("Divide");
    assert_eq!(divide[0].as_f64(), Some(1.0 / 3.0));
    assert_eq!(divide[1], "Infinity");
    assert_eq!(
        results("Echo"),
        [
            &Value::from("echo:Grüße, 世界! Привет 🚀 <&>\"'"),
            &Value::Null
        ]
    );
    let bytes = results("ReverseBytes");
    for (value, n) in bytes.iter().zip([16, 1024 * 1024]) {
        assert_eq!(
            value["$bytes"]["len"], n,
            "pynettcp reads our whole byte array"
        );
        assert_eq!(value["$bytes"]["sha256"], reversed_pattern_sha256(n));
    }
    let summary = results("SubmitOrder")[0];
    let recorded = recorded_calls()
        .into_iter()
        .find(|r| r["op"] == "SubmitOrder")
        .expect("recorded order");
    // pynettcp types a Guid as its text.
    assert_eq!(
        summary["Reference"],
        recorded["result"]["Reference"]["$guid"]
    );
    for member in [
        "OrderId",
        "CustomerUpper",
        "LineCount",
        "TotalQuantity",
        "Total",
        "Skus",
        "ShipTo",
        "Express",
    ] {
        assert!(
            same(&summary[member], &recorded["result"][member]),
            "{member}: {} vs recorded {}",
            summary[member],
            recorded["result"][member]
        );
    }
    assert_eq!(by_op("Notify")[0]["outcome"], "sent");
    assert_eq!(
        results("GetNotifications")[0],
        &serde_json::json!(["pynettcp one-way ✓"])
    );
    let nope = &by_op("Nope")[0];
    assert_eq!(nope["outcome"], "fault", "{nope}");
    assert_eq!(nope["fault"]["code"], "s:Sender", "{nope}");
    assert_eq!(nope["fault"]["subcode"], "a:ActionNotSupported", "{nope}");
    let fault = &by_op("SafeDivide")[0]["fault"];
    assert_eq!(fault["reason"], DIVIDE_BY_ZERO_REASON);
    assert_eq!(fault["detail_name"], "CalcFault");
    assert_eq!(
        fault["detail"],
        serde_json::json!({"Operation": "SafeDivide", "ProblemType": "Division by zero", "Code": 4242})
    );
    assert_eq!(by_op("Fail")[0]["fault"]["reason"], "boom ✗");
    assert_eq!(by_op("Crash")[0]["fault"]["reason"], INTERNAL_ERROR_REASON);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_clients_through_the_relay() {
    let (gw, host) = relayed_host("calc").await;
    // net.tcp over a relayed stream (ferry_sdk::connect to the SDK listener).
    let mut endpoint = gw.endpoint("calc");
    endpoint.set_max_message_size(QUOTA);
    let stream = ferry_sdk::connect(&endpoint, &[])
        .await
        .expect("relayed connection");
    let mut config = ChannelConfig::default();
    config.set_max_message_size(QUOTA);
    let channel = NetTcpChannel::open(stream, "net.tcp://localhost/calc", config)
        .await
        .expect("session opens");
    let client = CalculatorClient::new(channel);
    calls(&client, "relayed net.tcp").await;
    client.transport().close().await.expect("End handshake");

    // basicHttp through the gateway's HTTP relay.
    let addr = gw.gw.plain_addr().expect("plain port");
    let mut channel =
        BasicHttpChannel::new(&format!("http://127.0.0.1:{}/calc", addr.port())).expect("url");
    channel
        .set_max_message_size(QUOTA)
        .set_header("ServiceBusAuthorization", &token(&gw, "calc"))
        .expect("header");
    calls(&CalculatorClient::new(channel), "relayed basicHttp").await;
    host.shutdown().await;
    gw.gw.shutdown().await;
}

/// A few calls of each kind (values, a 1 MiB array each way, the typed fault) and the rate of
/// small calls.
async fn calls<T: ferry_wcf::Transport>(client: &CalculatorClient<T>, what: &str)
where
    T::Error: std::fmt::Debug,
{
    let within = |f| tokio::time::timeout(PEER_TIMEOUT, f);
    let echo = within(client.echo(Echo {
        text: Some("ünïcödé".into()),
    }))
    .await
    .expect("in time")
    .expect("echo");
    assert_eq!(echo.echo_result.as_deref(), Some("echo:ünïcödé"));
    let data: Vec<u8> = (0..1024 * 1024)
        .map(|i| ((i * 31 + 7) & 0xff) as u8)
        .collect();
    let reversed = client
        .reverse_bytes(ReverseBytes { data: data.clone() })
        .await
        .expect("1 MiB each way")
        .reverse_bytes_result;
    assert!(reversed.iter().eq(data.iter().rev()));
    match client.safe_divide(SafeDivide { a: 1, b: 0 }).await {
        Err(CallError::Fault(f)) => assert!(matches!(
            f.detail,
            Some(SafeDivideFault::CalcFault(ref d)) if d.code == 4242
        )),
        other => panic!("typed fault expected: {other:?}"),
    }
    let n = 200;
    let started = Instant::now();
    for i in 0..n {
        let sum = client
            .add(Add { a: i, b: 1 })
            .await
            .expect("add")
            .add_result;
        assert_eq!(sum, i + 1);
    }
    let elapsed = started.elapsed();
    println!(
        "{what}: {n} sequential Add calls in {elapsed:.2?} ({:.0} calls/s)",
        f64::from(n) / elapsed.as_secs_f64()
    );
    assert!(elapsed < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_clients_on_one_cluster_node_reach_a_rust_wcf_listener_on_another() {
    let c = TestCluster::start(2).await;
    let host = host_on(c.endpoint(0, "calc")).await;
    c.wait_listeners("calc", 1).await;
    let (name, key) = c.rule();
    let token = ferry_hc::SasToken::create("http://localhost/calc", name, key, now() + 3600);
    // NetTcpBinding through node 1's net.tcp front end: the session's rendezvous is on node 1.
    let nettcp = c.node(1).nettcp_addr().expect("net.tcp port").port();
    let lines = mono_client(&[
        "nettcp".into(),
        format!("net.tcp://127.0.0.1:{nettcp}/calc"),
        token.clone(),
    ])
    .await;
    check_mono_calls(&lines, None, Binding::NetTcp);
    // BasicHttpBinding through node 1's HTTP port: each request goes rendezvous-only.
    let http = c.node(1).plain_addr().expect("plain port").port();
    let lines = mono_client(&[
        "basic".into(),
        format!("http://127.0.0.1:{http}/calc"),
        token,
    ])
    .await;
    check_mono_calls(&lines, None, Binding::Basic);
    host.shutdown().await;
    c.shutdown().await;
}
