//! DataContract (de)serialization: Rust values ⇄ the element content `DataContractSerializer`
//! writes, over the infoset tree that both WCF encodings share.
//!
//! Values are written into a [`ferry_nbfx::Element`] tree and read back from one. The tree is
//! what the SOAP codecs already exchange ([`ferry_soap::Body::Payload`]), so one implementation
//! serves both encodings: [`ferry_nbfx::Document::to_xml`] / [`parse_xml`] for text (quick-xml)
//! and [`ferry_nbfx::Document::encode`] / [`decode`] for MC-NBFX binary records with the
//! dictionaries. Writing picks the text record .NET's binary writer picks for each type
//! (`Int8Text` for a small `int`, `DecimalText`, `DateTimeText`, `GuidText`, `TimeSpanText`,
//! `Bytes*Text`), and names are marked for the MC-NBFSE session dictionary, as the serializer's
//! `XmlDictionaryString`s are. Reading accepts both the typed records of a binary peer and the
//! plain text of an XML peer (or of a binary peer that wrote a value as characters, like Mono's
//! `Guid`), and concatenates consecutive text records of one element.
//!
//! Mapping (XSD as WCF publishes it → Rust):
//!
//! | XSD | Rust |
//! |---|---|
//! | `xs:int`, `xs:long`, `xs:short`, `xs:byte`, unsigned variants | `i32`, `i64`, `i16`, `i8`, `u32`, `u64`, `u16`, `u8` |
//! | `xs:boolean`, `xs:double`, `xs:float` | `bool`, `f64`, `f32` |
//! | `xs:string`, `xs:anyURI` | `String` |
//! | `xs:decimal` | [`Decimal`] (exact, 96-bit, with scale) |
//! | `xs:dateTime` | [`DateTime`] (ticks and kind) |
//! | `ser:duration`, `xs:duration` | [`TimeSpan`] (ticks) |
//! | `ser:guid` | [`Guid`] (16 bytes in .NET order) |
//! | `ser:char` | `char` (written as its code point) |
//! | `xs:base64Binary` | `Vec<u8>` |
//! | `nillable="true"` | `Option<T>` (`None` ⇄ `i:nil="true"`) |
//! | `ArrayOfX` (one repeated element) | `Vec<X>` through [`Writer::array`] / [`Reader::array`] |
//! | enumeration | a Rust enum of the member names |
//! | complex type | a struct implementing [`XmlValue`] and [`DataContract`] |
//!
//! [`parse_xml`]: ferry_nbfx::Document::parse_xml
//! [`decode`]: ferry_nbfx::Document::decode_with

use std::borrow::Cow;

use base64::Engine as _;
use ferry_nbfx::{
    Attr, Attribute, Node, Text, XmlString, Xmlns, value::format_double, value::format_float,
    value::parse_double,
};

pub use ferry_nbfx::{DateTime, DateTimeKind, Decimal, Element, Guid, TimeSpan};

use crate::value::{parse_datetime, parse_duration};

/// `http://www.w3.org/2001/XMLSchema-instance`: the `i:nil` attribute.
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The namespace of .NET's serialization types (`ser:guid`, `ser:duration`, `ser:char`).
pub const SERIALIZATION_NS: &str = "http://schemas.microsoft.com/2003/10/Serialization/";
/// The namespace of `ArrayOfstring`, `ArrayOfint` and the other arrays of primitives.
pub const ARRAYS_NS: &str = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";

/// Longest value text quoted in a [`DataError`], so an error never copies a large payload.
const MAX_QUOTED: usize = 64;

/// A value that is the content of one element: a primitive, an enum, a data contract, or an
/// `Option` of one (nil when `None`).
pub trait XmlValue: Sized {
    /// True for `Option<T>`: `i:nil="true"` reads as `None`. For any other type a nil element
    /// reads as an absent member (its default), as `DataContractSerializer` tolerates.
    const NILLABLE: bool = false;

