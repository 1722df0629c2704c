//! Errors, grouped by whose fault they are, and their mapping to framing faults.

use crate::{fault::FaultCode, limits::Limit, record_type::RecordType};

/// Malformed bytes.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A record type byte MC-NMF does not define.
    #[error("unknown record type 0x{record:02x} at offset {offset}")]
    UnknownRecord {
        /// Offset of the type byte.
        offset: usize,
        /// The byte.
        record: u8,
    },
    /// A record size above 2^31 - 1.
    #[error("record size out of range at offset {offset}")]
    Varint {
        /// Offset of the size.
        offset: usize,
    },
    /// A string field that is not UTF-8.
    #[error("invalid UTF-8 in {field} at offset {offset}")]
    Utf8 {
        /// Offset of the record.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// A size over a configured limit (detected from the size field, before buffering).
    #[error("{limit} limit of {max} exceeded at offset {offset}")]
    LimitExceeded {
        /// Offset of the record; from an
        /// [`UnsizedEnvelopeReader`](crate::record::UnsizedEnvelopeReader), whose record began
        /// in an earlier input, the offset of the chunk size field.
        offset: usize,
        /// Which limit.
        limit: Limit,
        /// The configured maximum.
        max: usize,
    },
}

impl DecodeError {
    /// The same error with its offset moved by `base` (for a decoder run on a suffix).
    pub fn shifted(mut self, base: usize) -> Self {
        match &mut self {
            Self::UnknownRecord { offset, .. }
            | Self::Varint { offset }
            | Self::Utf8 { offset, .. }
            | Self::LimitExceeded { offset, .. } => *offset = offset.saturating_add(base),
        }
        self
    }
}

/// Valid records in a state where the protocol does not allow them.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerMisbehaved {
    /// A record the current state does not accept.
    #[error("unexpected {record:?} record in state {state}")]
    UnexpectedRecord {
        /// The state's name.
        state: &'static str,
        /// The record.
        record: RecordType,
    },
    /// An envelope record that does not match the mode (sized in singleton-unsized mode or
    /// unsized in duplex mode).
    #[error("{record:?} record in {mode} mode")]
    WrongEnvelopeKind {
        /// The record.
        record: RecordType,
        /// The mode's name.
        mode: &'static str,
    },
}

/// Valid records asking for something we do not support.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerIncompatible {
    /// Major version other than 1.
    #[error("unsupported framing version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// A Mode byte outside 1–4.
    #[error("unsupported mode 0x{0:02x}")]
    UnsupportedMode(u8),
    /// An encoding this session was configured not to accept.
    #[error("unsupported encoding {0}")]
    UnsupportedEncoding(String),
}

/// Any failure of a [`Session`](crate::Session).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Malformed bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Records in the wrong order.
    #[error(transparent)]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// Unsupported version, mode or encoding.
    #[error(transparent)]
    PeerIncompatible(#[from] PeerIncompatible),
    /// The peer sent a Fault record; the session is closed.
    #[error("peer sent fault {0}")]
    PeerFault(FaultCode),
    /// Our side called a method the current state does not allow.
    #[error("{operation} is not allowed in state {state}")]
    InvalidState {
        /// The method.
        operation: &'static str,
        /// The state's name.
        state: &'static str,
    },
}

impl SessionError {
    /// The Fault record a server sends for this error, if WCF defines one.
    pub fn fault(&self) -> Option<FaultCode> {
        match self {
            Self::Decode(DecodeError::LimitExceeded { limit, .. }) => Some(match limit {
                // WCF has one quota for a message; too many chunks is a message too large to
                // read, whatever its byte count.
                Limit::Envelope | Limit::UnsizedChunks => FaultCode::MaxMessageSizeExceeded,
                Limit::Via => FaultCode::ViaTooLong,
                Limit::ContentType => FaultCode::ContentTypeTooLong,
                // Only a client reads fault URIs, and a client never sends faults.
                Limit::Fault => return None,
            }),
            Self::PeerIncompatible(PeerIncompatible::UnsupportedVersion { .. }) => {
                Some(FaultCode::UnsupportedVersion)
            }
            Self::PeerIncompatible(PeerIncompatible::UnsupportedMode(_)) => {
                Some(FaultCode::UnsupportedMode)
            }
            Self::PeerIncompatible(PeerIncompatible::UnsupportedEncoding(_)) => {
                Some(FaultCode::ContentTypeInvalid)
            }
            Self::PeerMisbehaved(PeerMisbehaved::UnexpectedRecord {
                record: RecordType::UpgradeRequest,
                ..
            }) => Some(FaultCode::UpgradeInvalid),
            _ => None,
        }
    }
}

impl From<&SessionError> for Option<FaultCode> {
    fn from(e: &SessionError) -> Self {
        e.fault()
    }
}
