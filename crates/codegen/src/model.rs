//! The resolved contract: what the emitter turns into Rust. Every name is already a unique
//! Rust identifier and every reference an index, so emitting is a straight walk.

pub use crate::xml::QName;

/// A whole contract set (one WSDL with its imports and schemas).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Data contracts, enums and message wrappers, in the order they were reached from the
    /// operations (WSDL order).
    pub types: Vec<TypeDef>,
    /// Service contracts (portTypes).
    pub contracts: Vec<ContractDef>,
    /// Endpoints of `wsdl:service`.
    pub endpoints: Vec<EndpointDef>,
}

/// A generated type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeDef {
    /// Rust type name.
    pub rust_name: String,
    /// Element name it is written as when it stands alone (a data contract's root name, a
    /// message wrapper's element).
    pub xml_name: QName,
    /// The XSD type name; `None` for a message wrapper's anonymous type.
    pub schema_name: Option<QName>,
    /// Struct or enum.
    pub kind: TypeKind,
}

/// Struct or enum.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    /// A sequence of members.
    Struct {
        /// Members in sequence order (base type's first).
        members: Vec<Member>,
        /// A message wrapper (operation element): declares no namespaces of its own beyond the
        /// default one, as WCF writes `<Add xmlns="…">`.
        wrapper: bool,
    },
    /// An enumeration of strings.
    Enum {
        /// Values in schema order.
        values: Vec<EnumValue>,
    },
}

/// One enumeration value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumValue {
    /// The text on the wire.
    pub xml: String,
    /// The Rust variant.
    pub rust: String,
}

/// One member of a struct.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Local name of the member element.
    pub xml_name: String,
    /// Namespace of the member element (the declaring schema's, or empty when unqualified).
    pub namespace: String,
    /// Rust field name (raw identifiers spelled `r#type`).
    pub rust_name: String,
    /// Its type.
    pub ty: TypeRef,
    /// `nillable="true"`: the field is an `Option`.
    pub nillable: bool,
    /// `minOccurs` is not 0: reading fails when it is absent.
    pub required: bool,
    /// The type contains this struct again (directly or not): the field is boxed.
    pub boxed: bool,
    /// The XSD type as written, for the field's doc comment.
    pub xsd_type: QName,
}

/// A reference to a type.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeRef {
    /// A built-in mapping.
    Primitive(Primitive),
    /// A generated type (index into [`Model::types`]).
    Def(usize),
    /// An `ArrayOf…` type: a `Vec` of its item.
    Array(Box<ArrayRef>),
}

/// An `ArrayOf…` type.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayRef {
    /// Item type.
    pub item: TypeRef,
    /// Namespace of the item element.
    pub item_namespace: String,
    /// Local name of the item element.
    pub item_name: String,
    /// Items may be nil: `Vec<Option<T>>`.
    pub item_nillable: bool,
}

/// The XSD types with a fixed Rust mapping (see `ferry_wcf::data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Primitive {
    /// `xs:boolean`.
    Bool,
    /// `xs:byte`.
    I8,
    /// `xs:short`.
    I16,
    /// `xs:int`.
    I32,
    /// `xs:long`.
    I64,
    /// `xs:unsignedByte`.
    U8,
    /// `xs:unsignedShort`.
    U16,
    /// `xs:unsignedInt`.
    U32,
    /// `xs:unsignedLong`.
    U64,
    /// `xs:float`.
    F32,
    /// `xs:double`.
    F64,
    /// `xs:decimal`.
    Decimal,
    /// `xs:string`, `xs:anyURI` and other string types.
    String,
    /// `ser:char`.
    Char,
    /// `xs:dateTime`.
    DateTime,
    /// `ser:duration`, `xs:duration`.
    Duration,
    /// `ser:guid`.
    Guid,
    /// `xs:base64Binary`.
    Bytes,
}

/// A service contract (portType).
#[derive(Clone, Debug, PartialEq)]
pub struct ContractDef {
    /// The portType name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Rust trait name (`ICalculator` → `Calculator`).
    pub rust_name: String,
    /// Its operations in WSDL order.
    pub operations: Vec<OperationDef>,
}

/// One operation.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationDef {
    /// Operation name.
    pub name: String,
    /// Rust method name.
    pub rust_name: String,
    /// Request action.
    pub action: String,
    /// Reply action; `None` for one-way.
    pub reply_action: Option<String>,
    /// Request wrapper type.
    pub input: usize,
    /// Response wrapper type; `None` for one-way.
    pub output: Option<usize>,
    /// Declared faults.
    pub faults: Vec<FaultDef>,
    /// Name of the generated fault-detail enum (when `faults` is not empty).
    pub fault_enum: String,
}

/// A declared fault.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultDef {
    /// `wsdl:fault` name.
    pub name: String,
    /// Its action.
    pub action: String,
    /// Detail type.
    pub detail: usize,
    /// Variant of the operation's fault enum.
    pub variant: String,
}

/// A `wsdl:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointDef {
    /// Port name.
    pub name: String,
    /// portType name of its binding.
    pub contract: String,
    /// `soap12:binding` (else SOAP 1.1).
    pub soap12: bool,
    /// The binding's transport URI.
    pub transport: String,
    /// The published address.
    pub address: String,
}
