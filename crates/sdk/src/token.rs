//! Token providers: where the `ServiceBusAuthorization` header comes from.
//!
//! A [`SasKeyProvider`] mints a fresh SAS token per resource URI, as the .NET SDK's
//! `SharedAccessSignatureTokenProvider` does; a [`FixedToken`] hands out one token it was given
//! (minted elsewhere, e.g. by `ferry token`). Token text is a secret: no `Debug` output here
//! shows it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_hc::SasToken;

/// Default lifetime of minted SAS tokens: one hour, as the Node and .NET SDKs use.
pub const DEFAULT_SAS_TTL: Duration = Duration::from_secs(3600);

/// A token for one resource.
#[derive(Clone)]
pub struct Token {
    /// The header value, e.g. `SharedAccessSignature sr=...`.
    pub text: String,
    /// When the token stops being valid, if the provider can mint a fresh one before then.
    /// `None`: never renewed.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The system clock reads before 1970, so no expiry can be computed.
    #[error("system clock is before the Unix epoch")]
    Clock,
    /// A custom provider failed.
    #[error("token provider failed: {0}")]
    Provider(String),
}

/// Makes tokens for resource URIs (`http://{host}/{path}`).
///
/// The trait is synchronous: providers that need I/O (AAD) should refresh in the background
/// and hand out their cached token here.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A token valid for `resource_uri`.
    ///
    /// # Errors
    /// The provider cannot make one.
    fn token(&self, resource_uri: &str) -> Result<Token, TokenError>;
}

/// Mints SAS tokens from a rule name and its key (the key string as shown in the portal,
/// used as is, not base64-decoded — spec §2).
#[derive(Clone)]
pub struct SasKeyProvider {
    rule: String,
    key: String,
    ttl: Duration,
}

impl SasKeyProvider {
    /// A provider signing with `rule`'s `key`; tokens live for `ttl` (at least one second).
    pub fn new(rule: impl Into<String>, key: impl Into<String>, ttl: Duration) -> Self {
        Self {
            rule: rule.into(),
            key: key.into(),
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    /// The rule name.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl fmt::Debug for SasKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasKeyProvider")
            .field("rule", &self.rule)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenProvider for SasKeyProvider {
    fn token(&self, resource_uri: &str) -> Result<Token, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TokenError::Clock)?;
        // `se` has whole seconds; round the expiry up so a token never lives less than `ttl`.
        let expiry = now.as_secs() + self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        Ok(Token {
            text: SasToken::create(resource_uri, &self.rule, &self.key, expiry),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(expiry)),
        })
    }
}

/// One token given up front, used for every resource and never renewed.
#[derive(Clone)]
pub struct FixedToken {
    text: String,
}

impl FixedToken {
    /// Uses `text` (e.g. `SharedAccessSignature sr=...`) as the header value.
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into() }
    }
}

impl fmt::Debug for FixedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedToken").finish_non_exhaustive()
    }
}

impl TokenProvider for FixedToken {
    fn token(&self, _resource_uri: &str) -> Result<Token, TokenError> {
        // Renewing with the same text would not extend anything, so no expiry is reported.
        Ok(Token {
            text: self.text.clone(),
            expires_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_tokens_are_signed_for_the_resource_and_expire_after_ttl() {
        let p = SasKeyProvider::new("rule", "secret-key", Duration::from_secs(60));
        let t = p.token("http://ns/hc1").unwrap();
        let parsed = SasToken::parse(&t.text).unwrap();
        assert!(parsed.verify("secret-key"));
        assert!(!parsed.verify("other"));
        assert_eq!(parsed.resource(), "http://ns/hc1");
        assert_eq!(parsed.key_name(), "rule");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now + 59..=now + 61).contains(&parsed.expiry()));
        assert_eq!(
            t.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(parsed.expiry()))
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let p = SasKeyProvider::new("rule", "secret-key", DEFAULT_SAS_TTL);
        let t = p.token("http://ns/hc1").unwrap();
        let text = format!(
            "{p:?} {t:?} {:?}",
            FixedToken::new("SharedAccessSignature x")
        );
        assert!(!text.contains("secret-key"), "{text}");
        assert!(!text.contains("SharedAccessSignature"), "{text}");
    }

    #[test]
    fn fixed_token_is_returned_verbatim() {
        let t = FixedToken::new("tok").token("http://a/b").unwrap();
        assert_eq!(t.text, "tok");
        assert_eq!(t.expires_at, None);
    }
}
