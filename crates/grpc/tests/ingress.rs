//! The gateway's gRPC ingress: a plain tonic client (h2c, no Ferry code on its side) calls
//! the gateway's HTTP port; the gateway routes by service or `ferry-path` and relays over
//! one HTTP/2 connection per listener to a tonic server on [`ferry_grpc::incoming`].

use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_gateway::{Config, Gateway, GrpcRoute, RunningGateway};
use ferry_grpc::echo::pb::echo_client::EchoClient;
use ferry_grpc::echo::pb::echo_server::EchoServer;
use ferry_grpc::echo::pb::{EchoRequest, StreamRequest};
use ferry_grpc::echo::{EchoService, error_detail};
use ferry_sdk::{Endpoint, Listener, SasKeyProvider, TokenProvider as _};
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Code, Request};

const LIMIT: Duration = Duration::from_secs(30);
const SERVICE: &str = "ferry.example.v1.Echo";

fn endpoint(gw: &RunningGateway, path: &str) -> Result<Endpoint> {
    let addr = gw.plain_addr().context("no plain port")?;
    let mut endpoint = Endpoint::new(&format!("ws://{addr}"), path)?;
    endpoint.set_token_provider(provider(gw));
    Ok(endpoint)
}

fn provider(gw: &RunningGateway) -> SasKeyProvider {
    SasKeyProvider::new(gw.rule_name(), gw.rule_key(), Duration::from_secs(3600))
}

/// `authorization` metadata for calls to `path`.
fn token(gw: &RunningGateway, path: &str) -> Result<String> {
    Ok(provider(gw)
        .token(&format!("http://localhost/{path}"))?
        .text)
}

/// The echo service listening on `path`, served until the returned set is dropped or
/// aborted (which cuts its connections at once, as a crashed process would).
async fn serve(gw: &RunningGateway, path: &str) -> Result<JoinSet<()>> {
    let listener = Listener::open(endpoint(gw, path)?).await?;
    let mut tasks = JoinSet::new();
    let mut incoming = Box::pin(ferry_grpc::incoming(listener));
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(8);
    tasks.spawn(async move {
        while let Some(Ok(conn)) = incoming.next().await {
            if conn_tx.send(conn).await.is_err() {
                break;
            }
        }
    });
    let routes = Routes::new(EchoServer::new(EchoService));
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Some(conn) = conn_rx.recv().await {
            let svc = hyper_util::service::TowerToHyperService::new(routes.clone());
            connections.spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    });
    Ok(tasks)
}

async fn gateway(tweak: impl FnOnce(&mut Config)) -> Result<(RunningGateway, Channel)> {
    let mut config = Config::dev();
    config.grpc_routes = vec![GrpcRoute::new(SERVICE, "echo")];
    tweak(&mut config);
    let gw = Gateway::start(config).await?;
    let addr = gw.plain_addr().context("no plain port")?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok((gw, channel))
}

fn call<T>(message: T, token: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", token.parse().expect("token is ascii"));
    req
}

fn echo(payload: &[u8]) -> EchoRequest {
    EchoRequest {
        payload: payload.to_vec(),
        message: "héllo".into(),
        fail_code: 0,
        delay_ms: 0,
    }
}

