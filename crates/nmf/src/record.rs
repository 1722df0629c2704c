//! MC-NMF records (2.2.3): types, the streaming nom decoder and the encoder.
//!
//! [`Record::decode`] returns `Ok(None)` while the buffer holds only part of a record ("need more
//! bytes" is not an error) and checks every size field against [`Limits`] as soon as it is
//! read, before waiting for the bytes it announces. [`UnsizedEnvelopeReader`] reads an
//! UnsizedEnvelope's chunks across calls, for callers (the session) that must not re-parse them.

use std::borrow::Cow;

use nom::{IResult, Parser, bytes::streaming::take, error::ErrorKind};

use crate::{
    error::DecodeError,
    limits::{Limit, Limits},
    record_type::RecordType,
    varint,
};

/// MC-NMF 2.2.3.3 Mode values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0x01 Singleton-Unsized: one message per preamble in UnsizedEnvelope chunks (streamed
    /// transfer).
    SingletonUnsized,
    /// 0x02 Duplex: SizedEnvelopes both ways (NetTcpBinding's default).
    Duplex,
    /// 0x03 Simplex: SizedEnvelopes one way, no PreambleEnd/Ack.
    Simplex,
    /// 0x04 Singleton-Sized: one message, raw octets to the end of the stream.
    SingletonSized,
    /// Any other byte (answered with the UnsupportedMode fault).
    Unknown(u8),
}

impl Mode {
    /// From the wire byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x01 => Self::SingletonUnsized,
            0x02 => Self::Duplex,
            0x03 => Self::Simplex,
            0x04 => Self::SingletonSized,
            other => Self::Unknown(other),
        }
    }

    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            Self::SingletonUnsized => 0x01,
            Self::Duplex => 0x02,
            Self::Simplex => 0x03,
            Self::SingletonSized => 0x04,
            Self::Unknown(b) => b,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingletonUnsized => "singleton-unsized",
            Self::Duplex => "duplex",
            Self::Simplex => "simplex",
            Self::SingletonSized => "singleton-sized",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// MC-NMF 2.2.3.4 Known Encoding values (0x09–0x0C are CoreWCF's compression extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KnownEncoding {
    /// 0x00 SOAP 1.1, UTF-8 text.
    Soap11Utf8,
    /// 0x01 SOAP 1.1, UTF-16 text.
    Soap11Utf16,
    /// 0x02 SOAP 1.1, UTF-16 big-endian text.
    Soap11UnicodeFffe,
    /// 0x03 SOAP 1.2, UTF-8 text.
    Soap12Utf8,
    /// 0x04 SOAP 1.2, UTF-16 text.
    Soap12Utf16,
    /// 0x05 SOAP 1.2, UTF-16 big-endian text.
    Soap12UnicodeFffe,
    /// 0x06 MTOM.
    Mtom,
    /// 0x07 binary SOAP 1.2, static dictionary only (`application/soap+msbin1`).
    Binary,
    /// 0x08 binary SOAP 1.2 with the MC-NBFSE session dictionary
    /// (`application/soap+msbinsession1`).
    BinarySession,
    /// 0x09 `application/soap+msbin1+gzip`.
    BinaryGzip,
    /// 0x0A `application/soap+msbinsession1+gzip`.
    BinarySessionGzip,
    /// 0x0B `application/soap+msbin1+deflate`.
    BinaryDeflate,
    /// 0x0C `application/soap+msbinsession1+deflate`.
    BinarySessionDeflate,
    /// Any other byte.
    Unknown(u8),
}

