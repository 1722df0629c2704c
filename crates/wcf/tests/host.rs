//! The service host and the client channels, our code on both ends over real sockets: the
//! generated `CalculatorClient` over `NetTcpChannel` (every encoding) and `BasicHttpChannel`
//! against `Host` and `BasicHttp` serving the interop calculator; raw bytes for what a client
//! channel never sends (bad preambles, garbage and oversized envelopes, singleton-unsized
//! mode), each answered with the right framing Fault record, after which the host still serves.
//! WCF's own clients (Mono) and pynettcp against the same host are in `interop/tests/wcf_host.rs`.

#![cfg(feature = "runtime")]

use std::net::SocketAddr;
use std::time::Duration;

use ferry_nbfx::{Element, Limits};
use ferry_nmf::{ClientConfig, Encoding, Event, FaultCode, KnownEncoding, Mode, Record, Session};
use ferry_soap::{AddressingVersion, BinarySession, Body, Envelope, QName, SoapVersion};
use ferry_wcf::calc::{Calc, DIVIDE_BY_ZERO_CODE, DIVIDE_BY_ZERO_REASON, SERVICE_NS};
use ferry_wcf::fault::{DISPATCHER_NS, INTERNAL_ERROR_REASON};
use ferry_wcf::generated::calculator::*;
use ferry_wcf::{
    BasicHttp, BasicHttpChannel, CallError, ChannelConfig, DataContract, FaultCode as WcfCode,
    Host, HostConfig, NetTcpChannel, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any step may take.
const STEP: Duration = Duration::from_secs(10);
/// Message size of the hosts and channels here: room for the 1 MiB arrays.
const QUOTA: usize = 4 * 1024 * 1024;

type Calculator = CalculatorServer<Calc>;

fn config() -> HostConfig {
    let mut c = HostConfig::default();
    c.set_quotas(QUOTA);
    c
}

/// A host serving the calculator on an ephemeral loopback port.
async fn net_tcp_host(config: HostConfig) -> (Host<Calculator>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host = Host::with_config(CalculatorServer(Calc::new()), config);
    let serving = host.clone();
    tokio::spawn(async move { serving.serve_tcp(listener).await });
    (host, addr)
}

/// basicHttp serving the calculator on an ephemeral loopback port.
async fn http_host() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = BasicHttp::with_config(CalculatorServer(Calc::new()), config());
    tokio::spawn(http.serve_tcp(listener));
    addr
}

async fn channel(addr: SocketAddr, encoding: KnownEncoding) -> NetTcpChannel<TcpStream> {
    let mut c = ChannelConfig::default();
    c.set_encoding(encoding)
        .set_max_message_size(QUOTA)
        .set_timeout(STEP);
    NetTcpChannel::connect(addr, "net.tcp://gateway.example:9352/calc", c)
        .await
        .unwrap()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + 7) & 0xff) as u8).collect()
}

fn order() -> Order {
    Order {
        id: 1001,
        customer: Some("Zoë Müller".into()),
        ship_to: Some(Address {
            street: Some("Hauptstraße 5".into()),
            city: Some("München".into()),
            country: Some("DE".into()),
        }),
        lines: Some(vec![
            Some(OrderLine {
                sku: Some("WIDGET-1".into()),
                quantity: 3,
                unit_price: 2.5,
            }),
            Some(OrderLine {
                sku: Some("GADGET-ß".into()),
                quantity: 1,
                unit_price: 19.99,
            }),
            Some(OrderLine {
                sku: Some("BOLT-9".into()),
                quantity: 100,
                unit_price: 0.05,
            }),
        ]),
        tags: Some(vec![Some("priority".into()), Some("gift".into()), None]),
        created: ferry_nbfx::DateTime::parse("2024-05-17T13:45:30.123Z").unwrap(),
        express: true,
        discount: ferry_nbfx::Decimal::parse("12.75").unwrap(),
        reference: ferry_nbfx::Guid::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap(),
        sequence: 9_007_199_254_740_993,
        note: None,
    }
}

