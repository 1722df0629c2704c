//! Why a contract could not be turned into code.

use std::path::PathBuf;

use crate::limits::Limit;

/// A codegen failure: bad input files, an unsupported construct, or a failing tool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No `.wsdl` or `.xsd` file was given.
    #[error("no .wsdl or .xsd files in {0}")]
    NoFiles(PathBuf),
    /// A file is not well-formed XML.
    #[error("{file}: malformed XML at byte {offset}: {message}")]
    Xml {
        /// File name.
        file: String,
        /// Byte offset (0 when unknown).
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A size limit was exceeded.
    #[error("{file}: {limit} limit of {max} exceeded")]
    LimitExceeded {
        /// File name (or the contract set).
        file: String,
        /// Which limit.
        limit: Limit,
        /// Its value.
        max: usize,
    },
    /// A QName uses a prefix that is not declared.
    #[error("{file}: undeclared namespace prefix {prefix:?}")]
    UndeclaredPrefix {
        /// File name.
        file: String,
        /// The prefix.
        prefix: String,
    },
    /// An element lacks an attribute WSDL or XSD requires.
    #[error("{file}: <{element}> needs a {attribute:?} attribute")]
    MissingAttribute {
        /// File name.
        file: String,
        /// Local name of the element.
        element: String,
        /// The attribute.
        attribute: String,
    },
    /// A name refers to a definition no file provides.
    #[error("{kind} {name} is not defined in any file")]
    Unresolved {
        /// What was looked for (`type`, `element`, `message`, `portType`, `binding`).
        kind: &'static str,
        /// Its qualified name.
        name: String,
    },
    /// The same name is defined twice with different content.
    #[error("{kind} {name} is defined twice")]
    Duplicate {
        /// What kind of definition.
        kind: &'static str,
        /// Its qualified name.
        name: String,
    },
    /// A construct WCF's DataContract/WSDL export does not produce and this generator does not
    /// handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The file is neither a WSDL nor an XSD document.
    #[error("{file}: root element {root} is neither wsdl:definitions nor xs:schema")]
    NotAContract {
        /// File name.
        file: String,
        /// The root element found.
        root: String,
    },
    /// Building Rust syntax failed (a bug in the generator).
    #[error("generated code does not parse: {0}")]
    Syntax(String),
    /// `rustfmt` could not be run or failed.
    #[error("rustfmt failed: {0}")]
    Rustfmt(String),
}
