//! Size limits for contract files: a WSDL set is input from outside (a `?wsdl` download), so
//! every dimension is bounded.

/// Largest file read (WCF's metadata for a big service is a few hundred KiB).
pub const DEFAULT_MAX_FILE_BYTES: usize = 4 << 20;
/// Deepest element nesting in one file (XSD nests a handful of levels per type).
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Most elements in one file.
pub const DEFAULT_MAX_ELEMENTS: usize = 200_000;
/// Most files in one contract set.
pub const DEFAULT_MAX_FILES: usize = 256;
/// Most generated types (data contracts, messages, enums).
pub const DEFAULT_MAX_TYPES: usize = 4096;
/// Deepest chain of base types (`xs:extension`) followed.
pub const DEFAULT_MAX_INHERITANCE: usize = 32;

/// Which limit was exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_file_bytes`].
    FileBytes,
    /// [`Limits::max_depth`].
    Depth,
    /// [`Limits::max_elements`].
    Elements,
    /// [`Limits::max_files`].
    Files,
    /// [`Limits::max_types`].
    Types,
    /// [`Limits::max_inheritance`].
    Inheritance,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::FileBytes => "file size",
            Self::Depth => "nesting depth",
            Self::Elements => "element count",
            Self::Files => "file count",
            Self::Types => "type count",
            Self::Inheritance => "inheritance depth",
        })
    }
}

/// The limits in force; `Limits::default()` uses the `DEFAULT_*` constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file in bytes.
    pub max_file_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most elements per file.
    pub max_elements: usize,
    /// Most files per contract set.
    pub max_files: usize,
    /// Most generated types.
    pub max_types: usize,
    /// Longest base-type chain.
    pub max_inheritance: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_elements: DEFAULT_MAX_ELEMENTS,
            max_files: DEFAULT_MAX_FILES,
            max_types: DEFAULT_MAX_TYPES,
            max_inheritance: DEFAULT_MAX_INHERITANCE,
        }
    }
}
