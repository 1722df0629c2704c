//! The MC-NBFS static dictionary and the MC-NBFSE per-connection session dictionaries.
//!
//! A DictionaryString on the wire is a MultiByteInt31 id: even ids index the static dictionary
//! (`id / 2`), odd ids the session dictionary (`(id - 1) / 2`). MC-NBFSE adds, before every
//! document of an `application/soap+msbinsession1` envelope, a string table announcing the next
//! session strings; ids continue across envelopes of one connection and direction and are never
//! reset. The reader side is [`SessionDictionary`], the writer side [`WriterSession`].

use std::{collections::HashMap, sync::Arc};

use crate::{
    error::DecodeError,
    limits::{Limit, Limits},
    varint,
};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/static_dictionary.rs"));
}

/// A DictionaryString id as written on the wire (MC-NBFX 2.1.3): even = static, odd = session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DictionaryId(pub u32);

impl DictionaryId {
    /// True for an MC-NBFS static dictionary id (even).
    pub fn is_static(self) -> bool {
        self.0.is_multiple_of(2)
    }

    /// The id of session string number `index` (0-based): `2 * index + 1`.
    pub fn session(index: u32) -> Self {
        Self(index.saturating_mul(2).saturating_add(1))
    }
}

/// The MC-NBFS static dictionary (487 strings, wire ids 0x00–0x3CC), embedded at build time from
/// `data/nbfs-static-dictionary.tsv`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StaticDictionary;

impl StaticDictionary {
    /// Number of strings.
    pub const LEN: usize = generated::STATIC_STRINGS.len();

    /// The string with wire id `id`, if `id` is even and defined.
    pub fn lookup(id: DictionaryId) -> Option<&'static str> {
        if !id.is_static() {
            return None;
        }
        generated::STATIC_STRINGS.get((id.0 / 2) as usize).copied()
    }

    /// The wire id of `text`, if it is in the dictionary (lowest id when listed twice).
    pub fn id_of(text: &str) -> Option<DictionaryId> {
        generated::STATIC_SORTED
            .binary_search_by(|(s, _)| (*s).cmp(text))
            .ok()
            .map(|i| DictionaryId(generated::STATIC_SORTED[i].1))
    }
}

/// Reader side of one direction's MC-NBFSE session dictionary.
///
/// Feed it each envelope payload with [`read_table`](Self::read_table), which adds the strings
/// the envelope announces and returns the document that follows; then read the document with
/// [`Reader::with_session`](crate::Reader::with_session).
#[derive(Clone, Debug, Default)]
pub struct SessionDictionary {
    /// Shared, so that a document's references to a string need no copy of it.
    strings: Vec<Arc<str>>,
    /// Table bytes charged so far, as WCF's reader charges them (the whole table size).
    bytes: usize,
    max_bytes: usize,
    poisoned: bool,
}

/// A [`SessionDictionary`]'s state at one point: see [`SessionDictionary::checkpoint`].
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint {
    strings: usize,
    bytes: usize,
    poisoned: bool,
}

