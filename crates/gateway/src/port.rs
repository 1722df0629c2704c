//! The HTTP port, plain or TLS: what each connection is, and which front end serves it.
//!
//! ```text
//!  TCP ─► TLS (ALPN h2 ─────────────────────────────────────────► hyper, HTTP/2)
//!       └► HTTP/1 head ─┬ PRI * (h2c prior knowledge) ──────────► hyper, HTTP/2
//!                       ├ /$hc/{path}?sb-hc-action=listen ──────► websocket::listen
//!                       │                         connect ──────► websocket::connect
//!                       │                         accept ───────► websocket::accept
//!                       │                         request ──────► http::rendezvous
//!                       └ any other target ─────────────────────► hyper, HTTP/1.1
//!  hyper, each request ─┬ application/grpc over HTTP/2 ─────────► grpc::handle
//!                       └ otherwise ────────────────────────────► http::handle
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_hc::address::{self, Action, HcTarget};
use ferry_net::conn::Conn;
use ferry_net::stall::WriteStall;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::admission::{Role, Slot};
use crate::body::Body;
use crate::handshake::{Head, HeadError};
use crate::state::Shared;
use crate::websocket::refuse;
use crate::{grpc, websocket};

/// Serves one accepted TCP connection: TLS (if `tls`), the upgrade request, then its role.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    permit: Slot,
) {
    let deadline = Instant::now() + shared.tuning().timeouts.handshake;
    let mut conn = match tls {
        None => Conn::from(tcp),
        Some(acceptor) => match timeout_at(deadline, acceptor.accept(tcp)).await {
            // ALPN chose HTTP/2: no HTTP/1 head will come; hyper speaks HTTP/2 from here.
            Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(ferry_net::tls::ALPN_H2) => {
                return serve_http(shared, Conn::from(s), peer, Vec::new(), permit).await;
            }
            Ok(Ok(s)) => Conn::from(s),
            Ok(Err(e)) => return debug!(%peer, error = %e, "tls handshake failed"),
            Err(_) => return debug!(%peer, "tls handshake timed out"),
        },
    };
    let head = match timeout_at(
        deadline,
        Head::read(&mut conn, shared.tuning().limits.max_header_bytes),
    )
    .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Http2Preface(replay))) => {
            // h2c with prior knowledge on the plain port.
            return serve_http(shared, conn, peer, replay, permit).await;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "bad request head");
            if let Some(status) = e.status() {
                refuse(&shared, &mut conn, peer, status, &e.to_string()).await;
            }
            return;
        }
        Err(_) => {
            debug!(%peer, "request head timed out");
            refuse(
                &shared,
                &mut conn,
                peer,
                408,
                "request head not received in time",
            )
            .await;
            return;
        }
    };
    route(shared, conn, peer, head, permit).await;
}

async fn route(shared: Arc<Shared>, mut conn: Conn, peer: SocketAddr, head: Head, permit: Slot) {
    let target = match HcTarget::parse(&head.target) {
        Ok(t) => t,
        Err(address::AddressError::NotHybridConnection) => {
            // `https://ns/{path}/...`: HTTP request relaying.
            let mut replay = head.raw;
            replay.extend_from_slice(&head.rest);
            return serve_http(shared, conn, peer, replay, permit).await;
        }
        Err(e) => return refuse(&shared, &mut conn, peer, 400, &e.to_string()).await,
    };
    // A WebSocket upgrade is one request: its client is decided here. (HTTP requests above
    // are decided one by one, a load balancer's connection carrying several clients'.)
    let forwarded_for = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.as_str());
    let Ok(peer) = shared.forwarded_client(peer, forwarded_for) else {
        return refuse(
            &shared,
            &mut conn,
            peer,
            403,
            "the client address is not allowed by the namespace's IP rules",
        )
        .await;
    };
    if shared.admission.blocked(peer.ip()) {
        // Only a load balancer's clients get here blocked: others are refused at accept.
        return refuse(
            &shared,
            &mut conn,
            peer,
            429,
            "too many failed authentications; retry later",
        )
        .await;
    }
    let is_upgrade = head.method == "GET"
        && head.has_token("Upgrade", "websocket")
        && head.has_token("Connection", "upgrade");
    if !is_upgrade {
        return refuse(
            &shared,
            &mut conn,
            peer,
            400,
            "a WebSocket upgrade is required",
        )
        .await;
    }
    if head.minor < 1 {
        return refuse(
            &shared,
            &mut conn,
            peer,
            400,
            "a WebSocket upgrade needs HTTP/1.1",
        )
        .await;
    }
    if head.header("Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return refuse(&shared, &mut conn, peer, 426, "").await;
    }
    let Some(key) = head
        .header("Sec-WebSocket-Key")
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
    else {
        return refuse(&shared, &mut conn, peer, 400, "missing Sec-WebSocket-Key").await;
    };
    let action = target.query.action_or_connect();
    let role = match action {
        Action::Listen | Action::Accept | Action::Request => Role::Listener,
        Action::Connect => Role::Sender,
    };
    let mut permit = permit;
    if let Err(busy) = permit.assign(role) {
        debug!(%peer, %busy, "connection refused");
        return refuse(
            &shared,
            &mut conn,
            peer,
            503,
            "the gateway is at capacity; retry later",
        )
        .await;
    }
    let up = websocket::Upgrade {
        conn,
        peer,
        head,
        target,
        key,
        permit,
        entity: String::new(),
    };
    match action {
        Action::Listen => websocket::listen(shared, up).await,
        Action::Connect => websocket::connect(shared, up).await,
        Action::Accept => websocket::accept(shared, up).await,
        Action::Request => {
            let id = up.target.query.id.clone();
            crate::http::rendezvous(shared, up.conn, up.head, up.key, id).await;
        }
    }
}

