//! `ferry listen --wcf-to` end to end with real WCF peers: Mono's calculator service
//! (`interop/mono/CalcService.cs`) behind the listener, Mono's WCF client
//! (`interop/mono/CalcClient.cs`) and the recorded client streams (`ferry replay`) in front,
//! a gateway in this process between them. Two routes:
//!
//! ```text
//!  client ─TCP─► ferry bridge local ─HC─► gateway ─► ferry listen --wcf-to ─TCP─► Mono service
//!  client ─net.tcp─► gateway's net.tcp port ─────► ferry listen --wcf-to ─TCP─► Mono service
//! ```
//!
//! Every answer must equal a direct call's; bad input and an unreachable origin end the
//! sender's session with a framing Fault record, never silence, and other sessions carry on.
//! A NetOneway sender (`interop/mono/OnewaySender.cs`) through the gateway reaches the origin
//! with its one-way messages only: the relay's own `Connect` and `OnewayPing` stop at the
//! listener.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Calc, ferry_env, free_port, nmf_event, recording, replay, token, wcf_listen, within};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_nbfx::Element;
use ferry_nmf::{ClientConfig, Event, FaultCode, Limits, Record, Session};
use ferry_soap::version::WSA10_ANONYMOUS;
use ferry_soap::{
    AddressingVersion, BinarySession, Body, EndpointReference, Envelope, RelayAccessToken,
    SoapVersion,
};
use ferry_wcf::generated::calculator::{Add, AddResponse, Notify};
use ferry_wcf::host::RELAY_SESSION_ACTIONS;
use ferry_wcf::{Contract, DataContract, DispatchError, Host, Operation, Reply, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::Instant;

/// Longest wait for one answer.
const STEP: Duration = Duration::from_secs(30);

/// `ferry bridge local 127.0.0.1:PORT PATH`; returns it and the port.
async fn bridge(gw: &RunningGateway, path: &str) -> (Child, u16) {
    let port = free_port();
    let child = common::ferry(
        &["bridge", "local", &format!("127.0.0.1:{port}"), path],
        &ferry_env(gw),
        "bridge local side running",
    )
    .await;
    (child, port)
}

/// The gateway's net.tcp address for `path`, with a token on the Via.
fn nettcp_via(gw: &RunningGateway, path: &str) -> String {
    let port = gw.nettcp_addr().expect("net.tcp port").port();
    format!(
        "net.tcp://127.0.0.1:{port}/{path}?sb-hc-token={}",
        ferry_hc::address::encode_query_value(&token(gw, path))
    )
}

/// Runs the Mono client (`nettcp`) against `address`; returns its JSON lines.
async fn mono_client(address: &str, token: Option<&str>) -> Vec<serde_json::Value> {
    let exe = ferry_interop::mono::compile("CalcClient", &["CalcClient.cs", "CalcContract.cs"]);
    let args = ["nettcp", address, token.unwrap_or("-")].map(str::to_owned);
    let child = ferry_interop::mono::run(&exe, &args);
    let (ok, out) = ferry_interop::finish(child).await;
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(ok, "the Mono client failed against {address}:\n{out}");
    assert_eq!(
        lines.last(),
        Some(&serde_json::json!({"done": true})),
        "{out}"
    );
    lines
}

/// Asserts two runs of the Mono client saw the same thing, call by call.
fn assert_same_calls(direct: &[serde_json::Value], relayed: &[serde_json::Value], route: &str) {
    assert!(direct.len() > 20, "{direct:?}");
    for (d, r) in direct.iter().zip(relayed) {
        assert_eq!(d, r, "{route}: a call differs from the direct one");
        assert_ne!(r["outcome"], "exception", "{route}: {r}");
    }
    assert_eq!(direct.len(), relayed.len(), "{route}");
}

#[tokio::test]
async fn mono_client_through_a_port_bridge_gets_the_direct_answers() {
    within(async {
        let calc = Calc::start().await;
        let direct = mono_client(&calc.tcp, None).await;
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let _listener = wcf_listen(&gw, "calc", &calc.tcp, &[]).await;
        let (_bridge, port) = bridge(&gw, "calc").await;
        let relayed = mono_client(&format!("net.tcp://127.0.0.1:{port}/calc/tcp"), None).await;
        assert_same_calls(&direct, &relayed, "bridge");
    })
    .await;
}

#[tokio::test]
async fn mono_client_through_the_gateway_nettcp_port_gets_the_direct_answers() {
    within(async {
        let calc = Calc::start().await;
        let direct = mono_client(&calc.tcp, None).await;
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let _listener = wcf_listen(&gw, "calc", &calc.tcp, &[]).await;
        // The token rides in a RelayAccessToken header on every message; the gateway checks
        // the first, the listener takes them all out before the service sees them.
        let port = gw.nettcp_addr().expect("net.tcp port").port();
        let relayed = mono_client(
            &format!("net.tcp://127.0.0.1:{port}/calc"),
            Some(&token(&gw, "calc")),
        )
        .await;
        assert_same_calls(&direct, &relayed, "gateway net.tcp");
    })
    .await;
}

#[tokio::test]
async fn recordings_replay_through_the_relay_to_mono() {
    within(async {
        let calc = Calc::start().await;
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let _listener = wcf_listen(&gw, "calc", &calc.tcp, &[]).await;
        let (_bridge, port) = bridge(&gw, "calc").await;
        for name in ["tcp-session", "tcp-oneway", "tcp-fault"] {
            for to in [
                format!("net.tcp://127.0.0.1:{port}/calc/tcp"),
                nettcp_via(&gw, "calc"),
            ] {
                let (ok, report) = replay(&recording(name), &to).await;
                assert!(ok, "{name} through {to}:\n{report}");
                assert!(report.contains(" 0 differ"), "{report}");
            }
        }
    })
    .await;
}

/// A net.tcp client session driven by hand, to send what a WCF client would not.
struct RawClient {
    tcp: TcpStream,
    session: Session,
    codec: BinarySession,
    via: String,
    next_id: u32,
}

impl RawClient {
    /// Connects and sends the preamble for `via`; does not wait for the answer.
    async fn connect(port: u16, via: &str) -> Self {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut session =
            Session::client(ClientConfig::net_tcp(via), Limits::default()).expect("session");
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        tcp.write_all(&out).await.expect("preamble");
        Self {
            tcp,
            session,
            codec: BinarySession::new(ferry_nbfx::Limits::default()),
            via: via.to_owned(),
            next_id: 1,
        }
    }

    async fn event(&mut self) -> Option<Event> {
        nmf_event(&mut self.session, &mut self.tcp, STEP).await
    }

    /// Calls Add the way Mono's client does (Action, MessageID, ReplyTo, To = the Via).
    async fn add(&mut self, a: i32, b: i32, token: Option<&str>) -> i32 {
        let mut request = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        request.headers.action = Some("http://interop.example/calc/2024/ICalculator/Add".into());
        request.headers.message_id = Some(format!(
            "urn:uuid:00000000-0000-0000-0000-{:012}",
            self.next_id
        ));
        self.next_id += 1;
        request.headers.reply_to = Some(EndpointReference::new(WSA10_ANONYMOUS));
        request.headers.to = Some(self.via.clone());
        request.headers.relay_token = token.map(|t| RelayAccessToken::new("uuid:1", t));
        request.body = Body::Payload(vec![Add { a, b }.to_element()]);
        let payload = self.codec.encode(&request).expect("encode");
        self.session.send_envelope(&payload).expect("send");
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        self.tcp.write_all(&out).await.expect("request");
        let Some(Event::Envelope(reply)) = self.event().await else {
            panic!("no reply to Add");
        };
        let reply = self.codec.decode(&reply).expect("the reply decodes");
        AddResponse::from_element(reply.payload().expect("a payload"))
            .expect("an AddResponse")
            .add_result
    }

    /// Everything until the peer closes.
    async fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        tokio::time::timeout(STEP, self.tcp.read_to_end(&mut all))
            .await
            .expect("the relay closed in time")
            .expect("read");
        all
    }
}

