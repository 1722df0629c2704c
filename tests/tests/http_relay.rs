//! HTTP request relaying through the gateway with a hand-driven listener, so every message
//! on the control channel is exactly what the test says: the happy path, and each way a
//! sender or a listener can misbehave.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_hc::Command;
use ferry_hc::command::{Headers, Response};
use ferry_tests::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Sends a raw HTTP/1.1 request and returns the status code and the whole response text.
async fn http(addr: SocketAddr, request: String) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
        .await
        .expect("gateway answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The body of a raw HTTP/1.1 response, de-chunked when it is chunked.
fn body_of(raw: &[u8]) -> Vec<u8> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut rest = &raw[split..];
    if !head.contains("transfer-encoding: chunked") {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn get(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {token}\r\nConnection: close\r\n\r\n"
    )
}

fn respond(id: &str, status: u16, body: bool) -> Message {
    Message::text(
        Command::Response(Response {
            request_id: id.into(),
            status_code: status,
            status_description: None,
            response_headers: Headers::from([("X-From".into(), "listener".into())]),
            body,
        })
        .encode(),
    )
}

/// The next `request` command on a control channel and, when it has one, its body.
async fn next_request(control: &mut Ws) -> (ferry_hc::command::Request, Option<Vec<u8>>) {
    let Command::Request(r) = next_command(control).await else {
        panic!("expected a request")
    };
    let body = if r.body == Some(true) {
        match next(control).await {
            Message::Binary(b) => Some(b.to_vec()),
            other => panic!("expected the body message, got {other:?}"),
        }
    } else {
        None
    };
    (r, body)
}

#[tokio::test]
async fn inline_request_and_response_carry_method_target_headers_and_body() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "web").await;
    let tok = token(&gw, "web");
    let request = format!(
        "POST /web/a%20b?q=1&sb-hc-id=x HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {tok}\r\n\
         X-Two: 1\r\nX-Two: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let client = tokio::spawn(http(addr, request));
    let (r, body) = next_request(&mut control).await;
    assert_eq!(r.method.as_deref(), Some("POST"));
    assert_eq!(r.request_target.as_deref(), Some("/web/a%20b?q=1"));
    let headers = r.request_headers.clone().unwrap();
    assert_eq!(headers.get("x-two").map(String::as_str), Some("1, 2"));
    assert!(
        !headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("servicebusauthorization")
                || k == "content-length"
                || k == "connection")
    );
    assert_eq!(
        headers.get("via").map(String::as_str),
        Some("1.1 localhost")
    );
    assert_eq!(body.as_deref(), Some(&b"hello"[..]));
    control.send(respond(&r.id, 201, true)).await.unwrap();
    control
        .send(Message::binary(b"created".to_vec()))
        .await
        .unwrap();
    let (status, text) = client.await.unwrap();
    assert_eq!(status, 201, "{text}");
    assert!(
        text.contains("x-from: listener")
            && text.contains("via: 1.1 localhost")
            && text.ends_with("created"),
        "{text}"
    );
    assert_eq!(gw.pending_http_requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_misbehaving_listener_fails_only_the_request_concerned() {
    let gw = gateway(|c| c.timeouts.request = Duration::from_millis(800)).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "bad").await;
    let tok = token(&gw, "bad");

    // Invalid JSON naming the request: that request fails with 502 at once.
    let first = tokio::spawn(http(addr, get("/bad/1", &tok)));
    let (r1, _) = next_request(&mut control).await;
    let broken = format!(
        r#"{{"response":{{"requestId":"{}","statusCode":"not a number"}}}}"#,
        r1.id
    );
    control.send(Message::text(broken)).await.unwrap();
    assert_eq!(first.await.unwrap().0, 502);

    // Garbage, a body with no response before it, a response for an unknown id: ignored.
    control.send(Message::text("{not json")).await.unwrap();
    control.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    control
        .send(respond("no-such-request", 200, false))
        .await
        .unwrap();

    // The listener is still there and answers the next request normally.
    let second = tokio::spawn(http(addr, get("/bad/2", &tok)));
    let (r2, _) = next_request(&mut control).await;
    control.send(respond(&r2.id, 200, false)).await.unwrap();
    assert_eq!(second.await.unwrap().0, 200);

    // A listener that never answers: 504 after the path's deadline.
    let third = tokio::spawn(http(addr, get("/bad/3", &tok)));
    let _ = next_request(&mut control).await;
    assert_eq!(third.await.unwrap().0, 504);
    assert_eq!(gw.listener_count("bad"), 1);
    assert_eq!(gw.pending_http_requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_listener_that_goes_away_fails_its_requests_at_once() {
    let gw = gateway(|c| c.timeouts.request = Duration::from_secs(30)).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "gone").await;
    let tok = token(&gw, "gone");
    let client = tokio::spawn(http(addr, get("/gone/1", &tok)));
    let _ = next_request(&mut control).await;
    let started = tokio::time::Instant::now();
    drop(control);
    let (status, text) = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("answered long before the 30 s deadline")
        .unwrap();
    assert_eq!(status, 502, "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gw.pending_http_requests(), 0);
    gw.shutdown().await;
}

/// Sends a PUT of `payload` with `tok` to `target` in a task; its result is everything the
/// gateway answered until it closed.
fn put(
    addr: SocketAddr,
    target: &str,
    tok: &str,
    payload: &[u8],
) -> tokio::task::JoinHandle<Vec<u8>> {
    let mut request = format!(
        "PUT {target} HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {tok}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    request.extend_from_slice(payload);
    tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    })
}

#[tokio::test]
async fn a_rendezvous_request_keeps_its_paths_deadline_not_the_global_one() {
    // The global deadline is short; the path's is long. A listener that answers over the
    // rendezvous after the global one has passed still reaches the sender.
    let gw = gateway(|c| {
        c.timeouts.request = Duration::from_millis(500);
        c.paths = vec![ferry_gateway::PathConfig {
            request_timeout: Some(Duration::from_secs(20)),
            ..ferry_gateway::PathConfig::new("slow")
        }];
    })
    .await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "slow").await;
    let tok = token(&gw, "slow");
    let payload = vec![5u8; 100_000];
    let client = put(addr, "/slow/up", &tok, &payload);
    let Command::Request(only) = next_command(&mut control).await else {
        panic!()
    };
    let mut rv = ws(addr, &target_of(&only.address), &[])
        .await
        .expect("request rendezvous");
    let Command::Request(full) = next_command(&mut rv).await else {
        panic!()
    };
    let Message::Binary(_) = next(&mut rv).await else {
        panic!("body expected")
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rv.send(respond(&full.id, 200, false)).await.unwrap();
    let out = client.await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out[..40.min(out.len())])
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn large_bodies_go_through_a_rendezvous() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "big").await;
    let tok = token(&gw, "big");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + 7) as u8).collect();
    let client = put(addr, "/big/up", &tok, &payload);
    // Rendezvous-only form: neither method nor body on the control channel.
    let Command::Request(only) = next_command(&mut control).await else {
        panic!()
    };
    assert!(only.is_rendezvous_only(), "{only:?}");
    let mut rv = ws(addr, &target_of(&only.address), &[])
        .await
        .expect("request rendezvous");
    let Command::Request(full) = next_command(&mut rv).await else {
        panic!()
    };
    assert_eq!(
        (full.method.as_deref(), full.body),
        (Some("PUT"), Some(true))
    );
    let Message::Binary(body) = next(&mut rv).await else {
        panic!("body expected")
    };
    assert_eq!(&body[..], &payload[..]);
    // Answer with a large body on the same socket.
    rv.send(respond(&full.id, 200, true)).await.unwrap();
    rv.send(Message::binary(payload.clone())).await.unwrap();
    let out = client.await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out[..40.min(out.len())])
    );
    assert_eq!(
        body_of(&out),
        payload,
        "the streamed response arrives whole"
    );
    // The address is single-use.
    assert_eq!(refused(addr, &target_of(&only.address), &[]).await, 403);
    gw.shutdown().await;
}

