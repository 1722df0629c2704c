//! An owned document tree (the infoset) shared by the binary and the text form.
//!
//! [`Document::decode`] builds it from binary records, [`Document::parse_xml`] from XML text
//! (quick-xml); [`Document::encode`] writes binary, [`Document::to_xml`] text. The tree keeps
//! what re-encoding needs to reproduce the original bytes: the order of attributes and
//! namespace declarations, which names came from a dictionary, and each text record as its own
//! typed node (WCF splits a `byte[]` into two Bytes records; a reader concatenates them, see
//! [`Element::text`] and [`Element::bytes`]).

use std::{borrow::Cow, fmt::Write as _};

use quick_xml::events::Event;

use crate::{
    dictionary::{SessionDictionary, StaticDictionary, WriterSession},
    error::{DecodeError, EncodeError, XmlError},
    limits::{Limit, Limits},
    reader::Reader,
    record::{Array, Attr, Attribute, Encoder, Record, StartElement, Text, XmlString, Xmlns},
    string::Str,
};

/// The namespace bound to the `xml` prefix.
pub const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// A document: top-level nodes (normally one root element, possibly comments).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Document {
    /// Top-level nodes in order.
    pub children: Vec<Node>,
}

/// A node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// One text record (or one run of XML character data).
    Text(Text<'static>),
    /// A comment.
    Comment(String),
    /// An Array record: repetitions of one element, each with one value.
    Array(Array<'static>),
}

/// An element with its resolved namespace.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Element {
    /// Prefix, empty for none.
    pub prefix: String,
    /// Local name and how it is written.
    pub name: XmlString<'static>,
    /// The namespace URI the prefix resolves to (empty for no namespace), shared with the
    /// declaration it resolves to.
    pub namespace: Str<'static>,
    /// Attributes and namespace declarations, in document order.
    pub attributes: Vec<Attr<'static>>,
    /// Child nodes.
    pub children: Vec<Node>,
    /// The element ends in a text record followed by a separate EndElement record instead of
    /// the WithEndElement variant. WCF's writer does that when the text was already flushed from
    /// its buffer (long strings); kept so that re-encoding reproduces the bytes.
    pub explicit_end: bool,
}

/// How [`Document::parse_xml`] writes names when the document is later encoded as binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DictionaryUse {
    /// Every name and namespace inline.
    None,
    /// Names and namespaces found in the MC-NBFS static dictionary as static ids.
    #[default]
    Static,
    /// As `Static`, and every other name and namespace as a session string.
    StaticAndSession,
}

/// Options for [`Document::parse_xml`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XmlOptions {
    /// Dictionary use for names and namespaces.
    pub dictionary: DictionaryUse,
    /// Drop text nodes that are only whitespace (indentation).
    pub ignore_whitespace: bool,
    /// Limits: nesting depth and string length.
    pub limits: Limits,
}

impl Default for XmlOptions {
    fn default() -> Self {
        Self {
            dictionary: DictionaryUse::Static,
            ignore_whitespace: false,
            limits: Limits::default(),
        }
    }
}

