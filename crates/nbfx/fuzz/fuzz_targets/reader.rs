//! Fuzz target: `cargo +nightly fuzz run reader -- -max_len=1048576` from `crates/nbfx`. The
//! seed corpus in `corpus/reader` is replayed as an ordinary test (`tests/fuzz_corpus.rs`).
//!
//! A session string table, then a document, decoded into a tree with the limits a
//! `ferry listen --wcf-to` host uses by default (16 MiB messages), under the amplification
//! oracle: the peak heap of the decode may not pass the tree budget for the input's size.
#![no_main]

use ferry_nbfx::limits::{TREE_BYTES_PER_INPUT_BYTE, TREE_SLACK_BYTES};
use ferry_nbfx::{Document, Limits, SessionDictionary};
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_document_bytes: 16 << 20,
        max_string_bytes: 16 << 20,
        max_array_length: 16 << 20,
        ..Limits::default()
    };
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let mut session = SessionDictionary::new(&limits);
    if let Ok(table) = session.read_table(data) {
        let tree = Document::decode_with(&data[table..], Some(&session), limits);
        let peak = HEAP.peak_usage().saturating_sub(before);
        let budget = TREE_BYTES_PER_INPUT_BYTE * data.len() + TREE_SLACK_BYTES;
        assert!(peak <= budget, "{peak} heap bytes for {} input bytes", data.len());
        drop(tree);
    }
});
