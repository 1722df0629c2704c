//! The net.tcp service host: runs the server side of .NET Message Framing sessions over any
//! byte stream (a TCP connection, a relayed [`ferry_sdk::HybridStream`]) and answers each
//! request with a [`Service`].
//!
//! ```text
//!  stream ─► nmf::Session::server ─► PreambleReceived ─► mode + encoding ok? ─► PreambleAck
//!              │ (Fault record + close on a bad preamble)          │
//!              ▼                                                   ▼
//!           Envelope ─► Codec::decode ─► Service::dispatch ─► Reply ─► Codec::encode ─► stream
//!              │ (Fault record + close on an undecodable one)      (one-way: nothing)
//!              ▼
//!             End ─► our End ─► wait for the next preamble (connection reuse) or EOF
//! ```
//!
//! Modes: duplex (`0x02`, NetTcpBinding's buffered sessions) and singleton-unsized (`0x01`,
//! streamed transfer: one message each way per session). Encodings: binary with the session
//! dictionary (`0x08`, the default), binary (`0x07`) and UTF-8 text (`0x00`, `0x03`).
//!
//! The Via is not checked and the `To` header is not filtered: behind the gateway a listener
//! sees the sender's preamble as sent, whose Via names the gateway, not us.
//!
//! Requests of one session are handled in order, one at a time (WCF's default
//! `ConcurrencyMode.Single`); sessions run in tasks of their own, at most
//! [`HostConfig::set_max_sessions`] at once. Every read has a deadline (the preamble timeout,
//! then the receive timeout between messages), every write the send timeout, and every
//! dispatched operation the operation timeout ([`HostConfig::set_operation_timeout`]).
//!
//! Bad input never meets silence: a preamble we refuse or cannot read, an envelope we cannot
//! decode and a message over the size limit are answered with the framing Fault record that
//! names the problem (see [`HostError::fault`]), then the connection closes. Requests that
//! decode but cannot be served get SOAP faults as WCF sends them: `ActionNotSupported` for an
//! unknown action, `DeserializationFailed` for a body that is not the operation's request,
//! and the generic `InternalServiceFault` for an operation that panicked (WCF's answer to an
//! unhandled exception without `IncludeExceptionDetailInFaults`), which is also what an
//! operation still running at the operation timeout is answered with, its reason saying so
//! ([`operation_timeout_fault`]).
//!
//! With metadata published ([`HostConfig::set_metadata`]) a WS-Transfer `Get` is answered
//! with the service's WSDL and schemas ([`metadata_reply`]) on whatever address it comes to:
//! behind the gateway WCF clients ask `{path}/mex`, which reaches this listener. The
//! addresses in the answer follow the request's `To` (else the session's Via).
//!
//! The relay's own one-way messages inside a NetOneway / NetEvent sender's session (its
//! `Connect`, then `OnewayPing` keep-alives; see [`RELAY_SESSION_ACTIONS`]) reach the host
//! too: the gateway cannot take them out of the stream, since the binary session dictionary
//! ties every message to the ones before it. Unless the service's contract has them, they are
//! accepted and dropped without an answer: they are one-way and meant for the relay.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ferry_nmf::{Event, FaultCode, Mode, Preamble, Session};
use ferry_sdk::{Listener, ListenerError};
use ferry_soap::{AddressingVersion, Envelope};
use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use crate::codec::Codec;
use crate::fault::Fault;
use crate::metadata::{Metadata, TRANSFER_GET, TRANSFER_GET_RESPONSE};
use crate::service::{Reply, Service};

/// Default for [`HostConfig::set_max_message_size`]: 64 KiB, WCF's `MaxReceivedMessageSize`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default for [`HostConfig::set_preamble_timeout`]: 30 s, WCF's
/// `ChannelInitializationTimeout` (.NET 4.5 and later).
pub const DEFAULT_PREAMBLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`HostConfig::set_receive_timeout`]: 10 minutes, WCF's `ReceiveTimeout`.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default for [`HostConfig::set_send_timeout`]: 1 minute, WCF's `SendTimeout`.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`HostConfig::set_operation_timeout`]: 1 minute, like WCF's service-side
/// `OperationTimeout` (the binding's `SendTimeout`, which bounds a call on the service too).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`HostConfig::set_body_read_timeout`]: 1 minute, the HC HTTP relay's own
/// request deadline, so a body that has not arrived by then would find no one waiting.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`HostConfig::set_max_sessions`]: sessions (connections) served at once.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// How long [`Host::shutdown`] waits for sessions to end.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Actions of the relay's one-way session messages that a host drops unanswered unless its
/// contract has them: NetOneway / NetEvent senders open their session with `Connect` (the
/// `sb://` URI, with the token that the gateway already checked) and keep it alive with
/// `OnewayPing`.
pub const RELAY_SESSION_ACTIONS: [&str; 2] = [
    "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/Connect",
    "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/OnewayPing",
];

