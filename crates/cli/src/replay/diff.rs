//! XML infosets compared: an element reduced to what the comparison looks at, with the
//! values that differ on every run and the recorded addresses mapped, and the first
//! difference between two of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Context as _;
use ferry_nbfx::{Attr, Element, Node};
use ferry_soap::version::SOAP12_NS;

/// Namespaces of the WS-Addressing headers whose values differ on every run.
pub(super) const WSA: [&str; 2] = [
    "http://www.w3.org/2005/08/addressing",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing",
];

/// WS-Security utility namespace (`wsu:Timestamp`, `wsu:Created`, `wsu:Expires`).
pub(super) const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";

/// WSDL 1.1.
pub(super) const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";

/// XML Schema.
pub(super) const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// Unprefixed WSDL and XML Schema attributes whose values are QNames.
pub(super) const QNAME_ATTRIBUTES: [&str; 8] = [
    "base",
    "binding",
    "element",
    "itemType",
    "message",
    "ref",
    "substitutionGroup",
    "type",
];

/// Recorded addresses and the live ones they compare as, longest recorded first (so that a
/// service's base address does not take the place of a longer endpoint address under it).
#[derive(Clone, Debug, Default)]
pub(super) struct AddressMap {
    pub(super) pairs: Vec<(String, String)>,
}

