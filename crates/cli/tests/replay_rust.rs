//! Every recording replays against the Rust listener: the calculator generated from the
//! recorded WSDL (`ferry_wcf::calc`), hosted on an SDK listener behind an in-process gateway,
//! publishing its metadata (`ferry_wcf::calc::metadata`). net.tcp recordings go through the
//! gateway's net.tcp port, the HTTP ones through its HTTP relay, exactly as a WCF client
//! reaches the listener. The recordings come from Mono, and where Mono departs from .NET
//! (FINDINGS.md) the Rust listener does what .NET does: those answers are reported as `known`
//! with their FINDINGS section, everything else must match; a changed answer still fails, and
//! so does a right answer whose `RelatesTo` names another message.
//!
//! Addressing behind the gateway: one path (`calc/tcp`) is the whole service. Its WSDL is at
//! `http://GATEWAY/calc/tcp?wsdl` and names both endpoints on that path (the HTTP relay and
//! the net.tcp port); its mex endpoint is `net.tcp://GATEWAY/calc/tcp/mex`, which the gateway
//! routes to the same listener (paths match by prefix) and the host answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{LIMIT, recording, replay_with};
use ferry_gateway::{Config, Gateway, PathConfig, RunningGateway};
use ferry_nmf::{Event, Session};
use ferry_sdk::http::{HttpConfig, HttpListener};
use ferry_sdk::{Endpoint, SasKeyProvider};
use ferry_soap::BinarySession;
use ferry_wcf::basic_http::BasicHttp;
use ferry_wcf::calc::Calc;
use ferry_wcf::generated::calculator::CalculatorServer;
use ferry_wcf::host::{Host, HostConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    // The relay drops the Host header: the metadata names the gateway's public addresses.
    let mut metadata = ferry_wcf::calc::metadata();
    metadata
        .set_public_base(&format!("http://{addr}"))
        .and_then(|m| m.set_public_base(&nettcp_base(&gw)))
        .expect("public bases");
    let mut config = HostConfig::default();
    config.set_metadata(metadata);
    let service = Arc::new(CalculatorServer(Calc::new()));
    let host = Host::with_config(Arc::clone(&service), config.clone());
    let http = BasicHttp::with_config(service, config);
    tokio::spawn(async move { host.serve_listener(listener).await });
    tokio::spawn(http.serve(requests));
    gw
}

async fn replays_cleanly(name: &str, to: impl Fn(&RunningGateway) -> String) {
    replays_cleanly_with(name, to, |_| Vec::new()).await;
}

/// [`replays_cleanly`] with more `ferry replay` arguments.
async fn replays_cleanly_with(
    name: &str,
    to: impl Fn(&RunningGateway) -> String,
    extra: impl Fn(&RunningGateway) -> Vec<String>,
) -> String {
    tokio::time::timeout(LIMIT, async {
        let gw = rust_listener().await;
        // The recordings were made against Mono; the Rust listener behaves like .NET where
        // the two differ, so Mono's documented deviations are named, not counted.
        let mut args = vec!["--mono-quirks".to_owned()];
        args.extend(extra(&gw));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, report) = replay_with(&recording(name), &to(&gw), &args).await;
        eprintln!("{report}");
        assert!(
            ok,
            "{name} did not replay cleanly against the Rust listener:\n{report}"
        );
        assert!(report.contains(" 0 differ"), "{report}");
        report
    })
    .await
    .expect("test timed out")
}

fn nettcp_base(gw: &RunningGateway) -> String {
    format!("net.tcp://{}", gw.nettcp_addr().expect("net.tcp port"))
}

fn nettcp(gw: &RunningGateway) -> String {
    format!("{}/calc/tcp", nettcp_base(gw))
}

fn http(gw: &RunningGateway) -> String {
    format!("http://{}/calc/tcp", gw.plain_addr().expect("plain port"))
}

/// The endpoint addresses the recorded WSDL publishes (interop/recordings/README.md) and
/// where the Rust listener has them: both on its one path, through the gateway.
fn endpoint_addresses(gw: &RunningGateway) -> Vec<String> {
    vec![
        "--address".into(),
        format!("http://127.0.0.1:8702/calc/basic={}", http(gw)),
        "--address".into(),
        format!("net.tcp://127.0.0.1:9701/calc/tcp={}", nettcp(gw)),
    ]
}

