//! Fuzz target: `cargo +nightly fuzz run probe -- -max_len=1048576` from `crates/soap`. The
//! corpus in `corpus/probe` is replayed under the same budget by `tests/amplification.rs`.
//!
//! What the gateway reads of an unauthenticated net.tcp sender's first message, binary and
//! text, with the gateway's limits: the probe's memory may not grow with its input beyond a
//! small constant (it keeps a few bounded header values, never a tree).
#![no_main]

use ferry_nbfx::limits::RECORD_BYTES_PER_INPUT_BYTE;
use ferry_nbfx::{Limits, SessionDictionary};
use ferry_soap::Probe;
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// What a probe may hold at once (the same budget as `tests/amplification.rs`): a token, the
/// namespace declarations in force (each at most the input's own bytes), the walk's stack,
/// the record being read (a list's items are read whole: `RECORD_BYTES_PER_INPUT_BYTE`), and
/// the three header texts it keeps (`Action`, `MessageID`, `To`: each at most
/// `MAX_HEADER_TEXT`, in a string that may have doubled).
fn budget(input: usize) -> usize {
    (4 + RECORD_BYTES_PER_INPUT_BYTE) * input
        + 256 * 1024
        + 3 * 2 * ferry_soap::probe::MAX_HEADER_TEXT
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_document_bytes: 16 << 20,
        ..Limits::default()
    };
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let mut session = SessionDictionary::new(&limits);
    if let Ok(table) = session.read_table(data) {
        let _ = Probe::binary(&data[table..], Some(&session), limits);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Probe::text(text, limits);
    }
    let peak = HEAP.peak_usage().saturating_sub(before);
    assert!(
        peak <= budget(data.len()),
        "{peak} heap bytes for {} input bytes",
        data.len()
    );
});
