//! The net.tcp client channel: a duplex .NET Message Framing session over any byte stream (a
//! TCP connection, a relayed [`ferry_sdk::HybridStream`] from `ferry_sdk::connect`), as a
//! [`Transport`] for generated clients.
//!
//! ```text
//!  open: preamble (Version, Mode duplex, Via, encoding, PreambleEnd) ─► wait for PreambleAck
//!  call: envelope (Action, MessageID, ReplyTo anonymous, To) ─► reply envelope (RelatesTo)
//!  send: envelope (Action, To), nothing back
//!  close: End ─► the service's End (or its close: Mono never sends End) ─► shutdown
//! ```
//!
//! Calls are one at a time (a session is one ordered stream, as in WCF's channel); concurrent
//! calls on one channel wait for each other. A reply is matched by `RelatesTo` when the
//! service sends it and by order when it does not (Mono's faults carry none). A call that
//! fails at the transport level, or is cancelled half way, leaves the channel closed, as WCF
//! faults its channel: open a new one.

use std::time::Duration;

use ferry_nbfx::Element;
use ferry_nmf::{ClientConfig, Encoding, Event, FaultCode, KnownEncoding, Mode, Session};
use ferry_soap::{
    AddressingVersion, Body, EndpointReference, Envelope, RelayAccessToken, SoapVersion,
    version::WSA10_ANONYMOUS,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout, timeout_at};

use crate::client::Transport;
use crate::codec::Codec;

/// Default for [`ChannelConfig::set_timeout`]: 1 minute, WCF's `SendTimeout` (which bounds a
/// whole request/reply call) and `OpenTimeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`ChannelConfig::set_max_message_size`]: 64 KiB, WCF's
/// `MaxReceivedMessageSize`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Read buffer per channel.
const READ_CHUNK: usize = 64 * 1024;

/// Settings of a [`NetTcpChannel`].
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    encoding: KnownEncoding,
    timeout: Duration,
    max_message_bytes: usize,
    xml: ferry_nbfx::Limits,
    to: Option<String>,
    relay_token: Option<String>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            encoding: KnownEncoding::BinarySession,
            timeout: DEFAULT_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            xml: ferry_nbfx::Limits::default(),
            to: None,
            relay_token: None,
        }
    }
}

impl ChannelConfig {
    /// Sets the message encoding announced in the preamble (default `BinarySession`, 0x08,
    /// NetTcpBinding's); `Binary` (0x07), `Soap12Utf8` (0x03) and `Soap11Utf8` (0x00) work too.
    pub fn set_encoding(&mut self, encoding: KnownEncoding) -> &mut Self {
        self.encoding = encoding;
        self
    }

    /// Sets how long opening the session, one call, or closing may take (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest reply accepted and raises the byte-counting reader quotas with it
    /// (default [`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub fn set_max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_message_bytes = bytes;
        self.xml.max_document_bytes = bytes;
        self.xml.max_string_bytes = bytes.max(self.xml.max_string_bytes);
        self.xml.max_array_length = bytes.max(self.xml.max_array_length);
        self
    }

    /// Sets the `To` header of requests (default: the Via).
    pub fn set_to(&mut self, to: impl Into<String>) -> &mut Self {
        self.to = Some(to.into());
        self
    }

    /// Sends `token` (a SAS token) in a `RelayAccessToken` header on every message, for a
    /// gateway's net.tcp front end on a path that requires senders to authenticate.
    pub fn set_relay_token(&mut self, token: impl Into<String>) -> &mut Self {
        self.relay_token = Some(token.into());
        self
    }

    fn soap_version(&self) -> SoapVersion {
        match self.encoding {
            KnownEncoding::Soap11Utf8 => SoapVersion::Soap11,
            _ => SoapVersion::Soap12,
        }
    }
}

