//! The interop calculator ([`ferry_wcf::calc::Calc`]) served through a Ferry gateway on one
//! path: net.tcp sessions (WCF NetTcpBinding clients through the gateway's net.tcp port, or
//! `ferry_sdk::connect` with a `NetTcpChannel`) and basicHttp requests
//! (`http://GATEWAY/PATH`, WCF BasicHttpBinding clients through the HTTP relay).
//!
//! Run a dev gateway (`ferry gateway` prints the exports), then:
//!
//! ```text
//! export FERRY_GATEWAY=ws://127.0.0.1:9080 FERRY_KEY_NAME=RootManageSharedAccessKey FERRY_KEY='<key>'
//! cargo run -p ferry-wcf --example calculator -- [PATH]
//! ```
//!
//! `PATH` defaults to `calc`. `FERRY_CA` names a PEM file to trust instead of the system roots
//! (the dev gateway's CA, for `wss://`). Messages up to 64 MiB are accepted. It prints
//! `serving PATH` once the listener is online; Ctrl-C stops it.
//!
//! The metadata is published too: `http://GATEWAY/PATH?wsdl` (the HTTP address is the
//! gateway's, `FERRY_GATEWAY` read as `http`/`https`), and WS-Transfer `Get` on
//! `net.tcp://GATEWAY/PATH/mex`. Set `FERRY_NETTCP` (e.g. `net.tcp://127.0.0.1:9352`, the
//! gateway's net.tcp port) for the WSDL to name the net.tcp endpoint as well.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_sdk::http::{HttpConfig, HttpListener};
use ferry_sdk::{Endpoint, SasKeyProvider};
use ferry_wcf::calc::Calc;
use ferry_wcf::generated::calculator::CalculatorServer;
use ferry_wcf::{BasicHttp, Host, HostConfig};

/// The message size and reader quotas, as the interop bindings set them.
const QUOTA: usize = 64 * 1024 * 1024;

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "calc".to_owned());
    let endpoint = endpoint(&path)?;
    let endpoint_base = endpoint.base();
    let listener = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .context("opening the listener")?;
    let (listener, requests) = listener.into_parts();

    let mut config = HostConfig::default();
    config.set_quotas(QUOTA);
    config.set_metadata(metadata(&endpoint_base)?);
    // One calculator behind both transports: a Notify over HTTP is seen by GetNotifications
    // over net.tcp, as with the recorded Mono service.
    let service = Arc::new(CalculatorServer(Calc::new()));
    let host = Host::with_config(Arc::clone(&service), config.clone());
    let http = BasicHttp::with_config(service, config);
    println!("serving {path}");

    tokio::select! {
        r = host.serve_listener(listener) => r.context("net.tcp listener stopped")?,
        r = http.serve(requests) => r.context("http listener stopped")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    host.shutdown().await;
    Ok(())
}

/// The calculator's metadata with the gateway's public addresses: `base` (the listener's
/// `ws://` or `wss://` gateway address) as `http`/`https`, and `FERRY_NETTCP` if set.
fn metadata(base: &str) -> Result<ferry_wcf::Metadata> {
    let mut metadata = ferry_wcf::calc::metadata();
    let http = base
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    metadata.set_public_base(&http)?;
    if let Ok(nettcp) = std::env::var("FERRY_NETTCP") {
        metadata.set_public_base(&nettcp)?;
    }
    Ok(metadata)
}

/// The endpoint from `FERRY_GATEWAY`, `FERRY_KEY_NAME`, `FERRY_KEY` and `FERRY_CA`.
fn endpoint(path: &str) -> Result<Endpoint> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let mut endpoint =
        Endpoint::new(&var("FERRY_GATEWAY")?, path).context("invalid gateway URL or path")?;
    endpoint.set_token_provider(SasKeyProvider::new(
        var("FERRY_KEY_NAME")?,
        var("FERRY_KEY")?,
        Duration::from_secs(3600),
    ));
    endpoint.set_max_message_size(QUOTA);
    if let Ok(ca) = std::env::var("FERRY_CA") {
        let pem = std::fs::read(&ca).with_context(|| format!("reading {ca}"))?;
        let roots = ferry_net::tls::roots_from_pem(&pem)?;
        let tls = ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11])?;
        endpoint.set_tls_config(tls);
    }
    Ok(endpoint)
}
