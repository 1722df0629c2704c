//! The HTTP listener against a fake gateway on loopback: a tokio-tungstenite server that
//! plays the service's side of spec §6 and checks the listener's JSON/body sequencing.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use ferry_sdk::Endpoint;
use ferry_sdk::http::{Body, HttpConfig, HttpListener, RequestId};
use ferry_sdk::listener::RemoteEndpoint;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// The fake gateway: one TCP port taking the control channel and then rendezvous sockets.
struct Fake {
    tcp: TcpListener,
    port: u16,
}

impl Fake {
    async fn new() -> anyhow::Result<Self> {
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let port = tcp.local_addr()?.port();
        Ok(Self { tcp, port })
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(&format!("ws://127.0.0.1:{}", self.port), "p").unwrap()
    }

    fn address(&self, id: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/$hc/p?sb-hc-action=request&sb-hc-id={id}",
            self.port
        )
    }

    async fn accept(&self) -> anyhow::Result<Ws> {
        let (tcp, _) = tokio::time::timeout(WAIT, self.tcp.accept())
            .await
            .context("no connection")??;
        Ok(tokio_tungstenite::accept_async(tcp).await?)
    }
}

async fn next(ws: &mut Ws) -> anyhow::Result<Message> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no message")?
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(m) => return Ok(m?),
            None => bail!("closed"),
        }
    }
}

/// Reads a `response` JSON and, when it says `body: true`, the binary message behind it.
async fn response(ws: &mut Ws) -> anyhow::Result<(Value, Bytes)> {
    let Message::Text(text) = next(ws).await? else {
        bail!("expected a response text message");
    };
    let v: Value = serde_json::from_str(text.as_str())?;
    let r = v["response"].clone();
    if r["body"] == json!(true) {
        let Message::Binary(body) = next(ws).await? else {
            bail!("expected the body message right behind the response");
        };
        return Ok((r, body));
    }
    Ok((r, Bytes::new()))
}

fn request(fake: &Fake, id: &str, method: &str, target: &str, body: bool) -> Message {
    let v = json!({"request": {
        "address": fake.address(id), "id": id, "requestTarget": target, "method": method,
        "remoteEndpoint": {"address": "10.0.0.1", "port": 4000},
        "requestHeaders": {"X-Multi": "a, b", "Accept": "*/*"}, "body": body,
    }});
    Message::Text(v.to_string().into())
}

/// Echo handler: the body back, request facts in headers; `/big/N` answers N bytes.
async fn handler(req: http::Request<Body>) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body.collect(1 << 20).await.unwrap_or_default();
    let mut resp = http::Response::builder()
        .status(201)
        .header("x-method", parts.method.as_str())
        .header("x-uri", parts.uri.to_string())
        .header("x-multi-in", parts.headers.get("x-multi").cloned().unwrap())
        .header("set-thing", "one")
        .header("set-thing", "two");
    if let Some(id) = parts.extensions.get::<RequestId>() {
        resp = resp.header("x-id", id.0.as_str());
    }
    if let Some(r) = parts.extensions.get::<RemoteEndpoint>() {
        resp = resp.header("x-remote", format!("{}:{}", r.address, r.port));
    }
    if parts.uri.path() == "/p/slow" {
        // A stream that outlives the inline wait: it must switch to the rendezvous.
        let chunks = futures_util::stream::unfold(0, |i| async move {
            match i {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from_static(b"first-")), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    Some((Ok(Bytes::from_static(b"second")), 2))
                }
                _ => None,
            }
        });
        return resp.body(Body::from_stream(chunks)).unwrap();
    }
    if let Some(n) = parts.uri.path().strip_prefix("/p/big/") {
        let n: usize = n.parse().unwrap();
        // Streamed in uneven chunks, so the rendezvous sends several fragments.
        let chunks = (0..n).step_by(10_000).map(move |start| {
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; (n - start).min(10_000)]))
        });
        return resp
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
    }
    resp.body(Body::from(body)).unwrap()
}

async fn start(fake: &Fake) -> anyhow::Result<Ws> {
    let endpoint = fake.endpoint();
    let open = tokio::spawn(async move {
        let l = HttpListener::open(endpoint, HttpConfig::default()).await?;
        tokio::spawn(l.serve(handler));
        anyhow::Ok(())
    });
    let control = fake.accept().await?;
    open.await??;
    Ok(control)
}

#[tokio::test]
async fn inline_get_is_answered_inline() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    control
        .send(request(&fake, "r1", "GET", "/p/a?q=1", false))
        .await?;
    let (r, body) = response(&mut control).await?;
    assert_eq!(r["requestId"], "r1");
    assert_eq!(r["statusCode"], 201);
    let h = &r["responseHeaders"];
    assert_eq!(h["x-method"], "GET");
    assert_eq!(h["x-uri"], "/p/a?q=1");
    assert_eq!(h["x-multi-in"], "a, b");
    assert_eq!(h["set-thing"], "one, two");
    assert_eq!(h["x-id"], "r1");
    assert_eq!(h["x-remote"], "10.0.0.1:4000");
    assert_eq!(r["body"], false);
    assert!(body.is_empty());
    Ok(())
}

#[tokio::test]
async fn inline_post_body_is_the_next_message() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    control
        .send(request(&fake, "r2", "POST", "/p/echo", true))
        .await?;
    control
        .send(Message::Binary(Bytes::from_static(b"0123456789")))
        .await?;
    let (r, body) = response(&mut control).await?;
    assert_eq!(r["requestId"], "r2");
    assert_eq!(r["body"], true);
    assert_eq!(&body[..], b"0123456789");
    Ok(())
}

