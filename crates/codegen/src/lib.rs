#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod emit;
pub mod error;
pub mod format;
pub mod limits;
pub mod model;
mod naming;
mod resolve;
pub mod source;
mod xml;

use std::path::Path;

pub use emit::{EmitOptions, emit};
pub use error::CodegenError;
pub use limits::{Limit, Limits};
pub use model::Model;
pub use source::SourceFile;

/// Parses a contract set (WSDL and XSD files) into the model.
///
/// # Errors
///
/// [`CodegenError`]: malformed XML, a limit, an unresolved or unsupported construct.
pub fn parse(files: &[SourceFile], limits: &Limits) -> Result<Model, CodegenError> {
    if files.len() > limits.max_files {
        return Err(CodegenError::LimitExceeded {
            file: "contract".into(),
            limit: Limit::Files,
            max: limits.max_files,
        });
    }
    let trees = files
        .iter()
        .map(|f| xml::Tree::parse(&f.name, &f.text, limits))
        .collect::<Result<Vec<_>, _>>()?;
    resolve::resolve(&trees, limits)
}

/// Generates the formatted Rust module for the contract in `dir`: reads every `.wsdl` and `.xsd`
/// file there, resolves, emits, and runs `rustfmt` so the result is what `cargo fmt` keeps.
///
/// # Errors
///
/// [`CodegenError`], including [`CodegenError::Rustfmt`] when `rustfmt` is not installed.
pub fn generate_dir(dir: &Path) -> Result<String, CodegenError> {
    let limits = Limits::default();
    let files = source::load_dir(dir, &limits)?;
    let model = parse(&files, &limits)?;
    let code = emit(
        &model,
        &EmitOptions {
            source: source_label(dir),
        },
    )?;
    format::rustfmt(&code)
}

/// How the module doc names a contract directory: from its last `wsdl` component on
/// (`/src/ferry/wsdl/calculator` → `wsdl/calculator`), else its own name, so the output does
/// not depend on where the generator runs.
pub fn source_label(dir: &Path) -> String {
    let parts: Vec<String> = dir
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    match parts.iter().rposition(|p| p == "wsdl") {
        Some(i) => parts[i..].join("/"),
        None => parts.last().cloned().unwrap_or_default(),
    }
}
