//! The listener: holds a control channel on a path, hands out incoming connections, and
//! keeps the channel up (reconnect with backoff, token renewal, ping keep-alive).
//!
//! ```text
//!   Listener::open ──► control task ──(listen upgrade)──► gateway
//!        ▲                 │  accept JSON                    │
//!        │  bounded queue  ▼                                 │
//!   accept() ◄── IncomingConnection ──accept()/reject()──► rendezvous address
//! ```
//!
//! One task owns the control WebSocket; it reads commands, answers pings, sends pings and
//! `renewToken`, and reconnects after a loss with the SDKs' backoff (0, 1, 2, 5, 10, 30 s,
//! spec §8), each step spread at random (the first over a second, the others over half to one
//! and a half times the step) so that listeners do not reconnect in lockstep. 401, 403 and 404 stop it for good: retrying cannot fix credentials or a path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_hc::address::{Action, encode_query_value, hc_url};
pub use ferry_hc::command::RemoteEndpoint;
use ferry_hc::command::{
    Accept, Command, CommandError, FEATURE_RAW, FEATURES_HEADER, Features, RenewToken, Request,
    Response,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::sender::{AUTH_HEADER, new_id};
use crate::stream::HybridStream;
use crate::transport::{self, Transport};

/// Reconnect delays after consecutive failures (the .NET and hyco-https SDKs', spec §8); the
/// last one repeats. Each is spread by [`reconnect_delay`], so listeners that lost a gateway
/// together do not all come back in the same instant.
pub const RECONNECT_BACKOFF: [Duration; 6] = [
    Duration::from_secs(0),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// The first retry, which [`RECONNECT_BACKOFF`] makes immediate, is spread over this window.
pub const FIRST_RETRY_SPREAD: Duration = Duration::from_secs(1);

/// The delay before reconnect attempt `failures` (0 for the first): the backoff step, spread
/// uniformly over half to one and a half times it ("equal jitter"); the first, a zero step,
/// over [`FIRST_RETRY_SPREAD`]. A gateway that restarts under thousands of listeners then
/// sees their reconnects spread over a second or more, not all at once.
pub fn reconnect_delay(failures: usize) -> Duration {
    let step = RECONNECT_BACKOFF[failures.min(RECONNECT_BACKOFF.len() - 1)];
    if step.is_zero() {
        return FIRST_RETRY_SPREAD.mul_f64(rand::random::<f64>());
    }
    step.mul_f64(0.5 + rand::random::<f64>())
}

/// How many incoming connections wait in [`Listener::accept`]'s queue. Beyond that the
/// listener is too slow: new senders are rejected with 503 rather than queued without bound.
pub const ACCEPT_QUEUE: usize = 64;

/// How many "busy" rejects may be in flight at once; past that, overflowing senders are left
/// to the gateway's rendezvous timeout instead of costing us a connection each.
const MAX_BUSY_REJECTS: usize = 16;

/// A session that stayed online this long resets the backoff to its start.
const STABLE_SESSION: Duration = Duration::from_secs(60);

/// Read buffer of the control channel's WebSocket: commands are small JSON texts.
const CONTROL_READ_BUFFER: usize = 8 * 1024;

/// Write buffer of the control channel's WebSocket; frames go out when it fills or on flush.
const CONTROL_WRITE_BUFFER: usize = 64 * 1024;

/// How long `close` waits for the control task to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the listener's control channel stands.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Status {
    /// Opening the control channel.
    Connecting,
    /// The control channel is up; senders can reach us.
    Online,
    /// The control channel is down.
    Offline(Offline),
}

/// Why the listener is offline.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Offline {
    /// The channel was lost or an attempt failed; the next attempt starts after `retry_in`.
    Reconnecting {
        /// What went wrong, for display.
        reason: String,
        /// The backoff delay before the next attempt.
        retry_in: Duration,
    },
    /// The gateway refused us (401, 403, 404): the listener gave up.
    Failed(Arc<ConnectError>),
    /// [`Listener::close`] was called, or the listener dropped.
    Closed,
}

/// What [`Listener::accept`] can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// The listener was closed.
    #[error("listener is closed")]
    Closed,
    /// The gateway refused the listener for good (401, 403, 404).
    #[error("gateway refused the listener")]
    Refused(#[source] Arc<ConnectError>),
}

