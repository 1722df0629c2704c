//! Hybrid Connections addresses: the `/$hc/{path}` request target, its `sb-hc-*` query, and
//! the URLs a gateway hands out (listen, connect, accept, request).
//!
//! Every `sb-hc-*` parameter is matched case-insensitively (as the SDKs do) and stripped from
//! what the application sees; all other query pairs are kept verbatim, in order, as the
//! "app query" that flows to the listener (spec §1).

use std::{borrow::Cow, fmt::Write as _};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The path prefix of every Hybrid Connections WebSocket endpoint.
pub const HC_PREFIX: &str = "/$hc/";

/// The longest request target accepted, in bytes (a guard for hostile URLs; real ones are short).
pub const MAX_TARGET_LEN: usize = 16 * 1024;

/// Characters escaped in one path segment: everything but RFC 3986 unreserved and sub-delims
/// that are safe inside a segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// What JavaScript's `encodeURIComponent` leaves alone; used for query values, so the URLs
/// we build read like the ones the Node and .NET SDKs build.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The role of a WebSocket upgrade, from `sb-hc-action` (spec §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A listener opening its control channel.
    Listen,
    /// A sender opening a relayed WebSocket.
    Connect,
    /// A listener taking (or rejecting) one sender's WebSocket on a rendezvous address.
    Accept,
    /// A listener taking one HTTP request on a rendezvous address.
    Request,
}

impl Action {
    /// The query value for this action.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listen => "listen",
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Request => "request",
        }
    }

    /// Parses a query value, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Listen, Self::Connect, Self::Accept, Self::Request]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

/// A request target or URL that is not a usable Hybrid Connections address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The target does not start with `/$hc/`.
    #[error("target is not under /$hc/")]
    NotHybridConnection,
    /// The path after `/$hc/` is empty.
    #[error("target names no hybrid connection")]
    EmptyPath,
    /// The target is longer than [`MAX_TARGET_LEN`].
    #[error("target is longer than {MAX_TARGET_LEN} bytes")]
    TooLong,
    /// `sb-hc-action` names no known action.
    #[error("unknown sb-hc-action {0:?}")]
    UnknownAction(String),
    /// `sb-hc-statusCode` is not an HTTP status code.
    #[error("sb-hc-statusCode {0:?} is not a status code")]
    BadStatusCode(String),
    /// An `sb-hc-*` parameter appears twice.
    #[error("query parameter {0} appears twice")]
    Duplicate(&'static str),
    /// A path segment decodes to invalid UTF-8, or is `.` / `..`.
    #[error("path segment {0:?} is not allowed")]
    BadSegment(String),
}

/// The `sb-hc-*` parameters of a query, plus the application's own query pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HcQuery {
    /// `sb-hc-action`; a sender may omit it (the .NET live tests do), meaning `connect`.
    pub action: Option<Action>,
    /// `sb-hc-id`: the client's tracking id.
    pub id: Option<String>,
    /// `sb-hc-token`, percent-decoded.
    pub token: Option<String>,
    /// `sb-hc-statusCode`: present when a listener rejects a sender.
    pub status_code: Option<u16>,
    /// `sb-hc-statusDescription`, percent-decoded.
    pub status_description: Option<String>,
    /// `sb-hc-rendezvous`: the unguessable one-shot key a gateway puts in the rendezvous
    /// addresses it hands out. Listeners pass the address back untouched, so it needs no
    /// support from them; the sender-chosen `sb-hc-id` alone would be guessable.
    pub rendezvous: Option<String>,
    /// The pairs that are not `sb-hc-*`, verbatim and in order, joined with `&`.
    pub app_query: String,
}

impl HcQuery {
    /// Splits a raw query string (without the `?`).
    ///
    /// # Errors
    /// A repeated `sb-hc-*` parameter, an unknown action, or a status code that is no number.
    pub fn parse(query: &str) -> Result<Self, AddressError> {
        let mut out = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(param) = name.get(..6).filter(|p| p.eq_ignore_ascii_case("sb-hc-")) else {
                if !out.app_query.is_empty() {
                    out.app_query.push('&');
                }
                out.app_query.push_str(pair);
                continue;
            };
            debug_assert_eq!(param.len(), 6);
            let key = &name[6..];
            let value = decode_query_value(value);
            if key.eq_ignore_ascii_case("action") {
                let action = Action::parse(&value)
                    .ok_or_else(|| AddressError::UnknownAction(value.clone()))?;
                set_once(&mut out.action, action, "sb-hc-action")?;
            } else if key.eq_ignore_ascii_case("id") {
                set_once(&mut out.id, value, "sb-hc-id")?;
            } else if key.eq_ignore_ascii_case("token") {
                set_once(&mut out.token, value, "sb-hc-token")?;
            } else if key.eq_ignore_ascii_case("statusCode") {
                let code = value
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=999).contains(c))
                    .ok_or_else(|| AddressError::BadStatusCode(value.clone()))?;
                set_once(&mut out.status_code, code, "sb-hc-statusCode")?;
            } else if key.eq_ignore_ascii_case("rendezvous") {
                set_once(&mut out.rendezvous, value, "sb-hc-rendezvous")?;
            } else if key.eq_ignore_ascii_case("statusDescription") {
                set_once(
                    &mut out.status_description,
                    value,
                    "sb-hc-statusDescription",
                )?;
            }
            // Other sb-hc-* names (sb-hc-sas-key-name, ...) are unused by every SDK: dropped.
        }
        Ok(out)
    }

    /// The action, with a missing one read as `connect` (spec §1).
    pub fn action_or_connect(&self) -> Action {
        self.action.unwrap_or(Action::Connect)
    }
}

