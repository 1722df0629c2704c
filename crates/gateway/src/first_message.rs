//! A net.tcp sender's messages read only as far as their headers, without building them: the
//! first one for its token, and every one (see `scrub`) to pass it on to the listener without
//! the sender's credentials.
//!
//! ```text
//!  sender:   Version Mode Via(…?sb-hc-token=…) Encoding PreambleEnd  06 size [table|headers|body…
//!  listener: Version Mode Via(…)               Encoding PreambleEnd  06 size'[table'|headers'|body…
//!                                                  table':   sb-hc-token dropped from session
//!                                                            strings (WCF writes To there)
//!                                                  headers': the RelayAccessToken header cut
//!                                                            out, an inline To's token too
//! ```
//!
//! The gateway reads the first envelope record only up to its `Body` start tag, at most
//! [`Limits::max_nettcp_first_headers`](crate::config::Limits::max_nettcp_first_headers)
//! bytes of it, so an unauthenticated sender costs that much memory whatever size its message
//! declares; the rest of the message streams to the listener once the sender is authorised.
//! Cutting the header's bytes out (rather than decoding and re-encoding the envelope) leaves
//! every other record as the sender wrote it, and the string table keeps every entry in its
//! place, so session dictionary ids mean the same to the listener as they did to the sender.
//! Only the size fields in front of the edited bytes are written anew.

use std::{borrow::Cow, ops::Range};

use ferry_hc::address::without_token;
use ferry_nbfx::SessionDictionary;
use ferry_nmf::boundary::{NotFraming, Resume};
use ferry_nmf::{Encoding, MessageFormat, Mode, Preamble, Record, RecordType, varint};
use ferry_soap::Probe;

/// MC-NMF 2.2.3.6 Unsized Envelope Record.
const UNSIZED_ENVELOPE: u8 = RecordType::UnsizedEnvelope.byte();
/// MC-NMF 2.2.3.7 Sized Envelope Record.
const SIZED_ENVELOPE: u8 = RecordType::SizedEnvelope.byte();
/// MC-NMF 2.2.3.8 End Record.
const END: u8 = RecordType::End.byte();
/// The first probe waits for this many payload bytes (or the whole message); each later one
/// for twice as many as the one before, so a sender that trickles its message byte by byte
/// costs at most about twice the window in probing work.
const FIRST_PROBE: usize = 4 * 1024;

/// Where the session's first message stands in the bytes read so far.
#[derive(Debug)]
pub(crate) enum Head {
    /// More bytes are needed to say.
    Incomplete,
    /// The session ended (an End record) before any message.
    NoMessage,
    /// Something other than a message record follows the preamble.
    Malformed,
    /// The first envelope record, as far as it has arrived.
    Envelope(Envelope),
}

/// The first envelope record as far as it has arrived.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// Offset of the record (its type byte) in the bytes read.
    start: usize,
    /// Its frames: a sized envelope has one, an unsized one a frame per chunk.
    frames: Vec<Frame>,
    /// Offset just past the last byte that `frames` accounts for (a partly arrived size field
    /// after it is left to stream on).
    parsed: usize,
    /// The whole record has arrived (the unsized terminator included).
    complete: bool,
    /// The sized record's declared payload size (`None` for unsized).
    declared: Option<usize>,
}

/// One length-prefixed run of payload bytes.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Offset of the frame's first payload byte in the bytes read.
    at: usize,
    /// Its declared length.
    len: usize,
    /// How much of it has arrived.
    arrived: usize,
}

impl Envelope {
    /// True when the record declares a payload over `max` bytes (a sized record only: an
    /// unsized one streams, and the listener applies its own quota).
    pub(crate) fn declared_over(&self, max: usize) -> bool {
        self.declared.is_some_and(|d| d > max)
    }

    /// Payload bytes arrived so far.
    pub(crate) fn arrived(&self) -> usize {
        self.frames.iter().map(|f| f.arrived).sum()
    }

