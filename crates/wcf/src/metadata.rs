//! Service metadata: the WSDL and XSD documents a service publishes, served the way WCF's
//! `ServiceMetadataBehavior` serves them. Sans-I/O: the hosts (`basic_http`, `host`) hand in
//! what the request said and send back what comes out.
//!
//! ```text
//!  GET {base}?wsdl | ?wsdl=wsdlN | ?xsd=xsdN ─► Metadata::page ─► the document (text/xml)
//!  GET {base} (any other query)              ─► Metadata::page ─► a help page (text/html)
//!  WS-Transfer Get (net.tcp, SOAP over HTTP) ─► Metadata::get_response ─► wsx:Metadata body
//! ```
//!
//! - HTTP GET ([`Metadata::page`]): `?wsdl` is the WSDL document with the `wsdl:service`,
//!   `?wsdl=wsdlN` the other WSDL documents in order, `?xsd=xsdN` the schemas in order; the
//!   query is matched without regard to case, as WCF does (the last `&`-separated part that
//!   starts with `wsdl` or `xsd` counts). Anything else, `?xsd=` with no id included, gets a
//!   short HTML help page with `200`, as WCF's default help page and Mono's do.
//! - WS-MetadataExchange ([`Metadata::get_response`]): the body answering a WS-Transfer `Get`
//!   ([`TRANSFER_GET`]): `wsx:Metadata` with one `wsx:MetadataSection` per document, the WSDL
//!   documents first, then the schemas, each with its dialect and its target namespace as
//!   identifier (what .NET's mex endpoint returns; Mono returns an empty `wsx:Metadata`).
//!
//! # Addresses
//!
//! The documents as published name the original service's addresses. Every answer names the
//! addresses the request came in on instead, as WCF does with
//! `UseRequestHeadersForMetadataAddressBehavior` (host from the `Host` header, else from the
//! `To` header; ports of other schemes from its configured defaults):
//!
//! - imports: `wsdl:import/@location` and `xs:import|include/@schemaLocation` point at the
//!   document with that namespace under the request's base address (`{base}?wsdl=wsdl0`,
//!   `{base}?xsd=xsd2`), as .NET's `FixImportAddresses` does. An import of the XML Schema
//!   namespace itself, which is built into every schema processor, is left out, and so are
//!   exact repeats of an import. In a mex answer imports carry no location: the sections
//!   travel together (.NET blanks them too).
//! - endpoint addresses: a `wsdl:port`'s `soap:address` / `soap12:address` location and the
//!   address of its `wsa10:EndpointReference` become the public base for the address's scheme
//!   ([`Metadata::set_public_base`], or the request's own scheme, host and port) followed by
//!   the request's path. Behind Ferry a listener's path is one endpoint whichever front end a
//!   client comes through (the HTTP relay, the net.tcp port), so every binding's address is
//!   that path on its front end. A port whose scheme has no known base is left out rather
//!   than published with an address nobody listens on.
//!
//! Through the relay the `Host` header does not reach the listener (the relay protocol drops
//! it, as Azure Relay's does), so the HTTP base must be configured there: the gateway's
//! public `http://` or `https://` address, as the listener's SDK endpoint names it.
//!
//! # Supplements
//!
//! [`Metadata::supplement`] merges what a published set of documents lacks from a partial WSDL
//! (`wsdl/calculator/faults.wsdl` adds the `[FaultContract]` that Mono leaves out): its
//! messages join the WSDL document of its target namespace, the faults of each portType
//! operation join that operation, every binding of the portType gets the matching
//! `wsdl:fault` with a `soap:fault` / `soap12:fault` (`use="literal"`, as .NET's exporter
//! writes it), and its schema types join the schema of their target namespace.

use std::collections::{BTreeMap, BTreeSet};

use ferry_nbfx::{Attr, Document, Element, Limits, Node, Text, XmlError, XmlOptions, XmlString};

/// The action of a WS-Transfer `Get` (WS-MetadataExchange 2004/09 over WS-Transfer 2004/09).
pub const TRANSFER_GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
/// The action of its answer.
pub const TRANSFER_GET_RESPONSE: &str =
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse";
/// WS-MetadataExchange 2004/09.
pub const MEX_NS: &str = "http://schemas.xmlsoap.org/ws/2004/09/mex";
/// WSDL 1.1, also the dialect of a WSDL metadata section.
pub const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
/// XML Schema, also the dialect of a schema metadata section.
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";
/// The content type of a metadata document, as WCF sends it.
pub const XML_CONTENT_TYPE: &str = "text/xml; charset=UTF-8";
/// The content type of the help page, as WCF sends it.
pub const HTML_CONTENT_TYPE: &str = "text/html; charset=UTF-8";

/// WSDL 1.1 SOAP 1.1 binding extensions.
const SOAP11_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
/// WSDL 1.1 SOAP 1.2 binding extensions.
const SOAP12_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
/// WS-Addressing 1.0 (a port's `EndpointReference`).
const WSA10_NS: &str = "http://www.w3.org/2005/08/addressing";
/// The segment WCF clients append to a base address to find its mex endpoint.
const MEX_SEGMENT: &str = "/mex";
/// The XML declaration WCF writes in front of a metadata document.
const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;