impl KnownEncoding {
    /// From the wire byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Soap11Utf8,
            0x01 => Self::Soap11Utf16,
            0x02 => Self::Soap11UnicodeFffe,
            0x03 => Self::Soap12Utf8,
            0x04 => Self::Soap12Utf16,
            0x05 => Self::Soap12UnicodeFffe,
            0x06 => Self::Mtom,
            0x07 => Self::Binary,
            0x08 => Self::BinarySession,
            0x09 => Self::BinaryGzip,
            0x0A => Self::BinarySessionGzip,
            0x0B => Self::BinaryDeflate,
            0x0C => Self::BinarySessionDeflate,
            other => Self::Unknown(other),
        }
    }

    /// The wire byte.
    pub const fn byte(self) -> u8 {
        match self {
            Self::Soap11Utf8 => 0x00,
            Self::Soap11Utf16 => 0x01,
            Self::Soap11UnicodeFffe => 0x02,
            Self::Soap12Utf8 => 0x03,
            Self::Soap12Utf16 => 0x04,
            Self::Soap12UnicodeFffe => 0x05,
            Self::Mtom => 0x06,
            Self::Binary => 0x07,
            Self::BinarySession => 0x08,
            Self::BinaryGzip => 0x09,
            Self::BinarySessionGzip => 0x0A,
            Self::BinaryDeflate => 0x0B,
            Self::BinarySessionDeflate => 0x0C,
            Self::Unknown(b) => b,
        }
    }

    /// The equivalent content type (what an ExtensibleEncoding record would carry).
    pub fn content_type(self) -> Option<&'static str> {
        Some(match self {
            Self::Soap11Utf8 => "text/xml; charset=utf-8",
            Self::Soap11Utf16 => "text/xml; charset=utf16",
            Self::Soap11UnicodeFffe => "text/xml; charset=unicodeFFFE",
            Self::Soap12Utf8 => "application/soap+xml; charset=utf-8",
            Self::Soap12Utf16 => "application/soap+xml; charset=utf16",
            Self::Soap12UnicodeFffe => "application/soap+xml; charset=unicodeFFFE",
            Self::Mtom => "multipart/related",
            Self::Binary => "application/soap+msbin1",
            Self::BinarySession => "application/soap+msbinsession1",
            Self::BinaryGzip => "application/soap+msbin1+gzip",
            Self::BinarySessionGzip => "application/soap+msbinsession1+gzip",
            Self::BinaryDeflate => "application/soap+msbin1+deflate",
            Self::BinarySessionDeflate => "application/soap+msbinsession1+deflate",
            Self::Unknown(_) => return None,
        })
    }
}

