//! The gateway's net.tcp front ends (the net.tcp port and the NetTcpRelayBinding relayed-mode
//! port), driven by an MC-NMF client session of ours on one side and SDK listeners on the
//! other:
//!
//! - in dynamic mode a sender without a valid token gets the same refusal whether the path
//!   exists or not, and only a sender with one learns that a path is missing;
//! - a bad token on the Via is answered as a bad RelayAccessToken is: the first request gets
//!   the relay's SOAP fault, then End, not a framing fault;
//! - a fan-out path opens its listeners' rendezvous at once, so slow listeners cost the
//!   slowest one's latency, not the sum;
//! - a listener that closes its rendezvous before acking the preamble still gets the sender a
//!   framing fault and a close, and the next session is served;
//! - gateway shutdown ends a fan-out sender's wait for its listeners' rendezvous at once;
//! - a refused sender that keeps sending is cut off after a bounded drain, not after the
//!   whole close timeout;
//! - the sender's credentials (the Via's and the To's `sb-hc-token`, the RelayAccessToken
//!   header of every message) never reach the listener, in binary and in text sessions, and a
//!   message the gateway cannot read for them ends the session rather than pass unread.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_gateway::{Config, Gateway, PathConfig, RunningGateway};
use ferry_hc::SasToken;
use ferry_nmf::{
    ClientConfig, Encoding, Event, FaultCode, KnownEncoding, Limits, Mode, Record, Session,
};
use ferry_sdk::{Endpoint, HybridStream, Listener, SasKeyProvider};
use ferry_soap::{AddressingVersion, BinarySession, Envelope, RelayAccessToken, SoapVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest wait for any one answer.
const STEP: Duration = Duration::from_secs(10);
/// The PreambleAck record.
const ACK: u8 = 0x0B;
/// The End record.
const END: u8 = 0x07;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP * 6, f)
        .await
        .expect("test timed out")
}

/// A development gateway (dynamic paths, one Manage rule), adjusted by `tweak`.
async fn gateway(tweak: impl FnOnce(&mut Config)) -> RunningGateway {
    let mut config = Config::dev();
    // Test peers do not always answer a closing handshake; do not wait long for them.
    config.timeouts.close = Duration::from_millis(500);
    tweak(&mut config);
    Gateway::start(config).await.expect("gateway starts")
}

fn expiry() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600
}

/// A valid token for `path`, signed with the gateway's rule.
fn token(gw: &RunningGateway, path: &str) -> String {
    let audience = format!("http://localhost/{path}");
    SasToken::create(&audience, gw.rule_name(), gw.rule_key(), expiry())
}

/// A token for `path` under the gateway's rule name, signed with some other key.
fn forged(gw: &RunningGateway, path: &str) -> String {
    let audience = format!("http://localhost/{path}");
    let key = ferry_gateway::config::random_key();
    SasToken::create(&audience, gw.rule_name(), &key, expiry())
}

/// An SDK listener on `path`, registered once this returns.
async fn listener(gw: &RunningGateway, path: &str) -> Listener {
    let addr = gw.plain_addr().expect("plain port");
    let mut endpoint = Endpoint::new(&format!("ws://{addr}"), path).expect("endpoint");
    endpoint.set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    let before = gw.listener_count(path);
    let listener = Listener::open(endpoint).await.expect("listener");
    while gw.listener_count(path) == before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listener
}

fn via(gw: &RunningGateway, path: &str) -> String {
    let port = gw.nettcp_addr().expect("net.tcp port").port();
    format!("net.tcp://127.0.0.1:{port}/{path}")
}

/// A client session for `via` and its preamble bytes.
fn preamble(via: &str) -> (Session, Vec<u8>) {
    preamble_of(ClientConfig::net_tcp(via))
}

/// A client session as `config` says and its preamble bytes.
fn preamble_of(config: ClientConfig) -> (Session, Vec<u8>) {
    let mut client = Session::client(config, Limits::default()).expect("client session");
    let mut wire = Vec::new();
    client.poll_transmit(&mut wire);
    (client, wire)
}

/// A one-way request, as a WCF client's first message, with `token` in its
/// RelayAccessToken header; encoded in a fresh binary session.
fn request(action: &str, token: Option<&str>) -> Vec<u8> {
    let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    env.headers.action = Some(action.into());
    env.headers.message_id = Some("urn:uuid:00000000-0000-0000-0000-000000000001".into());
    env.headers.to = Some("net.tcp://gateway/calc".into());
    env.headers.relay_token = token.map(|t| RelayAccessToken::new("uuid:1", t));
    BinarySession::new(ferry_nbfx::Limits::default())
        .encode(&env)
        .expect("encode")
}

/// Everything `io` sends until it closes; fails the test on a reset or after [`STEP`].
async fn read_all<S: AsyncRead + Unpin>(io: &mut S) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(STEP, io.read_to_end(&mut all))
        .await
        .expect("the gateway closed in time")
        .expect("a clean close, not a reset");
    all
}

