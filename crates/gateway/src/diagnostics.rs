//! Diagnostic events: one log event for each thing Azure Relay's diagnostic logs record
//! (category `HybridConnectionsEvent`), under its operation name, at target
//! `ferry::diagnostics`, so an operator can keep them apart from the rest of the log
//! (`RUST_LOG=ferry::diagnostics=info`) and read them as JSON lines (`--log-format json`).
//!
//! Every error the gateway answers a client with carries a tracking id (Azure's
//! `TrackingId:…, SystemTracker:…, Timestamp:…` suffix), and the same id is in the event:
//! one failed request can be found in the log from what its client was told.

use std::net::SocketAddr;

use tracing::info;

use crate::catalog::model::{now_ms, rfc3339};
use crate::pairing::new_id;
use crate::state::Shared;

/// What happened, named as Azure's diagnostic logs name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// A listener's control channel is open.
    NewListenerRegistered,
    /// A listener could not register (no such path, full, refused).
    NewListenerRegistrationFailed,
    /// A listener's control channel closed.
    ListenerUnregistered,
    /// A sender and a listener were joined.
    SenderListenerConnectionEstablished,
    /// A listener turned a sender down.
    ListenerRejectedConnection,
    /// A genuine token without the right, audience or address for what it asked.
    AuthorizationFailed,
    /// A token missing, malformed, expired or not signed by a known key.
    InvalidSasToken,
    /// A sender's connection or request the gateway could not serve.
    ProcessingRequestFailed,
}

impl Operation {
    /// Azure's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NewListenerRegistered => "NewListenerRegistered",
            Self::NewListenerRegistrationFailed => "NewListenerRegistrationFailed",
            Self::ListenerUnregistered => "ListenerUnregistered",
            Self::SenderListenerConnectionEstablished => "SenderListenerConnectionEstablished",
            Self::ListenerRejectedConnection => "ListenerRejectedConnection",
            Self::AuthorizationFailed => "AuthorizationFailed",
            Self::InvalidSasToken => "InvalidSasToken",
            Self::ProcessingRequestFailed => "ProcessingRequestFailed",
        }
    }

    /// The operation a refusal with `status` is, for a listener or a sender: 401 is a token
    /// that is not valid, 403 one that does not grant what was asked.
    pub(crate) fn of_refusal(status: u16, listener: bool) -> Self {
        match status {
            401 => Self::InvalidSasToken,
            403 => Self::AuthorizationFailed,
            _ if listener => Self::NewListenerRegistrationFailed,
            _ => Self::ProcessingRequestFailed,
        }
    }
}

/// Records that `operation` happened on `entity` (a path; empty when none is known yet).
pub(crate) fn event(
    shared: &Shared,
    operation: Operation,
    entity: &str,
    peer: SocketAddr,
    detail: &str,
) {
    info!(
        target: "ferry::diagnostics",
        category = "HybridConnectionsEvent",
        operation_name = operation.name(),
        namespace = %shared.config.namespace,
        entity,
        client = %peer.ip(),
        "{detail}"
    );
}

/// Records a refusal and returns what to tell the client: `description` with a new
/// tracking id and Azure's other correlation fields after it. The event carries the same id.
pub(crate) fn refusal(
    shared: &Shared,
    operation: Operation,
    entity: &str,
    peer: SocketAddr,
    status: u16,
    description: &str,
) -> String {
    let tracking_id = new_id();
    let timestamp = rfc3339(now_ms());
    info!(
        target: "ferry::diagnostics",
        category = "HybridConnectionsEvent",
        operation_name = operation.name(),
        namespace = %shared.config.namespace,
        entity,
        client = %peer.ip(),
        status,
        tracking_id = %tracking_id,
        "{description}"
    );
    tracked(
        description,
        &tracking_id,
        &shared.config.namespace,
        &timestamp,
    )
}

/// `description` with the correlation suffix Azure appends to its error descriptions. The
/// system tracker names the namespace only, never the entity: a refusal must read the same
/// for a path that exists and one that does not (the event in the log has the entity).
fn tracked(description: &str, tracking_id: &str, namespace: &str, timestamp: &str) -> String {
    let description = description.trim_end_matches(['.', ' ']);
    format!(
        "{description}. TrackingId:{tracking_id}, SystemTracker:{namespace}, Timestamp:{timestamp}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_carry_azures_correlation_suffix() {
        assert_eq!(
            tracked(
                "no such hybrid connection",
                "6f1c0c2e-0d5e-4c1b-9f55-0d2a8c1e4b7a",
                "relay.example",
                "2026-12-07T19:00:00Z"
            ),
            "no such hybrid connection. TrackingId:6f1c0c2e-0d5e-4c1b-9f55-0d2a8c1e4b7a, \
             SystemTracker:relay.example, Timestamp:2026-12-07T19:00:00Z"
        );
        assert!(tracked("x.", "id", "ns", "t").starts_with("x. TrackingId:id, SystemTracker:ns,"));
    }

    #[test]
    fn refusals_map_to_azures_operations() {
        assert_eq!(Operation::of_refusal(401, true), Operation::InvalidSasToken);
        assert_eq!(
            Operation::of_refusal(403, false),
            Operation::AuthorizationFailed
        );
        assert_eq!(
            Operation::of_refusal(404, true),
            Operation::NewListenerRegistrationFailed
        );
        assert_eq!(
            Operation::of_refusal(404, false),
            Operation::ProcessingRequestFailed
        );
    }
}