/// One MC-NMF record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// 0x00 Version Record (2.2.3.1): major and minor version, 1.0 today.
    Version {
        /// Major version (must be 1).
        major: u8,
        /// Minor version (not checked, as in WCF).
        minor: u8,
    },
    /// 0x01 Mode Record (2.2.3.2).
    Mode(Mode),
    /// 0x02 Via Record (2.2.3.3): the URI the client addresses.
    Via(Cow<'a, str>),
    /// 0x03 Known Encoding Record (2.2.3.4).
    KnownEncoding(KnownEncoding),
    /// 0x04 Extensible Encoding Record (2.2.3.5): a content type.
    ExtensibleEncoding(Cow<'a, str>),
    /// 0x05 Unsized Envelope Record (2.2.3.6): chunks up to the zero-size terminator.
    UnsizedEnvelope(Vec<Cow<'a, [u8]>>),
    /// 0x06 Sized Envelope Record (2.2.3.7): one encoded message.
    SizedEnvelope(Cow<'a, [u8]>),
    /// 0x07 End Record (2.2.3.8).
    End,
    /// 0x08 Fault Record (2.2.3.9): a fault URI.
    Fault(Cow<'a, str>),
    /// 0x09 Upgrade Request Record (2.2.3.10): a protocol name.
    UpgradeRequest(Cow<'a, str>),
    /// 0x0A Upgrade Response Record (2.2.3.11).
    UpgradeResponse,
    /// 0x0B Preamble Ack Record (2.2.3.12).
    PreambleAck,
    /// 0x0C Preamble End Record (2.2.3.13).
    PreambleEnd,
}

impl Record<'_> {
    /// The record's type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::Version { .. } => RecordType::Version,
            Self::Mode(_) => RecordType::Mode,
            Self::Via(_) => RecordType::Via,
            Self::KnownEncoding(_) => RecordType::KnownEncoding,
            Self::ExtensibleEncoding(_) => RecordType::ExtensibleEncoding,
            Self::UnsizedEnvelope(_) => RecordType::UnsizedEnvelope,
            Self::SizedEnvelope(_) => RecordType::SizedEnvelope,
            Self::End => RecordType::End,
            Self::Fault(_) => RecordType::Fault,
            Self::UpgradeRequest(_) => RecordType::UpgradeRequest,
            Self::UpgradeResponse => RecordType::UpgradeResponse,
            Self::PreambleAck => RecordType::PreambleAck,
            Self::PreambleEnd => RecordType::PreambleEnd,
        }
    }

    /// Copies borrowed data.
    pub fn into_owned(self) -> Record<'static> {
        let s = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Self::Version { major, minor } => Record::Version { major, minor },
            Self::Mode(m) => Record::Mode(m),
            Self::Via(v) => Record::Via(s(v)),
            Self::KnownEncoding(e) => Record::KnownEncoding(e),
            Self::ExtensibleEncoding(e) => Record::ExtensibleEncoding(s(e)),
            Self::UnsizedEnvelope(chunks) => Record::UnsizedEnvelope(
                chunks
                    .into_iter()
                    .map(|c| Cow::Owned(c.into_owned()))
                    .collect(),
            ),
            Self::SizedEnvelope(p) => Record::SizedEnvelope(Cow::Owned(p.into_owned())),
            Self::End => Record::End,
            Self::Fault(f) => Record::Fault(s(f)),
            Self::UpgradeRequest(u) => Record::UpgradeRequest(s(u)),
            Self::UpgradeResponse => Record::UpgradeResponse,
            Self::PreambleAck => Record::PreambleAck,
            Self::PreambleEnd => Record::PreambleEnd,
        }
    }

    /// The bytes of `records`, one after the other (see [`encode`](Self::encode)).
    pub fn encode_all(records: &[Self]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            record.encode(&mut out);
        }
        out
    }

    /// Appends the record's bytes (always the minimal size encoding). An UnsizedEnvelope is
    /// written as its non-empty chunks followed by the zero terminator.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let sized = |out: &mut Vec<u8>, t: u8, b: &[u8]| {
            out.push(t);
            varint::encode(b.len().min(varint::MAX as usize) as u32, out);
            out.extend_from_slice(b);
        };
        match self {
            Self::Version { major, minor } => out.extend_from_slice(&[0x00, *major, *minor]),
            Self::Mode(m) => out.extend_from_slice(&[0x01, m.byte()]),
            Self::Via(v) => sized(out, 0x02, v.as_bytes()),
            Self::KnownEncoding(e) => out.extend_from_slice(&[0x03, e.byte()]),
            Self::ExtensibleEncoding(e) => sized(out, 0x04, e.as_bytes()),
            Self::UnsizedEnvelope(chunks) => {
                out.push(0x05);
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    varint::encode(c.len().min(varint::MAX as usize) as u32, out);
                    out.extend_from_slice(c);
                }
                out.push(0x00);
            }
            Self::SizedEnvelope(p) => sized(out, 0x06, p),
            Self::End => out.push(0x07),
            Self::Fault(f) => sized(out, 0x08, f.as_bytes()),
            Self::UpgradeRequest(u) => sized(out, 0x09, u.as_bytes()),
            Self::UpgradeResponse => out.push(0x0A),
            Self::PreambleAck => out.push(0x0B),
            Self::PreambleEnd => out.push(0x0C),
        }
    }
}

impl<'a> Record<'a> {
    /// Decodes one record from the front of `input`: `Ok(Some((record, length)))`, or `Ok(None)`
    /// when `input` ends inside the record.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for an unknown type byte, an oversized size field, a size over a limit or
    /// a string that is not UTF-8. Offsets are relative to `input`.
    pub fn decode(input: &'a [u8], limits: &Limits) -> Result<Option<(Self, usize)>, DecodeError> {
        match record(input, limits) {
            Ok((rest, r)) => Ok(Some((r, input.len() - rest.len()))),
            Err(nom::Err::Incomplete(_)) => Ok(None),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e.into_decode_error(input.len())),
        }
    }
}

/// The chunks of one UnsizedEnvelope (MC-NMF 2.2.3.6), read incrementally for a caller that
/// receives the record in pieces (the session).
///
/// [`Record::decode`] parses a record from its type byte on every call, so a caller that
/// retries it after each read of a chunked envelope re-parses every chunk seen so far: quadratic
/// work in the number of chunks. This reader keeps the payload and its position between calls,
/// so each byte is examined once however the input is split, and it holds the payload
/// concatenated (never a list of chunks). Start it after the 0x05 type byte.
#[derive(Clone, Default)]
pub struct UnsizedEnvelopeReader {
    /// The payload of the chunks read so far (of the current chunk, the bytes that arrived).
    payload: Vec<u8>,
    /// Chunk size fields read so far (the terminator not included).
    chunks: usize,
    /// Bytes of the current chunk still to come; 0 between chunks.
    remaining: usize,
}

