//! Reading a contract set from disk: the only file I/O of the crate besides [`crate::format`].

use std::path::Path;

use crate::{
    error::CodegenError,
    limits::{Limit, Limits},
};

/// One input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Name used in errors (the file name).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// Reads every `.wsdl` and `.xsd` file of `dir` (not recursing), sorted by name so that the
/// output does not depend on directory order.
///
/// # Errors
///
/// [`CodegenError::Io`], [`CodegenError::NoFiles`], or a size limit.
pub fn load_dir(dir: &Path, limits: &Limits) -> Result<Vec<SourceFile>, CodegenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CodegenError::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("wsdl") || e.eq_ignore_ascii_case("xsd"));
        if wanted && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(CodegenError::NoFiles(dir.to_path_buf()));
    }
    if paths.len() > limits.max_files {
        return Err(CodegenError::LimitExceeded {
            file: dir.display().to_string(),
            limit: Limit::Files,
            max: limits.max_files,
        });
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let len = std::fs::metadata(&path).map_err(io(&path))?.len();
        if len > limits.max_file_bytes as u64 {
            return Err(CodegenError::LimitExceeded {
                file: name,
                limit: Limit::FileBytes,
                max: limits.max_file_bytes,
            });
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        // WCF publishes UTF-8 with an optional byte order mark.
        let text = String::from_utf8(bytes)
            .map_err(|e| CodegenError::Xml {
                file: name.clone(),
                offset: e.utf8_error().valid_up_to() as u64,
                message: "not UTF-8".into(),
            })?
            .trim_start_matches('\u{feff}')
            .to_owned();
        files.push(SourceFile { name, text });
    }
    Ok(files)
}