/// A listener on one path. Dropping it closes the control channel (without waiting); prefer
/// [`Self::close`].
#[derive(Debug)]
pub struct Listener {
    id: String,
    incoming: mpsc::Receiver<IncomingConnection>,
    status: watch::Receiver<Status>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Listener {
    /// Opens the control channel and returns once it is online. Later losses are repaired in
    /// the background (watch [`Self::status`]).
    ///
    /// # Errors
    /// The first connection attempt failed; nothing is retried then, so a bad token or path
    /// shows up at once.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future stops the control task.
    pub async fn open(endpoint: Endpoint) -> Result<Self, ConnectError> {
        Self::open_with(endpoint, None).await
    }

    /// [`Self::open`], with the HTTP hooks of [`crate::http::HttpListener`] when given.
    pub(crate) async fn open_with(
        endpoint: Endpoint,
        http: Option<HttpHooks>,
    ) -> Result<Self, ConnectError> {
        let (first_tx, first_rx) = oneshot::channel();
        let listener = Self::spawn(endpoint, Some(first_tx), http);
        match first_rx.await {
            Ok(Ok(())) => Ok(listener),
            Ok(Err(e)) => Err(e),
            // The task ended without reporting, which it only does when cancelled.
            Err(_) => Err(ConnectError::Handshake("listener task ended".into())),
        }
    }

    /// Starts the listener without waiting: the first connection, and every reconnection,
    /// happen in the background with backoff. Failures show in [`Self::status`]; a
    /// permanent one also ends [`Self::accept`] with [`ListenerError::Refused`].
    pub fn start(endpoint: Endpoint) -> Self {
        Self::spawn(endpoint, None, None)
    }

    fn spawn(
        endpoint: Endpoint,
        first: Option<oneshot::Sender<Result<(), ConnectError>>>,
        http: Option<HttpHooks>,
    ) -> Self {
        let id = new_id();
        let (incoming_tx, incoming) = mpsc::channel(ACCEPT_QUEUE);
        let (status_tx, status) = watch::channel(Status::Connecting);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let control = Control {
            endpoint,
            id: id.clone(),
            incoming: incoming_tx,
            status: status_tx,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            busy_rejects: Arc::new(Semaphore::new(MAX_BUSY_REJECTS)),
            requests: http.as_ref().map(|h| h.requests.clone()),
            cancels: Cancels::default(),
        };
        let responses = http.map(|h| h.responses);
        let span = info_span!("listener", path = control.endpoint.path(), listener_id = %id);
        // The control task owns the WebSocket; it ends on cancel or a permanent refusal.
        tracker.spawn(control.run(first, responses).instrument(span));
        tracker.close();
        Self {
            id,
            incoming,
            status,
            cancel,
            tracker,
        }
    }

    /// The listener id sent as `sb-hc-id` (stable across reconnects; senders can target it
    /// with `Microsoft-Relay-AllowedListeners`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The control channel's status, as a watch channel; `changed()` on it waits for the
    /// next change after this call.
    pub fn status(&self) -> watch::Receiver<Status> {
        let mut rx = self.status.clone();
        rx.mark_unchanged();
        rx
    }

    /// The next incoming connection. Take or reject it promptly: the gateway's rendezvous
    /// address expires (30 s by default).
    ///
    /// # Errors
    /// [`ListenerError::Closed`] after [`Self::close`]; [`ListenerError::Refused`] once the
    /// gateway refused the listener for good.
    ///
    /// # Cancel safety
    /// Cancel safe: a connection is either returned or stays queued.
    pub async fn accept(&mut self) -> Result<IncomingConnection, ListenerError> {
        match self.incoming.recv().await {
            Some(conn) => Ok(conn),
            None => match &*self.status.borrow() {
                Status::Offline(Offline::Failed(e)) => Err(ListenerError::Refused(e.clone())),
                _ => Err(ListenerError::Closed),
            },
        }
    }

    /// Closes the control channel (Close 1000) and waits for the control task to end.
    /// Connections already accepted are not affected.
    ///
    /// # Cancel safety
    /// Cancel safe: the close is requested before the first await.
    pub async fn close(self) {
        self.cancel.cancel();
        if tokio::time::timeout(CLOSE_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(listener_id = %self.id, "listener task did not stop in time");
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A sender waiting for this listener: accept it or reject it.
#[derive(Debug)]
pub struct IncomingConnection {
    /// The sender's tracking id (`accept.id`).
    pub id: String,
    /// The one-shot rendezvous address (a capability: do not log it).
    pub address: String,
    /// The sender's upgrade headers (the gateway removes auth headers).
    pub connect_headers: BTreeMap<String, String>,
    /// The sender's address, when the gateway reports it.
    pub remote_endpoint: Option<RemoteEndpoint>,
    endpoint: Endpoint,
}

impl IncomingConnection {
    fn new(accept: Accept, endpoint: Endpoint) -> Self {
        Self {
            id: accept.id,
            address: accept.address,
            connect_headers: accept.connect_headers,
            remote_endpoint: accept.remote_endpoint,
            endpoint,
        }
    }

    /// Whether the sender asked for a raw stream.
    fn sender_wants_raw(&self) -> bool {
        self.connect_headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(FEATURES_HEADER))
            .any(|(_, v)| Features::parse([v.as_str()]).raw)
    }

    /// A connect header by name, ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.connect_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Takes the connection: opens the rendezvous address, echoing the first sub-protocol
    /// the sender offered (as the .NET SDK and hyco-ws do). When the endpoint asks for raw
    /// streams and the sender did too, the rendezvous asks the gateway for one.
    ///
    /// # Errors
    /// The rendezvous failed: 403 if the address expired or was used, timeouts, transport.
    ///
    /// # Cancel safety
    /// Cancel safe, but the connection is lost: the sender's upgrade fails when the
    /// rendezvous times out.
    pub async fn accept(self) -> Result<HybridStream, ConnectError> {
        let protocol = self
            .header("Sec-WebSocket-Protocol")
            .and_then(|p| p.split(',').map(str::trim).find(|p| !p.is_empty()))
            .map(str::to_owned);
        let mut headers: Vec<(&str, &str)> = protocol
            .as_deref()
            .map(|p| ("Sec-WebSocket-Protocol", p))
            .into_iter()
            .collect();
        if self.endpoint.raw_streams() && self.sender_wants_raw() {
            headers.push((FEATURES_HEADER, FEATURE_RAW));
        }
        let upgraded = transport::open(&self.endpoint, &self.address, &headers).await?;
        Ok(HybridStream::new(
            upgraded,
            self.endpoint.max_message_size(),
        ))
    }

    /// Rejects the connection: the sender's upgrade fails with `status` and `description`
    /// (spec §5.5). The gateway confirms with 410 Gone.
    ///
    /// # Errors
    /// The gateway answered anything but 410, or the rendezvous failed.
    ///
    /// # Cancel safety
    /// Cancel safe; a cancelled reject leaves the sender to the rendezvous timeout.
    pub async fn reject(self, status: u16, description: &str) -> Result<(), ConnectError> {
        let url = format!(
            "{}&sb-hc-statusCode={status}&sb-hc-statusDescription={}",
            self.address,
            encode_query_value(description)
        );
        match transport::open(&self.endpoint, &url, &[]).await {
            Err(ConnectError::Status { status: 410, .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(upgraded) => {
                // A gateway that upgrades a reject is broken; dropping the transport closes
                // the socket.
                drop(upgraded);
                Err(ConnectError::Handshake(
                    "gateway upgraded a reject instead of answering 410".into(),
                ))
            }
        }
    }
}

/// What connects the control task to [`crate::http::HttpListener`]: `request` commands
/// (with their inline body) go out through `requests`; `response` commands to send come in
/// through `responses`. Both queues are bounded.
#[derive(Debug)]
pub(crate) struct HttpHooks {
    pub(crate) requests: mpsc::Sender<InlineRequest>,
    pub(crate) responses: mpsc::Receiver<OutgoingResponse>,
}

/// A `request` command as it arrived on the control channel, with its body message when
/// `body` was `true`. A rendezvous-only request has no body here.
#[derive(Debug)]
pub(crate) struct InlineRequest {
    pub(crate) request: Request,
    pub(crate) body: Option<Bytes>,
    /// Cancelled when the gateway sends `cancel` for the request.
    pub(crate) cancel: CancelGuard,
}

/// The requests handed to the HTTP side that the gateway may still cancel (Ferry's `cancel`
/// extension, see [`ferry_hc::command`]), by request id. The control task registers each
/// request as it hands it on and cancels it on command; the request's [`CancelGuard`] takes
/// it out again when the request is done with, so the map holds at most the queued and
/// in-flight requests.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cancels(Arc<Mutex<CancelMap>>);

#[derive(Debug, Default)]
struct CancelMap {
    /// Tells registrations apart, so a guard never removes a later request's entry that
    /// reused its id.
    next: u64,
    live: HashMap<String, (u64, CancellationToken)>,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, CancelMap> {
        // Each critical section is one map operation: a panic cannot leave it half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers request `id`; it stays cancellable until the guard drops.
    pub(crate) fn register(&self, id: &str) -> CancelGuard {
        let token = CancellationToken::new();
        let mut map = self.lock();
        map.next += 1;
        let seq = map.next;
        map.live.insert(id.to_owned(), (seq, token.clone()));
        CancelGuard {
            cancels: self.clone(),
            id: id.to_owned(),
            seq,
            token,
        }
    }

    /// Cancels request `id`; `false` when it is not (or no longer) in progress.
    fn cancel(&self, id: &str) -> bool {
        let token = self.lock().live.get(id).map(|(_, t)| t.clone());
        token.inspect(CancellationToken::cancel).is_some()
    }
}

/// One request's registration in [`Cancels`]; its token fires on the gateway's `cancel`.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    cancels: Cancels,
    id: String,
    seq: u64,
    token: CancellationToken,
}

impl CancelGuard {
    /// Fires when the gateway cancels the request.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let mut map = self.cancels.lock();
        if map
            .live
            .get(&self.id)
            .is_some_and(|(seq, _)| *seq == self.seq)
        {
            map.live.remove(&self.id);
        }
    }
}

/// A `response` command for the control channel, with the body message to send right
/// behind it (spec §4.1: nothing may come between them).
#[derive(Debug)]
pub(crate) struct OutgoingResponse {
    pub(crate) response: Response,
    pub(crate) body: Option<Bytes>,
}

/// Largest inline request body accepted from the control channel. The service sends bodies
/// over 64 kB through a rendezvous (spec §4.3); a bit of slack tolerates peers that count
/// differently, and anything larger is answered with 413.
pub(crate) const MAX_INLINE_BODY: usize = 128 * 1024;

/// The control task's state.
struct Control {
    endpoint: Endpoint,
    id: String,
    incoming: mpsc::Sender<IncomingConnection>,
    status: watch::Sender<Status>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    busy_rejects: Arc<Semaphore>,
    /// Where `request` commands go; `None` for a plain (WebSocket-only) listener.
    requests: Option<mpsc::Sender<InlineRequest>>,
    /// Requests handed to the HTTP side, for the gateway's `cancel` commands.
    cancels: Cancels,
}

/// How one control-channel session ended.
enum SessionEnd {
    Cancelled,
    Lost(String),
    /// A stopping cluster node handed the listener off ([`ferry_hc::HANDOFF_REASON`]).
    HandedOff(String),
}

impl Control {
    async fn run(
        mut self,
        mut first: Option<oneshot::Sender<Result<(), ConnectError>>>,
        mut responses: Option<mpsc::Receiver<OutgoingResponse>>,
    ) {
        let mut failures = 0usize;
        // Gateway nodes tried since the listener was last online.
        let mut tried = 0usize;
        loop {
            self.status.send_replace(Status::Connecting);
            let attempt = tokio::select! {
                // Cancelled while connecting: nothing to close yet.
                () = self.cancel.cancelled() => break,
                r = self.connect() => r,
            };
            let reason = match attempt {
                Ok((mut ws, expires_at)) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    info!("listener online");
                    self.status.send_replace(Status::Online);
                    let online_at = Instant::now();
                    match self.session(&mut ws, expires_at, &mut responses).await {
                        SessionEnd::Cancelled => break,
                        SessionEnd::Lost(reason) => {
                            if online_at.elapsed() >= STABLE_SESSION {
                                failures = 0;
                            }
                            reason
                        }
                        SessionEnd::HandedOff(reason) if self.endpoint.gateway_count() > 1 => {
                            // The node waits for us to listen elsewhere before it lets the
                            // next listener go: no backoff, and no failure counted.
                            info!(%reason, "gateway node handed the listener off; moving");
                            self.next_gateway();
                            tried = 0;
                            continue;
                        }
                        SessionEnd::HandedOff(reason) => reason,
                    }
                }
                Err(e) => {
                    tried += 1;
                    // Another node of a cluster may take us: every node is tried once before
                    // the first attempt counts as failed.
                    if !e.is_permanent() && tried < self.endpoint.gateway_count() {
                        info!(error = %e, gateway = %self.endpoint.base(), "gateway node refused; trying the next");
                        self.next_gateway();
                        continue;
                    }
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(e));
                        self.status.send_replace(Status::Offline(Offline::Closed));
                        return;
                    }
                    if e.is_permanent() {
                        warn!(error = %e, "gateway refused the listener; giving up");
                        self.status
                            .send_replace(Status::Offline(Offline::Failed(Arc::new(e))));
                        return;
                    }
                    e.to_string()
                }
            };
            // A lost node, or one that refused: the next attempt goes to the next node.
            self.next_gateway();
            tried = 0;
            let retry_in = reconnect_delay(failures);
            failures += 1;
            warn!(%reason, ?retry_in, "listener offline");
            self.status
                .send_replace(Status::Offline(Offline::Reconnecting { reason, retry_in }));
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(retry_in) => {}
            }
        }
        self.status.send_replace(Status::Offline(Offline::Closed));
    }

