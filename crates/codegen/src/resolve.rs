//! WSDL 1.1 + XSD (as WCF publishes them) → [`Model`].
//!
//! All files of a contract set are read first; imports are then resolved by namespace among
//! them (never by `location`, which names the publishing host: `?wsdl=wsdl0`, `?xsd=xsd2`).
//! Definitions with the same name in several files merge where that is harmless: a portType's
//! operations are merged by name, so a second file can add the `wsdl:fault`s a publisher left
//! out (Mono omits them, see the calculator contract).

use std::collections::{BTreeMap, HashMap};

use crate::{
    error::CodegenError,
    limits::{Limit, Limits},
    model::{
        ArrayRef, ContractDef, EndpointDef, EnumValue, FaultDef, Member, Model, OperationDef,
        Primitive, TypeDef, TypeKind, TypeRef,
    },
    naming::{Names, RESERVED_TYPES, snake, upper_camel},
    xml::{Node, QName, Tree},
};

/// XML Schema.
pub(crate) const XS: &str = "http://www.w3.org/2001/XMLSchema";
/// .NET serialization types (`ser:guid`).
pub(crate) const SER: &str = "http://schemas.microsoft.com/2003/10/Serialization/";
/// WSDL 1.1.
pub(crate) const WSDL: &str = "http://schemas.xmlsoap.org/wsdl/";
/// WSDL SOAP 1.1 binding.
const WSDL_SOAP11: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
/// WSDL SOAP 1.2 binding.
const WSDL_SOAP12: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
/// WS-Addressing WSDL binding (`wsaw:Action`), what WCF writes.
const WSAW: &str = "http://www.w3.org/2006/05/addressing/wsdl";
/// WS-Addressing metadata (`wsam:Action`), the later spelling.
const WSAM: &str = "http://www.w3.org/2007/05/addressing/metadata";

/// Builds the model from parsed files.
pub(crate) fn resolve(trees: &[Tree], limits: &Limits) -> Result<Model, CodegenError> {
    let index = Index::build(trees)?;
    let mut r = Resolver {
        index: &index,
        limits,
        model: Model::default(),
        by_type: HashMap::new(),
        by_element: HashMap::new(),
        names: Names::with(RESERVED_TYPES),
    };
    // Contract-level names first, so data types give way to them (a data contract named like
    // the service gets the suffix, not the trait).
    let mut contract_names = Vec::new();
    for pt in &index.port_types {
        let base = trait_name(&pt.name.local);
        let rust = r.names.unique(&base);
        r.names.unique(&format!("{rust}Client"));
        r.names.unique(&format!("{rust}Server"));
        contract_names.push(rust);
    }
    for (pt, rust_name) in index.port_types.iter().zip(contract_names) {
        let contract = r.contract(pt, rust_name)?;
        r.model.contracts.push(contract);
    }
    r.model.endpoints = index.endpoints()?;
    mark_boxed(&mut r.model);
    Ok(r.model)
}

/// `ICalculator` → `Calculator` (WCF's interface prefix is not part of the name).
fn trait_name(port_type: &str) -> String {
    let camel = upper_camel(port_type);
    let mut chars = camel.chars();
    match (chars.next(), chars.next()) {
        (Some('I'), Some(c)) if c.is_ascii_uppercase() => camel[1..].to_owned(),
        _ => camel,
    }
}

// ---------------------------------------------------------------------------------------------
// Index: every definition of every file by qualified name.

#[derive(Clone, Copy)]
struct SchemaInfo<'t> {
    tns: &'t str,
    qualified: bool,
    node: Node<'t>,
}

struct PortType {
    name: QName,
    operations: Vec<RawOperation>,
}

#[derive(Clone, PartialEq)]
struct RawOperation {
    name: String,
    input: Option<(QName, Option<String>)>,
    output: Option<(QName, Option<String>)>,
    faults: Vec<(String, QName, Option<String>)>,
}

struct Binding<'t> {
    port_type: QName,
    soap12: bool,
    transport: String,
    node: Node<'t>,
}

