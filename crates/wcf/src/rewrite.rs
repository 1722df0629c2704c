//! Re-addressing a net.tcp session on its way to another service, sans-I/O.
//!
//! A relay listener that forwards a WCF net.tcp session to a legacy service must change where
//! the session says it is going: the preamble's Via and, in every envelope, the WS-Addressing
//! `To` header (Mono drops any message whose `To` differs from its endpoint address, and .NET
//! faults it unless the service filters on any address). It also takes the relay's
//! `RelayAccessToken` header out, so a token meant for the gateway never reaches the origin.
//! Everything else passes as the client wrote it, but for envelopes whose Action the caller
//! asked to drop ([`ClientRewriter::drop_action`], e.g. a relay's own session messages).
//!
//! ```text
//!  client bytes ──► ClientRewriter::handle_input ──► poll_event (preamble, envelope, end)
//!                   Via → target.via; each envelope: decode with the client's session
//!                   dictionary, To → target.to, drop RelayAccessToken, encode with ours
//!  origin bytes ◄── ClientRewriter::poll_transmit
//!
//!  origin bytes ──► ServerStream::handle_input ──► the same bytes, whole records only
//! ```
//!
//! The server→client direction is not rewritten (its envelopes are addressed to the client's
//! anonymous ReplyTo), but [`ServerStream`] cuts it at record boundaries, so a relay can stop
//! it between two records and append a Fault record of its own.
//!
//! Envelopes in the binary session encoding (`application/soap+msbinsession1`, NetTcpBinding's
//! default) are decoded with one MC-NBFSE dictionary for what the client announced and encoded
//! with a second one for what the origin has been told, so ids stay consistent on both legs
//! even when the rewrite adds or removes strings. The plain binary and UTF-8 text encodings
//! are rewritten too; any other encoding, the singleton-sized mode (raw octets, no records) and
//! stream upgrades (TLS, Windows auth: the bytes after them are encrypted) are refused with the
//! framing fault a WCF server would send.

use std::borrow::Cow;
use std::collections::VecDeque;

use ferry_nbfx::{
    DictionaryUse, Document, Element, Node, SessionDictionary, Text, WriterSession, XmlOptions,
    XmlString,
};
use ferry_nmf::{
    Encoding, FaultCode, MessageFormat, Mode, PeerIncompatible, PeerMisbehaved, Record, RecordType,
};
use ferry_soap::relay::RELAY_CONNECT_NS;
use ferry_soap::version::{SOAP11_NS, SOAP12_NS, WSA10_NS, WSA200408_NS};

/// Default largest envelope a rewriter accepts: 4 MiB. Each envelope is held whole, twice (the
/// bytes and the decoded tree), so this bounds a session's memory; raise it for services that
/// move larger messages (`RewriteLimits::with_max_envelope`).
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;

/// Deepest element nesting accepted in a rewritten envelope: twice the .NET `MaxDepth`
/// default, since the envelope and header add two levels above the data contract.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Where a rewritten session goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The Via to announce, e.g. `net.tcp://10.0.0.5:808/calc/tcp`.
    pub via: String,
    /// The address every envelope's `To` header gets (normally the same URI).
    pub to: String,
}

impl Target {
    /// A target whose Via and `To` are both `address` (what a WCF client of that endpoint
    /// would send).
    pub fn new(address: impl Into<String>) -> Self {
        let address = address.into();
        Self {
            via: address.clone(),
            to: address,
        }
    }
}

/// Size limits of a rewriter, framing and XML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewriteLimits {
    /// Framing limits: envelope size, Via, content type and fault lengths.
    pub framing: ferry_nmf::Limits,
    /// Binary and text XML limits for decoding one envelope.
    pub xml: ferry_nbfx::Limits,
}

impl Default for RewriteLimits {
    /// [`DEFAULT_MAX_ENVELOPE_BYTES`] for envelopes, strings and arrays, the framing defaults
    /// for the rest, and the .NET session dictionary quota.
    fn default() -> Self {
        Self::with_max_envelope(DEFAULT_MAX_ENVELOPE_BYTES)
    }
}

