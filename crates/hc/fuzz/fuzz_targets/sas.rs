//! Fuzz target: `cargo +nightly fuzz run sas` from `crates/hc`. The corpus in `corpus/sas` is
//! replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! A SAS token as a sender hands it over (header, query or SOAP header), checked against a
//! rule the way every front end checks it: never a panic, and memory linear in the token.
#![no_main]

use ferry_fuzz_oracle::within_budget;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    within_budget(data.len(), 8 * data.len() + 64 * 1024, || {
        ferry_hc::fuzzing::sas(text);
    });
});
