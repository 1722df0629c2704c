//! The Hybrid Connections WebSocket front end: listener control channels (`listen`),
//! senders (`connect`), and rendezvous (`accept`, including rejects).
//!
//! ```text
//!  sender  ── GET /$hc/p?sb-hc-action=connect ─► auth(Send) ─► pick listener ─► accept JSON ─┐
//!              (upgrade held open)                                                            │
//!  listener ─ GET accept.address ───────────────► take pending (one-shot) ◄───────────────────┘
//!              101 to the listener, 101 to the sender, then ferry_net::relay in the sender's task
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_hc::address::{Action, HcQuery, HcTarget};
use ferry_hc::auth::{AuthError, Right};
use ferry_hc::command::{Accept, FEATURES_HEADER, Features, Headers, RemoteEndpoint};
use ferry_hc::{Command, address};
use ferry_net::relay::{RelayConfig, RelayEnd, relay, write_close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info};

use crate::admission::{self, Slot};
use crate::config::Config;
use crate::control;
use crate::handshake::{Head, HeadError, respond, switch};
use crate::registry::{
    ListenerHandle, PathSettings, Pending, PickError, Registry, Rendezvous, new_id, new_key,
};
use ferry_net::conn::Conn;

/// Header a sender uses to restrict which listeners may take it (spec §8).
const ALLOWED_LISTENERS: &str = "Microsoft-Relay-AllowedListeners";
/// Header a sender uses to exclude listeners.
const DISALLOWED_LISTENERS: &str = "Microsoft-Relay-DisallowedListeners";
/// Where WebSocket clients put their token.
const AUTH_HEADER: &str = "ServiceBusAuthorization";

/// Largest control message from a listener (spec §4.3).
const MAX_CONTROL_MESSAGE: usize = ferry_hc::command::MAX_COMMAND_LEN;

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) grpc: crate::grpc::Pool,
    pub(crate) verified: crate::verified::Verified,
    pub(crate) registry: Registry,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) relay: RelayConfig,
    pub(crate) next_conn: AtomicU64,
    pub(crate) admission: Arc<admission::Admission>,
}

impl Shared {
    /// Checks an HTTP or gRPC sender's token (`None`: it gave none) for `Send` on `path`,
    /// through the cache of tokens verified lately; a failure counts against `peer`'s
    /// source.
    pub(crate) fn authorize_sender(
        &self,
        peer: SocketAddr,
        settings: &PathSettings,
        token: Option<&str>,
        path: &str,
    ) -> Result<(), AuthError> {
        let hosts = self.config.audience_hosts();
        let grace = self.config.timeouts.token_grace.as_secs();
        token
            .ok_or(AuthError::Missing)
            .and_then(|token| {
                self.verified
                    .authorize_send(settings, token, &hosts, path, now_unix(), grace)
            })
            .inspect_err(|_| self.admission.auth_failed(peer.ip()))
    }
}

/// Seconds since the Unix epoch, for token expiry (tokens carry wall-clock times).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves one accepted TCP connection: TLS (if `tls`), the upgrade request, then its role.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    permit: Slot,
) {
    let deadline = Instant::now() + shared.config.timeouts.handshake;
    let mut conn = match tls {
        None => Conn::from(tcp),
        Some(acceptor) => match timeout_at(deadline, acceptor.accept(tcp)).await {
            // ALPN chose HTTP/2: no HTTP/1 head will come; hyper speaks HTTP/2 from here.
            Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(ferry_net::tls::ALPN_H2) => {
                return crate::http::serve(shared, Conn::from(s), peer, Vec::new(), permit).await;
            }
            Ok(Ok(s)) => Conn::from(s),
            Ok(Err(e)) => return debug!(%peer, error = %e, "tls handshake failed"),
            Err(_) => return debug!(%peer, "tls handshake timed out"),
        },
    };
    let head = match timeout_at(
        deadline,
        Head::read(&mut conn, shared.config.limits.max_header_bytes),
    )
    .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Http2Preface(replay))) => {
            // h2c with prior knowledge on the plain port.
            return crate::http::serve(shared, conn, peer, replay, permit).await;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "bad request head");
            if let Some(status) = e.status() {
                reply(&shared, &mut conn, status, &e.to_string()).await;
            }
            return;
        }
        Err(_) => {
            debug!(%peer, "request head timed out");
            reply(&shared, &mut conn, 408, "request head not received in time").await;
            return;
        }
    };
    route(shared, conn, peer, head, permit).await;
}

