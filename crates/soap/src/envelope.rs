//! The envelope model and its conversion to and from the shared document tree.

use ferry_nbfx::{Document, Element, Guid, Text, XmlString};

use crate::{
    error::DecodeError,
    fault::{Fault, Scope},
    relay::{RELAY_CONNECT_NS, RelayAccessToken},
    version::{AddressingVersion, SoapVersion},
};

/// A SOAP envelope: version, addressing headers, other headers, body.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// SOAP version.
    pub version: SoapVersion,
    /// Addressing version of the headers.
    pub addressing: AddressingVersion,
    /// Headers.
    pub headers: Headers,
    /// Body.
    pub body: Body,
}

/// The headers this crate understands, plus the rest as elements.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Headers {
    /// `Action`.
    pub action: Option<String>,
    /// `To`.
    pub to: Option<String>,
    /// `MessageID` (`urn:uuid:…` for WCF).
    pub message_id: Option<String>,
    /// `RelatesTo`.
    pub relates_to: Option<String>,
    /// `ReplyTo`.
    pub reply_to: Option<EndpointReference>,
    /// `FaultTo`.
    pub fault_to: Option<EndpointReference>,
    /// The relay's `RelayAccessToken`.
    pub relay_token: Option<RelayAccessToken>,
    /// Every other header, in order.
    pub other: Vec<Header>,
}

/// A WS-Addressing endpoint reference.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EndpointReference {
    /// `Address`.
    pub address: String,
    /// Other children (reference parameters, metadata), kept as elements.
    pub extra: Vec<Element>,
}

impl EndpointReference {
    /// An endpoint reference with only an address.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            extra: Vec::new(),
        }
    }
}

/// A header this crate does not interpret.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The header element.
    pub element: Element,
    /// Its `mustUnderstand` flag.
    pub must_understand: bool,
}

/// The body: payload elements or a fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// The body's child elements (empty for an empty body).
    Payload(Vec<Element>),
    /// A fault (boxed: faults are rare and large).
    Fault(Box<Fault>),
}

impl Envelope {
    /// An envelope with no headers and an empty body.
    pub fn new(version: SoapVersion, addressing: AddressingVersion) -> Self {
        Self {
            version,
            addressing,
            headers: Headers::default(),
            body: Body::Payload(Vec::new()),
        }
    }

    /// The first payload element, if the body is not a fault.
    pub fn payload(&self) -> Option<&Element> {
        match &self.body {
            Body::Payload(p) => p.first(),
            Body::Fault(_) => None,
        }
    }

    /// The fault, if the body is one.
    pub fn fault(&self) -> Option<&Fault> {
        match &self.body {
            Body::Fault(f) => Some(f),
            Body::Payload(_) => None,
        }
    }

    /// Reads an envelope from a document tree.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the root is not an envelope, the body is missing, or a fault or a
    /// known header is malformed.
    pub fn from_document(doc: &Document) -> Result<Self, DecodeError> {
        let root = doc.root().ok_or(DecodeError::NotAnEnvelope)?;
        let version = SoapVersion::from_namespace(&root.namespace)
            .filter(|_| root.local_name() == "Envelope")
            .ok_or(DecodeError::NotAnEnvelope)?;
        let ns = version.namespace();
        let scope = Scope::default().enter(root);
        let mut addressing = AddressingVersion::None;
        let mut headers = Headers::default();
        if let Some(header) = root.child(ns, "Header") {
            for h in header.elements() {
                let wsa = AddressingVersion::from_namespace(&h.namespace);
                match (wsa, h.local_name()) {
                    (
                        Some(v),
                        name
                        @ ("Action" | "To" | "MessageID" | "RelatesTo" | "ReplyTo" | "FaultTo"),
                    ) => {
                        if v != AddressingVersion::None {
                            addressing = v;
                        }
                        match name {
                            "Action" => headers.action = Some(h.text()),
                            "To" => headers.to = Some(h.text()),
                            "MessageID" => headers.message_id = Some(h.text()),
                            "RelatesTo" => headers.relates_to = Some(h.text()),
                            "ReplyTo" => headers.reply_to = Some(epr(h)?),
                            _ => headers.fault_to = Some(epr(h)?),
                        }
                    }
                    (_, "RelayAccessToken") if h.namespace == RELAY_CONNECT_NS => {
                        headers.relay_token = Some(RelayAccessToken::from_element(h)?);
                    }
                    _ => headers.other.push(Header {
                        must_understand: must_understand(h),
                        element: h.clone(),
                    }),
                }
            }
        }
        let body = root.child(ns, "Body").ok_or(DecodeError::MissingBody)?;
        let body_scope = scope.enter(body);
        let payload: Vec<Element> = body.elements().cloned().collect();
        let body = match payload.first() {
            Some(f) if f.namespace == ns && f.local_name() == "Fault" => {
                Body::Fault(Box::new(Fault::from_element(version, f, &body_scope)?))
            }
            _ => Body::Payload(payload),
        };
        Ok(Self {
            version,
            addressing,
            headers,
            body,
        })
    }

