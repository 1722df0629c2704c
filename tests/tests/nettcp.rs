//! The gateway's net.tcp front end, driven with our MC-NMF client session on one side and an
//! SDK listener that reads the relayed stream raw on the other, so every byte is checked.
//! (Mono's NetTcpBinding client against the same port is in `interop/`.)

use std::net::SocketAddr;
use std::time::Duration;

use ferry_gateway::{PathConfig, RunningGateway};
use ferry_nmf::{ClientConfig, Event, FaultCode, Limits, Session};
use ferry_sdk::{Endpoint, HybridStream, Listener, SasKeyProvider};
use ferry_soap::{AddressingVersion, BinarySession, Envelope, RelayAccessToken, SoapVersion};
use ferry_tests::{STEP, gateway, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP * 3, f)
        .await
        .expect("test timed out")
}

fn endpoint(gw: &RunningGateway, path: &str) -> Endpoint {
    let addr = gw.plain_addr().expect("plain port");
    let mut endpoint = Endpoint::new(&format!("ws://{addr}"), path).expect("endpoint");
    endpoint.set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    endpoint
}

fn nettcp(gw: &RunningGateway) -> SocketAddr {
    gw.nettcp_addr().expect("net.tcp port")
}

/// A client session's bytes: the preamble for `via`.
fn preamble(via: &str) -> (Session, Vec<u8>) {
    let mut client =
        Session::client(ClientConfig::net_tcp(via), Limits::default()).expect("client session");
    let mut wire = Vec::new();
    client.poll_transmit(&mut wire);
    (client, wire)
}

/// Connects to `addr`, sends the preamble for `via` and waits for the gateway's PreambleAck:
/// the client session, its connection and the preamble's bytes.
async fn acked_session(addr: SocketAddr, via: &str) -> (Session, TcpStream, Vec<u8>) {
    let (mut client, wire) = preamble(via);
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&wire).await.expect("preamble");
    assert_eq!(
        next_event(&mut tcp, &mut client).await,
        Some(Event::PreambleAcked)
    );
    (client, tcp, wire)
}

/// Reads from `tcp` into `session` until it yields an event.
async fn next_event(tcp: &mut TcpStream, session: &mut Session) -> Option<Event> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(e) = session.poll_event() {
            return Some(e);
        }
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        session.handle_input(&buf[..n]).ok()?;
    }
}

/// Everything `tcp` sends until it closes.
async fn read_all(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut all))
        .await
        .expect("the gateway closed")
        .expect("read");
    all
}

fn fault_record(code: FaultCode) -> Vec<u8> {
    let mut out = Vec::new();
    ferry_nmf::Record::Fault(code.uri().into()).encode(&mut out);
    out
}

fn request(action: &str, token: Option<&str>) -> Envelope {
    let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    env.headers.action = Some(action.into());
    env.headers.message_id = Some("urn:uuid:00000000-0000-0000-0000-000000000001".into());
    env.headers.to = Some("net.tcp://gateway/calc".into());
    env.headers.relay_token = token.map(|t| RelayAccessToken::new("uuid:1", t));
    env
}

/// The listener side: reads the relayed stream raw, checks it starts with `expected`, then
/// plays an NMF server (ack, echo each envelope back, answer End).
async fn serve_raw(mut stream: HybridStream, expected: Vec<u8>) {
    let mut got = vec![0u8; expected.len()];
    stream
        .read_exact(&mut got)
        .await
        .expect("the preamble arrives");
    assert_eq!(got, expected, "the preamble arrives byte for byte");
    let mut server = Session::server(Limits::default());
    server
        .handle_input(&expected)
        .expect("our own preamble parses");
    assert!(matches!(
        server.poll_event(),
        Some(Event::PreambleReceived(_))
    ));
    server.accept().expect("accept");
    let mut buf = [0u8; 4096];
    loop {
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        if !out.is_empty() {
            stream.write_all(&out).await.expect("write");
        }
        while let Some(event) = server.poll_event() {
            match event {
                Event::Envelope(payload) => server.send_envelope(&payload).expect("echo"),
                Event::End => server.close().expect("end"),
                _ => {}
            }
        }
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        if !out.is_empty() {
            stream.write_all(&out).await.expect("write");
        }
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            let _ = stream.shutdown().await;
            return;
        }
        server.handle_input(&buf[..n]).expect("listener input");
    }
}

