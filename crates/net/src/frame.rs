//! RFC 6455 §5 framing for both roles: frame headers, masking, close payloads, and the ways
//! a peer's frames can be wrong.
//!
//! Pure functions over byte slices, no I/O: [`crate::stream`] drives them. A client masks
//! every frame it sends (§5.3) and must reject masked frames from the server; a server must
//! reject unmasked frames from a client (§5.1).
//!
//! ```text
//!   0                   1                   2                   3
//!  |F|R|R|R| opcode|M| len (7) | extended len (0, 2 or 8) | mask key (0 or 4) | payload ...
//! ```

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER: usize = 14;

/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close code 1000, "normal closure" (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;

/// Close code 1005: the Close frame carried no code. Reported, never sent (§7.4.1).
pub const CLOSE_NO_STATUS: u16 = 1005;

/// The FIN bit of the first header byte.
const FIN: u8 = 0x80;
/// RSV1, RSV2 and RSV3: reserved for extensions, and we negotiate none (§5.2).
const RSV: u8 = 0x70;
/// The MASK bit of the second header byte.
const MASK: u8 = 0x80;

/// Frame opcodes, RFC 6455 §5.2 (in byte-value order). 0x3–0x7 and 0xB–0xF are reserved and
/// rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: the next fragment of a message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: connection close (§5.5.1).
    Close,
    /// 0x9: ping (§5.5.2).
    Ping,
    /// 0xA: pong (§5.5.3).
    Pong,
}

impl Opcode {
    /// The opcode for the low nibble `b`.
    ///
    /// # Errors
    /// [`FrameError::ReservedOpcode`] for the reserved values.
    pub fn from_u8(b: u8) -> Result<Self, FrameError> {
        Ok(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(FrameError::ReservedOpcode(other)),
        })
    }

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes and never fragmented (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A frame header, RFC 6455 §5.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key, on frames a client sends.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

/// Which end of the WebSocket we are: it decides who masks (RFC 6455 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We opened the connection: our frames are masked, the server's must not be.
    Client,
    /// We accepted the connection: the client's frames must be masked, ours are not.
    Server,
}

impl FrameHeader {
    /// Decodes a header a server sent from the start of `buf`: `Ok(None)` if `buf` holds
    /// only part of it, else the header and its length in bytes.
    ///
    /// Checks what can be checked per frame: reserved bits and opcodes, no mask, the 64-bit
    /// length's top bit clear, and control frames short and final.
    ///
    /// # Errors
    /// A [`FrameError`] naming the broken rule.
    pub fn decode_server(buf: &[u8]) -> Result<Option<(Self, usize)>, FrameError> {
        Self::decode(buf, Role::Client)
    }

    /// Decodes a header the peer of `role` sent: as [`Self::decode_server`] for
    /// [`Role::Client`]; for [`Role::Server`] the frame must be masked and the header's
    /// [`Self::mask`] carries the key.
    ///
    /// # Errors
    /// A [`FrameError`] naming the broken rule.
    pub fn decode(buf: &[u8], role: Role) -> Result<Option<(Self, usize)>, FrameError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        if b0 & RSV != 0 {
            return Err(FrameError::ReservedBits(b0 & RSV));
        }
        let fin = b0 & FIN != 0;
        let opcode = Opcode::from_u8(b0 & 0x0F)?;
        let masked = b1 & MASK != 0;
        match role {
            Role::Client if masked => return Err(FrameError::MaskedFrame),
            Role::Server if !masked => return Err(FrameError::UnmaskedFrame),
            _ => {}
        }
        let (len, header_len) = match b1 & 0x7F {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
                _ => return Ok(None),
            },
            127 => match rest.first_chunk::<8>() {
                Some(bytes) => (u64::from_be_bytes(*bytes), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        // §5.2: "the most significant bit MUST be 0".
        if len >> 63 != 0 {
            return Err(FrameError::LengthOverflow);
        }
        if opcode.is_control() {
            if len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(FrameError::ControlTooLong(len));
            }
            if !fin {
                return Err(FrameError::FragmentedControl(opcode));
            }
        }
        let (mask, header_len) = if masked {
            match buf[header_len..].first_chunk::<4>() {
                Some(key) => (Some(*key), header_len + 4),
                None => return Ok(None),
            }
        } else {
            (None, header_len)
        };
        let header = Self {
            fin,
            opcode,
            mask,
            len,
        };
        Ok(Some((header, header_len)))
    }

    /// Appends the header to `out`, with the shortest length encoding (§5.2 requires it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut buf = [0; MAX_HEADER];
        let n = self.write(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }

