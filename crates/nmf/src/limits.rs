//! Size limits, each with a named default taken from WCF's transport defaults.

/// Default largest envelope (SizedEnvelope payload, or all chunks of an UnsizedEnvelope): 64 KiB,
/// the .NET `MaxReceivedMessageSize` default.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// Default largest Via URI: 2048 bytes (WCF answers longer ones with the ViaTooLong fault).
pub const DEFAULT_MAX_VIA_BYTES: usize = 2048;
/// Default largest content type (ExtensibleEncoding) or upgrade protocol name: 256 bytes
/// (WCF: ContentTypeTooLong).
pub const DEFAULT_MAX_CONTENT_TYPE_BYTES: usize = 256;
/// Default largest fault URI accepted from a peer: 256 bytes (WCF's client-side quota).
pub const DEFAULT_MAX_FAULT_BYTES: usize = 256;

/// Limits applied while decoding records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// See [`DEFAULT_MAX_ENVELOPE_BYTES`].
    pub max_envelope_bytes: usize,
    /// See [`DEFAULT_MAX_VIA_BYTES`].
    pub max_via_bytes: usize,
    /// See [`DEFAULT_MAX_CONTENT_TYPE_BYTES`].
    pub max_content_type_bytes: usize,
    /// See [`DEFAULT_MAX_FAULT_BYTES`].
    pub max_fault_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
            max_via_bytes: DEFAULT_MAX_VIA_BYTES,
            max_content_type_bytes: DEFAULT_MAX_CONTENT_TYPE_BYTES,
            max_fault_bytes: DEFAULT_MAX_FAULT_BYTES,
        }
    }
}

impl Limits {
    /// Limits for offline tools reading captures (never for network input).
    pub fn unlimited() -> Self {
        Self {
            max_envelope_bytes: usize::MAX,
            max_via_bytes: usize::MAX,
            max_content_type_bytes: usize::MAX,
            max_fault_bytes: usize::MAX,
        }
    }
}

/// Which limit was broken.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_content_type_bytes`] (content type or upgrade name).
    ContentType,
    /// [`Limits::max_envelope_bytes`].
    Envelope,
    /// [`Limits::max_fault_bytes`].
    Fault,
    /// [`Limits::max_via_bytes`].
    Via,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ContentType => "content type length",
            Self::Envelope => "envelope size",
            Self::Fault => "fault length",
            Self::Via => "via length",
        })
    }
}