#[tokio::test]
async fn a_session_reaches_the_listener_with_its_preamble_intact() {
    within(async {
        let gw = gateway(|_| {}).await;
        let mut listener = Listener::open(endpoint(&gw, "calc"))
            .await
            .expect("listener");
        let via = format!("net.tcp://127.0.0.1:{}/calc", nettcp(&gw).port());
        let (mut client, wire) = preamble(&via);
        let mut preamble_bytes = wire.clone();
        // Everything up to PreambleEnd is replayed; the listener must see exactly that.
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        let expected = std::mem::take(&mut preamble_bytes);
        assert_eq!(
            next_event(&mut tcp, &mut client).await,
            Some(Event::PreambleAcked)
        );

        // The first message carries the token in a RelayAccessToken header.
        let mut ours = BinarySession::new(ferry_nbfx::Limits::default());
        let env = request("urn:add", Some(&token(&gw, "calc")));
        let payload = ours.encode(&env).expect("encode");
        client.send_envelope(&payload).expect("send");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        tcp.write_all(&out).await.expect("first message");

        let incoming = listener.accept().await.expect("accept command");
        assert_eq!(incoming.header("Ferry-Ingress"), Some("net.tcp"));
        let stream = incoming.accept().await.expect("rendezvous");
        let server = tokio::spawn(serve_raw(stream, expected));

        // The echo comes back through, as the listener got it: the same message without the
        // sender's token. A second message too (its session strings still resolve); then End
        // both ways.
        let mut echoed = BinarySession::new(ferry_nbfx::Limits::default());
        let Some(Event::Envelope(first)) = next_event(&mut tcp, &mut client).await else {
            panic!("the first message's echo");
        };
        let mut without_token = env;
        without_token.headers.relay_token = None;
        assert_eq!(echoed.decode(&first).expect("decodes"), without_token);
        assert!(first.len() < payload.len(), "the token header was cut out");
        let second_env = request("urn:second", None);
        let second = ours.encode(&second_env).expect("encode");
        client.send_envelope(&second).expect("send");
        client.close().expect("end");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        tcp.write_all(&out).await.expect("second + end");
        assert_eq!(
            next_event(&mut tcp, &mut client).await,
            Some(Event::Envelope(second.clone()))
        );
        assert_eq!(echoed.decode(&second).expect("decodes"), second_env);
        assert_eq!(next_event(&mut tcp, &mut client).await, Some(Event::End));
        drop(tcp);
        server.await.expect("listener side");

        // Counted like the WebSocket front end's senders: one connection, its bytes.
        let metrics = gw.metrics();
        let sample = |name: &str, labels: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} {labels} in:\n{metrics}"))
        };
        let success = r#"entity="calc",result="success""#;
        assert_eq!(sample("ferry_sender_connections_total", success), 1.0);
        let up = sample(
            "ferry_bytes_transferred_total",
            r#"direction="to_listener""#,
        );
        let down = sample("ferry_bytes_transferred_total", r#"direction="to_sender""#);
        // The preamble, then the messages (without the token) and End.
        assert!(up > wire.len() as f64 && down > 0.0, "{up} {down}");
    })
    .await;
}

