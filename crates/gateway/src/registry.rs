//! Who is listening where, and which rendezvous addresses are outstanding.
//!
//! One `std::sync::Mutex` guards both maps; every critical section is a few map operations
//! and never awaits, so contention stays negligible next to the network work around it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferry_hc::Command;
use ferry_hc::auth::Rules;
use ferry_hc::command::{Cancel, Features, Response};
use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};

use crate::admission::Slot;
use crate::config::{Config, PathConfig};
use ferry_net::conn::Conn;

/// Settings of one hybrid connection, resolved from configuration.
#[derive(Debug)]
pub(crate) struct PathSettings {
    /// The configured (or, in dynamic mode, first registered) spelling of the name.
    pub(crate) name: String,
    pub(crate) anonymous_senders: bool,
    pub(crate) rules: Rules,
    pub(crate) max_listeners: usize,
    pub(crate) request_timeout: std::time::Duration,
    pub(crate) fan_out: bool,
}

/// What the gateway sends a listener's control channel: a command, and for a `request` with
/// a body, the body, which must follow the command immediately as one binary message.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) command: Command,
    pub(crate) body: Option<Bytes>,
}

impl From<Command> for Outbound {
    fn from(command: Command) -> Self {
        Self {
            command,
            body: None,
        }
    }
}

/// A listener's answer to an HTTP request.
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub(crate) response: Response,
    pub(crate) body: ReplyBody,
}

/// A response body: whole (from the control channel), or streaming in from a rendezvous
/// through a small bounded queue, so a slow client slows the listener down.
#[derive(Debug)]
pub(crate) enum ReplyBody {
    Full(Bytes),
    /// Chunks as they arrive, then an empty chunk as the end mark; a queue that closes
    /// without it was given up on, and the client must see an error.
    Stream(mpsc::Receiver<std::io::Result<Bytes>>),
}

/// A request body the rendezvous sends: already read, or still arriving from the client.
pub(crate) enum DeferredBody {
    Buffered(Bytes),
    /// Streamed to the listener as it arrives, at most `limit` bytes.
    Streaming {
        /// What was read before deciding to stream.
        prefix: Bytes,
        body: hyper::body::Incoming,
        limit: usize,
    },
}

/// How a waiting HTTP request ends.
#[derive(Debug)]
pub(crate) enum HttpOutcome {
    /// The listener answered.
    Reply(HttpReply),
    /// The gateway gives up on it with this status (e.g. 413 for a body over the limit).
    Fail(u16, String),
}

/// An HTTP request waiting for its listener's response.
pub(crate) struct PendingHttp {
    /// For a rendezvous-only request: the full `request` and its body, sent on the
    /// rendezvous socket when the listener opens it.
    pub(crate) deferred: Option<(Command, DeferredBody)>,
    pub(crate) reply: oneshot::Sender<HttpOutcome>,
    /// How to cancel the request on its listener, if it understands `cancel`.
    pub(crate) cancel: Option<CancelHandle>,
    /// The path's response deadline, which a rendezvous exchange keeps too.
    pub(crate) deadline: std::time::Duration,
}

/// Sends a listener the `cancel` command (a Ferry extension) for one of its requests.
#[derive(Clone, Debug)]
pub(crate) struct CancelHandle {
    pub(crate) id: String,
    pub(crate) commands: mpsc::Sender<Outbound>,
}

impl CancelHandle {
    /// A handle for request `id` sent to `listener`, if the listener advertised `cancel`.
    pub(crate) fn new(listener: &ListenerHandle, id: &str) -> Option<Self> {
        listener.features.cancel.then(|| Self {
            id: id.to_owned(),
            commands: listener.commands.clone(),
        })
    }

    /// Queues the `cancel` command. Best effort: it goes behind the request itself on the same
    /// queue, and when that queue is full (a listener far behind) or closed it is dropped:
    /// the listener's own response timeout then ends the work.
    pub(crate) fn send(&self) {
        let command = Command::Cancel(Cancel {
            id: self.id.clone(),
        });
        if self.commands.try_send(command.into()).is_err() {
            tracing::debug!(request = %self.id, "cancel not queued: control queue full or closed");
        }
    }
}

