//! The gRPC ingress: HTTP/2 calls with `content-type: application/grpc` on the gateway's HTTP
//! port (h2 over TLS by ALPN, or h2c) are routed to a hybrid connection path and relayed over
//! one HTTP/2 connection per listener, which multiplexes every call sent to that listener.
//!
//! ```text
//!  gRPC client ══ h2 ══► gateway ── route: ferry-path metadata, else service → path (config)
//!                         │         auth:  SAS token in `authorization` metadata
//!                         │         pick a listener on the path (random)
//!                         └─► that listener's relayed HTTP/2 connection (opened on first use:
//!                             an `accept` with a rendezvous address; the listener serves h2
//!                             on the WebSocket it opens, the gateway is the h2 client)
//! ```
//!
//! Status codes, metadata, trailers and streaming pass through untouched. The gateway adds
//! what a proxy must own:
//! - `grpc-timeout` is enforced here too (DEADLINE_EXCEEDED), besides being passed on;
//! - a caller that resets its stream or goes away resets the call on the listener's
//!   connection (hyper drops the forwarded request, h2 sends RST_STREAM);
//! - a listener connection that fails mid-call ends the call with UNAVAILABLE at once;
//! - each message's length prefix is checked both ways against
//!   [`Limits::max_grpc_message`](crate::Limits::max_grpc_message): RESOURCE_EXHAUSTED;
//! - refusals are gRPC statuses in a trailers-only response: UNIMPLEMENTED for a service
//!   with no route, NOT_FOUND for a route to a path that does not exist, UNAUTHENTICATED /
//!   PERMISSION_DENIED for tokens, UNAVAILABLE when no listener is connected or its
//!   connection cannot be opened.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use ferry_hc::Command;
use ferry_hc::address::{self, Action};
use ferry_hc::auth::AuthError;
use ferry_hc::command::{Accept, Headers, RemoteEndpoint};
use ferry_net::stream::WsStream;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::body::{Frame, SizeHint};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep, timeout};
use tracing::{Instrument as _, debug, info};

use crate::front::Shared;
use crate::registry::{ListenerHandle, Pending, PickError, Rendezvous, new_id, new_key};

/// The metadata key that names the hybrid connection path explicitly (it wins over the
/// configured service routes).
pub const PATH_METADATA: &str = "ferry-path";

/// gRPC status codes (the subset the gateway itself produces), as `grpc-status` carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    Cancelled = 1,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unimplemented = 12,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// A call the gateway ends itself.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    code: Code,
    message: String,
}

impl Failure {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The trailers (or, for a trailers-only response, the headers) that carry it.
    fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from(self.code as u16));
        if let Ok(v) = HeaderValue::from_str(&percent_encode_message(&self.message)) {
            map.insert("grpc-message", v);
        }
        map
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        let code = if e.status() == 403 {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        Self::new(code, e.to_string())
    }
}

/// The relayed HTTP/2 connections, one per listener control connection.
#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    generation: AtomicU64,
}

/// One listener's connection: the ready handle, and a lock held while (re)connecting so a
/// burst of calls opens one connection, not one each.
#[derive(Default)]
struct Slot {
    ready: Mutex<Option<(u64, SendRequest<UpBody>)>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
}

impl Pool {
    fn slot(&self, conn_id: u64) -> Arc<Slot> {
        lock(&self.slots).entry(conn_id).or_default().clone()
    }

    /// Forgets connection `generation` of a listener once it ended.
    fn ended(&self, conn_id: u64, generation: u64) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&conn_id) {
            let mut ready = lock(&slot.ready);
            if ready.as_ref().is_some_and(|(g, _)| *g == generation) {
                *ready = None;
            }
            let idle = ready.is_none();
            drop(ready);
            if idle && Arc::strong_count(slot) == 1 {
                slots.remove(&conn_id);
            }
        }
    }

    /// Lets a listener's connection go once its control channel is gone: no call can pick
    /// it any more, so when the calls on it finish and the last handle drops, hyper closes
    /// it (otherwise keep-alive pings would hold it, and the listener's permit, for ever).
    pub(crate) fn forget(&self, conn_id: u64) {
        let slot = lock(&self.slots).remove(&conn_id);
        if let Some(slot) = slot {
            lock(&slot.ready).take();
        }
    }

    /// Relayed connections open now.
    pub(crate) fn open_count(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| lock(&s.ready).is_some())
            .count()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a map or option operation: a panic cannot leave it torn.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a request is a gRPC call (HTTP/2, `application/grpc[+proto|...]`).
pub(crate) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.strip_prefix("application/grpc")
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
            })
}

/// HTTP/2 frames on the listener connection may be this large (the listener sends fewer,
/// larger DATA frames: fewer WebSocket messages and syscalls per byte).
const MAX_FRAME: u32 = 256 * 1024;