    /// True when no more of the message can arrive to be read (it is complete, or its declared
    /// size has arrived).
    pub(crate) fn whole(&self) -> bool {
        self.complete || self.declared.is_some_and(|d| self.arrived() >= d)
    }

    /// Offset just past the last byte of the record that has been accounted for.
    pub(crate) fn parsed(&self) -> usize {
        self.parsed
    }

    /// What of the record is still to come after [`parsed`](Self::parsed), for the boundary
    /// scanner to pass over.
    pub(crate) fn rest(&self) -> Resume {
        match (self.declared, self.frames.last()) {
            _ if self.complete => Resume::Records,
            (Some(_), Some(f)) => match f.len - f.arrived {
                0 => Resume::Records,
                left => Resume::Payload(left as u64),
            },
            (None, Some(f)) if f.arrived < f.len => Resume::Chunk((f.len - f.arrived) as u64),
            _ => Resume::Chunks,
        }
    }

    /// The payload bytes arrived so far, in order (frames joined).
    fn payload<'a>(&self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        match self.frames.as_slice() {
            [one] => Cow::Borrowed(&raw[one.at..one.at + one.arrived]),
            frames => Cow::Owned(
                frames
                    .iter()
                    .flat_map(|f| &raw[f.at..f.at + f.arrived])
                    .copied()
                    .collect(),
            ),
        }
    }
}

