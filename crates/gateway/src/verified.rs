//! Tokens that passed recently. HTTP and gRPC senders repeat the same SAS token on every
//! request; a token verified for a hybrid connection, path and host is not parsed and signed
//! again until it expires. Entries are keyed by a SHA-256 digest of all of that (the
//! resolved hybrid connection included, since in dynamic mode one path can resolve to
//! different settings over time), so each costs a few dozen bytes whatever the token's
//! length, lookups reveal nothing about stored tokens, and the memory is bounded: it is
//! simply dropped when full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_hc::auth::{AuthError, Right};
use sha2::{Digest as _, Sha256};

use crate::pairing::PathSettings;

/// Entries kept before the memory is dropped.
const CAPACITY: usize = 4096;

/// Digest of (hybrid connection, token, path, hosts) → Unix second until which the token is
/// good.
#[derive(Default)]
pub(crate) struct Verified {
    map: Mutex<HashMap<[u8; 32], u64>>,
    /// The catalog generation the remembered tokens were checked against.
    generation: AtomicU64,
}

impl Verified {
    /// Forgets every token if the rules may have changed since they were checked (the
    /// catalog is at another `generation`): a regenerated key or a deleted rule must stop
    /// working at once, not when the tokens it signed expire.
    pub(crate) fn sync(&self, generation: u64) {
        if self.generation.swap(generation, Ordering::AcqRel) != generation {
            self.lock().clear();
        }
    }

    /// Checks `token` grants `Send` on `path` under `settings` (the hybrid connection `path`
    /// resolved to) for one of `hosts` (the namespace, then its configured aliases),
    /// remembering a success until the token's expiry plus `grace` seconds.
    pub(crate) fn authorize_send(
        &self,
        settings: &PathSettings,
        token: &str,
        hosts: &[&str],
        path: &str,
        now: u64,
        grace: u64,
    ) -> Result<(), AuthError> {
        let mut digest = Sha256::new();
        for part in [settings.name.as_str(), token, path]
            .into_iter()
            .chain(hosts.iter().copied())
        {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        let key: [u8; 32] = digest.finalize().into();
        if self.lock().get(&key).is_some_and(|&until| now <= until) {
            return Ok(());
        }
        let grant = settings
            .rules
            .authorize_any_host(token, hosts, path, Right::Send, now)?;
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, grant.expiry.saturating_add(grace));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], u64>> {
        // Each critical section is one map operation: a panic cannot leave it torn.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use ferry_hc::auth::Rules;
    use ferry_hc::{Rights, Rule, SasToken};

    use super::*;

    fn settings(name: &str, rules: Vec<Rule>) -> PathSettings {
        PathSettings {
            name: name.into(),
            anonymous_senders: false,
            rules: Rules::new(rules),
            max_listeners: 25,
            request_timeout: std::time::Duration::from_secs(60),
            fan_out: false,
            network: None,
            kind: crate::catalog::Kind::HybridConnection,
            retired: tokio_util::sync::CancellationToken::new(),
        }
    }

    #[test]
    fn a_token_is_remembered_per_path_until_it_expires() {
        let a = settings("a", vec![Rule::new("send", "key", Rights::SEND)]);
        let token = SasToken::create("http://ns/a", "send", "key", 1_000);
        let verified = Verified::default();
        let check = |s: &PathSettings, token: &str, path: &str, now: u64| {
            verified
                .authorize_send(s, token, &["ns"], path, now, 0)
                .is_ok()
        };
        assert!(check(&a, &token, "a", 900));
        assert_eq!(verified.lock().len(), 1);
        // Remembered: still good; another path is checked afresh (and refused).
        assert!(check(&a, &token, "a", 950));
        assert!(!check(&a, &token, "b", 950));
        // Past expiry (plus grace) it is checked again, and refused.
        assert!(!check(&a, &token, "a", 1_001));
        // A forged token never gets in, remembered or not.
        let forged = token.replace("sig=", "sig=A");
        assert!(!check(&a, &forged, "a", 900));
    }

    #[test]
    fn a_token_remembered_for_one_hybrid_connection_is_checked_again_for_another() {
        // Dynamic mode: `orders/x` first resolved to the configured `orders` (whose own rule
        // signed the token), then to a dynamic `orders/x` with namespace rules only.
        let token = SasToken::create("http://ns/orders/x", "orders-send", "k1", 1_000);
        let configured = settings("orders", vec![Rule::new("orders-send", "k1", Rights::SEND)]);
        let dynamic = settings("orders/x", vec![Rule::new("root", "k0", Rights::MANAGE)]);
        let verified = Verified::default();
        assert!(
            verified
                .authorize_send(&configured, &token, &["ns"], "orders/x", 900, 0)
                .is_ok()
        );
        assert!(
            verified
                .authorize_send(&dynamic, &token, &["ns"], "orders/x", 900, 0)
                .is_err()
        );
    }
}
