//! Cluster mode: several gateway nodes sharing one registry in etcd.
//!
//! ```text
//!  etcd {prefix}nodes/{node}            → advertise URL, node-to-node address   (node's lease)
//!       {prefix}listeners/{path}/{slot} → node, listener id and number, features (node's lease)
//!
//!  node S (sender)                         node L (listener)
//!    pick among every node's listeners       │
//!    offer ─► Deliver(accept: address on S) ─► listener's control channel
//!    listener dials S's rendezvous ◄──────────────────────────────┘   (no byte crosses S ⇄ L)
//! ```
//!
//! Each node keeps its records under its own lease and watches the whole prefix into its
//! local registry, so a sender's connect needs no store round trip: the listeners of other
//! nodes are in the same [`Local`] map as this node's own, with a queue that a small task
//! forwards to their node. A listener takes a slot (`0..max`) with a transaction, so the
//! 25-per-path limit holds across the cluster.
//!
//! A node that cannot renew its lease for its time to live has lost its place: when another
//! node still holds its own lease (the store is up, this node is cut off) it lets its
//! listeners go (1001) so they move to a node the cluster can see; when no node can reach
//! the store, it keeps serving the listeners it has, and takes no new ones until the store
//! is back.

pub(crate) mod entities;
mod etcd;
mod rpc;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_hc::command::Features;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::etcd::{Etcd, StoreError, pb::KeyValue};
use self::rpc::Peers;
use crate::catalog::Catalog;
use crate::config::{ClusterConfig, Config};
use crate::pairing::{
    ListenerHandle, Local, Outbound, PathSettings, Refused, Registering, Registry, Undelivered,
    lock, normalize,
};

/// Most slot releases kept for retrying once the store answers again.
const MAX_STALE: usize = 4096;

/// Longest a draining node waits for one listener it let go to listen again elsewhere
/// before it lets the next go.
const MOVE_WAIT: Duration = Duration::from_secs(2);

/// First number given to another node's listener in this node's registry: far above any
/// number this node gives its own.
const REMOTE_IDS: u64 = 1 << 62;

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The etcd settings are unusable.
    #[error("cluster store settings: {0}")]
    Store(String),
    /// The node-to-node port could not be bound.
    #[error("cannot listen for other nodes on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A listener record, as every node reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ListenerRecord {
    node: String,
    /// The hybrid connection, as its node names it.
    path: String,
    /// The listener's number on its node.
    conn: u64,
    /// Its `sb-hc-id`.
    id: String,
    /// The Ferry extensions it advertised (`Ferry-Features` syntax).
    features: String,
}

/// A node record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeRecord {
    /// Where listeners paired with this node's senders open their rendezvous.
    advertise: String,
    /// The node-to-node API.
    rpc: String,
    /// The lease the node's records live under.
    lease: i64,
}

/// This node's hold on the store.
struct Standing {
    /// The lease this node's records live under, while it has one.
    lease: Option<i64>,
    /// The lease was renewed within its time to live.
    holds_lease: bool,
    /// When the last renewal succeeded, if the attempts since have not failed.
    reaching: Option<Instant>,
    /// Fires to let every listener of this node go.
    fence: CancellationToken,
    /// This node's listeners' slots, by listener number.
    slots: HashMap<u64, Slot>,
    /// Draining for a stop: no new listeners.
    draining: bool,
}

/// A slot one of this node's listeners holds.
struct Slot {
    key: String,
    value: Vec<u8>,
    /// The hybrid connection.
    path: String,
    /// The listener's own eviction.
    evict: CancellationToken,
}

/// Another node's listener, as this node relays to it.
struct Remote {
    record: ListenerRecord,
    /// Its number in this node's registry.
    conn_id: u64,
    /// Ends its forwarding task.
    stop: CancellationToken,
}