impl SessionDictionary {
    /// An empty dictionary charging at most `limits.max_session_bytes`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            strings: Vec::new(),
            bytes: 0,
            max_bytes: limits.max_session_bytes,
            poisoned: false,
        }
    }

    /// Session string by wire id (odd).
    pub fn lookup(&self, id: DictionaryId) -> Option<&str> {
        if id.is_static() {
            return None;
        }
        self.strings.get((id.0 / 2) as usize).map(|s| &**s)
    }

    /// The shared copy of a session string, for records that refer to it.
    pub(crate) fn shared(&self, id: DictionaryId) -> Option<Arc<str>> {
        if id.is_static() {
            return None;
        }
        self.strings.get((id.0 / 2) as usize).cloned()
    }

    /// Number of strings announced so far.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when no string has been announced.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Table bytes charged against the quota so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// All strings with their wire ids, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (DictionaryId, &str)> {
        self.strings
            .iter()
            .enumerate()
            .map(|(i, s)| (DictionaryId::session(i as u32), &**s))
    }

    /// Where the dictionary stands now, to [`restore`](Self::restore) it to after reading a
    /// table that must not count after all (an envelope read before all of it had arrived).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            strings: self.strings.len(),
            bytes: self.bytes,
            poisoned: self.poisoned,
        }
    }

    /// Forgets every string added since `checkpoint` was taken (and an error since then).
    pub fn restore(&mut self, checkpoint: Checkpoint) {
        self.strings.truncate(checkpoint.strings);
        self.bytes = checkpoint.bytes;
        self.poisoned = checkpoint.poisoned;
    }

    /// Parses the MC-NBFSE string table at the front of an envelope `payload` (MB31 table size,
    /// then MB31-length-prefixed UTF-8 strings), adds the strings, and returns the number of
    /// table bytes, so the document is `&payload[returned..]`.
    ///
    /// # Errors
    ///
    /// A malformed table, or one that takes the dictionary past its quota, is an error and
    /// poisons the dictionary (every later call fails too), as in WCF: the ids of later
    /// envelopes could no longer be trusted.
    pub fn read_table(&mut self, payload: &[u8]) -> Result<usize, DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Invalid {
                offset: 0,
                what: "session dictionary after an earlier error",
            });
        }
        let result = self.read_table_inner(payload);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn read_table_inner(&mut self, payload: &[u8]) -> Result<usize, DecodeError> {
        let (size, n) = match varint::decode(payload) {
            varint::Decoded::Value(v, n) => (v as usize, n),
            varint::Decoded::Incomplete => {
                return Err(DecodeError::Truncated {
                    offset: 0,
                    expected: "string table size",
                });
            }
            varint::Decoded::Overflow => return Err(DecodeError::Varint { offset: 0 }),
        };
        let total = self.bytes.saturating_add(size);
        if total > self.max_bytes {
            return Err(DecodeError::LimitExceeded {
                offset: 0,
                limit: Limit::SessionBytes,
                max: self.max_bytes,
            });
        }
        let end =
            n.checked_add(size)
                .filter(|&e| e <= payload.len())
                .ok_or(DecodeError::Truncated {
                    offset: payload.len(),
                    expected: "string table entries",
                })?;
        let mut pos = n;
        let mut added = Vec::new();
        while pos < end {
            let (len, k) = match varint::decode(&payload[pos..end]) {
                varint::Decoded::Value(v, k) => (v as usize, k),
                varint::Decoded::Incomplete => {
                    return Err(DecodeError::Truncated {
                        offset: end,
                        expected: "string table entry length",
                    });
                }
                varint::Decoded::Overflow => return Err(DecodeError::Varint { offset: pos }),
            };
            let start = pos + k;
            let stop =
                start
                    .checked_add(len)
                    .filter(|&s| s <= end)
                    .ok_or(DecodeError::Truncated {
                        offset: end,
                        expected: "string table entry",
                    })?;
            let text =
                std::str::from_utf8(&payload[start..stop]).map_err(|_| DecodeError::Invalid {
                    offset: start,
                    what: "UTF-8 in string table",
                })?;
            added.push(Arc::<str>::from(text));
            pos = stop;
        }
        // Only commit once the whole table parsed, so an error never leaves half a table.
        self.strings.extend(added);
        self.bytes = total;
        Ok(end)
    }
}

/// Writer side of one direction's MC-NBFSE session dictionary.
///
/// [`id_for`](Self::id_for) gives a string's session id, assigning the next one (1, 3, 5, …) on
/// first use while the quota allows; [`write_table`](Self::write_table) emits the strings added
/// since the last call as the envelope's string table. Like WCF's
/// `XmlBinaryWriterSessionWithQuota`, each string costs `len + MB31 size of len` and once the next
/// string does not fit the writer falls back to literal strings (the dictionary is never reset).
#[derive(Clone, Debug)]
pub struct WriterSession {
    ids: HashMap<String, DictionaryId>,
    next: u32,
    pending: Vec<String>,
    bytes: usize,
    max_bytes: usize,
}

impl Default for WriterSession {
    fn default() -> Self {
        Self::new(crate::limits::DEFAULT_MAX_SESSION_BYTES)
    }
}

impl WriterSession {
    /// A new session charging at most `max_bytes` (WCF's `MaxSessionSize`, default 2048).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            ids: HashMap::new(),
            next: 0,
            pending: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The session id of `text`, adding it if it is new and fits the quota.
    pub fn id_for(&mut self, text: &str) -> Option<DictionaryId> {
        if let Some(id) = self.ids.get(text) {
            return Some(*id);
        }
        let len = u32::try_from(text.len())
            .ok()
            .filter(|&l| l <= varint::MAX)?;
        let cost = text.len() + varint::encoded_len(len);
        if self.bytes + cost > self.max_bytes {
            return None;
        }
        self.bytes += cost;
        let id = DictionaryId::session(self.next);
        self.next += 1;
        self.ids.insert(text.to_owned(), id);
        self.pending.push(text.to_owned());
        Some(id)
    }

