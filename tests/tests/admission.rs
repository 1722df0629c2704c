//! Fair admission, end to end: one source cannot take every slot, senders cannot lock the
//! listeners out, a source guessing tokens is shut out for a while, and idle or half-closed
//! connections give their slots back. Several hosts are played from different loopback
//! addresses (127.0.0.x).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use ferry_hc::Command;
use ferry_tests::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Reads what the gateway says on `tcp` until it closes it; fails the test if it keeps the
/// connection open past [`STEP`].
async fn until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match timeout(STEP, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the gateway kept the connection open"),
        }
    }
}

/// An upgrade to `target` from `source`: `Ok` if accepted, the status if refused, or
/// `Err(0)` if the gateway closed the connection without an answer.
async fn upgrade_from(
    source: [u8; 4],
    addr: SocketAddr,
    target: &str,
    token: &str,
) -> Result<Ws, u16> {
    let tcp = tcp_from(source, addr).await.expect("tcp connect");
    // A connection refused at accept is closed before anything is read: peek for that first,
    // so the WebSocket client is only handed a connection the gateway kept.
    let mut probe = [0; 1];
    if let Ok(r) = timeout(Duration::from_millis(200), tcp.peek(&mut probe)).await {
        assert!(matches!(r, Ok(0) | Err(_)), "the gateway spoke first");
        return Err(0);
    }
    let headers = [("ServiceBusAuthorization", token)];
    ws_over(tcp, addr, target, &headers)
        .await
        .map_err(|(s, _)| s)
}

fn listen_target(path: &str) -> String {
    format!("/$hc/{path}?sb-hc-action=listen")
}

fn connect_target(path: &str) -> String {
    format!("/$hc/{path}?sb-hc-action=connect")
}

#[tokio::test]
async fn one_source_cannot_take_every_slot() {
    let gw = gateway(|c| c.limits.max_connections_per_source = 4).await;
    let addr = gw.plain_addr().unwrap();
    let tok = token(&gw, "p");
    // Four connections from 127.0.0.3 that say nothing: its whole share.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tcp_from([127, 0, 0, 3], addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        upgrade_from([127, 0, 0, 3], addr, &listen_target("p"), &tok)
            .await
            .err(),
        Some(0),
        "a fifth connection from the same source is closed at once"
    );
    let other = upgrade_from([127, 0, 0, 4], addr, &listen_target("p"), &tok).await;
    assert!(other.is_ok(), "another source is served: {:?}", other.err());
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = upgrade_from([127, 0, 0, 3], addr, &listen_target("p"), &tok).await;
    assert!(
        again.is_ok(),
        "closing gives the share back: {:?}",
        again.err()
    );
}

#[tokio::test]
async fn a_flood_of_senders_cannot_lock_the_listeners_out() {
    let gw = gateway(|c| {
        c.limits.max_sender_connections = NonZeroUsize::new(3).unwrap();
        c.limits.max_connections_per_source = 0;
    })
    .await;
    let addr = gw.plain_addr().unwrap();
    let nettcp = gw.nettcp_addr().unwrap();
    let tok = token(&gw, "p");
    let mut control = listener(&gw, "p").await;
    // Three net.tcp connections that never send a preamble take every sender slot.
    let mut flood = Vec::new();
    for i in 0..3 {
        flood.push(tcp_from([127, 0, 1, i], nettcp).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sender = upgrade_from([127, 0, 2, 1], addr, &connect_target("p"), &tok).await;
    assert_eq!(sender.err(), Some(503), "no room for another sender");
    // Listeners draw on their own budget: a second one connects.
    let second = upgrade_from([127, 0, 2, 2], addr, &listen_target("p"), &tok).await;
    assert!(second.is_ok(), "a listener got in: {:?}", second.err());
    drop(second);
    // Once a flooding connection goes, a sender is relayed, rendezvous and all.
    drop(flood.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sending = tokio::spawn(async move {
        upgrade_from([127, 0, 2, 1], addr, &connect_target("p"), &tok).await
    });
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!("expected an accept")
    };
    let mut rendezvous = ws(addr, &target_of(&accept.address), &[])
        .await
        .expect("rendezvous accepted");
    let mut sender = sending.await.unwrap().expect("sender accepted");
    sender.send("hello".into()).await.unwrap();
    assert_eq!(next(&mut rendezvous).await.into_text().unwrap(), "hello");
}

#[tokio::test]
async fn a_source_guessing_tokens_is_shut_out_for_a_while() {
    let gw = gateway(|c| c.limits.auth_failures_per_source_per_minute = 3).await;
    let addr = gw.plain_addr().unwrap();
    let good = token(&gw, "p");
    let _control = listener(&gw, "p").await;
    // A kept-alive HTTP connection opened before the guessing starts.
    let mut kept = tcp_from([127, 0, 3, 1], addr).await.unwrap();
    let bad = good.replace("sig=", "sig=x");
    for _ in 0..4 {
        let status = upgrade_from([127, 0, 3, 1], addr, &connect_target("p"), &bad).await;
        assert_eq!(status.err(), Some(401));
    }
    let blocked = upgrade_from([127, 0, 3, 1], addr, &connect_target("p"), &good).await;
    assert_eq!(
        blocked.err(),
        Some(0),
        "even a good token from the guessing source is refused for now"
    );
    kept.write_all(b"GET /p/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    let elsewhere = upgrade_from([127, 0, 3, 2], addr, &listen_target("p"), &good).await;
    assert!(
        elsewhere.is_ok(),
        "other sources are not affected: {:?}",
        elsewhere.err()
    );
}

#[tokio::test]
async fn idle_http_connections_are_closed() {
    let gw = gateway(|c| c.timeouts.idle = Some(Duration::from_secs(1))).await;
    let addr = gw.plain_addr().unwrap();
    // HTTP/1.1 keep-alive: one request, then silence.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /nobody/here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed only once idle"
    );

    // HTTP/2 with prior knowledge: the client's connection ends once it has idled.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/nobody/here"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 401);
    drop(response);
    let started = Instant::now();
    timeout(STEP, driver)
        .await
        .expect("the gateway ends an idle HTTP/2 connection")
        .unwrap()
        .expect("ended cleanly (GOAWAY)");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_half_closed_relay_ends_when_the_other_side_never_closes() {
    let gw = gateway(|c| c.timeouts.half_close = Some(Duration::from_secs(1))).await;
    let addr = gw.plain_addr().unwrap();
    let tok = token(&gw, "p");
    let mut control = listener(&gw, "p").await;
    let sending = tokio::spawn(async move {
        ws(
            addr,
            &connect_target("p"),
            &[("ServiceBusAuthorization", &tok)],
        )
        .await
    });
    let Command::Accept(accept) = next_command(&mut control).await else {
        panic!("expected an accept")
    };
    // The listener's side of the relay: never read, so never answers a close.
    let _rendezvous = ws(addr, &target_of(&accept.address), &[]).await.unwrap();
    let mut sender = sending.await.unwrap().unwrap();
    let tasks = gw.active_tasks();
    sender.close(None).await.unwrap();
    let started = Instant::now();
    // The sender's close is answered once the half-close timeout has passed.
    assert_eq!(close_code(&mut sender).await, 1001);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let deadline = Instant::now() + STEP;
    while gw.active_tasks() >= tasks {
        assert!(Instant::now() < deadline, "the relay task is gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
