//! Authorization: SAS rules with Listen / Send / Manage rights, and the audience rules real
//! clients need (spec §2).
//!
//! Clients write the audience (`sr`) in many ways for the same entity: `http://ns/hc1/`,
//! `http://ns:443/hc1`, `sb://ns/hc1`, or just `http://ns/` for the whole namespace. All of
//! them are accepted by the hosted service, so we normalise (scheme, port, host case and a
//! trailing slash ignored) and then require the token's path to be a segment-wise prefix of
//! the requested path.

use std::fmt;

use crate::sas::{SasToken, TokenError};

/// A set of rights held by a rule.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// May open listener control channels and renew their tokens.
    pub const LISTEN: Self = Self(1);
    /// May connect senders and send HTTP requests.
    pub const SEND: Self = Self(2);
    /// Management; includes Listen and Send.
    pub const MANAGE: Self = Self(4);
    /// No rights.
    pub const NONE: Self = Self(0);

    /// Whether these rights allow `right`; Manage allows everything.
    pub fn allows(self, right: Right) -> bool {
        self.0 & Self::MANAGE.0 != 0 || self.0 & Self::from(right).0 != 0
    }

    /// Parses a right's name (`Listen`, `Send`, `Manage`), ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        [
            (Self::LISTEN, "listen"),
            (Self::SEND, "send"),
            (Self::MANAGE, "manage"),
        ]
        .into_iter()
        .find_map(|(r, n)| n.eq_ignore_ascii_case(name).then_some(r))
    }
}

impl Rights {
    /// The rights' names in Azure's spelling and order (`Listen`, `Send`, `Manage`), as the
    /// management API lists them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (Self::LISTEN, "Listen"),
            (Self::SEND, "Send"),
            (Self::MANAGE, "Manage"),
        ]
        .into_iter()
        .filter(move |(r, _)| self.0 & r.0 != 0)
        .map(|(_, n)| n)
    }
}

impl std::ops::BitOr for Rights {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl From<Right> for Rights {
    fn from(right: Right) -> Self {
        match right {
            Right::Listen => Self::LISTEN,
            Right::Manage => Self::MANAGE,
            Right::Send => Self::SEND,
        }
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.names().collect();
        write!(f, "Rights({})", names.join("|"))
    }
}

/// One right an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    /// Listener operations.
    Listen,
    /// Management operations.
    Manage,
    /// Sender operations.
    Send,
}

/// A named shared-access rule: a key (and an optional second key for rotation) and rights.
#[derive(Clone, PartialEq, Eq)]
pub struct Rule {
    /// Rule name, matched against the token's `skn`.
    pub name: String,
    primary_key: String,
    secondary_key: Option<String>,
    /// What the rule allows.
    pub rights: Rights,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are secrets: never printed.
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// A rule with one key.
    pub fn new(name: impl Into<String>, key: impl Into<String>, rights: Rights) -> Self {
        Self {
            name: name.into(),
            primary_key: key.into(),
            secondary_key: None,
            rights,
        }
    }

    /// Adds the secondary key; either key may sign.
    pub fn with_secondary_key(mut self, key: impl Into<String>) -> Self {
        self.secondary_key = Some(key.into());
        self
    }

    /// The primary key, to sign tokens with.
    pub fn primary_key(&self) -> &str {
        &self.primary_key
    }

    /// The secondary key, if the rule has one.
    pub fn secondary_key(&self) -> Option<&str> {
        self.secondary_key.as_deref()
    }

    fn verifies(&self, token: &SasToken) -> bool {
        // Check both keys unconditionally so timing does not tell which one matched.
        let primary = token.verify(&self.primary_key);
        let secondary = self
            .secondary_key
            .as_deref()
            .is_some_and(|k| token.verify(k));
        primary | secondary
    }
}

/// Why a token was refused. [`AuthError::status`] maps each to its HTTP status (spec §7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token where one is required.
    #[error("no token")]
    Missing,
    /// The token is not a well-formed SAS token.
    #[error("malformed token: {0}")]
    Malformed(#[from] TokenError),
    /// The token expired (beyond the grace window).
    #[error("token expired")]
    Expired,
    /// No rule has the token's key name, or the signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// The token is valid, but its rule lacks the right for the operation.
    #[error("token's rule does not grant {0:?}")]
    MissingRight(Right),
    /// The token is valid, but its audience does not cover the requested path.
    #[error("token audience does not cover this path")]
    WrongAudience,
    /// The path's IP rules turn the client's address away, whatever its token.
    #[error("the client's address may not reach this path")]
    AddressDenied,
}

