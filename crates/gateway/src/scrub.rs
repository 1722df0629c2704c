//! A sender's net.tcp session on its way to a listener: where it ends ([`Boundary`]) and
//! what of it the listener must not see ([`Scrub`]).
//!
//! ```text
//!  sender ─► [preamble]  Via(…?sb-hc-token=…)          ─► Via(…)
//!            envelope 1  table | To(…?sb-hc-token=…) | RelayAccessToken | … | Body…
//!                                                      ─► table' | To(…) | … | Body…
//!            envelope 2  (the same, every message)
//!            End         ─► End, and nothing after it
//! ```
//!
//! WCF clients that carry their token in a message header (a relay binding, or an inspector
//! adding it) send it on every message, not only the first; and the `To` header repeats the
//! address the client was given, query and all. So the gateway reads the head of every
//! message (up to its `Body` start tag, within the same window as the first message) and
//! takes the credentials out, message by message. The session dictionary is followed across
//! messages, so header names announced in one message are known in the next, and every string
//! keeps its id (a `To` that names a session string is left naming it: the table's copy lost
//! its token; no edit makes a message longer). Bodies are never read: past a message's head
//! its bytes stream as they come.
//!
//! A message the gateway cannot read as far as its `Body` (malformed, or headers longer than
//! the window) in an encoding it knows ends the session: passing it on could pass a token on.
//! Sessions in an encoding the gateway cannot read at all (an extensible one) pass as sent
//! past their preamble; the gateway cannot have authenticated such a sender from a message
//! either, only from its Via.

use ferry_nbfx::SessionDictionary;
use ferry_nmf::{Encoding, Mode, Preamble, Record};

use crate::first_message::{self, Head, Probed, Rest};

/// MC-NMF 2.2.3.6 Unsized Envelope Record.
const UNSIZED: u8 = 0x05;
/// MC-NMF 2.2.3.7 Sized Envelope Record.
const SIZED: u8 = 0x06;
/// Longest preamble the relayed port's sessions may send, past the Via.
const MAX_PREAMBLE_OVERHEAD: usize = 1024;

/// How far the gateway reads into a session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScrubLimits {
    /// Most payload bytes of a message read for its head.
    pub(crate) window: usize,
    /// Limits on the binary XML of a head.
    pub(crate) nbfx: ferry_nbfx::Limits,
    /// Limits on the preamble's records.
    pub(crate) framing: ferry_nmf::Limits,
}

/// Why a session cannot go on to the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// Bytes that are not MC-NMF framing.
    #[error("bytes that are not net.tcp framing")]
    NotFraming,
    /// A message whose headers cannot be read in an encoding the gateway reads.
    #[error("a message whose headers the gateway cannot read")]
    Unreadable,
}

/// What [`Boundary::step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// All of the bytes are part of the session, and no envelope record starts in them.
    All,
    /// The session's End record finishes just before this offset.
    Ended(usize),
    /// An envelope record starts at this offset.
    Message(usize),
}

/// Takes a session's credentials out as it streams: the Via's `sb-hc-token`, and in every
/// message the `RelayAccessToken` header and an `sb-hc-token` in the `To` header or a session
/// string (see the module docs). Memory: one message head (the window) at a time, and the
/// session dictionary (within its limit).
#[derive(Debug)]
pub(crate) struct Scrub {
    /// The session's preamble, once it has all arrived.
    preamble: Option<Preamble>,
    /// Messages are read: there are messages, in an encoding the gateway reads.
    read: bool,
    boundary: Boundary,
    dictionary: SessionDictionary,
    /// The preamble so far, or the message whose head is being gathered (record type first).
    pending: Vec<u8>,
    gathering: bool,
    /// Payload bytes to have before the next probe.
    want: usize,
    limits: ScrubLimits,
}

