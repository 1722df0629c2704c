//! `ferry`: the relay gateway, its token tool and the port bridge.
//!
//! ```text
//! ferry gateway                      # development gateway on loopback, no file needed
//! ferry gateway --config ferry.toml  # production: namespace, TLS, rules, paths, limits
//! ferry token --uri http://ns/path --key-name NAME --key KEY
//! ferry bridge local 127.0.0.1:2222 PATH --gateway wss://ns:443 ...
//! ferry bridge remote PATH 127.0.0.1:22 --gateway wss://ns:443 ...
//! ferry decode interop/recordings/tcp-session   # readable XML of a net.tcp capture
//! ferry codegen wsdl/calculator -o crates/wcf/src/generated/calculator.rs  # Rust from WSDL
//! ferry listen calc --wcf-to net.tcp://10.0.0.5:808/calc  # relay to a WCF service
//! ferry replay interop/recordings/tcp-session --to net.tcp://127.0.0.1:8701/calc/tcp
//! ```

// Doc comments on the clap types are the command-line help text, written for a terminal
// (plain URLs, `[:port]`), not as rustdoc links.
#![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]

mod admin;
mod codegen;
mod decode;
mod listen;
mod replay;
mod settings;
mod wcf_listen;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use ferry_gateway::{Gateway, TlsSetup};
use ferry_hc::SasToken;
use ferry_sdk::bridge::{LocalConfig, RemoteConfig};
use ferry_sdk::{Endpoint, FixedToken, SasKeyProvider};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Self-hosted relay gateway, wire-compatible with Azure Relay Hybrid Connections"
)]
struct Cli {
    /// Runtime worker threads (default: one per core). 1 runs everything on one thread,
    /// which costs the least CPU per request when the machine has few cores to share.
    #[arg(long, global = true, env = "FERRY_WORKER_THREADS")]
    worker_threads: Option<NonZeroUsize>,
    /// How log lines are written to standard error: `text` for people, `json` (one object
    /// per line) for log collectors. The gateway's diagnostic events (target
    /// `ferry::diagnostics`) carry Azure Relay's operation names either way.
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The shape of log lines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (with no --config: a single-node development gateway on loopback).
    Gateway(GatewayArgs),
    /// Mint a SAS token.
    Token(TokenArgs),
    /// Bridge TCP ports through the relay (the hybrid relay pattern).
    #[command(subcommand)]
    Bridge(BridgeCommand),
    /// Decode a raw net.tcp capture (NMF records, binary SOAP) into readable XML.
    Decode(decode::DecodeArgs),
    /// Generate Rust (data types, service trait, client) from a WSDL contract directory.
    Codegen(codegen::CodegenArgs),
    /// Listen on PATH and serve it from a local origin: HTTP requests (a reverse proxy), gRPC
    /// connections or WCF net.tcp sessions.
    Listen(ListenArgs),
    /// Replay a recorded client session against a live service and compare every answer.
    Replay(replay::ReplayArgs),
    /// Manage a gateway's hybrid connections and rules through its admin port.
    Admin(admin::AdminArgs),
}

#[derive(Args)]
struct ListenArgs {
    /// Hybrid connection path.
    path: String,
    /// Local HTTP origin, http://HOST:PORT; /PATH is stripped from request targets.
    #[arg(
        long,
        required_unless_present_any = ["grpc_to", "wcf_to"],
        conflicts_with_all = ["grpc_to", "wcf_to"]
    )]
    http_to: Option<String>,
    /// Local gRPC server (any language), http://HOST:PORT: each relayed connection (one per
    /// gateway, multiplexing every call) is forwarded to it as is.
    #[arg(long, conflicts_with = "wcf_to")]
    grpc_to: Option<String>,
    /// A WCF net.tcp service, net.tcp://HOST:PORT/PATH (its endpoint address): each relayed
    /// session is forwarded to it with its Via and To rewritten to that address.
    #[arg(long)]
    wcf_to: Option<String>,
    /// With --wcf-to: the largest envelope carried either way, in bytes (1 to 1073741824; each
    /// is held whole while it is rewritten). A client's larger message ends its session with
    /// the MaxMessageSizeExceeded framing fault; the origin's, with EndpointUnavailable.
    #[arg(
        long,
        value_name = "BYTES",
        requires = "wcf_to",
        default_value_t = wcf_listen::MAX_ENVELOPE_BYTES,
        value_parser = wcf_listen::parse_max_message
    )]
    max_message: usize,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
