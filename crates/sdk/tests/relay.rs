//! The SDK against a real gateway on loopback: listener + sender in both byte and message
//! mode, reject, typed errors, reconnect after a gateway restart, token renewal, and the
//! port bridge with two logical ports on one path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use ferry_gateway::{Config, Gateway};
use ferry_sdk::bridge::{self, LocalBridge, LocalConfig, RemoteConfig};
use ferry_sdk::listener::Offline;
use ferry_sdk::{
    ConnectError, Endpoint, HybridStream, Listener, Message, SasKeyProvider, Status, connect,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod common;
use common::{LIMIT, dev_gateway, plain_endpoint, tls_endpoint};

/// Accepts connections forever and echoes each one message by message.
fn spawn_message_echo(mut listener: Listener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut stream) = incoming.accept().await else {
                    return;
                };
                while let Ok(Some(m)) = stream.recv().await {
                    if stream.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

async fn wait_status(
    status: &mut watch::Receiver<Status>,
    want: impl Fn(&Status) -> bool,
) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| want(s)))
        .await
        .context("status did not change in time")??;
    Ok(())
}

#[tokio::test]
async fn messages_keep_kind_and_boundaries_over_tls() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = tls_endpoint(&gw, "echo")?;
        let listener = Listener::open(endpoint.clone()).await?;
        assert!(matches!(*listener.status().borrow(), Status::Online));
        let echo = spawn_message_echo(listener);

        let mut stream = connect(&endpoint, &[]).await?;
        let binary = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
        stream.send(Message::Text("héllo".into())).await?;
        stream.send(Message::Binary(binary.clone())).await?;
        stream.send(Message::Text(String::new())).await?;
        assert_eq!(stream.recv().await?, Some(Message::Text("héllo".into())));
        assert_eq!(stream.recv().await?, Some(Message::Binary(binary)));
        assert_eq!(stream.recv().await?, Some(Message::Text(String::new())));
        stream.close(1000, "bye").await?;
        // The listener's echo loop ends on our Close and its Close comes back.
        assert_eq!(stream.recv().await?, None);
        echo.abort();
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn listener_can_speak_first_and_bytes_flow_both_ways() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = plain_endpoint(&gw, "bytes")?;
        let mut listener = Listener::open(endpoint.clone()).await?;
        let server = tokio::spawn(async move {
            let incoming = listener.accept().await?;
            assert_eq!(incoming.header("X-App"), Some("demo"));
            let mut stream: HybridStream = incoming.accept().await?;
            stream.send(Message::Text("welcome".into())).await?;
            // Byte mode: echo everything, then close after the sender's half-close.
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await?;
            anyhow::Ok(all)
        });
        let mut stream = connect(&endpoint, &[("X-App", "demo")]).await?;
        assert_eq!(stream.recv().await?, Some(Message::Text("welcome".into())));
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        stream.write_all(&data).await?;
        stream.shutdown().await?;
        let got = server.await??;
        assert_eq!(got.len(), data.len());
        assert!(got == data, "relayed bytes differ");
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn sub_protocol_offered_by_the_sender_is_agreed() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = plain_endpoint(&gw, "proto")?;
        let mut listener = Listener::open(endpoint.clone()).await?;
        let server = tokio::spawn(async move {
            let stream = listener.accept().await?.accept().await?;
            anyhow::Ok(stream.protocol().map(str::to_owned))
        });
        let stream = connect(&endpoint, &[("Sec-WebSocket-Protocol", "chat, superchat")]).await?;
        assert_eq!(stream.protocol(), Some("chat"));
        assert_eq!(server.await??.as_deref(), Some("chat"));
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn reject_reaches_the_sender_with_its_status() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = tls_endpoint(&gw, "picky")?;
        let mut listener = Listener::open(endpoint.clone()).await?;
        let server = tokio::spawn(async move {
            let incoming = listener.accept().await?;
            // reject() succeeds only when the gateway confirms with 410.
            incoming.reject(403, "Not today, thanks").await?;
            anyhow::Ok(())
        });
        let err = connect(&endpoint, &[]).await.unwrap_err();
        server.await??;
        match err {
            ConnectError::Status { status, reason } => {
                assert_eq!(status, 403);
                assert_eq!(reason, "Not today, thanks");
            }
            other => bail!("unexpected error {other:?}"),
        }
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn gateway_refusals_are_typed() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        // No listener on the path: 404.
        let endpoint = plain_endpoint(&gw, "nobody-home")?;
        let err = connect(&endpoint, &[]).await.unwrap_err();
        assert_eq!(err.status(), Some(404), "{err:?}");

        // A wrong key: 401 for senders and listeners, and the listener does not retry. A
        // good listener is on the path, so the sender's 401 is about the token alone.
        let good = Listener::open(endpoint.clone()).await?;
        let mut bad = endpoint.clone();
        bad.set_token_provider(SasKeyProvider::new(
            gw.rule_name(),
            "wrong key",
            Duration::from_secs(60),
        ));
        let err = connect(&bad, &[]).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err:?}");
        assert!(err.is_permanent());
        let err = Listener::open(bad.clone()).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err:?}");

        // Started in the background, the listener gives up and says so.
        let mut listener = Listener::start(bad);
        let mut status = listener.status();
        wait_status(&mut status, |s| {
            matches!(s, Status::Offline(Offline::Failed(_)))
        })
        .await?;
        let err = listener.accept().await.unwrap_err();
        assert!(
            matches!(err, ferry_sdk::ListenerError::Refused(_)),
            "{err:?}"
        );
        good.close().await;
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn listener_reconnects_after_the_gateway_restarts() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let mut config = Config::dev();
        config.tls_addr = None;
        let gw = Gateway::start(config.clone()).await?;
        let addr = gw.plain_addr().context("no plain port")?;
        let mut endpoint = plain_endpoint(&gw, "phoenix")?;
        endpoint.set_keep_alive(Duration::from_millis(500));
        let listener = Listener::open(endpoint.clone()).await?;
        let mut status = listener.status();
        let echo = spawn_message_echo(listener);

        gw.shutdown().await;
        wait_status(&mut status, |s| {
            matches!(s, Status::Offline(Offline::Reconnecting { .. }))
        })
        .await?;

        // Same port, same rules: a restarted gateway.
        config.plain_addr = Some(addr);
        let gw = Gateway::start(config).await?;
        wait_status(&mut status, |s| matches!(s, Status::Online)).await?;
        let mut stream = connect(&endpoint, &[]).await?;
        stream
            .send(Message::Binary(Bytes::from_static(b"again")))
            .await?;
        assert_eq!(
            stream.recv().await?,
            Some(Message::Binary(Bytes::from_static(b"again")))
        );
        echo.abort();
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn short_lived_tokens_are_renewed() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let mut config = Config::dev();
        config.tls_addr = None;
        // No grace: a listener that does not renew is cut at its token's expiry.
        config.timeouts.token_grace = Duration::ZERO;
        let gw = Gateway::start(config).await?;
        let mut endpoint = plain_endpoint(&gw, "renew")?;
        endpoint
            .set_token_provider(SasKeyProvider::new(
                gw.rule_name(),
                gw.rule_key(),
                Duration::from_secs(2),
            ))
            .set_keep_alive(Duration::from_millis(300));
        let listener = Listener::open(endpoint.clone()).await?;
        let mut status = listener.status();
        let echo = spawn_message_echo(listener);

        // Several token lifetimes pass with no status change: renewals kept it online.
        let changed = tokio::time::timeout(Duration::from_secs(6), status.changed()).await;
        assert!(changed.is_err(), "status changed: {:?}", *status.borrow());
        assert!(matches!(*status.borrow(), Status::Online));

        let mut stream = connect(&endpoint, &[]).await?;
        stream.send(Message::Text("still here".into())).await?;
        assert_eq!(
            stream.recv().await?,
            Some(Message::Text("still here".into()))
        );
        echo.abort();
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