    /// Writes this value as the content (attributes, text, children) of the element `w` is on.
    fn write_xml(&self, w: &mut Writer<'_>);

    /// Reads a value from the element `r` is on.
    ///
    /// # Errors
    ///
    /// [`DataError`] when the content is not a valid value of this type.
    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError>;
}

/// A value with an element name of its own: a data contract (the name of its type), a
/// wrapper message (the operation's element), a fault detail.
pub trait DataContract: XmlValue {
    /// Local name of the element.
    const NAME: &'static str;
    /// Namespace of the element.
    const NAMESPACE: &'static str;

    /// The value as a stand-alone element, declaring its namespace as the default one (how WCF
    /// writes a body or a fault detail).
    fn to_element(&self) -> Element {
        let mut root = Element::new("", name(Self::NAME), Self::NAMESPACE)
            .with_xmlns("", name(Self::NAMESPACE));
        let mut scope = Scope::default();
        scope.bind(String::new(), Self::NAMESPACE);
        self.write_xml(&mut Writer {
            element: &mut root,
            scope: &mut scope,
        });
        root
    }

    /// True when `element` has this name and namespace.
    fn matches(element: &Element) -> bool {
        element.namespace == Self::NAMESPACE && element.local_name() == Self::NAME
    }

    /// Reads the value from its element, which must have this name and namespace.
    ///
    /// # Errors
    ///
    /// [`DataError::UnexpectedElement`] for another element; any error of the content.
    fn from_element(element: &Element) -> Result<Self, DataError> {
        if !Self::matches(element) {
            return Err(DataError::UnexpectedElement {
                expected: format!("{{{}}}{}", Self::NAMESPACE, Self::NAME),
                found: format!("{{{}}}{}", element.namespace, element.local_name()),
            });
        }
        Self::read_xml(&mut Reader::new(element))
    }
}

/// Malformed or unexpected content while reading a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The element is not the one the message or value needs.
    #[error("expected element {expected}, found {found}")]
    UnexpectedElement {
        /// `{namespace}name` expected.
        expected: String,
        /// `{namespace}name` found.
        found: String,
    },
    /// A member marked required (`minOccurs="1"`, WCF's `IsRequired`) is absent.
    #[error("required member {name} is missing")]
    MissingMember {
        /// Local name of the member.
        name: String,
    },
    /// The text of an element is not a valid value of its type.
    #[error("element {element}: {text:?} is not a valid {expected}")]
    InvalidValue {
        /// Local name of the element.
        element: String,
        /// The type expected.
        expected: &'static str,
        /// The text found (cut at 64 bytes).
        text: String,
    },
}