/// Sends an error response, bounded in time; the connection is dropped afterwards.
async fn reply(shared: &Shared, conn: &mut Conn, status: u16, description: &str) {
    let _ = timeout(
        shared.config.timeouts.close,
        respond(conn, status, description),
    )
    .await;
}

async fn route(shared: Arc<Shared>, mut conn: Conn, peer: SocketAddr, head: Head, permit: Slot) {
    let target = match HcTarget::parse(&head.target) {
        Ok(t) => t,
        Err(address::AddressError::NotHybridConnection) => {
            // `https://ns/{path}/...`: HTTP request relaying.
            let mut replay = head.raw;
            replay.extend_from_slice(&head.rest);
            return crate::http::serve(shared, conn, peer, replay, permit).await;
        }
        Err(e) => return reply(&shared, &mut conn, 400, &e.to_string()).await,
    };
    let is_upgrade = head.method == "GET"
        && head.has_token("Upgrade", "websocket")
        && head.has_token("Connection", "upgrade");
    if !is_upgrade {
        return reply(&shared, &mut conn, 400, "a WebSocket upgrade is required").await;
    }
    if head.minor < 1 {
        return reply(
            &shared,
            &mut conn,
            400,
            "a WebSocket upgrade needs HTTP/1.1",
        )
        .await;
    }
    if head.header("Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return reply(&shared, &mut conn, 426, "").await;
    }
    let Some(key) = head
        .header("Sec-WebSocket-Key")
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
    else {
        return reply(&shared, &mut conn, 400, "missing Sec-WebSocket-Key").await;
    };
    let action = target.query.action_or_connect();
    let role = match action {
        Action::Listen | Action::Accept | Action::Request => admission::Role::Listener,
        Action::Connect => admission::Role::Sender,
    };
    let mut permit = permit;
    if let Err(busy) = permit.assign(role) {
        debug!(%peer, %busy, "connection refused");
        return reply(
            &shared,
            &mut conn,
            503,
            "the gateway is at capacity; retry later",
        )
        .await;
    }
    let up = Upgrade {
        conn,
        peer,
        head,
        target,
        key,
        permit,
    };
    match action {
        Action::Listen => listen(shared, up).await,
        Action::Connect => connect(shared, up).await,
        Action::Accept | Action::Request => rendezvous(shared, up).await,
    }
}

/// A validated WebSocket upgrade request.
struct Upgrade {
    conn: Conn,
    peer: SocketAddr,
    head: Head,
    target: HcTarget,
    key: String,
    /// This connection's share of `max_connections`.
    permit: Slot,
}

impl Upgrade {
    async fn fail(mut self, shared: &Shared, status: u16, description: &str) {
        reply(shared, &mut self.conn, status, description).await;
    }

    /// The host the client dialled, as its `Host` header says.
    fn host(&self) -> Option<&str> {
        self.head
            .header("Host")
            .map(str::trim)
            .filter(|h| !h.is_empty())
    }

    fn token(&self) -> Option<&str> {
        self.head
            .header(AUTH_HEADER)
            .or(self.target.query.token.as_deref())
    }

    fn authorize(
        &self,
        shared: &Shared,
        settings: &PathSettings,
        right: Right,
    ) -> Result<u64, AuthError> {
        let hosts = shared.config.audience_hosts();
        let token = self.token().ok_or(AuthError::Missing)?;
        settings
            .rules
            .authorize_any_host(token, &hosts, &self.target.path, right, now_unix())
            .map(|g| g.expiry)
            .inspect_err(|_| shared.admission.auth_failed(self.peer.ip()))
    }
}