/// A TCP server answering every connection with `tag` followed by an echo of its input.
async fn tagged_echo_server(tag: &'static [u8]) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                tcp.write_all(tag).await?;
                let (mut r, mut w) = tcp.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await?;
                anyhow::Ok(())
            });
        }
    });
    Ok(addr)
}

/// A loopback address where nothing listens.
async fn dead_port() -> Result<SocketAddr> {
    let probe = TcpListener::bind("127.0.0.1:0").await?;
    let addr = probe.local_addr()?;
    drop(probe);
    Ok(addr)
}

async fn local_bridge(
    endpoint: &Endpoint,
    port: Option<&str>,
    cancel: &CancellationToken,
) -> Result<SocketAddr> {
    let mut config = LocalConfig::new("127.0.0.1:0".parse()?, endpoint.clone());
    config.port_name = port.map(str::to_owned);
    let bridge = LocalBridge::bind(config).await?;
    let addr = bridge.local_addr()?;
    tokio::spawn(bridge.run(cancel.clone()));
    Ok(addr)
}

/// Sends `data` through the bridge at `addr`; returns what came back.
async fn through_bridge(addr: SocketAddr, data: &[u8], reply_len: usize) -> Result<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).await?;
    let (mut r, mut w) = tcp.split();
    let mut reply = vec![0u8; reply_len];
    let (wrote, read) = tokio::join!(w.write_all(data), r.read_exact(&mut reply));
    wrote?;
    read?;
    Ok(reply)
}

