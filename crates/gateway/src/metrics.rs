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

use std::collections::{HashSet, VecDeque};
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
    /// Bytes relayed each way, all entities together (for the status page's chart).
    totals: (Counter<u64, AtomicU64>, Counter<u64, AtomicU64>),
    /// Throughput samples, oldest first, and the totals at the last one.
    samples: Mutex<(VecDeque<Sample>, (u64, u64, u64))>,
    /// The latest refusals, oldest first.
    recent: Mutex<VecDeque<Refusal>>,
}

/// How many throughput samples the status page is shown: five minutes at one every
/// [`SAMPLE_EVERY`].
pub(crate) const SAMPLES: usize = 60;

/// How often throughput is sampled.
pub(crate) const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How many refusals the status page is shown.
pub(crate) const RECENT: usize = 50;

/// Throughput over one sampling period.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sample {
    /// The period's end, milliseconds since the epoch.
    pub(crate) time: u64,
    /// Bytes per second towards listeners.
    pub(crate) to_listener: f64,
    /// Bytes per second towards senders.
    pub(crate) to_sender: f64,
}

/// A connection or request the gateway refused.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Refusal {
    /// Milliseconds since the epoch.
    pub(crate) time: u64,
    pub(crate) entity: String,
    pub(crate) status: u16,
    pub(crate) message: String,
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
            totals: Default::default(),
            samples: Mutex::default(),
            recent: Mutex::default(),
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

    /// Relayed connections open on `entity` now.
    pub(crate) fn active(&self, entity: &str) -> i64 {
        self.active_connections
            .get_or_create(&Entity {
                entity: self.label(entity),
            })
            .get()
    }

    /// Keeps a refusal for the status page (the latest [`RECENT`]).
    pub(crate) fn refused(&self, entity: &str, status: u16, message: &str) {
        let mut recent = lock(&self.recent);
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Refusal {
            time: crate::catalog::model::now_ms(),
            entity: entity.to_owned(),
            status,
            message: message.chars().take(200).collect(),
        });
    }

    /// The refusals kept, oldest first.
    pub(crate) fn recent(&self) -> Vec<Refusal> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// Takes a throughput sample at `now` (milliseconds since the epoch).
    pub(crate) fn sample(&self, now: u64) {
        let (up, down) = (self.totals.0.get(), self.totals.1.get());
        let mut samples = lock(&self.samples);
        let (queue, last) = &mut *samples;
        let (then, last_up, last_down) = *last;
        *last = (now, up, down);
        if then == 0 || now <= then {
            return;
        }
        let rate = |bytes: u64| bytes as f64 * 1000.0 / (now - then) as f64;
        if queue.len() >= SAMPLES {
            queue.pop_front();
        }
        queue.push_back(Sample {
            time: now,
            to_listener: rate(up.saturating_sub(last_up)),
            to_sender: rate(down.saturating_sub(last_down)),
        });
    }

    /// The throughput samples, oldest first.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).0.iter().copied().collect()
    }

    /// The byte meters of `entity`: (towards the listener, towards the sender).
    pub(crate) fn bytes(&self, entity: &str) -> (Meter, Meter) {
        let entity = self.label(entity);
        let counter = |direction| {
            self.bytes
                .get_or_create(&Direction {
                    entity: entity.clone(),
                    direction,
                })
                .clone()
        };
        (
            Meter(counter("to_listener"), self.totals.0.clone()),
            Meter(counter("to_sender"), self.totals.1.clone()),
        )
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

/// Counts bytes for one entity and one direction, and for all entities together.
pub(crate) struct Meter(Counter<u64, AtomicU64>, Counter<u64, AtomicU64>);

impl Meter {
    pub(crate) fn add(&self, n: u64) {
        self.0.inc_by(n);
        self.1.inc_by(n);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A stream whose reads are counted: the bytes one side of a relay sends.
pub(crate) struct Counted<S> {
    inner: S,
    read: Meter,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, read: Meter) -> Self {
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
            self.read.add(read as u64);
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

/// A stream whose reads and writes are both counted: a sender's side of a relay whose
/// listener side is not a plain stream (net.tcp, relayed net.tcp).
pub(crate) struct Metered<S> {
    inner: Counted<S>,
    written: Meter,
}

impl<S> Metered<S> {
    /// `read`: what the sender sends (to the listener); `written`: what it is sent.
    pub(crate) fn new(inner: S, read: Meter, written: Meter) -> Self {
        Self {
            inner: Counted::new(inner, read),
            written,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.add(n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_sampled_as_rates_and_kept_for_five_minutes() {
        let m = Metrics::new(false);
        let (up, down) = m.bytes("a");
        m.sample(1_000);
        assert!(
            m.samples().is_empty(),
            "the first sample only sets the baseline"
        );
        up.add(10_000);
        down.add(500);
        m.sample(6_000);
        let s = m.samples();
        assert_eq!((s[0].to_listener, s[0].to_sender), (2_000.0, 100.0));
        for i in 0..2 * SAMPLES as u64 {
            m.sample(6_000 + (i + 1) * 5_000);
        }
        assert_eq!(m.samples().len(), SAMPLES);
    }

    #[test]
    fn refusals_and_entity_labels_are_bounded() {
        let m = Metrics::new(false);
        for i in 0..RECENT + 10 {
            m.refused("p", 404, &format!("refusal {i} {}", "x".repeat(500)));
        }
        let recent = m.recent();
        assert_eq!(recent.len(), RECENT);
        assert!(recent[0].message.starts_with("refusal 10 "));
        assert_eq!(recent[0].message.chars().count(), 200);
        for i in 0..MAX_ENTITY_LABELS {
            m.label(&format!("e{i}"));
        }
        assert_eq!(m.label("one-too-many"), "_other");
        assert_eq!(m.label("e7"), "e7");
    }
}