/// Serves one HTTP connection, HTTP/1.1 or HTTP/2 (ALPN `h2`, or h2c with prior knowledge:
/// the version is told from the first bytes). `replay` holds what was already read from it
/// (a first request head, or the start of the HTTP/2 preface).
async fn serve_http(
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    replay: Vec<u8>,
    mut permit: Slot,
) {
    if let Err(busy) = permit.assign(Role::Sender) {
        // Over HTTP/1 the client is told; an HTTP/2 client sees the connection close.
        debug!(%peer, %busy, "connection refused");
        let mut conn = conn;
        if !replay.starts_with(b"PRI * HTTP/2.0") && !replay.is_empty() {
            let refusal = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = timeout(shared.tuning().timeouts.close, conn.write_all(refusal)).await;
        }
        return;
    }
    let _permit = permit;
    // A sender that stops reading would otherwise hold this connection, the response body's
    // queue and, through it, the rendezvous and the listener streaming into it, for ever:
    // a write that makes no progress for `write_stall` fails, hyper ends the connection, the
    // body's receiver is dropped and the rendezvous task tells the listener (1001, `cancel`).
    let io = TokioIo::new(WriteStall::new(
        Replay {
            prefix: replay,
            pos: 0,
            inner: conn,
        },
        shared.tuning().timeouts.write_stall,
    ));
    let activity = Arc::new(Activity::new());
    let service_shared = shared.clone();
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = service_shared.clone();
        let busy = service_activity.begin();
        async move {
            let response = handle(&shared, peer, req).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let tuning = shared.tuning();
    let (limits, timeouts) = (&tuning.limits, &tuning.timeouts);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.handshake)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(timeouts.keepalive))
        .keep_alive_timeout(timeouts.keepalive);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        r = &mut connection => if let Err(e) = r { debug!(%peer, error = %e, "http connection ended") },
        () = shared.cancel.cancelled() => {
            // Finish the requests in flight, then close.
            connection.as_mut().graceful_shutdown();
            let _ = timeout(shared.tuning().timeouts.close, connection).await;
        }
        () = activity.idle(shared.tuning().timeouts.idle) => {
            // Kept alive (HTTP/2 pings, HTTP/1 keep-alive) with nothing asked for too long:
            // the connection's slot goes back. A response still streaming finishes first.
            debug!(%peer, "idle http connection closed");
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// When a connection last started a request, and how many it has in flight.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last request's start or end.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> impl Drop + Send + use<> {
        struct Busy(Arc<Activity>);
        impl Drop for Busy {
            fn drop(&mut self) {
                self.0.touch();
                self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `idle` (never, for `None`).
    ///
    /// # Cancel safety
    /// Cancel safe.
    async fn idle(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let since = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)));
            if since >= idle && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(since).max(Duration::from_millis(100))).await;
        }
    }
}

/// Answers one request: a gRPC call goes to the gRPC front end, anything else is relayed
/// to a hybrid connection's listener.
async fn handle(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    // Not ASCII: read lossily, so a bad byte stops the walk where it is, not the whole value.
    let forwarded_for: Vec<_> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    let peer = match shared.forwarded_client(peer, forwarded_for.iter().map(|v| v.as_ref())) {
        Ok(client) => client,
        Err(refused) => {
            debug!(client = %refused.0, "request refused by the network rules");
            let mut response = http::Response::new(crate::body::full(bytes::Bytes::from_static(
                b"the client address is not allowed by the namespace's IP rules\n",
            )));
            *response.status_mut() = http::StatusCode::FORBIDDEN;
            return response;
        }
    };
    // Boxed: each front end's state lives on the heap, so the per-request task stays small
    // instead of carrying the larger of the two futures inline (and copying it).
    if grpc::is_grpc(&req) {
        Box::pin(grpc::handle(shared, peer, req)).await
    } else {
        Box::pin(crate::http::handle(shared, peer, req)).await
    }
}

/// The request head bytes already read, then the connection.
struct Replay {
    prefix: Vec<u8>,
    pos: usize,
    inner: Conn,
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