#[tokio::test]
async fn bridge_carries_two_logical_ports_on_one_path() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = tls_endpoint(&gw, "bridge")?;
        let alpha = tagged_echo_server(b"alpha:").await?;
        let beta = tagged_echo_server(b"beta:").await?;
        let cancel = CancellationToken::new();

        let mut remote = RemoteConfig::new(endpoint.clone(), Some(alpha.to_string()));
        remote.ports = BTreeMap::from([
            ("a".to_owned(), alpha.to_string()),
            ("b".to_owned(), beta.to_string()),
            ("dead".to_owned(), dead_port().await?.to_string()),
        ]);
        let remote_task = tokio::spawn(bridge::run_remote(remote, cancel.clone()));
        // The remote side is ready once its listener is registered.
        tokio::time::timeout(Duration::from_secs(10), async {
            while gw.listener_count("bridge") == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("remote bridge never came online")?;

        let to_a = local_bridge(&endpoint, Some("a"), &cancel).await?;
        let to_b = local_bridge(&endpoint, Some("b"), &cancel).await?;
        let to_default = local_bridge(&endpoint, None, &cancel).await?;
        let to_unknown = local_bridge(&endpoint, Some("c"), &cancel).await?;

        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
        let (ra, rb) = tokio::join!(
            through_bridge(to_a, &data, 6 + data.len()),
            through_bridge(to_b, b"hello b", 5 + 7),
        );
        let ra = ra?;
        assert_eq!(&ra[..6], b"alpha:");
        assert!(ra[6..] == data[..], "bulk data through port a differs");
        assert_eq!(rb?, b"beta:hello b");
        assert_eq!(through_bridge(to_default, b"x", 7).await?, b"alpha:x");

        // An unknown port is rejected: the client's connection closes with no data.
        let mut tcp = TcpStream::connect(to_unknown).await?;
        let mut buf = Vec::new();
        let n = tcp.read_to_end(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);

        // What the bridge's sender sees, by status: 403 for a name off the allow-list, 503
        // when the target does not answer.
        let err = connect(&endpoint, &[(bridge::PORT_HEADER, "c")])
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(403), "{err:?}");
        let err = connect(&endpoint, &[(bridge::PORT_HEADER, "dead")])
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503), "{err:?}");

        cancel.cancel();
        remote_task.await??;
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