async fn listen(shared: Arc<Shared>, mut up: Upgrade) {
    let Some(settings) = shared.registry.listener_path(&up.target.path) else {
        return up.fail(&shared, 404, "no such hybrid connection").await;
    };
    let expiry = match up.authorize(&shared, &settings, Right::Listen) {
        Ok(expiry) => expiry,
        Err(e) => return up.fail(&shared, e.status(), &e.to_string()).await,
    };
    let id = up.target.query.id.clone().unwrap_or_else(new_id);
    let (tx, rx) = mpsc::channel(shared.config.limits.control_queue.get());
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    // The rendezvous addresses the listener will dial: wss when it reached us over TLS, or
    // through a TLS-terminating proxy that says so (`X-Forwarded-Proto` / `Forwarded:
    // proto=`); only the listener's own rendezvous depend on it.
    let secure = up.conn.is_tls() || forwarded_tls(&up.head);
    let base = format!(
        "{}://{}",
        if secure { "wss" } else { "ws" },
        up.host()
            .map_or_else(|| shared.config.namespace.clone(), str::to_owned)
    );
    // Ferry extensions are sent only to listeners that asked for them: Azure's clients never
    // send this header, so they never see anything the real service would not send.
    let features = Features::parse(
        up.head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(FEATURES_HEADER))
            .map(|(_, v)| v.as_str()),
    );
    let handle = ListenerHandle {
        id: id.clone(),
        conn_id,
        commands: tx,
        base,
        features,
    };
    if !shared.registry.register(&settings, handle) {
        return up
            .fail(
                &shared,
                403,
                "the hybrid connection has its maximum number of listeners",
            )
            .await;
    }
    // From here on the registration must be undone however this task ends.
    let registration = Unregister {
        shared: shared.clone(),
        name: settings.name.clone(),
        conn_id,
    };
    if switch(&mut up.conn, &up.key, None).await.is_err() {
        return;
    }
    info!(path = %settings.name, listener = %id, peer = %up.peer, ?features, "listener online");
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        // Commands and inline response bodies are each at most 64 KiB (spec §4.3); a little
        // slack for the JSON around a body that is exactly at the limit.
        .max_message_size(Some(MAX_CONTROL_MESSAGE + 4096))
        .max_frame_size(Some(MAX_CONTROL_MESSAGE + 4096));
    let hosts = shared
        .config
        .audience_hosts()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let ws =
        WebSocketStream::from_partially_read(up.conn, up.head.rest, Role::Server, Some(ws_config))
            .await;
    control::run(
        shared.clone(),
        ws,
        rx,
        settings,
        hosts,
        expiry,
        registration,
    )
    .await;
}

/// Removes a listener from the registry when dropped, however its task ends.
pub(crate) struct Unregister {
    shared: Arc<Shared>,
    name: String,
    conn_id: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.shared.registry.unregister(&self.name, self.conn_id);
        self.shared.grpc.forget(self.conn_id);
    }
}

/// Removes a rendezvous key if nobody took it (timeout, sender gone, shutdown).
struct PendingGuard<'a> {
    registry: &'a Registry,
    key: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        drop(self.registry.take_pending(&self.key));
    }
}

/// True when a proxy in front says the client's connection was TLS: the first
/// `X-Forwarded-Proto` value, or the `proto` of the first `Forwarded` element, is https or
/// wss.
pub(crate) fn forwarded_tls(head: &Head) -> bool {
    let secure = |v: &str| {
        let v = v.trim().trim_matches('"');
        v.eq_ignore_ascii_case("https") || v.eq_ignore_ascii_case("wss")
    };
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(proto) = header("X-Forwarded-Proto") {
        return proto.split(',').next().is_some_and(secure);
    }
    header("Forwarded").is_some_and(|f| {
        f.split(',')
            .next()
            .unwrap_or_default()
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .any(|(k, v)| k.trim().eq_ignore_ascii_case("proto") && secure(v))
    })
}