impl DataError {
    /// An [`InvalidValue`](Self::InvalidValue) for the element `r` is on.
    pub fn invalid(r: &Reader<'_>, expected: &'static str) -> Self {
        let mut text = r.element.text();
        if text.len() > MAX_QUOTED {
            let mut cut = MAX_QUOTED;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Self::InvalidValue {
            element: r.element.local_name().to_owned(),
            expected,
            text,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer.

/// Writes content into one element of the tree, keeping track of the namespace prefixes in
/// scope so that each namespace is declared once, where `DataContractSerializer` declares it:
/// a data contract or array declares its members' namespace and `i` (XML Schema instance) on
/// its own element when they are not in scope yet (`<order xmlns:a="…types" xmlns:i="…">`).
pub struct Writer<'a> {
    element: &'a mut Element,
    scope: &'a mut Scope,
}

impl Writer<'_> {
    /// The element being written.
    pub fn element(&mut self) -> &mut Element {
        self.element
    }

    /// Appends a text node.
    pub fn text(&mut self, text: Text<'static>) {
        self.element.children.push(Node::Text(text));
    }

    /// Appends string content (nothing for an empty string, as WCF writes it).
    pub fn string(&mut self, text: &str) {
        if !text.is_empty() {
            self.text(Text::from_string(text.to_owned()));
        }
    }

    /// Marks the element nil: `i:nil="true"`.
    pub fn nil(&mut self) {
        let prefix = self.ensure(XSI_NS, Some("i"), true);
        self.element.attributes.push(Attr::Attribute(Attribute {
            prefix: Cow::Owned(prefix),
            name: name("nil"),
            value: Text::True,
        }));
    }

    /// Declares `namespace` (the members' namespace of a data contract) and the XML Schema
    /// instance namespace on this element unless they are in scope already.
    pub fn declare(&mut self, namespace: &str) {
        self.ensure(namespace, None, false);
        self.ensure(XSI_NS, Some("i"), true);
    }

    /// Writes a member element `<namespace:name>` holding `value`.
    pub fn member<T: XmlValue>(&mut self, namespace: &str, local: &str, value: &T) {
        self.child(namespace, local, |w| value.write_xml(w));
    }

    /// Writes an array member: `<namespace:name>` holding one `<item_namespace:item>` per value,
    /// the shape of WCF's `ArrayOf…` types.
    pub fn array<T: XmlValue>(
        &mut self,
        namespace: &str,
        local: &str,
        item: ArrayItem,
        values: &[T],
    ) {
        self.child(namespace, local, |w| {
            w.declare(item.namespace);
            for v in values {
                w.member(item.namespace, item.name, v);
            }
        });
    }

    /// Writes a nillable array member: nil for `None`, else as [`array`](Self::array).
    pub fn array_opt<T: XmlValue>(
        &mut self,
        namespace: &str,
        local: &str,
        item: ArrayItem,
        values: Option<&[T]>,
    ) {
        match values {
            Some(v) => self.array(namespace, local, item, v),
            None => self.child(namespace, local, |w| w.nil()),
        }
    }

    /// Writes a child element and lets `f` fill it.
    pub fn child(&mut self, namespace: &str, local: &str, f: impl FnOnce(&mut Writer<'_>)) {
        let mark = self.scope.bindings.len();
        let mut el = Element::new("", name(local), namespace.to_owned());
        match self.scope.prefix_of(namespace) {
            Some(p) => el.prefix = p.to_owned(),
            None if namespace.is_empty() => {
                // The default namespace is bound to something else: undeclare it.
                el.attributes.push(Attr::Xmlns(Xmlns {
                    prefix: Cow::Borrowed(""),
                    namespace: XmlString::inline(""),
                }));
                self.scope.bind(String::new(), "");
            }
            None => {
                let p = self.scope.fresh(None);
                el.attributes.push(xmlns(&p, namespace));
                self.scope.bind(p.clone(), namespace);
                el.prefix = p;
            }
        }
        f(&mut Writer {
            element: &mut el,
            scope: self.scope,
        });
        self.scope.bindings.truncate(mark);
        self.element.children.push(Node::Element(el));
    }

    /// The prefix of `namespace`, declaring it on this element (as `preferred` when that letter
    /// is free) if it is not in scope. Attributes need a real prefix: the default namespace
    /// does not apply to them.
    fn ensure(&mut self, namespace: &str, preferred: Option<&str>, attribute: bool) -> String {
        if let Some(p) = self
            .scope
            .prefix_of(namespace)
            .filter(|p| !attribute || !p.is_empty())
        {
            return p.to_owned();
        }
        let p = self.scope.fresh(preferred);
        self.element.attributes.push(xmlns(&p, namespace));
        self.scope.bind(p.clone(), namespace);
        p
    }
}

/// The repeated element of an `ArrayOf…` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayItem {
    /// Namespace of the item element ([`ARRAYS_NS`] for primitives, the item contract's
    /// namespace for data contracts).
    pub namespace: &'static str,
    /// Local name of the item element (`string`, `int`, `OrderLine`).
    pub name: &'static str,
}

impl ArrayItem {
    /// The item element `{namespace}name`.
    pub const fn new(namespace: &'static str, name: &'static str) -> Self {
        Self { namespace, name }
    }
}

/// Prefix bindings in force while writing, innermost last.
#[derive(Default)]
struct Scope {
    bindings: Vec<(String, String)>,
}

impl Scope {
    fn bind(&mut self, prefix: String, namespace: &str) {
        self.bindings.push((prefix, namespace.to_owned()));
    }

    fn resolve(&self, prefix: &str) -> Option<&str> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, ns)| ns.as_str())
    }

    /// The innermost prefix bound to `namespace` that no inner declaration shadows.
    fn prefix_of(&self, namespace: &str) -> Option<&str> {
        if namespace.is_empty() {
            // Only the default namespace can be "no namespace"; unbound means none.
            return match self.resolve("") {
                None | Some("") => Some(""),
                Some(_) => None,
            };
        }
        self.bindings
            .iter()
            .rev()
            .find(|(p, ns)| ns == namespace && self.resolve(p) == Some(namespace))
            .map(|(p, _)| p.as_str())
    }

    /// A one-letter prefix not bound in scope (one-letter prefixes get the short binary
    /// records); `i` is kept for XML Schema instance, as in WCF.
    fn fresh(&self, preferred: Option<&str>) -> String {
        if let Some(p) = preferred
            && self.resolve(p).is_none()
        {
            return p.to_owned();
        }
        let letters = (b'a'..=b'z')
            .filter(|&c| c != b'i')
            .map(|c| (c as char).to_string());
        let numbered = (1..).map(|n| format!("p{n}"));
        letters
            .chain(numbered)
            .find(|p| self.resolve(p).is_none())
            .unwrap_or_default()
    }
}

