//! The pairing core: how a sender reaches a listener, whichever front end it came through.
//!
//! ```text
//!  front end (WebSocket, HTTP, gRPC, net.tcp, relayed)      listener's control channel
//!    │ destination(path) ─► PathSettings                          ▲
//!    │ pick(settings, choice) ─► ListenerHandle ── registry ──────┤ register ◄─ `listen`
//!    │ offer(listener, intent) ─► accept {address: …rendezvous=key} ──┘
//!    │ offer.wait() ◄── Paired ◄── claim(key).complete() ◄──────── listener opens the address
//!    ▼
//!  the front end relays sender ⇄ Paired
//! ```
//!
//! A stream front end asks for one listener ([`Pairing::pick`], random among those the
//! sender's `AllowedListeners`/`DisallowedListeners` admit), or for every listener on a
//! fan-out path ([`Pairing::listeners`]); it [offers](Pairing::offer) the listener a
//! one-shot rendezvous, and [waits](Offer::wait) until the listener opens it, rejects it,
//! goes away, lets it expire or the gateway shuts down. A rendezvous address is good once:
//! dropping the [`Offer`] withdraws it, however the front end's task ends. HTTP requests are
//! [exchanged](Pairing::request) on the control channel the same way, their responses
//! coming back on it or on a rendezvous the listener opens.
//!
//! Who listens where is the [`Registry`]'s: the core asks it and holds no listener itself, so
//! several nodes sharing one registry is a second implementation of that trait.

mod registry;
mod request;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_hc::Command;
use ferry_hc::address::{self, Action};
use ferry_hc::command::{Accept, FEATURES_HEADER, Features, Headers, RemoteEndpoint};
use ferry_net::conn::Conn;
use ferry_net::stream::WsStream;
use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub(crate) use self::registry::{
    ListenerHandle, Local, PathSettings, Refused, Registering, Registry, Undelivered, normalize,
};
pub(crate) use self::request::{
    CancelHandle, DeferredBody, HttpOutcome, HttpReply, Outbound, PendingHttp, ReplyBody,
};
use crate::admission::Slot;
use crate::config::Config;

/// Why a sender was not paired (or an HTTP request not answered).
#[derive(Debug)]
pub(crate) enum PairError {
    /// Nobody listens on the path.
    NoListener,
    /// Listeners are connected, but none the sender's routing headers admit.
    NoneMatch,
    /// The listener's control queue is full: it is not keeping up.
    Busy,
    /// The listener's control channel is gone.
    Gone,
    /// The listener did not open the rendezvous (or answer the request) in time.
    TimedOut,
    /// The rendezvous was dropped on the listener's side, the response was malformed or lost,
    /// or the gateway is shutting down.
    Abandoned,
    /// The listener rejected the sender with this status.
    Rejected { status: u16, description: String },
}

/// Which listeners a sender may be given (spec §8: `Microsoft-Relay-AllowedListeners` and
/// `-DisallowedListeners`); ids compare without regard to case.
#[derive(Debug, Default)]
pub(crate) struct Choice {
    allowed: Option<Vec<String>>,
    disallowed: Vec<String>,
}

impl Choice {
    /// Any listener on the path.
    pub(crate) fn any() -> Self {
        Self::default()
    }

    /// Only listeners named in `allowed` (when given), none named in `disallowed`.
    pub(crate) fn among(allowed: Option<Vec<String>>, disallowed: Vec<String>) -> Self {
        Self {
            allowed,
            disallowed,
        }
    }

    fn admits(&self, listener: &ListenerHandle) -> bool {
        let named = |ids: &[String]| ids.iter().any(|id| id.eq_ignore_ascii_case(&listener.id));
        self.allowed.as_deref().is_none_or(named) && !named(&self.disallowed)
    }

    /// This choice, without the listener `id` too (tried already and gone).
    fn without(&self, id: &str) -> Self {
        let mut disallowed = self.disallowed.clone();
        disallowed.push(id.to_owned());
        Self {
            allowed: self.allowed.clone(),
            disallowed,
        }
    }