/// Every operation of the calculator through `client`, with the values the recorded Mono
/// service answered (interop/recordings/*/calls.json).
async fn exercise<T: Transport>(client: &CalculatorClient<T>)
where
    T::Error: std::fmt::Debug,
{
    let add = |a, b| Add { a, b };
    assert_eq!(client.add(add(2, 3)).await.unwrap().add_result, 5);
    assert_eq!(
        client.add(add(i32::MAX, 1)).await.unwrap().add_result,
        i32::MIN
    );
    let div = |a, b| Divide { a, b };
    assert_eq!(
        client.divide(div(1.0, 3.0)).await.unwrap().divide_result,
        1.0 / 3.0
    );
    assert!(
        client
            .divide(div(0.0, 0.0))
            .await
            .unwrap()
            .divide_result
            .is_nan()
    );
    assert_eq!(
        client.divide(div(1.0, 0.0)).await.unwrap().divide_result,
        f64::INFINITY
    );
    let fancy = "Grüße, 世界! Привет 🚀 <&>\"'";
    let echo = client
        .echo(Echo {
            text: Some(fancy.into()),
        })
        .await
        .unwrap();
    assert_eq!(echo.echo_result.as_deref(), Some(&*format!("echo:{fancy}")));
    assert_eq!(
        client.echo(Echo { text: None }).await.unwrap().echo_result,
        None
    );
    for n in [0, 16, 1024 * 1024] {
        let reversed = client
            .reverse_bytes(ReverseBytes { data: pattern(n) })
            .await
            .unwrap()
            .reverse_bytes_result;
        let mut expected = pattern(n);
        expected.reverse();
        assert_eq!(reversed, expected, "{n} bytes");
    }
    let summary = client
        .submit_order(SubmitOrder { order: order() })
        .await
        .unwrap()
        .submit_order_result;
    assert_eq!(summary.customer_upper.as_deref(), Some("ZOË MÜLLER"));
    assert_eq!(
        (summary.line_count, summary.total_quantity, summary.total),
        (3, 104, 32.489999999999995)
    );
    assert_eq!(summary.ship_to.unwrap().city.as_deref(), Some("MÜNCHEN"));
    assert_eq!(summary.reference, order().reference);
    assert_eq!(summary.created, order().created);

    client
        .notify(Notify {
            message: Some("first one-way".into()),
        })
        .await
        .unwrap();
    client
        .notify(Notify {
            message: Some("second: ünïcödé ✓".into()),
        })
        .await
        .unwrap();
    let notes = client
        .get_notifications(GetNotifications {})
        .await
        .unwrap()
        .get_notifications_result;
    assert_eq!(
        notes,
        [
            Some("first one-way".into()),
            Some("second: ünïcödé ✓".into())
        ]
    );

    assert_eq!(
        client
            .safe_divide(SafeDivide { a: 10, b: 2 })
            .await
            .unwrap()
            .safe_divide_result,
        5
    );
    match client.safe_divide(SafeDivide { a: 1, b: 0 }).await {
        Err(CallError::Fault(f)) => {
            assert_eq!(f.reason, DIVIDE_BY_ZERO_REASON);
            assert_eq!(
                f.code,
                WcfCode::Other(QName::new("a", SERVICE_NS, "DivideByZero"))
            );
            let Some(SafeDivideFault::CalcFault(detail)) = f.detail else {
                panic!("typed detail expected: {f:?}")
            };
            assert_eq!(detail.code, DIVIDE_BY_ZERO_CODE);
            assert_eq!(detail.operation.as_deref(), Some("SafeDivide"));
            assert_eq!(detail.problem_type.as_deref(), Some("Division by zero"));
        }
        other => panic!("typed fault expected: {other:?}"),
    }
    match client
        .fail(Fail {
            reason: Some("boom ✗".into()),
        })
        .await
    {
        Err(CallError::Fault(f)) => {
            assert_eq!(f.reason, "boom ✗");
            assert_eq!(f.code, WcfCode::Sender);
        }
        other => panic!("untyped fault expected: {other:?}"),
    }
    match client.crash(Crash {}).await {
        Err(CallError::Fault(f)) => {
            assert_eq!(f.reason, INTERNAL_ERROR_REASON);
            let internal = QName::new("a", DISPATCHER_NS, "InternalServiceFault");
            // SOAP 1.2: Receiver with the subcode; SOAP 1.1 has no subcodes, so WCF writes
            // the subcode as the code.
            match &f.code {
                WcfCode::Receiver => assert_eq!(f.subcodes, [internal]),
                code => assert_eq!(*code, WcfCode::Other(internal)),
            }
        }
        other => panic!("internal fault expected: {other:?}"),
    }
    // The session survives an unhandled error.
    assert_eq!(client.add(add(1, 1)).await.unwrap().add_result, 2);
}