#[tokio::test]
async fn refusals_are_framing_faults_or_soap_faults_never_silence() {
    within(async {
        let gw = gateway(|c| {
            c.dynamic_paths = false;
            c.paths = vec![PathConfig::new("calc")];
        })
        .await;
        let port = nettcp(&gw).port();

        // Unknown path → EndpointNotFound, before any ack.
        let (_, wire) = preamble(&format!("net.tcp://127.0.0.1:{port}/nowhere"));
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        assert_eq!(
            read_all(&mut tcp).await,
            fault_record(FaultCode::EndpointNotFound)
        );

        // Bad version → UnsupportedVersion; an unknown mode → UnsupportedMode.
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&[0x00, 0x07, 0x00])
            .await
            .expect("bad version");
        assert_eq!(
            read_all(&mut tcp).await,
            fault_record(FaultCode::UnsupportedVersion)
        );
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&[0x00, 0x01, 0x00, 0x01, 0x09])
            .await
            .expect("bad mode");
        assert_eq!(
            read_all(&mut tcp).await,
            fault_record(FaultCode::UnsupportedMode)
        );

        // An upgrade other than TLS (Windows stream security) → UpgradeInvalid.
        let via = format!("net.tcp://127.0.0.1:{port}/calc");
        let mut upgrade = Vec::new();
        for record in [
            ferry_nmf::Record::Version { major: 1, minor: 0 },
            ferry_nmf::Record::Mode(ferry_nmf::Mode::Duplex),
            ferry_nmf::Record::Via(via.as_str().into()),
            ferry_nmf::Record::KnownEncoding(ferry_nmf::KnownEncoding::BinarySession),
            ferry_nmf::Record::UpgradeRequest("application/negotiate".into()),
        ] {
            record.encode(&mut upgrade);
        }
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&upgrade).await.expect("upgrade");
        assert_eq!(
            read_all(&mut tcp).await,
            fault_record(FaultCode::UpgradeInvalid)
        );

        // A known path but no token: acked, then the first request gets a SOAP fault, End.
        let (mut client, mut tcp, _) = acked_session(nettcp(&gw), &via).await;
        let payload = BinarySession::new(ferry_nbfx::Limits::default())
            .encode(&request("urn:add", None))
            .expect("encode");
        client.send_envelope(&payload).expect("send");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        tcp.write_all(&out).await.expect("request");
        let Some(Event::Envelope(reply)) = next_event(&mut tcp, &mut client).await else {
            panic!("expected a SOAP fault");
        };
        let reply = BinarySession::new(ferry_nbfx::Limits::default())
            .decode(&reply)
            .expect("the fault decodes");
        let fault = reply.fault().expect("a fault");
        assert!(fault.is_sender());
        assert!(fault.reason.starts_with("401"), "{}", fault.reason);
        assert_eq!(
            reply.headers.relates_to.as_deref(),
            Some("urn:uuid:00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(next_event(&mut tcp, &mut client).await, Some(Event::End));

        // A valid token on the Via but no listener → EndpointNotFound after the ack.
        let via = format!(
            "net.tcp://127.0.0.1:{port}/calc?sb-hc-token={}",
            ferry_hc::address::encode_query_value(&token(&gw, "calc"))
        );
        let (mut client, mut tcp, _) = acked_session(nettcp(&gw), &via).await;
        assert_eq!(
            next_event(&mut tcp, &mut client).await,
            Some(Event::Fault(FaultCode::EndpointNotFound))
        );

        // Garbage: a fault or a close, and the gateway serves the next session.
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("garbage");
        let answer = read_all(&mut tcp).await;
        let invalid = FaultCode::Other(
            "http://schemas.microsoft.com/ws/2006/05/framing/faults/InvalidRecordSequence".into(),
        );
        assert_eq!(answer, fault_record(invalid));
        let (_, wire) = preamble(&format!("net.tcp://127.0.0.1:{port}/nowhere"));
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        assert_eq!(
            read_all(&mut tcp).await,
            fault_record(FaultCode::EndpointNotFound)
        );
    })
    .await;
}