/// Metadata documents that cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A document is not well-formed XML.
    #[error("metadata document {document} is not well-formed")]
    Xml {
        /// Which document (`wsdl 0`, `xsd 2`, `supplement`).
        document: String,
        /// Why.
        #[source]
        source: XmlError,
    },
    /// A document's root is not the element its kind needs (`wsdl:definitions`,
    /// `xs:schema`).
    #[error("metadata document {document} is not {expected}")]
    WrongRoot {
        /// Which document.
        document: String,
        /// The root element it needs.
        expected: &'static str,
    },
    /// No WSDL document has a `wsdl:service`, so none can be served at `?wsdl`.
    #[error("no wsdl document has a wsdl:service")]
    NoService,
    /// Something in a supplement has no counterpart in the documents.
    #[error("the supplement's {what} {name:?} matches nothing in the documents")]
    Unmatched {
        /// What kind of thing (`portType operation`, `schema`, `wsdl document`).
        what: &'static str,
        /// Its name or namespace.
        name: String,
    },
    /// A public base address is not `scheme://authority`.
    #[error("invalid public base address {0:?}: expected scheme://host[:port]")]
    Base(String),
}

/// A service's metadata documents and the public addresses they name. Build it once; each
/// request renders its own copy with its own addresses.
#[derive(Clone)]
pub struct Metadata {
    /// WSDL documents (`wsdl:definitions` roots); `wsdls[main]` is served at `?wsdl`, the
    /// others at `?wsdl=wsdl0`, `?wsdl=wsdl1`, … in order.
    wsdls: Vec<Element>,
    main: usize,
    /// Schemas (`xs:schema` roots), served at `?xsd=xsd0`, ….
    schemas: Vec<Element>,
    /// Public base addresses by scheme (`net.tcp` → `net.tcp://gateway.example:9352`).
    bases: BTreeMap<String, String>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The documents themselves would drown any log line that prints a host's config.
        f.debug_struct("Metadata")
            .field("service", &self.service_name())
            .field("wsdls", &self.wsdls.len())
            .field("schemas", &self.schemas.len())
            .field("bases", &self.bases)
            .finish()
    }
}

/// An answer to an HTTP GET on the service's base address: always `200`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// [`XML_CONTENT_TYPE`] for a document, [`HTML_CONTENT_TYPE`] for the help page.
    pub content_type: &'static str,
    /// The document or the page.
    pub body: String,
}

/// Where one answer says the service is.
#[derive(Debug)]
struct Addresses {
    /// Base of the import locations (the request's URL without query); `None` leaves
    /// locations out (mex).
    location_base: Option<String>,
    /// Public bases by scheme.
    bases: BTreeMap<String, String>,
    /// The request's path: every endpoint's path. `None` when unknown: ports are left out.
    path: Option<String>,
}

impl Metadata {
    /// The metadata of `wsdls` (one of them with the `wsdl:service`, served at `?wsdl`; the
    /// others are numbered in order) and `schemas` (numbered in order), as published.
    ///
    /// # Errors
    ///
    /// [`MetadataError::Xml`] or [`MetadataError::WrongRoot`] for a document that is not a
    /// WSDL or schema document, [`MetadataError::NoService`] without a `wsdl:service`.
    pub fn new(wsdls: &[&str], schemas: &[&str]) -> Result<Self, MetadataError> {
        let wsdls = wsdls
            .iter()
            .enumerate()
            .map(|(i, text)| parse(text, &format!("wsdl {i}"), WSDL_NS, "definitions"))
            .collect::<Result<Vec<_>, _>>()?;
        let schemas = schemas
            .iter()
            .enumerate()
            .map(|(i, text)| parse(text, &format!("xsd {i}"), XSD_NS, "schema"))
            .collect::<Result<Vec<_>, _>>()?;
        let main = wsdls
            .iter()
            .position(|w| w.child(WSDL_NS, "service").is_some())
            .ok_or(MetadataError::NoService)?;
        Ok(Self {
            wsdls,
            main,
            schemas,
            bases: BTreeMap::new(),
        })
    }

    /// Merges a partial WSDL into the documents (see the module docs, "Supplements").
    ///
    /// # Errors
    ///
    /// [`MetadataError::Xml`] or [`MetadataError::WrongRoot`] for a document that is not a
    /// WSDL document; [`MetadataError::Unmatched`] when its target namespace, a portType
    /// operation or a schema's namespace has no counterpart.
    pub fn supplement(&mut self, wsdl: &str) -> Result<&mut Self, MetadataError> {
        let extra = parse(wsdl, "supplement", WSDL_NS, "definitions")?;
        // Merged into a copy, kept only if everything matched: an error leaves `self` as it
        // was.
        let mut work = self.clone();
        let tns = attr(&extra, "targetNamespace").unwrap_or_default();
        let target = work
            .wsdls
            .iter()
            .position(|w| attr(w, "targetNamespace").unwrap_or_default() == tns)
            .ok_or_else(|| MetadataError::Unmatched {
                what: "wsdl document",
                name: tns.clone(),
            })?;
        let declarations = xmlns(&extra);

        // Schema types join the schema of their namespace.
        for types in children(&extra, WSDL_NS, "types") {
            for schema in children(types, XSD_NS, "schema") {
                let ns = attr(schema, "targetNamespace").unwrap_or_default();
                let dest = work
                    .schemas
                    .iter_mut()
                    .find(|s| attr(s, "targetNamespace").unwrap_or_default() == ns)
                    .ok_or_else(|| MetadataError::Unmatched {
                        what: "schema",
                        name: ns.clone(),
                    })?;
                let scope = merged(&declarations, &xmlns(schema));
                for item in schema.elements() {
                    if !is(item, XSD_NS, "import") && !is(item, XSD_NS, "include") {
                        let item = declared(item.clone(), &scope, dest);
                        dest.children.push(Node::Element(item));
                    }
                }
            }
        }

        // Messages join the WSDL document of the supplement's namespace, after its own.
        let messages: Vec<Element> = children(&extra, WSDL_NS, "message")
            .map(|m| declared(m.clone(), &declarations, &work.wsdls[target]))
            .collect();
        let doc = &mut work.wsdls[target];
        let at = doc
            .children
            .iter()
            .rposition(|n| matches!(n, Node::Element(e) if is(e, WSDL_NS, "message")))
            .map_or(doc.children.len(), |i| i + 1);
        doc.children
            .splice(at..at, messages.into_iter().map(Node::Element));

        // Operation faults join the portType's operation, and every binding of the portType.
        for port_type in children(&extra, WSDL_NS, "portType") {
            let port_type_name = attr(port_type, "name").unwrap_or_default();
            for op in children(port_type, WSDL_NS, "operation") {
                let op_name = attr(op, "name").unwrap_or_default();
                let faults: Vec<Element> = children(op, WSDL_NS, "fault")
                    .map(|f| declared(f.clone(), &declarations, &work.wsdls[target]))
                    .collect();
                let dest = work.wsdls[target]
                    .children
                    .iter_mut()
                    .find_map(|n| match n {
                        Node::Element(e)
                            if is(e, WSDL_NS, "portType")
                                && attr(e, "name").as_deref() == Some(&port_type_name) =>
                        {
                            Some(e)
                        }
                        _ => None,
                    })
                    .and_then(|pt| {
                        pt.children.iter_mut().find_map(|n| match n {
                            Node::Element(e)
                                if is(e, WSDL_NS, "operation")
                                    && attr(e, "name").as_deref() == Some(&op_name) =>
                            {
                                Some(e)
                            }
                            _ => None,
                        })
                    })
                    .ok_or_else(|| MetadataError::Unmatched {
                        what: "portType operation",
                        name: format!("{port_type_name}/{op_name}"),
                    })?;
                let names: Vec<String> = faults.iter().filter_map(|f| attr(f, "name")).collect();
                dest.children.extend(faults.into_iter().map(Node::Element));
                for wsdl in &mut work.wsdls {
                    add_binding_faults(wsdl, (&tns, &port_type_name), &op_name, &names);
                }
            }
        }
        *self = work;
        Ok(self)
    }

