//! `ferry codegen`: Rust types, a service trait and a client from a WSDL contract directory.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Args)]
pub(crate) struct CodegenArgs {
    /// Directory with the contract's .wsdl and .xsd files, e.g. wsdl/calculator (imports are
    /// resolved by namespace among them; nothing is downloaded).
    dir: PathBuf,
    /// Write the module to this file instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Only check that --out is up to date (exit status 1 if it is not).
    #[arg(long, requires = "out")]
    check: bool,
}

pub(crate) fn run(args: &CodegenArgs) -> anyhow::Result<()> {
    let code = ferry_codegen::generate_dir(&args.dir)
        .with_context(|| format!("cannot generate code from {}", args.dir.display()))?;
    match (&args.out, args.check) {
        (None, _) => print!("{code}"),
        (Some(out), true) => {
            let current = std::fs::read_to_string(out).unwrap_or_default();
            if current != code {
                bail!(
                    "{} is out of date: run `ferry codegen {} --out {}`",
                    out.display(),
                    args.dir.display(),
                    out.display()
                );
            }
        }
        (Some(out), false) => {
            std::fs::write(out, code).with_context(|| format!("cannot write {}", out.display()))?
        }
    }
    Ok(())
}
