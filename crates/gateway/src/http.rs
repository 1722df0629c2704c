//! The Hybrid Connections HTTP front end (spec §2, §3, §6): `https://{ns}/{path}/...` requests
//! relayed to a listener as `request` commands, answered by `response` commands.
//!
//! ```text
//!  client ── HTTP/1.1 ──► hyper ─► auth ─► pick listener ─┬─► control: request JSON + body msg
//!                                                         └─► control: {request:{address,id}}
//!                                                             listener dials address (action
//!                                                             request): full request sent there
//!  client ◄── response ◄── response JSON (+ body msg) on the control channel or the rendezvous
//! ```
//!
//! Bodies up to 64 KiB travel inline on the control channel; larger ones go through a
//! rendezvous socket the listener opens, streamed both ways through bounded queues (413 past
//! the configured request limit).
//!
//! # Senders that go away
//! When a sender closes its connection or resets its HTTP/2 stream, hyper drops the request's
//! future. If no response head had arrived yet, the gateway then sends the listener a
//! `{"cancel":{"id":…}}` command (a Ferry extension, `ferry_hc::command::Cancel`), but only
//! when the listener listed `cancel` in the `Ferry-Features` header of its `listen` upgrade:
//! Azure's listeners never receive it. The same happens when the gateway itself gives up
//! (deadline, 504). A rendezvous the listener opened for the request is closed (1001), both
//! before the response head and while the response body streams, and a cancel-capable
//! listener is also sent `cancel` then, so it stops producing a body nobody will read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_hc::Command;
use ferry_hc::address::{self, HcQuery, encode_path};
use ferry_hc::auth::AuthError;
use ferry_hc::command::{Headers, RemoteEndpoint, Request, Response};
use ferry_net::conn::Conn;
use ferry_net::message::{MessageKind, MessageReader, write_frame};
use ferry_net::relay::write_close;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::body::{Body, full};
use crate::diagnostics;
use crate::handshake::{Head, respond, switch};
use crate::pairing::{
    CancelHandle, Choice, DeferredBody, Destination, HttpOutcome, HttpReply, Outbound, PairError,
    PendingHttp, ReplyBody, new_key,
};
use crate::state::Shared;

/// Largest body sent inline on the control channel (spec §4.3).
pub(crate) const INLINE_BODY_LIMIT: usize = 64 * 1024;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1, spec §3).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "close",
];

/// Where relayed HTTP requests carry their token (spec §2), besides `sb-hc-token`.
const AUTH_HEADER: &str = "ServiceBusAuthorization";

/// An error answer from the gateway itself (no `Via`: that is how clients tell it apart
/// from a listener's answer, spec §6.6).
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message: message.into(),
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

