//! The entities as they are stored: plain data with serde, one record per key.
//!
//! Keys: `rule/{name}` for a namespace rule, `entity/{name}` for a hybrid connection or WCF
//! relay with its own rules inside. Names are filed lowercased (Azure's names ignore case)
//! and keep their spelling inside the record.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_hc::{Rights, Rule};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::config::Config;
use crate::network::NetworkRules;
use crate::pairing::normalize;

/// The name of the namespace's network rule set.
pub(crate) const NETWORK: &str = "default";

/// Most authorization rules a namespace or an entity may have (Azure's limit).
pub(crate) const MAX_RULES: usize = 12;

/// Most entities (hybrid connections and WCF relays together) in a namespace.
pub(crate) const MAX_ENTITIES: usize = 10_000;

/// Longest `userMetadata`, in characters (Azure's limit).
pub(crate) const MAX_USER_METADATA: usize = 1024;

/// Longest entity name (Azure's limit for a hybrid connection's name).
pub(crate) const MAX_ENTITY_NAME: usize = 260;

/// Longest rule name (Azure's).
pub(crate) const MAX_RULE_NAME: usize = 256;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which kind of entity a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A hybrid connection.
    HybridConnection,
    /// A WCF relay of the given type.
    WcfRelay(RelayType),
}

/// A WCF relay's binding family, as Azure names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RelayType {
    /// NetTcpRelayBinding and its kin.
    NetTcp,
    /// The HTTP relay bindings.
    Http,
}

impl RelayType {
    /// Azure's spelling.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NetTcp => "NetTcp",
            Self::Http => "Http",
        }
    }

    /// Parses Azure's spelling, ignoring case.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::NetTcp, Self::Http]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

/// Where a rule applies: the namespace, or one entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every path of the namespace.
    Namespace,
    /// One entity (its name, any case).
    Entity(String),
}

/// An authorization rule with its two keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RuleRecord {
    pub(crate) name: String,
    pub(crate) primary_key: String,
    pub(crate) secondary_key: String,
    /// `Listen`, `Send`, `Manage`.
    pub(crate) rights: Vec<String>,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    /// Declared by the configuration file, which owns it.
    #[serde(default)]
    pub(crate) seeded: bool,
}

// Keys are secrets: never printed.
impl std::fmt::Debug for RuleRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleRecord")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .field("seeded", &self.seeded)
            .finish_non_exhaustive()
    }
}

impl RuleRecord {
    /// The rule the data plane checks tokens with.
    pub(crate) fn rule(&self) -> Rule {
        let rights = self
            .rights
            .iter()
            .filter_map(|r| Rights::parse(r))
            .fold(Rights::NONE, |a, b| a | b);
        let rule = Rule::new(self.name.clone(), self.primary_key.clone(), rights);
        if self.secondary_key.is_empty() {
            rule
        } else {
            rule.with_secondary_key(self.secondary_key.clone())
        }
    }

    fn from_rule(rule: &Rule, now: u64) -> Self {
        Self {
            name: rule.name.clone(),
            primary_key: rule.primary_key().to_owned(),
            secondary_key: rule.secondary_key().unwrap_or_default().to_owned(),
            rights: rule.rights.names().map(str::to_owned).collect(),
            created_ms: now,
            updated_ms: now,
            seeded: true,
        }
    }
}

/// A hybrid connection or WCF relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entity {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// `false`: senders need no token.
    pub(crate) requires_client_authorization: bool,
    /// WCF relays: whether senders must use TLS (recorded and returned).
    #[serde(default)]
    pub(crate) requires_transport_security: bool,
    #[serde(default)]
    pub(crate) user_metadata: String,
    /// The entity's own rules, by lowercased name.
    #[serde(default)]
    pub(crate) rules: BTreeMap<String, RuleRecord>,
    pub(crate) max_listeners: usize,
    #[serde(default)]
    pub(crate) request_timeout_ms: Option<u64>,
    #[serde(default)]
    pub(crate) fan_out: bool,
    /// The path's own IP rules (from the file only: Azure's API has none per entity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) network: Option<NetworkRules>,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    #[serde(default)]
    pub(crate) seeded: bool,
}

