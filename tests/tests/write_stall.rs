//! A sender that asks for a large HTTP response and never reads it: the gateway must close its
//! connection once writes to it stall for `timeouts.write_stall`, and let the listener go.
//! Over HTTP/2 a client can also stall one stream while the connection stays busy: that
//! stream is given up after the same limit, with an error (never a short body that looks
//! complete), and the connection's other streams carry on.

use std::time::Duration;

use ferry_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The response body the listener offers: far more than socket buffers hold.
const BIG: usize = 64 << 20;
/// Size of each chunk the listener produces.
const CHUNK: usize = 64 << 10;
/// How long the gateway has to notice a stalled sender, with a 1 s stall limit.
const BOUND: Duration = Duration::from_secs(10);

/// Reports through its channel when dropped: proves the listener's body stream was let go.
struct DropSignal(tokio::sync::mpsc::Sender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send("dropped");
    }
}

/// An SDK HTTP listener on `path`: `/{path}/big` answers with a 64 MiB streamed body whose
/// stream holds a [`DropSignal`]; anything else answers `ok`.
async fn big_listener(
    gw: &ferry_gateway::RunningGateway,
    path: &str,
) -> (
    ferry_sdk::Listener,
    tokio::sync::mpsc::Receiver<&'static str>,
) {
    use ferry_sdk::http::{Body, HttpConfig, HttpListener};

    let addr = gw.plain_addr().expect("plain port");
    let mut endpoint = ferry_sdk::Endpoint::new(&format!("ws://{addr}"), path).expect("endpoint");
    endpoint.set_token_provider(ferry_sdk::SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    let (events_tx, events) = tokio::sync::mpsc::channel(16);
    let handler = move |req: http::Request<Body>| {
        let events = events_tx.clone();
        async move {
            if !req.uri().path().ends_with("/big") {
                return http::Response::new(Body::from("ok"));
            }
            let _ = events.send("started").await;
            let guard = DropSignal(events);
            let chunks =
                futures_util::stream::unfold((0usize, guard), |(sent, guard)| async move {
                    (sent < BIG).then(|| {
                        (
                            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; CHUNK])),
                            (sent + CHUNK, guard),
                        )
                    })
                });
            http::Response::new(Body::from_stream(chunks))
        }
    };
    let (listener, requests) = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .expect("listener online")
        .into_parts();
    tokio::spawn(requests.serve(handler));
    (listener, events)
}

fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {token}\r\n\r\n")
}

/// Reads until end of stream or an error (a reset), within `limit`; returns the bytes read.
async fn read_to_end_or_reset(tcp: &mut TcpStream, limit: Duration) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the gateway closed the stalled sender's connection");
    total
}

#[tokio::test]
async fn a_sender_that_never_reads_is_closed_and_its_listener_released() {
    let gw = gateway(|c| c.timeouts.write_stall = Duration::from_secs(1)).await;
    let addr = gw.plain_addr().expect("plain port");
    let (_listener, mut events) = big_listener(&gw, "big").await;
    let baseline = gw.active_tasks();

    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(get("/big/big", &token(&gw, "big")).as_bytes())
        .await
        .expect("request sent");
    let started = tokio::time::timeout(STEP, events.recv()).await;
    assert_eq!(started.ok().flatten(), Some("started"));

    // The listener's body stream is dropped: the gateway closed the rendezvous once the
    // sender's connection failed.
    let released = tokio::time::timeout(BOUND, events.recv()).await;
    assert_eq!(
        released.ok().flatten(),
        Some("dropped"),
        "the listener's response is released within {BOUND:?}"
    );
    // The connection task ended: the gateway holds no more tasks than before the request.
    tokio::time::timeout(BOUND, async {
        while gw.active_tasks() > baseline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stalled connection's task ended");
    assert_eq!(gw.pending_http_requests(), 0);

    // Reading now finds what the socket buffers held, then the end: never the whole body.
    let read = read_to_end_or_reset(&mut stalled, BOUND).await;
    assert!(read < BIG, "the body was cut off ({read} bytes read)");

    // Another sender on a new connection is served.
    let mut fresh = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /big/small HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {}\r\nConnection: close\r\n\r\n",
        token(&gw, "big")
    );
    fresh.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, fresh.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    gw.shutdown().await;
}

/// A sender that reads slowly but steadily is not cut off: progress restarts the stall clock.
#[tokio::test]
async fn a_slow_but_steady_reader_gets_the_whole_body() {
    let gw = gateway(|c| c.timeouts.write_stall = Duration::from_secs(1)).await;
    let addr = gw.plain_addr().expect("plain port");
    let (_listener, _events) = big_listener(&gw, "big").await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(get("/big/big", &token(&gw, "big")).as_bytes())
        .await
        .expect("request sent");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let mut reads = 0u32;
    // Pauses of 300 ms, each under the 1 s limit, for the first few seconds; then full speed.
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if reads < 10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            reads += 1;
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
            if total > BIG {
                return;
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the body arrived in time");
    assert!(total > BIG, "the whole body arrived ({total} bytes)");
    gw.shutdown().await;
}

/// An HTTP/2 client that keeps its connection alive but never reads one response stream
/// (flow control stalls it, not a socket write): the gateway gives that stream up after the
/// stall limit, releases the listener, and ends the stream with an error, while another
/// request on the same connection is served.
#[tokio::test]
async fn an_http2_stream_nobody_reads_is_given_up_with_an_error() {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let gw = gateway(|c| c.timeouts.write_stall = Duration::from_secs(1)).await;
    let addr = gw.plain_addr().expect("plain port");
    let (_listener, mut events) = big_listener(&gw, "big").await;
    // h2c with prior knowledge on the plain port.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::get(format!("http://localhost{path}"))
            .header("ServiceBusAuthorization", token(&gw, "big"))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let big = tokio::time::timeout(STEP, client.send_request(get("/big/big")))
        .await
        .expect("response head in time")
        .expect("response head");
    assert_eq!(big.status(), 200);
    let started = tokio::time::timeout(STEP, events.recv()).await;
    assert_eq!(started.ok().flatten(), Some("started"));

    // The body is not read: the stream's window fills and the relay stalls on it.
    let released = tokio::time::timeout(BOUND, events.recv()).await;
    assert_eq!(
        released.ok().flatten(),
        Some("dropped"),
        "the listener's response is released within {BOUND:?}"
    );

    // The connection is still up and serves another request.
    client.ready().await.expect("connection still usable");
    let small = tokio::time::timeout(STEP, client.send_request(get("/big/small")))
        .await
        .expect("answer in time")
        .expect("answer");
    let text = tokio::time::timeout(STEP, small.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    assert_eq!(&text[..], b"ok");

    // The stalled stream ends with an error once read, never as a complete short body.
    let mut body = big.into_body();
    let mut read = 0usize;
    let end = tokio::time::timeout(BOUND, async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, bytes::Bytes::len),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the stalled stream ended in time");
    assert!(
        end.is_err(),
        "a given-up stream ends with an error, not a clean end ({read} of {BIG} bytes)"
    );
    assert!(read < BIG, "the body was cut off ({read} bytes read)");
    gw.shutdown().await;
}
