//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/binary_envelope`) through the fuzz target's
//! code, and feeds arbitrary bytes and text to both decoders.

use ferry_nbfx::Limits;
use ferry_soap::{BinarySession, Envelope};
use proptest::prelude::*;

/// The body of `fuzz/fuzz_targets/binary_envelope.rs`.
fn target(data: &[u8]) {
    let mut codec = BinarySession::new(Limits::default());
    let _ = codec.decode(data);
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/binary_envelope");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        target(&data);
        for cut in 0..data.len().min(64) {
            target(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "corpus has {n} files");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        target(&data);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = Envelope::decode_text(&text);
        let _ = Envelope::decode_text(&format!("<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">{text}</s:Envelope>"));
    }
}