/// Read buffer per connection.
const READ_CHUNK: usize = 64 * 1024;
/// After sending a Fault record, how long the host keeps reading (and discarding) what the
/// peer still sends, so that closing does not reset the connection before the peer has read
/// the fault (a socket closed with unread input sends RST, which can discard data in flight).
const FAULT_DRAIN_TIME: Duration = Duration::from_secs(2);
/// The most bytes read and discarded after a fault.
const FAULT_DRAIN_BYTES: usize = 16 * 1024 * 1024;
/// Longest wait for a closing handshake (`shutdown`) on the stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause after a failed TCP `accept`; doubles up to [`MAX_ACCEPT_BACKOFF`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Limits and timeouts of a [`Host`] (and of [`crate::basic_http::BasicHttp`]).
#[derive(Clone, Debug)]
pub struct HostConfig {
    max_message_bytes: usize,
    xml: ferry_nbfx::Limits,
    preamble_timeout: Duration,
    receive_timeout: Duration,
    send_timeout: Duration,
    operation_timeout: Duration,
    body_read_timeout: Duration,
    max_sessions: usize,
    metadata: Option<Arc<Metadata>>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            xml: ferry_nbfx::Limits::default(),
            preamble_timeout: DEFAULT_PREAMBLE_TIMEOUT,
            receive_timeout: DEFAULT_RECEIVE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            metadata: None,
        }
    }
}

impl HostConfig {
    /// Sets the largest message accepted, in bytes on the wire (default
    /// [`DEFAULT_MAX_MESSAGE_BYTES`]). Larger ones get the `MaxMessageSizeExceededFault`
    /// record (net.tcp) or 413 (HTTP), detected from the size field before buffering.
    pub fn set_max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_message_bytes = bytes;
        self.xml.max_document_bytes = bytes;
        self
    }

    /// Sets the message size and every byte-counting reader quota (string length, array
    /// length) to `bytes`, as a WCF binding whose `MaxReceivedMessageSize` and
    /// `ReaderQuotas` are all raised together. Depth and session dictionary keep theirs.
    pub fn set_quotas(&mut self, bytes: usize) -> &mut Self {
        self.set_max_message_size(bytes);
        self.xml.max_string_bytes = bytes;
        self.xml.max_array_length = bytes;
        self
    }

    /// Sets the XML reader limits: string length, array length, nesting depth and session
    /// dictionary size (defaults: [`ferry_nbfx::Limits::default`], the .NET quotas). The
    /// document size stays the message size.
    pub fn set_xml_limits(&mut self, limits: ferry_nbfx::Limits) -> &mut Self {
        self.xml = ferry_nbfx::Limits {
            max_document_bytes: self.max_message_bytes,
            ..limits
        };
        self
    }

    /// Sets the largest MC-NBFSE session dictionary a peer may build, in bytes (default 2048,
    /// .NET's `MaxSessionSize`; our own writer stops adding strings there too).
    pub fn set_max_session_dictionary(&mut self, bytes: usize) -> &mut Self {
        self.xml.max_session_bytes = bytes;
        self
    }

    /// Sets the deepest element nesting accepted (default 32, .NET's `MaxDepth`).
    pub fn set_max_depth(&mut self, depth: usize) -> &mut Self {
        self.xml.max_depth = depth;
        self
    }

    /// Sets how long a new connection may take to send its preamble (default
    /// [`DEFAULT_PREAMBLE_TIMEOUT`]); a slower one is closed.
    pub fn set_preamble_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.preamble_timeout = timeout;
        self
    }

    /// Sets how long a session may stay silent between messages (default
    /// [`DEFAULT_RECEIVE_TIMEOUT`]); an idle session is closed.
    pub fn set_receive_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.receive_timeout = timeout;
        self
    }

    /// Sets how long writing one reply may take (default [`DEFAULT_SEND_TIMEOUT`]); a peer
    /// that does not read is disconnected.
    pub fn set_send_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets how long one dispatched operation may run (default
    /// [`DEFAULT_OPERATION_TIMEOUT`]), on net.tcp sessions and basicHttp alike. An operation
    /// still running then is dropped (its future is cancelled): a request/reply caller gets
    /// the generic internal service fault with a reason naming the timeout, a one-way message
    /// is dropped with a warning, and the session goes on with its next message. Without a
    /// limit one handler that never returns would hold its session (and its permit) for ever.
    pub fn set_operation_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets how long a basicHttp request's body may take to arrive, whole, from the end of its
    /// head (default [`DEFAULT_BODY_READ_TIMEOUT`]). A slower body (stalled or trickled) is
    /// answered with `408 Request Timeout` and, on [`crate::basic_http::BasicHttp::serve_tcp`],
    /// the connection is closed. net.tcp messages have the receive timeout instead.
    pub fn set_body_read_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Sets how many sessions are served at once (default [`DEFAULT_MAX_SESSIONS`], at least
    /// 1); further connections wait to be accepted (TCP) or queue in the SDK listener, which
    /// refuses senders with 503 once its queue is full.
    pub fn set_max_sessions(&mut self, n: usize) -> &mut Self {
        self.max_sessions = n.max(1);
        self
    }

    /// Publishes the service's metadata (default: none, as WCF without a
    /// `ServiceMetadataBehavior`): a [`Host`] answers WS-Transfer `Get`
    /// ([`crate::metadata::TRANSFER_GET`]) on any address it serves, a
    /// [`crate::basic_http::BasicHttp`] that too and `GET ?wsdl`, `?wsdl=wsdlN`, `?xsd=xsdN`.
    /// Behind the gateway the `Get` comes to `{path}/mex` (where WCF clients look for a mex
    /// endpoint, and which the gateway routes to the listener of `{path}`) or to `{path}`
    /// itself; see [`crate::metadata`] for the addresses the documents then name.
    pub fn set_metadata(&mut self, metadata: Metadata) -> &mut Self {
        self.metadata = Some(Arc::new(metadata));
        self
    }

    /// The metadata published, if any.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_deref()
    }

    /// The largest message accepted.
    pub fn max_message_size(&self) -> usize {
        self.max_message_bytes
    }

    /// The XML reader limits.
    pub fn xml_limits(&self) -> ferry_nbfx::Limits {
        self.xml
    }

    /// The send timeout.
    pub fn send_timeout(&self) -> Duration {
        self.send_timeout
    }

    /// The receive timeout.
    pub fn receive_timeout(&self) -> Duration {
        self.receive_timeout
    }

    /// The operation timeout.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// The basicHttp body read timeout.
    pub fn body_read_timeout(&self) -> Duration {
        self.body_read_timeout
    }

    /// The session (connection) limit.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// The framing limits for a session.
    fn nmf_limits(&self) -> ferry_nmf::Limits {
        ferry_nmf::Limits {
            max_envelope_bytes: self.max_message_bytes,
            ..ferry_nmf::Limits::default()
        }
    }
}