impl RewriteLimits {
    /// Limits letting envelopes, and any string or byte array inside them, grow to `bytes`.
    pub fn with_max_envelope(bytes: usize) -> Self {
        Self {
            framing: ferry_nmf::Limits {
                max_envelope_bytes: bytes,
                ..ferry_nmf::Limits::default()
            },
            xml: ferry_nbfx::Limits {
                max_document_bytes: bytes,
                max_string_bytes: bytes,
                max_array_length: bytes,
                max_depth: DEFAULT_MAX_DEPTH,
                ..ferry_nbfx::Limits::default()
            },
        }
    }
}

/// A session the rewriter cannot pass on. [`RewriteError::fault`] gives the framing fault to
/// answer the client with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// Malformed framing bytes, or a record over a framing limit.
    #[error("framing: {0}")]
    Framing(#[from] ferry_nmf::DecodeError),
    /// Well-formed records in an order MC-NMF does not allow.
    #[error(transparent)]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// A version, mode, encoding or upgrade this rewriter cannot carry.
    #[error(transparent)]
    PeerIncompatible(#[from] PeerIncompatible),
    /// An envelope that does not decode in the announced encoding.
    #[error("envelope {index}: {source}")]
    Envelope {
        /// 0-based index of the envelope in the session.
        index: usize,
        /// Why it does not decode.
        #[source]
        source: EnvelopeError,
    },
    /// An earlier error ended the session; nothing more is read.
    #[error("the session already failed")]
    Failed,
}

/// Why one envelope could not be rewritten.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Malformed binary XML or string table.
    #[error("binary xml: {0}")]
    Binary(#[from] ferry_nbfx::DecodeError),
    /// Malformed XML text.
    #[error("xml text: {0}")]
    Text(#[from] ferry_nbfx::XmlError),
    /// Text that is not UTF-8.
    #[error("xml text is not UTF-8")]
    Utf8,
    /// The document's root is not a SOAP 1.1 or 1.2 `Envelope`.
    #[error("root element is not a SOAP envelope")]
    NotAnEnvelope,
    /// The rewritten tree cannot be written back (a string past the binary format's range).
    #[error("cannot re-encode: {0}")]
    Encode(#[from] ferry_nbfx::EncodeError),
}

impl RewriteError {
    /// The Fault record a WCF server sends for this error (MC-NMF 2.2.3.9): size limits and
    /// unsupported versions, modes, encodings and upgrades as WCF names them; an envelope that
    /// does not decode is `ContentTypeInvalid` (it is not in the announced content type), and
    /// records out of order are `UnsupportedMode` (the client does not speak the mode it chose).
    pub fn fault(&self) -> FaultCode {
        FaultCode::from(self)
    }
}

impl From<&RewriteError> for FaultCode {
    fn from(e: &RewriteError) -> Self {
        use ferry_nmf::Limit;
        match e {
            RewriteError::Framing(ferry_nmf::DecodeError::LimitExceeded { limit, .. }) => {
                match limit {
                    Limit::Via => Self::ViaTooLong,
                    Limit::ContentType => Self::ContentTypeTooLong,
                    _ => Self::MaxMessageSizeExceeded,
                }
            }
            RewriteError::PeerIncompatible(PeerIncompatible::UnsupportedVersion { .. }) => {
                Self::UnsupportedVersion
            }
            RewriteError::PeerIncompatible(PeerIncompatible::UnsupportedMode(_)) => {
                Self::UnsupportedMode
            }
            RewriteError::PeerMisbehaved(PeerMisbehaved::UnexpectedRecord {
                record: RecordType::UpgradeRequest,
                ..
            }) => Self::UpgradeInvalid,
            RewriteError::PeerMisbehaved(_) => Self::UnsupportedMode,
            RewriteError::Envelope {
                source: EnvelopeError::Binary(ferry_nbfx::DecodeError::LimitExceeded { .. }),
                ..
            } => Self::MaxMessageSizeExceeded,
            RewriteError::PeerIncompatible(_)
            | RewriteError::Framing(_)
            | RewriteError::Envelope { .. }
            | RewriteError::Failed => Self::ContentTypeInvalid,
        }
    }
}

/// What the rewriter saw in the client's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewriteEvent {
    /// The preamble is complete (and was passed on with the target's Via).
    Preamble {
        /// The Via the client sent.
        via: String,
        /// The mode.
        mode: Mode,
        /// The content type of the encoding.
        content_type: String,
    },
    /// One envelope was rewritten and passed on.
    Envelope {
        /// 0-based index in the session.
        index: usize,
        /// Its `Action` header, if any.
        action: Option<String>,
        /// The `To` the client wrote (`None` when it had none; then none is added).
        to: Option<String>,
        /// A `RelayAccessToken` header was removed.
        token_removed: bool,
    },
    /// An envelope whose Action [`ClientRewriter::drop_action`] named was read (its string
    /// table still counts for the client's later envelopes) and not passed on.
    Dropped {
        /// 0-based index in the session.
        index: usize,
        /// Its `Action` header.
        action: String,
    },
    /// The client sent End.
    End,
}

/// Client-side preamble progress and the open session.
#[derive(Clone, Debug)]
enum State {
    /// Expecting Version (also after End: a client may reuse the connection).
    Version,
    /// Expecting Mode.
    Mode,
    /// Expecting Via.
    Via { mode: Mode },
    /// Expecting an encoding record.
    Encoding { mode: Mode, via: String },
    /// Expecting PreambleEnd.
    PreambleEnd {
        mode: Mode,
        via: String,
        content_type: String,
        codec: MessageFormat,
    },
    /// Envelopes flow.
    Open { mode: Mode, codec: MessageFormat },
    /// An error ended the session.
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Version => "Version",
            Self::Mode => "Mode",
            Self::Via { .. } => "Via",
            Self::Encoding { .. } => "Encoding",
            Self::PreambleEnd { .. } => "PreambleEnd",
            Self::Open { .. } => "Open",
            Self::Failed => "Failed",
        }
    }
}

