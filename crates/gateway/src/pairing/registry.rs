//! Who listens where: the hybrid connections' settings and the listeners connected to each.
//!
//! [`Registry`] is what the pairing core asks; [`Local`] answers from this process's memory
//! (the single-node gateway). A registry shared by several nodes is a second implementation
//! of the same trait: the core, and every front end behind it, stay as they are.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_hc::auth::Rules;
use ferry_hc::command::Features;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::request::Outbound;
use crate::catalog::{Catalog, Kind};
use crate::config::Config;

/// Settings of one hybrid connection, resolved from configuration.
#[derive(Debug)]
pub(crate) struct PathSettings {
    /// The configured (or, in dynamic mode, first registered) spelling of the name.
    pub(crate) name: String,
    pub(crate) anonymous_senders: bool,
    pub(crate) rules: Rules,
    pub(crate) max_listeners: usize,
    pub(crate) request_timeout: std::time::Duration,
    /// Whether a session goes to every listener on the path (NetEvent multicast).
    pub(crate) fan_out: bool,
    /// The path's own IP rules, checked after the namespace's.
    pub(crate) network: Option<crate::network::NetworkRules>,
    /// A hybrid connection or a WCF relay.
    pub(crate) kind: Kind,
    /// Cancelled when the path stops existing (deleted through the management API, or gone
    /// from a reloaded file): its listeners' control channels close.
    pub(crate) retired: CancellationToken,
}

/// A registered listener: who it is, and the queue its control channel sends from. Only the
/// pairing core writes to the queue.
#[derive(Clone, Debug)]
pub(crate) struct ListenerHandle {
    /// The listener's `sb-hc-id` (or one we made).
    pub(crate) id: String,
    /// Unique per control connection, so a reconnect with the same id is a new entry.
    pub(crate) conn_id: u64,
    pub(super) commands: mpsc::Sender<Outbound>,
    /// `ws[s]://host[:port]` as this listener reached us: rendezvous addresses use it.
    pub(crate) base: String,
    /// The Ferry extensions it advertised on its `listen` upgrade.
    pub(crate) features: Features,
    /// The gateway node its control channel is on; `None`: this one. A listener on another
    /// node is sent its commands through that node, and opens its rendezvous on this one.
    pub(crate) node: Option<Arc<str>>,
}

impl ListenerHandle {
    /// A handle for a listener whose commands go into `commands`.
    pub(crate) fn new(
        id: String,
        conn_id: u64,
        commands: mpsc::Sender<Outbound>,
        base: String,
        features: Features,
        node: Option<Arc<str>>,
    ) -> Self {
        Self {
            id,
            conn_id,
            commands,
            base,
            features,
            node,
        }
    }

    /// Resolves once the listener's control channel is gone (its queue's receiver dropped).
    pub(crate) async fn gone(&self) {
        self.commands.closed().await;
    }

    /// Whether the listener's control channel is gone already.
    pub(crate) fn is_gone(&self) -> bool {
        self.commands.is_closed()
    }

    /// Queues a command for the listener, without waiting: a listener whose queue is full
    /// is not keeping up.
    pub(crate) fn try_send(&self, outbound: Outbound) -> Result<(), Undelivered> {
        self.commands.try_send(outbound).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Undelivered::Busy,
            mpsc::error::TrySendError::Closed(_) => Undelivered::Gone,
        })
    }
}

/// Why a command did not reach a listener's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// The queue is full.
    Busy,
    /// The listener is gone.
    Gone,
}

/// Why a listener was not registered.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The path has its maximum of listeners.
    Full,
    /// This node cannot take listeners now (the shared registry is out of reach, or the node
    /// is draining); another node can.
    Unavailable(&'static str),
}

/// A registration in progress.
pub(crate) type Registering<'a> =
    Pin<Box<dyn Future<Output = Result<CancellationToken, Refused>> + Send + 'a>>;

/// The listeners and paths a gateway knows.
///
/// Every method is a few map operations and never waits: the core calls them from the
/// connection tasks directly.
pub(crate) trait Registry: Send + Sync {
    /// The hybrid connection a listener at `path` registers with: a configured path exactly,
    /// or in dynamic mode the path itself.
    fn listener_path(&self, path: &str) -> Option<Arc<PathSettings>>;