/// One node of a cluster: a [`Registry`] shared through etcd.
pub(crate) struct Cluster {
    node: Arc<str>,
    config: ClusterConfig,
    /// Every listener this node can pair with: its own and the other nodes'.
    listeners: Local,
    /// The entities, which the watch keeps as etcd has them.
    catalog: Arc<Catalog>,
    etcd: Etcd,
    peers: Arc<Peers>,
    standing: Mutex<Standing>,
    /// Slots (key, lease) to release once the store answers again.
    stale: Arc<Mutex<Vec<(String, i64)>>>,
    /// Other nodes' listeners, by their record's key.
    remote: Mutex<HashMap<String, Remote>>,
    next_remote: AtomicU64,
    /// A remote listener's forwarding queue, in commands.
    queue: usize,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Cluster {
    /// Joins the cluster `config.cluster` describes: binds the node-to-node port, takes a
    /// lease (waiting at most its time to live for the store) and starts watching. A store
    /// out of reach does not stop the node: it serves what it can and joins when it can.
    pub(crate) async fn start(
        config: &Config,
        catalog: Arc<Catalog>,
        forwards: prometheus_client::metrics::counter::Counter,
    ) -> Result<Arc<Self>, ClusterError> {
        let cluster = config
            .cluster
            .clone()
            .expect("cluster mode needs its configuration");
        let etcd = Etcd::new(&cluster.etcd).map_err(|e| ClusterError::Store(e.to_string()))?;
        let rpc = TcpListener::bind(cluster.rpc)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: cluster.rpc,
                source,
            })?;
        let mut cluster = cluster;
        if cluster.rpc_advertise.is_none() {
            let bound = rpc.local_addr().map_err(|source| ClusterError::Bind {
                addr: cluster.rpc,
                source,
            })?;
            cluster.rpc_advertise = Some(format!("http://{bound}"));
        }
        let node: Arc<str> = cluster.node.as_str().into();
        let this = Arc::new(Self {
            node: node.clone(),
            peers: Arc::new(Peers::new(cluster.secret.clone(), forwards)),
            listeners: Local::new(config, catalog.clone()),
            catalog,
            etcd,
            standing: Mutex::new(Standing {
                lease: None,
                holds_lease: false,
                reaching: None,
                fence: CancellationToken::new(),
                slots: HashMap::new(),
                draining: false,
            }),
            stale: Arc::default(),
            remote: Mutex::default(),
            next_remote: AtomicU64::new(REMOTE_IDS),
            queue: config.limits.control_queue.get(),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            config: cluster,
        });
        let service = rpc::Service::new(Arc::downgrade(&this), &node, &this.config.secret);
        let stop = this.cancel.clone();
        this.tasks.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(rpc);
            let served = tonic::transport::Server::builder()
                .timeout(Duration::from_secs(5))
                .add_service(rpc::pb::node_server::NodeServer::new(service))
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await;
            if let Err(e) = served {
                warn!(error = %e, "node-to-node server failed");
            }
        });
        // The first lease and the first picture of the cluster, bounded: a node whose store
        // is down starts anyway.
        let ttl = this.config.lease_ttl;
        if let Err(e) = timeout(ttl, this.join())
            .await
            .unwrap_or(Err(StoreError::TimedOut))
        {
            warn!(error = %e, "cluster store out of reach at start; listeners wait until it is back");
        }
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        this.tasks.spawn(this.clone().watch(synced_tx));
        this.tasks.spawn(this.clone().keep());
        let _ = timeout(ttl, synced_rx).await;
        info!(node = %this.node, advertise = %this.config.advertise, "joined the cluster");
        Ok(this)
    }

    /// Whether this node holds its lease in the store now.
    pub(crate) fn holds_lease(&self) -> bool {
        self.standing().holds_lease
    }

    fn standing(&self) -> MutexGuard<'_, Standing> {
        lock(&self.standing)
    }

    fn remote(&self) -> MutexGuard<'_, HashMap<String, Remote>> {
        lock(&self.remote)
    }

    /// Whether this node reaches the store now: its latest renewal succeeded within one and
    /// a half renewal intervals. A node asks when its own last renewal is a lease's time to
    /// live (three intervals) old, and a store that went down for everyone went down after
    /// both renewals: so the asker's last renewal is at most one interval older than this
    /// node's, which is then at least two intervals old, and this answers no.
    pub(crate) fn reaches_store(&self) -> bool {
        let renewal = self.config.lease_ttl / 3;
        self.standing()
            .reaching
            .is_some_and(|at| at.elapsed() < renewal.mul_f64(1.5))
    }

    /// This node's listener `conn_id` on `path`, for a command another node forwards.
    fn local_listener(&self, path: &str, conn_id: u64) -> Option<ListenerHandle> {
        self.listeners.local(path, conn_id)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.config.prefix)
    }

    fn slot_key(&self, path: &str, slot: usize) -> String {
        self.key(&format!("listeners/{path}/{slot:02}"))
    }

    /// Takes a lease, replaces a previous incarnation of this node, writes the node record
    /// and claims the slots this node's listeners held again.
    async fn join(&self) -> Result<(), StoreError> {
        let lease = self.etcd.grant(self.config.lease_ttl).await?;
        let key = self.key(&format!("nodes/{}", self.node));
        if let Some(previous) = self.etcd.get(&key).await?
            && let Ok(old) = serde_json::from_slice::<NodeRecord>(&previous.value)
            && old.lease != lease
        {
            // A restart within the old lease's life: its records go now, not at expiry.
            info!(node = %self.node, "replacing this node's previous records");
            let _ = self.etcd.revoke(old.lease).await;
        }
        let record = NodeRecord {
            advertise: self.config.advertise.clone(),
            rpc: self.config.rpc_advertise.clone().unwrap_or_default(),
            lease,
        };
        let value = serde_json::to_vec(&record).expect("records serialize");
        self.etcd.put(&key, value, lease).await?;
        // The listeners still connected (the store was away, or the lease lapsed) claim
        // their slots again; one whose slot was taken meanwhile is let go.
        let held: Vec<(u64, String, Vec<u8>)> = self
            .standing()
            .slots
            .iter()
            .map(|(conn, s)| (*conn, s.key.clone(), s.value.clone()))
            .collect();
        for (conn, key, value) in held {
            if !matches!(self.etcd.claim(&key, value, lease).await, Ok(true)) {
                warn!(%key, "slot taken while the store was away; the listener must reconnect");
                if let Some(slot) = self.standing().slots.remove(&conn) {
                    slot.evict.cancel();
                }
            }
        }
        let mut standing = self.standing();
        standing.lease = Some(lease);
        standing.holds_lease = true;
        standing.reaching = Some(Instant::now());
        drop(standing);
        info!(node = %self.node, lease, "lease taken");
        Ok(())
    }

    /// Renews the lease every third of its time to live, and acts when it cannot.
    async fn keep(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        let tick = ttl / 3;
        let mut last_renewed = Instant::now();
        loop {
            let lease = self.standing().lease;
            let next = match lease {
                None => match self.join().await {
                    Ok(()) => {
                        last_renewed = Instant::now();
                        tick
                    }
                    Err(e) => {
                        debug!(error = %e, "cannot join the cluster store yet");
                        tick.min(Duration::from_secs(1))
                    }
                },
                Some(lease) => {
                    let sent = Instant::now();
                    // While the lease holds, an attempt never runs past the moment it would
                    // lapse (so that moment is acted on in time); after it, each gets a tick.
                    let left = (last_renewed + ttl).saturating_duration_since(sent);
                    let limit = if left.is_zero() { tick } else { left.min(tick) };
                    let renewed = timeout(limit, self.etcd.keep_alive(lease)).await;
                    match renewed {
                        Ok(Ok(remaining)) if remaining > 0 => {
                            last_renewed = sent;
                            self.standing().reaching = Some(Instant::now());
                            self.renewed().await;
                            tick
                        }
                        Ok(Ok(_)) => {
                            // The store is there and the lease is not: its records are gone.
                            warn!(node = %self.node, lease, "lease expired; joining again");
                            self.lapsed();
                            Duration::ZERO
                        }
                        _ if Instant::now() >= last_renewed + ttl => {
                            self.standing().reaching = None;
                            self.out_of_reach().await;
                            Duration::from_millis(500)
                        }
                        _ => {
                            self.standing().reaching = None;
                            Duration::from_millis(500)
                        }
                    }
                }
            };
            self.revive();
            tokio::select! {
                () = sleep(next) => {}
                () = self.cancel.cancelled() => return,
            }
        }
    }

    /// The lease was renewed: the node holds its place; slots left behind are released.
    async fn renewed(&self) {
        {
            let mut standing = self.standing();
            if !standing.holds_lease {
                info!(node = %self.node, "cluster store reachable again");
            }
            standing.holds_lease = true;
        }
        let stale = std::mem::take(&mut *lock(&self.stale));
        for (key, lease) in stale {
            if self.etcd.release(&key, lease).await.is_err() {
                lock(&self.stale).push((key, lease));
            }
        }
    }

    /// The store says the lease is gone: a new one is taken, and the slots claimed again.
    fn lapsed(&self) {
        let mut standing = self.standing();
        standing.lease = None;
        standing.holds_lease = false;
    }

    /// The lease could not be renewed within its time to live.
    async fn out_of_reach(&self) {
        let had = std::mem::replace(&mut self.standing().holds_lease, false);
        if had {
            warn!(node = %self.node, "cluster store out of reach for the lease's time to live");
        }
        if self.standing().slots.is_empty() {
            return;
        }
        // Another node reaching the store means it is up and this node is cut off: the
        // cluster has forgotten this node's listeners, so they must move.
        if self.peers.any_reaches_store().await {
            self.fence();
        }
    }

    /// Lets every listener of this node go, so they reconnect to a node the cluster can see.
    fn fence(&self) {
        let mut standing = self.standing();
        warn!(node = %self.node, listeners = standing.slots.len(), "cut off from the cluster store: letting this node's listeners go");
        standing.fence.cancel();
        standing.fence = CancellationToken::new();
        standing.slots.clear();
        standing.lease = None;
    }

    /// Watches the cluster's records into the local registry, reading them whole again
    /// whenever the watch breaks.
    async fn watch(self: Arc<Self>, synced: tokio::sync::oneshot::Sender<()>) {
        let mut synced = Some(synced);
        let mut backoff = Duration::from_millis(100);
        loop {
            let listed = tokio::select! {
                r = self.etcd.list(&self.config.prefix) => r,
                () = self.cancel.cancelled() => return,
            };
            let watch = match listed {
                Ok((revision, kvs)) => {
                    self.resync(kvs, revision);
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                    self.etcd.watch(&self.config.prefix, revision + 1).await
                }
                Err(e) => Err(e),
            };
            match watch {
                Ok(mut watch) => {
                    backoff = Duration::from_millis(100);
                    loop {
                        let next = tokio::select! {
                            r = watch.next() => r,
                            () = self.cancel.cancelled() => return,
                        };
                        match next {
                            Ok(Some(batch)) if !batch.canceled && batch.compact_revision == 0 => {
                                for event in batch.events {
                                    let Some(kv) = event.kv else { continue };
                                    if event.r#type == etcd::pb::event::EventType::Delete as i32 {
                                        self.removed(&kv.key, kv.mod_revision);
                                    } else {
                                        self.written(&kv);
                                    }
                                }
                            }
                            Ok(Some(_)) => break,
                            Ok(None) => break,
                            Err(e) => {
                                debug!(error = %e, "cluster watch broke");
                                break;
                            }
                        }
                    }
                }
                Err(e) => debug!(error = %e, "cannot watch the cluster store"),
            }
            tokio::select! {
                () = sleep(backoff) => {}
                () = self.cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Makes the local picture exactly the records listed.
    fn resync(&self, kvs: Vec<KeyValue>, revision: i64) {
        let mut present = HashSet::new();
        let mut nodes = HashSet::new();
        let mut entities = Vec::new();
        for kv in &kvs {
            if let Some(key) = self.entity_key(&kv.key) {
                entities.push((key.to_owned(), Some(kv.value.clone())));
                continue;
            }
            present.insert(String::from_utf8_lossy(&kv.key).into_owned());
            if let Some(name) = self.node_name(&kv.key) {
                nodes.insert(name.to_owned());
            }
            self.written(kv);
        }
        let gone: Vec<String> = self
            .remote()
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.removed(key.as_bytes(), revision);
        }
        self.peers.retain(&|name| nodes.contains(name));
        self.catalog.take_in(&entities, true, revision);
    }

    /// The catalog key an `entities/` key names.
    fn entity_key<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix(entities::ENTITIES)
    }

    /// The node a `nodes/` key names.
    fn node_name<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix("nodes/")
    }

    /// A record was written.
    fn written(&self, kv: &KeyValue) {
        if let Some(key) = self.entity_key(&kv.key) {
            let record = [(key.to_owned(), Some(kv.value.clone()))];
            self.catalog.take_in(&record, false, kv.mod_revision);
            return;
        }
        let Ok(key) = std::str::from_utf8(&kv.key) else {
            return;
        };
        let Some(rest) = key.strip_prefix(self.config.prefix.as_str()) else {
            return;
        };
        if let Some(name) = rest.strip_prefix("nodes/") {
            if name != &*self.node
                && let Ok(record) = serde_json::from_slice::<NodeRecord>(&kv.value)
            {
                self.peers.set(name, &record.rpc);
            }
            return;
        }
        if !rest.starts_with("listeners/") {
            return;
        }
        let Ok(record) = serde_json::from_slice::<ListenerRecord>(&kv.value) else {
            warn!(%key, "unreadable listener record ignored");
            return;
        };
        if record.node == *self.node {
            // Ours: a slot no listener of this node holds is a leftover, released.
            let ours = self.standing().slots.values().any(|s| s.key == key);
            if !ours {
                self.release_later(key.to_owned(), kv.lease);
            }
            return;
        }
        self.add_remote(key, record);
    }

    /// A record was deleted.
    fn removed(&self, key: &[u8], revision: i64) {
        if let Some(entity) = self.entity_key(key) {
            self.catalog
                .take_in(&[(entity.to_owned(), None)], false, revision);
            return;
        }
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        if let Some(name) = self.node_name(key.as_bytes()) {
            if name != &*self.node {
                self.peers.remove(name);
            }
            return;
        }
        if let Some(remote) = self.remote().remove(key) {
            self.listeners
                .unregister(&remote.record.path, remote.conn_id);
            remote.stop.cancel();
            return;
        }
        // One of this node's own slots vanished under it: that listener is no longer seen
        // by the cluster, so it is let go.
        let mut standing = self.standing();
        if let Some(conn) = standing
            .slots
            .iter()
            .find(|(_, s)| s.key == key)
            .map(|(c, _)| *c)
            && let Some(slot) = standing.slots.remove(&conn)
        {
            warn!(%key, "a listener's slot vanished; letting it go");
            slot.evict.cancel();
        }
    }

    /// Adds (or replaces) another node's listener.
    fn add_remote(&self, key: &str, record: ListenerRecord) {
        let Some(settings) = self.listeners.listener_path(&record.path) else {
            warn!(path = %record.path, node = %record.node, "listener on a path this node does not serve; nodes' configurations differ");
            return;
        };
        let mut remote = self.remote();
        if let Some(existing) = remote.get(key) {
            if existing.record == record {
                return;
            }
            self.listeners
                .unregister(&existing.record.path, existing.conn_id);
            existing.stop.cancel();
        }
        let (conn_id, stop) = self.forwarder(&settings, &record);
        remote.insert(
            key.to_owned(),
            Remote {
                record,
                conn_id,
                stop,
            },
        );
    }

    /// Registers `record`'s listener locally with a queue that a task forwards to its node.
    fn forwarder(
        &self,
        settings: &Arc<PathSettings>,
        record: &ListenerRecord,
    ) -> (u64, CancellationToken) {
        let conn_id = self.next_remote.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let node: Arc<str> = record.node.as_str().into();
        let handle = ListenerHandle::new(
            record.id.clone(),
            conn_id,
            tx,
            self.config.advertise.clone(),
            Features::parse([record.features.as_str()]),
            Some(node.clone()),
        );
        let stop = CancellationToken::new();
        self.tasks.spawn(forward(
            rx,
            self.peers.clone(),
            node,
            record.path.clone(),
            record.conn,
            stop.clone(),
        ));
        self.listeners.add(settings, handle, false);
        (conn_id, stop)
    }

    /// Gives a new forwarding task to every other node's listener whose task ended on a
    /// failed delivery while the listener's record still stands (a passing fault).
    fn revive(&self) {
        let mut remote = self.remote();
        let dead: Vec<String> = remote
            .iter()
            .filter(|(_, r)| self.is_gone(r))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            let Some(old) = remote.remove(&key) else {
                continue;
            };
            self.listeners.unregister(&old.record.path, old.conn_id);
            old.stop.cancel();
            if let Some(settings) = self.listeners.listener_path(&old.record.path) {
                let (conn_id, stop) = self.forwarder(&settings, &old.record);
                remote.insert(
                    key,
                    Remote {
                        record: old.record,
                        conn_id,
                        stop,
                    },
                );
            }
        }
    }

    fn is_gone(&self, remote: &Remote) -> bool {
        let mut gone = false;
        self.listeners.visit(&remote.record.path, &mut |all| {
            gone = all
                .iter()
                .find(|l| l.conn_id == remote.conn_id)
                .is_none_or(ListenerHandle::is_gone);
        });
        gone
    }

    /// Releases `key` (held under `lease`) in the background, or when the store is back.
    fn release_later(&self, key: String, lease: i64) {
        let etcd = self.etcd.clone();
        let stale = self.stale.clone();
        self.tasks.spawn(async move {
            if let Err(e) = etcd.release(&key, lease).await {
                debug!(%key, error = %e, "slot release failed; retried when the store answers");
                // Bounded: a slot left over past it is released when the watch next reads
                // the records whole (one of this node's records without its listener).
                let mut stale = lock(&stale);
                if stale.len() < MAX_STALE {
                    stale.push((key, lease));
                }
            }
        });
    }

    /// Moves this node's listeners to other nodes before it stops: no new listener is
    /// taken, and the listeners are let go one at a time, each once the one before listens
    /// again elsewhere (or after [`MOVE_WAIT`]), so that a path never loses all its
    /// listeners at once. Bounded by `deadline`.
    pub(crate) async fn drain(&self, deadline: Instant) {
        self.standing().draining = true;
        let mut moved = 0;
        while Instant::now() < deadline {
            let next = self
                .standing()
                .slots
                .values()
                .next()
                .map(|s| (s.path.clone(), s.key.clone(), s.evict.clone()));
            let Some((path, key, evict)) = next else {
                break;
            };
            let before = self.listener_count(&path);
            evict.cancel();
            let until = deadline.min(Instant::now() + MOVE_WAIT);
            // Its slot goes when its channel closes; it is back once the path has as many
            // listeners as before.
            while Instant::now() < until {
                let gone = !self.standing().slots.values().any(|s| s.key == key);
                if gone && self.listener_count(&path) >= before {
                    break;
                }
                sleep(Duration::from_millis(20)).await;
            }
            moved += 1;
        }
        info!(node = %self.node, moved, "listeners moved to other nodes");
    }

    /// Whether this node is stopping and handing its listeners to the others.
    pub(crate) fn draining(&self) -> bool {
        self.standing().draining
    }

    /// How long a stopping node drains.
    pub(crate) fn drain_time(&self) -> Duration {
        self.config.drain
    }

    fn listener_count(&self, path: &str) -> usize {
        let mut n = 0;
        self.listeners.visit(path, &mut |all| {
            n = all.iter().filter(|l| !l.is_gone()).count()
        });
        n
    }

    /// Leaves the cluster: the lease is revoked so the other nodes forget this node's
    /// listeners at once, and the background tasks end.
    pub(crate) async fn shutdown(&self) {
        self.cancel.cancel();
        let lease = self.standing().lease.take();
        if let Some(lease) = lease {
            let _ = timeout(Duration::from_secs(2), self.etcd.revoke(lease)).await;
        }
        for (_, remote) in self.remote().drain() {
            remote.stop.cancel();
        }
        self.tasks.close();
        let _ = timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

impl Registry for Cluster {
    fn listener_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        self.listeners.listener_path(path)
    }

    fn sender_path(&self, path: &str) -> Option<Arc<PathSettings>> {
        self.listeners.sender_path(path)
    }

    fn listened(&self) -> Vec<String> {
        self.listeners.listened()
    }

    fn namespace_settings(&self) -> PathSettings {
        self.listeners.namespace_settings()
    }

    fn register<'a>(
        &'a self,
        settings: &'a Arc<PathSettings>,
        handle: ListenerHandle,
    ) -> Registering<'a> {
        Box::pin(async move {
            let (lease, evict) = {
                let standing = self.standing();
                if standing.draining {
                    return Err(Refused::Unavailable(
                        "this gateway node is stopping; connect to another node",
                    ));
                }
                match standing.lease {
                    Some(lease) if standing.holds_lease => (lease, standing.fence.child_token()),
                    _ => {
                        return Err(Refused::Unavailable(
                            "this gateway node cannot reach the cluster store; connect to another node",
                        ));
                    }
                }
            };
            let path = normalize(&settings.name);
            let record = ListenerRecord {
                node: self.node.to_string(),
                path: settings.name.clone(),
                conn: handle.conn_id,
                id: handle.id.clone(),
                features: handle.features.header_value(),
            };
            let value = serde_json::to_vec(&record).expect("records serialize");
            let max = settings.max_listeners.min(ferry_hc::MAX_LISTENERS_PER_PATH);
            // Slots the local picture shows free first; the store decides.
            let taken = self.taken_slots(&path);
            let order = (0..max)
                .filter(|s| !taken.contains(s))
                .chain((0..max).filter(|s| taken.contains(s)));
            for slot in order {
                let key = self.slot_key(&path, slot);
                // Recorded before the claim, so a registration given up on mid-claim still
                // releases what it may have taken.
                self.standing().slots.insert(
                    handle.conn_id,
                    Slot {
                        key: key.clone(),
                        value: value.clone(),
                        path: settings.name.clone(),
                        evict: evict.clone(),
                    },
                );
                match self.etcd.claim(&key, value.clone(), lease).await {
                    Ok(true) => {
                        self.listeners.add(settings, handle, false);
                        return Ok(evict);
                    }
                    Ok(false) => {
                        self.standing().slots.remove(&handle.conn_id);
                    }
                    Err(e) => {
                        self.standing().slots.remove(&handle.conn_id);
                        warn!(error = %e, "listener slot claim failed");
                        return Err(Refused::Unavailable(
                            "the cluster store did not answer; connect again, or to another node",
                        ));
                    }
                }
            }
            Err(Refused::Full)
        })
    }

    fn unregister(&self, name: &str, conn_id: u64) {
        self.listeners.unregister(name, conn_id);
        let (slot, lease) = {
            let mut standing = self.standing();
            (standing.slots.remove(&conn_id), standing.lease)
        };
        if let (Some(slot), Some(lease)) = (slot, lease) {
            self.release_later(slot.key, lease);
        }
    }

    fn visit(&self, name: &str, visit: &mut dyn FnMut(&[ListenerHandle])) {
        self.listeners.visit(name, visit);
    }
}

