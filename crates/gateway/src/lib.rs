#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod admin;
mod admission;
mod auth;
mod body;
mod catalog;
mod cluster;
pub mod config;
mod control;
mod diagnostics;
mod first_message;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
mod handshake;
mod http;
mod metrics;
mod nettcp;
pub mod network;
mod pairing;
mod port;
mod proxy_protocol;
mod relayed;
mod reload;
mod scrub;
mod state;
mod verified;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ferry_net::tls::{self, DevPki, Identity, TlsError};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::admission::Role;
pub use crate::catalog::StoreError;
pub use crate::cluster::ClusterError;
pub use crate::config::{
    AdminConfig, ClusterConfig, Config, EtcdConfig, GrpcRoute, Limits, PathConfig, Timeouts,
    TlsSetup,
};
use crate::pairing::{Local, Pairing, Registry};
pub use crate::reload::{ReloadError, Reloaded};
use crate::state::Shared;

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("tls set-up failed")]
    Tls(#[from] TlsError),
    /// The development CA could not be written.
    #[error("cannot write the development CA to {path}")]
    WriteCa {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither a plain nor a TLS address is configured.
    #[error("no listen address configured")]
    NoAddress,
    /// Cluster mode could not start.
    #[error("cluster mode")]
    Cluster(#[from] ClusterError),
    /// The entity store could not be opened or read.
    #[error("entity store")]
    Store(#[from] StoreError),
    /// The admin port needs a certificate: configure the TLS port.
    #[error("the admin port serves HTTPS only: it needs the TLS port's certificate")]
    AdminWithoutTls,
    /// The plain port is not on loopback and `plain_public` was not set.
    #[error(
        "plain (unencrypted) port {0} is not a loopback address; tokens would cross the network in clear text (set plain_public to allow it behind a TLS-terminating proxy)"
    )]
    PlainNotLoopback(SocketAddr),
}

/// Starts gateways.
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// Binds the configured ports and starts serving.
    ///
    /// # Errors
    /// See [`StartError`].
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is served until it returns.
    pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
        if config.plain_addr.is_none() && config.tls_addr.is_none() {
            return Err(StartError::NoAddress);
        }
        if let Some(addr) = config
            .plain_addr
            .filter(|a| !a.ip().is_loopback() && !config.plain_public)
        {
            return Err(StartError::PlainNotLoopback(addr));
        }
        let mut dev_ca_pem = None;
        if config.admin.is_some() && config.tls_addr.is_none() {
            return Err(StartError::AdminWithoutTls);
        }
        let wants_tls = config.tls_addr.is_some()
            || config.relayed_addr.is_some()
            || config.nettcp_addr.is_some();
        let alpn = [tls::ALPN_H2, tls::ALPN_HTTP11, tls::ALPN_HTTP10];
        let identity = match (wants_tls, &config.tls) {
            (false, _) => None,
            (true, TlsSetup::Dev { ca_out }) => {
                let pki = DevPki::generate(std::slice::from_ref(&config.namespace))?;
                if let Some(path) = ca_out {
                    tokio::fs::write(path, &pki.ca_pem)
                        .await
                        .map_err(|source| StartError::WriteCa {
                            path: path.display().to_string(),
                            source,
                        })?;
                }
                dev_ca_pem = Some(pki.ca_pem);
                Some(pki.identity)
            }
            (true, TlsSetup::Files { cert, key }) => Some(Identity::from_pem_files(cert, key)?),
        };
        // The certificate is replaceable: a reload puts a renewed one in force for the
        // handshakes that follow.
        let server_cert = identity.map(tls::ServerCert::new).transpose()?;
        let acceptor = match &server_cert {
            Some(cert) => Some(TlsAcceptor::from(tls::server_config_with(
                cert.clone(),
                &alpn,
            )?)),
            None => None,
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let plain = match config.plain_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let nettcp = match config.nettcp_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let relayed = match config.relayed_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let secure = match config.tls_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let admin = match &config.admin {
            Some(a) => Some(bind(a.listen).await?),
            None => None,
        };
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (plain_addr, tls_addr) = (local(&plain), local(&secure));
        let nettcp_addr = local(&nettcp);
        let relayed_addr = local(&relayed);
        let admin_addr = local(&admin);
        // Tokens cross the net.tcp and relayed ports inside the session: off loopback they
        // must travel under TLS, unless the configuration says otherwise in so many words.
        let insecure = config.insecure;
        let needs_tls =
            |addr: Option<SocketAddr>| !insecure && addr.is_some_and(|a| !a.ip().is_loopback());

        let cancel = CancellationToken::new();
        let started_with = config.clone();
        let mut config = config;
        // From here on the configuration names the ports as bound (port 0 resolved): the
        // management API writes them into connection strings.
        config.tls_addr = tls_addr.or(config.tls_addr);
        config.plain_addr = plain_addr.or(config.plain_addr);
        if let Some(cluster) = config.cluster.as_mut().filter(|c| c.advertise.is_empty()) {
            // By default listeners reach this node's TLS port under the namespace's name.
            cluster.advertise = match (tls_addr, plain_addr) {
                (Some(a), _) => format!("wss://{}:{}", config.namespace, a.port()),
                (None, Some(a)) => format!("ws://{}:{}", config.namespace, a.port()),
                (None, None) => String::new(),
            };
        }
        if let Some(host) = config
            .cluster
            .as_ref()
            .and_then(|c| advertised_host(&c.advertise))
            .filter(|h| !config.audience_hosts().contains(&h.as_str()))
        {
            // Tokens for this node's own name are as good as tokens for the namespace's.
            config.aliases.push(host);
        }
        // The entities live where the registry does: in etcd for a cluster, else in a file
        // under the data directory, else in memory.
        let store: Box<dyn catalog::Store> = match (&config.cluster, &config.data_dir) {
            (Some(c), _) => Box::new(cluster::entities::EntityStore::new(c)?),
            (None, Some(dir)) => Box::new(catalog::store::Redb::open(dir)?),
            (None, None) => Box::new(catalog::store::Memory),
        };
        let catalog = Arc::new(catalog::Catalog::open(&config, store)?);
        let metrics = metrics::Metrics::new(config.cluster.is_some());
        let cluster = match &config.cluster {
            Some(_) => Some(
                cluster::Cluster::start(&config, catalog.clone(), metrics.forwards.clone()).await?,
            ),
            None => None,
        };
        let registry: Arc<dyn Registry> = match &cluster {
            Some(cluster) => cluster.clone(),
            None => Arc::new(Local::new(&config, catalog.clone())),
        };
        let tuning = std::sync::RwLock::new(Arc::new(state::Tuning::of(&config)));
        let shared = Arc::new(Shared {
            catalog,
            metrics,
            pairing: Pairing::new(&config, registry, cancel.clone()),
            cluster,
            grpc: grpc::pool::Pool::default(),
            verified: verified::Verified::default(),
            admission: admission::Admission::new(&config.limits),
            config,
            cancel,
            tracker: TaskTracker::new(),
            tuning,
            next_conn: AtomicU64::new(0),
        });
        // The tasks that run as long as the gateway: an accept loop per port, and the
        // sampler of the status page's throughput chart.
        let accept_loops = [&plain, &relayed, &nettcp, &secure, &admin]
            .iter()
            .filter(|l| l.is_some())
            .count()
            + 1;
        let sampled = shared.clone();
        shared.tracker.spawn(async move {
            let mut tick = tokio::time::interval(metrics::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => sampled.metrics.sample(catalog::model::now_ms()),
                    () = sampled.cancel.cancelled() => return,
                }
            }
        });
        if let Some(l) = plain {
            info!(addr = ?plain_addr, "listening (plain)");
            shared
                .tracker
                .spawn(accept_loop(shared.clone(), l, Front::Http(None)));
        }
        if let Some(l) = relayed {
            info!(addr = ?relayed_addr, "listening (net.tcp relay handshake)");
            let required = needs_tls(relayed_addr);
            shared.tracker.spawn(accept_loop(
                shared.clone(),
                l,
                Front::Relayed(acceptor.clone(), required),
            ));
        }
        if let Some(l) = nettcp {
            info!(addr = ?nettcp_addr, "listening (net.tcp)");
            let front = Front::NetTcp(acceptor.clone(), needs_tls(nettcp_addr));
            shared.tracker.spawn(accept_loop(shared.clone(), l, front));
        }
        if let Some(l) = secure {
            info!(addr = ?tls_addr, "listening (tls)");
            shared.tracker.spawn(accept_loop(
                shared.clone(),
                l,
                Front::Http(acceptor.clone()),
            ));
        }
        if let (Some(l), Some(tls)) = (admin, acceptor) {
            info!(addr = ?admin_addr, "listening (admin)");
            shared
                .tracker
                .spawn(accept_loop(shared.clone(), l, Front::Admin(tls)));
        }
        Ok(RunningGateway {
            shared,
            admin_addr,
            plain_addr,
            tls_addr,
            nettcp_addr,
            relayed_addr,
            dev_ca_pem,
            accept_loops,
            server_cert,
            in_force: tokio::sync::Mutex::new(started_with),
        })
    }
}