#[tokio::test]
async fn net_tcp_client_and_host_over_every_encoding() {
    let (host, addr) = net_tcp_host(config()).await;
    for encoding in [
        KnownEncoding::BinarySession,
        KnownEncoding::Binary,
        KnownEncoding::Soap12Utf8,
        KnownEncoding::Soap11Utf8,
    ] {
        let channel = channel(addr, encoding).await;
        let client = CalculatorClient::new(channel);
        tokio::time::timeout(STEP * 3, exercise(&client))
            .await
            .unwrap_or_else(|_| panic!("{encoding:?} timed out"));
        client.transport().close().await.unwrap();
    }
    host.shutdown().await;
}

#[tokio::test]
async fn basic_http_client_and_host() {
    let addr = http_host().await;
    let mut channel = BasicHttpChannel::new(&format!("http://{addr}/calc")).unwrap();
    channel.set_max_message_size(QUOTA).set_timeout(STEP);
    let client = CalculatorClient::new(channel);
    tokio::time::timeout(STEP * 3, exercise(&client))
        .await
        .expect("in time");
}

#[tokio::test]
async fn unknown_action_is_action_not_supported_and_the_session_goes_on() {
    let (_host, addr) = net_tcp_host(config()).await;
    let channel = channel(addr, KnownEncoding::BinarySession).await;
    let body = Element::new("", ferry_nbfx::XmlString::inline("Nope"), SERVICE_NS);
    let reply = channel
        .call("http://interop.example/calc/2024/ICalculator/Nope", body)
        .await
        .unwrap();
    assert_eq!(
        reply.headers.action.as_deref(),
        Some("http://www.w3.org/2005/08/addressing/fault")
    );
    assert!(reply.headers.relates_to.is_some(), "faults carry RelatesTo");
    let fault = reply.fault().expect("a fault");
    assert!(fault.is_sender());
    assert_eq!(
        fault.subcodes,
        [QName::new(
            "a",
            "http://www.w3.org/2005/08/addressing",
            "ActionNotSupported"
        )]
    );
    assert!(fault.reason.contains("ContractFilter mismatch"));
    let client = CalculatorClient::new(channel);
    assert_eq!(client.add(Add { a: 2, b: 3 }).await.unwrap().add_result, 5);
}

