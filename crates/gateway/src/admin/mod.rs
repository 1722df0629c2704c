//! The admin port: the management API in the shape of Azure Relay's resource-manager API, so
//! Microsoft's management SDKs drive it.
//!
//! HTTPS only (the SDKs refuse bearer tokens over plain HTTP), with the TLS port's
//! certificate. Every call is authorised by the configured admin token, or by a SAS token of a
//! namespace rule with `Manage`, sent as `Authorization: Bearer <token>` or as the bare
//! `SharedAccessSignature …`; failures count against the source like the data plane's.

mod arm;
mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_hc::auth::{AuthError, Right};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::admission::{Role, Slot};
use crate::auth::now_unix;
use crate::pairing::new_id;
use crate::state::Shared;

/// Largest request body the API reads (413 beyond): entity bodies are a few hundred bytes.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Serves one admin connection.
///
/// # Cancel safety
/// Not cancel safe; it ends on the gateway's shutdown token.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    mut slot: Slot,
) {
    let tls = match timeout(shared.tuning().timeouts.handshake, tls.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return debug!(%peer, error = %e, "admin tls handshake failed"),
        Err(_) => return debug!(%peer, "admin tls handshake timed out"),
    };
    if let Err(busy) = slot.assign(Role::Sender) {
        return debug!(%peer, %busy, "admin connection refused");
    }
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
    });
    let tuning = shared.tuning();
    let timeouts = &tuning.timeouts;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.handshake)
        .max_buf_size(shared.tuning().limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32)
        .keep_alive_interval(Some(timeouts.keepalive))
        .keep_alive_timeout(timeouts.keepalive);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        r = &mut connection => if let Err(e) = r { debug!(%peer, error = %e, "admin connection ended") },
        () = shared.cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = timeout(timeouts.close, connection).await;
        }
    }
    drop(slot);
}

/// An answer: status, and an Azure error body or a resource.
pub(crate) type Reply = Response<Full<Bytes>>;

/// An error in Azure's shape: `{"error": {"code", "message"}}`, the tracking id appended to
/// the message as Azure does, so one failed call can be found in the gateway's log.
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
}

async fn handle(shared: &Arc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Reply {
    let tracking = new_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let reply = match answer(shared, peer, req).await {
        Ok(reply) => reply,
        Err(f) => {
            let message = format!("{} TrackingId:{tracking}", f.message);
            if f.status.is_server_error() {
                warn!(%peer, %method, %path, status = f.status.as_u16(), code = f.code, %tracking, message = %f.message, "admin call failed");
            } else {
                info!(%peer, %method, %path, status = f.status.as_u16(), code = f.code, %tracking, message = %f.message, "admin call refused");
            }
            let body = serde_json::json!({
                "error": { "code": f.code, "message": message, "details": [], "additionalInfo": [] }
            });
            json(f.status, &body)
        }
    };
    let mut reply = reply;
    if let Ok(v) = http::HeaderValue::from_str(&tracking) {
        reply.headers_mut().insert("x-ms-request-id", v.clone());
        reply.headers_mut().insert("x-ms-correlation-request-id", v);
    }
    reply
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Reply, Failure> {
    // The status page itself holds no data: it asks for a token and polls `/status`.
    if req.method() == http::Method::GET {
        match req.uri().path() {
            "/" => return Ok(asset(status::PAGE, "text/html; charset=utf-8")),
            "/status.js" => return Ok(asset(status::SCRIPT, "text/javascript; charset=utf-8")),
            _ => {}
        }
    }
    if shared.admission.blocked(peer.ip()) {
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many failed authentications from this address; retry later",
        ));
    }
    authorize(shared, req.headers()).inspect_err(|_| shared.admission.auth_failed(peer.ip()))?;
    if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
        return Ok(metrics(shared));
    }
    if req.method() == http::Method::GET && req.uri().path() == "/status" {
        return Ok(json(StatusCode::OK, &status::report(shared)));
    }
    let (parts, body) = req.into_parts();
    let body = read_body(body, shared.tuning().timeouts.handshake).await?;
    arm::route(shared, &parts, &body).await
}

/// How much of a body over [`MAX_BODY`] is read and thrown away before the 413, so that a
/// client still sending gets its answer instead of a reset connection.
const DRAIN: usize = 1 << 20;

/// Reads a request body of at most [`MAX_BODY`] bytes, all of it within `limit`.
async fn read_body(mut body: Incoming, limit: std::time::Duration) -> Result<Bytes, Failure> {
    let unreadable = || Failure::bad_request("the request body could not be read in time");
    let read = async {
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| ())?.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if seen > MAX_BODY + DRAIN {
                break;
            }
        }
        Ok::<_, ()>((kept, seen))
    };
    let (kept, seen) = timeout(limit, read)
        .await
        .map_err(|_| unreadable())?
        .map_err(|()| unreadable())?;
    if seen > MAX_BODY {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than {MAX_BODY} bytes"),
        ));
    }
    Ok(Bytes::from(kept))
}

/// Checks the `Authorization` header: the admin token, or a SAS token with `Manage` on the
/// namespace.
fn authorize(shared: &Shared, headers: &http::HeaderMap) -> Result<(), Failure> {
    let unauthorized = |message: &str| {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            message.to_owned(),
        )
    };
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("an Authorization header is required"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    if let Some(admin) = shared
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref())
        && bool::from(token.as_bytes().ct_eq(admin.as_bytes()))
    {
        return Ok(());
    }
    if !token.starts_with("SharedAccessSignature ") {
        return Err(unauthorized(
            "the token is neither the admin token nor a SAS token",
        ));
    }
    let hosts = shared.config.audience_hosts();
    let rules = shared.catalog.view().namespace_rules.clone();
    match rules.authorize_any_host(token, &hosts, "", Right::Manage, now_unix()) {
        Ok(_) => Ok(()),
        Err(AuthError::MissingRight(_)) => Err(Failure::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "the token's rule does not have Manage rights on the namespace",
        )),
        Err(e) => Err(unauthorized(&format!("invalid SAS token: {e}"))),
    }
}

/// `/metrics`: the gateway's metrics in the OpenMetrics text format.
fn metrics(shared: &Shared) -> Reply {
    if let Some(cluster) = &shared.cluster {
        shared
            .metrics
            .store_up
            .set(i64::from(cluster.holds_lease()));
    }
    let mut reply = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    reply
}

/// One of the status page's files, with a policy that lets it load nothing from elsewhere.
fn asset(body: &'static str, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = reply.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    reply
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(value.to_string())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    reply
}

/// An empty answer.
pub(crate) fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}
