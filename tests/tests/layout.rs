//! Every crate's README has a `## Layout` section, and it names exactly the modules the crate
//! declares at its root (`mod …;` lines of `src/lib.rs` or `src/main.rs`): a module added,
//! renamed or removed without its line in the README fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// The modules a crate root declares, `mod tests { … }` and other inline modules aside.
fn declared(root: &str) -> BTreeSet<String> {
    root.lines()
        .filter_map(|line| {
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.to_owned())
        })
        .collect()
}

/// The modules a README's `## Layout` list names: in each item (nested ones too), the
/// lower-case `` `names` `` before its first `": "`, each up to its first `::`; `None` without
/// the section.
fn listed(readme: &str) -> Option<BTreeSet<String>> {
    let start = readme.find("\n## Layout\n")?;
    let section = &readme[start + 1..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);
    let module = |name: &str| {
        let first = name.split("::").next().unwrap_or_default();
        let ok = first.starts_with(|c: char| c.is_ascii_lowercase())
            && first
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        ok.then(|| first.to_owned())
    };
    Some(
        section
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("- "))
            .flat_map(|item| {
                let lead = item.split(": ").next().unwrap_or_default();
                lead.split('`').skip(1).step_by(2).filter_map(module)
            })
            .collect(),
    )
}

#[test]
fn every_crate_readme_lists_its_modules() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates directory") {
        let dir = entry.expect("entry").path();
        let Ok(readme) = std::fs::read_to_string(dir.join("README.md")) else {
            continue;
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut modules = BTreeSet::new();
        for root in ["src/lib.rs", "src/main.rs"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(root)) {
                modules.extend(declared(&text));
            }
        }
        match listed(&readme) {
            None if modules.is_empty() => {}
            None => wrong.push(format!("{name}: no `## Layout` section for {modules:?}")),
            Some(named) if named != modules => {
                let missing: Vec<_> = modules.difference(&named).collect();
                let gone: Vec<_> = named.difference(&modules).collect();
                wrong.push(format!(
                    "{name}: README misses {missing:?}, names {gone:?} that do not exist"
                ));
            }
            Some(_) => {}
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} crate READMEs found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_parsers_read_what_they_should() {
    let root =
        "mod a;\npub mod b;\npub(crate) mod c;\n#[cfg(test)]\nmod tests {\n    mod inner;\n}\n";
    assert_eq!(declared(root), ["a", "b", "c"].map(String::from).into());
    let readme = "# x\n\n## Layout\n- `a`: one, `not_this`.\n- [`b`] (private), `c::d`: two.\n  - `nested`: `Type`, `f`\n- `Upper` and `e`\n\n## Example\n- `g`\n";
    let names = ["a", "b", "c", "nested", "e"].map(String::from).into();
    assert_eq!(listed(readme), Some(names));
    assert_eq!(listed("# x\n"), None);
}
