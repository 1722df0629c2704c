//! The etcd calls a cluster node makes: leases, slot claims, reads and one watch.
//!
//! A thin layer over etcd's own gRPC API (`proto/etcd.proto`): every unary call has a
//! deadline, a lost authentication token is renewed once per call, and a dead member is left
//! behind by the channel's balancing over all the configured endpoints.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::config::EtcdConfig;

#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub(crate) mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::auth_client::AuthClient;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::request_op::Request as Op;
use pb::watch_client::WatchClient;
use pb::{Compare, KeyValue, RequestOp};

/// Longest one attempt at a unary call to etcd may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a unary call may keep being retried: long enough to ride out a member going down
/// or a leader election (about a second with etcd's defaults).
const CALL_BUDGET: Duration = Duration::from_secs(8);

/// Longest a connection attempt to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The configuration names no usable endpoint, or its CA file cannot be read.
    #[error("etcd configuration: {0}")]
    Config(String),
    /// etcd answered with an error, or could not be reached in time.
    #[error("etcd: {0}")]
    Call(#[from] Status),
    /// The call did not finish within its deadline.
    #[error("etcd did not answer in time")]
    TimedOut,
}

/// A connection to an etcd cluster (cheap to clone).
#[derive(Clone)]
pub(crate) struct Etcd {
    channel: Channel,
    user: Option<Arc<(String, String)>>,
    /// The authentication token, once one was obtained.
    token: Arc<RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>>,
}

impl Etcd {
    /// A client for the endpoints in `config`; it connects on first use, so a store that is
    /// down now does not stop the node from starting.
    pub(crate) fn new(config: &EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Config("no endpoints".into()));
        }
        let tls = match &config.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    StoreError::Config(format!("cannot read CA {}: {e}", path.display()))
                })?;
                Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            }
            None => Some(ClientTlsConfig::new().with_native_roots()),
        };
        let mut endpoints = Vec::new();
        for url in &config.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| StoreError::Config(format!("endpoint {url}: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            if url.starts_with("https://")
                && let Some(tls) = &tls
            {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| StoreError::Config(format!("endpoint {url}: {e}")))?;
            }
            endpoints.push(endpoint);
        }
        Ok(Self {
            channel: Channel::balance_list(endpoints.into_iter()),
            user: config.user.clone().map(Arc::new),
            token: Arc::default(),
        })
    }

    /// `message` as a unary request, with its deadline and the authentication token.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.streaming(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// `message` as a request without a deadline (a watch lasts), with the authentication
    /// token if there is one.
    fn streaming<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            request.metadata_mut().insert("token", token);
        }
        request
    }

    /// Obtains a new authentication token (when a user is configured).
    async fn authenticate(&self) -> Result<(), StoreError> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        let reply = loop {
            let mut auth = AuthClient::new(self.channel.clone());
            let request = Request::new(pb::AuthenticateRequest {
                name: user.0.clone(),
                password: user.1.clone(),
            });
            match deadline(auth.authenticate(request)).await {
                Err(e) if transient(&e) && started.elapsed() < CALL_BUDGET => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?.into_inner(),
            }
        };
        let token = MetadataValue::try_from(reply.token)
            .map_err(|_| StoreError::Config("etcd sent an unusable token".into()))?;
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        Ok(())
    }

    /// Runs `call`, authenticating first when there is no token yet and once more when etcd
    /// says the token is no longer good.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(Self) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = tokio::time::Instant::now();
        let mut renewed = false;
        loop {
            let missing = self.user.is_some()
                && self
                    .token
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_none();
            if missing {
                self.authenticate().await?;
            }
            match deadline(call(self.clone())).await {
                Err(StoreError::Call(s))
                    if self.user.is_some() && token_rejected(&s) && !renewed =>
                {
                    renewed = true;
                    *self
                        .token
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                // A member that is down, or a cluster between leaders, fails or stalls the call
                // that happened to meet it: another attempt may succeed, within the budget.
                Err(e) if transient(&e) && started.elapsed() < CALL_BUDGET => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return Ok(other?.into_inner()),
            }
        }
    }

    /// A new lease of `ttl`; its id.
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let reply = self
            .call(|c| async move {
                LeaseClient::new(c.channel.clone())
                    .lease_grant(c.request(pb::LeaseGrantRequest { ttl, id: 0 }))
                    .await
            })
            .await?;
        if reply.error.is_empty() {
            Ok(reply.id)
        } else {
            Err(StoreError::Call(Status::unavailable(reply.error)))
        }
    }

    /// Renews `lease` once; the time it has left (`0` or less: it is gone).
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<i64, StoreError> {
        let reply = self
            .call(|c| async move {
                // One request, then the end of the stream: etcd answers it before it reads
                // the end.
                let requests = tokio_stream::once(pb::LeaseKeepAliveRequest { id: lease });
                let mut replies = LeaseClient::new(c.channel.clone())
                    .lease_keep_alive(c.request(requests))
                    .await?
                    .into_inner();
                let reply = replies
                    .message()
                    .await?
                    .ok_or_else(|| Status::unavailable("keep-alive stream ended"))?;
                Ok(tonic::Response::new(reply))
            })
            .await?;
        Ok(reply.ttl)
    }

    /// Ends `lease` and every key under it.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        self.call(|c| async move {
            LeaseClient::new(c.channel.clone())
                .lease_revoke(c.request(pb::LeaseRevokeRequest { id: lease }))
                .await
        })
        .await?;
        Ok(())
    }

    /// Writes `key` under `lease` if nobody holds it; whether it was written.
    pub(crate) async fn claim(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<bool, StoreError> {
        let txn = pb::TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal.into(),
                target: CompareTarget::Create.into(),
                key: key.as_bytes().to_vec(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                range_end: Vec::new(),
            }],
            success: vec![put_op(key, value.clone(), lease)],
            failure: Vec::new(),
        };
        let reply = self.txn(txn).await?;
        if reply.succeeded {
            return Ok(true);
        }
        // An attempt that timed out may have been applied before another was made: the slot
        // is ours if it holds exactly our record under our lease.
        let held = self.get(key).await?;
        Ok(held.is_some_and(|kv| kv.lease == lease && kv.value == value))
    }

    /// Deletes `key` if it is still held under `lease` (not by whoever took it since).
    pub(crate) async fn release(&self, key: &str, lease: i64) -> Result<(), StoreError> {
        let txn = pb::TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal.into(),
                target: CompareTarget::Lease.into(),
                key: key.as_bytes().to_vec(),
                target_union: Some(TargetUnion::Lease(lease)),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: Vec::new(),
                    prev_kv: false,
                })),
            }],
            failure: Vec::new(),
        };
        self.txn(txn).await?;
        Ok(())
    }

    async fn txn(&self, txn: pb::TxnRequest) -> Result<pb::TxnResponse, StoreError> {
        self.call(|c| {
            let txn = txn.clone();
            async move { KvClient::new(c.channel.clone()).txn(c.request(txn)).await }
        })
        .await
    }

    /// Puts and deletes keys (no lease) in one transaction; the store's revision after it.
    pub(crate) async fn apply(
        &self,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> Result<i64, StoreError> {
        let mut success: Vec<RequestOp> = puts
            .into_iter()
            .map(|(key, value)| put_op(&key, value, 0))
            .collect();
        success.extend(deletes.into_iter().map(|key| RequestOp {
            request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.into_bytes(),
                range_end: Vec::new(),
                prev_kv: false,
            })),
        }));
        // Idempotent, so a retry after a timeout cannot do it twice over.
        let reply = self
            .txn(pb::TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            })
            .await?;
        Ok(reply.header.map_or(0, |h| h.revision))
    }

    /// Writes `key` under `lease`, whoever held it.
    pub(crate) async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<(), StoreError> {
        let put = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            prev_kv: false,
        };
        self.call(|c| {
            let put = put.clone();
            async move { KvClient::new(c.channel.clone()).put(c.request(put)).await }
        })
        .await?;
        Ok(())
    }

    /// The value of `key`, if it exists.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let reply = self.range(key, Vec::new()).await?;
        Ok(reply.kvs.into_iter().next())
    }

    /// Every key under `prefix`, and the store's revision they were read at.
    pub(crate) async fn list(&self, prefix: &str) -> Result<(i64, Vec<KeyValue>), StoreError> {
        let reply = self.range(prefix, prefix_end(prefix)).await?;
        let revision = reply.header.map_or(0, |h| h.revision);
        Ok((revision, reply.kvs))
    }

    async fn range(&self, key: &str, range_end: Vec<u8>) -> Result<pb::RangeResponse, StoreError> {
        let range = pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end,
            ..pb::RangeRequest::default()
        };
        self.call(|c| {
            let range = range.clone();
            async move {
                KvClient::new(c.channel.clone())
                    .range(c.request(range))
                    .await
            }
        })
        .await
    }

    /// Watches every key under `prefix` from `revision` on.
    pub(crate) async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch, StoreError> {
        if self.user.is_some() {
            self.authenticate().await?;
        }
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision: revision,
                    progress_notify: true,
                    prev_kv: false,
                },
            )),
        })
        .expect("a fresh queue has room");
        let request = self.streaming(ReceiverStream::new(rx));
        let stream = deadline(WatchClient::new(self.channel.clone()).watch(request))
            .await?
            .into_inner();
        Ok(Watch {
            _requests: tx,
            stream,
        })
    }
}

