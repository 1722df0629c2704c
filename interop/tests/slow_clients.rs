//! Slow and flooding clients against the gateway's HTTP port, from tools nobody here wrote:
//! `slowhttptest` (Debian) in slowloris mode (headers a byte at a time) and slow-body mode (a
//! large POST body a byte at a time), plus a flood of half-open handshakes from one address.
//! Meanwhile a client on another address keeps relaying through the gateway to the SDK echo
//! listener: its round trips stay within twice their latency before the attack, and every
//! message comes back intact.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use ferry_interop::{TestGateway, require_tool};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATH: &str = "steady";
/// Round trips per measurement.
const ROUNDS: usize = 300;
/// How long the attackers keep at it (seconds).
const ATTACK_SECS: u64 = 25;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn tcp_from(source: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// The steady client: a sender on 127.0.0.2, relayed to the echo listener.
async fn steady_client(t: &TestGateway) -> Ws {
    let addr = t.gw.plain_addr().expect("plain port");
    let token = ferry_hc::SasToken::create(
        &format!("http://localhost/{PATH}"),
        t.gw.rule_name(),
        t.gw.rule_key(),
        ferry_interop::now() + 3600,
    );
    let mut request = format!("ws://{addr}/$hc/{PATH}?sb-hc-action=connect")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "ServiceBusAuthorization",
        token.parse().expect("header value"),
    );
    let tcp = tcp_from([127, 0, 0, 2], addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("steady client relayed")
        .0
}

/// Median and 90th percentile of `ROUNDS` echo round trips of distinct 1 KiB messages;
/// fails the test if any comes back different or not at all.
async fn round_trips(ws: &mut Ws, salt: u8) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let payload: Vec<u8> = (0..1024)
            .map(|i| (i as u8) ^ (round as u8) ^ salt)
            .collect();
        let started = Instant::now();
        ws.send(Message::binary(payload.clone()))
            .await
            .expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo within 10 s")
            .expect("stream open")
            .expect("read ok");
        times.push(started.elapsed());
        assert_eq!(echoed.into_data().as_ref(), &payload[..], "round {round}");
    }
    times.sort();
    (times[ROUNDS / 2], times[ROUNDS * 9 / 10])
}

fn slowhttptest(mode: &str, url: &str, extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new("slowhttptest")
        .args([mode, "-c", "2000", "-r", "400", "-i", "5", "-p", "3"])
        .args(["-l", &ATTACK_SECS.to_string(), "-u", url])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("slowhttptest starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_flooding_clients_do_not_hold_up_a_relaying_client() {
    require_tool("slowhttptest", "slowhttptest");
    // A production gateway's limits (the development one has no per-source limits), nothing
    // loosened or tightened for the test.
    let t = TestGateway::start_with(|c| c.limits = ferry_gateway::Limits::default()).await;
    let addr = t.gw.plain_addr().expect("plain port");
    t.echo_listener(PATH).await;
    let mut ws = steady_client(&t).await;
    let (before, before_p90) = round_trips(&mut ws, 0).await;

    let url = format!("http://{addr}/{PATH}/upload");
    let loris = slowhttptest("-H", &url, &[]);
    let body = slowhttptest("-B", &url, &["-s", "1000000", "-t", "POST"]);
    // Half-open handshakes from one address: a request head begun and never finished.
    let flood = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut refused = 0usize;
        for _ in 0..2000 {
            match tcp_from([127, 0, 0, 9], addr).await {
                Ok(mut tcp) => {
                    if tcp.write_all(b"GET /$hc/").await.is_err() {
                        refused += 1;
                    }
                    held.push(tcp);
                }
                Err(_) => refused += 1,
            }
        }
        (held, refused)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (during, during_p90) = round_trips(&mut ws, 0x5a).await;
    let (held, refused) = flood.await.expect("flood task");
    // The gateway keeps at most its per-source share of them (512) and closes the rest.
    let mut byte = [0u8; 1];
    let open = held
        .iter()
        .filter(|tcp| {
            matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert!(
        open <= 512,
        "{open} half-open handshakes from one address still held"
    );
    eprintln!(
        "half-open flood: {open} of {} held by the gateway",
        held.len()
    );
    eprintln!(
        "round trip median {before:?} (p90 {before_p90:?}) before, {during:?} (p90 \
         {during_p90:?}) under slowloris + slow body + {} half-open handshakes ({refused} \
         refused outright)",
        held.len()
    );
    assert!(
        during <= before * 2,
        "median round trip {during:?} under attack, {before:?} before"
    );
    drop((loris, body, held));
}
