//! The checked-in generated code is what `ferry codegen` makes from `wsdl/` today: regenerate
//! each module and fail on any difference (with the command that fixes it). Needs `rustfmt`.

use std::path::PathBuf;

/// (contract directory, generated module), relative to the repository root.
const GENERATED: &[(&str, &str)] = &[
    ("wsdl/calculator", "crates/wcf/src/generated/calculator.rs"),
    ("wsdl/relay", "crates/wcf/src/generated/relay.rs"),
    (
        "wsdl/fixtures/features",
        "crates/wcf/tests/generated/features.rs",
    ),
];

#[test]
fn generated_code_is_fresh() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut stale = Vec::new();
    for (dir, out) in GENERATED {
        let fresh = ferry_codegen::generate_dir(&root.join(dir))
            .unwrap_or_else(|e| panic!("cannot generate {dir}: {e}"));
        let current = std::fs::read_to_string(root.join(out)).unwrap_or_default();
        if fresh != current {
            let line = fresh
                .lines()
                .zip(current.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| fresh.lines().count().min(current.lines().count()))
                + 1;
            stale.push(format!(
                "{out} differs from what {dir} generates (first at line {line}); run\n  \
                 cargo run -p ferry-cli -- codegen {dir} -o {out}"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale (or scripts/codegen.sh regenerates all):\n{}",
        stale.join("\n")
    );
}