/// A registered listener: where to send its commands.
#[derive(Clone, Debug)]
pub(crate) struct ListenerHandle {
    /// The listener's `sb-hc-id` (or one we made).
    pub(crate) id: String,
    /// Unique per control connection, so a reconnect with the same id is a new entry.
    pub(crate) conn_id: u64,
    pub(crate) commands: mpsc::Sender<Outbound>,
    /// `ws[s]://host[:port]` as this listener reached us: rendezvous addresses use it.
    pub(crate) base: String,
    /// The Ferry extensions it advertised on its `listen` upgrade.
    pub(crate) features: Features,
}

/// What a listener did with a rendezvous address.
pub(crate) enum Rendezvous {
    /// It opened the address: here is its upgraded connection.
    Accepted {
        conn: Conn,
        /// Bytes it sent past its upgrade request.
        pre: Vec<u8>,
        /// The sub-protocol it chose.
        protocol: Option<String>,
        /// Its connection-limit permit, held for as long as it is relayed.
        permit: Slot,
    },
    /// It rejected the sender with this status.
    Rejected { status: u16, description: String },
}

/// An outstanding rendezvous address.
pub(crate) struct Pending {
    /// The `sb-hc-id` the address carries.
    pub(crate) id: String,
    pub(crate) reply: oneshot::Sender<Rendezvous>,
}

/// Why no listener could be picked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PickError {
    NoListener,
    NoneMatch,
}

#[derive(Default)]
struct Inner {
    /// Lowercased path name → its listeners.
    listeners: HashMap<String, Entry>,
    /// Rendezvous key → waiting sender.
    pending: HashMap<String, Pending>,
    /// Request id → waiting HTTP request.
    http: HashMap<String, PendingHttp>,
}

struct Entry {
    settings: Arc<PathSettings>,
    listeners: Vec<ListenerHandle>,
}

pub(crate) struct Registry {
    inner: Mutex<Inner>,
    configured: HashMap<String, Arc<PathSettings>>,
    dynamic: bool,
    namespace_rules: Rules,
    request_timeout: std::time::Duration,
}

