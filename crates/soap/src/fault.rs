//! SOAP faults in both versions.
//!
//! SOAP 1.2: `Fault/Code/Value` (+ `Subcode/Value` chain), `Reason/Text[@xml:lang]`, `Node`,
//! `Role`, `Detail`. SOAP 1.1: unqualified `faultcode`, `faultstring[@xml:lang]`, `faultactor`,
//! `detail`. One model for both.

use ferry_nbfx::{Element, Text, XmlString};

use crate::{
    error::DecodeError,
    version::{SOAP11_NS, SOAP12_NS, SoapVersion},
};

/// A qualified name value (fault codes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct QName {
    /// Namespace URI.
    pub namespace: String,
    /// Local name.
    pub local: String,
    /// Prefix to write it with (and that it was read with).
    pub prefix: String,
}

impl QName {
    /// A QName.
    pub fn new(prefix: &str, namespace: &str, local: &str) -> Self {
        Self {
            namespace: namespace.into(),
            local: local.into(),
            prefix: prefix.into(),
        }
    }
}

/// A SOAP fault.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Fault {
    /// SOAP 1.2 `Code/Value` or SOAP 1.1 `faultcode`.
    pub code: QName,
    /// SOAP 1.2 `Subcode/Value` chain, outermost first (empty in SOAP 1.1).
    pub subcodes: Vec<QName>,
    /// The reason text (`Reason/Text` or `faultstring`).
    pub reason: String,
    /// `xml:lang` of the reason, when present.
    pub lang: Option<String>,
    /// SOAP 1.2 `Node`.
    pub node: Option<String>,
    /// SOAP 1.2 `Role` or SOAP 1.1 `faultactor`.
    pub role: Option<String>,
    /// The `Detail`/`detail` element (its children are the detail).
    pub detail: Option<Element>,
}

impl Fault {
    /// A fault blaming the sender (`Sender` in SOAP 1.2, `Client` in 1.1).
    pub fn sender(version: SoapVersion, reason: impl Into<String>) -> Self {
        let local = if version == SoapVersion::Soap12 {
            "Sender"
        } else {
            "Client"
        };
        Self::standard(version, local, reason)
    }

    /// A fault blaming the receiver (`Receiver` in SOAP 1.2, `Server` in 1.1).
    pub fn receiver(version: SoapVersion, reason: impl Into<String>) -> Self {
        let local = if version == SoapVersion::Soap12 {
            "Receiver"
        } else {
            "Server"
        };
        Self::standard(version, local, reason)
    }

    fn standard(version: SoapVersion, local: &str, reason: impl Into<String>) -> Self {
        Self {
            code: QName::new("s", version.namespace(), local),
            reason: reason.into(),
            lang: Some("en-US".into()),
            ..Self::default()
        }
    }

    /// True for `Sender`/`Client` codes.
    pub fn is_sender(&self) -> bool {
        matches!(
            (self.code.namespace.as_str(), self.code.local.as_str()),
            (SOAP12_NS, "Sender") | (SOAP11_NS, "Client")
        )
    }

    /// True for `Receiver`/`Server` codes.
    pub fn is_receiver(&self) -> bool {
        matches!(
            (self.code.namespace.as_str(), self.code.local.as_str()),
            (SOAP12_NS, "Receiver") | (SOAP11_NS, "Server")
        )
    }

    /// Reads a `Fault` element; `scope` holds the namespace declarations in force above it.
    pub(crate) fn from_element(
        version: SoapVersion,
        el: &Element,
        scope: &Scope,
    ) -> Result<Self, DecodeError> {
        let scope = scope.enter(el);
        match version {
            SoapVersion::Soap12 => {
                let ns = SOAP12_NS;
                let code = el
                    .child(ns, "Code")
                    .ok_or(DecodeError::Fault("missing Code"))?;
                let code_scope = scope.enter(code);
                let value = code
                    .child(ns, "Value")
                    .ok_or(DecodeError::Fault("missing Code/Value"))?;
                let mut fault = Self {
                    code: code_scope.qname(value)?,
                    ..Self::default()
                };
                let (mut parent, mut parent_scope) = (code, code_scope);
                while let Some(sub) = parent.child(ns, "Subcode") {
                    let sub_scope = parent_scope.enter(sub);
                    let value = sub
                        .child(ns, "Value")
                        .ok_or(DecodeError::Fault("missing Subcode/Value"))?;
                    fault.subcodes.push(sub_scope.qname(value)?);
                    (parent, parent_scope) = (sub, sub_scope);
                }
                let reason = el
                    .child(ns, "Reason")
                    .ok_or(DecodeError::Fault("missing Reason"))?;
                if let Some(text) = reason.child(ns, "Text") {
                    fault.reason = text.text();
                    fault.lang = text.attribute("lang").map(|a| a.value.to_string());
                }
                fault.node = el.child(ns, "Node").map(Element::text);
                fault.role = el.child(ns, "Role").map(Element::text);
                fault.detail = el.child(ns, "Detail").cloned();
                Ok(fault)
            }
            SoapVersion::Soap11 => {
                let code = el
                    .child("", "faultcode")
                    .ok_or(DecodeError::Fault("missing faultcode"))?;
                let reason = el
                    .child("", "faultstring")
                    .ok_or(DecodeError::Fault("missing faultstring"))?;
                Ok(Self {
                    code: scope.enter(code).qname(code)?,
                    subcodes: Vec::new(),
                    reason: reason.text(),
                    lang: reason.attribute("lang").map(|a| a.value.to_string()),
                    node: None,
                    role: el.child("", "faultactor").map(Element::text),
                    detail: el.child("", "detail").cloned(),
                })
            }
        }
    }