struct GatewayArgs {
    /// TOML configuration file.
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Namespace host name (what token audiences and rendezvous addresses name).
    #[arg(long, env = "FERRY_NAMESPACE")]
    namespace: Option<String>,
    /// Plain ws:// and http:// address.
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<SocketAddr>,
    /// TLS wss:// and https:// address.
    #[arg(long, env = "FERRY_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// net.tcp address for WCF NetTcpBinding senders.
    #[arg(long, env = "FERRY_NETTCP_LISTEN")]
    nettcp_listen: Option<SocketAddr>,
    /// NetTcpRelayBinding (relayed mode) handshake address.
    #[arg(long, env = "FERRY_RELAYED_LISTEN")]
    relayed_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where to write the development CA certificate when no certificate is configured.
    #[arg(long, env = "FERRY_DEV_CA_OUT")]
    dev_ca_out: Option<PathBuf>,
    /// The admin port: the management API (HTTPS, the TLS port's certificate).
    #[arg(long, env = "FERRY_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// A bearer token that authorises every management call (else: SAS tokens of Manage
    /// rules only).
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Where the entities made through the management API are kept (else: in memory).
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct TokenArgs {
    /// Resource URI the token is for, e.g. http://relay.example/orders (a prefix covers
    /// every path below it).
    #[arg(long)]
    uri: String,
    /// Rule name.
    #[arg(long, env = "FERRY_KEY_NAME")]
    key_name: String,
    /// Rule key.
    #[arg(long, env = "FERRY_KEY", hide_env_values = true)]
    key: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

/// How to reach the gateway.
#[derive(Args)]
struct ConnectArgs {
    /// Gateway base URL: wss://host[:port] (or ws:// on loopback). For a cluster, the nodes'
    /// URLs separated by commas: a listener moves to the next when its node is lost.
    #[arg(long, env = "FERRY_GATEWAY")]
    gateway: String,
    /// Rule name to sign tokens with.
    #[arg(long, env = "FERRY_KEY_NAME", requires = "key")]
    key_name: Option<String>,
    /// Rule key to sign tokens with.
    #[arg(long, env = "FERRY_KEY", hide_env_values = true, requires = "key_name")]
    key: Option<String>,
    /// A fixed token instead of a key.
    #[arg(
        long,
        env = "FERRY_TOKEN",
        hide_env_values = true,
        conflicts_with = "key"
    )]
    token: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the development CA.
    #[arg(long, env = "FERRY_CA")]
    ca: Option<PathBuf>,
}

impl ConnectArgs {
    fn endpoint(&self, path: &str) -> anyhow::Result<Endpoint> {
        let bases: Vec<&str> = self.gateway.split(',').map(str::trim).collect();
        let mut endpoint =
            Endpoint::cluster(&bases, path).context("invalid gateway URL or path")?;
        match (&self.key_name, &self.key, &self.token) {
            (Some(name), Some(key), _) => {
                endpoint.set_token_provider(SasKeyProvider::new(
                    name.clone(),
                    key.clone(),
                    Duration::from_secs(3600),
                ));
            }
            (_, _, Some(token)) => {
                endpoint.set_token_provider(FixedToken::new(token.clone()));
            }
            _ => {}
        }
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let roots = ferry_net::tls::roots_from_pem(&pem)?;
            endpoint.set_tls_config(ferry_net::tls::client_config(
                roots,
                &[ferry_net::tls::ALPN_HTTP11],
            )?);
        }
        Ok(endpoint)
    }
}

