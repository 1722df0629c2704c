//! Deadlines of the service hosts against peers that stall, over real sockets: a basicHttp
//! client that sends a head and part of a body and then stops (or trickles), or keeps a
//! connection idle, is disconnected after the configured limit and others are still served; an
//! operation that never returns is cut off at the operation timeout with the generic internal
//! fault (one-way: dropped), and the session then answers its next request, on net.tcp and on
//! basicHttp.

#![cfg(feature = "runtime")]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_nbfx::{Element, XmlString};
use ferry_nmf::KnownEncoding;
use ferry_soap::{Envelope, QName};
use ferry_wcf::calc::Calc;
use ferry_wcf::fault::DISPATCHER_NS;
use ferry_wcf::generated::calculator::{Add, CalculatorClient, CalculatorServer};
use ferry_wcf::service::DISPATCHER_FAULT_ACTION;
use ferry_wcf::{
    BasicHttp, BasicHttpChannel, ChannelConfig, Contract, DispatchError, Host, HostConfig,
    NetTcpChannel, Operation, Reply, Service, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

/// Longest any step may take when nothing is meant to stall.
const STEP: Duration = Duration::from_secs(10);
/// The short limit under test (body read, idle, operation).
const LIMIT: Duration = Duration::from_millis(200);
/// How soon after [`LIMIT`] the host must have acted: generous for a loaded 2-core machine,
/// far below the defaults (30 s, 60 s) a host without the limit would fall back on.
const SLACK: Duration = Duration::from_secs(3);

const NS: &str = "urn:ferry:test:deadlines";
const SLOW: &str = "urn:ferry:test:deadlines/IDeadlines/Slow";
const SLOW_REPLY: &str = "urn:ferry:test:deadlines/IDeadlines/SlowResponse";
const QUICK: &str = "urn:ferry:test:deadlines/IDeadlines/Quick";
const QUICK_REPLY: &str = "urn:ferry:test:deadlines/IDeadlines/QuickResponse";
const SLOW_ONE_WAY: &str = "urn:ferry:test:deadlines/IDeadlines/SlowOneWay";

static CONTRACT: Contract = Contract {
    name: "IDeadlines",
    namespace: NS,
    operations: &[
        Operation {
            name: "Slow",
            action: SLOW,
            reply_action: Some(SLOW_REPLY),
            faults: &[],
        },
        Operation {
            name: "Quick",
            action: QUICK,
            reply_action: Some(QUICK_REPLY),
            faults: &[],
        },
        Operation {
            name: "SlowOneWay",
            action: SLOW_ONE_WAY,
            reply_action: None,
            faults: &[],
        },
    ],
};

/// A service whose `Slow` and `SlowOneWay` handlers sleep for an hour and whose `Quick`
/// answers at once. `ended` counts slow handlers whose future was dropped.
#[derive(Default)]
struct Deadlines {
    ended: Arc<AtomicUsize>,
}

/// Counts the end of a slow handler's future (dropped at the operation timeout).
struct Ended(Arc<AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn element(name: &'static str) -> Element {
    Element::new("", XmlString::inline(name), NS).with_xmlns("", XmlString::inline(NS))
}

/// Checks that `reply` carries the `QuickResponse` element.
fn assert_quick_response(reply: &Envelope) {
    let body = reply
        .payload()
        .unwrap_or_else(|| panic!("a payload: {reply:?}"));
    assert_eq!(
        (body.namespace.as_str(), body.local_name()),
        (NS, "QuickResponse")
    );
}

impl Service for Deadlines {
    fn contract(&self) -> &'static Contract {
        &CONTRACT
    }

    fn dispatch(
        &self,
        action: &str,
        _body: Option<&Element>,
    ) -> impl Future<Output = Result<Reply, DispatchError>> + Send {
        let action = action.to_owned();
        let ended = Arc::clone(&self.ended);
        async move {
            match action.as_str() {
                QUICK => Ok(Reply::Message {
                    action: QUICK_REPLY,
                    body: element("QuickResponse"),
                }),
                SLOW | SLOW_ONE_WAY => {
                    let _ended = Ended(ended);
                    sleep(Duration::from_secs(3600)).await;
                    Ok(if action == SLOW {
                        Reply::Message {
                            action: SLOW_REPLY,
                            body: element("SlowResponse"),
                        }
                    } else {
                        Reply::None
                    })
                }
                _ => Err(DispatchError::UnknownAction(action)),
            }
        }
    }
}

fn operation_limited() -> HostConfig {
    let mut c = HostConfig::default();
    c.set_operation_timeout(LIMIT);
    c
}

/// Checks that `reply` is the operation timeout's fault: the generic internal service fault's
/// shape, a reason naming the limit and nothing about the operation.
fn assert_timeout_fault(reply: &Envelope) {
    let fault = reply
        .fault()
        .unwrap_or_else(|| panic!("a fault: {reply:?}"));
    let internal = QName::new("a", DISPATCHER_NS, "InternalServiceFault");
    if fault.subcodes.is_empty() {
        // SOAP 1.1 has no subcodes: WCF writes the subcode as the code.
        assert_eq!(fault.code, internal);
    } else {
        assert_eq!(fault.code.local, "Receiver");
        assert_eq!(fault.subcodes, [internal]);
    }
    assert_eq!(
        fault.reason,
        "The operation did not complete: it timed out after 0.2 s."
    );
    assert_eq!(fault.detail, None, "no internal details");
}

#[tokio::test]
async fn net_tcp_operation_timeout_faults_and_the_session_goes_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host = Host::with_config(Deadlines::default(), operation_limited());
    tokio::spawn({
        let host = host.clone();
        async move { host.serve_tcp(listener).await }
    });
    let mut config = ChannelConfig::default();
    config
        .set_encoding(KnownEncoding::BinarySession)
        .set_timeout(STEP);
    let channel = NetTcpChannel::connect(addr, "net.tcp://gateway.example/slow", config)
        .await
        .unwrap();

    let started = Instant::now();
    let reply = channel.call(SLOW, element("Slow")).await.unwrap();
    let took = started.elapsed();
    assert!(took >= LIMIT && took < LIMIT + SLACK, "{took:?}");
    assert_timeout_fault(&reply);
    assert_eq!(
        reply.headers.action.as_deref(),
        Some(DISPATCHER_FAULT_ACTION)
    );
    assert!(reply.headers.relates_to.is_some(), "faults carry RelatesTo");
    assert_eq!(
        host.service().ended.load(Ordering::SeqCst),
        1,
        "handler dropped"
    );

    // The same session answers the next request at once.
    let reply = channel.call(QUICK, element("Quick")).await.unwrap();
    assert_eq!(reply.headers.action.as_deref(), Some(QUICK_REPLY));
    assert_quick_response(&reply);

    // A one-way operation past the limit is dropped without an answer; the request after it
    // waits for that, then gets its own reply (not a fault meant for the one-way message).
    let started = Instant::now();
    channel
        .send(SLOW_ONE_WAY, element("SlowOneWay"))
        .await
        .unwrap();
    let reply = channel.call(QUICK, element("Quick")).await.unwrap();
    let took = started.elapsed();
    assert!(took >= LIMIT && took < LIMIT + SLACK, "{took:?}");
    assert_quick_response(&reply);
    assert_eq!(
        host.service().ended.load(Ordering::SeqCst),
        2,
        "handler dropped"
    );

    channel.close().await.unwrap();
    host.shutdown().await;
}

