//! Mono's documented deviations from .NET (FINDINGS), set aside when a recording of a Mono
//! service is replayed against another implementation.

use std::collections::BTreeSet;

use ferry_soap::version::WSA10_FAULT_ACTION;

use super::diff::{Item, WSDL_NS, XSD_NS};

/// WSDL 1.1 SOAP 1.1 binding.
pub(super) const SOAP11_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";

/// WSDL 1.1 SOAP 1.2 binding.
pub(super) const SOAP12_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";

/// WS-MetadataExchange 2004/09.
pub(super) const MEX_NS: &str = "http://schemas.xmlsoap.org/ws/2004/09/mex";

/// What the Mono rules learn from one answer for the next ones of a connection.
#[derive(Debug, Default)]
pub(super) struct MonoState {
    /// The detail elements (namespace, local name) of the fault contracts set aside under
    /// §14 in a WSDL answer, whose types a later schema answer may then carry.
    pub(super) fault_details: BTreeSet<(String, String)>,
}

/// Sets aside, in a recorded Mono answer and a live one, what FINDINGS.md documents as
/// Mono's own behaviour, noting each section used: faults (§7, §8, §9), metadata documents
/// (§14), the mex answer (§15).
pub(super) fn mono_deviations(
    want: &mut Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &mut MonoState,
) {
    mono_fault_deviations(want, got, known);
    mono_mex_deviation(want, got, known);
    mono_metadata_deviations(want, got, known, state);
}

/// §15: Mono's mex endpoint answers WS-Transfer Get with an empty `wsx:Metadata`; a live one
/// with metadata sections is what .NET sends. Only the sections are set aside: the
/// `Metadata` element itself, the envelope and its headers still compare.
pub(super) fn mono_mex_deviation(
    want: &mut Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
) {
    fn metadata_mut(envelope: &mut Item) -> Option<&mut Item> {
        let body = match envelope.name.1.as_str() {
            "Envelope" => envelope.children.iter_mut().find(|c| c.name.1 == "Body")?,
            "Body" => envelope,
            _ => return None,
        };
        body.children
            .iter_mut()
            .find(|c| c.name == (MEX_NS.to_owned(), "Metadata".to_owned()))
    }
    let (Some(w), Some(g)) = (metadata_mut(want), metadata_mut(got)) else {
        return;
    };
    let sections = |m: &Item| {
        !m.children.is_empty()
            && m.children.iter().all(|c| {
                c.name == (MEX_NS.to_owned(), "MetadataSection".to_owned())
                    && c.attributes
                        .contains_key(&(String::new(), "Dialect".to_owned()))
                    && c.children.len() == 1
            })
    };
    if w.children.is_empty() && w.text.is_empty() && sections(g) {
        g.children.clear();
        known.insert("§15");
    }
}

/// §14: Mono's WSDL repeats its `wsdl:import`, imports the XML Schema namespace from
/// `?xsd=` (an empty id), and has no `wsdl:fault` for a `[FaultContract]`. Set aside only in
/// the shape .NET publishes: a recorded import repeated exactly where the live document has
/// it once; a recorded `xs:import` of the XML Schema namespace from `…?xsd=` that the live
/// schema lacks; in the live documents, a portType operation's `wsdl:fault` whose message
/// (also only live) has one `detail` part, that message, a binding operation's `wsdl:fault`
/// holding just its `soap:fault` / `soap12:fault` of the same name with `use="literal"`, and
/// in a later schema the `xs:complexType` and `xs:element` of a detail element so announced.
/// Everything else still compares.
pub(super) fn mono_metadata_deviations(
    want: &mut Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &mut MonoState,
) {
    let definitions = (WSDL_NS.to_owned(), "definitions".to_owned());
    let schema = (XSD_NS.to_owned(), "schema".to_owned());
    if want.name == definitions && got.name == definitions {
        repeated_wsdl_import(want, got, known);
        xml_schema_import(want, got, known);
        port_type_faults(want, got, known, state);
        binding_faults(want, got, known);
        let types = |i: &Item| i.name == (WSDL_NS.to_owned(), "types".to_owned());
        let (Some(w), Some(g)) = (
            want.children.iter().find(|c| types(c)),
            got.children.iter_mut().find(|c| types(c)),
        ) else {
            return;
        };
        for (ws, gs) in w.children.iter().zip(g.children.iter_mut()) {
            schema_fault_types(ws, gs, known, state);
        }
    } else if want.name == schema && got.name == schema {
        schema_fault_types(want, got, known, state);
    }
}

/// An unprefixed attribute's value.
pub(super) fn plain_attr(i: &Item, local: &str) -> Option<String> {
    i.attributes
        .get(&(String::new(), local.to_owned()))
        .cloned()
}