impl Document {
    /// Decodes a static-dictionary-only binary document with default limits.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`], including an undeclared prefix.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(bytes, None, Limits::default())
    }

    /// Decodes a binary document whose odd ids refer to `session`.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`], including an undeclared prefix.
    pub fn decode_with(
        bytes: &[u8],
        session: Option<&SessionDictionary>,
        limits: Limits,
    ) -> Result<Self, DecodeError> {
        let reader = match session {
            Some(s) => Reader::with_session(bytes, s),
            None => Reader::new(bytes),
        };
        build(reader.limits(limits))
    }

    /// The first top-level element.
    pub fn root(&self) -> Option<&Element> {
        self.children.iter().find_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// A document holding one root element.
    pub fn from_root(root: Element) -> Self {
        Self {
            children: vec![Node::Element(root)],
        }
    }

    /// Appends the binary form. Session-form names get ids from `session` (which the caller
    /// then writes as the string table with [`WriterSession::write_table`] *before* these bytes).
    ///
    /// # Errors
    ///
    /// See [`EncodeError`].
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        session: Option<&mut WriterSession>,
    ) -> Result<(), EncodeError> {
        let mut enc = Encoder { out, session };
        for node in &self.children {
            encode_node(&mut enc, node, false)?;
        }
        Ok(())
    }

    /// Encodes for an `application/soap+msbinsession1` envelope: the string table of the names
    /// `session` added, then the document.
    ///
    /// # Errors
    ///
    /// See [`EncodeError`].
    pub fn encode_with_table(&self, session: &mut WriterSession) -> Result<Vec<u8>, EncodeError> {
        let mut doc = Vec::new();
        self.encode(&mut doc, Some(session))?;
        let mut out = Vec::with_capacity(doc.len() + 16);
        session.write_table(&mut out);
        out.extend_from_slice(&doc);
        Ok(out)
    }

    /// XML text without indentation.
    pub fn to_xml(&self) -> String {
        self.write_xml(None)
    }

    /// XML text indented by `indent` spaces where content is only elements.
    pub fn to_xml_pretty(&self, indent: usize) -> String {
        self.write_xml(Some(indent))
    }

    fn write_xml(&self, indent: Option<usize>) -> String {
        let mut out = String::new();
        for (n, node) in self.children.iter().enumerate() {
            if n > 0 && indent.is_some() {
                out.push('\n');
            }
            write_node(&mut out, node, indent, 0);
        }
        out
    }

    /// Parses XML text into a tree; text becomes Chars (or the record WCF's writer picks for a
    /// string, see [`Text::from_string`]), names follow `options.dictionary`.
    ///
    /// # Errors
    ///
    /// See [`XmlError`].
    pub fn parse_xml(text: &str, options: &XmlOptions) -> Result<Self, XmlError> {
        parse_xml(text, options)
    }
}

impl Element {
    /// A new element with no attributes or children.
    pub fn new(prefix: &str, name: XmlString<'static>, namespace: impl Into<Str<'static>>) -> Self {
        Self {
            prefix: prefix.to_owned(),
            name,
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    /// Local name.
    pub fn local_name(&self) -> &str {
        &self.name.text
    }

    /// Adds a namespace declaration (builder style).
    #[must_use]
    pub fn with_xmlns(mut self, prefix: &str, namespace: XmlString<'static>) -> Self {
        self.attributes.push(Attr::Xmlns(Xmlns {
            prefix: Cow::Owned(prefix.to_owned()),
            namespace,
        }));
        self
    }

    /// Adds an attribute (builder style).
    #[must_use]
    pub fn with_attribute(
        mut self,
        prefix: &str,
        name: XmlString<'static>,
        value: Text<'static>,
    ) -> Self {
        self.attributes.push(Attr::Attribute(Attribute {
            prefix: Cow::Owned(prefix.to_owned()),
            name,
            value,
        }));
        self
    }

    /// Adds a child node (builder style).
    #[must_use]
    pub fn with_child(mut self, node: Node) -> Self {
        self.children.push(node);
        self
    }

    /// Adds a child element (builder style).
    #[must_use]
    pub fn with_element(self, child: Self) -> Self {
        self.with_child(Node::Element(child))
    }

    /// Adds a text child (builder style).
    #[must_use]
    pub fn with_text(self, text: Text<'static>) -> Self {
        self.with_child(Node::Text(text))
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Self> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The first child element with this namespace and local name.
    pub fn child(&self, namespace: &str, local: &str) -> Option<&Self> {
        self.elements()
            .find(|e| e.namespace == namespace && e.local_name() == local)
    }

    /// The first attribute with this local name (any prefix).
    pub fn attribute(&self, local: &str) -> Option<&Attribute<'static>> {
        self.attributes.iter().find_map(|a| match a {
            Attr::Attribute(a) if a.name.text == local => Some(a),
            _ => None,
        })
    }

    /// The text content: every text child printed the way .NET prints it, concatenated (as a
    /// reader must for consecutive text records); element, array and comment children are
    /// skipped.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                let _ = write!(out, "{t}");
            }
        }
        out
    }

    /// The concatenated bytes when every text child is a Bytes record (or there are none).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for node in &self.children {
            match node {
                Node::Text(Text::Bytes(b)) => out.extend_from_slice(b),
                Node::Text(Text::Empty) | Node::Comment(_) => {}
                _ => return None,
            }
        }
        Some(out)
    }

    /// The single typed text child, if the element has exactly one child and it is text.
    pub fn value(&self) -> Option<&Text<'static>> {
        match self.children.as_slice() {
            [Node::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// True for `nil="true"` with any prefix (normally `i:` bound to XML Schema instance).
    pub fn is_nil(&self) -> bool {
        self.attribute("nil")
            .is_some_and(|a| a.value.to_string() == "true")
    }
}

/// Builds the tree from records, resolving namespaces.
fn build(mut reader: Reader<'_>) -> Result<Document, DecodeError> {
    let mut doc = Document::default();
    let mut stack: Vec<Element> = Vec::new();
    let mut scopes = Scopes::default();
    // The top element's start tag is still open (attributes may follow).
    let mut open_tag = false;
    loop {
        let offset = reader.offset();
        let Some(record) = reader.next_record()? else {
            break;
        };
        if open_tag && !matches!(record, Record::Attribute(_) | Record::Xmlns(_)) {
            if let Some(el) = stack.last_mut() {
                scopes.seal(el, offset)?;
            }
            open_tag = false;
        }
        let mut close = false;
        match record {
            Record::Element(e) => {
                stack.push(Element {
                    prefix: e.prefix.into_owned(),
                    name: e.name.into_owned(),
                    ..Element::default()
                });
                open_tag = true;
            }
            Record::Attribute(a) => {
                if let Some(el) = stack.last_mut() {
                    el.attributes.push(Attr::Attribute(a.into_owned()));
                }
            }
            Record::Xmlns(x) => {
                if let Some(el) = stack.last_mut() {
                    el.attributes.push(Attr::Xmlns(x.into_owned()));
                }
            }
            Record::EndElement => {
                close = true;
                if let Some(el) = stack.last_mut() {
                    el.explicit_end = matches!(el.children.last(), Some(Node::Text(_)));
                }
            }
            Record::Text { text, end } => {
                push(&mut stack, &mut doc, Node::Text(text.into_owned()));
                close = end;
            }
            Record::Comment(c) => push(&mut stack, &mut doc, Node::Comment(c.into_owned())),
            Record::Array(a) => {
                scopes.check_array(&a, offset)?;
                push(&mut stack, &mut doc, Node::Array(a.into_owned()));
            }
        }
        if close {
            // The reader only yields EndElement or a WithEndElement text inside an element.
            if let Some(el) = stack.pop() {
                scopes.pop();
                push(&mut stack, &mut doc, Node::Element(el));
            }
        }
    }
    if open_tag && let Some(el) = stack.last_mut() {
        scopes.seal(el, reader.offset())?;
    }
    Ok(doc)
}

fn push(stack: &mut [Element], doc: &mut Document, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => doc.children.push(node),
    }
}

