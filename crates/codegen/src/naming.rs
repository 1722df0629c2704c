//! XML names → Rust identifiers: `UpperCamel` types, `snake_case` fields and methods, raw
//! identifiers for keywords, and suffixes that keep names unique.

use std::collections::BTreeSet;

/// Rust keywords (strict and reserved, 2024 edition).
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Keywords that cannot be raw identifiers.
const NOT_RAW: &[&str] = &["crate", "self", "super", "Self", "_"];

/// Type names generated code uses unqualified (prelude and our own), so a data contract may not
/// take them.
pub(crate) const RESERVED_TYPES: &[&str] = &[
    "Box",
    "Clone",
    "Debug",
    "Default",
    "Err",
    "Future",
    "None",
    "Ok",
    "Option",
    "PartialEq",
    "Result",
    "Self",
    "Send",
    "Sized",
    "Some",
    "String",
    "Sync",
    "Vec",
];

/// Splits a name into words at case changes, digits stay with their word, anything not
/// alphanumeric separates.
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let boundary = match prev {
            Some(p) if c.is_uppercase() => {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            }
            _ => false,
        };
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `UpperCamelCase`; acronyms become capitalised words (`IPAddress` → `IpAddress`) so clippy's
/// `upper_case_acronyms` stays quiet.
pub(crate) fn upper_camel(name: &str) -> String {
    let mut out = String::new();
    for w in words(name) {
        let mut chars = w.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            let rest: String = chars.collect();
            if w.chars().all(|c| !c.is_lowercase()) {
                out.push_str(&rest.to_lowercase());
            } else {
                out.push_str(&rest);
            }
        }
    }
    let out = ascii_ident(out, "Type");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("T{out}")
    } else {
        out
    }
}

/// `snake_case`, with raw identifiers for keywords.
pub(crate) fn snake(name: &str) -> String {
    let joined = words(name)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join("_");
    let out = ascii_ident(joined, "field");
    let out = if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{out}")
    } else {
        out
    };
    escape_keyword(out)
}

/// `UPPER_SNAKE_CASE`.
pub(crate) fn upper_snake(name: &str) -> String {
    snake(name).trim_start_matches("r#").to_uppercase()
}

/// Keeps ASCII identifier characters (non-ASCII letters become `_`: identifiers stay ASCII).
fn ascii_ident(s: String, empty: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '_') {
        empty.to_owned()
    } else {
        out
    }
}

fn escape_keyword(s: String) -> String {
    if NOT_RAW.contains(&s.as_str()) {
        format!("{s}_")
    } else if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

/// Names taken in one Rust namespace; [`unique`](Self::unique) appends 2, 3, … on a clash.
#[derive(Debug, Default)]
pub(crate) struct Names {
    taken: BTreeSet<String>,
}

impl Names {
    /// A set with these names already taken.
    pub(crate) fn with(reserved: &[&str]) -> Self {
        Self {
            taken: reserved.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// `base`, or `base2`, `base3`, … (`base_2` for snake case) if taken; then takes it.
    pub(crate) fn unique(&mut self, base: &str) -> String {
        let plain = base.trim_start_matches("r#");
        let sep = if plain.contains('_') || plain.chars().all(|c| !c.is_uppercase()) {
            "_"
        } else {
            ""
        };
        let mut candidate = base.to_owned();
        let mut n = 2;
        while self.taken.contains(candidate.trim_start_matches("r#")) {
            candidate = format!("{plain}{sep}{n}");
            n += 1;
        }
        self.taken
            .insert(candidate.trim_start_matches("r#").to_owned());
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert_eq!(snake("OrderId"), "order_id");
        assert_eq!(snake("a"), "a");
        assert_eq!(snake("IPAddress"), "ip_address");
        assert_eq!(snake("GetNotificationsResult"), "get_notifications_result");
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("Self"), "self_");
        assert_eq!(snake("2fa"), "_2fa");
        assert_eq!(snake("Line2Total"), "line2_total");
        assert_eq!(snake("ünïcode"), "_n_code");
        assert_eq!(upper_camel("ICalculator"), "ICalculator");
        assert_eq!(upper_camel("in-progress"), "InProgress");
        assert_eq!(upper_camel("RED_ALERT"), "RedAlert");
        assert_eq!(upper_camel("ArrayOfstring"), "ArrayOfstring");
        assert_eq!(upper_camel("order"), "Order");
        assert_eq!(upper_camel("9lives"), "T9lives");
        assert_eq!(upper_camel(""), "Type");
        assert_eq!(upper_snake("Calculator"), "CALCULATOR");
    }

    #[test]
    fn unique_names() {
        let mut n = Names::with(&["Result"]);
        assert_eq!(n.unique("Result"), "Result2");
        assert_eq!(n.unique("Order"), "Order");
        assert_eq!(n.unique("Order"), "Order2");
        assert_eq!(n.unique("id"), "id");
        assert_eq!(n.unique("id"), "id_2");
        assert_eq!(n.unique("r#type"), "r#type");
        assert_eq!(n.unique("r#type"), "type_2");
    }
}