#[tokio::test]
async fn relay_session_messages_get_no_answer_and_the_session_goes_on() {
    // What a NetOneway / NetEvent sender's session carries through the gateway: the relay's
    // Connect first, OnewayPing keep-alives between its one-way messages.
    let (_host, addr) = net_tcp_host(config()).await;
    let channel = channel(addr, KnownEncoding::BinarySession).await;
    let connect = ferry_wcf::generated::relay::Connect {
        uri: Some("sb://gateway.example/calc".into()),
    };
    let [connect_action, ping_action] = ferry_wcf::host::RELAY_SESSION_ACTIONS;
    channel
        .send(connect_action, connect.to_element())
        .await
        .unwrap();
    let notify = |m: &str| {
        Notify {
            message: Some(m.into()),
        }
        .to_element()
    };
    let notify_action = "http://interop.example/calc/2024/ICalculator/Notify";
    channel.send(notify_action, notify("one")).await.unwrap();
    let ping = ferry_wcf::generated::relay::OnewayPing {};
    channel.send(ping_action, ping.to_element()).await.unwrap();
    channel.send(notify_action, notify("two")).await.unwrap();
    // Had the host answered either relay message (with ActionNotSupported), that fault would
    // be read here as the reply: requests without a MessageID get faults without RelatesTo.
    let client = CalculatorClient::new(channel);
    let drained = tokio::time::timeout(STEP, client.get_notifications(GetNotifications {}))
        .await
        .expect("in time")
        .expect("the next call is answered");
    assert_eq!(
        drained.get_notifications_result,
        [Some("one".to_owned()), Some("two".to_owned())]
    );
    client.transport().close().await.expect("End handshake");
}

#[tokio::test]
async fn basic_http_statuses() {
    let addr = http_host().await;
    let url = format!("http://{addr}/calc");
    let post = |content_type: &'static str, action: &'static str, body: String| {
        let url = url.clone();
        async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nSOAPAction: \
                 \"{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                url.split_once(&addr.to_string()).unwrap().1,
                body.len()
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            // A refusal may come (and the connection close) before the body is written.
            let _ = tcp.write_all(body.as_bytes()).await;
            let mut out = Vec::new();
            tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    let envelope = |body: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope \
             xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{body}</s:Body></s:Envelope>"
        )
    };
    let xml = "text/xml; charset=utf-8";
    let ns = SERVICE_NS;
    let r = post(
        xml,
        "http://interop.example/calc/2024/ICalculator/Add",
        envelope(&format!("<Add xmlns=\"{ns}\"><a>2</a><b>3</b></Add>")),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("<AddResult>5</AddResult>"), "{r}");
    assert!(
        !r.contains("Action"),
        "basicHttp replies carry no addressing headers: {r}"
    );

    let r = post(
        xml,
        "http://interop.example/calc/2024/ICalculator/Notify",
        envelope(&format!(
            "<Notify xmlns=\"{ns}\"><message>x</message></Notify>"
        )),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");

    let r = post(
        xml,
        "http://interop.example/calc/2024/ICalculator/SafeDivide",
        envelope(&format!(
            "<SafeDivide xmlns=\"{ns}\"><a>1</a><b>0</b></SafeDivide>"
        )),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 500"), "{r}");
    assert!(r.contains("a:DivideByZero</faultcode>"), "{r}");
    assert!(r.contains("<Code>4242</Code>"), "{r}");

    let r = post(
        xml,
        "http://interop.example/calc/2024/ICalculator/Crash",
        envelope(&format!("<Crash xmlns=\"{ns}\"/>")),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 500"), "{r}");
    assert!(r.contains(&format!("xmlns:a=\"{DISPATCHER_NS}\"")), "{r}");
    assert!(r.contains("a:InternalServiceFault</faultcode>"), "{r}");

    let r = post(
        xml,
        "urn:nope",
        envelope(&format!("<Nope xmlns=\"{ns}\"/>")),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 500"), "{r}");
    assert!(r.contains("a:ActionNotSupported</faultcode>"), "{r}");
    assert!(
        r.contains("xmlns:a=\"http://schemas.microsoft.com/ws/2005/05/addressing/none\""),
        "{r}"
    );

    let r = post(xml, "urn:x", "<not-soap/>".into()).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = post("application/json", "urn:x", "{}".into()).await;
    assert!(r.starts_with("HTTP/1.1 415"), "{r}");
    let r = post(xml, "urn:x", "x".repeat(QUOTA + 1)).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /calc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
}

#[tokio::test]
async fn metadata_over_http_get_and_mex_post() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = config();
    let mut metadata = ferry_wcf::calc::metadata();
    metadata
        .set_public_base("net.tcp://gateway.example:9352")
        .unwrap();
    config.set_metadata(metadata);
    let http = BasicHttp::with_config(CalculatorServer(Calc::new()), config);
    tokio::spawn(http.serve_tcp(listener));
    let request = |head: String, body: String| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    let get = |target: &'static str| {
        request(
            format!("GET {target} HTTP/1.1\r\nHost: gw.example:8080\r\nConnection: close\r\n\r\n"),
            String::new(),
        )
    };

    let r = get("/calc/tcp?wsdl").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("content-type: text/xml; charset=UTF-8"), "{r}");
    assert!(
        r.contains("location=\"http://gw.example:8080/calc/tcp?wsdl=wsdl0\""),
        "{r}"
    );
    assert!(
        r.contains("<soap:address location=\"http://gw.example:8080/calc/tcp\"/>"),
        "{r}"
    );
    assert!(
        r.contains("<soap12:address location=\"net.tcp://gateway.example:9352/calc/tcp\"/>"),
        "{r}"
    );
    let r = get("/calc/tcp?xsd=xsd3").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("ArrayOfstring"), "{r}");
    // An unknown query (Mono imports `?xsd=`) gets the help page, as from WCF.
    let r = get("/calc/tcp?xsd=").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("content-type: text/html; charset=UTF-8"), "{r}");
    assert!(r.contains("http://gw.example:8080/calc/tcp?wsdl"), "{r}");
    let r = request(
        "PUT /calc/tcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .into(),
        String::new(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.contains("allow: GET, POST"), "{r}");

    // mexHttpBinding: a SOAP 1.2 Get posted to the mex address.
    let envelope = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header><a:Action \
         s:mustUnderstand=\"1\">{}</a:Action><a:MessageID>urn:uuid:1</a:MessageID><a:To \
         s:mustUnderstand=\"1\">http://gw.example:8080/calc/tcp/mex</a:To></s:Header>\
         <s:Body/></s:Envelope>",
        ferry_wcf::metadata::TRANSFER_GET
    );
    let r = request(
        format!(
            "POST /calc/tcp/mex HTTP/1.1\r\nHost: gw.example:8080\r\nContent-Type: \
             application/soap+xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: \
             close\r\n\r\n",
            envelope.len()
        ),
        envelope,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains(ferry_wcf::metadata::TRANSFER_GET_RESPONSE),
        "{r}"
    );
    assert!(r.contains("MetadataSection"), "{r}");
    assert!(
        r.contains("<soap:address location=\"http://gw.example:8080/calc/tcp\"/>"),
        "{r}"
    );

    // SOAP still works next to it.
    let client =
        CalculatorClient::new(BasicHttpChannel::new(&format!("http://{addr}/calc/tcp")).unwrap());
    assert_eq!(client.add(Add { a: 2, b: 3 }).await.unwrap().add_result, 5);
}

