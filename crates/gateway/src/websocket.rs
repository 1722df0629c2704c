//! The Hybrid Connections WebSocket front end: listener control channels (`listen`),
//! senders (`connect`), and rendezvous (`accept`, including rejects).
//!
//! ```text
//!  sender  ── GET /$hc/p?sb-hc-action=connect ─► auth(Send) ─► pairing: pick, offer ─► accept JSON ─┐
//!              (upgrade held open, offer.wait())                                                  │
//!  listener ─ GET accept.address ───────────────► pairing: claim (one-shot) ◄─────────────────────┘
//!              101 to the listener, 101 to the sender, then ferry_net::relay in the sender's task
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_hc::address::{Action, HcQuery, HcTarget};
use ferry_hc::auth::AuthError;
use ferry_hc::command::{FEATURES_HEADER, Features, Headers, RemoteEndpoint};
use ferry_net::conn::Conn;
use ferry_net::raw::relay_raw;
use ferry_net::relay::{RelayEnd, Side, relay, write_close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{Instrument as _, debug, info};

use crate::admission::Slot;
use crate::control;
use crate::diagnostics;
use crate::handshake::{Head, respond, switch};
use crate::metrics::{self, Counted};
use crate::pairing::{
    Choice, Destination, Intent, Listener, PairError, Paired, PathSettings, Refused, new_id,
};
use crate::state::Shared;

/// Header a sender uses to restrict which listeners may take it (spec §8).
const ALLOWED_LISTENERS: &str = "Microsoft-Relay-AllowedListeners";
/// Header a sender uses to exclude listeners.
const DISALLOWED_LISTENERS: &str = "Microsoft-Relay-DisallowedListeners";
/// Where WebSocket clients put their token.
const AUTH_HEADER: &str = "ServiceBusAuthorization";

/// Largest control message from a listener (spec §4.3).
const MAX_CONTROL_MESSAGE: usize = ferry_hc::command::MAX_COMMAND_LEN;

/// Sends an error response, bounded in time; the connection is dropped afterwards.
pub(crate) async fn reply(shared: &Shared, conn: &mut Conn, status: u16, description: &str) {
    let _ = timeout(
        shared.tuning().timeouts.close,
        respond(conn, status, description),
    )
    .await;
}

/// A validated WebSocket upgrade request.
pub(crate) struct Upgrade {
    pub(crate) conn: Conn,
    pub(crate) peer: SocketAddr,
    pub(crate) head: Head,
    pub(crate) target: HcTarget,
    /// Its `Sec-WebSocket-Key`.
    pub(crate) key: String,
    /// This connection's share of `max_connections`.
    pub(crate) permit: Slot,
    /// The hybrid connection it addresses, once known (metrics label it so).
    pub(crate) entity: String,
}

/// Sends an error response whose description carries a tracking id, logged with it as a
/// diagnostic event.
pub(crate) async fn refuse(
    shared: &Shared,
    conn: &mut Conn,
    peer: SocketAddr,
    status: u16,
    description: &str,
) {
    let description = if description.is_empty() {
        crate::handshake::reason(status)
    } else {
        description
    };
    let operation = diagnostics::Operation::of_refusal(status, false);
    let description = diagnostics::refusal(shared, operation, "", peer, status, description);
    reply(shared, conn, status, &description).await;
}

impl Upgrade {
    /// Refuses the upgrade: the description gets a tracking id, logged with it.
    async fn fail(self, shared: &Shared, status: u16, description: &str) {
        let listener = matches!(self.role(), Some(metrics::Role::Listener));
        let operation = diagnostics::Operation::of_refusal(status, listener);
        let description = diagnostics::refusal(
            shared,
            operation,
            &self.entity,
            self.peer,
            status,
            description,
        );
        self.answer(shared, status, &description).await;
    }

    /// Answers the upgrade with `status` and `description` as they are.
    async fn answer(mut self, shared: &Shared, status: u16, description: &str) {
        if let Some(role) = self.role() {
            shared.metrics.connection(role, &self.entity, status);
            shared.metrics.refused(&self.entity, status, description);
        }
        reply(shared, &mut self.conn, status, description).await;
    }

    /// Listeners and senders are counted; rendezvous belong to connections counted already.
    fn role(&self) -> Option<metrics::Role> {
        match self.target.query.action_or_connect() {
            Action::Listen => Some(metrics::Role::Listener),
            Action::Connect => Some(metrics::Role::Sender),
            Action::Accept | Action::Request => None,
        }
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

    fn authorize_sender(&self, shared: &Shared, settings: &PathSettings) -> Result<(), AuthError> {
        shared.authorize_sender(self.peer, settings, self.token(), &self.target.path)
    }
}

pub(crate) async fn listen(shared: Arc<Shared>, mut up: Upgrade) {
    let Some(settings) = shared.pairing.listener_path(&up.target.path) else {
        return up.fail(&shared, 404, "no such hybrid connection").await;
    };
    up.entity.clone_from(&settings.name);
    let expiry = match shared.authorize_listener(up.peer, &settings, up.token(), &up.target.path) {
        Ok(expiry) => expiry,
        Err(e) => return up.fail(&shared, e.status(), &e.to_string()).await,
    };
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
    let features = features(&up.head);
    let listener = Listener {
        id: up.target.query.id.clone(),
        base,
        features,
    };
    // From here on the registration is undone however this task ends.
    let registration = match shared.pairing.register(&settings, listener).await {
        Ok(registration) => registration,
        Err(Refused::Full) => {
            return up
                .fail(
                    &shared,
                    403,
                    "the hybrid connection has its maximum number of listeners",
                )
                .await;
        }
        Err(Refused::Unavailable(why)) => return up.fail(&shared, 503, why).await,
    };
    if switch(&mut up.conn, &up.key, None, false).await.is_err() {
        return;
    }
    shared
        .metrics
        .connection(metrics::Role::Listener, &settings.name, 101);
    let _listening = shared.metrics.listening(&settings.name);
    let id = registration.id().to_owned();
    info!(path = %settings.name, listener = %id, peer = %up.peer, ?features, "listener online");
    diagnostics::event(
        &shared,
        diagnostics::Operation::NewListenerRegistered,
        &settings.name,
        up.peer,
        &format!("listener {id} registered"),
    );
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
    let (entity, peer) = (settings.name.clone(), up.peer);
    control::run(shared.clone(), ws, registration, settings, hosts, expiry).await;
    diagnostics::event(
        &shared,
        diagnostics::Operation::ListenerUnregistered,
        &entity,
        peer,
        &format!("listener {id} unregistered"),
    );
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

/// The Ferry extensions an upgrade lists in its `Ferry-Features` headers.
fn features(head: &Head) -> Features {
    Features::parse(
        head.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(FEATURES_HEADER))
            .map(|(_, v)| v.as_str()),
    )
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

/// What a sender is told when it cannot be paired.
fn refusal(e: &PairError) -> (u16, &str) {
    match e {
        PairError::NoListener | PairError::Gone => (404, "no listener is connected"),
        PairError::NoneMatch => (
            404,
            "None of the connected listeners meet the AllowedListeners/DisallowedListeners criteria",
        ),
        PairError::Busy => (503, "the listener is not keeping up"),
        PairError::TimedOut => (504, "the listener did not accept in time"),
        PairError::Abandoned => (503, "the rendezvous was abandoned"),
        PairError::Rejected {
            status,
            description,
        } => (*status, description),
    }
}

pub(crate) async fn connect(shared: Arc<Shared>, mut up: Upgrade) {
    let settings = match shared.pairing.destination(&up.target.path) {
        Destination::Path(settings) => settings,
        // In dynamic mode a path exists only while listened on. Check the token against the
        // namespace rules first, so an unauthenticated caller cannot probe which paths exist.
        Destination::Unlistened(namespace) => {
            if let Err(e) = up.authorize_sender(&shared, &namespace) {
                return up.fail(&shared, e.status(), &e.to_string()).await;
            }
            return up.fail(&shared, 404, "no listener is connected").await;
        }
        Destination::Unknown => return up.fail(&shared, 404, "no such hybrid connection").await,
    };
    up.entity.clone_from(&settings.name);
    // The path's IP rules hold for anonymous senders too.
    if let Err(e) = crate::auth::path_admits(&settings, up.peer) {
        return up.fail(&shared, e.status(), &e.to_string()).await;
    }
    if !settings.anonymous_senders
        && let Err(e) = up.authorize_sender(&shared, &settings)
    {
        return up.fail(&shared, e.status(), &e.to_string()).await;
    }
    let choice = Choice::among(
        id_list(&up.head, ALLOWED_LISTENERS),
        id_list(&up.head, DISALLOWED_LISTENERS).unwrap_or_default(),
    );
    // The sender's id, made here when it gave none, so the log names it throughout.
    let id = up.target.query.id.clone().unwrap_or_else(new_id);
    let intent = Intent {
        path: &up.target.path,
        app_query: &up.target.query.app_query,
        id: Some(id.clone()),
        connect_headers: connect_headers(&up.head),
        remote: Some(RemoteEndpoint {
            address: up.peer.ip().to_string(),
            port: up.peer.port(),
        }),
    };

    // Hold the upgrade until a listener answers, watching the sender so one that gives up
    // is noticed at once rather than at the timeout. A listener found gone on the way (its
    // node left) is passed over for another.
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
            paired = shared.pairing.pair(&settings, &choice, intent) => Some(paired),
            // The sender left before a listener accepted.
            () = watch => None,
        }
    };
    let paired = match outcome {
        None => return debug!(sender = %id, "sender left before a listener accepted"),
        Some(Err(e)) => {
            let (status, why) = refusal(&e);
            if let PairError::Rejected { .. } = e {
                // The listener's own words reach the sender as it wrote them.
                diagnostics::event(
                    &shared,
                    diagnostics::Operation::ListenerRejectedConnection,
                    &settings.name,
                    up.peer,
                    &format!("listener rejected sender {id} with {status} {why}"),
                );
                return up.answer(&shared, status, why).await;
            }
            return up.fail(&shared, status, why).await;
        }
        Some(Ok(pair)) => pair,
    };
    let (listener, paired) = paired;
    let Paired {
        conn: mut lconn,
        pre,
        protocol,
        permit: listener_permit,
        raw,
    } = paired;
    // Echo the listener's choice only if this sender offered it.
    let offered = up.head.header("Sec-WebSocket-Protocol").unwrap_or_default();
    let protocol = protocol.filter(|p| offered.split(',').any(|o| o.trim() == p));
    if switch(&mut up.conn, &up.key, protocol.as_deref(), raw)
        .await
        .is_err()
    {
        if raw {
            // The listener has its raw 101 already: a reset tells it the sender is gone.
            return ferry_net::raw::reset_one(lconn);
        }
        let _ = timeout(shared.tuning().timeouts.close, async {
            let _ = write_close(&mut lconn, 1001, "sender went away").await;
            let _ = lconn.shutdown().await;
        })
        .await;
        return;
    }
    let mut sender_pre = up.head.rest;
    sender_pre.extend_from_slice(&early);
    shared
        .metrics
        .connection(metrics::Role::Sender, &settings.name, 101);
    let relaying = shared.metrics.relaying(&settings.name);
    let (to_listener, to_sender) = shared.metrics.bytes(&settings.name);
    to_listener.add(sender_pre.len() as u64);
    to_sender.add(pre.len() as u64);
    info!(path = %settings.name, sender = %id, listener = %listener.id, raw, "relay started");
    diagnostics::event(
        &shared,
        diagnostics::Operation::SenderListenerConnectionEstablished,
        &settings.name,
        up.peer,
        &format!("sender {id} joined listener {}", listener.id),
    );
    // The relay gets a task of its own holding only what it needs (the two connections, their
    // permits, bytes read early): this handshake task, with its request headers and buffers,
    // ends here, so an idle relayed connection costs little more than its two sockets.
    let (sender_conn, sender_permit) = (up.conn, up.permit);
    let task_shared = shared.clone();
    shared.tracker.spawn(
        async move {
            let _held = (sender_permit, listener_permit, relaying);
            let tuning = task_shared.tuning();
            let config = &tuning.relay;
            let end = if raw {
                let count = |side: Side, n: u64| match side {
                    Side::A => to_listener.add(n),
                    Side::B => to_sender.add(n),
                };
                relay_raw(
                    sender_conn,
                    &sender_pre,
                    lconn,
                    &pre,
                    config,
                    &task_shared.cancel,
                    &count,
                )
                .await
            } else {
                relay(
                    Counted::new(sender_conn, to_listener),
                    &sender_pre,
                    Counted::new(lconn, to_sender),
                    &pre,
                    config,
                    &task_shared.cancel,
                )
                .await
            };
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

/// A listener opened a rendezvous address (`sb-hc-action=accept`): the sender waiting on it
/// gets the listener's connection, or, for a reject (`sb-hc-statusCode`), its status.
pub(crate) async fn accept(shared: Arc<Shared>, mut up: Upgrade) {
    const UNUSABLE: &str = "the rendezvous address is invalid, expired or already used";
    let query: &HcQuery = &up.target.query;
    let Some(claim) = query
        .rendezvous
        .as_deref()
        .and_then(|key| shared.pairing.claim(key, query.id.as_deref()))
    else {
        return up.fail(&shared, 403, UNUSABLE).await;
    };
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
        claim.reject(status, description);
        // The reject worked: 410 is the listener's success.
        return up.answer(&shared, 410, "Gone").await;
    }
    if claim.sender_gone() {
        return up.fail(&shared, 404, "the sender went away").await;
    }
    let protocol = up
        .head
        .header("Sec-WebSocket-Protocol")
        .and_then(|p| p.split(',').next())
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    // Raw only when both ends asked: the listener here, the sender on its upgrade.
    let listener_raw = features(&up.head).raw;
    let raw = listener_raw && claim.sender_raw();
    if switch(&mut up.conn, &up.key, protocol.as_deref(), raw)
        .await
        .is_err()
    {
        return;
    }
    let paired = Paired {
        conn: up.conn,
        pre: up.head.rest,
        protocol,
        permit: up.permit,
        raw,
    };
    if let Some(mut lconn) = claim.complete(paired) {
        if raw {
            // The listener has its raw 101 already: a reset tells it the sender is gone.
            return ferry_net::raw::reset_one(lconn);
        }
        let _ = timeout(shared.tuning().timeouts.close, async {
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
