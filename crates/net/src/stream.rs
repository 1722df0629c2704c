//! The WebSocket ⇄ byte-stream adapter: a WebSocket seen as `AsyncRead + AsyncWrite`, or as
//! a sequence of whole messages. Mostly used in the client role (listeners and senders);
//! [`WsStream::server`] gives the server role, for a gateway that itself talks over a
//! connection a listener opened to it.
//!
//! Byte mode follows what the .NET SDK's `HybridConnectionStream` does on the wire: every write
//! becomes one binary message (at most [`WsStream::max_write_message`] bytes, so memory stays
//! bounded), reads return the payloads of binary *and* text messages back to back, a Close frame
//! from the peer reads as end of stream, and `poll_shutdown` sends a Close frame (1000) while
//! the read side keeps going until the peer's Close arrives (half-close, spec §5.4).
//!
//! Half-close works in both directions. RFC 6455 §5.5.1 lets an endpoint delay its Close reply
//! until it has finished sending, so the peer's Close only ends the *read* side: writes keep
//! working until our side calls `shutdown` or [`WsStream::close`], which sends our Close. The
//! one exception is message mode: when [`WsStream::recv`] reports the peer's Close (`None`),
//! the Close is answered at once, as every WebSocket API does, because message-mode code
//! treats `None` as the end of the conversation. A stream dropped after the peer's Close
//! answers it too, as far as the transport takes the frame without waiting.
//!
//! Message mode ([`WsStream::send`], [`WsStream::recv`]) keeps message boundaries and the
//! text/binary distinction, reassembles fragmented messages and checks text is UTF-8. Pings
//! are answered whenever the stream is read, written or flushed.
//!
//! The codec underneath is our own ([`crate::frame`]): frames we send are masked with a fresh
//! random key each, the server's frames are checked (reserved bits, opcodes, control frame
//! rules, close codes, the message size limit) and a broken rule closes the connection with
//! the code [`FrameError::close_code`] gives.
//!
//! # Memory
//! An idle stream holds no heap buffer. Frame headers and small frames are read through a
//! small array inside the stream; only while data arrives faster than it is read does the
//! read side take a 64 KiB buffer, and it gives it back as soon as a read finds nothing
//! waiting. Payloads of large frames are read straight into the caller's buffer. The write
//! side holds one encoded frame at most, and only until the transport took it.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use crate::frame::CLOSE_NORMAL;
use crate::frame::{
    CLOSE_NO_STATUS, FrameError, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER, Opcode, Role,
    apply_mask, close_code_is_sendable, decode_close_payload, encode_client_frame,
    encode_close_payload, encode_server_frame, rotate_mask,
};

/// Default for [`WsStream::max_write_message`]: 64 KiB, the .NET SDK's buffer size and large
/// enough that per-message overhead does not matter for bulk copies.
pub const DEFAULT_MAX_WRITE_MESSAGE: usize = 64 * 1024;

/// Default for [`WsStream::max_message_size`]: 16 MiB, the SDK's default.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Bytes of input kept inside the stream while idle: a header and a whole control frame always
/// fit (so a Close or Ping never needs the heap), and so do small request/response messages.
const INLINE: usize = 256;

/// The read buffer a busy stream takes, and the step by which message mode grows a message.
const READ_BUFFER: usize = 64 * 1024;

// The inline array must hold any header plus a whole control frame: they are parsed in place.
const _: () = assert!(INLINE >= MAX_HEADER + MAX_CONTROL_PAYLOAD);

/// One whole WebSocket data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A binary message.
    Binary(Bytes),
    /// A text message (valid UTF-8).
    Text(String),
}

impl Message {
    /// The payload bytes, whichever kind the message is.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Binary(b) => b,
            Self::Text(t) => t.as_bytes(),
        }
    }
}

/// The Close frame the peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code (1005 when the frame carried none).
    pub code: u16,
    /// The reason text.
    pub reason: String,
}