impl Entity {
    /// An entity with Azure's defaults: senders need a token, 25 listeners.
    pub(crate) fn new(name: &str, kind: Kind, now: u64) -> Self {
        Self {
            name: name.trim_matches('/').to_owned(),
            kind,
            requires_client_authorization: true,
            requires_transport_security: false,
            user_metadata: String::new(),
            rules: BTreeMap::new(),
            max_listeners: ferry_hc::MAX_LISTENERS_PER_PATH,
            request_timeout_ms: None,
            fan_out: false,
            network: None,
            created_ms: now,
            updated_ms: now,
            seeded: false,
        }
    }
}

/// Records the configuration file may own.
trait Seeded {
    fn seeded(&self) -> bool;
}

impl Seeded for RuleRecord {
    fn seeded(&self) -> bool {
        self.seeded
    }
}

impl Seeded for Entity {
    fn seeded(&self) -> bool {
        self.seeded
    }
}

/// Why a change to the model was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// A limit would be passed.
    #[error("{0}")]
    Limit(String),
    /// The configuration file owns the entity.
    #[error("'{0}' is declared in the gateway's configuration file; change it there")]
    Seeded(String),
    /// A name already used by another kind of entity.
    #[error("the name '{0}' is taken by an entity of another kind")]
    Taken(String),
    /// No such entity.
    #[error("'{0}' was not found")]
    Missing(String),
}

/// The namespace's IP rules, as the API or the file set them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkRecord {
    pub(crate) rules: NetworkRules,
    pub(crate) updated_ms: u64,
    #[serde(default)]
    pub(crate) seeded: bool,
}

impl Seeded for NetworkRecord {
    fn seeded(&self) -> bool {
        self.seeded
    }
}

/// Every entity and rule of the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Model {
    /// Namespace rules, by lowercased name.
    pub(crate) rules: BTreeMap<String, RuleRecord>,
    /// Entities, by lowercased name.
    pub(crate) entities: BTreeMap<String, Entity>,
    /// The namespace's IP rules, under the one name Azure gives them: `default`.
    pub(crate) network: BTreeMap<String, NetworkRecord>,
}

impl Model {
    /// A model from the store's records.
    pub(crate) fn decode(records: Vec<(String, Vec<u8>)>) -> Result<Self, StoreError> {
        let mut model = Self::default();
        for (key, value) in records {
            model.record(&key, Some(&value))?;
        }
        Ok(model)
    }

    /// Puts (`Some`) or removes (`None`) the record stored under `key`. A record the
    /// configuration file declares is not replaced: the file owns the name.
    pub(crate) fn record(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        fn file<T: serde::de::DeserializeOwned + Seeded>(
            map: &mut BTreeMap<String, T>,
            key: &str,
            name: &str,
            value: Option<&[u8]>,
        ) -> Result<(), StoreError> {
            if map.get(name).is_some_and(Seeded::seeded) {
                return Ok(());
            }
            match value {
                Some(v) => {
                    let record = serde_json::from_slice(v)
                        .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                    map.insert(name.to_owned(), record);
                }
                None => drop(map.remove(name)),
            }
            Ok(())
        }
        if let Some(name) = key.strip_prefix("rule/") {
            file(&mut self.rules, key, name, value)
        } else if let Some(name) = key.strip_prefix("entity/") {
            file(&mut self.entities, key, name, value)
        } else if let Some(name) = key.strip_prefix("network/") {
            file(&mut self.network, key, name, value)
        } else {
            Err(StoreError::Corrupt(format!("unknown record {key}")))
        }
    }

    /// The records the configuration file declares, alone.
    pub(crate) fn seeded_only(&self) -> Self {
        Self {
            rules: self
                .rules
                .iter()
                .filter(|(_, r)| r.seeded)
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
            entities: self
                .entities
                .iter()
                .filter(|(_, e)| e.seeded)
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            network: self
                .network
                .iter()
                .filter(|(_, n)| n.seeded)
                .map(|(k, n)| (k.clone(), n.clone()))
                .collect(),
        }
    }

