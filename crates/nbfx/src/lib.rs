#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod dictionary;
pub mod document;
pub mod error;
pub mod limits;
pub mod reader;
pub mod record;
pub mod string;
pub mod value;
pub mod varint;

pub use dictionary::{
    Checkpoint, DictionaryId, SessionDictionary, StaticDictionary, WriterSession,
};
pub use document::{DictionaryUse, Document, Element, Node, XmlOptions, binary_to_xml};
pub use error::{DecodeError, EncodeError, XmlError};
pub use limits::{Limit, Limits};
pub use reader::Reader;
pub use record::{
    Array, ArrayType, Attr, Attribute, Record, StartElement, StringForm, Text, XmlString, Xmlns,
};
pub use string::Str;
pub use value::{DateTime, DateTimeKind, Decimal, Guid, TimeSpan};
