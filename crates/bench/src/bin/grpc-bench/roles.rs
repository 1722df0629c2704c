//! The child processes' roles: the gateway, and the echo service served either on TCP
//! (direct) or through an SDK listener (relayed). Each prints one `READY key=value ...` line
//! and runs until its standard input closes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_gateway::{Config, Gateway, GrpcRoute};
use ferry_grpc::echo::EchoService;
use ferry_grpc::echo::pb::echo_server::EchoServer;
use ferry_sdk::{Endpoint, Listener, SasKeyProvider};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::procs::{announce, stdin_closed};

/// The echo service's fully qualified name, which the gateway routes by.
pub(crate) const SERVICE: &str = "ferry.example.v1.Echo";
/// The hybrid connection path the relayed service listens on.
pub(crate) const PATH: &str = "bench-grpc";
/// Environment variable that carries the SAS key to the service process.
pub(crate) const KEY_ENV: &str = "FERRY_BENCH_KEY";

/// Opening the SDK listener (connect, upgrade, registration).
const OPEN_LIMIT: Duration = Duration::from_secs(20);

/// How the service is reached: the two sides of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// A TCP port on loopback (TCP_NODELAY).
    Direct,
    /// An SDK listener on the gateway's plain port.
    Relay,
}

/// The service role's command line.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    #[arg(long, value_enum)]
    serve: Transport,
    /// `ws://127.0.0.1:PORT`, for `--serve relay`.
    #[arg(long)]
    gateway: Option<String>,
    /// The SAS rule name, for `--serve relay` (the key comes in `FERRY_BENCH_KEY`).
    #[arg(long)]
    rule: Option<String>,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Log warnings and errors of the child's own crates to its standard error (inherited).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The gateway in development mode (plain port only, on an ephemeral loopback port), with a
/// gRPC route from the echo service to [`PATH`].
pub(crate) async fn gateway() -> Result<()> {
    init_logs();
    let mut config = Config::dev();
    config.tls_addr = None;
    config.grpc_routes = vec![GrpcRoute::new(SERVICE, PATH)];
    let gw = Gateway::start(config)
        .await
        .context("starting the gateway")?;
    let plain = gw.plain_addr().context("the gateway has no plain port")?;
    announce(&format!(
        "READY plain={plain} rule={} key={}",
        gw.rule_name(),
        gw.rule_key()
    ));
    stdin_closed().await;
    // No graceful drain: the parent is done with it.
    Ok(())
}

/// The echo service, with tonic's default server settings in both modes.
pub(crate) async fn service(args: ServiceArgs) -> Result<()> {
    init_logs();
    let server = Server::builder().add_service(EchoServer::new(EchoService));
    match args.serve {
        Transport::Direct => {
            let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .context("binding the direct port")?
                .with_nodelay(Some(true));
            let addr = incoming.local_addr()?;
            tokio::spawn(server.serve_with_incoming(incoming));
            announce(&format!("READY direct={addr}"));
        }
        Transport::Relay => {
            let base = args.gateway.context("--gateway is required")?;
            let rule = args.rule.context("--rule is required")?;
            let key = std::env::var(KEY_ENV).with_context(|| format!("{KEY_ENV} is not set"))?;
            let mut endpoint = Endpoint::new(&base, PATH)?;
            endpoint.set_token_provider(SasKeyProvider::new(rule, key, Duration::from_secs(3600)));
            endpoint.set_connect_timeout(Duration::from_secs(10));
            endpoint.set_handshake_timeout(Duration::from_secs(10));
            let listener = tokio::time::timeout(OPEN_LIMIT, Listener::open(endpoint))
                .await
                .context("opening the listener timed out")?
                .context("opening the listener")?;
            tokio::spawn(server.serve_with_incoming(ferry_grpc::incoming(listener)));
            announce(&format!("READY path={PATH}"));
        }
    }
    stdin_closed().await;
    Ok(())
}