    /// `stored` with the configuration laid over it: the file's rules and paths replace
    /// stored ones of the same name (keeping their creation time), and records the file
    /// seeded earlier but declares no more are dropped. Records made through the API stay.
    pub(crate) fn seed(config: &Config, stored: &Self, now: u64) -> Self {
        let mut model = stored.clone();
        model.rules.retain(|_, r| !r.seeded);
        model.entities.retain(|_, e| !e.seeded);
        model.network.retain(|_, n| !n.seeded);
        if let Some(rules) = &config.network {
            model.network.insert(
                NETWORK.to_owned(),
                NetworkRecord {
                    rules: rules.clone(),
                    updated_ms: now,
                    seeded: true,
                },
            );
        }
        let created = |old: Option<u64>| old.unwrap_or(now);
        for rule in &config.rules {
            let key = normalize(&rule.name);
            let mut record = RuleRecord::from_rule(rule, now);
            record.created_ms = created(stored.rules.get(&key).map(|r| r.created_ms));
            model.rules.insert(key, record);
        }
        for path in &config.paths {
            let key = normalize(&path.name);
            let mut entity = Entity::new(&path.name, Kind::HybridConnection, now);
            entity.requires_client_authorization = !path.anonymous_senders;
            entity.max_listeners = path.max_listeners;
            entity.request_timeout_ms = path
                .request_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            entity.fan_out = path.fan_out;
            entity.network.clone_from(&path.network);
            entity.seeded = true;
            entity.created_ms = created(stored.entities.get(&key).map(|e| e.created_ms));
            entity.rules = path
                .rules
                .iter()
                .map(|r| (normalize(&r.name), RuleRecord::from_rule(r, now)))
                .collect();
            model.entities.insert(key, entity);
        }
        model
    }

    /// What to write to turn `self` into `next`: records to put, keys to delete. Records
    /// the configuration file declares are never stored: every start reads them from it.
    pub(crate) fn diff(&self, next: &Self) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
        fn side<T: Serialize + PartialEq + Seeded>(
            prefix: &str,
            old: &BTreeMap<String, T>,
            new: &BTreeMap<String, T>,
            puts: &mut Vec<(String, Vec<u8>)>,
            deletes: &mut Vec<String>,
        ) {
            let old: BTreeMap<_, _> = old.iter().filter(|(_, v)| !v.seeded()).collect();
            let new: BTreeMap<_, _> = new.iter().filter(|(_, v)| !v.seeded()).collect();
            for (k, v) in &new {
                if old.get(k) != Some(v) {
                    let bytes = serde_json::to_vec(v).expect("plain data serializes");
                    puts.push((format!("{prefix}{k}"), bytes));
                }
            }
            deletes.extend(
                old.keys()
                    .filter(|k| !new.contains_key(*k))
                    .map(|k| format!("{prefix}{k}")),
            );
        }
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        side("rule/", &self.rules, &next.rules, &mut puts, &mut deletes);
        side(
            "entity/",
            &self.entities,
            &next.entities,
            &mut puts,
            &mut deletes,
        );
        side(
            "network/",
            &self.network,
            &next.network,
            &mut puts,
            &mut deletes,
        );
        (puts, deletes)
    }

    /// The rules of `scope`, if it exists.
    pub(crate) fn rules(&self, scope: &Scope) -> Option<&BTreeMap<String, RuleRecord>> {
        match scope {
            Scope::Namespace => Some(&self.rules),
            Scope::Entity(name) => self.entities.get(&normalize(name)).map(|e| &e.rules),
        }
    }

    /// The rules of `scope` to change. A seeded entity's rules belong to the file.
    pub(crate) fn rules_mut(
        &mut self,
        scope: &Scope,
    ) -> Result<&mut BTreeMap<String, RuleRecord>, Invalid> {
        match scope {
            Scope::Namespace => Ok(&mut self.rules),
            Scope::Entity(name) => {
                let entity = self
                    .entities
                    .get_mut(&normalize(name))
                    .ok_or_else(|| Invalid::Missing(name.clone()))?;
                if entity.seeded {
                    return Err(Invalid::Seeded(entity.name.clone()));
                }
                Ok(&mut entity.rules)
            }
        }
    }

    /// Creates or replaces an entity (keeping its rules and creation time). Whether it was
    /// created.
    pub(crate) fn put_entity(&mut self, mut entity: Entity, now: u64) -> Result<bool, Invalid> {
        let key = normalize(&entity.name);
        match self.entities.get(&key) {
            Some(old) if old.seeded => return Err(Invalid::Seeded(old.name.clone())),
            Some(old) if old.kind != entity.kind => return Err(Invalid::Taken(old.name.clone())),
            Some(old) => {
                entity.created_ms = old.created_ms;
                entity.rules = old.rules.clone();
                entity.name = old.name.clone();
            }
            None if self.entities.len() >= MAX_ENTITIES => {
                return Err(Invalid::Limit(format!(
                    "a namespace holds at most {MAX_ENTITIES} entities"
                )));
            }
            None => entity.created_ms = now,
        }
        entity.updated_ms = now;
        let created = !self.entities.contains_key(&key);
        self.entities.insert(key, entity);
        Ok(created)
    }

    /// Creates or replaces a rule of `scope` (keeping its keys unless `rule` brings its own,
    /// and its creation time). Whether it was created.
    pub(crate) fn put_rule(
        &mut self,
        scope: &Scope,
        mut rule: RuleRecord,
        now: u64,
    ) -> Result<bool, Invalid> {
        let rules = self.rules_mut(scope)?;
        let key = normalize(&rule.name);
        match rules.get(&key) {
            Some(old) if old.seeded => return Err(Invalid::Seeded(old.name.clone())),
            Some(old) => {
                rule.created_ms = old.created_ms;
                rule.name = old.name.clone();
                rule.primary_key = old.primary_key.clone();
                rule.secondary_key = old.secondary_key.clone();
            }
            None if rules.len() >= MAX_RULES => {
                return Err(Invalid::Limit(format!(
                    "at most {MAX_RULES} authorization rules per namespace or entity"
                )));
            }
            None => rule.created_ms = now,
        }
        rule.updated_ms = now;
        let created = !rules.contains_key(&key);
        rules.insert(key, rule);
        Ok(created)
    }
}

