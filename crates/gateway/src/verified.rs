//! Tokens that passed recently. HTTP and gRPC senders repeat the same SAS token on every
//! request; a token verified for a path and host is not parsed and signed again until it
//! expires. Keys are whole token strings in a map with a random hasher, so lookups reveal
//! nothing about stored tokens through timing; the memory is bounded and simply dropped
//! when full.

use std::collections::HashMap;
use std::sync::Mutex;

use ferry_hc::auth::{AuthError, Right, Rules};

/// Entries kept before the memory is dropped.
const CAPACITY: usize = 4096;

/// (token, path, host) → Unix second until which the token is good.
#[derive(Default)]
pub(crate) struct Verified {
    map: Mutex<HashMap<(String, String, String), u64>>,
}

impl Verified {
    /// Checks `token` grants `Send` on `path` for one of `hosts` (the namespace first, then
    /// the host the sender named, if any), remembering a success until the token's expiry
    /// plus `grace` seconds.
    pub(crate) fn authorize_send(
        &self,
        rules: &Rules,
        token: &str,
        hosts: &[&str],
        path: &str,
        now: u64,
        grace: u64,
    ) -> Result<(), AuthError> {
        let key = (token.to_owned(), path.to_owned(), hosts.join(" "));
        if self.lock().get(&key).is_some_and(|&until| now <= until) {
            return Ok(());
        }
        let grant = rules.authorize_any_host(token, hosts, path, Right::Send, now)?;
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, grant.expiry.saturating_add(grace));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), u64>> {
        // Each critical section is one map operation: a panic cannot leave it torn.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use ferry_hc::{Rights, Rule, SasToken};

    use super::*;

    #[test]
    fn a_token_is_remembered_per_path_until_it_expires() {
        let rules = Rules::new(vec![Rule::new("send", "key", Rights::SEND)]);
        let token = SasToken::create("http://ns/a", "send", "key", 1_000);
        let verified = Verified::default();
        assert!(
            verified
                .authorize_send(&rules, &token, &["ns"], "a", 900, 0)
                .is_ok()
        );
        assert_eq!(verified.lock().len(), 1);
        // Remembered: still good; another path is checked afresh (and refused).
        assert!(
            verified
                .authorize_send(&rules, &token, &["ns"], "a", 950, 0)
                .is_ok()
        );
        assert!(
            verified
                .authorize_send(&rules, &token, &["ns"], "b", 950, 0)
                .is_err()
        );
        // Past expiry (plus grace) it is checked again, and refused.
        assert!(
            verified
                .authorize_send(&rules, &token, &["ns"], "a", 1_001, 0)
                .is_err()
        );
        // A forged token never gets in, remembered or not.
        let forged = token.replace("sig=", "sig=A");
        assert!(
            verified
                .authorize_send(&rules, &forged, &["ns"], "a", 900, 0)
                .is_err()
        );
    }
}
