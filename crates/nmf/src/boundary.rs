//! Where a session ends in a client's stream of framing bytes, found as the bytes pass by:
//! a relay in front of a net.tcp service reads a session's records without buffering or
//! decoding them, to pass on exactly one session (and, when it reads messages itself, to
//! know where each one starts).
//!
//! ```text
//!  Version Mode Via Encoding PreambleEnd  06 size [payload…]  05 size [chunk] … 0  07 │ next session…
//!  └ fixed fields, sized strings ┘        └ skipped in one step, however large ┘   End └ not this one
//! ```
//!
//! The scanner keeps a few bytes of state and allocates nothing; its answer does not depend on
//! how the stream is cut into reads.

use crate::RecordType;

/// Bytes that are not MC-NMF framing where a record must start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bytes that are not MC-NMF framing")]
pub struct NotFraming;

/// What [`Boundary::step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All of the bytes are part of the session, and no envelope record starts in them.
    All,
    /// The session's End record finishes just before this offset.
    Ended(usize),
    /// An envelope record (sized or unsized) starts at this offset.
    Message(usize),
}

/// How far a caller read an envelope record itself: what of it the scanner still has to pass
/// over ([`Boundary::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Nothing: the record is whole; records follow.
    Records,
    /// The rest of a sized envelope's payload.
    Payload(u64),
    /// The rest of an unsized envelope's chunk, then more chunks.
    Chunk(u64),
    /// More chunks of an unsized envelope, starting with a size.
    Chunks,
}

/// MC-NMF 2.2.3.6 Unsized Envelope Record.
const UNSIZED: u8 = RecordType::UnsizedEnvelope.byte();
/// MC-NMF 2.2.3.7 Sized Envelope Record.
const SIZED: u8 = RecordType::SizedEnvelope.byte();

/// Follows the record boundaries of a client's byte stream without buffering it, to find
/// where its session ends (and, when asked, where each envelope record starts). WCF reuses a
/// pooled connection for the next session to the same host and port (End, End, then a new
/// preamble): a relay that routed and authorised the first session must pass on nothing
/// after its End.
#[derive(Debug, Default)]
pub struct Boundary {
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
    /// A scanner for a session whose preamble was read elsewhere: records follow (raw octets
    /// in singleton-sized mode).
    pub fn after_preamble(singleton_sized: bool) -> Self {
        Self {
            state: if singleton_sized {
                Scan::Raw
            } else {
                Scan::Record
            },
            singleton_sized,
        }
    }

    /// True when the stream may end here without losing part of a record: between records,
    /// after End, or anywhere in singleton-sized raw octets (which run to the end).
    pub fn between_records(&self) -> bool {
        matches!(self.state, Scan::Record | Scan::Ended | Scan::Raw)
    }

    /// True once the session's End record has been seen.
    pub fn ended(&self) -> bool {
        self.state == Scan::Ended
    }

    /// Consumes `data`: `Ok(Some(n))` when the End record finishes at `data[n - 1]`
    /// (`data[n..]` belongs to another session), `Ok(None)` when `data` is all part of this
    /// one.
    ///
    /// # Errors
    ///
    /// [`NotFraming`] for bytes that are not framing (the scanner stays where it failed).
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, NotFraming> {
        Ok(match self.step(data, false)? {
            Step::Ended(n) => Some(n),
            Step::All | Step::Message(_) => None,
        })
    }

    /// As [`feed`](Self::feed), and with `messages` it stops in front of an envelope record
    /// ([`Step::Message`]), leaving that byte unread: a caller that reads the record itself
    /// then says how far it got with [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// [`NotFraming`], as for [`feed`](Self::feed).
    pub fn step(&mut self, data: &[u8], messages: bool) -> Result<Step, NotFraming> {
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
                    _ => return Err(NotFraming),
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
                        return Err(NotFraming);
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

    /// Takes up an envelope record that the caller read itself (from [`Step::Message`]) as
    /// far as `rest` says.
    pub fn resume(&mut self, rest: Resume) {
        self.state = match rest {
            Resume::Records => Scan::Record,
            Resume::Payload(n) => Scan::Skip(n, Sized::One),
            Resume::Chunk(n) => Scan::Skip(n, Sized::Chunk),
            Resume::Chunks => Scan::Size(0, 0, Sized::Chunk),
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
    use crate::{KnownEncoding, Mode, Record};

    fn preamble(mode: Mode) -> Vec<u8> {
        let mut out = Record::encode_all(&[
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
        first.extend(Record::encode_all(&[
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
        stream.extend(Record::encode_all(&[Record::SizedEnvelope(
            vec![1; 10].into(),
        )]));
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
                    Err(NotFraming) => panic!("valid framing refused"),
                }
            }
            assert_eq!(relayed, first, "pieces of {piece}");
        }
    }

    /// Feeds `data` in pieces of `piece` bytes: where the session ends in `data`, as
    /// [`Boundary::feed`] says for the whole.
    fn feed_in_pieces(data: &[u8], piece: usize) -> Result<Option<usize>, NotFraming> {
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
            data.extend(Record::encode_all(&list));
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
        assert_eq!(Boundary::default().feed(b"GET / HTTP/1.1"), Err(NotFraming));
        // A size varint longer than five bytes.
        assert_eq!(
            Boundary::default().feed(&[0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(NotFraming)
        );
    }

    #[test]
    fn messages_are_found_and_taken_up_where_their_reader_left_them() {
        let mut stream = preamble(Mode::Duplex);
        let start = stream.len();
        stream.extend(Record::encode_all(&[
            Record::SizedEnvelope(vec![0x07; 10].into()),
            Record::End,
        ]));
        let mut b = Boundary::default();
        assert_eq!(b.step(&stream, true), Ok(Step::Message(start)));
        // The caller read the record type, its size and 4 payload bytes.
        b.resume(Resume::Payload(6));
        assert_eq!(b.step(&stream[start + 6..], true), Ok(Step::Ended(7)));
        assert!(b.ended());
    }
}