/// `2026-12-07T16:18:24.123Z` for milliseconds since the epoch (proleptic Gregorian, UTC).
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathConfig;

    #[test]
    fn times_print_as_azure_writes_them() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_660_304_123), "2026-12-07T16:18:24.123Z");
    }

    #[test]
    fn seeding_replaces_what_the_file_declared_and_keeps_what_the_api_made() {
        let mut config = Config::new("ns");
        config.rules = vec![Rule::new("root", "k1", Rights::MANAGE)];
        config.paths = vec![PathConfig::new("Orders")];
        let first = Model::seed(&config, &Model::default(), 1);
        assert!(first.entities["orders"].seeded);
        let mut made = first;
        made.put_entity(Entity::new("api-made", Kind::HybridConnection, 2), 2)
            .unwrap();
        config.paths = vec![PathConfig::new("stock")];
        config.rules = vec![Rule::new("root", "k2", Rights::MANAGE)];
        let second = Model::seed(&config, &made, 3);
        let names: Vec<_> = second.entities.keys().map(String::as_str).collect();
        assert_eq!(names, ["api-made", "stock"]);
        assert_eq!(second.rules["root"].primary_key, "k2");
        assert_eq!(second.rules["root"].created_ms, 1);
        // Only what the API made is stored: the file's records come from the file.
        let (puts, deletes) = made.diff(&second);
        assert!(
            puts.is_empty() && deletes.is_empty(),
            "{puts:?} {deletes:?}"
        );
        let records = Model::default().diff(&second).0;
        let keys: Vec<_> = records.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["entity/api-made"]);
        let reread = Model::seed(&config, &Model::decode(records).unwrap(), 3);
        assert_eq!(reread.entities["api-made"], second.entities["api-made"]);
        assert_eq!(reread.entities.len(), 2);
    }

    #[test]
    fn the_file_owns_what_it_seeded() {
        let mut config = Config::new("ns");
        config.paths = vec![PathConfig::new("orders")];
        let mut model = Model::seed(&config, &Model::default(), 1);
        let replace = model.put_entity(Entity::new("ORDERS", Kind::HybridConnection, 2), 2);
        assert_eq!(replace, Err(Invalid::Seeded("orders".into())));
        let rule = Scope::Entity("orders".into());
        assert!(matches!(model.rules_mut(&rule), Err(Invalid::Seeded(_))));
        model
            .put_entity(Entity::new("svc", Kind::WcfRelay(RelayType::NetTcp), 3), 3)
            .unwrap();
        let clash = model.put_entity(Entity::new("SVC", Kind::HybridConnection, 4), 4);
        assert_eq!(clash, Err(Invalid::Taken("svc".into())));
    }
}