/// The listener's side of a request/response exchange over a half-closed stream: read the
/// request to end of stream (the sender's Close), then answer and close.
async fn answer_after_eof(mut listener: Listener, response: Vec<u8>) -> Result<Vec<u8>> {
    let mut stream = listener.accept().await?.accept().await?;
    let mut request = Vec::new();
    stream.read_to_end(&mut request).await?;
    assert_eq!(stream.peer_close().map(|c| c.code), Some(1000));
    // The sender's Close ended our read side only: we can still answer.
    stream.write_all(&response).await?;
    stream.shutdown().await?;
    listener.close().await;
    Ok(request)
}

#[tokio::test]
async fn a_sender_that_shut_down_still_reads_the_whole_response() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        for (i, endpoint) in [plain_endpoint(&gw, "half")?, tls_endpoint(&gw, "half-tls")?]
            .into_iter()
            .enumerate()
        {
            let listener = Listener::open(endpoint.clone()).await?;
            let response: Vec<u8> = (0..1_500_000u32).map(|n| (n % 249) as u8).collect();
            let server = tokio::spawn(answer_after_eof(listener, response.clone()));

            let mut stream = connect(&endpoint, &[]).await?;
            let request = format!("GET /{i} HTTP/1.0\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            stream.shutdown().await?;
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await?;
            assert_eq!(got.len(), response.len());
            assert!(got == response, "response differs");
            assert_eq!(stream.peer_close().map(|c| c.code), Some(1000));
            assert_eq!(server.await??, request.as_bytes());
        }
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn a_listener_that_shut_down_still_reads_the_senders_data() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = plain_endpoint(&gw, "half-rev")?;
        let mut listener = Listener::open(endpoint.clone()).await?;
        let server = tokio::spawn(async move {
            let mut stream = listener.accept().await?.accept().await?;
            stream.write_all(b"banner").await?;
            stream.shutdown().await?;
            let mut all = Vec::new();
            stream.read_to_end(&mut all).await?;
            anyhow::Ok(all)
        });
        let mut stream = connect(&endpoint, &[]).await?;
        let mut banner = Vec::new();
        stream.read_to_end(&mut banner).await?;
        assert_eq!(banner, b"banner");
        stream.write_all(b"late reply").await?;
        stream.shutdown().await?;
        assert_eq!(server.await??, b"late reply");
        gw.shutdown().await;
        Ok(())
    })
    .await?
}

/// A TCP server that reads each request to its end, then answers with its length and its
/// reversed bytes, and closes.
async fn reply_after_eof_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                tcp.read_to_end(&mut request).await?;
                tcp.write_all(format!("{}:", request.len()).as_bytes())
                    .await?;
                request.reverse();
                tcp.write_all(&request).await?;
                tcp.shutdown().await?;
                anyhow::Ok(())
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn bridge_carries_half_close_both_ways() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let gw = dev_gateway().await?;
        let endpoint = tls_endpoint(&gw, "bridge-half")?;
        let target = reply_after_eof_server().await?;
        let cancel = CancellationToken::new();
        let remote = RemoteConfig::new(endpoint.clone(), Some(target.to_string()));
        let remote_task = tokio::spawn(bridge::run_remote(remote, cancel.clone()));
        tokio::time::timeout(Duration::from_secs(10), async {
            while gw.listener_count("bridge-half") == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("remote bridge never came online")?;
        let local = local_bridge(&endpoint, None, &cancel).await?;

        for size in [5usize, 700_000] {
            let request: Vec<u8> = (0..size).map(|n| (n * 7 % 256) as u8).collect();
            let mut tcp = TcpStream::connect(local).await?;
            tcp.write_all(&request).await?;
            // Like `nc -N` or an HTTP/1.0 client: no more to send, now the answer.
            tcp.shutdown().await?;
            let mut reply = Vec::new();
            tcp.read_to_end(&mut reply).await?;
            let mut want = format!("{size}:").into_bytes();
            want.extend(request.iter().rev());
            assert_eq!(reply.len(), want.len());
            assert!(reply == want, "reply through the bridge differs");
        }

        cancel.cancel();
        remote_task.await??;
        gw.shutdown().await;
        Ok(())
    })
    .await?
}
