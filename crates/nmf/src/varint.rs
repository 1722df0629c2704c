//! The record size of MC-NMF 2.2.2: MultiByteInt31, the same 7-bit integer as MC-NBFX's,
//! from `ferry_mb31`.

pub use ferry_mb31::{Decoded, MAX, decode, encode, encoded_len};
