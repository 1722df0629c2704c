//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/reader`) through the fuzz target's code, and
//! feeds arbitrary bytes to the decoders: nothing may panic or loop.

use ferry_nbfx::{Document, Limits, Reader, SessionDictionary};
use proptest::prelude::*;

/// The body of `fuzz/fuzz_targets/reader.rs`.
fn target(data: &[u8]) {
    let mut session = SessionDictionary::new(&Limits::default());
    if let Ok(table) = session.read_table(data) {
        let _ = Document::decode_with(&data[table..], Some(&session), Limits::default());
    }
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        target(&data);
        // Every prefix too: truncation anywhere must be a clean error.
        for cut in 0..data.len().min(64) {
            target(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 20, "corpus has {n} files");
}

/// Regression inputs found while writing the parser.
#[test]
fn regressions() {
    // Deep nesting stops at the depth limit.
    let deep: Vec<u8> = std::iter::repeat_n([0x40, 0x01, 0x61], 100)
        .flatten()
        .collect();
    assert!(Document::decode(&deep).is_err());
    // An attribute after text is misplaced, not a panic.
    assert!(
        Document::decode(&[0x40, 0x01, 0x61, 0x98, 0x00, 0x04, 0x01, 0x62, 0xA8, 0x01]).is_err()
    );
    // EndElement at top level.
    assert!(Document::decode(&[0x01]).is_err());
    // A huge array count is refused before any allocation.
    assert!(
        Document::decode(&[
            0x03, 0x40, 0x01, 0x61, 0x01, 0x8D, 0xFF, 0xFF, 0xFF, 0xFF, 0x07
        ])
        .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        target(&data);
        for r in Reader::new(&data) {
            if r.is_err() { break; }
        }
    }

    #[test]
    fn record_shaped_bytes_never_panic(data in proptest::collection::vec(prop_oneof![0x00u8..0x10, 0x40u8..0x78, 0x80u8..0xBE, any::<u8>()], 0..128)) {
        let _ = Document::decode(&data);
    }
}