#[tokio::test]
async fn a_fan_out_path_delivers_one_session_to_every_listener() {
    within(async {
        let gw = gateway(|c| {
            c.paths = vec![PathConfig {
                anonymous_senders: true,
                fan_out: true,
                ..PathConfig::new("events")
            }];
        })
        .await;
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(
                Listener::open(endpoint(&gw, "events"))
                    .await
                    .expect("listener"),
            );
        }
        let via = format!("net.tcp://127.0.0.1:{}/events", nettcp(&gw).port());
        let (mut client, wire) = preamble(&via);
        let mut tcp = TcpStream::connect(nettcp(&gw)).await.expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        // Each listener acks its own copy of the session.
        let mut servers = Vec::new();
        for listener in &mut listeners {
            let incoming = listener.accept().await.expect("accept");
            let mut stream = incoming.accept().await.expect("rendezvous");
            let expected = wire.clone();
            servers.push(tokio::spawn(async move {
                let mut got = vec![0u8; expected.len()];
                stream.read_exact(&mut got).await.expect("preamble");
                assert_eq!(got, expected);
                stream.write_all(&[0x0B]).await.expect("ack");
                // The rest of the session, until the sender's End.
                let mut rest = Vec::new();
                let mut buf = [0u8; 4096];
                while !rest.ends_with(&[0x07]) {
                    let n = stream.read(&mut buf).await.expect("read");
                    assert!(n > 0, "the session ended early");
                    rest.extend_from_slice(&buf[..n]);
                }
                stream.write_all(&[0x07]).await.expect("end");
                rest
            }));
        }
        assert_eq!(
            next_event(&mut tcp, &mut client).await,
            Some(Event::PreambleAcked)
        );
        let mut ours = BinarySession::new(ferry_nbfx::Limits::default());
        let mut sent = Vec::new();
        for i in 0..5 {
            let payload = ours
                .encode(&request(&format!("urn:notify/{i}"), None))
                .expect("encode");
            client.send_envelope(&payload).expect("send");
        }
        client.close().expect("end");
        client.poll_transmit(&mut sent);
        tcp.write_all(&sent).await.expect("messages");
        assert_eq!(next_event(&mut tcp, &mut client).await, Some(Event::End));
        for server in servers {
            assert_eq!(
                server.await.expect("listener"),
                sent,
                "every listener got every byte"
            );
        }
    })
    .await;
}

/// The NetTcpRelayBinding handshake as the client library performs it, over `io`, up to the
/// reply; returns the reply envelope.
async fn relay_handshake<S>(io: &mut S, token: Option<&str>, uri: &str) -> Envelope
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    env.headers.action = Some(
        "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/RelayedConnect".into(),
    );
    env.headers.message_id = Some("urn:uuid:00000000-0000-0000-0000-000000000002".into());
    env.headers.relay_token = token.map(|t| RelayAccessToken::new("uuid:2", t));
    env.headers.to = Some(uri.into());
    let bytes = env.encode_binary().expect("encode");
    let mut out = i32::try_from(bytes.len())
        .expect("small")
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(&bytes);
    io.write_all(&out).await.expect("message");
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.expect("reply length");
    let mut reply = vec![0u8; usize::try_from(i32::from_le_bytes(len)).expect("length")];
    io.read_exact(&mut reply).await.expect("reply");
    Envelope::decode_binary(&reply, None, ferry_nbfx::Limits::default()).expect("reply decodes")
}

fn connect_words(uri: &str, ssl: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [&b"connect"[..], uri.as_bytes()] {
        out.extend_from_slice(&i32::try_from(word.len()).expect("small").to_le_bytes());
        out.extend_from_slice(word);
    }
    out.push(ssl);
    out
}