    /// One of `listeners` at random among those admitted.
    fn choose(&self, listeners: &[ListenerHandle]) -> Result<ListenerHandle, PairError> {
        if listeners.is_empty() {
            return Err(PairError::NoListener);
        }
        // A listener whose channel is gone is on its way out of the registry: skipped.
        let usable = |l: &&ListenerHandle| self.admits(l) && !l.is_gone();
        let eligible = listeners.iter().filter(usable).count();
        if eligible == 0 {
            return Err(if listeners.iter().any(|l| !l.is_gone()) {
                PairError::NoneMatch
            } else {
                PairError::NoListener
            });
        }
        let nth = rand::rng().random_range(0..eligible);
        Ok(listeners
            .iter()
            .filter(usable)
            .nth(nth)
            .cloned()
            .expect("nth < eligible"))
    }
}

/// How many listeners [`Pairing::pair`] tries when the ones it picks turn out gone.
const MAX_ATTEMPTS: usize = 3;

/// What a sender addressed, as the listener's `accept` command tells it.
pub(crate) struct Intent<'a> {
    /// The path as the sender named it (the hybrid connection's name, and any suffix).
    pub(crate) path: &'a str,
    /// The sender's own query parameters, `sb-hc-*` removed.
    pub(crate) app_query: &'a str,
    /// The sender's `sb-hc-id`, if it chose one.
    pub(crate) id: Option<String>,
    /// Handshake headers the listener is shown (never the sender's token).
    pub(crate) connect_headers: Headers,
    pub(crate) remote: Option<RemoteEndpoint>,
}

impl Intent<'_> {
    /// The same intent, for another listener.
    fn again(&self) -> Self {
        Intent {
            path: self.path,
            app_query: self.app_query,
            id: self.id.clone(),
            connect_headers: self.connect_headers.clone(),
            remote: self.remote.clone(),
        }
    }
}

/// A listener's half of a pair: its upgraded rendezvous connection.
pub(crate) struct Paired {
    pub(crate) conn: Conn,
    /// Bytes it sent past its upgrade request.
    pub(crate) pre: Vec<u8>,
    /// The WebSocket sub-protocol it chose.
    pub(crate) protocol: Option<String>,
    /// Its connection-limit permit, held for as long as it is relayed.
    pub(crate) permit: Slot,
    /// Both ends agreed to drop WebSocket framing ([`ferry_hc::command::FEATURE_RAW`]): the
    /// listener's 101 said so, and the sender's must too.
    pub(crate) raw: bool,
}

impl Paired {
    /// The rendezvous as a byte stream (binary WebSocket messages each way), with messages
    /// from the listener limited to `max_message` bytes; and the permit to hold while it is
    /// used.
    pub(crate) fn into_stream(self, max_message: u64) -> (WsStream<Conn>, Slot) {
        let mut ws = WsStream::server(self.conn, &self.pre);
        ws.set_max_message_size(usize::try_from(max_message).unwrap_or(usize::MAX));
        (ws, self.permit)
    }
}

/// What a listener did with a rendezvous address.
enum Rendezvous {
    Accepted(Paired),
    Rejected { status: u16, description: String },
}

/// An outstanding rendezvous address.
struct Pending {
    /// The `sb-hc-id` the address carries.
    id: String,
    /// The sender asked for a raw byte stream.
    raw: bool,
    reply: oneshot::Sender<Rendezvous>,
}

/// Where a sender's path leads.
pub(crate) enum Destination {
    /// A hybrid connection (configured, or in dynamic mode listened on).
    Path(Arc<PathSettings>),
    /// Dynamic mode, nobody listening: the namespace's settings, so the sender's token is
    /// checked before it is told (a path's existence is not revealed to a stranger).
    Unlistened(Arc<PathSettings>),
    /// No such hybrid connection.
    Unknown,
}

/// A listener to register.
pub(crate) struct Listener {
    /// Its `sb-hc-id`; one is made when it gave none.
    pub(crate) id: Option<String>,
    /// `ws[s]://host[:port]` as it reached us.
    pub(crate) base: String,
    pub(crate) features: Features,
}