/// A copy of recording `name` with `from` replaced by `to` (same length, so that sizes and
/// the timeline stay right) in `file`, where it must occur exactly once.
fn patched(name: &str, file: &str, from: &[u8], to: &[u8]) -> tempfile::TempDir {
    assert_eq!(from.len(), to.len(), "a patch keeps the length");
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(recording(name)).expect("recording") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let target = dir.path().join(file);
    let mut bytes = std::fs::read(&target).expect("read");
    let found: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(found.len(), 1, "{from:?} occurs once in {file}");
    bytes[found[0]..found[0] + to.len()].copy_from_slice(to);
    std::fs::write(&target, bytes).expect("write");
    dir
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
    replays_cleanly("http-basic", http).await;
}

#[tokio::test]
async fn http_wsdl_replays_against_the_rust_listener() {
    let report = replays_cleanly_with("http-wsdl", http, endpoint_addresses).await;
    // Mono's WSDL quirks are named: its repeated wsdl:import and missing binding faults
    // (?wsdl), its XML Schema import and missing portType fault (?wsdl=wsdl0), the fault
    // detail type it leaves out (?xsd=xsd2); the other schemas match as they are.
    let known: Vec<&str> = report.lines().filter(|l| l.contains("  known ")).collect();
    assert_eq!(known.len(), 3, "{report}");
    for (line, query) in known.iter().zip(["?wsdl ", "?wsdl=wsdl0", "?xsd=xsd2"]) {
        assert!(
            line.contains(query) && line.contains("FINDINGS §14"),
            "{report}"
        );
    }
    assert!(
        report.contains("6 checked, 6 matched, 0 differ"),
        "{report}"
    );
}

#[tokio::test]
async fn pynettcp_mex_replays_against_the_rust_listener() {
    // pynettcp's codegen asks `{address}/mex`; so does this replay.
    let report = replays_cleanly_with(
        "pynettcp-mex",
        |gw| format!("{}/mex", nettcp(gw)),
        |_| Vec::new(),
    )
    .await;
    assert!(report.contains("FINDINGS §15"), "{report}");
}

