//! Fuzz target: `cargo +nightly fuzz run relay_frames -- -max_len=1048576` from `crates/net`.
//! The corpus in `corpus/relay_frames` is replayed by `tests/tests/fuzz_corpora.rs`.
//!
//! A sender's bytes after its upgrade, relayed frame by frame to a listener that never
//! answers, with the gateway's settings (64 KiB buffer, 1 GiB messages): the relay ends (no
//! hang, no panic) and holds at most its buffer, whatever the frames claim.
#![no_main]

use ferry_net::fuzzing::{self, BUFFER};
use ferry_fuzz_oracle::{runtime, within_budget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    within_budget(data.len(), 2 * BUFFER + 64 * 1024, || rt.block_on(fuzzing::relay_frames(data)));
});
