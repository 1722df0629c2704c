//! Who may listen and who may send: every front end's token checks, and the failures they
//! count against a source.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_hc::auth::{AuthError, Right};

use crate::pairing::PathSettings;
use crate::state::Shared;

/// Seconds since the Unix epoch, for token expiry (tokens carry wall-clock times).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    /// Checks a sender's token (`None`: it gave none) for `Send` on `path`, through the cache
    /// of tokens verified lately; a failure counts against `peer`'s source.
    pub(crate) fn authorize_sender(
        &self,
        peer: SocketAddr,
        settings: &PathSettings,
        token: Option<&str>,
        path: &str,
    ) -> Result<(), AuthError> {
        path_admits(settings, peer)?;
        self.check_sender(settings, token, path).inspect_err(|e| {
            self.admission.auth_failed(peer.ip());
            self.metrics.auth_failed(e);
        })
    }

    /// [`authorize_sender`](Self::authorize_sender) without counting a failure, for a front
    /// end that may try a second token before it decides.
    pub(crate) fn check_sender(
        &self,
        settings: &PathSettings,
        token: Option<&str>,
        path: &str,
    ) -> Result<(), AuthError> {
        let hosts = self.config.audience_hosts();
        let grace = self.config.timeouts.token_grace.as_secs();
        let token = token.ok_or(AuthError::Missing)?;
        self.verified.sync(self.catalog.generation());
        self.verified
            .authorize_send(settings, token, &hosts, path, now_unix(), grace)
    }

    /// Checks a listener's token for `Listen` on `path`, returning when it expires; a failure
    /// counts against `peer`'s source.
    pub(crate) fn authorize_listener(
        &self,
        peer: SocketAddr,
        settings: &PathSettings,
        token: Option<&str>,
        path: &str,
    ) -> Result<u64, AuthError> {
        path_admits(settings, peer)?;
        let hosts = self.config.audience_hosts();
        token
            .ok_or(AuthError::Missing)
            .and_then(|token| {
                settings
                    .rules
                    .authorize_any_host(token, &hosts, path, Right::Listen, now_unix())
            })
            .map(|grant| grant.expiry)
            .inspect_err(|e| {
                self.admission.auth_failed(peer.ip());
                self.metrics.auth_failed(e);
            })
    }
}

/// The path's own IP rules, before any token is looked at: an address they turn away is
/// refused (403) without counting as a failed authentication.
pub(crate) fn path_admits(settings: &PathSettings, peer: SocketAddr) -> Result<(), AuthError> {
    match &settings.network {
        Some(rules) if !rules.allows(peer.ip()) => Err(AuthError::AddressDenied),
        _ => Ok(()),
    }
}
