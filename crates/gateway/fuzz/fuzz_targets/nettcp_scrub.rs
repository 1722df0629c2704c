//! Fuzz target: `cargo +nightly fuzz run nettcp_scrub -- -max_len=1048576` from
//! `crates/gateway`. The corpus in `corpus/nettcp_scrub` is replayed by
//! `tests/tests/fuzz_corpora.rs`.
//!
//! What takes a sender's credentials out of its net.tcp session, message by message (the
//! preamble, then each message's head read in the session's encoding and edited): fed the
//! input whole and in pieces (the first byte sets their size) it must say the same, and its
//! memory stays linear in the input (a message head is held at most up to the window, the
//! session dictionary within its limit, and no edit makes a message longer).
#![no_main]

use ferry_fuzz_oracle::within_budget;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    // Two runs, each holding the input at most twice over (pending bytes, output), plus
    // a head's probe (one record at a time, a list's items read whole) and the dictionary.
    let per_byte = 8 + ferry_nbfx::limits::RECORD_BYTES_PER_INPUT_BYTE;
    within_budget(data.len(), per_byte * data.len() + 512 * 1024, || {
        ferry_gateway::fuzzing::nettcp_scrub(data, usize::from(chunk));
    });
});