/// Namespace scopes: declarations in force, with one frame per open element.
///
/// Each declaration's namespace is held once and shared by every element that resolves to it,
/// so resolving costs no copy however long the namespace is.
#[derive(Default)]
struct Scopes {
    decls: Vec<(Str<'static>, Str<'static>)>,
    frames: Vec<usize>,
}

impl Scopes {
    fn resolve(&self, prefix: &str) -> Option<Str<'static>> {
        if let Some((_, ns)) = self.decls.iter().rev().find(|(p, _)| *p == prefix) {
            return Some(ns.clone());
        }
        match prefix {
            "" => Some(Str::Static("")),
            "xml" => Some(Str::Static(XML_NAMESPACE)),
            "xmlns" => Some(Str::Static("http://www.w3.org/2000/xmlns/")),
            _ => None,
        }
    }

    /// Opens a frame with the element's declarations and resolves its prefixes.
    fn seal(&mut self, el: &mut Element, offset: usize) -> Result<(), DecodeError> {
        self.frames.push(self.decls.len());
        for a in &el.attributes {
            if let Attr::Xmlns(x) = a {
                self.decls.push((
                    Str::from(x.prefix.clone()).into_owned(),
                    x.namespace.text.clone(),
                ));
            }
        }
        let undeclared = |p: &str| DecodeError::UndeclaredPrefix {
            offset,
            prefix: p.to_owned(),
        };
        el.namespace = self
            .resolve(&el.prefix)
            .ok_or_else(|| undeclared(&el.prefix))?;
        for a in &el.attributes {
            if let Attr::Attribute(a) = a
                && !a.prefix.is_empty()
                && self.resolve(&a.prefix).is_none()
            {
                return Err(undeclared(&a.prefix));
            }
        }
        Ok(())
    }

    fn pop(&mut self) {
        if let Some(mark) = self.frames.pop() {
            self.decls.truncate(mark);
        }
    }

    fn check_array(&mut self, a: &Array<'_>, offset: usize) -> Result<(), DecodeError> {
        let mut el = Element {
            prefix: a.element.prefix.to_string(),
            attributes: a.attributes.iter().cloned().map(Attr::into_owned).collect(),
            ..Element::default()
        };
        let result = self.seal(&mut el, offset);
        self.pop();
        result
    }
}