/// The pairing core: the registry, the outstanding rendezvous and the waiting HTTP requests.
pub(crate) struct Pairing {
    registry: Arc<dyn Registry>,
    rendezvous: Mutex<HashMap<String, Pending>>,
    requests: Mutex<HashMap<String, PendingHttp>>,
    /// How long a listener has to open a rendezvous.
    expiry: Duration,
    /// A listener's control queue, in commands.
    queue: usize,
    dynamic: bool,
    next_listener: AtomicU64,
    cancel: CancellationToken,
}

impl Pairing {
    /// A core over `registry`; waits end when `cancel` fires.
    pub(crate) fn new(
        config: &Config,
        registry: Arc<dyn Registry>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            registry,
            rendezvous: Mutex::default(),
            requests: Mutex::default(),
            expiry: config.timeouts.rendezvous,
            queue: config.limits.control_queue.get(),
            dynamic: config.dynamic_paths,
            next_listener: AtomicU64::new(0),
            cancel,
        }
    }

    // Listeners.

    /// The hybrid connection a listener at `path` would register with.
    pub(crate) fn listener_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        self.registry.listener_path(path)
    }

    /// Registers a listener on `settings`' path. The listener is offered senders until the
    /// [`Registration`] drops.
    ///
    /// # Cancel safety
    /// Cancel safe: a registration given up on is undone.
    pub(crate) async fn register(
        &self,
        settings: &Arc<PathSettings>,
        listener: Listener,
    ) -> Result<Registration, Refused> {
        let (tx, rx) = mpsc::channel(self.queue);
        let conn_id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        let id = listener.id.unwrap_or_else(new_id);
        let handle = ListenerHandle::new(
            id.clone(),
            conn_id,
            tx,
            listener.base,
            listener.features,
            None,
        );
        // Dropped before the registry answers, the guard undoes whatever it did.
        let mut registration = Registration {
            registry: self.registry.clone(),
            name: settings.name.clone(),
            id,
            conn_id,
            commands: rx,
            evicted: CancellationToken::new(),
            left: false,
        };
        registration.evicted = self.registry.register(settings, handle).await?;
        Ok(registration)
    }

    /// The paths listeners are on now.
    pub(crate) fn listened(&self) -> Vec<String> {
        self.registry.listened()
    }

    /// The listeners on a path: their ids, and the node each is on (`None`: this one).
    pub(crate) fn listeners_of(&self, path: &str) -> Vec<(String, Option<Arc<str>>)> {
        let mut out = Vec::new();
        self.registry.visit(path, &mut |all| {
            out.extend(all.iter().map(|l| (l.id.clone(), l.node.clone())));
        });
        out
    }

    /// Listeners connected on a path.
    pub(crate) fn listener_count(&self, path: &str) -> usize {
        let mut n = 0;
        self.registry.visit(path, &mut |all| n = all.len());
        n
    }

    // Senders.

    /// Where a sender's `path` leads.
    pub(crate) fn destination(&self, path: &str) -> Destination {
        match self.registry.sender_path(path) {
            Some(settings) => Destination::Path(settings),
            None if self.dynamic => {
                Destination::Unlistened(Arc::new(self.registry.namespace_settings()))
            }
            None => Destination::Unknown,
        }
    }

    /// A listener on the path for one sender, at random among those `choice` admits.
    pub(crate) fn pick(
        &self,
        settings: &PathSettings,
        choice: &Choice,
    ) -> Result<ListenerHandle, PairError> {
        let mut picked = Err(PairError::NoListener);
        self.registry
            .visit(&settings.name, &mut |all| picked = choice.choose(all));
        picked
    }

    /// Every listener on the path (at most `MAX_LISTENERS_PER_PATH`), for a fan-out session.
    pub(crate) fn listeners(&self, settings: &PathSettings) -> Vec<ListenerHandle> {
        let mut listeners = Vec::new();
        self.registry.visit(&settings.name, &mut |all| {
            listeners.extend(all.iter().take(ferry_hc::MAX_LISTENERS_PER_PATH).cloned());
        });
        listeners
    }

    /// Asks `listener` to open a rendezvous for the sender `intent` describes: an `accept`
    /// command with a one-shot address, good until the returned [`Offer`] drops.
    pub(crate) fn offer(
        &self,
        listener: &ListenerHandle,
        intent: Intent<'_>,
    ) -> Result<Offer<'_>, PairError> {
        let id = intent.id.unwrap_or_else(new_id);
        let key = new_key();
        let mut address = address::hc_url(
            &listener.base,
            intent.path,
            intent.app_query,
            Action::Accept,
            Some(&id),
        );
        address.push_str("&sb-hc-rendezvous=");
        address.push_str(&key);
        let (reply_tx, reply_rx) = oneshot::channel();
        let raw = intent
            .connect_headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(FEATURES_HEADER))
            .any(|(_, value)| Features::parse([value.as_str()]).raw);
        let pending = Pending {
            id: id.clone(),
            raw,
            reply: reply_tx,
        };
        lock(&self.rendezvous).insert(key.clone(), pending);
        // From here on the key is withdrawn however the offer ends.
        let offer = Offer {
            pairing: self,
            key,
            id: id.clone(),
            reply: reply_rx,
            // A listener on another node can vanish with its node: the sender is told at
            // once rather than at the rendezvous's expiry.
            remote: listener.node.is_some().then(|| listener.clone()),
        };
        let accept = Command::Accept(Accept {
            address,
            id,
            connect_headers: intent.connect_headers,
            remote_endpoint: intent.remote,
        });
        send(listener, accept.into())?;
        Ok(offer)
    }

    /// Pairs a sender with one listener `choice` admits: [`pick`](Self::pick),
    /// [`offer`](Self::offer) and [`wait`](Offer::wait) in one. A listener found gone on
    /// the way (its node died) is passed over for another, a few times.
    pub(crate) async fn pair(
        &self,
        settings: &PathSettings,
        choice: &Choice,
        mut intent: Intent<'_>,
    ) -> Result<(ListenerHandle, Paired), PairError> {
        let mut tried: Option<Choice> = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let listener = self.pick(settings, tried.as_ref().unwrap_or(choice))?;
            // Only a listener on another node can turn out gone after its accept was queued
            // (a local one is skipped by `pick` once its channel closes): only then is the
            // intent kept for another attempt, so a local pair costs no copy of it.
            let retry =
                (attempts < MAX_ATTEMPTS && listener.node.is_some()).then(|| intent.again());
            let outcome = match self.offer(&listener, intent) {
                Ok(offer) => offer.wait().await,
                Err(e) => Err(e),
            };
            match (outcome, retry) {
                (Ok(paired), _) => return Ok((listener, paired)),
                (Err(PairError::Gone), Some(next)) => {
                    tracing::debug!(listener = %listener.id, "listener gone; trying another");
                    tried = Some(tried.as_ref().unwrap_or(choice).without(&listener.id));
                    intent = next;
                }
                (Err(e), _) => return Err(e),
            }
        }
    }

    /// Rendezvous addresses handed out and not yet used or expired.
    pub(crate) fn pending_rendezvous(&self) -> usize {
        lock(&self.rendezvous).len()
    }

    // The listener's side of a rendezvous.

    /// Takes the rendezvous `key` names (one use only), if it is outstanding and was made for
    /// sender `id` (when the listener names one).
    pub(crate) fn claim(&self, key: &str, id: Option<&str>) -> Option<Claim> {
        let pending = lock(&self.rendezvous).remove(key)?;
        id.is_none_or(|id| id == pending.id)
            .then_some(Claim { pending })
    }

    // HTTP requests.

    /// Sends `listener` an HTTP request (`outbound`, which carries the request `id`) and
    /// returns the exchange that waits for its response. `pending` says what the listener
    /// gets if it opens a rendezvous for it, and how long the response may take.
    pub(crate) fn request<'a>(
        &'a self,
        listener: &'a ListenerHandle,
        id: String,
        outbound: Outbound,
        deferred: Option<(Command, DeferredBody)>,
        deadline: Duration,
    ) -> Result<Exchange<'a>, PairError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        // Only a listener that advertised `cancel` is sent it.
        let cancel =
            (listener.features.cancel).then(|| CancelHandle::new(&id, listener.commands.clone()));
        let pending = PendingHttp {
            deferred,
            reply: reply_tx,
            cancel: cancel.clone(),
            deadline,
        };
        lock(&self.requests).insert(id.clone(), pending);
        // Dropped however the request ends, including when the sender goes away: that is what
        // cancels the request on the listener.
        let mut exchange = Exchange {
            pairing: self,
            id,
            listener,
            cancel: None,
            reply: reply_rx,
            deadline,
        };
        send(listener, outbound)?;
        // The request is on its way: from now on an unanswered end cancels it.
        exchange.cancel = cancel;
        Ok(exchange)
    }

    /// Takes a waiting HTTP request: its response is delivered once.
    pub(crate) fn take_request(&self, id: &str) -> Option<PendingHttp> {
        lock(&self.requests).remove(id)
    }

    /// HTTP requests waiting for a listener's response.
    pub(crate) fn pending_requests(&self) -> usize {
        lock(&self.requests).len()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one map operation: a panic cannot leave it torn.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Queues a command for a listener, without waiting: a listener whose queue is full is not
/// keeping up, and the sender is told rather than held.
fn send(listener: &ListenerHandle, outbound: Outbound) -> Result<(), PairError> {
    listener.try_send(outbound).map_err(|e| match e {
        Undelivered::Busy => PairError::Busy,
        Undelivered::Gone => PairError::Gone,
    })
}

/// A listener's registration: its commands, and its place in the registry until dropped.
pub(crate) struct Registration {
    registry: Arc<dyn Registry>,
    name: String,
    id: String,
    conn_id: u64,
    commands: mpsc::Receiver<Outbound>,
    /// Fires when the registry lets the listener go.
    evicted: CancellationToken,
    /// Out of the registry already ([`Registration::leave`]).
    left: bool,
}

impl Registration {
    /// Fires when the registry lets the listener go before it leaves (its node lost its
    /// place in the cluster): the listener should reconnect, to another node.
    pub(crate) fn eviction(&self) -> CancellationToken {
        self.evicted.clone()
    }

    /// The listener's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The next command for the listener. Never `None` while registered.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        self.commands.recv().await
    }

    /// A command already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        self.commands.try_recv().ok()
    }

    /// Leaves the registry now, so no sender is offered this listener any more, while the
    /// commands already queued (an `accept` for a sender waiting on another node, say) can
    /// still be read with [`try_recv`](Self::try_recv) and sent before the channel closes.
    pub(crate) fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            self.registry.unregister(&self.name, self.conn_id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The queue closes with it: senders still holding the handle find it gone.
        self.leave();
    }
}