#[tokio::test]
async fn large_response_goes_over_the_rendezvous() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    control
        .send(request(&fake, "r3", "GET", "/p/big/100000", false))
        .await?;
    // The listener opens request.address itself and answers there.
    let mut rendezvous = fake.accept().await?;
    let (r, body) = response(&mut rendezvous).await?;
    assert_eq!(r["requestId"], "r3");
    assert_eq!(r["statusCode"], 201);
    assert_eq!(body.len(), 100_000);
    assert!(body.iter().all(|b| *b == b'x'));
    // Nothing was sent on the control channel for it.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), control.next())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn rendezvous_only_request_is_fetched_and_answered_there() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    let v = json!({"request": {"address": fake.address("r4"), "id": "r4"}});
    control.send(Message::Text(v.to_string().into())).await?;
    let mut rendezvous = fake.accept().await?;
    rendezvous
        .send(request(&fake, "r4", "POST", "/p/echo", true))
        .await?;
    let upload = Bytes::from(vec![7u8; 70 * 1024]);
    rendezvous.send(Message::Binary(upload.clone())).await?;
    let (r, body) = response(&mut rendezvous).await?;
    assert_eq!(r["requestId"], "r4");
    assert_eq!(r["body"], true);
    assert_eq!(body, upload);
    Ok(())
}

#[tokio::test]
async fn concurrent_responses_keep_json_and_body_together() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    for i in 0..40 {
        control
            .send(request(&fake, &format!("c{i}"), "POST", "/p/echo", true))
            .await?;
        control
            .send(Message::Binary(Bytes::from(
                format!("body-c{i}").repeat(100),
            )))
            .await?;
    }
    for _ in 0..40 {
        let (r, body) = response(&mut control).await?;
        let id = r["requestId"].as_str().context("no id")?;
        assert_eq!(body, Bytes::from(format!("body-{id}").repeat(100)));
    }
    Ok(())
}

#[tokio::test]
async fn oversized_inline_body_is_refused_with_413() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    control
        .send(request(&fake, "r5", "POST", "/p/echo", true))
        .await?;
    control
        .send(Message::Binary(Bytes::from(vec![0u8; 200 * 1024])))
        .await?;
    let (r, _) = response(&mut control).await?;
    assert_eq!(r["requestId"], "r5");
    assert_eq!(r["statusCode"], 413);
    Ok(())
}

#[tokio::test]
async fn fragmented_rendezvous_body_streams_with_a_ping_inside() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    let v = json!({"request": {"address": fake.address("r6"), "id": "r6"}});
    control.send(Message::Text(v.to_string().into())).await?;
    let mut rendezvous = fake.accept().await?;
    rendezvous
        .send(request(&fake, "r6", "PUT", "/p/echo", true))
        .await?;
    let frame = |data: &'static [u8], opcode, fin| {
        Message::Frame(Frame::message(
            Bytes::from_static(data),
            OpCode::Data(opcode),
            fin,
        ))
    };
    rendezvous.send(frame(b"one-", Data::Binary, false)).await?;
    rendezvous
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await?;
    rendezvous
        .send(frame(b"two-", Data::Continue, false))
        .await?;
    rendezvous
        .send(frame(b"three", Data::Continue, true))
        .await?;
    // The ping is answered on the way.
    let Message::Pong(p) = next_any(&mut rendezvous).await? else {
        bail!("expected the pong first");
    };
    assert_eq!(&p[..], b"p");
    let (r, body) = response(&mut rendezvous).await?;
    assert_eq!(r["requestId"], "r6");
    assert_eq!(&body[..], b"one-two-three");
    Ok(())
}

/// The next message of any kind, pings and pongs included.
async fn next_any(ws: &mut Ws) -> anyhow::Result<Message> {
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .context("no message")?
    {
        Some(m) => Ok(m?),
        None => bail!("closed"),
    }
}

#[tokio::test]
async fn slow_stream_switches_to_the_rendezvous() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    control
        .send(request(&fake, "r7", "GET", "/p/slow", false))
        .await?;
    let mut rendezvous = fake.accept().await?;
    let (r, body) = response(&mut rendezvous).await?;
    assert_eq!(r["requestId"], "r7");
    assert_eq!(&body[..], b"first-second");
    Ok(())
}

#[tokio::test]
async fn a_request_whose_body_never_came_is_dropped_and_the_next_served() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let mut control = start(&fake).await?;
    // A binary message with no request before it is ignored.
    control
        .send(Message::Binary(Bytes::from_static(b"stray")))
        .await?;
    // body:true, but a text message comes next: that request is dropped.
    control
        .send(request(&fake, "lost", "POST", "/p/echo", true))
        .await?;
    control
        .send(request(&fake, "r8", "GET", "/p/x", false))
        .await?;
    let (r, _) = response(&mut control).await?;
    assert_eq!(r["requestId"], "r8");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), control.next())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn requests_are_refused_with_503_once_the_http_side_is_dropped() -> anyhow::Result<()> {
    let fake = Fake::new().await?;
    let endpoint = fake.endpoint();
    let open = tokio::spawn(async move {
        let (listener, requests) = HttpListener::open(endpoint, HttpConfig::default())
            .await?
            .into_parts();
        drop(requests);
        anyhow::Ok(listener)
    });
    let mut control = fake.accept().await?;
    let _listener = open.await??;
    control
        .send(request(&fake, "r9", "GET", "/p/x", false))
        .await?;
    let (r, _) = response(&mut control).await?;
    assert_eq!(r["requestId"], "r9");
    assert_eq!(r["statusCode"], 503);
    Ok(())
}