/// A WebSocket operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// We already sent our Close frame: nothing more may be sent.
    #[error("websocket is closed")]
    Closed,
    /// The peer broke the WebSocket protocol or a limit (bad frame, oversized message, ...).
    /// We answered with a Close carrying [`FrameError::close_code`].
    #[error("websocket protocol error")]
    Protocol(#[from] FrameError),
    /// The transport failed, or ended without a closing handshake (reported as
    /// [`io::ErrorKind::ConnectionReset`]).
    #[error("websocket transport failed")]
    Io(#[from] io::Error),
    /// The stream is raw (Ferry's `raw` extension): bytes only, no WebSocket messages.
    #[error("the stream is raw bytes: it carries no websocket messages")]
    Raw,
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Closed => Self::new(io::ErrorKind::BrokenPipe, e),
            StreamError::Raw => Self::new(io::ErrorKind::Unsupported, e),
            StreamError::Io(io) => io,
            StreamError::Protocol(_) => Self::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// A WebSocket as a byte stream (`AsyncRead + AsyncWrite`) and as a message stream, in the
/// client role ([`WsStream::new`]) or the server role ([`WsStream::server`]).
///
/// `S` is the transport under the WebSocket (TCP, TLS, an in-memory duplex), after the HTTP
/// upgrade.
pub struct WsStream<S: AsyncRead + AsyncWrite + Unpin> {
    io: S,
    rd: Reader,
    wr: Writer,
    /// The tasks waiting to read and to write. The transport only ever sees [`Self::waker`],
    /// which wakes both: a read may write (a pong, a queued frame) and a write may be parked
    /// on the same transport, and transports keep a single waker per direction.
    wakers: Arc<Wakers>,
    waker: Waker,
    /// The peer's Close frame, once it arrived.
    peer_close: Option<CloseInfo>,
    max_write_message: usize,
    max_message_size: u64,
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a transport whose client WebSocket upgrade just finished. `pre` is what was read
    /// past the end of the 101 response (frames the server sent right after it).
    pub fn new(io: S, pre: &[u8]) -> Self {
        Self::with_role(io, pre, Role::Client)
    }

    /// Wraps a transport whose server-side upgrade (our 101) just finished. `pre` is what
    /// the client sent past its upgrade request. The client's frames must be masked (1002
    /// otherwise); ours are not.
    pub fn server(io: S, pre: &[u8]) -> Self {
        Self::with_role(io, pre, Role::Server)
    }

    fn with_role(io: S, pre: &[u8], role: Role) -> Self {
        let wakers = Arc::new(Wakers::default());
        Self {
            io,
            rd: Reader::new(pre),
            wr: Writer::new(role),
            waker: Waker::from(wakers.clone()),
            wakers,
            peer_close: None,
            max_write_message: DEFAULT_MAX_WRITE_MESSAGE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE as u64,
        }
    }

    /// The largest binary message one `poll_write` sends; longer writes are cut there (the
    /// caller sees a short write, as with any `AsyncWrite`). Default
    /// [`DEFAULT_MAX_WRITE_MESSAGE`].
    pub fn max_write_message(&self) -> usize {
        self.max_write_message
    }

    /// Sets [`Self::max_write_message`] (at least 1).
    pub fn set_max_write_message(&mut self, max: usize) -> &mut Self {
        self.max_write_message = max.max(1);
        self
    }

    /// The largest message accepted from the peer, in both modes; a larger one closes the
    /// connection with 1009. Default [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn max_message_size(&self) -> usize {
        usize::try_from(self.max_message_size).unwrap_or(usize::MAX)
    }

    /// Sets [`Self::max_message_size`]. It is checked against each frame's declared length
    /// before any of its payload is buffered.
    pub fn set_max_message_size(&mut self, max: usize) -> &mut Self {
        self.max_message_size = max as u64;
        self
    }

    /// The peer's Close frame, once reading has reached it.
    pub fn peer_close(&self) -> Option<&CloseInfo> {
        self.peer_close.as_ref()
    }

    /// The transport under the WebSocket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Sends one whole message (as a single frame) and flushes it. Works after the peer's
    /// Close was read in byte mode (half-close), until our own Close.
    ///
    /// # Errors
    /// [`StreamError::Closed`] after our Close (sent by `shutdown`, [`Self::close`], an
    /// answered protocol error, or `recv` returning `None`); transport failures.
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, the message may or may not have been queued; a queued
    /// frame is finished by the next read, write, flush or shutdown.
    pub async fn send(&mut self, message: Message) -> Result<(), StreamError> {
        let mut message = Some(message);
        poll_fn(|cx| self.poll_send(cx, &mut message)).await
    }

    /// Receives the next whole message; `Ok(None)` once the peer closed (see
    /// [`Self::peer_close`]), after answering its Close. The rest of a message a byte-mode
    /// read already started comes first, as a binary message.
    ///
    /// # Errors
    /// The peer broke the protocol ([`StreamError::Protocol`]), or the transport failed.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is either returned or its received part stays buffered for the
    /// next call.
    pub async fn recv(&mut self) -> Result<Option<Message>, StreamError> {
        poll_fn(|cx| {
            let waker = self.enter(cx, Side::Read);
            self.poll_message(&mut Context::from_waker(&waker))
        })
        .await
    }

    /// Sends a Close frame with `code` and `reason` (the write side ends; reading goes on
    /// until the peer's Close) and flushes it. Calling it again does nothing more. The reason
    /// is cut to fit a control frame.
    ///
    /// # Errors
    /// Transport failures.
    ///
    /// # Cancel safety
    /// Cancel safe in that calling it again finishes the job.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), StreamError> {
        poll_fn(|cx| {
            let waker = self.enter(cx, Side::Write);
            self.poll_close_with(&mut Context::from_waker(&waker), code, reason)
        })
        .await
        .map_err(StreamError::from)
    }

    /// Registers the caller's waker for `side` and returns the waker to poll the transport
    /// with (see [`Self::wakers`]).
    fn enter(&mut self, cx: &Context<'_>, side: Side) -> Waker {
        match side {
            Side::Read => self.wakers.read.register(cx.waker()),
            Side::Write => self.wakers.write.register(cx.waker()),
        }
        self.waker.clone()
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
    ) -> Poll<Result<(), StreamError>> {
        let waker = self.enter(cx, Side::Write);
        let cx = &mut Context::from_waker(&waker);
        if message.is_some() {
            if self.wr.closed {
                return Poll::Ready(Err(StreamError::Closed));
            }
            // At most one frame is buffered: finish the previous one first (backpressure).
            ready!(self.poll_drain(cx))?;
            match message.take() {
                Some(Message::Binary(b)) => self.wr.queue(Opcode::Binary, &b),
                Some(Message::Text(t)) => self.wr.queue(Opcode::Text, t.as_bytes()),
                None => {}
            }
        }
        ready!(self.poll_drain(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Polls for the next whole data message, answering control frames on the way.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Message>, StreamError>> {
        loop {
            if !ready!(self.poll_frame(cx))? {
                self.rd.assembly = Vec::new();
                self.rd.checked = 0;
                if let Some(peer) = &self.peer_close
                    && !self.wr.closed
                {
                    // Message mode treats the peer's Close as the end: answer it (§5.5.1),
                    // echoing its code when that code may be sent.
                    let code = if close_code_is_sendable(peer.code) {
                        peer.code
                    } else {
                        CLOSE_NORMAL
                    };
                    self.wr.queue_close(code, "");
                }
                if self.wr.closed {
                    // Push our Close out. Failing is fine: the conversation is over either
                    // way, and the peer treats a vanished transport as closed.
                    if self.poll_drain_and_flush(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                return Poll::Ready(Ok(None));
            }
            let Some(frame) = self.rd.frame else {
                continue;
            };
            if frame.remaining > 0 {
                // Grow the message by what this frame still holds, one buffer at a time: the
                // size limit was checked against the frame's declared length already.
                let mut assembly = std::mem::take(&mut self.rd.assembly);
                let old = assembly.len();
                let step = usize::try_from(frame.remaining)
                    .unwrap_or(usize::MAX)
                    .min(READ_BUFFER);
                assembly.resize(old + step, 0);
                let polled = self.poll_payload(cx, &mut assembly[old..]);
                let n = match polled {
                    Poll::Ready(Ok(n)) => n,
                    _ => 0,
                };
                assembly.truncate(old + n);
                // A text message is checked as it arrives: one that cannot be UTF-8 fails at
                // its first bad byte, not after the peer has sent the rest (RFC 6455 §8.1).
                if self.rd.message == Some(Opcode::Text) && !self.rd.partial {
                    match std::str::from_utf8(&assembly[self.rd.checked..]) {
                        Ok(_) => self.rd.checked = assembly.len(),
                        // A character cut at the end of what has arrived so far.
                        Err(e) if e.error_len().is_none() => self.rd.checked += e.valid_up_to(),
                        Err(_) => {
                            self.rd.assembly = assembly;
                            return Poll::Ready(Err(self.fail(cx, FrameError::InvalidUtf8)));
                        }
                    }
                }
                self.rd.assembly = assembly;
                ready!(polled)?;
                continue;
            }
            // A frame read to its end.
            let kind = match self.rd.message {
                Some(Opcode::Text) if !self.rd.partial => Opcode::Text,
                _ => Opcode::Binary,
            };
            self.rd.end_frame();
            if frame.fin {
                let data = std::mem::take(&mut self.rd.assembly);
                self.rd.checked = 0;
                return Poll::Ready(match kind {
                    Opcode::Text => match String::from_utf8(data) {
                        Ok(text) => Ok(Some(Message::Text(text))),
                        Err(_) => Err(self.fail(cx, FrameError::InvalidUtf8)),
                    },
                    _ => Ok(Some(Message::Binary(Bytes::from(data)))),
                });
            }
        }
    }

    /// Reads until a data frame is current (`Ok(true)`) or the read side ended (`Ok(false)`:
    /// the peer's Close arrived, or an earlier error ended it). Control frames are handled on
    /// the way.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, StreamError>> {
        loop {
            if self.rd.frame.is_some() {
                return Poll::Ready(Ok(true));
            }
            if self.rd.ended {
                return Poll::Ready(Ok(false));
            }
            let (header, header_len) = match FrameHeader::decode(self.rd.bytes(), self.wr.role) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(self.fail(cx, e))),
            };
            if header.opcode.is_control() {
                // At most 125 bytes (checked by the decoder): parse it whole, in place.
                let len = header.len as usize;
                let need = header_len + len;
                if self.rd.available() < need {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                payload[..len].copy_from_slice(&self.rd.bytes()[header_len..need]);
                self.rd.consume(need);
                if let Some(mask) = header.mask {
                    apply_mask(mask, &mut payload[..len]);
                }
                match header.opcode {
                    Opcode::Ping => {
                        // Only the latest ping needs its pong (§5.5.3).
                        self.wr.pong = Some(Pong { payload, len });
                        let _ = self.poll_drain_and_flush(cx);
                    }
                    Opcode::Close => {
                        return match decode_close_payload(&payload[..len]) {
                            Ok((code, reason)) => {
                                self.peer_close = Some(CloseInfo {
                                    code,
                                    reason: reason.to_owned(),
                                });
                                // Nothing after a Close is read (§5.5.1); our reply waits
                                // for our shutdown or close.
                                self.rd.ended = true;
                                self.rd.frame = None;
                                Poll::Ready(Ok(false))
                            }
                            Err(e) => Poll::Ready(Err(self.fail(cx, e))),
                        };
                    }
                    // Pongs answer our pings, which we do not send.
                    Opcode::Pong | Opcode::Continuation | Opcode::Text | Opcode::Binary => {}
                }
                continue;
            }
            match (header.opcode, self.rd.message) {
                (Opcode::Continuation, None) => {
                    return Poll::Ready(Err(self.fail(cx, FrameError::UnexpectedContinuation)));
                }
                (Opcode::Continuation, Some(_)) => {}
                (opcode, Some(_)) => {
                    return Poll::Ready(Err(
                        self.fail(cx, FrameError::ExpectedContinuation(opcode))
                    ));
                }
                (opcode, None) => {
                    self.rd.message = Some(opcode);
                    self.rd.message_len = 0;
                }
            }
            // The limit is checked on the declared length, before any payload is buffered.
            let total = self.rd.message_len.saturating_add(header.len);
            if total > self.max_message_size {
                let limit = self.max_message_size;
                return Poll::Ready(Err(self.fail(cx, FrameError::MessageTooBig { limit })));
            }
            self.rd.message_len = total;
            self.rd.consume(header_len);
            self.rd.frame = Some(InFrame {
                remaining: header.len,
                fin: header.fin,
                mask: header.mask,
                offset: 0,
            });
        }
    }

    /// Reads more input into the store. End of transport here, with no Close frame, is
    /// reported as a reset, as a socket would.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        self.rd.make_room();
        let end = self.rd.end;
        let space = &mut self.rd.store.as_mut()[end..];
        let offered = space.len();
        let mut buf = ReadBuf::new(space);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => {
                // Nothing waiting: the connection is idle, give the big buffer back.
                self.rd.relax_idle();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                self.rd.ended = true;
                Poll::Ready(Err(e.into()))
            }
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    self.rd.ended = true;
                    return Poll::Ready(Err(reset().into()));
                }
                self.rd.end += n;
                // Filling all the room offered means more is probably waiting.
                self.rd.busy = n == offered;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reads payload of the current data frame into `dst`: buffered bytes first, else
    /// straight from the transport, unmasked in place in the server role.
    fn poll_payload(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<Result<usize, StreamError>> {
        let Some(frame) = self.rd.frame else {
            return Poll::Ready(Ok(0));
        };
        let want = usize::try_from(frame.remaining)
            .unwrap_or(usize::MAX)
            .min(dst.len());
        if want == 0 {
            return Poll::Ready(Ok(0));
        }
        let available = self.rd.available();
        let n = if available > 0 {
            let n = want.min(available);
            dst[..n].copy_from_slice(&self.rd.bytes()[..n]);
            self.rd.consume(n);
            n
        } else {
            let mut buf = ReadBuf::new(&mut dst[..want]);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    self.rd.relax_idle();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    self.rd.ended = true;
                    return Poll::Ready(Err(e.into()));
                }
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    self.rd.ended = true;
                    return Poll::Ready(Err(reset().into()));
                }
                Poll::Ready(Ok(())) => buf.filled().len(),
            }
        };
        if let Some(frame) = self.rd.frame.as_mut() {
            if let Some(mask) = frame.mask {
                apply_mask(rotate_mask(mask, frame.offset), &mut dst[..n]);
            }
            frame.remaining -= n as u64;
            frame.offset += n as u64;
        }
        Poll::Ready(Ok(n))
    }

    /// The peer broke the protocol: reading ends, and the peer is told why with a Close
    /// (§7.1.7) if ours was not sent yet.
    fn fail(&mut self, cx: &mut Context<'_>, e: FrameError) -> StreamError {
        self.rd.ended = true;
        self.rd.frame = None;
        if !self.wr.closed {
            self.wr.queue_close(e.close_code(), &e.to_string());
            let _ = self.poll_drain_and_flush(cx);
        }
        StreamError::Protocol(e)
    }

    /// Writes out every queued byte, then the pending pong if any. The write buffer is
    /// released once drained, so an idle stream holds none.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.wr.pos < self.wr.buf.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wr.buf[self.wr.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wr.pos += n;
                continue;
            }
            self.wr.buf = Vec::new();
            self.wr.pos = 0;
            match self.wr.pong.take() {
                // No pong after our Close: only the Close's own reply may follow it.
                Some(pong) if !self.wr.closed => {
                    self.wr.queue(Opcode::Pong, &pong.payload[..pong.len]);
                }
                _ => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_drain_and_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Sends anything queued while reading (a pong, the end of a frame a write left
    /// behind) without waiting for the transport.
    fn push_queued(&mut self, cx: &mut Context<'_>) {
        if self.wr.pos < self.wr.buf.len() || self.wr.pong.is_some() {
            // Errors surface on the next write; a read reports its own.
            let _ = self.poll_drain_and_flush(cx);
        }
    }

    fn poll_close_with(
        &mut self,
        cx: &mut Context<'_>,
        code: u16,
        reason: &str,
    ) -> Poll<io::Result<()>> {
        if !self.wr.closed {
            self.wr.queue_close(code, reason);
        }
        self.poll_drain_and_flush(cx)
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waker = this.enter(cx, Side::Read);
        let cx = &mut Context::from_waker(&waker);
        this.push_queued(cx);
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !ready!(this.poll_frame(cx))? {
                // The peer's normal Close (or one without a code) reads as end of stream.
                // Any other code says the stream was cut short (1001 from a relay whose
                // other side vanished, 1011, …): a byte stream has no other way to tell a
                // truncated transfer from a complete one, so it reads as an error.
                return Poll::Ready(match &this.peer_close {
                    Some(close) if !matches!(close.code, CLOSE_NORMAL | 1005) => {
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!("peer closed with {}: {}", close.code, close.reason),
                        ))
                    }
                    _ => Ok(()),
                });
            }
            let Some(frame) = this.rd.frame else {
                continue;
            };
            if frame.remaining == 0 {
                // An empty frame, or one read to its end: an empty read would look like end of
                // stream, so go on to the next frame.
                this.rd.end_frame();
                continue;
            }
            // Only as much of the caller's buffer as this frame can fill is initialised:
            // zeroing all of a large buffer on every read costs more than small frames do.
            let want = usize::try_from(frame.remaining)
                .unwrap_or(usize::MAX)
                .min(buf.remaining());
            let n = ready!(this.poll_payload(cx, buf.initialize_unfilled_to(want)))?;
            buf.advance(n);
            if this.rd.frame.is_some_and(|f| f.remaining == 0) {
                this.rd.end_frame();
            }
            // A message-mode `recv` now gets the rest of this message as binary.
            this.rd.partial = this.rd.message.is_some();
            return Poll::Ready(Ok(()));
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let waker = this.enter(cx, Side::Write);
        let cx = &mut Context::from_waker(&waker);
        if this.wr.closed {
            return Poll::Ready(Err(StreamError::Closed.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Finish what an earlier write left queued before taking more: at most one message
        // is ever buffered here, so a slow peer pushes back on the writer.
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(this.max_write_message);
        this.wr.queue(Opcode::Binary, &buf[..n]);
        // Send it now if the transport takes it, like a socket write would; if it does not,
        // the next read, write or flush finishes it.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waker = this.enter(cx, Side::Write);
        this.poll_drain_and_flush(&mut Context::from_waker(&waker))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The .NET SDK's ShutdownAsync: Close (1000) and keep reading (spec §5.4). The
        // transport itself stays open: the server closes TCP first (RFC 6455 §7.1.1).
        let this = self.get_mut();
        let waker = this.enter(cx, Side::Write);
        this.poll_close_with(&mut Context::from_waker(&waker), CLOSE_NORMAL, "")
    }
}

impl<S> Drop for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn drop(&mut self) {
        // Answer a Close the application read but never replied to, and finish a frame a
        // write left queued, as far as the transport takes them without waiting.
        if self.peer_close.is_some() && !self.wr.closed {
            self.wr.queue_close(CLOSE_NORMAL, "");
        }
        if self.wr.pos < self.wr.buf.len() {
            let _ = self.poll_drain_and_flush(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl<S> fmt::Debug for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("io", &self.io)
            .field("read_ended", &self.rd.ended)
            .field("write_closed", &self.wr.closed)
            .field("peer_close", &self.peer_close)
            .finish_non_exhaustive()
    }
}

/// Which side of the stream a poll comes from.
#[derive(Clone, Copy)]
enum Side {
    Read,
    Write,
}

/// The wakers of the tasks waiting to read and to write; as a [`Waker`] it wakes both.
#[derive(Debug, Default)]
struct Wakers {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read.wake();
        self.write.wake();
    }
}

/// A data frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct InFrame {
    /// Payload bytes not read yet.
    remaining: u64,
    /// The frame ends its message.
    fin: bool,
    /// The client's mask key, in the server role.
    mask: Option<[u8; 4]>,
    /// Payload bytes read so far, where the mask key stands.
    offset: u64,
}

/// Where input waits: inline while idle, on the heap while data streams.
#[expect(
    clippy::large_enum_variant,
    reason = "the inline variant is the point: an idle stream must not hold heap memory"
)]
enum Store {
    Inline([u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Store {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Inline(a) => a,
            Self::Heap(b) => b,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Inline(a) => a,
            Self::Heap(b) => b,
        }
    }
}

/// The read side: buffered input (`start..end` of the store) and where we are in the frame
/// and message sequence.
struct Reader {
    store: Store,
    start: usize,
    end: usize,
    /// The last read filled all the room offered: more data is probably waiting.
    busy: bool,
    /// The data frame being read.
    frame: Option<InFrame>,
    /// The opcode (text or binary) of the message in progress, from its first frame until
    /// its final frame was read.
    message: Option<Opcode>,
    /// Payload bytes of the message in progress so far, for the size limit.
    message_len: u64,
    /// Message mode: the message in progress.
    assembly: Vec<u8>,
    /// Message mode: how much of a text message's `assembly` is known to be UTF-8.
    checked: usize,
    /// Byte mode read part of the message in progress, so `recv` returns the rest as binary.
    partial: bool,
    /// The peer's Close arrived or reading failed: reads return end of stream.
    ended: bool,
}

impl Reader {
    fn new(pre: &[u8]) -> Self {
        let mut store = if pre.len() > INLINE {
            Store::Heap(vec![0; READ_BUFFER.max(pre.len())].into_boxed_slice())
        } else {
            Store::Inline([0; INLINE])
        };
        store.as_mut()[..pre.len()].copy_from_slice(pre);
        Self {
            store,
            start: 0,
            end: pre.len(),
            busy: false,
            frame: None,
            message: None,
            message_len: 0,
            assembly: Vec::new(),
            checked: 0,
            partial: false,
            ended: false,
        }
    }