impl AddressMap {
    /// `--address RECORDED=LIVE` values.
    pub(super) fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut map = Self::default();
        for spec in specs {
            let (recorded, live) = spec
                .split_once('=')
                .filter(|(r, _)| !r.is_empty())
                .with_context(|| format!("--address {spec:?}: expected RECORDED=LIVE"))?;
            map.add(recorded, live);
        }
        Ok(map)
    }

    /// This map and `recorded` → `live`.
    pub(super) fn with(&self, recorded: &str, live: &str) -> Self {
        let mut map = self.clone();
        map.add(recorded, live);
        map
    }

    pub(super) fn add(&mut self, recorded: &str, live: &str) {
        if recorded.is_empty() || self.pairs.iter().any(|(r, _)| r == recorded) {
            return;
        }
        self.pairs.push((recorded.to_owned(), live.to_owned()));
        self.pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    }

    /// `text` with every recorded address, where it ends at an address boundary, replaced
    /// by its live one, in one pass (a replacement is never replaced again).
    pub(super) fn apply(&self, text: &str) -> String {
        if self.pairs.is_empty() {
            return text.to_owned();
        }
        // Characters that continue a host, port or path segment: an address followed by one
        // of them is only the start of another address.
        let continues = |c: char| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%');
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while let Some(c) = rest.chars().next() {
            for (recorded, live) in &self.pairs {
                if let Some(after) = rest.strip_prefix(recorded.as_str())
                    && !after.chars().next().is_some_and(continues)
                {
                    out.push_str(live);
                    rest = after;
                    continue 'scan;
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// An element reduced to what the comparison looks at.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Item {
    pub(super) name: (String, String),
    pub(super) attributes: BTreeMap<(String, String), String>,
    pub(super) text: String,
    pub(super) children: Vec<Self>,
}

/// How a live answer compares with the recorded one.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    /// The first difference, as "path: what".
    pub(super) diff: Option<String>,
    /// The FINDINGS sections of the Mono deviations that were set aside to match.
    pub(super) known: BTreeSet<&'static str>,
}

impl Verdict {
    pub(super) fn differ(diff: String) -> Self {
        Self {
            diff: Some(diff),
            known: BTreeSet::new(),
        }
    }

    /// This verdict and another check's on the same answer: both differences, this one's
    /// first, and every known deviation.
    pub(super) fn and(mut self, other: Self) -> Self {
        self.diff = match (self.diff.take(), other.diff) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        self.known.extend(other.known);
        self
    }
}

impl From<Option<String>> for Verdict {
    fn from(diff: Option<String>) -> Self {
        Self {
            diff,
            known: BTreeSet::new(),
        }
    }
}

/// Reduces an element, with `scopes` the namespace declarations in force (prefix, URI), and
/// recorded addresses replaced by the live ones `addresses` maps them to.
pub(super) fn item(
    el: &Element,
    scopes: &mut Vec<(String, String)>,
    addresses: &AddressMap,
    ignore_text: bool,
) -> Item {
    let depth = scopes.len();
    for a in &el.attributes {
        if let Attr::Xmlns(x) = a {
            scopes.push((x.prefix.to_string(), x.namespace.text.to_string()));
        }
    }
    let resolve = |prefix: &str| -> String {
        if prefix.is_empty() {
            return String::new(); // unprefixed attributes have no namespace
        }
        if prefix == "xml" {
            return ferry_nbfx::document::XML_NAMESPACE.to_owned();
        }
        scopes
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map_or_else(|| format!("{prefix}:"), |(_, ns)| ns.clone())
    };
    // WSDL and XML Schema attributes whose values are QNames: compared as {namespace}local,
    // so that the prefix chosen does not count there either.
    let qname_values = matches!(el.namespace.as_str(), WSDL_NS | XSD_NS);
    let mut attributes = BTreeMap::new();
    for a in &el.attributes {
        if let Attr::Attribute(a) = a {
            let mut value = a.value.to_string();
            if qname_values
                && a.prefix.is_empty()
                && QNAME_ATTRIBUTES.contains(&&*a.name.text)
                && let Some((prefix, local)) = value.split_once(':')
                && let Some((_, ns)) = scopes.iter().rev().find(|(p, _)| p == prefix)
            {
                value = format!("{{{ns}}}{local}");
            }
            attributes.insert(
                (resolve(&a.prefix), a.name.text.to_string()),
                per_run(&value, addresses),
            );
        }
    }
    // Values that differ on every run: message ids, correlation, the address sent to,
    // security timestamps.
    let volatile = (WSA.contains(&el.namespace.as_str())
        && matches!(el.local_name(), "MessageID" | "RelatesTo" | "To"))
        || el.namespace == WSU;
    let ignore_text = ignore_text || volatile;
    let mut text = String::new();
    let mut children = Vec::new();
    for node in &el.children {
        match node {
            Node::Element(child) => {
                children.push(item(child, scopes, addresses, ignore_text));
            }
            Node::Text(t) => {
                let _ = write!(text, "{t}");
            }
            Node::Array(a) => {
                let _ = write!(text, "{a:?}");
            }
            Node::Comment(_) => {}
        }
    }
    // A fault code is a QName: compared as {namespace}local, as QName attributes are.
    let code = (el.namespace == SOAP12_NS && el.local_name() == "Value")
        || (el.namespace.is_empty() && el.local_name() == "faultcode");
    if code
        && let Some((prefix, local)) = text.trim().split_once(':')
        && let Some((_, ns)) = scopes.iter().rev().find(|(p, _)| p == prefix)
    {
        text = format!("{{{ns}}}{local}");
    }
    scopes.truncate(depth);
    Item {
        name: (el.namespace.to_string(), el.local_name().to_owned()),
        attributes,
        text: if ignore_text {
            String::new()
        } else {
            per_run(&text, addresses)
        },
        children,
    }
}

/// Text with per-run values made comparable: recorded addresses become the live ones,
/// `urn:uuid:…` values become `urn:uuid:*`.
pub(super) fn per_run(text: &str, addresses: &AddressMap) -> String {
    let mut out = addresses.apply(text);
    while let Some(i) = out.find("urn:uuid:") {
        let start = i + "urn:uuid:".len();
        let end = out[start..]
            .find(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
            .map_or(out.len(), |n| start + n);
        if end == start {
            break;
        }
        out.replace_range(i..end, "urn:uuid\u{0}*");
    }
    out.replace("urn:uuid\u{0}*", "urn:uuid:*")
}

/// Two spellings of one xs:double (`0.33333333333333331` and `0.3333333333333333`): writers
/// differ in how many digits they print, not in the value. Only when both are written as
/// doubles (a `.` or an exponent): integers (xs:int, xs:long, `007`) must match exactly, as
/// a long past 2^53 and its neighbour are one f64, and `1` is not `1.0` on the wire.
pub(super) fn same_number(a: &str, b: &str) -> bool {
    let double_spelling = |t: &str| {
        t.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'))
            && t.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
            && t.bytes().any(|c| c.is_ascii_digit())
    };
    double_spelling(a)
        && double_spelling(b)
        && matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

pub(super) fn diff(want: &Item, got: &Item, path: &str) -> Option<String> {
    let path = format!("{path}/{}", want.name.1);
    if want.name != got.name {
        return Some(format!(
            "{path}: got element {{{}}}{}",
            got.name.0, got.name.1
        ));
    }
    if want.attributes != got.attributes {
        return Some(format!(
            "{path}: attributes {:?}, recorded {:?}",
            got.attributes, want.attributes
        ));
    }
    if want.text != got.text && !same_number(&want.text, &got.text) {
        return Some(format!(
            "{path}: text {:?}, recorded {:?}",
            clip(&got.text),
            clip(&want.text)
        ));
    }
    for (w, g) in want.children.iter().zip(&got.children) {
        if let Some(d) = diff(w, g, &path) {
            return Some(d);
        }
    }
    if want.children.len() != got.children.len() {
        return Some(format!(
            "{path}: {} child elements, recorded {}",
            got.children.len(),
            want.children.len()
        ));
    }
    None
}

pub(super) fn clip(s: &str) -> String {
    if s.chars().count() <= 120 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(120).collect();
        format!("{head}…")
    }
}
