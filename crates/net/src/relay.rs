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

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Default size of the streaming buffer a busy direction uses.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// Default largest message (sum of its frames' payloads) relayed.
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;

/// Default time allowed for the closing handshake once the relay decided to close.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes an idle direction keeps inline: enough for a header and a small message, so
/// request/response traffic of small messages never touches the heap buffer.
const INLINE: usize = 160;

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
const MAX_HEADER: usize = 14;

/// RFC 6455 §5.2 opcodes.
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

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
            // The failing side is told why with a Close frame; the other one too, unless its
            // pump already told it (a protocol error: the relay then waited for its answer).
            let _ = tokio::time::timeout(config.close_timeout, async {
                let msg = e.close_reason();
                let told = e.tells_peer();
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
            RelayEnd::Aborted { side, reason, code }
        }
    }
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
    let mut reason = reason;
    while reason.len() > 123 {
        // Cut on a character boundary: the reason must stay valid UTF-8.
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x80 | OP_CLOSE);
    // Fits: the reason was cut to 123 bytes above.
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
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
    #[error("{0}")]
    Protocol(&'static str),
    #[error("message larger than {0} bytes")]
    TooBig(u64),
    #[error("idle for too long")]
    Idle,
    #[error("did not answer the other side's close in time")]
    HalfClosed,
    #[error("cancelled")]
    Cancelled,
}

impl PumpError {
    /// Errors of a live peer that broke the rules: the relay tells the other side at once
    /// (its pump writes the Close) and answers the failing side itself.
    fn tells_peer(&self) -> bool {
        matches!(self, Self::Protocol(_) | Self::TooBig(_))
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
            Self::Protocol(_) => close_code::PROTOCOL_ERROR,
            Self::TooBig(_) => close_code::TOO_BIG,
        }
    }
}

/// Storage for a direction: inline while idle, a heap buffer while streaming.
enum Store {
    Inline([u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Store {
    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Inline(a) => a,
            Self::Heap(b) => b,
        }
    }
}

/// Reads frames from a client: a buffer with `start..end` valid.
struct FrameReader<R> {
    src: R,
    store: Store,
    start: usize,
    end: usize,
    heap_size: usize,
    /// The last read filled all the space offered: more data is probably waiting.
    busy: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(src: R, pre: &[u8], heap_size: usize) -> Self {
        let heap_size = heap_size.max(INLINE * 2);
        let mut reader = Self {
            src,
            store: Store::Inline([0; INLINE]),
            start: 0,
            end: 0,
            heap_size,
            busy: false,
        };
        if pre.len() > INLINE {
            reader.store = Store::Heap(vec![0; heap_size.max(pre.len())].into_boxed_slice());
        }
        reader.store.as_mut()[..pre.len()].copy_from_slice(pre);
        reader.end = pre.len();
        reader
    }

    fn available(&self) -> usize {
        self.end - self.start
    }

    fn bytes(&mut self) -> &mut [u8] {
        let (s, e) = (self.start, self.end);
        &mut self.store.as_mut()[s..e]
    }

    /// Drops the heap buffer once drained after a short read, so an idle connection holds
    /// only the inline array.
    fn relax(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !self.busy && matches!(self.store, Store::Heap(_)) {
                self.store = Store::Inline([0; INLINE]);
            }
        }
    }

    /// Makes sure at least `need` bytes are buffered. `Ok(false)` on a clean EOF before any
    /// byte of the awaited unit arrived.
    async fn fill(&mut self, need: usize) -> Result<bool, PumpError> {
        while self.available() < need {
            let cap = self.store.as_mut().len();
            if cap - self.start < need {
                // Move the partial unit to the front to make room.
                let (s, e) = (self.start, self.end);
                self.store.as_mut().copy_within(s..e, 0);
                self.start = 0;
                self.end = e - s;
            }
            // Streaming payload, or a header that spans reads: take the big buffer.
            if self.end == cap || (self.busy && matches!(self.store, Store::Inline(_))) {
                let mut heap = vec![0; self.heap_size].into_boxed_slice();
                heap[..self.available()].copy_from_slice(self.bytes());
                self.end -= self.start;
                self.start = 0;
                self.store = Store::Heap(heap);
            }
            let end = self.end;
            let space = &mut self.store.as_mut()[end..];
            let offered = space.len();
            let n = self.src.read(space).await?;
            if n == 0 {
                return if self.available() == 0 {
                    Ok(false)
                } else {
                    Err(PumpError::Eof)
                };
            }
            self.busy = n == offered;
            self.end += n;
        }
        Ok(true)
    }
}