/// Finds the first message after the preamble in `raw` (the bytes read so far).
///
/// `preamble_end` is the offset just past the preamble; see [`read_preamble`].
pub(crate) fn head(raw: &[u8], preamble_end: usize) -> Head {
    let Some(&kind) = raw.get(preamble_end) else {
        return Head::Incomplete;
    };
    let mut pos = preamble_end + 1;
    let size = |pos: usize| match varint::decode(&raw[pos..]) {
        varint::Decoded::Value(v, n) => Ok(Some((v as usize, n))),
        varint::Decoded::Incomplete => Ok(None),
        varint::Decoded::Overflow => Err(()),
    };
    match kind {
        END => Head::NoMessage,
        SIZED_ENVELOPE => match size(pos) {
            Ok(Some((len, n))) => {
                pos += n;
                let arrived = len.min(raw.len() - pos);
                Head::Envelope(Envelope {
                    start: preamble_end,
                    frames: vec![Frame {
                        at: pos,
                        len,
                        arrived,
                    }],
                    parsed: pos + arrived,
                    complete: arrived == len,
                    declared: Some(len),
                })
            }
            Ok(None) => Head::Incomplete,
            Err(()) => Head::Malformed,
        },
        UNSIZED_ENVELOPE => {
            let mut frames = Vec::new();
            let mut complete = false;
            loop {
                match size(pos) {
                    Ok(Some((0, n))) => {
                        pos += n;
                        complete = true;
                        break;
                    }
                    Ok(Some((len, n))) => {
                        let at = pos + n;
                        let arrived = len.min(raw.len() - at);
                        frames.push(Frame { at, len, arrived });
                        pos = at + arrived;
                        if arrived < len {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(()) => return Head::Malformed,
                }
            }
            Head::Envelope(Envelope {
                start: preamble_end,
                frames,
                parsed: pos,
                complete,
                declared: None,
            })
        }
        _ => Head::Malformed,
    }
}

/// The preamble at the front of `raw` and where it ends, `Ok(None)` while it has not all
/// arrived: through PreambleEnd, or in singleton-sized mode through the encoding record.
/// Records that belong elsewhere (an upgrade request: a session upgraded end to end, its own
/// TLS inside the relay, cannot be read) are [`NotFraming`].
pub(crate) fn read_preamble(
    raw: &[u8],
    framing: &ferry_nmf::Limits,
) -> Result<Option<(Preamble, usize)>, NotFraming> {
    let mut preamble = Preamble {
        major: 0,
        minor: 0,
        mode: Mode::Duplex,
        via: String::new(),
        encoding: Encoding::Extensible(String::new()),
        upgrades: Vec::new(),
    };
    let mut pos = 0;
    loop {
        let Some((record, len)) = Record::decode(&raw[pos..], framing).map_err(|_| NotFraming)?
        else {
            return Ok(None);
        };
        pos += len;
        let encoding = matches!(
            record,
            Record::KnownEncoding(_) | Record::ExtensibleEncoding(_)
        );
        match record {
            Record::Version { major, minor } => (preamble.major, preamble.minor) = (major, minor),
            Record::Mode(mode) => preamble.mode = mode,
            Record::Via(via) => preamble.via = via.into_owned(),
            Record::KnownEncoding(k) => preamble.encoding = Encoding::Known(k),
            Record::ExtensibleEncoding(e) => {
                preamble.encoding = Encoding::Extensible(e.into_owned());
            }
            Record::PreambleEnd => return Ok(Some((preamble, pos))),
            // A session upgraded end to end (its own TLS inside the relay) cannot be read.
            _ => return Err(NotFraming),
        }
        // Singleton-sized mode has no PreambleEnd: message octets follow the encoding.
        if encoding && preamble.mode == Mode::SingletonSized {
            return Ok(Some((preamble, pos)));
        }
    }
}

/// The offset of the UpgradeRequest record in `raw` (the preamble so far), `None` if there is
/// none.
pub(crate) fn upgrade_offset(raw: &[u8], framing: &ferry_nmf::Limits) -> Option<usize> {
    let mut pos = 0;
    loop {
        let (record, len) = Record::decode(&raw[pos..], framing).ok()??;
        if matches!(record, Record::UpgradeRequest(_)) {
            return Some(pos);
        }
        pos += len;
    }
}

/// What probing the arrived part of a first message says.
#[derive(Debug)]
pub(crate) enum Probed {
    /// Its headers are read (up to the `Body` start tag).
    Read(Box<Probe>),
    /// Not yet: wait for at least this many payload bytes, then probe again.
    Wait(usize),
    /// It cannot be read: an encoding the gateway does not know, malformed headers, or
    /// headers longer than the window.
    Unreadable,
}

/// Probes a message once at least `want` payload bytes have arrived (or all of it), reading
/// at most `window` of them. In a binary session the message's string table is read into
/// `dictionary` (the session's strings so far) when its headers are read, and not otherwise.
pub(crate) fn probe_head(
    raw: &[u8],
    envelope: &Envelope,
    preamble: &Preamble,
    want: usize,
    window: usize,
    limits: ferry_nbfx::Limits,
    dictionary: &mut SessionDictionary,
) -> Probed {
    let arrived = envelope.arrived();
    let all_in = envelope.whole() || arrived >= window;
    if arrived < want && !all_in {
        return Probed::Wait(want);
    }
    let payload = envelope.payload(raw);
    let payload = &payload[..payload.len().min(window)];
    let checkpoint = dictionary.checkpoint();
    match probe(preamble, payload, limits, dictionary) {
        Some(p) => Probed::Read(Box::new(p)),
        None => {
            dictionary.restore(checkpoint);
            if all_in {
                Probed::Unreadable
            } else {
                Probed::Wait(want.max(FIRST_PROBE).saturating_mul(2).min(window))
            }
        }
    }
}

/// The first probe's threshold.
pub(crate) fn first_probe(window: usize) -> usize {
    FIRST_PROBE.min(window)
}

/// Reads a message's headers in the session's encoding; `None` for an encoding the gateway
/// cannot read (see [`ferry_nmf::Encoding::message_format`]) or a payload that does not parse
/// as far as its `Body`.
fn probe(
    preamble: &Preamble,
    payload: &[u8],
    limits: ferry_nbfx::Limits,
    dictionary: &mut SessionDictionary,
) -> Option<Probe> {
    match preamble.encoding.message_format()? {
        MessageFormat::BinarySession => {
            let table = dictionary.read_table(payload).ok()?;
            let mut probe = Probe::binary(&payload[table..], Some(dictionary), limits).ok()?;
            let shift = |s: Range<usize>| s.start + table..s.end + table;
            probe.token_span = probe.token_span.map(shift);
            probe.to_span = probe.to_span.map(shift);
            Some(probe)
        }
        MessageFormat::Binary => Probe::binary(payload, None, limits).ok(),
        MessageFormat::Text => {
            // The window may end inside a character: read what is whole.
            let text = match std::str::from_utf8(payload) {
                Ok(t) => t,
                Err(e) => std::str::from_utf8(&payload[..e.valid_up_to()]).ok()?,
            };
            Probe::text(text, limits).ok()
        }
    }
}

/// The session's bytes so far as the listener gets them: the Via without an `sb-hc-token`,
/// and the first envelope (as far as it has arrived) without its `RelayAccessToken` header or
/// an `sb-hc-token` in a session string, with its size fields written to match. Bytes past
/// what `envelope` accounts for follow unchanged, and so does the rest of the message as it
/// streams in.
pub(crate) fn redact<'a>(
    raw: &'a [u8],
    preamble: &Preamble,
    envelope: Option<&Envelope>,
    probe: Option<&Probe>,
    framing: &ferry_nmf::Limits,
) -> Cow<'a, [u8]> {
    let preamble_len = envelope.map_or(raw.len(), |e| e.start);
    let head = redact_preamble(&raw[..preamble_len], framing);
    let edits = match (envelope, probe) {
        (Some(e), Some(p)) => payload_edits(raw, e, preamble, p),
        _ => Vec::new(),
    };
    let (Some(envelope), false) = (envelope, edits.is_empty()) else {
        return match head {
            Cow::Borrowed(_) => Cow::Borrowed(raw),
            Cow::Owned(mut h) => {
                h.extend_from_slice(&raw[preamble_len..]);
                Cow::Owned(h)
            }
        };
    };
    let mut out = head.into_owned();
    out.push(raw[envelope.start]);
    let mut offset = 0;
    for frame in &envelope.frames {
        let here = offset..offset + frame.arrived;
        let bytes = &raw[frame.at..frame.at + frame.arrived];
        let mut body = Vec::with_capacity(bytes.len());
        let mut pos = here.start;
        for (range, replacement) in &edits {
            if range.end <= here.start || range.start >= here.end {
                continue;
            }
            // The bytes before the edit stay; a replacement goes in the frame where its range
            // starts; the range's bytes in this frame go.
            let cut = range.start.max(here.start)..range.end.min(here.end);
            body.extend_from_slice(&bytes[pos - here.start..cut.start - here.start]);
            if range.start >= here.start {
                body.extend_from_slice(replacement);
            }
            pos = cut.end;
        }
        body.extend_from_slice(&bytes[pos - here.start..]);
        let len = frame.len - frame.arrived + body.len();
        offset = here.end;
        // An unsized chunk that lost every byte would read as the terminator: drop it.
        if len == 0 && envelope.declared.is_none() {
            continue;
        }
        varint::encode(len as u32, &mut out);
        out.extend_from_slice(&body);
    }
    if envelope.complete && envelope.declared.is_none() {
        out.push(0x00);
    }
    out.extend_from_slice(&raw[envelope.parsed..]);
    Cow::Owned(out)
}

