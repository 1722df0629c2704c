//! The npm `hyco-ws` package, an independent Hybrid Connections implementation, against the
//! gateway over TLS: as listener, as sender, and on both sides, with tokens it made itself
//! with `createRelayToken`.

use std::future::Future;

use ferry_interop::{PEER_TIMEOUT, TestGateway, finish, wait_for_line};
use ferry_sdk::{HybridStream, Listener, Message};

/// Awaits `f`, failing the test if it takes longer than [`PEER_TIMEOUT`].
async fn step<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PEER_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
}

async fn recv(stream: &mut HybridStream) -> Option<Message> {
    step("receive", stream.recv()).await.expect("relay healthy")
}

const GREETING: &str = "hello from hyco-ws";

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

#[tokio::test]
async fn hyco_ws_listener_with_sdk_sender() {
    hyco_ws_listener_and_sdk_sender(false).await;
}

/// An SDK sender that asks for a raw stream meets a listener that knows nothing of it: the
/// connection stays a WebSocket, messages and close codes intact.
#[tokio::test]
async fn hyco_ws_listener_keeps_websocket_frames_for_an_sdk_sender_asking_for_raw() {
    hyco_ws_listener_and_sdk_sender(true).await;
}

async fn hyco_ws_listener_and_sdk_sender(ask_raw: bool) {
    let t = TestGateway::start().await;
    let listen_uri = format!("{}/$hc/hyco-l?sb-hc-action=listen", t.wss_base());
    let mut listener = t.node(
        "listener.js",
        &[&listen_uri, t.gw.rule_name(), t.gw.rule_key()],
    );
    wait_for_line(&mut listener, "LISTENING").await;

    let mut endpoint = t.endpoint("hyco-l");
    endpoint.set_raw_streams(ask_raw);
    let mut stream = step("connect", ferry_sdk::connect(&endpoint, &[]))
        .await
        .expect("sender connects");
    assert!(!stream.is_raw(), "hyco-ws never asked for a raw stream");
    assert_eq!(
        recv(&mut stream).await,
        Some(Message::Text(GREETING.into()))
    );
    stream
        .send(Message::Text("ünïcode ✓ <&>".into()))
        .await
        .unwrap();
    assert_eq!(
        recv(&mut stream).await,
        Some(Message::Text("echo:ünïcode ✓ <&>".into()))
    );
    let blob = pattern(300_000);
    stream
        .send(Message::Binary(blob.clone().into()))
        .await
        .unwrap();
    let mut reversed = blob;
    reversed.reverse();
    assert_eq!(
        recv(&mut stream).await,
        Some(Message::Binary(reversed.into()))
    );
    stream.close(1000, "done").await.unwrap();
    assert_eq!(
        wait_for_line(&mut listener, "CLOSED").await,
        "CLOSED 1000 done"
    );
    t.gw.shutdown().await;
}

#[tokio::test]
async fn sdk_listener_with_hyco_ws_sender() {
    sdk_listener_and_hyco_ws_sender(false).await;
}

/// An SDK listener that takes raw streams gets a hyco-ws sender, which never asks for one,
/// as a WebSocket.
#[tokio::test]
async fn sdk_listener_taking_raw_streams_keeps_websocket_frames_for_hyco_ws() {
    sdk_listener_and_hyco_ws_sender(true).await;
}

async fn sdk_listener_and_hyco_ws_sender(take_raw: bool) {
    let t = TestGateway::start().await;
    let mut endpoint = t.endpoint("hyco-s");
    endpoint.set_raw_streams(take_raw);
    let mut listener = step("listen", Listener::open(endpoint))
        .await
        .expect("listener online");
    let connect_uri = format!("{}/$hc/hyco-s?sb-hc-action=connect", t.wss_base());
    let sender = t.node(
        "sender.js",
        &[&connect_uri, t.gw.rule_name(), t.gw.rule_key()],
    );

    let incoming = step("accept", listener.accept())
        .await
        .expect("a sender arrives");
    assert!(incoming.header("Sec-WebSocket-Key").is_some());
    let mut stream = step("rendezvous", incoming.accept())
        .await
        .expect("rendezvous");
    assert!(!stream.is_raw(), "hyco-ws never asked for a raw stream");
    stream.send(Message::Text(GREETING.into())).await.unwrap();
    // Serve like listener.js: transform each message so the sender can check it came back.
    let mut served = 0;
    while let Some(msg) = recv(&mut stream).await {
        let reply = match msg {
            Message::Text(t) => Message::Text(format!("echo:{t}")),
            Message::Binary(b) => {
                let mut v = b.to_vec();
                v.reverse();
                Message::Binary(v.into())
            }
        };
        stream.send(reply).await.unwrap();
        served += 1;
    }
    assert_eq!(served, 2, "one text and one binary message");
    assert_eq!(stream.peer_close().map(|c| c.code), Some(1000));
    let (ok, out) = finish(sender).await;
    assert!(ok, "hyco-ws sender reported failure: {out}");
    assert!(
        out.contains(r#""ok":true"#) && out.contains(r#""binaryLen":100000"#),
        "{out}"
    );
    listener.close().await;
    t.gw.shutdown().await;
}

#[tokio::test]
async fn hyco_ws_on_both_sides() {
    let t = TestGateway::start().await;
    let listen_uri = format!("{}/$hc/hyco-both?sb-hc-action=listen", t.wss_base());
    let mut listener = t.node(
        "listener.js",
        &[&listen_uri, t.gw.rule_name(), t.gw.rule_key()],
    );
    wait_for_line(&mut listener, "LISTENING").await;
    // The sender adds a suffix path and app query, which must reach the listener's address.
    let connect_uri = format!(
        "{}/$hc/hyco-both/extra/path?foo=bar&sb-hc-action=connect&sb-hc-id=my-sender-id",
        t.wss_base()
    );
    let (ok, out) = finish(t.node(
        "sender.js",
        &[&connect_uri, t.gw.rule_name(), t.gw.rule_key()],
    ))
    .await;
    assert!(ok, "hyco-ws sender through hyco-ws listener: {out}");
    assert!(
        out.contains(&format!(r#""greeting":"{GREETING}""#)),
        "{out}"
    );
    assert_eq!(
        wait_for_line(&mut listener, "CLOSED").await,
        "CLOSED 1000 done"
    );
    t.gw.shutdown().await;
}