/// Why a session ended other than by the peer closing it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The stream failed.
    #[error("connection failed")]
    Io(#[from] io::Error),
    /// No complete preamble within the preamble timeout.
    #[error("no preamble within {0:?}")]
    PreambleTimeout(Duration),
    /// No message within the receive timeout.
    #[error("session idle for {0:?}")]
    IdleTimeout(Duration),
    /// A reply could not be written within the send timeout.
    #[error("reply not written within {0:?}")]
    SendTimeout(Duration),
    /// The peer broke .NET Message Framing (the matching Fault record was sent, if WCF
    /// defines one).
    #[error("framing failed")]
    Framing(#[from] ferry_nmf::SessionError),
    /// The preamble asks for something this host does not serve (mode, encoding, upgrade).
    #[error("preamble refused with {0}")]
    Refused(FaultCode),
    /// A message that is not a readable SOAP envelope in the session's encoding.
    #[error("undecodable envelope")]
    Envelope(#[source] ferry_soap::DecodeError),
    /// A reply could not be encoded (a string too long for binary XML).
    #[error("reply cannot be encoded")]
    Encode(#[source] ferry_soap::EncodeError),
}

impl HostError {
    /// The framing Fault record this error is answered with, the one place errors map to
    /// fault URIs:
    ///
    /// - framing errors: what `ferry_nmf` maps them to (`MaxMessageSizeExceededFault`,
    ///   `UnsupportedVersion`, `UnsupportedMode`, `ContentTypeInvalid`, `ViaTooLong`, …);
    ///   records in the wrong order or of unknown type have none (WCF aborts those
    ///   connections without a fault, and so do we);
    /// - refusals: the refused item's fault;
    /// - envelopes breaking a size quota (document, string, array, session dictionary):
    ///   `MaxMessageSizeExceededFault`;
    /// - other undecodable envelopes: `ContentTypeInvalid`, since the bytes are not content
    ///   of the negotiated type (WCF itself aborts the connection without a fault here; a
    ///   fault tells the client why);
    /// - timeouts, I/O and encoding errors: none.
    pub fn fault(&self) -> Option<FaultCode> {
        match self {
            Self::Framing(e) => e.fault(),
            Self::Refused(code) => Some(code.clone()),
            Self::Envelope(e) => Some(match e {
                ferry_soap::DecodeError::Binary(b) if b.limit().is_some_and(is_size_quota) => {
                    FaultCode::MaxMessageSizeExceeded
                }
                ferry_soap::DecodeError::Text(ferry_nbfx::XmlError::LimitExceeded {
                    limit,
                    ..
                }) if is_size_quota(*limit) => FaultCode::MaxMessageSizeExceeded,
                _ => FaultCode::ContentTypeInvalid,
            }),
            Self::Io(_)
            | Self::PreambleTimeout(_)
            | Self::IdleTimeout(_)
            | Self::SendTimeout(_)
            | Self::Encode(_) => None,
        }
    }
}

/// Quotas that count bytes or items (all but nesting depth).
fn is_size_quota(limit: ferry_nbfx::Limit) -> bool {
    !matches!(limit, ferry_nbfx::Limit::Depth)
}

/// A WCF service host: serves one [`Service`] over net.tcp sessions from TCP listeners, SDK
/// listeners or any stream handed to [`Self::serve_connection`]. Cheap to clone (shared).
#[derive(Debug)]
pub struct Host<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Host<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
struct Shared<S> {
    service: S,
    config: HostConfig,
    /// One permit per session being served.
    sessions: Arc<Semaphore>,
    /// Cancelled by [`Host::shutdown`]: accept loops stop, idle sessions end.
    cancel: CancellationToken,
    /// Every session task, so that shutdown can wait for them.
    tracker: TaskTracker,
}

impl<S: Service + 'static> Host<S> {
    /// A host with the default [`HostConfig`].
    pub fn new(service: S) -> Self {
        Self::with_config(service, HostConfig::default())
    }

    /// A host with `config`.
    pub fn with_config(service: S, config: HostConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                sessions: Arc::new(Semaphore::new(config.max_sessions)),
                service,
                config,
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// The service served.
    pub fn service(&self) -> &S {
        &self.shared.service
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.shared.config
    }

    /// Serves every connection of `listener`, each in a task of its own, until
    /// [`Self::shutdown`]. A failed `accept` is logged and retried after a pause.
    ///
    /// # Errors
    ///
    /// None at present; the `Result` leaves room for fatal listener errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: sessions already accepted go on in their tasks.
    pub async fn serve_tcp(&self, listener: TcpListener) -> io::Result<()> {
        let mut backoff = ACCEPT_BACKOFF;
        loop {
            // The permit is taken before accepting, so a full house leaves connections in
            // the kernel's backlog instead of accepting them without bound.
            let Some(permit) = self.permit().await else {
                return Ok(());
            };
            let accepted = tokio::select! {
                () = self.shared.cancel.cancelled() => return Ok(()),
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF;
                    a
                }
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            // Replies are whole messages written at once; Nagle would only delay them.
            if let Err(e) = stream.set_nodelay(true) {
                debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let host = self.clone();
            let span = debug_span!("wcf_session", %peer);
            // One task per session; the permit goes with it and is released when it ends.
            self.shared.tracker.spawn(
                async move {
                    let _permit = permit;
                    host.log_end(host.serve_connection(stream).await);
                }
                .instrument(span),
            );
        }
    }

    /// Serves every relayed connection of an SDK `listener` (net.tcp senders reach it
    /// through the gateway's net.tcp front end, or `ferry_sdk::connect` with a
    /// [`crate::net_tcp::NetTcpChannel`]), each in a task of its own, until the listener
    /// closes or [`Self::shutdown`].
    ///
    /// # Errors
    ///
    /// [`ListenerError::Refused`] when the gateway refused the listener for good.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: sessions already accepted go on in their tasks; the listener closes.
    pub async fn serve_listener(&self, mut listener: Listener) -> Result<(), ListenerError> {
        loop {
            // Taken before the next connection: past the limit, senders wait in the SDK's
            // bounded queue, which answers 503 when it is full.
            let Some(permit) = self.permit().await else {
                break;
            };
            let incoming = tokio::select! {
                () = self.shared.cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(incoming) => incoming,
                    Err(ListenerError::Closed) => return Ok(()),
                    Err(e) => return Err(e),
                },
            };
            let host = self.clone();
            let span = debug_span!("wcf_session", connection = %incoming.id);
            // The rendezvous is opened in the session's task, so one slow rendezvous does
            // not hold up the next sender.
            self.shared.tracker.spawn(
                async move {
                    let _permit = permit;
                    match incoming.accept().await {
                        Ok(stream) => host.log_end(host.serve_connection(stream).await),
                        Err(e) => warn!(error = %e, "rendezvous failed"),
                    }
                }
                .instrument(span),
            );
        }
        listener.close().await;
        Ok(())
    }

    /// Serves one connection in the calling task: sessions one after another (a client may
    /// reuse the connection after the End handshake) until the peer closes it, an error, or
    /// [`Self::shutdown`]. Does not count against [`HostConfig::set_max_sessions`].
    ///
    /// # Errors
    ///
    /// [`HostError`] when the session ended badly; the peer was sent the matching Fault
    /// record first ([`HostError::fault`]). A peer that closes between messages, or after
    /// End, is no error.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a reply may be half written. Use [`Self::shutdown`] to stop sessions
    /// between messages.
    pub async fn serve_connection<IO>(&self, io: IO) -> Result<(), HostError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut conn = Connection {
            io,
            shared: &self.shared,
            session: Session::server(self.shared.config.nmf_limits()),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            via: String::new(),
        };
        let result = conn.run().await;
        match &result {
            Ok(()) => conn.close().await,
            Err(e) => conn.fail(e).await,
        }
        result
    }

    /// Stops accepting, ends idle sessions (sending End) and waits up to
    /// [`SHUTDOWN_TIMEOUT`] for sessions to finish the message they are on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown is requested before the first await.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        if timeout(SHUTDOWN_TIMEOUT, self.shared.tracker.wait())
            .await
            .is_err()
        {
            warn!("sessions did not end in time");
        }
    }

    /// A session permit, or `None` once shut down.
    async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            () = self.shared.cancel.cancelled() => None,
            p = Arc::clone(&self.shared.sessions).acquire_owned() => p.ok(),
        }
    }

    fn log_end(&self, result: Result<(), HostError>) {
        match result {
            Ok(()) => debug!("session closed"),
            Err(
                e @ (HostError::Io(_) | HostError::PreambleTimeout(_) | HostError::IdleTimeout(_)),
            ) => {
                debug!(error = %e, "session ended");
            }
            Err(e) => warn!(error = %e, fault = ?e.fault(), "session failed"),
        }
    }
}