impl Scrub {
    /// For a session whose preamble the gateway has read, from the first byte after it.
    pub(crate) fn after_preamble(preamble: &Preamble, limits: ScrubLimits) -> Self {
        let mut scrub = Self::whole_session(limits);
        scrub.begin(preamble.clone());
        scrub
    }

    /// For a session from its first byte (the relayed port, which passes the session on
    /// without reading its preamble).
    pub(crate) fn whole_session(limits: ScrubLimits) -> Self {
        Self {
            preamble: None,
            read: false,
            boundary: Boundary::default(),
            dictionary: SessionDictionary::new(&limits.nbfx),
            pending: Vec::new(),
            gathering: false,
            want: 0,
            limits,
        }
    }

    fn begin(&mut self, preamble: Preamble) {
        let singleton_sized = preamble.mode == Mode::SingletonSized;
        self.boundary = Boundary {
            state: if singleton_sized {
                Scan::Raw
            } else {
                Scan::Record
            },
            singleton_sized,
        };
        self.read = !singleton_sized && first_message::readable(&preamble);
        self.preamble = Some(preamble);
    }

    /// True once the session's End record has gone through.
    pub(crate) fn ended(&self) -> bool {
        self.boundary.ended()
    }

    /// True when the stream may end here without cutting a record short.
    pub(crate) fn between_records(&self) -> bool {
        match &self.preamble {
            None => self.pending.is_empty(),
            Some(_) => !self.gathering && self.boundary.between_records(),
        }
    }

    /// Consumes `data`, appending what the listener gets to `out`: `Ok(Some(n))` when the
    /// session's End record finishes at `data[n - 1]` (nothing after it goes on), `Ok(None)`
    /// when all of `data` was taken (part of it may wait in a message head).
    ///
    /// # Errors
    ///
    /// [`Refused`]: the session cannot go on; `out` may hold bytes that must not be sent.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, Refused> {
        // Bytes held back (a preamble, a message head) come round again once they are read;
        // they always end where `data` ends, so offsets in them map back into `data`.
        let mut carried;
        let mut input = data;
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            let next = if self.preamble.is_none() {
                self.preamble_step(input, out)?
            } else if self.gathering {
                self.head_step(input, out)?
            } else {
                match self
                    .boundary
                    .step(input, self.read)
                    .map_err(|()| Refused::NotFraming)?
                {
                    Step::All => {
                        out.extend_from_slice(input);
                        return Ok(None);
                    }
                    Step::Ended(n) => {
                        out.extend_from_slice(&input[..n]);
                        return Ok(Some(data.len().saturating_sub(input.len() - n)));
                    }
                    Step::Message(n) => {
                        out.extend_from_slice(&input[..n]);
                        self.gathering = true;
                        self.want = first_message::first_probe(self.limits.window);
                        input = &input[n..];
                        continue;
                    }
                }
            };
            match next {
                Next::Wait => return Ok(None),
                Next::Input(n) => input = &input[n..],
                Next::Carried(rest) => {
                    carried = rest;
                    input = &carried;
                }
            }
        }
    }

    /// Gathers the preamble; once it is all in, sends it on without the Via's token and
    /// returns the bytes after it.
    fn preamble_step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Next, Refused> {
        self.pending.extend_from_slice(input);
        let framing = &self.limits.framing;
        let Some((preamble, end)) = read_preamble(&self.pending, framing)? else {
            let most = framing.max_via_bytes.saturating_add(MAX_PREAMBLE_OVERHEAD);
            if self.pending.len() > most {
                return Err(Refused::NotFraming);
            }
            return Ok(Next::Wait);
        };
        let pending = std::mem::take(&mut self.pending);
        out.extend_from_slice(&first_message::redact_preamble(&pending[..end], framing));
        self.begin(preamble);
        Ok(Next::Carried(pending[end..].to_vec()))
    }

    /// Gathers a message's head; once it is read, sends it on without credentials, and the
    /// rest of the message streams through the boundary.
    fn head_step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Next, Refused> {
        if self.pending.is_empty() {
            // Most heads arrive whole in one read: they are read where they lie.
            return Ok(match self.emit_head(input, out)? {
                Some(parsed) => Next::Input(parsed),
                None => {
                    self.pending.extend_from_slice(input);
                    Next::Wait
                }
            });
        }
        self.pending.extend_from_slice(input);
        let pending = std::mem::take(&mut self.pending);
        Ok(match self.emit_head(&pending, out)? {
            Some(parsed) => Next::Carried(pending[parsed..].to_vec()),
            None => {
                self.pending = pending;
                Next::Wait
            }
        })
    }

    /// Reads the head of the message at the front of `bytes` and sends it on without
    /// credentials: `Some(n)` when it did, `bytes[n..]` following the part it accounted for;
    /// `None` when more bytes are needed.
    fn emit_head(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, Refused> {
        let envelope = match first_message::head(bytes, 0) {
            Head::Incomplete => return Ok(None),
            Head::Envelope(e) => e,
            Head::NoMessage | Head::Malformed => return Err(Refused::NotFraming),
        };
        let Some(preamble) = &self.preamble else {
            return Err(Refused::NotFraming);
        };
        let probe = match first_message::probe_head(
            bytes,
            &envelope,
            preamble,
            self.want,
            self.limits.window,
            self.limits.nbfx,
            &mut self.dictionary,
        ) {
            Probed::Wait(want) => {
                self.want = want;
                return Ok(None);
            }
            Probed::Read(probe) => probe,
            Probed::Unreadable => return Err(Refused::Unreadable),
        };
        let parsed = envelope.parsed();
        out.extend_from_slice(&first_message::redact(
            &bytes[..parsed],
            preamble,
            Some(&envelope),
            Some(&probe),
            &self.limits.framing,
        ));
        self.boundary.resume(envelope.rest());
        self.gathering = false;
        Ok(Some(parsed))
    }
}

