//! The WebSocket ⇄ byte-stream adapter: a WebSocket seen as `AsyncRead + AsyncWrite`, or as a
//! sequence of whole messages.
//!
//! Byte mode follows what the .NET SDK's `HybridConnectionStream` does on the wire: every write
//! becomes one binary message (at most [`WsStream::max_write_message`] bytes, so memory stays
//! bounded), reads return the payloads of binary *and* text messages back to back, a Close frame
//! from the peer reads as end of stream, and `poll_shutdown` sends a Close frame (1000) while
//! the read side keeps going until the peer's Close arrives (half-close, spec §5.4).
//!
//! Message mode ([`WsStream::send`], [`WsStream::recv`]) keeps message boundaries and the
//! text/binary distinction, with our own [`Message`] type; no tungstenite type is exposed apart
//! from the constructor's argument.
//!
//! Pings from the peer are answered by the WebSocket layer while the stream is read; a stream
//! nobody reads does not answer pings.
//!
//! One limit of the WebSocket layer underneath: once the *peer* sends its Close, a Close is
//! sent back right away, so after reading end of stream our own writes fail with
//! [`std::io::ErrorKind::BrokenPipe`]. Half-close therefore works in the direction "we shut
//! down first, then keep reading".

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

/// Default for [`WsStream::max_write_message`]: 64 KiB, the .NET SDK's buffer size and large
/// enough that per-message overhead does not matter for bulk copies.
pub const DEFAULT_MAX_WRITE_MESSAGE: usize = 64 * 1024;

/// Close code 1000, "normal closure" (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;

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
    /// We already sent our Close frame, or the peer's Close ended the connection.
    #[error("websocket is closed")]
    Closed,
    /// The peer broke the WebSocket protocol (bad frame, oversized message, reset without a
    /// closing handshake, ...).
    #[error("websocket protocol error: {0}")]
    Protocol(String),
    /// The transport failed.
    #[error("websocket transport failed")]
    Io(#[from] io::Error),
}

impl From<tungstenite::Error> for StreamError {
    fn from(e: tungstenite::Error) -> Self {
        use tungstenite::Error as E;
        match e {
            E::ConnectionClosed | E::AlreadyClosed => Self::Closed,
            E::Protocol(tungstenite::error::ProtocolError::SendAfterClosing) => Self::Closed,
            E::Io(io) => Self::Io(io),
            // The transport ended with no Close frame: what a socket reports as a reset.
            E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                Self::Io(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection ended without a websocket close",
                ))
            }
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Closed => Self::new(io::ErrorKind::BrokenPipe, e),
            StreamError::Io(io) => io,
            StreamError::Protocol(_) => Self::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// A WebSocket as a byte stream (`AsyncRead + AsyncWrite`) and as a message stream.
///
/// `S` is the transport under the WebSocket (TCP, TLS, an in-memory duplex).
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the current message (byte mode).
    read_buf: Bytes,
    /// The peer's Close arrived or the connection ended: reads return end of stream.
    read_done: bool,
    /// Our Close frame is queued: writes fail.
    write_closed: bool,
    /// The peer's Close frame, once it arrived.
    peer_close: Option<CloseInfo>,
    max_write_message: usize,
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps an established WebSocket (after its handshake).
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            read_buf: Bytes::new(),
            read_done: false,
            write_closed: false,
            peer_close: None,
            max_write_message: DEFAULT_MAX_WRITE_MESSAGE,
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

    /// The peer's Close frame, once reading has reached it.
    pub fn peer_close(&self) -> Option<&CloseInfo> {
        self.peer_close.as_ref()
    }

