//! Fuzz target: `cargo +nightly fuzz run http_head -- -max_len=65536` from `crates/gateway`.
//! The corpus in `corpus/http_head` is replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! The first bytes of every connection on the HTTP ports: the request head (32 KiB limit),
//! its headers and target. Never a panic or a hang; memory linear in the input.
#![no_main]

use ferry_fuzz_oracle::{runtime, within_budget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    within_budget(data.len(), 8 * data.len() + 64 * 1024, || {
        rt.block_on(ferry_gateway::fuzzing::http_head(data));
    });
});
