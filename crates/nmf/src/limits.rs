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
/// Default largest number of chunks in one UnsizedEnvelope: 2^20.
///
/// The envelope size limit counts only chunk payload, so without this a peer could send
/// 1-byte chunks (two bytes on the wire each, up to six with overlong size fields) and make
/// the reader do per-chunk work millions of times per envelope. WCF writes a streamed message
/// in chunks of its connection buffer (kilobytes), so a real writer stays far below this: at
/// the 64 KiB default envelope size it cannot be reached at all, and at 16 MiB it still allows
/// chunks averaging 16 bytes. Breaking it is answered like an oversized envelope
/// (MaxMessageSizeExceededFault).
pub const DEFAULT_MAX_UNSIZED_CHUNKS: usize = 1 << 20;

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
    /// See [`DEFAULT_MAX_UNSIZED_CHUNKS`].
    pub max_unsized_chunks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
            max_via_bytes: DEFAULT_MAX_VIA_BYTES,
            max_content_type_bytes: DEFAULT_MAX_CONTENT_TYPE_BYTES,
            max_fault_bytes: DEFAULT_MAX_FAULT_BYTES,
            max_unsized_chunks: DEFAULT_MAX_UNSIZED_CHUNKS,
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
            max_unsized_chunks: usize::MAX,
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
    /// [`Limits::max_unsized_chunks`].
    UnsizedChunks,
    /// [`Limits::max_via_bytes`].
    Via,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ContentType => "content type length",
            Self::Envelope => "envelope size",
            Self::Fault => "fault length",
            Self::UnsizedChunks => "unsized envelope chunk count",
            Self::Via => "via length",
        })
    }
}