    fn available(&self) -> usize {
        self.end - self.start
    }

    fn bytes(&self) -> &[u8] {
        &self.store.as_ref()[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !self.busy {
                self.store = Store::Inline([0; INLINE]);
            }
        }
    }

    /// Drops the heap buffer if nothing is buffered: called when the transport has nothing
    /// waiting, the sign the stream went idle.
    fn relax_idle(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.busy = false;
            if matches!(self.store, Store::Heap(_)) {
                self.store = Store::Inline([0; INLINE]);
            }
        }
    }

    /// Makes room after `end` for the next read: the heap buffer while busy, else the
    /// buffered bytes moved to the front.
    fn make_room(&mut self) {
        let inline = matches!(self.store, Store::Inline(_));
        if inline && (self.busy || self.end == INLINE && self.start == 0) {
            let mut heap = vec![0; READ_BUFFER].into_boxed_slice();
            heap[..self.available()].copy_from_slice(self.bytes());
            self.end = self.available();
            self.start = 0;
            self.store = Store::Heap(heap);
        } else if self.end == self.store.as_ref().len() {
            // What is buffered is part of one header or control frame (at most 139 bytes),
            // so moving it to the front always leaves room.
            let (s, e) = (self.start, self.end);
            self.store.as_mut().copy_within(s..e, 0);
            self.start = 0;
            self.end = e - s;
        }
    }

