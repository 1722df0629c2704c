//! `ferry listen --wcf-to ... --max-message BYTES`: the forwarder's envelope limit. A client
//! on the gateway's net.tcp port talks to our calculator host (`ferry_wcf::Host` serving
//! `ferry_wcf::calc::Calc` on a TCP port) through `ferry listen`; an envelope under the
//! configured limit is carried and answered, one over it gets the sender the
//! `MaxMessageSizeExceeded` framing fault, and the same envelope passes a listener left at the
//! default limit. Values out of range are refused on the command line.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{FERRY, nmf_event, token, wcf_listen, within};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_nmf::{ClientConfig, Event, FaultCode, Limits, Session};
use ferry_soap::version::WSA10_ANONYMOUS;
use ferry_soap::{
    AddressingVersion, BinarySession, Body, EndpointReference, Envelope, RelayAccessToken,
    SoapVersion,
};
use ferry_wcf::calc::Calc;
use ferry_wcf::generated::calculator::{CalculatorServer, Echo, EchoResponse};
use ferry_wcf::{DataContract, Host};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// Longest wait for one answer.
const STEP: Duration = Duration::from_secs(30);
/// The `--max-message` under test.
const SMALL_LIMIT: usize = 4096;
const ECHO: &str = "http://interop.example/calc/2024/ICalculator/Echo";

/// The calculator host on an ephemeral loopback port; its net.tcp address.
async fn calculator() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let host = Host::new(Arc::new(CalculatorServer(Calc::new())));
    tokio::spawn(async move { host.serve_tcp(listener).await });
    format!("net.tcp://127.0.0.1:{port}/calc")
}

/// A net.tcp client session on the gateway's net.tcp port, sending Echo requests that carry
/// the relay token.
struct Client {
    tcp: TcpStream,
    session: Session,
    codec: BinarySession,
    via: String,
    token: String,
    next_id: u32,
}

impl Client {
    /// Connects, sends the preamble and waits for its ack.
    async fn connect(gw: &RunningGateway, path: &str) -> Self {
        let port = gw.nettcp_addr().expect("net.tcp port").port();
        let via = format!("net.tcp://127.0.0.1:{port}/{path}");
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut session =
            Session::client(ClientConfig::net_tcp(&via), Limits::default()).expect("session");
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        tcp.write_all(&out).await.expect("preamble");
        let mut client = Self {
            tcp,
            session,
            codec: BinarySession::new(ferry_nbfx::Limits::default()),
            via,
            token: token(gw, path),
            next_id: 1,
        };
        assert_eq!(client.event().await, Some(Event::PreambleAcked));
        client
    }

    /// The next framing event; `None` when the relay closes.
    async fn event(&mut self) -> Option<Event> {
        nmf_event(&mut self.session, &mut self.tcp, STEP).await
    }

    /// Sends Echo(`text`) and returns the sized envelope's length and the next event.
    async fn echo(&mut self, text: &str) -> (usize, Option<Event>) {
        let mut request = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        request.headers.action = Some(ECHO.into());
        request.headers.message_id = Some(format!(
            "urn:uuid:00000000-0000-0000-0000-{:012}",
            self.next_id
        ));
        self.next_id += 1;
        request.headers.reply_to = Some(EndpointReference::new(WSA10_ANONYMOUS));
        request.headers.to = Some(self.via.clone());
        request.headers.relay_token = Some(RelayAccessToken::new("uuid:1", &self.token));
        request.body = Body::Payload(vec![
            Echo {
                text: Some(text.into()),
            }
            .to_element(),
        ]);
        let payload = self.codec.encode(&request).expect("encode");
        self.session.send_envelope(&payload).expect("send");
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        self.tcp.write_all(&out).await.expect("request");
        (payload.len(), self.event().await)
    }

    /// The echo a reply event carries.
    fn echoed(&mut self, event: Option<Event>) -> String {
        let Some(Event::Envelope(reply)) = event else {
            panic!("a reply expected, got {event:?}");
        };
        let reply = self.codec.decode(&reply).expect("the reply decodes");
        EchoResponse::from_element(reply.payload().expect("a payload"))
            .expect("an EchoResponse")
            .echo_result
            .expect("an echo")
    }
}

#[tokio::test]
async fn a_message_over_max_message_gets_the_size_fault() {
    within(async {
        let origin = calculator().await;
        let gw = Gateway::start(Config::dev()).await.expect("gateway");
        let limit = SMALL_LIMIT.to_string();
        let _small = wcf_listen(&gw, "small", &origin, &["--max-message", &limit]).await;
        let _default = wcf_listen(&gw, "default", &origin, &[]).await;

        let under = "u".repeat(SMALL_LIMIT / 2);
        let over = "o".repeat(SMALL_LIMIT * 2);

        // Under the limit: carried both ways, and the session goes on.
        let mut client = Client::connect(&gw, "small").await;
        for _ in 0..2 {
            let (size, event) = client.echo(&under).await;
            assert!(size < SMALL_LIMIT, "{size} bytes is not under the limit");
            assert_eq!(client.echoed(event), format!("echo:{under}"));
        }
        // Over it: the framing fault WCF sends for oversized messages, then the end.
        let (size, event) = client.echo(&over).await;
        assert!(size > SMALL_LIMIT, "{size} bytes is not over the limit");
        assert_eq!(event, Some(Event::Fault(FaultCode::MaxMessageSizeExceeded)));
        assert_eq!(
            client.event().await,
            None,
            "the session ends after the fault"
        );

        // Another session on the same listener is unaffected.
        let mut again = Client::connect(&gw, "small").await;
        let (_, event) = again.echo("hi").await;
        assert_eq!(again.echoed(event), "echo:hi");

        // The same message passes a listener at the default limit (16 MiB).
        let mut roomy = Client::connect(&gw, "default").await;
        let (_, event) = roomy.echo(&over).await;
        assert_eq!(roomy.echoed(event), format!("echo:{over}"));
    })
    .await;
}

#[tokio::test]
async fn max_message_out_of_range_is_refused() {
    for (value, says) in [
        ("0", "at least 1"),
        ("1073741825", "1 GiB"),
        ("lots", "not a byte count"),
    ] {
        let out = tokio::time::timeout(
            STEP,
            Command::new(FERRY)
                .args([
                    "listen",
                    "calc",
                    "--wcf-to",
                    "net.tcp://127.0.0.1:808/calc",
                    "--gateway",
                    "ws://127.0.0.1:9",
                    "--max-message",
                    value,
                ])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("ferry exits at once")
        .expect("ferry runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--max-message {value} accepted");
        assert!(
            stderr.contains("--max-message") && stderr.contains(says),
            "--max-message {value}: {stderr}"
        );
    }
}