fn name(text: &str) -> XmlString<'static> {
    XmlString::session(text.to_owned())
}

fn xmlns(prefix: &str, namespace: &str) -> Attr<'static> {
    Attr::Xmlns(Xmlns {
        prefix: Cow::Owned(prefix.to_owned()),
        namespace: name(namespace),
    })
}

// ---------------------------------------------------------------------------------------------
// Reader.

/// Reads the content of one element: its text, or its child elements in order.
///
/// Members are looked up in sequence: [`member`](Self::member) finds the next child with the
/// given name at or after the cursor and moves past it, so absent members (`minOccurs="0"`)
/// read as `None` and unknown elements are skipped, as `DataContractSerializer` does.
pub struct Reader<'a> {
    element: &'a Element,
    next: usize,
}

impl<'a> Reader<'a> {
    /// A reader on `element`, cursor before its first child.
    pub fn new(element: &'a Element) -> Self {
        Self { element, next: 0 }
    }

    /// The element being read.
    pub fn element(&self) -> &'a Element {
        self.element
    }

    /// True for `i:nil="true"` (the prefix must be bound to XML Schema instance; any prefix is
    /// accepted for text peers that use another letter).
    pub fn is_nil(&self) -> bool {
        self.element.attributes.iter().any(|a| match a {
            Attr::Attribute(a) => a.name.text == "nil" && is_true(&a.value),
            Attr::Xmlns(_) => false,
        })
    }

    /// The single typed text child, if the element holds exactly one text node.
    pub fn typed(&self) -> Option<&'a Text<'static>> {
        self.element.value()
    }

    /// The text content: all text children as .NET prints them, concatenated.
    pub fn text(&self) -> String {
        self.element.text()
    }

    /// Reads the next member named `namespace:local`; `Ok(None)` when it is absent (or nil for
    /// a type that is not nillable).
    ///
    /// # Errors
    ///
    /// Any [`DataError`] of the member's content.
    pub fn member<T: XmlValue>(
        &mut self,
        namespace: &str,
        local: &str,
    ) -> Result<Option<T>, DataError> {
        let Some(el) = self.find(namespace, local) else {
            return Ok(None);
        };
        let mut r = Reader::new(el);
        if !T::NILLABLE && r.is_nil() {
            return Ok(None);
        }
        T::read_xml(&mut r).map(Some)
    }

    /// As [`member`](Self::member) for a member that must be present.
    ///
    /// # Errors
    ///
    /// [`DataError::MissingMember`] when it is absent; any error of its content.
    pub fn required<T: XmlValue>(&mut self, namespace: &str, local: &str) -> Result<T, DataError> {
        self.member(namespace, local)?
            .ok_or_else(|| DataError::MissingMember {
                name: local.to_owned(),
            })
    }

    /// Reads the next array member; `Ok(None)` when it is absent or nil. Items are the child
    /// elements named `item` (others are skipped) and the items of binary Array records.
    ///
    /// # Errors
    ///
    /// Any [`DataError`] of an item.
    pub fn array<T: XmlValue>(
        &mut self,
        namespace: &str,
        local: &str,
        item: ArrayItem,
    ) -> Result<Option<Vec<T>>, DataError> {
        let Some(el) = self.find(namespace, local) else {
            return Ok(None);
        };
        if Reader::new(el).is_nil() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for node in &el.children {
            match node {
                Node::Element(child)
                    if child.namespace == item.namespace && child.local_name() == item.name =>
                {
                    out.push(T::read_xml(&mut Reader::new(child))?);
                }
                Node::Array(a)
                    if a.element.name.text == item.name && array_namespace(el, a, item) =>
                {
                    for text in a.items() {
                        let one = Element::new("", XmlString::inline(item.name), item.namespace)
                            .with_text(text);
                        out.push(T::read_xml(&mut Reader::new(&one))?);
                    }
                }
                _ => {}
            }
        }
        Ok(Some(out))
    }

    /// The next child element named `namespace:local` at or after the cursor.
    fn find(&mut self, namespace: &str, local: &str) -> Option<&'a Element> {
        let children = &self.element.children;
        for (i, node) in children.iter().enumerate().skip(self.next) {
            if let Node::Element(e) = node
                && e.namespace == namespace
                && e.local_name() == local
            {
                self.next = i + 1;
                return Some(e);
            }
        }
        None
    }
}

