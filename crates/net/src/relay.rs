//! The frame-aware WebSocket relay that joins a sender and a listener.
//!
//! Both peers are WebSocket *clients* of the gateway, so each sends masked frames and expects
//! unmasked ones: the relay cannot splice bytes, it must re-frame (spec §4.4). It does so
//! while streaming: a frame header is read, rewritten without its mask, and the payload is
//! unmasked chunk by chunk through one bounded buffer per direction. Nothing is buffered per
//! message, so a 1 GB message costs the same memory as a 1 byte one, and every write is
//! awaited, so a slow reader pushes back through the relay to the writer's TCP window.
//!
//! ```text
//!  sender ──masked frames──► [pump A→B: unmask, reframe] ──unmasked──► listener
//!  sender ◄──unmasked─────── [pump B→A: unmask, reframe] ◄──masked──── listener
//! ```
//!
//! Message boundaries, FIN bits, opcodes (text, binary, continuation, ping, pong) and close
//! codes pass through unchanged. A Close from one side is forwarded and the other direction
//! keeps flowing until that side closes too (half-close). Idle connections hold no heap
//! buffer: each direction waits for its next frame in a small inline array and takes a large
//! buffer only while data streams.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::frame::{
    CLOSE_NO_STATUS, FrameError, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER, Opcode,
    decode_close_payload, encode_close_payload, encode_server_frame,
};
use crate::reader::{FillError, FrameReader, client_header, unmask};

/// Default size of the streaming buffer a busy direction uses.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// Default largest message (sum of its frames' payloads) relayed.
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;

/// Default time allowed for the closing handshake once the relay decided to close.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// RFC 6455 §7.4.1 status codes the relay itself sends.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// An endpoint is going away (shutdown, peer vanished).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation (e.g. expired token).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Unexpected condition on the server.
    pub const INTERNAL: u16 = 1011;
}

/// Settings for one relayed connection.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Streaming buffer per busy direction (default [`DEFAULT_BUFFER`]).
    pub buffer: usize,
    /// Largest message relayed; a larger one closes both sides with 1009
    /// (default [`DEFAULT_MAX_MESSAGE`]).
    pub max_message: u64,
    /// Time allowed for the closing handshake (default [`DEFAULT_CLOSE_TIMEOUT`]).
    pub close_timeout: Duration,
    /// A connection with no frame in either direction for this long is closed with 1001.
    pub idle_timeout: Option<Duration>,
    /// Once one side has sent its Close, how long the other may keep its direction open
    /// before both are closed with 1001 (`None`: until the idle timeout, if any).
    pub half_close_timeout: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            buffer: DEFAULT_BUFFER,
            max_message: DEFAULT_MAX_MESSAGE,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            idle_timeout: None,
            half_close_timeout: None,
        }
    }
}

/// How a relayed connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides sent a Close; the codes each side sent (`None`: a Close without a code).
    Closed {
        /// Sent by side A.
        a: Option<u16>,
        /// Sent by side B.
        b: Option<u16>,
    },
    /// A side broke the protocol or the connection; the relay closed both with `code`.
    Aborted {
        /// Which side failed.
        side: Side,
        /// What went wrong.
        reason: String,
        /// The close code the relay sent.
        code: u16,
    },
    /// The relay was cancelled (gateway shutdown) and closed both sides with 1001.
    Cancelled,
}

/// One side of a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first stream given to [`relay`] (the sender, in the gateway).
    A,
    /// The second stream (the listener's rendezvous).
    B,
}