/// Relays one request to its listener; the gateway's own refusals are plain text.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let started = tokio::time::Instant::now();
    // The hybrid connection the request reached, once known (metrics label it so).
    let mut entity = String::new();
    let outcome = if shared.admission.blocked(peer.ip()) {
        // Blocked while open: a kept-alive connection gets no more guesses than a new one.
        Err(Refusal::new(
            429,
            "too many failed authentications; retry later",
        ))
    } else {
        relay(shared, peer, req, &mut entity).await
    };
    let status = match &outcome {
        Ok(response) => response.status(),
        Err(refusal) => refusal.status,
    };
    let elapsed = started.elapsed().as_secs_f64();
    shared
        .metrics
        .http_request(&entity, status.as_u16(), elapsed);
    match outcome {
        Ok(response) => response,
        Err(refusal) => {
            let status = refusal.status.as_u16();
            shared.metrics.refused(&entity, status, &refusal.message);
            let operation = diagnostics::Operation::of_refusal(status, false);
            let message =
                diagnostics::refusal(shared, operation, &entity, peer, status, &refusal.message);
            let mut response = http::Response::new(full(Bytes::from(message + "\n")));
            *response.status_mut() = refusal.status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}

/// The query of the .NET SDK's `GetRuntimeInformationAsync` (spec §1): a GET of the path
/// itself with it is answered by the gateway, not relayed.
const RUNTIME_INFORMATION_QUERY: &str = "api-version=2016-07";

/// The hybrid connection's description, as the .NET SDK reads it: an Atom entry whose content
/// is a `HybridConnectionDescription` with its live listener count. Any right on the path
/// (Listen, Send or Manage) may ask.
fn runtime_information(
    shared: &Shared,
    peer: SocketAddr,
    settings: &crate::pairing::PathSettings,
    token: Option<&str>,
    path: &str,
) -> Result<http::Response<Body>, Refusal> {
    use ferry_hc::auth::Right;

    crate::auth::path_admits(settings, peer)?;
    let hosts = shared.config.audience_hosts();
    let now = crate::auth::now_unix();
    // A token that is not genuine fails once; a genuine one is tried for each right in turn.
    let verdict = token.ok_or(AuthError::Missing).and_then(|t| {
        let check = |right| {
            settings
                .rules
                .authorize_any_host(t, &hosts, path, right, now)
        };
        let or_next = |right| {
            move |e| match e {
                AuthError::MissingRight(_) => check(right),
                e => Err(e),
            }
        };
        check(Right::Listen)
            .or_else(or_next(Right::Send))
            .or_else(or_next(Right::Manage))
    });
    if let Err(e) = verdict {
        shared.admission.auth_failed(peer.ip());
        shared.metrics.auth_failed(&e);
        return Err(e.into());
    }
    let key = crate::catalog::key(&settings.name);
    let described = shared.catalog.read(|model| {
        model.entities.get(&key).map(|e| {
            (
                e.created_ms,
                e.updated_ms,
                e.requires_client_authorization,
                e.user_metadata.clone(),
            )
        })
    });
    // A path that exists only while listened on (dynamic mode) has no record: it is as old
    // as now, and takes the namespace's rules.
    let now_ms = crate::catalog::model::now_ms();
    let (created, updated, requires_auth, metadata) =
        described.unwrap_or((now_ms, now_ms, !settings.anonymous_senders, String::new()));
    let listeners = shared.pairing.listener_count(&settings.name);
    let rfc3339 = crate::catalog::model::rfc3339;
    let escape = |s: &str| quick_xml::escape::escape(s).into_owned();
    let name = escape(&settings.name);
    let id = format!("https://{}/{name}", escape(&shared.config.namespace));
    let xml = format!(
        "<entry xmlns=\"http://www.w3.org/2005/Atom\"><id>{id}</id>\
         <title type=\"text\">{name}</title><updated>{updated_at}</updated>\
         <content type=\"application/xml\">\
         <HybridConnectionDescription \
         xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" \
         xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <CreatedAt>{created_at}</CreatedAt><UpdatedAt>{updated_at}</UpdatedAt>\
         <RequiresClientAuthorization>{requires_auth}</RequiresClientAuthorization>\
         <UserMetadata>{metadata}</UserMetadata><ListenerCount>{listeners}</ListenerCount>\
         </HybridConnectionDescription></content></entry>",
        created_at = rfc3339(created),
        updated_at = rfc3339(updated),
        metadata = escape(&metadata),
    );
    let mut response = http::Response::new(full(Bytes::from(xml)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/atom+xml;type=entry;charset=utf-8"),
    );
    Ok(response)
}

/// Removes `sb-hc-*` parameters from a query, returning the token among them.
fn split_query(query: Option<&str>) -> Result<(HcQuery, String), Refusal> {
    let q =
        HcQuery::parse(query.unwrap_or_default()).map_err(|e| Refusal::new(400, e.to_string()))?;
    let app = q.app_query.clone();
    Ok((q, app))
}

async fn relay(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
    entity: &mut String,
) -> Result<http::Response<Body>, Refusal> {
    if req.method() == http::Method::CONNECT {
        return Err(Refusal::new(405, "CONNECT is not relayed"));
    }
    let raw_path = req.uri().path().to_owned();
    let path = address::decode_path(&raw_path).map_err(|e| Refusal::new(400, e.to_string()))?;
    if path.is_empty() {
        return Err(Refusal::new(404, "no hybrid connection named"));
    }
    let (query, app_query) = split_query(req.uri().query())?;
    let (parts, body) = req.into_parts();

    // Token sources (spec §2): sb-hc-token and ServiceBusAuthorization are always removed;
    // Authorization is used (and removed) only when auth is on and neither was given.
    let sb_header = parts
        .headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let explicit = query.token.clone().or(sb_header);
    let settings = match shared.pairing.destination(&path) {
        Destination::Path(settings) => settings,
        // As for WebSocket senders: check the token before saying whether a dynamic path
        // exists.
        Destination::Unlistened(namespace) => {
            let token = explicit.or_else(|| header_text(&parts.headers, "authorization"));
            shared.authorize_sender(peer, &namespace, token.as_deref(), &path)?;
            return Err(Refusal::new(404, "no listener is connected"));
        }
        Destination::Unknown => return Err(Refusal::new(404, "no such hybrid connection")),
    };
    entity.clone_from(&settings.name);
    // The path's IP rules hold for anonymous senders too.
    crate::auth::path_admits(&settings, peer)?;
    if parts.method == http::Method::GET
        && app_query == RUNTIME_INFORMATION_QUERY
        && path.trim_matches('/').eq_ignore_ascii_case(&settings.name)
    {
        let token = explicit.or_else(|| header_text(&parts.headers, "authorization"));
        return runtime_information(shared, peer, &settings, token.as_deref(), &path);
    }
    let mut used_authorization = false;
    if !settings.anonymous_senders {
        let token = match explicit {
            Some(t) => Some(t),
            None => {
                used_authorization = true;
                header_text(&parts.headers, "authorization")
            }
        };
        shared.authorize_sender(peer, &settings, token.as_deref(), &path)?;
    }

    let choice = Choice::among(
        list_header(&parts.headers, "Microsoft-Relay-AllowedListeners"),
        list_header(&parts.headers, "Microsoft-Relay-DisallowedListeners").unwrap_or_default(),
    );
    let listener = match shared.pairing.pick(&settings, &choice) {
        Ok(l) => l,
        Err(PairError::NoneMatch) => {
            return Err(Refusal::new(
                404,
                "None of the connected listeners meet the AllowedListeners/DisallowedListeners criteria",
            ));
        }
        Err(_) => return Err(Refusal::new(502, "no listener is connected")),
    };

    let limit = shared.tuning().limits.max_request_body;
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|len| len > limit as u64) {
        return Err(Refusal::new(
            413,
            format!("request body over {limit} bytes"),
        ));
    }
    let deadline = settings.request_timeout;
    // Up to 64 KiB of the body is read now: a body that ends within it goes inline on the
    // control channel; a longer one streams to the listener over the rendezvous, starting
    // with what was read, so memory stays bounded whatever its size.
    let mut body = body;
    let mut prefix = bytes::BytesMut::new();
    let complete = loop {
        if prefix.len() > INLINE_BODY_LIMIT {
            break false;
        }
        match timeout(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    prefix.extend_from_slice(&data);
                }
            }
            Ok(Some(Err(_))) => return Err(Refusal::new(400, "request body could not be read")),
            Ok(None) => break true,
            Err(_) => return Err(Refusal::new(408, "request body not received in time")),
        }
    };
    if prefix.len() > limit {
        return Err(Refusal::new(
            413,
            format!("request body over {limit} bytes"),
        ));
    }
    let prefix = prefix.freeze();
    let body = if complete {
        DeferredBody::Buffered(prefix)
    } else {
        DeferredBody::Streaming {
            prefix,
            body,
            limit,
        }
    };
    let mut headers = Headers::new();
    for (name, value) in &parts.headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || lower.eq_ignore_ascii_case(AUTH_HEADER)
            || (used_authorization && lower == "authorization")
        {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    let via = format!("1.1 {}", shared.config.namespace);
    headers
        .entry("via".into())
        .and_modify(|v| {
            v.push_str(", ");
            v.push_str(&via);
        })
        .or_insert_with(|| via.clone());

    let id = new_key();
    let address = format!(
        "{}{}{}?sb-hc-action=request&sb-hc-id={id}",
        listener.base,
        address::HC_PREFIX,
        encode_path(&settings.name)
    );
    let target = if app_query.is_empty() {
        raw_path
    } else {
        format!("{raw_path}?{app_query}")
    };
    let full = Request {
        address: address.clone(),
        id: id.clone(),
        request_target: Some(target),
        method: Some(parts.method.as_str().to_owned()),
        remote_endpoint: Some(RemoteEndpoint {
            address: peer.ip().to_string(),
            port: peer.port(),
        }),
        request_headers: Some(headers),
        body: Some(match &body {
            DeferredBody::Buffered(b) => !b.is_empty(),
            DeferredBody::Streaming { .. } => true,
        }),
    };
    // A listener on another node would answer on its own node's control channel: it is
    // sent a rendezvous address on this node instead, where the request and its response
    // travel (the protocol lets the service choose).
    let inline = matches!(body, DeferredBody::Buffered(_)) && listener.node.is_none();
    let (outbound, deferred) = if inline && let DeferredBody::Buffered(bytes) = body {
        let body_msg = (!bytes.is_empty()).then_some(bytes);
        (
            Outbound {
                command: Command::Request(full),
                body: body_msg,
            },
            None,
        )
    } else {
        let only = Request {
            address,
            id: id.clone(),
            request_target: None,
            method: None,
            remote_endpoint: None,
            request_headers: None,
            body: None,
        };
        (
            Outbound::from(Command::Request(only)),
            Some((Command::Request(full), body)),
        )
    };
    let exchange = shared
        .pairing
        .request(&listener, id.clone(), outbound, deferred, deadline)
        .map_err(|e| match e {
            PairError::Busy => Refusal::new(503, "the listener is not keeping up"),
            _ => Refusal::new(502, "the listener went away"),
        })?;
    debug!(path = %settings.name, request = %id, inline, "request sent to listener");
    let reply = match exchange.response().await {
        Ok(HttpOutcome::Reply(reply)) => reply,
        Ok(HttpOutcome::Fail(status, why)) => return Err(Refusal::new(status, why)),
        Err(PairError::Gone) => return Err(Refusal::new(502, "the listener went away")),
        Err(PairError::TimedOut) => {
            return Err(Refusal::new(504, "the listener did not respond in time"));
        }
        Err(_) => {
            return Err(Refusal::new(
                502,
                "the listener's response was malformed or lost",
            ));
        }
    };
    response_from(reply, &via)
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn list_header(headers: &http::HeaderMap, name: &str) -> Option<Vec<String>> {
    let ids: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    (!ids.is_empty()).then_some(ids)
}

/// Builds the client's response from the listener's `response`, adding `Via`.
fn response_from(reply: HttpReply, via: &str) -> Result<http::Response<Body>, Refusal> {
    let status = StatusCode::from_u16(reply.response.status_code)
        .map_err(|_| Refusal::new(502, "the listener sent an invalid status"))?;
    let body = match reply.body {
        ReplyBody::Full(bytes) => full(bytes),
        ReplyBody::Stream(rx) => {
            // Chunks until the end mark (an empty chunk); a queue that closes without it
            // means the relay gave up, and the client must see an error, not a short body.
            let chunks = futures_util::stream::unfold(Some(rx), |rx| async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some(Ok(chunk)) if chunk.is_empty() => None,
                    Some(item) => Some((item.map(Frame::data), Some(rx))),
                    None => Some((
                        Err(std::io::Error::other("the relayed response ended early")),
                        None,
                    )),
                }
            });
            BodyExt::boxed(StreamBody::new(chunks))
        }
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &reply.response.response_headers {
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            warn!("listener sent an invalid response header; dropped");
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(v) = HeaderValue::from_str(via) {
        headers.append(http::header::VIA, v);
    }
    Ok(response)
}

/// A listener opened the rendezvous address of an HTTP request (`sb-hc-action=request`):
/// send the deferred request if there is one, then read the response there, streaming its
/// body to the waiting client.
pub(crate) async fn rendezvous(
    shared: Arc<Shared>,
    mut conn: Conn,
    head: Head,
    key: String,
    id: Option<String>,
) {
    let Some(PendingHttp {
        deferred,
        mut reply,
        cancel,
        deadline,
    }) = id.as_deref().and_then(|id| shared.pairing.take_request(id))
    else {
        let why = "the rendezvous address is invalid, expired or already used";
        let _ = timeout(shared.tuning().timeouts.close, respond(&mut conn, 403, why)).await;
        return;
    };
    if switch(&mut conn, &key, None, false).await.is_err() {
        return;
    }
    let (read, mut write) = tokio::io::split(conn);
    let mut reader = MessageReader::new(read, &head.rest, shared.tuning().limits.relay_buffer);
    drop(head);
    // Spec §6.5: the response must start within the deadline (the path's, as the waiting
    // request has it) and may not idle longer.
    let wait = deadline;
    let exchange = timeout(wait, async {
        if let Some((command, body)) = deferred {
            let text = command.encode();
            write_frame(&mut write, true, Some(MessageKind::Text), text.as_bytes())
                .await
                .map_err(|_| None)?;
            match body {
                DeferredBody::Buffered(bytes) if bytes.is_empty() => {}
                DeferredBody::Buffered(bytes) => {
                    write_frame(&mut write, true, Some(MessageKind::Binary), &bytes)
                        .await
                        .map_err(|_| None)?;
                }
                DeferredBody::Streaming {
                    prefix,
                    body,
                    limit,
                } => {
                    stream_body(&mut write, prefix, body, limit).await?;
                }
            }
        }
        read_response(&mut reader).await
    });
    let outcome = tokio::select! {
        outcome = exchange => outcome,
        // The sender went away (its request future, holding the receiver, was dropped, and
        // its guard sent `cancel` where the listener understands it): closing the socket
        // tells every listener, cancel-capable or not.
        () = reply.closed() => {
            debug!("sender gone before the response; closing the http rendezvous");
            return close(&shared, &mut write, 1001).await;
        }
    };
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(Some((status, why)))) => {
            drop(reply.send(HttpOutcome::Fail(status, why)));
            return close(&shared, &mut write, 1000).await;
        }
        // Dropping `reply` fails the waiting request with 502.
        Ok(Err(None)) => {
            warn!("listener broke the protocol on an http rendezvous");
            return close(&shared, &mut write, 1002).await;
        }
        Err(_) => {
            debug!("http rendezvous timed out");
            return close(&shared, &mut write, 1001).await;
        }
    };
    if !response.body {
        let answer = HttpReply {
            response,
            body: ReplyBody::Full(Bytes::new()),
        };
        drop(reply.send(HttpOutcome::Reply(answer)));
        return close(&shared, &mut write, 1000).await;
    }
    match timeout(
        wait,
        reader.next_message(shared.tuning().limits.max_response_body),
    )
    .await
    {
        Ok(Ok(MessageKind::Binary)) => {}
        _ => {
            warn!("listener announced a response body that did not follow");
            return close(&shared, &mut write, 1002).await;
        }
    }
    // A few chunks in flight: the queue is what bounds memory between listener and client.
    let (tx, rx) = mpsc::channel(4);
    let answer = HttpReply {
        response,
        body: ReplyBody::Stream(rx),
    };
    // From here on the sender is gone when the body's receiver is: hyper drops the response
    // body with the connection or the reset stream.
    let abandon = |cancel: Option<CancelHandle>| {
        debug!("sender gone while the response streamed; closing the http rendezvous");
        if let Some(cancel) = cancel {
            cancel.send();
        }
    };
    if reply.send(HttpOutcome::Reply(answer)).is_err() {
        abandon(cancel);
        return close(&shared, &mut write, 1001).await;
    }
    // A client that keeps its connection but stops reading this response (an HTTP/2 stream
    // held by flow control) stalls the queue, not a socket write: bound each hand-over too.
    let stall = shared.tuning().timeouts.write_stall;
    loop {
        let next = tokio::select! {
            next = timeout(wait, reader.next_chunk()) => next,
            // Noticed at once, not only when the listener's next chunk finds the queue gone:
            // a listener waiting on a slow source is told now.
            () = tx.closed() => {
                abandon(cancel);
                return close(&shared, &mut write, 1001).await;
            }
        };
        let chunk = match next {
            Ok(Ok(Some(chunk))) if chunk.is_empty() => continue,
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                warn!(error = %e, "response body from the listener broke off");
                let _ = stalling(stall, tx.send(Err(std::io::Error::other(e)))).await;
                return close(&shared, &mut write, 1000).await;
            }
            Err(_) => {
                let idle = std::io::Error::other("response body idle too long");
                let _ = stalling(stall, tx.send(Err(idle))).await;
                return close(&shared, &mut write, 1000).await;
            }
        };
        if !matches!(stalling(stall, tx.send(Ok(chunk))).await, Some(Ok(()))) {
            // The client went away or stopped reading: stop reading, tell the listener. The
            // body ends without its end mark, so the client sees an error, not a short body.
            debug!("sender stopped reading the response; closing the http rendezvous");
            abandon(cancel);
            return close(&shared, &mut write, 1001).await;
        }
    }
    // The end mark (an empty chunk): only now is the body complete.
    if !matches!(
        stalling(stall, tx.send(Ok(Bytes::new()))).await,
        Some(Ok(()))
    ) {
        abandon(cancel);
        return close(&shared, &mut write, 1001).await;
    }
    close(&shared, &mut write, 1000).await;
}