    /// Sets the public base address of one scheme, `scheme://host[:port]` (a path is
    /// ignored): where clients reach the service's endpoints of that scheme, e.g. the
    /// gateway's `net.tcp://gateway.example:9352` or `https://gateway.example`. Default: none,
    /// so only the request's own scheme is known (from its `Host` or `To` header).
    ///
    /// # Errors
    ///
    /// [`MetadataError::Base`] for anything but `scheme://authority`.
    pub fn set_public_base(&mut self, base: &str) -> Result<&mut Self, MetadataError> {
        let (scheme, authority, _) =
            split_url(base).ok_or_else(|| MetadataError::Base(base.to_owned()))?;
        self.bases.insert(
            scheme.to_ascii_lowercase(),
            format!("{scheme}://{authority}"),
        );
        Ok(self)
    }

    /// The public base set for `scheme`, if any.
    pub fn public_base(&self, scheme: &str) -> Option<&str> {
        self.bases
            .get(&scheme.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The service's name (the `name` of the WSDL with the `wsdl:service`).
    pub fn service_name(&self) -> String {
        attr(&self.wsdls[self.main], "name").unwrap_or_else(|| "Service".to_owned())
    }

    /// The answer to `GET {path}?{query}` (`query` without the `?`): a document, or the help
    /// page. `host` is the request's `Host` header (the base is `http://{host}{path}`); without
    /// one the `http` (else `https`) public base is used, and without that the import
    /// locations are relative (`{path}?xsd=xsd0`), which a client resolves against the URL it
    /// fetched.
    pub fn page(&self, query: &str, host: Option<&str>, path: &str) -> Page {
        let mut bases = self.bases.clone();
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            bases.insert("http".to_owned(), format!("http://{host}"));
        }
        let path = trim_path(path);
        let request_base = bases
            .get("http")
            .or_else(|| bases.get("https"))
            .map_or_else(|| path.clone(), |b| format!("{b}{path}"));
        let Some(doc) = self.lookup(query) else {
            return Page {
                content_type: HTML_CONTENT_TYPE,
                body: self.help_page(&request_base),
            };
        };
        let addresses = Addresses {
            location_base: Some(request_base),
            bases,
            path: Some(path),
        };
        let mut root = self.document(doc).clone();
        self.rewrite(&mut root, &addresses, &mut Vec::new());
        Page {
            content_type: XML_CONTENT_TYPE,
            body: format!("{XML_DECLARATION}{}", Document::from_root(root).to_xml()),
        }
    }

    /// The body of the answer to a WS-Transfer `Get` sent to `to` (the request's `To`
    /// header: its scheme, host and port give that scheme's base; its path, less a final
    /// `/mex`, every endpoint's path). Without `to`, only configured bases are known and no
    /// port can be named: they are left out.
    pub fn get_response(&self, to: Option<&str>) -> Element {
        let mut bases = self.bases.clone();
        let mut path = None;
        if let Some((scheme, authority, p)) = to.and_then(split_url) {
            bases.insert(
                scheme.to_ascii_lowercase(),
                format!("{scheme}://{authority}"),
            );
            let p = trim_path(p);
            // `get`: a cut inside a multi-byte character (a non-ASCII path) is no `/mex`.
            let service = match p.len().checked_sub(MEX_SEGMENT.len()) {
                Some(cut)
                    if p.get(cut..)
                        .is_some_and(|s| s.eq_ignore_ascii_case(MEX_SEGMENT)) =>
                {
                    trim_path(&p[..cut])
                }
                _ => p,
            };
            path = Some(service);
        }
        let addresses = Addresses {
            location_base: None,
            bases,
            path,
        };
        let mut metadata = Element::new("wsx", XmlString::inline("Metadata"), MEX_NS)
            .with_xmlns("wsx", XmlString::inline(MEX_NS));
        let order =
            std::iter::once(self.main).chain((0..self.wsdls.len()).filter(|&i| i != self.main));
        let sections = order
            .map(|i| (WSDL_NS, &self.wsdls[i]))
            .chain(self.schemas.iter().map(|s| (XSD_NS, s)));
        for (dialect, doc) in sections {
            let mut root = doc.clone();
            self.rewrite(&mut root, &addresses, &mut Vec::new());
            let identifier = attr(doc, "targetNamespace").unwrap_or_default();
            let section = Element::new("wsx", XmlString::inline("MetadataSection"), MEX_NS)
                .with_attribute(
                    "",
                    XmlString::inline("Dialect"),
                    Text::Chars(dialect.into()),
                )
                .with_attribute(
                    "",
                    XmlString::inline("Identifier"),
                    Text::Chars(identifier.into()),
                )
                .with_element(root);
            metadata = metadata.with_element(section);
        }
        metadata
    }

    /// Which document a query names, by WCF's rules (see the module docs).
    fn lookup(&self, query: &str) -> Option<Doc> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let starts = |q: &str, p: &str| q.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        let wanted = query
            .split('&')
            .rfind(|q| starts(q, "wsdl") || starts(q, "xsd"))?;
        if wanted.eq_ignore_ascii_case("wsdl") {
            return Some(Doc::Wsdl(self.main));
        }
        let (key, id) = wanted.split_once('=')?;
        let number = |prefix: &str| {
            let digits = id.get(prefix.len()..)?;
            let canonical = digits.parse::<usize>().ok()?;
            // `wsdl01` is not a key WCF has: only the canonical number matches.
            (starts(id, prefix) && canonical.to_string() == digits).then_some(canonical)
        };
        if key.eq_ignore_ascii_case("wsdl") {
            let n = number("wsdl")?;
            let index = (0..self.wsdls.len()).filter(|&i| i != self.main).nth(n)?;
            Some(Doc::Wsdl(index))
        } else if key.eq_ignore_ascii_case("xsd") {
            let n = number("xsd")?;
            (n < self.schemas.len()).then_some(Doc::Xsd(n))
        } else {
            None
        }
    }