/// Whether the Array record's element is in the item namespace. The tree keeps an Array's
/// prefix unresolved, so resolve it against the declarations of the record and of its parent;
/// a prefix declared further up is taken on trust (the tree builder checked it is declared),
/// the local name having matched already.
fn array_namespace(parent: &Element, a: &ferry_nbfx::Array<'static>, item: ArrayItem) -> bool {
    let prefix = &a.element.prefix;
    let declared = a
        .attributes
        .iter()
        .chain(parent.attributes.iter())
        .find_map(|attr| match attr {
            Attr::Xmlns(x) if x.prefix == *prefix => Some(x.namespace.text.as_ref()),
            _ => None,
        });
    declared.is_none_or(|ns| ns == item.namespace)
}

fn is_true(t: &Text<'_>) -> bool {
    match t {
        Text::True | Text::One | Text::Bool(true) => true,
        Text::Chars(s) | Text::UnicodeChars(s) => s.trim() == "true" || s.trim() == "1",
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Primitive values.

impl<T: XmlValue> XmlValue for Option<T> {
    const NILLABLE: bool = true;

    fn write_xml(&self, w: &mut Writer<'_>) {
        match self {
            Some(v) => v.write_xml(w),
            None => w.nil(),
        }
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        if r.is_nil() {
            Ok(None)
        } else {
            T::read_xml(r).map(Some)
        }
    }
}

impl<T: XmlValue> XmlValue for Box<T> {
    const NILLABLE: bool = T::NILLABLE;

    fn write_xml(&self, w: &mut Writer<'_>) {
        (**self).write_xml(w);
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        T::read_xml(r).map(Self::new)
    }
}

/// Integers: the smallest integer record on write; any integer record or decimal text on read.
macro_rules! integer {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl XmlValue for $t {
            fn write_xml(&self, w: &mut Writer<'_>) {
                w.text(integer_text(i128::from(*self)));
            }

            fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
                let wide: Option<i128> = match r.typed() {
                    Some(Text::UInt64(v)) => Some(i128::from(*v)),
                    Some(t) => t.as_i64().map(i128::from),
                    None => None,
                };
                wide.or_else(|| r.text().trim().parse::<i128>().ok())
                    .and_then(|v| <$t>::try_from(v).ok())
                    .ok_or_else(|| DataError::invalid(r, $name))
            }
        }
    )*};
}

integer!(
    i8 => "xs:byte", i16 => "xs:short", i32 => "xs:int", i64 => "xs:long",
    u8 => "xs:unsignedByte", u16 => "xs:unsignedShort", u32 => "xs:unsignedInt",
    u64 => "xs:unsignedLong",
);

/// The record for an integer of any width: signed records up to `i64::MAX`, then UInt64.
fn integer_text(v: i128) -> Text<'static> {
    match i64::try_from(v) {
        Ok(v) => Text::from_i64(v),
        // Only u64 values above i64::MAX get here.
        Err(_) => Text::from_u64(u64::try_from(v).unwrap_or(u64::MAX)),
    }
}

