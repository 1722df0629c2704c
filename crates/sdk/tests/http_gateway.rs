//! The HTTP listener behind a real gateway on loopback, with a plain HTTP/1.1 client as the
//! sender: GET, POST of 10 B and 70 KiB (the latter over a rendezvous), a response over
//! 64 KiB (sent over the rendezvous by the listener), multi-valued headers.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_sdk::http::{Body, HttpConfig, HttpListener};
use ferry_sdk::{Endpoint, SasKeyProvider, TokenProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test body runs under this limit, so nothing can hang the suite.
const LIMIT: Duration = Duration::from_secs(60);

struct Setup {
    gw: RunningGateway,
    token: String,
}

/// A dev gateway and an HTTP listener on `path` answering with [`handler`].
async fn setup(path: &str) -> Result<Setup> {
    let gw = Gateway::start(Config::dev()).await?;
    let addr = gw.plain_addr().context("no plain port")?;
    let mut endpoint = Endpoint::new(&format!("ws://{addr}"), path)?;
    let provider = SasKeyProvider::new(gw.rule_name(), gw.rule_key(), Duration::from_secs(3600));
    // The sender says `Host: localhost`, the dev namespace, so its token names that host.
    let token = provider.token(&format!("http://localhost/{path}"))?.text;
    endpoint.set_token_provider(provider);
    let listener = HttpListener::open(endpoint, HttpConfig::default()).await?;
    tokio::spawn(listener.serve(handler));
    Ok(Setup { gw, token })
}

/// Echo handler: request facts in headers, the body back; `/big/N` streams N bytes.
async fn handler(req: http::Request<Body>) -> http::Response<Body> {
    let (parts, mut body) = req.into_parts();
    if parts.uri.path().ends_with("/ignore") {
        // Answers without reading the body at all.
        drop(body);
        return http::Response::new(Body::from("ignored"));
    }
    if parts.uri.path().ends_with("/count") {
        // Streams the body through without keeping it: the request arrives in chunks.
        let (mut len, mut chunks, mut sum) = (0usize, 0usize, 0u64);
        while let Some(Ok(chunk)) = body.chunk().await {
            len += chunk.len();
            chunks += 1;
            sum += chunk.iter().map(|b| u64::from(*b)).sum::<u64>();
        }
        return http::Response::builder()
            .header("x-len", len.to_string())
            .header("x-chunks", chunks.to_string())
            .header("x-sum", sum.to_string())
            .body(Body::empty())
            .unwrap_or_default();
    }
    let body = body.collect(16 << 20).await.unwrap_or_default();
    let multi: Vec<_> = parts
        .headers
        .get_all("x-multi")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let resp = http::Response::builder()
        .status(200)
        .header("x-method", parts.method.as_str())
        .header("x-target", parts.uri.to_string())
        .header("x-multi-in", multi.join("|"))
        .header("x-len", body.len().to_string())
        .header("set-thing", "one")
        .header("set-thing", "two");
    if let Some(n) = parts.uri.path().rsplit_once("/big/").map(|(_, n)| n) {
        let n: usize = n.parse().unwrap_or(0);
        let chunks = (0..n).step_by(16_000).map(move |start| {
            let len = (n - start).min(16_000);
            Ok::<_, std::io::Error>(Bytes::from(pattern(start, len)))
        });
        return resp
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap_or_default();
    }
    resp.body(Body::from(body)).unwrap_or_default()
}

fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

/// A parsed HTTP/1.1 response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
async fn send(s: &Setup, method: &str, target: &str, extra: &str, body: &[u8]) -> Result<Reply> {
    let addr = s.gw.plain_addr().context("no plain port")?;
    let mut tcp = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         ServiceBusAuthorization: {}\r\nContent-Length: {}\r\n{extra}\r\n",
        s.token,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<Reply> {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut storage);
    let httparse::Status::Complete(len) = resp.parse(raw)? else {
        bail!("incomplete response");
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut rest = &raw[len..];
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("bad chunk")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..line_end])?
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status: resp.code.unwrap_or(0),
        headers,
        body,
    })
}