    /// Moves to the endpoint's next gateway node (when it names several).
    fn next_gateway(&mut self) {
        if self.endpoint.gateway_count() > 1 {
            self.endpoint = self.endpoint.on_gateway(self.endpoint.gateway_index() + 1);
        }
    }

    /// Opens the control channel; returns it with the token's expiry.
    async fn connect(
        &self,
    ) -> Result<(WebSocketStream<Transport>, Option<SystemTime>), ConnectError> {
        let url = hc_url(
            &self.endpoint.base(),
            self.endpoint.path(),
            "",
            Action::Listen,
            Some(&self.id),
        );
        let token = match self.endpoint.token_provider() {
            Some(p) => Some(p.token(&self.endpoint.resource_uri())?),
            None => None,
        };
        let mut headers: Vec<(&str, &str)> = token
            .as_ref()
            .map(|t| (AUTH_HEADER, t.text.as_str()))
            .into_iter()
            .collect();
        // An HTTP listener asks a Ferry gateway for `cancel` commands (the Azure service
        // ignores the header and never sends them).
        let features = Features::ALL.header_value();
        if self.requests.is_some() {
            headers.push((FEATURES_HEADER, &features));
        }
        let upgraded = transport::open(&self.endpoint, &url, &headers).await?;
        // One connection per listener, so tungstenite's buffers cost little here; frames the
        // gateway sent right behind the 101 are handed over with the transport.
        let config = WebSocketConfig::default()
            .read_buffer_size(CONTROL_READ_BUFFER)
            // Responses are fed in batches and flushed once (see `send_responses`): the
            // buffer lets a batch go out in a few writes instead of one per message.
            .write_buffer_size(CONTROL_WRITE_BUFFER)
            .max_message_size(Some(self.endpoint.max_message_size()))
            .max_frame_size(Some(self.endpoint.max_message_size()));
        let ws = WebSocketStream::from_partially_read(
            upgraded.io,
            upgraded.rest,
            Role::Client,
            Some(config),
        )
        .await;
        Ok((ws, token.and_then(|t| t.expires_at)))
    }