#[derive(Subcommand)]
enum BridgeCommand {
    /// Accept TCP on ADDR; each connection becomes a sender on PATH.
    Local {
        /// Local address to accept on.
        addr: SocketAddr,
        /// Hybrid connection path.
        path: String,
        /// Logical port to ask the remote side for.
        #[arg(long)]
        port_name: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Listen on PATH; forward each connection to TARGET (or to the port its sender names).
    Remote {
        /// Hybrid connection path.
        path: String,
        /// Default target host:port for connections that name no port.
        target: Option<String>,
        /// Allowed logical port: NAME=HOST:PORT (repeatable).
        #[arg(long = "port", value_parser = parse_port)]
        ports: Vec<(String, String)>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn parse_port(s: &str) -> Result<(String, String), String> {
    let (name, target) = s.split_once('=').ok_or("expected NAME=HOST:PORT")?;
    if name.is_empty() || !target.contains(':') {
        return Err("expected NAME=HOST:PORT".into());
    }
    Ok((name.to_owned(), target.to_owned()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Fields flattened beside the message, and the spans' fields (peer, connection)
        // with them, so each line stands on its own.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    let runtime = match cli.worker_threads.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Gateway(args) => gateway(args).await,
            Command::Token(args) => {
                let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + args.ttl;
                println!(
                    "{}",
                    SasToken::create(&args.uri, &args.key_name, &args.key, expiry)
                );
                Ok(())
            }
            Command::Bridge(b) => bridge(b).await,
            Command::Decode(args) => decode::run(&args),
            Command::Codegen(args) => codegen::run(&args),
            Command::Listen(args) => listen(args).await,
            Command::Replay(args) => replay::run(&args).await,
            Command::Admin(args) => admin::run(args).await,
        }
    })
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return drop(ctrl_c.await);
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    drop(ctrl_c.await);
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let file = args.config.as_deref().map(settings::read).transpose()?;
    let dev = file.is_none();
    let mut overrides = settings::Overrides {
        namespace: args.namespace,
        plain: args.listen,
        tls: args.tls_listen,
        nettcp: args.nettcp_listen,
        relayed: args.relayed_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        dev_ca_out: args.dev_ca_out,
        admin: args.admin_listen,
        admin_token: args.admin_token,
        data_dir: args.data_dir,
    };
    if dev && overrides.dev_ca_out.is_none() && overrides.tls_cert.is_none() {
        overrides.dev_ca_out = Some(std::env::temp_dir().join("ferry-dev-ca.pem"));
    }
    let config = settings::build(file, overrides.clone())?;
    // Each relayed connection holds two descriptors (sender and listener side): take all the
    // hard limit allows, and say what it is, since running out refuses new connections.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let ca_out = match &config.tls {
        TlsSetup::Dev { ca_out } => ca_out.clone(),
        TlsSetup::Files { .. } => None,
    };
    let running = Gateway::start(config).await?;
    if dev {
        print_dev_banner(&running, ca_out.as_deref());
    } else {
        announce(&format!(
            "ferry gateway ready: plain={:?} tls={:?} nettcp={:?} admin={:?}",
            running.plain_addr(),
            running.tls_addr(),
            running.nettcp_addr(),
            running.admin_addr()
        ));
    }
    match args.config.as_deref() {
        // With a file: SIGHUP, or the file changing, reloads it until a stop signal.
        Some(path) => {
            tokio::select! {
                () = stop_signal() => {}
                () = reload_on_change(&running, path, &overrides) => {}
            }
        }
        None => stop_signal().await,
    }
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}

/// How often the configuration file is looked at for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads the configuration file on SIGHUP and whenever its contents change (looked at every
/// [`WATCH_INTERVAL`]; a change is taken once the contents have stayed the same for one
/// interval, so a file caught half-written is not), for as long as the gateway runs. A file
/// that does not read or build leaves the configuration in force as it is, and the log says
/// why.
async fn reload_on_change(
    running: &ferry_gateway::RunningGateway,
    path: &std::path::Path,
    overrides: &settings::Overrides,
) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGHUP; the file is still watched");
            None
        }
    };
    let mut seen = std::fs::read(path).ok();
    // Contents read at the last look that differ from `seen`, not yet stable.
    let mut pending: Option<Option<Vec<u8>>> = None;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => "file changed",
        };
        #[cfg(not(unix))]
        let why = {
            tick.tick().await;
            "file changed"
        };
        let now = std::fs::read(path).ok();
        if why == "file changed" {
            if now == seen {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
        }
        pending = None;
        seen = now;
        let config =
            settings::read(path).and_then(|raw| settings::build(Some(raw), overrides.clone()));
        match config {
            Err(e) => tracing::error!(
                trigger = why,
                error = format!("{e:#}"),
                "configuration not reloaded: the file is invalid; the one in force stays"
            ),
            Ok(config) => match running.reload(config).await {
                Ok(done) => tracing::info!(
                    trigger = why,
                    certificate = done.certificate,
                    needs_restart = ?done.needs_restart,
                    "configuration reloaded"
                ),
                Err(e) => tracing::error!(
                    trigger = why,
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "configuration not reloaded; the one in force stays"
                ),
            },
        }
    }
}