/// A gateway that is serving. Dropping it does not stop it; call [`RunningGateway::shutdown`].
#[derive(Debug)]
pub struct RunningGateway {
    shared: Arc<Shared>,
    admin_addr: Option<SocketAddr>,
    plain_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    nettcp_addr: Option<SocketAddr>,
    relayed_addr: Option<SocketAddr>,
    dev_ca_pem: Option<String>,
    /// Tasks that run as long as the gateway: an accept loop per port, and the sampler.
    accept_loops: usize,
    /// The TLS ports' certificate, replaced by a reload.
    server_cert: Option<Arc<tls::ServerCert>>,
    /// The configuration last given (at start or by a reload), as given.
    in_force: tokio::sync::Mutex<Config>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl RunningGateway {
    /// Puts a new configuration in force without dropping a connection: its rules and paths
    /// at once (listeners of a path it no longer declares are closed with 1001, tokens of a
    /// rule it no longer has stop working); its limits and timeouts for the connections that
    /// begin from then on (a connection budget that shrinks takes no one new until enough
    /// have left); and for a certificate from files, those files read again for the
    /// handshakes that follow. What else differs waits for a restart and is listed in the
    /// answer.
    ///
    /// # Errors
    /// The certificate files cannot be read or do not match: nothing changes.
    ///
    /// # Cancel safety
    /// Not cancel safe: a reload given up on may have been applied in part.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let mut in_force = self.in_force.lock().await;
        let done = reload::reload(
            &in_force,
            &config,
            &self.shared.catalog,
            self.server_cert.as_deref(),
        )
        .await?;
        self.shared.retune(&config);
        *in_force = config;
        Ok(done)
    }