#[tokio::test]
async fn the_relay_binding_handshake_leads_into_a_plain_net_tcp_session() {
    within(async {
        let gw = gateway(|_| {}).await;
        let relayed = gw.relayed_addr().expect("relayed port");
        let mut listener = Listener::open(endpoint(&gw, "calc"))
            .await
            .expect("listener");
        let uri = "sb://localhost/calc";

        // Over TLS (the 0x01 byte), trusting the gateway's development CA.
        let pem = gw.dev_ca_pem().expect("dev CA");
        let roots = ferry_net::tls::roots_from_pem(pem.as_bytes()).expect("roots");
        let config = ferry_net::tls::client_config(roots, &[]).expect("client config");
        let mut tcp = TcpStream::connect(relayed).await.expect("connect");
        tcp.write_all(&connect_words(uri, 0x01))
            .await
            .expect("words");
        let server_name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .expect("tls");
        let accepted = tokio::spawn(async move {
            let incoming = listener.accept().await.expect("accept");
            let stream = incoming.accept().await.expect("rendezvous");
            (listener, stream)
        });
        let reply = relay_handshake(&mut tls, Some(&token(&gw, "calc")), uri).await;
        assert!(reply.fault().is_none(), "{reply:?}");
        assert!(
            reply
                .headers
                .action
                .as_deref()
                .is_some_and(|a| a.ends_with("RelayedConnectReply"))
        );
        // Now the pipe carries NMF end to end: the listener acks the preamble itself.
        let (_listener, stream) = accepted.await.expect("listener side");
        let (mut client, wire) = preamble(uri);
        let server = tokio::spawn(serve_raw(stream, wire.clone()));
        tls.write_all(&wire).await.expect("preamble");
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await.expect("ack");
        client.handle_input(&buf[..n]).expect("ack parses");
        assert_eq!(client.poll_event(), Some(Event::PreambleAcked));
        let payload = BinarySession::new(ferry_nbfx::Limits::default())
            .encode(&request("urn:add", None))
            .expect("encode");
        client.send_envelope(&payload).expect("send");
        client.close().expect("end");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        tls.write_all(&out).await.expect("message");
        let mut events = Vec::new();
        while events.len() < 2 {
            let n = tokio::time::timeout(STEP, tls.read(&mut buf))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(n > 0, "the pipe closed early");
            client.handle_input(&buf[..n]).expect("reply parses");
            events.extend(std::iter::from_fn(|| client.poll_event()));
        }
        assert_eq!(events, [Event::Envelope(payload), Event::End]);
        drop(tls);
        server.await.expect("listener");

        // Refusals are SOAP faults: no token, and a path nobody listens on.
        let mut tcp = TcpStream::connect(relayed).await.expect("connect");
        tcp.write_all(&connect_words(uri, 0x00))
            .await
            .expect("words");
        let reply = relay_handshake(&mut tcp, None, uri).await;
        let fault = reply.fault().expect("a fault");
        assert!(fault.reason.starts_with("401"), "{}", fault.reason);
        assert_eq!(fault.subcodes[0].local, "AuthenticationFailed");
        let mut tcp = TcpStream::connect(relayed).await.expect("connect");
        tcp.write_all(&connect_words("sb://localhost/idle", 0x00))
            .await
            .expect("words");
        let reply = relay_handshake(&mut tcp, Some(&token(&gw, "idle")), uri).await;
        assert_eq!(
            reply.fault().expect("a fault").subcodes[0].local,
            "EndpointNotFound"
        );

        // Garbage (a 2 GiB "connect" word): the gateway closes at once, without reading it.
        let mut tcp = TcpStream::connect(relayed).await.expect("connect");
        tcp.write_all(&[0xff, 0xff, 0xff, 0x7f, b'x'])
            .await
            .expect("garbage");
        let mut sink = Vec::new();
        let end = tokio::time::timeout(STEP, tcp.read_to_end(&mut sink)).await;
        assert!(matches!(end, Ok(Ok(0)) | Ok(Err(_))), "closed: {end:?}");
    })
    .await;
}

#[tokio::test]
async fn a_second_session_on_one_connection_never_reaches_the_listener() {
    within(async {
        let gw = gateway(|_| {}).await;
        let mut listener = Listener::open(endpoint(&gw, "calc"))
            .await
            .expect("listener");
        let port = nettcp(&gw).port();
        let token = ferry_hc::address::encode_query_value(&token(&gw, "calc"));
        let (_, mut tcp, _) = acked_session(
            nettcp(&gw),
            &format!("net.tcp://127.0.0.1:{port}/calc?sb-hc-token={token}"),
        )
        .await;
        let incoming = listener.accept().await.expect("accept");
        let mut stream = incoming.accept().await.expect("rendezvous");
        // The listener gets the preamble without the sender's token.
        let (_, relayed) = preamble(&format!("net.tcp://127.0.0.1:{port}/calc"));
        let mut got = vec![0u8; relayed.len()];
        stream.read_exact(&mut got).await.expect("the preamble");
        assert_eq!(got, relayed);
        stream.write_all(&[0x0B]).await.expect("ack");
        // End, then at once a second session to another path with no token, as a pooled
        // connection would carry it: it was never routed or checked, so it must not pass.
        let mut evil = vec![0x07];
        let (_, second) = preamble(&format!("net.tcp://127.0.0.1:{port}/admin"));
        evil.extend_from_slice(&second);
        ferry_nmf::Record::SizedEnvelope(vec![1u8; 32].into()).encode(&mut evil);
        tcp.write_all(&evil).await.expect("end + second session");
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
            .await
            .expect("the listener's stream ends")
            .expect("read");
        assert_eq!(
            rest,
            [0x07],
            "the listener saw its session's End, nothing more"
        );
    })
    .await;
}