/// Serves `service` on every connection of an SDK listener with the default configuration
/// (see [`Host::serve_listener`]).
///
/// # Errors
///
/// [`ListenerError::Refused`] when the gateway refused the listener for good.
///
/// # Cancel safety
///
/// Cancel safe: sessions already accepted go on in their tasks.
pub async fn serve_listener<S: Service + 'static>(
    listener: Listener,
    service: S,
) -> Result<(), ListenerError> {
    Host::new(service).serve_listener(listener).await
}

/// Serves `service` on every connection of a TCP listener with the default configuration
/// (see [`Host::serve_tcp`]).
///
/// # Errors
///
/// None at present.
///
/// # Cancel safety
///
/// Cancel safe: sessions already accepted go on in their tasks.
pub async fn serve_tcp<S: Service + 'static>(listener: TcpListener, service: S) -> io::Result<()> {
    Host::new(service).serve_tcp(listener).await
}

/// Answers one decoded request as a host with the default [`DEFAULT_OPERATION_TIMEOUT`]
/// does: [`respond_within`] that limit.
///
/// # Cancel safety
///
/// Dropping the future drops the operation's future.
pub async fn respond<S: Service>(service: &S, request: &Envelope) -> Option<Envelope> {
    respond_within(service, request, DEFAULT_OPERATION_TIMEOUT).await
}

