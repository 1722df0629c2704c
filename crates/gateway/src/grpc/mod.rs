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

pub(crate) mod body;
pub(crate) mod pool;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_hc::address;
use ferry_hc::command::Headers;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::{Instant, timeout};
use tracing::{Instrument as _, debug, info};

use self::body::{Checked, Code, Failure, Reply, Scanner};
use self::pool::{UpBody, lock};
use crate::body::{Body, empty};
use crate::diagnostics;
use crate::pairing::{Choice, Destination, Intent, ListenerHandle, PairError, PathSettings};
use crate::state::Shared;

/// The metadata key that names the hybrid connection path explicitly (it wins over the
/// configured service routes).
pub const PATH_METADATA: &str = "ferry-path";

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

/// Relays one gRPC call. Never fails at the HTTP level: refusals are gRPC statuses.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let deadline = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| parse_timeout(v.as_bytes()))
        .map(|d| Instant::now() + d);
    let started = Instant::now();
    // The hybrid connection the call reached, once known (metrics and events name it).
    let mut entity = String::new();
    let outcome = call(shared, peer, req, deadline, &mut entity).await;
    // Calls are counted as HTTP requests: their head's status, or the one a refusal's code
    // stands for.
    let status = match &outcome {
        Ok(response) => response.status().as_u16(),
        Err(failure) => failure.code.http_status(),
    };
    let elapsed = started.elapsed().as_secs_f64();
    shared.metrics.http_request(&entity, status, elapsed);
    match outcome {
        Ok(response) => response,
        Err(mut failure) => {
            debug!(code = ?failure.code, message = %failure.message, "grpc call refused");
            shared.metrics.refused(&entity, status, &failure.message);
            let operation = diagnostics::Operation::of_refusal(status, false);
            failure.message =
                diagnostics::refusal(shared, operation, &entity, peer, status, &failure.message);
            trailers_only(&failure)
        }
    }
}

async fn call(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
    deadline: Option<Instant>,
    entity: &mut String,
) -> Result<http::Response<Body>, Failure> {
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
    let settings = match shared.pairing.destination(&path) {
        Destination::Path(settings) => settings,
        // As for other senders: a dynamic path's existence is only revealed to a caller
        // with a valid token.
        Destination::Unlistened(namespace) => {
            authorize(shared, peer, &namespace, token.as_deref(), &path)?;
            return Err(Failure::new(Code::Unavailable, "no listener is connected"));
        }
        Destination::Unknown => {
            return Err(Failure::new(
                Code::NotFound,
                format!("no hybrid connection {path}"),
            ));
        }
    };
    entity.clone_from(&settings.name);
    // The path's IP rules hold for anonymous senders too.
    crate::auth::path_admits(&settings, peer)?;
    if !settings.anonymous_senders {
        authorize(shared, peer, &settings, token.as_deref(), &path)?;
    }
    let listener = shared
        .pairing
        .pick(&settings, &Choice::any())
        .map_err(|_| Failure::new(Code::Unavailable, "no listener is connected"))?;

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
    let limit = shared.tuning().limits.max_grpc_message as u64;
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
    settings: &PathSettings,
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
    let mut connect_headers = Headers::new();
    connect_headers.insert("Ferry-Ingress".into(), "grpc".into());
    let intent = Intent {
        path,
        app_query: "",
        id: None,
        connect_headers,
        remote: None,
    };
    let offer = shared
        .pairing
        .offer(listener, intent)
        .map_err(|e| match e {
            PairError::Busy => unavailable("the listener is not keeping up"),
            _ => unavailable("no listener is connected"),
        })?;
    let id = offer.id().to_owned();
    let paired = offer.wait().await.map_err(|e| match e {
        PairError::TimedOut => unavailable("the listener did not accept in time"),
        PairError::Rejected {
            status,
            description,
        } => unavailable(&format!("the listener refused: {status} {description}")),
        _ => unavailable("the rendezvous was abandoned"),
    })?;
    let (ws, permit) = paired.into_stream(shared.tuning().limits.max_message);
    let keepalive = shared.tuning().timeouts.keepalive;
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_header_list_size(
            u32::try_from(shared.tuning().limits.max_header_bytes).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true)
        .max_frame_size(MAX_FRAME)
        .handshake(TokioIo::new(ws));
    let (send, connection) = timeout(shared.tuning().timeouts.handshake, handshake)
        .await
        .map_err(|_| unavailable("http/2 handshake with the listener timed out"))?
        .map_err(|e| unavailable(&format!("http/2 handshake with the listener: {e}")))?;
    info!(path, listener = %listener.id, conn = %id, "grpc connection to listener opened");
    let task_shared = shared.clone();
    let listener = listener.clone();
    shared.tracker.spawn(
        async move {
            let _permit = permit;
            let ended = |r: Result<(), hyper::Error>| match r {
                Ok(()) => debug!(conn = %id, "grpc connection to listener ended"),
                Err(e) => info!(conn = %id, error = %e, "grpc connection to listener failed"),
            };
            tokio::pin!(connection);
            tokio::select! {
                r = &mut connection => ended(r),
                () = task_shared.cancel.cancelled() => {}
                () = listener.gone() => {
                    // No call can pick the listener any more: let the connection go, so when
                    // the calls on it finish and the last handle drops, hyper closes it
                    // (otherwise keep-alive pings would hold it, and the listener's permit,
                    // for ever).
                    task_shared.grpc.forget(listener.conn_id);
                    tokio::select! {
                        r = &mut connection => ended(r),
                        () = task_shared.cancel.cancelled() => {}
                    }
                }
            }
            task_shared.grpc.ended(listener.conn_id, generation);
        }
        .instrument(tracing::Span::current()),
    );
    Ok(send)
}

/// A response with no body whose headers carry the status (gRPC's "trailers-only").
fn trailers_only(failure: &Failure) -> http::Response<Body> {
    let mut response = http::Response::new(empty());
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
}