    /// The `Fault` element, with `s` bound to the envelope namespace by an ancestor.
    pub(crate) fn to_element(&self, version: SoapVersion) -> Element {
        let ns = version.namespace();
        let s = |name: &str| Element::new("s", XmlString::prefer_static(name.to_owned()), ns);
        let lang = |el: Element, lang: &Option<String>| match lang {
            Some(l) => el.with_attribute(
                "xml",
                XmlString::prefer_static("lang"),
                Text::from_string(l.clone()),
            ),
            None => el,
        };
        let mut fault = s("Fault");
        match version {
            SoapVersion::Soap12 => {
                let mut code = value_element(s("Code"), s("Value"), &self.code);
                // Subcodes nest: Code/Subcode/Subcode/…, built from the innermost out.
                let mut nested: Option<Element> = None;
                for sub in self.subcodes.iter().rev() {
                    let mut el = value_element(s("Subcode"), s("Value"), sub);
                    if let Some(inner) = nested.take() {
                        el = el.with_element(inner);
                    }
                    nested = Some(el);
                }
                if let Some(inner) = nested {
                    code = code.with_element(inner);
                }
                fault = fault.with_element(code);
                let text =
                    lang(s("Text"), &self.lang).with_text(Text::from_string(self.reason.clone()));
                fault = fault.with_element(s("Reason").with_element(text));
                if let Some(node) = &self.node {
                    fault =
                        fault.with_element(s("Node").with_text(Text::from_string(node.clone())));
                }
                if let Some(role) = &self.role {
                    fault =
                        fault.with_element(s("Role").with_text(Text::from_string(role.clone())));
                }
            }
            SoapVersion::Soap11 => {
                let plain =
                    |name: &str| Element::new("", XmlString::prefer_static(name.to_owned()), "");
                let code = qname_text(plain("faultcode"), &self.code);
                fault = fault.with_element(code);
                let reason = lang(plain("faultstring"), &self.lang)
                    .with_text(Text::from_string(self.reason.clone()));
                fault = fault.with_element(reason);
                if let Some(role) = &self.role {
                    fault = fault.with_element(
                        plain("faultactor").with_text(Text::from_string(role.clone())),
                    );
                }
            }
        }
        if let Some(detail) = &self.detail {
            fault = fault.with_element(detail.clone());
        }
        fault
    }
}

/// `outer` containing `inner` whose text is the QName.
fn value_element(outer: Element, inner: Element, q: &QName) -> Element {
    outer.with_element(qname_text(inner, q))
}

/// Writes `prefix:local` as text, declaring the prefix on the element unless it is the
/// envelope's `s` (declared on the root).
fn qname_text(mut el: Element, q: &QName) -> Element {
    let prefix = if q.prefix.is_empty() {
        "c"
    } else {
        q.prefix.as_str()
    };
    if prefix != "s" || (q.namespace != SOAP12_NS && q.namespace != SOAP11_NS) {
        el = el.with_xmlns(prefix, XmlString::prefer_static(q.namespace.clone()));
    }
    el.with_text(Text::Chars(format!("{prefix}:{}", q.local).into()))
}

/// Namespace declarations in force, for resolving QName text.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope(Vec<(String, String)>);

impl Scope {
    /// The scope inside `el` (its own declarations added).
    pub(crate) fn enter(&self, el: &Element) -> Self {
        let mut decls = self.0.clone();
        for a in &el.attributes {
            if let ferry_nbfx::Attr::Xmlns(x) = a {
                decls.push((x.prefix.to_string(), x.namespace.text.to_string()));
            }
        }
        Self(decls)
    }

    fn resolve(&self, prefix: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, ns)| ns.as_str())
    }

    /// Resolves the element's text as a QName (`p:local`, or `local` in the default namespace).
    fn qname(&self, el: &Element) -> Result<QName, DecodeError> {
        let scope = self.enter(el);
        let text = el.text();
        let text = text.trim();
        let (prefix, local) = text.split_once(':').unwrap_or(("", text));
        let namespace = scope
            .resolve(prefix)
            .ok_or(DecodeError::Fault("undeclared prefix in fault code"))?;
        Ok(QName::new(prefix, namespace, local))
    }
}