/// The preamble records with the Via's `sb-hc-token` removed.
pub(crate) fn redact_preamble<'a>(
    preamble: &'a [u8],
    framing: &ferry_nmf::Limits,
) -> Cow<'a, [u8]> {
    let mut pos = 0;
    while let Ok(Some((record, len))) = Record::decode(&preamble[pos..], framing) {
        if let Record::Via(via) = &record
            && let Cow::Owned(v) = without_token(via)
        {
            let mut out = preamble[..pos].to_vec();
            Record::Via(v.into()).encode(&mut out);
            out.extend_from_slice(&preamble[pos + len..]);
            return Cow::Owned(out);
        }
        pos += len;
    }
    Cow::Borrowed(preamble)
}

/// The edits that take credentials out of the payload, in order: (payload range, bytes to put
/// in its place).
fn payload_edits(
    raw: &[u8],
    envelope: &Envelope,
    preamble: &Preamble,
    probe: &Probe,
) -> Vec<(Range<usize>, Vec<u8>)> {
    let mut edits = Vec::new();
    if preamble.encoding.message_format() == Some(MessageFormat::BinarySession) {
        let payload = envelope.payload(raw);
        if let Some((len, table)) = rewrite_table(&payload) {
            edits.push((0..len, table));
        }
    }
    if let Some(span) = &probe.token_span {
        edits.push((span.clone(), Vec::new()));
    }
    // A `To` written out in the message gets its query's token cut. One that names a session
    // string is left as it is (the table's copy has lost its token above): writing it out in
    // full would make a few bytes of the sender's into a whole address for the listener, per
    // message. So an edit never makes a message longer.
    if let (Some(to), Some(span)) = (&probe.to, &probe.to_span)
        && let Cow::Owned(to) = without_token(to)
    {
        let text = to_text(preamble, &to);
        if text.len() <= span.len() {
            edits.push((span.clone(), text));
        }
    }
    // The headers' spans never overlap, and the table comes first.
    edits.sort_by_key(|(range, _)| range.start);
    edits
}