    /// Runs one control-channel session until it is lost or cancelled.
    async fn session(
        &self,
        ws: &mut WebSocketStream<Transport>,
        mut expires_at: Option<SystemTime>,
        responses: &mut Option<mpsc::Receiver<OutgoingResponse>>,
    ) -> SessionEnd {
        let keep_alive = self.endpoint.keep_alive();
        let send_timeout = self.endpoint.handshake_timeout();
        let mut ping = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Anything heard from the gateway since the last ping proves it alive.
        let mut heard = true;
        let renew = tokio::time::sleep_until(renew_deadline(expires_at));
        tokio::pin!(renew);
        // A `request` with `body: true` whose body message has not arrived yet: the next
        // message is its body (spec §4.1), so the two are delivered together.
        let mut pending: Option<Request> = None;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    // Say goodbye, but never wait long on a gateway that is not reading.
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = tokio::time::timeout(send_timeout, ws.close(Some(frame))).await;
                    info!("listener closed");
                    return SessionEnd::Cancelled;
                }
                // `next` is cancel safe: a message not yet returned stays buffered.
                msg = ws.next() => {
                    heard = true;
                    match msg {
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Some(request) = pending.take() {
                                warn!(request_id = %request.id, "request body missing; request dropped");
                            }
                            let reply = self.command(text.as_str(), &mut pending);
                            if let Err(reason) = send_response(ws, reply, send_timeout).await {
                                return SessionEnd::Lost(reason);
                            }
                        }
                        Some(Ok(WsMessage::Binary(body))) => {
                            let reply = match pending.take() {
                                Some(request) => self.deliver(request, Some(body)),
                                None => {
                                    debug!("binary message without a request ignored");
                                    None
                                }
                            };
                            if let Err(reason) = send_response(ws, reply, send_timeout).await {
                                return SessionEnd::Lost(reason);
                            }
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let handed_off = frame.as_ref().is_some_and(|f| {
                                u16::from(f.code) == 1001 && f.reason == ferry_hc::HANDOFF_REASON
                            });
                            let reason = frame.map_or_else(
                                || "gateway closed the control channel".to_owned(),
                                |f| format!("gateway closed the control channel: {} {}",
                                    u16::from(f.code), f.reason),
                            );
                            // Let the automatic Close reply out before dropping the socket.
                            let _ = tokio::time::timeout(send_timeout, ws.flush()).await;
                            return if handed_off {
                                SessionEnd::HandedOff(reason)
                            } else {
                                SessionEnd::Lost(reason)
                            };
                        }
                        // Pings are answered by the WebSocket layer on the next read.
                        Some(Ok(other)) => debug!(kind = ?kind(&other), "control frame ignored"),
                        Some(Err(e)) => return SessionEnd::Lost(format!("control channel failed: {e}")),
                        None => return SessionEnd::Lost("control channel ended".into()),
                    }
                }
                _ = ping.tick() => {
                    if !heard {
                        return SessionEnd::Lost("gateway did not answer pings".into());
                    }
                    heard = false;
                    match tokio::time::timeout(send_timeout, ws.send(WsMessage::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return SessionEnd::Lost(format!("ping failed: {e}")),
                        Err(_) => return SessionEnd::Lost("ping send timed out".into()),
                    }
                }
                // One response at a time, its JSON and body back to back: this arm is the only
                // writer of responses, so nothing can be interleaved between them.
                out = next_response(responses) => {
                    if let Err(reason) = send_responses(ws, out, responses, send_timeout).await {
                        return SessionEnd::Lost(reason);
                    }
                }
                () = &mut renew, if expires_at.is_some() => {
                    match self.renew(ws, send_timeout).await {
                        Ok(next) => {
                            expires_at = next;
                            renew.as_mut().reset(renew_deadline(expires_at));
                        }
                        Err(reason) => return SessionEnd::Lost(reason),
                    }
                }
            }
        }
    }

    /// Handles one control command. Returns a response to send at once (a request turned
    /// away); sets `pending` when a request's body message is still to come.
    fn command(&self, text: &str, pending: &mut Option<Request>) -> Option<OutgoingResponse> {
        match Command::decode(text) {
            Ok(Command::Accept(accept)) => {
                debug!(sender_id = %accept.id, "accept command");
                let conn = IncomingConnection::new(accept, self.endpoint.clone());
                if let Err(err) = self.incoming.try_send(conn) {
                    // The application is not keeping up (or stopped accepting): turn the
                    // sender away now instead of queueing without bound.
                    let conn = err.into_inner();
                    let Ok(permit) = self.busy_rejects.clone().try_acquire_owned() else {
                        warn!(sender_id = %conn.id, "accept queue full; sender left to time out");
                        return None;
                    };
                    warn!(sender_id = %conn.id, "accept queue full; rejecting sender with 503");
                    self.tracker.spawn(async move {
                        if let Err(e) = conn.reject(503, "Listener is busy").await {
                            debug!(error = %e, "busy reject failed");
                        }
                        drop(permit);
                    });
                }
            }
            // A plain listener does not serve HTTP; the .NET SDK also just logs what it does
            // not handle.
            Ok(Command::Request(request)) if self.requests.is_none() => {
                debug!(request_id = %request.id, "request command ignored: http not served")
            }
            Ok(Command::Request(request)) => {
                debug!(request_id = %request.id, "request command");
                if request.body == Some(true) {
                    *pending = Some(request);
                } else {
                    return self.deliver(request, None);
                }
            }
            // Ferry extension, asked for by HTTP listeners only: the sender went away.
            Ok(Command::Cancel(cancel)) => {
                if self.cancels.cancel(&cancel.id) {
                    debug!(request_id = %cancel.id, "request cancelled by the gateway");
                } else {
                    debug!(request_id = %cancel.id, "cancel for no request in progress ignored");
                }
            }
            Ok(other) => {
                debug!(command = ?std::mem::discriminant(&other), "control command ignored")
            }
            Err(CommandError::Unknown(name)) => debug!(%name, "unknown control command ignored"),
            Err(e) => warn!(error = %e, "malformed control command ignored"),
        }
        None
    }

    /// Hands a request to the HTTP listener; a request that cannot be taken is answered at
    /// once (413 for an oversized body, 503 when the queue is full).
    fn deliver(&self, request: Request, body: Option<Bytes>) -> Option<OutgoingResponse> {
        let requests = self.requests.as_ref()?;
        if body.as_ref().is_some_and(|b| b.len() > MAX_INLINE_BODY) {
            warn!(request_id = %request.id, "inline request body over the limit; answering 413");
            return Some(refusal(request.id, 413, "Payload Too Large"));
        }
        // Registered before it is queued: a `cancel` may come while it waits there.
        let cancel = self.cancels.register(&request.id);
        // A request that is not queued drops its guard with the error, unregistering it.
        match requests.try_send(InlineRequest {
            request,
            body,
            cancel,
        }) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(r)) => {
                warn!(request_id = %r.request.id, "request queue full; answering 503");
                Some(refusal(r.request.id, 503, "Listener is busy"))
            }
            // The application dropped its HTTP side: say so rather than let it time out.
            Err(mpsc::error::TrySendError::Closed(r)) => {
                debug!(request_id = %r.request.id, "http requests not served; answering 503");
                Some(refusal(r.request.id, 503, "Listener does not serve HTTP"))
            }
        }
    }

    /// Sends `renewToken` with a fresh token; returns its expiry.
    async fn renew(
        &self,
        ws: &mut WebSocketStream<Transport>,
        send_timeout: Duration,
    ) -> Result<Option<SystemTime>, String> {
        let Some(provider) = self.endpoint.token_provider() else {
            return Ok(None);
        };
        let token = provider
            .token(&self.endpoint.resource_uri())
            .map_err(|e| format!("cannot renew the token: {e}"))?;
        let text = Command::RenewToken(RenewToken { token: token.text }).encode();
        match tokio::time::timeout(send_timeout, ws.send(WsMessage::Text(text.into()))).await {
            Ok(Ok(())) => {
                debug!("token renewed");
                Ok(token.expires_at)
            }
            Ok(Err(e)) => Err(format!("renewToken failed: {e}")),
            Err(_) => Err("renewToken send timed out".into()),
        }
    }
}