/// The client→origin direction of one net.tcp connection. See the [module docs](self).
#[derive(Debug)]
pub struct ClientRewriter {
    target: Target,
    limits: RewriteLimits,
    state: State,
    /// What the client has announced in its string tables.
    reader: SessionDictionary,
    /// What we have announced to the origin.
    writer: WriterSession,
    envelopes: usize,
    /// Actions of envelopes that are read but not passed on.
    dropped: Vec<String>,
    transmit: Vec<u8>,
    events: VecDeque<RewriteEvent>,
}

impl ClientRewriter {
    /// A rewriter for one connection.
    pub fn new(target: Target, limits: RewriteLimits) -> Self {
        Self {
            reader: SessionDictionary::new(&limits.xml),
            writer: WriterSession::new(ferry_nbfx::limits::DEFAULT_MAX_SESSION_BYTES),
            target,
            limits,
            state: State::Version,
            envelopes: 0,
            dropped: Vec::new(),
            transmit: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Takes envelopes whose `Action` is `action` out of the stream (none by default), e.g. a
    /// relay's own one-way messages, which an origin has no operation for. Such an envelope
    /// is still read, so the strings its table announces resolve in the client's later
    /// envelopes; nothing of it is written, and a string it would have announced to the origin
    /// is announced with the first envelope passed on that uses it. Every other envelope is
    /// rewritten as without this. Dropping is only sound for one-way messages: nothing will
    /// answer them.
    ///
    /// In the singleton-unsized (streamed) mode a session carries exactly one envelope, so
    /// dropping it leaves the origin a preamble followed directly by End, a session with no
    /// message; what the origin does with that (close, fault) is up to it.
    pub fn drop_action(&mut self, action: impl Into<String>) -> &mut Self {
        self.dropped.push(action.into());
        self
    }

    /// Reads whole records from the front of `input` and returns how many bytes they took; the
    /// caller keeps the rest and calls again with more bytes appended. A record is consumed
    /// only once complete, so a caller's buffer holds at most one record (whose size the
    /// framing limits check from its size field, before it is buffered). Afterwards drain
    /// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event).
    ///
    /// # Errors
    ///
    /// [`RewriteError`]; the rewriter is then failed and every later call returns
    /// [`RewriteError::Failed`]. Output produced before the failing record is still in
    /// `poll_transmit`.
    pub fn handle_input(&mut self, input: &[u8]) -> Result<usize, RewriteError> {
        if matches!(self.state, State::Failed) {
            return Err(RewriteError::Failed);
        }
        let mut used = 0;
        while used < input.len() {
            let decoded =
                Record::decode(&input[used..], &self.limits.framing).map_err(|e| e.shifted(used));
            let (record, len) = match decoded {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(self.fail(e.into())),
            };
            if let Err(e) = self.on_record(record) {
                return Err(self.fail(e));
            }
            used += len;
        }
        Ok(used)
    }

    /// Appends the bytes to send to the origin. Call after every
    /// [`handle_input`](Self::handle_input).
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.transmit);
    }

