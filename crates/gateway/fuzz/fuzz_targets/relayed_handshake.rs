//! Fuzz target: `cargo +nightly fuzz run relayed_handshake -- -max_len=131072` from
//! `crates/gateway`. The corpus in `corpus/relayed_handshake` is replayed by
//! `tests/tests/fuzz_corpora.rs`.
//!
//! What a NetTcpRelayBinding client sends the relayed port before it is authorised: the
//! "connect" record, the URI, the TLS flag and the RelayedConnect message. Never a panic or
//! a hang; memory linear in the input (a length prefix reserves nothing by itself).
#![no_main]

use ferry_fuzz_oracle::{runtime, within_budget};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    // The message's probe holds one record at a time (a list's items read whole).
    let per_byte = 8 + ferry_nbfx::limits::RECORD_BYTES_PER_INPUT_BYTE;
    within_budget(data.len(), per_byte * data.len() + 64 * 1024, || {
        rt.block_on(ferry_gateway::fuzzing::relayed_handshake(data));
    });
});
