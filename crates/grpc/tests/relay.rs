//! tonic through the relay: a tonic client on [`ferry_grpc::channel`] (a sender connection)
//! calls a tonic server on [`ferry_grpc::incoming`] (an SDK listener), through a gateway.

use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_grpc::echo::pb::echo_client::EchoClient;
use ferry_grpc::echo::pb::echo_server::EchoServer;
use ferry_grpc::echo::pb::{EchoRequest, StreamRequest};
use ferry_grpc::echo::{EchoService, error_detail};
use ferry_sdk::{Endpoint, Listener, SasKeyProvider};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(30);

fn endpoint(gw: &RunningGateway, path: &str) -> Result<Endpoint> {
    let addr = gw.plain_addr().context("no plain port")?;
    let mut endpoint = Endpoint::new(&format!("ws://{addr}"), path)?;
    endpoint.set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    Ok(endpoint)
}

/// A gateway with the echo service listening on `path`; cancel the token to stop serving.
async fn setup(path: &str) -> Result<(RunningGateway, CancellationToken, Channel)> {
    let gw = Gateway::start(Config::dev()).await?;
    let listener = Listener::open(endpoint(&gw, path)?).await?;
    let stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(
            ferry_grpc::incoming(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    let channel = ferry_grpc::channel(endpoint(&gw, path)?).await?;
    Ok((gw, stop, channel))
}

fn request(payload: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: payload.to_vec(),
        message: "héllo".into(),
        fail_code: 0,
        delay_ms: 0,
    }
}

fn stream_request(count: u32, size: u32, interval_ms: u32) -> StreamRequest {
    StreamRequest {
        count,
        size,
        interval_ms,
        fail_code: 0,
    }
}

#[tokio::test]
async fn every_call_type_passes_through() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_gw, _stop, channel) = setup("echo").await?;
        let mut client = EchoClient::new(channel);

        let reply = client.unary(request(b"ping")).await?.into_inner();
        assert_eq!(reply.payload, b"ping");
        assert_eq!(reply.message, "héllo");

        // Server streaming: 100 replies of 10 KiB, in order.
        let mut stream = client
            .server_stream(stream_request(100, 10_240, 0))
            .await?
            .into_inner();
        let mut n = 0u64;
        while let Some(reply) = stream.message().await? {
            assert_eq!((reply.sequence, reply.payload.len()), (n, 10_240));
            n += 1;
        }
        assert_eq!(n, 100);

        // Client streaming: 50 requests, 3 MB in all.
        let requests = futures_util::stream::iter((0..50).map(|_| request(&[7u8; 60_000])));
        let reply = client.client_stream(requests).await?.into_inner();
        assert_eq!((reply.sequence, reply.received), (50, 3_000_000));

        // Bidirectional: each request answered in turn, while the request stream is open.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let mut replies = client.bidi(requests).await?.into_inner();
        for i in 0..20u64 {
            tx.send(request(&i.to_be_bytes())).await?;
            let reply = replies.message().await?.context("bidi ended early")?;
            assert_eq!(
                (reply.sequence, reply.payload),
                (i, i.to_be_bytes().to_vec())
            );
        }
        drop(tx);
        assert!(replies.message().await?.is_none());
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn errors_details_metadata_and_deadlines_pass_through() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_gw, _stop, channel) = setup("echo").await?;
        let mut client = EchoClient::new(channel);

        let mut req = tonic::Request::new(request(b""));
        req.metadata_mut()
            .insert("x-echo-trace", "abc-123".parse()?);
        req.metadata_mut().insert_bin(
            "x-echo-blob-bin",
            tonic::metadata::MetadataValue::from_bytes(&[0, 255, 1]),
        );
        let reply = client.unary(req).await?;
        let trace = reply
            .metadata()
            .get("x-echo-trace")
            .context("ascii metadata")?;
        assert_eq!(trace.to_str()?, "abc-123");
        let blob = reply
            .metadata()
            .get_bin("x-echo-blob-bin")
            .context("binary metadata")?;
        assert_eq!(blob.to_bytes()?.as_ref(), &[0, 255, 1]);

        let mut req = tonic::Request::new(EchoRequest {
            fail_code: Code::FailedPrecondition as i32,
            message: "not in stock".into(),
            ..request(b"")
        });
        req.metadata_mut().insert("x-echo-order", "42".parse()?);
        let status = client.unary(req).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "not in stock");
        let detail = error_detail(&status).context("the status carries its detail")?;
        assert_eq!(detail.code, Code::FailedPrecondition as i32);
        let order = status.metadata().get("x-echo-order").context("trailer")?;
        assert_eq!(order.to_str()?, "42");

        // A deadline that passes while the service works ends the call promptly: tonic's
        // server enforces `grpc-timeout` and answers CANCELLED, which passes through.
        let mut req = tonic::Request::new(EchoRequest {
            delay_ms: 5_000,
            ..request(b"")
        });
        req.set_timeout(Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        let status = client.unary(req).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // The channel still works after all that.
        client.unary(request(b"again")).await?;
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn calls_fail_unavailable_once_the_listener_is_gone() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (gw, stop, channel) = setup("echo").await?;
        let mut client = EchoClient::new(channel);
        // A stream in progress when the listener stops.
        let mut stream = client
            .server_stream(stream_request(20, 10, 20))
            .await?
            .into_inner();
        stream.message().await?.context("first reply")?;
        stop.cancel();
        let end = loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(status) => break Some(status.code()),
            }
        };
        // tonic's graceful shutdown lets the running call finish (or cuts it); either way
        // the caller is told, never left hanging (the test's time limit).
        assert!(
            matches!(
                end,
                None | Some(Code::Unavailable | Code::Cancelled | Code::Unknown)
            ),
            "{end:?}"
        );
        for _ in 0..100 {
            if gw.listener_count("echo") == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(gw.listener_count("echo"), 0);
        // No listener any more: new calls fail UNAVAILABLE.
        let status = client.unary(request(b"x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn many_concurrent_calls_share_one_relayed_connection() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (_gw, _stop, channel) = setup("echo").await?;
        let calls = (0..200u32).map(|i| {
            let mut client = EchoClient::new(channel.clone());
            async move {
                let reply = client.unary(request(&i.to_be_bytes())).await?.into_inner();
                anyhow::ensure!(reply.payload == i.to_be_bytes());
                anyhow::Ok(())
            }
        });
        let results: Vec<_> = futures_util::stream::iter(calls)
            .buffer_unordered(64)
            .collect()
            .await;
        for r in results {
            r?;
        }
        anyhow::Ok(())
    })
    .await?
}