/// Answers one decoded request as the host does, for any transport: dispatches by the Action
/// header, catches a panicking operation (→ [`Fault::internal_error`]), gives up on one still
/// running after `operation_timeout` (→ [`operation_timeout_fault`]; its future is dropped),
/// and builds the reply envelope in the request's SOAP and addressing version with
/// `RelatesTo` set to its `MessageID`. `None` when nothing goes back (a one-way operation,
/// even one that failed or timed out, as WCF cannot answer those either, and the relay's
/// session messages of [`RELAY_SESSION_ACTIONS`] when the contract does not have them).
///
/// # Cancel safety
///
/// Dropping the future drops the operation's future.
pub async fn respond_within<S: Service>(
    service: &S,
    request: &Envelope,
    operation_timeout: Duration,
) -> Option<Envelope> {
    let action = request.headers.action.as_deref().unwrap_or_default();
    let operation = service.contract().operation(action);
    if operation.is_none() && RELAY_SESSION_ACTIONS.contains(&action) {
        // Meant for the relay and one-way: an ActionNotSupported fault would reach a sender
        // that expects no answer from a listener (or, on a fan-out path, nobody at all).
        debug!(action, "relay session message dropped");
        return None;
    }
    let one_way = operation.is_some_and(|op| op.is_one_way());
    let dispatched = timeout(
        operation_timeout,
        AssertUnwindSafe(service.dispatch(action, request.payload())).catch_unwind(),
    )
    .await;
    let reply = match dispatched {
        Err(_elapsed) => {
            // The operation's future is dropped here: whatever it was waiting on is cancelled,
            // and the session is free for its next message.
            warn!(action, timeout = ?operation_timeout, one_way, "operation timed out");
            if one_way {
                Reply::None
            } else {
                let fault = operation_timeout_fault(operation_timeout);
                Reply::Fault {
                    action: fault.reply_action(),
                    fault,
                }
            }
        }
        Ok(Ok(Ok(reply))) => reply,
        Ok(Ok(Err(e))) => {
            debug!(error = %e, action, "request not dispatched");
            if one_way {
                Reply::None
            } else {
                e.reply_for(request.addressing)
            }
        }
        Ok(Err(_panic)) => {
            warn!(
                action,
                "operation panicked; answering with the generic internal fault"
            );
            if one_way {
                Reply::None
            } else {
                let fault: Fault = Fault::internal_error();
                Reply::Fault {
                    action: fault.reply_action(),
                    fault,
                }
            }
        }
    };
    let mut envelope = reply.into_envelope(request.version, request.addressing)?;
    if request.addressing == AddressingVersion::None {
        // basicHttp: no addressing headers at all; the HTTP exchange correlates.
        envelope.headers.action = None;
    } else {
        envelope.headers.relates_to = request.headers.message_id.clone();
    }
    Some(envelope)
}

/// The fault for an operation that ran past the operation timeout: the generic internal
/// service fault ([`Fault::internal_error`]: `Receiver`, subcode `InternalServiceFault`, the
/// dispatcher's fault action) with a reason saying how long it ran, and nothing about the
/// operation itself.
pub fn operation_timeout_fault(limit: Duration) -> Fault {
    let mut fault = Fault::internal_error();
    // `as_secs_f64` prints whole seconds without a fraction ("60") and others shortest ("0.2").
    fault.reason = format!(
        "The operation did not complete: it timed out after {} s.",
        limit.as_secs_f64()
    );
    fault
}

