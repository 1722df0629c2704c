//! HTTP over the relay (spec §6): an [`HttpListener`] receives the requests senders make to
//! `https://{gateway}/{path}/...` and answers them with a handler from
//! [`http::Request<Body>`] to [`http::Response<Body>`].
//!
//! ```text
//!  gateway ──request JSON [+ body msg]──► control task ──► HttpListener::next_request
//!     │  (rendezvous-only: listener opens request.address and reads JSON + body there)
//!     ▼
//!  response ≤ 64 KiB: response JSON + body msg on the control channel (one writer)
//!  larger or streaming: listener opens request.address, response JSON + one fragmented
//!  binary message
//! ```
//!
//! Every wait on the gateway has a timeout, every queue is bounded, inline bodies are
//! limited, and at most [`HttpConfig::set_max_concurrent`] requests are handled at once.
//!
//! # Cancellation
//! An `HttpListener` sends `Ferry-Features: cancel` on its `listen` upgrade. A Ferry gateway
//! then sends `{"cancel":{"id":…}}` when a request's sender goes away (or its HTTP/2 stream
//! is reset, or the gateway's deadline passes) before the response is complete; the Azure
//! service ignores the header and never sends it. [`HttpListener::serve`] then drops the
//! handler's future for that request, and with it whatever the handler holds (an upstream
//! request, the response body). With [`HttpListener::next_request`], watch
//! [`IncomingRequest::cancelled`] or [`Responder::cancelled`]. A response body streaming
//! over a rendezvous also fails when the gateway closes that socket.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_hc::command::{Command, MAX_COMMAND_LEN, RemoteEndpoint, Request, Response};
use ferry_net::frame::{CLOSE_NORMAL, Opcode, Role, encode_close_payload};
use ferry_net::message::{self, MessageKind, MessageReader, Pong, ReadError};
use futures_util::{Stream, StreamExt};
use http::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, warn};

use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::listener::{
    CancelGuard, HttpHooks, InlineRequest, Listener, ListenerError, Offline, OutgoingResponse,
    Status,
};
use crate::transport::{self, Transport};

/// Largest response body sent inline on the control channel (spec §4.3: 64 kB); larger or
/// still-streaming bodies go through the request's rendezvous.
pub const MAX_INLINE_RESPONSE: usize = 64 * 1024;

/// How long a streamed response body may take to end before it is sent over the rendezvous
/// instead of inline (the .NET listener's flush timer, spec §6.3).
pub const INLINE_WAIT: Duration = Duration::from_secs(2);

/// Default for [`HttpConfig::set_max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT: usize = 256;

/// Default for [`HttpConfig::set_response_timeout`]: the service's own deadline for the
/// response JSON (spec §6.5); a later answer would find the sender gone.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default for [`HttpConfig::set_idle_timeout`]: the longest pause inside a streamed body
/// (spec §6.5 gives the service 60 s too).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many received requests wait for [`HttpListener::next_request`]; past that the control
/// task answers 503.
pub const REQUEST_QUEUE: usize = 64;

/// How many responses wait for the control channel's writer.
const RESPONSE_QUEUE: usize = 64;

/// Largest fragment of a streamed response body; larger chunks are cut.
const MAX_FRAGMENT: usize = 64 * 1024;

/// Read buffer step of a rendezvous, and the largest request body chunk handed on.
const READ_CHUNK: usize = 64 * 1024;

