//! A small namespace-aware element tree built with quick-xml: what the WSDL and XSD readers
//! walk. Bounded (file size, nesting depth, element count), no DTDs, no entity expansion
//! beyond the predefined ones.

use quick_xml::events::{BytesStart, Event};

use crate::{
    error::CodegenError,
    limits::{Limit, Limits},
};

/// `http://www.w3.org/XML/1998/namespace`, bound to `xml`.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// A qualified name: namespace URI and local name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct QName {
    /// Namespace URI, empty for none.
    pub namespace: String,
    /// Local name.
    pub local: String,
}

impl QName {
    /// A qualified name.
    pub fn new(namespace: &str, local: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            local: local.to_owned(),
        }
    }
}

impl std::fmt::Display for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}{}", self.namespace, self.local)
    }
}

/// One parsed file.
#[derive(Debug)]
pub(crate) struct Tree {
    /// File name, for errors.
    pub(crate) file: String,
    nodes: Vec<NodeData>,
}

#[derive(Debug)]
struct NodeData {
    name: QName,
    /// Attributes: resolved name (no namespace for unprefixed ones) and value.
    attributes: Vec<(QName, String)>,
    /// Namespace declarations on this element: prefix ("" for the default) and URI.
    xmlns: Vec<(String, String)>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// A handle on one element of a [`Tree`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node<'t> {
    tree: &'t Tree,
    index: usize,
}

impl Tree {
    /// Parses `text` into a tree.
    pub(crate) fn parse(file: &str, text: &str, limits: &Limits) -> Result<Self, CodegenError> {
        if text.len() > limits.max_file_bytes {
            return Err(limit(file, Limit::FileBytes, limits.max_file_bytes));
        }
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut tree = Self {
            file: file.to_owned(),
            nodes: Vec::new(),
        };
        let mut stack: Vec<usize> = Vec::new();
        loop {
            let event = reader.read_event().map_err(|e| CodegenError::Xml {
                file: file.to_owned(),
                offset: reader.error_position(),
                message: e.to_string(),
            })?;
            match event {
                Event::Start(_) | Event::Empty(_) if stack.is_empty() && !tree.nodes.is_empty() => {
                    return Err(tree.malformed("more than one root element"));
                }
                Event::Start(e) => {
                    let index = tree.open(&e, stack.last().copied(), limits, stack.len())?;
                    stack.push(index);
                }
                Event::Empty(e) => {
                    tree.open(&e, stack.last().copied(), limits, stack.len())?;
                }
                Event::End(_) => {
                    // quick-xml checks that end tags match their start tags.
                    stack.pop();
                }
                Event::DocType(_) => return Err(tree.malformed("DTDs are not supported")),
                Event::Eof => break,
                // Text (documentation), comments, CDATA, declarations, PIs, entity references:
                // nothing a contract is made of.
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err(tree.malformed("unclosed element"));
        }
        if tree.nodes.is_empty() {
            return Err(tree.malformed("no root element"));
        }
        Ok(tree)
    }

    /// The root element.
    pub(crate) fn root(&self) -> Node<'_> {
        Node {
            tree: self,
            index: 0,
        }
    }

    fn malformed(&self, message: &str) -> CodegenError {
        CodegenError::Xml {
            file: self.file.clone(),
            offset: 0,
            message: message.to_owned(),
        }
    }

    fn open(
        &mut self,
        e: &BytesStart<'_>,
        parent: Option<usize>,
        limits: &Limits,
        depth: usize,
    ) -> Result<usize, CodegenError> {
        if depth >= limits.max_depth {
            return Err(limit(&self.file, Limit::Depth, limits.max_depth));
        }
        if self.nodes.len() >= limits.max_elements {
            return Err(limit(&self.file, Limit::Elements, limits.max_elements));
        }
        let syntax = |message: String| CodegenError::Xml {
            file: self.file.clone(),
            offset: 0,
            message,
        };
        let raw_name = std::str::from_utf8(e.name().as_ref())
            .map_err(|err| syntax(err.to_string()))?
            .to_owned();
        let mut xmlns = Vec::new();
        let mut raw_attributes = Vec::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| syntax(err.to_string()))?;
            let key = std::str::from_utf8(attr.key.as_ref())
                .map_err(|err| syntax(err.to_string()))?
                .to_owned();
            let value = attr
                .unescape_value()
                .map_err(|err| syntax(err.to_string()))?
                .into_owned();
            if key == "xmlns" {
                xmlns.push((String::new(), value));
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                xmlns.push((p.to_owned(), value));
            } else {
                raw_attributes.push((key, value));
            }
        }
        let index = self.nodes.len();
        self.nodes.push(NodeData {
            name: QName::default(),
            attributes: Vec::new(),
            xmlns,
            parent,
            children: Vec::new(),
        });
        let node = Node { tree: self, index };
        let name = node.resolve_name(&raw_name, true)?;
        let mut attributes = Vec::with_capacity(raw_attributes.len());
        for (key, value) in raw_attributes {
            // Unprefixed attributes are in no namespace.
            let qname = if key.contains(':') {
                node.resolve_name(&key, false)?
            } else {
                QName::new("", &key)
            };
            attributes.push((qname, value));
        }
        let data = &mut self.nodes[index];
        data.name = name;
        data.attributes = attributes;
        if let Some(p) = parent {
            self.nodes[p].children.push(index);
        }
        Ok(index)
    }
}

fn limit(file: &str, limit: Limit, max: usize) -> CodegenError {
    CodegenError::LimitExceeded {
        file: file.to_owned(),
        limit,
        max,
    }
}