// ---------------------------------------------------------------------------------------------
// Raw bytes.

/// Record bytes.
fn records(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode(&mut out);
    }
    out
}

fn fault(code: FaultCode) -> Vec<u8> {
    records(&[Record::Fault(code.uri().into())])
}

/// Sends `bytes`, then reads everything until the host closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The host may close before everything is written (an oversized message): that is fine.
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(STEP, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("host neither answered nor closed: {out:02x?}"),
        }
    }
}

/// Sends `preamble`, reads the PreambleAck, then sends `rest` and reads everything until the
/// host closes.
async fn after_ack(addr: SocketAddr, preamble: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(preamble).await.unwrap();
    let mut byte = [0u8; 1];
    tokio::time::timeout(STEP, tcp.read_exact(&mut byte))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(byte, [0x0b], "PreambleAck");
    // The host may close before everything is written (an oversized message): that is fine.
    let _ = tcp.write_all(rest).await;
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
        .await
        .expect("host closes")
        .expect("what the host sent arrives before the close");
    out
}

fn preamble(mode: Mode, via: &str, encoding: KnownEncoding) -> Vec<u8> {
    records(&[
        Record::Version { major: 1, minor: 0 },
        Record::Mode(mode),
        Record::Via(via.into()),
        Record::KnownEncoding(encoding),
        Record::PreambleEnd,
    ])
}

