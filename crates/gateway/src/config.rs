//! Typed gateway configuration. The CLI turns its TOML file, environment and flags into this;
//! the library never reads files or the environment itself (except the TLS PEM files it is
//! pointed at).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use ferry_hc::{Rights, Rule};

/// Name of the development rule, as Azure names a namespace's default rule.
pub const DEV_RULE_NAME: &str = "RootManageSharedAccessKey";

/// Default upper bound on HTTP request head size (spec §4.3: 32 kB of header metadata).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

/// Default time a sender waits for a listener to take its connection (spec §5.2: ~30 s).
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time allowed for a TLS handshake plus the HTTP upgrade request.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default interval between pings on a listener's control channel. Azure's idle cut-off is
/// about 4 minutes and clients keep alive every 3–3.5; we probe more often so a dead listener
/// leaves the balancing set quickly.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// Default for [`Timeouts::write_stall`]: a minute, as long as a listener may pause a
/// response body (spec §6.5); a sender that reads nothing for that long is taken for gone.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(60);

/// Default for [`Timeouts::idle`]: ten minutes, WCF's default receive timeout, past which a
/// WCF session with nothing to say ends anyway.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// Default for [`Timeouts::half_close`].
pub const DEFAULT_HALF_CLOSE: Duration = Duration::from_secs(30);

/// Default grace past a token's expiry: the SDKs renew exactly at expiry (spec §8).
pub const DEFAULT_TOKEN_GRACE: Duration = Duration::from_secs(300);

/// Default time an HTTP request waits for its response (Azure's fixed value, spec §6.5).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default largest HTTP request body relayed (413 beyond). Bodies stream in bounded memory,
/// so this is an abuse limit, not a memory one.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 4 << 30;

/// Default largest HTTP response body taken from a listener (streamed, like requests).
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 4 << 30;

/// Default largest gRPC message relayed, each way (RESOURCE_EXHAUSTED beyond): gRPC's own
/// default receive limit.
pub const DEFAULT_MAX_GRPC_MESSAGE: usize = 4 << 20;

/// Default for [`Limits::max_nettcp_first_envelope`]: 16 MiB.
pub const DEFAULT_MAX_NETTCP_FIRST_ENVELOPE: usize = 16 << 20;

/// Default for [`Limits::max_nettcp_first_headers`]: 64 KiB, the .NET default for a whole
/// message (`MaxReceivedMessageSize`), far more than the headers of any WCF client's first
/// message.
pub const DEFAULT_MAX_NETTCP_FIRST_HEADERS: usize = 64 << 10;

/// Default for [`Limits::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 2_000;

/// Default for [`Limits::max_listener_connections`]: a rendezvous for every sender slot,
/// and 2,000 control channels.
pub const DEFAULT_MAX_LISTENER_CONNECTIONS: usize = 10_000;

/// Default for [`Limits::max_sender_connections`]. With the two above: 20,000 in all, a
/// common hard limit on a process's open files.
pub const DEFAULT_MAX_SENDER_CONNECTIONS: usize = 8_000;

/// Default for [`Limits::max_connections_per_source`].
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 512;

/// Default for [`Limits::handshakes_per_source_per_second`].
pub const DEFAULT_HANDSHAKES_PER_SOURCE_PER_SECOND: u32 = 100;

/// Default for [`Limits::auth_failures_per_source_per_minute`].
pub const DEFAULT_AUTH_FAILURES_PER_SOURCE_PER_MINUTE: u32 = 30;

