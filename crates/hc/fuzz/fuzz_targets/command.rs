//! Fuzz target: `cargo +nightly fuzz run command -- -max_len=65536` from `crates/hc`. The
//! corpus in `corpus/command` is replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! A listener's control-channel message (JSON, at most 64 KiB): never a panic, memory linear
//! in the message, and what decodes encodes to something that decodes again.
#![no_main]

use ferry_fuzz_oracle::within_budget;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    within_budget(data.len(), 16 * data.len() + 64 * 1024, || {
        ferry_hc::fuzzing::command(text);
    });
});