    /// The bound admin (management API) address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound plain (`ws://`) address.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The bound TLS (`wss://`) address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The development CA's PEM, when the TLS port uses a generated certificate.
    pub fn dev_ca_pem(&self) -> Option<&str> {
        self.dev_ca_pem.as_deref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The first namespace rule's name (in development: the Manage rule).
    pub fn rule_name(&self) -> &str {
        self.shared
            .config
            .rules
            .first()
            .map_or("", |r| r.name.as_str())
    }

    /// The first namespace rule's key. A secret: do not log it.
    pub fn rule_key(&self) -> &str {
        self.shared
            .config
            .rules
            .first()
            .map_or("", |r| r.primary_key())
    }

    /// Tasks alive: accept loops, connections, relays. Tests use it to prove nothing leaks.
    pub fn active_tasks(&self) -> usize {
        self.shared.tracker.len()
    }

    /// The metrics the admin port's `/metrics` serves, in the OpenMetrics text format.
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Listeners connected on a path.
    pub fn listener_count(&self, path: &str) -> usize {
        self.shared.pairing.listener_count(path)
    }

    /// HTTP requests waiting for a listener's response.
    pub fn pending_http_requests(&self) -> usize {
        self.shared.pairing.pending_requests()
    }

    /// The bound net.tcp address (WCF NetTcpBinding senders), if any.
    pub fn nettcp_addr(&self) -> Option<SocketAddr> {
        self.nettcp_addr
    }

    /// The bound address of the NetTcpRelayBinding handshake port, if any.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        self.relayed_addr
    }