/// Relays WebSocket frames between two clients until both have closed, one fails, or
/// `cancel` fires. `a_pre` / `b_pre` are bytes already read past each side's HTTP upgrade.
///
/// # Cancel safety
/// Not cancel safe: dropping the future mid-frame leaves both streams mid-frame. Use
/// `cancel` to stop it cleanly.
pub async fn relay<A, B>(
    a: A,
    a_pre: &[u8],
    b: B,
    b_pre: &[u8],
    config: &RelayConfig,
    cancel: &CancellationToken,
) -> RelayEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, mut aw) = tokio::io::split(a);
    let (br, mut bw) = tokio::io::split(b);
    let mut a_in = FrameReader::new(ar, a_pre, config.buffer);
    let mut b_in = FrameReader::new(br, b_pre, config.buffer);

    let outcome = {
        // Cleared when a direction's Close must stop at the relay instead of going on.
        let (a_close_on, b_close_on) = (AtomicBool::new(true), AtomicBool::new(true));
        let a2b = pump(&mut a_in, &mut bw, config, &a_close_on);
        let b2a = pump(&mut b_in, &mut aw, config, &b_close_on);
        tokio::pin!(a2b, b2a);
        // The first direction to finish decides what happens to the other.
        let first = tokio::select! {
            r = &mut a2b => (Side::A, r),
            r = &mut b2a => (Side::B, r),
            () = cancel.cancelled() => (Side::A, Err(PumpError::Cancelled)),
        };
        match first {
            // A clean Close from one side: keep relaying the other way (half-close) until it
            // closes as well, for at most the half-close timeout. The idle timeout, if any,
            // still bounds a silent peer.
            (side, Ok(code)) => {
                let half_closed = async {
                    match config.half_close_timeout {
                        Some(limit) => tokio::time::sleep(limit).await,
                        None => std::future::pending().await,
                    }
                };
                let second = match side {
                    Side::A => tokio::select! {
                        r = &mut b2a => r,
                        () = half_closed => Err(PumpError::HalfClosed),
                        () = cancel.cancelled() => Err(PumpError::Cancelled),
                    },
                    Side::B => tokio::select! {
                        r = &mut a2b => r,
                        () = half_closed => Err(PumpError::HalfClosed),
                        () = cancel.cancelled() => Err(PumpError::Cancelled),
                    },
                };
                match (side, second) {
                    (Side::A, Ok(b)) => Ok(RelayEnd::Closed { a: code, b }),
                    (Side::B, Ok(a)) => Ok(RelayEnd::Closed { a, b: code }),
                    (Side::A, Err(e)) => Err((Side::B, e)),
                    (Side::B, Err(e)) => Err((Side::A, e)),
                }
            }
            // A side broke the protocol: its pump has told the other side with a Close. Let
            // what the other side sent before it saw that Close still reach the failing side
            // (an echo of the last good message, say), then close the failing side with the
            // error's own code, not with the other side's answer.
            (side, Err(e)) if e.tells_peer() => {
                let _ = match side {
                    Side::A => {
                        b_close_on.store(false, Ordering::Relaxed);
                        tokio::time::timeout(config.close_timeout, &mut b2a).await
                    }
                    Side::B => {
                        a_close_on.store(false, Ordering::Relaxed);
                        tokio::time::timeout(config.close_timeout, &mut a2b).await
                    }
                };
                Err((side, e))
            }
            (side, Err(e)) => Err((side, e)),
        }
    };

    match outcome {
        Ok(end) => {
            // Both closes were exchanged: the server closes TCP first (RFC 6455 §7.1.1).
            let _ = tokio::time::timeout(config.close_timeout, async {
                let _ = aw.shutdown().await;
                let _ = bw.shutdown().await;
            })
            .await;
            end
        }
        Err((_, PumpError::Cancelled)) => {
            shutdown_both(
                &mut aw,
                &mut bw,
                config,
                close_code::GOING_AWAY,
                "gateway shutting down",
            )
            .await
        }
        Err((side, e)) => {
            let code = e.close_code();
            let reason = e.to_string();
            let told = e.tells_peer();
            // The failing side is told why with a Close frame; the other one too, unless its
            // pump already told it (a protocol error: the relay then waited for its answer).
            let _ = tokio::time::timeout(config.close_timeout, async {
                let msg = e.close_reason();
                match side {
                    Side::A => {
                        let _ = write_close(&mut aw, code, msg).await;
                        if !told {
                            let _ = write_close(&mut bw, code, msg).await;
                        }
                    }
                    Side::B => {
                        let _ = write_close(&mut bw, code, msg).await;
                        if !told {
                            let _ = write_close(&mut aw, code, msg).await;
                        }
                    }
                }
                let _ = aw.shutdown().await;
                let _ = bw.shutdown().await;
            })
            .await;
            if told {
                // A live peer that broke the protocol is probably still sending.
                match side {
                    Side::A => linger(&mut a_in, config).await,
                    Side::B => linger(&mut b_in, config).await,
                }
            }
            RelayEnd::Aborted { side, reason, code }
        }
    }
}

/// A lingering close after the relay's Close to a peer that broke the protocol: what it
/// still sends is read and dropped until it closes too, for at most the close timeout.
/// Closing a socket with unread bytes resets the connection, and a reset destroys what the
/// peer has not read yet: the echo of its last good message and the Close that tells it why
/// (Autobahn 4.1.5, sent byte by byte, lost them about one run in ten).
async fn linger<R: AsyncRead + Unpin>(peer: &mut FrameReader<R>, config: &RelayConfig) {
    let _ = tokio::time::timeout(config.close_timeout, peer.discard()).await;
}