struct Index<'t> {
    complex: BTreeMap<QName, SchemaInfo<'t>>,
    simple: BTreeMap<QName, SchemaInfo<'t>>,
    elements: BTreeMap<QName, SchemaInfo<'t>>,
    /// Message name → the element of its single part.
    messages: BTreeMap<QName, Option<QName>>,
    port_types: Vec<PortType>,
    bindings: BTreeMap<QName, Binding<'t>>,
    /// (port, binding, address) in document order.
    ports: Vec<(String, QName, Option<String>)>,
}

impl<'t> Index<'t> {
    fn build(trees: &'t [Tree]) -> Result<Self, CodegenError> {
        let mut index = Self {
            complex: BTreeMap::new(),
            simple: BTreeMap::new(),
            elements: BTreeMap::new(),
            messages: BTreeMap::new(),
            port_types: Vec::new(),
            bindings: BTreeMap::new(),
            ports: Vec::new(),
        };
        for tree in trees {
            let root = tree.root();
            if root.is(XS, "schema") {
                index.add_schema(root)?;
            } else if root.is(WSDL, "definitions") {
                index.add_definitions(root)?;
            } else {
                return Err(CodegenError::NotAContract {
                    file: tree.file.clone(),
                    root: format!("{{{}}}{}", root.namespace(), root.local()),
                });
            }
        }
        Ok(index)
    }

    fn add_schema(&mut self, schema: Node<'t>) -> Result<(), CodegenError> {
        let info = SchemaInfo {
            tns: schema.attr("targetNamespace").unwrap_or(""),
            qualified: schema.attr("elementFormDefault") == Some("qualified"),
            node: schema,
        };
        for child in schema.children() {
            let map = match child.local() {
                "complexType" => &mut self.complex,
                "simpleType" => &mut self.simple,
                "element" => &mut self.elements,
                // import/include: resolved by namespace; annotation, attribute, group: unused.
                _ => continue,
            };
            if child.namespace() != XS {
                continue;
            }
            let name = QName::new(info.tns, child.required("name")?);
            if map
                .insert(
                    name.clone(),
                    SchemaInfo {
                        node: child,
                        ..info
                    },
                )
                .is_some()
            {
                return Err(CodegenError::Duplicate {
                    kind: "schema definition",
                    name: name.to_string(),
                });
            }
        }
        Ok(())
    }