impl Cluster {
    /// Slots of `path` the local picture shows taken.
    fn taken_slots(&self, path: &str) -> HashSet<usize> {
        let prefix = self.key(&format!("listeners/{path}/"));
        let slot = |key: &str| {
            key.strip_prefix(prefix.as_str())
                .and_then(|s| s.parse::<usize>().ok())
        };
        let mut taken: HashSet<usize> = self.remote().keys().filter_map(|k| slot(k)).collect();
        taken.extend(self.standing().slots.values().filter_map(|s| slot(&s.key)));
        taken
    }
}

/// Forwards commands for another node's listener to that node, until the listener's record
/// goes or a delivery finds it gone (its queue then closes, so senders holding it move on).
/// What queues up during one call goes, in order, in the next.
async fn forward(
    mut commands: mpsc::Receiver<Outbound>,
    peers: Arc<Peers>,
    node: Arc<str>,
    path: String,
    listener: u64,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            c = commands.recv() => c,
            () = stop.cancelled() => None,
        };
        let Some(first) = next else { return };
        let mut batch = vec![first];
        while batch.len() < rpc::MAX_BATCH
            && let Ok(more) = commands.try_recv()
        {
            batch.push(more);
        }
        for outcome in peers.deliver(&node, &path, listener, batch).await {
            match outcome {
                Ok(()) => {}
                Err(Undelivered::Busy) => {
                    debug!(%node, %path, listener, "command dropped: the listener is not keeping up");
                }
                Err(Undelivered::Gone) => {
                    debug!(%node, %path, listener, "listener on another node gone");
                    return;
                }
            }
        }
    }
}