/// How far an [`UnsizedEnvelopeReader::read`] call got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkProgress {
    /// The terminator has not arrived. This many bytes were consumed; call again with the
    /// bytes after them plus more input.
    NeedMore(usize),
    /// The zero-size terminator was read; this many bytes were consumed, up to and including
    /// it. Take the payload with [`UnsizedEnvelopeReader::into_payload`].
    Done(usize),
}

impl UnsizedEnvelopeReader {
    /// A reader positioned after the type byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads chunks from the front of `input`, continuing where the previous call stopped. A
    /// chunk's bytes are consumed as they arrive; a size field split across calls is left
    /// unconsumed (at most four bytes) and read again whole.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Varint`] for a size above 2^31 - 1, and [`DecodeError::LimitExceeded`]
    /// when a chunk would take the payload over [`Limits::max_envelope_bytes`] or the chunk
    /// count over [`Limits::max_unsized_chunks`] (both detected from the size field, before
    /// the chunk's bytes arrive). Offsets are relative to `input`.
    pub fn read(&mut self, input: &[u8], limits: &Limits) -> Result<ChunkProgress, DecodeError> {
        let mut used = 0;
        loop {
            // `used <= input.len()` throughout: it only grows by bytes taken from `input`.
            if self.remaining > 0 {
                let n = self.remaining.min(input.len() - used);
                self.payload.extend_from_slice(&input[used..used + n]);
                self.remaining -= n;
                used += n;
                if self.remaining > 0 {
                    return Ok(ChunkProgress::NeedMore(used));
                }
            }
            let (len, n) = match varint::decode(&input[used..]) {
                varint::Decoded::Value(0, n) => return Ok(ChunkProgress::Done(used + n)),
                varint::Decoded::Value(len, n) => (len as usize, n),
                varint::Decoded::Incomplete => return Ok(ChunkProgress::NeedMore(used)),
                varint::Decoded::Overflow => return Err(DecodeError::Varint { offset: used }),
            };
            if self.chunks >= limits.max_unsized_chunks {
                return Err(DecodeError::LimitExceeded {
                    offset: used,
                    limit: Limit::UnsizedChunks,
                    max: limits.max_unsized_chunks,
                });
            }
            // Between chunks `payload` holds every byte announced so far.
            if len > limits.max_envelope_bytes.saturating_sub(self.payload.len()) {
                return Err(DecodeError::LimitExceeded {
                    offset: used,
                    limit: Limit::Envelope,
                    max: limits.max_envelope_bytes,
                });
            }
            self.chunks += 1;
            self.remaining = len;
            used += n;
        }
    }

    /// The concatenated payload (complete once [`read`](Self::read) returned
    /// [`ChunkProgress::Done`]).
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

impl std::fmt::Debug for UnsizedEnvelopeReader {
    // Sizes only: the payload may be megabytes, and payloads are not logged above trace.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsizedEnvelopeReader")
            .field("payload_len", &self.payload.len())
            .field("chunks", &self.chunks)
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Private nom error; converted to [`DecodeError`] at the API boundary.
#[derive(Debug)]
struct PErr<'a> {
    input: &'a [u8],
    kind: PKind,
}

#[derive(Debug)]
enum PKind {
    Nom,
    Unknown(u8),
    Varint,
    Utf8(&'static str),
    Limit(Limit, usize),
}

impl<'a> nom::error::ParseError<&'a [u8]> for PErr<'a> {
    fn from_error_kind(input: &'a [u8], _kind: ErrorKind) -> Self {
        Self {
            input,
            kind: PKind::Nom,
        }
    }

    fn append(_input: &'a [u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl PErr<'_> {
    fn into_decode_error(self, total: usize) -> DecodeError {
        let offset = total.saturating_sub(self.input.len());
        match self.kind {
            PKind::Unknown(record) => DecodeError::UnknownRecord { offset, record },
            PKind::Varint | PKind::Nom => DecodeError::Varint { offset },
            PKind::Utf8(field) => DecodeError::Utf8 { offset, field },
            PKind::Limit(limit, max) => DecodeError::LimitExceeded { offset, limit, max },
        }
    }
}

type PResult<'a, T> = IResult<&'a [u8], T, PErr<'a>>;

fn fail<'a, T>(input: &'a [u8], kind: PKind) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr { input, kind }))
}