/// Where [`Scrub::feed`] goes on after a step that held bytes back or read some.
enum Next {
    /// Everything was taken; more bytes are needed.
    Wait,
    /// Go on with the input from this offset.
    Input(usize),
    /// Go on with these bytes (held back before, now read past), which end where the input
    /// does.
    Carried(Vec<u8>),
}

/// The preamble at the front of `raw` and where it ends, `Ok(None)` while it has not all
/// arrived: through PreambleEnd, or in singleton-sized mode through the encoding record.
fn read_preamble(
    raw: &[u8],
    framing: &ferry_nmf::Limits,
) -> Result<Option<(Preamble, usize)>, Refused> {
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
        let Some((record, len)) =
            Record::decode(&raw[pos..], framing).map_err(|_| Refused::NotFraming)?
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
            _ => return Err(Refused::NotFraming),
        }
        // Singleton-sized mode has no PreambleEnd: message octets follow the encoding.
        if encoding && preamble.mode == Mode::SingletonSized {
            return Ok(Some((preamble, pos)));
        }
    }
}

/// Follows the record boundaries of a sender's byte stream without buffering it, to find
/// where its session ends. A connection carries one session through the gateway: WCF reuses a
/// pooled connection for the next session to the same host and port (End, End, then a new
/// preamble), and that session's Via and token were never routed or checked, so nothing after
/// the first End is relayed.
#[derive(Debug, Default)]
pub(crate) struct Boundary {
    state: Scan,
    /// Singleton-sized mode: after the preamble the stream is raw message octets.
    singleton_sized: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// At a record's first byte.
    #[default]
    Record,
    /// Skipping this many bytes of fixed-size record fields.
    Fixed(u8, After),
    /// Reading a varint: value so far, bits read, what it sizes.
    Size(u32, u32, Sized),
    /// Skipping a sized payload.
    Skip(u64, Sized),
    /// Raw octets to the end of the stream (singleton-sized mode).
    Raw,
    /// The End record was read.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Back to records.
    Record,
    /// A Mode record: remember singleton-sized.
    Mode,
    /// An encoding record: raw octets follow in singleton-sized mode.
    Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sized {
    /// A string or a sized envelope: one payload, then records.
    One,
    /// An encoding string (ExtensibleEncoding): as `One`, then maybe raw octets.
    Encoding,
    /// An unsized envelope's chunk: more chunks until a zero size.
    Chunk,
}

impl Boundary {
    /// True when the stream may end here without losing part of a record: between records,
    /// after End, or anywhere in singleton-sized raw octets (which run to the end).
    pub(crate) fn between_records(&self) -> bool {
        matches!(self.state, Scan::Record | Scan::Ended | Scan::Raw)
    }