    fn document(&self, doc: Doc) -> &Element {
        match doc {
            Doc::Wsdl(i) => &self.wsdls[i],
            Doc::Xsd(i) => &self.schemas[i],
        }
    }

    /// The query that serves the document with target namespace `ns` and root of kind
    /// `wsdl` (else a schema).
    fn query_for(&self, ns: &str, wsdl: bool) -> Option<String> {
        if wsdl {
            let i = self
                .wsdls
                .iter()
                .position(|w| attr(w, "targetNamespace").as_deref() == Some(ns))?;
            if i == self.main {
                return Some("wsdl".to_owned());
            }
            let n = (0..i).filter(|&j| j != self.main).count();
            Some(format!("wsdl=wsdl{n}"))
        } else {
            let i = self
                .schemas
                .iter()
                .position(|s| attr(s, "targetNamespace").as_deref() == Some(ns))?;
            Some(format!("xsd=xsd{i}"))
        }
    }

    /// Rewrites the addresses in `el` and below (see the module docs); `scopes` holds the
    /// namespace declarations in force.
    fn rewrite(&self, el: &mut Element, to: &Addresses, scopes: &mut Vec<(String, String)>) {
        let depth = scopes.len();
        scopes.extend(xmlns(el));
        let schema_ns = attr(el, "targetNamespace");
        let mut kept: Vec<Node> = Vec::with_capacity(el.children.len());
        for node in std::mem::take(&mut el.children) {
            let Node::Element(mut child) = node else {
                kept.push(node);
                continue;
            };
            let keep = if is(&child, WSDL_NS, "import") {
                let ns = attr(&child, "namespace").unwrap_or_default();
                match (&to.location_base, self.query_for(&ns, true)) {
                    (Some(base), Some(q)) => {
                        set_attr(&mut child, "location", &format!("{base}?{q}"))
                    }
                    _ => remove_attr(&mut child, "location"),
                }
                true
            } else if is(&child, XSD_NS, "import") || is(&child, XSD_NS, "include") {
                let ns = if is(&child, XSD_NS, "include") {
                    schema_ns.clone().unwrap_or_default()
                } else {
                    attr(&child, "namespace").unwrap_or_default()
                };
                // The XML Schema namespace is built in; importing it names no document.
                let builtin = ns == XSD_NS;
                if attr(&child, "schemaLocation").is_some() {
                    match (&to.location_base, self.query_for(&ns, false)) {
                        (Some(base), Some(q)) => {
                            set_attr(&mut child, "schemaLocation", &format!("{base}?{q}"));
                        }
                        _ => remove_attr(&mut child, "schemaLocation"),
                    }
                }
                !builtin
            } else if is(&child, WSDL_NS, "port") {
                self.readdress_port(&mut child, to)
            } else {
                self.rewrite(&mut child, to, scopes);
                true
            };
            // Exact repeats of an import (Mono publishes its wsdl:import twice) add nothing.
            let import = is(&child, WSDL_NS, "import") || is(&child, XSD_NS, "import");
            let repeat = import
                && kept
                    .iter()
                    .any(|n| matches!(n, Node::Element(e) if *e == child));
            if keep && !repeat {
                kept.push(Node::Element(child));
            }
        }
        el.children = kept;
        scopes.truncate(depth);
    }

