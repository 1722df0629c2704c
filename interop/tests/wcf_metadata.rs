//! Real client tools against the metadata the Rust listener publishes through the gateway
//! (`ferry_wcf::calc::metadata` on a `Host` and a `BasicHttp` behind one SDK listener on
//! path `calc/tcp`):
//!
//! - PyPI pynettcp's codegen (`python -m pynettcp.codegen`) from `?wsdl` through the HTTP
//!   relay, and from the mex endpoint (`net.tcp://…/calc/tcp/mex`) through the net.tcp front
//!   end; each generated client then calls the service at the address the metadata named;
//! - Mono's metadata import without svcutil (`interop/mono/MetadataImport.cs`:
//!   `MetadataExchangeClient` + `WsdlImporter`, then a `ChannelFactory` on each imported
//!   endpoint), since Mono's `svcutil` writes an empty client even for Mono's own service
//!   (FINDINGS §1).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ferry_gateway::{Config, Gateway, PathConfig, RunningGateway};
use ferry_interop::{finish, mono, require_tool};
use ferry_sdk::http::{HttpConfig, HttpListener};
use ferry_sdk::{Endpoint, SasKeyProvider};
use ferry_wcf::calc::{Calc, DIVIDE_BY_ZERO_CODE, DIVIDE_BY_ZERO_REASON};
use ferry_wcf::generated::calculator::CalculatorServer;
use ferry_wcf::{BasicHttp, Host, HostConfig};
use serde_json::Value;
use tokio::process::Command;

/// Longest any one test may take.
const LIMIT: Duration = Duration::from_secs(120);

/// A gateway with the anonymous path `calc/tcp` served by the Rust calculator over net.tcp
/// and basicHttp, publishing its metadata with the gateway's public addresses (the relay
/// drops the Host header, so the listener is told them).
async fn rust_listener() -> RunningGateway {
    let mut config = Config::dev();
    config.paths = vec![PathConfig {
        anonymous_senders: true,
        ..PathConfig::new("calc/tcp")
    }];
    let gw = Gateway::start(config).await.expect("gateway");
    let http = gw.plain_addr().expect("plain port");
    let nettcp = gw.nettcp_addr().expect("net.tcp port");
    let mut endpoint = Endpoint::new(&format!("ws://{http}"), "calc/tcp").expect("endpoint");
    endpoint.set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    let listener = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .expect("listener");
    let (listener, requests) = listener.into_parts();
    let mut metadata = ferry_wcf::calc::metadata();
    metadata
        .set_public_base(&format!("http://{http}"))
        .and_then(|m| m.set_public_base(&format!("net.tcp://{nettcp}")))
        .expect("public bases");
    let mut host_config = HostConfig::default();
    host_config.set_metadata(metadata);
    let service = Arc::new(CalculatorServer(Calc::new()));
    let host = Host::with_config(Arc::clone(&service), host_config.clone());
    tokio::spawn(async move { host.serve_listener(listener).await });
    tokio::spawn(BasicHttp::with_config(service, host_config).serve(requests));
    gw
}

fn require_pynettcp() {
    require_tool("python3", "python3");
    let installed = std::process::Command::new("python3")
        .args(["-c", "import pynettcp.codegen"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "PyPI pynettcp is not installed: run scripts/test.sh, which installs interop/requirements.txt"
    );
}

/// Runs pynettcp's codegen on `uri`, then the generated client
/// (`interop/pynettcp/generated_client.py`); returns codegen's summary line and the
/// client's JSON line.
async fn pynettcp_codegen(uri: &str) -> (String, Value) {
    require_pynettcp();
    let dir = tempfile::tempdir().expect("temp dir");
    let client = dir.path().join("calc_client.py");
    let codegen = Command::new("python3")
        .args(["-m", "pynettcp.codegen", uri, "-o"])
        .arg(&client)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LIMIT, codegen)
        .await
        .expect("codegen finished in time")
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pynettcp codegen failed on {uri}:\n{stderr}"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pynettcp/generated_client.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(&client)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let (ok, stdout) = finish(child).await;
    assert!(ok, "the generated client failed:\n{stdout}");
    let line = stdout.lines().last().unwrap_or_default();
    let result = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (stderr.trim().to_owned(), result)
}

/// What the generated client saw: the service at `address`, its answers and typed fault.
fn check_generated_client(result: &Value, address: &str) {
    assert_eq!(result["address"], address, "{result}");
    assert_eq!(result["add"], 5, "{result}");
    assert_eq!(result["echo"], "echo:through the gateway", "{result}");
    let fault = &result["fault"];
    assert_eq!(fault["reason"], DIVIDE_BY_ZERO_REASON, "{result}");
    assert_eq!(fault["detail_name"], "CalcFault", "{result}");
    assert_eq!(fault["code"], DIVIDE_BY_ZERO_CODE, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynettcp_codegen_reads_the_wsdl_through_the_gateway() {
    tokio::time::timeout(LIMIT, async {
        let gw = rust_listener().await;
        let http = gw.plain_addr().expect("plain port");
        let nettcp = gw.nettcp_addr().expect("net.tcp port");
        let (summary, result) = pynettcp_codegen(&format!("http://{http}/calc/tcp?wsdl")).await;
        // The ten operations; the six data contracts and the fault detail Mono's WSDL lacks.
        assert!(summary.ends_with("10 operation(s), 7 type(s)"), "{summary}");
        check_generated_client(&result, &format!("net.tcp://{nettcp}/calc/tcp"));
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynettcp_codegen_reads_mex_through_the_gateway() {
    tokio::time::timeout(LIMIT, async {
        let gw = rust_listener().await;
        let nettcp = gw.nettcp_addr().expect("net.tcp port");
        // pynettcp appends /mex; the gateway routes calc/tcp/mex to the calc/tcp listener.
        // (Against Mono this fails: its mex answer is empty, FINDINGS §15.)
        let service = format!("net.tcp://{nettcp}/calc/tcp");
        let (summary, result) = pynettcp_codegen(&service).await;
        assert!(summary.ends_with("10 operation(s), 7 type(s)"), "{summary}");
        check_generated_client(&result, &service);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mono_imports_the_wsdl_through_the_gateway() {
    tokio::time::timeout(LIMIT, async {
        let gw = rust_listener().await;
        let http = gw.plain_addr().expect("plain port");
        let exe = mono::compile("MetadataImport", &["MetadataImport.cs", "CalcContract.cs"]);
        let wsdl = format!("http://{http}/calc/tcp?wsdl");
        let (ok, out) = finish(mono::run(&exe, &[wsdl])).await;
        println!("{out}");
        assert!(ok, "MetadataImport failed:\n{out}");
        let lines: Vec<Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let endpoint = |binding: &str| {
            lines
                .iter()
                .find(|l| l["binding"] == binding)
                .unwrap_or_else(|| panic!("no {binding} endpoint imported:\n{out}"))
        };
        let nettcp = gw.nettcp_addr().expect("net.tcp port");
        for (binding, address) in [
            ("NetTcpBinding", format!("net.tcp://{nettcp}/calc/tcp")),
            ("BasicHttpBinding", format!("http://{http}/calc/tcp")),
        ] {
            let e = endpoint(binding);
            assert_eq!(e["address"], address, "{out}");
            assert_eq!(e["add"], 5, "{out}");
        }
    })
    .await
    .expect("test timed out");
}
