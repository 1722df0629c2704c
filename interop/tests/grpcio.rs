//! gRPC through the relay against grpcio (gRPC C-core, from PyPI), an independent
//! implementation: a grpcio client calls a tonic service through the gateway's ingress (h2c
//! and h2 over TLS); tonic and grpcio clients call a grpcio server behind the listener-side
//! forwarder (`ferry listen --grpc-to`); h2load (nghttp2) drives load through the ingress.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ferry_gateway::GrpcRoute;
use ferry_grpc::echo::EchoService;
use ferry_grpc::echo::pb::echo_client::EchoClient;
use ferry_grpc::echo::pb::echo_server::EchoServer;
use ferry_grpc::echo::pb::{EchoRequest, StreamRequest};
use ferry_interop::cluster::TestCluster;
use ferry_interop::{PEER_TIMEOUT, TestGateway, finish, require_tool, wait_for_line};
use ferry_sdk::bridge::RemoteConfig;
use ferry_sdk::{Listener, SasKeyProvider, TokenProvider as _};
use prost::Message as _;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const SERVICE: &str = "ferry.example.v1.Echo";

fn grpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc")
}

/// Fails the test unless grpcio, grpcio-tools and grpcio-status are importable.
fn require_grpcio() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, google.rpc.status_pb2"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "grpcio is not installed: run scripts/test.sh, which installs interop/requirements.txt"
    );
}

