//! The probe's memory budget, over the fuzz corpus (`fuzz/corpus/probe`) with the fuzz
//! target's limits and oracle (`fuzz/fuzz_targets/probe.rs`): what the gateway reads of an
//! unauthenticated sender holds a few bounded header values and its walk, never a tree.
//!
//! Peak heap use is measured with a counting global allocator, so this file holds one test.

use ferry_nbfx::limits::RECORD_BYTES_PER_INPUT_BYTE;
use ferry_nbfx::{Limits, SessionDictionary};
use ferry_soap::Probe;
use ferry_soap::probe::MAX_HEADER_TEXT;
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// The fuzz target's budget for an input of `input` bytes: a token, the namespace
/// declarations in force (each at most the input's own bytes), the walk's stack, the record
/// being read (a list's items are read whole: `RECORD_BYTES_PER_INPUT_BYTE`), and the three
/// header texts it keeps (`Action`, `MessageID`, `To`: each at most `MAX_HEADER_TEXT`, in a
/// string that may have doubled).
fn budget(input: usize) -> usize {
    (4 + RECORD_BYTES_PER_INPUT_BYTE) * input + 256 * 1024 + 3 * 2 * MAX_HEADER_TEXT
}

#[test]
fn the_probe_costs_memory_linear_in_its_input_over_the_corpus() {
    let limits = Limits {
        max_document_bytes: 16 << 20,
        ..Limits::default()
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/probe");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        let before = HEAP.current_usage();
        HEAP.reset_peak_usage();
        let mut session = SessionDictionary::new(&limits);
        if let Ok(table) = session.read_table(&data) {
            let _ = Probe::binary(&data[table..], Some(&session), limits);
        }
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = Probe::text(text, limits);
        }
        drop(session);
        let peak = HEAP.peak_usage().saturating_sub(before);
        assert!(
            peak <= budget(data.len()),
            "corpus input of {} bytes: peak {peak}",
            data.len()
        );
        n += 1;
    }
    assert!(n >= 100, "corpus has {n} files");
}