/// Where the TLS port gets its certificate.
#[derive(Clone, Debug)]
pub enum TlsSetup {
    /// A CA and a certificate generated at start-up for the namespace name, `localhost` and
    /// the loopback addresses. The CA's PEM is written to `ca_out` if given.
    Dev {
        /// Where to write the development CA certificate (PEM).
        ca_out: Option<PathBuf>,
    },
    /// PEM files.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// One hybrid connection (a path senders and listeners meet at).
#[derive(Clone, Debug)]
pub struct PathConfig {
    /// The name: one or more `/`-separated segments, e.g. `orders` or `erp/orders`.
    pub name: String,
    /// Senders need no token (Azure's `RequiresClientAuthorization = false`).
    pub anonymous_senders: bool,
    /// Rules for this path only, on top of the namespace rules.
    pub rules: Vec<Rule>,
    /// Listener limit (at most [`ferry_hc::MAX_LISTENERS_PER_PATH`]).
    pub max_listeners: usize,
    /// How long an HTTP request may wait for its listener's response (504 after); `None`
    /// uses [`Timeouts::request`]. Azure's is a fixed 60 s; here it is per path.
    pub request_timeout: Option<Duration>,
    /// Deliver each net.tcp session to every listener on the path (NetEventRelayBinding's
    /// multicast, pub/sub) instead of to one.
    pub fan_out: bool,
    /// IP rules for this path, checked after the namespace's: a client the namespace lets in
    /// may still be turned away here (403). `None`: the namespace's rules alone.
    pub network: Option<crate::network::NetworkRules>,
}

impl PathConfig {
    /// A path with default settings: senders need a token, 25 listeners.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            anonymous_senders: false,
            rules: Vec::new(),
            max_listeners: ferry_hc::MAX_LISTENERS_PER_PATH,
            request_timeout: None,
            fan_out: false,
            network: None,
        }
    }
}

/// Size limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest HTTP request head; larger → 431.
    pub max_header_bytes: usize,
    /// Most connections in their handshake at once (TLS, request head, before their role is
    /// known); past it, accepting waits. Each handshake is bounded by `timeouts.handshake`.
    pub max_handshakes: NonZeroUsize,
    /// Most listener connections (control channels and rendezvous) at once; past it a
    /// listener is refused with 503. Senders never draw on this budget, but every relayed
    /// WebSocket sender has its listener's rendezvous here: keep it above
    /// `max_sender_connections` by as many control channels as the listeners need.
    pub max_listener_connections: NonZeroUsize,
    /// Most sender connections (WebSocket, HTTP, gRPC, net.tcp) at once; past it a sender
    /// is refused (503, or the connection is closed on the net.tcp ports).
    pub max_sender_connections: NonZeroUsize,
    /// Most connections one source (an IPv4 address, an IPv6 /64) may hold open; past it
    /// its new connections are closed at once. 0: no limit (behind a proxy that is the
    /// only source, for instance).
    pub max_connections_per_source: u32,
    /// New connections one source may open per second, with bursts of four times as many;
    /// faster ones are closed at once. 0: no limit.
    pub handshakes_per_source_per_second: u32,
    /// Failed authentications one source is allowed per minute; past it the source is
    /// blocked (new connections closed, requests refused with 429) until its allowance
    /// refills. 0: no limit.
    pub auth_failures_per_source_per_minute: u32,
    /// Largest relayed WebSocket message; larger → close 1009.
    pub max_message: u64,
    /// Streaming buffer per busy relay direction.
    pub relay_buffer: usize,
    /// Commands queued for one listener's control channel.
    pub control_queue: NonZeroUsize,
    /// Largest HTTP request body relayed; larger → 413.
    pub max_request_body: usize,
    /// Largest HTTP response body taken from a listener over a rendezvous.
    pub max_response_body: u64,
    /// Largest gRPC message relayed through the gRPC ingress, either way.
    pub max_grpc_message: usize,
    /// Largest first message of a net.tcp session (`MaxMessageSizeExceededFault` beyond, for
    /// a sized message that declares more).
    pub max_nettcp_first_envelope: usize,
    /// How much of a net.tcp sender's first message the gateway reads, before the sender is
    /// authorised, to find the token in its headers: a message whose `Body` does not start
    /// within it cannot carry a token the gateway reads. The rest of the message is never
    /// buffered: it streams to the listener once the sender is authorised.
    pub max_nettcp_first_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_handshakes: NonZeroUsize::new(DEFAULT_MAX_HANDSHAKES).expect("non-zero constant"),
            max_listener_connections: NonZeroUsize::new(DEFAULT_MAX_LISTENER_CONNECTIONS)
                .expect("non-zero constant"),
            max_sender_connections: NonZeroUsize::new(DEFAULT_MAX_SENDER_CONNECTIONS)
                .expect("non-zero constant"),
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            handshakes_per_source_per_second: DEFAULT_HANDSHAKES_PER_SOURCE_PER_SECOND,
            auth_failures_per_source_per_minute: DEFAULT_AUTH_FAILURES_PER_SOURCE_PER_MINUTE,
            max_message: ferry_net::relay::DEFAULT_MAX_MESSAGE,
            relay_buffer: ferry_net::relay::DEFAULT_BUFFER,
            control_queue: NonZeroUsize::new(64).expect("non-zero constant"),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_grpc_message: DEFAULT_MAX_GRPC_MESSAGE,
            max_nettcp_first_envelope: DEFAULT_MAX_NETTCP_FIRST_ENVELOPE,
            max_nettcp_first_headers: DEFAULT_MAX_NETTCP_FIRST_HEADERS,
        }
    }
}