fn python(script: &str, args: &[String]) -> Child {
    require_grpcio();
    Command::new("python3")
        .arg(script)
        .args(args)
        .current_dir(grpc_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts")
}

fn token(tg: &TestGateway, path: &str) -> String {
    SasKeyProvider::new(
        tg.gw.rule_name(),
        tg.gw.rule_key(),
        Duration::from_secs(3600),
    )
    .token(&format!("http://localhost/{path}"))
    .expect("token")
    .text
}

/// Serves the tonic echo service on `path` until `stop` is cancelled.
async fn serve_tonic(tg: &TestGateway, path: &str, stop: &CancellationToken) {
    let listener = Listener::open(tg.endpoint(path)).await.expect("listener");
    let server = tonic::transport::Server::builder()
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(
            ferry_grpc::incoming(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);
}

/// Runs client.py with `args`, returning its checks by name.
async fn grpcio_client(args: Vec<String>) -> serde_json::Map<String, Value> {
    let (ok, out) = finish(python("client.py", &args)).await;
    assert!(ok, "client.py failed (its stderr is above); stdout: {out}");
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .map(|v| (v["check"].as_str().expect("check").to_owned(), v))
        .collect()
}

/// client.py's arguments for a call to the `echo` path, routed by `ferry-path` metadata.
fn to_echo(token: String) -> Vec<String> {
    vec!["--token".into(), token, "--path".into(), "echo".into()]
}

/// The checks every run of client.py must pass, whatever is behind the relay.
fn assert_checks(r: &serde_json::Map<String, Value>) {
    let u = &r["unary"];
    assert_eq!(
        (u["payload"].as_str(), u["message"].as_str()),
        (Some("ping"), Some("héllo"))
    );
    assert_eq!(u["trace"], "trace-7", "ascii metadata came back: {u}");
    assert_eq!(
        u["blob"],
        serde_json::json!([0, 255, 1]),
        "binary metadata came back: {u}"
    );
    let s = &r["server_stream"];
    assert_eq!(
        (
            s["count"].as_u64(),
            s["sequences_ok"].as_bool(),
            s["sizes_ok"].as_bool()
        ),
        (Some(100), Some(true), Some(true)),
        "{s}"
    );
    let c = &r["client_stream"];
    assert_eq!(
        (c["count"].as_u64(), c["received"].as_u64()),
        (Some(100), Some(1_000_000)),
        "{c}"
    );
    assert_eq!(
        r["bidi"]["replies"],
        serde_json::json!((0..25).collect::<Vec<_>>())
    );
    let e = &r["error"];
    assert_eq!(e["code"], "ALREADY_EXISTS", "{e}");
    assert_eq!(e["message"], "order 42 exists", "{e}");
    assert_eq!(
        e["detail_code"], 6,
        "the details (google.rpc.Status) survived: {e}"
    );
    assert_eq!(e["order"], "42", "trailing metadata survived: {e}");
    let d = &r["deadline"];
    assert_eq!(d["code"], "DEADLINE_EXCEEDED", "{d}");
    assert!(d["seconds"].as_f64().is_some_and(|s| s < 2.0), "{d}");
    assert_eq!(r["large"]["same"], true);
    assert_eq!(r["cancel"]["code"], "CANCELLED");
    assert_eq!(r["after"]["payload"], "after");
}

#[tokio::test]
async fn grpcio_client_calls_a_tonic_listener_through_the_ingress() {
    let tg =
        TestGateway::start_with(|c| c.grpc_routes = vec![GrpcRoute::new(SERVICE, "echo")]).await;
    let stop = CancellationToken::new();
    serve_tonic(&tg, "echo", &stop).await;
    let token = token(&tg, "echo");

    // h2 over TLS (ALPN), routed by the service name.
    let tls = tg.gw.tls_addr().expect("tls port").port();
    let ca = tg.ca_file.display().to_string();
    let r = grpcio_client(vec![
        format!("localhost:{tls}"),
        "--tls".into(),
        ca,
        "--token".into(),
        token.clone(),
    ])
    .await;
    assert_checks(&r);

    // h2c, routed by ferry-path metadata.
    let plain = tg.gw.plain_addr().expect("plain port");
    let r = grpcio_client([vec![plain.to_string()], to_echo(token)].concat()).await;
    assert_checks(&r);
    assert_eq!(
        tg.gw.grpc_connections(),
        1,
        "all calls shared one relayed connection"
    );
    stop.cancel();
}

#[tokio::test]
async fn tonic_and_grpcio_clients_reach_a_grpcio_server_behind_the_forwarder() {
    let tg = TestGateway::start().await;
    let mut server = python("server.py", &[]);
    let line = wait_for_line(&mut server, "listening ").await;
    let port = line.trim_start_matches("listening ").trim().to_owned();
    // What `ferry listen --grpc-to http://127.0.0.1:PORT grpcio` runs.
    let stop = CancellationToken::new();
    let config = RemoteConfig::new(tg.endpoint("grpcio"), Some(format!("127.0.0.1:{port}")));
    let forwarder = tokio::spawn(ferry_sdk::bridge::run_remote(config, stop.clone()));
    for _ in 0..100 {
        if tg.gw.listener_count("grpcio") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // grpcio → gateway ingress → forwarder → grpcio.
    let plain = tg.gw.plain_addr().expect("plain port");
    let r = grpcio_client(vec![
        plain.to_string(),
        "--token".into(),
        token(&tg, "grpcio"),
        "--path".into(),
        "grpcio".into(),
    ])
    .await;
    assert_checks(&r);

    // tonic over a sender connection → forwarder → grpcio.
    let channel = ferry_grpc::channel(tg.endpoint("grpcio"))
        .await
        .expect("channel");
    let mut client = EchoClient::new(channel);
    let reply = client
        .unary(EchoRequest {
            payload: b"from tonic".to_vec(),
            ..EchoRequest::default()
        })
        .await
        .expect("unary");
    assert_eq!(reply.into_inner().payload, b"from tonic");
    let status = client
        .unary(EchoRequest {
            fail_code: 9,
            message: "precondition".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let detail = ferry_grpc::echo::error_detail(&status).expect("grpcio's details decode");
    assert_eq!(detail.code, 9);
    let mut stream = client
        .server_stream(StreamRequest {
            count: 500,
            size: 4096,
            interval_ms: 0,
            fail_code: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    while let Some(reply) = stream.message().await.expect("stream message") {
        assert_eq!(reply.sequence, n);
        n += 1;
    }
    assert_eq!(n, 500);
    stop.cancel();
    let _ = tokio::time::timeout(PEER_TIMEOUT, forwarder).await;
}

#[tokio::test]
async fn h2load_drives_load_through_the_ingress() {
    require_tool("h2load", "nghttp2-client");
    let tg =
        TestGateway::start_with(|c| c.grpc_routes = vec![GrpcRoute::new(SERVICE, "echo")]).await;
    let stop = CancellationToken::new();
    serve_tonic(&tg, "echo", &stop).await;
    // One gRPC message: flag 0, length, an EchoRequest with 16 bytes of payload.
    let message = EchoRequest {
        payload: vec![b'x'; 16],
        ..EchoRequest::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("unary.bin");
    std::fs::write(&body, frame).expect("write body");
    let addr = tg.gw.plain_addr().expect("plain port");
    let out = tokio::time::timeout(
        PEER_TIMEOUT,
        Command::new("h2load")
            .args(["-n", "20000", "-c", "4", "-m", "32", "-d"])
            .arg(&body)
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-H")
            .arg(format!("authorization: {}", token(&tg, "echo")))
            .arg(format!("http://{addr}/{SERVICE}/Unary"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("h2load finished in time")
    .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "h2load failed: {text}");
    assert!(
        text.contains(
            "requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored"
        ),
        "every call succeeded: {text}"
    );
    assert!(text.contains("status codes: 20000 2xx"), "{text}");
    assert_eq!(tg.gw.grpc_connections(), 1);
    stop.cancel();
}

#[tokio::test]
async fn grpcio_client_on_one_cluster_node_calls_a_tonic_listener_on_another() {
    let c = TestCluster::start(2).await;
    let listener = Listener::open(c.endpoint(0, "echo"))
        .await
        .expect("listener on node 0");
    let stop = CancellationToken::new();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming_shutdown(
                ferry_grpc::incoming(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    c.wait_listeners("echo", 1).await;
    let (name, key) = c.rule();
    let token = SasKeyProvider::new(name, key, Duration::from_secs(3600))
        .token("http://localhost/echo")
        .expect("token")
        .text;
    // Node 1 keeps its own relayed HTTP/2 connection to the listener on node 0, opened on
    // node 1; the call's path comes in `ferry-path` metadata.
    let port = c.node(1).tls_addr().expect("tls port").port();
    let ca = c.tls.ca_file.display().to_string();
    let target = vec![format!("localhost:{port}"), "--tls".into(), ca];
    let r = grpcio_client([target, to_echo(token)].concat()).await;
    assert_checks(&r);
    stop.cancel();
    c.shutdown().await;
}