/// The forwarded request body: the caller's, with each message's length checked.
type UpBody = Checked<Incoming>;

/// Relays one gRPC call. Never fails at the HTTP level: refusals are gRPC statuses.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> http::Response<crate::http::Body> {
    let deadline = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| parse_timeout(v.as_bytes()))
        .map(|d| Instant::now() + d);
    match call(shared, peer, req, deadline).await {
        Ok(response) => response,
        Err(failure) => {
            debug!(code = ?failure.code, message = %failure.message, "grpc call refused");
            trailers_only(&failure)
        }
    }
}

async fn call(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
    deadline: Option<Instant>,
) -> Result<http::Response<crate::http::Body>, Failure> {
    let (mut parts, body) = req.into_parts();
    let service = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let path = match parts.headers.get(PATH_METADATA).map(HeaderValue::to_str) {
        Some(Ok(p)) => address::decode_path(p.trim_matches('/'))
            .map_err(|e| Failure::new(Code::NotFound, e.to_string()))?,
        Some(Err(_)) => return Err(Failure::new(Code::NotFound, "invalid ferry-path")),
        None => shared
            .config
            .grpc_routes
            .iter()
            .find(|r| r.service == service)
            .map(|r| r.path.trim_matches('/').to_owned())
            .ok_or_else(|| {
                Failure::new(
                    Code::Unimplemented,
                    format!("no route for service {service}"),
                )
            })?,
    };
    if path.is_empty() {
        return Err(Failure::new(Code::NotFound, "empty hybrid connection path"));
    }

    let token = token(&parts.headers);
    let Some(settings) = shared.registry.sender_path(&path) else {
        // As for other senders: a dynamic path's existence is only revealed to a caller
        // with a valid token.
        if shared.config.dynamic_paths {
            let namespace = shared.registry.namespace_settings();
            authorize(shared, peer, &namespace, token.as_deref(), &path)?;
            return Err(Failure::new(Code::Unavailable, "no listener is connected"));
        }
        return Err(Failure::new(
            Code::NotFound,
            format!("no hybrid connection {path}"),
        ));
    };
    if !settings.anonymous_senders {
        authorize(shared, peer, &settings, token.as_deref(), &path)?;
    }
    let listener = match shared.registry.pick(&settings.name, None, &[]) {
        Ok(l) => l,
        Err(PickError::NoListener | PickError::NoneMatch) => {
            return Err(Failure::new(Code::Unavailable, "no listener is connected"));
        }
    };

    let wait = async {
        let mut send = connection(shared, &listener, &settings.name).await?;
        send.ready()
            .await
            .map_err(|e| Failure::new(Code::Unavailable, format!("listener connection: {e}")))?;
        Ok::<_, Failure>(send)
    };
    let mut send = within(deadline, wait).await?;

    // `authorization` is the service's own metadata unless it carried the relay token.
    let token_in_authorization =
        !settings.anonymous_senders && !parts.headers.contains_key("servicebusauthorization");
    // Forward: same method, path and metadata, minus hop-by-hop headers and the token.
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "servicebusauthorization",
        PATH_METADATA,
    ] {
        parts.headers.remove(name);
    }
    if token_in_authorization {
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let authority = parts
        .uri
        .authority()
        .cloned()
        .unwrap_or_else(|| http::uri::Authority::from_static("ferry.relay"));
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path_and_query);
    parts.uri = http::Uri::from_parts(uri)
        .map_err(|_| Failure::new(Code::Internal, "cannot rebuild the request URI"))?;
    let abort = Arc::new(OnceLock::new());
    let limit = shared.config.limits.max_grpc_message as u64;
    let up = http::Request::from_parts(
        parts,
        Checked {
            inner: body,
            scan: Scanner::default(),
            limit,
            abort: abort.clone(),
            side: "request",
        },
    );
    let response = within(deadline, async {
        send.send_request(up).await.map_err(|e| {
            abort
                .get()
                .cloned()
                .unwrap_or_else(|| Failure::new(Code::Unavailable, format!("listener: {e}")))
        })
    })
    .await?;

    let (mut parts, body) = response.into_parts();
    for name in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
        parts.headers.remove(name);
    }
    let body = Reply {
        inner: Checked {
            inner: body,
            scan: Scanner::default(),
            limit,
            abort: abort.clone(),
            side: "response",
        },
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        finished: false,
    };
    Ok(http::Response::from_parts(parts, body.boxed()))
}

/// Runs `f` until the call's deadline, if it has one.
async fn within<T>(
    deadline: Option<Instant>,
    f: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match deadline {
        None => f.await,
        Some(d) => tokio::time::timeout_at(d, f)
            .await
            .unwrap_or_else(|_| Err(Failure::new(Code::DeadlineExceeded, "deadline exceeded"))),
    }
}