    /// The next thing learnt from the client.
    pub fn poll_event(&mut self) -> Option<RewriteEvent> {
        self.events.pop_front()
    }

    /// True once the preamble has been passed on and envelopes flow.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    fn fail(&mut self, e: RewriteError) -> RewriteError {
        self.state = State::Failed;
        e
    }

    /// Every transition of the client direction: `(state, record)` → new state, output.
    fn on_record(&mut self, record: Record<'_>) -> Result<(), RewriteError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let unexpected = |state: &State, record: &Record<'_>| {
            RewriteError::from(PeerMisbehaved::UnexpectedRecord {
                state: state.name(),
                record: record.record_type(),
            })
        };
        self.state = match (state, record) {
            (State::Version, r @ Record::Version { major, minor }) => {
                if major != 1 {
                    return Err(PeerIncompatible::UnsupportedVersion { major, minor }.into());
                }
                // A new preamble after End reuses the connection: fresh dictionaries.
                self.reader = SessionDictionary::new(&self.limits.xml);
                self.writer = WriterSession::new(ferry_nbfx::limits::DEFAULT_MAX_SESSION_BYTES);
                r.encode(&mut self.transmit);
                State::Mode
            }
            (State::Mode, Record::Mode(mode)) => match mode {
                Mode::Duplex | Mode::Simplex | Mode::SingletonUnsized => {
                    Record::Mode(mode).encode(&mut self.transmit);
                    State::Via { mode }
                }
                other => return Err(PeerIncompatible::UnsupportedMode(other.byte()).into()),
            },
            (State::Via { mode }, Record::Via(via)) => {
                Record::Via(Cow::Borrowed(&self.target.via)).encode(&mut self.transmit);
                State::Encoding {
                    mode,
                    via: via.into_owned(),
                }
            }
            (State::Encoding { mode, via }, r @ Record::KnownEncoding(known)) => {
                let content_type = known.content_type().unwrap_or_default();
                let Some(codec) = Encoding::Known(known).message_format() else {
                    return Err(PeerIncompatible::UnsupportedEncoding(
                        known
                            .content_type()
                            .map_or_else(|| format!("0x{:02x}", known.byte()), str::to_owned),
                    )
                    .into());
                };
                r.encode(&mut self.transmit);
                State::PreambleEnd {
                    mode,
                    via,
                    content_type: content_type.to_owned(),
                    codec,
                }
            }
            (State::Encoding { mode, via }, Record::ExtensibleEncoding(ct)) => {
                let codec = MessageFormat::of_content_type(&ct)
                    .ok_or_else(|| PeerIncompatible::UnsupportedEncoding(ct.to_string()))?;
                Record::ExtensibleEncoding(Cow::Borrowed(&ct)).encode(&mut self.transmit);
                State::PreambleEnd {
                    mode,
                    via,
                    content_type: ct.into_owned(),
                    codec,
                }
            }
            (
                State::PreambleEnd {
                    mode,
                    via,
                    content_type,
                    codec,
                },
                Record::PreambleEnd,
            ) => {
                Record::PreambleEnd.encode(&mut self.transmit);
                self.events.push_back(RewriteEvent::Preamble {
                    via,
                    mode,
                    content_type,
                });
                State::Open { mode, codec }
            }
            (State::Open { mode, codec }, Record::SizedEnvelope(payload))
                if mode != Mode::SingletonUnsized =>
            {
                if let Some(payload) = self.envelope(codec, &payload)? {
                    Record::SizedEnvelope(Cow::Owned(payload)).encode(&mut self.transmit);
                }
                State::Open { mode, codec }
            }
            (State::Open { mode, codec }, Record::UnsizedEnvelope(chunks))
                if mode == Mode::SingletonUnsized =>
            {
                let whole = chunks.concat();
                if let Some(payload) = self.envelope(codec, &whole)? {
                    Record::UnsizedEnvelope(vec![Cow::Owned(payload)]).encode(&mut self.transmit);
                }
                State::Open { mode, codec }
            }
            (
                State::Open { mode, .. },
                r @ (Record::SizedEnvelope(_) | Record::UnsizedEnvelope(_)),
            ) => {
                return Err(PeerMisbehaved::WrongEnvelopeKind {
                    record: r.record_type(),
                    mode: mode.name(),
                }
                .into());
            }
            (State::Open { .. }, Record::End) => {
                Record::End.encode(&mut self.transmit);
                self.events.push_back(RewriteEvent::End);
                State::Version
            }
            (state, record) => return Err(unexpected(&state, &record)),
        };
        Ok(())
    }

    /// Decodes one envelope payload, re-addresses it and encodes it again; `None` when its
    /// Action is one to drop.
    fn envelope(
        &mut self,
        codec: MessageFormat,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, RewriteError> {
        let index = self.envelopes;
        self.envelopes += 1;
        let wrap = |source: EnvelopeError| RewriteError::Envelope { index, source };
        let xml = self.limits.xml;
        let mut doc = match codec {
            MessageFormat::BinarySession => {
                let table = self
                    .reader
                    .read_table(payload)
                    .map_err(|e| wrap(e.into()))?;
                Document::decode_with(&payload[table..], Some(&self.reader), xml)
                    .map_err(|e| wrap(e.shifted(table).into()))?
            }
            MessageFormat::Binary => {
                Document::decode_with(payload, None, xml).map_err(|e| wrap(e.into()))?
            }
            MessageFormat::Text => {
                let text = std::str::from_utf8(payload).map_err(|_| wrap(EnvelopeError::Utf8))?;
                let options = XmlOptions {
                    dictionary: DictionaryUse::None,
                    ignore_whitespace: false,
                    limits: xml,
                };
                Document::parse_xml(text, &options).map_err(|e| wrap(e.into()))?
            }
        };
        let seen = readdress(&mut doc, &self.target.to).map_err(wrap)?;
        if let Some(action) = seen.action.as_ref().filter(|a| self.dropped.contains(a)) {
            // Not encoded: our session dictionary announces nothing the origin never sees.
            self.events.push_back(RewriteEvent::Dropped {
                index,
                action: action.clone(),
            });
            return Ok(None);
        }
        self.events.push_back(RewriteEvent::Envelope {
            index,
            action: seen.action,
            to: seen.to,
            token_removed: seen.token_removed,
        });
        let encoded = match codec {
            MessageFormat::BinarySession => doc
                .encode_with_table(&mut self.writer)
                .map_err(|e| wrap(e.into()))?,
            MessageFormat::Binary => {
                let mut out = Vec::with_capacity(payload.len() + 64);
                doc.encode(&mut out, None).map_err(|e| wrap(e.into()))?;
                out
            }
            MessageFormat::Text => doc.to_xml().into_bytes(),
        };
        Ok(Some(encoded))
    }
}