#[tokio::test]
async fn bad_input_gets_the_right_fault_record_then_close() {
    let mut small = config();
    small.set_max_message_size(64 * 1024);
    let (host, addr) = net_tcp_host(small).await;
    let via = "net.tcp://anywhere.example/calc";
    let good = preamble(Mode::Duplex, via, KnownEncoding::BinarySession);

    // Preambles the host refuses or cannot read.
    let version2 = records(&[Record::Version { major: 2, minor: 0 }]);
    let mut unknown_mode = records(&[Record::Version { major: 1, minor: 0 }]);
    unknown_mode.extend_from_slice(&[0x01, 0x09]);
    let simplex = records(&[
        Record::Version { major: 1, minor: 0 },
        Record::Mode(Mode::Simplex),
        Record::Via(via.into()),
        Record::KnownEncoding(KnownEncoding::BinarySession),
    ]);
    let mtom = preamble(Mode::Duplex, via, KnownEncoding::Mtom);
    let utf16 = preamble(Mode::Duplex, via, KnownEncoding::Soap12Utf16);
    let long_via = preamble(
        Mode::Duplex,
        &"x".repeat(4096),
        KnownEncoding::BinarySession,
    );
    let upgrade = records(&[
        Record::Version { major: 1, minor: 0 },
        Record::Mode(Mode::Duplex),
        Record::Via(via.into()),
        Record::KnownEncoding(KnownEncoding::BinarySession),
        Record::UpgradeRequest("application/ssl-tls".into()),
    ]);
    for (name, input, expected) in [
        (
            "version 2.0",
            version2,
            fault(FaultCode::UnsupportedVersion),
        ),
        ("mode 0x09", unknown_mode, fault(FaultCode::UnsupportedMode)),
        ("simplex", simplex, fault(FaultCode::UnsupportedMode)),
        ("MTOM", mtom, fault(FaultCode::ContentTypeInvalid)),
        ("UTF-16 text", utf16, fault(FaultCode::ContentTypeInvalid)),
        ("long via", long_via, fault(FaultCode::ViaTooLong)),
        ("TLS upgrade", upgrade, fault(FaultCode::UpgradeInvalid)),
    ] {
        assert_eq!(exchange(addr, &input).await, expected, "{name}");
    }

    // Not MC-NMF at all: no fault names that, so the connection just closes (as in WCF).
    assert_eq!(
        exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        b""
    );

    // A garbage envelope after a good preamble.
    let garbage = records(&[Record::SizedEnvelope(
        b"\x00\x56\x02\xff\xff\xff garbage"[..].into(),
    )]);
    assert_eq!(
        after_ack(addr, &good, &garbage).await,
        fault(FaultCode::ContentTypeInvalid),
        "garbage envelope"
    );

    // A session table announcing more than the session dictionary quota (2048 bytes).
    let mut table = Vec::new();
    for _ in 0..40 {
        table.push(127);
        table.extend([b'x'; 127]);
    }
    let mut payload = Vec::new();
    ferry_nmf::varint::encode(table.len() as u32, &mut payload);
    payload.extend(&table);
    let big_table = records(&[Record::SizedEnvelope(payload.into())]);
    assert_eq!(
        after_ack(addr, &good, &big_table).await,
        fault(FaultCode::MaxMessageSizeExceeded),
        "session dictionary"
    );

    // An envelope over the message size: refused from its size field, before buffering.
    let mut oversized = vec![0x06];
    ferry_nmf::varint::encode(1024 * 1024, &mut oversized);
    oversized.extend(vec![0u8; 256 * 1024]);
    assert_eq!(
        after_ack(addr, &good, &oversized).await,
        fault(FaultCode::MaxMessageSizeExceeded),
        "oversized"
    );
    // Sent together with the preamble, the fault comes instead of the PreambleAck (which a
    // WCF client waiting for the ack reads as the fault).
    let mut pipelined = good.clone();
    pipelined.extend(&oversized);
    let out = exchange(addr, &pipelined).await;
    assert!(
        out.ends_with(&fault(FaultCode::MaxMessageSizeExceeded)),
        "{out:02x?}"
    );

    // Records out of order after the preamble: no WCF fault for that either; the host closes.
    assert_eq!(
        after_ack(addr, &good, &records(&[Record::PreambleEnd])).await,
        b"",
        "PreambleEnd twice"
    );

    // The host is still serving.
    let client = CalculatorClient::new(channel(addr, KnownEncoding::BinarySession).await);
    assert_eq!(client.add(Add { a: 2, b: 3 }).await.unwrap().add_result, 5);
    client.transport().close().await.unwrap();
    host.shutdown().await;
}

