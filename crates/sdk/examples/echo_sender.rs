//! Echo sender: connects to a path, sends a text and a binary message, and prints what the
//! listener sends back.
//!
//! Start the `echo_listener` example first, then:
//!
//! ```text
//! cargo run -p ferry-sdk --example echo_sender -- BASE PATH RULE KEY [CA_PEM_FILE]
//! cargo run -p ferry-sdk --example echo_sender -- ws://127.0.0.1:9080 echo RootManageSharedAccessKey '<key>'
//! ```

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use ferry_sdk::{Endpoint, Message, SasKeyProvider, connect};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, path, rule, key, rest @ ..] = args.as_slice() else {
        bail!("usage: echo_sender BASE PATH RULE KEY [CA_PEM_FILE]");
    };
    let mut endpoint = Endpoint::new(base, path)?;
    endpoint.set_token_provider(SasKeyProvider::new(
        rule.as_str(),
        key.as_str(),
        Duration::from_secs(600),
    ));
    if let Some(ca) = rest.first() {
        let pem = std::fs::read(ca).with_context(|| format!("reading {ca}"))?;
        let roots = ferry_net::tls::roots_from_pem(&pem)?;
        endpoint.set_tls_config(ferry_net::tls::client_config(
            roots,
            &[ferry_net::tls::ALPN_HTTP11],
        )?);
    }

    let mut stream = connect(&endpoint, &[]).await?;
    stream.send(Message::Text("hello, relay".into())).await?;
    stream
        .send(Message::Binary(Bytes::from_static(&[
            0xf0, 0x9f, 0x9a, 0xa2,
        ])))
        .await?;
    for _ in 0..2 {
        let reply = tokio::time::timeout(Duration::from_secs(10), stream.recv())
            .await
            .context("no reply within 10 s")??;
        match reply {
            Some(Message::Text(t)) => println!("text: {t}"),
            Some(Message::Binary(b)) => println!("binary: {b:02x?}"),
            None => bail!("the listener closed the connection"),
        }
    }
    stream.close(1000, "done").await?;
    Ok(())
}