/// What [`readdress`] found in the header.
struct Seen {
    action: Option<String>,
    to: Option<String>,
    token_removed: bool,
}

/// Sets every WS-Addressing `To` header to `to` and drops `RelayAccessToken` headers; leaves
/// every other node as it was.
fn readdress(doc: &mut Document, to: &str) -> Result<Seen, EnvelopeError> {
    let root = doc
        .children
        .iter_mut()
        .find_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
        .ok_or(EnvelopeError::NotAnEnvelope)?;
    let soap_ns = root.namespace.clone();
    if root.local_name() != "Envelope" || (soap_ns != SOAP12_NS && soap_ns != SOAP11_NS) {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let mut seen = Seen {
        action: None,
        to: None,
        token_removed: false,
    };
    let Some(header) = root.children.iter_mut().find_map(|n| match n {
        Node::Element(e) if e.namespace == soap_ns && e.local_name() == "Header" => Some(e),
        _ => None,
    }) else {
        return Ok(seen);
    };
    let before = header.children.len();
    header.children.retain(|n| {
        !matches!(n, Node::Element(e)
            if e.namespace == RELAY_CONNECT_NS && e.local_name() == "RelayAccessToken")
    });
    seen.token_removed = header.children.len() != before;
    for node in &mut header.children {
        let Node::Element(el) = node else { continue };
        if el.namespace != WSA10_NS && el.namespace != WSA200408_NS {
            continue;
        }
        match el.local_name() {
            "Action" => seen.action = Some(el.text()),
            "To" => {
                seen.to = Some(el.text());
                set_text(el, to);
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// Replaces an element's content with one text node in the form the writer used: a session
/// string stays a session string (a new one, announced in our table), anything else becomes
/// the record WCF's writer picks for a string.
fn set_text(el: &mut Element, value: &str) {
    let dictionary = el
        .children
        .iter()
        .any(|n| matches!(n, Node::Text(Text::Dictionary(s)) if !s_is_static(s)));
    let text = if dictionary {
        Text::Dictionary(XmlString::session(value.to_owned()))
    } else {
        Text::from_string(value.to_owned())
    };
    el.children = vec![Node::Text(text)];
    // A single text record closes with the WithEndElement variant, as WCF writes it.
    el.explicit_end = false;
}

fn s_is_static(s: &XmlString<'_>) -> bool {
    matches!(s.form, ferry_nbfx::StringForm::Dictionary(id) if id.is_static())
}

/// The server→client direction: passes the origin's records on unchanged, but only whole
/// ones, and checks them against the framing limits.
#[derive(Debug)]
pub struct ServerStream {
    limits: ferry_nmf::Limits,
    failed: bool,
    events: VecDeque<ServerEvent>,
}

/// A record seen on the server→client direction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// PreambleAck.
    PreambleAck,
    /// An envelope of this many payload bytes.
    Envelope(usize),
    /// A Fault record.
    Fault(FaultCode),
    /// End.
    End,
    /// Any other record (an upgrade response).
    Other(RecordType),
}

impl ServerStream {
    /// A pass-through for one connection.
    pub fn new(limits: ferry_nmf::Limits) -> Self {
        Self {
            limits,
            failed: false,
            events: VecDeque::new(),
        }
    }

    /// The length of the whole records at the front of `input`: forward exactly those bytes,
    /// keep the rest and call again with more appended.
    ///
    /// # Errors
    ///
    /// Malformed framing or a record over a limit; every later call fails too.
    pub fn handle_input(&mut self, input: &[u8]) -> Result<usize, RewriteError> {
        if self.failed {
            return Err(RewriteError::Failed);
        }
        let mut used = 0;
        while used < input.len() {
            let (record, len) = match Record::decode(&input[used..], &self.limits) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.failed = true;
                    return Err(e.shifted(used).into());
                }
            };
            self.events.push_back(match record {
                Record::PreambleAck => ServerEvent::PreambleAck,
                Record::SizedEnvelope(p) => ServerEvent::Envelope(p.len()),
                Record::UnsizedEnvelope(chunks) => {
                    ServerEvent::Envelope(chunks.iter().map(|c| c.len()).sum())
                }
                Record::Fault(uri) => ServerEvent::Fault(FaultCode::from_uri(&uri)),
                Record::End => ServerEvent::End,
                other => ServerEvent::Other(other.record_type()),
            });
            used += len;
        }
        Ok(used)
    }

    /// The next record seen.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }
}

/// The bytes of a Fault record carrying `code` (what a relay sends the client when it cannot
/// carry the session).
pub fn fault_record(code: &FaultCode) -> Vec<u8> {
    let mut out = Vec::new();
    Record::Fault(Cow::Owned(code.uri())).encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preamble(via: &str, encoding: u8) -> Vec<u8> {
        let mut out = vec![0x00, 0x01, 0x00, 0x01, 0x02];
        Record::Via(Cow::Borrowed(via)).encode(&mut out);
        out.extend_from_slice(&[0x03, encoding, 0x0C]);
        out
    }

    fn rewrite_all(rw: &mut ClientRewriter, input: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let used = rw.handle_input(input)?;
        assert_eq!(used, input.len(), "whole records");
        let mut out = Vec::new();
        rw.poll_transmit(&mut out);
        Ok(out)
    }

    #[test]
    fn preamble_via_is_replaced_byte_by_byte() {
        let mut rw = ClientRewriter::new(Target::new("net.tcp://o:1/x"), RewriteLimits::default());
        let out = rewrite_all(&mut rw, &preamble("net.tcp://relay.example/calc", 0x08)).unwrap();
        assert_eq!(out, preamble("net.tcp://o:1/x", 0x08));
        assert!(rw.is_open());
        assert_eq!(
            rw.poll_event(),
            Some(RewriteEvent::Preamble {
                via: "net.tcp://relay.example/calc".into(),
                mode: Mode::Duplex,
                content_type: "application/soap+msbinsession1".into(),
            })
        );
    }

    #[test]
    fn partial_records_wait_for_more() {
        let mut rw = ClientRewriter::new(Target::new("net.tcp://o:1/x"), RewriteLimits::default());
        let p = preamble("net.tcp://a/b", 0x08);
        // Version and Mode are whole; the Via is cut.
        assert_eq!(rw.handle_input(&p[..8]).unwrap(), 5);
        assert_eq!(rw.handle_input(&p[5..]).unwrap(), p.len() - 5);
        assert!(rw.is_open());
    }

    #[test]
    fn text_envelope_gets_the_new_to_and_loses_the_token() {
        let mut rw = ClientRewriter::new(Target::new("net.tcp://o:1/x"), RewriteLimits::default());
        rewrite_all(&mut rw, &preamble("net.tcp://a/b", 0x03)).unwrap();
        let xml = format!(
            r#"<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:a="{WSA10_NS}"><s:Header><a:Action s:mustUnderstand="1">urn:op</a:Action><RelayAccessToken xmlns="{RELAY_CONNECT_NS}"><x>secret</x></RelayAccessToken><a:To s:mustUnderstand="1">net.tcp://a/b</a:To></s:Header><s:Body><Op xmlns="urn:c"/></s:Body></s:Envelope>"#
        );
        let mut input = Vec::new();
        Record::SizedEnvelope(Cow::Borrowed(xml.as_bytes())).encode(&mut input);
        let out = rewrite_all(&mut rw, &input).unwrap();
        let Ok(Some((Record::SizedEnvelope(p), _))) =
            Record::decode(&out, &ferry_nmf::Limits::default())
        else {
            panic!("one envelope");
        };
        let text = std::str::from_utf8(&p).unwrap();
        assert!(text.contains(">net.tcp://o:1/x</a:To>"), "{text}");
        assert!(
            !text.contains("secret") && !text.contains("RelayAccessToken"),
            "{text}"
        );
        assert!(
            text.contains("<a:Action s:mustUnderstand=\"1\">urn:op</a:Action>"),
            "{text}"
        );
        rw.poll_event();
        assert_eq!(
            rw.poll_event(),
            Some(RewriteEvent::Envelope {
                index: 0,
                action: Some("urn:op".into()),
                to: Some("net.tcp://a/b".into()),
                token_removed: true,
            })
        );
    }

    #[test]
    fn bad_preambles_map_to_framing_faults() {
        let cases: [(&[u8], FaultCode); 6] = [
            (&[0x00, 0x02, 0x00], FaultCode::UnsupportedVersion),
            (&[0x00, 0x01, 0x00, 0x01, 0x04], FaultCode::UnsupportedMode),
            (&[0x00, 0x01, 0x00, 0x01, 0x09], FaultCode::UnsupportedMode),
            (
                &[0x00, 0x01, 0x00, 0x01, 0x02, 0x02, 0x01, b'x', 0x03, 0x06],
                FaultCode::ContentTypeInvalid,
            ),
            (
                &[
                    0x00, 0x01, 0x00, 0x01, 0x02, 0x02, 0x01, b'x', 0x03, 0x08, 0x09, 0x01, b't',
                ],
                FaultCode::UpgradeInvalid,
            ),
            (&[0x0B], FaultCode::UnsupportedMode),
        ];
        for (input, fault) in cases {
            let mut rw =
                ClientRewriter::new(Target::new("net.tcp://o/x"), RewriteLimits::default());
            let e = rw.handle_input(input).unwrap_err();
            assert_eq!(e.fault(), fault, "{input:02x?}: {e}");
            assert!(matches!(
                rw.handle_input(&[0x00]),
                Err(RewriteError::Failed)
            ));
        }
    }

    #[test]
    fn oversized_records_are_refused_from_their_size_field() {
        let mut rw = ClientRewriter::new(
            Target::new("net.tcp://o/x"),
            RewriteLimits::with_max_envelope(100),
        );
        rewrite_all(&mut rw, &preamble("net.tcp://a/b", 0x08)).unwrap();
        // Only the size field has arrived: 1000 bytes announced, none buffered.
        let e = rw.handle_input(&[0x06, 0xE8, 0x07]).unwrap_err();
        assert_eq!(e.fault(), FaultCode::MaxMessageSizeExceeded);
        let mut rw = ClientRewriter::new(Target::new("net.tcp://o/x"), RewriteLimits::default());
        let mut long_via = vec![0x00, 0x01, 0x00, 0x01, 0x02, 0x02];
        long_via.extend_from_slice(&[0x80, 0x80, 0x01]);
        assert_eq!(
            rw.handle_input(&long_via).unwrap_err().fault(),
            FaultCode::ViaTooLong
        );
    }

    #[test]
    fn server_stream_cuts_at_record_boundaries() {
        let mut s = ServerStream::new(ferry_nmf::Limits::default());
        let mut input = vec![0x0B];
        Record::SizedEnvelope(Cow::Borrowed(&[1, 2, 3])).encode(&mut input);
        input.extend_from_slice(&[0x06, 0x05, 1]);
        assert_eq!(s.handle_input(&input).unwrap(), 6);
        assert_eq!(s.poll_event(), Some(ServerEvent::PreambleAck));
        assert_eq!(s.poll_event(), Some(ServerEvent::Envelope(3)));
        assert_eq!(s.poll_event(), None);
        assert!(s.handle_input(&[0x42]).is_err());
    }

    #[test]
    fn fault_record_bytes() {
        let bytes = fault_record(&FaultCode::EndpointNotFound);
        let Ok(Some((Record::Fault(uri), n))) =
            Record::decode(&bytes, &ferry_nmf::Limits::default())
        else {
            panic!("a fault record");
        };
        assert_eq!(n, bytes.len());
        assert_eq!(FaultCode::from_uri(&uri), FaultCode::EndpointNotFound);
    }
}
