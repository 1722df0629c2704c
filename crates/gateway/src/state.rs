//! What every connection task of a gateway shares.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ferry_net::relay::RelayConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::catalog::Catalog;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::grpc::pool::Pool;
use crate::metrics::Metrics;
use crate::pairing::Pairing;
use crate::verified::Verified;

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The namespace's entities: paths and rules, changed live by the management API.
    pub(crate) catalog: Arc<Catalog>,
    /// What `/metrics` reports.
    pub(crate) metrics: Metrics,
    /// Listeners, rendezvous and waiting requests: how senders reach listeners.
    pub(crate) pairing: Pairing,
    /// This node's place in a cluster, in cluster mode.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// The gRPC front end's relayed HTTP/2 connections, one per listener.
    pub(crate) grpc: Pool,
    /// Sender tokens verified lately.
    pub(crate) verified: Verified,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) relay: RelayConfig,
    /// Numbers accepted connections, for their log spans.
    pub(crate) next_conn: AtomicU64,
    pub(crate) admission: Arc<Admission>,
}