/// Timeouts on everything outside the process.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TLS handshake plus the HTTP upgrade request.
    pub handshake: Duration,
    /// A sender waiting for its listener; also the life of a rendezvous address.
    pub rendezvous: Duration,
    /// Ping interval on control channels; a listener silent for two intervals is dropped.
    pub keepalive: Duration,
    /// Closing handshake, and draining at shutdown.
    pub close: Duration,
    /// A relayed connection with no frame either way for this long is closed, and an HTTP
    /// connection with no request for this long (none: never).
    pub idle: Option<Duration>,
    /// Once one side of a relayed WebSocket has closed, how long the other may take to
    /// close too (none: until `idle`).
    pub half_close: Option<Duration>,
    /// Grace past a token's expiry.
    pub token_grace: Duration,
    /// How long an HTTP request waits for its response, unless its path says otherwise.
    pub request: Duration,
    /// How long a write to an HTTP sender may wait for the sender to read: past it the
    /// connection is closed, and a listener streaming its response is let go. Without it a
    /// sender that asks for a large answer and never reads it would hold its connection, the
    /// response's rendezvous and the listener for ever. It applies to the connection's
    /// socket writes and, for a streamed response, to each chunk the relay hands over (at
    /// most the relay buffer, 64 KiB): a client must take at least that much per period, so
    /// the default asks for about 1 KB/s. Zero means no limit.
    pub write_stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            rendezvous: DEFAULT_RENDEZVOUS_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            close: ferry_net::relay::DEFAULT_CLOSE_TIMEOUT,
            idle: Some(DEFAULT_IDLE),
            half_close: Some(DEFAULT_HALF_CLOSE),
            token_grace: DEFAULT_TOKEN_GRACE,
            request: DEFAULT_REQUEST_TIMEOUT,
            write_stall: DEFAULT_WRITE_STALL,
        }
    }
}

