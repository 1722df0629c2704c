//! The crate's scanners driven on bytes in memory, for its fuzz targets (`crates/nmf/fuzz`)
//! and the tests that replay their corpora. Not an API: nothing here is stable.

use crate::boundary::{Boundary, NotFraming};

/// What the boundary scanner says of `data` fed whole and fed in `chunk`-byte
/// pieces: the absolute offset at which the session's End record finishes, or that there is
/// none yet, or that the bytes are not framing.
///
/// # Panics
/// When the two disagree: the scanner must not depend on how reads split the stream.
pub fn boundary(data: &[u8], chunk: usize) {
    let whole = outcome(std::iter::once(data));
    let split = outcome(data.chunks(chunk.max(1)));
    assert_eq!(whole, split, "fed whole and fed in {chunk}-byte pieces");
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    End(usize),
    Open { between_records: bool },
    NotFraming,
}

fn outcome<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut scanner = Boundary::default();
    let mut offset = 0;
    for piece in pieces {
        match scanner.feed(piece) {
            Ok(Some(n)) => return Outcome::End(offset + n),
            Ok(None) => offset += piece.len(),
            Err(NotFraming) => return Outcome::NotFraming,
        }
    }
    Outcome::Open {
        between_records: scanner.between_records(),
    }
}