/// Prints a startup message. A server must not die because whoever started it stopped
/// reading its stdout (println! panics on a closed pipe), so write errors are ignored.
fn announce(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn print_dev_banner(gw: &ferry_gateway::RunningGateway, ca: Option<&std::path::Path>) {
    let plain = gw
        .plain_addr()
        .map(|a| format!("ws://{a}"))
        .unwrap_or_default();
    let tls = gw
        .tls_addr()
        .map(|a| format!("wss://localhost:{}", a.port()))
        .unwrap_or_default();
    let nettcp = gw
        .nettcp_addr()
        .map(|a| format!("net.tcp://{a}"))
        .unwrap_or_default();
    let admin = gw
        .admin_addr()
        .map(|a| format!("https://localhost:{}", a.port()))
        .unwrap_or_default();
    let ca = ca.map(|p| p.display().to_string()).unwrap_or_default();
    let (rule, key) = (gw.rule_name(), gw.rule_key());
    announce(&format!(
        "Ferry development gateway (single node, in-memory, any path)\n\
         \n  plain      {plain}\n  tls        {tls}   (trust {ca})\n  net.tcp    {nettcp}\n  admin      {admin}   (management API)\n  rule       {rule}\n  key        {key}\n\
         \nTry it: forward local port 2222 to 127.0.0.1:22 through path 'demo'\n\
         \n  export FERRY_GATEWAY={plain} FERRY_KEY_NAME={rule} FERRY_KEY='{key}'\
         \n  ferry bridge remote demo 127.0.0.1:22 &\
         \n  ferry bridge local 127.0.0.1:2222 demo\
         \n\nHybrid Connections clients (hyco-ws, .NET, Java) use {tls}/$hc/demo with tokens from\
         \n  ferry token --uri http://localhost/demo --key-name {rule} --key '{key}'\n"
    ));
}

async fn bridge(command: BridgeCommand) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stopper.cancel();
    });
    match command {
        BridgeCommand::Local {
            addr,
            path,
            port_name,
            connect,
        } => {
            let mut config = LocalConfig::new(addr, connect.endpoint(&path)?);
            config.port_name = port_name;
            ferry_sdk::bridge::run_local(config, cancel).await?;
        }
        BridgeCommand::Remote {
            path,
            target,
            ports,
            connect,
        } => {
            if target.is_none() && ports.is_empty() {
                bail!("give a default TARGET or at least one --port NAME=HOST:PORT");
            }
            let mut config = RemoteConfig::new(connect.endpoint(&path)?, target);
            config.ports = ports.into_iter().collect::<BTreeMap<_, _>>();
            ferry_sdk::bridge::run_remote(config, cancel).await?;
        }
    }
    Ok(())
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let endpoint = args.connect.endpoint(&args.path)?;
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stopper.cancel();
    });
    if let Some(wcf) = &args.wcf_to {
        let origin = wcf_listen::Origin::parse(wcf)?;
        return wcf_listen::run(endpoint, origin, args.max_message, cancel).await;
    }
    if let Some(grpc) = &args.grpc_to {
        // gRPC is HTTP/2 end to end: relayed connections are spliced to the server whole
        // (TCP_NODELAY on both legs), so streams, trailers and flow control are its own.
        let target = grpc_target(grpc)?;
        let config = RemoteConfig::new(endpoint, Some(target));
        ferry_sdk::bridge::run_remote(config, cancel).await?;
        return Ok(());
    }
    let http = args
        .http_to
        .as_deref()
        .context("--http-to or --grpc-to is required")?;
    let origin = listen::Origin::parse(http, &args.path)?;
    listen::run(endpoint, origin, cancel).await
}

/// `http://HOST:PORT` (h2c, as gRPC servers listen without TLS) → `HOST:PORT`.
fn grpc_target(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("--grpc-to takes http://HOST:PORT (a plaintext h2c gRPC server)")?;
    let authority = rest.trim_end_matches('/');
    // The port's ':' is the last one and not inside an IPv6 literal's brackets (`[::1]`).
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    if authority.is_empty() || authority.contains('/') || !has_port {
        bail!("--grpc-to takes http://HOST:PORT, got {url}");
    }
    Ok(authority.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_targets_need_a_port() {
        assert_eq!(
            grpc_target("http://127.0.0.1:50051").unwrap(),
            "127.0.0.1:50051"
        );
        assert_eq!(grpc_target("http://[::1]:50051/").unwrap(), "[::1]:50051");
        for bad in [
            "http://[::1]",
            "http://[::1]/",
            "http://host",
            "http://",
            "http://h:1/x",
            "https://h:1",
        ] {
            assert!(grpc_target(bad).is_err(), "{bad}");
        }
    }
}