/// What a client session makes of `bytes`: its events in order.
fn events_of(mut client: Session, bytes: &[u8]) -> Vec<Event> {
    client
        .handle_input(bytes)
        .expect("the gateway's bytes parse");
    std::iter::from_fn(|| client.poll_event()).collect()
}

/// Plays a WCF client's first call on the net.tcp port: the preamble, then (once acked) one
/// request carrying `token`. Returns all the gateway sent until it closed, and its events.
async fn first_call(gw: &RunningGateway, path: &str, token: Option<&str>) -> (Vec<u8>, Vec<Event>) {
    first_call_to(&via(gw, path), gw, token).await
}

/// As [`first_call`], with `token` on the Via (`sb-hc-token`) and none in the request.
async fn first_call_via_token(
    gw: &RunningGateway,
    path: &str,
    token: &str,
) -> (Vec<u8>, Vec<Event>) {
    let encoded = ferry_hc::address::encode_query_value(token);
    let via = format!("{}?sb-hc-token={encoded}", via(gw, path));
    first_call_to(&via, gw, None).await
}

/// [`first_call`] with the Via given whole.
async fn first_call_to(
    via: &str,
    gw: &RunningGateway,
    token: Option<&str>,
) -> (Vec<u8>, Vec<Event>) {
    let (client, wire) = preamble(via);
    let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
        .await
        .expect("connect");
    tcp.write_all(&wire).await.expect("preamble");
    let mut answer = vec![0u8; 1];
    tokio::time::timeout(STEP, tcp.read_exact(&mut answer))
        .await
        .expect("an answer to the preamble in time")
        .expect("an answer to the preamble");
    if answer == [ACK] {
        let mut out = Vec::new();
        Record::SizedEnvelope(request("urn:add", token).into()).encode(&mut out);
        tcp.write_all(&out).await.expect("request");
    }
    answer.extend(read_all(&mut tcp).await);
    let events = events_of(client, &answer);
    (answer, events)
}

/// The fault a SOAP fault envelope carries: its reason and first subcode.
fn soap_fault(event: &Event) -> (String, String) {
    let Event::Envelope(payload) = event else {
        panic!("expected a SOAP fault, got {event:?}");
    };
    let reply = BinarySession::new(ferry_nbfx::Limits::default())
        .decode(payload)
        .expect("the fault decodes");
    let fault = reply.fault().expect("a fault");
    assert!(fault.is_sender(), "{fault:?}");
    (fault.reason.clone(), fault.subcodes[0].local.clone())
}