/// A rendezvous offered to a listener, waiting to be opened.
pub(crate) struct Offer<'a> {
    pairing: &'a Pairing,
    key: String,
    id: String,
    reply: oneshot::Receiver<Rendezvous>,
    /// The listener, when it is on another node.
    remote: Option<ListenerHandle>,
}

impl Offer<'_> {
    /// The sender's `sb-hc-id`, as the listener was told.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Waits for the listener: its connection, or why there is none. A rendezvous the
    /// listener has already opened is taken even at shutdown, so it is closed properly.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future (and the offer) withdraws the address.
    pub(crate) async fn wait(mut self) -> Result<Paired, PairError> {
        let expiry = self.pairing.expiry;
        let cancel = self.pairing.cancel.clone();
        let remote = self.remote.take();
        let gone = async {
            match &remote {
                Some(listener) => listener.gone().await,
                None => std::future::pending().await,
            }
        };
        let reply = tokio::select! {
            biased;
            r = timeout(expiry, &mut self.reply) => r,
            () = cancel.cancelled() => return Err(PairError::Abandoned),
            () = gone => return Err(PairError::Gone),
        };
        match reply {
            Ok(Ok(Rendezvous::Accepted(paired))) => Ok(paired),
            Ok(Ok(Rendezvous::Rejected {
                status,
                description,
            })) => Err(PairError::Rejected {
                status,
                description,
            }),
            Ok(Err(_)) => Err(PairError::Abandoned),
            Err(_) => Err(PairError::TimedOut),
        }
    }
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        drop(lock(&self.pairing.rendezvous).remove(&self.key));
    }
}

