//! The WebSocket codecs driven on bytes in memory, for their fuzz targets (`fuzz/`) and the
//! tests that replay their corpora. Not an API: nothing here is stable, and production code
//! never calls it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::message::MessageReader;
use crate::relay::{RelayConfig, relay};
use crate::stream::WsStream;

/// The gateway's read buffer for a busy direction.
pub const BUFFER: usize = crate::relay::DEFAULT_BUFFER;

/// A peer that never sends anything.
struct Silent;

impl AsyncRead for Silent {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

/// A sender's bytes after its upgrade, relayed with the gateway's settings to a listener that
/// never answers, until the relay ends (give it a runtime with a paused clock: a close that
/// is never answered ends on the half-close timeout).
pub async fn relay_frames(data: &[u8]) {
    let config = RelayConfig {
        half_close_timeout: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(600)),
        ..RelayConfig::default()
    };
    let sender = tokio::io::join(data, tokio::io::sink());
    let listener = tokio::io::join(Silent, tokio::io::sink());
    let _ = relay(
        sender,
        &[],
        listener,
        &[],
        &config,
        &CancellationToken::new(),
    )
    .await;
}

/// A listener's messages as the gateway reads them for an HTTP response: a message at a
/// time, its payload as chunks of at most [`BUFFER`]. The first byte says how much of the
/// rest came with the upgrade.
///
/// # Panics
/// When a chunk is larger than the buffer.
pub async fn message_reader(data: &[u8]) {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut reader = MessageReader::new(&data[split..], &data[..split], BUFFER);
    // Each message or chunk consumes at least a byte: the input bounds the rounds.
    for _ in 0..=data.len() {
        if reader.next_message(16 << 20).await.is_err() {
            break;
        }
        while let Ok(Some(chunk)) = reader.next_chunk().await {
            assert!(chunk.len() <= BUFFER, "a {} byte chunk", chunk.len());
        }
    }
}

/// The codec the SDK and the net.tcp splice use, in the server role (masked frames in),
/// reading messages until the peer closes or fails.
pub async fn ws_stream(data: &[u8]) {
    let io = tokio::io::join(data, tokio::io::sink());
    let mut ws = WsStream::server(io, &[]);
    ws.set_max_message_size(16 << 20);
    for _ in 0..=data.len() {
        if !matches!(ws.recv().await, Ok(Some(_))) {
            break;
        }
    }
}