    /// Writes the header to the start of `out`, as [`Self::encode`] does, and returns its
    /// length: for a caller that places it in a buffer of its own.
    pub fn write(&self, out: &mut [u8; MAX_HEADER]) -> usize {
        out[0] = if self.fin { FIN } else { 0 } | self.opcode.to_u8();
        let mask_bit = if self.mask.is_some() { MASK } else { 0 };
        let mut n = match self.len {
            0..=125 => {
                out[1] = mask_bit | self.len as u8;
                2
            }
            126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
                4
            }
            _ => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&self.len.to_be_bytes());
                10
            }
        };
        if let Some(mask) = self.mask {
            out[n..n + 4].copy_from_slice(&mask);
            n += 4;
        }
        n
    }
}

/// Appends one frame carrying `payload` to `out`: masked with `mask` (a client's, §5.3),
/// or not (a server's).
pub fn encode_frame(
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(MAX_HEADER + payload.len());
    FrameHeader {
        fin,
        opcode,
        mask,
        len: payload.len() as u64,
    }
    .encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(mask, &mut out[start..]);
    }
}

/// Appends one whole masked frame (a client's, §5.3) carrying `payload` to `out`.
pub fn encode_client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    encode_frame(true, opcode, Some(mask), payload, out);
}

/// Appends one whole unmasked frame (a server's) carrying `payload` to `out`.
pub fn encode_server_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    encode_frame(true, opcode, None, payload, out);
}

/// The mask key as seen from payload byte `offset` on: unmasking a frame in pieces applies
/// `apply_mask(rotate_mask(key, done), piece)` to each piece.
pub fn rotate_mask(mask: [u8; 4], offset: u64) -> [u8; 4] {
    let r = (offset % 4) as usize;
    [
        mask[r],
        mask[(r + 1) % 4],
        mask[(r + 2) % 4],
        mask[(r + 3) % 4],
    ]
}

/// XORs `data` with `mask` (RFC 6455 §5.3), `data[0]` being the payload's first byte.
/// Masking and unmasking are the same operation.
pub fn apply_mask(mask: [u8; 4], data: &mut [u8]) {
    // Eight bytes at a time: the compiler turns this into vector XORs, which matters for
    // bulk transfers (every byte a client sends goes through here).
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, hence of 4: the mask lines up from its first byte.
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *b ^= m;
    }
}

/// Appends a Close payload (§5.5.1): the code, then the reason cut on a character boundary
/// so the whole payload fits a control frame.
pub fn encode_close_payload(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..cut]);
}

/// Decodes a Close payload (§5.5.1): `(1005, "")` when empty.
///
/// # Errors
/// A one-byte payload, a code that may not be sent (§7.4), or a reason that is not UTF-8.
pub fn decode_close_payload(payload: &[u8]) -> Result<(u16, &str), FrameError> {
    match payload {
        [] => Ok((CLOSE_NO_STATUS, "")),
        [_] => Err(FrameError::ClosePayloadTruncated),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_is_sendable(code) {
                return Err(FrameError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok((code, reason))
        }
    }
}

/// Whether a peer may put `code` in a Close frame: the codes defined in RFC 6455 §7.4.1 and
/// the IANA registry (1000–1003, 1007–1014), and the ranges for libraries and applications
/// (3000–4999, §7.4.2). 1004, 1005, 1006 and 1015 are reserved and never sent.
pub fn close_code_is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The peer broke the WebSocket protocol (RFC 6455) or a limit of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// RSV1–3 set, but no extension was negotiated (§5.2).
    #[error("reserved bits {0:#04x} set")]
    ReservedBits(u8),
    /// A reserved opcode (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A server frame was masked (§5.1).
    #[error("masked frame from the server")]
    MaskedFrame,
    /// A client frame was not masked (§5.1).
    #[error("unmasked frame from the client")]
    UnmaskedFrame,
    /// A 64-bit length with its top bit set (§5.2).
    #[error("frame length overflows")]
    LengthOverflow,
    /// A control frame with more than 125 payload bytes (§5.5).
    #[error("control frame of {0} bytes")]
    ControlTooLong(u64),
    /// A control frame without FIN (§5.5).
    #[error("fragmented {0:?} frame")]
    FragmentedControl(Opcode),
    /// A continuation frame with no message to continue (§5.4).
    #[error("continuation frame outside a message")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was unfinished (§5.4).
    #[error("{0:?} frame inside a fragmented message")]
    ExpectedContinuation(Opcode),
    /// A message larger than the configured limit.
    #[error("message larger than {limit} bytes")]
    MessageTooBig {
        /// The limit.
        limit: u64,
    },
    /// A Close payload of one byte (§5.5.1).
    #[error("close frame with a one-byte payload")]
    ClosePayloadTruncated,
    /// A Close code that may not be sent (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or close reason that is not UTF-8 (§8.1).
    #[error("text that is not utf-8")]
    InvalidUtf8,
}