/// A `To` value to put in the place of [`Probe::to_span`], in the session's encoding.
fn to_text(preamble: &Preamble, to: &str) -> Vec<u8> {
    match preamble.encoding.message_format() {
        Some(MessageFormat::Binary | MessageFormat::BinarySession) => {
            let mut out = Vec::with_capacity(to.len() + 6);
            let record = ferry_nbfx::Record::Text {
                text: ferry_nbfx::Text::Chars(to.into()),
                end: true,
            };
            // A string that the probe read within its limits encodes.
            let _ = record.encode(&mut out, None);
            out
        }
        _ => quick_xml::escape::escape(to).into_owned().into_bytes(),
    }
}

/// The MC-NBFSE string table at the front of `payload` with `sb-hc-token` removed from every
/// string that carries one (the `To` header's address, typically), every entry kept in its
/// place: `(old table length, new table)`, `None` when no string carries one. The probe has
/// read the table already, so it is well formed.
fn rewrite_table(payload: &[u8]) -> Option<(usize, Vec<u8>)> {
    let ferry_nbfx::varint::Decoded::Value(size, mut pos) = ferry_nbfx::varint::decode(payload)
    else {
        return None;
    };
    let end = pos.checked_add(size as usize)?;
    let mut entries = Vec::new();
    let mut changed = false;
    while pos < end {
        let ferry_nbfx::varint::Decoded::Value(len, n) =
            ferry_nbfx::varint::decode(payload.get(pos..end)?)
        else {
            return None;
        };
        let start = pos + n;
        let stop = start.checked_add(len as usize).filter(|&s| s <= end)?;
        let text = without_token(std::str::from_utf8(payload.get(start..stop)?).ok()?);
        changed |= matches!(text, Cow::Owned(_));
        entries.push(text);
        pos = stop;
    }
    if !changed {
        return None;
    }
    let mut body = Vec::with_capacity(end);
    for entry in &entries {
        ferry_nbfx::varint::encode(entry.len() as u32, &mut body);
        body.extend_from_slice(entry.as_bytes());
    }
    let mut table = Vec::with_capacity(body.len() + 5);
    ferry_nbfx::varint::encode(body.len() as u32, &mut table);
    table.extend_from_slice(&body);
    Some((end, table))
}

/// True when the gateway reads messages in the session's encoding.
pub(crate) fn readable(preamble: &Preamble) -> bool {
    preamble.encoding.message_format().is_some()
}

/// True when the mode sends raw octets after the preamble (no message records).
pub(crate) fn raw_octets(preamble: &Preamble) -> bool {
    matches!(preamble.mode, Mode::SingletonSized)
}
