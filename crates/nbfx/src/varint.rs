//! MultiByteInt31, the 7-bit variable-length integer of MC-NBFX 2.1.2 (also MC-NMF's record
//! size): `ferry_mb31`, which MC-NMF shares.

pub use ferry_mb31::{Decoded, MAX, decode, encode, encoded_len};
