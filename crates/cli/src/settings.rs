//! The gateway's TOML file, read through serde into a raw form (unknown keys refused) and
//! turned into [`ferry_gateway::Config`] in one place, with flags and `FERRY_*` variables
//! taking precedence over the file.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_gateway::network::{IpAction, IpNet, IpRule, MAX_IP_RULES, NetworkRules, TrustedProxies};
use ferry_gateway::{Config, GrpcRoute, PathConfig, TlsSetup};
use ferry_hc::{Rights, Rule};
use serde::Deserialize;

/// Dev gateway's plain port.
pub(crate) const DEV_PLAIN: &str = "127.0.0.1:9080";
/// Dev gateway's TLS port.
pub(crate) const DEV_TLS: &str = "127.0.0.1:9443";
/// Dev gateway's net.tcp port.
pub(crate) const DEV_NETTCP: &str = "127.0.0.1:9808";
/// Dev gateway's admin port (management API, status page, metrics).
pub(crate) const DEV_ADMIN: &str = "127.0.0.1:9444";
/// Dev gateway's NetTcpRelayBinding handshake port.
pub(crate) const DEV_RELAYED: &str = "127.0.0.1:9352";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    namespace: Option<String>,
    /// Other names of the namespace a token's audience may use.
    #[serde(default)]
    aliases: Vec<String>,
    dynamic_paths: Option<bool>,
    #[serde(default)]
    listen: RawListen,
    tls: Option<RawTls>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    paths: Vec<RawPath>,
    #[serde(default)]
    grpc: RawGrpc,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    cluster: Option<RawCluster>,
    #[serde(default)]
    admin: RawAdmin,
    /// Where the entity store lives (single node).
    data_dir: Option<PathBuf>,
    network: Option<RawNetwork>,
}

/// `[network]`: the namespace's IP rules, in order; the first whose range holds a client's
/// address decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    /// `Allow` or `Deny`, for an address no rule holds (Allow when only rules are given).
    default_action: Option<String>,
    #[serde(default)]
    rules: Vec<RawIpRule>,
    /// Load balancers whose word on the client's address is taken (PROXY protocol, or
    /// `X-Forwarded-For`).
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// Connections from `trusted_proxies` begin with a PROXY protocol header (v1 or v2).
    #[serde(default)]
    proxy_protocol: bool,
}

/// `[paths.network]`: one path's IP rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathNetwork {
    default_action: String,
    #[serde(default)]
    rules: Vec<RawIpRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpRule {
    /// `10.0.0.0/8`, `2001:db8::/32`, or one address.
    ip_mask: String,
    /// `Allow` or `Deny`.
    action: String,
}

/// `[admin]`: the management API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<SocketAddr>,
    /// A bearer token for every management call (a secret).
    token: Option<String>,
}

/// `[cluster]`: this node of a cluster sharing etcd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node: String,
    /// This node's public base URL; by default its TLS port under the namespace's name.
    #[serde(default)]
    advertise: String,
    /// The node-to-node address to bind.
    rpc: SocketAddr,
    /// How other nodes reach `rpc` (`http://host:port`), when it differs.
    rpc_advertise: Option<String>,
    /// The secret every node shares.
    secret: String,
    etcd: RawEtcd,
    /// Seconds.
    lease_ttl: Option<f64>,
    prefix: Option<String>,
    /// Seconds a draining node lets its pairs finish.
    drain: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Vec<String>,
    ca: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    plain: Option<SocketAddr>,
    /// Allow `plain` on a non-loopback address (behind a TLS-terminating proxy only).
    #[serde(default)]
    plain_public: bool,
    tls: Option<SocketAddr>,
    nettcp: Option<SocketAddr>,
    /// NetTcpRelayBinding (relayed mode) handshake port.
    relayed: Option<SocketAddr>,
    /// Let net.tcp and relayed senders skip TLS off loopback (tokens in clear text).
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Generate a development CA and certificate (no cert/key): never for a real deployment.
    #[serde(default)]
    dev: bool,
    /// Write the generated development CA here (when no cert/key are given).
    dev_ca_out: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    key: String,
    secondary_key: Option<String>,
    rights: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    name: String,
    #[serde(default)]
    anonymous_senders: bool,
    max_listeners: Option<usize>,
    #[serde(default)]
    fan_out: bool,
    #[serde(default)]
    rules: Vec<RawRule>,
    network: Option<RawPathNetwork>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    service: String,
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<usize>,
    max_handshakes: Option<NonZeroUsize>,
    max_listener_connections: Option<NonZeroUsize>,
    max_sender_connections: Option<NonZeroUsize>,
    max_connections_per_source: Option<u32>,
    handshakes_per_source_per_second: Option<u32>,
    auth_failures_per_source_per_minute: Option<u32>,
    max_message: Option<u64>,
    relay_buffer: Option<usize>,
    control_queue: Option<NonZeroUsize>,
    max_request_body: Option<usize>,
    max_response_body: Option<u64>,
    max_grpc_message: Option<usize>,
    max_nettcp_first_envelope: Option<usize>,
    max_nettcp_first_headers: Option<usize>,
}