    /// Points a `wsdl:port`'s addresses at the public base of their scheme; `false` when the
    /// port cannot be reached (no base for its scheme, or no path).
    fn readdress_port(&self, port: &mut Element, to: &Addresses) -> bool {
        let address = port.elements().find_map(|e| {
            ((is(e, SOAP11_BINDING_NS, "address") || is(e, SOAP12_BINDING_NS, "address"))
                && attr(e, "location").is_some())
            .then(|| attr(e, "location"))
            .flatten()
        });
        let Some(address) = address else {
            return true; // no SOAP address: nothing we could rewrite
        };
        let Some((scheme, _, _)) = split_url(&address) else {
            return false;
        };
        let (Some(base), Some(path)) = (to.bases.get(&scheme.to_ascii_lowercase()), &to.path)
        else {
            return false;
        };
        let public = format!("{base}{path}");
        for node in &mut port.children {
            let Node::Element(e) = node else { continue };
            if is(e, SOAP11_BINDING_NS, "address") || is(e, SOAP12_BINDING_NS, "address") {
                set_attr(e, "location", &public);
            } else if is(e, WSA10_NS, "EndpointReference") {
                for node in &mut e.children {
                    if let Node::Element(a) = node
                        && is(a, WSA10_NS, "Address")
                    {
                        a.children = vec![Node::Text(Text::Chars(public.clone().into()))];
                    }
                }
            }
        }
        true
    }

    /// A short help page naming the WSDL's address.
    fn help_page(&self, base: &str) -> String {
        let name = escape(&self.service_name());
        let wsdl = escape(&format!("{base}?wsdl"));
        format!(
            "<HTML><HEAD><TITLE>{name} Service</TITLE></HEAD><BODY><H1>{name} Service</H1>\
             <P>This is a WCF service. Its metadata (WSDL) is at \
             <A HREF=\"{wsdl}\">{wsdl}</A>; a client generator reads it from there.</P>\
             </BODY></HTML>"
        )
    }
}

/// A document by kind and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    Wsdl(usize),
    Xsd(usize),
}

/// Parses a metadata document and checks its root.
fn parse(
    text: &str,
    document: &str,
    ns: &str,
    local: &'static str,
) -> Result<Element, MetadataError> {
    let options = XmlOptions {
        ignore_whitespace: true,
        // Our own documents, not network input.
        limits: Limits::unlimited(),
        ..XmlOptions::default()
    };
    let doc = Document::parse_xml(text, &options).map_err(|source| MetadataError::Xml {
        document: document.to_owned(),
        source,
    })?;
    let expected = if ns == WSDL_NS {
        "wsdl:definitions"
    } else {
        "xs:schema"
    };
    let mut root = doc
        .root()
        .filter(|r| is(r, ns, local))
        .cloned()
        .ok_or_else(|| MetadataError::WrongRoot {
            document: document.to_owned(),
            expected,
        })?;
    strip_comments(&mut root);
    Ok(root)
}

fn strip_comments(el: &mut Element) {
    el.children.retain(|n| !matches!(n, Node::Comment(_)));
    for node in &mut el.children {
        if let Node::Element(e) = node {
            strip_comments(e);
        }
    }
}

/// Adds, to every operation `op` of each binding of `port_type` (namespace, name) in `wsdl`,
/// a `wsdl:fault` per fault name with the SOAP fault binding of the binding's SOAP version.
fn add_binding_faults(wsdl: &mut Element, port_type: (&str, &str), op: &str, faults: &[String]) {
    let root_scope = xmlns(wsdl);
    let prefix = |ns: &str| {
        root_scope
            .iter()
            .find(|(_, n)| n == ns)
            .map(|(p, _)| p.clone())
    };
    let wsdl_prefix = prefix(WSDL_NS);
    let soap_prefixes = (prefix(SOAP11_BINDING_NS), prefix(SOAP12_BINDING_NS));
    for node in &mut wsdl.children {
        let Node::Element(binding) = node else {
            continue;
        };
        if !is(binding, WSDL_NS, "binding") {
            continue;
        }
        let scope = merged(&root_scope, &xmlns(binding));
        let of_port_type = attr(binding, "type")
            .and_then(|t| resolve(&t, &scope))
            .is_some_and(|(ns, local)| ns == port_type.0 && local == port_type.1);
        if !of_port_type {
            continue;
        }
        let soap12 = binding.child(SOAP12_BINDING_NS, "binding").is_some();
        let (soap_ns, soap_prefix) = if soap12 {
            (SOAP12_BINDING_NS, soap_prefixes.1.clone())
        } else {
            (SOAP11_BINDING_NS, soap_prefixes.0.clone())
        };
        for node in &mut binding.children {
            let Node::Element(operation) = node else {
                continue;
            };
            if !(is(operation, WSDL_NS, "operation")
                && attr(operation, "name").as_deref() == Some(op))
            {
                continue;
            }
            for name in faults {
                let mut soap_fault = element(soap_prefix.as_deref(), "soap", soap_ns, "fault");
                set_attr(&mut soap_fault, "name", name);
                set_attr(&mut soap_fault, "use", "literal");
                let mut fault = element(wsdl_prefix.as_deref(), "wsdl", WSDL_NS, "fault");
                set_attr(&mut fault, "name", name);
                operation
                    .children
                    .push(Node::Element(fault.with_element(soap_fault)));
            }
        }
    }
}

/// A new element in `ns`, with `prefix` when the document binds one, else declaring
/// `fallback` on itself.
fn element(prefix: Option<&str>, fallback: &str, ns: &str, local: &str) -> Element {
    match prefix {
        Some(p) => Element::new(p, XmlString::inline(local.to_owned()), ns.to_owned()),
        None => Element::new(fallback, XmlString::inline(local.to_owned()), ns.to_owned())
            .with_xmlns(fallback, XmlString::inline(ns.to_owned())),
    }
}

