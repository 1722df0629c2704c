//! Decodes MC-NBFX documents to XML text and reports the time per pass; the Rust side of
//! `interop/bench/compare.py`.
//!
//! `cargo run --release -p ferry-nbfx --example decode -- DOCS.json PASSES`, where DOCS.json is a
//! list of `{"hex": document, "session": [strings for ids 1, 3, 5, …]}`. Prints one JSON object:
//! best and median seconds per pass for "xml" (records straight to XML text), "tree-xml" (decode
//! to a tree, then print) and "reader" (visit every record).

use std::time::Instant;

use ferry_nbfx::{Document, Limits, Reader, SessionDictionary, binary_to_xml, varint};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, passes) = match args.as_slice() {
        [_, path, passes] => (path, passes.parse::<usize>()?),
        _ => return Err("usage: decode DOCS.json PASSES".into()),
    };
    let docs: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut corpus = Vec::new();
    for d in &docs {
        let hex = d["hex"].as_str().ok_or("hex")?;
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()?;
        // Rebuild the session dictionary from its strings through a string table.
        let strings: Vec<&str> = d["session"]
            .as_array()
            .ok_or("session")?
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        let mut table = Vec::new();
        let body: usize = strings
            .iter()
            .map(|s| s.len() + varint::encoded_len(s.len() as u32))
            .sum();
        varint::encode(body as u32, &mut table);
        for s in &strings {
            varint::encode(s.len() as u32, &mut table);
            table.extend_from_slice(s.as_bytes());
        }
        let mut session = SessionDictionary::new(&Limits::unlimited());
        session.read_table(&table)?;
        corpus.push((bytes, session));
    }
    let bytes: usize = corpus.iter().map(|(b, _)| b.len()).sum();
    let time = |f: &dyn Fn() -> usize| {
        let mut samples = Vec::new();
        for pass in 0..passes + 3 {
            #[allow(clippy::disallowed_methods)] // a benchmark measures wall time
            let start = Instant::now();
            std::hint::black_box(f());
            if pass >= 3 {
                samples.push(start.elapsed().as_secs_f64());
            }
        }
        samples.sort_by(f64::total_cmp);
        (samples[0], samples[samples.len() / 2])
    };
    let xml = time(&|| {
        corpus
            .iter()
            .map(|(b, s)| {
                binary_to_xml(b, Some(s), Limits::unlimited())
                    .map(|x| x.len())
                    .unwrap_or(0)
            })
            .sum()
    });
    let tree = time(&|| {
        corpus
            .iter()
            .map(|(b, s)| {
                Document::decode_with(b, Some(s), Limits::unlimited())
                    .map(|d| d.to_xml().len())
                    .unwrap_or(0)
            })
            .sum()
    });
    let reader = time(&|| {
        corpus
            .iter()
            .map(|(b, s)| {
                Reader::with_session(b, s)
                    .limits(Limits::unlimited())
                    .filter(Result::is_ok)
                    .count()
            })
            .sum()
    });
    println!(
        "{}",
        serde_json::json!({"docs": corpus.len(), "bytes": bytes, "xml": {"best": xml.0, "median": xml.1}, "tree-xml": {"best": tree.0, "median": tree.1}, "reader": {"best": reader.0, "median": reader.1}})
    );
    Ok(())
}