impl FrameError {
    /// The close code we answer this error with (RFC 6455 §7.4.1): 1007 for bad UTF-8, 1009
    /// for a message over the limit, 1002 for everything else.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 => 1007,
            Self::MessageTooBig { .. } => 1009,
            _ => 1002,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fin: bool, opcode: Opcode, len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            opcode,
            mask: None,
            len,
        }
    }

    #[test]
    fn lengths_use_the_shortest_encoding_and_round_trip() {
        for (len, size) in [(0, 2), (125, 2), (126, 4), (0xFFFF, 4), (0x1_0000, 10)] {
            let h = header(true, Opcode::Binary, len);
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out.len(), size, "len {len}");
            assert_eq!(FrameHeader::decode_server(&out), Ok(Some((h, size))));
            // Every shorter prefix asks for more bytes.
            for cut in 0..size {
                assert_eq!(FrameHeader::decode_server(&out[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn bad_headers_are_rejected() {
        let cases: [(&[u8], FrameError); 7] = [
            (&[0xC2, 0x00], FrameError::ReservedBits(0x40)),
            (&[0x83, 0x00], FrameError::ReservedOpcode(3)),
            (&[0x8B, 0x00], FrameError::ReservedOpcode(0xB)),
            (&[0x82, 0x80, 1, 2, 3, 4], FrameError::MaskedFrame),
            (&[0x89, 126, 0, 126], FrameError::ControlTooLong(126)),
            (&[0x09, 0x00], FrameError::FragmentedControl(Opcode::Ping)),
            (
                &[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
                FrameError::LengthOverflow,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(FrameHeader::decode_server(bytes), Err(want), "{bytes:02x?}");
        }
    }

    #[test]
    fn masking_matches_the_rfc_example_and_inverts() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut out = Vec::new();
        encode_client_frame(Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d], &mut out);
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 13) as u8).collect();
        let mut masked = data.clone();
        apply_mask([1, 2, 3, 4], &mut masked);
        for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
            assert_eq!(*m, d ^ [1, 2, 3, 4][i % 4]);
        }
        apply_mask([1, 2, 3, 4], &mut masked);
        assert_eq!(masked, data);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(decode_close_payload(&[]), Ok((1005, "")));
        assert_eq!(
            decode_close_payload(&[0x03, 0xE8, b'o', b'k']),
            Ok((1000, "ok"))
        );
        assert_eq!(
            decode_close_payload(&[0x03]),
            Err(FrameError::ClosePayloadTruncated)
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(
                decode_close_payload(&code.to_be_bytes()),
                Err(FrameError::InvalidCloseCode(code)),
            );
        }
        assert_eq!(
            decode_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(FrameError::InvalidUtf8)
        );
        // A long reason is cut on a character boundary to fit 125 bytes.
        let mut out = Vec::new();
        encode_close_payload(1000, &"é".repeat(100), &mut out);
        assert_eq!(out.len(), 124);
        assert!(decode_close_payload(&out).is_ok());
    }

    #[test]
    fn server_role_wants_masked_frames_and_unmasks_in_pieces() {
        let key = [0x11, 0x22, 0x33, 0x44];
        let payload: Vec<u8> = (0..11).collect();
        let mut frame = Vec::new();
        encode_client_frame(Opcode::Binary, &payload, key, &mut frame);
        let (header, len) = FrameHeader::decode(&frame, Role::Server).unwrap().unwrap();
        assert_eq!((header.mask, len), (Some(key), 6));
        // Unmask in pieces of 3, 5 and 3 bytes, as reads deliver them.
        let mut body = frame[len..].to_vec();
        let mut done = 0;
        for piece in [3usize, 5, 3] {
            apply_mask(rotate_mask(key, done as u64), &mut body[done..done + piece]);
            done += piece;
        }
        assert_eq!(body, payload);
        // A header cut inside the mask key needs more bytes; unmasked frames are refused.
        assert_eq!(FrameHeader::decode(&frame[..4], Role::Server), Ok(None));
        assert_eq!(
            FrameHeader::decode(&[0x82, 0x00], Role::Server),
            Err(FrameError::UnmaskedFrame)
        );
        assert_eq!(
            FrameHeader::decode(&frame, Role::Client),
            Err(FrameError::MaskedFrame)
        );
    }
}