/// A rendezvous a listener opened, taken from the table.
pub(crate) struct Claim {
    pending: Pending,
}

impl Claim {
    /// Whether the sender asked for a raw byte stream.
    pub(crate) fn sender_raw(&self) -> bool {
        self.pending.raw
    }

    /// Whether the sender stopped waiting.
    pub(crate) fn sender_gone(&self) -> bool {
        self.pending.reply.is_closed()
    }

    /// Fails the sender with the listener's `status`.
    pub(crate) fn reject(self, status: u16, description: String) {
        let _ = self.pending.reply.send(Rendezvous::Rejected {
            status,
            description,
        });
    }

    /// Hands the sender the listener's connection. When the sender is gone the connection
    /// comes back, for the caller to close.
    pub(crate) fn complete(self, paired: Paired) -> Option<Conn> {
        match self.pending.reply.send(Rendezvous::Accepted(paired)) {
            Ok(()) => None,
            Err(Rendezvous::Accepted(paired)) => Some(paired.conn),
            Err(Rendezvous::Rejected { .. }) => None,
        }
    }
}

/// An HTTP request sent to a listener, waiting for its response. Dropped before the response
/// head arrived, it cancels the request on the listener (if the listener understands
/// `cancel`).
pub(crate) struct Exchange<'a> {
    pairing: &'a Pairing,
    id: String,
    listener: &'a ListenerHandle,
    /// Set while the listener has the request and owes its response head.
    cancel: Option<CancelHandle>,
    reply: oneshot::Receiver<HttpOutcome>,
    deadline: Duration,
}