#[tokio::test]
async fn sender_side_limits_and_refusals() {
    let gw = gateway(|c| c.limits.max_request_body = 1000).await;
    let addr = gw.plain_addr().unwrap();
    let _control = listener(&gw, "lim").await;
    let tok = token(&gw, "lim");
    let too_big = format!(
        "POST /lim HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {tok}\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(http(addr, too_big).await.0, 413);
    let chunked_too_big = format!(
        "POST /lim HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {tok}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         7d0\r\n{}\r\n0\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(http(addr, chunked_too_big).await.0, 413);
    let huge_head = format!(
        "GET /lim HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    assert_eq!(http(addr, huge_head).await.0, 431);
    assert_eq!(http(addr, "GARBAGE\r\n\r\n".into()).await.0, 400);
    assert_eq!(
        http(
            addr,
            format!("CONNECT /lim HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: {tok}\r\nConnection: close\r\n\r\n")
        )
        .await
        .0,
        405
    );
    assert_eq!(
        http(addr, get("/lim", "SharedAccessSignature junk"))
            .await
            .0,
        401
    );
    let (status, text) = http(addr, get("/nobody-here", &token(&gw, "nobody-here"))).await;
    assert_eq!(status, 404, "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("via:"),
        "gateway refusals carry no Via"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn configured_path_without_listener_is_502() {
    let gw = gateway(|c| {
        c.dynamic_paths = false;
        c.paths = vec![ferry_gateway::PathConfig::new("quiet")];
    })
    .await;
    let (status, _) = http(
        gw.plain_addr().unwrap(),
        get("/quiet/x", &token(&gw, "quiet")),
    )
    .await;
    assert_eq!(status, 502);
    gw.shutdown().await;
}

/// Writes `len` bytes of the test pattern as a chunked request body, 64 KiB per chunk.
async fn chunked_upload(addr: SocketAddr, path: &str, token: &str, len: usize) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    for chunk in data.chunks(64 * 1024) {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if tcp.write_all(&frame).await.is_err() {
            break; // the gateway stopped reading (limit reached)
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    (
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        text,
    )
}

#[tokio::test]
async fn bodies_of_unknown_length_stream_to_the_listener() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "stream").await;
    let tok = token(&gw, "stream");
    const LEN: usize = 20 << 20;
    let client = tokio::spawn(async move { chunked_upload(addr, "/stream/up", &tok, LEN).await });
    let Command::Request(only) = next_command(&mut control).await else {
        panic!()
    };
    assert!(
        only.is_rendezvous_only(),
        "a body of unknown length over 64 KiB goes by rendezvous"
    );
    let mut rv = ws(addr, &target_of(&only.address), &[])
        .await
        .expect("rendezvous");
    let Command::Request(full) = next_command(&mut rv).await else {
        panic!()
    };
    assert_eq!(full.body, Some(true));
    let Message::Binary(body) = next(&mut rv).await else {
        panic!("one binary message")
    };
    assert_eq!(body.len(), LEN);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 31 + 7) as u8),
        "body intact"
    );
    rv.send(respond(&full.id, 204, false)).await.unwrap();
    assert_eq!(client.await.unwrap().0, 204);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413_and_the_listener_sees_1009() {
    let gw = gateway(|c| c.limits.max_request_body = 1 << 20).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "cap").await;
    let tok = token(&gw, "cap");
    let client = tokio::spawn(async move { chunked_upload(addr, "/cap", &tok, 3 << 20).await });
    let Command::Request(only) = next_command(&mut control).await else {
        panic!()
    };
    let mut rv = ws(addr, &target_of(&only.address), &[])
        .await
        .expect("rendezvous");
    let _request = next_command(&mut rv).await;
    let got = tokio::time::timeout(STEP, rv.next())
        .await
        .expect("close in time");
    match got {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1009),
        Some(Err(_)) | None => {} // tungstenite may refuse the partial message first
        other => panic!("expected a close, got {other:?}"),
    }
    let (status, text) = client.await.unwrap();
    assert_eq!(status, 413, "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_within_the_deadline() {
    let gw = gateway(|c| c.timeouts.request = Duration::from_millis(500)).await;
    let addr = gw.plain_addr().unwrap();
    let _control = listener(&gw, "slow").await;
    let tok = token(&gw, "slow");
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /slow HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {tok}\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // ... and the other 90 bytes never come.
    let mut out = vec![0u8; 512];
    let n = tokio::time::timeout(STEP, tcp.read(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut after the deadline, not later"
    );
    assert_eq!(gw.pending_http_requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn anonymous_http_senders_where_the_path_allows() {
    let gw = gateway(|c| {
        c.dynamic_paths = false;
        let mut open = ferry_gateway::PathConfig::new("open");
        open.anonymous_senders = true;
        c.paths = vec![open, ferry_gateway::PathConfig::new("closed")];
    })
    .await;
    let addr = gw.plain_addr().unwrap();
    let mut control = listener(&gw, "open").await;
    let _closed = listener(&gw, "closed").await;
    let anonymous =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let client = tokio::spawn(http(addr, anonymous("/open/hello")));
    let (r, _) = next_request(&mut control).await;
    control.send(respond(&r.id, 200, false)).await.unwrap();
    assert_eq!(client.await.unwrap().0, 200);
    assert_eq!(http(addr, anonymous("/closed/hello")).await.0, 401);
    gw.shutdown().await;
}

/// Reports through `events` when dropped: proves a handler's future (and everything it
/// holds) was dropped.
struct DropSignal(tokio::sync::mpsc::Sender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send("dropped");
    }
}

/// An SDK HTTP listener on `path` whose handler says "started", then waits for ever holding
/// a [`DropSignal`]; a path ending in `/stream` gets a response head and 100 KB of body
/// (more than goes inline, so it streams over a rendezvous), then a body that never ends.
async fn stuck_listener(
    gw: &ferry_gateway::RunningGateway,
    path: &str,
) -> (
    ferry_sdk::Listener,
    tokio::sync::mpsc::Receiver<&'static str>,
) {
    use ferry_sdk::http::{Body, HttpConfig, HttpListener};

    let addr = gw.plain_addr().unwrap();
    let mut endpoint = ferry_sdk::Endpoint::new(&format!("ws://{addr}"), path).unwrap();
    endpoint.set_token_provider(ferry_sdk::SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    let (events_tx, events) = tokio::sync::mpsc::channel(16);
    let handler = move |req: http::Request<Body>| {
        let events = events_tx.clone();
        async move {
            let guard = DropSignal(events.clone());
            let _ = events.send("started").await;
            if req.uri().path().ends_with("/stream") {
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 100_000]))
                });
                let rest = futures_util::stream::once(async move {
                    let _guard = guard;
                    std::future::pending::<Result<bytes::Bytes, std::io::Error>>().await
                });
                return http::Response::new(Body::from_stream(first.chain(rest)));
            }
            let _guard = guard;
            std::future::pending::<http::Response<Body>>().await
        }
    };
    let (listener, requests) = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .expect("listener online")
        .into_parts();
    tokio::spawn(requests.serve(handler));
    (listener, events)
}