impl AuthError {
    /// 401 for a token that is missing or not genuine, 403 for a genuine token that does not
    /// grant the operation.
    pub fn status(&self) -> u16 {
        match self {
            Self::Missing | Self::Malformed(_) | Self::Expired | Self::BadSignature => 401,
            Self::MissingRight(_) | Self::WrongAudience | Self::AddressDenied => 403,
        }
    }
}

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The rule that signed the token.
    pub rule: String,
    /// The token's expiry, Unix seconds.
    pub expiry: u64,
}

/// The rules that apply to one path (namespace-wide rules plus the path's own), and the grace
/// window allowed past a token's expiry.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    grace_secs: u64,
}

impl Rules {
    /// Rules with no grace window.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            grace_secs: 0,
        }
    }

    /// Sets how many seconds past `se` a token is still accepted. The SDKs renew exactly at
    /// expiry, so a gateway wants a few minutes here.
    pub fn with_grace(mut self, secs: u64) -> Self {
        self.grace_secs = secs;
        self
    }

    /// Adds rules.
    pub fn extend(&mut self, rules: impl IntoIterator<Item = Rule>) {
        self.rules.extend(rules);
    }

    /// The rules.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// Checks `token` for `right` on `path` of the namespace known as `host`, at Unix time
    /// `now`.
    ///
    /// # Errors
    /// See [`AuthError`]; the signature is checked before anything the token claims is
    /// believed.
    pub fn authorize(
        &self,
        token: &str,
        host: &str,
        path: &str,
        right: Right,
        now: u64,
    ) -> Result<Grant, AuthError> {
        self.authorize_any_host(token, &[host], path, right, now)
    }

    /// As [`Rules::authorize`], accepting an audience on any of `hosts` (the configured
    /// namespace name and the name the client actually dialled).
    ///
    /// # Errors
    /// See [`AuthError`].
    pub fn authorize_any_host(
        &self,
        token: &str,
        hosts: &[&str],
        path: &str,
        right: Right,
        now: u64,
    ) -> Result<Grant, AuthError> {
        if token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        let token = SasToken::parse(token)?;
        // Every rule with the key name is tried, so two rules cannot shadow each other.
        let rule = self
            .rules
            .iter()
            .filter(|r| r.name == token.key_name())
            .find(|r| r.verifies(&token))
            .ok_or(AuthError::BadSignature)?;
        if token.expiry().saturating_add(self.grace_secs) < now {
            return Err(AuthError::Expired);
        }
        if !rule.rights.allows(right) {
            return Err(AuthError::MissingRight(right));
        }
        let audience = Audience::parse(token.resource());
        if !hosts.iter().any(|h| audience.covers(h, path)) {
            return Err(AuthError::WrongAudience);
        }
        Ok(Grant {
            rule: rule.name.clone(),
            expiry: token.expiry(),
        })
    }
}

/// A normalised audience: lowercase host without port, path without leading or trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    host: String,
    path: String,
}

impl Audience {
    /// Normalises a decoded `sr`.
    pub fn parse(resource: &str) -> Self {
        let rest = resource.split_once("://").map_or(resource, |(_, r)| r);
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = strip_port(authority.rsplit('@').next().unwrap_or(authority));
        let mut path = path.trim_matches('/');
        // Node's helper removes `$hc/`; tolerate a token that kept it.
        if let Some(p) = path
            .strip_prefix("$hc/")
            .or_else(|| (path == "$hc").then_some(""))
        {
            path = p;
        }
        Self {
            host: host.to_ascii_lowercase(),
            path: path.to_owned(),
        }
    }