    fn add_definitions(&mut self, defs: Node<'t>) -> Result<(), CodegenError> {
        let tns = defs.attr("targetNamespace").unwrap_or("");
        for child in defs.children() {
            if child.namespace() != WSDL {
                continue;
            }
            match child.local() {
                "types" => {
                    for schema in child.children_named(XS, "schema") {
                        self.add_schema(schema)?;
                    }
                }
                "message" => {
                    let name = QName::new(tns, child.required("name")?);
                    let parts: Vec<Node<'t>> = child.children_named(WSDL, "part").collect();
                    let element = match parts.as_slice() {
                        [part] => part.qname_attr("element")?,
                        _ => None,
                    };
                    // A message without exactly one element part is only an error if used.
                    if let Some(old) = self.messages.insert(name.clone(), element.clone())
                        && old != element
                    {
                        return Err(CodegenError::Duplicate {
                            kind: "message",
                            name: name.to_string(),
                        });
                    }
                }
                "portType" => {
                    let name = QName::new(tns, child.required("name")?);
                    let mut ops = Vec::new();
                    for op in child.children_named(WSDL, "operation") {
                        ops.push(raw_operation(op)?);
                    }
                    self.merge_port_type(name, ops)?;
                }
                "binding" => {
                    let name = QName::new(tns, child.required("name")?);
                    let port_type = child.qname_attr("type")?.ok_or_else(|| {
                        CodegenError::MissingAttribute {
                            file: child.file().to_owned(),
                            element: "binding".into(),
                            attribute: "type".into(),
                        }
                    })?;
                    let soap = child
                        .child(WSDL_SOAP12, "binding")
                        .map(|b| (true, b))
                        .or_else(|| child.child(WSDL_SOAP11, "binding").map(|b| (false, b)));
                    // Non-SOAP bindings (http:binding) carry nothing this generator uses.
                    if let Some((soap12, b)) = soap {
                        let binding = Binding {
                            port_type,
                            soap12,
                            transport: b.attr("transport").unwrap_or("").to_owned(),
                            node: child,
                        };
                        if self.bindings.insert(name.clone(), binding).is_some() {
                            return Err(CodegenError::Duplicate {
                                kind: "binding",
                                name: name.to_string(),
                            });
                        }
                    }
                }
                "service" => {
                    for port in child.children_named(WSDL, "port") {
                        let binding = port.qname_attr("binding")?.ok_or_else(|| {
                            CodegenError::MissingAttribute {
                                file: port.file().to_owned(),
                                element: "port".into(),
                                attribute: "binding".into(),
                            }
                        })?;
                        let address = port
                            .child(WSDL_SOAP12, "address")
                            .or_else(|| port.child(WSDL_SOAP11, "address"))
                            .and_then(|a| a.attr("location"))
                            .map(str::to_owned);
                        self.ports
                            .push((port.required("name")?.to_owned(), binding, address));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds a portType, merging operations into one seen before under the same name: a later
    /// file may add faults, but may not change an operation's messages.
    fn merge_port_type(&mut self, name: QName, ops: Vec<RawOperation>) -> Result<(), CodegenError> {
        let Some(existing) = self.port_types.iter_mut().find(|p| p.name == name) else {
            self.port_types.push(PortType {
                name,
                operations: ops,
            });
            return Ok(());
        };
        for op in ops {
            match existing.operations.iter_mut().find(|o| o.name == op.name) {
                None => existing.operations.push(op),
                Some(old) => {
                    let conflict = |a: &Option<(QName, Option<String>)>, b: &Option<_>| {
                        a.is_some() && b.is_some() && a != b
                    };
                    if conflict(&op.input, &old.input) || conflict(&op.output, &old.output) {
                        return Err(CodegenError::Duplicate {
                            kind: "operation",
                            name: format!("{name}/{}", op.name),
                        });
                    }
                    if old.input.is_none() {
                        old.input = op.input;
                    }
                    if old.output.is_none() {
                        old.output = op.output;
                    }
                    for f in op.faults {
                        if !old.faults.iter().any(|o| o.0 == f.0) {
                            old.faults.push(f);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The `soapAction` a SOAP binding of this portType gives an operation.
    fn soap_action(&self, port_type: &QName, op: &str) -> Option<&'t str> {
        self.bindings
            .values()
            .filter(|b| &b.port_type == port_type)
            .flat_map(|b| b.node.children_named(WSDL, "operation"))
            .filter(|o| o.attr("name") == Some(op))
            .filter_map(|o| {
                o.child(WSDL_SOAP12, "operation")
                    .or_else(|| o.child(WSDL_SOAP11, "operation"))
            })
            .filter_map(|o| o.attr("soapAction"))
            .find(|a| !a.is_empty())
    }

    fn endpoints(&self) -> Result<Vec<EndpointDef>, CodegenError> {
        let mut out = Vec::new();
        for (name, binding, address) in &self.ports {
            // Ports of bindings that are not SOAP were skipped with their binding.
            let Some(b) = self.bindings.get(binding) else {
                continue;
            };
            out.push(EndpointDef {
                name: name.clone(),
                contract: b.port_type.local.clone(),
                soap12: b.soap12,
                transport: b.transport.clone(),
                address: address.clone().unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

fn raw_operation(op: Node<'_>) -> Result<RawOperation, CodegenError> {
    let io = |local: &str| -> Result<Option<(QName, Option<String>)>, CodegenError> {
        let Some(n) = op.child(WSDL, local) else {
            return Ok(None);
        };
        let message = n
            .qname_attr("message")?
            .ok_or_else(|| CodegenError::MissingAttribute {
                file: n.file().to_owned(),
                element: local.to_owned(),
                attribute: "message".into(),
            })?;
        Ok(Some((message, action_attr(n))))
    };
    let mut faults = Vec::new();
    for f in op.children_named(WSDL, "fault") {
        let message = f
            .qname_attr("message")?
            .ok_or_else(|| CodegenError::MissingAttribute {
                file: f.file().to_owned(),
                element: "fault".into(),
                attribute: "message".into(),
            })?;
        faults.push((f.required("name")?.to_owned(), message, action_attr(f)));
    }
    Ok(RawOperation {
        name: op.required("name")?.to_owned(),
        input: io("input")?,
        output: io("output")?,
        faults,
    })
}

fn action_attr(n: Node<'_>) -> Option<String> {
    n.attr_ns(WSAW, "Action")
        .or_else(|| n.attr_ns(WSAM, "Action"))
        .map(str::to_owned)
}

/// WCF's default action: namespace and path joined with exactly one `/`.
fn default_action(namespace: &str, contract: &str, tail: &str) -> String {
    let sep = if namespace.ends_with('/') { "" } else { "/" };
    format!("{namespace}{sep}{contract}/{tail}")
}

// ---------------------------------------------------------------------------------------------
// Resolver: types reached from the operations.

struct Resolver<'i, 't> {
    index: &'i Index<'t>,
    limits: &'i Limits,
    model: Model,
    by_type: HashMap<QName, TypeRef>,
    by_element: HashMap<QName, usize>,
    names: Names,
}

impl<'t> Resolver<'_, 't> {
    fn contract(&mut self, pt: &PortType, rust_name: String) -> Result<ContractDef, CodegenError> {
        let ns = pt.name.namespace.clone();
        let contract = pt.name.local.clone();
        let mut fns = Names::with(&["new", "transport", "into_inner"]);
        let mut operations = Vec::new();
        let mut actions = Names::default();
        for op in &pt.operations {
            let (input_msg, input_action) = op.input.as_ref().ok_or_else(|| {
                CodegenError::Unsupported(format!(
                    "operation {contract}/{} has no input (notification operations)",
                    op.name
                ))
            })?;
            let input = self.message_type(input_msg)?;
            let action = input_action
                .clone()
                .or_else(|| {
                    self.index
                        .soap_action(&pt.name, &op.name)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| default_action(&ns, &contract, &op.name));
            if actions.unique(&action) != action {
                return Err(CodegenError::Duplicate {
                    kind: "action",
                    name: action,
                });
            }
            let (output, reply_action) = match &op.output {
                Some((msg, act)) => (
                    Some(self.message_type(msg)?),
                    Some(act.clone().unwrap_or_else(|| {
                        default_action(&ns, &contract, &format!("{}Response", op.name))
                    })),
                ),
                None => (None, None),
            };
            let mut faults = Vec::new();
            let mut variants = Names::default();
            for (name, msg, act) in &op.faults {
                let detail = self.message_type(msg)?;
                let base = upper_camel(&self.model.types[detail].xml_name.local);
                faults.push(FaultDef {
                    name: name.clone(),
                    action: act.clone().unwrap_or_else(|| {
                        default_action(&ns, &contract, &format!("{}{name}", op.name))
                    }),
                    detail,
                    variant: variants.unique(&base),
                });
            }
            let fault_enum = if faults.is_empty() {
                String::new()
            } else {
                self.names
                    .unique(&format!("{}Fault", upper_camel(&op.name)))
            };
            operations.push(OperationDef {
                name: op.name.clone(),
                rust_name: fns.unique(&snake(&op.name)),
                action,
                reply_action,
                input,
                output,
                faults,
                fault_enum,
            });
        }
        Ok(ContractDef {
            name: contract,
            namespace: ns,
            rust_name,
            operations,
        })
    }

    /// The type of a message's single element part.
    fn message_type(&mut self, message: &QName) -> Result<usize, CodegenError> {
        let element = self
            .index
            .messages
            .get(message)
            .ok_or_else(|| CodegenError::Unresolved {
                kind: "message",
                name: message.to_string(),
            })?
            .clone()
            .ok_or_else(|| {
                CodegenError::Unsupported(format!(
                    "message {message} does not have exactly one part with an element \
                     (rpc style or bare message contracts)"
                ))
            })?;
        self.element_type(&element)
    }

    /// The generated type for a global element used as a message body or fault detail.
    fn element_type(&mut self, element: &QName) -> Result<usize, CodegenError> {
        if let Some(&i) = self.by_element.get(element) {
            return Ok(i);
        }
        let info = *self
            .index
            .elements
            .get(element)
            .ok_or_else(|| CodegenError::Unresolved {
                kind: "element",
                name: element.to_string(),
            })?;
        let index = if let Some(ty) = info.node.qname_attr("type")? {
            match self.type_ref(&ty)? {
                TypeRef::Def(i) if self.model.types[i].xml_name == *element => i,
                _ => {
                    return Err(CodegenError::Unsupported(format!(
                        "element {element} of type {ty} as a message body: only wrapper \
                         elements and data contracts named like their element are supported"
                    )));
                }
            }
        } else {
            let complex = info.node.child(XS, "complexType").ok_or_else(|| {
                CodegenError::Unsupported(format!("element {element} has no complex type"))
            })?;
            let index = self.reserve(element.clone(), None)?;
            let members = self.members(complex, info, 0)?;
            self.model.types[index].kind = TypeKind::Struct {
                members,
                wrapper: true,
            };
            index
        };
        self.by_element.insert(element.clone(), index);
        Ok(index)
    }

    /// Adds a placeholder type (so recursive references find it) and names it.
    fn reserve(
        &mut self,
        xml_name: QName,
        schema_name: Option<QName>,
    ) -> Result<usize, CodegenError> {
        if self.model.types.len() >= self.limits.max_types {
            return Err(CodegenError::LimitExceeded {
                file: "contract".into(),
                limit: Limit::Types,
                max: self.limits.max_types,
            });
        }
        let rust_name = self.names.unique(&upper_camel(&xml_name.local));
        self.model.types.push(TypeDef {
            rust_name,
            xml_name,
            schema_name,
            kind: TypeKind::Struct {
                members: Vec::new(),
                wrapper: false,
            },
        });
        Ok(self.model.types.len() - 1)
    }

    fn type_ref(&mut self, name: &QName) -> Result<TypeRef, CodegenError> {
        if let Some(p) = primitive(name) {
            return Ok(TypeRef::Primitive(p));
        }
        if let Some(t) = self.by_type.get(name) {
            return Ok(t.clone());
        }
        if let Some(&info) = self.index.complex.get(name) {
            if let Some(array) = self.array(info)? {
                let t = TypeRef::Array(Box::new(array));
                self.by_type.insert(name.clone(), t.clone());
                return Ok(t);
            }
            let index = self.reserve(name.clone(), Some(name.clone()))?;
            self.by_type.insert(name.clone(), TypeRef::Def(index));
            let members = self.members(info.node, info, 0)?;
            self.model.types[index].kind = TypeKind::Struct {
                members,
                wrapper: false,
            };
            return Ok(TypeRef::Def(index));
        }
        if let Some(&info) = self.index.simple.get(name) {
            let t = self.simple(name, info)?;
            self.by_type.insert(name.clone(), t.clone());
            return Ok(t);
        }
        Err(CodegenError::Unresolved {
            kind: "type",
            name: name.to_string(),
        })
    }

    /// An enumeration, a restriction of a primitive, or a list (kept as its text).
    fn simple(&mut self, name: &QName, info: SchemaInfo<'t>) -> Result<TypeRef, CodegenError> {
        if info.node.child(XS, "list").is_some() {
            // [Flags] enums are lists of names; the text ("A B") is kept as is.
            return Ok(TypeRef::Primitive(Primitive::String));
        }
        let restriction = info.node.child(XS, "restriction").ok_or_else(|| {
            CodegenError::Unsupported(format!("simple type {name} is not a restriction"))
        })?;
        let values: Vec<&str> = restriction
            .children_named(XS, "enumeration")
            .filter_map(|e| e.attr("value"))
            .collect();
        if values.is_empty() {
            let base = restriction.qname_attr("base")?.ok_or_else(|| {
                CodegenError::Unsupported(format!("simple type {name} has no base"))
            })?;
            if &base == name {
                return Err(CodegenError::Unsupported(format!(
                    "simple type {name} is its own base"
                )));
            }
            return self.type_ref(&base);
        }
        let index = self.reserve(name.clone(), Some(name.clone()))?;
        let mut variants = Names::with(&["Self"]);
        let values = values
            .into_iter()
            .map(|v| EnumValue {
                xml: v.to_owned(),
                rust: variants.unique(&upper_camel(v)),
            })
            .collect();
        self.model.types[index].kind = TypeKind::Enum { values };
        Ok(TypeRef::Def(index))
    }

    /// The item of an `ArrayOf…` type: a sequence of exactly one element that repeats.
    fn array(&mut self, info: SchemaInfo<'t>) -> Result<Option<ArrayRef>, CodegenError> {
        let node = info.node;
        if node.child(XS, "complexContent").is_some() {
            return Ok(None);
        }
        let Some(seq) = node.child(XS, "sequence") else {
            return Ok(None);
        };
        let elements: Vec<Node<'t>> = seq.children().filter(|c| c.namespace() == XS).collect();
        let [el] = elements.as_slice() else {
            return Ok(None);
        };
        if !el.is(XS, "element") || !repeats(*el) {
            return Ok(None);
        }
        let (name, namespace, ty, nillable) = self.element_decl(*el, info)?;
        let item = self.type_ref(&ty)?;
        if matches!(item, TypeRef::Array(_)) {
            return Err(CodegenError::Unsupported(format!(
                "array of arrays ({ty} inside {})",
                node.attr("name").unwrap_or("?")
            )));
        }
        Ok(Some(ArrayRef {
            item,
            item_namespace: namespace,
            item_name: name,
            item_nillable: nillable,
        }))
    }

    /// Members of a complex type: its base type's first (`xs:extension`), then its sequence.
    fn members(
        &mut self,
        complex: Node<'t>,
        info: SchemaInfo<'t>,
        depth: usize,
    ) -> Result<Vec<Member>, CodegenError> {
        if depth > self.limits.max_inheritance {
            return Err(CodegenError::LimitExceeded {
                file: complex.file().to_owned(),
                limit: Limit::Inheritance,
                max: self.limits.max_inheritance,
            });
        }
        let mut members = Vec::new();
        let mut sequence = None;
        for child in complex.children() {
            if child.namespace() != XS {
                continue;
            }
            match child.local() {
                "annotation" => {}
                "sequence" | "all" => sequence = Some(child),
                "attribute" if child.qname_attr("ref")?.is_some_and(|r| r.namespace == SER) => {
                    // ser:Id / ser:Ref of IsReference contracts: object graphs are not kept.
                }
                "complexContent" => {
                    let ext = child.child(XS, "extension").ok_or_else(|| {
                        CodegenError::Unsupported("complexContent without extension".into())
                    })?;
                    let base = ext.qname_attr("base")?.ok_or_else(|| {
                        CodegenError::Unsupported("extension without base".into())
                    })?;
                    let base_info =
                        *self
                            .index
                            .complex
                            .get(&base)
                            .ok_or_else(|| CodegenError::Unresolved {
                                kind: "type",
                                name: base.to_string(),
                            })?;
                    members.extend(self.members(base_info.node, base_info, depth + 1)?);
                    sequence = ext.child(XS, "sequence");
                }
                other => {
                    return Err(CodegenError::Unsupported(format!(
                        "xs:{other} in complex type {}",
                        complex.attr("name").unwrap_or("(anonymous)")
                    )));
                }
            }
        }
        let Some(sequence) = sequence else {
            return Ok(members);
        };
        let mut fields = Names::default();
        for m in &members {
            fields.unique(&m.rust_name);
        }
        for el in sequence.children() {
            if el.namespace() != XS || el.local() == "annotation" {
                continue;
            }
            if el.local() != "element" {
                return Err(CodegenError::Unsupported(format!(
                    "xs:{} in a sequence (only elements are supported)",
                    el.local()
                )));
            }
            if repeats(el) {
                return Err(CodegenError::Unsupported(format!(
                    "repeated element {} outside an ArrayOf… type",
                    el.attr("name").unwrap_or("?")
                )));
            }
            let (name, namespace, xsd_type, nillable) = self.element_decl(el, info)?;
            let ty = self.type_ref(&xsd_type)?;
            members.push(Member {
                rust_name: fields.unique(&snake(&name)),
                xml_name: name,
                namespace,
                ty,
                nillable,
                required: el.attr("minOccurs").is_none_or(|m| m.trim() != "0"),
                boxed: false,
                xsd_type,
            });
        }
        Ok(members)
    }

    /// (local name, namespace, type, nillable) of a local element declaration or reference.
    fn element_decl(
        &self,
        el: Node<'t>,
        info: SchemaInfo<'t>,
    ) -> Result<(String, String, QName, bool), CodegenError> {
        if let Some(target) = el.qname_attr("ref")? {
            let global =
                self.index
                    .elements
                    .get(&target)
                    .ok_or_else(|| CodegenError::Unresolved {
                        kind: "element",
                        name: target.to_string(),
                    })?;
            let ty = global.node.qname_attr("type")?.ok_or_else(|| {
                CodegenError::Unsupported(format!("element {target} has an anonymous type"))
            })?;
            let nillable = global.node.attr("nillable") == Some("true");
            return Ok((target.local, target.namespace, ty, nillable));
        }
        let name = el.required("name")?.to_owned();
        let qualified = match el.attr("form") {
            Some(f) => f == "qualified",
            None => info.qualified,
        };
        let namespace = if qualified {
            info.tns.to_owned()
        } else {
            String::new()
        };
        let ty = match el.qname_attr("type")? {
            Some(t) => t,
            None if el.child(XS, "complexType").is_some()
                || el.child(XS, "simpleType").is_some() =>
            {
                return Err(CodegenError::Unsupported(format!(
                    "member {name} has an anonymous type"
                )));
            }
            // No type at all is xs:anyType.
            None => QName::new(XS, "anyType"),
        };
        Ok((name, namespace, ty, el.attr("nillable") == Some("true")))
    }
}

/// `maxOccurs` above one.
fn repeats(el: Node<'_>) -> bool {
    el.attr("maxOccurs")
        .is_some_and(|m| m == "unbounded" || m.trim().parse::<u64>().is_ok_and(|n| n > 1))
}

/// The fixed mappings of XSD and .NET serialization types.
fn primitive(name: &QName) -> Option<Primitive> {
    use Primitive as P;
    match name.namespace.as_str() {
        XS => Some(match name.local.as_str() {
            "boolean" => P::Bool,
            "byte" => P::I8,
            "short" => P::I16,
            "int" => P::I32,
            "long" => P::I64,
            "unsignedByte" => P::U8,
            "unsignedShort" => P::U16,
            "unsignedInt" => P::U32,
            "unsignedLong" => P::U64,
            "float" => P::F32,
            "double" => P::F64,
            "decimal" => P::Decimal,
            "string" | "anyURI" | "QName" | "normalizedString" | "token" | "NCName" | "ID"
            | "IDREF" | "language" | "Name" => P::String,
            "dateTime" => P::DateTime,
            "duration" => P::Duration,
            "base64Binary" => P::Bytes,
            _ => return None,
        }),
        SER => Some(match name.local.as_str() {
            "guid" => P::Guid,
            "duration" => P::Duration,
            "char" => P::Char,
            // The rest of the serialization schema are element declarations of the XS types.
            _ => return None,
        }),
        _ => None,
    }
}

/// Boxes every member whose type leads back to the struct holding it (by value, not through a
/// `Vec`), which Rust could not size otherwise.
fn mark_boxed(model: &mut Model) {
    let n = model.types.len();
    // Direct by-value edges.
    let edges: Vec<Vec<usize>> = model
        .types
        .iter()
        .map(|t| match &t.kind {
            TypeKind::Struct { members, .. } => members
                .iter()
                .filter_map(|m| match m.ty {
                    TypeRef::Def(i) => Some(i),
                    _ => None,
                })
                .collect(),
            TypeKind::Enum { .. } => Vec::new(),
        })
        .collect();
    let reaches = |from: usize, to: usize| -> bool {
        let mut seen = vec![false; n];
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            if i == to {
                return true;
            }
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            stack.extend(&edges[i]);
        }
        false
    };
    for s in 0..n {
        let boxed: Vec<bool> = match &model.types[s].kind {
            TypeKind::Struct { members, .. } => members
                .iter()
                .map(|m| matches!(m.ty, TypeRef::Def(i) if reaches(i, s)))
                .collect(),
            TypeKind::Enum { .. } => continue,
        };
        if let TypeKind::Struct { members, .. } = &mut model.types[s].kind {
            for (m, b) in members.iter_mut().zip(boxed) {
                m.boxed = b;
            }
        }
    }
}
