//! Fuzz target: `cargo +nightly fuzz run proxy_header -- -max_len=8192` from `crates/gateway`.
//! The corpus in `corpus/proxy_header` is replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! The PROXY protocol header (v1 text, v2 binary) a trusted load balancer's connection starts
//! with: at most 107 bytes of text or 16 + 4096 of binary. Never a panic or a hang; memory
//! linear in the input.
#![no_main]

use ferry_fuzz_oracle::{runtime, within_budget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    within_budget(data.len(), 8 * data.len() + 64 * 1024, || {
        rt.block_on(ferry_gateway::fuzzing::proxy_header(data));
    });
});