/// A TLS client trusting the gateway's development CA.
fn tls_connector(gw: &RunningGateway) -> tokio_rustls::TlsConnector {
    let pem = gw.dev_ca_pem().expect("dev CA");
    let roots = ferry_net::tls::roots_from_pem(pem.as_bytes()).expect("roots");
    tokio_rustls::TlsConnector::from(ferry_net::tls::client_config(roots, &[]).expect("config"))
}

/// A gateway whose net.tcp and relayed ports are off loopback (all addresses), reached here
/// through loopback.
async fn public_gateway(insecure: bool) -> (RunningGateway, SocketAddr, SocketAddr) {
    let gw = gateway(|c| {
        c.nettcp_addr = Some("0.0.0.0:0".parse().expect("address"));
        c.relayed_addr = Some("0.0.0.0:0".parse().expect("address"));
        c.insecure = insecure;
    })
    .await;
    let on_loopback = |a: SocketAddr| SocketAddr::from(([127, 0, 0, 1], a.port()));
    let nettcp = on_loopback(gw.nettcp_addr().expect("net.tcp port"));
    let relayed = on_loopback(gw.relayed_addr().expect("relayed port"));
    (gw, nettcp, relayed)
}

#[tokio::test]
async fn off_loopback_net_tcp_takes_tls_and_refuses_sessions_without_it() {
    within(async {
        let (gw, port, _) = public_gateway(false).await;
        let via = format!("net.tcp://localhost:{}/calc", port.port());

        // Without the upgrade: UpgradeInvalid, before any token could be sent.
        let (_, wire) = preamble(&via);
        let mut tcp = TcpStream::connect(port).await.expect("connect");
        tcp.write_all(&wire).await.expect("preamble");
        assert_eq!(
            read_all(&mut tcp).await,
            fault_record(FaultCode::UpgradeInvalid)
        );

        // With it (NetTcpBinding's transport security): TLS from the upgrade on, and the
        // listener gets a plain session without the upgrade record.
        let mut listener = Listener::open(endpoint(&gw, "calc"))
            .await
            .expect("listener");
        let config = ClientConfig {
            upgrade: Some("application/ssl-tls".into()),
            ..ClientConfig::net_tcp(&via)
        };
        let mut client = Session::client(config, Limits::default()).expect("client session");
        let mut wire = Vec::new();
        client.poll_transmit(&mut wire);
        let mut tcp = TcpStream::connect(port).await.expect("connect");
        tcp.write_all(&wire)
            .await
            .expect("preamble up to the upgrade");
        assert_eq!(
            next_event(&mut tcp, &mut client).await,
            Some(Event::UpgradeAccepted)
        );
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tls_connector(&gw)
            .connect(name, tcp)
            .await
            .expect("tls handshake");
        client.upgrade_complete().expect("upgraded");
        let mut ours = BinarySession::new(ferry_nbfx::Limits::default());
        let env = request("urn:add", Some(&token(&gw, "calc")));
        let payload = ours.encode(&env).expect("encode");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        tls.write_all(&out).await.expect("preamble end");
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack).await.expect("ack");
        assert_eq!(ack, [0x0B], "PreambleAck, under TLS");
        client.handle_input(&ack).expect("ack parses");
        client.send_envelope(&payload).expect("send");
        client.close().expect("end");
        let mut out = Vec::new();
        client.poll_transmit(&mut out);
        tls.write_all(&out).await.expect("message and end");

        let incoming = listener.accept().await.expect("accept");
        let mut stream = incoming.accept().await.expect("rendezvous");
        let (_, plain) = preamble(&via);
        let mut got = vec![0u8; plain.len()];
        stream.read_exact(&mut got).await.expect("preamble");
        assert_eq!(got, plain, "a plain preamble: no upgrade record");
        stream.write_all(&[0x0B]).await.expect("ack");
        let mut server = Session::server(Limits::default());
        server.handle_input(&plain).expect("preamble");
        server.accept().expect("accept");
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
            .await
            .expect("the session in time")
            .expect("read");
        server
            .handle_input(&rest)
            .expect("the relayed session parses");
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        let [
            Event::PreambleReceived(_),
            Event::Envelope(first),
            Event::End,
        ] = events.as_slice()
        else {
            panic!("{events:?}");
        };
        let mut without_token = env;
        without_token.headers.relay_token = None;
        assert_eq!(
            BinarySession::new(ferry_nbfx::Limits::default())
                .decode(first)
                .expect("decodes"),
            without_token
        );
    })
    .await;
}