impl Registry {
    pub(crate) fn new(config: &Config) -> Self {
        let grace = config.timeouts.token_grace.as_secs();
        let namespace_rules = Rules::new(config.rules.clone()).with_grace(grace);
        let configured = config
            .paths
            .iter()
            .map(|p| {
                (
                    normalize(&p.name),
                    Arc::new(settings(p, &namespace_rules, config)),
                )
            })
            .collect();
        Self {
            inner: Mutex::default(),
            configured,
            dynamic: config.dynamic_paths,
            namespace_rules,
            request_timeout: config.timeouts.request,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent (each section is
        // a single insert or remove), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The hybrid connection a listener at `path` registers with: a configured path exactly,
    /// or in dynamic mode the path itself.
    pub(crate) fn listener_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        let key = normalize(path);
        if let Some(s) = self.configured.get(&key) {
            return Some(s.clone());
        }
        if !self.dynamic {
            return None;
        }
        if let Some(e) = self.lock().listeners.get(&key) {
            return Some(e.settings.clone());
        }
        Some(Arc::new(PathSettings {
            name: path.to_owned(),
            ..self.namespace_settings()
        }))
    }

    /// Settings of a path that exists only by being listened on (dynamic mode): namespace
    /// rules, senders need a token.
    pub(crate) fn namespace_settings(&self) -> PathSettings {
        PathSettings {
            name: String::new(),
            anonymous_senders: false,
            rules: self.namespace_rules.clone(),
            max_listeners: ferry_hc::MAX_LISTENERS_PER_PATH,
            request_timeout: self.request_timeout,
            fan_out: false,
        }
    }

    /// The hybrid connection a sender's `path` (name plus optional suffix) addresses: the
    /// longest configured prefix, or in dynamic mode the longest prefix with listeners.
    pub(crate) fn sender_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        let key = normalize(path);
        let inner = self.lock();
        prefixes(&key).find_map(|p| {
            self.configured.get(p).cloned().or_else(|| {
                self.dynamic
                    .then(|| inner.listeners.get(p).map(|e| e.settings.clone()))
                    .flatten()
            })
        })
    }

    /// Adds a listener; `false` when the path already has its maximum.
    pub(crate) fn register(&self, settings: &Arc<PathSettings>, handle: ListenerHandle) -> bool {
        let mut inner = self.lock();
        let entry = inner
            .listeners
            .entry(normalize(&settings.name))
            .or_insert_with(|| Entry {
                settings: settings.clone(),
                listeners: Vec::new(),
            });
        if entry.listeners.len() >= settings.max_listeners.min(ferry_hc::MAX_LISTENERS_PER_PATH) {
            return false;
        }
        entry.listeners.push(handle);
        true
    }

    /// Removes a listener's control connection.
    pub(crate) fn unregister(&self, name: &str, conn_id: u64) {
        let key = normalize(name);
        let mut inner = self.lock();
        if let Some(entry) = inner.listeners.get_mut(&key) {
            entry.listeners.retain(|l| l.conn_id != conn_id);
            if entry.listeners.is_empty() {
                inner.listeners.remove(&key);
            }
        }
    }

    /// Picks a listener at random among those the sender's routing headers allow.
    pub(crate) fn pick(
        &self,
        name: &str,
        allowed: Option<&[String]>,
        disallowed: &[String],
    ) -> Result<ListenerHandle, PickError> {
        let inner = self.lock();
        let all = inner
            .listeners
            .get(&normalize(name))
            .map(|e| e.listeners.as_slice())
            .unwrap_or_default();
        if all.is_empty() {
            return Err(PickError::NoListener);
        }
        let eligible: Vec<_> = all
            .iter()
            .filter(|l| allowed.is_none_or(|a| a.iter().any(|id| id.eq_ignore_ascii_case(&l.id))))
            .filter(|l| !disallowed.iter().any(|id| id.eq_ignore_ascii_case(&l.id)))
            .collect();
        if eligible.is_empty() {
            return Err(PickError::NoneMatch);
        }
        Ok(eligible[rand::rng().random_range(0..eligible.len())].clone())
    }

    /// Number of listeners on a path.
    /// Whether sessions on the path go to every listener.
    pub(crate) fn fan_out(&self, name: &str) -> bool {
        self.configured
            .get(&normalize(name))
            .is_some_and(|s| s.fan_out)
    }

    /// Every listener on the path.
    pub(crate) fn all(&self, name: &str) -> Vec<ListenerHandle> {
        self.lock()
            .listeners
            .get(&normalize(name))
            .map(|e| e.listeners.clone())
            .unwrap_or_default()
    }

    pub(crate) fn listener_count(&self, name: &str) -> usize {
        self.lock()
            .listeners
            .get(&normalize(name))
            .map_or(0, |e| e.listeners.len())
    }

    pub(crate) fn insert_pending(&self, key: String, pending: Pending) {
        self.lock().pending.insert(key, pending);
    }

    /// Takes a rendezvous: one use only.
    pub(crate) fn take_pending(&self, key: &str) -> Option<Pending> {
        self.lock().pending.remove(key)
    }

    pub(crate) fn insert_http(&self, id: String, pending: PendingHttp) {
        self.lock().http.insert(id, pending);
    }

    /// Takes a waiting HTTP request: its response is delivered once.
    pub(crate) fn take_http(&self, id: &str) -> Option<PendingHttp> {
        self.lock().http.remove(id)
    }

    /// Number of HTTP requests waiting for a response.
    pub(crate) fn http_count(&self) -> usize {
        self.lock().http.len()
    }

    /// Number of outstanding rendezvous addresses.
    pub(crate) fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
}

fn settings(p: &PathConfig, namespace_rules: &Rules, config: &Config) -> PathSettings {
    let mut rules = namespace_rules.clone();
    rules.extend(p.rules.iter().cloned());
    PathSettings {
        name: p.name.trim_matches('/').to_owned(),
        anonymous_senders: p.anonymous_senders,
        rules,
        max_listeners: p.max_listeners,
        request_timeout: p.request_timeout.unwrap_or(config.timeouts.request),
        fan_out: p.fan_out,
    }
}

/// Entity names compare without regard to case, as Azure's do.
fn normalize(path: &str) -> String {
    path.trim_matches('/').to_lowercase()
}

/// `a/b/c`, `a/b`, `a`: longest first.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.match_indices('/').map(|(i, _)| i).rev();
    std::iter::once(path).chain(cuts.map(move |i| &path[..i]))
}

