//! The catalog's store in cluster mode: entity records in etcd under `{prefix}entities/`, so a
//! change made through one node's management API holds on every node.
//!
//! Writes go to etcd first, and the writing node puts them in force once etcd has them; every
//! node (the writer too) then takes them in from its watch, in etcd's order, so concurrent
//! writers to the same entity end with the last one etcd applied everywhere.

use crate::catalog::{Store, StoreError};
use crate::config::ClusterConfig;

use super::ClusterError;
use super::etcd::Etcd;

/// Where a cluster's entity records live under its prefix.
pub(crate) const ENTITIES: &str = "entities/";

/// Entity records in etcd.
pub(crate) struct EntityStore {
    etcd: Etcd,
    prefix: String,
    runtime: tokio::runtime::Handle,
}

impl EntityStore {
    /// A store on the cluster's etcd. Call it on the runtime: writes run on it.
    pub(crate) fn new(config: &ClusterConfig) -> Result<Self, ClusterError> {
        Ok(Self {
            etcd: Etcd::new(&config.etcd).map_err(|e| ClusterError::Store(e.to_string()))?,
            prefix: format!("{}{ENTITIES}", config.prefix),
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl Store for EntityStore {
    /// Nothing here: the node's watch reads the records before the node serves.
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(Vec::new())
    }

    /// Blocks on etcd: call it off the async threads (the management API does).
    fn apply(
        &self,
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
    ) -> Result<Option<i64>, StoreError> {
        let puts = puts
            .iter()
            .map(|(k, v)| (format!("{}{k}", self.prefix), v.clone()))
            .collect();
        let deletes = deletes
            .iter()
            .map(|k| format!("{}{k}", self.prefix))
            .collect();
        self.runtime
            .block_on(self.etcd.apply(puts, deletes))
            .map(Some)
            .map_err(|e| StoreError::Shared(e.to_string()))
    }
}
