//! Shared helpers: the copied recordings and a minimal MC-NMF splitter (enough for the
//! recordings; the real framing lives in `ferry-nmf`).

#![allow(dead_code, unreachable_pub)]

pub mod generate;

use std::path::PathBuf;

/// `interop/recordings` in the repository.
pub fn recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/recordings")
}

/// The net.tcp sessions and their directions.
pub const SESSIONS: [&str; 4] = ["tcp-session", "tcp-oneway", "tcp-fault", "pynettcp-mex"];

fn mb31(b: &[u8], pos: &mut usize) -> usize {
    let mut v = 0usize;
    for i in 0..5 {
        let byte = b[*pos];
        *pos += 1;
        v |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

/// The SizedEnvelope payloads of one direction's stream, with their offsets.
pub fn envelopes(stream: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let at = pos;
        let t = stream[pos];
        pos += 1;
        match t {
            0x00 => pos += 2,
            0x01 | 0x03 => pos += 1,
            0x02 | 0x04 | 0x08 | 0x09 => {
                let n = mb31(stream, &mut pos);
                pos += n;
            }
            0x06 => {
                let n = mb31(stream, &mut pos);
                out.push((at, stream[pos..pos + n].to_vec()));
                pos += n;
            }
            0x07 | 0x0A | 0x0B | 0x0C => {}
            other => panic!("unexpected NMF record 0x{other:02x} at {at}"),
        }
    }
    out
}