/// Seconds, fractional allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    handshake: Option<f64>,
    rendezvous: Option<f64>,
    keepalive: Option<f64>,
    close: Option<f64>,
    idle: Option<f64>,
    half_close: Option<f64>,
    token_grace: Option<f64>,
    request: Option<f64>,
    write_stall: Option<f64>,
}

/// What flags and environment say; each wins over the file.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub(crate) namespace: Option<String>,
    pub(crate) plain: Option<SocketAddr>,
    pub(crate) tls: Option<SocketAddr>,
    pub(crate) nettcp: Option<SocketAddr>,
    pub(crate) relayed: Option<SocketAddr>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) dev_ca_out: Option<PathBuf>,
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) admin_token: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
}

/// Reads and parses a TOML file.
pub(crate) fn read(path: &Path) -> anyhow::Result<RawConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
}

fn cluster(raw: RawCluster) -> anyhow::Result<ferry_gateway::ClusterConfig> {
    if raw.node.is_empty() || raw.node.contains('/') {
        bail!("cluster.node must be a non-empty name without '/'");
    }
    if raw.secret.len() < 16 {
        bail!("cluster.secret must be at least 16 characters (every node shares it)");
    }
    if raw.etcd.endpoints.is_empty() {
        bail!("cluster.etcd.endpoints lists no etcd member");
    }
    let mut c = ferry_gateway::ClusterConfig::new(
        raw.node,
        raw.advertise,
        raw.rpc,
        raw.secret,
        raw.etcd.endpoints,
    );
    c.rpc_advertise = raw.rpc_advertise;
    c.etcd.ca = raw.etcd.ca;
    c.etcd.user = match (raw.etcd.user, raw.etcd.password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => bail!("cluster.etcd needs both user and password, or neither"),
    };
    if let Some(ttl) = raw.lease_ttl {
        let ttl = secs("lease_ttl", ttl)?;
        if ttl < Duration::from_secs(2) {
            bail!("cluster.lease_ttl must be at least 2 seconds");
        }
        c.lease_ttl = ttl;
    }
    if let Some(prefix) = raw.prefix {
        c.prefix = prefix;
    }
    if let Some(drain) = raw.drain {
        c.drain = secs("drain", drain)?;
    }
    Ok(c)
}