impl XmlValue for bool {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::from_bool(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        match r.typed() {
            Some(Text::True | Text::One | Text::Bool(true)) => return Ok(true),
            Some(Text::False | Text::Zero | Text::Bool(false)) => return Ok(false),
            _ => {}
        }
        match r.text().trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(DataError::invalid(r, "xs:boolean")),
        }
    }
}

impl XmlValue for f64 {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::from_f64(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        match r.typed() {
            Some(Text::Double(v)) => return Ok(*v),
            Some(Text::Float(v)) => return Ok(Self::from(*v)),
            Some(t) if t.as_i64().is_some() => return Ok(t.as_i64().unwrap_or(0) as Self),
            _ => {}
        }
        parse_double(r.text().trim()).ok_or_else(|| DataError::invalid(r, "xs:double"))
    }
}

impl XmlValue for f32 {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::from_f32(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        match r.typed() {
            Some(Text::Float(v)) => return Ok(*v),
            Some(Text::Double(v)) => return Ok(*v as Self),
            Some(t) if t.as_i64().is_some() => return Ok(t.as_i64().unwrap_or(0) as Self),
            _ => {}
        }
        parse_double(r.text().trim())
            .map(|v| v as Self)
            .ok_or_else(|| DataError::invalid(r, "xs:float"))
    }
}

impl XmlValue for String {
    fn write_xml(&self, w: &mut Writer<'_>) {
        // An empty string is an element with no text, as WCF writes it.
        if !self.is_empty() {
            w.text(Text::from_string(self.clone()));
        }
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        Ok(r.text())
    }
}

impl XmlValue for char {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::from_i64(i64::from(u32::from(*self))));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        let code = u32::read_xml(r).map_err(|_| DataError::invalid(r, "ser:char"))?;
        Self::from_u32(code).ok_or_else(|| DataError::invalid(r, "ser:char"))
    }
}

impl XmlValue for Vec<u8> {
    fn write_xml(&self, w: &mut Writer<'_>) {
        if !self.is_empty() {
            w.text(Text::Bytes(Cow::Owned(self.clone())));
        }
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        if let Some(bytes) = r.element.bytes() {
            return Ok(bytes);
        }
        let text: String = r
            .text()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| DataError::invalid(r, "xs:base64Binary"))
    }
}

impl XmlValue for Decimal {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::Decimal(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        if let Some(Text::Decimal(d)) = r.typed() {
            return Ok(*d);
        }
        Self::parse(r.text().trim()).ok_or_else(|| DataError::invalid(r, "xs:decimal"))
    }
}

impl XmlValue for DateTime {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::DateTime(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        if let Some(Text::DateTime(d)) = r.typed() {
            return Ok(*d);
        }
        parse_datetime(r.text().trim()).ok_or_else(|| DataError::invalid(r, "xs:dateTime"))
    }
}

impl XmlValue for TimeSpan {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::TimeSpan(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        if let Some(Text::TimeSpan(t)) = r.typed() {
            return Ok(*t);
        }
        parse_duration(r.text().trim()).ok_or_else(|| DataError::invalid(r, "xs:duration"))
    }
}

impl XmlValue for Guid {
    fn write_xml(&self, w: &mut Writer<'_>) {
        w.text(Text::Guid(*self));
    }

    fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
        if let Some(Text::Guid(g) | Text::UniqueId(g)) = r.typed() {
            return Ok(*g);
        }
        let text = r.text();
        let text = text.trim();
        Self::parse(text.strip_prefix("urn:uuid:").unwrap_or(text))
            .ok_or_else(|| DataError::invalid(r, "ser:guid"))
    }
}

/// Prints a double the way .NET's `XmlConvert` does (`INF`, `NaN`, `1E+15`); what an `f64`
/// member looks like in XML text.
pub fn double_text(v: f64) -> String {
    format_double(v)
}

