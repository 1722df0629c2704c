//! The namespace's entities: hybrid connections, WCF relays and authorization rules, as the
//! configuration file seeds them and the management API changes them.
//!
//! ```text
//!  file (seeded) ─┐                       ┌─► store (redb file / memory)
//!  admin API ─────┴─► Catalog::update ────┤
//!                      (validate a copy)  └─► View: Rules + PathSettings per path
//!                                               read by the registry on every lookup
//! ```
//!
//! The model is the truth; the [`View`] is what the data plane reads, rebuilt whole after
//! every change and swapped in at once, so a sender or listener sees the entities either
//! before or after a change, never half of it. A path that a change removes has its
//! [`PathSettings::retired`] token cancelled: its listeners' control channels close.

pub(crate) mod model;
pub(crate) mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use ferry_hc::auth::Rules;
use tokio_util::sync::CancellationToken;

pub(crate) use self::model::{Entity, Kind, Model, RuleRecord, Scope};
pub(crate) use self::store::Store;
pub use self::store::StoreError;
use crate::config::Config;
use crate::network::NetworkRules;
use crate::pairing::{PathSettings, normalize};

/// What the data plane reads: the rules and paths in force.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Namespace-wide rules.
    pub(crate) namespace_rules: Rules,
    /// Lowercased name → settings.
    pub(crate) paths: HashMap<String, Arc<PathSettings>>,
    /// The namespace's IP rules.
    pub(crate) network: NetworkRules,
}

/// The live entities of a namespace, kept in a store.
pub(crate) struct Catalog {
    view: RwLock<Arc<View>>,
    model: Mutex<Model>,
    store: Box<dyn Store>,
    grace: u64,
    request_timeout: Duration,
    /// Counts changes; the data plane's caches of verified tokens compare it.
    generation: AtomicU64,
    /// Held by the one change being written.
    writer: Mutex<()>,
    /// The shared store's revision the watch has brought in.
    taken_in: AtomicI64,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens `store`, loads what it holds and lays the configuration's rules and paths over
    /// it (marked as seeded: the file owns them, and they are never stored).
    pub(crate) fn open(config: &Config, store: Box<dyn Store>) -> Result<Self, StoreError> {
        let stored = Model::decode(store.load()?)?;
        let seeded = Model::seed(config, &stored, model::now_ms());
        let catalog = Self {
            view: RwLock::default(),
            model: Mutex::new(Model::default()),
            store,
            grace: config.timeouts.token_grace.as_secs(),
            request_timeout: config.timeouts.request,
            generation: AtomicU64::new(0),
            writer: Mutex::new(()),
            taken_in: AtomicI64::new(0),
        };
        catalog.install(&mut catalog.lock(), seeded);
        Ok(catalog)
    }

    /// A catalog of the configuration alone, in memory.
    #[cfg(test)]
    pub(crate) fn from_config(config: &Config) -> Self {
        Self::open(config, Box::new(store::Memory)).expect("the memory store cannot fail")
    }

