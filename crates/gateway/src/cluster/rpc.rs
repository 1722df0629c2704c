//! The node-to-node API (`proto/cluster.proto`): a node queues commands on another node's
//! listeners and asks whether it holds its lease. Only control messages cross: a sender's
//! bytes never do.
//!
//! Calls carry a SAS token for `sb://ferry-cluster/{called node}`, signed with the cluster's
//! shared secret, checked in constant time like every other token; the secret itself never
//! crosses the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use ferry_hc::auth::{Right, Rules};
use ferry_hc::{Rights, Rule, SasToken};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::debug;

use super::Cluster;
use crate::auth::now_unix;
use crate::pairing::{Outbound, Undelivered};

#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub(crate) mod pb {
    tonic::include_proto!("ferry.cluster");
}

use pb::Delivery;
use pb::node_client::NodeClient;

/// The key name node tokens are signed under.
const KEY_NAME: &str = "cluster";

/// The host part of a node token's audience.
const AUDIENCE_HOST: &str = "ferry-cluster";

/// How long a node token is good for.
const TOKEN_LIFETIME: u64 = 300;

/// Most commands one delivery carries.
pub(crate) const MAX_BATCH: usize = 64;

/// Longest a call to another node may take (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The other nodes of the cluster, as the store lists them.
pub(crate) struct Peers {
    secret: String,
    peers: Mutex<HashMap<String, Peer>>,
    /// Counts the commands sent to other nodes' listeners.
    forwards: prometheus_client::metrics::counter::Counter,
}

struct Peer {
    rpc: String,
    client: NodeClient<Channel>,
}

impl Peers {
    pub(crate) fn new(
        secret: String,
        forwards: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            secret,
            peers: Mutex::default(),
            forwards,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records (or moves) node `name`'s address.
    pub(crate) fn set(&self, name: &str, rpc: &str) {
        let mut peers = self.lock();
        if peers.get(name).is_some_and(|p| p.rpc == rpc) {
            return;
        }
        let Ok(endpoint) = Endpoint::from_shared(rpc.to_owned()) else {
            tracing::warn!(node = %name, %rpc, "node record with an unusable address ignored");
            return;
        };
        let channel = endpoint
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        peers.insert(
            name.to_owned(),
            Peer {
                rpc: rpc.to_owned(),
                client: NodeClient::new(channel),
            },
        );
    }

    /// Forgets node `name`.
    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Keeps only the nodes `live` names.
    pub(crate) fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.lock().retain(|name, _| live(name));
    }

    fn client(&self, node: &str) -> Option<NodeClient<Channel>> {
        self.lock().get(node).map(|p| p.client.clone())
    }

    /// `message` as a request to `node`, with its token.
    fn request<T>(&self, node: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        let token = SasToken::create(
            &format!("sb://{AUDIENCE_HOST}/{node}"),
            KEY_NAME,
            &self.secret,
            now_unix() + TOKEN_LIFETIME,
        );
        if let Ok(value) = MetadataValue::try_from(token) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Queues `batch` on listener `listener` of `node`, in order: what became of each
    /// command (all [`Undelivered::Gone`] when the node cannot be reached).
    pub(crate) async fn deliver(
        &self,
        node: &str,
        path: &str,
        listener: u64,
        batch: Vec<Outbound>,
    ) -> Vec<Result<(), Undelivered>> {
        let n = batch.len();
        self.forwards.inc_by(n as u64);
        let gone = || vec![Err(Undelivered::Gone); n];
        let Some(mut client) = self.client(node) else {
            return gone();
        };
        let commands = batch
            .into_iter()
            .map(|out| pb::Command {
                command: out.command.encode(),
                body: out.body.map(|b| b.to_vec()),
            })
            .collect();
        let request = self.request(
            node,
            pb::DeliverRequest {
                path: path.to_owned(),
                listener,
                commands,
            },
        );
        let reply = tokio::time::timeout(CALL_TIMEOUT, client.deliver(request))
            .await
            .map_err(|_| Status::deadline_exceeded("node did not answer"));
        match reply.and_then(|r| r) {
            Ok(reply) => {
                let mut outcomes: Vec<Result<(), Undelivered>> = reply
                    .into_inner()
                    .deliveries()
                    .map(|d| match d {
                        Delivery::Queued => Ok(()),
                        Delivery::Busy => Err(Undelivered::Busy),
                        Delivery::Gone => Err(Undelivered::Gone),
                    })
                    .collect();
                // A short answer leaves the rest undelivered.
                outcomes.resize(n, Err(Undelivered::Gone));
                outcomes
            }
            Err(status) => {
                debug!(%node, %status, "delivery to another node failed");
                gone()
            }
        }
    }

    /// Whether any other node reaches the store now (so the store is up, and out of reach of
    /// this node only).
    pub(crate) async fn any_reaches_store(&self) -> bool {
        let clients: Vec<(String, NodeClient<Channel>)> = self
            .lock()
            .iter()
            .map(|(name, p)| (name.clone(), p.client.clone()))
            .collect();
        let asks = clients.into_iter().map(|(name, mut client)| {
            let request = self.request(&name, pb::HealthRequest {});
            async move {
                matches!(
                    tokio::time::timeout(CALL_TIMEOUT, client.health(request)).await,
                    Ok(Ok(reply)) if reply.get_ref().store
                )
            }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .any(|held| held)
    }
}

/// This node's side of the API.
pub(crate) struct Service {
    cluster: Weak<Cluster>,
    node: String,
    rules: Rules,
}

impl Service {
    pub(crate) fn new(cluster: Weak<Cluster>, node: &str, secret: &str) -> Self {
        Self {
            cluster,
            node: node.to_owned(),
            rules: Rules::new(vec![Rule::new(KEY_NAME, secret, Rights::MANAGE)]),
        }
    }

    /// Checks the caller's token; the cluster, if it still runs.
    fn admit<T>(&self, request: &Request<T>) -> Result<Arc<Cluster>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.rules
            .authorize(token, AUDIENCE_HOST, &self.node, Right::Manage, now_unix())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.cluster
            .upgrade()
            .ok_or_else(|| Status::unavailable("node stopping"))
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for Service {
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverReply>, Status> {
        let cluster = self.admit(&request)?;
        let request = request.into_inner();
        if request.commands.len() > MAX_BATCH {
            return Err(Status::invalid_argument("too many commands in one call"));
        }
        let listener = cluster.local_listener(&request.path, request.listener);
        let mut deliveries = Vec::with_capacity(request.commands.len());
        for c in request.commands {
            let command = ferry_hc::Command::decode(&c.command)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let delivery = match &listener {
                None => Delivery::Gone,
                Some(listener) => match listener.try_send(Outbound {
                    command,
                    body: c.body.map(Bytes::from),
                }) {
                    Ok(()) => Delivery::Queued,
                    Err(Undelivered::Busy) => Delivery::Busy,
                    Err(Undelivered::Gone) => Delivery::Gone,
                },
            };
            deliveries.push(delivery.into());
        }
        Ok(Response::new(pb::DeliverReply { deliveries }))
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthReply>, Status> {
        let cluster = self.admit(&request)?;
        Ok(Response::new(pb::HealthReply {
            node: self.node.clone(),
            store: cluster.reaches_store(),
        }))
    }
}