/// Everything a gateway needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The namespace host name: what tokens' audiences name and what rendezvous addresses
    /// use when a request carries no `Host`.
    pub namespace: String,
    /// Other names of this namespace that a token's audience may use (the namespace itself
    /// always counts). A token for any other host is refused, whatever `Host` a client sends
    /// with it: the `Host` header is the client's to choose.
    pub aliases: Vec<String>,
    /// Plain `ws://` / `http://` port (meant for loopback and for TLS-terminating proxies).
    pub plain_addr: Option<SocketAddr>,
    /// Allow the plain port on a non-loopback address (only behind a TLS-terminating proxy:
    /// tokens cross it in clear text).
    pub plain_public: bool,
    /// Let senders on the net.tcp and relayed ports skip TLS on a non-loopback address.
    /// Off by default: there every session must take TLS (the `application/ssl-tls` upgrade,
    /// or the relayed handshake's TLS byte), since tokens travel inside it.
    pub insecure: bool,
    /// TLS `wss://` / `https://` port.
    pub tls_addr: Option<SocketAddr>,
    /// net.tcp port for WCF NetTcpBinding senders (`net.tcp://host:port/{path}`): framing
    /// as NetTcpBinding speaks it, with `SecurityMode.Transport`'s `application/ssl-tls`
    /// upgrade (the TLS port's certificate), required off loopback (see `insecure`).
    pub nettcp_addr: Option<SocketAddr>,
    /// Port for NetTcpRelayBinding clients in relayed mode (their `connect` + URI handshake,
    /// optional TLS, `RelayedConnect`, then net.tcp); Azure's is 9352.
    pub relayed_addr: Option<SocketAddr>,
    /// Certificate source for the TLS port.
    pub tls: TlsSetup,
    /// Namespace-wide rules.
    pub rules: Vec<Rule>,
    /// Configured paths.
    pub paths: Vec<PathConfig>,
    /// Accept any path a listener names (development); otherwise only configured paths exist.
    pub dynamic_paths: bool,
    /// gRPC ingress routes: calls to a service go to its path (the `ferry-path` metadata
    /// overrides them per call).
    pub grpc_routes: Vec<GrpcRoute>,
    /// Size limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Cluster mode: several gateway nodes sharing an etcd cluster. `None`: a single node,
    /// its registry in memory.
    pub cluster: Option<ClusterConfig>,
    /// The namespace's IP rules, applied to every data-plane connection as it is accepted.
    /// `None`: none declared here (everyone in, unless the management API sets some).
    pub network: Option<crate::network::NetworkRules>,
    /// Load balancers whose word on the client's address is taken.
    pub proxies: crate::network::TrustedProxies,
    /// The admin port (management API). `None`: no admin port.
    pub admin: Option<AdminConfig>,
    /// Where a single node keeps the entities the management API creates (an embedded,
    /// crash-safe store, `entities.redb`). `None`: in memory, lost when the process ends;
    /// the configuration file's entities are always there.
    pub data_dir: Option<PathBuf>,
}

/// The admin port.
#[derive(Clone)]
pub struct AdminConfig {
    /// Where it listens (HTTPS, with the TLS port's certificate).
    pub listen: SocketAddr,
    /// A bearer token that authorises every management call. A secret: never logged.
    /// Without it, only SAS tokens of namespace rules with `Manage` are accepted.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Default for [`ClusterConfig::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Default for [`ClusterConfig::prefix`].
pub const DEFAULT_CLUSTER_PREFIX: &str = "ferry/";

/// One gateway node of a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// This node's own public base URL (`wss://gw-2.relay.example.com:443`): listeners paired
    /// with a sender on this node open their rendezvous there, so its certificate must cover
    /// the name.
    /// Empty: the TLS port (else the plain one) under the namespace's name.
    pub advertise: String,
    /// Where this node serves the node-to-node API.
    pub rpc: SocketAddr,
    /// The address other nodes reach [`rpc`](Self::rpc) at, `http://host:port`; by default
    /// `rpc` as bound (port 0 resolved).
    pub rpc_advertise: Option<String>,
    /// A secret every node shares: node-to-node calls carry tokens signed with it.
    pub secret: String,
    /// The etcd cluster.
    pub etcd: EtcdConfig,
    /// How long this node's records outlive it: its etcd lease's time to live. A node that
    /// cannot renew its lease for this long fences itself.
    pub lease_ttl: Duration,
    /// The key prefix under which this cluster keeps its records, so that several clusters
    /// may share one etcd.
    pub prefix: String,
    /// How long a draining node lets its pairs finish.
    pub drain: Duration,
}