    /// The transport under the WebSocket.
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }

    /// Sends one whole message and flushes it.
    ///
    /// # Errors
    /// [`StreamError::Closed`] after our or the peer's Close; transport failures.
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, the message may or may not have been queued, and a
    /// partly written frame is finished by the next send, flush or shutdown.
    pub async fn send(&mut self, message: Message) -> Result<(), StreamError> {
        if self.write_closed {
            return Err(StreamError::Closed);
        }
        let message = match message {
            Message::Binary(b) => WsMessage::Binary(b),
            Message::Text(t) => WsMessage::Text(t.into()),
        };
        self.ws.send(message).await?;
        Ok(())
    }

    /// Receives the next whole message; `Ok(None)` once the peer closed (see
    /// [`Self::peer_close`]). Bytes left over from a partial byte-mode read come first, as
    /// one binary message.
    ///
    /// # Errors
    /// The peer broke the protocol or the transport failed.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is either returned or stays queued for the next call.
    pub async fn recv(&mut self) -> Result<Option<Message>, StreamError> {
        if !self.read_buf.is_empty() {
            return Ok(Some(Message::Binary(std::mem::take(&mut self.read_buf))));
        }
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Sends a Close frame with `code` and `reason` (the write side ends; reading goes on
    /// until the peer's Close) and flushes it. Calling it again does nothing more.
    ///
    /// # Errors
    /// Transport failures.
    ///
    /// # Cancel safety
    /// Cancel safe in that calling it again finishes the job.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), StreamError> {
        std::future::poll_fn(|cx| self.poll_close_with(cx, code, reason)).await
    }

    /// Polls for the next data message, answering control frames on the way.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Message>, StreamError>> {
        loop {
            if self.read_done {
                return Poll::Ready(Ok(None));
            }
            let next = ready!(self.ws.poll_next_unpin(cx));
            match next {
                Some(Ok(WsMessage::Binary(b))) => return Poll::Ready(Ok(Some(Message::Binary(b)))),
                Some(Ok(WsMessage::Text(t))) => {
                    return Poll::Ready(Ok(Some(Message::Text(t.as_str().to_owned()))));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    self.read_done = true;
                    self.peer_close = Some(match frame {
                        Some(f) => CloseInfo {
                            code: f.code.into(),
                            reason: f.reason.as_str().to_owned(),
                        },
                        None => CloseInfo {
                            code: CloseCode::Status.into(),
                            reason: String::new(),
                        },
                    });
                    // The layer below queued its Close reply; push it out now if the
                    // transport takes it, otherwise shutdown or drop finishes it.
                    let _ = Pin::new(&mut self.ws).poll_flush(cx);
                }
                // Pings are answered by the layer below on the next read; pongs and raw
                // frames carry nothing for us.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Err(e)) => {
                    self.read_done = true;
                    return match StreamError::from(e) {
                        StreamError::Closed => Poll::Ready(Ok(None)),
                        other => Poll::Ready(Err(other)),
                    };
                }
                None => {
                    self.read_done = true;
                }
            }
        }
    }

    fn poll_close_with(
        &mut self,
        cx: &mut Context<'_>,
        code: u16,
        reason: &str,
    ) -> Poll<Result<(), StreamError>> {
        if !self.write_closed {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(StreamError::from)?;
            self.write_closed = true;
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            match Pin::new(&mut self.ws).start_send(WsMessage::Close(Some(frame))) {
                // Already closed by the peer: nothing to send.
                Ok(()) | Err(tungstenite::Error::ConnectionClosed) => {}
                Err(tungstenite::Error::AlreadyClosed) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        match ready!(Pin::new(&mut self.ws).poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => match StreamError::from(e) {
                StreamError::Closed => Poll::Ready(Ok(())),
                other => Poll::Ready(Err(other)),
            },
        }
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
        // Loop because a message may be empty: an empty read would look like end of stream.
        while this.read_buf.is_empty() {
            match ready!(this.poll_message(cx)) {
                Ok(Some(Message::Binary(b))) => this.read_buf = b,
                Ok(Some(Message::Text(t))) => this.read_buf = Bytes::from(t),
                Ok(None) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = buf.remaining().min(this.read_buf.len());
        buf.put_slice(&this.read_buf[..n]);
        this.read_buf.advance(n);
        Poll::Ready(Ok(()))
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
        if this.write_closed {
            return Poll::Ready(Err(StreamError::Closed.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Flush what an earlier write left queued before taking more: at most one message
        // is ever buffered here, so a slow peer pushes back on the writer.
        ready!(Pin::new(&mut this.ws).poll_flush(cx))
            .map_err(|e| io::Error::from(StreamError::from(e)))?;
        ready!(Pin::new(&mut this.ws).poll_ready(cx))
            .map_err(|e| io::Error::from(StreamError::from(e)))?;
        let n = buf.len().min(this.max_write_message);
        Pin::new(&mut this.ws)
            .start_send(WsMessage::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(|e| io::Error::from(StreamError::from(e)))?;
        // Send it now if the transport takes it, like a socket write would; if it does not,
        // the next write or flush finishes it.
        if let Poll::Ready(Err(e)) = Pin::new(&mut this.ws).poll_flush(cx) {
            return Poll::Ready(Err(StreamError::from(e).into()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => match StreamError::from(e) {
                // Nothing left to flush on a closed connection.
                StreamError::Closed => Poll::Ready(Ok(())),
                other => Poll::Ready(Err(other.into())),
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The .NET SDK's ShutdownAsync: Close (1000) and keep reading (spec §5.4).
        self.get_mut()
            .poll_close_with(cx, CLOSE_NORMAL, "")
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    async fn pair() -> (WsStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (a, b) = duplex(256 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (WsStream::new(client), server)
    }

    async fn stream_pair() -> (WsStream<DuplexStream>, WsStream<DuplexStream>) {
        let (client, server) = pair().await;
        (client, WsStream::new(server))
    }

    #[tokio::test]
    async fn each_write_is_one_binary_message() {
        tokio::time::timeout(LIMIT, async {
            let (mut client, mut server) = pair().await;
            client.write_all(b"hello").await.unwrap();
            client.write_all(b"world").await.unwrap();
            client.flush().await.unwrap();
            assert_eq!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Binary(Bytes::from_static(b"hello"))
            );
            assert_eq!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Binary(Bytes::from_static(b"world"))
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn writes_are_cut_at_the_message_limit() {
        tokio::time::timeout(LIMIT, async {
            let (mut client, mut server) = pair().await;
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
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn reads_concatenate_binary_and_text_then_eof_on_close() {
        tokio::time::timeout(LIMIT, async {
            let (mut client, mut server) = pair().await;
            server
                .send(WsMessage::Binary(Bytes::from_static(b"ab")))
                .await
                .unwrap();
            server.send(WsMessage::Binary(Bytes::new())).await.unwrap();
            server.send(WsMessage::Text("cd".into())).await.unwrap();
            server
                .send(WsMessage::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
            server
                .send(WsMessage::Binary(Bytes::from_static(b"ef")))
                .await
                .unwrap();
            server
                .close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "bye".into(),
                }))
                .await
                .unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"abcdef");
            assert_eq!(
                client.peer_close(),
                Some(&CloseInfo {
                    code: 1001,
                    reason: "bye".into()
                })
            );
            // The ping was answered, and the Close echoed.
            assert_eq!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Pong(Bytes::from_static(b"p"))
            );
            assert!(matches!(
                server.next().await.unwrap().unwrap(),
                WsMessage::Close(_)
            ));
            // Our side cannot write any more.
            let err = client.write_all(b"x").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn small_reads_drain_a_large_message() {
        tokio::time::timeout(LIMIT, async {
            let (mut client, mut server) = pair().await;
            let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            server
                .send(WsMessage::Binary(Bytes::from(data.clone())))
                .await
                .unwrap();
            let mut got = vec![0u8; data.len()];
            let mut at = 0;
            while at < got.len() {
                let end = (at + 777).min(got.len());
                let n = client.read(&mut got[at..end]).await.unwrap();
                assert!(n > 0);
                at += n;
            }
            assert_eq!(got, data);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_close_1000_and_keeps_reading() {
        tokio::time::timeout(LIMIT, async {
            // The peer is raw bytes: tungstenite itself cannot send after a Close, but a
            // .NET peer (or the gateway relaying one) can.
            let (a, mut raw) = duplex(64 * 1024);
            let ws = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
            let mut client = WsStream::new(ws);
            client.shutdown().await.unwrap();
            // A masked Close frame with a 2-byte payload: 2 header bytes, 4 mask bytes, 2 bytes.
            let mut frame = [0u8; 8];
            raw.read_exact(&mut frame).await.unwrap();
            assert_eq!(frame[0], 0x88, "FIN + close opcode");
            assert_eq!(frame[1], 0x82, "masked, length 2");
            let code = u16::from_be_bytes([frame[6] ^ frame[2], frame[7] ^ frame[3]]);
            assert_eq!(code, CLOSE_NORMAL);
            // The peer goes on sending (half-close), then closes too.
            raw.write_all(&[0x82, 4, b'l', b'a', b't', b'e'])
                .await
                .unwrap();
            raw.write_all(&[0x88, 2, 0x03, 0xe8]).await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"late");
            assert_eq!(client.peer_close().map(|c| c.code), Some(CLOSE_NORMAL));
            assert!(client.write(b"x").await.is_err());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn message_mode_keeps_boundaries_and_kinds() {
        tokio::time::timeout(LIMIT, async {
            let (mut a, mut b) = stream_pair().await;
            a.send(Message::Text("héllo".into())).await.unwrap();
            a.send(Message::Binary(Bytes::from_static(&[0, 1, 2])))
                .await
                .unwrap();
            b.send(Message::Binary(Bytes::from_static(b"back")))
                .await
                .unwrap();
            assert_eq!(b.recv().await.unwrap(), Some(Message::Text("héllo".into())));
            assert_eq!(
                b.recv().await.unwrap(),
                Some(Message::Binary(Bytes::from_static(&[0, 1, 2])))
            );
            assert_eq!(
                a.recv().await.unwrap(),
                Some(Message::Binary(Bytes::from_static(b"back")))
            );
            a.close(4000, "done").await.unwrap();
            assert_eq!(b.recv().await.unwrap(), None);
            assert_eq!(
                b.peer_close(),
                Some(&CloseInfo {
                    code: 4000,
                    reason: "done".into()
                })
            );
            assert!(matches!(
                a.send(Message::Text("x".into())).await,
                Err(StreamError::Closed)
            ));
            // b's automatic Close reply ends a's read side.
            assert_eq!(a.recv().await.unwrap(), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn byte_streams_copy_both_ways() {
        tokio::time::timeout(LIMIT, async {
            let (a, b) = stream_pair().await;
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
            let (mut ar, mut aw) = tokio::io::split(a);
            let (mut br, mut bw) = tokio::io::split(b);
            let send = data.clone();
            let writer = tokio::spawn(async move {
                aw.write_all(&send).await.unwrap();
                aw.shutdown().await.unwrap();
                aw
            });
            // b echoes everything back, then half-closes after a's Close.
            let echo = tokio::spawn(async move {
                let n = tokio::io::copy(&mut br, &mut bw).await.unwrap();
                let _ = bw.shutdown().await;
                n
            });
            let mut got = Vec::new();
            ar.read_to_end(&mut got).await.unwrap_or_default();
            writer.await.unwrap();
            assert_eq!(echo.await.unwrap(), data.len() as u64);
            assert_eq!(got.len(), data.len());
            assert_eq!(got, data);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn reset_without_close_is_an_error() {
        tokio::time::timeout(LIMIT, async {
            let (mut client, server) = pair().await;
            drop(server);
            let mut buf = [0u8; 8];
            let err = client.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        })
        .await
        .unwrap();
    }
}
