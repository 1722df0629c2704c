//! `ferry listen --http-to` end to end: a gateway in this process, the `ferry` binary as the
//! listener, a small HTTP/1.1 origin on loopback, and raw HTTP requests as the sender.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_hc::SasToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const LIMIT: Duration = Duration::from_secs(60);

/// Kills the process when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An origin answering every request with what it saw: method, target, Host, x-multi and
/// the body length, plus a chunked body of `n` bytes when the target asks `?n=`.
async fn origin() -> Result<String> {
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", tcp.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                let (head_len, content_length, chunked) = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                        let value = |name: &str| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(name))
                                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        };
                        let cl = value("content-length").and_then(|v| v.parse().ok());
                        let chunked = value("transfer-encoding").is_some();
                        break (len, cl.unwrap_or(0usize), chunked);
                    }
                };
                // The whole body: Content-Length bytes, or chunks up to the last one.
                while if chunked {
                    !buf.ends_with(b"\r\n0\r\n\r\n")
                } else {
                    buf.len() < head_len + content_length
                } {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body_len = if chunked {
                    dechunk(&buf[head_len..]).map_or(usize::MAX, |b| b.len())
                } else {
                    content_length
                };
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                let _ = req.parse(&buf);
                let find = |name: &str| {
                    req.headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        .collect::<Vec<_>>()
                        .join("|")
                };
                let target = req.path.unwrap_or("").to_owned();
                let n: usize = target
                    .split_once("?n=")
                    .and_then(|(_, n)| n.parse().ok())
                    .unwrap_or(0);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
                     X-Method: {}\r\nX-Target: {target}\r\nX-Host: {}\r\nX-Multi: {}\r\n\
                     X-Len: {body_len}\r\nX-Chunked: {chunked}\r\nX-Hop: {}\r\n\r\n",
                    req.method.unwrap_or(""),
                    find("host"),
                    find("x-multi"),
                    find("keep-alive"),
                );
                let _ = s.write_all(head.as_bytes()).await;
                let mut left = n;
                while left > 0 {
                    let len = left.min(10_000);
                    let _ = s
                        .write_all(format!("{len:x}\r\n{}\r\n", "y".repeat(len)).as_bytes())
                        .await;
                    left -= len;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    Ok(url)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

/// One request with `Connection: close`; the gateway's response read to the end.
async fn send(port: u16, token: &str, head: &str, body: &[u8]) -> Result<Reply> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "{head}\r\nHost: localhost\r\nConnection: close\r\nServiceBusAuthorization: {token}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut storage);
    let httparse::Status::Complete(len) = resp.parse(&raw)? else {
        bail!("incomplete response");
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            let v = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_owned(), v)
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(&raw[len..])?
    } else {
        raw[len..].to_vec()
    };
    Ok(Reply {
        status: resp.code.unwrap_or(0),
        headers,
        body,
    })
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = std::str::from_utf8(&rest[..end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).context("short chunk")?);
        rest = rest.get(size + 2..).context("short chunk")?;
    }
}

/// Runs `ferry listen --http-to ORIGIN PATH` against `gw`; returns the process and a sender
/// token for PATH.
fn ferry_listen(gw: &RunningGateway, origin: &str, path: &str) -> Result<(Proc, String)> {
    let port = gw.plain_addr().context("no plain port")?.port();
    let listener = Proc(
        Command::new(FERRY)
            .args(["listen", "--http-to", origin, path])
            .env("FERRY_GATEWAY", format!("ws://127.0.0.1:{port}"))
            .env("FERRY_KEY_NAME", gw.rule_name())
            .env("FERRY_KEY", gw.rule_key())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 600;
    let audience = format!("http://localhost/{path}");
    let token = SasToken::create(&audience, gw.rule_name(), gw.rule_key(), expiry);
    Ok((listener, token))
}

#[tokio::test]
async fn ferry_listen_proxies_to_a_local_origin() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = Gateway::start(Config::dev()).await?;
        let port = gw.plain_addr().context("no plain port")?.port();
        let origin = origin().await?;
        let (_listener, token) = ferry_listen(&gw, &origin, "app")?;

        // Until the listener is registered the gateway answers 404 (a development gateway's
        // paths exist once a listener comes) or 502 itself.
        let mut r = send(port, &token, "GET /app/x?q=1 HTTP/1.1", b"").await?;
        while r.status == 404 || r.status == 502 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            r = send(port, &token, "GET /app/x?q=1 HTTP/1.1", b"").await?;
        }
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-method"), "GET");
        assert_eq!(r.header("x-target"), "/x?q=1");
        assert_eq!(r.header("x-host"), origin.trim_start_matches("http://"));

        let r = send(
            port,
            &token,
            "POST /app/up HTTP/1.1\r\nX-Multi: a\r\nX-Multi: b\r\nKeep-Alive: 5",
            &vec![1u8; 70 * 1024],
        )
        .await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-len"), (70 * 1024).to_string());
        assert_eq!(r.header("x-multi"), "a, b");
        assert_eq!(r.header("x-hop"), "");
        // Over the read-ahead: streamed to the origin chunked.
        assert_eq!(r.header("x-chunked"), "true");

        let r = send(port, &token, "POST /app/small HTTP/1.1", b"0123456789").await?;
        assert_eq!(r.header("x-len"), "10");
        assert_eq!(r.header("x-chunked"), "false");

        let r = send(port, &token, "GET /app/big?n=200000 HTTP/1.1", b"").await?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 200_000);
        assert!(r.body.iter().all(|b| *b == b'y'));
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn ferry_listen_answers_503_when_the_origin_is_down() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = Gateway::start(Config::dev()).await?;
        let port = gw.plain_addr().context("no plain port")?.port();
        let closed = TcpListener::bind("127.0.0.1:0").await?;
        let origin = format!("http://{}", closed.local_addr()?);
        drop(closed);
        let (_listener, token) = ferry_listen(&gw, &origin, "down")?;
        // Until the listener is up the gateway answers itself (no Via); then the listener
        // answers 503, not the 502 that the spec reserves for the relay service.
        loop {
            let r = send(port, &token, "GET /down/x HTTP/1.1", b"").await?;
            if !r.header("via").is_empty() {
                assert_eq!(r.status, 503);
                assert_eq!(r.body, b"origin unreachable\n");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn ferry_listen_drops_the_origin_request_when_the_sender_goes_away() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = Gateway::start(Config::dev()).await?;
        let port = gw.plain_addr().context("no plain port")?.port();
        // An origin that answers `/ready` at once and never answers anything else, reporting
        // when such a request arrives and when its connection closes.
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let origin = format!("http://{}", tcp.local_addr()?);
        let (events_tx, mut events) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let events = events_tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if buf.starts_with(b"GET /ready ") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    let _ = events.send("request").await;
                    // Nothing more comes from a proxy waiting for the answer, until it closes.
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = events.send("closed").await;
                });
            }
        });
        let (_listener, token) = ferry_listen(&gw, &origin, "gone")?;
        while send(port, &token, "GET /gone/ready HTTP/1.1", b"").await?.status != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut sender = TcpStream::connect(("127.0.0.1", port)).await?;
        let head = format!(
            "GET /gone/slow HTTP/1.1\r\nHost: localhost\r\nServiceBusAuthorization: {token}\r\n\r\n"
        );
        sender.write_all(head.as_bytes()).await?;
        assert_eq!(events.recv().await, Some("request"));
        drop(sender);
        let closed = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
        assert_eq!(
            closed.ok().flatten(),
            Some("closed"),
            "the origin sees its connection close once the sender is gone"
        );
        anyhow::Ok(())
    })
    .await?
}