fn encode_node(enc: &mut Encoder<'_, '_>, node: &Node, end: bool) -> Result<(), EncodeError> {
    match node {
        Node::Element(el) => {
            enc.element(&StartElement {
                prefix: Cow::Borrowed(&el.prefix),
                name: el.name.borrowed(),
            })?;
            for a in &el.attributes {
                match a {
                    Attr::Attribute(a) => enc.attribute(a)?,
                    Attr::Xmlns(x) => enc.xmlns(x)?,
                }
            }
            let last = el.children.len().saturating_sub(1);
            let fold = !el.explicit_end;
            for (n, child) in el.children.iter().enumerate() {
                encode_node(enc, child, fold && n == last)?;
            }
            // WCF folds the EndElement into a final text record (the WithEndElement variant).
            if !fold || !matches!(el.children.last(), Some(Node::Text(_))) {
                enc.out.push(0x01);
            }
            Ok(())
        }
        Node::Text(t) => enc.text(t, end),
        Node::Comment(c) => enc.record(&Record::Comment(Cow::Borrowed(c))),
        Node::Array(a) => enc.array(a),
    }
}

// ---------------------------------------------------------------------------------------------
// XML text output.

fn write_node(out: &mut String, node: &Node, indent: Option<usize>, level: usize) {
    match node {
        Node::Element(el) => write_element(out, el, indent, level),
        Node::Text(t) => escape_into(out, &t.to_string(), false),
        Node::Comment(c) => {
            out.push_str("<!--");
            out.push_str(c);
            out.push_str("-->");
        }
        Node::Array(a) => {
            for (n, item) in a.items().enumerate() {
                if n > 0 {
                    newline(out, indent, level);
                }
                write_start(out, &a.element.prefix, &a.element.name.text, &a.attributes);
                out.push('>');
                escape_into(out, &item.to_string(), false);
                write_end(out, &a.element.prefix, &a.element.name.text);
            }
        }
    }
}

fn newline(out: &mut String, indent: Option<usize>, level: usize) {
    if let Some(width) = indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', width * level));
    }
}

fn write_start(out: &mut String, prefix: &str, name: &str, attributes: &[Attr<'_>]) {
    out.push('<');
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(name);
    for a in attributes {
        match a {
            Attr::Xmlns(x) => {
                out.push_str(" xmlns");
                if !x.prefix.is_empty() {
                    out.push(':');
                    out.push_str(&x.prefix);
                }
                out.push_str("=\"");
                escape_into(out, &x.namespace.text, true);
            }
            Attr::Attribute(a) => {
                out.push(' ');
                if !a.prefix.is_empty() {
                    out.push_str(&a.prefix);
                    out.push(':');
                }
                out.push_str(&a.name.text);
                out.push_str("=\"");
                escape_into(out, &a.value.to_string(), true);
            }
        }
        out.push('"');
    }
}

fn prints_empty(t: &Text<'_>) -> bool {
    match t {
        Text::Empty => true,
        Text::Chars(s) | Text::UnicodeChars(s) => s.is_empty(),
        Text::Bytes(b) => b.is_empty(),
        // The static dictionary has an empty string (id 162).
        Text::Dictionary(s) => s.text.is_empty(),
        Text::List(items) => items.iter().all(prints_empty),
        _ => false,
    }
}

fn write_end(out: &mut String, prefix: &str, name: &str) {
    out.push_str("</");
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push(':');
    }
    out.push_str(name);
    out.push('>');
}

fn write_element(out: &mut String, el: &Element, indent: Option<usize>, level: usize) {
    write_start(out, &el.prefix, &el.name.text, &el.attributes);
    // Text records that print as nothing (EmptyText, zero-length Chars or Bytes) leave the
    // element empty in the infoset.
    if el
        .children
        .iter()
        .all(|c| matches!(c, Node::Text(t) if prints_empty(t)))
    {
        out.push_str("/>");
        return;
    }
    out.push('>');
    // Indenting would change text content, so only element-only content is indented.
    let structural = el.children.iter().all(|c| !matches!(c, Node::Text(_)));
    let child_indent = if structural { indent } else { None };
    for child in &el.children {
        newline(out, child_indent, level + 1);
        write_node(out, child, child_indent, level + 1);
    }
    newline(out, child_indent, level);
    write_end(out, &el.prefix, &el.name.text);
}