pub(super) fn wsdl_name(local: &str) -> (String, String) {
    (WSDL_NS.to_owned(), local.to_owned())
}

/// §14: the recorded `wsdl:import` repeated exactly, where the live document has it once.
pub(super) fn repeated_wsdl_import(
    want: &mut Item,
    got: &Item,
    known: &mut BTreeSet<&'static str>,
) {
    let imports = |i: &Item| {
        i.children
            .iter()
            .filter(|c| c.name == wsdl_name("import"))
            .count()
    };
    let mut extra = imports(want).saturating_sub(imports(got));
    let mut seen: Vec<Item> = Vec::new();
    want.children.retain(|c| {
        if c.name != wsdl_name("import") {
            return true;
        }
        if extra > 0 && seen.contains(c) {
            extra -= 1;
            known.insert("§14");
            return false;
        }
        seen.push(c.clone());
        true
    });
}

/// §14: the recorded types' `xs:import` of the XML Schema namespace from `…?xsd=`, where no
/// live schema imports that namespace.
pub(super) fn xml_schema_import(want: &mut Item, got: &Item, known: &mut BTreeSet<&'static str>) {
    let xsd_import = |i: &Item| {
        i.name == (XSD_NS.to_owned(), "import".to_owned())
            && plain_attr(i, "namespace").as_deref() == Some(XSD_NS)
    };
    let live_imports_xsd = got
        .children
        .iter()
        .filter(|c| c.name == wsdl_name("types"))
        .any(|t| t.children.iter().any(|s| s.children.iter().any(xsd_import)));
    if live_imports_xsd {
        return;
    }
    for types in want
        .children
        .iter_mut()
        .filter(|c| c.name == wsdl_name("types"))
    {
        for schema in &mut types.children {
            schema.children.retain(|i| {
                let quirk = xsd_import(i)
                    && plain_attr(i, "schemaLocation").is_some_and(|l| l.ends_with("?xsd="));
                if quirk {
                    known.insert("§14");
                }
                !quirk
            });
        }
    }
}

/// §14: a live portType operation's `wsdl:fault` (where the recorded operation has none)
/// whose message, also only live, has one `detail` part; the fault and the message are set
/// aside and the detail element remembered for [`schema_fault_types`].
pub(super) fn port_type_faults(
    want: &Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &mut MonoState,
) {
    let tns = plain_attr(got, "targetNamespace").unwrap_or_default();
    let recorded_messages: BTreeSet<String> = want
        .children
        .iter()
        .filter(|c| c.name == wsdl_name("message"))
        .filter_map(|c| plain_attr(c, "name"))
        .collect();
    let live_messages: Vec<Item> = got
        .children
        .iter()
        .filter(|c| c.name == wsdl_name("message"))
        .cloned()
        .collect();
    let mut set_aside = BTreeSet::new();
    for port_type in got
        .children
        .iter_mut()
        .filter(|c| c.name == wsdl_name("portType"))
    {
        let Some(recorded_type) = counterpart(want, port_type) else {
            continue;
        };
        for op in port_type
            .children
            .iter_mut()
            .filter(|c| c.name == wsdl_name("operation"))
        {
            if !without_faults(counterpart(recorded_type, op)) {
                continue;
            }
            op.children.retain(|fault| {
                if fault.name != wsdl_name("fault") {
                    return true;
                }
                // `message` is a QName, resolved to {namespace}local by `item`.
                let Some(local) = plain_attr(fault, "message")
                    .and_then(|m| m.strip_prefix(&format!("{{{tns}}}")).map(str::to_owned))
                else {
                    return true;
                };
                let message = live_messages
                    .iter()
                    .find(|m| plain_attr(m, "name").as_deref() == Some(local.as_str()));
                let detail = message.and_then(|m| match m.children.as_slice() {
                    [part]
                        if part.name == wsdl_name("part")
                            && plain_attr(part, "name").as_deref() == Some("detail") =>
                    {
                        plain_attr(part, "element")
                    }
                    _ => None,
                });
                let Some(detail) = detail.filter(|_| !recorded_messages.contains(&local)) else {
                    return true;
                };
                if let Some((ns, name)) = detail.strip_prefix('{').and_then(|d| d.split_once('}')) {
                    state.fault_details.insert((ns.to_owned(), name.to_owned()));
                }
                set_aside.insert(local);
                known.insert("§14");
                false
            });
        }
    }
    got.children.retain(|c| {
        !(c.name == wsdl_name("message")
            && plain_attr(c, "name").is_some_and(|n| set_aside.contains(&n)))
    });
}

