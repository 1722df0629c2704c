//! A sender's net.tcp session on its way to a listener, without what the listener must not
//! see ([`Scrub`]); where it ends is `ferry_nmf`'s [`Boundary`]'s to say.
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
//! Sessions in an encoding the gateway cannot read at all (UTF-16 text, MTOM, compressed
//! binary, any other content type) pass as sent
//! past their preamble; the gateway cannot have authenticated such a sender from a message
//! either, only from its Via.

use ferry_nbfx::SessionDictionary;
use ferry_nmf::boundary::{Boundary, Step};
use ferry_nmf::{Mode, Preamble};

use crate::first_message::{self, Head, Probed};

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

impl ScrubLimits {
    /// The limits a gateway configured with `limits` reads a sender's session under: a
    /// message's head within `max_nettcp_first_headers`, documents and envelopes within
    /// `max_nettcp_first_envelope`.
    pub(crate) fn of(limits: &crate::config::Limits) -> Self {
        Self {
            window: limits.max_nettcp_first_headers,
            nbfx: ferry_nbfx::Limits {
                max_document_bytes: limits.max_nettcp_first_envelope,
                ..ferry_nbfx::Limits::default()
            },
            framing: ferry_nmf::Limits {
                max_envelope_bytes: limits.max_nettcp_first_envelope,
                ..ferry_nmf::Limits::default()
            },
        }
    }
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
        self.boundary = Boundary::after_preamble(singleton_sized);
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
                    .map_err(|_| Refused::NotFraming)?
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
        let Some((preamble, end)) = first_message::read_preamble(&self.pending, framing)
            .map_err(|_| Refused::NotFraming)?
        else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_nmf::{Encoding, KnownEncoding, Record};

    const SECRET: &str = "SharedAccessSignature sr=x&sig=secret&se=1&skn=k";

    fn limits() -> ScrubLimits {
        ScrubLimits {
            window: 64 * 1024,
            nbfx: ferry_nbfx::Limits::default(),
            framing: ferry_nmf::Limits::default(),
        }
    }

    fn session_preamble(encoding: KnownEncoding, via: &str) -> Vec<u8> {
        Record::encode_all(&[
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
        stream.extend(Record::encode_all(&list));
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
        stream.extend(Record::encode_all(&[
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
        stream.extend(Record::encode_all(&[
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
        stream.extend(Record::encode_all(&[Record::SizedEnvelope(
            env.encode_text().into_bytes().into(),
        )]));
        assert_eq!(
            scrubbed(Scrub::whole_session(small), &stream, 512).map(|_| ()),
            Err(Refused::Unreadable)
        );
    }

    #[test]
    fn sessions_the_gateway_cannot_read_pass_as_sent_after_the_preamble() {
        // An encoding the gateway does not read (MTOM, say): its messages are opaque.
        let mut stream = Record::encode_all(&[
            Record::Version { major: 1, minor: 0 },
            Record::Mode(Mode::Duplex),
            Record::Via("net.tcp://gw/calc?sb-hc-token=SharedAccessSignature%20x".into()),
            Record::ExtensibleEncoding("multipart/related".into()),
            Record::PreambleEnd,
        ]);
        let body = Record::encode_all(&[Record::SizedEnvelope(vec![1, 2, 3].into()), Record::End]);
        stream.extend(&body);
        let (out, ended) = scrubbed(Scrub::whole_session(limits()), &stream, 2).expect("valid");
        assert!(ended && out.ends_with(&body));
        assert!(
            !contains(&out, "sb-hc-token"),
            "the Via's token is still taken out"
        );
        // Singleton-sized: raw octets after the encoding record, End bytes included.
        let mut stream = Record::encode_all(&[
            Record::Version { major: 1, minor: 0 },
            Record::Mode(Mode::SingletonSized),
            Record::Via("net.tcp://gw/calc".into()),
            Record::KnownEncoding(KnownEncoding::Binary),
        ]);
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