    /// Relayed HTTP/2 connections the gRPC ingress holds open to listeners.
    pub fn grpc_connections(&self) -> usize {
        self.shared.grpc.open_count()
    }

    /// Rendezvous addresses handed out and not yet used or expired.
    pub fn pending_rendezvous(&self) -> usize {
        self.shared.pairing.pending_rendezvous()
    }

    /// Stops accepting, closes control channels with 1001 and relays with 1001, and waits
    /// (bounded by twice the close timeout) for every task to finish.
    ///
    /// # Cancel safety
    /// Cancel safe: shutdown has begun once called; dropping only stops the waiting.
    pub async fn shutdown(self) {
        if let Some(cluster) = &self.shared.cluster {
            // A cluster node drains first: its listeners move to other nodes one at a time,
            // then the pairs in flight get until the drain deadline to finish, then the
            // other nodes forget this one.
            let deadline = tokio::time::Instant::now() + cluster.drain_time();
            cluster.drain(deadline).await;
            while self.shared.tracker.len() > self.accept_loops
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cluster.shutdown().await;
        }
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        let limit = self.shared.tuning().timeouts.close * 2;
        if tokio::time::timeout(limit, self.shared.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = self.shared.tracker.len(),
                "tasks still running after shutdown"
            );
        }
        info!("gateway stopped");
    }
}