#[tokio::test]
async fn without_mono_quirks_the_metadata_differences_show() {
    tokio::time::timeout(LIMIT, async {
        let gw = rust_listener().await;
        let args = endpoint_addresses(&gw);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, report) = replay_with(&recording("http-wsdl"), &http(&gw), &args).await;
        eprintln!("{report}");
        assert!(!ok, "the replay passed:\n{report}");
        assert!(
            report.contains("6 checked, 3 matched, 3 differ"),
            "{report}"
        );
        let (ok, report) = replay_with(
            &recording("pynettcp-mex"),
            &format!("{}/mex", nettcp(&gw)),
            &[],
        )
        .await;
        assert!(!ok, "the replay passed:\n{report}");
        assert!(
            report.contains("Metadata: 6 child elements, recorded 0"),
            "{report}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn mono_quirks_do_not_hide_a_changed_wsdl() {
    tokio::time::timeout(LIMIT, async {
        // The recorded ?wsdl=wsdl0 with SafeDivide's reply action changed: the operation
        // whose missing wsdl:fault §14 sets aside must still compare.
        let dir = patched(
            "http-wsdl",
            "server_to_client.bin",
            b"ICalculator/SafeDivideResponse\"",
            b"ICalculator/SafeDivideRespons3\"",
        );
        let gw = rust_listener().await;
        let mut args = vec!["--mono-quirks".to_owned()];
        args.extend(endpoint_addresses(&gw));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, report) = replay_with(dir.path(), &http(&gw), &args).await;
        eprintln!("{report}");
        assert!(!ok, "the replay passed:\n{report}");
        let diffs: Vec<&str> = report.lines().filter(|l| l.contains("DIFF")).collect();
        assert_eq!(diffs.len(), 1, "{report}");
        assert!(
            diffs[0].contains("?wsdl=wsdl0") && diffs[0].contains("SafeDivideRespons3"),
            "{report}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn mono_quirks_do_not_hide_a_changed_mex_answer() {
    tokio::time::timeout(LIMIT, async {
        // The recorded GetResponse with its Action changed (…/transfer/GetResponse →
        // …/transfer/GetResponsx): §15 sets the metadata sections aside, not the envelope.
        let dir = patched(
            "pynettcp-mex",
            "server_to_client.bin",
            b"transfer/GetResponse",
            b"transfer/GetResponsx",
        );
        let gw = rust_listener().await;
        let to = format!("{}/mex", nettcp(&gw));
        let (ok, report) = replay_with(dir.path(), &to, &["--mono-quirks"]).await;
        eprintln!("{report}");
        assert!(!ok, "the replay passed:\n{report}");
        let diffs: Vec<&str> = report.lines().filter(|l| l.contains("DIFF")).collect();
        assert_eq!(diffs.len(), 1, "{report}");
        assert!(diffs[0].contains("GetResponsx"), "{report}");
    })
    .await
    .expect("test timed out");
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

/// A net.tcp calculator built from the crate's own pieces (the NMF server session, the binary
/// session encoding, the host's `respond` with the generated calculator) whose answers are
/// right in every respect but, when `relates_to` is given, their `RelatesTo`; returns its
/// endpoint address.
async fn calculator_relating_to(relates_to: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("port");
    let address = format!(
        "net.tcp://{}/calc/tcp",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_relating_to(tcp, relates_to));
        }
    });
    address
}

async fn serve_relating_to(mut tcp: TcpStream, relates_to: Option<&'static str>) {
    let service = CalculatorServer(Calc::new());
    let mut session = Session::server(ferry_nmf::Limits::default());
    let mut codec = BinarySession::new(ferry_nbfx::Limits::default());
    let (mut buf, mut pending, mut out) = (vec![0u8; 64 * 1024], Vec::new(), Vec::new());
    loop {
        let n = match tokio::time::timeout(LIMIT, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        pending.extend_from_slice(&buf[..n]);
        let used = session.handle_input(&pending).expect("framing");
        pending.drain(..used);
        while let Some(event) = session.poll_event() {
            match event {
                Event::PreambleReceived(_) => session.accept().expect("accept"),
                Event::Envelope(payload) => {
                    let request = codec.decode(&payload).expect("request");
                    if let Some(mut reply) = ferry_wcf::host::respond(&service, &request).await {
                        if let Some(id) = relates_to {
                            reply.headers.relates_to = Some(id.to_owned());
                        }
                        let payload = codec.encode(&reply).expect("encode");
                        session.send_envelope(&payload).expect("send");
                    }
                }
                Event::End => session.close().expect("End"),
                _ => {}
            }
        }
        session.poll_transmit(&mut out);
        tcp.write_all(&out).await.expect("write");
        out.clear();
        if session.is_closed() {
            let _ = tcp.shutdown().await;
            return;
        }
    }
}

#[tokio::test]
async fn an_answer_relating_to_another_message_is_a_difference() {
    tokio::time::timeout(LIMIT, async {
        // Right RelatesTo: the recorded session replays cleanly (End → End is .NET's close).
        let right = calculator_relating_to(None).await;
        let (ok, report) = replay_with(&recording("tcp-session"), &right, &["--mono-quirks"]).await;
        assert!(ok, "{report}");
        assert!(report.contains(" 0 differ"), "{report}");

        // The same answers relating to a fixed id: every request/reply exchange differs, by
        // its RelatesTo alone, with or without --mono-quirks.
        let fixed = "urn:uuid:00000000-0000-0000-0000-00000000beef";
        let wrong = calculator_relating_to(Some(fixed)).await;
        for extra in [&["--mono-quirks"][..], &[]] {
            let (ok, report) = replay_with(&recording("tcp-session"), &wrong, extra).await;
            eprintln!("{report}");
            assert!(!ok, "the replay passed:\n{report}");
            let replies = report
                .lines()
                .filter(|l| l.contains(" → ") && !l.contains("preamble") && !l.contains("end →"))
                .count();
            let diffs: Vec<&str> = report
                .lines()
                .filter(|l| l.contains("DIFF") && !l.contains("end →"))
                .collect();
            assert!(replies > 5, "{report}");
            assert_eq!(diffs.len(), replies, "{report}");
            for diff in diffs {
                assert!(
                    diff.contains("RelatesTo")
                        && diff.contains(fixed)
                        && diff.contains("MessageID"),
                    "{diff}"
                );
            }
        }
    })
    .await
    .expect("test timed out");
}