/// The SAS token: `authorization` metadata (optionally `Bearer `), or `ServiceBusAuthorization`.
fn token(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("servicebusauthorization")
        .or_else(|| text("authorization"))
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t).trim().to_owned())
}

fn authorize(
    shared: &Shared,
    peer: SocketAddr,
    settings: &crate::registry::PathSettings,
    token: Option<&str>,
    path: &str,
) -> Result<(), Failure> {
    if shared.admission.blocked(peer.ip()) {
        return Err(Failure::new(
            Code::ResourceExhausted,
            "too many failed authentications; retry later",
        ));
    }
    Ok(shared.authorize_sender(peer, settings, token, path)?)
}

/// The listener's relayed connection: the open one, or a new one.
async fn connection(
    shared: &Arc<Shared>,
    listener: &ListenerHandle,
    path: &str,
) -> Result<SendRequest<UpBody>, Failure> {
    let slot = shared.grpc.slot(listener.conn_id);
    let current = || {
        lock(&slot.ready)
            .as_ref()
            .filter(|(_, s)| !s.is_closed())
            .map(|(_, s)| s.clone())
    };
    if let Some(send) = current() {
        return Ok(send);
    }
    let connecting = slot.connecting.clone().lock_owned().await;
    if let Some(send) = current() {
        return Ok(send);
    }
    // The connection is shared, so opening it is not the first caller's to cancel: it runs
    // in a task of its own, holding the lock, and a caller that gives up (its deadline, a
    // reset) leaves it to finish for the calls behind it instead of making the listener
    // open rendezvous after rendezvous.
    let generation = shared.grpc.generation.fetch_add(1, Ordering::Relaxed);
    let task = {
        let (shared, listener, path) = (shared.clone(), listener.clone(), path.to_owned());
        shared.clone().tracker.spawn(async move {
            let _connecting = connecting;
            let send = open(&shared, &listener, &path, generation).await?;
            *lock(&slot.ready) = Some((generation, send.clone()));
            Ok(send)
        })
    };
    task.await
        .map_err(|_| Failure::new(Code::Unavailable, "opening the listener connection failed"))?
}

/// Asks the listener to open a rendezvous, and speaks HTTP/2 (as the client) over it.
async fn open(
    shared: &Arc<Shared>,
    listener: &ListenerHandle,
    path: &str,
    generation: u64,
) -> Result<SendRequest<UpBody>, Failure> {
    let unavailable = |why: &str| Failure::new(Code::Unavailable, why.to_owned());
    let id = new_id();
    let key = new_key();
    let mut address = address::hc_url(&listener.base, path, "", Action::Accept, Some(&id));
    address.push_str("&sb-hc-rendezvous=");
    address.push_str(&key);
    let (reply_tx, reply_rx) = oneshot::channel();
    shared.registry.insert_pending(
        key.clone(),
        Pending {
            id: id.clone(),
            reply: reply_tx,
        },
    );
    let _pending = PendingKey {
        shared: shared.as_ref(),
        key,
    };
    let mut connect_headers = Headers::new();
    connect_headers.insert("Ferry-Ingress".into(), "grpc".into());
    let accept = Command::Accept(Accept {
        address,
        id: id.clone(),
        connect_headers,
        remote_endpoint: None::<RemoteEndpoint>,
    });
    listener
        .commands
        .try_send(accept.into())
        .map_err(|_| unavailable("the listener is not keeping up"))?;
    let rendezvous = match timeout(shared.config.timeouts.rendezvous, reply_rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return Err(unavailable("the rendezvous was abandoned")),
        Err(_) => return Err(unavailable("the listener did not accept in time")),
    };
    let (conn, pre, permit) = match rendezvous {
        Rendezvous::Accepted {
            conn, pre, permit, ..
        } => (conn, pre, permit),
        Rendezvous::Rejected {
            status,
            description,
        } => {
            return Err(unavailable(&format!(
                "the listener refused: {status} {description}"
            )));
        }
    };
    let mut ws = WsStream::server(conn, &pre);
    ws.set_max_message_size(
        usize::try_from(shared.config.limits.max_message).unwrap_or(usize::MAX),
    );
    let keepalive = shared.config.timeouts.keepalive;
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_header_list_size(
            u32::try_from(shared.config.limits.max_header_bytes).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true)
        .max_frame_size(MAX_FRAME)
        .handshake(TokioIo::new(ws));
    let (send, connection) = timeout(shared.config.timeouts.handshake, handshake)
        .await
        .map_err(|_| unavailable("http/2 handshake with the listener timed out"))?
        .map_err(|e| unavailable(&format!("http/2 handshake with the listener: {e}")))?;
    info!(path, listener = %listener.id, conn = %id, "grpc connection to listener opened");
    let task_shared = shared.clone();
    let conn_id = listener.conn_id;
    shared.tracker.spawn(
        async move {
            let _permit = permit;
            tokio::select! {
                r = connection => match r {
                    Ok(()) => debug!(conn = %id, "grpc connection to listener ended"),
                    Err(e) => info!(conn = %id, error = %e, "grpc connection to listener failed"),
                },
                () = task_shared.cancel.cancelled() => {}
            }
            task_shared.grpc.ended(conn_id, generation);
        }
        .instrument(tracing::Span::current()),
    );
    Ok(send)
}