/// §14: a live binding operation's `wsdl:fault` (where the recorded operation has none)
/// holding only the `soap:fault` / `soap12:fault` of the binding's SOAP version, of the same
/// name, `use="literal"`, as .NET's exporter writes it.
pub(super) fn binding_faults(want: &Item, got: &mut Item, known: &mut BTreeSet<&'static str>) {
    for binding in got
        .children
        .iter_mut()
        .filter(|c| c.name == wsdl_name("binding"))
    {
        let soap12 = binding
            .children
            .iter()
            .any(|c| c.name == (SOAP12_BINDING_NS.to_owned(), "binding".to_owned()));
        let soap_fault = if soap12 {
            (SOAP12_BINDING_NS.to_owned(), "fault".to_owned())
        } else {
            (SOAP11_BINDING_NS.to_owned(), "fault".to_owned())
        };
        let Some(recorded_binding) = counterpart(want, binding) else {
            continue;
        };
        for op in binding
            .children
            .iter_mut()
            .filter(|c| c.name == wsdl_name("operation"))
        {
            if !without_faults(counterpart(recorded_binding, op)) {
                continue;
            }
            op.children.retain(|fault| {
                let name = plain_attr(fault, "name");
                let dotnet_shape = fault.name == wsdl_name("fault")
                    && fault.attributes.len() == 1
                    && fault.text.is_empty()
                    && match fault.children.as_slice() {
                        [soap] => {
                            soap.name == soap_fault
                                && soap.children.is_empty()
                                && soap.attributes.len() == 2
                                && plain_attr(soap, "name") == name
                                && plain_attr(soap, "use").as_deref() == Some("literal")
                        }
                        _ => false,
                    };
                if dotnet_shape {
                    known.insert("§14");
                }
                !dotnet_shape
            });
        }
    }
}

/// The child of `parent` with `item`'s element name and `name` attribute.
pub(super) fn counterpart<'a>(parent: &'a Item, item: &Item) -> Option<&'a Item> {
    parent
        .children
        .iter()
        .find(|c| c.name == item.name && plain_attr(c, "name") == plain_attr(item, "name"))
}

/// A recorded operation that exists and declares no `wsdl:fault`.
pub(super) fn without_faults(recorded: Option<&Item>) -> bool {
    recorded.is_some_and(|r| !r.children.iter().any(|c| c.name == wsdl_name("fault")))
}

/// §14 in a schema: the live `xs:complexType` and `xs:element` of a fault detail that a
/// set-aside `wsdl:fault` announced, which the recorded schema (Mono's) lacks.
pub(super) fn schema_fault_types(
    want: &Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &MonoState,
) {
    let tns = plain_attr(got, "targetNamespace").unwrap_or_default();
    let recorded_names: BTreeSet<(String, String)> = want
        .children
        .iter()
        .filter_map(|c| Some((c.name.1.clone(), plain_attr(c, "name")?)))
        .collect();
    got.children.retain(|c| {
        let Some(name) = plain_attr(c, "name") else {
            return true;
        };
        let detail = state.fault_details.contains(&(tns.clone(), name.clone()));
        let kind_ok = c.name == (XSD_NS.to_owned(), "complexType".to_owned())
            || (c.name == (XSD_NS.to_owned(), "element".to_owned())
                && plain_attr(c, "type").as_deref() == Some(&format!("{{{tns}}}{name}")));
        let set_aside = detail && kind_ok && !recorded_names.contains(&(c.name.1.clone(), name));
        if set_aside {
            known.insert("§14");
        }
        !set_aside
    });
}

