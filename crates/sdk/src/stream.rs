//! [`HybridStream`]: one relayed connection, as bytes or as messages.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ferry_net::stream::WsStream;
pub use ferry_net::stream::{CloseInfo, Message, StreamError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::{Transport, Upgraded};

/// A relayed connection between a sender and a listener.
///
/// Byte mode (`AsyncRead + AsyncWrite`): each write is sent as one binary message, reads
/// return the payloads of all messages back to back, the peer's Close reads as end of
/// stream while writing goes on, and `shutdown` sends Close (1000) while reading goes on:
/// half-close works both ways, as with TCP and the .NET SDK's `HybridConnectionStream`.
/// Message mode ([`Self::send`], [`Self::recv`]) keeps message boundaries and text/binary
/// kinds; [`Self::recv`] answers the peer's Close when it reports it. Both can be mixed on
/// one stream. An idle stream holds no heap buffer.
///
/// A *raw* stream ([`Self::is_raw`]; asked for with [`crate::Endpoint::set_raw_streams`],
/// agreed only when the gateway and the peer are Ferry's too) carries the peer's bytes as
/// they are, without WebSocket frames: byte mode only, end of stream is the transport's own,
/// and the message-mode calls fail with [`StreamError::Raw`].
#[derive(Debug)]
pub struct HybridStream {
    inner: Inner,
    protocol: Option<String>,
}

// The WebSocket variant is the large one and the common one: boxing it would cost every
// Azure-protocol stream an allocation and an indirection on each read and write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    Ws(WsStream<Transport>),
    Raw {
        io: Transport,
        /// Bytes that came with the 101 response, read before the transport.
        early: Vec<u8>,
    },
}

impl HybridStream {
    /// Wraps an upgraded transport, limiting messages from the peer to `max_message_size`.
    pub(crate) fn new(upgraded: Upgraded, max_message_size: usize) -> Self {
        let inner = if upgraded.raw {
            Inner::Raw {
                io: upgraded.io,
                early: upgraded.rest,
            }
        } else {
            let mut ws = WsStream::new(upgraded.io, &upgraded.rest);
            ws.set_max_message_size(max_message_size);
            Inner::Ws(ws)
        };
        Self {
            inner,
            protocol: upgraded.protocol,
        }
    }

    /// Whether the two ends dropped WebSocket framing for this stream.
    pub fn is_raw(&self) -> bool {
        matches!(self.inner, Inner::Raw { .. })
    }

    /// A raw stream's transport and the bytes that came with its 101 (to be read first);
    /// a WebSocket stream back as it was.
    // Called once per bridged connection, which moves the stream anyway.
    #[allow(clippy::result_large_err)]
    pub(crate) fn into_raw(self) -> Result<(Transport, Vec<u8>), Self> {
        match self.inner {
            Inner::Raw { io, early } => Ok((io, early)),
            inner @ Inner::Ws(_) => Err(Self {
                inner,
                protocol: self.protocol,
            }),
        }
    }

    fn ws(&mut self) -> Result<&mut WsStream<Transport>, StreamError> {
        match &mut self.inner {
            Inner::Ws(ws) => Ok(ws),
            Inner::Raw { .. } => Err(StreamError::Raw),
        }
    }

    /// The WebSocket sub-protocol the two ends agreed on, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The peer's Close frame, once reading has reached it (never, on a raw stream).
    pub fn peer_close(&self) -> Option<&CloseInfo> {
        match &self.inner {
            Inner::Ws(ws) => ws.peer_close(),
            Inner::Raw { .. } => None,
        }
    }

    /// Sets the largest binary message one write sends (default 64 KiB; a raw stream has
    /// no messages).
    pub fn set_max_write_message(&mut self, max: usize) -> &mut Self {
        if let Inner::Ws(ws) = &mut self.inner {
            ws.set_max_write_message(max);
        }
        self
    }

    /// Sends one whole message.
    ///
    /// # Errors
    /// [`StreamError::Closed`] after our Close; [`StreamError::Raw`] on a raw stream;
    /// transport failures.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled send may or may not have queued the message.
    pub async fn send(&mut self, message: Message) -> Result<(), StreamError> {
        self.ws()?.send(message).await
    }

    /// Receives the next whole message, `Ok(None)` once the peer closed (its Close is
    /// answered then: to keep writing after the peer's Close, read it in byte mode).
    ///
    /// # Errors
    /// The peer broke the WebSocket protocol or the transport failed; [`StreamError::Raw`]
    /// on a raw stream.
    ///
    /// # Cancel safety
    /// Cancel safe: no message is lost when the future is dropped.
    pub async fn recv(&mut self) -> Result<Option<Message>, StreamError> {
        self.ws()?.recv().await
    }

    /// Sends Close with `code` and `reason`; reading goes on until the peer's Close. On a
    /// raw stream, which has no close codes, it ends the writing half as `shutdown` does.
    ///
    /// # Errors
    /// Transport failures.
    ///
    /// # Cancel safety
    /// Calling it again after a cancellation finishes the job.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), StreamError> {
        match &mut self.inner {
            Inner::Ws(ws) => ws.close(code, reason).await,
            Inner::Raw { io, .. } => Ok(tokio::io::AsyncWriteExt::shutdown(io).await?),
        }
    }
}

impl AsyncRead for HybridStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Ws(ws) => Pin::new(ws).poll_read(cx, buf),
            Inner::Raw { io, early } => {
                if early.is_empty() {
                    return Pin::new(io).poll_read(cx, buf);
                }
                let n = early.len().min(buf.remaining());
                buf.put_slice(&early[..n]);
                early.drain(..n);
                if early.is_empty() {
                    *early = Vec::new();
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for HybridStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Ws(ws) => Pin::new(ws).poll_write(cx, buf),
            Inner::Raw { io, .. } => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Ws(ws) => Pin::new(ws).poll_write_vectored(cx, bufs),
            Inner::Raw { io, .. } => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Ws(ws) => ws.is_write_vectored(),
            Inner::Raw { io, .. } => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Ws(ws) => Pin::new(ws).poll_flush(cx),
            Inner::Raw { io, .. } => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Ws(ws) => Pin::new(ws).poll_shutdown(cx),
            Inner::Raw { io, .. } => Pin::new(io).poll_shutdown(cx),
        }
    }
}