/// Escapes markup characters; in attributes also quotes and the whitespace that attribute-value
/// normalisation would otherwise change.
fn escape_into(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#x9;"),
            '\n' if attribute => out.push_str("&#xA;"),
            _ => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// XML text input.

fn parse_xml(text: &str, options: &XmlOptions) -> Result<Document, XmlError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut doc = Document::default();
    let mut stack: Vec<Element> = Vec::new();
    let mut scopes = Scopes::default();
    let mut pending = String::new();
    let limits = options.limits;
    loop {
        let event = reader.read_event().map_err(|e| syntax(&reader, &e))?;
        if !matches!(
            event,
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_)
        ) {
            flush_text(&mut pending, &mut stack, options)?;
        }
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::LimitExceeded {
                        limit: Limit::Depth,
                        max: limits.max_depth,
                    });
                }
                if stack.is_empty() && doc.root().is_some() {
                    return Err(XmlError::Structure("more than one root element"));
                }
                let qname = e.name();
                let raw = std::str::from_utf8(qname.as_ref()).map_err(|e| syntax(&reader, &e))?;
                let (prefix, local) = raw.split_once(':').unwrap_or(("", raw));
                let mut el = Element {
                    prefix: prefix.to_owned(),
                    name: name_string(local, options.dictionary),
                    ..Element::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| syntax(&reader, &e))?;
                    let key =
                        std::str::from_utf8(attr.key.as_ref()).map_err(|e| syntax(&reader, &e))?;
                    let value = attr.unescape_value().map_err(|e| syntax(&reader, &e))?;
                    check_len(&value, &limits)?;
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        let p = key.strip_prefix("xmlns:").unwrap_or("");
                        el.attributes.push(Attr::Xmlns(Xmlns {
                            prefix: Cow::Owned(p.to_owned()),
                            namespace: name_string(&value, options.dictionary),
                        }));
                    } else {
                        let (p, l) = key.split_once(':').unwrap_or(("", key));
                        el.attributes.push(Attr::Attribute(Attribute {
                            prefix: Cow::Owned(p.to_owned()),
                            name: name_string(l, options.dictionary),
                            value: Text::from_string(value.into_owned()),
                        }));
                    }
                }
                scopes.seal(&mut el, 0).map_err(|e| match e {
                    DecodeError::UndeclaredPrefix { prefix, .. } => {
                        XmlError::UndeclaredPrefix(prefix)
                    }
                    _ => XmlError::Structure("namespace resolution"),
                })?;
                stack.push(el);
                if empty {
                    close_xml(&mut stack, &mut doc, &mut scopes);
                }
            }
            Event::End(_) => {
                if stack.is_empty() {
                    return Err(XmlError::Structure("end tag without start tag"));
                }
                close_xml(&mut stack, &mut doc, &mut scopes);
            }
            Event::Text(t) => {
                let t = t.xml10_content().map_err(|e| syntax(&reader, &e))?;
                pending.push_str(&t);
                check_len(&pending, &limits)?;
            }
            Event::CData(t) => {
                let t = t.decode().map_err(|e| syntax(&reader, &e))?;
                pending.push_str(&t);
                check_len(&pending, &limits)?;
            }
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| syntax(&reader, &e))? {
                    pending.push(c);
                } else {
                    let name = r.decode().map_err(|e| syntax(&reader, &e))?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or(XmlError::Structure("unknown entity reference"))?;
                    pending.push_str(resolved);
                }
            }
            Event::Comment(c) => {
                let c = c.decode().map_err(|e| syntax(&reader, &e))?;
                push(&mut stack, &mut doc, Node::Comment(c.into_owned()));
            }
            Event::DocType(_) => return Err(XmlError::Structure("DTDs are not supported")),
            Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Structure("unclosed element"));
    }
    if doc.root().is_none() {
        return Err(XmlError::Structure("no root element"));
    }
    Ok(doc)
}

fn syntax(reader: &quick_xml::Reader<&[u8]>, e: &dyn std::fmt::Display) -> XmlError {
    XmlError::Syntax {
        offset: reader.error_position(),
        message: e.to_string(),
    }
}

fn check_len(s: &str, limits: &Limits) -> Result<(), XmlError> {
    if s.len() > limits.max_string_bytes {
        return Err(XmlError::LimitExceeded {
            limit: Limit::StringBytes,
            max: limits.max_string_bytes,
        });
    }
    Ok(())
}

