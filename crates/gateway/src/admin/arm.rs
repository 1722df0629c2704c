//! Azure Relay's resource-manager routes and JSON shapes over the catalog.
//!
//! `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Relay/namespaces/{ns}/…`: the
//! subscription and resource-group segments are accepted whatever they say and echoed back
//! in resource ids; `{ns}` must name this gateway's namespace (its host, or the host's first
//! label, which is how the namespace is named in answers). Fixed segments ignore case, as
//! Azure's do.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Failure, Reply, empty, json};
use crate::catalog::model::{
    Invalid, MAX_ENTITY_NAME, MAX_RULE_NAME, MAX_USER_METADATA, RelayType, now_ms, rfc3339,
};
use crate::catalog::model::{NETWORK, NetworkRecord};
use crate::catalog::{Entity, Kind, Model, RuleRecord, Scope, StoreError, key};
use crate::config::random_key;
use crate::network::{IpAction, IpNet, IpRule, MAX_IP_RULES, NetworkRules};
use crate::state::Shared;

/// The `api-version`s answered: those Microsoft's SDKs for Relay have sent.
pub(crate) const API_VERSIONS: &[&str] = &[
    "2016-07-01",
    "2017-04-01",
    "2018-01-01-preview",
    "2021-11-01",
    "2024-01-01",
    "2026-01-01",
];

/// Hybrid connections or WCF relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hybrid,
    Wcf,
}

impl Family {
    fn segment(self) -> &'static str {
        match self {
            Self::Hybrid => "hybridConnections",
            Self::Wcf => "wcfRelays",
        }
    }

    fn kind_type(self) -> &'static str {
        match self {
            Self::Hybrid => "Microsoft.Relay/namespaces/hybridconnections",
            Self::Wcf => "Microsoft.Relay/namespaces/wcfrelays",
        }
    }

    fn holds(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Self::Hybrid, Kind::HybridConnection) | (Self::Wcf, Kind::WcfRelay(_))
        )
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid connection",
            Self::Wcf => "WCF relay",
        }
    }
}

/// Who a rule belongs to.
#[derive(Clone, Debug)]
enum Owner {
    Namespace,
    Entity(Family, String),
}