/// Prints a float the way .NET's `XmlConvert` does.
pub fn float_text(v: f32) -> String {
    format_float(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        a: i32,
        note: Option<String>,
    }

    impl XmlValue for Pair {
        fn write_xml(&self, w: &mut Writer<'_>) {
            w.declare("urn:t");
            w.member("urn:t", "A", &self.a);
            w.member("urn:t", "Note", &self.note);
        }

        fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
            Ok(Self {
                a: r.member("urn:t", "A")?.unwrap_or_default(),
                note: r.member("urn:t", "Note")?.unwrap_or_default(),
            })
        }
    }

    impl DataContract for Pair {
        const NAME: &'static str = "Pair";
        const NAMESPACE: &'static str = "urn:t";
    }

    #[test]
    fn declares_like_data_contract_serializer() {
        let el = Pair { a: 300, note: None }.to_element();
        let xml = ferry_nbfx::Document::from_root(el).to_xml();
        assert_eq!(
            xml,
            r#"<Pair xmlns="urn:t" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><A>300</A><Note i:nil="true"/></Pair>"#
        );
    }

    #[test]
    fn members_in_another_namespace_get_a_prefix() {
        struct Outer(Pair);
        impl XmlValue for Outer {
            fn write_xml(&self, w: &mut Writer<'_>) {
                w.member("urn:o", "p", &self.0);
            }
            fn read_xml(r: &mut Reader<'_>) -> Result<Self, DataError> {
                r.required("urn:o", "p").map(Self)
            }
        }
        impl DataContract for Outer {
            const NAME: &'static str = "Outer";
            const NAMESPACE: &'static str = "urn:o";
        }
        let el = Outer(Pair {
            a: 1,
            note: Some("x".into()),
        })
        .to_element();
        let xml = ferry_nbfx::Document::from_root(el.clone()).to_xml();
        assert_eq!(
            xml,
            r#"<Outer xmlns="urn:o"><p xmlns:a="urn:t" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><a:A>1</a:A><a:Note>x</a:Note></p></Outer>"#
        );
        let back = Outer::from_element(&el).unwrap();
        assert_eq!((back.0.a, back.0.note.as_deref()), (1, Some("x")));
    }

    #[test]
    fn nil_on_a_value_type_reads_as_default() {
        let doc = ferry_nbfx::Document::parse_xml(
            r#"<Pair xmlns="urn:t" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><A i:nil="true"/></Pair>"#,
            &ferry_nbfx::XmlOptions::default(),
        )
        .unwrap();
        let p = Pair::from_element(doc.root().unwrap()).unwrap();
        assert_eq!((p.a, p.note), (0, None));
    }

    #[test]
    fn reads_binary_array_records() {
        // .NET writes `int[]` as one Array record (MC-NBFX 2.2.1.3) instead of item elements.
        let item = ArrayItem::new(ARRAYS_NS, "int");
        let array = ferry_nbfx::Array::from_items(
            ferry_nbfx::StartElement {
                prefix: Cow::Borrowed("b"),
                name: XmlString::inline("int"),
            },
            vec![xmlns("b", ARRAYS_NS)],
            ferry_nbfx::ArrayType::Int32,
            &[Text::Int32(7), Text::Int32(-9)],
        )
        .unwrap();
        let numbers = Element::new("", XmlString::inline("Numbers"), "urn:t")
            .with_child(Node::Array(array.into_owned()));
        let outer = Element::new("", XmlString::inline("X"), "urn:t").with_element(numbers);
        let mut r = Reader::new(&outer);
        let got: Option<Vec<i32>> = r.array("urn:t", "Numbers", item).unwrap();
        assert_eq!(got, Some(vec![7, -9]));
    }

    #[test]
    fn wrong_root_is_an_error() {
        let el = Element::new("", XmlString::inline("Other"), "urn:t");
        assert!(matches!(
            Pair::from_element(&el),
            Err(DataError::UnexpectedElement { .. })
        ));
    }

    #[test]
    fn invalid_value_quotes_at_most_64_bytes() {
        let long = "é".repeat(100);
        let el = Element::new("", XmlString::inline("A"), "").with_text(Text::from_string(long));
        let err = i32::read_xml(&mut Reader::new(&el)).unwrap_err();
        let DataError::InvalidValue { text, .. } = err else {
            panic!("{err:?}")
        };
        assert!(text.len() <= 64);
    }
}
