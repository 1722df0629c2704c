//! The gateway's own parsers, driven on bytes in memory, for its fuzz targets
//! (`crates/gateway/fuzz`) and the tests that replay their corpora. Not an API: nothing here
//! is stable, and production code never calls it.

use ferry_hc::address::HcTarget;
use tokio::io::AsyncReadExt as _;
use tokio::time::{Duration, Instant};

use crate::config::DEFAULT_MAX_HEADER_BYTES;
use crate::handshake::Head;
use crate::nettcp::Boundary;

/// How the gateway reads a request head off a new connection, then what it asks of it.
pub async fn http_head(data: &[u8]) {
    let mut input = data;
    if let Ok(head) = Head::read(&mut input, DEFAULT_MAX_HEADER_BYTES).await {
        let _ = head.header("Host");
        let _ = head.has_token("Connection", "upgrade");
        let _ = crate::front::forwarded_tls(&head);
        let _ = HcTarget::parse(&head.target);
    }
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
        crate::relayed::frame(&mut input, crate::relayed::MAX_MESSAGE, deadline).await
    else {
        return;
    };
    let limits = ferry_nbfx::Limits {
        max_document_bytes: crate::relayed::MAX_MESSAGE,
        ..ferry_nbfx::Limits::default()
    };
    let _ = ferry_soap::Probe::binary(&message, None, limits);
}

/// What the net.tcp boundary scanner says of `data` fed whole and fed in `chunk`-byte
/// pieces: the absolute offset at which the session's End record finishes, or that there is
/// none yet, or that the bytes are not framing.
///
/// # Panics
/// When the two disagree: the scanner must not depend on how reads split the stream.
pub fn nettcp_boundary(data: &[u8], chunk: usize) {
    let whole = outcome(std::iter::once(data));
    let split = outcome(data.chunks(chunk.max(1)));
    assert_eq!(whole, split, "fed whole and fed in {chunk}-byte pieces");
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    End(usize),
    Open { between_records: bool },
    NotFraming,
}

fn outcome<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut scanner = Boundary::default();
    let mut offset = 0;
    for piece in pieces {
        match scanner.feed(piece) {
            Ok(Some(n)) => return Outcome::End(offset + n),
            Ok(None) => offset += piece.len(),
            Err(()) => return Outcome::NotFraming,
        }
    }
    Outcome::Open {
        between_records: scanner.between_records(),
    }
}