/// Removes a rendezvous key nobody took.
struct PendingKey<'a> {
    shared: &'a Shared,
    key: String,
}

impl Drop for PendingKey<'_> {
    fn drop(&mut self) {
        drop(self.shared.registry.take_pending(&self.key));
    }
}

/// A response with no body whose headers carry the status (gRPC's "trailers-only").
fn trailers_only(failure: &Failure) -> http::Response<crate::http::Body> {
    let mut response = http::Response::new(crate::http::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.extend(failure.headers());
    response
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-message` encoding: printable ASCII except `%` as is, everything else `%XX`.
fn percent_encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Follows the 5-byte length prefixes of gRPC messages through a byte stream.
#[derive(Default)]
struct Scanner {
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
}

impl Scanner {
    /// Consumes `data`; `Err(len)` names the first message longer than `limit`.
    fn feed(&mut self, mut data: &[u8], limit: u64) -> Result<(), u64> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(5 - self.have);
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u64::from(u32::from_be_bytes([a, b, c, d]));
                if len > limit {
                    return Err(len);
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

/// A body whose gRPC messages are checked against the size limit; an oversized one ends
/// the call with RESOURCE_EXHAUSTED (recorded in `abort`, so the reply can say so).
pub(crate) struct Checked<B> {
    inner: B,
    scan: Scanner,
    limit: u64,
    abort: Arc<OnceLock<Failure>>,
    side: &'static str,
}

/// Why a checked body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// A message over the limit.
    #[error("grpc {side} message of {len} bytes is over the {limit}-byte limit")]
    TooBig {
        side: &'static str,
        len: u64,
        limit: u64,
    },
    /// The stream failed underneath.
    #[error(transparent)]
    Transport(#[from] hyper::Error),
}

impl<B> hyper::body::Body for Checked<B>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Err(len) = this.scan.feed(data, this.limit)
        {
            let e = BodyError::TooBig {
                side: this.side,
                len,
                limit: this.limit,
            };
            let _ = this
                .abort
                .set(Failure::new(Code::ResourceExhausted, e.to_string()));
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The caller's view of the listener's reply: passed through, except that a failure or the
/// deadline ends it with trailers carrying the right status rather than a reset.
struct Reply {
    inner: Checked<Incoming>,
    deadline: Option<Pin<Box<Sleep>>>,
    finished: bool,
}

impl Reply {
    fn finish(&mut self, failure: &Failure) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.finished = true;
        Poll::Ready(Some(Ok(Frame::trailers(failure.headers()))))
    }
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return this.finish(&Failure::new(Code::DeadlineExceeded, "deadline exceeded"));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if frame.is_trailers() {
                    this.finished = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let failure = this.inner.abort.get().cloned().unwrap_or_else(|| {
                    let why = match &e {
                        BodyError::Transport(t) if t.is_canceled() => Code::Cancelled,
                        _ => Code::Unavailable,
                    };
                    Failure::new(why, format!("listener connection lost: {e}"))
                });
                this.finish(&failure)
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        // A trailers-only answer (HEADERS with END_STREAM, how errors usually come) must
        // leave as one too: a client may not accept an empty DATA frame ending it instead.
        self.finished || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_timeout(b"200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"m", b"123456789S", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scanner_follows_prefixes_split_anywhere() {
        let mut stream = Vec::new();
        for len in [0u32, 3, 70_000, 5] {
            stream.push(0);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for piece in [1usize, 2, 5, 7, 4096, stream.len()] {
            let mut s = Scanner::default();
            for chunk in stream.chunks(piece) {
                s.feed(chunk, 70_000).unwrap();
            }
            assert_eq!((s.have, s.remaining), (0, 0));
            let mut s = Scanner::default();
            let err = stream.chunks(piece).try_for_each(|c| s.feed(c, 69_999));
            assert_eq!(err, Err(70_000));
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode_message("no listener"), "no listener");
        assert_eq!(percent_encode_message("50% é\n"), "50%25 %C3%A9%0A");
    }
}