/// `item` with the declarations of `scope` it needs and `dest`'s root does not make
/// (an element moved between documents keeps the meaning of its prefixes, including those
/// inside QName values such as `type="tns:CalcFault"`).
fn declared(mut item: Element, scope: &[(String, String)], dest: &Element) -> Element {
    let have = xmlns(dest);
    let own = xmlns(&item);
    let mut used = BTreeSet::new();
    used_prefixes(&item, &mut used);
    let missing: Vec<Attr<'static>> = scope
        .iter()
        .filter(|(p, ns)| {
            used.contains(p)
                && !have.iter().any(|(hp, hn)| hp == p && hn == ns)
                && !own.iter().any(|(op, _)| op == p)
        })
        .map(|(p, ns)| {
            Attr::Xmlns(ferry_nbfx::Xmlns {
                prefix: p.clone().into(),
                namespace: XmlString::inline(ns.clone()),
            })
        })
        .collect();
    item.attributes.splice(0..0, missing);
    item
}

/// The prefixes `el` and its descendants use: in names, and before the colon of attribute
/// values that may be QNames (`type="tns:CalcFault"`).
fn used_prefixes(el: &Element, out: &mut BTreeSet<String>) {
    out.insert(el.prefix.clone());
    for a in &el.attributes {
        if let Attr::Attribute(a) = a {
            if !a.prefix.is_empty() {
                out.insert(a.prefix.to_string());
            }
            if let Some((p, _)) = a.value.to_string().split_once(':') {
                out.insert(p.to_owned());
            }
        }
    }
    for c in el.elements() {
        used_prefixes(c, out);
    }
}

/// The namespace declarations an element makes, (prefix, namespace).
fn xmlns(el: &Element) -> Vec<(String, String)> {
    el.attributes
        .iter()
        .filter_map(|a| match a {
            Attr::Xmlns(x) => Some((x.prefix.to_string(), x.namespace.text.to_string())),
            Attr::Attribute(_) => None,
        })
        .collect()
}

/// `outer` overridden by `inner`.
fn merged(outer: &[(String, String)], inner: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = outer
        .iter()
        .filter(|(p, _)| !inner.iter().any(|(ip, _)| ip == p))
        .cloned()
        .collect();
    out.extend(inner.iter().cloned());
    out
}

/// A QName value's (namespace, local name) under `scope`.
fn resolve(qname: &str, scope: &[(String, String)]) -> Option<(String, String)> {
    let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
    let ns = scope.iter().rev().find(|(p, _)| p == prefix)?.1.clone();
    Some((ns, local.to_owned()))
}

fn is(el: &Element, ns: &str, local: &str) -> bool {
    el.namespace == ns && el.local_name() == local
}

fn children<'a>(el: &'a Element, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Element> {
    el.elements().filter(move |e| is(e, ns, local))
}

/// An unprefixed attribute's value.
fn attr(el: &Element, local: &str) -> Option<String> {
    el.attributes.iter().find_map(|a| match a {
        Attr::Attribute(a) if a.prefix.is_empty() && a.name.text == local => {
            Some(a.value.to_string())
        }
        _ => None,
    })
}

/// Sets an unprefixed attribute, in place if present, else appended.
fn set_attr(el: &mut Element, local: &str, value: &str) {
    let value = Text::Chars(value.to_owned().into());
    for a in &mut el.attributes {
        if let Attr::Attribute(a) = a
            && a.prefix.is_empty()
            && a.name.text == local
        {
            a.value = value;
            return;
        }
    }
    el.attributes.push(Attr::Attribute(ferry_nbfx::Attribute {
        prefix: "".into(),
        name: XmlString::inline(local.to_owned()),
        value,
    }));
}

fn remove_attr(el: &mut Element, local: &str) {
    el.attributes.retain(
        |a| !matches!(a, Attr::Attribute(a) if a.prefix.is_empty() && a.name.text == local),
    );
}

/// `scheme://authority/path?query` → (scheme, authority, path); `None` without a scheme or
/// an authority.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let valid_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (valid_scheme && !authority.is_empty()).then_some((scheme, authority, &rest[..path_end]))
}