/// How a node reaches etcd.
#[derive(Clone, Default)]
pub struct EtcdConfig {
    /// Client URLs (`http://10.0.0.1:2379`, `https://…` for TLS).
    pub endpoints: Vec<String>,
    /// A PEM file with the CA that signed etcd's certificates (for `https` endpoints; the
    /// system's roots otherwise).
    pub ca: Option<PathBuf>,
    /// A user name and password, when etcd has authentication enabled. The password is a
    /// secret: never logged.
    pub user: Option<(String, String)>,
}

// The secrets stay out of every log line the configuration appears in.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node", &self.node)
            .field("advertise", &self.advertise)
            .field("rpc", &self.rpc)
            .field("rpc_advertise", &self.rpc_advertise)
            .field("etcd", &self.etcd)
            .field("lease_ttl", &self.lease_ttl)
            .field("prefix", &self.prefix)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ca", &self.ca)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .finish()
    }
}

impl ClusterConfig {
    /// A node named `node` of a cluster on `etcd`, with the defaults for the rest.
    pub fn new(
        node: impl Into<String>,
        advertise: impl Into<String>,
        rpc: SocketAddr,
        secret: impl Into<String>,
        etcd: Vec<String>,
    ) -> Self {
        Self {
            node: node.into(),
            advertise: advertise.into(),
            rpc,
            rpc_advertise: None,
            secret: secret.into(),
            etcd: EtcdConfig {
                endpoints: etcd,
                ..EtcdConfig::default()
            },
            lease_ttl: DEFAULT_LEASE_TTL,
            prefix: DEFAULT_CLUSTER_PREFIX.to_owned(),
            drain: DEFAULT_DRAIN,
        }
    }
}

/// Default for [`ClusterConfig::drain`].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// A gRPC ingress route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcRoute {
    /// The fully qualified service name, e.g. `inventory.v1.Stock`.
    pub service: String,
    /// The hybrid connection path its listener is on.
    pub path: String,
}

impl GrpcRoute {
    /// A route from `service` to `path`.
    pub fn new(service: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            path: path.into(),
        }
    }
}

impl Config {
    /// The hosts a token's audience may name: the namespace, then its aliases.
    pub fn audience_hosts(&self) -> Vec<&str> {
        std::iter::once(self.namespace.as_str())
            .chain(self.aliases.iter().map(String::as_str))
            .collect()
    }

    /// A production-shaped configuration with no ports, rules or paths yet.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            plain_addr: None,
            aliases: Vec::new(),
            plain_public: false,
            insecure: false,
            tls_addr: None,
            nettcp_addr: None,
            relayed_addr: None,
            tls: TlsSetup::Dev { ca_out: None },
            rules: Vec::new(),
            paths: Vec::new(),
            dynamic_paths: false,
            grpc_routes: Vec::new(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            cluster: None,
            admin: None,
            data_dir: None,
            network: None,
            proxies: crate::network::TrustedProxies::default(),
        }
    }

    /// The single-node development gateway: namespace `localhost`, plain and TLS ports on
    /// ephemeral loopback ports, a generated CA, any path accepted, and one Manage rule
    /// ([`DEV_RULE_NAME`]) with a random key. Every client of it is on this machine, one
    /// source, so the per-source connection and opening-rate limits are off (load tools and
    /// benchmarks would trip them); the other limits, authentication failures included, are
    /// production's.
    pub fn dev() -> Self {
        let mut config = Self::new("localhost");
        config.limits.max_connections_per_source = 0;
        config.limits.handshakes_per_source_per_second = 0;
        config.aliases = vec!["127.0.0.1".into(), "::1".into()];
        config.plain_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.tls_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.nettcp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.relayed_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.dynamic_paths = true;
        config.rules = vec![Rule::new(DEV_RULE_NAME, random_key(), Rights::MANAGE)];
        config
    }
}

/// A random 256-bit key, base64 like the keys Azure generates.
pub fn random_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
