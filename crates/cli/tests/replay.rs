//! `ferry replay` against the real peer the recordings came from: Mono's WCF service
//! (`interop/mono/CalcService.cs`, run with `mono`). Every recorded session replays with
//! answers equal to the recorded ones; a changed answer fails the replay; the service
//! publishes exactly the recorded contract.

mod common;

use common::{Calc, LIMIT, recording, replay, replay_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn replays_cleanly(name: &str, to: impl Fn(&Calc) -> String) {
    tokio::time::timeout(LIMIT, async {
        let calc = Calc::start().await;
        let (ok, report) = replay(&recording(name), &to(&calc)).await;
        assert!(ok, "{name} did not replay cleanly:\n{report}");
        assert!(!report.contains("DIFF"), "{report}");
        assert!(report.contains(" 0 differ"), "{report}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn tcp_session_replays_against_mono() {
    replays_cleanly("tcp-session", |c| c.tcp.clone()).await;
}

#[tokio::test]
async fn tcp_oneway_replays_against_mono() {
    replays_cleanly("tcp-oneway", |c| c.tcp.clone()).await;
}

#[tokio::test]
async fn tcp_fault_replays_against_mono() {
    replays_cleanly("tcp-fault", |c| c.tcp.clone()).await;
}

#[tokio::test]
async fn http_basic_replays_against_mono() {
    replays_cleanly("http-basic", |c| c.http.clone()).await;
}

#[tokio::test]
async fn http_wsdl_replays_against_mono() {
    tokio::time::timeout(LIMIT, async {
        let calc = Calc::start().await;
        // The WSDL names the net.tcp endpoint, whose address is the service's own (the
        // recorder's port in the recording); the HTTP ones are under the base address.
        let address = format!("net.tcp://127.0.0.1:9701/calc/tcp={}", calc.tcp);
        let (ok, report) = replay_with(
            &recording("http-wsdl"),
            &calc.base,
            &["--address", &address],
        )
        .await;
        assert!(ok, "http-wsdl did not replay cleanly:\n{report}");
        assert!(
            report.contains("6 checked, 6 matched, 0 differ"),
            "{report}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn pynettcp_mex_replays_against_mono() {
    replays_cleanly("pynettcp-mex", |c| c.mex.clone()).await;
}

#[tokio::test]
async fn a_changed_answer_fails_the_replay() {
    tokio::time::timeout(LIMIT, async {
        // The tcp-session recording with the first answer changed from 5 to 6: AddResult is
        // `42 01` (session string 1) followed by Int8TextWithEndElement `89 05`.
        let dir = tempfile::tempdir().expect("temp dir");
        for entry in std::fs::read_dir(recording("tcp-session")).expect("recording") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().expect("name")))
                    .expect("copy");
            }
        }
        let s2c = dir.path().join("server_to_client.bin");
        let mut bytes = std::fs::read(&s2c).expect("read");
        let at = bytes
            .windows(4)
            .position(|w| w == [0x42, 0x01, 0x89, 0x05])
            .expect("the first AddResult");
        bytes[at + 3] = 0x06;
        std::fs::write(&s2c, bytes).expect("write");

        let calc = Calc::start().await;
        let (ok, report) = replay(dir.path(), &calc.tcp).await;
        assert!(!ok, "the replay passed:\n{report}");
        let diffs: Vec<&str> = report.lines().filter(|l| l.contains("DIFF")).collect();
        assert_eq!(diffs.len(), 1, "{report}");
        assert!(
            diffs[0].contains("AddResult: text \"5\", recorded \"6\""),
            "{report}"
        );
        assert!(
            report.contains("19 checked, 18 matched, 1 differ"),
            "{report}"
        );
    })
    .await
    .expect("test timed out");
}

/// GETs `url` (http://127.0.0.1:PORT/…) and returns the body.
async fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, target) = rest.split_at(rest.find('/').expect("a path"));
    let mut tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("response");
    let text = String::from_utf8(response).expect("utf-8");
    assert!(text.starts_with("HTTP/1.1 200"), "{url}: {text}");
    let (_, body) = text.split_once("\r\n\r\n").expect("a body");
    body.to_owned()
}

#[tokio::test]
async fn the_mono_service_publishes_the_recorded_contract() {
    tokio::time::timeout(LIMIT, async {
        let calc = Calc::start().await;
        let http_port = calc
            .base
            .rsplit(':')
            .next()
            .expect("port")
            .split('/')
            .next()
            .expect("port");
        let tcp_port = calc
            .tcp
            .rsplit(':')
            .next()
            .expect("port")
            .split('/')
            .next()
            .expect("port");
        let wsdl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wsdl/calculator");
        for (query, file) in [
            ("wsdl", "calc.wsdl"),
            ("wsdl=wsdl0", "calc.wsdl0.wsdl"),
            ("xsd=xsd0", "calc.xsd0.xsd"),
            ("xsd=xsd1", "calc.xsd1.xsd"),
            ("xsd=xsd2", "calc.xsd2.xsd"),
            ("xsd=xsd3", "calc.xsd3.xsd"),
        ] {
            // The recorded service listened on 8702 (HTTP) and advertised 9701 (net.tcp).
            let live = get(&format!("{}?{query}", calc.base))
                .await
                .replace(&format!("127.0.0.1:{http_port}/"), "127.0.0.1:8702/")
                .replace(&format!("127.0.0.1:{tcp_port}/"), "127.0.0.1:9701/");
            let recorded = std::fs::read_to_string(wsdl.join(file)).expect("recorded metadata");
            assert_eq!(
                live, recorded,
                "?{query} differs from wsdl/calculator/{file}"
            );
        }
    })
    .await
    .expect("test timed out");
}
