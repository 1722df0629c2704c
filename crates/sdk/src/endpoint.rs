//! Where a listener or sender connects: the gateway's base URL, the hybrid connection path,
//! credentials, TLS trust and timeouts.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;

use crate::token::TokenProvider;

/// Default for [`Endpoint::connect_timeout`]: TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Endpoint::handshake_timeout`]: TLS plus the WebSocket upgrade. A sender's
/// upgrade is answered only once a listener took the connection, which the gateway allows
/// 30 s for (spec §5.2), so this is longer than that.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Endpoint::keep_alive`]: how often a listener pings its control channel.
/// Well under Azure's ~4 min idle cut-off (spec §3, "Ping / keep-alive") and short enough to
/// notice a dead gateway within a minute.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Default for [`Endpoint::max_message_size`]: the largest message a stream accepts (16 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// A base URL or path that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The base URL does not parse.
    #[error("base url {0:?} does not parse")]
    BadUrl(String),
    /// The scheme is not `ws`, `wss`, `http`, `https` or `sb`.
    #[error("scheme {0:?} is not ws, wss, http, https or sb")]
    BadScheme(String),
    /// The base URL has no host.
    #[error("base url names no host")]
    NoHost,
    /// The base URL carries a path, query or fragment; the path goes in its own argument.
    #[error("base url must be scheme://host[:port] only")]
    ExtraParts,
    /// The hybrid connection path is empty.
    #[error("the hybrid connection path is empty")]
    EmptyPath,
}

/// Where to connect, and how.
///
/// Clone it freely: the token provider and TLS configuration are shared.
#[derive(Clone, Debug)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Every gateway node serving the namespace, this one first; a listener moves among
    /// them when one fails.
    gateways: Arc<[Gateway]>,
    path: String,
    token: Option<Arc<dyn TokenProvider>>,
    tls_config: Option<Arc<ClientConfig>>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    keep_alive: Duration,
    max_message_size: usize,
    raw_streams: bool,
}

impl Endpoint {
    /// An endpoint for hybrid connection `path` on the gateway at `base`: `wss://host[:port]`,
    /// or `ws://host[:port]` for a plain loopback gateway. `https`/`http` read as `wss`/`ws`,
    /// and `sb://` (Azure connection strings) as `wss` on port 443. No token provider is set:
    /// add one with [`Self::set_token_provider`] unless the path allows anonymous senders.
    ///
    /// # Errors
    /// See [`EndpointError`].
    pub fn new(base: &str, path: &str) -> Result<Self, EndpointError> {
        let Gateway { tls, host, port } = Gateway::parse(base)?;
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Err(EndpointError::EmptyPath);
        }
        Ok(Self {
            tls,
            gateways: Arc::from([Gateway {
                tls,
                host: host.clone(),
                port,
            }]),
            host,
            port,
            path: path.to_owned(),
            token: None,
            tls_config: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            raw_streams: false,
        })
    }

    /// An endpoint for `path` on a cluster of gateway nodes, `bases` naming each: a listener
    /// starts on one of them at random and moves to the next when it loses its node or is
    /// refused by it (a node cut off from the cluster, or draining), with jittered backoff.
    /// One name that resolves to several addresses works too: every address is tried.
    ///
    /// # Errors
    /// See [`EndpointError`]; an empty `bases` is [`EndpointError::NoHost`].
    pub fn cluster(bases: &[&str], path: &str) -> Result<Self, EndpointError> {
        let (first, _) = bases.split_first().ok_or(EndpointError::NoHost)?;
        let mut endpoint = Self::new(first, path)?;
        let gateways = bases
            .iter()
            .map(|b| Gateway::parse(b))
            .collect::<Result<Vec<_>, _>>()?;
        endpoint.gateways = gateways.into();
        Ok(endpoint.on_gateway(rand::random::<u32>() as usize))
    }

    /// How many gateway nodes the endpoint names.
    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// This endpoint on its `n`th gateway node (counting round).
    pub fn on_gateway(&self, n: usize) -> Self {
        let gateway = &self.gateways[n % self.gateways.len()];
        let mut endpoint = self.clone();
        endpoint.tls = gateway.tls;
        endpoint.host.clone_from(&gateway.host);
        endpoint.port = gateway.port;
        endpoint
    }

    /// The number of the gateway node this endpoint is on.
    pub fn gateway_index(&self) -> usize {
        self.gateways
            .iter()
            .position(|g| g.tls == self.tls && g.host == self.host && g.port == self.port)
            .unwrap_or(0)
    }

    /// Sets the token provider (default: none, an anonymous sender).
    pub fn set_token_provider(&mut self, provider: impl TokenProvider + 'static) -> &mut Self {
        self.token = Some(Arc::new(provider));
        self
    }

    /// Sets the TLS client configuration (default: the operating system's roots, ALPN
    /// `http/1.1`). Tests pass one trusting the gateway's development CA.
    pub fn set_tls_config(&mut self, config: Arc<ClientConfig>) -> &mut Self {
        self.tls_config = Some(config);
        self
    }

    /// Sets the TCP connect timeout (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn set_connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the TLS + WebSocket upgrade timeout (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn set_handshake_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the listener's ping interval (default [`DEFAULT_KEEP_ALIVE`]); a control channel
    /// that answers nothing for two intervals is dropped and reconnected.
    pub fn set_keep_alive(&mut self, interval: Duration) -> &mut Self {
        self.keep_alive = interval.max(Duration::from_millis(10));
        self
    }

    /// Sets the largest message accepted on streams (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn set_max_message_size(&mut self, size: usize) -> &mut Self {
        self.max_message_size = size.max(1024);
        self
    }

    /// Asks for raw streams (default off): a connection this endpoint opens or accepts
    /// drops WebSocket framing when the gateway and the other end are Ferry's and agree
    /// (see [`crate::HybridStream::is_raw`]), and stays a WebSocket otherwise. For callers
    /// that use streams as bytes only (`AsyncRead + AsyncWrite`): a raw stream has no
    /// messages and no close codes.
    pub fn set_raw_streams(&mut self, raw: bool) -> &mut Self {
        self.raw_streams = raw;
        self
    }

    /// The base URL, `wss://host:port` or `ws://host:port`.
    pub fn base(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "wss" } else { "ws" },
            self.host,
            self.port
        )
    }

    /// The gateway host name (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The hybrid connection path, without leading or trailing `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The resource URI tokens are minted for: `http://{host}/{path}`, like the .NET SDK
    /// (port dropped; any gateway normalises scheme and port, spec §2).
    pub fn resource_uri(&self) -> String {
        format!("http://{}/{}", self.host, self.path)
    }

    /// The token provider, if any.
    pub fn token_provider(&self) -> Option<&Arc<dyn TokenProvider>> {
        self.token.as_ref()
    }

    /// The TCP connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The TLS + WebSocket upgrade timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The listener's ping interval.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The largest message accepted on streams.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Whether streams may be raw ([`Self::set_raw_streams`]).
    pub fn raw_streams(&self) -> bool {
        self.raw_streams
    }

    /// The TLS configuration in use: the one set, or the shared default.
    pub(crate) fn tls_config(&self) -> Arc<ClientConfig> {
        self.tls_config.clone().unwrap_or_else(default_tls)
    }
}