/// Sends `bytes` on a fresh connection to the bridge and returns all it answers.
async fn answer_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.write_all(bytes).await.expect("send");
    let mut all = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut all))
        .await
        .expect("an answer, not silence")
        .expect("read");
    all
}

/// The framing fault at the end of an answer (after whatever whole records came first).
fn fault_in(answer: &[u8]) -> Option<FaultCode> {
    let mut pos = 0;
    let mut fault = None;
    while pos < answer.len() {
        let (record, n) = Record::decode(&answer[pos..], &Limits::default()).ok()??;
        if let Record::Fault(uri) = record {
            fault = Some(FaultCode::from_uri(&uri));
        }
        pos += n;
    }
    fault
}

fn preamble(via: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = Session::client(ClientConfig::net_tcp(via), Limits::default()).expect("session");
    s.poll_transmit(&mut out);
    out
}

#[tokio::test]
async fn bad_input_gets_a_framing_fault_and_other_sessions_carry_on() {
    within(async {
        let calc = Calc::start().await;
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let _listener = wcf_listen(&gw, "calc", &calc.tcp, &[]).await;
        let (_bridge, port) = bridge(&gw, "calc").await;

        // A good session, open across the bad ones.
        let via = format!("net.tcp://127.0.0.1:{port}/calc/tcp");
        let mut good = RawClient::connect(port, &via).await;
        assert_eq!(good.event().await, Some(Event::PreambleAcked));
        assert_eq!(good.add(2, 3, None).await, 5);

        let cases: [(&str, Vec<u8>, FaultCode); 5] = [
            (
                "framing version 2",
                vec![0x00, 0x02, 0x00, 0x01, 0x02],
                FaultCode::UnsupportedVersion,
            ),
            (
                "singleton-sized mode",
                vec![0x00, 0x01, 0x00, 0x01, 0x04],
                FaultCode::UnsupportedMode,
            ),
            (
                "not framing at all",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                FaultCode::ContentTypeInvalid,
            ),
            (
                "garbage envelope",
                [preamble(&via), vec![0x06, 0x04, 0x00, 0x42, 0x03, 0x01]].concat(),
                FaultCode::ContentTypeInvalid,
            ),
            (
                "envelope over the size limit",
                [preamble(&via), vec![0x06, 0xFF, 0xFF, 0xFF, 0x7F]].concat(),
                FaultCode::MaxMessageSizeExceeded,
            ),
        ];
        for (what, bytes, expected) in cases {
            let answer = answer_to(port, &bytes).await;
            assert_eq!(fault_in(&answer), Some(expected), "{what}: {answer:02x?}");
        }

        // The good session is unaffected, and so is the service (which a malformed envelope
        // can kill: it never got one).
        assert_eq!(good.add(40, 2, None).await, 42);
        let mut again = RawClient::connect(port, &via).await;
        assert_eq!(again.event().await, Some(Event::PreambleAcked));
        assert_eq!(again.add(-1, 1, None).await, 0);
        // Ending a session: End goes to the service, which closes; so does the relay.
        good.session.close().expect("close");
        let mut out = Vec::new();
        good.session.poll_transmit(&mut out);
        good.tcp.write_all(&out).await.expect("end");
        good.tcp.shutdown().await.expect("half-close");
        assert_eq!(good.rest().await, Vec::<u8>::new());
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_origin_is_endpoint_not_found() {
    within(async {
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let closed = free_port();
        let origin = format!("net.tcp://127.0.0.1:{closed}/calc/tcp");
        let _listener = wcf_listen(&gw, "down", &origin, &[]).await;
        let (_bridge, port) = bridge(&gw, "down").await;

        // Through the bridge: the fault answers the preamble.
        let via = format!("net.tcp://127.0.0.1:{port}/calc/tcp");
        let mut raw = RawClient::connect(port, &via).await;
        assert_eq!(
            raw.event().await,
            Some(Event::Fault(FaultCode::EndpointNotFound))
        );

        // Through the gateway's net.tcp port: the gateway acks the preamble itself, so the
        // fault answers the first message.
        let via = nettcp_via(&gw, "down");
        let mut raw = RawClient::connect(gw.nettcp_addr().expect("port").port(), &via).await;
        assert_eq!(raw.event().await, Some(Event::PreambleAcked));
        let mut request = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        request.headers.action = Some("http://interop.example/calc/2024/ICalculator/Add".into());
        request.body = Body::Payload(vec![Add { a: 1, b: 2 }.to_element()]);
        let payload = raw.codec.encode(&request).expect("encode");
        raw.session.send_envelope(&payload).expect("send");
        let mut out = Vec::new();
        raw.session.poll_transmit(&mut out);
        raw.tcp.write_all(&out).await.expect("request");
        assert_eq!(
            raw.event().await,
            Some(Event::Fault(FaultCode::EndpointNotFound))
        );

        // A real WCF client fails its call at once instead of hanging.
        let lines = mono_client_failing(&format!("net.tcp://127.0.0.1:{port}/calc/tcp")).await;
        assert!(lines.iter().any(|l| l.get("error").is_some()), "{lines:?}");
    })
    .await;
}

/// Runs the Mono client where it must fail; returns its lines (it exits non-zero).
async fn mono_client_failing(address: &str) -> Vec<serde_json::Value> {
    let exe = ferry_interop::mono::compile("CalcClient", &["CalcClient.cs", "CalcContract.cs"]);
    let args = ["nettcp", address, "-"].map(str::to_owned);
    let child = ferry_interop::mono::run(&exe, &args);
    let started = Instant::now();
    let (ok, out) = ferry_interop::finish(child).await;
    assert!(
        !ok,
        "the Mono client succeeded against a dead origin:\n{out}"
    );
    // Well under the client's 30 s timeouts: the fault, not a timeout, ended it.
    assert!(started.elapsed() < Duration::from_secs(25), "{out}");
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn the_origin_sees_its_own_address_and_never_the_relay_token() {
    within(async {
        // An origin that records what it is sent (the Mono service cannot tell us): it acks
        // the preamble, answers nothing, and keeps every byte.
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!(
            "net.tcp://127.0.0.1:{}/legacy/calc",
            origin.local_addr().expect("addr").port()
        );
        let captured = tokio::spawn(async move {
            let (mut tcp, _) = origin.accept().await.expect("accept");
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            let mut acked = false;
            loop {
                let n = tcp.read(&mut buf).await.expect("read");
                if n == 0 {
                    return all;
                }
                all.extend_from_slice(&buf[..n]);
                if !acked && all.contains(&0x0C) {
                    tcp.write_all(&[0x0B]).await.expect("ack");
                    acked = true;
                }
            }
        });
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let _listener = wcf_listen(&gw, "calc", &address, &[]).await;
        let secret = token(&gw, "calc");
        let port = gw.nettcp_addr().expect("port").port();
        let via = format!("net.tcp://127.0.0.1:{port}/calc");
        let mut raw = RawClient::connect(port, &via).await;
        assert_eq!(raw.event().await, Some(Event::PreambleAcked));
        // Two requests carrying the token (no answers come: the origin only listens).
        for a in 0..2 {
            let mut request = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
            request.headers.action = Some("urn:op".into());
            request.headers.to = Some(via.clone());
            request.headers.relay_token = Some(RelayAccessToken::new("uuid:1", &secret));
            request.body = Body::Payload(vec![Add { a, b: 0 }.to_element()]);
            let payload = raw.codec.encode(&request).expect("encode");
            raw.session.send_envelope(&payload).expect("send");
        }
        raw.session.close().expect("end");
        let mut out = Vec::new();
        raw.session.poll_transmit(&mut out);
        raw.tcp.write_all(&out).await.expect("send");
        raw.tcp.shutdown().await.expect("half-close");
        let seen = tokio::time::timeout(STEP, captured)
            .await
            .expect("the origin saw the end")
            .expect("capture");

        let mut origin_side = BinarySession::new(ferry_nbfx::Limits::default());
        let mut pos = 0;
        let mut vias = Vec::new();
        let mut envelopes = Vec::new();
        while pos < seen.len() {
            let (record, n) = Record::decode(&seen[pos..], &Limits::default())
                .expect("framing")
                .expect("whole records");
            match record {
                Record::Via(v) => vias.push(v.into_owned()),
                Record::SizedEnvelope(p) => {
                    envelopes.push(origin_side.decode(&p).expect("decodes"))
                }
                _ => {}
            }
            pos += n;
        }
        assert_eq!(vias, std::slice::from_ref(&address));
        assert_eq!(envelopes.len(), 2);
        for e in &envelopes {
            assert_eq!(e.headers.to.as_deref(), Some(address.as_str()));
            assert_eq!(e.headers.relay_token, None);
            assert_eq!(e.headers.action.as_deref(), Some("urn:op"));
        }
        let sig = secret.split("sig=").nth(1).expect("a signature");
        let sig = sig.split('&').next().expect("sig");
        assert!(
            !seen.windows(sig.len()).any(|w| w == sig.as_bytes()),
            "the token's signature reached the origin"
        );
    })
    .await;
}

/// The calculator's one-way Notify.
const NOTIFY: &str = "http://interop.example/calc/2024/ICalculator/Notify";

/// A legacy origin's contract for the recording service below: the calculator's one-way
/// Notify, and the relay's Connect and OnewayPing as one-way operations too, so that the host
/// dispatches them (rather than dropping them itself) and the service sees them if they come.
static RECORDING_CONTRACT: Contract = Contract {
    name: "ICalculator",
    namespace: "http://interop.example/calc/2024",
    operations: &[
        one_way("Notify", NOTIFY),
        one_way("Connect", RELAY_SESSION_ACTIONS[0]),
        one_way("OnewayPing", RELAY_SESSION_ACTIONS[1]),
    ],
};

const fn one_way(name: &'static str, action: &'static str) -> Operation {
    Operation {
        name,
        action,
        reply_action: None,
        faults: &[],
    }
}

/// One message an origin was given: its action, and a Notify's text.
type Seen = (String, Option<String>);

/// Records every message it is given.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("recorder lock").clone()
    }
}

impl Service for Recorder {
    fn contract(&self) -> &'static Contract {
        &RECORDING_CONTRACT
    }

    async fn dispatch(&self, action: &str, body: Option<&Element>) -> Result<Reply, DispatchError> {
        let message = body
            .filter(|_| action == NOTIFY)
            .and_then(|b| Notify::from_element(b).ok())
            .and_then(|n| n.message);
        self.seen
            .lock()
            .expect("recorder lock")
            .push((action.to_owned(), message));
        Ok(Reply::None)
    }
}

/// Runs Mono's NetOneway sender against `address`; returns its JSON lines once it exited 0.
async fn mono_oneway_sender(address: &str, token: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let exe = ferry_interop::mono::compile("OnewaySender", &["OnewaySender.cs", "CalcContract.cs"]);
    let mut args = vec![address.to_owned(), token.to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let (ok, out) = ferry_interop::finish(ferry_interop::mono::run(&exe, &args)).await;
    assert!(ok, "the Mono sender failed against {address}:\n{out}");
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn a_netoneway_senders_relay_messages_do_not_reach_the_origin() {
    within(async {
        // The origin: a WCF service on plain TCP (the Rust host) that records what it gets.
        let recorder = Recorder::default();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("origin port");
        let origin = format!(
            "net.tcp://{}/legacy/notify",
            tcp.local_addr().expect("origin address")
        );
        let host = Host::new(recorder.clone());
        let serving = host.clone();
        tokio::spawn(async move { serving.serve_tcp(tcp).await });

        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let _listener = wcf_listen(&gw, "oneway", &origin, &[]).await;
        let port = gw.nettcp_addr().expect("net.tcp port").port();
        // Connect first, then 10 Notify with one OnewayPing among them, then End.
        let lines = mono_oneway_sender(
            &format!("net.tcp://127.0.0.1:{port}/oneway"),
            &token(&gw, "oneway"),
            &["--count", "10", "--ping"],
        )
        .await;
        let ops: Vec<&str> = lines.iter().filter_map(|l| l["op"].as_str()).collect();
        assert_eq!(ops.first(), Some(&"Connect"), "{lines:?}");
        assert!(ops.contains(&"OnewayPing"), "{lines:?}");
        for line in &lines {
            assert!(line.get("error").is_none(), "{line}");
            assert!(line.get("received").is_none(), "nothing comes back: {line}");
        }
        let sent: Vec<Seen> = lines
            .iter()
            .filter(|l| l["op"] == "Notify")
            .map(|l| {
                assert_eq!(l["outcome"], "sent", "{l}");
                let message = l["message"].as_str().expect("message").to_owned();
                (NOTIFY.to_owned(), Some(message))
            })
            .collect();
        assert_eq!(sent.len(), 10, "{lines:?}");

        // Every Notify arrives, in order; then a moment more to see that nothing else does.
        let deadline = Instant::now() + Duration::from_secs(20);
        while recorder.seen().len() < sent.len() {
            assert!(
                Instant::now() < deadline,
                "the origin got {:?}",
                recorder.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = recorder.seen();
        assert!(
            !seen
                .iter()
                .any(|(a, _)| RELAY_SESSION_ACTIONS.contains(&a.as_str())),
            "a relay session message reached the origin: {seen:?}"
        );
        assert_eq!(
            seen, sent,
            "the Notify messages, in order, and nothing else"
        );
        host.shutdown().await;
        gw.shutdown().await;
    })
    .await;
}