#[tokio::test]
async fn get_with_multi_valued_headers() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        let r = send(
            &s,
            "GET",
            "/web/a/b?q=1",
            "X-Multi: a\r\nX-Multi: b\r\n",
            b"",
        )
        .await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-method"), ["GET"]);
        assert_eq!(r.header("x-target"), ["/web/a/b?q=1"]);
        // The wire joins repeated headers with ", " (spec §3).
        assert_eq!(r.header("x-multi-in"), ["a, b"]);
        assert_eq!(r.header("set-thing").join(", "), "one, two");
        assert!(r.body.is_empty());
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn post_small_body_inline() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        let r = send(&s, "POST", "/web/echo", "", b"0123456789").await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-len"), ["10"]);
        assert_eq!(r.body, b"0123456789");
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn post_70_kib_over_the_rendezvous_both_ways() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        let upload = pattern(0, 70 * 1024);
        let r = send(&s, "POST", "/web/echo", "", &upload).await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-len"), [(70 * 1024).to_string().as_str()]);
        assert_eq!(r.body, upload);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn response_over_64_kib_streams_over_the_rendezvous() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        let r = send(&s, "GET", "/web/big/300000", "", b"").await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 300_000);
        assert_eq!(r.body, pattern(0, 300_000));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn many_requests_at_once() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = std::sync::Arc::new(setup("web").await?);
        let mut tasks = Vec::new();
        for i in 0..20usize {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let body = format!("request-{i}").repeat(i * 100 + 1);
                let r = send(&s, "POST", "/web/echo", "", body.as_bytes()).await?;
                anyhow::ensure!(r.status == 200 && r.body == body.as_bytes(), "request {i}");
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn multi_megabyte_upload_streams_to_the_handler() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        let upload = pattern(0, 5 << 20);
        let sum: u64 = upload.iter().map(|b| u64::from(*b)).sum();
        let r = send(&s, "POST", "/web/count", "", &upload).await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-len"), [(5 << 20).to_string().as_str()]);
        assert_eq!(r.header("x-sum"), [sum.to_string().as_str()]);
        // Handed over in pieces, not as one 5 MiB buffer.
        let chunks: usize = r.header("x-chunks")[0].parse()?;
        assert!(chunks >= 5 << 4, "{chunks} chunks");
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn multi_megabyte_download_streams_from_the_handler() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        let r = send(&s, "GET", "/web/big/6000000", "", b"").await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 6_000_000);
        assert_eq!(r.body, pattern(0, 6_000_000));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn websocket_connections_and_http_requests_share_a_listener() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = Gateway::start(Config::dev()).await?;
        let addr = gw.plain_addr().context("no plain port")?;
        let mut endpoint = Endpoint::new(&format!("ws://{addr}"), "both")?;
        let provider =
            SasKeyProvider::new(gw.rule_name(), gw.rule_key(), Duration::from_secs(3600));
        let token = provider.token("http://localhost/both")?.text;
        endpoint.set_token_provider(provider);
        let (mut listener, requests) = HttpListener::open(endpoint.clone(), HttpConfig::default())
            .await?
            .into_parts();
        tokio::spawn(requests.serve(handler));
        // WebSocket side: echo one message.
        let ws = tokio::spawn(async move {
            let incoming = listener.accept().await?;
            let mut stream = incoming.accept().await?;
            if let Some(m) = stream.recv().await? {
                stream.send(m).await?;
            }
            // Keep the listener (and with it the control channel) until the echo is done.
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(listener);
            anyhow::Ok(())
        });
        let mut sender = ferry_sdk::connect(&endpoint, &[]).await?;
        sender
            .send(ferry_sdk::Message::Text("hello".into()))
            .await?;
        let echoed = sender.recv().await?.context("no echo")?;
        assert_eq!(echoed, ferry_sdk::Message::Text("hello".into()));

        let s = Setup { gw, token };
        let r = send(&s, "POST", "/both/echo", "", b"ping").await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ping");
        ws.await??;
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn a_handler_may_answer_without_reading_a_large_body() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let s = setup("web").await?;
        for _ in 0..3 {
            let r = send(&s, "POST", "/web/ignore", "", &pattern(0, 3 << 20)).await?;
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"ignored");
        }
        anyhow::Ok(())
    })
    .await?
}

/// A `tower` service: answers with its own name and the target, and fails on `/fail`.
#[derive(Clone)]
struct Named;

impl tower_service::Service<http::Request<Body>> for Named {
    type Response = http::Response<Body>;
    type Error = String;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), String>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path().ends_with("/fail") {
            return std::future::ready(Err("deliberate failure".to_owned()));
        }
        std::future::ready(Ok(http::Response::new(Body::from(format!(
            "tower:{}",
            req.uri()
        )))))
    }
}

#[tokio::test]
async fn a_tower_service_serves_requests() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = Gateway::start(Config::dev()).await?;
        let addr = gw.plain_addr().context("no plain port")?;
        let mut endpoint = Endpoint::new(&format!("ws://{addr}"), "tower")?;
        let provider =
            SasKeyProvider::new(gw.rule_name(), gw.rule_key(), Duration::from_secs(3600));
        let token = provider.token("http://localhost/tower")?.text;
        endpoint.set_token_provider(provider);
        let listener = HttpListener::open(endpoint, HttpConfig::default()).await?;
        tokio::spawn(listener.serve_service(Named));
        let s = Setup { gw, token };
        let ok = send(&s, "GET", "/tower/hello?x=1", "", b"").await?;
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, &b"tower:/tower/hello?x=1"[..])
        );
        let failed = send(&s, "GET", "/tower/fail", "", b"").await?;
        assert_eq!(failed.status, 500, "a service error becomes a 500");
        anyhow::Ok(())
    })
    .await?
}