/// §7, §8, §9: sets aside, in a recorded Mono answer and a live one that are both faults,
/// what FINDINGS.md documents as Mono's own behaviour.
pub(super) fn mono_fault_deviations(
    want: &mut Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
) {
    fn child_mut<'a>(item: &'a mut Item, name: &str) -> Option<&'a mut Item> {
        item.children.iter_mut().find(|c| c.name.1 == name)
    }
    fn fault_mut(envelope: &mut Item) -> Option<&mut Item> {
        match envelope.name.1.as_str() {
            "Envelope" => child_mut(child_mut(envelope, "Body")?, "Fault"),
            "Body" => child_mut(envelope, "Fault"),
            _ => None,
        }
    }
    fn clear_lang(item: &mut Item, recorded: &Item, known: &mut BTreeSet<&'static str>) {
        let lang = (
            ferry_nbfx::document::XML_NAMESPACE.to_owned(),
            "lang".to_owned(),
        );
        if recorded.attributes.get(&lang).is_some_and(String::is_empty)
            && item.attributes.get(&lang).is_some_and(|v| !v.is_empty())
        {
            item.attributes.insert(lang, String::new());
            known.insert("§7");
        }
        for (c, r) in item.children.iter_mut().zip(&recorded.children) {
            clear_lang(c, r, known);
        }
    }
    if fault_mut(want).is_none() || fault_mut(got).is_none() {
        return;
    }
    // §8: Mono's faults carry no RelatesTo; .NET's do.
    let has_relates_to = |e: &mut Item| {
        child_mut(e, "Header").is_some_and(|h| h.children.iter().any(|c| c.name.1 == "RelatesTo"))
    };
    if !has_relates_to(want)
        && has_relates_to(got)
        && let Some(h) = child_mut(got, "Header")
    {
        h.children.retain(|c| c.name.1 != "RelatesTo");
        known.insert("§8");
    }
    let (Some(want_fault), Some(got_fault)) = (fault_mut(want).cloned(), fault_mut(got).cloned())
    else {
        return;
    };
    // §9: Mono replaced the service's fault by its generic one, told by its code alone (not
    // by text anywhere in the fault). The live fault answers it only in .NET's shape for that
    // case: Receiver with the dispatcher's InternalServiceFault subcode, or the service's own
    // untyped fault (no detail) passed through; never a fault about the request itself.
    let recorded_codes = fault_codes(&want_fault);
    let live_codes = fault_codes(&got_fault);
    let local = |code: &str| {
        code.rsplit(['}', ':'])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let recorded_generic = recorded_codes
        .iter()
        .any(|c| local(c) == "InternalServiceFault");
    let about_the_request = live_codes.iter().any(|c| {
        let l = local(c);
        l == "ActionNotSupported" || l == "DeserializationFailed" || l.contains("ContractFilter")
    });
    let dotnet_internal = live_codes.first().is_some_and(|c| local(c) == "Receiver")
        && live_codes
            .iter()
            .any(|c| *c == format!("{{{DISPATCHER_NS}}}InternalServiceFault"));
    let untyped = !got_fault
        .children
        .iter()
        .any(|c| matches!(c.name.1.as_str(), "Detail" | "detail"));
    let generic = recorded_generic && !about_the_request && (dotnet_internal || untyped);
    if generic {
        if let (Some(w), Some(g)) = (fault_mut(want), fault_mut(got)) {
            w.children.clear();
            w.text.clear();
            g.children.clear();
            g.text.clear();
            g.attributes = w.attributes.clone();
        }
        known.insert("§9");
    } else if let (Some(w), Some(g)) = (fault_mut(want), fault_mut(got)) {
        clear_lang(g, w, known);
    }
    // The fault's Action: §7 (a missing slash between the contract namespace and the
    // contract name) or §9 (Mono's generic fault has the request's Action where .NET has its
    // fault Action).
    if let (Some(w), Some(g)) = (
        child_mut(want, "Header")
            .and_then(|h| child_mut(h, "Action"))
            .map(|a| a.text.clone()),
        child_mut(got, "Header").and_then(|h| child_mut(h, "Action")),
    ) {
        // `{namespace}/{Contract}/{Action}`: the slash Mono drops is the one before the
        // contract name, so exactly one more follows it, and the namespace ends before it.
        let slash_dropped = g.text.match_indices('/').any(|(i, _)| {
            let (ns, rest) = (&g.text[..i], &g.text[i + 1..]);
            !ns.ends_with('/')
                && ns.contains("://")
                && rest.matches('/').count() == 1
                && !rest.starts_with('/')
                && format!("{ns}{rest}") == w
        });
        if slash_dropped {
            g.text = w;
            known.insert("§7");
        } else if generic && DOTNET_FAULT_ACTIONS.contains(&g.text.as_str()) && w != g.text {
            g.text = w;
        }
    }
}

/// WCF's dispatcher namespace: .NET's generic fault has the subcode `InternalServiceFault` in it.
pub(super) const DISPATCHER_NS: &str =
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher";

/// The Actions .NET gives a fault that has no contract Action.
pub(super) const DOTNET_FAULT_ACTIONS: [&str; 2] = [
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher/fault",
    WSA10_FAULT_ACTION,
];

/// A fault's codes, outermost first, as `{namespace}local` (the SOAP 1.2 `Code/Value` then
/// each `Subcode/Value`, or the SOAP 1.1 `faultcode`).
pub(super) fn fault_codes(fault: &Item) -> Vec<String> {
    let mut codes = Vec::new();
    if let Some(c) = fault.children.iter().find(|c| c.name.1 == "faultcode") {
        codes.push(c.text.trim().to_owned());
    }
    let mut code = fault.children.iter().find(|c| c.name.1 == "Code");
    while let Some(c) = code {
        if let Some(v) = c.children.iter().find(|v| v.name.1 == "Value") {
            codes.push(v.text.trim().to_owned());
        }
        code = c.children.iter().find(|s| s.name.1 == "Subcode");
    }
    codes
}