/// Settings of an [`HttpListener`].
#[derive(Clone, Debug)]
pub struct HttpConfig {
    max_concurrent: usize,
    response_timeout: Duration,
    idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl HttpConfig {
    /// Sets how many requests [`HttpListener::serve`] handles at once (default
    /// [`DEFAULT_MAX_CONCURRENT`], at least 1); further requests wait in the bounded queue.
    pub fn set_max_concurrent(&mut self, n: usize) -> &mut Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// Sets how long a handler may take to produce the response head (default
    /// [`DEFAULT_RESPONSE_TIMEOUT`]); past it the request is answered with 500.
    pub fn set_response_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets the longest wait for the next message or chunk of a body, either way (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn set_idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }
}

/// What serving one request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Opening the rendezvous address failed.
    #[error("cannot open the request's rendezvous")]
    Rendezvous(#[source] ConnectError),
    /// The gateway did not send the expected message in time.
    #[error("timed out after {0:?} waiting for the gateway")]
    Timeout(Duration),
    /// The gateway sent something the protocol does not allow here.
    #[error("gateway broke the http relay protocol: {0}")]
    Protocol(String),
    /// The WebSocket to the gateway failed.
    #[error("websocket to the gateway failed: {0}")]
    WebSocket(String),
    /// Reading the rendezvous failed: the connection, or the gateway's framing.
    #[error("reading the rendezvous failed")]
    Read(#[source] ReadError),
    /// The response body failed while it was being sent.
    #[error("response body failed")]
    Body(#[source] BodyError),
    /// The listener's control channel is gone.
    #[error("listener is closed")]
    Closed,
    /// The gateway cancelled the request: its sender went away.
    #[error("request cancelled by the gateway")]
    Cancelled,
}

/// A body stream that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// More bytes than allowed.
    #[error("body is over the {0} byte limit")]
    TooLarge(usize),
    /// The source of the body failed.
    #[error("body source failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// An HTTP body: empty, one buffer, or a stream of [`Bytes`] chunks.
///
/// It is a [`Stream`] of chunks; [`Body::collect`] gathers it with a size limit.
pub struct Body {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Stream(ChunkStream),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// A body streamed from `stream`; its errors end the body (a response then fails on
    /// the wire rather than being cut short silently).
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self {
            inner: Inner::Stream(Box::pin(
                stream.map(|r| r.map_err(|e| BodyError::Source(e.into()))),
            )),
        }
    }

    /// The body's exact length, when it is known without reading it.
    pub fn exact_len(&self) -> Option<usize> {
        match &self.inner {
            Inner::Full(b) => Some(b.as_ref().map_or(0, Bytes::len)),
            Inner::Stream(_) => None,
        }
    }

    /// The next chunk, `None` at the end.
    ///
    /// # Cancel safety
    /// Cancel safe as far as the stream the body was made from is.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.next().await
    }

    /// Reads the whole body into one buffer, failing once it exceeds `limit` bytes.
    ///
    /// # Errors
    /// [`BodyError::TooLarge`] past `limit`; the stream's own errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: what was read is lost.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, BodyError> {
        if let Inner::Full(b) = &mut self.inner {
            let b = b.take().unwrap_or_default();
            return if b.len() > limit {
                Err(BodyError::TooLarge(limit))
            } else {
                Ok(b)
            };
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

impl Stream for Body {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().inner {
            // An empty buffer is no chunk: readers never see zero-length chunks from it.
            Inner::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(Ok)),
            Inner::Stream(s) => s.as_mut().poll_next(cx),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Full(b) => f
                .debug_struct("Body")
                .field("len", &b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Stream(_) => f.debug_struct("Body").field("stream", &true).finish(),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self {
            inner: Inner::Full(Some(b)),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

/// The request id the gateway gave, as a request extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A listener serving HTTP requests (and, through [`Self::listener`], WebSocket
/// connections as before) on one path.
///
/// To accept WebSocket connections while [`HttpRequests::serve`] runs, split it with
/// [`Self::into_parts`].
#[derive(Debug)]
pub struct HttpListener {
    listener: Listener,
    requests: HttpRequests,
}

impl HttpListener {
    /// Opens the control channel (as [`Listener::open`]) with HTTP requests enabled.
    ///
    /// # Errors
    /// The first connection attempt failed.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future stops the control task.
    pub async fn open(endpoint: Endpoint, config: HttpConfig) -> Result<Self, ConnectError> {
        let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
        let (responses, responses_rx) = mpsc::channel(RESPONSE_QUEUE);
        let hooks = HttpHooks {
            requests: requests_tx,
            responses: responses_rx,
        };
        let listener = Listener::open_with(endpoint.clone(), Some(hooks)).await?;
        let requests = HttpRequests {
            requests,
            responses,
            endpoint,
            config,
            status: listener.status(),
        };
        Ok(Self { listener, requests })
    }

    /// The underlying listener, for WebSocket connections ([`Listener::accept`]) and status.
    pub fn listener(&mut self) -> &mut Listener {
        &mut self.listener
    }

    /// Splits into the listener (WebSocket connections, status, close) and the stream of
    /// HTTP requests. Requests keep coming only while the [`Listener`] is alive: dropping
    /// it closes the control channel.
    pub fn into_parts(self) -> (Listener, HttpRequests) {
        (self.listener, self.requests)
    }

    /// The next request (see [`HttpRequests::next_request`]).
    ///
    /// # Errors
    /// As [`Listener::accept`]: closed, or refused for good.
    ///
    /// # Cancel safety
    /// Cancel safe: a request is either returned or stays queued.
    pub async fn next_request(&mut self) -> Result<IncomingRequest, ListenerError> {
        self.requests.next_request().await
    }

    /// Serves every request with `handler` (see [`HttpRequests::serve`]); the control
    /// channel stays open until this returns.
    ///
    /// # Errors
    /// Why the listener stopped ([`ListenerError`]).
    ///
    /// # Cancel safety
    /// Cancel safe: requests already being served finish in their own tasks; the control
    /// channel closes.
    pub async fn serve<F, Fut>(self, handler: F) -> Result<(), ListenerError>
    where
        F: Fn(http::Request<Body>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        // The listener lives as long as the loop: dropping it would close the channel.
        let (_listener, requests) = self.into_parts();
        requests.serve(handler).await
    }

    /// Serves every request with a `tower` [`Service`](tower_service::Service), cloned per
    /// request; a service error becomes a 500 (its text is logged, not sent).
    ///
    /// # Errors
    /// Why the listener stopped ([`ListenerError`]).
    ///
    /// # Cancel safety
    /// As [`Self::serve`].
    pub async fn serve_service<S>(self, service: S) -> Result<(), ListenerError>
    where
        S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: std::fmt::Display + Send,
    {
        self.serve(move |request| {
            let mut service = service.clone();
            async move {
                let answer = match std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                    Ok(()) => service.call(request).await,
                    Err(e) => Err(e),
                };
                answer.unwrap_or_else(|e| {
                    warn!(error = %e, "http service failed; answering 500");
                    let mut response = http::Response::new(Body::from("internal error\n"));
                    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    response
                })
            }
        })
        .await
    }

    /// Closes the control channel (see [`Listener::close`]).
    ///
    /// # Cancel safety
    /// Cancel safe: the close is requested before the first await.
    pub async fn close(self) {
        self.listener.close().await;
    }
}

/// The HTTP requests arriving on a listener's control channel.
#[derive(Debug)]
pub struct HttpRequests {
    requests: mpsc::Receiver<InlineRequest>,
    responses: mpsc::Sender<OutgoingResponse>,
    endpoint: Endpoint,
    config: HttpConfig,
    status: watch::Receiver<Status>,
}

impl HttpRequests {
    /// The next request, not yet read: call [`IncomingRequest::read`] on it.
    ///
    /// # Errors
    /// As [`Listener::accept`]: closed, or refused for good.
    ///
    /// # Cancel safety
    /// Cancel safe: a request is either returned or stays queued.
    pub async fn next_request(&mut self) -> Result<IncomingRequest, ListenerError> {
        match self.requests.recv().await {
            Some(InlineRequest {
                request,
                body,
                cancel,
            }) => Ok(IncomingRequest {
                request,
                body,
                endpoint: self.endpoint.clone(),
                responses: self.responses.clone(),
                config: self.config.clone(),
                cancel,
            }),
            // The control task is gone: closed, or refused for good.
            None => match &*self.status.borrow() {
                Status::Offline(Offline::Failed(e)) => Err(ListenerError::Refused(e.clone())),
                _ => Err(ListenerError::Closed),
            },
        }
    }

    /// Serves every request with `handler`, each in a task of its own, at most
    /// [`HttpConfig::set_max_concurrent`] at once, until the listener closes or is refused.
    ///
    /// # Errors
    /// Why the listener stopped ([`ListenerError`]).
    ///
    /// # Cancel safety
    /// Cancel safe: requests already being served finish in their own tasks.
    pub async fn serve<F, Fut>(mut self, handler: F) -> Result<(), ListenerError>
    where
        F: Fn(http::Request<Body>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent));
        loop {
            // The permit is taken before the next request, so a full house leaves requests
            // in the bounded queue (and the control task answers 503 past it).
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return Err(ListenerError::Closed);
            };
            let incoming = self.next_request().await?;
            let handler = handler.clone();
            let span = debug_span!("http_request", request_id = %incoming.request.id);
            // One task per request, holding its permit until the response is sent.
            tokio::spawn(
                async move {
                    if let Err(e) = incoming.serve(handler).await {
                        debug!(error = %e, "http request failed");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// A request that arrived but was not read yet: rendezvous-only requests are fetched by
/// [`Self::read`].
#[derive(Debug)]
pub struct IncomingRequest {
    request: Request,
    body: Option<Bytes>,
    endpoint: Endpoint,
    responses: mpsc::Sender<OutgoingResponse>,
    config: HttpConfig,
    cancel: CancelGuard,
}

impl IncomingRequest {
    /// The gateway's id for the request.
    pub fn id(&self) -> &str {
        &self.request.id
    }

    /// Completes when the gateway cancels the request (its sender went away, see the
    /// [module docs](crate::http#cancellation)); never, against a gateway without the extension.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.cancel.token().clone().cancelled_owned()
    }

    /// Reads the request: the inline one as is, a rendezvous-only one from its rendezvous.
    /// Answer it through the returned [`Responder`].
    ///
    /// # Errors
    /// The rendezvous failed or the gateway broke the protocol.
    ///
    /// # Cancel safety
    /// Not cancel safe: the request is lost (the gateway answers the sender itself).
    pub async fn read(self) -> Result<(http::Request<Body>, Responder), HttpError> {
        let idle = self.config.idle_timeout;
        if !self.request.is_rendezvous_only() {
            let request = to_http_request(&self.request, self.body.unwrap_or_default())?;
            let responder = Responder {
                request_id: self.request.id,
                address: self.request.address,
                endpoint: self.endpoint,
                reply: Reply::Control(self.responses),
                idle,
                cancel: self.cancel,
            };
            return Ok((request, responder));
        }
        let (mut reader, writer) =
            Rendezvous::open(&self.endpoint, &self.request.address, idle).await?;
        let text = reader.text(MAX_COMMAND_LEN, idle).await?;
        let full = match Command::decode(&text) {
            Ok(Command::Request(r)) if !r.is_rendezvous_only() => r,
            _ => return Err(HttpError::Protocol("expected a request command".into())),
        };
        let mut request = to_http_request(&full, Bytes::new())?;
        if full.body == Some(true) {
            *request.body_mut() = reader.body(idle).await?;
        }
        let responder = Responder {
            request_id: full.id,
            address: self.request.address,
            endpoint: self.endpoint,
            reply: Reply::Rendezvous(Box::new(writer)),
            idle,
            cancel: self.cancel,
        };
        Ok((request, responder))
    }

    /// Reads the request, runs `handler` on it under the response timeout and sends its
    /// response; all of it is dropped as soon as the gateway cancels the request.
    async fn serve<F, Fut>(self, handler: F) -> Result<(), HttpError>
    where
        F: Fn(http::Request<Body>) -> Fut,
        Fut: Future<Output = http::Response<Body>>,
    {
        let cancelled = self.cancelled();
        tokio::select! {
            // Checked first, so a request cancelled while it waited in the queue never
            // reaches the handler.
            biased;
            // Dropping the other arm drops the handler's future, its response body and any
            // rendezvous: nobody waits for the answer any more.
            () = cancelled => Err(HttpError::Cancelled),
            r = self.answer(handler) => r,
        }
    }

    /// [`Self::serve`] without the cancellation: a handler that takes too long is answered
    /// with 500.
    async fn answer<F, Fut>(self, handler: F) -> Result<(), HttpError>
    where
        F: Fn(http::Request<Body>) -> Fut,
        Fut: Future<Output = http::Response<Body>>,
    {
        let timeout = self.config.response_timeout;
        let (request, responder) = self.read().await?;
        let response = match tokio::time::timeout(timeout, handler(request)).await {
            Ok(r) => r,
            Err(_) => {
                warn!(?timeout, "http handler timed out; answering 500");
                let mut r = http::Response::new(Body::empty());
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        responder.send(response).await
    }
}

/// Where a request's response goes.
#[derive(Debug)]
pub struct Responder {
    request_id: String,
    address: String,
    endpoint: Endpoint,
    reply: Reply,
    idle: Duration,
    /// Keeps the request cancellable until the response is sent.
    cancel: CancelGuard,
}

#[derive(Debug)]
enum Reply {
    /// Inline request: small responses on the control channel, others on a rendezvous.
    Control(mpsc::Sender<OutgoingResponse>),
    /// The request came over this rendezvous and must be answered on it (spec §6.3).
    Rendezvous(Box<FrameWriter>),
}

impl Responder {
    /// Completes when the gateway cancels the request (see [`IncomingRequest::cancelled`]);
    /// the response can then be dropped instead of sent.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.cancel.token().clone().cancelled_owned()
    }

    /// Sends `response`: on the control channel when the request came there and the body is
    /// complete within [`MAX_INLINE_RESPONSE`] bytes, else on the rendezvous, as one binary
    /// message fragmented as the body's chunks arrive.
    ///
    /// # Errors
    /// The control channel is gone, the rendezvous failed, the body failed or stalled.
    ///
    /// # Cancel safety
    /// Not cancel safe: a response cut short fails the sender's request.
    pub async fn send(self, response: http::Response<Body>) -> Result<(), HttpError> {
        // Held to the end: the request stays cancellable while its body streams.
        let _cancel = self.cancel;
        let (parts, mut body) = response.into_parts();
        let head = Response {
            request_id: self.request_id,
            status_code: parts.status.as_u16(),
            status_description: parts.status.canonical_reason().map(str::to_owned),
            response_headers: to_headers(&parts.headers),
            body: false,
        };
        let ws = match self.reply {
            Reply::Control(control) => {
                // Buffer up to the inline limit: a body that ends within it goes inline. One
                // still streaming after INLINE_WAIT switches to the rendezvous with what it
                // has, as .NET's flush timer does, so a slow stream is not held back.
                let switch_at = Instant::now() + INLINE_WAIT;
                let mut buffered = Vec::new();
                let mut len = 0;
                let mut ended = false;
                while len <= MAX_INLINE_RESPONSE {
                    let wait = switch_at.saturating_duration_since(Instant::now());
                    let next = if body.exact_len().is_some() {
                        // A full body is there already: no timer needed.
                        next_chunk(&mut body, self.idle).await?
                    } else {
                        match tokio::time::timeout(wait, next_chunk(&mut body, self.idle)).await {
                            Ok(next) => next?,
                            Err(_) => break,
                        }
                    };
                    match next {
                        Some(chunk) => {
                            len += chunk.len();
                            buffered.push(chunk);
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                if ended && len <= MAX_INLINE_RESPONSE {
                    let body = (len > 0).then(|| concat(buffered, len));
                    let out = OutgoingResponse {
                        response: head,
                        body,
                    };
                    return tokio::time::timeout(self.idle, control.send(out))
                        .await
                        .map_err(|_| HttpError::Timeout(self.idle))?
                        .map_err(|_| HttpError::Closed);
                }
                // Only written to: the reader half is dropped.
                let (_, mut ws) =
                    Rendezvous::open(&self.endpoint, &self.address, self.idle).await?;
                ws.send_head(head, self.idle).await?;
                for chunk in buffered {
                    ws.send_fragment(chunk, self.idle).await?;
                }
                ws
            }
            Reply::Rendezvous(ws) => {
                let mut ws = *ws;
                if body.exact_len() == Some(0) {
                    // No body message at all: the gateway then answers with Content-Length: 0,
                    // not an empty chunked body, which some clients (Mono's one-way
                    // basicHttp among them) take for a message to parse.
                    return ws.send_bodiless(head, self.idle).await;
                }
                ws.send_head(head, self.idle).await?;
                ws
            }
        };
        let mut ws = ws;
        while let Some(chunk) = next_chunk(&mut body, self.idle).await? {
            ws.send_fragment(chunk, self.idle).await?;
        }
        ws.finish(self.idle).await
    }
}

/// The next non-empty chunk of `body`, under the idle timeout.
async fn next_chunk(body: &mut Body, idle: Duration) -> Result<Option<Bytes>, HttpError> {
    loop {
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return Err(HttpError::Timeout(idle)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(HttpError::Body(e)),
            Ok(Some(Ok(c))) if c.is_empty() => {}
            Ok(Some(Ok(c))) => return Ok(Some(c)),
        }
    }
}

fn concat(chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(len);
    for c in chunks {
        buf.extend_from_slice(&c);
    }
    buf.freeze()
}

/// A rendezvous WebSocket for one request (`sb-hc-action=request`), read and written with
/// `ferry_net`'s frame codec so that bodies stream both ways: the request body is read as the
/// handler pulls it (TCP backpressure reaches the gateway), and the response body is written
/// as fragments of one binary message as its chunks arrive (spec §4.1).
struct Rendezvous;

impl Rendezvous {
    /// Opens the rendezvous; `idle` bounds each read and write on it.
    async fn open(
        endpoint: &Endpoint,
        address: &str,
        idle: Duration,
    ) -> Result<(FrameReader, FrameWriter), HttpError> {
        let upgraded = transport::open(endpoint, address, &[])
            .await
            .map_err(HttpError::Rendezvous)?;
        let (rd, wr) = tokio::io::split(upgraded.io);
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        let pong = Pongs {
            wr: wr.clone(),
            out: Vec::new(),
            idle,
        };
        let reader = FrameReader {
            messages: MessageReader::client(rd, &upgraded.rest, READ_CHUNK, pong),
        };
        let writer = FrameWriter {
            wr,
            started: false,
            out: Vec::new(),
        };
        Ok((reader, writer))
    }
}

/// The write half of the rendezvous transport, shared by the reader (for pongs) and the
/// writer; each frame is written whole under the lock.
type SharedWrite = Arc<tokio::sync::Mutex<WriteHalf<Transport>>>;

/// Answers the gateway's pings on a rendezvous.
struct Pongs {
    wr: SharedWrite,
    out: Vec<u8>,
    idle: Duration,
}

impl Pong for Pongs {
    async fn pong(&mut self, payload: &[u8]) -> std::io::Result<()> {
        write_frame(
            &self.wr,
            Opcode::Pong,
            true,
            payload,
            &mut self.out,
            self.idle,
        )
        .await
        .map_err(std::io::Error::other)
    }
}

/// Reads the gateway's messages on a rendezvous.
struct FrameReader {
    messages: MessageReader<ReadHalf<Transport>, Pongs>,
}

/// `f`, one read of a rendezvous, within the idle timeout.
async fn read_within<T>(
    idle: Duration,
    f: impl Future<Output = Result<T, ReadError>>,
) -> Result<T, HttpError> {
    tokio::time::timeout(idle, f)
        .await
        .map_err(|_| HttpError::Timeout(idle))?
        .map_err(HttpError::Read)
}

impl FrameReader {
    /// A whole text message of at most `limit` bytes.
    async fn text(&mut self, limit: usize, idle: Duration) -> Result<String, HttpError> {
        // The limit is checked per frame header: a huge declared length costs nothing.
        let kind = read_within(idle, self.messages.next_message(limit as u64)).await?;
        if kind != MessageKind::Text {
            return Err(HttpError::Protocol("expected a text message".into()));
        }
        let mut text = Vec::new();
        while let Some(chunk) = read_within(idle, self.messages.next_chunk()).await? {
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).map_err(|_| HttpError::Protocol("text is not utf-8".into()))
    }

    /// The request body: the next message, which must be binary, as a streamed [`Body`].
    async fn body(mut self, idle: Duration) -> Result<Body, HttpError> {
        let kind = read_within(idle, self.messages.next_message(u64::MAX)).await?;
        if kind != MessageKind::Binary {
            return Err(HttpError::Protocol("expected the body message".into()));
        }
        let state = BodyReader {
            frames: Some(self),
            done: false,
            idle,
            draining: false,
        };
        Ok(Body::from_stream(futures_util::stream::unfold(
            state,
            |mut b| async move {
                match b.next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), b)),
                    Ok(None) => None,
                    Err(e) => {
                        b.done = true;
                        Some((Err(e), b))
                    }
                }
            },
        )))
    }
}

/// Reads one binary message's fragments as body chunks.
struct BodyReader {
    /// `None` only while being dropped.
    frames: Option<FrameReader>,
    done: bool,
    idle: Duration,
    /// This reader is the background drain: its own drop must not start another (which,
    /// as a runtime shutting down drops new tasks at once, would recurse).
    draining: bool,
}

impl BodyReader {
    async fn next(&mut self) -> Result<Option<Bytes>, HttpError> {
        if self.done {
            return Ok(None);
        }
        let frames = self.frames.as_mut().ok_or(HttpError::Closed)?;
        let chunk = read_within(self.idle, frames.messages.next_chunk()).await?;
        self.done = chunk.is_none();
        Ok(chunk)
    }
}

impl Drop for BodyReader {
    /// A body dropped before its end (the handler answered without reading it all) is
    /// drained in the background: the gateway writes the whole request before it reads the
    /// response (spec §6.3), so closing the socket under it would lose the response.
    fn drop(&mut self) {
        if self.done || self.draining {
            return;
        }
        let Some(frames) = self.frames.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rest = Self {
            frames: Some(frames),
            done: false,
            idle: self.idle,
            draining: true,
        };
        // Bounded by the idle timeout on every read and by the gateway's body limit.
        runtime.spawn(async move { while let Ok(Some(_)) = rest.next().await {} });
    }
}

/// Writes the response on a rendezvous: the `response` JSON, then the body as one binary
/// message in fragments.
struct FrameWriter {
    wr: SharedWrite,
    /// Whether the body message was started (its first fragment sent).
    started: bool,
    /// Reused encoding buffer: one frame at most.
    out: Vec<u8>,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl FrameWriter {
    /// Sends the `response` JSON announcing a body (a streamed body may turn out empty:
    /// it is still sent as one, empty, binary message).
    async fn send_head(&mut self, head: Response, idle: Duration) -> Result<(), HttpError> {
        self.send_response(head, true, idle).await
    }

    /// Sends a `response` without a body and closes the rendezvous.
    async fn send_bodiless(mut self, head: Response, idle: Duration) -> Result<(), HttpError> {
        self.send_response(head, false, idle).await?;
        self.close(idle).await;
        Ok(())
    }

    async fn send_response(
        &mut self,
        mut head: Response,
        body: bool,
        idle: Duration,
    ) -> Result<(), HttpError> {
        head.body = body;
        let text = Command::Response(head).encode();
        write_frame(
            &self.wr,
            Opcode::Text,
            true,
            text.as_bytes(),
            &mut self.out,
            idle,
        )
        .await
    }

    /// Sends `chunk` as non-final fragments of the body message.
    async fn send_fragment(&mut self, chunk: Bytes, idle: Duration) -> Result<(), HttpError> {
        for piece in chunk.chunks(MAX_FRAGMENT) {
            let opcode = self.data_opcode();
            write_frame(&self.wr, opcode, false, piece, &mut self.out, idle).await?;
        }
        Ok(())
    }

    fn data_opcode(&mut self) -> Opcode {
        if std::mem::replace(&mut self.started, true) {
            Opcode::Continuation
        } else {
            Opcode::Binary
        }
    }

    /// Ends the body message with an empty final fragment (as .NET does) and closes the
    /// rendezvous, as the .NET listener does after every response (spec §6.4).
    async fn finish(mut self, idle: Duration) -> Result<(), HttpError> {
        let opcode = self.data_opcode();
        write_frame(&self.wr, opcode, true, &[], &mut self.out, idle).await?;
        self.close(idle).await;
        Ok(())
    }

    /// Closes the rendezvous once the response is complete.
    async fn close(mut self, idle: Duration) {
        let mut payload = Vec::new();
        encode_close_payload(CLOSE_NORMAL, "", &mut payload);
        // The response is complete; a gateway slow to take the Close costs nothing more.
        let _ = write_frame(&self.wr, Opcode::Close, true, &payload, &mut self.out, idle).await;
        let mut wr = self.wr.lock().await;
        let _ = tokio::time::timeout(idle, wr.shutdown()).await;
    }
}

/// Encodes one masked client frame into `out` and writes it whole.
async fn write_frame(
    wr: &SharedWrite,
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
    out: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), HttpError> {
    message::encode(Role::Client, fin, opcode, payload, out);
    let mut wr = wr.lock().await;
    tokio::time::timeout(idle, async {
        wr.write_all(out).await?;
        wr.flush().await
    })
    .await
    .map_err(|_| HttpError::Timeout(idle))?
    .map_err(|e| HttpError::WebSocket(e.to_string()))
}

/// Builds the application's request from a full `request` command and its body.
fn to_http_request(r: &Request, body: Bytes) -> Result<http::Request<Body>, HttpError> {
    let bad = |what: &str| HttpError::Protocol(format!("request with {what}"));
    let method = r.method.as_deref().ok_or_else(|| bad("no method"))?;
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| bad("a bad method"))?;
    let target = r.request_target.as_deref().unwrap_or("/");
    let uri: http::Uri = target.parse().map_err(|_| bad("a bad target"))?;
    let mut request = http::Request::new(Body::from(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (name, value) in r.request_headers.iter().flatten() {
        // A header that is not valid HTTP cannot be handed on; drop it rather than the
        // whole request (the .NET SDK does the same).
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => debug!(header = %name, "invalid request header dropped"),
        }
    }
    request.extensions_mut().insert(RequestId(r.id.clone()));
    if let Some(remote) = &r.remote_endpoint {
        request
            .extensions_mut()
            .insert::<RemoteEndpoint>(remote.clone());
    }
    Ok(request)
}

/// The response headers as the wire carries them: repeated headers joined with `", "`, as
/// the .NET SDK sends them (spec §3).
fn to_headers(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}
