//! Prometheus metrics, named after Azure Relay's metrics per entity, served at the admin
//! port's `/metrics` in the OpenMetrics text format.
//!
//! | Azure Monitor metric | here |
//! |---|---|
//! | ListenerConnections-Success / -ClientError / -ServerError | `ferry_listener_connections_total{entity, result}` |
//! | SenderConnections-Success / -ClientError / -ServerError | `ferry_sender_connections_total{entity, result}` |
//! | ActiveConnections | `ferry_active_connections{entity}` |
//! | ActiveListeners | `ferry_active_listeners{entity}` |
//! | ListenerDisconnects | `ferry_listener_disconnects_total{entity}` |
//! | SenderDisconnects | `ferry_sender_disconnects_total{entity}` |
//! | BytesTransferred | `ferry_bytes_transferred_total{entity, direction}` |
//!
//! and beside them HTTP requests by status with their time to the response head, failed
//! authentications by reason, and in cluster mode the store's health and the commands sent
//! to listeners on other nodes. `entity` is a hybrid connection's name as the catalog (or, in
//! dynamic mode, its first listener) spells it, never a name a sender asked for: senders to
//! paths that do not exist count under `entity=""`. At most [`MAX_ENTITY_LABELS`] names are
//! kept; the rest count under `entity="_other"`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use ferry_hc::auth::AuthError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most distinct entity names labelled.
pub(crate) const MAX_ENTITY_LABELS: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Entity {
    entity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    entity: String,
    /// `success`, `client_error` or `server_error`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    entity: String,
    /// `to_listener` or `to_sender`.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    entity: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Which side of a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Role {
    Listener,
    Sender,
}