/// What a [`NetTcpChannel`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetTcpError {
    /// The stream failed.
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    /// Opening, a call or closing took longer than the channel's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The framing session failed (malformed or unexpected records, a message over the
    /// size limit).
    #[error("framing failed")]
    Framing(#[from] ferry_nmf::SessionError),
    /// The service answered with a framing Fault record; the session is over.
    #[error("service sent framing fault {0}")]
    Fault(FaultCode),
    /// The service closed the session (End or end of stream) while a reply was expected.
    #[error("service closed the session")]
    Closed,
    /// The channel is closed: by [`NetTcpChannel::close`], or by an earlier failed or
    /// cancelled call.
    #[error("channel is closed")]
    ChannelClosed,
    /// The encoding is not one the channel speaks.
    #[error("unsupported encoding {0:?}")]
    Encoding(KnownEncoding),
    /// A reply could not be decoded.
    #[error("undecodable reply")]
    Decode(#[source] ferry_soap::DecodeError),
    /// A request could not be encoded.
    #[error("request cannot be encoded")]
    Encode(#[source] ferry_soap::EncodeError),
    /// A reply's `RelatesTo` names another request.
    #[error("reply relates to {found:?}, expected {expected:?}")]
    Mismatch {
        /// The request's MessageID.
        expected: String,
        /// The reply's RelatesTo.
        found: String,
    },
}

/// A net.tcp duplex session to a service, usable by many calls in turn.
#[derive(Debug)]
pub struct NetTcpChannel<IO> {
    /// `None` once closed or broken.
    conn: Mutex<Option<Conn<IO>>>,
    via: String,
    config: ChannelConfig,
}

impl NetTcpChannel<TcpStream> {
    /// Connects to `addr` over TCP and opens a session with this Via
    /// (`net.tcp://host:port/path`).
    ///
    /// # Errors
    ///
    /// [`NetTcpError`]: connection refused, the service's Fault record, timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is kept.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        via: impl Into<String>,
        config: ChannelConfig,
    ) -> Result<Self, NetTcpError> {
        let limit = config.timeout;
        let stream = timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| NetTcpError::Timeout(limit))??;
        stream.set_nodelay(true)?;
        Self::open(stream, via, config).await
    }
}

