//! The Rust child processes: the gateway (its net.tcp front end and the plain port listeners
//! use) and the Rust WCF host serving the calculator behind an SDK listener. Each prints one
//! `READY key=value ...` line and runs until its standard input closes.

use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_gateway::{Config, Gateway};
use ferry_sdk::{Endpoint, Listener, SasKeyProvider};
use ferry_wcf::calc::Calc;
use ferry_wcf::generated::calculator::CalculatorServer;
use ferry_wcf::{Host, HostConfig};

use crate::procs::{announce, stdin_closed};

/// The hybrid connection path the host listens on.
pub(crate) const PATH: &str = "bench-wcf";
/// Environment variable that carries the SAS key to the host process.
pub(crate) const KEY_ENV: &str = "FERRY_BENCH_KEY";
/// Largest message either side accepts: room for the 64 KiB arrays (and larger `--bytes`).
pub(crate) const QUOTA: usize = 16 << 20;

/// Opening the SDK listener (connect, upgrade, registration).
const OPEN_LIMIT: Duration = Duration::from_secs(20);

/// The host role's command line.
#[derive(Debug, clap::Args)]
pub(crate) struct HostArgs {
    /// `ws://127.0.0.1:PORT`, the gateway's plain port.
    #[arg(long)]
    gateway: String,
    /// The SAS rule name (the key comes in `FERRY_BENCH_KEY`).
    #[arg(long)]
    rule: String,
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

/// The gateway in development mode: the plain port for listeners and the net.tcp front end
/// for WCF clients, both on ephemeral loopback ports; senders need a token.
pub(crate) async fn gateway() -> Result<()> {
    init_logs();
    let mut config = Config::dev();
    config.tls_addr = None;
    config.relayed_addr = None;
    let gw = Gateway::start(config)
        .await
        .context("starting the gateway")?;
    let plain = gw.plain_addr().context("the gateway has no plain port")?;
    let nettcp = gw
        .nettcp_addr()
        .context("the gateway has no net.tcp port")?;
    announce(&format!(
        "READY plain={plain} nettcp={nettcp} rule={} key={}",
        gw.rule_name(),
        gw.rule_key()
    ));
    stdin_closed().await;
    // No graceful drain: the parent is done with it.
    Ok(())
}

/// `ferry_wcf::Host` serving `ferry_wcf::calc::Calc` on every relayed connection of an SDK
/// listener on [`PATH`], with quotas raised to [`QUOTA`] and otherwise default settings.
pub(crate) async fn host(args: HostArgs) -> Result<()> {
    init_logs();
    let key = std::env::var(KEY_ENV).with_context(|| format!("{KEY_ENV} is not set"))?;
    let mut endpoint = Endpoint::new(&args.gateway, PATH)?;
    endpoint
        .set_token_provider(SasKeyProvider::new(
            args.rule,
            key,
            Duration::from_secs(3600),
        ))
        .set_connect_timeout(Duration::from_secs(10))
        .set_handshake_timeout(Duration::from_secs(10))
        .set_max_message_size(QUOTA);
    let listener = tokio::time::timeout(OPEN_LIMIT, Listener::open(endpoint))
        .await
        .context("opening the listener timed out")?
        .context("opening the listener")?;
    let mut config = HostConfig::default();
    config.set_quotas(QUOTA);
    let host = Host::with_config(CalculatorServer(Calc::new()), config);
    tokio::spawn(async move { host.serve_listener(listener).await });
    announce(&format!("READY path={PATH}"));
    stdin_closed().await;
    Ok(())
}
