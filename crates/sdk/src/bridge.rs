//! The port bridge (the "hybrid relay pattern"): TCP in on one side, TCP out on the other,
//! a hybrid connection path in between.
//!
//! ```text
//!  TCP client ──► local side (ADDR) ══ sender on PATH ══► gateway ══► remote side (listener on PATH) ──► HOST:PORT
//!                 Ferry-Port: db ────────────────────────────────────► ports["db"] = db.internal:5432
//! ```
//!
//! Several logical ports share one path: the local side names its port in the
//! [`PORT_HEADER`] connect header and the remote side looks the name up in an allow-list;
//! an unknown name is rejected with 403, a missing one goes to the default target if there
//! is one. Bytes are copied both ways through fixed buffers (so memory per connection is
//! bounded and backpressure reaches both TCP windows), half-close is passed on, and every
//! socket has `TCP_NODELAY`.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_net::conn::Conn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::listener::{IncomingConnection, Listener, ListenerError};
use crate::sender::connect;
use crate::stream::HybridStream;

/// The connect header naming the logical port.
pub const PORT_HEADER: &str = "Ferry-Port";
/// Default copy buffer per direction: 64 KiB, large enough for bulk throughput (one
/// WebSocket message per buffer) and small enough for thousands of connections.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
/// Default limit on connections a bridge side carries at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default timeout for the remote side's TCP connect to a target.
pub const DEFAULT_TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause between failed TCP accepts (the process may be out of descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A bridge side that cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The local TCP address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The remote side's listener could not connect.
    #[error("cannot open the listener")]
    Listener(#[source] ConnectError),
    /// The gateway refused the remote side's listener for good.
    #[error("the gateway refused the listener")]
    Refused(#[source] ListenerError),
}

/// The local side: every TCP connection accepted on `listen` becomes a sender on the
/// endpoint's path.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Where to accept TCP connections.
    pub listen: SocketAddr,
    /// The gateway and path to send to.
    pub endpoint: Endpoint,
    /// The logical port to ask for (sent as [`PORT_HEADER`]); `None` uses the remote side's
    /// default target.
    pub port_name: Option<String>,
    /// Copy buffer per direction.
    pub buffer_size: usize,
    /// Connections carried at once; further TCP connections wait in the accept backlog.
    pub max_connections: usize,
}

impl LocalConfig {
    /// A configuration with the defaults. The bridge carries bytes only, so the endpoint
    /// asks for raw streams ([`Endpoint::set_raw_streams`]).
    pub fn new(listen: SocketAddr, mut endpoint: Endpoint) -> Self {
        endpoint.set_raw_streams(true);
        Self {
            listen,
            endpoint,
            port_name: None,
            buffer_size: DEFAULT_BUFFER_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A bound local side (bind first to learn the port when `listen` has port 0).
#[derive(Debug)]
pub struct LocalBridge {
    listener: TcpListener,
    config: LocalConfig,
}

impl LocalBridge {
    /// Binds the TCP listener.
    ///
    /// # Errors
    /// [`BridgeError::Bind`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn bind(config: LocalConfig) -> Result<Self, BridgeError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BridgeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self { listener, config })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket cannot say (it can, once bound).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and bridges connections until `cancel` fires, then closes the open ones and
    /// returns.
    ///
    /// # Errors
    /// None so far: per-connection failures are logged, accept errors are retried.
    ///
    /// # Cancel safety
    /// Dropping the future drops every bridged connection; prefer `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), BridgeError> {
        let Self { listener, config } = self;
        let config = Arc::new(config);
        let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let tracker = TaskTracker::new();
        let mut backoff = Duration::from_millis(10);
        info!(listen = %config.listen, path = config.endpoint.path(), "bridge local side running");
        loop {
            // Take the permit before accepting, so excess clients wait in the backlog.
            let permit = tokio::select! {
                () = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // the semaphore is never closed
                },
            };
            let (tcp, peer) = tokio::select! {
                () = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => { backoff = Duration::from_millis(10); c }
                    Err(e) => {
                        warn!(error = %e, "tcp accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        continue;
                    }
                },
            };
            let config = config.clone();
            let cancel = cancel.clone();
            let span = info_span!("bridge_local", %peer);
            // One task per connection; the permit lives as long as the connection.
            tracker.spawn(
                async move {
                    let _permit = permit;
                    if let Err(e) = tcp.set_nodelay(true) {
                        debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    let headers: Vec<(&str, &str)> = config
                        .port_name
                        .as_deref()
                        .map(|p| (PORT_HEADER, p))
                        .into_iter()
                        .collect();
                    let stream = tokio::select! {
                        () = cancel.cancelled() => return,
                        r = connect(&config.endpoint, &headers) => r,
                    };
                    match stream {
                        Ok(stream) => bridge(tcp, stream, config.buffer_size, &cancel).await,
                        // Dropping the TCP connection tells the client; the log says why.
                        Err(e) => warn!(error = %e, "relay connect failed; closing client"),
                    }
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

/// Binds `config.listen` and runs the local side until `cancel` fires.
///
/// # Errors
/// See [`LocalBridge::bind`] and [`LocalBridge::run`].
///
/// # Cancel safety
/// Dropping the future drops every bridged connection; prefer `cancel`.
pub async fn run_local(config: LocalConfig, cancel: CancellationToken) -> Result<(), BridgeError> {
    LocalBridge::bind(config).await?.run(cancel).await
}

/// The remote side: a listener on the endpoint's path forwarding each connection to a TCP
/// target chosen by its [`PORT_HEADER`].
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The gateway and path to listen on.
    pub endpoint: Endpoint,
    /// Where connections that name no port go (`host:port`); `None` rejects them.
    pub default_target: Option<String>,
    /// The allow-list: port name → `host:port`.
    pub ports: BTreeMap<String, String>,
    /// Copy buffer per direction.
    pub buffer_size: usize,
    /// Connections carried at once; more are rejected with 503.
    pub max_connections: usize,
    /// Timeout for the TCP connect to a target.
    pub connect_timeout: Duration,
}

/// Why a connection was turned away by the remote side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The sender named a port that is not in the allow-list.
    #[error("unknown port {0:?}")]
    UnknownPort(String),
    /// The sender named no port and there is no default target.
    #[error("no port named and no default target")]
    NoDefault,
}

impl RemoteConfig {
    /// A configuration with the defaults, forwarding unnamed connections to
    /// `default_target`. The bridge carries bytes only, so the endpoint asks for raw
    /// streams ([`Endpoint::set_raw_streams`]).
    pub fn new(mut endpoint: Endpoint, default_target: Option<String>) -> Self {
        endpoint.set_raw_streams(true);
        Self {
            endpoint,
            default_target,
            ports: BTreeMap::new(),
            buffer_size: DEFAULT_BUFFER_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_TARGET_CONNECT_TIMEOUT,
        }
    }

    /// The target for a connection naming `port` (its [`PORT_HEADER`] value, if any).
    ///
    /// # Errors
    /// The name is not allowed, or no name and no default.
    pub fn route(&self, port: Option<&str>) -> Result<&str, RouteError> {
        match port.map(str::trim) {
            Some(name) => self
                .ports
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| RouteError::UnknownPort(name.to_owned())),
            None => self.default_target.as_deref().ok_or(RouteError::NoDefault),
        }
    }
}

/// Runs the remote side until `cancel` fires, then closes the listener and the open
/// connections.
///
/// # Errors
/// The listener's first connection failed ([`BridgeError::Listener`]), or the gateway later
/// refused it for good ([`BridgeError::Refused`]). Lost connections are retried in the
/// background.
///
/// # Cancel safety
/// Dropping the future drops every bridged connection; prefer `cancel`.
pub async fn run_remote(
    config: RemoteConfig,
    cancel: CancellationToken,
) -> Result<(), BridgeError> {
    let mut listener = Listener::open(config.endpoint.clone())
        .await
        .map_err(BridgeError::Listener)?;
    info!(path = config.endpoint.path(), "bridge remote side running");
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let result = loop {
        let incoming = tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            r = listener.accept() => r,
        };
        let conn = match incoming {
            Ok(conn) => conn,
            Err(ListenerError::Closed) => break Ok(()),
            Err(e) => break Err(BridgeError::Refused(e)),
        };
        let config = config.clone();
        let cancel = cancel.clone();
        // Over the limit: the reject runs in its own task too, so accept keeps pace.
        let permit = permits.clone().try_acquire_owned().ok();
        let span = info_span!("bridge_remote", sender_id = %conn.id);
        tracker.spawn(
            async move {
                match permit {
                    Some(_permit) => forward(conn, &config, &cancel).await,
                    None => reject(conn, 503, "Too many bridged connections").await,
                }
            }
            .instrument(span),
        );
    };
    listener.close().await;
    tracker.close();
    tracker.wait().await;
    result
}

/// Routes, connects to the target, accepts, and splices one connection.
async fn forward(conn: IncomingConnection, config: &RemoteConfig, cancel: &CancellationToken) {
    let target = match config.route(conn.header(PORT_HEADER)) {
        Ok(t) => t.to_owned(),
        Err(e) => {
            warn!(error = %e, "connection refused by the port allow-list");
            return reject(conn, 403, &e.to_string()).await;
        }
    };
    // Connect to the target first: if it is down the sender gets a clear status instead of
    // a stream that closes at once. (502 and 504 are the gateway's to send, spec §3.)
    let tcp = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(&target)).await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            warn!(%target, error = %e, "target connect failed");
            return reject(conn, 503, "Bridge target unreachable").await;
        }
        Err(_) => {
            warn!(%target, "target connect timed out");
            return reject(conn, 503, "Bridge target timed out").await;
        }
    };
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let stream = tokio::select! {
        () = cancel.cancelled() => return,
        r = conn.accept() => r,
    };
    match stream {
        Ok(stream) => {
            debug!(%target, raw = stream.is_raw(), "bridging");
            bridge(tcp, stream, config.buffer_size, cancel).await;
        }
        Err(e) => warn!(error = %e, "rendezvous failed"),
    }
}

async fn reject(conn: IncomingConnection, status: u16, description: &str) {
    if let Err(e) = conn.reject(status, description).await {
        debug!(error = %e, "reject failed");
    }
}

/// Joins a local TCP connection and a relayed stream: a raw stream socket to socket
/// ([`ferry_net::raw::relay_raw`]: `splice(2)` when both are plain TCP, a failure on one
/// side resets the other), a WebSocket one by copying.
async fn bridge(tcp: TcpStream, stream: HybridStream, buffer: usize, cancel: &CancellationToken) {
    match stream.into_raw() {
        Ok((relayed, early)) => {
            let config = ferry_net::relay::RelayConfig {
                buffer: buffer.max(1024),
                ..Default::default()
            };
            let end = ferry_net::raw::relay_raw(
                Conn::Plain(tcp),
                &[],
                relayed,
                &early,
                &config,
                cancel,
                &|_, _| {},
            )
            .await;
            debug!(?end, "raw bridge connection done");
        }
        Err(stream) => splice(tcp, stream, buffer, cancel).await,
    }
}

/// Copies both ways until both directions ended (EOF on one side shuts down the other's
/// write half) or `cancel` fires.
async fn splice<A, B>(mut a: A, mut b: B, buffer: usize, cancel: &CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let buffer = buffer.max(1024);
    tokio::select! {
        () = cancel.cancelled() => debug!("bridge cancelled"),
        r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, buffer, buffer) => match r {
            Ok((up, down)) => debug!(up, down, "bridge connection done"),
            Err(e) => debug!(error = %e, "bridge connection ended with an error"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> RemoteConfig {
        let endpoint = Endpoint::new("ws://127.0.0.1:1", "p").unwrap();
        let mut c = RemoteConfig::new(endpoint, Some("127.0.0.1:22".into()));
        c.ports.insert("db".into(), "db.internal:5432".into());
        c.ports.insert("web".into(), "127.0.0.1:8080".into());
        c
    }

    #[test]
    fn routes_by_port_name_with_an_allow_list() {
        let c = remote();
        assert_eq!(c.route(Some("db")), Ok("db.internal:5432"));
        assert_eq!(c.route(Some(" web ")), Ok("127.0.0.1:8080"));
        assert_eq!(c.route(None), Ok("127.0.0.1:22"));
        assert_eq!(
            c.route(Some("ssh")),
            Err(RouteError::UnknownPort("ssh".into()))
        );
        // Names are exact: no case folding, so the allow-list means what it says.
        assert_eq!(
            c.route(Some("DB")),
            Err(RouteError::UnknownPort("DB".into()))
        );
    }

    #[test]
    fn no_default_rejects_unnamed_connections() {
        let mut c = remote();
        c.default_target = None;
        assert_eq!(c.route(None), Err(RouteError::NoDefault));
        assert_eq!(c.route(Some("db")), Ok("db.internal:5432"));
    }

    #[tokio::test]
    async fn splice_carries_both_directions_and_half_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
        tokio::time::timeout(Duration::from_secs(10), async {
            let (mut client, bridge_a) = duplex(1024);
            let (bridge_b, mut server) = duplex(1024);
            let cancel = CancellationToken::new();
            let task = tokio::spawn(async move { splice(bridge_a, bridge_b, 4096, &cancel).await });
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
            let expect = data.clone();
            let writer = tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client.shutdown().await.unwrap();
                // After our half-close the reply still comes back.
                let mut reply = Vec::new();
                client.read_to_end(&mut reply).await.unwrap();
                reply
            });
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, expect);
            server.write_all(b"thanks").await.unwrap();
            server.shutdown().await.unwrap();
            assert_eq!(writer.await.unwrap(), b"thanks");
            task.await.unwrap();
        })
        .await
        .unwrap();
    }
}