    /// The current frame was read to its end.
    fn end_frame(&mut self) {
        if let Some(frame) = self.frame.take()
            && frame.fin
        {
            self.message = None;
            self.message_len = 0;
            self.partial = false;
        }
    }
}

/// A ping's payload, waiting for its pong.
struct Pong {
    payload: [u8; MAX_CONTROL_PAYLOAD],
    len: usize,
}

/// The write side: encoded frames (`pos..` not yet written) and our Close.
struct Writer {
    role: Role,
    buf: Vec<u8>,
    pos: usize,
    pong: Option<Pong>,
    /// Our Close is queued or sent: no more frames.
    closed: bool,
}

impl Writer {
    fn new(role: Role) -> Self {
        Self {
            role,
            buf: Vec::new(),
            pos: 0,
            pong: None,
            closed: false,
        }
    }

    /// Appends a whole frame: a client's masked with a fresh random key (RFC 6455 §5.3
    /// wants keys a proxy cannot predict), a server's unmasked.
    fn queue(&mut self, opcode: Opcode, payload: &[u8]) {
        match self.role {
            Role::Client => encode_client_frame(opcode, payload, rand::random(), &mut self.buf),
            Role::Server => encode_server_frame(opcode, payload, &mut self.buf),
        }
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
        // 1005 means "no code": send an empty Close rather than a reserved code.
        if code != CLOSE_NO_STATUS {
            encode_close_payload(code, reason, &mut payload);
        }
        self.queue(Opcode::Close, &payload);
        self.closed = true;
    }
}

