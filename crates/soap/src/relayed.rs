//! The NetTcpRelayBinding relayed-mode handshake's framing, sans I/O: what a relay binding
//! client sends before its net.tcp session (reconstructed from the client library's
//! behaviour; no public specification exists).
//!
//! ```text
//!  client ── record "connect" ── record "sb://ns/path" ── 1 byte: TLS flag ──►
//!         ── record: binary SOAP 1.2, Action RelayedConnect, RelayAccessToken header ──►
//!         ◄─ record: RelayedConnectReply, or a SOAP fault
//!  record = i32 little-endian length, then that many bytes
//! ```
//!
//! [`record_len`] reads a record's length prefix against a limit; [`encode_record`] writes one.
//! A relay reads each record's payload itself, as it arrives: the prefix alone never makes
//! it reserve memory.

/// The first record's text.
pub const CONNECT_WORD: &[u8] = b"connect";
/// Longest "connect" word record a relay reads.
pub const MAX_WORD: usize = 64;
/// Longest `sb://` URI record a relay reads.
pub const MAX_URI: usize = 2048;
/// Longest handshake message (and reply) a relay reads.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Bytes of a record's length prefix.
pub const PREFIX: usize = 4;

/// What the byte after the URI asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// 0x00: the rest in the clear.
    None,
    /// 0x01: a TLS handshake (the relay's certificate) before the message.
    Tls,
}

impl Security {
    /// The flag byte's meaning; `None` for any other value.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x00 => Some(Self::None),
            0x01 => Some(Self::Tls),
            _ => None,
        }
    }
}

/// A record the handshake may not carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The length prefix is negative.
    #[error("negative record length")]
    Negative,
    /// The length is over the limit for this record.
    #[error("record of {len} bytes over its {max}-byte limit")]
    TooLong {
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The payload length a record's prefix declares, if at most `max`.
///
/// # Errors
/// [`RecordError`] for a negative length or one over `max`.
pub fn record_len(prefix: [u8; PREFIX], max: usize) -> Result<usize, RecordError> {
    let len = usize::try_from(i32::from_le_bytes(prefix)).map_err(|_| RecordError::Negative)?;
    if len > max {
        return Err(RecordError::TooLong { len, max });
    }
    Ok(len)
}

/// Appends one record carrying `payload` to `out`.
///
/// # Panics
/// If `payload` is longer than `i32::MAX` bytes, which no record of the handshake may be.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = i32::try_from(payload.len()).expect("a handshake record under 2 GiB");
    out.reserve(PREFIX + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_lengths_are_checked() {
        let mut out = Vec::new();
        encode_record(CONNECT_WORD, &mut out);
        assert_eq!(out, b"\x07\x00\x00\x00connect");
        let prefix: [u8; PREFIX] = out[..PREFIX].try_into().unwrap();
        assert_eq!(record_len(prefix, MAX_WORD), Ok(7));
        assert_eq!(
            record_len(prefix, 6),
            Err(RecordError::TooLong { len: 7, max: 6 })
        );
        assert_eq!(
            record_len((-1i32).to_le_bytes(), MAX_URI),
            Err(RecordError::Negative)
        );
        assert!(record_len(i32::MAX.to_le_bytes(), MAX_MESSAGE).is_err());
    }

    #[test]
    fn the_security_flag_is_one_of_two_bytes() {
        assert_eq!(Security::from_byte(0), Some(Security::None));
        assert_eq!(Security::from_byte(1), Some(Security::Tls));
        assert_eq!(Security::from_byte(2), None);
    }
}