    /// The hybrid connection a sender's `path` (name plus optional suffix) addresses: the
    /// longest configured prefix, or in dynamic mode the longest prefix with listeners.
    fn sender_path(&self, path: &str) -> Option<Arc<PathSettings>>;

    /// Settings of a path that exists only by being listened on (dynamic mode): namespace
    /// rules, senders need a token.
    fn namespace_settings(&self) -> PathSettings;

    /// Adds a listener of this node. On success, the token fires when the registry lets
    /// the listener go before it leaves (its node lost its place in a shared registry): its
    /// control channel then closes, so it reconnects elsewhere.
    fn register<'a>(
        &'a self,
        settings: &'a Arc<PathSettings>,
        handle: ListenerHandle,
    ) -> Registering<'a>;

    /// Removes a listener's control connection.
    fn unregister(&self, name: &str, conn_id: u64);

    /// The names of the paths listeners are on now.
    fn listened(&self) -> Vec<String>;

    /// Shows `visit` the listeners on a path (none: an empty slice), for as long as the call
    /// lasts: the core chooses among them without copying the set.
    fn visit(&self, name: &str, visit: &mut dyn FnMut(&[ListenerHandle]));
}

struct Entry {
    settings: Arc<PathSettings>,
    listeners: Vec<ListenerHandle>,
}

/// The registry of a single gateway process.
///
/// One `std::sync::Mutex` guards the map; every critical section is a few map operations and
/// never awaits, so contention stays negligible next to the network work around it.
pub(crate) struct Local {
    /// Lowercased path name → its listeners.
    listeners: Mutex<HashMap<String, Entry>>,
    /// The paths that exist, and the rules.
    catalog: Arc<Catalog>,
    dynamic: bool,
    request_timeout: std::time::Duration,
}

impl Local {
    pub(crate) fn new(config: &Config, catalog: Arc<Catalog>) -> Self {
        Self {
            listeners: Mutex::default(),
            catalog,
            dynamic: config.dynamic_paths,
            request_timeout: config.timeouts.request,
        }
    }

    /// Adds `handle` to its path; with `limit`, only while the path has fewer than its
    /// maximum of listeners. Whether it was added.
    pub(crate) fn add(
        &self,
        settings: &Arc<PathSettings>,
        handle: ListenerHandle,
        limit: bool,
    ) -> bool {
        let mut listeners = self.lock();
        let entry = listeners
            .entry(normalize(&settings.name))
            .or_insert_with(|| Entry {
                settings: settings.clone(),
                listeners: Vec::new(),
            });
        let max = settings.max_listeners.min(ferry_hc::MAX_LISTENERS_PER_PATH);
        if limit && entry.listeners.len() >= max {
            return false;
        }
        entry.listeners.push(handle);
        true
    }

    /// This node's listener `conn_id` on `name`, if it is still registered.
    pub(crate) fn local(&self, name: &str, conn_id: u64) -> Option<ListenerHandle> {
        self.lock()
            .get(&normalize(name))?
            .listeners
            .iter()
            .find(|l| l.conn_id == conn_id && l.node.is_none())
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (each section is
        // a single insert or remove), so a poisoned lock is still safe to use.
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Registry for Local {
    fn listener_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        let key = normalize(path);
        if let Some(s) = self.catalog.view().paths.get(&key) {
            return Some(s.clone());
        }
        if !self.dynamic {
            return None;
        }
        if let Some(e) = self.lock().get(&key) {
            return Some(e.settings.clone());
        }
        Some(Arc::new(PathSettings {
            name: path.to_owned(),
            ..self.namespace_settings()
        }))
    }

    fn namespace_settings(&self) -> PathSettings {
        PathSettings {
            name: String::new(),
            anonymous_senders: false,
            rules: self.catalog.view().namespace_rules.clone(),
            max_listeners: ferry_hc::MAX_LISTENERS_PER_PATH,
            request_timeout: self.request_timeout,
            fan_out: false,
            network: None,
            kind: Kind::HybridConnection,
            retired: CancellationToken::new(),
        }
    }

    fn sender_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        let key = normalize(path);
        let view = self.catalog.view();
        let listeners = self.lock();
        prefixes(&key).find_map(|p| {
            view.paths.get(p).cloned().or_else(|| {
                self.dynamic
                    .then(|| listeners.get(p).map(|e| e.settings.clone()))
                    .flatten()
            })
        })
    }

    fn register<'a>(
        &'a self,
        settings: &'a Arc<PathSettings>,
        handle: ListenerHandle,
    ) -> Registering<'a> {
        let added = self.add(settings, handle, true);
        Box::pin(async move {
            if added {
                // A listener of a single node is let go only when the node stops.
                Ok(CancellationToken::new())
            } else {
                Err(Refused::Full)
            }
        })
    }

    fn unregister(&self, name: &str, conn_id: u64) {
        let key = normalize(name);
        let mut listeners = self.lock();
        if let Some(entry) = listeners.get_mut(&key) {
            entry.listeners.retain(|l| l.conn_id != conn_id);
            if entry.listeners.is_empty() {
                listeners.remove(&key);
            }
        }
    }

    fn listened(&self) -> Vec<String> {
        self.lock()
            .values()
            .map(|e| e.settings.name.clone())
            .collect()
    }

    fn visit(&self, name: &str, visit: &mut dyn FnMut(&[ListenerHandle])) {
        let listeners = self.lock();
        visit(
            listeners
                .get(&normalize(name))
                .map(|e| e.listeners.as_slice())
                .unwrap_or_default(),
        );
    }
}