/// `f` within the write stall limit (`None` past it); a zero limit is no limit.
async fn stalling<T>(stall: Duration, f: impl Future<Output = T>) -> Option<T> {
    if stall.is_zero() {
        Some(f.await)
    } else {
        timeout(stall, f).await.ok()
    }
}

/// Reads a `response` command (a text message) from a rendezvous.
async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut MessageReader<R>,
) -> Result<Response, Abort> {
    let limit = ferry_hc::command::MAX_COMMAND_LEN as u64;
    if reader.next_message(limit).await.map_err(|_| None)? != MessageKind::Text {
        return Err(None);
    }
    let mut text = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.map_err(|_| None)? {
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).map_err(|_| None)?;
    match Command::decode(&text) {
        Ok(Command::Response(r)) => Ok(r),
        _ => Err(None),
    }
}

async fn close<W: AsyncWrite + Unpin>(shared: &Shared, write: &mut W, code: u16) {
    let _ = timeout(shared.tuning().timeouts.close, async {
        let _ = write_close(write, code, "").await;
        let _ = write.shutdown().await;
    })
    .await;
}

/// Why a rendezvous exchange stopped: `Some` is an answer for the client (status, reason),
/// `None` a listener that broke the protocol (the client gets 502).
type Abort = Option<(u16, String)>;

/// Sends a client's request body as one binary message in as many frames as it arrives in,
/// awaiting each write so a slow listener slows the client down (bounded memory).
async fn stream_body<W: AsyncWrite + Unpin>(
    write: &mut W,
    prefix: Bytes,
    mut body: Incoming,
    limit: usize,
) -> Result<(), Abort> {
    let mut sent = 0usize;
    let mut kind = Some(MessageKind::Binary);
    let mut next = Some(prefix);
    loop {
        let data = match next.take() {
            Some(data) => data,
            None => match body.frame().await {
                None => break,
                Some(Err(_)) => {
                    return Err(Some((400, "request body could not be read".to_owned())));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers carry no body bytes.
                    Err(_) => continue,
                },
            },
        };
        if data.is_empty() {
            continue;
        }
        sent = sent.saturating_add(data.len());
        if sent > limit {
            let _ = write_close(write, 1009, "request body over the limit").await;
            return Err(Some((413, format!("request body over {limit} bytes"))));
        }
        write_frame(write, false, kind.take(), &data)
            .await
            .map_err(|_| None)?;
    }
    write_frame(write, true, kind, &[]).await.map_err(|_| None)
}
