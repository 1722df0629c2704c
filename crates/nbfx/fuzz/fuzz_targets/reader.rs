//! Fuzz target: `cargo +nightly fuzz run reader` from `crates/nbfx`. The seed corpus in
//! `corpus/reader` is replayed as an ordinary test (`tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut session = ferry_nbfx::SessionDictionary::new(&ferry_nbfx::Limits::default());
    if let Ok(table) = session.read_table(data) {
        let _ = ferry_nbfx::Document::decode_with(&data[table..], Some(&session), ferry_nbfx::Limits::default());
    }
});
