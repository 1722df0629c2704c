//! Embeds the MC-NBFS static dictionary (`data/nbfs-static-dictionary.tsv`) at build time.
//!
//! The TSV holds one `0xID<TAB>string` line per entry, ids even and dense from 0x00. We generate
//! the id → string table and a sorted string → id table for the writer's lookups.

use std::{env, fs, path::Path};

fn main() {
    let src = "data/nbfs-static-dictionary.tsv";
    println!("cargo::rerun-if-changed={src}");
    let tsv = fs::read_to_string(src).expect("the dictionary TSV ships with the crate");
    let mut entries: Vec<(u32, String)> = Vec::new();
    for (n, line) in tsv.lines().enumerate() {
        let (id, text) = line.split_once('\t').expect("every line is id<TAB>string");
        let id = u32::from_str_radix(id.trim_start_matches("0x"), 16).expect("hex id");
        assert_eq!(id as usize, n * 2, "ids are even and dense");
        entries.push((id, text.to_owned()));
    }
    let mut out = String::new();
    out.push_str(&format!(
        "/// The MC-NBFS static dictionary, indexed by `wire id / 2`.\npub(crate) static STATIC_STRINGS: [&str; {}] = [\n",
        entries.len()
    ));
    for (_, text) in &entries {
        out.push_str(&format!("    {text:?},\n"));
    }
    out.push_str("];\n");
    let mut sorted: Vec<&(u32, String)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    sorted.dedup_by(|a, b| a.1 == b.1);
    out.push_str(&format!(
        "/// The static dictionary sorted by string, for binary search: (string, wire id).\npub(crate) static STATIC_SORTED: [(&str, u32); {}] = [\n",
        sorted.len()
    ));
    for (id, text) in sorted {
        out.push_str(&format!("    ({text:?}, {id}),\n"));
    }
    out.push_str("];\n");
    let dest =
        Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("static_dictionary.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}