/// The transport ended without a closing handshake: what a socket reports as a reset.
fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection ended without a websocket close",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    /// Our client against a hand-written server: the raw other end of the duplex.
    fn raw_pair() -> (WsStream<DuplexStream>, DuplexStream) {
        let (a, b) = duplex(256 * 1024);
        (WsStream::new(a, &[]), b)
    }

    /// Our client against tungstenite's server role, an independent implementation.
    async fn tungstenite_pair() -> (WsStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = duplex(256 * 1024);
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (WsStream::new(a, &[]), server)
    }

    /// An unmasked server frame.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn close_frame(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        frame(0x88, &payload)
    }

    /// Reads one client frame, checks it is masked and final, and returns its first byte,
    /// mask key and unmasked payload.
    async fn read_client_frame(raw: &mut DuplexStream) -> (u8, [u8; 4], Vec<u8>) {
        let mut head = [0u8; 2];
        raw.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0] & 0x80, 0x80, "client frames are never fragmented");
        assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
        let len = match head[1] & 0x7F {
            126 => u64::from(raw.read_u16().await.unwrap()),
            127 => raw.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        raw.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len as usize];
        raw.read_exact(&mut payload).await.unwrap();
        apply_mask(mask, &mut payload);
        (head[0], mask, payload)
    }

    async fn expect_close(raw: &mut DuplexStream, code: u16) {
        let (b0, _, payload) = read_client_frame(raw).await;
        assert_eq!(b0, 0x88, "a close frame");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
    }

    /// Nothing more arrives from the client for a moment.
    async fn expect_silence(raw: &mut DuplexStream) {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(100), raw.read(&mut b)).await;
        assert!(r.is_err(), "unexpected bytes from the client: {r:?}");
    }

    /// Polls a read once, for tests that need the stream parked and idle.
    fn poll_read_once(client: &mut WsStream<DuplexStream>) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut space = [0u8; 64];
        let mut buf = ReadBuf::new(&mut space);
        Pin::new(client)
            .poll_read(&mut cx, &mut buf)
            .map_ok(|()| buf.filled().len())
    }

    fn apply_mask(mask: [u8; 4], data: &mut [u8]) {
        crate::frame::apply_mask(mask, data);
    }

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(LIMIT, f)
            .await
            .expect("test timed out")
    }

    #[tokio::test]
    async fn each_write_is_one_masked_binary_frame() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            client.write_all(b"hello").await.unwrap();
            client.write_all(b"world").await.unwrap();
            client.flush().await.unwrap();
            let (b0, mask1, payload) = read_client_frame(&mut raw).await;
            assert_eq!((b0, payload.as_slice()), (0x82, &b"hello"[..]));
            let (b0, mask2, payload) = read_client_frame(&mut raw).await;
            assert_eq!((b0, payload.as_slice()), (0x82, &b"world"[..]));
            assert_ne!(mask1, mask2, "a fresh key per frame");
            // Message mode keeps the text opcode.
            client.send(Message::Text("héllo".into())).await.unwrap();
            let (b0, _, payload) = read_client_frame(&mut raw).await;
            assert_eq!((b0, payload.as_slice()), (0x81, "héllo".as_bytes()));
        })
        .await;
    }

    #[tokio::test]
    async fn writes_are_cut_at_the_message_limit() {
        within(async {
            let (mut client, mut server) = tungstenite_pair().await;
            client.set_max_write_message(4);
            let n = client.write(b"abcdefghij").await.unwrap();
            assert_eq!(n, 4);
            client.write_all(b"efghij").await.unwrap();
            let mut sizes = Vec::new();
            let mut all = Vec::new();
            while all.len() < 10 {
                let WsMessage::Binary(b) = server.next().await.unwrap().unwrap() else {
                    panic!("not binary")
                };
                sizes.push(b.len());
                all.extend_from_slice(&b);
            }
            assert_eq!(all, b"abcdefghij");
            assert!(sizes.iter().all(|s| *s <= 4), "{sizes:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn fragmented_messages_are_reassembled_around_control_frames() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            let mut wire = Vec::new();
            wire.extend(frame(0x01, "hé".as_bytes()));
            wire.extend(frame(0x89, b"p1"));
            wire.extend(frame(0x00, "llo ".as_bytes()));
            wire.extend(frame(0x8A, b"unsolicited pong"));
            wire.extend(frame(0x80, "wörld".as_bytes()));
            wire.extend(frame(0x02, &[1, 2]));
            wire.extend(frame(0x80, &[3]));
            wire.extend(frame(0x82, &[]));
            raw.write_all(&wire).await.unwrap();
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Text("héllo wörld".into()))
            );
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Binary(Bytes::from_static(&[1, 2, 3])))
            );
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Binary(Bytes::new()))
            );
            // The ping in the middle of the message was answered.
            let (b0, _, payload) = read_client_frame(&mut raw).await;
            assert_eq!((b0, payload.as_slice()), (0x8A, &b"p1"[..]));
        })
        .await;
    }

    #[tokio::test]
    async fn byte_mode_reads_payloads_back_to_back() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            wire.extend(frame(0x02, b"ab"));
            wire.extend(frame(0x80, b"cd"));
            wire.extend(frame(0x82, &[]));
            wire.extend(frame(0x81, b"ef"));
            wire.extend(frame(0x82, &big));
            wire.extend(close_frame(1000, "bye"));
            raw.write_all(&wire).await.unwrap();
            let mut got = Vec::new();
            // Small reads: a large frame is drained a piece at a time.
            let mut chunk = [0u8; 777];
            loop {
                let n = client.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            let mut want = b"abcdef".to_vec();
            want.extend_from_slice(&big);
            assert_eq!(got.len(), want.len());
            assert!(got == want);
            assert_eq!(
                client.peer_close(),
                Some(&CloseInfo {
                    code: 1000,
                    reason: "bye".into()
                })
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_close_that_cuts_the_stream_short_reads_as_an_error() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            let mut wire = frame(0x82, b"partial");
            wire.extend(close_frame(1001, "peer went away"));
            raw.write_all(&wire).await.unwrap();
            let mut got = [0u8; 7];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"partial", "what came before the close is delivered");
            let err = client.read(&mut [0u8; 8]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
            assert!(err.to_string().contains("1001"), "{err}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_ping_is_answered_while_reading() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&frame(0x89, b"are you there")).await.unwrap();
            raw.write_all(&frame(0x82, b"x")).await.unwrap();
            let mut b = [0u8; 1];
            client.read_exact(&mut b).await.unwrap();
            let (b0, _, payload) = read_client_frame(&mut raw).await;
            assert_eq!((b0, payload.as_slice()), (0x8A, &b"are you there"[..]));
        })
        .await;
    }

    #[tokio::test]
    async fn we_close_first_and_keep_reading() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            client.shutdown().await.unwrap();
            expect_close(&mut raw, CLOSE_NORMAL).await;
            assert!(matches!(
                client.send(Message::Text("x".into())).await,
                Err(StreamError::Closed)
            ));
            assert_eq!(
                client.write(b"x").await.unwrap_err().kind(),
                io::ErrorKind::BrokenPipe
            );
            // The peer goes on sending (half-close), then closes too.
            raw.write_all(&frame(0x82, b"late")).await.unwrap();
            raw.write_all(&close_frame(1000, "")).await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"late");
            assert_eq!(client.peer_close().map(|c| c.code), Some(CLOSE_NORMAL));
            // Both closes were exchanged: nothing more is sent, not even on a second close.
            client.close(1000, "again").await.unwrap();
            drop(client);
            let mut rest = Vec::new();
            raw.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{rest:02x?}");
        })
        .await;
    }

    #[tokio::test]
    async fn the_peer_closes_first_and_we_keep_writing() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&frame(0x82, b"request")).await.unwrap();
            raw.write_all(&close_frame(1000, "done sending"))
                .await
                .unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request");
            assert_eq!(
                client.peer_close(),
                Some(&CloseInfo {
                    code: 1000,
                    reason: "done sending".into()
                })
            );
            // No Close went back on its own: the write side is still ours.
            expect_silence(&mut raw).await;
            let response: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
            client.write_all(&response).await.unwrap();
            client.send(Message::Text("trailer".into())).await.unwrap();
            client.shutdown().await.unwrap();
            let mut echoed = Vec::new();
            loop {
                let (b0, _, payload) = read_client_frame(&mut raw).await;
                match b0 {
                    0x82 => echoed.extend_from_slice(&payload),
                    0x81 => assert_eq!(payload, b"trailer"),
                    0x88 => {
                        assert_eq!(payload, CLOSE_NORMAL.to_be_bytes());
                        break;
                    }
                    other => panic!("unexpected frame {other:#x}"),
                }
            }
            assert!(echoed == response);
            // Reading stays at end of stream.
            assert_eq!(client.read(&mut [0u8; 8]).await.unwrap(), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn message_mode_answers_the_close_it_reports() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&close_frame(4000, "done")).await.unwrap();
            assert_eq!(client.recv().await.unwrap(), None);
            assert_eq!(client.peer_close().map(|c| c.code), Some(4000));
            expect_close(&mut raw, 4000).await;
            assert!(matches!(
                client.send(Message::Text("x".into())).await,
                Err(StreamError::Closed)
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn dropping_after_the_peer_closed_answers_the_close() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&close_frame(1000, "")).await.unwrap();
            assert_eq!(client.read(&mut [0u8; 8]).await.unwrap(), 0);
            drop(client);
            expect_close(&mut raw, CLOSE_NORMAL).await;
        })
        .await;
    }

    #[tokio::test]
    async fn invalid_frames_are_typed_errors_answered_with_a_close() {
        let long_ping = frame(0x89, &[0; 126]);
        let mut bad_text = frame(0x81, &[0xC3, 0x28]);
        bad_text.truncate(4);
        let cases: Vec<(&str, Vec<u8>, FrameError)> = vec![
            ("rsv", vec![0xC2, 0x00], FrameError::ReservedBits(0x40)),
            ("opcode", vec![0x83, 0x00], FrameError::ReservedOpcode(3)),
            (
                "masked",
                vec![0x82, 0x81, 1, 2, 3, 4, 5],
                FrameError::MaskedFrame,
            ),
            ("long ping", long_ping, FrameError::ControlTooLong(126)),
            (
                "fragmented ping",
                vec![0x09, 0x00],
                FrameError::FragmentedControl(Opcode::Ping),
            ),
            (
                "stray continuation",
                frame(0x80, b"x"),
                FrameError::UnexpectedContinuation,
            ),
            (
                "interleaved message",
                [frame(0x01, b"a"), frame(0x82, b"b")].concat(),
                FrameError::ExpectedContinuation(Opcode::Binary),
            ),
            (
                "close code",
                frame(0x88, &1006u16.to_be_bytes()),
                FrameError::InvalidCloseCode(1006),
            ),
            (
                "close payload",
                frame(0x88, &[3]),
                FrameError::ClosePayloadTruncated,
            ),
            ("text", bad_text, FrameError::InvalidUtf8),
        ];
        for (name, wire, want) in cases {
            within(async {
                let (mut client, mut raw) = raw_pair();
                raw.write_all(&wire).await.unwrap();
                match client.recv().await {
                    Err(StreamError::Protocol(e)) => assert_eq!(e, want, "{name}"),
                    other => panic!("{name}: {other:?}"),
                }
                expect_close(&mut raw, want.close_code()).await;
                // The stream is finished: end of stream, and no more writes.
                assert_eq!(client.recv().await.unwrap(), None, "{name}");
                assert!(client.write_all(b"x").await.is_err(), "{name}");
            })
            .await;
        }
    }

    #[tokio::test]
    async fn oversized_messages_fail_before_their_payload_is_read() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            client.set_max_message_size(10);
            // Two fragments of 6: the second pushes the message over the limit. Only its
            // header is sent, so the check cannot have waited for the payload.
            raw.write_all(&frame(0x02, b"123456")).await.unwrap();
            raw.write_all(&[0x80, 6]).await.unwrap();
            let err = client.recv().await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StreamError::Protocol(FrameError::MessageTooBig { limit: 10 })
                ),
                "{err:?}"
            );
            expect_close(&mut raw, 1009).await;
            // Byte mode applies the same limit.
            let (mut client, mut raw) = raw_pair();
            client.set_max_message_size(10);
            raw.write_all(&[0x82, 126, 0xFF, 0xFF]).await.unwrap();
            let err = client.read(&mut [0u8; 8]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            expect_close(&mut raw, 1009).await;
        })
        .await;
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_heap_buffer() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            // Many small frames at once make the read side busy: it takes the big buffer.
            let mut wire = Vec::new();
            for i in 0..5_000u32 {
                wire.extend(frame(0x82, &i.to_be_bytes()));
            }
            let feeder = tokio::spawn(async move {
                raw.write_all(&wire).await.unwrap();
                raw
            });
            let mut got = vec![0u8; 5_000 * 4];
            client.read_exact(&mut got).await.unwrap();
            let mut raw = feeder.await.unwrap();
            client.write_all(&[7; 100_000]).await.unwrap();
            client.flush().await.unwrap();
            // Nothing waiting: a read parks, and the stream gives its buffers back.
            assert!(poll_read_once(&mut client).is_pending());
            assert!(matches!(client.rd.store, Store::Inline(_)));
            assert_eq!(client.wr.buf.capacity(), 0);
            assert_eq!(client.rd.assembly.capacity(), 0);
            // Also in message mode, between messages.
            raw.write_all(&frame(0x82, &[1; 70_000])).await.unwrap();
            assert!(matches!(client.recv().await, Ok(Some(Message::Binary(_)))));
            assert!(poll_read_once(&mut client).is_pending());
            assert!(matches!(client.rd.store, Store::Inline(_)));
            assert_eq!(client.rd.assembly.capacity(), 0);
            let (_, _, payload) = read_client_frame(&mut raw).await;
            assert_eq!(payload.len(), 64 * 1024);
        })
        .await;
    }

    #[tokio::test]
    async fn bytes_read_past_the_upgrade_come_first() {
        within(async {
            let (a, mut raw) = duplex(1024);
            let pre = [frame(0x81, b"greeting"), frame(0x82, b"!")].concat();
            let mut client = WsStream::new(a, &pre[..pre.len() - 1]);
            raw.write_all(&pre[pre.len() - 1..]).await.unwrap();
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Text("greeting".into()))
            );
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Binary(Bytes::from_static(b"!")))
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_text_message_fails_at_its_first_bad_byte_not_at_its_end() {
        within(async {
            // Valid so far: a character cut between fragments, then between reads.
            let (mut client, mut raw) = raw_pair();
            let e_acute = "\u{e9}".as_bytes();
            raw.write_all(&frame(0x01, &[b"a", &e_acute[..1]].concat()))
                .await
                .unwrap();
            raw.write_all(&frame(0x80, &e_acute[1..])).await.unwrap();
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Text("a\u{e9}".into()))
            );
            // A first fragment that no continuation can make UTF-8: refused before the rest
            // (which never comes) arrives.
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&frame(0x01, b"ok\xce\xba\xff"))
                .await
                .unwrap();
            match client.recv().await {
                Err(StreamError::Protocol(e)) => assert_eq!(e, FrameError::InvalidUtf8),
                other => panic!("expected an InvalidUtf8 error, got {other:?}"),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn recv_after_a_partial_read_returns_the_rest_as_binary() {
        within(async {
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&frame(0x81, b"abcdef")).await.unwrap();
            let mut two = [0u8; 2];
            client.read_exact(&mut two).await.unwrap();
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Binary(Bytes::from_static(b"cdef")))
            );
        })
        .await;
    }

    #[tokio::test]
    async fn messages_round_trip_with_tungstenite() {
        within(async {
            let (mut client, mut server) = tungstenite_pair().await;
            client.send(Message::Text("héllo".into())).await.unwrap();
            client
                .send(Message::Binary(Bytes::from_static(&[0, 1, 2])))
                .await
                .unwrap();
            server.send(WsMessage::Ping(Bytes::new())).await.unwrap();
            server
                .send(WsMessage::Binary(Bytes::from_static(b"back")))
                .await
                .unwrap();
            assert_eq!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Text("héllo".into())
            );
            assert_eq!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Binary(Bytes::from_static(&[0, 1, 2]))
            );
            assert_eq!(
                client.recv().await.unwrap(),
                Some(Message::Binary(Bytes::from_static(b"back")))
            );
            client.close(4000, "done").await.unwrap();
            assert!(matches!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Pong(_)
            ));
            match server.next().await.unwrap().unwrap() {
                WsMessage::Close(Some(f)) => {
                    assert_eq!(u16::from(f.code), 4000);
                    assert_eq!(f.reason.as_str(), "done");
                }
                other => panic!("{other:?}"),
            }
            // tungstenite echoes the Close, which ends our read side.
            let _ = server.flush().await;
            assert_eq!(client.recv().await.unwrap(), None);
            assert_eq!(client.peer_close().map(|c| c.code), Some(4000));
        })
        .await;
    }

    #[tokio::test]
    async fn bulk_bytes_echo_through_tungstenite() {
        within(async {
            let (client, mut server) = tungstenite_pair().await;
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
            let (mut cr, mut cw) = tokio::io::split(client);
            let send = data.clone();
            // Reader and writer in separate tasks: each must be woken for its own side.
            let writer = tokio::spawn(async move {
                cw.write_all(&send).await.unwrap();
                cw.shutdown().await.unwrap();
            });
            let echo = tokio::spawn(async move {
                while let Some(Ok(m)) = server.next().await {
                    match m {
                        WsMessage::Binary(b) => server.send(WsMessage::Binary(b)).await.unwrap(),
                        WsMessage::Close(_) => break,
                        _ => {}
                    }
                }
                // tungstenite answered our Close: flush it out.
                let _ = server.flush().await;
            });
            let mut got = Vec::new();
            cr.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            echo.await.unwrap();
            assert_eq!(got.len(), data.len());
            assert!(got == data);
        })
        .await;
    }

    #[tokio::test]
    async fn reset_without_close_is_an_error() {
        within(async {
            let (mut client, raw) = raw_pair();
            drop(raw);
            let err = client.read(&mut [0u8; 8]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            // Cut mid-frame: the same.
            let (mut client, mut raw) = raw_pair();
            raw.write_all(&[0x82, 10, 1, 2]).await.unwrap();
            drop(raw);
            let err = client.read_to_end(&mut Vec::new()).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        })
        .await;
    }

    /// Our server role against tungstenite's client role.
    async fn tungstenite_client_pair() -> (WsStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = duplex(256 * 1024);
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (WsStream::server(a, &[]), client)
    }

    #[tokio::test]
    async fn server_role_echoes_bytes_and_messages_with_tungstenite_as_client() {
        within(async {
            let (server, mut client) = tungstenite_client_pair().await;
            // The server echoes bytes back until the client's Close, then closes too.
            let echo = tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(server);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
            // Sizes that cover a masked payload read in pieces at every key offset.
            for len in [0usize, 1, 3, 5, 125, 126, 65_535, 65_536, 300_001] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                client.send(WsMessage::binary(data.clone())).await.unwrap();
                if len == 0 {
                    continue;
                }
                let mut got = Vec::new();
                while got.len() < len {
                    match client.next().await.unwrap().unwrap() {
                        WsMessage::Binary(b) => got.extend_from_slice(&b),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert!(got == data, "{len} bytes came back changed");
            }
            client
                .send(WsMessage::Ping(b"p1".to_vec().into()))
                .await
                .unwrap();
            client.send(WsMessage::text("héllo")).await.unwrap();
            let mut pong = false;
            loop {
                match client.next().await.unwrap().unwrap() {
                    WsMessage::Pong(p) => pong = p.as_ref() == b"p1",
                    WsMessage::Binary(b) => {
                        assert_eq!(b.as_ref(), "héllo".as_bytes());
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(pong, "the ping was answered");
            client.close(None).await.unwrap();
            while let Some(Ok(_)) = client.next().await {}
            echo.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn server_role_rejects_unmasked_frames_with_1002() {
        within(async {
            let (a, mut raw) = duplex(64 * 1024);
            let mut server = WsStream::server(a, &[]);
            raw.write_all(&[0x82, 2, 1, 2]).await.unwrap();
            let err = server.recv().await.unwrap_err();
            assert!(matches!(
                err,
                StreamError::Protocol(FrameError::UnmaskedFrame)
            ));
            let mut close = [0u8; 4];
            raw.read_exact(&mut close).await.unwrap();
            assert_eq!(close[0], 0x88, "an unmasked Close");
            assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
        })
        .await;
    }
}