    /// Whether this audience covers `path` (decoded, no leading slash) on namespace `host`
    /// (port allowed, ignored). Entity names are case-insensitive.
    pub fn covers(&self, host: &str, path: &str) -> bool {
        if !strip_port(host).eq_ignore_ascii_case(&self.host) {
            return false;
        }
        let path = path.trim_matches('/');
        if self.path.is_empty() {
            return true;
        }
        let Some(head) = path.get(..self.path.len()) else {
            return false;
        };
        head.eq_ignore_ascii_case(&self.path)
            && (path.len() == self.path.len() || path.as_bytes()[self.path.len()] == b'/')
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        // "[::1]:443" → "::1"
        return v6.split(']').next().unwrap_or(v6);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn rules() -> Rules {
        Rules::new(vec![
            Rule::new("listen", "lk", Rights::LISTEN),
            Rule::new("send", "sk", Rights::SEND).with_secondary_key("sk2"),
            Rule::new("root", "rk", Rights::MANAGE),
        ])
        .with_grace(300)
    }

    fn token(sr: &str, rule: &str, key: &str, exp: u64) -> String {
        SasToken::create(sr, rule, key, exp)
    }

    #[test]
    fn every_client_audience_shape_is_accepted() {
        for sr in [
            "http://ns/hc1/",
            "http://ns:443/hc1",
            "https://NS/HC1",
            "sb://ns:9354/hc1",
            "sb://ns",
            "http://ns/",
            "http://ns:443/$hc/hc1",
        ] {
            let t = token(sr, "send", "sk", NOW + 60);
            assert!(
                rules().authorize(&t, "ns", "hc1", Right::Send, NOW).is_ok(),
                "{sr}"
            );
            assert!(
                rules()
                    .authorize(&t, "ns:443", "hc1/extra/path", Right::Send, NOW)
                    .is_ok(),
                "{sr}"
            );
        }
    }

    #[test]
    fn audience_is_a_segment_prefix() {
        let t = token("http://ns/hc1", "send", "sk", NOW + 60);
        assert_eq!(
            rules().authorize(&t, "ns", "hc10", Right::Send, NOW),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            rules().authorize(&t, "ns", "other", Right::Send, NOW),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            rules().authorize(&t, "elsewhere", "hc1", Right::Send, NOW),
            Err(AuthError::WrongAudience)
        );
        let deep = token("http://ns/a/b", "send", "sk", NOW + 60);
        assert_eq!(
            rules().authorize(&deep, "ns", "a", Right::Send, NOW),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn statuses_follow_the_spec() {
        let r = rules();
        assert_eq!(
            r.authorize("", "ns", "p", Right::Send, NOW)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            r.authorize("garbage", "ns", "p", Right::Send, NOW)
                .unwrap_err()
                .status(),
            401
        );
        let wrong_key = token("http://ns/p", "send", "nope", NOW + 60);
        assert_eq!(
            r.authorize(&wrong_key, "ns", "p", Right::Send, NOW),
            Err(AuthError::BadSignature)
        );
        let unknown_rule = token("http://ns/p", "ghost", "sk", NOW + 60);
        assert_eq!(
            r.authorize(&unknown_rule, "ns", "p", Right::Send, NOW),
            Err(AuthError::BadSignature)
        );
        let listen_only = token("http://ns/p", "listen", "lk", NOW + 60);
        let e = r
            .authorize(&listen_only, "ns", "p", Right::Send, NOW)
            .unwrap_err();
        assert_eq!(
            (e.clone(), e.status()),
            (AuthError::MissingRight(Right::Send), 403)
        );
        assert_eq!(AuthError::WrongAudience.status(), 403);
    }

    #[test]
    fn secondary_key_and_manage_work() {
        let t = token("http://ns/p", "send", "sk2", NOW + 60);
        assert_eq!(
            rules()
                .authorize(&t, "ns", "p", Right::Send, NOW)
                .unwrap()
                .rule,
            "send"
        );
        let root = token("http://ns/", "root", "rk", NOW + 60);
        for right in [Right::Listen, Right::Send, Right::Manage] {
            assert!(rules().authorize(&root, "ns", "p", right, NOW).is_ok());
        }
    }

    #[test]
    fn expiry_has_a_grace_window() {
        let t = token("http://ns/p", "send", "sk", NOW - 200);
        assert!(rules().authorize(&t, "ns", "p", Right::Send, NOW).is_ok());
        let old = token("http://ns/p", "send", "sk", NOW - 301);
        assert_eq!(
            rules().authorize(&old, "ns", "p", Right::Send, NOW),
            Err(AuthError::Expired)
        );
        assert_eq!(
            Rules::new(vec![Rule::new("send", "sk", Rights::SEND)]).authorize(
                &token("http://ns/p", "send", "sk", NOW - 1),
                "ns",
                "p",
                Right::Send,
                NOW
            ),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn hosts_compare_without_port_or_case() {
        let a = Audience::parse("http://[::1]:443/x");
        assert!(a.covers("[::1]:8443", "x"));
        assert!(Audience::parse("http://LocalHost:443/x").covers("localhost:8443", "X/y"));
    }

    #[test]
    fn debug_never_shows_keys() {
        let s = format!(
            "{:?}",
            Rule::new("n", "very-secret", Rights::SEND).with_secondary_key("also")
        );
        assert!(!s.contains("secret") && !s.contains("also"), "{s}");
    }
}
