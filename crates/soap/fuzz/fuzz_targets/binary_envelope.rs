//! Fuzz target: `cargo +nightly fuzz run binary_envelope` from `crates/soap`. The seed corpus in
//! `corpus/binary_envelope` is replayed as an ordinary test (`tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut codec = ferry_soap::BinarySession::new(ferry_nbfx::Limits::default());
    let _ = codec.decode(data);
});