/// Entity names compare without regard to case, as Azure's do.
pub(crate) fn normalize(path: &str) -> String {
    path.trim_matches('/').to_lowercase()
}

/// `a/b/c`, `a/b`, `a`: longest first.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.match_indices('/').map(|(i, _)| i).rev();
    std::iter::once(path).chain(cuts.map(move |i| &path[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathConfig;

    #[test]
    fn prefixes_longest_first() {
        assert_eq!(prefixes("a/b/c").collect::<Vec<_>>(), ["a/b/c", "a/b", "a"]);
        assert_eq!(prefixes("a").collect::<Vec<_>>(), ["a"]);
    }

    fn count(r: &Local, name: &str) -> usize {
        let mut n = 0;
        r.visit(name, &mut |all| n = all.len());
        n
    }

    fn handle(id: &str, conn_id: u64) -> ListenerHandle {
        let (tx, _rx) = mpsc::channel(1);
        ListenerHandle::new(
            id.into(),
            conn_id,
            tx,
            "ws://x".into(),
            Features::default(),
            None,
        )
    }

    fn register(r: &Local, s: &Arc<PathSettings>, handle: ListenerHandle) -> bool {
        r.add(s, handle, true)
    }

    #[test]
    fn configured_paths_resolve_by_longest_prefix() {
        let mut config = Config::new("ns");
        config.paths = vec![PathConfig::new("erp"), PathConfig::new("erp/orders")];
        let r = Local::new(&config, Arc::new(Catalog::from_config(&config)));
        assert_eq!(r.sender_path("ERP/Orders/x/y").unwrap().name, "erp/orders");
        assert_eq!(r.sender_path("erp/other").unwrap().name, "erp");
        assert!(r.sender_path("nope").is_none());
        assert!(r.listener_path("erp/x").is_none());
        assert_eq!(r.listener_path("Erp").unwrap().name, "erp");
    }

    #[test]
    fn a_path_takes_its_maximum_of_listeners() {
        let mut config = Config::new("ns");
        let mut p = PathConfig::new("p");
        p.max_listeners = 2;
        config.paths = vec![p];
        let r = Local::new(&config, Arc::new(Catalog::from_config(&config)));
        let s = r.listener_path("p").unwrap();
        assert!(register(&r, &s, handle("A", 1)));
        assert!(register(&r, &s, handle("b", 2)));
        assert!(
            !register(&r, &s, handle("c", 3)),
            "third listener over the limit"
        );
        assert_eq!(count(&r, "P"), 2);
        r.unregister("p", 1);
        r.unregister("p", 2);
        assert_eq!(count(&r, "p"), 0);
    }

    #[test]
    fn dynamic_paths_exist_while_listened_on() {
        let mut config = Config::new("ns");
        config.dynamic_paths = true;
        let r = Local::new(&config, Arc::new(Catalog::from_config(&config)));
        assert!(r.sender_path("hc1/x").is_none());
        let s = r.listener_path("hc1").unwrap();
        assert!(register(&r, &s, handle("l", 1)));
        assert_eq!(r.sender_path("hc1/x").unwrap().name, "hc1");
        r.unregister("hc1", 1);
        assert!(r.sender_path("hc1/x").is_none());
    }
}
