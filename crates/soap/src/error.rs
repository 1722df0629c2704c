//! Errors of the SOAP layer.

/// An envelope that cannot be read.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The binary form is malformed.
    #[error("binary xml: {0}")]
    Binary(#[from] ferry_nbfx::DecodeError),
    /// The text form is malformed.
    #[error("xml text: {0}")]
    Text(#[from] ferry_nbfx::XmlError),
    /// The root is not a SOAP 1.1 or 1.2 `Envelope`.
    #[error("root element is not a SOAP envelope")]
    NotAnEnvelope,
    /// The envelope has no `Body`.
    #[error("envelope has no body")]
    MissingBody,
    /// A `Fault` body is not shaped as its SOAP version requires.
    #[error("malformed fault: {0}")]
    Fault(&'static str),
    /// A WS-Addressing or relay header is malformed.
    #[error("malformed {0} header")]
    Header(&'static str),
}

/// An envelope that cannot be written.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The binary writer refused the tree.
    #[error("binary xml: {0}")]
    Binary(#[from] ferry_nbfx::EncodeError),
}
