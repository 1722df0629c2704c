//! WebSocket messages read as streams of chunks, and frames written, for an end that
//! consumes a message without holding it whole: the HTTP relay's request and response
//! bodies, on the gateway's side of a rendezvous (reading a client's masked frames) and on
//! the SDK's (reading the gateway's unmasked ones).

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::frame::{FrameError, FrameHeader, MAX_HEADER, Opcode, Role, encode_frame};
use crate::reader::{FillError, FrameReader, unmask};

/// Answers the pings a [`MessageReader`] meets between and inside messages.
pub trait Pong: Send {
    /// Sends a Pong carrying `payload` (at most 125 bytes).
    fn pong(&mut self, payload: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

/// Pings are read and let go unanswered: for a reader whose peer never pings (the gateway's
/// side of an HTTP rendezvous).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPong;

impl Pong for NoPong {
    async fn pong(&mut self, _payload: &[u8]) -> io::Result<()> {
        Ok(())
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
    /// The peer broke RFC 6455, or sent a message over the limit given to
    /// [`MessageReader::next_message`]; [`FrameError::close_code`] is the answer.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<FillError> for ReadError {
    fn from(e: FillError) -> Self {
        match e {
            FillError::Io(e) => Self::Io(e),
            FillError::Eof => Self::Closed(None),
        }
    }
}

/// Reads WebSocket messages as streams of chunks through one bounded buffer. Pings go to the
/// reader's [`Pong`], pongs are skipped, a Close ends the stream.
pub struct MessageReader<R, P = NoPong> {
    src: FrameReader<R>,
    /// Which end we are: it says whose frames must be masked.
    role: Role,
    pong: P,
    /// Payload bytes left in the current frame.
    remaining: u64,
    /// The current frame's mask key, on a client's frames.
    mask: Option<[u8; 4]>,
    offset: u64,
    /// The current frame is the message's last.
    fin: bool,
    /// A message has started and not ended.
    in_message: bool,
    /// Bytes of the current message so far, and its limit.
    total: u64,
    limit: u64,
}

impl<R, P> std::fmt::Debug for MessageReader<R, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("in_message", &self.in_message)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A server's reader of a client's (masked) messages over `src`, starting with bytes
    /// already read past the upgrade (`pre`), using a streaming buffer of `buffer` bytes while
    /// busy; pings are not answered.
    pub fn new(src: R, pre: &[u8], buffer: usize) -> Self {
        Self::with_role(Role::Server, src, pre, buffer, NoPong)
    }
}

impl<R: AsyncRead + Unpin, P: Pong> MessageReader<R, P> {
    /// A client's reader of a server's (unmasked) messages, as [`MessageReader::new`] is a
    /// server's; `pong` answers the server's pings.
    pub fn client(src: R, pre: &[u8], buffer: usize, pong: P) -> Self {
        Self::with_role(Role::Client, src, pre, buffer, pong)
    }

    fn with_role(role: Role, src: R, pre: &[u8], buffer: usize, pong: P) -> Self {
        Self {
            src: FrameReader::new(src, pre, buffer),
            role,
            pong,
            remaining: 0,
            mask: None,
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
            Opcode::Text => MessageKind::Text,
            Opcode::Binary => MessageKind::Binary,
            _ => return Err(FrameError::UnexpectedContinuation.into()),
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
                if header.opcode != Opcode::Continuation {
                    return Err(FrameError::ExpectedContinuation(header.opcode).into());
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
            if let Some(mask) = self.mask {
                unmask(chunk, mask, self.offset);
            }
            let out = bytes::Bytes::copy_from_slice(chunk);
            self.src.start += take;
            self.remaining -= take as u64;
            self.offset += take as u64;
            return Ok(Some(out));
        }
    }

    fn start_frame(&mut self, header: &FrameHeader) -> Result<(), ReadError> {
        self.total = self.total.saturating_add(header.len);
        if self.total > self.limit {
            let limit = self.limit;
            return Err(FrameError::MessageTooBig { limit }.into());
        }
        self.remaining = header.len;
        self.mask = header.mask;
        self.offset = 0;
        self.fin = header.fin;
        Ok(())
    }

    /// The next data frame header; pings are answered on the way, pongs skipped, and a
    /// Close ends the stream.
    async fn next_header(&mut self) -> Result<FrameHeader, ReadError> {
        loop {
            self.src.relax();
            let (header, size) = loop {
                if let Some(h) = FrameHeader::decode(self.src.bytes(), self.role)? {
                    break h;
                }
                let need = (self.src.available() + 1).min(MAX_HEADER);
                if !self.src.fill(need).await? {
                    return Err(ReadError::Closed(None));
                }
            };
            self.src.start += size;
            if !header.opcode.is_control() {
                return Ok(header);
            }
            let len = header.len as usize;
            if !self.src.fill(len).await? {
                return Err(ReadError::Closed(None));
            }
            let body = &mut self.src.bytes()[..len];
            if let Some(mask) = header.mask {
                unmask(body, mask, 0);
            }
            let code = (len >= 2).then(|| u16::from_be_bytes([body[0], body[1]]));
            let ping = (header.opcode == Opcode::Ping).then(|| body.to_vec());
            self.src.start += len;
            if header.opcode == Opcode::Close {
                return Err(ReadError::Closed(code));
            }
            if let Some(payload) = ping {
                self.pong.pong(&payload).await?;
            }
        }
    }
}

/// Writes one unmasked server frame: header and payload, without copying the payload.
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
        None => Opcode::Continuation,
        Some(MessageKind::Text) => Opcode::Text,
        Some(MessageKind::Binary) => Opcode::Binary,
    };
    let mut head = [0u8; MAX_HEADER];
    let n = FrameHeader {
        fin,
        opcode,
        mask: None,
        len: payload.len() as u64,
    }
    .write(&mut head);
    w.write_all(&head[..n]).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Encodes one frame of `role`'s (masked with a fresh random key for a client, RFC 6455
/// §5.3) into `out`, replacing what it held, so a writer can reuse one buffer.
pub fn encode(role: Role, fin: bool, opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mask = (role == Role::Client).then(rand::random::<[u8; 4]>);
    encode_frame(fin, opcode, mask, payload, out);
}