impl<IO> NetTcpChannel<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Opens a session over `io`: sends the preamble with this Via and waits for the
    /// PreambleAck.
    ///
    /// # Errors
    ///
    /// [`NetTcpError`]: the service's Fault record (e.g. `EndpointNotFound` from a gateway),
    /// an unsupported encoding, timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the stream is dropped.
    pub async fn open(
        io: IO,
        via: impl Into<String>,
        config: ChannelConfig,
    ) -> Result<Self, NetTcpError> {
        let via = via.into();
        let codec = Codec::for_encoding(&Encoding::Known(config.encoding), config.xml)
            .ok_or(NetTcpError::Encoding(config.encoding))?;
        let client = ClientConfig {
            mode: Mode::Duplex,
            via: via.clone(),
            encoding: Encoding::Known(config.encoding),
            upgrade: None,
        };
        let limits = ferry_nmf::Limits {
            max_envelope_bytes: config.max_message_bytes,
            ..ferry_nmf::Limits::default()
        };
        let mut conn = Conn {
            io,
            session: Session::client(client, limits)?,
            codec,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
        };
        let deadline = Instant::now() + config.timeout;
        conn.flush(deadline, config.timeout).await?;
        loop {
            match conn.next_event(deadline, config.timeout).await? {
                Event::PreambleAcked => break,
                Event::Fault(code) => return Err(NetTcpError::Fault(code)),
                Event::End => return Err(NetTcpError::Closed),
                _ => {}
            }
        }
        Ok(Self {
            conn: Mutex::new(Some(conn)),
            via,
            config,
        })
    }

    /// The Via the session was opened with.
    pub fn via(&self) -> &str {
        &self.via
    }

    /// Ends the session: sends End, waits for the service's End (or its closing the stream:
    /// Mono's services never send End) and closes the stream.
    ///
    /// # Errors
    ///
    /// [`NetTcpError`] when the handshake failed; the stream is closed anyway.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the channel is closed either way.
    pub async fn close(&self) -> Result<(), NetTcpError> {
        let Some(mut conn) = self.conn.lock().await.take() else {
            return Ok(());
        };
        let limit = self.config.timeout;
        let deadline = Instant::now() + limit;
        conn.session.close()?;
        conn.flush(deadline, limit).await?;
        loop {
            match conn.next_event(deadline, limit).await {
                Ok(Event::End) | Err(NetTcpError::Closed) => break,
                Ok(Event::Fault(code)) => return Err(NetTcpError::Fault(code)),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        let _ = timeout_at(deadline, conn.io.shutdown()).await;
        Ok(())
    }

    /// A request envelope with the channel's headers.
    fn envelope(&self, action: &str, body: Element, message_id: Option<&str>) -> Envelope {
        let mut env = Envelope::new(self.config.soap_version(), AddressingVersion::Wsa10);
        env.headers.action = Some(action.to_owned());
        if let Some(id) = message_id {
            env.headers.message_id = Some(id.to_owned());
            env.headers.reply_to = Some(EndpointReference::new(WSA10_ANONYMOUS));
        }
        env.headers.to = Some(self.config.to.clone().unwrap_or_else(|| self.via.clone()));
        if let Some(token) = &self.config.relay_token {
            env.headers.relay_token = Some(RelayAccessToken::new(
                format!("uuid:{}", uuid()),
                token.clone(),
            ));
        }
        env.body = Body::Payload(vec![body]);
        env
    }
}

impl<IO> Transport for NetTcpChannel<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    type Error = NetTcpError;

    async fn call(&self, action: &str, body: Element) -> Result<Envelope, NetTcpError> {
        let id = format!("urn:uuid:{}", uuid());
        let request = self.envelope(action, body, Some(&id));
        let limit = self.config.timeout;
        let deadline = Instant::now() + limit;
        let mut guard = self.conn.lock().await;
        // Taken out for the call and put back only on success: if the call fails or its
        // future is dropped half way, the connection (whose stream and session dictionaries
        // may be out of step) is dropped with it and the channel stays closed.
        let mut conn = guard.take().ok_or(NetTcpError::ChannelClosed)?;
        conn.send(&request, deadline, limit).await?;
        let reply = loop {
            match conn.next_event(deadline, limit).await? {
                Event::Envelope(payload) => {
                    break conn.codec.decode(&payload).map_err(NetTcpError::Decode)?;
                }
                Event::Fault(code) => return Err(NetTcpError::Fault(code)),
                Event::End => return Err(NetTcpError::Closed),
                _ => {}
            }
        };
        if let Some(found) = &reply.headers.relates_to
            && *found != id
        {
            return Err(NetTcpError::Mismatch {
                expected: id,
                found: found.clone(),
            });
        }
        *guard = Some(conn);
        Ok(reply)
    }

    async fn send(&self, action: &str, body: Element) -> Result<(), NetTcpError> {
        let request = self.envelope(action, body, None);
        let limit = self.config.timeout;
        let mut guard = self.conn.lock().await;
        // As in `call`: back only on success.
        let mut conn = guard.take().ok_or(NetTcpError::ChannelClosed)?;
        conn.send(&request, Instant::now() + limit, limit).await?;
        *guard = Some(conn);
        Ok(())
    }
}

/// The open session.
#[derive(Debug)]
struct Conn<IO> {
    io: IO,
    session: Session,
    codec: Codec,
    buf: Box<[u8]>,
    out: Vec<u8>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Conn<IO> {
    /// Encodes and sends one envelope.
    async fn send(
        &mut self,
        envelope: &Envelope,
        deadline: Instant,
        limit: Duration,
    ) -> Result<(), NetTcpError> {
        let bytes = self.codec.encode(envelope).map_err(NetTcpError::Encode)?;
        self.session.send_envelope(&bytes)?;
        self.flush(deadline, limit).await
    }

    /// Writes what the session queued.
    async fn flush(&mut self, deadline: Instant, limit: Duration) -> Result<(), NetTcpError> {
        self.out.clear();
        if !self.session.poll_transmit(&mut self.out) {
            return Ok(());
        }
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        timeout_at(deadline, write)
            .await
            .map_err(|_| NetTcpError::Timeout(limit))??;
        Ok(())
    }

    /// The next event, reading as needed; [`NetTcpError::Closed`] at end of stream.
    async fn next_event(
        &mut self,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Event, NetTcpError> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            let n = timeout_at(deadline, self.io.read(&mut self.buf))
                .await
                .map_err(|_| NetTcpError::Timeout(limit))??;
            if n == 0 {
                return Err(NetTcpError::Closed);
            }
            self.session.handle_input(&self.buf[..n])?;
        }
    }
}

/// A random (version 4) UUID in its text form.
pub(crate) fn uuid() -> String {
    ferry_nbfx::Guid::v4(rand::random()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert!(ferry_nbfx::Guid::parse(&u).is_some());
    }
}