impl Exchange<'_> {
    /// Waits for the response head (a body may still be streaming in), or the gateway's own
    /// answer ([`HttpOutcome::Fail`]). A listener that goes away before taking the request
    /// fails it at once ([`PairError::Gone`]), not at the deadline; one that took it over a
    /// rendezvous may still answer there.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future cancels the request.
    pub(crate) async fn response(mut self) -> Result<HttpOutcome, PairError> {
        let waiting = timeout(self.deadline, &mut self.reply);
        tokio::pin!(waiting);
        let outcome = tokio::select! {
            biased;
            r = &mut waiting => r,
            () = self.listener.gone() => {
                if self.pairing.take_request(&self.id).is_some() {
                    return Err(PairError::Gone);
                }
                waiting.await
            }
        };
        match outcome {
            Ok(Ok(outcome)) => {
                // The response head is here; a body still streaming is the rendezvous task's.
                self.cancel = None;
                Ok(outcome)
            }
            Ok(Err(_)) => Err(PairError::Abandoned),
            Err(_) => Err(PairError::TimedOut),
        }
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        drop(self.pairing.take_request(&self.id));
        if let Some(cancel) = self.cancel.take() {
            tracing::debug!(request = %self.id, "request abandoned before its response; cancelling");
            cancel.send();
        }
    }
}

/// A random identifier in GUID form (the .NET SDK parses ids as GUIDs).
pub(crate) fn new_id() -> String {
    ferry_nbfx::Guid::v4(rand::random()).to_string()
}