#[tokio::test]
async fn nettcp_refuses_unauthenticated_senders_alike_on_existing_and_missing_dynamic_paths() {
    within(async {
        let gw = gateway(|c| {
            // A configured anonymous path keeps its behaviour in dynamic mode.
            c.paths = vec![PathConfig {
                anonymous_senders: true,
                ..PathConfig::new("open")
            }];
        })
        .await;
        let _calc = listener(&gw, "calc").await;

        let forged = forged(&gw, "calc");
        for token in [None, Some(forged.as_str()), Some("not a token")] {
            let (existing, existing_events) = first_call(&gw, "calc", token).await;
            let (missing, _) = first_call(&gw, "nowhere", token).await;
            assert_eq!(
                existing, missing,
                "token {token:?}: the same bytes for an existing and a missing path"
            );
            // Acked, the request answered with a SOAP fault, then End.
            assert_eq!(existing_events.len(), 3, "{existing_events:?}");
            assert_eq!(existing_events[0], Event::PreambleAcked);
            let (reason, subcode) = soap_fault(&existing_events[1]);
            assert!(reason.starts_with("401"), "{reason}");
            assert_eq!(subcode, "AuthenticationFailed");
            assert_eq!(existing_events[2], Event::End);
        }

        // A valid token: told that nobody listens there.
        let (_, events) = first_call(&gw, "nowhere", Some(&token(&gw, "nowhere"))).await;
        assert_eq!(
            events,
            [
                Event::PreambleAcked,
                Event::Fault(FaultCode::EndpointNotFound)
            ]
        );
        // A valid token for another path: refused as on an existing path.
        let (missing, events) = first_call(&gw, "nowhere", Some(&token(&gw, "calc"))).await;
        let (existing, _) = first_call(&gw, "calc/x", Some(&token(&gw, "other"))).await;
        assert_eq!(missing, existing);
        let (reason, subcode) = soap_fault(&events[1]);
        assert!(reason.starts_with("403"), "{reason}");
        assert_eq!(subcode, "AuthorizationFailed");

        // The configured anonymous path needs no token and has no listener.
        let (_, events) = first_call(&gw, "open", None).await;
        assert_eq!(
            events,
            [
                Event::PreambleAcked,
                Event::Fault(FaultCode::EndpointNotFound)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn nettcp_answers_a_bad_via_token_with_the_relay_access_token_fault() {
    within(async {
        let gw = gateway(|_| {}).await;
        let _calc = listener(&gw, "calc").await;
        let forged = forged(&gw, "calc");
        let expired = SasToken::create(
            "http://localhost/calc",
            gw.rule_name(),
            gw.rule_key(),
            expiry() - 7200,
        );
        let wrong_path = token(&gw, "other");
        for (token, status, subcode) in [
            (forged.as_str(), "401", "AuthenticationFailed"),
            (expired.as_str(), "401", "AuthenticationFailed"),
            ("not a token", "401", "AuthenticationFailed"),
            (wrong_path.as_str(), "403", "AuthorizationFailed"),
        ] {
            let (existing, events) = first_call_via_token(&gw, "calc", token).await;
            // Acked, the first request answered with the relay's SOAP fault, End, a clean
            // close (read_all fails on a reset): not a framing fault, which a WCF client
            // reports as "endpoint not found" for a path that exists.
            assert_eq!(events.len(), 3, "token {token:?}: {events:?}");
            assert_eq!(events[0], Event::PreambleAcked);
            let (reason, got) = soap_fault(&events[1]);
            assert!(reason.starts_with(status), "token {token:?}: {reason}");
            assert_eq!(got, subcode, "token {token:?}");
            assert_eq!(events[2], Event::End);
            // Byte for byte what the same token in the RelayAccessToken header gets.
            let (in_header, _) = first_call(&gw, "calc", Some(token)).await;
            assert_eq!(existing, in_header, "token {token:?}: as in the header");
            // And a missing dynamic path cannot be told apart.
            let (missing, _) = first_call_via_token(&gw, "nowhere", token).await;
            assert_eq!(
                existing, missing,
                "token {token:?}: existing and missing alike"
            );
        }
    })
    .await;
}

/// The NetTcpRelayBinding handshake up to the reply, for `uri` with `token`; returns the
/// reply's bytes.
async fn relay_handshake(gw: &RunningGateway, uri: &str, token: Option<&str>) -> Vec<u8> {
    let mut tcp = TcpStream::connect(gw.relayed_addr().expect("relayed port"))
        .await
        .expect("connect");
    let mut out = Vec::new();
    for word in [&b"connect"[..], uri.as_bytes()] {
        out.extend_from_slice(&i32::try_from(word.len()).expect("small").to_le_bytes());
        out.extend_from_slice(word);
    }
    // No TLS.
    out.push(0x00);
    let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    env.headers.action = Some(
        "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/RelayedConnect".into(),
    );
    env.headers.message_id = Some("urn:uuid:00000000-0000-0000-0000-000000000002".into());
    env.headers.relay_token = token.map(|t| RelayAccessToken::new("uuid:2", t));
    env.headers.to = Some(uri.into());
    let bytes = env.encode_binary().expect("encode");
    out.extend_from_slice(&i32::try_from(bytes.len()).expect("small").to_le_bytes());
    out.extend_from_slice(&bytes);
    tcp.write_all(&out).await.expect("handshake");
    read_all(&mut tcp).await
}

/// The relay fault's reason and subcode in a handshake reply.
fn relay_fault(reply: &[u8]) -> (String, String) {
    let len = usize::try_from(i32::from_le_bytes(
        reply[..4].try_into().expect("a length prefix"),
    ))
    .expect("a positive length");
    assert_eq!(reply.len(), 4 + len, "one reply, then the close");
    let env = Envelope::decode_binary(&reply[4..], None, ferry_nbfx::Limits::default())
        .expect("the reply decodes");
    let fault = env.fault().expect("a fault");
    (fault.reason.clone(), fault.subcodes[0].local.clone())
}

#[tokio::test]
async fn relayed_refuses_unauthenticated_senders_alike_on_existing_and_missing_dynamic_paths() {
    within(async {
        let gw = gateway(|_| {}).await;
        let _calc = listener(&gw, "calc").await;
        let forged = forged(&gw, "calc");
        for token in [None, Some(forged.as_str()), Some("not a token")] {
            let existing = relay_handshake(&gw, "sb://localhost/calc", token).await;
            let missing = relay_handshake(&gw, "sb://localhost/nowhere", token).await;
            assert_eq!(existing, missing, "token {token:?}");
            let (reason, subcode) = relay_fault(&existing);
            assert!(reason.starts_with("401"), "{reason}");
            assert_eq!(subcode, "AuthenticationFailed");
        }
        // A valid token: told that nobody listens there.
        let reply =
            relay_handshake(&gw, "sb://localhost/nowhere", Some(&token(&gw, "nowhere"))).await;
        assert_eq!(relay_fault(&reply).1, "EndpointNotFound");
    })
    .await;
}

/// A fan-out listener: waits `delay` before opening its rendezvous, then acks the preamble
/// and reads the session: `first` (the first message), then End. Returns when the first
/// message had arrived, and all it got after the preamble.
async fn slow_fan_out_listener(
    mut listener: Listener,
    delay: Duration,
    preamble: Vec<u8>,
    first: Vec<u8>,
) -> (Instant, Vec<u8>) {
    let incoming = listener.accept().await.expect("accept command");
    tokio::time::sleep(delay).await;
    let mut stream = incoming.accept().await.expect("rendezvous");
    let mut got = vec![0u8; preamble.len()];
    stream.read_exact(&mut got).await.expect("preamble");
    assert_eq!(got, preamble);
    stream.write_all(&[ACK]).await.expect("ack");
    let mut rest = vec![0u8; first.len()];
    stream.read_exact(&mut rest).await.expect("first message");
    let arrived = Instant::now();
    let mut end = [0u8; 1];
    stream.read_exact(&mut end).await.expect("end");
    rest.extend_from_slice(&end);
    stream.write_all(&[END]).await.expect("end");
    (arrived, rest)
}

/// Accepts the rendezvous, reads the preamble and closes without acking it.
async fn closing_listener(mut listener: Listener, preamble_len: usize) {
    let incoming = listener.accept().await.expect("accept command");
    let mut stream: HybridStream = incoming.accept().await.expect("rendezvous");
    let mut got = vec![0u8; preamble_len];
    stream.read_exact(&mut got).await.expect("preamble");
    close(stream).await;
}

async fn close<S: AsyncWrite + Unpin>(mut stream: S) {
    let _ = tokio::time::timeout(STEP, stream.shutdown()).await;
}

#[tokio::test]
async fn fan_out_opens_slow_listeners_at_once() {
    const DELAY: Duration = Duration::from_secs(1);
    within(async {
        let gw = gateway(|c| {
            c.paths = vec![PathConfig {
                anonymous_senders: true,
                fan_out: true,
                ..PathConfig::new("events")
            }];
        })
        .await;
        let (mut client, wire) = preamble(&via(&gw, "events"));
        let mut first = Vec::new();
        Record::SizedEnvelope(request("urn:notify/0", None).into()).encode(&mut first);
        let mut slow = Vec::new();
        for _ in 0..3 {
            let l = listener(&gw, "events").await;
            slow.push(tokio::spawn(slow_fan_out_listener(
                l,
                DELAY,
                wire.clone(),
                first.clone(),
            )));
        }
        // A fourth that fails is dropped; the others carry on.
        let failing = tokio::spawn(closing_listener(listener(&gw, "events").await, wire.len()));

        let start = Instant::now();
        let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
            .await
            .expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack).await.expect("ack");
        assert_eq!(ack, [ACK]);
        client.handle_input(&ack).expect("ack parses");
        // The first message and End together, as a one-way client closing at once sends them.
        let mut sent = first.clone();
        sent.push(END);
        tcp.write_all(&sent).await.expect("message and end");
        assert_eq!(read_all(&mut tcp).await, [END], "the gateway answers End");

        failing.await.expect("failing listener");
        for listener in slow {
            let (arrived, got) = listener.await.expect("slow listener");
            assert_eq!(got, sent, "every listener gets the whole session");
            let took = arrived - start;
            assert!(
                took >= DELAY,
                "the listeners' delay was honoured ({took:?})"
            );
            // One after another, three listeners would take at least three delays.
            assert!(
                took < 2 * DELAY,
                "the first message reached every listener after {took:?}"
            );
        }
    })
    .await;
}

/// A framing Fault record.
fn fault_record(code: FaultCode) -> Vec<u8> {
    let mut out = Vec::new();
    Record::Fault(code.uri().into()).encode(&mut out);
    out
}

#[tokio::test]
async fn a_listener_closing_before_the_preamble_ack_gets_the_sender_a_fault() {
    within(async {
        let gw = gateway(|_| {}).await;
        let mut calc = listener(&gw, "calc").await;
        let good = token(&gw, "calc");

        // The token in the first message: the gateway reads it, then pairs.
        let (_, wire) = preamble(&via(&gw, "calc"));
        let closing = tokio::spawn(closing_listener(calc, wire.len()));
        let (answer, events) = first_call(&gw, "calc", Some(&good)).await;
        closing.await.expect("listener");
        let mut expected = vec![ACK];
        expected.extend(fault_record(FaultCode::EndpointNotFound));
        assert_eq!(answer, expected, "PreambleAck, EndpointNotFound, close");
        assert_eq!(
            events,
            [
                Event::PreambleAcked,
                Event::Fault(FaultCode::EndpointNotFound)
            ]
        );

        // The token on the Via: the first message, which the client sends as soon as it is
        // acked, goes to the listener with the session; the fault still arrives, then a clean
        // close.
        calc = listener(&gw, "calc").await;
        let encoded = ferry_hc::address::encode_query_value(&good);
        let via_with_token = format!("{}?sb-hc-token={encoded}", via(&gw, "calc"));
        let (client, wire) = preamble(&via_with_token);
        // The listener gets the preamble without the token.
        let (_, relayed) = preamble(&via(&gw, "calc"));
        let closing = tokio::spawn(closing_listener(calc, relayed.len()));
        let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
            .await
            .expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack).await.expect("ack");
        assert_eq!(ack, [ACK]);
        let mut out = Vec::new();
        Record::SizedEnvelope(request("urn:add", None).into()).encode(&mut out);
        tcp.write_all(&out).await.expect("request");
        closing.await.expect("listener");
        let rest = read_all(&mut tcp).await;
        assert_eq!(rest, fault_record(FaultCode::EndpointNotFound));
        assert_eq!(
            events_of(client, &[&ack[..], &rest].concat()),
            [
                Event::PreambleAcked,
                Event::Fault(FaultCode::EndpointNotFound)
            ]
        );

        // The gateway serves the next session: a listener that acks and echoes.
        let calc = listener(&gw, "calc").await;
        let (mut client, wire) = preamble(&via_with_token);
        let payload = request("urn:add", None);
        let mut records = Vec::new();
        Record::SizedEnvelope(payload.clone().into()).encode(&mut records);
        Record::End.encode(&mut records);
        let server = tokio::spawn(echo_listener(calc, relayed.len(), records.len()));
        let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
            .await
            .expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack).await.expect("ack");
        client.handle_input(&ack).expect("ack parses");
        client.send_envelope(&payload).expect("send");
        client.close().expect("end");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        assert_eq!(out, records);
        tcp.write_all(&out).await.expect("request and end");
        let reply = read_all(&mut tcp).await;
        client.handle_input(&reply).expect("reply parses");
        let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
        assert_eq!(
            events,
            [Event::PreambleAcked, Event::Envelope(payload), Event::End]
        );
        server.await.expect("echo listener");
    })
    .await;
}

/// Acks the preamble, then echoes the `len` bytes that follow it (the client's records: its
/// message and its End) back unchanged.
async fn echo_listener(mut listener: Listener, preamble_len: usize, len: usize) {
    let incoming = listener.accept().await.expect("accept command");
    let mut stream = incoming.accept().await.expect("rendezvous");
    let mut got = vec![0u8; preamble_len];
    stream.read_exact(&mut got).await.expect("preamble");
    stream.write_all(&[ACK]).await.expect("ack");
    let mut records = vec![0u8; len];
    stream.read_exact(&mut records).await.expect("the session");
    stream.write_all(&records).await.expect("echo");
    close(stream).await;
}

#[tokio::test]
async fn a_refused_sender_that_keeps_sending_is_cut_off() {
    within(async {
        // A long close timeout: only the drain's byte cap can end the linger early.
        let gw = gateway(|c| {
            c.dynamic_paths = false;
            c.timeouts.close = Duration::from_secs(30);
        })
        .await;
        let (_client, wire) = preamble(&via(&gw, "nowhere"));
        let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
            .await
            .expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let (mut rd, mut wr) = tcp.into_split();
        let flood = tokio::spawn(async move {
            let chunk = vec![0x55u8; 16 * 1024];
            let mut sent = 0usize;
            while wr.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(STEP, rd.read_to_end(&mut answer)).await;
        let sent = tokio::time::timeout(Duration::from_secs(5), flood)
            .await
            .expect("the gateway stopped draining well before its 30 s close timeout")
            .expect("flood task");
        assert!(
            sent < 64 * 1024 * 1024,
            "the gateway cut the flood off early ({sent} bytes sent)"
        );
        assert!(
            answer.len() >= 2 && answer[0] == 0x08,
            "the refused sender got a framing Fault record first: {answer:02x?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_singleton_sized_sender_without_a_valid_via_token_is_refused_at_once() {
    within(async {
        let gw = gateway(|c| c.timeouts.handshake = Duration::from_secs(30)).await;
        let _listener = listener(&gw, "calc").await;
        for (path, query) in [
            ("calc", String::new()),
            (
                "calc",
                format!(
                    "?sb-hc-token={}",
                    ferry_hc::address::encode_query_value(&forged(&gw, "calc"))
                ),
            ),
            ("nowhere", String::new()),
        ] {
            let config = ClientConfig {
                mode: Mode::SingletonSized,
                ..ClientConfig::net_tcp(format!("{}{query}", via(&gw, path)))
            };
            let mut client = Session::client(config, Limits::default()).expect("client session");
            let mut wire = Vec::new();
            client.poll_transmit(&mut wire);
            let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
                .await
                .expect("connect");
            tcp.write_all(&wire).await.expect("preamble");
            // Raw octets follow the preamble in this mode; the gateway must not wait for
            // (or buffer) a message that never comes before answering.
            let _ = tcp.write_all(&[0x42; 4096]).await;
            let start = Instant::now();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(STEP, tcp.read_to_end(&mut answer)).await;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{path}{query}: answered within the handshake timeout, not at its end ({:?})",
                start.elapsed()
            );
            assert_eq!(
                answer,
                fault_record(FaultCode::EndpointNotFound),
                "{path}{query}: a framing fault, the same for existing and missing paths"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_a_fan_out_waiting_for_its_listeners() {
    shutdown_while_a_sender_waits(true).await;
}

#[tokio::test]
async fn shutdown_ends_a_sender_waiting_for_its_listener() {
    shutdown_while_a_sender_waits(false).await;
}

/// A sender on a path (a fan-out one or not) whose only listener never takes its accept;
/// the gateway shuts down while the sender waits: shutdown is prompt and the sender is told
/// the endpoint went away, with a clean close.
async fn shutdown_while_a_sender_waits(fan_out: bool) {
    /// Well under the rendezvous timeout, and under shutdown's own bound (twice the close
    /// timeout), so only ending the wait at once meets it.
    const BOUND: Duration = Duration::from_secs(5);
    within(async {
        let gw = gateway(|c| {
            c.paths = vec![PathConfig {
                anonymous_senders: true,
                fan_out,
                ..PathConfig::new("events")
            }];
            c.timeouts.rendezvous = Duration::from_secs(20);
            c.timeouts.close = Duration::from_secs(10);
        })
        .await;
        // Registered, but it never takes the accept: its rendezvous never opens.
        let silent = listener(&gw, "events").await;
        let (client, wire) = preamble(&via(&gw, "events"));
        let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
            .await
            .expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack).await.expect("ack");
        assert_eq!(ack, [ACK]);
        let mut first = Vec::new();
        Record::SizedEnvelope(request("urn:notify/0", None).into()).encode(&mut first);
        tcp.write_all(&first).await.expect("first message");
        // The gateway has asked the listener and waits for its rendezvous.
        while gw.pending_rendezvous() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let start = Instant::now();
        let (closed, stopped) = tokio::join!(
            async {
                let mut rest = Vec::new();
                let read = tokio::time::timeout(BOUND, tcp.read_to_end(&mut rest)).await;
                drop(tcp);
                (read, rest)
            },
            async {
                gw.shutdown().await;
                start.elapsed()
            },
        );
        assert!(
            stopped < BOUND,
            "fan_out {fan_out}: shutdown took {stopped:?}, waiting on a listener that never \
             opened its rendezvous"
        );
        let (read, rest) = closed;
        read.expect("the sender's connection closed at shutdown")
            .expect("a clean close, not a reset");
        assert_eq!(
            events_of(client, &[&ack[..], &rest].concat()),
            [
                Event::PreambleAcked,
                Event::Fault(FaultCode::EndpointUnavailable)
            ],
            "fan_out {fan_out}: the sender is told the endpoint went away"
        );
        drop(silent);
    })
    .await;
}

/// What a listener behind the net.tcp port received for one session: the Via and the
/// envelopes, read with a server session of its own, and every byte.
struct Received {
    via: String,
    envelopes: Vec<Vec<u8>>,
    bytes: Vec<u8>,
}

/// Accepts one rendezvous and reads the session to its End as an NMF server would.
async fn receiving_listener(mut listener: Listener) -> Received {
    let incoming = listener.accept().await.expect("accept command");
    let mut stream = incoming.accept().await.expect("rendezvous");
    let limits = Limits {
        max_envelope_bytes: 8 << 20,
        ..Limits::default()
    };
    let mut server = Session::server(limits);
    let mut out = Received {
        via: String::new(),
        envelopes: Vec::new(),
        bytes: Vec::new(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(STEP, stream.read(&mut buf))
            .await
            .expect("the session arrives in time")
            .expect("read");
        assert!(n > 0, "the stream ended before the session's End");
        out.bytes.extend_from_slice(&buf[..n]);
        server
            .handle_input(&buf[..n])
            .expect("the listener's bytes parse");
        while let Some(event) = server.poll_event() {
            match event {
                Event::PreambleReceived(p) => {
                    out.via = p.via;
                    server.accept().expect("accept");
                    let mut ack = Vec::new();
                    server.poll_transmit(&mut ack);
                    stream.write_all(&ack).await.expect("ack");
                }
                Event::Envelope(e) => out.envelopes.push(e),
                Event::End => {
                    stream.write_all(&[END]).await.expect("end");
                    close(stream).await;
                    return out;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// Sends a whole session (preamble, `messages`, End) once the gateway acks the preamble;
/// returns what the gateway sent back.
async fn send_session(gw: &RunningGateway, via: &str, messages: &[Vec<u8>]) -> Vec<u8> {
    send_session_of(gw, ClientConfig::net_tcp(via), messages).await
}

/// As [`send_session`], for a session as `config` says.
async fn send_session_of(
    gw: &RunningGateway,
    config: ClientConfig,
    messages: &[Vec<u8>],
) -> Vec<u8> {
    let (_client, wire) = preamble_of(config);
    let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
        .await
        .expect("connect");
    tcp.write_all(&wire).await.expect("preamble");
    let mut ack = [0u8; 1];
    tokio::time::timeout(STEP, tcp.read_exact(&mut ack))
        .await
        .expect("ack in time")
        .expect("ack");
    assert_eq!(ack, [ACK], "the gateway acks the preamble");
    let mut out = Vec::new();
    for m in messages {
        Record::SizedEnvelope(m.as_slice().into()).encode(&mut out);
    }
    out.push(END);
    tcp.write_all(&out).await.expect("session");
    read_all(&mut tcp).await
}

/// A listener on `calc` that receives one session, and a sender's token for it with the
/// address that carries it too (`…/calc?x=1&sb-hc-token=…`).
async fn tokened_session(
    gw: &RunningGateway,
) -> (tokio::task::JoinHandle<Received>, String, String) {
    let listening = tokio::spawn(receiving_listener(listener(gw, "calc").await));
    let token = token(gw, "calc");
    let encoded = ferry_hc::address::encode_query_value(&token);
    let address = format!("{}?x=1&sb-hc-token={encoded}", via(gw, "calc"));
    (listening, token, address)
}

#[tokio::test]
async fn sender_credentials_never_reach_the_listener() {
    within(async {
        let gw = gateway(|_| {}).await;
        let (listening, token, address) = tokened_session(&gw).await;
        // A WCF client addressing a tokened URI writes it as the Via and as the To of every
        // message (a session string, announced once in the first message's table), and a
        // client that carries its token in the RelayAccessToken header adds it to every
        // message (named, after the first, by the session strings the first announced).
        let mut codec = BinarySession::new(ferry_nbfx::Limits::default());
        let mut message = |n: u32, relay_token: bool| {
            let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
            env.headers.action = Some(format!("urn:call{n}"));
            env.headers.message_id =
                Some(format!("urn:uuid:00000000-0000-0000-0000-00000000000{n}"));
            env.headers.to = Some(address.clone());
            env.headers.relay_token =
                relay_token.then(|| RelayAccessToken::new("uuid:1", token.as_str()));
            env.body = ferry_soap::Body::Payload(vec![
                ferry_nbfx::Element::new("", ferry_nbfx::XmlString::session("Payload"), "urn:calc")
                    .with_text(ferry_nbfx::Text::Chars(format!("body {n}").into())),
            ]);
            codec.encode(&env).expect("encode")
        };
        let messages = [message(1, true), message(2, true), message(3, false)];
        let answer = send_session(&gw, &address, &messages).await;
        assert_eq!(answer.last(), Some(&END), "the session ends normally");

        let got = listening.await.expect("listener task");
        let secret = token.split("sig=").nth(1).expect("a signature");
        let secret = secret.split('&').next().expect("signature text");
        for form in [
            secret.to_owned(),
            ferry_hc::address::encode_query_value(secret),
            base64_of(token.as_bytes()),
        ] {
            assert!(
                !contains(&got.bytes, form.as_bytes()),
                "the listener received the sender's token ({form})"
            );
        }
        assert_eq!(got.via, format!("{}?x=1", via(&gw, "calc")));
        // The listener's session dictionary stays in step with the sender's: both messages
        // decode, the second naming strings the first one's table announced.
        let mut decoder = BinarySession::new(ferry_nbfx::Limits::default());
        assert_eq!(got.envelopes.len(), 3);
        for (n, payload) in got.envelopes.iter().enumerate() {
            let env = decoder
                .decode(payload)
                .expect("the listener decodes the message");
            assert_eq!(
                env.headers.action.as_deref(),
                Some(&*format!("urn:call{}", n + 1))
            );
            assert_eq!(env.headers.to.as_deref(), Some(&*got.via));
            assert!(env.headers.relay_token.is_none(), "no token header");
            assert_eq!(
                env.payload().map(|p| p.text()),
                Some(format!("body {}", n + 1))
            );
        }
    })
    .await;
}

#[tokio::test]
async fn sender_credentials_never_reach_the_listener_in_text_sessions() {
    within(async {
        let gw = gateway(|_| {}).await;
        let (listening, token, address) = tokened_session(&gw).await;
        let encoded = ferry_hc::address::encode_query_value(&token);
        // In XML the To is text of its own in every message, its query escaped (`&amp;`).
        let message = |n: u32| {
            let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
            env.headers.action = Some(format!("urn:call{n}"));
            env.headers.to = Some(address.clone());
            env.headers.relay_token = Some(RelayAccessToken::new("uuid:1", token.as_str()));
            env.encode_text().into_bytes()
        };
        let config = ClientConfig {
            encoding: Encoding::Known(KnownEncoding::Soap12Utf8),
            ..ClientConfig::net_tcp(address.clone())
        };
        let answer = send_session_of(&gw, config, &[message(1), message(2)]).await;
        assert_eq!(answer.last(), Some(&END), "the session ends normally");

        let got = listening.await.expect("listener task");
        for form in [token.as_bytes(), encoded.as_bytes(), b"sb-hc-token"] {
            assert!(
                !contains(&got.bytes, form),
                "the listener received the token"
            );
        }
        assert_eq!(got.envelopes.len(), 2);
        for (n, payload) in got.envelopes.iter().enumerate() {
            let text = std::str::from_utf8(payload).expect("utf-8");
            let env = Envelope::decode_text(text).expect("the listener decodes the message");
            assert_eq!(env.headers.to, Some(format!("{}?x=1", via(&gw, "calc"))));
            assert_eq!(env.headers.action, Some(format!("urn:call{}", n + 1)));
            assert!(env.headers.relay_token.is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn a_message_that_hides_what_it_carries_ends_the_session() {
    within(async {
        let gw = gateway(|_| {}).await;
        let mut l = listener(&gw, "calc").await;
        let token = token(&gw, "calc");
        // The first message is read and passes; the second is not binary XML, so whatever it
        // carries cannot be found: the listener's stream is cut, not handed the bytes.
        let mut first = Vec::new();
        Record::SizedEnvelope(request("urn:one", Some(&token)).into()).encode(&mut first);
        let mut second = Vec::new();
        Record::SizedEnvelope(vec![0x00, 0xFF, 0x13, 0x37].into()).encode(&mut second);
        let (preamble_len, wire) = {
            let (_client, wire) = preamble(&via(&gw, "calc"));
            (wire.len(), wire)
        };
        let (got_first, first_arrived) = tokio::sync::oneshot::channel();
        let listening = tokio::spawn(async move {
            let incoming = l.accept().await.expect("accept command");
            let mut stream = incoming.accept().await.expect("rendezvous");
            let mut all = Vec::new();
            let mut buf = vec![0u8; 4096];
            let mut got_first = Some(got_first);
            loop {
                match tokio::time::timeout(STEP, stream.read(&mut buf)).await {
                    Ok(Ok(0)) => return (all, true),
                    Ok(Ok(n)) => {
                        if all.is_empty() {
                            // The preamble: ack it as a server would.
                            stream.write_all(&[ACK]).await.expect("ack");
                        }
                        all.extend_from_slice(&buf[..n]);
                        // The first message is in (less its token header, so shorter).
                        if all.len() > preamble_len + 64
                            && let Some(tx) = got_first.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Err(_)) => return (all, false),
                    Err(_) => panic!("the listener's stream was neither ended nor cut"),
                }
            }
        });
        let mut tcp = TcpStream::connect(gw.nettcp_addr().expect("net.tcp port"))
            .await
            .expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack).await.expect("ack");
        tcp.write_all(&first).await.expect("first message");
        tokio::time::timeout(STEP, first_arrived)
            .await
            .expect("the first message reaches the listener")
            .expect("listener task");
        tcp.write_all(&second).await.expect("second message");
        tcp.write_all(&[END]).await.expect("end");
        let _ = read_all(&mut tcp).await;
        let (bytes, clean) = listening.await.expect("listener task");
        assert!(
            !clean,
            "a cut session must not look finished to the listener"
        );
        assert!(
            !contains(&bytes, &second),
            "the unreadable message was passed on"
        );
    })
    .await;
}

#[tokio::test]
async fn a_large_first_message_streams_through_after_its_token() {
    within(async {
        let gw = gateway(|_| {}).await;
        let listening = tokio::spawn(receiving_listener(listener(&gw, "calc").await));
        let token = token(&gw, "calc");
        let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        env.headers.action = Some("urn:upload".into());
        env.headers.relay_token = Some(RelayAccessToken::new("uuid:1", token.as_str()));
        // 4 MiB of body: far past the window the gateway reads before authorising.
        let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        env.body = ferry_soap::Body::Payload(vec![
            ferry_nbfx::Element::new("", ferry_nbfx::XmlString::inline("Data"), "urn:calc")
                .with_text(ferry_nbfx::Text::Bytes(body.clone().into())),
        ]);
        let message = BinarySession::new(ferry_nbfx::Limits::default())
            .encode(&env)
            .expect("encode");
        let answer = send_session(&gw, &via(&gw, "calc"), &[message]).await;
        assert_eq!(answer.last(), Some(&END));
        let got = listening.await.expect("listener task");
        let limits = ferry_nbfx::Limits {
            max_document_bytes: 8 << 20,
            max_array_length: 8 << 20,
            max_string_bytes: 8 << 20,
            ..ferry_nbfx::Limits::default()
        };
        let env = BinarySession::new(limits)
            .decode(&got.envelopes[0])
            .expect("the listener decodes the message");
        assert!(env.headers.relay_token.is_none());
        assert_eq!(env.payload().and_then(|p| p.bytes()), Some(body));
    })
    .await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
