//! Echo listener: accepts every relayed connection on a path and echoes what it receives,
//! message by message (text stays text, binary stays binary).
//!
//! Run a dev gateway (`ferry gateway`), then:
//!
//! ```text
//! cargo run -p ferry-sdk --example echo_listener -- BASE PATH RULE KEY [CA_PEM_FILE]
//! cargo run -p ferry-sdk --example echo_listener -- ws://127.0.0.1:9080 echo RootManageSharedAccessKey '<key>'
//! ```
//!
//! `BASE` is `wss://host:port` (or `ws://` on loopback); `CA_PEM_FILE` trusts a development
//! CA instead of the system roots. Pair it with the `echo_sender` example. Ctrl-C stops it.

use std::time::Duration;

use anyhow::{Context, Result};
use ferry_sdk::{Endpoint, Listener, SasKeyProvider};

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = endpoint_from_args()?;
    let mut listener = Listener::open(endpoint).await?;
    println!("listening (listener id {})", listener.id());
    loop {
        let incoming = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            r = listener.accept() => r?,
        };
        println!(
            "connection {} from {:?}",
            incoming.id, incoming.remote_endpoint
        );
        tokio::spawn(async move {
            let mut stream = match incoming.accept().await {
                Ok(s) => s,
                Err(e) => return eprintln!("accept failed: {e}"),
            };
            while let Ok(Some(message)) = stream.recv().await {
                if stream.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
    listener.close().await;
    Ok(())
}

fn endpoint_from_args() -> Result<Endpoint> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, path, rule, key, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: echo_listener BASE PATH RULE KEY [CA_PEM_FILE]");
    };
    let mut endpoint = Endpoint::new(base, path)?;
    endpoint.set_token_provider(SasKeyProvider::new(
        rule.as_str(),
        key.as_str(),
        Duration::from_secs(3600),
    ));
    if let Some(ca) = rest.first() {
        let pem = std::fs::read(ca).with_context(|| format!("reading {ca}"))?;
        let roots = ferry_net::tls::roots_from_pem(&pem)?;
        let tls = ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11])?;
        endpoint.set_tls_config(tls);
    }
    Ok(endpoint)
}