/// One gateway node's address.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gateway {
    tls: bool,
    host: String,
    port: u16,
}

impl Gateway {
    fn parse(base: &str) -> Result<Self, EndpointError> {
        let url = url::Url::parse(base).map_err(|_| EndpointError::BadUrl(base.to_owned()))?;
        let tls = match url.scheme() {
            "wss" | "https" | "sb" => true,
            "ws" | "http" => false,
            other => return Err(EndpointError::BadScheme(other.to_owned())),
        };
        let host = url.host_str().ok_or(EndpointError::NoHost)?.to_owned();
        if (url.path() != "/" && !url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(EndpointError::ExtraParts);
        }
        let port = url.port().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }
}

/// The operating system's roots, loaded once per process (loading them reads files).
fn default_tls() -> Arc<ClientConfig> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            ferry_net::tls::client_config(
                ferry_net::tls::native_roots(),
                &[ferry_net::tls::ALPN_HTTP11],
            )
            // With the built-in ring provider and safe defaults rustls always accepts this.
            .expect("default client config")
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bases() {
        let e = Endpoint::new("wss://ns.example:8443", "/a/b/").unwrap();
        assert_eq!(e.base(), "wss://ns.example:8443");
        assert_eq!(e.path(), "a/b");
        assert_eq!(e.resource_uri(), "http://ns.example/a/b");
        assert_eq!(
            Endpoint::new("ws://127.0.0.1", "p").unwrap().base(),
            "ws://127.0.0.1:80"
        );
        assert_eq!(
            Endpoint::new("sb://ns.servicebus.windows.net/", "p")
                .unwrap()
                .base(),
            "wss://ns.servicebus.windows.net:443"
        );
        assert_eq!(
            Endpoint::new("ftp://x", "p").unwrap_err(),
            EndpointError::BadScheme("ftp".into())
        );
        assert_eq!(
            Endpoint::new("wss://x/y", "p").unwrap_err(),
            EndpointError::ExtraParts
        );
        assert_eq!(
            Endpoint::new("wss://x", "/").unwrap_err(),
            EndpointError::EmptyPath
        );
        assert!(matches!(
            Endpoint::new("nope", "p"),
            Err(EndpointError::BadUrl(_))
        ));
    }

    #[test]
    fn a_cluster_endpoint_goes_round_its_nodes() {
        let e = Endpoint::cluster(&["wss://gw-1.example", "wss://gw-2.example:8443"], "p").unwrap();
        assert_eq!(e.gateway_count(), 2);
        let at = e.gateway_index();
        let next = e.on_gateway(at + 1);
        assert_ne!(next.base(), e.base());
        assert_eq!(next.on_gateway(next.gateway_index() + 1).base(), e.base());
        let bases: std::collections::HashSet<String> =
            (0..2).map(|n| e.on_gateway(n).base()).collect();
        assert!(
            bases.contains("wss://gw-1.example:443") && bases.contains("wss://gw-2.example:8443")
        );
        assert_eq!(next.resource_uri(), format!("http://{}/p", next.host()));
        assert_eq!(
            Endpoint::cluster(&[], "p").unwrap_err(),
            EndpointError::NoHost
        );
    }
}
