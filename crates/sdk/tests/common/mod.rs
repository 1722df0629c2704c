//! What the SDK's gateway tests share: a development gateway, endpoints on its plain and TLS
//! ports with its key and CA, and the limit every test body runs under.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_gateway::{Config, Gateway, RunningGateway};
use ferry_sdk::{Endpoint, SasKeyProvider};

/// Every test body runs under this limit, so nothing can hang the suite.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

pub(crate) async fn dev_gateway() -> Result<RunningGateway> {
    Ok(Gateway::start(Config::dev()).await?)
}

/// An endpoint on the gateway's TLS port, trusting its development CA.
pub(crate) fn tls_endpoint(gw: &RunningGateway, path: &str) -> Result<Endpoint> {
    let addr = gw.tls_addr().context("no tls port")?;
    let mut e = Endpoint::new(&format!("wss://localhost:{}", addr.port()), path)?;
    let roots = ferry_net::tls::roots_from_pem(gw.dev_ca_pem().context("no ca")?.as_bytes())?;
    e.set_tls_config(ferry_net::tls::client_config(
        roots,
        &[ferry_net::tls::ALPN_HTTP11],
    )?)
    .set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    Ok(e)
}

/// An endpoint on the gateway's plain port.
pub(crate) fn plain_endpoint(gw: &RunningGateway, path: &str) -> Result<Endpoint> {
    let addr = gw.plain_addr().context("no plain port")?;
    let mut e = Endpoint::new(&format!("ws://{addr}"), path)?;
    e.set_token_provider(SasKeyProvider::new(
        gw.rule_name(),
        gw.rule_key(),
        Duration::from_secs(3600),
    ));
    Ok(e)
}
