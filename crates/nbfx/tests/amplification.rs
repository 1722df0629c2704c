//! Memory budgets: building a tree costs memory linear in the input, whatever the input refers
//! to. A namespace declared once, a session string announced once and a static dictionary
//! string are shared by every node that names them, never copied per use.
//!
//! Peak heap use is measured with a counting global allocator, so this file holds a single
//! test: the cases run one after another, never beside another test of the same process.

use ferry_nbfx::limits::{TREE_BYTES_PER_INPUT_BYTE, TREE_SLACK_BYTES};
use ferry_nbfx::{Document, Limits, SessionDictionary, XmlOptions, varint};
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// Peak heap growth while `f` runs, in bytes.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let out = f();
    let peak = HEAP.peak_usage().saturating_sub(before);
    (out, peak as f64)
}

fn inline_string(out: &mut Vec<u8>, s: &str) {
    varint::encode(s.len() as u32, out);
    out.extend_from_slice(s.as_bytes());
}

/// `<x xmlns="…60 KB…">` then `children` empty `<y/>` children: the message that took a
/// gateway from 8 MB to 600 MB when every child copied the namespace.
fn namespace_flood(children: usize) -> Vec<u8> {
    let ns = "n".repeat(60_000);
    let mut doc = vec![0x40]; // ShortElement
    inline_string(&mut doc, "x");
    doc.push(0x08); // ShortXmlnsAttribute
    inline_string(&mut doc, &ns);
    for _ in 0..children {
        doc.push(0x40);
        inline_string(&mut doc, "y");
        doc.push(0x01);
    }
    doc.push(0x01);
    doc
}

/// A session string table of one 2,000-byte string, then a document whose `children` elements
/// each name it (element name and default namespace) by its two-byte id.
fn dictionary_flood(children: usize) -> (Vec<u8>, Vec<u8>) {
    let long = "d".repeat(2000);
    let mut entry = Vec::new();
    inline_string(&mut entry, &long);
    let mut table = Vec::new();
    varint::encode(entry.len() as u32, &mut table);
    table.extend_from_slice(&entry);
    let mut doc = vec![0x40];
    inline_string(&mut doc, "x");
    for _ in 0..children {
        doc.extend_from_slice(&[0x42, 0x01]); // ShortDictionaryElement, session id 1
        doc.extend_from_slice(&[0x0A, 0x01]); // ShortDictionaryXmlnsAttribute, session id 1
        doc.push(0x01);
    }
    doc.push(0x01);
    (table, doc)
}

fn check(case: &str, input: usize, peak: f64) {
    let budget = (TREE_BYTES_PER_INPUT_BYTE * input + TREE_SLACK_BYTES) as f64;
    eprintln!(
        "{case}: {input} bytes in, peak {:.1} MB ({:.1} bytes per input byte)",
        peak / 1e6,
        peak / input as f64
    );
    assert!(
        peak <= budget,
        "{case}: peak heap {peak} bytes for {input} bytes of input (budget {budget})"
    );
}

#[test]
fn trees_cost_memory_linear_in_their_input() {
    // The binary form, as the gateway's net.tcp port used to read it.
    let doc = namespace_flood(10_000);
    let (tree, peak) = peak_of(|| Document::decode_with(&doc, None, Limits::unlimited()));
    let tree = tree.expect("decodes");
    assert_eq!(tree.root().expect("root").elements().count(), 10_000);
    check("namespace flood, binary", doc.len(), peak);
    drop(tree);

    // Session strings referred to by id, as element names and as namespaces.
    let (table, doc) = dictionary_flood(20_000);
    let mut session = SessionDictionary::new(&Limits::unlimited());
    let mut payload = table;
    payload.extend_from_slice(&doc);
    let (tree, peak) = peak_of(|| {
        let start = session.read_table(&payload)?;
        Document::decode_with(&payload[start..], Some(&session), Limits::unlimited())
    });
    let tree = tree.expect("decodes");
    assert_eq!(tree.root().expect("root").elements().count(), 20_000);
    check("session string flood", payload.len(), peak);
    drop(tree);

    // The text form: one declaration, many elements resolving to it.
    let text = format!(
        "<x xmlns=\"{}\">{}</x>",
        "n".repeat(60_000),
        "<y/>".repeat(10_000)
    );
    let options = XmlOptions {
        limits: Limits::unlimited(),
        ..XmlOptions::default()
    };
    let (tree, peak) = peak_of(|| Document::parse_xml(&text, &options));
    let tree = tree.expect("parses");
    assert_eq!(tree.root().expect("root").elements().count(), 10_000);
    check("namespace flood, text", text.len(), peak);
    drop(tree);

    // The fuzz corpus, through the fuzz target's decode with its production limits and its
    // oracle (`fuzz/fuzz_targets/reader.rs`).
    let limits = Limits {
        max_document_bytes: 16 << 20,
        max_string_bytes: 16 << 20,
        max_array_length: 16 << 20,
        ..Limits::default()
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader");
    let mut worst: f64 = 0.0;
    for entry in std::fs::read_dir(dir).expect("corpus") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        let (_, peak) = peak_of(|| {
            let mut session = SessionDictionary::new(&limits);
            let table = session.read_table(&data).ok()?;
            Document::decode_with(&data[table..], Some(&session), limits).ok()
        });
        let budget = (TREE_BYTES_PER_INPUT_BYTE * data.len() + TREE_SLACK_BYTES) as f64;
        assert!(
            peak <= budget,
            "corpus input of {} bytes: peak {peak}",
            data.len()
        );
        if data.len() >= 1024 {
            worst = worst.max(peak / data.len() as f64);
        }
    }
    eprintln!("fuzz corpus: worst {worst:.1} heap bytes per input byte (inputs of 1 KiB or more)");
}