    /// Appends the string table for the strings added since the last call (just `00` when none).
    pub fn write_table(&mut self, out: &mut Vec<u8>) {
        let size: usize = self
            .pending
            .iter()
            .map(|s| s.len() + varint::encoded_len(s.len() as u32))
            .sum();
        varint::encode(size as u32, out);
        for s in self.pending.drain(..) {
            varint::encode(s.len() as u32, out);
            out.extend_from_slice(s.as_bytes());
        }
    }

    /// Bytes charged against the quota so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;
    use test_case::test_case;

    use super::*;

    #[test_case(0x00, "mustUnderstand")]
    #[test_case(0x02, "Envelope")]
    #[test_case(0x04, "http://www.w3.org/2003/05/soap-envelope")]
    #[test_case(0x0E, "Body")]
    #[test_case(0x2A, "Address")]
    #[test_case(0xA2, "")]
    #[test_case(0x1A8, " http://schemas.xmlsoap.org/ws/2005/02/trust/tlsnego")]
    #[test_case(0x372, "http://www.w3.org/2001/XMLSchema-instance")]
    #[test_case(0x3CC, "detail")]
    fn static_ids(id: u32, text: &str) {
        assert_eq!(StaticDictionary::lookup(DictionaryId(id)), Some(text));
        assert_eq!(StaticDictionary::id_of(text), Some(DictionaryId(id)));
    }

    #[test]
    fn static_bounds() {
        assert_eq!(StaticDictionary::LEN, 487);
        assert_eq!(StaticDictionary::lookup(DictionaryId(0x3CE)), None);
        assert_eq!(StaticDictionary::lookup(DictionaryId(1)), None);
        assert_eq!(StaticDictionary::id_of("not there"), None);
    }

    #[test]
    fn reads_tables_across_envelopes() {
        let mut d = SessionDictionary::new(&Limits::default());
        assert_eq!(d.read_table(&hex!("04 01 61 01 62 56")), Ok(5));
        assert_eq!(d.read_table(&hex!("00 56")), Ok(1));
        assert_eq!(
            d.read_table(&hex!("0A 09 41 64 64 52 65 73 75 6C 74")),
            Ok(11)
        );
        assert_eq!(d.lookup(DictionaryId(1)), Some("a"));
        assert_eq!(d.lookup(DictionaryId(3)), Some("b"));
        assert_eq!(d.lookup(DictionaryId(5)), Some("AddResult"));
        assert_eq!(d.lookup(DictionaryId(7)), None);
        assert_eq!(d.bytes(), 14);
    }

    #[test_case(&hex!(""); "empty")]
    #[test_case(&hex!("04 01 61 01"); "truncated table")]
    #[test_case(&hex!("04 01 61 05 62"); "entry past table")]
    #[test_case(&hex!("02 01 FF"); "bad utf8")]
    #[test_case(&hex!("FF FF FF FF 0F"); "size overflow")]
    fn malformed_tables_poison(bytes: &[u8]) {
        let mut d = SessionDictionary::new(&Limits::default());
        assert!(d.read_table(bytes).is_err());
        assert!(d.read_table(&hex!("00")).is_err());
        assert!(d.is_empty());
    }

    #[test]
    fn reader_quota() {
        let limits = Limits {
            max_session_bytes: 4,
            ..Limits::default()
        };
        let mut d = SessionDictionary::new(&limits);
        assert_eq!(d.read_table(&hex!("04 01 61 01 62")), Ok(5));
        assert!(matches!(
            d.read_table(&hex!("02 01 63")),
            Err(DecodeError::LimitExceeded {
                limit: Limit::SessionBytes,
                ..
            })
        ));
    }

    #[test]
    fn writer_assigns_odd_ids_and_respects_quota() {
        let mut w = WriterSession::new(6);
        assert_eq!(w.id_for("a"), Some(DictionaryId(1)));
        assert_eq!(w.id_for("b"), Some(DictionaryId(3)));
        assert_eq!(w.id_for("a"), Some(DictionaryId(1)));
        let mut out = Vec::new();
        w.write_table(&mut out);
        assert_eq!(out, hex!("04 01 61 01 62"));
        assert_eq!(
            w.id_for("cd"),
            None,
            "3 more bytes would pass the quota of 6"
        );
        assert_eq!(w.id_for("c"), Some(DictionaryId(5)));
        out.clear();
        w.write_table(&mut out);
        assert_eq!(out, hex!("02 01 63"));
        out.clear();
        w.write_table(&mut out);
        assert_eq!(out, hex!("00"));
    }
}
