//! Raw streams (Ferry's `raw` extension) through a real gateway: agreed only when the
//! sender, the listener and the gateway all take part; bytes and half-close both ways on the
//! plain and TLS ports; a sender that is cut off is a reset for the listener, never a clean
//! end; the gateway still counts every byte.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_sdk::stream::StreamError;
use ferry_sdk::{Endpoint, HybridStream, Listener, Message, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{LIMIT, dev_gateway, plain_endpoint, tls_endpoint};

/// An endpoint on the gateway's plain or TLS port that asks for raw streams or not.
fn plain(gw: &RunningGateway, path: &str, raw: bool) -> Result<Endpoint> {
    let mut e = plain_endpoint(gw, path)?;
    e.set_raw_streams(raw);
    Ok(e)
}

/// See [`plain`].
fn tls(gw: &RunningGateway, path: &str, raw: bool) -> Result<Endpoint> {
    let mut e = tls_endpoint(gw, path)?;
    e.set_raw_streams(raw);
    Ok(e)
}

/// Writes `out` and shuts down while reading everything the peer sends, so neither
/// direction waits for the other; returns what was read.
async fn exchange(stream: HybridStream, out: &[u8]) -> Result<Vec<u8>> {
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async {
        w.write_all(out).await?;
        w.shutdown().await?;
        anyhow::Ok(())
    };
    let mut got = Vec::new();
    let (written, read) = tokio::join!(writer, r.read_to_end(&mut got));
    written?;
    read?;
    Ok(got)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// The sum of the gateway's `bytes_transferred` counters for `entity`.
fn bytes_counted(gw: &RunningGateway, entity: &str) -> u64 {
    gw.metrics()
        .lines()
        .filter(|l| l.starts_with("bytes_transferred") || l.contains("_bytes_transferred"))
        .filter(|l| !l.starts_with('#') && l.contains(&format!("entity=\"{entity}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn raw_streams_carry_bytes_and_half_close_both_ways_plain_and_tls() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        type Make = fn(&RunningGateway, &str, bool) -> Result<Endpoint>;
        // (path, listener's port, sender's port): both plain (splice at the gateway), both
        // TLS, and mixed (the TLS leg copied through the gateway's buffer).
        let cases: [(&str, Make, Make); 3] = [
            ("raw-plain", plain, plain),
            ("raw-tls", tls, tls),
            ("raw-mixed", plain, tls),
        ];
        for (name, listener_side, sender_side) in cases {
            let endpoint = sender_side(&gw, name, true)?;
            let mut listener = Listener::open(listener_side(&gw, name, true)?).await?;
            let up = pattern(3_000_000, 1);
            let down = pattern(2_500_000, 2);
            let down_copy = down.clone();
            let server = tokio::spawn(async move {
                let incoming = listener.accept().await?;
                assert_eq!(incoming.header("X-App"), Some("demo"));
                let stream = incoming.accept().await?;
                if !stream.is_raw() {
                    bail!("the listener's stream is not raw");
                }
                let got = exchange(stream, &down_copy).await?;
                listener.close().await;
                anyhow::Ok(got)
            });
            let stream = connect(&endpoint, &[("X-App", "demo")]).await?;
            assert!(stream.is_raw(), "{name}: the sender's stream is not raw");
            let got = exchange(stream, &up).await?;
            assert_eq!(got.len(), down.len(), "{name}: bytes to the sender");
            assert!(got == down, "{name}: bytes to the sender differ");
            let at_listener = server.await??;
            assert_eq!(at_listener.len(), up.len(), "{name}: bytes to the listener");
            assert!(at_listener == up, "{name}: bytes to the listener differ");
            let counted = bytes_counted(&gw, name);
            assert_eq!(
                counted,
                (up.len() + down.len()) as u64,
                "{name}: the gateway's byte counters"
            );
        }
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn raw_is_agreed_only_when_both_ends_ask() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        // (sender asks, listener asks): raw only for (true, true); the rest keep messages.
        for (sender_raw, listener_raw) in [(true, false), (false, true), (true, true)] {
            let path = format!("agree-{sender_raw}-{listener_raw}");
            let mut listener = Listener::open(plain(&gw, &path, listener_raw)?).await?;
            let server = tokio::spawn(async move {
                let mut stream = listener.accept().await?.accept().await?;
                let raw = stream.is_raw();
                if raw {
                    let mut b = [0u8; 5];
                    stream.read_exact(&mut b).await?;
                    stream.write_all(&b).await?;
                } else if let Some(m) = stream.recv().await? {
                    stream.send(m).await?;
                }
                stream.shutdown().await?;
                listener.close().await;
                anyhow::Ok(raw)
            });
            let mut stream = connect(&plain(&gw, &path, sender_raw)?, &[]).await?;
            let raw = stream.is_raw();
            if raw {
                assert!(
                    matches!(
                        stream.send(Message::Text("x".into())).await,
                        Err(StreamError::Raw)
                    ),
                    "messages on a raw stream are refused"
                );
                stream.write_all(b"hello").await?;
                let mut b = [0u8; 5];
                stream.read_exact(&mut b).await?;
                assert_eq!(&b, b"hello");
            } else {
                stream.send(Message::Text("hello".into())).await?;
                assert_eq!(stream.recv().await?, Some(Message::Text("hello".into())));
            }
            assert_eq!(raw, sender_raw && listener_raw, "sender side of {path}");
            assert_eq!(server.await??, raw, "listener side of {path}");
        }
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

/// A sender upgrade by hand, asking for a raw stream, so the test can cut it off with a
/// reset (the SDK's own streams only ever end cleanly or by dropping).
async fn hand_made_raw_sender(gw: &RunningGateway, path: &str) -> Result<TcpStream> {
    let addr = gw.plain_addr().context("no plain port")?;
    let token = ferry_hc::SasToken::create(
        &format!("http://localhost/{path}"),
        gw.rule_name(),
        gw.rule_key(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600,
    );
    let mut tcp = TcpStream::connect(addr).await?;
    let head = format!(
        "GET /$hc/{path}?sb-hc-action=connect HTTP/1.1\r\nHost: localhost\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nServiceBusAuthorization: {token}\r\n\
         Ferry-Features: raw\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await? == 0 {
            bail!("the gateway closed during the upgrade");
        }
        response.push(b[0]);
    }
    let text = String::from_utf8_lossy(&response);
    if !text.starts_with("HTTP/1.1 101") || !text.contains("Ferry-Features: raw") {
        bail!("no raw upgrade: {text}");
    }
    Ok(tcp)
}

#[tokio::test]
async fn a_raw_sender_cut_off_is_a_reset_for_the_listener_not_an_end() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let mut listener = Listener::open(plain(&gw, "cut", true)?).await?;
        let server = tokio::spawn(async move {
            let mut stream = listener.accept().await?.accept().await?;
            assert!(stream.is_raw());
            let mut got = Vec::new();
            let end = stream.read_to_end(&mut got).await;
            listener.close().await;
            anyhow::Ok((got, end.map_err(|e| e.kind())))
        });
        let mut sender = hand_made_raw_sender(&gw, "cut").await?;
        sender.write_all(b"part of a transfer").await?;
        // Let the bytes reach the listener, then cut the connection off with a reset.
        tokio::time::sleep(Duration::from_millis(200)).await;
        sender.set_zero_linger()?;
        drop(sender);
        let (got, end) = server.await??;
        assert_eq!(got, b"part of a transfer");
        assert_eq!(
            end,
            Err(std::io::ErrorKind::ConnectionReset),
            "the listener must see the cut"
        );
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn an_answer_after_a_quiet_half_close_still_arrives() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        // A short half-close timeout, and a pair that is quiet for longer than it before the
        // sender ends its stream: the listener still has the whole timeout to answer.
        let mut config = Config::dev();
        config.timeouts.half_close = Some(Duration::from_millis(800));
        let gw = Gateway::start(config).await?;
        let mut listener = Listener::open(plain(&gw, "quiet", true)?).await?;
        let server = tokio::spawn(async move {
            let mut stream = listener.accept().await?.accept().await?;
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            stream.write_all(b"answer").await?;
            stream.shutdown().await?;
            listener.close().await;
            anyhow::Ok(request)
        });
        let mut stream = connect(&plain(&gw, "quiet", true)?, &[]).await?;
        assert!(stream.is_raw());
        stream.write_all(b"question").await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        assert_eq!(answer, b"answer");
        assert_eq!(server.await??, b"question");
        gw.shutdown().await;
        Ok(())
    })
    .await?
}
