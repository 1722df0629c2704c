//! `ferry listen --grpc-to` end to end: a gateway in this process routing a service to a
//! path, the `ferry` binary as the listener forwarding to a tonic server on loopback, and a
//! tonic client calling the gateway's ingress (h2c).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_gateway::{Config, Gateway, GrpcRoute};
use ferry_grpc::echo::EchoService;
use ferry_grpc::echo::pb::echo_client::EchoClient;
use ferry_grpc::echo::pb::echo_server::EchoServer;
use ferry_grpc::echo::pb::{EchoRequest, StreamRequest};
use ferry_hc::SasToken;
use tonic::Code;
use tonic::transport::server::TcpIncoming;

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

#[tokio::test]
async fn ferry_listen_forwards_grpc_and_its_death_ends_calls_unavailable() -> Result<()> {
    tokio::time::timeout(LIMIT, async {
        // The on-premises gRPC server.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let origin = tcp.local_addr()?;
        let server = tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(TcpIncoming::from(tcp).with_nodelay(Some(true)));
        tokio::spawn(server);

        let mut config = Config::dev();
        config.grpc_routes = vec![GrpcRoute::new("ferry.example.v1.Echo", "inventory")];
        let gw = Gateway::start(config).await?;
        let port = gw.plain_addr().context("plain port")?.port();
        let mut listener = Proc(
            Command::new(FERRY)
                .args([
                    "listen",
                    "--grpc-to",
                    &format!("http://{origin}"),
                    "inventory",
                ])
                .env("FERRY_GATEWAY", format!("ws://127.0.0.1:{port}"))
                .env("FERRY_KEY_NAME", gw.rule_name())
                .env("FERRY_KEY", gw.rule_key())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        while gw.listener_count("inventory") == 0 {
            anyhow::ensure!(listener.0.try_wait()?.is_none(), "ferry listen exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 600;
        let token = SasToken::create(
            "http://localhost/inventory",
            gw.rule_name(),
            gw.rule_key(),
            expiry,
        )
        .to_string();
        fn call<T>(message: T, token: &str) -> tonic::Request<T> {
            let mut req = tonic::Request::new(message);
            req.metadata_mut()
                .insert("authorization", token.parse().expect("ascii token"));
            req
        }

        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        let mut client = EchoClient::new(channel);
        let request = EchoRequest {
            payload: b"through ferry listen".to_vec(),
            ..EchoRequest::default()
        };
        let reply = client
            .unary(call(request.clone(), &token))
            .await?
            .into_inner();
        assert_eq!(reply.payload, request.payload);

        // A slow stream, then the listener process dies: the caller hears UNAVAILABLE.
        let slow = StreamRequest {
            count: 100_000,
            size: 16,
            interval_ms: 10,
            fail_code: 0,
        };
        let mut stream = client.server_stream(call(slow, &token)).await?.into_inner();
        stream.message().await?.context("first reply")?;
        listener.0.kill()?;
        let started = tokio::time::Instant::now();
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("the stream ended cleanly"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // No listener now: new calls fail UNAVAILABLE at once.
        while gw.listener_count("inventory") > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = client.unary(call(request, &token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        anyhow::Ok(())
    })
    .await?
}
