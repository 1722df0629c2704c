//! The listener role (run in its own process so its memory can be read apart from the
//! sender's) and the small wire protocol both sides speak, the same over direct TCP and over
//! a relayed stream.
//!
//! The sender's first byte picks a mode:
//! - `E` echo: everything after it comes back (round trips, connection setup).
//! - `S` sink: an 8-byte little-endian length, that many bytes, then a 1-byte ack.
//! - `I` idle: like echo, with a 16-byte buffer, so an idle connection costs the listener
//!   only what the transport (TCP, or the SDK) holds.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_sdk::{Endpoint, Listener};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Echo mode byte.
pub(crate) const MODE_ECHO: u8 = b'E';
/// Sink mode byte.
pub(crate) const MODE_SINK: u8 = b'S';
/// Idle mode byte.
pub(crate) const MODE_IDLE: u8 = b'I';

/// Read buffer of the sink, the bulk receiver.
const SINK_BUFFER: usize = 256 * 1024;
/// Read buffer of the echo mode (round trips of small messages).
const ECHO_BUFFER: usize = 4 * 1024;
/// Longest a served connection may go without the sender finishing what it started.
const SERVE_LIMIT: Duration = Duration::from_secs(600);

/// What the listener process is told on its command line.
#[derive(Debug, clap::Args)]
pub(crate) struct ListenerArgs {
    /// The gateway's plain base, `ws://127.0.0.1:PORT`.
    #[arg(long)]
    plain: String,
    /// The gateway's TLS base, `wss://localhost:PORT`.
    #[arg(long)]
    tls: String,
    /// The gateway's development CA (PEM file).
    #[arg(long)]
    ca: std::path::PathBuf,
    /// The SAS rule name (the key comes in `FERRY_BENCH_KEY`).
    #[arg(long)]
    rule: String,
}

/// Paths the listener process serves on the gateway, one per transport so that a sender on
/// one is never balanced to a listener on the other.
pub(crate) const PLAIN_PATH: &str = "bench-plain";
/// See [`PLAIN_PATH`].
pub(crate) const TLS_PATH: &str = "bench-tls";

/// Builds an endpoint for `base` and `path` with the SAS key and the development CA.
pub(crate) fn endpoint(
    base: &str,
    path: &str,
    rule: &str,
    key: &str,
    ca_pem: &[u8],
) -> Result<Endpoint> {
    let mut endpoint = Endpoint::new(base, path)?;
    endpoint.set_token_provider(ferry_sdk::SasKeyProvider::new(
        rule,
        key,
        Duration::from_secs(3600),
    ));
    endpoint.set_connect_timeout(Duration::from_secs(10));
    // The listener takes raw streams from senders that ask (`ws raw`, `wss raw`); the
    // others keep the WebSocket protocol.
    endpoint.set_raw_streams(true);
    endpoint.set_handshake_timeout(Duration::from_secs(40));
    let roots = ferry_net::tls::roots_from_pem(ca_pem)?;
    endpoint.set_tls_config(ferry_net::tls::client_config(
        roots,
        &[ferry_net::tls::ALPN_HTTP11],
    )?);
    Ok(endpoint)
}

/// Runs the listener role: a direct TCP server and SDK listeners on both gateway ports, all
/// speaking the protocol above. Prints `READY <direct addr>` once everything is up, and
/// exits when standard input closes (the parent went away or is done).
pub(crate) async fn run(args: ListenerArgs) -> Result<()> {
    let key = std::env::var("FERRY_BENCH_KEY").context("FERRY_BENCH_KEY is not set")?;
    let ca = std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;

    let tcp = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let direct = tcp.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else {
                // Out of descriptors or similar: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_limited(s));
        }
    });

    for (base, path) in [(&args.plain, PLAIN_PATH), (&args.tls, TLS_PATH)] {
        let ep = endpoint(base, path, &args.rule, &key, &ca)?;
        let mut listener = tokio::time::timeout(Duration::from_secs(20), Listener::open(ep))
            .await
            .with_context(|| format!("opening the listener on {base} timed out"))?
            .with_context(|| format!("opening the listener on {base}"))?;
        tokio::spawn(async move {
            while let Ok(incoming) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(40), incoming.accept()).await
                    {
                        serve_limited(s).await;
                    }
                });
            }
        });
    }

    println!("READY {direct}");
    // Standard input closing is the signal to stop (a blocking read on its own thread:
    // the workspace's tokio has no `io-std`).
    tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut sink = [0u8; 64];
        while std::io::stdin().read(&mut sink).unwrap_or(0) > 0 {}
    })
    .await?;
    Ok(())
}

async fn serve_limited<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
    let _ = tokio::time::timeout(SERVE_LIMIT, serve(s)).await;
}

/// Serves one connection, direct or relayed.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode).await?;
    match mode[0] {
        MODE_SINK => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len).await?;
            let mut left = u64::from_le_bytes(len);
            let mut buf = vec![0u8; SINK_BUFFER];
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = s.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                left -= n as u64;
            }
            drop(buf);
            s.write_all(&[1]).await?;
            s.flush().await?;
            drain(&mut s, &mut [0u8; 16]).await
        }
        MODE_ECHO => echo(&mut s, &mut vec![0u8; ECHO_BUFFER]).await,
        MODE_IDLE => echo(&mut s, &mut [0u8; 16]).await,
        _ => Ok(()),
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<()> {
    loop {
        let n = s.read(buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
        s.flush().await?;
    }
}

async fn drain<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<()> {
    while s.read(buf).await? > 0 {}
    Ok(())
}