/// `url` without any `sb-hc-token` query parameter (matched case-insensitively, as
/// [`HcQuery::parse`] reads it), every other part verbatim: what the gateway passes on to a
/// listener in place of an address that carried a sender's credential. Borrowed when there was
/// none.
pub fn without_token(url: &str) -> Cow<'_, str> {
    let is_token = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        name.eq_ignore_ascii_case("sb-hc-token")
    };
    let (head, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let Some((base, query)) = head.split_once('?') else {
        return Cow::Borrowed(url);
    };
    if !query.split('&').any(is_token) {
        return Cow::Borrowed(url);
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_token(p))
        .collect();
    let mut out = String::with_capacity(url.len());
    out.push_str(base);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(fragment);
    Cow::Owned(out)
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), AddressError> {
    if slot.replace(value).is_some() {
        return Err(AddressError::Duplicate(name));
    }
    Ok(())
}

/// Percent-decodes a query value, reading `+` as a space (the .NET and Java encoders write
/// spaces that way; a literal `+` is always escaped as `%2B` by every SDK).
pub fn decode_query_value(value: &str) -> String {
    let spaced = value.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Percent-encodes a query value the way `encodeURIComponent` does.
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// A parsed `/$hc/{path}[?query]` request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HcTarget {
    /// The hybrid connection name and any suffix, decoded, `/`-separated, no leading slash:
    /// `orders` or `orders/extra/path`. Which prefix is the hybrid connection is for the
    /// gateway's configuration to say (longest configured match).
    pub path: String,
    /// The query.
    pub query: HcQuery,
}

impl HcTarget {
    /// Parses an origin-form request target.
    ///
    /// # Errors
    /// Not under `/$hc/` (also accepted escaped as `/%24hc/`), an empty path, a `.` or `..`
    /// segment, or a bad query.
    pub fn parse(target: &str) -> Result<Self, AddressError> {
        if target.len() > MAX_TARGET_LEN {
            return Err(AddressError::TooLong);
        }
        let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
        let rest = strip_prefix_ignore_case(raw_path, HC_PREFIX)
            .or_else(|| strip_prefix_ignore_case(raw_path, "/%24hc/"))
            .ok_or(AddressError::NotHybridConnection)?;
        let path = decode_path(rest)?;
        if path.is_empty() {
            return Err(AddressError::EmptyPath);
        }
        Ok(Self {
            path,
            query: HcQuery::parse(query)?,
        })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Decodes a `/`-separated path, dropping empty segments and refusing `.` and `..`.
///
/// # Errors
/// A segment that decodes to invalid UTF-8, contains `/`, or is a dot segment.
pub fn decode_path(raw: &str) -> Result<String, AddressError> {
    let mut out = String::with_capacity(raw.len());
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| AddressError::BadSegment(seg.to_owned()))?;
        if decoded == "." || decoded == ".." || decoded.contains('/') {
            return Err(AddressError::BadSegment(seg.to_owned()));
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&decoded);
    }
    Ok(out)
}

/// Percent-encodes a decoded `/`-separated path, segment by segment.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    out
}