impl Owner {
    fn scope(&self) -> Scope {
        match self {
            Self::Namespace => Scope::Namespace,
            Self::Entity(_, name) => Scope::Entity(name.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum KeysOp {
    List,
    Regenerate,
}

/// What a request addresses.
#[derive(Debug)]
enum Target {
    Operations,
    Namespaces,
    Namespace,
    NetworkRules,
    Entities(Family),
    Entity(Family, String),
    Rules(Owner),
    Rule(Owner, String),
    Keys(Owner, String, KeysOp),
}

/// One request's context: the resource-id prefix it was addressed with.
struct Call<'a> {
    shared: &'a Arc<Shared>,
    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Relay/namespaces`.
    namespaces: String,
}

pub(super) async fn route(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<Reply, Failure> {
    api_version(parts.uri.query().unwrap_or(""))?;
    let segments: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (sub, rg, target) = parse(&segs, &shared.config.namespace)?;
    let call = Call {
        shared,
        namespaces: format!(
            "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Relay/namespaces",
            rg.unwrap_or("ferry")
        ),
    };
    call.dispatch(&parts.method, target, body).await
}

fn api_version(query: &str) -> Result<(), Failure> {
    let version = url_query(query, "api-version").ok_or_else(|| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    })?;
    if API_VERSIONS.contains(&version.as_str()) {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{version}' is invalid. The supported versions are '{}'.",
                API_VERSIONS.join(",")
            ),
        ))
    }
}

fn url_query(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The namespace's name in the API: its host's first label.
pub(crate) fn namespace_name(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

fn is(seg: &str, fixed: &str) -> bool {
    seg.eq_ignore_ascii_case(fixed)
}

/// Parses a path into subscription, resource group and target.
fn parse<'a>(
    segs: &[&'a str],
    namespace: &str,
) -> Result<(&'a str, Option<&'a str>, Target), Failure> {
    let unknown = || Failure::not_found("no such resource or operation");
    match segs {
        [p, rp, op] if is(p, "providers") && is(rp, "Microsoft.Relay") && is(op, "operations") => {
            Ok(("", None, Target::Operations))
        }
        [s, sub, p, rp, ns]
            if is(s, "subscriptions")
                && is(p, "providers")
                && is(rp, "Microsoft.Relay")
                && is(ns, "namespaces") =>
        {
            Ok((sub, None, Target::Namespaces))
        }
        [s, sub, r, rg, p, rp, n, rest @ ..]
            if is(s, "subscriptions")
                && is(r, "resourceGroups")
                && is(p, "providers")
                && is(rp, "Microsoft.Relay")
                && is(n, "namespaces") =>
        {
            let target = match rest {
                [] => Target::Namespaces,
                [ns, rest @ ..] => {
                    if !(ns.eq_ignore_ascii_case(namespace)
                        || ns.eq_ignore_ascii_case(namespace_name(namespace)))
                    {
                        return Err(Failure::new(
                            StatusCode::NOT_FOUND,
                            "ResourceNotFound",
                            format!(
                                "The namespace '{ns}' was not found: this gateway serves '{}'.",
                                namespace_name(namespace)
                            ),
                        ));
                    }
                    namespace_target(rest).ok_or_else(unknown)?
                }
            };
            Ok((sub, Some(rg), target))
        }
        _ => Err(unknown()),
    }
}

fn namespace_target(rest: &[&str]) -> Option<Target> {
    let family = |s: &str| {
        if is(s, "hybridConnections") {
            Some(Family::Hybrid)
        } else if is(s, "wcfRelays") {
            Some(Family::Wcf)
        } else {
            None
        }
    };
    let rules = |owner: Owner, rest: &[&str]| match rest {
        [] => Some(Target::Rules(owner)),
        [name] => Some(Target::Rule(owner, (*name).to_owned())),
        [name, op] if is(op, "listKeys") => {
            Some(Target::Keys(owner, (*name).to_owned(), KeysOp::List))
        }
        [name, op] if is(op, "regenerateKeys") => {
            Some(Target::Keys(owner, (*name).to_owned(), KeysOp::Regenerate))
        }
        _ => None,
    };
    match rest {
        [] => Some(Target::Namespace),
        [n, d] if is(n, "networkRuleSets") && is(d, "default") => Some(Target::NetworkRules),
        [a, rest @ ..] if is(a, "authorizationRules") => rules(Owner::Namespace, rest),
        [f] => family(f).map(Target::Entities),
        [f, name] => family(f).map(|f| Target::Entity(f, (*name).to_owned())),
        [f, name, a, rest @ ..] if is(a, "authorizationRules") => {
            let f = family(f)?;
            rules(Owner::Entity(f, (*name).to_owned()), rest)
        }
        _ => None,
    }
}

/// A refusal from the model, in the API's terms.
impl From<Invalid> for Failure {
    fn from(e: Invalid) -> Self {
        let message = e.to_string();
        match e {
            Invalid::Limit(_) => Self::new(StatusCode::BAD_REQUEST, "QuotaExceeded", message),
            Invalid::Seeded(_) | Invalid::Taken(_) => {
                Self::new(StatusCode::CONFLICT, "Conflict", message)
            }
            Invalid::Missing(_) => Self::not_found(message),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "entity store write failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "the entity store could not be written; nothing was changed",
        )
    }
}

impl Call<'_> {
    async fn dispatch(
        &self,
        method: &Method,
        target: Target,
        body: &Bytes,
    ) -> Result<Reply, Failure> {
        let ok = |v: Value| Ok(json(StatusCode::OK, &v));
        match (method, target) {
            (&Method::GET, Target::Operations) => ok(operations()),
            (&Method::GET, Target::Namespaces) => {
                ok(json!({ "value": [self.namespace()], "nextLink": null }))
            }
            (&Method::GET, Target::Namespace) => ok(self.namespace()),
            (&Method::PUT | &Method::PATCH, Target::Namespace) => {
                parse_body(body)?;
                ok(self.namespace())
            }
            (&Method::DELETE, Target::Namespace) => Err(Failure::new(
                StatusCode::CONFLICT,
                "Conflict",
                "a Ferry gateway serves the one namespace its configuration names; it is not deleted through the API",
            )),
            (&Method::GET, Target::NetworkRules) => ok(self.network_rules()),
            (&Method::GET, Target::Entities(f)) => {
                let list = self.shared.catalog.read(|m| {
                    m.entities
                        .values()
                        .filter(|e| f.holds(e.kind))
                        .map(|e| self.entity(f, e))
                        .collect::<Vec<_>>()
                });
                ok(json!({ "value": list, "nextLink": null }))
            }
            (&Method::GET, Target::Entity(f, name)) => {
                let found = self.shared.catalog.read(|m| {
                    m.entities
                        .get(&key(&name))
                        .filter(|e| f.holds(e.kind))
                        .map(|e| self.entity(f, e))
                });
                found.map_or_else(|| Err(missing(f.noun(), &name)), ok)
            }
            (&Method::PUT, Target::Entity(f, name)) => {
                let entity = entity_from(f, &name, &parse_body(body)?)?;
                let stored = self
                    .write(move |m| {
                        m.put_entity(entity.clone(), now_ms())?;
                        Ok(m.entities[&key(&entity.name)].clone())
                    })
                    .await?;
                ok(self.entity(f, &stored))
            }
            (&Method::DELETE, Target::Entity(f, name)) => {
                let deleted = self
                    .write(move |m| match m.entities.get(&key(&name)) {
                        Some(e) if !f.holds(e.kind) => Ok(false),
                        Some(e) if e.seeded => Err(Invalid::Seeded(e.name.clone()).into()),
                        Some(_) => Ok(m.entities.remove(&key(&name)).is_some()),
                        None => Ok(false),
                    })
                    .await?;
                Ok(deletion(deleted))
            }
            (&Method::GET, Target::Rules(owner)) => {
                let scope = owner.scope();
                // Copied out first: shaping a rule reads the catalog again.
                let rules = self.shared.catalog.read(|m| {
                    self.owned(m, &owner)?;
                    Ok::<_, Failure>(
                        m.rules(&scope)
                            .into_iter()
                            .flat_map(|r| r.values().cloned())
                            .collect::<Vec<_>>(),
                    )
                })?;
                let list: Vec<_> = rules.iter().map(|r| self.rule(&owner, r)).collect();
                ok(json!({ "value": list, "nextLink": null }))
            }
            (&Method::GET, Target::Rule(owner, name)) => {
                let rule = self.find_rule(&owner, &name)?;
                ok(self.rule(&owner, &rule))
            }
            (&Method::PUT, Target::Rule(owner, name)) => {
                valid_rule_name(&name)?;
                let rights = rights_from(&parse_body(body)?)?;
                let scope = owner.scope();
                let check = owner.clone();
                let stored = self
                    .write(move |m| {
                        owned_in(m, &check)?;
                        let now = now_ms();
                        let record = RuleRecord {
                            name: name.clone(),
                            primary_key: random_key(),
                            secondary_key: random_key(),
                            rights,
                            created_ms: now,
                            updated_ms: now,
                            seeded: false,
                        };
                        m.put_rule(&scope, record, now)?;
                        Ok(m.rules(&scope).expect("just written")[&key(&name)].clone())
                    })
                    .await?;
                ok(self.rule(&owner, &stored))
            }
            (&Method::DELETE, Target::Rule(owner, name)) => {
                let scope = owner.scope();
                let check = owner.clone();
                let deleted = self
                    .write(move |m| {
                        owned_in(m, &check)?;
                        let rules = m.rules_mut(&scope)?;
                        match rules.get(&key(&name)) {
                            Some(r) if r.seeded => Err(Invalid::Seeded(r.name.clone()).into()),
                            Some(_) => Ok(rules.remove(&key(&name)).is_some()),
                            None => Ok(false),
                        }
                    })
                    .await?;
                Ok(deletion(deleted))
            }
            (&Method::POST, Target::Keys(owner, name, KeysOp::List)) => {
                let rule = self.find_rule(&owner, &name)?;
                ok(self.keys(&owner, &rule))
            }
            (&Method::POST, Target::Keys(owner, name, KeysOp::Regenerate)) => {
                let (primary, new) = regenerate_from(&parse_body(body)?)?;
                let scope = owner.scope();
                let check = owner.clone();
                let rule = self
                    .write(move |m| {
                        owned_in(m, &check)?;
                        let rules = m.rules_mut(&scope)?;
                        let rule = rules
                            .get_mut(&key(&name))
                            .ok_or_else(|| missing("authorization rule", &name))?;
                        if rule.seeded {
                            return Err(Invalid::Seeded(rule.name.clone()).into());
                        }
                        // Only the named key changes: tokens signed with the other one go
                        // on working, so clients move to it before the next rotation.
                        if primary {
                            rule.primary_key = new;
                        } else {
                            rule.secondary_key = new;
                        }
                        rule.updated_ms = now_ms();
                        Ok(rule.clone())
                    })
                    .await?;
                ok(self.keys(&owner, &rule))
            }
            (&Method::PUT, Target::NetworkRules) => {
                let rules = network_from(&parse_body(body)?)?;
                self.write(move |m| {
                    if m.network.get(NETWORK).is_some_and(|n| n.seeded) {
                        return Err(Failure::new(
                            StatusCode::CONFLICT,
                            "Conflict",
                            "the network rules are declared in the gateway's configuration file; change them there",
                        ));
                    }
                    m.network.insert(
                        NETWORK.to_owned(),
                        NetworkRecord {
                            rules,
                            updated_ms: now_ms(),
                            seeded: false,
                        },
                    );
                    Ok(())
                })
                .await?;
                ok(self.network_rules())
            }
            _ => Err(Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not allowed on this resource"),
            )),
        }
    }

    /// Runs `change` on the catalog off the async threads (the store writes to disk).
    async fn write<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Model) -> Result<R, Failure> + Send + 'static,
    ) -> Result<R, Failure> {
        let catalog = self.shared.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.update(change))
            .await
            .map_err(|_| {
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "the change did not finish",
                )
            })?
    }

    fn owned(&self, m: &Model, owner: &Owner) -> Result<(), Failure> {
        owned_in(m, owner)
    }

    fn find_rule(&self, owner: &Owner, name: &str) -> Result<RuleRecord, Failure> {
        self.shared.catalog.read(|m| {
            self.owned(m, owner)?;
            m.rules(&owner.scope())
                .and_then(|rules| rules.get(&key(name)))
                .cloned()
                .ok_or_else(|| missing("authorization rule", name))
        })
    }

    fn namespace_id(&self) -> String {
        format!(
            "{}/{}",
            self.namespaces,
            namespace_name(&self.shared.config.namespace)
        )
    }

    fn namespace(&self) -> Value {
        let ns = &self.shared.config.namespace;
        let created = self
            .shared
            .catalog
            .read(|m| m.rules.values().map(|r| r.created_ms).min())
            .unwrap_or_else(now_ms);
        let id = self.namespace_id();
        json!({
            "id": id,
            "name": namespace_name(ns),
            "type": "Microsoft.Relay/namespaces",
            "location": "ferry",
            "tags": {},
            "sku": { "name": "Standard", "tier": "Standard" },
            "properties": {
                "provisioningState": "Succeeded",
                "status": "Active",
                "createdAt": rfc3339(created),
                "updatedAt": rfc3339(self.shared.catalog.read(|m| {
                    m.rules.values().map(|r| r.updated_ms).chain(m.entities.values().map(|e| e.updated_ms)).max()
                }).unwrap_or(created)),
                "serviceBusEndpoint": format!("https://{}/", self.endpoint_host()),
                "metricId": format!("ferry:{}", namespace_name(ns)),
                "publicNetworkAccess": "Enabled",
                "minimumTlsVersion": "1.2",
            }
        })
    }

    fn network_rules(&self) -> Value {
        let rules = self.shared.catalog.view().network.clone();
        let ip_rules: Vec<Value> = rules
            .rules
            .iter()
            .map(|r| json!({ "ipMask": r.net.to_string(), "action": r.action.name() }))
            .collect();
        json!({
            "id": format!("{}/networkRuleSets/default", self.namespace_id()),
            "name": "default",
            "type": "Microsoft.Relay/Namespaces/NetworkRuleSets",
            "properties": {
                "defaultAction": rules.default_action.name(),
                "publicNetworkAccess": "Enabled",
                "trustedServiceAccessEnabled": false,
                "ipRules": ip_rules,
            }
        })
    }

    fn entity(&self, f: Family, e: &Entity) -> Value {
        let listeners = self.shared.pairing.listener_count(&e.name);
        let mut properties = json!({
            "createdAt": rfc3339(e.created_ms),
            "updatedAt": rfc3339(e.updated_ms),
            "listenerCount": listeners,
            "requiresClientAuthorization": e.requires_client_authorization,
            "userMetadata": e.user_metadata,
        });
        if let Kind::WcfRelay(relay_type) = e.kind {
            properties["isDynamic"] = json!(false);
            properties["relayType"] = json!(relay_type.name());
            properties["requiresTransportSecurity"] = json!(e.requires_transport_security);
        }
        json!({
            "id": format!("{}/{}/{}", self.namespace_id(), f.segment(), e.name),
            "name": e.name,
            "type": f.kind_type(),
            "location": "ferry",
            "properties": properties,
        })
    }

    fn owner_id(&self, owner: &Owner) -> (String, String) {
        match owner {
            Owner::Namespace => (
                self.namespace_id(),
                "Microsoft.Relay/namespaces/authorizationrules".to_owned(),
            ),
            Owner::Entity(f, name) => {
                let canonical = self
                    .shared
                    .catalog
                    .read(|m| m.entities.get(&key(name)).map(|e| e.name.clone()))
                    .unwrap_or_else(|| name.clone());
                (
                    format!("{}/{}/{canonical}", self.namespace_id(), f.segment()),
                    format!("{}/authorizationrules", f.kind_type()),
                )
            }
        }
    }

    fn rule(&self, owner: &Owner, r: &RuleRecord) -> Value {
        let (parent, kind) = self.owner_id(owner);
        json!({
            "id": format!("{parent}/authorizationRules/{}", r.name),
            "name": r.name,
            "type": kind,
            "properties": { "rights": r.rights },
        })
    }

    /// `host[:port]` clients reach the namespace at: the TLS port's, unless it is 443.
    fn endpoint_host(&self) -> String {
        let ns = &self.shared.config.namespace;
        match self.shared.config.tls_addr.map(|a| a.port()) {
            Some(443) | None => ns.clone(),
            Some(port) => format!("{ns}:{port}"),
        }
    }

    fn keys(&self, owner: &Owner, r: &RuleRecord) -> Value {
        let entity = match owner {
            Owner::Namespace => String::new(),
            Owner::Entity(_, name) => format!(";EntityPath={name}"),
        };
        let connection = |key: &str| {
            format!(
                "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={key}{entity}",
                self.endpoint_host(),
                r.name
            )
        };
        json!({
            "keyName": r.name,
            "primaryKey": r.primary_key,
            "secondaryKey": r.secondary_key,
            "primaryConnectionString": connection(&r.primary_key),
            "secondaryConnectionString": connection(&r.secondary_key),
        })
    }
}

/// Whether `owner` exists (its entity, of its family).
fn owned_in(m: &Model, owner: &Owner) -> Result<(), Failure> {
    match owner {
        Owner::Namespace => Ok(()),
        Owner::Entity(f, name) => match m.entities.get(&key(name)) {
            Some(e) if f.holds(e.kind) => Ok(()),
            _ => Err(missing(f.noun(), name)),
        },
    }
}

/// A DELETE's answer: 200 when something was deleted, 204 when there was nothing (Azure's).
fn deletion(deleted: bool) -> Reply {
    empty(if deleted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    })
}

fn missing(noun: &str, name: &str) -> Failure {
    Failure::not_found(format!("The {noun} '{name}' could not be found."))
}

fn parse_body(body: &Bytes) -> Result<Value, Failure> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: {e}"),
        )
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content must be a JSON object.",
        ))
    }
}

fn property<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get("properties")
        .and_then(|p| p.get(name))
        .filter(|v| !v.is_null())
}

fn bool_property(body: &Value, name: &str, default: bool) -> Result<bool, Failure> {
    property(body, name).map_or(Ok(default), |v| {
        v.as_bool()
            .ok_or_else(|| Failure::bad_request(format!("properties.{name} must be true or false")))
    })
}

fn valid_entity_name(name: &str) -> Result<(), Failure> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty()
        || name.len() > MAX_ENTITY_NAME
        || !name.chars().all(ok_char)
        || !ends(name.chars().next())
        || !ends(name.chars().last())
        || name.contains("//")
    {
        return Err(Failure::bad_request(format!(
            "The entity name '{name}' is invalid: 1 to {MAX_ENTITY_NAME} letters, digits, periods, hyphens, underscores and slashes, starting and ending with a letter or digit."
        )));
    }
    Ok(())
}

fn valid_rule_name(name: &str) -> Result<(), Failure> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty()
        || name.len() > MAX_RULE_NAME
        || !name.chars().all(ok_char)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(Failure::bad_request(format!(
            "The authorization rule name '{name}' is invalid: 1 to {MAX_RULE_NAME} letters, digits, periods, hyphens and underscores, starting with a letter or digit."
        )));
    }
    Ok(())
}

fn entity_from(f: Family, name: &str, body: &Value) -> Result<Entity, Failure> {
    valid_entity_name(name)?;
    let kind = match f {
        Family::Hybrid => Kind::HybridConnection,
        Family::Wcf => {
            let relay_type = match property(body, "relayType") {
                None => RelayType::NetTcp,
                Some(v) => v.as_str().and_then(RelayType::parse).ok_or_else(|| {
                    Failure::bad_request("properties.relayType must be 'NetTcp' or 'Http'")
                })?,
            };
            Kind::WcfRelay(relay_type)
        }
    };
    let mut entity = Entity::new(name, kind, now_ms());
    entity.requires_client_authorization =
        bool_property(body, "requiresClientAuthorization", true)?;
    entity.requires_transport_security =
        bool_property(body, "requiresTransportSecurity", f == Family::Wcf)?;
    if let Some(v) = property(body, "userMetadata") {
        let text = v
            .as_str()
            .ok_or_else(|| Failure::bad_request("properties.userMetadata must be a string"))?;
        if text.chars().count() > MAX_USER_METADATA {
            return Err(Failure::bad_request(format!(
                "properties.userMetadata is longer than {MAX_USER_METADATA} characters"
            )));
        }
        text.clone_into(&mut entity.user_metadata);
    }
    Ok(entity)
}

/// A network rule set's body: `defaultAction` (`Allow` when absent) and `ipRules`, each an
/// `ipMask` and an `action` (`Allow` when absent, as Azure's SDKs default it).
fn network_from(body: &Value) -> Result<NetworkRules, Failure> {
    let action = |v: Option<&Value>, what: &str| match v.filter(|v| !v.is_null()) {
        None => Ok(IpAction::Allow),
        Some(v) => v
            .as_str()
            .and_then(IpAction::parse)
            .ok_or_else(|| Failure::bad_request(format!("{what} must be 'Allow' or 'Deny'"))),
    };
    let default_action = action(property(body, "defaultAction"), "properties.defaultAction")?;
    let list = match property(body, "ipRules") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .ok_or_else(|| Failure::bad_request("properties.ipRules must be a list"))?
            .clone(),
    };
    if list.len() > MAX_IP_RULES {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "QuotaExceeded",
            format!("a network rule set holds at most {MAX_IP_RULES} IP rules"),
        ));
    }
    let rules = list
        .iter()
        .map(|r| {
            let mask = r
                .get("ipMask")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::bad_request("every IP rule needs an ipMask"))?;
            Ok(IpRule {
                net: IpNet::parse(mask).map_err(|e| Failure::bad_request(e.to_string()))?,
                action: action(r.get("action"), "ipRules[].action")?,
            })
        })
        .collect::<Result<_, Failure>>()?;
    Ok(NetworkRules {
        rules,
        default_action,
    })
}

fn rights_from(body: &Value) -> Result<Vec<String>, Failure> {
    let list = property(body, "rights")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Failure::bad_request("properties.rights must list Listen, Send or Manage")
        })?;
    let mut rights = Vec::new();
    for r in list {
        let parsed = r
            .as_str()
            .and_then(ferry_hc::Rights::parse)
            .ok_or_else(|| Failure::bad_request(format!("unknown right {r}")))?;
        let name = parsed.names().next().expect("one right").to_owned();
        if rights.contains(&name) {
            return Err(Failure::bad_request(format!(
                "the right {name} is listed twice"
            )));
        }
        rights.push(name);
    }
    if rights.is_empty() {
        return Err(Failure::bad_request("properties.rights must not be empty"));
    }
    let has = |n: &str| rights.iter().any(|r| r == n);
    if has("Manage") && !(has("Listen") && has("Send")) {
        return Err(Failure::bad_request(
            "a rule with Manage rights must also have Listen and Send",
        ));
    }
    rights.sort_by_key(|r| ["Listen", "Send", "Manage"].iter().position(|n| n == r));
    Ok(rights)
}

/// `keyType` (`PrimaryKey` / `SecondaryKey`) and the new key: the one given (44 characters
/// of base64, a 256-bit key, as Azure requires) or a fresh one.
fn regenerate_from(body: &Value) -> Result<(bool, String), Failure> {
    let primary = match body.get("keyType").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("PrimaryKey") => true,
        Some(t) if t.eq_ignore_ascii_case("SecondaryKey") => false,
        _ => {
            return Err(Failure::bad_request(
                "keyType must be 'PrimaryKey' or 'SecondaryKey'",
            ));
        }
    };
    let key = match body.get("key").filter(|v| !v.is_null()) {
        None => random_key(),
        Some(v) => {
            use base64::Engine as _;
            let text = v.as_str().unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD.decode(text);
            if text.len() != 44 || decoded.map(|d| d.len()) != Ok(32) {
                return Err(Failure::bad_request(
                    "key must be 44 characters of base64 (a 256-bit key)",
                ));
            }
            text.to_owned()
        }
    };
    Ok((primary, key))
}

fn operations() -> Value {
    let op = |name: &str, what: &str| {
        json!({
            "name": format!("Microsoft.Relay/{name}"),
            "display": { "provider": "Microsoft Relay", "resource": name.split('/').next().unwrap_or(name), "operation": what },
        })
    };
    json!({
        "value": [
            op("namespaces/read", "Get Namespace Resource"),
            op("namespaces/authorizationRules/read", "Get Namespace Authorization Rules"),
            op("namespaces/authorizationRules/write", "Create Namespace Authorization Rule"),
            op("namespaces/authorizationRules/delete", "Delete Namespace Authorization Rule"),
            op("namespaces/authorizationRules/listkeys/action", "List Namespace Authorization Rule Keys"),
            op("namespaces/authorizationRules/regenerateKeys/action", "Regenerate Namespace Authorization Rule Keys"),
            op("namespaces/hybridConnections/read", "Get Hybrid Connection"),
            op("namespaces/hybridConnections/write", "Create or Update Hybrid Connection"),
            op("namespaces/hybridConnections/delete", "Delete Hybrid Connection"),
            op("namespaces/wcfRelays/read", "Get WCF Relay"),
            op("namespaces/wcfRelays/write", "Create or Update WCF Relay"),
            op("namespaces/wcfRelays/delete", "Delete WCF Relay"),
        ],
        "nextLink": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_ignore_the_case_of_fixed_segments_and_check_the_namespace() {
        let path = "subscriptions/s/resourcegroups/rg/providers/microsoft.relay/Namespaces/ns/HybridConnections/a%2Fb/authorizationRules/r/listkeys";
        let segs: Vec<&str> = path.split('/').collect();
        let (_, rg, target) = parse(&segs, "ns.example.com").ok().unwrap();
        assert_eq!(rg, Some("rg"));
        assert!(matches!(
            target,
            Target::Keys(Owner::Entity(Family::Hybrid, _), _, KeysOp::List)
        ));
        let other: Vec<&str> =
            "subscriptions/s/resourceGroups/rg/providers/Microsoft.Relay/namespaces/elsewhere"
                .split('/')
                .collect();
        assert_eq!(
            parse(&other, "ns.example.com").err().unwrap().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn api_versions_are_checked() {
        assert!(api_version("api-version=2026-01-01").is_ok());
        assert_eq!(
            api_version("").err().unwrap().code,
            "MissingApiVersionParameter"
        );
        assert_eq!(
            api_version("api-version=1999-01-01").err().unwrap().code,
            "InvalidApiVersionParameter"
        );
    }

    #[test]
    fn names_azure_refuses_are_refused() {
        for bad in ["", "-a", "a-", "a b", "a//b", &"x".repeat(261), "é"] {
            assert!(valid_entity_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "orders", "erp/orders", "A.b_c-9"] {
            assert!(valid_entity_name(good).is_ok(), "{good:?}");
        }
        assert!(valid_rule_name("send-only").is_ok());
        assert!(valid_rule_name("a/b").is_err());
    }

    #[test]
    fn rights_follow_azure_rules() {
        let body = |r: Value| json!({ "properties": { "rights": r } });
        assert_eq!(
            rights_from(&body(json!(["send", "Listen"]))).ok().unwrap(),
            ["Listen", "Send"]
        );
        assert!(rights_from(&body(json!(["Manage"]))).is_err());
        assert!(rights_from(&body(json!(["Send", "Send"]))).is_err());
        assert!(rights_from(&body(json!([]))).is_err());
        assert!(rights_from(&body(json!(["Own"]))).is_err());
        assert!(rights_from(&json!({})).is_err());
    }

    #[test]
    fn a_given_key_must_be_a_256_bit_base64_key() {
        assert!(regenerate_from(&json!({ "keyType": "PrimaryKey", "key": "short" })).is_err());
        let key = random_key();
        assert_eq!(
            regenerate_from(&json!({ "keyType": "SecondaryKey", "key": key }))
                .ok()
                .unwrap(),
            (false, key)
        );
        assert!(regenerate_from(&json!({ "keyType": "Tertiary" })).is_err());
    }

    #[test]
    fn model_limits_are_refused_as_azure_refuses_them() {
        let f: Failure = Invalid::Seeded("x".into()).into();
        assert_eq!(f.status, StatusCode::CONFLICT);
        let f: Failure = Invalid::Limit(crate::catalog::model::MAX_RULES.to_string()).into();
        assert_eq!(f.status, StatusCode::BAD_REQUEST);
    }
}
