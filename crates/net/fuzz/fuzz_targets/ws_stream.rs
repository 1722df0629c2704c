//! Fuzz target: `cargo +nightly fuzz run ws_stream -- -max_len=1048576` from `crates/net`.
//! The corpus in `corpus/ws_stream` is replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! The WebSocket codec the SDK and the net.tcp splice use, in the server role (masked frames
//! in): never a panic or a hang, and memory linear in the input (a message is held whole,
//! up to its limit).
#![no_main]

use ferry_net::fuzzing;
use ferry_fuzz_oracle::{runtime, within_budget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    within_budget(data.len(), 4 * data.len() + 256 * 1024, || rt.block_on(fuzzing::ws_stream(data)));
});