/// A parsed client frame header.
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
    /// Bytes the header took on the wire.
    size: usize,
}

/// Parses a client frame header from `b`; `Ok(None)` if more bytes are needed.
fn parse_header(b: &[u8]) -> Result<Option<Header>, PumpError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x70 != 0 {
        // No extension was negotiated (we decline them all), so RSV bits must be clear.
        return Err(PumpError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode = b[0] & 0x0F;
    if b[1] & 0x80 == 0 {
        return Err(PumpError::Protocol("client frame not masked"));
    }
    let (len, mut size) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(b[2..10].try_into().expect("slice of 8 bytes"));
            if len >> 63 != 0 {
                return Err(PumpError::Protocol("frame length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if b.len() < size + 4 {
        return Ok(None);
    }
    let mask = b[size..size + 4].try_into().expect("slice of 4 bytes");
    size += 4;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len > 125 {
                return Err(PumpError::Protocol(
                    "control frame fragmented or over 125 bytes",
                ));
            }
        }
        _ => return Err(PumpError::Protocol("unknown opcode")),
    }
    Ok(Some(Header {
        fin,
        opcode,
        len,
        mask,
        size,
    }))
}

/// Writes the unmasked (server) form of a header into the end of `out`, returning its length.
fn server_header(fin: bool, opcode: u8, len: u64, out: &mut [u8; 10]) -> usize {
    out[0] = (u8::from(fin) << 7) | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len16) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    // The mask is applied by payload position; `offset` is where this chunk starts.
    let shift = (offset % 4) as usize;
    let rotated = [
        mask[shift],
        mask[(shift + 1) % 4],
        mask[(shift + 2) % 4],
        mask[(shift + 3) % 4],
    ];
    let word = u32::from_ne_bytes(rotated);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i];
    }
}