async fn shutdown_both<WA, WB>(
    aw: &mut WA,
    bw: &mut WB,
    config: &RelayConfig,
    code: u16,
    reason: &str,
) -> RelayEnd
where
    WA: AsyncWrite + Unpin,
    WB: AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(config.close_timeout, async {
        let _ = write_close(aw, code, reason).await;
        let _ = write_close(bw, code, reason).await;
        let _ = aw.shutdown().await;
        let _ = bw.shutdown().await;
    })
    .await;
    RelayEnd::Cancelled
}

/// Writes an unmasked Close frame with `code` and a reason (truncated to fit 125 bytes).
///
/// # Errors
/// The write fails.
///
/// # Cancel safety
/// Not cancel safe: a partial frame may have been written.
pub async fn write_close<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    reason: &str,
) -> io::Result<()> {
    let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
    encode_close_payload(code, reason, &mut payload);
    let mut frame = Vec::with_capacity(MAX_HEADER + payload.len());
    encode_server_frame(Opcode::Close, &payload, &mut frame);
    w.write_all(&frame).await?;
    w.flush().await
}

type PumpResult = Result<Option<u16>, PumpError>;

/// Why a direction stopped without a clean Close.
#[derive(Debug, thiserror::Error)]
enum PumpError {
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed without a close frame")]
    Eof,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("idle for too long")]
    Idle,
    #[error("did not answer the other side's close in time")]
    HalfClosed,
    #[error("cancelled")]
    Cancelled,
}

impl From<FillError> for PumpError {
    fn from(e: FillError) -> Self {
        match e {
            FillError::Io(e) => Self::Io(e),
            FillError::Eof => Self::Eof,
        }
    }
}

impl PumpError {
    /// Errors of a live peer that broke the rules: the relay tells the other side at once
    /// (its pump writes the Close) and answers the failing side itself.
    fn tells_peer(&self) -> bool {
        matches!(self, Self::Frame(_))
    }

    fn close_reason(&self) -> &'static str {
        if self.close_code() == close_code::GOING_AWAY {
            "peer went away"
        } else {
            "peer broke the protocol"
        }
    }

    fn close_code(&self) -> u16 {
        match self {
            Self::Io(_) | Self::Eof | Self::Idle | Self::HalfClosed | Self::Cancelled => {
                close_code::GOING_AWAY
            }
            Self::Frame(e) => e.close_code(),
        }
    }
}

/// Relays one direction until its Close has been forwarded (or, once `close_on` is
/// cleared, read and kept back). Returns the code it carried. When the source breaks the
/// protocol, the destination is told with a Close of the error's code before the error
/// returns: the relay writes no partial frame, so the destination is at a frame boundary.
async fn pump<R, W>(
    src: &mut FrameReader<R>,
    dst: &mut W,
    config: &RelayConfig,
    close_on: &AtomicBool,
) -> PumpResult
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = pump_frames(src, dst, config, close_on).await;
    if let Err(e) = &result
        && e.tells_peer()
    {
        let _ = tokio::time::timeout(
            config.close_timeout,
            write_close(dst, e.close_code(), e.close_reason()),
        )
        .await;
    }
    result
}