/// The host of a base URL (`wss://gw-2.relay.example:443` → `gw-2.relay.example`).
fn advertised_host(base: &str) -> Option<String> {
    let rest = base.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// What a port serves.
#[derive(Clone)]
enum Front {
    /// WebSocket and HTTP (and gRPC), with TLS if an acceptor is given.
    Http(Option<TlsAcceptor>),
    /// WCF net.tcp framing, with the `application/ssl-tls` upgrade when an acceptor is given;
    /// `true` when every session must take it.
    NetTcp(Option<TlsAcceptor>, bool),
    /// The NetTcpRelayBinding handshake (TLS on request), then net.tcp; `true` when TLS is
    /// required.
    Relayed(Option<TlsAcceptor>, bool),
    /// The management API, over TLS.
    Admin(TlsAcceptor),
}

/// Accepts connections until shutdown. A handshake slot is taken before each accept (so at
/// most `max_handshakes` wait for their head), the source is admitted or refused, and the
/// slot moves into the connection's task, into its relay task if it gets one.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, front: Front) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let handshake = tokio::select! {
            p = shared.admission.handshake_slot() => p,
            () = shared.cancel.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(10); x }
                Err(e) => {
                    // Usually EMFILE: wait for connections to finish instead of spinning.
                    if matches!(e.raw_os_error(), Some(23 | 24)) {
                        // ENFILE / EMFILE: the process or the system is out of descriptors.
                        error!(
                            error = %e,
                            "out of file descriptors: new connections wait until some close \
                             (raise the open-file limit, ulimit -n, or lower the limits' \
                             max_*_connections)"
                        );
                    } else {
                        warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = shared.cancel.cancelled() => return,
        };
        if !matches!(front, Front::Admin(_)) && shared.config.proxies.trusts(peer.ip()) {
            // A trusted load balancer: the client is the one it names, in a PROXY header
            // before anything else or in each request's X-Forwarded-For.
            let task_shared = shared.clone();
            let front = front.clone();
            let span = info_span!("conn", proxy = %peer);
            shared.tracker.spawn(
                async move {
                    let shared = task_shared;
                    if !shared.config.proxies.proxy_protocol {
                        // net.tcp names no client: there the load balancer is the source,
                        // held to the rules and limits like any (use the PROXY protocol to
                        // see its clients).
                        if matches!(front, Front::NetTcp(..) | Front::Relayed(..)) {
                            if let Some(slot) = admit(&shared, peer, handshake, &front) {
                                serve_admitted(shared, tcp, peer, slot, front).await;
                            }
                            return;
                        }
                        let slot = shared.admission.admit_proxy(handshake);
                        return serve_admitted(shared, tcp, peer, slot, front).await;
                    }
                    let mut tcp = tcp;
                    let limit = shared.tuning().timeouts.handshake;
                    let client =
                        match tokio::time::timeout(limit, proxy_protocol::read(&mut tcp)).await {
                            Ok(Ok(client)) => client.unwrap_or(peer),
                            Ok(Err(e)) => return debug!(error = %e, "connection closed"),
                            Err(_) => return debug!("PROXY protocol header not received in time"),
                        };
                    if let Some(slot) = admit(&shared, client, handshake, &front) {
                        serve_admitted(shared, tcp, client, slot, front).await;
                    }
                }
                .instrument(span),
            );
            continue;
        }
        // A refused source costs one accept and one close: no task, no read.
        let Some(slot) = admit(&shared, peer, handshake, &front) else {
            continue;
        };
        let task_shared = shared.clone();
        let front = front.clone();
        shared
            .tracker
            .spawn(serve_admitted(task_shared, tcp, peer, slot, front));
    }
}

/// The checks a new connection from `peer` (the client, as far as the gateway can tell)
/// meets before anything is read from it for itself: the namespace's IP rules (not on the
/// admin port, which has its own address to keep private), then fair admission.
fn admit(
    shared: &Shared,
    peer: SocketAddr,
    handshake: tokio::sync::OwnedSemaphorePermit,
    front: &Front,
) -> Option<admission::Slot> {
    if !matches!(front, Front::Admin(_)) && !shared.catalog.view().network.allows(peer.ip()) {
        debug!(%peer, "connection refused by the network rules");
        shared.metrics.refused(
            "",
            403,
            &format!("{} refused by the network rules", peer.ip()),
        );
        return None;
    }
    let mut slot = match shared.admission.admit(peer.ip(), handshake) {
        Ok(slot) => slot,
        Err(why) => {
            debug!(%peer, %why, "connection refused");
            return None;
        }
    };
    // The net.tcp ports serve senders only: they draw on the senders' budget at once.
    if matches!(front, Front::NetTcp(..) | Front::Relayed(..))
        && let Err(busy) = slot.assign(Role::Sender)
    {
        debug!(%peer, %busy, "connection refused");
        return None;
    }
    Some(slot)
}

/// Serves an admitted connection on its front end. The slot travels with the connection,
/// into its relay task if it gets one.
async fn serve_admitted(
    shared: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: admission::Slot,
    front: Front,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let conn_id = shared
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = info_span!("conn", %peer, conn_id);
    async move {
        match front {
            Front::Http(tls) => port::serve(shared, tcp, peer, tls, slot).await,
            Front::NetTcp(tls, required) => {
                nettcp::serve(shared, tcp, peer, tls, required, slot).await;
            }
            Front::Relayed(tls, required) => {
                relayed::serve(shared, tcp, peer, tls, required, slot).await;
            }
            Front::Admin(tls) => admin::serve(shared, tcp, peer, tls, slot).await,
        }
    }
    .instrument(span)
    .await;
}