/// An open watch: its events, until the stream fails.
pub(crate) struct Watch {
    /// Held open: etcd ends the watch when the request stream ends.
    _requests: mpsc::Sender<pb::WatchRequest>,
    stream: tonic::Streaming<pb::WatchResponse>,
}

impl Watch {
    /// The next batch of events (`Ok(None)`: the stream ended).
    pub(crate) async fn next(&mut self) -> Result<Option<pb::WatchResponse>, StoreError> {
        Ok(self.stream.message().await?)
    }
}

fn put_op(key: &str, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            prev_kv: false,
        })),
    }
}

/// The end of the key range that holds exactly the keys starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix is empty): to the end of the key space.
    vec![0]
}

/// Whether a failed call may succeed if tried again: the member it met is down or
/// partitioned, there is no leader yet, or it did not answer in time.
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::TimedOut => true,
        StoreError::Call(s) => matches!(
            s.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        ),
        StoreError::Config(_) => false,
    }
}

/// Whether etcd refused the call's authentication token (expired, or the member restarted).
fn token_rejected(status: &Status) -> bool {
    status.code() == Code::Unauthenticated || status.message().contains("invalid auth token")
}

/// `call` with [`CALL_TIMEOUT`] (the channel's own deadline covers the call once sent; this
/// one also covers waiting for a connection).
async fn deadline<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT + CONNECT_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_past_its_last_key() {
        assert_eq!(prefix_end("ferry/"), b"ferry0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