/// The gateway's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    listener_connections: Family<Outcome, Counter>,
    sender_connections: Family<Outcome, Counter>,
    active_connections: Family<Entity, Gauge>,
    active_listeners: Family<Entity, Gauge>,
    listener_disconnects: Family<Entity, Counter>,
    sender_disconnects: Family<Entity, Counter>,
    bytes: Family<Direction, Counter<u64, AtomicU64>>,
    http_requests: Family<Status, Counter>,
    http_latency: Family<Entity, Histogram>,
    auth_failures: Family<Reason, Counter>,
    /// 1 while this node holds its place in the cluster store (cluster mode only).
    pub(crate) store_up: Gauge,
    /// Commands queued for listeners on other nodes.
    pub(crate) forwards: Counter,
    labelled: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new(cluster: bool) -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let metrics = Self {
            registry: Registry::default(),
            listener_connections: Family::default(),
            sender_connections: Family::default(),
            active_connections: Family::default(),
            active_listeners: Family::default(),
            listener_disconnects: Family::default(),
            sender_disconnects: Family::default(),
            bytes: Family::default(),
            http_requests: Family::default(),
            // 1 ms to 33 s.
            http_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            auth_failures: Family::default(),
            store_up: Gauge::default(),
            forwards: Counter::default(),
            labelled: Mutex::default(),
        };
        registry.register(
            "listener_connections",
            "Listener connections (control channels) by result",
            metrics.listener_connections.clone(),
        );
        registry.register(
            "sender_connections",
            "Sender connections and requests by result",
            metrics.sender_connections.clone(),
        );
        registry.register(
            "active_connections",
            "Relayed connections open now",
            metrics.active_connections.clone(),
        );
        registry.register(
            "active_listeners",
            "Listeners connected now",
            metrics.active_listeners.clone(),
        );
        registry.register(
            "listener_disconnects",
            "Listener control channels that ended",
            metrics.listener_disconnects.clone(),
        );
        registry.register(
            "sender_disconnects",
            "Relayed sender connections that ended",
            metrics.sender_disconnects.clone(),
        );
        registry.register(
            "bytes_transferred",
            "Bytes relayed, by direction",
            metrics.bytes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests relayed or refused, by status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from an HTTP request to its response head",
            metrics.http_latency.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications, by reason",
            metrics.auth_failures.clone(),
        );
        if cluster {
            registry.register(
                "cluster_store_up",
                "1 while this node holds its lease in the cluster store",
                metrics.store_up.clone(),
            );
            registry.register(
                "cluster_forwards",
                "Commands sent to listeners on other nodes",
                metrics.forwards.clone(),
            );
        }
        Self {
            registry,
            ..metrics
        }
    }

    /// The label for `name`: itself while fewer than [`MAX_ENTITY_LABELS`] are in use.
    fn label(&self, name: &str) -> String {
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if labelled.contains(name) {
            return name.to_owned();
        }
        if labelled.len() >= MAX_ENTITY_LABELS {
            return "_other".to_owned();
        }
        labelled.insert(name.to_owned());
        name.to_owned()
    }

    /// A connection attempt of `role` on `entity` ended with HTTP `status` (101/200: success).
    pub(crate) fn connection(&self, role: Role, entity: &str, status: u16) {
        let result = match status {
            100..=399 => "success",
            400..=499 => "client_error",
            _ => "server_error",
        };
        let labels = Outcome {
            entity: self.label(entity),
            result,
        };
        match role {
            Role::Listener => self.listener_connections.get_or_create(&labels).inc(),
            Role::Sender => self.sender_connections.get_or_create(&labels).inc(),
        };
    }

    /// Counts a listener on `entity` for as long as the guard lives; its end is a listener
    /// disconnect.
    pub(crate) fn listening(&self, entity: &str) -> Held {
        let labels = Entity {
            entity: self.label(entity),
        };
        let gauge = self.active_listeners.get_or_create(&labels).clone();
        gauge.inc();
        Held {
            gauge,
            ended: self.listener_disconnects.get_or_create(&labels).clone(),
        }
    }

    /// Counts a relayed connection on `entity` for as long as the guard lives; its end is a
    /// sender disconnect.
    pub(crate) fn relaying(&self, entity: &str) -> Held {
        let labels = Entity {
            entity: self.label(entity),
        };
        let gauge = self.active_connections.get_or_create(&labels).clone();
        gauge.inc();
        Held {
            gauge,
            ended: self.sender_disconnects.get_or_create(&labels).clone(),
        }
    }

    /// The byte counters of `entity`: (towards the listener, towards the sender).
    pub(crate) fn bytes(&self, entity: &str) -> (Counter<u64, AtomicU64>, Counter<u64, AtomicU64>) {
        let entity = self.label(entity);
        let counter = |direction| {
            self.bytes
                .get_or_create(&Direction {
                    entity: entity.clone(),
                    direction,
                })
                .clone()
        };
        (counter("to_listener"), counter("to_sender"))
    }

    /// An HTTP request on `entity` answered with `status` after `seconds`.
    pub(crate) fn http_request(&self, entity: &str, status: u16, seconds: f64) {
        let entity = self.label(entity);
        self.http_requests
            .get_or_create(&Status {
                entity: entity.clone(),
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&Entity {
                entity: entity.clone(),
            })
            .observe(seconds);
        // A request is a sender's connection to the entity, as Azure counts them.
        self.connection(Role::Sender, &entity, status);
    }

    /// A failed authentication.
    pub(crate) fn auth_failed(&self, e: &AuthError) {
        let reason = match e {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "bad_signature",
            AuthError::MissingRight(_) => "missing_right",
            AuthError::WrongAudience => "wrong_audience",
            _ => "other",
        };
        self.auth_failures.get_or_create(&Reason { reason }).inc();
    }

    /// The OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A gauge held up while something lasts, and the counter of its ends.
pub(crate) struct Held {
    gauge: Gauge,
    ended: Counter,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
        self.ended.inc();
    }
}

/// A stream whose reads are counted: the bytes one side of a relay sends.
pub(crate) struct Counted<S> {
    inner: S,
    read: Counter<u64, AtomicU64>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, read: Counter<u64, AtomicU64>) -> Self {
        Self { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.read.inc_by(read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