/// The answer to a WS-Transfer `Get` when `metadata` is published and the service's own
/// contract does not have that action (a service may serve `Get` itself); `None` for any
/// other request. `to` is where the request went when it has no `To` header (the preamble's
/// Via, the HTTP request's URL). The reply is in the request's SOAP and addressing version,
/// with `RelatesTo` (no addressing headers on basicHttp, as [`respond`]).
pub fn metadata_reply<S: Service>(
    service: &S,
    metadata: Option<&Metadata>,
    request: &Envelope,
    to: Option<&str>,
) -> Option<Envelope> {
    let metadata = metadata?;
    let action = request.headers.action.as_deref()?;
    if action != TRANSFER_GET || service.contract().operation(action).is_some() {
        return None;
    }
    let to = request.headers.to.as_deref().or(to);
    // Not the address itself: a Via may carry the relay token in its query.
    debug!("metadata requested");
    // `to` is the peer's: a bug it reaches answers with the generic fault, as a panicking
    // operation does in [`respond`], instead of ending the session.
    let mut envelope =
        match std::panic::catch_unwind(AssertUnwindSafe(|| metadata.get_response(to))) {
            Ok(body) => {
                let mut envelope = Envelope::new(request.version, request.addressing);
                envelope.body = ferry_soap::Body::Payload(vec![body]);
                envelope.headers.action = Some(TRANSFER_GET_RESPONSE.to_owned());
                envelope
            }
            Err(_) => {
                warn!("metadata answer panicked; answering with the generic internal fault");
                let fault = Fault::internal_error();
                let reply = Reply::Fault {
                    action: fault.reply_action(),
                    fault,
                };
                reply.into_envelope(request.version, request.addressing)?
            }
        };
    if request.addressing == AddressingVersion::None {
        envelope.headers.action = None;
    } else {
        envelope.headers.relates_to = request.headers.message_id.clone();
    }
    Some(envelope)
}

/// `url` less its query and fragment (scheme, authority and path): what may be logged of a
/// Via, whose query may hold the relay token.
fn without_query(url: &str) -> &str {
    url.find(['?', '#']).map_or(url, |end| &url[..end])
}

/// How a session ended without error.
enum Ended {
    /// The End handshake is done; the connection may carry another session.
    End,
    /// The peer closed the stream, or the host is shutting down.
    Closed,
}

/// One connection being served.
struct Connection<'a, IO, S> {
    io: IO,
    shared: &'a Shared<S>,
    session: Session,
    buf: Box<[u8]>,
    /// Bytes to send, drained from the session.
    out: Vec<u8>,
    /// The session's Via: where its messages went, for a metadata request without `To`.
    via: String,
}

impl<IO, S> Connection<'_, IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    S: Service,
{
    /// Sessions one after another until the connection ends.
    async fn run(&mut self) -> Result<(), HostError> {
        let mut first = true;
        loop {
            let Some(preamble) = self.read_preamble(first).await? else {
                return Ok(());
            };
            first = false;
            // Not the query: a Via may carry the relay token (`?sb-hc-token=`).
            debug!(
                via = without_query(&preamble.via),
                mode = preamble.mode.name(),
                "preamble received"
            );
            self.via.clone_from(&preamble.via);
            let mut codec = self.negotiate(&preamble)?;
            self.session.accept()?;
            self.flush().await?;
            let singleton = preamble.mode == Mode::SingletonUnsized;
            match self.messages(&mut codec, singleton).await? {
                Ended::End => {}
                Ended::Closed => return Ok(()),
            }
        }
    }

    /// Reads up to a complete preamble; `None` when the peer closes first (or shutdown).
    /// The first preamble must come within the preamble timeout; the next one on a reused
    /// connection within the receive timeout (the client's pool keeps it idle meanwhile).
    async fn read_preamble(&mut self, first: bool) -> Result<Option<Preamble>, HostError> {
        let limit = if first {
            self.shared.config.preamble_timeout
        } else {
            self.shared.config.receive_timeout
        };
        let deadline = Instant::now() + limit;
        loop {
            while let Some(event) = self.session.poll_event() {
                match event {
                    Event::PreambleReceived(p) => return Ok(Some(p)),
                    Event::UpgradeRequested(protocol) => {
                        // Transport security inside net.tcp (TLS, Negotiate) is not offered:
                        // SecurityMode.None only.
                        debug!(%protocol, "upgrade refused");
                        return Err(self.refuse(FaultCode::UpgradeInvalid));
                    }
                    other => debug!(event = ?other, "event before the preamble ignored"),
                }
            }
            let n = tokio::select! {
                // Shutting down: a connection without a session just closes.
                () = self.shared.cancel.cancelled() => return Ok(None),
                r = timeout_at(deadline, self.io.read(&mut self.buf)) => {
                    r.map_err(|_| HostError::PreambleTimeout(limit))??
                }
            };
            if n == 0 {
                return Ok(None);
            }
            self.session.handle_input(&self.buf[..n])?;
        }
    }

    /// Checks mode and encoding; the codec for the session, or the refusal (queued).
    fn negotiate(&mut self, preamble: &Preamble) -> Result<Codec, HostError> {
        if !matches!(preamble.mode, Mode::Duplex | Mode::SingletonUnsized) {
            return Err(self.refuse(FaultCode::UnsupportedMode));
        }
        match Codec::for_encoding(&preamble.encoding, self.shared.config.xml) {
            Some(codec) => Ok(codec),
            None => {
                debug!(encoding = ?preamble.encoding, "encoding refused");
                Err(self.refuse(FaultCode::ContentTypeInvalid))
            }
        }
    }

