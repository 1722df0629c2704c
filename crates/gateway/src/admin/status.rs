//! The status page (`/`, `/status.js`) and what it polls (`/status`): namespaces, paths,
//! listeners and where they are, active connections, throughput over the last minutes and
//! the latest refusals.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::catalog::Kind;
use crate::catalog::model::{now_ms, rfc3339};
use crate::state::Shared;

/// The page: no external asset, no inline script.
pub(super) const PAGE: &str = include_str!("status.html");

/// Its script.
pub(super) const SCRIPT: &str = include_str!("status.js");

/// What the page shows, now.
pub(super) fn report(shared: &Shared) -> Value {
    // Every entity of the catalog, and the paths listened on that it does not name (dynamic
    // mode), by lowercased name.
    let mut paths: BTreeMap<String, (String, &'static str)> = shared.catalog.read(|m| {
        m.entities
            .iter()
            .map(|(key, e)| {
                let kind = match e.kind {
                    Kind::HybridConnection => "hybrid connection",
                    Kind::WcfRelay(_) => "WCF relay",
                };
                (key.clone(), (e.name.clone(), kind))
            })
            .collect()
    });
    for name in shared.pairing.listened() {
        paths
            .entry(crate::catalog::key(&name))
            .or_insert((name, "dynamic"));
    }
    let entities: Vec<Value> = paths
        .into_values()
        .map(|(name, kind)| {
            let listeners: Vec<Value> = shared
                .pairing
                .listeners_of(&name)
                .into_iter()
                .map(|(id, node)| json!({ "id": id, "node": node.as_deref() }))
                .collect();
            json!({
                "name": name,
                "kind": kind,
                "listenerCount": listeners.len(),
                "listeners": listeners,
                "activeConnections": shared.metrics.active(&name),
            })
        })
        .collect();
    json!({
        "namespace": shared.config.namespace,
        "node": shared.config.cluster.as_ref().map(|c| c.node.as_str()),
        "time": rfc3339(now_ms()),
        "entities": entities,
        "throughput": shared.metrics.samples(),
        "recentErrors": shared.metrics.recent(),
    })
}