/// A record size (streaming: `Incomplete` until its last byte is there).
fn size(i: &[u8]) -> PResult<'_, usize> {
    match varint::decode(i) {
        varint::Decoded::Value(v, n) => Ok((&i[n..], v as usize)),
        varint::Decoded::Incomplete => Err(nom::Err::Incomplete(nom::Needed::Unknown)),
        varint::Decoded::Overflow => fail(i, PKind::Varint),
    }
}

fn byte(i: &[u8]) -> PResult<'_, u8> {
    let (rest, b) = take(1usize).parse(i)?;
    Ok((rest, b[0]))
}

/// `size + bytes`, limited to `max` before the bytes are awaited.
fn sized<'a>(record: &'a [u8], i: &'a [u8], limit: Limit, max: usize) -> PResult<'a, &'a [u8]> {
    let (rest, len) = size(i)?;
    if len > max {
        return fail(record, PKind::Limit(limit, max));
    }
    take(len).parse(rest)
}

fn utf8<'a>(record: &'a [u8], b: &'a [u8], field: &'static str) -> PResult<'a, Cow<'a, str>> {
    match std::str::from_utf8(b) {
        Ok(s) => Ok((record, Cow::Borrowed(s))),
        Err(_) => fail(record, PKind::Utf8(field)),
    }
}

fn string<'a>(
    record: &'a [u8],
    i: &'a [u8],
    limit: Limit,
    max: usize,
    field: &'static str,
) -> PResult<'a, Cow<'a, str>> {
    let (rest, b) = sized(record, i, limit, max)?;
    let (_, s) = utf8(record, b, field)?;
    Ok((rest, s))
}

fn record<'a>(i: &'a [u8], limits: &Limits) -> PResult<'a, Record<'a>> {
    let (body, t) = byte(i)?;
    match t {
        0x00 => {
            let (rest, v) = take(2usize).parse(body)?;
            Ok((
                rest,
                Record::Version {
                    major: v[0],
                    minor: v[1],
                },
            ))
        }
        0x01 => {
            let (rest, m) = byte(body)?;
            Ok((rest, Record::Mode(Mode::from_byte(m))))
        }
        0x02 => {
            let (rest, s) = string(i, body, Limit::Via, limits.max_via_bytes, "via")?;
            Ok((rest, Record::Via(s)))
        }
        0x03 => {
            let (rest, e) = byte(body)?;
            Ok((rest, Record::KnownEncoding(KnownEncoding::from_byte(e))))
        }
        0x04 => {
            let (rest, s) = string(
                i,
                body,
                Limit::ContentType,
                limits.max_content_type_bytes,
                "content type",
            )?;
            Ok((rest, Record::ExtensibleEncoding(s)))
        }
        0x05 => unsized_envelope(i, body, limits),
        0x06 => {
            let (rest, p) = sized(i, body, Limit::Envelope, limits.max_envelope_bytes)?;
            Ok((rest, Record::SizedEnvelope(Cow::Borrowed(p))))
        }
        0x07 => Ok((body, Record::End)),
        0x08 => {
            let (rest, s) = string(i, body, Limit::Fault, limits.max_fault_bytes, "fault")?;
            Ok((rest, Record::Fault(s)))
        }
        0x09 => {
            let (rest, s) = string(
                i,
                body,
                Limit::ContentType,
                limits.max_content_type_bytes,
                "upgrade",
            )?;
            Ok((rest, Record::UpgradeRequest(s)))
        }
        0x0A => Ok((body, Record::UpgradeResponse)),
        0x0B => Ok((body, Record::PreambleAck)),
        0x0C => Ok((body, Record::PreambleEnd)),
        other => fail(i, PKind::Unknown(other)),
    }
}

