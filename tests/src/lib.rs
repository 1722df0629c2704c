//! Helpers for Ferry's end-to-end tests: a gateway on loopback and raw WebSocket clients that
//! speak the Hybrid Connections protocol by hand, so the tests see exactly what is on the wire.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_hc::SasToken;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long any single step of a test may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// A WebSocket client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Starts a development gateway (dynamic paths, one Manage rule), adjusted by `tweak`.
pub async fn gateway(tweak: impl FnOnce(&mut Config)) -> RunningGateway {
    let mut config = Config::dev();
    // Test peers often do not answer a closing handshake; do not wait long for them.
    config.timeouts.close = Duration::from_millis(500);
    tweak(&mut config);
    Gateway::start(config).await.expect("gateway starts")
}

/// A token for `path` signed with the gateway's first rule, valid for an hour.
pub fn token(gw: &RunningGateway, path: &str) -> String {
    SasToken::create(
        &format!("http://localhost/{path}"),
        gw.rule_name(),
        gw.rule_key(),
        now() + 3600,
    )
}

/// Opens a WebSocket to `target` (path and query) on the gateway's plain port with `headers`.
/// An HTTP refusal comes back as `Err((status, reason))`.
pub async fn ws(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let tcp = TcpStream::connect(addr).await.expect("gateway reachable");
    ws_over(tcp, addr, target, headers).await
}

/// A TCP connection to `addr` from the loopback address `source` (any 127.x.y.z), so that
/// one test can play several hosts.
pub async fn tcp_from(source: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// As [`ws`], over a TCP connection already open to `addr`.
pub async fn ws_over(
    tcp: TcpStream,
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let mut request = format!("ws://{addr}{target}")
        .into_client_request()
        .expect("valid url");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    match tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("handshake in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.status()
                .canonical_reason()
                .unwrap_or_default()
                .to_owned(),
        )),
        Err(e) => panic!("handshake failed without a status: {e}"),
    }
}

/// Opens a listener control channel on `path`.
pub async fn listener(gw: &RunningGateway, path: &str) -> Ws {
    let addr = gw.plain_addr().expect("plain port");
    ws(
        addr,
        &format!("/$hc/{path}?sb-hc-action=listen"),
        &[("ServiceBusAuthorization", &token(gw, path))],
    )
    .await
    .expect("listener accepted")
}

/// The next message, failing the test after [`STEP`].
pub async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("message in time")
        .expect("stream open")
        .expect("read ok")
}

/// Reads control messages until a JSON command arrives; returns it parsed.
pub async fn next_command(ws: &mut Ws) -> ferry_hc::Command {
    loop {
        if let Message::Text(t) = next(ws).await {
            return ferry_hc::Command::decode(&t).expect("valid command");
        }
    }
}

/// Splits an `accept.address` into the address to dial and the target.
pub fn target_of(address: &str) -> String {
    let rest = address.split_once("://").expect("absolute url").1;
    let slash = rest.find('/').expect("has a path");
    rest[slash..].to_owned()
}

/// The status with which the gateway refuses an upgrade; fails the test if it is accepted.
pub async fn refused(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> u16 {
    match ws(addr, target, headers).await {
        Ok(_) => panic!("upgrade to {target} was accepted"),
        Err((status, _)) => status,
    }
}

/// The code of the Close frame that must be the next message (0 for a Close without one).
pub async fn close_code(ws: &mut Ws) -> u16 {
    match next(ws).await {
        Message::Close(Some(frame)) => frame.code.into(),
        Message::Close(None) => 0,
        other => panic!("expected a close, got {other:?}"),
    }
}