async fn pump_frames<R, W>(
    src: &mut FrameReader<R>,
    dst: &mut W,
    config: &RelayConfig,
    close_on: &AtomicBool,
) -> PumpResult
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut in_message = false;
    let mut message_len: u64 = 0;
    loop {
        src.relax();
        // Wait for the next header. This is where an idle connection sits.
        let (header, mask, size) = loop {
            if let Some(h) = client_header(src.bytes())? {
                break h;
            }
            let need = (src.available() + 1).min(MAX_HEADER);
            let filled = match config.idle_timeout {
                Some(t) => tokio::time::timeout(t, src.fill(need))
                    .await
                    .map_err(|_| PumpError::Idle)??,
                None => src.fill(need).await?,
            };
            if !filled {
                return Err(PumpError::Eof);
            }
        };
        match header.opcode {
            Opcode::Continuation if !in_message => {
                return Err(FrameError::UnexpectedContinuation.into());
            }
            Opcode::Text | Opcode::Binary if in_message => {
                return Err(FrameError::ExpectedContinuation(header.opcode).into());
            }
            Opcode::Continuation | Opcode::Text | Opcode::Binary => {
                if header.opcode != Opcode::Continuation {
                    message_len = 0;
                }
                message_len = message_len.saturating_add(header.len);
                if message_len > config.max_message {
                    let limit = config.max_message;
                    return Err(FrameError::MessageTooBig { limit }.into());
                }
                in_message = !header.fin;
            }
            Opcode::Close | Opcode::Ping | Opcode::Pong => {}
        }

        // The unmasked header is 4 bytes shorter than the masked one, so it is written into
        // the buffer right before the payload and both leave in one write.
        let mut out = [0u8; MAX_HEADER];
        let out_len = FrameHeader {
            mask: None,
            ..header
        }
        .write(&mut out);
        src.start += size;
        let head_at = src.start - out_len;

        if header.opcode == Opcode::Close {
            let len = header.len as usize;
            src.fill(len).await?.then_some(()).ok_or(PumpError::Eof)?;
            let body = &mut src.bytes()[..len];
            unmask(body, mask, 0);
            let code = match decode_close_payload(body)? {
                (CLOSE_NO_STATUS, _) => None,
                (code, _) => Some(code),
            };
            let mut frame = out[..out_len].to_vec();
            frame.extend_from_slice(&src.bytes()[..len]);
            src.start += len;
            if close_on.load(Ordering::Relaxed) {
                dst.write_all(&frame).await?;
                dst.flush().await?;
            }
            return Ok(code);
        }

        // Stream the payload: header with the first chunk, then chunk by chunk.
        let mut remaining = header.len;
        let mut offset = 0u64;
        let mut head = Some((head_at, out, out_len));
        loop {
            if remaining > 0 && src.available() == 0 {
                src.fill(1).await?.then_some(()).ok_or(PumpError::Eof)?;
            }
            let take = remaining.min(src.available() as u64) as usize;
            let s = src.start;
            let store = src.store.as_mut();
            unmask(&mut store[s..s + take], mask, offset);
            let from = match head.take() {
                // The header goes in front of the payload; after compaction in `fill` the
                // bytes before `start` may be gone, so only use the room if it is still ours.
                Some((at, out, len)) if at + len == s => {
                    store[at..s].copy_from_slice(&out[..len]);
                    at
                }
                Some((_, out, len)) => {
                    dst.write_all(&out[..len]).await?;
                    s
                }
                None => s,
            };
            dst.write_all(&store[from..s + take]).await?;
            src.start += take;
            remaining -= take as u64;
            offset += take as u64;
            if remaining == 0 {
                break;
            }
        }
        // Flush once per frame: a no-op on TCP, pushes TLS records out.
        dst.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::duplex;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::{Bytes, Message};

    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// Two tungstenite clients joined by the relay: returns (sender, listener, relay task).
    async fn pair(
        config: RelayConfig,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<RelayEnd>,
        CancellationToken,
    ) {
        let (a_client, a_server) = duplex(256 * 1024);
        let (b_client, b_server) = duplex(256 * 1024);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task =
            tokio::spawn(async move { relay(a_server, &[], b_server, &[], &config, &c).await });
        let a = WebSocketStream::from_raw_socket(a_client, Role::Client, None).await;
        let b = WebSocketStream::from_raw_socket(b_client, Role::Client, None).await;
        (a, b, task, cancel)
    }

    async fn next(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Message {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message in time")
            .expect("stream ended")
            .expect("read failed")
    }

    #[tokio::test]
    async fn relays_messages_both_ways_and_closes_cleanly() {
        let (mut a, mut b, task, _) = pair(RelayConfig::default()).await;
        a.send(Message::text("hello")).await.unwrap();
        assert_eq!(next(&mut b).await, Message::text("hello"));
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + 7) as u8).collect();
        b.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(next(&mut a).await, Message::Binary(Bytes::from(big)));
        a.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        // The ping reaches the listener, which answers; the pong comes back to the sender.
        assert_eq!(next(&mut b).await, Message::Ping(Bytes::from_static(b"p")));
        // tungstenite queues the pong; flushing B sends it.
        b.flush().await.unwrap();
        assert_eq!(next(&mut a).await, Message::Pong(Bytes::from_static(b"p")));

        // Half-close: A closes, B can still send, then B closes.
        a.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "Shutdown".into(),
        }))
        .await
        .unwrap();
        let Message::Close(Some(f)) = next(&mut b).await else {
            panic!("expected close")
        };
        assert_eq!((u16::from(f.code), f.reason.as_str()), (1000, "Shutdown"));
        // tungstenite answers the close itself on B (driven by polling it again); the relay
        // forwards that reply to A and then ends the connection.
        let _ = tokio::time::timeout(Duration::from_secs(5), b.next())
            .await
            .unwrap();
        let Message::Close(Some(f)) = next(&mut a).await else {
            panic!("expected close reply")
        };
        assert_eq!(u16::from(f.code), 1000);
        let end = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            end,
            RelayEnd::Closed {
                a: Some(1000),
                b: Some(1000)
            }
        );
    }

    #[tokio::test]
    async fn keeps_fragmentation_and_opcodes() {
        let (a_client, a_server) = duplex(64 * 1024);
        let (b_peer, b_relay) = duplex(64 * 1024);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(async move {
            relay(
                a_server,
                &[],
                b_relay,
                &[],
                &RelayConfig::default(),
                &cancel,
            )
            .await
        });
        let mut a = a_client;
        let mut b = b_peer;
        // "Hel" (text, no FIN) + "lo" (continuation, FIN), masked with 01 02 03 04.
        let mask = [1u8, 2, 3, 4];
        let mut f1 = vec![0x01, 0x83, 1, 2, 3, 4];
        f1.extend(b"Hel".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
        let mut f2 = vec![0x80, 0x82, 1, 2, 3, 4];
        f2.extend(b"lo".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
        a.write_all(&f1).await.unwrap();
        a.write_all(&f2).await.unwrap();
        let mut got = [0u8; 9];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x01, 0x03, b'H', b'e', b'l', 0x80, 0x02, b'l', b'o']);
        drop(a);
        let end = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                end,
                RelayEnd::Aborted {
                    side: Side::A,
                    code: 1001,
                    ..
                }
            ),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn unmasked_client_frame_is_a_protocol_error_for_both_sides() {
        let (mut a, a_server) = duplex(4096);
        let (b_client, b_server) = duplex(4096);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(async move {
            relay(
                a_server,
                &[],
                b_server,
                &[],
                &RelayConfig::default(),
                &cancel,
            )
            .await
        });
        let mut b = WebSocketStream::from_raw_socket(b_client, Role::Client, None).await;
        a.write_all(&[0x81, 0x01, b'x']).await.unwrap();
        let Message::Close(Some(f)) = next(&mut b).await else {
            panic!("expected close")
        };
        assert_eq!(u16::from(f.code), 1002);
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            &back[..4],
            &[0x88, back[1], 0x03, 0xEA],
            "A gets close 1002"
        );
        let end = task.await.unwrap();
        assert!(matches!(
            end,
            RelayEnd::Aborted {
                side: Side::A,
                code: 1002,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn oversized_message_closes_with_1009() {
        let config = RelayConfig {
            max_message: 1000,
            ..RelayConfig::default()
        };
        let (mut a, mut b, task, _) = pair(config).await;
        a.send(Message::binary(vec![0u8; 600])).await.unwrap();
        assert!(matches!(next(&mut b).await, Message::Binary(d) if d.len() == 600));
        a.send(Message::binary(vec![0u8; 1001])).await.unwrap();
        let Message::Close(Some(f)) = next(&mut b).await else {
            panic!("expected close")
        };
        assert_eq!(u16::from(f.code), 1009);
        assert!(matches!(
            task.await.unwrap(),
            RelayEnd::Aborted { code: 1009, .. }
        ));
    }

    #[tokio::test]
    async fn cancel_closes_both_with_1001() {
        let (mut a, mut b, task, cancel) = pair(RelayConfig::default()).await;
        cancel.cancel();
        for ws in [&mut a, &mut b] {
            let Message::Close(Some(f)) = next(ws).await else {
                panic!("expected close")
            };
            assert_eq!(u16::from(f.code), 1001);
        }
        assert_eq!(task.await.unwrap(), RelayEnd::Cancelled);
    }

    #[tokio::test]
    async fn pre_read_bytes_are_relayed_first() {
        let (a_client, a_server) = duplex(4096);
        let (b_client, b_server) = duplex(4096);
        let cancel = CancellationToken::new();
        // A masked "hi" text frame that arrived together with the upgrade request.
        let mut pre = vec![0x81, 0x82, 9, 9, 9, 9];
        pre.extend([b'h' ^ 9, b'i' ^ 9]);
        let task = tokio::spawn(async move {
            relay(
                a_server,
                &pre,
                b_server,
                &[],
                &RelayConfig::default(),
                &cancel,
            )
            .await
        });
        let _a = a_client;
        let mut b = WebSocketStream::from_raw_socket(b_client, Role::Client, None).await;
        assert_eq!(next(&mut b).await, Message::text("hi"));
        task.abort();
    }
}
