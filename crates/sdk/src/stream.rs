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
#[derive(Debug)]
pub struct HybridStream {
    inner: WsStream<Transport>,
    protocol: Option<String>,
}

impl HybridStream {
    /// Wraps an upgraded transport, limiting messages from the peer to `max_message_size`.
    pub(crate) fn new(upgraded: Upgraded, max_message_size: usize) -> Self {
        let mut inner = WsStream::new(upgraded.io, &upgraded.rest);
        inner.set_max_message_size(max_message_size);
        Self {
            inner,
            protocol: upgraded.protocol,
        }
    }

    /// The WebSocket sub-protocol the two ends agreed on, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The peer's Close frame, once reading has reached it.
    pub fn peer_close(&self) -> Option<&CloseInfo> {
        self.inner.peer_close()
    }

    /// Sets the largest binary message one write sends (default 64 KiB).
    pub fn set_max_write_message(&mut self, max: usize) -> &mut Self {
        self.inner.set_max_write_message(max);
        self
    }

    /// Sends one whole message.
    ///
    /// # Errors
    /// [`StreamError::Closed`] after our Close; transport failures.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled send may or may not have queued the message.
    pub async fn send(&mut self, message: Message) -> Result<(), StreamError> {
        self.inner.send(message).await
    }

    /// Receives the next whole message, `Ok(None)` once the peer closed (its Close is
    /// answered then: to keep writing after the peer's Close, read it in byte mode).
    ///
    /// # Errors
    /// The peer broke the WebSocket protocol or the transport failed.
    ///
    /// # Cancel safety
    /// Cancel safe: no message is lost when the future is dropped.
    pub async fn recv(&mut self) -> Result<Option<Message>, StreamError> {
        self.inner.recv().await
    }

    /// Sends Close with `code` and `reason`; reading goes on until the peer's Close.
    ///
    /// # Errors
    /// Transport failures.
    ///
    /// # Cancel safety
    /// Calling it again after a cancellation finishes the job.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), StreamError> {
        self.inner.close(code, reason).await
    }
}

impl AsyncRead for HybridStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HybridStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