/// The chunks of an UnsizedEnvelope, up to and including the zero terminator. The running total
/// and the chunk count are checked against the limits as each chunk size is read. Callers that
/// receive the record in pieces use [`UnsizedEnvelopeReader`] instead.
fn unsized_envelope<'a>(
    record: &'a [u8],
    mut i: &'a [u8],
    limits: &Limits,
) -> PResult<'a, Record<'a>> {
    let mut chunks = Vec::new();
    let mut total = 0usize;
    loop {
        let (rest, len) = size(i)?;
        if len == 0 {
            return Ok((rest, Record::UnsizedEnvelope(chunks)));
        }
        if chunks.len() >= limits.max_unsized_chunks {
            let max = limits.max_unsized_chunks;
            return fail(record, PKind::Limit(Limit::UnsizedChunks, max));
        }
        total = total.saturating_add(len);
        if total > limits.max_envelope_bytes {
            let max = limits.max_envelope_bytes;
            return fail(record, PKind::Limit(Limit::Envelope, max));
        }
        let (rest, chunk) = take(len).parse(rest)?;
        chunks.push(Cow::Borrowed(chunk));
        i = rest;
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use pretty_assertions::assert_eq;
    use test_case::test_case;

    use super::*;

    fn dec(b: &[u8]) -> Result<Option<(Record<'_>, usize)>, DecodeError> {
        Record::decode(b, &Limits::default())
    }

    fn s(text: &str) -> Cow<'_, str> {
        Cow::Borrowed(text)
    }

    #[test_case(&hex!("00 01 00"), Record::Version { major: 1, minor: 0 }; "version")]
    #[test_case(&hex!("01 02"), Record::Mode(Mode::Duplex); "mode duplex")]
    #[test_case(&hex!("01 07"), Record::Mode(Mode::Unknown(7)); "mode unknown")]
    #[test_case(&hex!("02 05 61 3A 2F 2F 62"), Record::Via(s("a://b")); "via")]
    #[test_case(&hex!("03 08"), Record::KnownEncoding(KnownEncoding::BinarySession); "known encoding")]
    #[test_case(&hex!("04 03 61 2F 62"), Record::ExtensibleEncoding(s("a/b")); "extensible encoding")]
    #[test_case(&hex!("05 02 AA BB 01 CC 00"), Record::UnsizedEnvelope(vec![Cow::Borrowed(&hex!("AA BB")[..]), Cow::Borrowed(&hex!("CC")[..])]); "unsized")]
    #[test_case(&hex!("06 03 01 02 03"), Record::SizedEnvelope(Cow::Borrowed(&hex!("01 02 03")[..])); "sized")]
    #[test_case(&hex!("06 00"), Record::SizedEnvelope(Cow::Borrowed(&[][..])); "sized empty")]
    #[test_case(&hex!("07"), Record::End; "end")]
    #[test_case(&hex!("08 03 75 3A 78"), Record::Fault(s("u:x")); "fault")]
    #[test_case(&hex!("09 13 61 70 70 6C 69 63 61 74 69 6F 6E 2F 73 73 6C 2D 74 6C 73"), Record::UpgradeRequest(s("application/ssl-tls")); "upgrade request")]
    #[test_case(&hex!("0A"), Record::UpgradeResponse; "upgrade response")]
    #[test_case(&hex!("0B"), Record::PreambleAck; "preamble ack")]
    #[test_case(&hex!("0C"), Record::PreambleEnd; "preamble end")]
    fn valid(bytes: &[u8], expected: Record<'_>) {
        assert_eq!(dec(bytes), Ok(Some((expected.clone(), bytes.len()))));
        let mut out = Vec::new();
        expected.encode(&mut out);
        assert_eq!(out, bytes);
        // Truncated by one byte: need more, never an error.
        assert_eq!(dec(&bytes[..bytes.len() - 1]), Ok(None));
    }

    #[test_case(&hex!("0D"); "0x0d")]
    #[test_case(&hex!("FF"); "0xff")]
    fn unknown_type(bytes: &[u8]) {
        assert_eq!(
            dec(bytes),
            Err(DecodeError::UnknownRecord {
                offset: 0,
                record: bytes[0]
            })
        );
    }

    #[test]
    fn non_canonical_size_is_accepted_like_wcf() {
        assert_eq!(
            dec(&hex!("06 81 00 AA")),
            Ok(Some((
                Record::SizedEnvelope(Cow::Borrowed(&hex!("AA")[..])),
                4
            )))
        );
    }

    #[test]
    fn size_over_31_bits() {
        assert_eq!(
            dec(&hex!("06 FF FF FF FF 0F")),
            Err(DecodeError::Varint { offset: 1 })
        );
    }

    #[test_case(&hex!("06 81 80 04"), Limit::Envelope; "sized envelope")]
    #[test_case(&hex!("05 81 80 04"), Limit::Envelope; "unsized chunk")]
    #[test_case(&hex!("02 81 10"), Limit::Via; "via")]
    #[test_case(&hex!("04 81 02"), Limit::ContentType; "content type")]
    #[test_case(&hex!("09 81 02"), Limit::ContentType; "upgrade")]
    #[test_case(&hex!("08 81 02"), Limit::Fault; "fault")]
    fn oversized_is_rejected_before_the_payload_arrives(bytes: &[u8], limit: Limit) {
        assert!(
            matches!(dec(bytes), Err(DecodeError::LimitExceeded { offset: 0, limit: l, .. }) if l == limit)
        );
    }

    #[test]
    fn unsized_total_is_limited() {
        let limits = Limits {
            max_envelope_bytes: 3,
            ..Limits::default()
        };
        assert!(matches!(
            Record::decode(&hex!("05 02 AA BB 02 CC DD 00"), &limits),
            Err(DecodeError::LimitExceeded {
                limit: Limit::Envelope,
                ..
            })
        ));
    }

    #[test]
    fn unsized_chunk_count_is_limited() {
        let limits = Limits {
            max_unsized_chunks: 2,
            ..Limits::default()
        };
        assert!(matches!(
            Record::decode(&hex!("05 01 AA 01 BB 00"), &limits),
            Ok(Some(_))
        ));
        assert_eq!(
            Record::decode(&hex!("05 01 AA 01 BB 01"), &limits),
            Err(DecodeError::LimitExceeded {
                offset: 0,
                limit: Limit::UnsizedChunks,
                max: 2
            })
        );
    }

    /// Reads `wire` (after the type byte) in pieces of `step`, keeping unconsumed bytes, as the
    /// session does.
    fn read_in_pieces(wire: &[u8], step: usize, limits: &Limits) -> Result<Vec<u8>, DecodeError> {
        let mut reader = UnsizedEnvelopeReader::new();
        let mut pending = Vec::new();
        for piece in wire.chunks(step) {
            pending.extend_from_slice(piece);
            match reader.read(&pending, limits)? {
                ChunkProgress::NeedMore(n) => drop(pending.drain(..n)),
                ChunkProgress::Done(n) => {
                    assert_eq!(n, pending.len(), "terminator is the last byte");
                    return Ok(reader.into_payload());
                }
            }
        }
        panic!("no terminator in {wire:?}");
    }

    #[test_case(1; "one byte per read")]
    #[test_case(2; "two bytes per read")]
    #[test_case(100; "all at once")]
    fn reader_matches_decode(step: usize) {
        // Chunks of 2, 1 (overlong size field) and 130 bytes (two-byte size), then the end.
        let mut wire = hex!("02 AA BB 81 00 CC 82 01").to_vec();
        wire.extend_from_slice(&[0xDD; 130]);
        wire.push(0x00);
        let mut expected = hex!("AA BB CC").to_vec();
        expected.extend_from_slice(&[0xDD; 130]);
        assert_eq!(
            read_in_pieces(&wire, step, &Limits::default()),
            Ok(expected)
        );
    }

    #[test_case(&hex!("02 AA BB 02"), Limits { max_envelope_bytes: 3, ..Limits::default() }, DecodeError::LimitExceeded { offset: 3, limit: Limit::Envelope, max: 3 }; "total size")]
    #[test_case(&hex!("01 AA 01 BB 01"), Limits { max_unsized_chunks: 2, ..Limits::default() }, DecodeError::LimitExceeded { offset: 4, limit: Limit::UnsizedChunks, max: 2 }; "chunk count")]
    #[test_case(&hex!("01 AA FF FF FF FF 0F"), Limits::default(), DecodeError::Varint { offset: 2 }; "size over 31 bits")]
    fn reader_rejects(wire: &[u8], limits: Limits, expected: DecodeError) {
        let mut reader = UnsizedEnvelopeReader::new();
        assert_eq!(reader.read(wire, &limits), Err(expected));
    }

    #[test]
    fn bad_utf8_via() {
        assert_eq!(
            dec(&hex!("02 01 FF")),
            Err(DecodeError::Utf8 {
                offset: 0,
                field: "via"
            })
        );
    }
}