    /// The entities in force.
    pub(crate) fn view(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many changes the catalog has seen.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads the model.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Model) -> R) -> R {
        f(&self.lock())
    }

    /// Applies `change` to a copy of the model; if it succeeds, writes what changed to the
    /// store and only then puts it in force. Blocks on the store: call it off the async
    /// threads.
    ///
    /// Changes are written one at a time (`writer`), but the model's own lock is held only
    /// to copy it and to install the result, never across the store's I/O: readers on the
    /// async threads, and the cluster's watch taking in other nodes' writes, never wait on
    /// a disk or a network.
    pub(crate) fn update<R, E: From<StoreError>>(
        &self,
        change: impl FnOnce(&mut Model) -> Result<R, E>,
    ) -> Result<R, E> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.lock().clone();
        let mut next = before.clone();
        let result = change(&mut next)?;
        if next == before {
            return Ok(result);
        }
        let (puts, deletes) = before.diff(&next);
        let revision = if puts.is_empty() && deletes.is_empty() {
            None
        } else {
            self.store.apply(&puts, &deletes)?
        };
        let mut model = self.lock();
        // A shared store's watch may have brought this write, and later ones, already; else
        // the write goes on top of what the watch brought so far, all of it older.
        if revision.is_some_and(|r| self.taken_in.load(Ordering::Acquire) >= r) {
            return Ok(result);
        }
        let merged = if *model == before {
            next
        } else {
            let mut merged = model.clone();
            for (key, value) in &puts {
                merged.record(key, Some(value))?;
            }
            for key in &deletes {
                merged.record(key, None)?;
            }
            merged
        };
        self.install(&mut model, merged);
        Ok(result)
    }

    /// Lays a new configuration's rules and paths over what the management API made: the
    /// file's records are replaced whole (a path it no longer declares is retired), the API's
    /// stay. An API record the old file shadowed comes back at the next start.
    pub(crate) fn reseed(&self, config: &Config) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut model = self.lock();
        let next = Model::seed(config, &model, model::now_ms());
        if next != *model {
            self.install(&mut model, next);
        }
    }

    /// Takes in records another node wrote to the shared store (`None`: deleted), as of the
    /// store's `revision`, without writing them back. With `whole`, they are every record
    /// there is: the others go. A record that does not decode is skipped and logged.
    pub(crate) fn take_in(
        &self,
        records: &[(String, Option<Vec<u8>>)],
        whole: bool,
        revision: i64,
    ) {
        let mut model = self.lock();
        let mut next = if whole {
            model.seeded_only()
        } else {
            model.clone()
        };
        for (key, value) in records {
            if let Err(e) = next.record(key, value.as_deref()) {
                tracing::warn!(error = %e, "entity record from the cluster store skipped");
            }
        }
        self.taken_in.fetch_max(revision, Ordering::AcqRel);
        if next != *model {
            self.install(&mut model, next);
        }
    }

    /// Puts `next` in force. The caller holds the model's lock throughout, so two changes
    /// install their views in the order they were written.
    fn install(&self, model: &mut Model, next: Model) {
        let view = self.build(&next);
        let mut current = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Paths that are gone, or are now a different kind of entity, retire their listeners.
        for (name, old) in &current.paths {
            if view.paths.get(name).is_none_or(|new| new.kind != old.kind) {
                old.retired.cancel();
            }
        }
        *current = Arc::new(view);
        *model = next;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn build(&self, model: &Model) -> View {
        let current = self.view();
        let namespace_rules =
            Rules::new(model.rules.values().map(RuleRecord::rule).collect()).with_grace(self.grace);
        let paths = model
            .entities
            .iter()
            .map(|(key, entity)| {
                let mut rules = namespace_rules.clone();
                rules.extend(entity.rules.values().map(RuleRecord::rule));
                // A path that stays keeps its token, so its listeners stay connected.
                let retired = current
                    .paths
                    .get(key)
                    .filter(|old| old.kind == entity.kind)
                    .map_or_else(CancellationToken::new, |old| old.retired.clone());
                let settings = PathSettings {
                    name: entity.name.clone(),
                    anonymous_senders: !entity.requires_client_authorization,
                    rules,
                    max_listeners: entity.max_listeners,
                    request_timeout: entity
                        .request_timeout_ms
                        .map_or(self.request_timeout, Duration::from_millis),
                    fan_out: entity.fan_out,
                    network: entity.network.clone(),
                    kind: entity.kind,
                    retired,
                };
                (key.clone(), Arc::new(settings))
            })
            .collect();
        View {
            namespace_rules,
            paths,
            network: model
                .network
                .get(model::NETWORK)
                .map(|n| n.rules.clone())
                .unwrap_or_default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        // Each write replaces the model whole, so a poisoned lock still holds a whole model.
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key a path is filed under.
pub(crate) fn key(name: &str) -> String {
    normalize(name)
}

#[cfg(test)]
mod tests {
    use ferry_hc::{Rights, Rule};

    use super::*;
    use crate::config::PathConfig;

    fn config() -> Config {
        let mut config = Config::new("ns");
        config.rules = vec![Rule::new("root", "k", Rights::MANAGE)];
        config.paths = vec![PathConfig::new("orders")];
        config
    }

    #[test]
    fn a_removed_path_retires_its_listeners_and_a_changed_one_keeps_them() {
        let catalog = Catalog::from_config(&config());
        let orders = catalog.view().paths["orders"].clone();
        catalog
            .update(|m| {
                m.put_entity(Entity::new("stock", Kind::HybridConnection, 1), 1)
                    .map_err(|_| StoreError::Corrupt("test".into()))
            })
            .unwrap();
        assert!(!orders.retired.is_cancelled());
        let stock = catalog.view().paths["stock"].clone();
        catalog
            .update(|m| {
                m.entities.remove("stock");
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert!(stock.retired.is_cancelled());
        assert!(!catalog.view().paths.contains_key("stock"));
        assert!(!orders.retired.is_cancelled());
    }

    #[test]
    fn a_failed_change_changes_nothing() {
        let catalog = Catalog::from_config(&config());
        let before = catalog.generation();
        let r: Result<(), StoreError> = catalog.update(|m| {
            m.entities.clear();
            Err(StoreError::Corrupt("refused".into()))
        });
        assert!(r.is_err());
        assert_eq!(catalog.generation(), before);
        assert!(catalog.view().paths.contains_key("orders"));
    }
}