#[tokio::test]
async fn end_handshake_and_connection_reuse() {
    let (_host, addr) = net_tcp_host(config()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let via = "net.tcp://127.0.0.1/calc";
    for round in 0..2 {
        let mut client =
            Session::client(ClientConfig::net_tcp(via), ferry_nmf::Limits::default()).unwrap();
        let mut codec = BinarySession::new(Limits::default());
        let mut request = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        request.headers.action = Some(CALCULATOR_OPERATIONS[0].action.into());
        request.headers.message_id = Some(format!(
            "urn:uuid:00000000-0000-0000-0000-00000000000{round}"
        ));
        request.body = Body::Payload(vec![Add { a: round, b: 1 }.to_element()]);
        // Pipelined: the first envelope goes before the ack arrives, as pynettcp does.
        client
            .send_envelope(&codec.encode(&request).unwrap())
            .unwrap();
        let mut wire = Vec::new();
        client.poll_transmit(&mut wire);
        tcp.write_all(&wire).await.unwrap();
        let mut events = Vec::new();
        let mut buf = [0u8; 4096];
        while events.len() < 2 {
            let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "host closed early");
            client.handle_input(&buf[..n]).unwrap();
            events.extend(std::iter::from_fn(|| client.poll_event()));
        }
        assert_eq!(events[0], Event::PreambleAcked);
        let Event::Envelope(payload) = &events[1] else {
            panic!("{events:?}")
        };
        let reply = codec.decode(payload).unwrap();
        assert_eq!(reply.headers.relates_to, request.headers.message_id);
        assert_eq!(
            AddResponse::from_element(reply.payload().unwrap())
                .unwrap()
                .add_result,
            round + 1
        );
        // End → the host's End; the connection stays up for the next session.
        client.close().unwrap();
        wire.clear();
        client.poll_transmit(&mut wire);
        tcp.write_all(&wire).await.unwrap();
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], [0x07], "End answered with End");
        client.handle_input(&buf[..n]).unwrap();
        assert_eq!(client.poll_event(), Some(Event::End));
        assert!(client.is_closed());
    }
    // Closing our side ends it.
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn singleton_unsized_session() {
    let (_host, addr) = net_tcp_host(config()).await;
    let mut client = Session::client(
        ClientConfig {
            mode: Mode::SingletonUnsized,
            via: "net.tcp://127.0.0.1/calc".into(),
            encoding: Encoding::Known(KnownEncoding::BinarySession),
            upgrade: None,
        },
        ferry_nmf::Limits {
            max_envelope_bytes: QUOTA,
            ..Default::default()
        },
    )
    .unwrap();
    let mut codec = BinarySession::new(Limits {
        max_document_bytes: QUOTA,
        max_array_length: QUOTA,
        ..Limits::default()
    });
    let mut request = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    request.headers.action = Some(CALCULATOR_OPERATIONS[3].action.into());
    request.body = Body::Payload(vec![
        ReverseBytes {
            data: pattern(200_000),
        }
        .to_element(),
    ]);
    client
        .send_envelope(&codec.encode(&request).unwrap())
        .unwrap();
    let mut wire = Vec::new();
    client.poll_transmit(&mut wire);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&wire).await.unwrap();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while events.len() < 3 {
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "host closed early: {events:?}");
        client.handle_input(&buf[..n]).unwrap();
        events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    assert_eq!(events.len(), 3, "ack, the reply, End");
    assert_eq!(events[0], Event::PreambleAcked);
    let Event::Envelope(payload) = &events[1] else {
        panic!("{events:?}")
    };
    let reply = codec.decode(payload).unwrap();
    let mut expected = pattern(200_000);
    expected.reverse();
    assert_eq!(
        ReverseBytesResponse::from_element(reply.payload().unwrap())
            .unwrap()
            .reverse_bytes_result,
        expected
    );
    assert_eq!(events[2], Event::End, "one message each way, then End");
    client.close().unwrap();
    wire.clear();
    client.poll_transmit(&mut wire);
    tcp.write_all(&wire).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{rest:02x?}");
}