/// A 128-bit random key: rendezvous addresses, HTTP request ids.
pub(crate) fn new_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathConfig;

    fn core(config: &Config) -> Pairing {
        Pairing::new(
            config,
            Arc::new(Local::new(
                config,
                Arc::new(crate::catalog::Catalog::from_config(config)),
            )),
            CancellationToken::new(),
        )
    }

    fn listener(id: &str) -> Listener {
        Listener {
            id: Some(id.into()),
            base: "ws://x".into(),
            features: Features::default(),
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn routing_headers_choose_among_the_listeners() {
        let mut config = Config::new("ns");
        let mut p = PathConfig::new("p");
        p.max_listeners = 2;
        config.paths = vec![p];
        let core = core(&config);
        let s = core.listener_path("p").unwrap();
        let any = Choice::any();
        assert!(matches!(core.pick(&s, &any), Err(PairError::NoListener)));
        let a = core.register(&s, listener("A")).await.unwrap();
        let b = core.register(&s, listener("b")).await.unwrap();
        assert!(
            matches!(core.register(&s, listener("c")).await, Err(Refused::Full)),
            "over the limit"
        );
        for _ in 0..20 {
            let only_a = Choice::among(Some(ids(&["a"])), Vec::new());
            assert_eq!(core.pick(&s, &only_a).unwrap().id, "A");
            let not_a = Choice::among(None, ids(&["a"]));
            assert_eq!(core.pick(&s, &not_a).unwrap().id, "b");
        }
        let nobody = Choice::among(Some(ids(&["zzz"])), Vec::new());
        assert!(matches!(core.pick(&s, &nobody), Err(PairError::NoneMatch)));
        drop((a, b));
        assert_eq!(core.listener_count("p"), 0);
    }

    fn intent(id: Option<&str>) -> Intent<'static> {
        Intent {
            path: "p",
            app_query: "",
            id: id.map(str::to_owned),
            connect_headers: Headers::new(),
            remote: None,
        }
    }

    /// The rendezvous key of the `accept` the listener was sent.
    fn accepted_key(registration: &mut Registration) -> String {
        let Some(Outbound {
            command: Command::Accept(accept),
            ..
        }) = registration.try_recv()
        else {
            panic!("the listener was not sent accept");
        };
        let (_, key) = accept.address.split_once("sb-hc-rendezvous=").unwrap();
        key.to_owned()
    }

    /// A pairing core with path `p` and one listener on it.
    async fn one_listener() -> (Pairing, Registration, ListenerHandle) {
        let mut config = Config::new("ns");
        config.paths = vec![PathConfig::new("p")];
        let core = core(&config);
        let s = core.listener_path("p").unwrap();
        let registration = core.register(&s, listener("l")).await.unwrap();
        let l = core.pick(&s, &Choice::any()).unwrap();
        (core, registration, l)
    }

    #[tokio::test]
    async fn a_rendezvous_is_good_once_and_withdrawn_with_its_offer() {
        let (core, mut registration, l) = one_listener().await;

        let offer = core.offer(&l, intent(Some("sender"))).unwrap();
        let key = accepted_key(&mut registration);
        assert_eq!(core.pending_rendezvous(), 1);
        assert!(
            core.claim(&key, Some("other")).is_none(),
            "another sender's id"
        );
        assert!(core.claim(&key, Some("sender")).is_none(), "used once only");
        assert!(matches!(offer.wait().await, Err(PairError::Abandoned)));

        let offer = core.offer(&l, intent(None)).unwrap();
        let key = accepted_key(&mut registration);
        drop(offer);
        assert_eq!(core.pending_rendezvous(), 0, "withdrawn with its offer");
        assert!(core.claim(&key, None).is_none());

        let offer = core.offer(&l, intent(None)).unwrap();
        let key = accepted_key(&mut registration);
        core.claim(&key, None).unwrap().reject(404, "no".into());
        assert!(matches!(
            offer.wait().await,
            Err(PairError::Rejected { status: 404, .. })
        ));

        drop(registration);
        assert!(matches!(core.offer(&l, intent(None)), Err(PairError::Gone)));
        assert_eq!(core.pending_rendezvous(), 0);
        assert_eq!(core.listener_count("p"), 0);
    }

    /// A listener's rendezvous can go raw only for a sender that asked on its own upgrade;
    /// a listener that asks regardless gets a WebSocket (the gateway's side of the check).
    #[tokio::test]
    async fn only_a_sender_that_asked_is_raw() {
        let (core, mut registration, l) = one_listener().await;
        for (header, raw) in [
            (None, false),
            (Some("cancel"), false),
            (Some("x-later, RAW"), true),
        ] {
            let mut asked = intent(None);
            if let Some(value) = header {
                asked
                    .connect_headers
                    .insert("ferry-features".into(), value.into());
            }
            let _offer = core.offer(&l, asked).unwrap();
            let key = accepted_key(&mut registration);
            let claim = core.claim(&key, None).unwrap();
            assert_eq!(claim.sender_raw(), raw, "{header:?}");
        }
    }

    #[test]
    fn ids_look_like_guids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(new_key(), new_key());
    }
}