fn network_rules(default_action: &str, rules: &[RawIpRule]) -> anyhow::Result<NetworkRules> {
    let action = |s: &str| {
        IpAction::parse(s).with_context(|| format!("network: {s:?} is neither Allow nor Deny"))
    };
    if rules.len() > MAX_IP_RULES {
        bail!("network: at most {MAX_IP_RULES} rules");
    }
    Ok(NetworkRules {
        default_action: action(default_action)?,
        rules: rules
            .iter()
            .map(|r| {
                Ok(IpRule {
                    net: IpNet::parse(&r.ip_mask).context("network")?,
                    action: action(&r.action)?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("timeouts.{name} must be a non-negative number of seconds"))
}

fn rule(raw: RawRule) -> anyhow::Result<Rule> {
    let mut rights = Rights::NONE;
    for r in &raw.rights {
        rights = rights
            | Rights::parse(r).with_context(|| {
                format!(
                    "rule {}: unknown right {r:?} (Listen, Send, Manage)",
                    raw.name
                )
            })?;
    }
    if raw.key.is_empty() {
        bail!("rule {} has an empty key", raw.name);
    }
    let rule = Rule::new(raw.name, raw.key, rights);
    Ok(match raw.secondary_key {
        Some(k) => rule.with_secondary_key(k),
        None => rule,
    })
}

/// The one conversion from file + overrides to the typed configuration. With no file, the
/// development gateway: loopback ports, generated CA, any path, a random Manage key.
pub(crate) fn build(file: Option<RawConfig>, o: Overrides) -> anyhow::Result<Config> {
    let dev = file.is_none();
    let raw = file.unwrap_or_default();
    let mut config = if dev {
        let mut c = Config::dev();
        c.plain_addr = Some(DEV_PLAIN.parse().expect("constant address"));
        c.tls_addr = Some(DEV_TLS.parse().expect("constant address"));
        c.nettcp_addr = Some(DEV_NETTCP.parse().expect("constant address"));
        c.relayed_addr = Some(DEV_RELAYED.parse().expect("constant address"));
        c
    } else {
        let namespace = raw
            .namespace
            .clone()
            .or_else(|| o.namespace.clone())
            .context("the configuration needs a namespace")?;
        Config::new(namespace)
    };
    if let Some(ns) = o.namespace.or(raw.namespace) {
        config.namespace = ns;
    }
    if !raw.aliases.is_empty() {
        config.aliases = raw.aliases;
    }
    if let Some(d) = raw.dynamic_paths {
        config.dynamic_paths = d;
    }
    if let Some(a) = o.plain.or(raw.listen.plain) {
        config.plain_addr = Some(a);
    }
    config.plain_public = raw.listen.plain_public;
    config.insecure = raw.listen.insecure;
    if let Some(a) = o.tls.or(raw.listen.tls) {
        config.tls_addr = Some(a);
    }
    if let Some(a) = o.nettcp.or(raw.listen.nettcp) {
        config.nettcp_addr = Some(a);
    }
    if let Some(a) = o.relayed.or(raw.listen.relayed) {
        config.relayed_addr = Some(a);
    }
    let dev_admin = dev.then(|| DEV_ADMIN.parse().expect("constant address"));
    if let Some(listen) = o.admin.or(raw.admin.listen).or(dev_admin) {
        let token = o.admin_token.or(raw.admin.token);
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("admin.token must be at least 16 characters");
        }
        config.admin = Some(ferry_gateway::AdminConfig { listen, token });
    }
    config.data_dir = o.data_dir.or(raw.data_dir);
    if let Some(network) = raw.network {
        // The rule set is the namespace's (the API's networkRuleSets); a section that only
        // names trusted proxies leaves it to the API.
        if network.default_action.is_some() || !network.rules.is_empty() {
            let default_action = network.default_action.as_deref().unwrap_or("Allow");
            config.network = Some(network_rules(default_action, &network.rules)?);
        }
        config.proxies = TrustedProxies {
            nets: network
                .trusted_proxies
                .iter()
                .map(|n| IpNet::parse(n).context("network.trusted_proxies"))
                .collect::<anyhow::Result<_>>()?,
            proxy_protocol: network.proxy_protocol,
        };
        if config.proxies.proxy_protocol && config.proxies.nets.is_empty() {
            bail!(
                "network.proxy_protocol needs trusted_proxies: the addresses the header may come from"
            );
        }
    }
    let (file_cert, file_key, file_ca, file_dev) = match raw.tls {
        Some(t) => (t.cert, t.key, t.dev_ca_out, t.dev),
        None => (None, None, None, false),
    };
    // The TLS port needs a certificate, and so do net.tcp and relayed ports off loopback
    // (their senders must take TLS there unless `insecure`).
    let public = |a: Option<SocketAddr>| a.is_some_and(|a| !a.ip().is_loopback());
    let wants_tls = config.tls_addr.is_some()
        || (!config.insecure && (public(config.nettcp_addr) || public(config.relayed_addr)));
    config.tls = match (o.tls_cert.or(file_cert), o.tls_key.or(file_key)) {
        (Some(cert), Some(key)) => TlsSetup::Files { cert, key },
        (None, None) => {
            let ca_out = o.dev_ca_out.or(file_ca);
            // A configuration file's TLS ports get a generated certificate only when it asks
            // for one: a forgotten cert/key must not quietly become a development CA.
            if !dev && wants_tls && !file_dev && ca_out.is_none() {
                bail!(
                    "the TLS, net.tcp and relayed ports need a certificate: set [tls] cert and key (or dev = true for a generated development CA)"
                );
            }
            TlsSetup::Dev { ca_out }
        }
        _ => bail!("a TLS certificate needs both cert and key"),
    };
    if !raw.rules.is_empty() {
        config.rules = raw
            .rules
            .into_iter()
            .map(rule)
            .collect::<anyhow::Result<_>>()?;
    }
    for p in raw.paths {
        let mut path = PathConfig::new(p.name.trim_matches('/'));
        path.anonymous_senders = p.anonymous_senders;
        path.fan_out = p.fan_out;
        if let Some(m) = p.max_listeners {
            if !(1..=ferry_hc::MAX_LISTENERS_PER_PATH).contains(&m) {
                bail!(
                    "path {}: max_listeners must be 1 to {}",
                    p.name,
                    ferry_hc::MAX_LISTENERS_PER_PATH
                );
            }
            path.max_listeners = m;
        }
        path.rules = p
            .rules
            .into_iter()
            .map(rule)
            .collect::<anyhow::Result<_>>()?;
        if let Some(n) = p.network {
            path.network = Some(
                network_rules(&n.default_action, &n.rules)
                    .with_context(|| format!("path {}", p.name))?,
            );
        }
        config.paths.push(path);
    }
    for r in raw.grpc.routes {
        if r.service.is_empty() || r.service.contains('/') || r.path.trim_matches('/').is_empty() {
            bail!(
                "grpc route {} → {}: give a package.Service name and a path",
                r.service,
                r.path
            );
        }
        config
            .grpc_routes
            .push(GrpcRoute::new(r.service, r.path.trim_matches('/')));
    }
    let l = raw.limits;
    let limits = &mut config.limits;
    if let Some(v) = l.max_header_bytes {
        limits.max_header_bytes = v;
    }
    for (value, slot) in [
        (l.max_handshakes, &mut limits.max_handshakes),
        (
            l.max_listener_connections,
            &mut limits.max_listener_connections,
        ),
        (l.max_sender_connections, &mut limits.max_sender_connections),
    ] {
        if let Some(v) = value {
            *slot = v;
        }
    }
    for (value, slot) in [
        (
            l.max_connections_per_source,
            &mut limits.max_connections_per_source,
        ),
        (
            l.handshakes_per_source_per_second,
            &mut limits.handshakes_per_source_per_second,
        ),
        (
            l.auth_failures_per_source_per_minute,
            &mut limits.auth_failures_per_source_per_minute,
        ),
    ] {
        if let Some(v) = value {
            *slot = v;
        }
    }
    if let Some(v) = l.max_message {
        limits.max_message = v;
    }
    if let Some(v) = l.relay_buffer {
        limits.relay_buffer = v.max(1024);
    }
    if let Some(v) = l.control_queue {
        limits.control_queue = v;
    }
    if let Some(v) = l.max_request_body {
        limits.max_request_body = v;
    }
    if let Some(v) = l.max_response_body {
        limits.max_response_body = v;
    }
    if let Some(v) = l.max_grpc_message {
        limits.max_grpc_message = v;
    }
    if let Some(v) = l.max_nettcp_first_envelope {
        limits.max_nettcp_first_envelope = v;
    }
    if let Some(v) = l.max_nettcp_first_headers {
        limits.max_nettcp_first_headers = v;
    }
    let t = raw.timeouts;
    let timeouts = &mut config.timeouts;
    for (name, value, slot) in [
        ("handshake", t.handshake, &mut timeouts.handshake),
        ("rendezvous", t.rendezvous, &mut timeouts.rendezvous),
        ("keepalive", t.keepalive, &mut timeouts.keepalive),
        ("close", t.close, &mut timeouts.close),
        ("token_grace", t.token_grace, &mut timeouts.token_grace),
        ("request", t.request, &mut timeouts.request),
        ("write_stall", t.write_stall, &mut timeouts.write_stall),
    ] {
        if let Some(v) = value {
            *slot = secs(name, v)?;
        }
    }
    // Zero turns these off.
    for (name, value, slot) in [
        ("idle", t.idle, &mut timeouts.idle),
        ("half_close", t.half_close, &mut timeouts.half_close),
    ] {
        if let Some(v) = value {
            *slot = (v != 0.0).then(|| secs(name, v)).transpose()?;
        }
    }
    if let Some(c) = raw.cluster {
        config.cluster = Some(cluster(c)?);
    }
    if config.plain_addr.is_none() && config.tls_addr.is_none() {
        bail!("no listen address: set listen.plain or listen.tls");
    }
    // Without a rule nobody could listen, unless the management API, reached with its admin
    // token, is there to make rules.
    let api_makes_rules = config.admin.as_ref().is_some_and(|a| a.token.is_some());
    if config.rules.is_empty()
        && config.paths.iter().all(|p| p.rules.is_empty())
        && !api_makes_rules
    {
        bail!(
            "no rules: nobody could listen; add a [[rules]] entry (or an [admin] token to make them through the management API)"
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_rules_read_in_order_and_mistakes_are_refused() {
        let build_with = |network: &str| -> anyhow::Result<Config> {
            let raw: RawConfig = toml::from_str(&format!(
                "namespace = \"a\"\n[listen]\nplain = \"127.0.0.1:1\"\n[[rules]]\nname = \"r\"\nkey = \"k\"\nrights = [\"Listen\"]\n{network}"
            ))?;
            build(Some(raw), Overrides::default())
        };
        let c = build_with(
            "[network]\ndefault_action = \"Deny\"\n[[network.rules]]\nip_mask = \"10.0.0.5\"\naction = \"Deny\"\n[[network.rules]]\nip_mask = \"10.0.0.0/8\"\naction = \"allow\"\n",
        )
        .unwrap();
        let rules = c.network.unwrap();
        assert!(!rules.allows("10.0.0.5".parse().unwrap()));
        assert!(rules.allows("10.1.0.5".parse().unwrap()));
        assert!(!rules.allows("192.0.2.1".parse().unwrap()));
        assert!(build_with("").unwrap().network.is_none());
        assert!(build_with("[network]\ndefault_action = \"Maybe\"\n").is_err());
        assert!(
            build_with("[network]\ndefault_action = \"Deny\"\n[[network.rules]]\nip_mask = \"10.0.0.0/40\"\naction = \"Allow\"\n")
                .is_err()
        );
        // Trusted proxies alone leave the rule set to the API.
        let c =
            build_with("[network]\ntrusted_proxies = [\"10.1.0.0/16\"]\nproxy_protocol = true\n")
                .unwrap();
        assert!(c.network.is_none());
        assert!(c.proxies.proxy_protocol);
        assert!(c.proxies.trusts("10.1.2.3".parse().unwrap()));
        assert!(!c.proxies.trusts("10.2.0.1".parse().unwrap()));
        assert!(build_with("[network]\nproxy_protocol = true\n").is_err());
        assert!(build_with("[network]\ntrusted_proxies = [\"lb\"]\n").is_err());
        // A path's own rules.
        let c = build_with(
            "[[paths]]\nname = \"p\"\n[paths.network]\ndefault_action = \"Deny\"\n[[paths.network.rules]]\nip_mask = \"192.0.2.0/24\"\naction = \"Allow\"\n",
        )
        .unwrap();
        let rules = c.paths[0].network.as_ref().unwrap();
        assert!(rules.allows("192.0.2.9".parse().unwrap()));
        assert!(!rules.allows("198.51.100.1".parse().unwrap()));
        assert!(
            build_with("[[paths]]\nname = \"p\"\n[paths.network]\ntrusted_proxies = []\n").is_err()
        );
    }

    #[test]
    fn full_file_converts() {
        let raw: RawConfig = toml::from_str(
            r#"
            namespace = "relay.example"
            [listen]
            tls = "0.0.0.0:443"
            [tls]
            cert = "/c.pem"
            key = "/k.pem"
            [[rules]]
            name = "root"
            key = "k1"
            secondary_key = "k2"
            rights = ["Manage"]
            [[paths]]
            name = "/erp/orders/"
            anonymous_senders = true
            max_listeners = 3
            [[paths.rules]]
            name = "send"
            key = "s"
            rights = ["send", "Listen"]
            [[grpc.routes]]
            service = "inventory.v1.Stock"
            path = "/erp/orders/"
            [limits]
            max_message = 1024
            max_grpc_message = 65536
            [timeouts]
            rendezvous = 2.5
            idle = 60
            half_close = 0
            write_stall = 1.5
            "#,
        )
        .unwrap();
        let c = build(Some(raw), Overrides::default()).unwrap();
        assert_eq!(
            c.grpc_routes,
            [GrpcRoute::new("inventory.v1.Stock", "erp/orders")]
        );
        assert_eq!(c.limits.max_grpc_message, 65536);
        assert_eq!(c.namespace, "relay.example");
        assert!(!c.dynamic_paths);
        assert_eq!(c.plain_addr, None);
        assert!(matches!(c.tls, TlsSetup::Files { .. }));
        assert_eq!(c.paths[0].name, "erp/orders");
        assert!(c.paths[0].anonymous_senders);
        assert_eq!(c.paths[0].max_listeners, 3);
        assert_eq!(c.limits.max_message, 1024);
        assert_eq!(c.timeouts.rendezvous, Duration::from_millis(2500));
        assert_eq!(c.timeouts.idle, Some(Duration::from_secs(60)));
        assert_eq!(c.timeouts.half_close, None, "0 turns it off");
        assert_eq!(c.timeouts.write_stall, Duration::from_millis(1500));
    }

    #[test]
    fn a_cluster_section_makes_a_cluster_node() {
        let file = |cluster: &str| -> anyhow::Result<Config> {
            let raw: RawConfig = toml::from_str(&format!(
                "namespace = \"a\"\n[listen]\nplain = \"127.0.0.1:1\"\n[[rules]]\nname = \"r\"\nkey = \"k\"\nrights = [\"Listen\"]\n{cluster}"
            ))?;
            build(Some(raw), Overrides::default())
        };
        let c = file(
            "[cluster]\nnode = \"gw-2\"\nadvertise = \"wss://gw-2.relay.example:443\"\nrpc = \"10.0.0.2:7000\"\nsecret = \"0123456789abcdef0123\"\nlease_ttl = 5\n[cluster.etcd]\nendpoints = [\"http://10.0.0.9:2379\"]\nuser = \"ferry\"\npassword = \"pw\"\n",
        )
        .unwrap();
        let cluster = c.cluster.expect("cluster mode");
        assert_eq!(cluster.node, "gw-2");
        assert_eq!(cluster.advertise, "wss://gw-2.relay.example:443");
        assert_eq!(cluster.lease_ttl, Duration::from_secs(5));
        assert_eq!(cluster.prefix, "ferry/");
        assert_eq!(cluster.etcd.endpoints, ["http://10.0.0.9:2379"]);
        let shown = format!("{cluster:?}");
        assert!(
            !shown.contains("0123456789abcdef") && !shown.contains("\"pw\""),
            "secrets stay out of Debug: {shown}"
        );
        assert!(file("").unwrap().cluster.is_none(), "no section: one node");
        let short = "[cluster]\nnode = \"n\"\nrpc = \"127.0.0.1:1\"\nsecret = \"short\"\n[cluster.etcd]\nendpoints = [\"http://e:2379\"]\n";
        assert!(file(short).is_err(), "a short secret is refused");
        let half = "[cluster]\nnode = \"n\"\nrpc = \"127.0.0.1:1\"\nsecret = \"0123456789abcdef0\"\n[cluster.etcd]\nendpoints = [\"http://e:2379\"]\nuser = \"u\"\n";
        assert!(file(half).is_err(), "a user without a password is refused");
    }

    #[test]
    fn overrides_win_and_mistakes_are_reported() {
        let raw: RawConfig =
            toml::from_str("namespace = \"a\"\n[listen]\nplain = \"127.0.0.1:1\"\n[[rules]]\nname = \"r\"\nkey = \"k\"\nrights = [\"Listen\"]\n")
                .unwrap();
        let o = Overrides {
            namespace: Some("b".into()),
            plain: Some("127.0.0.1:2".parse().unwrap()),
            ..Overrides::default()
        };
        let c = build(Some(raw), o).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.plain_addr.unwrap().port()),
            ("b", 2)
        );
        assert!(
            toml::from_str::<RawConfig>("namspace = \"typo\"").is_err(),
            "unknown keys refused"
        );
        let bad_right: RawConfig =
            toml::from_str("namespace = \"a\"\n[listen]\nplain = \"127.0.0.1:1\"\n[[rules]]\nname = \"r\"\nkey = \"k\"\nrights = [\"Fly\"]\n").unwrap();
        assert!(build(Some(bad_right), Overrides::default()).is_err());
        let no_rules: RawConfig =
            toml::from_str("namespace = \"a\"\n[listen]\nplain = \"127.0.0.1:1\"\n").unwrap();
        assert!(build(Some(no_rules), Overrides::default()).is_err());
    }

    #[test]
    fn tls_ports_need_a_certificate_or_an_explicit_dev_ca() {
        let file = |tls: &str| -> RawConfig {
            toml::from_str(&format!(
                "namespace = \"a\"\n[listen]\ntls = \"0.0.0.0:443\"\n{tls}[[rules]]\nname = \"r\"\nkey = \"k\"\nrights = [\"Listen\"]\n"
            ))
            .unwrap()
        };
        let err = build(Some(file("")), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("[tls] cert and key"), "{err}");
        let c = build(Some(file("[tls]\ndev = true\n")), Overrides::default()).unwrap();
        assert!(matches!(c.tls, TlsSetup::Dev { .. }));
        // A loopback net.tcp port alone needs none; off loopback it does, unless insecure.
        let nettcp = |addr: &str, insecure: bool| -> RawConfig {
            toml::from_str(&format!(
                "namespace = \"a\"\n[listen]\nplain = \"127.0.0.1:1\"\nnettcp = \"{addr}\"\ninsecure = {insecure}\n[[rules]]\nname = \"r\"\nkey = \"k\"\nrights = [\"Listen\"]\n"
            ))
            .unwrap()
        };
        assert!(build(Some(nettcp("127.0.0.1:9350", false)), Overrides::default()).is_ok());
        assert!(build(Some(nettcp("0.0.0.0:9350", false)), Overrides::default()).is_err());
        let c = build(Some(nettcp("0.0.0.0:9350", true)), Overrides::default()).unwrap();
        assert!(c.insecure);
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ferry.toml");
        let c = build(Some(read(&path).unwrap()), Overrides::default()).unwrap();
        assert_eq!(c.namespace, "relay.example.com");
        assert_eq!(c.paths.len(), 3);
        assert!(c.paths[2].fan_out);
        assert_eq!(c.nettcp_addr, Some("0.0.0.0:9350".parse().unwrap()));
        // The shipped defaults, written out: idle and half-closed relays end, and each
        // source has its share.
        assert_eq!(c.timeouts.idle, Some(Duration::from_secs(600)));
        assert_eq!(c.timeouts.half_close, Some(Duration::from_secs(30)));
        assert_eq!(c.limits.max_connections_per_source, 512);
        assert_eq!(c.limits.max_listener_connections.get(), 10_000);
    }

    #[test]
    fn no_file_is_the_dev_gateway() {
        let c = build(None, Overrides::default()).unwrap();
        assert!(c.dynamic_paths);
        assert_eq!(c.plain_addr, Some(DEV_PLAIN.parse().unwrap()));
        assert_eq!(c.rules.len(), 1);
    }
}