/// Close codes an endpoint may put on the wire (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
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
        let header = loop {
            if let Some(h) = parse_header(src.bytes())? {
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
            OP_CONTINUATION if !in_message => {
                return Err(PumpError::Protocol("continuation without a message"));
            }
            OP_TEXT | OP_BINARY if in_message => {
                return Err(PumpError::Protocol("new message inside a fragmented one"));
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                if header.opcode != OP_CONTINUATION {
                    message_len = 0;
                }
                message_len = message_len.saturating_add(header.len);
                if message_len > config.max_message {
                    return Err(PumpError::TooBig(config.max_message));
                }
                in_message = !header.fin;
            }
            _ => {}
        }

        // The unmasked header is 4 bytes shorter than the masked one, so it is written into
        // the buffer right before the payload and both leave in one write.
        let mut out = [0u8; 10];
        let out_len = server_header(header.fin, header.opcode, header.len, &mut out);
        src.start += header.size;
        let head_at = src.start - out_len;

        if header.opcode == OP_CLOSE {
            let len = header.len as usize;
            src.fill(len).await?.then_some(()).ok_or(PumpError::Eof)?;
            let body = &mut src.bytes()[..len];
            unmask(body, header.mask, 0);
            let code = match len {
                0 => None,
                1 => return Err(PumpError::Protocol("close frame with a one-byte body")),
                _ => {
                    let code = u16::from_be_bytes([body[0], body[1]]);
                    if !valid_close_code(code) || std::str::from_utf8(&body[2..]).is_err() {
                        return Err(PumpError::Protocol("invalid close code or reason"));
                    }
                    Some(code)
                }
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
            unmask(&mut store[s..s + take], header.mask, offset);
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

/// What a [`MessageReader`] found at the start of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message.
    Text,
    /// A binary message.
    Binary,
}

/// Why a [`MessageReader`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The connection failed.
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    /// The peer closed (with this code, if any) where a message was expected.
    #[error("peer closed the connection")]
    Closed(Option<u16>),
    /// The peer broke RFC 6455; the answer is the close code to send.
    #[error("{0}")]
    Protocol(&'static str),
    /// A message over the limit given to [`MessageReader::next_message`].
    #[error("message larger than {0} bytes")]
    TooBig(u64),
}

impl From<PumpError> for ReadError {
    fn from(e: PumpError) -> Self {
        match e {
            PumpError::Io(e) => Self::Io(e),
            PumpError::Eof | PumpError::Idle | PumpError::HalfClosed | PumpError::Cancelled => {
                Self::Closed(None)
            }
            PumpError::Protocol(why) => Self::Protocol(why),
            PumpError::TooBig(n) => Self::TooBig(n),
        }
    }
}

/// Reads a WebSocket client's (masked) messages as streams of chunks, for a server that
/// consumes a message without holding it whole (the HTTP relay's response bodies). Control
/// frames between data frames are skipped; a Close ends the stream.
pub struct MessageReader<R> {
    src: FrameReader<R>,
    /// Payload bytes left in the current frame.
    remaining: u64,
    mask: [u8; 4],
    offset: u64,
    /// The current frame is the message's last.
    fin: bool,
    /// A message has started and not ended.
    in_message: bool,
    /// Bytes of the current message so far, and its limit.
    total: u64,
    limit: u64,
}

impl<R> std::fmt::Debug for MessageReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("in_message", &self.in_message)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader over `src`, starting with bytes already read past the upgrade (`pre`), using
    /// a streaming buffer of `buffer` bytes while busy.
    pub fn new(src: R, pre: &[u8], buffer: usize) -> Self {
        Self {
            src: FrameReader::new(src, pre, buffer),
            remaining: 0,
            mask: [0; 4],
            offset: 0,
            fin: true,
            in_message: false,
            total: 0,
            limit: u64::MAX,
        }
    }

    /// Waits for the next data message, of at most `limit` bytes, and says its kind. Read
    /// its payload with [`Self::next_chunk`] until `None`.
    ///
    /// # Errors
    /// See [`ReadError`]; a message still unread is skipped first.
    ///
    /// # Cancel safety
    /// Not cancel safe: a frame header may be half consumed.
    pub async fn next_message(&mut self, limit: u64) -> Result<MessageKind, ReadError> {
        while self.in_message {
            if self.next_chunk().await?.is_none() {
                break;
            }
        }
        let header = self.next_header().await?;
        let kind = match header.opcode {
            OP_TEXT => MessageKind::Text,
            OP_BINARY => MessageKind::Binary,
            _ => return Err(ReadError::Protocol("continuation without a message")),
        };
        self.in_message = true;
        self.total = 0;
        self.limit = limit;
        self.start_frame(&header)?;
        Ok(kind)
    }

    /// The next chunk of the current message, unmasked; `None` at its end.
    ///
    /// # Errors
    /// See [`ReadError`].
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, ReadError> {
        loop {
            if !self.in_message {
                return Ok(None);
            }
            if self.remaining == 0 {
                if self.fin {
                    self.in_message = false;
                    return Ok(None);
                }
                let header = self.next_header().await?;
                if header.opcode != OP_CONTINUATION {
                    return Err(ReadError::Protocol("new message inside a fragmented one"));
                }
                self.start_frame(&header)?;
                continue;
            }
            if self.src.available() == 0 && !self.src.fill(1).await? {
                return Err(ReadError::Closed(None));
            }
            let take = self.remaining.min(self.src.available() as u64) as usize;
            let s = self.src.start;
            let chunk = &mut self.src.store.as_mut()[s..s + take];
            unmask(chunk, self.mask, self.offset);
            let out = bytes::Bytes::copy_from_slice(chunk);
            self.src.start += take;
            self.remaining -= take as u64;
            self.offset += take as u64;
            return Ok(Some(out));
        }
    }

    fn start_frame(&mut self, header: &Header) -> Result<(), ReadError> {
        self.total = self.total.saturating_add(header.len);
        if self.total > self.limit {
            return Err(ReadError::TooBig(self.limit));
        }
        self.remaining = header.len;
        self.mask = header.mask;
        self.offset = 0;
        self.fin = header.fin;
        Ok(())
    }

    /// The next data frame header, skipping control frames (a Close ends the stream).
    async fn next_header(&mut self) -> Result<Header, ReadError> {
        loop {
            self.src.relax();
            let header = loop {
                if let Some(h) = parse_header(self.src.bytes())? {
                    break h;
                }
                let need = (self.src.available() + 1).min(MAX_HEADER);
                if !self.src.fill(need).await? {
                    return Err(ReadError::Closed(None));
                }
            };
            self.src.start += header.size;
            if matches!(header.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY) {
                return Ok(header);
            }
            let len = header.len as usize;
            if !self.src.fill(len).await? {
                return Err(ReadError::Closed(None));
            }
            let body = &mut self.src.bytes()[..len];
            unmask(body, header.mask, 0);
            let code = (len >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
            self.src.start += len;
            if header.opcode == OP_CLOSE {
                return Err(ReadError::Closed(code));
            }
        }
    }
}

/// Writes one unmasked server frame: header and payload.
///
/// # Errors
/// The write fails.
///
/// # Cancel safety
/// Not cancel safe: a partial frame may have been written.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    fin: bool,
    kind: Option<MessageKind>,
    payload: &[u8],
) -> io::Result<()> {
    let opcode = match kind {
        None => OP_CONTINUATION,
        Some(MessageKind::Text) => OP_TEXT,
        Some(MessageKind::Binary) => OP_BINARY,
    };
    let mut head = [0u8; 10];
    let n = server_header(fin, opcode, payload.len() as u64, &mut head);
    w.write_all(&head[..n]).await?;
    w.write_all(payload).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::duplex;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::{Bytes, Message};

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

    #[test]
    fn unmask_honours_offset() {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let plain: Vec<u8> = (0..37u8).collect();
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        for split in 0..plain.len() {
            let mut m = masked.clone();
            let (x, y) = m.split_at_mut(split);
            unmask(x, mask, 0);
            unmask(y, mask, split as u64);
            assert_eq!(m, plain, "split at {split}");
        }
    }

    #[test]
    fn header_table() {
        // (bytes, expected: Ok(Some((fin, opcode, len, size))) / Ok(None) / Err)
        assert!(parse_header(&[0x81]).unwrap().is_none());
        assert!(parse_header(&[0x81, 0x85, 1, 2, 3]).unwrap().is_none());
        let h = parse_header(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.opcode, h.len, h.size), (true, 2, 256, 8));
        let h = parse_header(&[0x02, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.len, h.size), (false, 1 << 32, 14));
        assert!(parse_header(&[0x02, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(
            parse_header(&[0xC1, 0x80, 1, 2, 3, 4]).is_err(),
            "rsv1 without extension"
        );
        assert!(
            parse_header(&[0x83, 0x80, 1, 2, 3, 4]).is_err(),
            "reserved opcode"
        );
        assert!(
            parse_header(&[0x09, 0x80, 1, 2, 3, 4]).is_err(),
            "fragmented ping"
        );
        assert!(
            parse_header(&[0x89, 0xFE, 0, 126, 1, 2, 3, 4]).is_err(),
            "ping over 125"
        );
        let mut out = [0u8; 10];
        assert_eq!(server_header(true, 1, 5, &mut out), 2);
        assert_eq!(&out[..2], &[0x81, 5]);
        assert_eq!(server_header(false, 2, 70_000, &mut out), 10);
        assert_eq!(&out[..2], &[0x02, 127]);
    }
}
