//! Errors, grouped by whose fault they are.

use crate::limits::Limit;

/// Malformed bytes: the input is not a valid MC-NBFX document (or MC-NBFSE string table).
///
/// Every variant carries the byte offset (from the start of the buffer handed to the decoder)
/// of the record or field that failed.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a record or with elements still open.
    #[error("truncated input at offset {offset}: expected {expected}")]
    Truncated {
        /// Where the missing bytes should have been.
        offset: usize,
        /// What was being read.
        expected: &'static str,
    },
    /// A record type byte that MC-NBFX does not define (or reserves) at this position.
    #[error("unknown or misplaced record type 0x{record:02x} at offset {offset} ({context})")]
    UnexpectedRecord {
        /// Offset of the type byte.
        offset: usize,
        /// The type byte.
        record: u8,
        /// Where it was found: element content, attribute value, array, list.
        context: &'static str,
    },
    /// A field holds a value the format forbids.
    #[error("invalid {what} at offset {offset}")]
    Invalid {
        /// Offset of the field.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// A MultiByteInt31 above 2^31 - 1 or longer than five bytes (MC-NBFX 2.1.2).
    #[error("multi-byte integer out of range at offset {offset}")]
    Varint {
        /// Offset of the first byte of the integer.
        offset: usize,
    },
    /// A dictionary id that names no string: an undefined static id, or a session id not
    /// announced by this or an earlier envelope.
    #[error("undefined dictionary id {id} at offset {offset}")]
    UnknownDictionaryId {
        /// Offset of the id.
        offset: usize,
        /// The wire id (even = static, odd = session).
        id: u32,
    },
    /// An element or attribute prefix with no namespace declaration in scope.
    #[error("undeclared prefix {prefix:?} at offset {offset}")]
    UndeclaredPrefix {
        /// Offset of the record that used it.
        offset: usize,
        /// The prefix.
        prefix: String,
    },
    /// A configured [`Limit`] was exceeded.
    #[error("{limit} limit of {max} exceeded at offset {offset}")]
    LimitExceeded {
        /// Offset of the record that broke it.
        offset: usize,
        /// Which limit.
        limit: Limit,
        /// The configured maximum.
        max: usize,
    },
}

impl DecodeError {
    /// Offset in the input at which the error was detected.
    pub fn offset(&self) -> usize {
        match self {
            Self::Truncated { offset, .. }
            | Self::UnexpectedRecord { offset, .. }
            | Self::Invalid { offset, .. }
            | Self::Varint { offset }
            | Self::UnknownDictionaryId { offset, .. }
            | Self::UndeclaredPrefix { offset, .. }
            | Self::LimitExceeded { offset, .. } => *offset,
        }
    }

    /// The same error with its offset moved by `base`, for a decoder that ran on a slice of a
    /// larger buffer.
    pub fn shifted(mut self, base: usize) -> Self {
        match &mut self {
            Self::Truncated { offset, .. }
            | Self::UnexpectedRecord { offset, .. }
            | Self::Invalid { offset, .. }
            | Self::Varint { offset }
            | Self::UnknownDictionaryId { offset, .. }
            | Self::UndeclaredPrefix { offset, .. }
            | Self::LimitExceeded { offset, .. } => *offset = offset.saturating_add(base),
        }
        self
    }

    /// The broken limit, if this error is [`DecodeError::LimitExceeded`]. A framing layer maps
    /// [`Limit::DocumentBytes`] to its "message too large" fault.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::LimitExceeded { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// A document that cannot be written as binary XML.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string longer than the 2^31 - 1 bytes a MultiByteInt31 can express.
    #[error("string of {len} bytes is too long for binary XML")]
    StringTooLong {
        /// The length in bytes.
        len: usize,
    },
    /// An array with no items (MC-NBFX requires a count above zero) or too many items.
    #[error("invalid array length {len}")]
    ArrayLength {
        /// The number of items.
        len: usize,
    },
    /// An array item whose type does not match the array's value type.
    #[error("array item does not match the array value type")]
    ArrayItemType,
    /// A QName dictionary text whose prefix is not one lowercase letter.
    #[error("qname prefix {prefix:?} is not a single letter a-z")]
    QNamePrefix {
        /// The prefix.
        prefix: String,
    },
    /// A list inside a list (MC-NBFX forbids nesting).
    #[error("nested list")]
    NestedList,
}

/// XML text that cannot be read or converted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// quick-xml rejected the text.
    #[error("malformed xml at offset {offset}: {message}")]
    Syntax {
        /// Byte offset in the text.
        offset: u64,
        /// The parser's description.
        message: String,
    },
    /// Well-formed text that is not a single-rooted document or has mismatched tags.
    #[error("invalid xml document: {0}")]
    Structure(&'static str),
    /// An element or attribute prefix with no declaration in scope.
    #[error("undeclared prefix {0:?}")]
    UndeclaredPrefix(String),
    /// The document breaks a configured limit.
    #[error("{limit} limit of {max} exceeded")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The configured maximum.
        max: usize,
    },
}