fn close_xml(stack: &mut Vec<Element>, doc: &mut Document, scopes: &mut Scopes) {
    if let Some(el) = stack.pop() {
        scopes.pop();
        push(stack, doc, Node::Element(el));
    }
}

fn flush_text(
    pending: &mut String,
    stack: &mut [Element],
    options: &XmlOptions,
) -> Result<(), XmlError> {
    if pending.is_empty() {
        return Ok(());
    }
    let text = std::mem::take(pending);
    let whitespace = text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    match stack.last_mut() {
        Some(parent) if !(whitespace && options.ignore_whitespace) => {
            parent.children.push(Node::Text(Text::from_string(text)));
            Ok(())
        }
        Some(_) => Ok(()),
        None if whitespace => Ok(()),
        None => Err(XmlError::Structure("text outside the root element")),
    }
}

fn name_string(text: &str, dictionary: DictionaryUse) -> XmlString<'static> {
    let owned = text.to_owned();
    match dictionary {
        DictionaryUse::None => XmlString::inline(owned),
        DictionaryUse::Static => XmlString::prefer_static(owned),
        DictionaryUse::StaticAndSession => match StaticDictionary::id_of(text) {
            Some(_) => XmlString::prefer_static(owned),
            None => XmlString::session(owned),
        },
    }
}

/// Converts a binary document straight to XML text without building a tree: the fast path for
/// tools and logs. Produces the same text as [`Document::to_xml`] on the decoded tree, except
/// that namespace prefixes are not checked.
///
/// # Errors
///
/// Any [`DecodeError`] of the [`Reader`].
pub fn binary_to_xml(
    bytes: &[u8],
    session: Option<&SessionDictionary>,
    limits: Limits,
) -> Result<String, DecodeError> {
    let reader = match session {
        Some(s) => Reader::with_session(bytes, s),
        None => Reader::new(bytes),
    };
    let mut reader = reader.limits(limits);
    let mut out = String::with_capacity(bytes.len() * 2);
    // Open elements (prefix, name) and whether the current start tag still awaits its '>'.
    let mut stack: Vec<(Str<'_>, Str<'_>)> = Vec::new();
    let mut open_tag = false;
    // Element has content (else it is written as `<x/>`).
    let mut scratch = String::new();
    while let Some(record) = reader.next_record()? {
        if open_tag && !matches!(record, Record::Attribute(_) | Record::Xmlns(_)) {
            let empty = match &record {
                Record::EndElement => true,
                Record::Text { text, end: true } => prints_empty(text),
                _ => false,
            };
            if empty {
                out.push_str("/>");
                stack.pop();
                open_tag = false;
                continue;
            }
            out.push('>');
            open_tag = false;
        }
        match record {
            Record::Element(e) => {
                out.push('<');
                if !e.prefix.is_empty() {
                    out.push_str(&e.prefix);
                    out.push(':');
                }
                out.push_str(&e.name.text);
                stack.push((Str::from(e.prefix), e.name.text));
                open_tag = true;
            }
            Record::Attribute(a) => write_start_attrs(&mut out, &[Attr::Attribute(a)]),
            Record::Xmlns(x) => write_start_attrs(&mut out, &[Attr::Xmlns(x)]),
            Record::Text { text, end } => {
                match &text {
                    Text::Chars(s) | Text::UnicodeChars(s) => escape_into(&mut out, s, false),
                    Text::Dictionary(s) => escape_into(&mut out, &s.text, false),
                    other => {
                        scratch.clear();
                        let _ = write!(scratch, "{other}");
                        escape_into(&mut out, &scratch, false);
                    }
                }
                if end && let Some((p, n)) = stack.pop() {
                    write_end(&mut out, &p, &n);
                }
            }
            Record::EndElement => {
                if let Some((p, n)) = stack.pop() {
                    write_end(&mut out, &p, &n);
                }
            }
            Record::Comment(c) => {
                out.push_str("<!--");
                out.push_str(&c);
                out.push_str("-->");
            }
            Record::Array(a) => write_node(&mut out, &Node::Array(a.into_owned()), None, 0),
        }
    }
    Ok(out)
}

/// The attribute part of a start tag (no `<name`).
fn write_start_attrs(out: &mut String, attributes: &[Attr<'_>]) {
    let mut tmp = String::new();
    write_start(&mut tmp, "", "", attributes);
    // `write_start` wrote "<" and an empty name first.
    out.push_str(&tmp[1..]);
}
