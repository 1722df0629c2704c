#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

/// Largest value a MultiByteInt31 can hold.
pub const MAX: u32 = 0x7FFF_FFFF;

/// Result of decoding a MultiByteInt31 from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A value and the number of bytes it took.
    Value(u32, usize),
    /// The buffer ends before the last byte of the integer.
    Incomplete,
    /// More than 31 bits.
    Overflow,
}

/// Decodes a MultiByteInt31 from the front of `input`.
pub fn decode(input: &[u8]) -> Decoded {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some(&byte) = input.get(i) else {
            return Decoded::Incomplete;
        };
        if i == 4 && byte & 0xF8 != 0 {
            return Decoded::Overflow;
        }
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Decoded::Value(value, i + 1);
        }
    }
    // The fifth byte passed the 0xF8 check, so its continuation bit is clear and the loop
    // returned; this line only satisfies the type checker.
    Decoded::Overflow
}

/// Appends the minimal encoding of `value` (at most [`MAX`]; higher bits are dropped).
pub fn encode(value: u32, out: &mut Vec<u8>) {
    let mut v = value & MAX;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes [`encode`] writes for `value`.
pub fn encoded_len(value: u32) -> usize {
    match value & MAX {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use test_case::test_case;

    use super::*;

    #[test_case(0, &hex!("00"); "zero")]
    #[test_case(0x11, &hex!("11"); "small")]
    #[test_case(0x7F, &hex!("7F"); "max one byte")]
    #[test_case(0x80, &hex!("80 01"); "min two bytes")]
    #[test_case(0xFF, &hex!("FF 01"); "ff")]
    #[test_case(0x3FFF, &hex!("FF 7F"); "max two bytes")]
    #[test_case(0x4000, &hex!("80 80 01"); "min three bytes")]
    #[test_case(0x1F_FFFF, &hex!("FF FF 7F"); "max three bytes")]
    #[test_case(0x20_0000, &hex!("80 80 80 01"); "min four bytes")]
    #[test_case(0x0FFF_FFFF, &hex!("FF FF FF 7F"); "max four bytes")]
    #[test_case(0x1000_0000, &hex!("80 80 80 80 01"); "min five bytes")]
    #[test_case(MAX, &hex!("FF FF FF FF 07"); "max")]
    fn round_trip(value: u32, bytes: &[u8]) {
        let mut out = Vec::new();
        encode(value, &mut out);
        assert_eq!(out, bytes);
        assert_eq!(encoded_len(value), bytes.len());
        assert_eq!(decode(bytes), Decoded::Value(value, bytes.len()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Decoded::Incomplete);
    }

    #[test_case(&hex!("80 00"), 0, 2; "overlong zero")]
    #[test_case(&hex!("FF 80 80 80 00"), 0x7F, 5; "overlong five bytes")]
    fn non_canonical_is_accepted_like_wcf(bytes: &[u8], value: u32, len: usize) {
        assert_eq!(decode(bytes), Decoded::Value(value, len));
    }

    #[test_case(&hex!("FF FF FF FF 08"); "32 bits")]
    #[test_case(&hex!("FF FF FF FF 0F"); "35 bits")]
    #[test_case(&hex!("80 80 80 80 80 01"); "six bytes")]
    fn overflow(bytes: &[u8]) {
        assert_eq!(decode(bytes), Decoded::Overflow);
    }

    #[test]
    fn empty_is_incomplete() {
        assert_eq!(decode(&[]), Decoded::Incomplete);
    }

    proptest::proptest! {
        #[test]
        fn any_value_round_trips(v in 0..=MAX) {
            let mut out = Vec::new();
            encode(v, &mut out);
            proptest::prop_assert_eq!(decode(&out), Decoded::Value(v, out.len()));
        }
    }
}
