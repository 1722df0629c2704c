//! The gateway's own parsers, driven on bytes in memory, for its fuzz targets
//! (`crates/gateway/fuzz`) and the tests that replay their corpora. Not an API: nothing here
//! is stable, and production code never calls it.

use ferry_hc::address::HcTarget;
use tokio::io::AsyncReadExt as _;
use tokio::time::{Duration, Instant};

use crate::config::DEFAULT_MAX_HEADER_BYTES;
use crate::handshake::Head;

/// How the gateway reads a request head off a new connection, then what it asks of it.
pub async fn http_head(data: &[u8]) {
    let mut input = data;
    if let Ok(head) = Head::read(&mut input, DEFAULT_MAX_HEADER_BYTES).await {
        let _ = head.header("Host");
        let _ = head.has_token("Connection", "upgrade");
        let _ = crate::websocket::forwarded_tls(&head);
        let _ = HcTarget::parse(&head.target);
    }
}

/// The PROXY protocol header (v1 or v2) a trusted load balancer's connection starts with,
/// read as the gateway reads it.
pub async fn proxy_header(data: &[u8]) {
    let mut input = data;
    let _ = crate::proxy_protocol::read(&mut input).await;
}

/// The NetTcpRelayBinding handshake a relayed-port client sends before it is authorised:
/// "connect", the URI, the TLS flag (plain here), then its RelayedConnect message, read as
/// the gateway reads it.
pub async fn relayed_handshake(data: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut input = data;
    let Ok(uri) = crate::relayed::preamble(&mut input, deadline).await else {
        return;
    };
    let _ = crate::nettcp::via_path(&uri);
    if input.read_u8().await.is_err() {
        return;
    }
    let Ok(message) =
        crate::relayed::frame(&mut input, ferry_soap::relayed::MAX_MESSAGE, deadline).await
    else {
        return;
    };
    let limits = ferry_nbfx::Limits {
        max_document_bytes: ferry_soap::relayed::MAX_MESSAGE,
        ..ferry_nbfx::Limits::default()
    };
    let _ = ferry_soap::Probe::binary(&message, None, limits);
}

/// What the net.tcp scrub passes on for `data` (a session from its first byte, as the relayed
/// port hands it over), fed whole and fed in `chunk`-byte pieces, with the gateway's default
/// limits.
///
/// # Panics
/// When the two differ: what the listener gets must not depend on how reads split the stream
/// (only on how far it has arrived: a message head may be read from fewer bytes when more
/// arrive at once).
pub fn nettcp_scrub(data: &[u8], chunk: usize) {
    let limits = crate::scrub::ScrubLimits::of(&crate::config::Limits::default());
    let run = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut scrub = crate::scrub::Scrub::whole_session(limits);
        let mut out = Vec::new();
        for piece in pieces {
            match scrub.feed(piece, &mut out) {
                Ok(None) => {}
                Ok(Some(_)) => return (out, Ok(true)),
                Err(e) => return (out, Err(e)),
            }
        }
        (out, Ok(false))
    };
    let (whole_out, whole) = run(&mut std::iter::once(data));
    let (split_out, split) = run(&mut data.chunks(chunk.max(1)));
    assert_eq!(whole, split, "fed whole and fed in {chunk}-byte pieces");
    match whole {
        // Every message complete: the same bytes.
        Ok(true) => assert!(whole_out == split_out, "different bytes for the listener"),
        // A message head may be read sooner from more bytes at once, never differently.
        Ok(false) => assert!(
            whole_out.starts_with(&split_out),
            "different bytes for the listener"
        ),
        Err(_) => {}
    }
}
