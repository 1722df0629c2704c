//! proptest strategies for documents.

use std::borrow::Cow;

use ferry_nbfx::{
    Attr, Attribute, DateTime, DateTimeKind, Decimal, Document, Element, Guid, Node, Text,
    TimeSpan, XmlString, Xmlns,
};
use proptest::{prelude::*, sample::select};

const NAMES: [&str; 9] = [
    "a", "item", "Value", "Body", "Address", "order", "näme", "x_y", "Envelope",
];

fn name() -> impl Strategy<Value = XmlString<'static>> {
    (select(&NAMES[..]), 0..3u8).prop_map(|(n, form)| match form {
        0 => XmlString::inline(n),
        1 => XmlString::prefer_static(n),
        _ => XmlString::session(n),
    })
}

fn string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&\"'üß日本🚀.:-]{0,24}"
}

/// Text values. `wcf_safe` leaves out what PyPI `wcf` cannot print as .NET does (TimeSpan as a
/// Python timedelta, lists, QName with its 3-byte name, bool records).
pub fn text(wcf_safe: bool) -> BoxedStrategy<Text<'static>> {
    let common = prop_oneof![
        Just(Text::Zero),
        Just(Text::One),
        Just(Text::False),
        Just(Text::True),
        any::<i64>().prop_map(Text::from_i64),
        any::<i32>().prop_map(Text::Int32),
        any::<f32>().prop_map(Text::Float),
        any::<f64>().prop_map(Text::Double),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-7.25),
            Just(1e20)
        ]
        .prop_map(Text::Double),
        (0u8..=28, any::<bool>(), 0u128..(1u128 << 96)).prop_map(|(scale, negative, magnitude)| {
            Text::Decimal(Decimal {
                scale,
                negative,
                magnitude,
            })
        }),
        string().prop_map(|s| Text::Chars(Cow::Owned(s))),
        string().prop_map(|s| Text::UnicodeChars(Cow::Owned(s))),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Text::Bytes(Cow::Owned(b))),
        Just(Text::Empty),
        any::<[u8; 16]>().prop_map(|g| Text::UniqueId(Guid(g))),
        any::<[u8; 16]>().prop_map(|g| Text::Guid(Guid(g))),
        any::<u64>().prop_map(Text::UInt64),
        (0u32..486)
            .prop_filter("0x1A8 differs in wcf", |i| i * 2 != 0x1A8)
            .prop_map(|i| {
                Text::Dictionary(XmlString::static_id(i * 2).expect("ids below 487*2 exist"))
            }),
        (0u64..3_155_378_975_999_999_999, 0..3u8).prop_map(|(ticks, k)| Text::DateTime(DateTime {
            ticks,
            kind: [
                DateTimeKind::Unspecified,
                DateTimeKind::Utc,
                DateTimeKind::Local
            ][k as usize],
        })),
    ];
    if wcf_safe {
        return common.boxed();
    }
    prop_oneof![
        4 => common,
        1 => any::<bool>().prop_map(Text::Bool),
        1 => any::<i64>().prop_map(|t| Text::TimeSpan(TimeSpan(t))),
        1 => (0u8..26, 0u32..100).prop_map(|(p, i)| Text::QName { prefix: p, name: XmlString::static_id(i * 2).expect("defined") }),
        1 => proptest::collection::vec(any::<i32>().prop_map(Text::Int32), 0..4).prop_map(Text::List),
    ]
    .boxed()
}

fn leaf(wcf_safe: bool) -> impl Strategy<Value = Element> {
    (
        name(),
        select(&["", "p", "pre"][..]),
        proptest::collection::vec(text(wcf_safe), 0..3),
        attributes(wcf_safe),
    )
        .prop_map(|(name, prefix, texts, attrs)| {
            let mut el = declare(Element::new(prefix, name, ""), prefix);
            el.attributes.extend(attrs);
            el.children = texts.into_iter().map(Node::Text).collect();
            el
        })
}

fn attributes(wcf_safe: bool) -> impl Strategy<Value = Vec<Attr<'static>>> {
    proptest::collection::vec(text(wcf_safe), 0..3).prop_map(|values| {
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                // Attribute values are written with the plain text record; lists only in the
                // non-wcf set.
                Attr::Attribute(Attribute {
                    prefix: Cow::Borrowed(""),
                    name: XmlString::inline(format!("k{i}")),
                    value,
                })
            })
            .collect()
    })
}

/// Declares the element's own prefix so the document is namespace-well-formed.
fn declare(mut el: Element, prefix: &str) -> Element {
    if !prefix.is_empty() {
        let ns = format!("urn:{prefix}");
        el.namespace = ns.clone().into();
        el.attributes.push(Attr::Xmlns(Xmlns {
            prefix: Cow::Owned(prefix.to_owned()),
            namespace: XmlString::inline(ns),
        }));
    }
    el
}

/// Whole documents: elements hold either text or elements (never both, so that a pretty printer
/// cannot change text content).
pub fn document(wcf_safe: bool) -> impl Strategy<Value = Document> {
    let tree = leaf(wcf_safe).prop_recursive(3, 24, 4, move |inner| {
        (leaf(wcf_safe), proptest::collection::vec(inner, 1..4)).prop_map(|(mut el, children)| {
            el.children = children.into_iter().map(Node::Element).collect();
            el
        })
    });
    tree.prop_map(Document::from_root)
}