#[tokio::test]
async fn basic_http_operation_timeout_faults_and_the_next_request_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = BasicHttp::with_config(Deadlines::default(), operation_limited());
    tokio::spawn(http.clone().serve_tcp(listener));
    let mut channel = BasicHttpChannel::new(&format!("http://{addr}/slow")).unwrap();
    channel.set_timeout(STEP);

    let started = Instant::now();
    let reply = channel.call(SLOW, element("Slow")).await.unwrap();
    let took = started.elapsed();
    assert!(took >= LIMIT && took < LIMIT + SLACK, "{took:?}");
    assert_timeout_fault(&reply);
    assert_eq!(
        http.service().ended.load(Ordering::SeqCst),
        1,
        "handler dropped"
    );

    let reply = channel.call(QUICK, element("Quick")).await.unwrap();
    assert_quick_response(&reply);

    // One-way: 202 once the operation is given up.
    let started = Instant::now();
    channel
        .send(SLOW_ONE_WAY, element("SlowOneWay"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took >= LIMIT && took < LIMIT + SLACK, "{took:?}");
    assert_eq!(
        http.service().ended.load(Ordering::SeqCst),
        2,
        "handler dropped"
    );
}

/// basicHttp serving the calculator on a loopback port with `config`.
async fn calculator_http(config: HostConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = BasicHttp::with_config(CalculatorServer(Calc::new()), config);
    tokio::spawn(http.serve_tcp(listener));
    addr
}