    /// Queues a Fault record (the session closes) and returns the refusal.
    fn refuse(&mut self, code: FaultCode) -> HostError {
        if let Err(e) = self.session.reject(code.clone()) {
            // Only possible once closed, which a session waiting for a decision is not.
            debug!(error = %e, "reject after close");
        }
        HostError::Refused(code)
    }

    /// Serves messages until End (answered), EOF or shutdown.
    async fn messages(&mut self, codec: &mut Codec, singleton: bool) -> Result<Ended, HostError> {
        let mut sent_end = false;
        loop {
            while let Some(event) = self.session.poll_event() {
                match event {
                    Event::Envelope(payload) => {
                        let request = codec.decode(&payload).map_err(HostError::Envelope)?;
                        self.answer(codec, &request).await?;
                        if singleton && !sent_end {
                            // Singleton-unsized carries one message each way: the reply, then
                            // End.
                            self.session.close()?;
                            sent_end = true;
                            self.flush().await?;
                        }
                    }
                    Event::End => {
                        if !sent_end {
                            self.session.close()?;
                        }
                        self.flush().await?;
                        return Ok(Ended::End);
                    }
                    other => debug!(event = ?other, "unexpected event ignored"),
                }
            }
            let n = tokio::select! {
                () = self.shared.cancel.cancelled() => {
                    // Shutting down between messages: end the session politely.
                    if !sent_end {
                        self.session.close()?;
                    }
                    self.flush().await?;
                    return Ok(Ended::Closed);
                }
                r = timeout(self.shared.config.receive_timeout, self.io.read(&mut self.buf)) => {
                    r.map_err(|_| HostError::IdleTimeout(self.shared.config.receive_timeout))??
                }
            };
            if n == 0 {
                return Ok(Ended::Closed);
            }
            self.session.handle_input(&self.buf[..n])?;
        }
    }

    /// Dispatches one request and sends the reply, if any.
    async fn answer(&mut self, codec: &mut Codec, request: &Envelope) -> Result<(), HostError> {
        let service = &self.shared.service;
        let metadata = self.shared.config.metadata();
        let reply = match metadata_reply(service, metadata, request, Some(&self.via)) {
            Some(reply) => Some(reply),
            None => respond_within(service, request, self.shared.config.operation_timeout).await,
        };
        let Some(reply) = reply else {
            return Ok(());
        };
        let bytes = codec.encode(&reply).map_err(HostError::Encode)?;
        self.session.send_envelope(&bytes)?;
        self.flush().await
    }

    /// Writes what the session queued, within the send timeout.
    async fn flush(&mut self) -> Result<(), HostError> {
        self.out.clear();
        if !self.session.poll_transmit(&mut self.out) {
            return Ok(());
        }
        let limit = self.shared.config.send_timeout;
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        timeout(limit, write)
            .await
            .map_err(|_| HostError::SendTimeout(limit))??;
        Ok(())
    }

    /// Ends the connection after a clean finish.
    async fn close(&mut self) {
        let _ = timeout(CLOSE_TIMEOUT, self.io.shutdown()).await;
    }

