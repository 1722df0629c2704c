//! Fuzz target: `cargo +nightly fuzz run nettcp_boundary -- -max_len=1048576` from
//! `crates/gateway`. The corpus in `corpus/nettcp_boundary` is replayed by
//! `tests/tests/fuzz_corpora.rs`.
//!
//! The scanner that finds where a net.tcp session ends in the bytes it relays: fed the input
//! whole and in pieces (the first byte sets their size) it must say the same, and it
//! allocates nothing.
#![no_main]

use ferry_fuzz_oracle::within_budget;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    // The scanner keeps a few bytes of state and allocates nothing.
    within_budget(data.len(), 1024, || {
        ferry_gateway::fuzzing::nettcp_boundary(data, usize::from(chunk));
    });
});