    /// Builds the document tree, with the record choices WCF's writer makes in binary: SOAP and
    /// addressing names from the static dictionary, `s`/`a` prefixes, `mustUnderstand="1"` on
    /// Action and To, MessageID and RelatesTo as UniqueId when they are `urn:uuid:` values,
    /// Action and To text as session strings (written inline without a session).
    pub fn to_document(&self) -> Document {
        let ns = self.version.namespace();
        let s = |name: &str| Element::new("s", XmlString::prefer_static(name.to_owned()), ns);
        let wsa_ns = self.addressing.namespace();
        let mut root = s("Envelope").with_xmlns("s", XmlString::prefer_static(ns));
        let h = &self.headers;
        let uses_wsa = self.addressing != AddressingVersion::None
            && (h.action.is_some()
                || h.to.is_some()
                || h.message_id.is_some()
                || h.relates_to.is_some()
                || h.reply_to.is_some()
                || h.fault_to.is_some());
        if uses_wsa {
            root = root.with_xmlns("a", XmlString::prefer_static(wsa_ns));
        }
        let a = |name: &str| {
            if self.addressing == AddressingVersion::None {
                Element::new("", XmlString::prefer_static(name.to_owned()), wsa_ns)
            } else {
                Element::new("a", XmlString::prefer_static(name.to_owned()), wsa_ns)
            }
        };
        let must = |el: Element| {
            el.with_attribute("s", XmlString::prefer_static("mustUnderstand"), Text::One)
        };
        let mut header = s("Header");
        if let Some(action) = &h.action {
            let mut el = must(a("Action"));
            if self.addressing == AddressingVersion::None {
                // Declared after mustUnderstand, in the order WCF (Mono) writes it.
                el = el.with_xmlns("", XmlString::prefer_static(wsa_ns));
            }
            header = header.with_element(el.with_text(uri_text(action)));
        }
        if self.addressing != AddressingVersion::None {
            if let Some(id) = &h.message_id {
                header = header.with_element(a("MessageID").with_text(id_text(id)));
            }
            if let Some(id) = &h.relates_to {
                header = header.with_element(a("RelatesTo").with_text(id_text(id)));
            }
            for (name, epr) in [("ReplyTo", &h.reply_to), ("FaultTo", &h.fault_to)] {
                if let Some(epr) = epr {
                    let mut el =
                        a(name).with_element(a("Address").with_text(address_text(&epr.address)));
                    for extra in &epr.extra {
                        el = el.with_element(extra.clone());
                    }
                    header = header.with_element(el);
                }
            }
            if let Some(to) = &h.to {
                header = header.with_element(must(a("To")).with_text(uri_text(to)));
            }
        }
        if let Some(token) = &h.relay_token {
            header = header.with_element(token.to_element());
        }
        for other in &h.other {
            header = header.with_element(other.element.clone());
        }
        if !header.children.is_empty() {
            root = root.with_element(header);
        }
        let mut body = s("Body");
        match &self.body {
            Body::Payload(p) => {
                for el in p {
                    body = body.with_element(el.clone());
                }
            }
            Body::Fault(f) => body = body.with_element(f.to_element(self.version)),
        }
        Document::from_root(root.with_element(body))
    }
}

fn epr(el: &Element) -> Result<EndpointReference, DecodeError> {
    let mut address = None;
    let mut extra = Vec::new();
    for child in el.elements() {
        if child.local_name() == "Address" && child.namespace == el.namespace {
            address = Some(child.text());
        } else {
            extra.push(child.clone());
        }
    }
    Ok(EndpointReference {
        address: address.ok_or(DecodeError::Header("endpoint reference without Address"))?,
        extra,
    })
}

fn must_understand(el: &Element) -> bool {
    el.attribute("mustUnderstand")
        .is_some_and(|a| matches!(a.value.to_string().as_str(), "1" | "true"))
}

/// Action and To: session strings, as .NET's writer puts them in the session dictionary.
fn uri_text(uri: &str) -> Text<'static> {
    Text::Dictionary(XmlString::session(uri.to_owned()))
}

/// MessageID and RelatesTo: UniqueIdText for `urn:uuid:` values, else a string.
fn id_text(id: &str) -> Text<'static> {
    match id.strip_prefix("urn:uuid:").and_then(Guid::parse) {
        Some(g) => Text::UniqueId(g),
        None => Text::from_string(id.to_owned()),
    }
}

/// Addresses: the static dictionary string when there is one (the anonymous URI is).
fn address_text(address: &str) -> Text<'static> {
    match XmlString::prefer_static(address.to_owned()) {
        s @ XmlString {
            form: ferry_nbfx::StringForm::Dictionary(_),
            ..
        } => Text::Dictionary(s),
        _ => Text::from_string(address.to_owned()),
    }
}