/// A random identifier in GUID form (the .NET SDK parses ids as GUIDs).
pub(crate) fn new_id() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A 128-bit random rendezvous key.
pub(crate) fn new_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_longest_first() {
        assert_eq!(prefixes("a/b/c").collect::<Vec<_>>(), ["a/b/c", "a/b", "a"]);
        assert_eq!(prefixes("a").collect::<Vec<_>>(), ["a"]);
    }

    fn handle(id: &str, conn_id: u64) -> ListenerHandle {
        let (tx, _rx) = mpsc::channel(1);
        ListenerHandle {
            id: id.into(),
            conn_id,
            commands: tx,
            base: "ws://x".into(),
            features: Features::default(),
        }
    }

    #[test]
    fn configured_paths_resolve_by_longest_prefix() {
        let mut config = Config::new("ns");
        config.paths = vec![PathConfig::new("erp"), PathConfig::new("erp/orders")];
        let r = Registry::new(&config);
        assert_eq!(r.sender_path("ERP/Orders/x/y").unwrap().name, "erp/orders");
        assert_eq!(r.sender_path("erp/other").unwrap().name, "erp");
        assert!(r.sender_path("nope").is_none());
        assert!(r.listener_path("erp/x").is_none());
        assert_eq!(r.listener_path("Erp").unwrap().name, "erp");
    }

    #[test]
    fn listener_limit_and_routing_headers() {
        let mut config = Config::new("ns");
        let mut p = PathConfig::new("p");
        p.max_listeners = 2;
        config.paths = vec![p];
        let r = Registry::new(&config);
        let s = r.listener_path("p").unwrap();
        assert_eq!(r.pick("p", None, &[]).unwrap_err(), PickError::NoListener);
        assert!(r.register(&s, handle("A", 1)));
        assert!(r.register(&s, handle("b", 2)));
        assert!(
            !r.register(&s, handle("c", 3)),
            "third listener over the limit"
        );
        for _ in 0..20 {
            assert_eq!(r.pick("p", Some(&["a".into()]), &[]).unwrap().id, "A");
            assert_eq!(r.pick("p", None, &["a".into()]).unwrap().id, "b");
        }
        assert_eq!(
            r.pick("p", Some(&["zzz".into()]), &[]).unwrap_err(),
            PickError::NoneMatch
        );
        r.unregister("p", 1);
        r.unregister("p", 2);
        assert_eq!(r.listener_count("p"), 0);
    }

    #[test]
    fn dynamic_paths_exist_while_listened_on() {
        let mut config = Config::new("ns");
        config.dynamic_paths = true;
        let r = Registry::new(&config);
        assert!(r.sender_path("hc1/x").is_none());
        let s = r.listener_path("hc1").unwrap();
        assert!(r.register(&s, handle("l", 1)));
        assert_eq!(r.sender_path("hc1/x").unwrap().name, "hc1");
        r.unregister("hc1", 1);
        assert!(r.sender_path("hc1/x").is_none());
    }

    #[test]
    fn ids_look_like_guids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(new_key(), new_key());
    }
}
