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
/// stream, and `shutdown` sends Close (1000) while reading goes on (half-close, as the .NET
/// SDK's `HybridConnectionStream` does). Message mode ([`Self::send`], [`Self::recv`]) keeps
/// message boundaries and text/binary kinds. Both can be mixed on one stream.
#[derive(Debug)]
pub struct HybridStream {
    inner: WsStream<Transport>,
    protocol: Option<String>,
}

impl HybridStream {
    pub(crate) fn new(upgraded: Upgraded) -> Self {
        Self {
            inner: WsStream::new(upgraded.ws),
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
    /// [`StreamError::Closed`] after either side's Close; transport failures.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled send may or may not have queued the message.
    pub async fn send(&mut self, message: Message) -> Result<(), StreamError> {
        self.inner.send(message).await
    }

    /// Receives the next whole message, `Ok(None)` once the peer closed.
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
