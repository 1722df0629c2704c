//! Every recording replays against the Rust listener: the calculator generated from the
//! recorded WSDL (`ferry_wcf::calc`), hosted on an SDK listener behind an in-process gateway.
//! net.tcp recordings go through the gateway's net.tcp port, http-basic through its HTTP
//! relay, exactly as a WCF client reaches the listener. The recordings come from Mono, and
//! where Mono departs from .NET (FINDINGS.md) the Rust listener does what .NET does: those
//! answers are reported as `known` with their FINDINGS section, everything else must match.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{LIMIT, recording, replay_with};
use ferry_gateway::{Config, Gateway, PathConfig, RunningGateway};
use ferry_sdk::http::{HttpConfig, HttpListener};
use ferry_sdk::{Endpoint, SasKeyProvider};
use ferry_wcf::basic_http::BasicHttp;
use ferry_wcf::calc::Calc;
use ferry_wcf::generated::calculator::CalculatorServer;
use ferry_wcf::host::Host;

/// A gateway with an anonymous path `calc/tcp` served by the Rust calculator over net.tcp
/// and basicHttp (one calculator behind both, as the recorded service).
async fn rust_listener() -> RunningGateway {
    let mut config = Config::dev();
    config.paths = vec![PathConfig {
        anonymous_senders: true,
        ..PathConfig::new("calc/tcp")
    }];
    let gw = Gateway::start(config).await.expect("gateway");
    let addr = gw.plain_addr().expect("plain port");
    let mut endpoint = Endpoint::new(&format!("ws://{addr}"), "calc/tcp").expect("endpoint");
    endpoint.set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    let listener = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .expect("listener");
    let (listener, requests) = listener.into_parts();
    let service = Arc::new(CalculatorServer(Calc::new()));
    let host = Host::new(Arc::clone(&service));
    let http = BasicHttp::new(service);
    tokio::spawn(async move { host.serve_listener(listener).await });
    tokio::spawn(http.serve(requests));
    gw
}

async fn replays_cleanly(name: &str, to: impl Fn(&RunningGateway) -> String) {
    tokio::time::timeout(LIMIT, async {
        let gw = rust_listener().await;
        // The recordings were made against Mono; the Rust listener behaves like .NET where
        // the two differ, so Mono's documented deviations are named, not counted.
        let (ok, report) = replay_with(&recording(name), &to(&gw), &["--mono-quirks"]).await;
        eprintln!("{report}");
        assert!(
            ok,
            "{name} did not replay cleanly against the Rust listener:\n{report}"
        );
        assert!(report.contains(" 0 differ"), "{report}");
    })
    .await
    .expect("test timed out");
}

fn nettcp(gw: &RunningGateway) -> String {
    format!(
        "net.tcp://{}/calc/tcp",
        gw.nettcp_addr().expect("net.tcp port")
    )
}

#[tokio::test]
async fn tcp_session_replays_against_the_rust_listener() {
    replays_cleanly("tcp-session", nettcp).await;
}

#[tokio::test]
async fn tcp_oneway_replays_against_the_rust_listener() {
    replays_cleanly("tcp-oneway", nettcp).await;
}

#[tokio::test]
async fn tcp_fault_replays_against_the_rust_listener() {
    replays_cleanly("tcp-fault", nettcp).await;
}

#[tokio::test]
async fn http_basic_replays_against_the_rust_listener() {
    replays_cleanly("http-basic", |gw| {
        format!("http://{}/calc/tcp", gw.plain_addr().expect("plain port"))
    })
    .await;
}

#[tokio::test]
async fn mono_quirks_do_not_hide_a_changed_fault_detail() {
    tokio::time::timeout(LIMIT, async {
        // The tcp-fault recording with the typed fault's detail Code changed from 4242 to
        // 4243 (Int16Text `8b 92 10` → `8b 93 10`): the only typed-fault content the quirks
        // leave alone must still be compared.
        let dir = tempfile::tempdir().expect("temp dir");
        for entry in std::fs::read_dir(recording("tcp-fault")).expect("recording") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().expect("name")))
                    .expect("copy");
            }
        }
        let s2c = dir.path().join("server_to_client.bin");
        let mut bytes = std::fs::read(&s2c).expect("read");
        let at = bytes
            .windows(3)
            .position(|w| w == [0x8b, 0x92, 0x10])
            .expect("the recorded detail code 4242");
        bytes[at + 1] = 0x93;
        std::fs::write(&s2c, bytes).expect("write");
        let gw = rust_listener().await;
        let (ok, report) = replay_with(dir.path(), &nettcp(&gw), &["--mono-quirks"]).await;
        assert!(!ok, "the replay passed:\n{report}");
        let diffs: Vec<&str> = report.lines().filter(|l| l.contains("DIFF")).collect();
        assert_eq!(diffs.len(), 1, "{report}");
        assert!(diffs[0].contains("SafeDivide"), "{report}");
        assert!(
            diffs[0].contains("4242") && diffs[0].contains("4243"),
            "{report}"
        );
    })
    .await
    .expect("test timed out");
}