#[tokio::test]
async fn idle_sessions_time_out() {
    let mut quick = config();
    quick
        .set_preamble_timeout(Duration::from_millis(200))
        .set_receive_timeout(Duration::from_millis(300));
    let (_host, addr) = net_tcp_host(quick).await;
    // No preamble at all.
    assert_eq!(exchange(addr, b"").await, b"");
    // A preamble, then silence: the host closes the session.
    let good = preamble(
        Mode::Duplex,
        "net.tcp://x/calc",
        KnownEncoding::BinarySession,
    );
    assert_eq!(exchange(addr, &good).await, [0x0b]);
}

#[tokio::test]
async fn typed_fault_matches_the_recorded_one() {
    // The recorded Mono service's SafeDivide fault (tcp-fault, second reply) and ours.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../interop/recordings/tcp-fault/server_to_client.bin");
    let s2c = std::fs::read(dir).unwrap();
    let mut session = Session::client(
        ClientConfig::net_tcp("net.tcp://x/"),
        ferry_nmf::Limits::default(),
    )
    .unwrap();
    session.handle_input(&s2c).unwrap();
    let mut codec = BinarySession::new(Limits::default());
    let recorded: Vec<Envelope> = std::iter::from_fn(|| session.poll_event())
        .filter_map(|e| match e {
            Event::Envelope(p) => Some(codec.decode(&p).unwrap()),
            _ => None,
        })
        .collect();
    let recorded = &recorded[1];

    let (_host, addr) = net_tcp_host(config()).await;
    let channel = channel(addr, KnownEncoding::BinarySession).await;
    let ours = channel
        .call(
            CALCULATOR_OPERATIONS[7].action,
            SafeDivide { a: 1, b: 0 }.to_element(),
        )
        .await
        .unwrap();
    let (r, o) = (recorded.fault().unwrap(), ours.fault().unwrap());
    assert_eq!(o.code, r.code, "fault code");
    assert_eq!(o.subcodes, r.subcodes);
    assert_eq!(o.reason, r.reason);
    let detail = |f: &ferry_soap::Fault| {
        let d = f.detail.as_ref().unwrap();
        assert_eq!(d.local_name(), "Detail");
        CalcFault::from_element(d.elements().next().unwrap()).unwrap()
    };
    assert_eq!(detail(o), detail(r), "detail element");
    // The action: .NET's form of what Mono wrote without the slash after the namespace.
    assert_eq!(
        recorded.headers.action.as_deref(),
        Some("http://interop.example/calc/2024ICalculator/SafeDivideCalcFaultFault")
    );
    assert_eq!(
        ours.headers.action.as_deref(),
        Some("http://interop.example/calc/2024/ICalculator/SafeDivideCalcFaultFault")
    );
}