/// A path with a leading `/` and no trailing one; the root path (`/` or none) is empty, so
/// that `{base}{path}` is the bare base.
fn trim_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Text for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc;

    fn parsed(body: &str) -> Element {
        let body = body.strip_prefix(XML_DECLARATION).expect("declaration");
        Document::parse_xml(body, &XmlOptions::default())
            .expect("well-formed")
            .root()
            .cloned()
            .expect("root")
    }

    /// Every element named (ns, local) anywhere below `el`.
    fn all<'a>(el: &'a Element, ns: &str, local: &str, out: &mut Vec<&'a Element>) {
        for c in el.elements() {
            if is(c, ns, local) {
                out.push(c);
            }
            all(c, ns, local, out);
        }
    }

    fn find<'a>(el: &'a Element, ns: &str, local: &str) -> Vec<&'a Element> {
        let mut out = Vec::new();
        all(el, ns, local, &mut out);
        out
    }

    fn metadata() -> Metadata {
        let mut m = calc::metadata();
        m.set_public_base("net.tcp://gateway.example:9352").unwrap();
        m
    }

    #[test]
    fn queries_follow_wcf() {
        let m = metadata();
        assert_eq!(m.lookup("wsdl"), Some(Doc::Wsdl(0)));
        assert_eq!(m.lookup("WSDL"), Some(Doc::Wsdl(0)));
        assert_eq!(m.lookup("wsdl=wsdl0"), Some(Doc::Wsdl(1)));
        assert_eq!(m.lookup("WSDL=WSDL0"), Some(Doc::Wsdl(1)));
        assert_eq!(m.lookup("xsd=xsd3"), Some(Doc::Xsd(3)));
        assert_eq!(m.lookup("x=1&xsd=xsd2"), Some(Doc::Xsd(2)));
        for unknown in [
            "",
            "xsd=",
            "xsd=xsd4",
            "xsd=xsd03",
            "wsdl=wsdl1",
            "singleWsdl",
            "disco",
        ] {
            assert_eq!(m.lookup(unknown), None, "{unknown}");
            let page = m.page(unknown, Some("h:1"), "/calc");
            assert_eq!(page.content_type, HTML_CONTENT_TYPE);
            assert!(page.body.contains("http://h:1/calc?wsdl"), "{}", page.body);
        }
    }

    #[test]
    fn addresses_name_the_host_and_path_the_request_came_in_on() {
        let m = metadata();
        let page = m.page("wsdl", Some("gateway.example:8080"), "/erp/calc/");
        assert_eq!(page.content_type, XML_CONTENT_TYPE);
        let wsdl = parsed(&page.body);
        // One import (Mono publishes it twice), at the request's base.
        let imports = find(&wsdl, WSDL_NS, "import");
        assert_eq!(imports.len(), 1);
        assert_eq!(
            attr(imports[0], "location").as_deref(),
            Some("http://gateway.example:8080/erp/calc?wsdl=wsdl0")
        );
        // Both endpoints on the request's path, each on its scheme's public base.
        let http = find(&wsdl, SOAP11_BINDING_NS, "address");
        assert_eq!(
            attr(http[0], "location").as_deref(),
            Some("http://gateway.example:8080/erp/calc")
        );
        let tcp = find(&wsdl, SOAP12_BINDING_NS, "address");
        assert_eq!(
            attr(tcp[0], "location").as_deref(),
            Some("net.tcp://gateway.example:9352/erp/calc")
        );
        let epr = find(&wsdl, WSA10_NS, "Address");
        assert_eq!(epr[0].text(), "net.tcp://gateway.example:9352/erp/calc");
        assert!(!page.body.contains("127.0.0.1"), "{}", page.body);

        // The contract WSDL imports every schema from the same base, and not the XML Schema
        // namespace (Mono imports it from `?xsd=`, which serves its help page).
        let wsdl0 = parsed(
            &m.page("wsdl=wsdl0", Some("gateway.example:8080"), "/erp/calc")
                .body,
        );
        let locations: Vec<String> = find(&wsdl0, XSD_NS, "import")
            .iter()
            .filter_map(|i| attr(i, "schemaLocation"))
            .collect();
        assert_eq!(
            locations,
            (0..4)
                .map(|i| format!("http://gateway.example:8080/erp/calc?xsd=xsd{i}"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn without_a_host_header_the_public_bases_are_used() {
        let mut m = metadata();
        // Through the relay: no Host header.
        let relative = parsed(&m.page("wsdl", None, "/calc").body);
        assert_eq!(
            attr(find(&relative, WSDL_NS, "import")[0], "location").as_deref(),
            Some("/calc?wsdl=wsdl0")
        );
        // No http base: the basicHttp port cannot be named, the net.tcp one can.
        let ports = find(&relative, WSDL_NS, "port");
        assert_eq!(ports.len(), 1);
        assert_eq!(
            attr(ports[0], "name").as_deref(),
            Some("NetTcpBinding_ICalculator")
        );

        m.set_public_base("https://gateway.example").unwrap();
        let wsdl = parsed(&m.page("wsdl", None, "/calc").body);
        assert_eq!(
            attr(find(&wsdl, WSDL_NS, "import")[0], "location").as_deref(),
            Some("https://gateway.example/calc?wsdl=wsdl0")
        );
        // The basicHttp port's address is http://, and only https:// is public.
        assert_eq!(find(&wsdl, WSDL_NS, "port").len(), 1);
        m.set_public_base("http://gateway.example:8080/ignored")
            .unwrap();
        let wsdl = parsed(&m.page("wsdl", None, "/calc").body);
        assert_eq!(find(&wsdl, WSDL_NS, "port").len(), 2);
        assert!(matches!(
            m.set_public_base("gateway.example:8080"),
            Err(MetadataError::Base(_))
        ));
    }

    #[test]
    fn the_fault_contract_is_published() {
        let m = metadata();
        let wsdl0 = parsed(&m.page("wsdl=wsdl0", Some("h"), "/calc").body);
        let message = find(&wsdl0, WSDL_NS, "message")
            .into_iter()
            .find(|e| {
                attr(e, "name").as_deref()
                    == Some("ICalculator_SafeDivide_CalcFaultFault_FaultMessage")
            })
            .expect("fault message");
        let part = message.elements().next().expect("part");
        assert_eq!(attr(part, "element").as_deref(), Some("q1:CalcFault"));
        let faults = find(&wsdl0, WSDL_NS, "fault");
        assert_eq!(faults.len(), 1);
        assert_eq!(
            attr(faults[0], "message").as_deref(),
            Some("tns:ICalculator_SafeDivide_CalcFaultFault_FaultMessage")
        );

        // Both bindings' SafeDivide, in their SOAP version.
        let wsdl = parsed(&m.page("wsdl", Some("h"), "/calc").body);
        let soap11 = find(&wsdl, SOAP11_BINDING_NS, "fault");
        let soap12 = find(&wsdl, SOAP12_BINDING_NS, "fault");
        assert_eq!((soap11.len(), soap12.len()), (1, 1));
        for f in [soap11[0], soap12[0]] {
            assert_eq!(attr(f, "name").as_deref(), Some("CalcFaultFault"));
            assert_eq!(attr(f, "use").as_deref(), Some("literal"));
        }

        // The detail type joins the types schema; its prefixes still resolve there.
        let xsd2 = m.page("xsd=xsd2", Some("h"), "/calc").body;
        let schema = parsed(&xsd2);
        let element = find(&schema, XSD_NS, "element")
            .into_iter()
            .find(|e| attr(e, "name").as_deref() == Some("CalcFault"))
            .expect("CalcFault element");
        assert_eq!(attr(element, "type").as_deref(), Some("tns:CalcFault"));
        assert!(
            find(&schema, XSD_NS, "complexType")
                .iter()
                .any(|e| attr(e, "name").as_deref() == Some("CalcFault"))
        );
    }

    #[test]
    fn a_supplement_must_match_the_documents() {
        let mut m = metadata();
        let other_ns = r#"<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace="urn:other"/>"#;
        assert!(matches!(
            m.supplement(other_ns),
            Err(MetadataError::Unmatched {
                what: "wsdl document",
                ..
            })
        ));
        let no_op = r#"<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace="http://interop.example/calc/2024"><wsdl:portType name="ICalculator"><wsdl:operation name="Nope"/></wsdl:portType></wsdl:definitions>"#;
        // Its message would merge, its operation does not: nothing merges.
        let before = m.page("wsdl=wsdl0", Some("h"), "/c");
        let half = r#"<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" targetNamespace="http://interop.example/calc/2024"><wsdl:message name="Extra"/><wsdl:portType name="ICalculator"><wsdl:operation name="Nope"/></wsdl:portType></wsdl:definitions>"#;
        assert!(m.supplement(half).is_err());
        assert_eq!(m.page("wsdl=wsdl0", Some("h"), "/c"), before);
        assert!(matches!(
            m.supplement(no_op),
            Err(MetadataError::Unmatched {
                what: "portType operation",
                ..
            })
        ));
        assert!(matches!(
            m.supplement("<x/>"),
            Err(MetadataError::WrongRoot { .. })
        ));
        assert!(matches!(m.supplement("<x"), Err(MetadataError::Xml { .. })));
        assert!(matches!(
            Metadata::new(&[no_op], &[]),
            Err(MetadataError::NoService)
        ));
    }

    #[test]
    fn mex_answers_every_document_addressed_by_to() {
        let m = metadata();
        let body = m.get_response(Some("net.tcp://gateway.example:9400/calc/tcp/mex"));
        assert!(is(&body, MEX_NS, "Metadata"));
        let sections: Vec<(String, String)> = body
            .elements()
            .map(|s| {
                assert!(is(s, MEX_NS, "MetadataSection"));
                (attr(s, "Dialect").unwrap(), attr(s, "Identifier").unwrap())
            })
            .collect();
        assert_eq!(
            sections,
            [
                (WSDL_NS, "http://tempuri.org/"),
                (WSDL_NS, "http://interop.example/calc/2024"),
                (XSD_NS, "http://interop.example/calc/2024"),
                (
                    XSD_NS,
                    "http://schemas.microsoft.com/2003/10/Serialization/"
                ),
                (XSD_NS, "http://interop.example/calc/types"),
                (
                    XSD_NS,
                    "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
                ),
            ]
            .map(|(d, i)| (d.to_owned(), i.to_owned()))
        );
        // The service is where the request went, less the /mex segment; the To's port is the
        // net.tcp base of this answer (the configured one was 9352).
        let tcp = find(&body, SOAP12_BINDING_NS, "address");
        assert_eq!(
            attr(tcp[0], "location").as_deref(),
            Some("net.tcp://gateway.example:9400/calc/tcp")
        );
        // No http base is known over net.tcp: that port is left out.
        assert_eq!(find(&body, WSDL_NS, "port").len(), 1);
        // Imports travel without locations.
        for import in find(&body, WSDL_NS, "import")
            .into_iter()
            .chain(find(&body, XSD_NS, "import"))
        {
            assert_eq!(attr(import, "location"), None);
            assert_eq!(attr(import, "schemaLocation"), None);
        }
        // It encodes as binary XML (the net.tcp reply).
        let doc = Document::from_root(body.clone());
        assert!(doc.encode(&mut Vec::new(), None).is_ok());

        // Sent to the service path itself, or without a To.
        let direct = m.get_response(Some("net.tcp://g:1/calc/tcp"));
        let tcp = find(&direct, SOAP12_BINDING_NS, "address");
        assert_eq!(
            attr(tcp[0], "location").as_deref(),
            Some("net.tcp://g:1/calc/tcp")
        );
        let none = m.get_response(None);
        assert_eq!(find(&none, WSDL_NS, "port").len(), 0);
    }

    #[test]
    fn mex_to_with_a_non_ascii_path_is_answered() {
        let m = metadata();
        // `len - 4` falls inside a `€` in each: no `/mex` there, and no panic.
        for (to, location) in [
            ("net.tcp://x/€€", "net.tcp://x/€€"),
            ("net.tcp://x/a€€", "net.tcp://x/a€€"),
            ("net.tcp://x/€€/mex", "net.tcp://x/€€"),
        ] {
            let body = m.get_response(Some(to));
            let tcp = find(&body, SOAP12_BINDING_NS, "address");
            assert_eq!(attr(tcp[0], "location").as_deref(), Some(location), "{to}");
        }
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("net.tcp://h:1/a/b?x#y"),
            Some(("net.tcp", "h:1", "/a/b"))
        );
        assert_eq!(split_url("http://h"), Some(("http", "h", "")));
        assert_eq!(split_url("h:1/a"), None);
        assert_eq!(split_url("http:///a"), None);
        assert_eq!(trim_path("calc/"), "/calc");
        assert_eq!(trim_path("/"), "");
    }
}
