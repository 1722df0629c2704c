//! Size limits applied while reading, each with a named default.
//!
//! The defaults are the quotas of a stock .NET binding (`MaxReceivedMessageSize`,
//! `XmlDictionaryReaderQuotas`, `MaxSessionSize`), so that anything a default WCF peer accepts we
//! accept too, and nothing a hostile peer sends can make us allocate much more than the input.

/// Default largest binary document (one envelope, string table included): 64 KiB, the .NET
/// `MaxReceivedMessageSize` default.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Default largest single string (text record, name, namespace, comment), in bytes: 64 KiB, the
/// document default. (.NET's `MaxStringContentLength` of 8192 counts characters of content only;
/// a byte limit equal to the document limit accepts everything a default .NET peer accepts.)
pub const DEFAULT_MAX_STRING_BYTES: usize = 64 * 1024;
/// Default deepest element nesting: the .NET `MaxDepth` default, 32.
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Default largest array: items of an Array record, bytes of one Bytes text record, items of a
/// list. 64 KiB, four times the .NET `MaxArrayLength` default of 16384, so that the 16 KiB byte
/// arrays of a default binding fit whatever record split the writer chose.
pub const DEFAULT_MAX_ARRAY_LENGTH: usize = 64 * 1024;
/// Default largest MC-NBFSE session dictionary, in bytes of string table: 2048, the .NET
/// `MaxSessionSize` default (the writer stops adding strings there, so a reader with the same
/// quota never rejects a conforming writer).
pub const DEFAULT_MAX_SESSION_BYTES: usize = 2048;

/// The memory budget of a [`Document`](crate::Document) tree: at most this many bytes of heap
/// per byte of binary input, plus [`TREE_SLACK_BYTES`]. Every string a record refers to (a
/// dictionary entry, a declared namespace) is shared, never copied per use, so a tree grows
/// with the number of records and not with what they name; the constant is the node of the
/// shortest record (a three-byte element takes about 150 bytes with its share of its parent's
/// child list, and one carrying a namespace declaration about 700 for five bytes).
pub const TREE_BYTES_PER_INPUT_BYTE: usize = 256;
/// Fixed part of the tree budget ([`TREE_BYTES_PER_INPUT_BYTE`]): reader state and allocator
/// rounding.
pub const TREE_SLACK_BYTES: usize = 256 * 1024;

/// The most heap the [`Reader`](crate::Reader) holds for one record, per byte of it: a list
/// record's items are read into a list, one [`Text`](crate::Text) for an item as short as one
/// byte. The reader holds one record at a time, so a stream of records costs no more.
pub const RECORD_BYTES_PER_INPUT_BYTE: usize = size_of::<crate::Text<'static>>();

/// Limits applied by the [`Reader`](crate::Reader), the [`SessionDictionary`](crate::SessionDictionary)
/// and the [`Document`](crate::Document) builders.
///
/// Breaking one gives [`DecodeError::LimitExceeded`](crate::DecodeError::LimitExceeded) naming
/// the [`Limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest document in bytes; see [`DEFAULT_MAX_DOCUMENT_BYTES`].
    pub max_document_bytes: usize,
    /// Largest single string in bytes; see [`DEFAULT_MAX_STRING_BYTES`].
    pub max_string_bytes: usize,
    /// Deepest element nesting; see [`DEFAULT_MAX_DEPTH`].
    pub max_depth: usize,
    /// Largest array, Bytes record or list; see [`DEFAULT_MAX_ARRAY_LENGTH`].
    pub max_array_length: usize,
    /// Largest session dictionary in bytes; see [`DEFAULT_MAX_SESSION_BYTES`].
    pub max_session_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_array_length: DEFAULT_MAX_ARRAY_LENGTH,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
        }
    }
}

impl Limits {
    /// Limits large enough for any capture that fits in memory: for offline tools such as
    /// `ferry decode`, never for input from the network.
    pub fn unlimited() -> Self {
        Self {
            max_document_bytes: usize::MAX,
            max_string_bytes: usize::MAX,
            max_depth: 4096,
            max_array_length: usize::MAX,
            max_session_bytes: usize::MAX,
        }
    }
}

/// Which limit of [`Limits`] was broken.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_array_length`].
    ArrayLength,
    /// [`Limits::max_depth`].
    Depth,
    /// [`Limits::max_document_bytes`].
    DocumentBytes,
    /// [`Limits::max_session_bytes`].
    SessionBytes,
    /// [`Limits::max_string_bytes`].
    StringBytes,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ArrayLength => "array length",
            Self::Depth => "nesting depth",
            Self::DocumentBytes => "document size",
            Self::SessionBytes => "session dictionary size",
            Self::StringBytes => "string length",
        })
    }
}
