//! What every connection task of a gateway shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use ferry_net::relay::RelayConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::catalog::Catalog;
use crate::cluster::Cluster;
use crate::config::{Config, Limits, Timeouts};
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
    /// Limits and timeouts, replaced by a reload: each connection reads them as it begins.
    pub(crate) tuning: std::sync::RwLock<Arc<Tuning>>,
    /// Numbers accepted connections, for their log spans.
    pub(crate) next_conn: AtomicU64,
    pub(crate) admission: Arc<Admission>,
}

/// The limits and timeouts in force, and the relay settings made of them.
#[derive(Debug)]
pub(crate) struct Tuning {
    pub(crate) limits: Limits,
    pub(crate) timeouts: Timeouts,
    pub(crate) relay: RelayConfig,
}

impl Tuning {
    pub(crate) fn of(config: &Config) -> Self {
        let (limits, timeouts) = (config.limits.clone(), config.timeouts.clone());
        let relay = RelayConfig {
            buffer: limits.relay_buffer,
            max_message: limits.max_message,
            close_timeout: timeouts.close,
            idle_timeout: timeouts.idle,
            half_close_timeout: timeouts.half_close,
        };
        Self {
            limits,
            timeouts,
            relay,
        }
    }
}

/// A request a trusted load balancer forwarded for a client the network rules turn away.
#[derive(Debug)]
pub(crate) struct AddressRefused(pub(crate) std::net::IpAddr);

impl Shared {
    /// The limits and timeouts in force now.
    pub(crate) fn tuning(&self) -> Arc<Tuning> {
        self.tuning
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `config`'s limits and timeouts in force for what begins from now on. The few the
    /// pairing core and the catalog take once stay as they started, everywhere, until a
    /// restart.
    pub(crate) fn retune(&self, config: &Config) {
        self.admission
            .retune(&config.limits, &self.tracker, &self.cancel);
        let mut tuning = Tuning::of(config);
        let started = &self.config;
        tuning.limits.control_queue = started.limits.control_queue;
        tuning.timeouts.rendezvous = started.timeouts.rendezvous;
        tuning.timeouts.request = started.timeouts.request;
        tuning.timeouts.token_grace = started.timeouts.token_grace;
        *self
            .tuning
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tuning);
    }

    /// The client behind a request that arrived from `peer`, with the `X-Forwarded-For`
    /// values it carries: the address a trusted load balancer names (see
    /// [`TrustedProxies::client`](crate::network::TrustedProxies::client)), held to the
    /// namespace's IP rules (a load balancer's own connections are not: it carries everyone),
    /// else `peer`.
    ///
    /// # Errors
    /// The named client is one the rules turn away.
    pub(crate) fn forwarded_client<'a>(
        &self,
        peer: SocketAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> Result<SocketAddr, AddressRefused> {
        let proxies = &self.config.proxies;
        if proxies.proxy_protocol || !proxies.trusts(peer.ip()) {
            return Ok(peer);
        }
        let client = proxies.client(peer.ip(), forwarded_for);
        if !self.catalog.view().network.allows(client) {
            self.metrics
                .refused("", 403, &format!("{client} refused by the network rules"));
            return Err(AddressRefused(client));
        }
        Ok(SocketAddr::new(client, 0))
    }
}