    /// True once the session's End record has been seen.
    pub(crate) fn ended(&self) -> bool {
        self.state == Scan::Ended
    }

    /// Consumes `data`: `Ok(Some(n))` when the End record finishes at `data[n - 1]`
    /// (`data[n..]` belongs to another session), `Ok(None)` when `data` is all part of this
    /// one, `Err(())` for bytes that are not framing.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ()> {
        Ok(match self.step(data, false)? {
            Step::Ended(n) => Some(n),
            Step::All | Step::Message(_) => None,
        })
    }

    /// As [`feed`](Self::feed), and with `messages` it stops in front of an envelope record
    /// (`Step::Message`), leaving that byte unread.
    fn step(&mut self, data: &[u8], messages: bool) -> Result<Step, ()> {
        let mut i = 0;
        while i < data.len() {
            // A payload is passed over in one step: stepping through it byte by byte cost
            // more than the rest of the relay for large messages.
            if let Scan::Skip(left, sized) = self.state {
                let here = (data.len() - i) as u64;
                if left > here {
                    self.state = Scan::Skip(left - here, sized);
                    return Ok(Step::All);
                }
                // `left <= here`, so it fits in a usize.
                i += left as usize;
                self.state = self.after_skip(sized);
                continue;
            }
            let b = data[i];
            if messages && self.state == Scan::Record && matches!(b, UNSIZED | SIZED) {
                return Ok(Step::Message(i));
            }
            i += 1;
            self.state = match self.state {
                Scan::Ended => return Ok(Step::Ended(i - 1)),
                Scan::Raw => return Ok(Step::All),
                Scan::Record => match b {
                    0x00 => Scan::Fixed(2, After::Record),
                    0x01 => Scan::Fixed(1, After::Mode),
                    0x03 => Scan::Fixed(1, After::Encoding),
                    0x02 | 0x06 | 0x08 | 0x09 => Scan::Size(0, 0, Sized::One),
                    0x04 => Scan::Size(0, 0, Sized::Encoding),
                    0x05 => Scan::Size(0, 0, Sized::Chunk),
                    0x07 => {
                        self.state = Scan::Ended;
                        return Ok(Step::Ended(i));
                    }
                    0x0A..=0x0C => Scan::Record,
                    _ => return Err(()),
                },
                Scan::Fixed(n, after) => {
                    if after == After::Mode {
                        self.singleton_sized = b == 0x04;
                    }
                    if n > 1 {
                        Scan::Fixed(n - 1, after)
                    } else if after == After::Encoding && self.singleton_sized {
                        Scan::Raw
                    } else {
                        Scan::Record
                    }
                }
                Scan::Size(value, bits, sized) => {
                    if bits >= 35 {
                        return Err(());
                    }
                    let value = value | (u32::from(b & 0x7F) << bits);
                    if b & 0x80 != 0 {
                        Scan::Size(value, bits + 7, sized)
                    } else if value == 0 {
                        match sized {
                            // The chunk terminator, or an empty string.
                            Sized::Chunk | Sized::One => Scan::Record,
                            Sized::Encoding if self.singleton_sized => Scan::Raw,
                            Sized::Encoding => Scan::Record,
                        }
                    } else {
                        Scan::Skip(u64::from(value), sized)
                    }
                }
                // Taken whole above; kept byte-wise here so every state has its step.
                Scan::Skip(left, sized) if left > 1 => Scan::Skip(left - 1, sized),
                Scan::Skip(_, sized) => self.after_skip(sized),
            };
        }
        Ok(match self.state {
            Scan::Ended => Step::Ended(data.len()),
            _ => Step::All,
        })
    }