/// The next event from a [`stuck_listener`], within `limit`.
async fn event(
    events: &mut tokio::sync::mpsc::Receiver<&'static str>,
    limit: Duration,
) -> &'static str {
    tokio::time::timeout(limit, events.recv())
        .await
        .expect("event in time")
        .expect("listener alive")
}

/// Polls until the gateway holds no waiting HTTP request.
async fn no_pending_requests(gw: &ferry_gateway::RunningGateway) {
    tokio::time::timeout(STEP, async {
        while gw.pending_http_requests() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pending requests forgotten");
}

#[tokio::test]
async fn a_sender_that_disconnects_cancels_its_inline_request_on_the_sdk_listener() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let (_listener, mut events) = stuck_listener(&gw, "cancel").await;
    // An inline request (on the control channel): only the `cancel` command can reach the
    // listener, as nothing else there names the request.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(get("/cancel/slow", &token(&gw, "cancel")).as_bytes())
        .await
        .unwrap();
    assert_eq!(event(&mut events, STEP).await, "started");
    drop(tcp);
    assert_eq!(
        event(&mut events, Duration::from_secs(2)).await,
        "dropped",
        "the handler's future is dropped once its sender is gone"
    );
    no_pending_requests(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_sender_that_disconnects_cancels_its_rendezvous_request_on_the_sdk_listener() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let (_listener, mut events) = stuck_listener(&gw, "cancel").await;
    // A body over 64 KiB makes it rendezvous-only; the handler does not read it.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let tok = token(&gw, "cancel");
    let head = format!(
        "POST /cancel/upload HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {tok}\r\nContent-Length: 200000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![1u8; 200_000]).await.unwrap();
    assert_eq!(event(&mut events, STEP).await, "started");
    drop(tcp);
    assert_eq!(event(&mut events, Duration::from_secs(2)).await, "dropped");
    no_pending_requests(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_sender_that_disconnects_mid_response_body_stops_the_sdk_listener() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let (_listener, mut events) = stuck_listener(&gw, "cancel").await;
    // The response head and 100 KB of body arrive (over a rendezvous), then the body stalls.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(get("/cancel/stream", &token(&gw, "cancel")).as_bytes())
        .await
        .unwrap();
    assert_eq!(event(&mut events, STEP).await, "started");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while seen.len() < 100_000 {
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
            .await
            .expect("body in time")
            .unwrap();
        assert_ne!(n, 0, "the response went on");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    drop(tcp);
    assert_eq!(event(&mut events, Duration::from_secs(2)).await, "dropped");
    no_pending_requests(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http2_stream_reset_cancels_its_request_on_the_sdk_listener() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let (_listener, mut events) = stuck_listener(&gw, "reset").await;
    // h2c with prior knowledge on the plain port.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = http::Request::get("http://localhost/reset/slow")
        .header("ServiceBusAuthorization", token(&gw, "reset"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::spawn(client.send_request(request));
    assert_eq!(event(&mut events, STEP).await, "started");
    // Dropping the response future resets the stream; the connection stays up.
    response.abort();
    assert_eq!(event(&mut events, Duration::from_secs(2)).await, "dropped");
    no_pending_requests(&gw).await;
    assert!(client.is_ready(), "only the stream was reset");
    gw.shutdown().await;
}

/// Opens a control channel on `path` by hand, with `Ferry-Features: features` if given.
async fn raw_listener(
    gw: &ferry_gateway::RunningGateway,
    path: &str,
    features: Option<&str>,
) -> Ws {
    let tok = token(gw, path);
    let mut headers = vec![("ServiceBusAuthorization", tok.as_str())];
    headers.extend(features.map(|f| ("Ferry-Features", f)));
    ws(
        gw.plain_addr().unwrap(),
        &format!("/$hc/{path}?sb-hc-action=listen"),
        &headers,
    )
    .await
    .expect("listener accepted")
}

/// The text messages a control channel receives within `quiet`.
async fn texts_within(control: &mut Ws, quiet: Duration) -> Vec<String> {
    let mut texts = Vec::new();
    let _ = tokio::time::timeout(quiet, async {
        while let Some(Ok(msg)) = control.next().await {
            if let Message::Text(t) = msg {
                texts.push(t.to_string());
            }
        }
    })
    .await;
    texts
}

#[tokio::test]
async fn cancel_goes_only_to_listeners_that_advertise_it() {
    let gw = gateway(|c| c.timeouts.request = Duration::from_secs(2)).await;
    let addr = gw.plain_addr().unwrap();
    let mut plain = raw_listener(&gw, "plain", None).await;
    let mut capable = raw_listener(&gw, "capable", Some("x-future, Cancel")).await;

    for (path, control) in [("plain", &mut plain), ("capable", &mut capable)] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(get(&format!("/{path}/x"), &token(&gw, path)).as_bytes())
            .await
            .unwrap();
        let (r, _) = next_request(control).await;
        drop(tcp);
        no_pending_requests(&gw).await;
        let texts = texts_within(control, Duration::from_millis(800)).await;
        if path == "plain" {
            assert!(
                texts.is_empty(),
                "a listener that did not ask gets nothing new: {texts:?}"
            );
        } else {
            let cancel = Command::Cancel(ferry_hc::command::Cancel { id: r.id.clone() });
            assert_eq!(texts, [cancel.encode()]);
        }
    }

    // The gateway giving up (504) cancels too, for the listener that understands it.
    let late = tokio::spawn(http(addr, get("/capable/late", &token(&gw, "capable"))));
    let (r, _) = next_request(&mut capable).await;
    assert_eq!(late.await.unwrap().0, 504);
    let Command::Cancel(cancel) = next_command(&mut capable).await else {
        panic!("expected a cancel")
    };
    assert_eq!(cancel.id, r.id);
    // An answered request is not cancelled.
    let answered = tokio::spawn(http(addr, get("/capable/ok", &token(&gw, "capable"))));
    let (r, _) = next_request(&mut capable).await;
    capable.send(respond(&r.id, 200, false)).await.unwrap();
    assert_eq!(answered.await.unwrap().0, 200);
    let texts = texts_within(&mut capable, Duration::from_millis(500)).await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(gw.pending_http_requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_sender_gone_mid_body_closes_the_response_rendezvous_at_once() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    // A listener without the extension: the rendezvous closing is all it can be told.
    let mut control = raw_listener(&gw, "gone", None).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(get("/gone/x", &token(&gw, "gone")).as_bytes())
        .await
        .unwrap();
    let (r, _) = next_request(&mut control).await;
    // Answer on the request's rendezvous, as a listener does with a large response, and
    // send part of the body.
    let mut rv = ws(addr, &target_of(&r.address), &[])
        .await
        .expect("response rendezvous");
    rv.send(respond(&r.id, 200, true)).await.unwrap();
    let part = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![3u8; 1000],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Binary,
        ),
        false,
    );
    rv.send(Message::Frame(part)).await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(STEP, tcp.read(&mut head))
        .await
        .expect("head in time")
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    drop(tcp);
    // The listener sends nothing more, yet is told at once.
    let started = tokio::time::Instant::now();
    assert_eq!(close_code(&mut rv).await, 1001);
    assert!(started.elapsed() < Duration::from_secs(2));
    let texts = texts_within(&mut control, Duration::from_millis(300)).await;
    assert!(texts.is_empty(), "{texts:?}");
    no_pending_requests(&gw).await;
    gw.shutdown().await;
}

/// An HTTP/1.0 client (ApacheBench, old tools) is relayed like any other: here with a
/// response streamed over the rendezvous, which reaches it delimited by the connection's end.
#[tokio::test]
async fn http10_clients_are_relayed() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let mut control = raw_listener(&gw, "old", None).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /old/x HTTP/1.0\r\nHost: localhost\r\nServiceBusAuthorization: {}\r\n\r\n",
        token(&gw, "old")
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (r, _) = next_request(&mut control).await;
    let mut rv = ws(addr, &target_of(&r.address), &[])
        .await
        .expect("response rendezvous");
    rv.send(respond(&r.id, 200, true)).await.unwrap();
    rv.send(Message::binary(vec![5u8; 100_000])).await.unwrap();
    rv.close(None).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
        .await
        .expect("the gateway ends the response in time")
        .expect("a clean end");
    let text = String::from_utf8_lossy(&out[..out.len().min(300)]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.0 200"), "{text}");
    assert!(
        !text.contains("transfer-encoding"),
        "no chunked framing for 1.0: {text}"
    );
    assert_eq!(body_of(&out), vec![5u8; 100_000], "the whole body");
    no_pending_requests(&gw).await;
    gw.shutdown().await;
}

/// A WebSocket upgrade needs HTTP/1.1 (RFC 6455 §4.1): over HTTP/1.0 it is a 400, and the
/// listener is not registered.
#[tokio::test]
async fn a_websocket_upgrade_over_http10_is_refused() {
    let gw = gateway(|_| {}).await;
    let addr = gw.plain_addr().unwrap();
    let request = format!(
        "GET /$hc/old?sb-hc-action=listen HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nServiceBusAuthorization: {}\r\n\r\n",
        token(&gw, "old")
    );
    let (status, body) = http(addr, request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTP/1.1"), "{body}");
    assert_eq!(gw.listener_count("old"), 0);
    gw.shutdown().await;
}