    /// Sends the fault `e` maps to (unless the session already queued it), closes our side
    /// and drains the peer's input for a while so that it can read the fault.
    async fn fail(&mut self, e: &HostError) {
        if !self.session.is_closed()
            && let Some(code) = e.fault()
        {
            let _ = self.session.reject(code);
        }
        let faulted = matches!(
            e,
            HostError::Framing(_) | HostError::Refused(_) | HostError::Envelope(_)
        ) && e.fault().is_some();
        if self.flush().await.is_err() {
            return;
        }
        self.close().await;
        if faulted {
            let deadline = Instant::now() + FAULT_DRAIN_TIME;
            let mut drained = 0;
            while drained < FAULT_DRAIN_BYTES {
                match timeout_at(deadline, self.io.read(&mut self.buf)).await {
                    Ok(Ok(n)) if n > 0 => drained += n,
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_soap::{Body, SoapVersion};

    use super::*;
    use crate::DataContract as _;
    use crate::calc::Calc;
    use crate::generated::calculator::{
        Calculator as _, CalculatorServer, GetNotifications, Notify,
    };
    use crate::generated::relay::{Connect, OnewayPing};

    fn request(action: &str, body: ferry_nbfx::Element) -> Envelope {
        let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        env.headers.action = Some(action.to_owned());
        env.headers.message_id = Some("urn:uuid:6c9e1a52-1111-4c2b-9a47-0d6f3e8b2a10".into());
        env.body = Body::Payload(vec![body]);
        env
    }

    #[tokio::test]
    async fn relay_session_messages_are_dropped_unanswered() {
        let service = CalculatorServer(Calc::new());
        let connect = Connect {
            uri: Some("sb://gateway.example/events".into()),
        };
        let [connect_action, ping_action] = RELAY_SESSION_ACTIONS;
        assert_eq!(
            respond(&service, &request(connect_action, connect.to_element())).await,
            None
        );
        assert_eq!(
            respond(&service, &request(ping_action, OnewayPing {}.to_element())).await,
            None
        );
        // Neither reached the calculator, whose one-way Notify still works as before.
        let notify = Notify {
            message: Some("after the relay's messages".into()),
        };
        let action = "http://interop.example/calc/2024/ICalculator/Notify";
        assert_eq!(
            respond(&service, &request(action, notify.to_element())).await,
            None
        );
        let drained = service.0.get_notifications(GetNotifications {}).await;
        assert_eq!(
            drained.expect("drained").get_notifications_result,
            [Some("after the relay's messages".to_owned())]
        );
    }

    fn get(to: Option<&str>) -> Envelope {
        let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        env.headers.action = Some(TRANSFER_GET.to_owned());
        env.headers.message_id = Some("urn:uuid:668cc613-5d6a-4744-8e45-ee7f63777252".into());
        env.headers.to = to.map(str::to_owned);
        env
    }

    #[test]
    fn metadata_get_is_answered_with_every_section() {
        let service = CalculatorServer(Calc::new());
        let metadata = crate::calc::metadata();
        // As pynettcp sends it: empty body, To naming the mex address.
        let request = get(Some("net.tcp://gateway.example:9352/calc/tcp/mex"));
        let reply = metadata_reply(&service, Some(&metadata), &request, Some("net.tcp://via"))
            .expect("answered");
        assert_eq!(reply.headers.action.as_deref(), Some(TRANSFER_GET_RESPONSE));
        assert_eq!(reply.headers.relates_to, request.headers.message_id);
        assert_eq!(
            (reply.version, reply.addressing),
            (SoapVersion::Soap12, AddressingVersion::Wsa10)
        );
        let body = reply.payload().expect("a body");
        assert_eq!(
            (body.namespace.as_str(), body.local_name()),
            (crate::metadata::MEX_NS, "Metadata")
        );
        assert_eq!(body.elements().count(), 6);
        let xml = ferry_nbfx::Document::from_root(body.clone()).to_xml();
        assert!(
            xml.contains("net.tcp://gateway.example:9352/calc/tcp\""),
            "{xml}"
        );
        // The binary session encoding (what goes back over net.tcp) takes it.
        let mut codec = Codec::for_encoding(
            &ferry_nmf::Encoding::Known(ferry_nmf::KnownEncoding::BinarySession),
            ferry_nbfx::Limits::default(),
        )
        .expect("codec");
        assert!(codec.encode(&reply).is_ok());
    }

    #[test]
    fn metadata_get_without_to_uses_the_via() {
        let service = CalculatorServer(Calc::new());
        let metadata = crate::calc::metadata();
        let reply = metadata_reply(
            &service,
            Some(&metadata),
            &get(None),
            Some("net.tcp://g:1/calc"),
        )
        .expect("answered");
        let xml = ferry_nbfx::Document::from_root(reply.payload().cloned().unwrap()).to_xml();
        assert!(xml.contains("location=\"net.tcp://g:1/calc\""), "{xml}");
    }

    #[test]
    fn metadata_get_to_a_non_ascii_path_is_answered() {
        let service = CalculatorServer(Calc::new());
        let metadata = crate::calc::metadata();
        let reply = metadata_reply(
            &service,
            Some(&metadata),
            &get(Some("net.tcp://x/€€")),
            None,
        )
        .expect("answered");
        assert_eq!(reply.headers.action.as_deref(), Some(TRANSFER_GET_RESPONSE));
        let xml = ferry_nbfx::Document::from_root(reply.payload().cloned().unwrap()).to_xml();
        assert!(xml.contains("location=\"net.tcp://x/€€\""), "{xml}");
    }

    #[test]
    fn logged_vias_have_no_token() {
        assert_eq!(
            without_query("net.tcp://g:9352/calc?sb-hc-token=SharedAccessSignature%20sr"),
            "net.tcp://g:9352/calc"
        );
        assert_eq!(without_query("net.tcp://g/a#x?y"), "net.tcp://g/a");
        assert_eq!(without_query("net.tcp://g/€"), "net.tcp://g/€");
    }

    #[test]
    fn metadata_get_is_left_to_the_service_without_metadata() {
        let service = CalculatorServer(Calc::new());
        assert_eq!(metadata_reply(&service, None, &get(None), None), None);
        // Any other action is the service's.
        let metadata = crate::calc::metadata();
        let add = request(
            "http://interop.example/calc/2024/ICalculator/Add",
            crate::generated::calculator::Add { a: 1, b: 2 }.to_element(),
        );
        assert_eq!(metadata_reply(&service, Some(&metadata), &add, None), None);
    }

    #[tokio::test]
    async fn other_unknown_actions_still_get_action_not_supported() {
        let service = CalculatorServer(Calc::new());
        let redirect =
            "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/Redirect";
        let body = ferry_nbfx::Element::new("", ferry_nbfx::XmlString::inline("Redirect"), "urn:x");
        let reply = respond(&service, &request(redirect, body))
            .await
            .expect("a fault");
        let Body::Fault(fault) = &reply.body else {
            panic!("fault expected: {reply:?}");
        };
        assert_eq!(fault.subcodes[0].local, "ActionNotSupported");
    }
}
