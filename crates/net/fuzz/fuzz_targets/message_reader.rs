//! Fuzz target: `cargo +nightly fuzz run message_reader -- -max_len=1048576` from
//! `crates/net`. The corpus in `corpus/message_reader` is replayed by
//! `tests/tests/fuzz_corpora.rs`.
//!
//! A listener's messages as the gateway reads them for an HTTP response (a message at a
//! time, its payload as chunks): never a panic or a hang, and at most the buffer held,
//! whatever the frames claim.
#![no_main]

use ferry_net::fuzzing::{self, BUFFER};
use ferry_fuzz_oracle::{runtime, within_budget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    within_budget(data.len(), 2 * BUFFER + 64 * 1024, || rt.block_on(fuzzing::message_reader(data)));
});
