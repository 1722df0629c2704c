//! Fuzz target: `cargo +nightly fuzz run address` from `crates/hc`. The corpus in
//! `corpus/address` is replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! A request target as a client sends it (`/$hc/{path}?sb-hc-…`), its query alone, and the
//! helpers that take a token out of an address: never a panic, memory linear in the input,
//! and taking the token out twice changes nothing more.
#![no_main]

use ferry_fuzz_oracle::within_budget;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    within_budget(data.len(), 16 * data.len() + 64 * 1024, || {
        ferry_hc::fuzzing::address(text);
    });
});