impl<'t> Node<'t> {
    fn data(&self) -> &'t NodeData {
        &self.tree.nodes[self.index]
    }

    /// The file this element is in.
    pub(crate) fn file(&self) -> &'t str {
        &self.tree.file
    }

    /// Namespace URI.
    pub(crate) fn namespace(&self) -> &'t str {
        &self.data().name.namespace
    }

    /// Local name.
    pub(crate) fn local(&self) -> &'t str {
        &self.data().name.local
    }

    /// True when this element is `{namespace}local`.
    pub(crate) fn is(&self, namespace: &str, local: &str) -> bool {
        self.namespace() == namespace && self.local() == local
    }

    /// Child elements.
    pub(crate) fn children(&self) -> impl Iterator<Item = Self> + 't {
        let tree = self.tree;
        self.data()
            .children
            .iter()
            .map(move |&index| Node { tree, index })
    }

    /// Child elements named `{namespace}local`.
    pub(crate) fn children_named<'a>(
        &self,
        namespace: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = Self> + 'a
    where
        't: 'a,
    {
        self.children().filter(move |c| c.is(namespace, local))
    }

    /// The first child element named `{namespace}local`.
    pub(crate) fn child(&self, namespace: &str, local: &str) -> Option<Self> {
        self.children().find(|c| c.is(namespace, local))
    }

    /// The value of an unqualified attribute.
    pub(crate) fn attr(&self, local: &str) -> Option<&'t str> {
        self.attr_ns("", local)
    }

    /// The value of an attribute in a namespace.
    pub(crate) fn attr_ns(&self, namespace: &str, local: &str) -> Option<&'t str> {
        self.data()
            .attributes
            .iter()
            .find(|(q, _)| q.namespace == namespace && q.local == local)
            .map(|(_, v)| v.as_str())
    }

    /// A required unqualified attribute.
    pub(crate) fn required(&self, local: &str) -> Result<&'t str, CodegenError> {
        self.attr(local)
            .ok_or_else(|| CodegenError::MissingAttribute {
                file: self.file().to_owned(),
                element: self.local().to_owned(),
                attribute: local.to_owned(),
            })
    }

    /// Resolves a QName-valued attribute (`type="q1:Order"`) against the declarations in scope
    /// here; an unprefixed value takes the default namespace, as XML Schema says.
    pub(crate) fn qname_attr(&self, local: &str) -> Result<Option<QName>, CodegenError> {
        self.attr(local)
            .map(|v| self.resolve_name(v.trim(), true))
            .transpose()
    }

    /// The namespace bound to `prefix` here.
    fn lookup(&self, prefix: &str) -> Option<&'t str> {
        let mut at = Some(self.index);
        while let Some(i) = at {
            let data = &self.tree.nodes[i];
            if let Some((_, ns)) = data.xmlns.iter().rev().find(|(p, _)| p == prefix) {
                return Some(ns);
            }
            at = data.parent;
        }
        match prefix {
            "" => Some(""),
            "xml" => Some(XML_NS),
            _ => None,
        }
    }

    /// Resolves `prefix:local` (or `local`, in the default namespace when `use_default`).
    fn resolve_name(&self, raw: &str, use_default: bool) -> Result<QName, CodegenError> {
        let (prefix, local) = match raw.split_once(':') {
            Some((p, l)) => (p, l),
            None if use_default => ("", raw),
            None => return Ok(QName::new("", raw)),
        };
        if local.is_empty() || local.contains(':') {
            return Err(CodegenError::Xml {
                file: self.file().to_owned(),
                offset: 0,
                message: format!("bad qualified name {raw:?}"),
            });
        }
        let ns = self
            .lookup(prefix)
            .ok_or_else(|| CodegenError::UndeclaredPrefix {
                file: self.file().to_owned(),
                prefix: prefix.to_owned(),
            })?;
        Ok(QName::new(ns, local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_qname_values() {
        let tree = Tree::parse(
            "t.xsd",
            r#"<xs:schema xmlns:xs="urn:xs" xmlns="urn:d"><xs:element name="a" xmlns:q="urn:q" type="q:T"/><xs:element type="U"/></xs:schema>"#,
            &Limits::default(),
        )
        .unwrap();
        let root = tree.root();
        assert!(root.is("urn:xs", "schema"));
        let mut els = root.children_named("urn:xs", "element");
        let a = els.next().unwrap();
        assert_eq!(a.attr("name"), Some("a"));
        assert_eq!(
            a.qname_attr("type").unwrap(),
            Some(QName::new("urn:q", "T"))
        );
        let b = els.next().unwrap();
        assert_eq!(
            b.qname_attr("type").unwrap(),
            Some(QName::new("urn:d", "U"))
        );
    }

    #[test]
    fn rejects_undeclared_prefix_and_limits() {
        let err = Tree::parse("t", "<a:b/>", &Limits::default()).unwrap_err();
        assert!(
            matches!(err, CodegenError::UndeclaredPrefix { .. }),
            "{err}"
        );
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        let err = Tree::parse("t", &deep, &Limits::default()).unwrap_err();
        assert!(matches!(
            err,
            CodegenError::LimitExceeded {
                limit: Limit::Depth,
                ..
            }
        ));
        let err = Tree::parse("t", "<!DOCTYPE a><a/>", &Limits::default()).unwrap_err();
        assert!(matches!(err, CodegenError::Xml { .. }));
        assert!(Tree::parse("t", "", &Limits::default()).is_err());
        assert!(Tree::parse("t", "<a><b></a>", &Limits::default()).is_err());
        assert!(Tree::parse("t", "<a/><b/>", &Limits::default()).is_err());
    }
}