/// Builds the WebSocket URL for `action` on `path` under `base` (`wss://host[:port]`, no
/// trailing slash), with an optional app query and `sb-hc-id`, as the SDKs lay it out:
/// `{base}/$hc/{path}?{app_query}&sb-hc-action={action}&sb-hc-id={id}`.
pub fn hc_url(base: &str, path: &str, app_query: &str, action: Action, id: Option<&str>) -> String {
    let mut url = format!(
        "{}{HC_PREFIX}{}?",
        base.trim_end_matches('/'),
        encode_path(path)
    );
    if !app_query.is_empty() {
        url.push_str(app_query);
        url.push('&');
    }
    // Writing to a String cannot fail.
    let _ = write!(url, "sb-hc-action={}", action.as_str());
    if let Some(id) = id {
        let _ = write!(url, "&sb-hc-id={}", encode_query_value(id));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sender_target_with_suffix_and_app_query() {
        let t = HcTarget::parse(
            "/$hc/hc1/extra/path?foo=bar&sb-hc-action=connect&sb-hc-id=my-sender-id&x=%41",
        )
        .unwrap();
        assert_eq!(t.path, "hc1/extra/path");
        assert_eq!(t.query.action, Some(Action::Connect));
        assert_eq!(t.query.id.as_deref(), Some("my-sender-id"));
        assert_eq!(t.query.app_query, "foo=bar&x=%41");
    }

    #[test]
    fn sb_hc_names_and_actions_ignore_case() {
        let q = HcQuery::parse("SB-HC-Action=LISTEN&Sb-Hc-Token=a%20b+c").unwrap();
        assert_eq!(q.action, Some(Action::Listen));
        assert_eq!(q.token.as_deref(), Some("a b c"));
    }

    #[test]
    fn missing_action_means_connect() {
        let t = HcTarget::parse("/$hc/a?sb-hc-token=t").unwrap();
        assert_eq!(t.query.action, None);
        assert_eq!(t.query.action_or_connect(), Action::Connect);
    }

    #[test]
    fn reject_parameters() {
        let q = HcQuery::parse(
            "sb-hc-action=accept&sb-hc-id=1&sb-hc-statusCode=401&sb-hc-statusDescription=go%20away",
        )
        .unwrap();
        assert_eq!(q.status_code, Some(401));
        assert_eq!(q.status_description.as_deref(), Some("go away"));
        assert_eq!(
            HcQuery::parse("sb-hc-statusCode=abc"),
            Err(AddressError::BadStatusCode("abc".into()))
        );
        assert_eq!(
            HcQuery::parse("sb-hc-statusCode=42"),
            Err(AddressError::BadStatusCode("42".into()))
        );
    }

    #[test]
    fn rejects_bad_targets() {
        assert_eq!(
            HcTarget::parse("/hc1"),
            Err(AddressError::NotHybridConnection)
        );
        assert_eq!(HcTarget::parse("/$hc/"), Err(AddressError::EmptyPath));
        assert_eq!(
            HcTarget::parse("/$hc/?sb-hc-action=listen"),
            Err(AddressError::EmptyPath)
        );
        assert!(matches!(
            HcTarget::parse("/$hc/a/../b"),
            Err(AddressError::BadSegment(_))
        ));
        assert!(matches!(
            HcTarget::parse("/$hc/a%2Fb"),
            Err(AddressError::BadSegment(_))
        ));
        assert_eq!(
            HcTarget::parse("/$hc/a?sb-hc-action=fly"),
            Err(AddressError::UnknownAction("fly".into()))
        );
        assert_eq!(
            HcTarget::parse("/$hc/a?sb-hc-id=1&sb-hc-id=2"),
            Err(AddressError::Duplicate("sb-hc-id"))
        );
        let long = format!("/$hc/{}", "a".repeat(MAX_TARGET_LEN));
        assert_eq!(HcTarget::parse(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn escaped_prefix_and_encoded_segments() {
        let t = HcTarget::parse("/%24HC/erp%20x//orders").unwrap();
        assert_eq!(t.path, "erp x/orders");
    }

    #[test]
    fn builds_urls_like_the_sdks() {
        let url = hc_url(
            "wss://ns:443/",
            "hc1/extra",
            "foo=bar",
            Action::Accept,
            Some("a b"),
        );
        assert_eq!(
            url,
            "wss://ns:443/$hc/hc1/extra?foo=bar&sb-hc-action=accept&sb-hc-id=a%20b"
        );
        let back = HcTarget::parse(url.strip_prefix("wss://ns:443").unwrap()).unwrap();
        assert_eq!(back.path, "hc1/extra");
        assert_eq!(back.query.id.as_deref(), Some("a b"));
        assert_eq!(back.query.app_query, "foo=bar");
        assert_eq!(
            hc_url("ws://h", "p q", "", Action::Listen, None),
            "ws://h/$hc/p%20q?sb-hc-action=listen"
        );
    }

    #[test]
    fn without_token_drops_only_the_token() {
        assert_eq!(
            without_token("net.tcp://h:9/a/b?x=1&sb-hc-token=Shared%20s&y=2#f"),
            "net.tcp://h:9/a/b?x=1&y=2#f"
        );
        assert_eq!(
            without_token("net.tcp://h/a?SB-HC-TOKEN=t"),
            "net.tcp://h/a"
        );
        assert_eq!(without_token("net.tcp://h/a?sb-hc-token"), "net.tcp://h/a");
        assert!(matches!(
            without_token("net.tcp://h/a?sb-hc-id=1&token=x"),
            Cow::Borrowed("net.tcp://h/a?sb-hc-id=1&token=x")
        ));
        assert!(matches!(without_token("net.tcp://h/a"), Cow::Borrowed(_)));
    }
}