const ADD_ENVELOPE: &str = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
    <s:Body><Add xmlns=\"http://interop.example/calc/2024\"><a>2</a><b>3</b></Add></s:Body>\
    </s:Envelope>";

/// A request head for an `Add` whose body is `length` bytes long.
fn add_head(length: usize) -> String {
    format!(
        "POST /calc HTTP/1.1\r\nHost: calc.example\r\nContent-Type: text/xml; charset=utf-8\r\n\
         SOAPAction: \"http://interop.example/calc/2024/ICalculator/Add\"\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Reads until the server closes the connection; what it sent and how long that took.
/// Fails if the connection stays open past [`LIMIT`] + [`SLACK`].
async fn read_until_closed(tcp: &mut (impl AsyncReadExt + Unpin), since: Instant) -> Vec<u8> {
    let mut got = Vec::new();
    let read = timeout(LIMIT + SLACK, async {
        let mut buf = [0; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break, // EOF or reset: closed either way
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "connection still open after {:?}; got {:?}",
        since.elapsed(),
        String::from_utf8_lossy(&got)
    );
    got
}

/// The calculator still answers a well-formed request on a new connection.
async fn still_serves(addr: SocketAddr) {
    let mut channel = BasicHttpChannel::new(&format!("http://{addr}/calc")).unwrap();
    channel.set_timeout(STEP);
    let client = CalculatorClient::new(channel);
    assert_eq!(client.add(Add { a: 2, b: 3 }).await.unwrap().add_result, 5);
}

#[tokio::test]
async fn basic_http_stalled_body_is_cut_off() {
    let mut config = HostConfig::default();
    config.set_body_read_timeout(LIMIT);
    let addr = calculator_http(config).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(add_head(1000).as_bytes()).await.unwrap();
    tcp.write_all(&ADD_ENVELOPE.as_bytes()[..40]).await.unwrap();
    let sent = Instant::now();
    let got = read_until_closed(&mut tcp, sent).await;
    assert!(sent.elapsed() >= LIMIT, "closed before the limit");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");

    still_serves(addr).await;
}

#[tokio::test]
async fn basic_http_trickled_body_is_cut_off() {
    // Steady progress earns no extension: the limit covers the whole body.
    let mut config = HostConfig::default();
    config.set_body_read_timeout(LIMIT * 2);
    let addr = calculator_http(config).await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    write.write_all(add_head(1000).as_bytes()).await.unwrap();
    let sent = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
    });
    let got = read_until_closed(&mut read, sent).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");

    still_serves(addr).await;
}

#[tokio::test]
async fn basic_http_idle_keep_alive_connection_is_closed() {
    let mut config = HostConfig::default();
    config.set_receive_timeout(LIMIT);
    let addr = calculator_http(config).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(add_head(ADD_ENVELOPE.len()).as_bytes())
        .await
        .unwrap();
    tcp.write_all(ADD_ENVELOPE.as_bytes()).await.unwrap();
    // The whole answer (hyper writes it at once; the envelope is its end).
    let mut got = Vec::new();
    timeout(STEP, async {
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&got).contains("</s:Envelope>") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("answered in time");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("<AddResult>5</AddResult>"), "{text}");
    // Kept alive, then idle: closed after the limit.
    let idle = Instant::now();
    let rest = read_until_closed(&mut tcp, idle).await;
    assert!(idle.elapsed() >= LIMIT / 2, "closed before the limit");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    still_serves(addr).await;
}