#[tokio::test]
async fn off_loopback_relayed_port_refuses_plain_handshakes() {
    within(async {
        let (gw, _, relayed) = public_gateway(false).await;
        let mut tcp = TcpStream::connect(relayed).await.expect("connect");
        tcp.write_all(&connect_words("sb://localhost/calc", 0x00))
            .await
            .expect("words");
        let reply =
            relay_handshake(&mut tcp, Some(&token(&gw, "calc")), "sb://localhost/calc").await;
        let fault = reply.fault().expect("a fault");
        assert!(fault.reason.contains("requires TLS"), "{}", fault.reason);
    })
    .await;
}

#[tokio::test]
async fn insecure_lets_plain_sessions_through_off_loopback() {
    within(async {
        let (gw, port, _) = public_gateway(true).await;
        let _listener = Listener::open(endpoint(&gw, "calc"))
            .await
            .expect("listener");
        let via = format!("net.tcp://localhost:{}/calc", port.port());
        let _session = acked_session(port, &via).await;
    })
    .await;
}

#[tokio::test]
async fn a_sender_cut_off_mid_message_reaches_the_listener_as_an_error() {
    within(async {
        let gw = gateway(|c| {
            c.paths = vec![PathConfig {
                anonymous_senders: true,
                ..PathConfig::new("calc")
            }];
        })
        .await;
        let mut listener = Listener::open(endpoint(&gw, "calc"))
            .await
            .expect("listener");
        let via = format!("net.tcp://127.0.0.1:{}/calc", nettcp(&gw).port());
        let (_, mut tcp, wire) = acked_session(nettcp(&gw), &via).await;
        let incoming = listener.accept().await.expect("accept");
        let mut stream = incoming.accept().await.expect("rendezvous");
        let mut got = vec![0u8; wire.len()];
        stream.read_exact(&mut got).await.expect("preamble");
        stream.write_all(&[0x0B]).await.expect("ack");

        // A whole message, then half of the next, then the connection closes, as when the
        // sender's process is killed: an orderly TCP close in the middle of a record.
        let payload = BinarySession::new(ferry_nbfx::Limits::default())
            .encode(&request("urn:add", None))
            .expect("encode");
        let mut records = Vec::new();
        ferry_nmf::Record::SizedEnvelope(payload.into()).encode(&mut records);
        let whole = records.len();
        ferry_nmf::Record::SizedEnvelope(vec![7u8; 4096].into()).encode(&mut records);
        tcp.write_all(&records[..whole + 2048])
            .await
            .expect("a message and a half");
        drop(tcp);

        let mut rest = Vec::new();
        let end = tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
            .await
            .expect("the listener learns in time");
        assert!(
            rest.len() >= whole,
            "the whole message arrived first ({} bytes)",
            rest.len()
        );
        assert!(
            end.is_err(),
            "a truncated message must not end like a finished session: got {} bytes and a clean end",
            rest.len()
        );
    })
    .await;
}