fn id_list(head: &Head, name: &str) -> Option<Vec<String>> {
    let values: Vec<String> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// The sender's handshake headers for `accept.connectHeaders`: all of them (hyco-ws needs
/// `Sec-WebSocket-Key`), repeated ones joined, the token removed.
fn connect_headers(head: &Head) -> Headers {
    let mut out = Headers::new();
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case(AUTH_HEADER) {
            continue;
        }
        out.entry(name.clone())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    out
}

/// How a sender's wait for its listener ended.
enum Wait {
    Answered(Rendezvous),
    /// The listener's side dropped the rendezvous, or the gateway is shutting down.
    Abandoned,
    TimedOut,
    SenderGone,
}

async fn connect(shared: Arc<Shared>, mut up: Upgrade) {
    let Some(settings) = shared.registry.sender_path(&up.target.path) else {
        // In dynamic mode a path exists only while listened on. Check the token against the
        // namespace rules first, so an unauthenticated caller cannot probe which paths exist.
        if shared.config.dynamic_paths {
            if let Err(e) =
                up.authorize(&shared, &shared.registry.namespace_settings(), Right::Send)
            {
                return up.fail(&shared, e.status(), &e.to_string()).await;
            }
            return up.fail(&shared, 404, "no listener is connected").await;
        }
        return up.fail(&shared, 404, "no such hybrid connection").await;
    };
    if !settings.anonymous_senders
        && let Err(e) = up.authorize(&shared, &settings, Right::Send)
    {
        return up.fail(&shared, e.status(), &e.to_string()).await;
    }
    let allowed = id_list(&up.head, ALLOWED_LISTENERS);
    let disallowed = id_list(&up.head, DISALLOWED_LISTENERS).unwrap_or_default();
    let listener = match shared
        .registry
        .pick(&settings.name, allowed.as_deref(), &disallowed)
    {
        Ok(l) => l,
        Err(PickError::NoListener) => {
            return up.fail(&shared, 404, "no listener is connected").await;
        }
        Err(PickError::NoneMatch) => {
            let why = "None of the connected listeners meet the AllowedListeners/DisallowedListeners criteria";
            return up.fail(&shared, 404, why).await;
        }
    };

    let id = up.target.query.id.clone().unwrap_or_else(new_id);
    let key = new_key();
    let mut address = address::hc_url(
        &listener.base,
        &up.target.path,
        &up.target.query.app_query,
        Action::Accept,
        Some(&id),
    );
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
    let _pending = PendingGuard {
        registry: &shared.registry,
        key,
    };
    let accept = Command::Accept(Accept {
        address,
        id: id.clone(),
        connect_headers: connect_headers(&up.head),
        remote_endpoint: Some(RemoteEndpoint {
            address: up.peer.ip().to_string(),
            port: up.peer.port(),
        }),
    });
    if let Err(e) = listener.commands.try_send(accept.into()) {
        let (status, why) = match e {
            mpsc::error::TrySendError::Full(_) => (503, "the listener is not keeping up"),
            mpsc::error::TrySendError::Closed(_) => (404, "no listener is connected"),
        };
        return up.fail(&shared, status, why).await;
    }
    debug!(path = %settings.name, sender = %id, listener = %listener.id, "accept sent");

    // Hold the upgrade until the listener answers, watching the sender so one that gives up
    // is noticed at once rather than at the timeout.
    let mut early = Vec::new();
    let outcome = {
        let watch = async {
            let mut byte = [0u8; 512];
            loop {
                match up.conn.read(&mut byte).await {
                    Ok(0) | Err(_) => return,
                    // A client must not send frames before the 101, but if it does they are
                    // kept (bounded) and relayed in order.
                    Ok(n) if early.len() + n <= 64 * 1024 => early.extend_from_slice(&byte[..n]),
                    Ok(_) => return,
                }
            }
        };
        tokio::select! {
            r = timeout(shared.config.timeouts.rendezvous, reply_rx) => match r {
                Ok(Ok(rendezvous)) => Wait::Answered(rendezvous),
                Ok(Err(_)) => Wait::Abandoned,
                Err(_) => Wait::TimedOut,
            },
            () = watch => Wait::SenderGone,
            () = shared.cancel.cancelled() => Wait::Abandoned,
        }
    };
    match outcome {
        Wait::SenderGone => debug!(sender = %id, "sender left before a listener accepted"),
        Wait::TimedOut => {
            up.fail(&shared, 504, "the listener did not accept in time")
                .await
        }
        Wait::Abandoned => up.fail(&shared, 503, "the rendezvous was abandoned").await,
        Wait::Answered(Rendezvous::Rejected {
            status,
            description,
        }) => {
            debug!(sender = %id, status, "listener rejected the sender");
            up.fail(&shared, status, &description).await;
        }
        Wait::Answered(Rendezvous::Accepted {
            conn: mut lconn,
            pre,
            protocol,
            permit: listener_permit,
        }) => {
            // Echo the listener's choice only if this sender offered it.
            let offered = up.head.header("Sec-WebSocket-Protocol").unwrap_or_default();
            let protocol = protocol.filter(|p| offered.split(',').any(|o| o.trim() == p));
            if switch(&mut up.conn, &up.key, protocol.as_deref())
                .await
                .is_err()
            {
                let _ = timeout(
                    shared.config.timeouts.close,
                    write_close(&mut lconn, 1001, "sender went away"),
                )
                .await;
                return;
            }
            let mut sender_pre = up.head.rest;
            sender_pre.extend_from_slice(&early);
            info!(path = %settings.name, sender = %id, listener = %listener.id, "relay started");
            // The relay gets a task of its own holding only what it needs (the two
            // connections, their permits, bytes read early): this handshake task, with its
            // request headers and buffers, ends here, so an idle relayed connection costs
            // little more than its two sockets.
            let (sender_conn, sender_permit) = (up.conn, up.permit);
            let task_shared = shared.clone();
            shared.tracker.spawn(
                async move {
                    let _permits = (sender_permit, listener_permit);
                    let end = relay(
                        sender_conn,
                        &sender_pre,
                        lconn,
                        &pre,
                        &task_shared.relay,
                        &task_shared.cancel,
                    )
                    .await;
                    match &end {
                        RelayEnd::Aborted { side, reason, code } => {
                            info!(sender = %id, ?side, %reason, code, "relay aborted");
                        }
                        _ => info!(sender = %id, ?end, "relay ended"),
                    }
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
}

async fn rendezvous(shared: Arc<Shared>, mut up: Upgrade) {
    let query: &HcQuery = &up.target.query;
    if query.action == Some(Action::Request) {
        let id = query.id.clone();
        return crate::http::rendezvous(shared, up.conn, up.head, up.key, id).await;
    }
    let Some(pending) = query
        .rendezvous
        .as_deref()
        .and_then(|k| shared.registry.take_pending(k))
    else {
        return up
            .fail(
                &shared,
                403,
                "the rendezvous address is invalid, expired or already used",
            )
            .await;
    };
    if query.id.as_deref().is_some_and(|id| id != pending.id) {
        return up
            .fail(
                &shared,
                403,
                "the rendezvous address is invalid, expired or already used",
            )
            .await;
    }
    if let Some(status) = query.status_code {
        // A reject: the sender's upgrade fails with the listener's status (an error status,
        // whatever the listener asked for), and the listener learns it worked with 410.
        let status = if (400..=599).contains(&status) {
            status
        } else {
            400
        };
        let description = query
            .status_description
            .clone()
            .unwrap_or_else(|| crate::handshake::reason(status).to_owned());
        let _ = pending.reply.send(Rendezvous::Rejected {
            status,
            description,
        });
        return up.fail(&shared, 410, "Gone").await;
    }
    if pending.reply.is_closed() {
        return up.fail(&shared, 404, "the sender went away").await;
    }
    let protocol = up
        .head
        .header("Sec-WebSocket-Protocol")
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    if switch(&mut up.conn, &up.key, protocol.as_deref())
        .await
        .is_err()
    {
        return;
    }
    let accepted = Rendezvous::Accepted {
        conn: up.conn,
        pre: up.head.rest,
        protocol,
        permit: up.permit,
    };
    if let Err(Rendezvous::Accepted {
        conn: mut lconn, ..
    }) = pending.reply.send(accepted)
    {
        let _ = timeout(shared.config.timeouts.close, async {
            let _ = write_close(&mut lconn, 1001, "sender went away").await;
            let _ = lconn.shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> Head {
        Head {
            method: "GET".into(),
            target: "/".into(),
            minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            rest: Vec::new(),
            raw: Vec::new(),
        }
    }

    #[test]
    fn connect_headers_drop_the_token_and_join_repeats() {
        let head = head(&[
            ("Sec-WebSocket-Key", "k"),
            ("servicebusauthorization", "secret"),
            ("X-A", "1"),
            ("X-A", "2"),
        ]);
        let h = connect_headers(&head);
        assert_eq!(h.len(), 2);
        assert_eq!(h["X-A"], "1, 2");
        assert!(!h.values().any(|v| v.contains("secret")));
    }

    #[test]
    fn routing_header_lists() {
        let lower = ALLOWED_LISTENERS.to_lowercase();
        let head = head(&[(lower.as_str(), " a, b ,,")]);
        assert_eq!(
            id_list(&head, ALLOWED_LISTENERS),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(id_list(&head, DISALLOWED_LISTENERS), None);
    }
}