/// When to renew a token expiring at `expires_at`: five minutes ahead for long-lived tokens,
/// at 80 % of the remaining life for short ones, so renewal always lands before the gateway
/// enforces expiry. Without an expiry: far in the future (the branch is disabled anyway).
fn renew_deadline(expires_at: Option<SystemTime>) -> Instant {
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let Some(at) = expires_at else {
        return far;
    };
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let early = if left > Duration::from_secs(600) {
        left - Duration::from_secs(300)
    } else {
        left.mul_f64(0.8)
    };
    Instant::now() + early
}

/// A body-less `response` refusing request `id`.
fn refusal(id: String, status: u16, description: &str) -> OutgoingResponse {
    OutgoingResponse {
        response: Response {
            request_id: id,
            status_code: status,
            status_description: Some(description.to_owned()),
            response_headers: BTreeMap::new(),
            body: false,
        },
        body: None,
    }
}

/// The next response to send; pends for ever on a listener without HTTP hooks or whose
/// HTTP side is gone, so the `select!` arm simply never fires.
async fn next_response(
    responses: &mut Option<mpsc::Receiver<OutgoingResponse>>,
) -> OutgoingResponse {
    match responses {
        Some(rx) => match rx.recv().await {
            Some(out) => out,
            None => {
                *responses = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Sends a `response` and its body message, each under `send_timeout`.
async fn send_response(
    ws: &mut WebSocketStream<Transport>,
    out: Option<OutgoingResponse>,
    send_timeout: Duration,
) -> Result<(), String> {
    let Some(out) = out else {
        return Ok(());
    };
    feed_response(ws, out, send_timeout).await?;
    flush(ws, send_timeout).await
}

/// Most responses written back to back before one flush.
const RESPONSE_BATCH: usize = 32;

/// Sends `first` and whatever other responses are already queued (up to
/// [`RESPONSE_BATCH`]), with one flush: under load many responses share a write.
async fn send_responses(
    ws: &mut WebSocketStream<Transport>,
    first: OutgoingResponse,
    responses: &mut Option<mpsc::Receiver<OutgoingResponse>>,
    send_timeout: Duration,
) -> Result<(), String> {
    feed_response(ws, first, send_timeout).await?;
    for _ in 1..RESPONSE_BATCH {
        let Some(out) = responses.as_mut().and_then(|rx| rx.try_recv().ok()) else {
            break;
        };
        feed_response(ws, out, send_timeout).await?;
    }
    flush(ws, send_timeout).await
}

/// Queues a `response` and its body message (written out by a later flush, or sooner when
/// the buffer fills).
async fn feed_response(
    ws: &mut WebSocketStream<Transport>,
    mut out: OutgoingResponse,
    send_timeout: Duration,
) -> Result<(), String> {
    out.response.body = out.body.is_some();
    let text = WsMessage::Text(Command::Response(out.response).encode().into());
    for message in std::iter::once(text).chain(out.body.map(WsMessage::Binary)) {
        match tokio::time::timeout(send_timeout, ws.feed(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("response send failed: {e}")),
            Err(_) => return Err("response send timed out".into()),
        }
    }
    Ok(())
}

async fn flush(ws: &mut WebSocketStream<Transport>, send_timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(send_timeout, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("response send failed: {e}")),
        Err(_) => Err("response send timed out".into()),
    }
}

fn kind(m: &WsMessage) -> &'static str {
    match m {
        WsMessage::Text(_) => "text",
        WsMessage::Binary(_) => "binary",
        WsMessage::Ping(_) => "ping",
        WsMessage::Pong(_) => "pong",
        WsMessage::Close(_) => "close",
        WsMessage::Frame(_) => "frame",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_are_spread_around_each_step() {
        let first: Vec<Duration> = (0..64).map(|_| reconnect_delay(0)).collect();
        assert!(first.iter().all(|d| *d < FIRST_RETRY_SPREAD));
        assert!(
            first.iter().any(|d| *d != first[0]),
            "the first retry is spread"
        );
        for (n, step) in RECONNECT_BACKOFF.iter().enumerate().skip(1) {
            for _ in 0..64 {
                let d = reconnect_delay(n);
                assert!(
                    d >= step.mul_f64(0.5) && d <= step.mul_f64(1.5),
                    "{n}: {d:?}"
                );
            }
        }
        let last = RECONNECT_BACKOFF[RECONNECT_BACKOFF.len() - 1];
        assert!(reconnect_delay(1000) <= last.mul_f64(1.5));
    }

    #[tokio::test]
    async fn renewal_lands_before_expiry() {
        let now = Instant::now();
        let short = renew_deadline(Some(SystemTime::now() + Duration::from_secs(10)));
        assert!(short > now + Duration::from_secs(7) && short < now + Duration::from_secs(9));
        let long = renew_deadline(Some(SystemTime::now() + Duration::from_secs(3600)));
        assert!(long > now + Duration::from_secs(3200) && long < now + Duration::from_secs(3301));
        let past = renew_deadline(Some(SystemTime::now() - Duration::from_secs(1)));
        assert!(past <= Instant::now());
    }

    #[test]
    fn headers_match_without_case() {
        let mut e = Endpoint::new("ws://127.0.0.1:1", "p").unwrap();
        e.set_keep_alive(Duration::from_secs(1));
        let conn = IncomingConnection::new(
            Accept {
                address: "ws://127.0.0.1:1/$hc/p?sb-hc-action=accept&sb-hc-id=1".into(),
                id: "1".into(),
                connect_headers: BTreeMap::from([("ferry-port".into(), "db".into())]),
                remote_endpoint: None,
            },
            e,
        );
        assert_eq!(conn.header("Ferry-Port"), Some("db"));
        assert_eq!(conn.header("Other"), None);
    }
}