    /// Takes up an envelope record that was read elsewhere as far as `rest` says.
    fn resume(&mut self, rest: Rest) {
        self.state = match rest {
            Rest::Nothing => Scan::Record,
            Rest::Payload(n) => Scan::Skip(n as u64, Sized::One),
            Rest::Chunk(n) => Scan::Skip(n as u64, Sized::Chunk),
            Rest::Chunks => Scan::Size(0, 0, Sized::Chunk),
        };
    }

    /// Where a sized payload's end leads.
    fn after_skip(&self, sized: Sized) -> Scan {
        match sized {
            Sized::One => Scan::Record,
            Sized::Encoding if self.singleton_sized => Scan::Raw,
            Sized::Encoding => Scan::Record,
            Sized::Chunk => Scan::Size(0, 0, Sized::Chunk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_nmf::KnownEncoding;

    fn records(list: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in list {
            r.encode(&mut out);
        }
        out
    }

    fn preamble(mode: Mode) -> Vec<u8> {
        let mut out = records(&[
            Record::Version { major: 1, minor: 0 },
            Record::Mode(mode),
            Record::Via("net.tcp://gw/calc".into()),
            Record::KnownEncoding(KnownEncoding::BinarySession),
        ]);
        if mode != Mode::SingletonSized {
            out.push(0x0C);
        }
        out
    }

    #[test]
    fn the_boundary_is_found_after_end_however_the_stream_is_cut() {
        let mut first = preamble(Mode::Duplex);
        first.extend(records(&[
            Record::SizedEnvelope(vec![0x07; 300].into()),
            // Larger than any read: its payload spans many pieces, End bytes included.
            Record::SizedEnvelope(vec![0x07; 70_000].into()),
            Record::UnsizedEnvelope(vec![vec![0x07u8; 3].into(), vec![0x00u8; 200].into()]),
            Record::SizedEnvelope(Vec::new().into()),
            Record::End,
        ]));
        let mut stream = first.clone();
        // A second session on the same connection, as a pooled WCF connection sends it.
        stream.extend(preamble(Mode::Duplex));
        stream.extend(records(&[Record::SizedEnvelope(vec![1; 10].into())]));
        for piece in [1usize, 2, 3, 7, 64, 4096, 65_537, stream.len()] {
            let mut b = Boundary::default();
            let mut relayed = Vec::new();
            for chunk in stream.chunks(piece) {
                match b.feed(chunk) {
                    Ok(None) => relayed.extend_from_slice(chunk),
                    Ok(Some(end)) => {
                        relayed.extend_from_slice(&chunk[..end]);
                        break;
                    }
                    Err(()) => panic!("valid framing refused"),
                }
            }
            assert_eq!(relayed, first, "pieces of {piece}");
        }
    }

    /// Feeds `data` in pieces of `piece` bytes: where the session ends in `data`, as
    /// [`Boundary::feed`] says for the whole.
    fn feed_in_pieces(data: &[u8], piece: usize) -> Result<Option<usize>, ()> {
        let mut b = Boundary::default();
        let mut at = 0;
        for chunk in data.chunks(piece.max(1)) {
            if let Some(end) = b.feed(chunk)? {
                return Ok(Some(at + end));
            }
            at += chunk.len();
        }
        Ok(None)
    }

    proptest::proptest! {
        /// However a stream is cut, the boundary (or the refusal) is the same: payloads
        /// skipped in one step across pieces land where a byte-by-byte walk does.
        #[test]
        fn the_boundary_does_not_depend_on_how_the_stream_is_cut(
            sizes in proptest::collection::vec(0usize..70_000, 0..4),
            chunks in proptest::collection::vec(1usize..3_000, 0..4),
            end in proptest::bool::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
            piece in 1usize..100_000,
        ) {
            let mut data = preamble(Mode::Duplex);
            let mut list: Vec<Record<'_>> = sizes
                .iter()
                .map(|&n| Record::SizedEnvelope(vec![0x07; n].into()))
                .collect();
            if !chunks.is_empty() {
                list.push(Record::UnsizedEnvelope(
                    chunks.iter().map(|&n| vec![0x07u8; n].into()).collect(),
                ));
            }
            if end {
                list.push(Record::End);
            }
            data.extend(records(&list));
            data.extend(&tail);
            let whole = Boundary::default().feed(&data);
            proptest::prop_assert_eq!(feed_in_pieces(&data, 1), whole);
            proptest::prop_assert_eq!(feed_in_pieces(&data, piece), whole);
            if end {
                let body = data.len() - tail.len();
                proptest::prop_assert_eq!(whole, Ok(Some(body)));
            }
        }
    }

    #[test]
    fn singleton_sized_octets_and_garbage() {
        // Singleton-sized: after the preamble everything is message octets, End bytes too.
        let mut b = Boundary::default();
        assert_eq!(b.feed(&preamble(Mode::SingletonSized)), Ok(None));
        assert_eq!(b.feed(&[0x07, 0x00, 0x07]), Ok(None));
        // Bytes that are not framing.
        assert_eq!(Boundary::default().feed(b"GET / HTTP/1.1"), Err(()));
        // A size varint longer than five bytes.
        assert_eq!(
            Boundary::default().feed(&[0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(())
        );
    }

    const SECRET: &str = "SharedAccessSignature sr=x&sig=secret&se=1&skn=k";

    fn limits() -> ScrubLimits {
        ScrubLimits {
            window: 64 * 1024,
            nbfx: ferry_nbfx::Limits::default(),
            framing: ferry_nmf::Limits::default(),
        }
    }

    fn session_preamble(encoding: KnownEncoding, via: &str) -> Vec<u8> {
        records(&[
            Record::Version { major: 1, minor: 0 },
            Record::Mode(Mode::Duplex),
            Record::Via(via.into()),
            Record::KnownEncoding(encoding),
            Record::PreambleEnd,
        ])
    }

    /// A request as a relay client sends it: the token in a header and on the `To` address.
    fn request(n: u32) -> ferry_soap::Envelope {
        use ferry_soap::{AddressingVersion, Envelope, RelayAccessToken, SoapVersion};
        let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        env.headers.action = Some("urn:calc/Add".into());
        env.headers.message_id = Some(format!("urn:uuid:00000000-0000-0000-0000-{n:012}"));
        env.headers.to =
            Some("net.tcp://gw/calc?x=1&sb-hc-token=SharedAccessSignature%20sig%3Dsecret".into());
        env.headers.relay_token = Some(RelayAccessToken::new("uuid:1", SECRET));
        env
    }

    /// Everything `Scrub` passes on for `stream` fed in `piece`-byte pieces, and whether it
    /// saw the session end.
    fn scrubbed(mut scrub: Scrub, stream: &[u8], piece: usize) -> Result<(Vec<u8>, bool), Refused> {
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            if scrub.feed(chunk, &mut out)?.is_some() {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// The envelope payloads of a session's stream after its preamble.
    fn payloads(stream: &[u8]) -> Vec<Vec<u8>> {
        let framing = ferry_nmf::Limits::default();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Ok(Some((record, len))) = Record::decode(&stream[pos..], &framing) {
            pos += len;
            match record {
                Record::SizedEnvelope(p) => out.push(p.into_owned()),
                Record::UnsizedEnvelope(chunks) => out.push(chunks.concat()),
                _ => {}
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn every_message_of_a_binary_session_loses_its_credentials_however_it_is_cut() {
        let limits_nbfx = ferry_nbfx::Limits::default();
        let mut writer = ferry_soap::BinarySession::new(limits_nbfx);
        let mut stream = session_preamble(
            KnownEncoding::BinarySession,
            "net.tcp://gw/calc?sb-hc-token=SharedAccessSignature%20sig%3Dsecret",
        );
        let mut list = Vec::new();
        for n in 0..3 {
            let mut env = request(n);
            // Bodies of many reads' size too: they stream past the head.
            let data = ferry_nbfx::Text::Chars("B".repeat(5000 * n as usize).into());
            let add =
                ferry_nbfx::Element::new("", ferry_nbfx::XmlString::inline("Add"), "urn:calc")
                    .with_text(data);
            env.body = ferry_soap::Body::Payload(vec![add]);
            list.push(Record::SizedEnvelope(
                writer.encode(&env).expect("encode").into(),
            ));
        }
        // The last one unsized, in chunks, as a streamed binding sends it.
        let last = writer.encode(&request(3)).expect("encode");
        let (a, b) = last.split_at(40);
        list.push(Record::UnsizedEnvelope(vec![
            a.to_vec().into(),
            b.to_vec().into(),
        ]));
        list.push(Record::End);
        stream.extend(records(&list));
        // Not relayed: a second session on the same connection.
        stream.extend(session_preamble(
            KnownEncoding::BinarySession,
            "net.tcp://gw/x",
        ));

        let (whole, ended) = scrubbed(Scrub::whole_session(limits()), &stream, stream.len())
            .expect("a valid session");
        assert!(ended);
        for piece in [1, 3, 100, 4097, 16 * 1024] {
            let (out, _) = scrubbed(Scrub::whole_session(limits()), &stream, piece).expect("valid");
            assert_eq!(out, whole, "pieces of {piece}");
        }
        assert!(!contains(&whole, "secret"), "a token reached the listener");
        assert!(!contains(&whole, "RelayAccessToken"));
        // What the listener reads is a valid session with everything else intact.
        let preamble_len =
            session_preamble(KnownEncoding::BinarySession, "net.tcp://gw/calc").len();
        assert_eq!(
            &whole[..preamble_len],
            &session_preamble(KnownEncoding::BinarySession, "net.tcp://gw/calc")[..]
        );
        let mut reader = ferry_soap::BinarySession::new(limits_nbfx);
        let got = payloads(&whole[preamble_len..]);
        assert_eq!(got.len(), 4);
        for (n, payload) in got.iter().enumerate() {
            let env = reader.decode(payload).expect("the listener decodes it");
            let mut expected = request(n as u32);
            expected.headers.relay_token = None;
            expected.headers.to = Some("net.tcp://gw/calc?x=1".into());
            assert_eq!(env.headers, expected.headers, "message {n}");
            if n < 3 {
                let ferry_soap::Body::Payload(add) = &env.body else {
                    panic!("message {n} has no body");
                };
                assert_eq!(add[0].text().len(), 5000 * n, "message {n}'s body");
            }
        }
        assert_eq!(whole.last(), Some(&0x07), "ends with End, nothing after");
    }

    #[test]
    fn text_sessions_lose_the_token_in_an_inline_to() {
        let mut stream = session_preamble(KnownEncoding::Soap12Utf8, "net.tcp://gw/calc");
        let text = request(0).encode_text();
        assert!(
            text.contains("&amp;sb-hc-token="),
            "the query is escaped in XML"
        );
        stream.extend(records(&[
            Record::SizedEnvelope(text.as_bytes().to_vec().into()),
            Record::SizedEnvelope(request(1).encode_text().into_bytes().into()),
        ]));
        let after = Scrub::after_preamble(
            &Preamble {
                major: 1,
                minor: 0,
                mode: Mode::Duplex,
                via: "net.tcp://gw/calc".into(),
                encoding: Encoding::Known(KnownEncoding::Soap12Utf8),
                upgrades: Vec::new(),
            },
            limits(),
        );
        let preamble_len = session_preamble(KnownEncoding::Soap12Utf8, "net.tcp://gw/calc").len();
        let (out, ended) = scrubbed(after, &stream[preamble_len..], 7).expect("valid");
        assert!(!ended);
        assert!(!contains(&out, "secret") && !contains(&out, "sb-hc-token"));
        for (n, payload) in payloads(&out).iter().enumerate() {
            let env = ferry_soap::Envelope::decode_text(std::str::from_utf8(payload).unwrap())
                .expect("decodes");
            assert_eq!(env.headers.to.as_deref(), Some("net.tcp://gw/calc?x=1"));
            assert_eq!(
                env.headers.action.as_deref(),
                Some("urn:calc/Add"),
                "message {n}"
            );
        }
    }

    #[test]
    fn a_message_that_cannot_be_read_ends_the_session() {
        let mut writer = ferry_soap::BinarySession::new(ferry_nbfx::Limits::default());
        let mut stream = session_preamble(KnownEncoding::BinarySession, "net.tcp://gw/calc");
        stream.extend(records(&[
            Record::SizedEnvelope(writer.encode(&request(0)).expect("encode").into()),
            // Not binary XML: whatever it hides cannot be found.
            Record::SizedEnvelope(vec![0x00, 0xFF, 0x13, 0x37].into()),
        ]));
        assert_eq!(
            scrubbed(Scrub::whole_session(limits()), &stream, 5).map(|_| ()),
            Err(Refused::Unreadable)
        );
        // Headers longer than the window are not read past it.
        let mut env = request(1);
        env.headers.action = Some("a".repeat(4000));
        let small = ScrubLimits {
            window: 1024,
            ..limits()
        };
        let mut stream = session_preamble(KnownEncoding::Soap12Utf8, "net.tcp://gw/calc");
        stream.extend(records(&[Record::SizedEnvelope(
            env.encode_text().into_bytes().into(),
        )]));
        assert_eq!(
            scrubbed(Scrub::whole_session(small), &stream, 512).map(|_| ()),
            Err(Refused::Unreadable)
        );
    }

    #[test]
    fn sessions_the_gateway_cannot_read_pass_as_sent_after_the_preamble() {
        // An extensible encoding (MTOM, say): its messages are opaque.
        let mut stream = records(&[
            Record::Version { major: 1, minor: 0 },
            Record::Mode(Mode::Duplex),
            Record::Via("net.tcp://gw/calc?sb-hc-token=SharedAccessSignature%20x".into()),
            Record::ExtensibleEncoding("multipart/related".into()),
            Record::PreambleEnd,
        ]);
        let body = records(&[Record::SizedEnvelope(vec![1, 2, 3].into()), Record::End]);
        stream.extend(&body);
        let (out, ended) = scrubbed(Scrub::whole_session(limits()), &stream, 2).expect("valid");
        assert!(ended && out.ends_with(&body));
        assert!(
            !contains(&out, "sb-hc-token"),
            "the Via's token is still taken out"
        );
        // Singleton-sized: raw octets after the encoding record, End bytes included.
        let mut stream = preamble(Mode::SingletonSized);
        stream.extend([0x07, 0x06, 0x07]);
        let (out, ended) = scrubbed(Scrub::whole_session(limits()), &stream, 1).expect("valid");
        assert!(!ended);
        assert_eq!(out, stream);
        // Not framing at all.
        assert_eq!(
            scrubbed(Scrub::whole_session(limits()), b"GET / HTTP/1.1\r\n\r\n", 3).map(|_| ()),
            Err(Refused::NotFraming)
        );
    }
}
