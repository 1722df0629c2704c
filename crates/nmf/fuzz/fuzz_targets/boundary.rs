//! Fuzz target: `cargo +nightly fuzz run boundary -- -max_len=1048576` from `crates/nmf`. The
//! corpus in `corpus/boundary` is replayed under the same budget by the workspace's
//! `tests/tests/fuzz_corpora.rs`.
//!
//! The scanner that finds where a net.tcp session ends in the bytes a relay passes on: fed the
//! input whole and in pieces (the first byte sets their size) it must say the same, and it
//! allocates nothing.
#![no_main]

use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    ferry_nmf::fuzzing::boundary(data, usize::from(chunk));
    let peak = HEAP.peak_usage().saturating_sub(before);
    // The scanner keeps a few bytes of state and allocates nothing.
    assert!(peak <= 1024, "{peak} heap bytes for {} input bytes", data.len());
});
