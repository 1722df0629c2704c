//! Running `rustfmt` on generated code, so that checked-in output is what `cargo fmt` keeps.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use crate::error::CodegenError;

/// Formats `code` with the `rustfmt` on `PATH` (edition and style edition 2024, the
/// workspace's settings), reading stdin and writing stdout.
///
/// # Errors
///
/// [`CodegenError::Rustfmt`] when it cannot be started or rejects the code.
pub fn rustfmt(code: &str) -> Result<String, CodegenError> {
    let mut child = Command::new("rustfmt")
        .args([
            "--edition",
            "2024",
            "--config",
            "style_edition=2024",
            "--emit",
            "stdout",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CodegenError::Rustfmt(format!(
                "cannot run rustfmt ({e}); install it with `rustup component add rustfmt`"
            ))
        })?;
    // Feed stdin from a thread: rustfmt may fill its stdout pipe before it reads all input.
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| CodegenError::Rustfmt("no stdin pipe".into()))?;
    let input = code.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| CodegenError::Rustfmt(e.to_string()))?;
    writer
        .join()
        .map_err(|_| CodegenError::Rustfmt("stdin writer panicked".into()))?
        .map_err(|e| CodegenError::Rustfmt(e.to_string()))?;
    if !out.status.success() {
        return Err(CodegenError::Rustfmt(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| CodegenError::Rustfmt(e.to_string()))
}