#[tokio::test]
async fn calls_of_every_kind_reach_the_listener_through_the_ingress() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (gw, channel) = gateway(|_| {}).await?;
        let _serving = serve(&gw, "echo").await?;
        let token = token(&gw, "echo")?;
        let mut client = EchoClient::new(channel);

        let mut req = call(echo(b"ping"), &token);
        req.metadata_mut().insert("x-echo-trace", "t-1".parse()?);
        let reply = client.unary(req).await?;
        assert_eq!(
            reply
                .metadata()
                .get("x-echo-trace")
                .context("metadata back")?,
            "t-1"
        );
        assert_eq!(reply.into_inner().payload, b"ping");

        let stream_req = StreamRequest {
            count: 200,
            size: 1000,
            interval_ms: 0,
            fail_code: 0,
        };
        let mut stream = client
            .server_stream(call(stream_req, &token))
            .await?
            .into_inner();
        let mut n = 0;
        while let Some(r) = stream.message().await? {
            assert_eq!(r.sequence, n);
            n += 1;
        }
        assert_eq!(n, 200);

        let requests = futures_util::stream::iter((0..40).map(|_| echo(&[1u8; 100_000])));
        let reply = client
            .client_stream(call(requests, &token))
            .await?
            .into_inner();
        assert_eq!((reply.sequence, reply.received), (40, 4_000_000));

        let requests = futures_util::stream::iter((0..30u64).map(|i| echo(&i.to_be_bytes())));
        let mut replies = client.bidi(call(requests, &token)).await?.into_inner();
        let mut n = 0u64;
        while let Some(r) = replies.message().await? {
            assert_eq!(r.payload, n.to_be_bytes());
            n += 1;
        }
        assert_eq!(n, 30);

        // The relay token never reaches the service; the service's own `authorization`
        // does when the token travelled in `servicebusauthorization`.
        let reply = client.unary(call(echo(b""), &token)).await?;
        assert!(reply.metadata().get("x-echo-seen-authorization").is_none());
        let mut req = Request::new(echo(b""));
        req.metadata_mut()
            .insert("servicebusauthorization", token.parse()?);
        req.metadata_mut()
            .insert("authorization", "Bearer app-credential".parse()?);
        let reply = client.unary(req).await?;
        let seen = reply.metadata().get("x-echo-seen-authorization");
        assert_eq!(seen.context("app credential")?, "Bearer app-credential");

        // Errors keep their code, message, details and trailers.
        let failing = EchoRequest {
            fail_code: Code::AlreadyExists as i32,
            message: "dup".into(),
            ..echo(b"")
        };
        let status = client.unary(call(failing, &token)).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::AlreadyExists, "dup")
        );
        assert_eq!(
            error_detail(&status).context("details")?.code,
            Code::AlreadyExists as i32
        );

        // 200 calls, 64 at a time, over one relayed connection.
        let calls = (0..200u32).map(|i| {
            let mut client = client.clone();
            let token = token.clone();
            async move {
                let reply = client.unary(call(echo(&i.to_be_bytes()), &token)).await?;
                anyhow::ensure!(reply.into_inner().payload == i.to_be_bytes());
                anyhow::Ok(())
            }
        });
        for r in futures_util::stream::iter(calls)
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
        {
            r?;
        }
        assert_eq!(gw.grpc_connections(), 1);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn refusals_are_grpc_statuses() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (gw, channel) = gateway(|c| {
            c.grpc_routes
                .push(GrpcRoute::new("other.Service", "nobody"));
        })
        .await?;
        let _serving = serve(&gw, "echo").await?;
        let token = token(&gw, "echo")?;
        let mut client = EchoClient::new(channel.clone());

        // No token, a token for another path, a bad signature.
        let status = client.unary(Request::new(echo(b""))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let other = self::token(&gw, "elsewhere")?;
        let status = client.unary(call(echo(b""), &other)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let forged = token.replace("sig=", "sig=AAAA");
        let status = client.unary(call(echo(b""), &forged)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        // `ferry-path` to a path nobody listens on: UNAVAILABLE (after the token check).
        let mut req = call(echo(b""), &self::token(&gw, "idle")?);
        req.metadata_mut().insert("ferry-path", "idle".parse()?);
        let status = client.unary(req).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");

        // A service with no route: UNIMPLEMENTED.
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await?;
        let path = http::uri::PathAndQuery::from_static("/unknown.Service/Call");
        let codec =
            tonic_prost::ProstCodec::<EchoRequest, ferry_grpc::echo::pb::EchoReply>::default();
        let status = grpc
            .unary(call(echo(b""), &token), path, codec)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

        // A message over the limit (4 MiB by default), either way: RESOURCE_EXHAUSTED.
        let status = client
            .unary(call(echo(&vec![0u8; 5 << 20]), &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let big = StreamRequest {
            count: 1,
            size: 5 << 20,
            interval_ms: 0,
            fail_code: 0,
        };
        let mut stream = client
            .clone()
            .max_decoding_message_size(64 << 20)
            .server_stream(call(big, &token))
            .await?
            .into_inner();
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

        // The gateway's own deadline: DEADLINE_EXCEEDED by the time asked for.
        let mut req = call(
            EchoRequest {
                delay_ms: 10_000,
                ..echo(b"")
            },
            &token,
        );
        req.set_timeout(Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        let status = client.unary(req).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));

        // After all that, calls still work on the same connections.
        client.unary(call(echo(b"ok"), &token)).await?;
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn a_listener_that_dies_mid_stream_ends_the_call_unavailable() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (gw, channel) = gateway(|_| {}).await?;
        let serving = serve(&gw, "echo").await?;
        let token = token(&gw, "echo")?;
        let mut client = EchoClient::new(channel);
        let slow = StreamRequest {
            count: 10_000,
            size: 10,
            interval_ms: 10,
            fail_code: 0,
        };
        let mut stream = client.server_stream(call(slow, &token)).await?.into_inner();
        stream.message().await?.context("first reply")?;
        // The listener process "crashes": its connections drop without a goodbye.
        drop(serving);
        let started = tokio::time::Instant::now();
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("the stream ended cleanly"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        for _ in 0..100 {
            if gw.grpc_connections() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(gw.grpc_connections(), 0);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn a_malformed_http2_peer_does_not_disturb_other_calls() -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::time::timeout(LIMIT, async {
        let (gw, channel) = gateway(|_| {}).await?;
        let _serving = serve(&gw, "echo").await?;
        let token = token(&gw, "echo")?;
        let mut client = EchoClient::new(channel);
        client.unary(call(echo(b"before"), &token)).await?;
        let addr = gw.plain_addr().context("no plain port")?;
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let garbage: [&[u8]; 4] = [
            // A SETTINGS frame of the wrong length.
            &[0, 0, 5, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5],
            // HEADERS on stream 1 with an undecodable HPACK block.
            &[0, 0, 4, 1, 5, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            // DATA on a stream never opened.
            &[0, 0, 3, 0, 1, 0, 0, 0, 7, 1, 2, 3],
            // A frame claiming 16 MiB.
            &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1],
        ];
        for bad in garbage {
            let mut tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.write_all(PREFACE).await?;
            tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?; // empty SETTINGS
            tcp.write_all(bad).await?;
            // The gateway answers with GOAWAY and closes; it never hangs on it.
            let mut sink = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink));
            read.await
                .context("the gateway closed the broken connection")??;
            // Calls on the good connection go on.
            let reply = client.unary(call(echo(b"during"), &token)).await?;
            assert_eq!(reply.into_inner().payload, b"during");
        }
        assert_eq!(gw.grpc_connections(), 1);
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn a_listener_that_leaves_takes_its_relayed_connection_with_it() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (gw, channel) = gateway(|_| {}).await?;
        let listener = Listener::open(endpoint(&gw, "echo")?).await?;
        let mut incoming = Box::pin(ferry_grpc::incoming(listener));
        // The control channel lives in this task; the relayed connections outlive it.
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(8);
        let control = tokio::spawn(async move {
            while let Some(Ok(conn)) = incoming.next().await {
                if conn_tx.send(conn).await.is_err() {
                    break;
                }
            }
        });
        let routes = Routes::new(EchoServer::new(EchoService));
        let connections = tokio::spawn(async move {
            let mut served = JoinSet::new();
            while let Some(conn) = conn_rx.recv().await {
                let svc = hyper_util::service::TowerToHyperService::new(routes.clone());
                served.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(conn), svc)
                        .await;
                });
            }
            served.join_all().await;
        });
        let token = token(&gw, "echo")?;
        let mut client = EchoClient::new(channel);
        client.unary(call(echo(b"1"), &token)).await?;
        assert_eq!(gw.grpc_connections(), 1);
        // The listener's control channel goes (its process stops listening): the gateway
        // lets its relayed connection go too, and the listener side sees it close.
        control.abort();
        for _ in 0..200 {
            if gw.listener_count("echo") == 0 && gw.grpc_connections() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gw.grpc_connections(), 0);
        tokio::time::timeout(Duration::from_secs(10), connections)
            .await
            .context("the relayed connection closed")??;
        let status = client.unary(call(echo(b"2"), &token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        anyhow::Ok(())
    })
    .await?
}

#[tokio::test]
async fn callers_that_give_up_do_not_abort_the_shared_connection_set_up() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        let (gw, channel) = gateway(|_| {}).await?;
        let mut listener = Listener::open(endpoint(&gw, "echo")?).await?;
        // Count the accepts the listener is asked for, and serve each connection.
        let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = accepts.clone();
        let routes = Routes::new(EchoServer::new(EchoService));
        tokio::spawn(async move {
            while let Ok(incoming) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let svc = hyper_util::service::TowerToHyperService::new(routes.clone());
                tokio::spawn(async move {
                    // A slow listener: the callers' deadlines pass while it opens.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let Ok(stream) = incoming.accept().await else {
                        return;
                    };
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let token = token(&gw, "echo")?;
        let impatient = (0..20).map(|_| {
            let mut client = EchoClient::new(channel.clone());
            let token = token.clone();
            async move {
                let mut req = call(echo(b""), &token);
                req.set_timeout(Duration::from_millis(20));
                client.unary(req).await
            }
        });
        for r in futures_util::future::join_all(impatient).await {
            let status = r.expect_err("every impatient call times out");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        }
        // The one set-up went on without them; a patient call uses it.
        EchoClient::new(channel)
            .unary(call(echo(b"ok"), &token))
            .await?;
        assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(gw.grpc_connections(), 1);
        anyhow::Ok(())
    })
    .await?
}
