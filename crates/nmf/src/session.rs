//! The sans-I/O framing session (MC-NMF 3.1): one state machine for the client (initiator) and
//! the server (receiver) role, in all four modes.
//!
//! ```text
//!  bytes from peer ──► handle_input ──► poll_event ──► Event (preamble, envelope, end, fault …)
//!                                │
//!  accept / reject / send_envelope / close / accept_upgrade / upgrade_complete
//!                                │
//!  bytes to peer   ◄── poll_transmit ◄──┘
//! ```
//!
//! After every call to `handle_input` or to one of the action methods, drain [`Session::poll_event`]
//! and [`Session::poll_transmit`]. The machine never reads a clock; preamble and idle timeouts
//! belong to the I/O driver.
//!
//! Upgrades (`application/ssl-tls`, `application/negotiate`): when an UpgradeRequest (server) or
//! UpgradeResponse (client) has been read, the session pauses and `handle_input` stops consuming
//! at that record's last byte, so bytes that belong to the upgrade protocol (a TLS ClientHello
//! sent in the same write) are handed back to the caller untouched. The caller runs the upgrade
//! on the raw stream, then calls [`Session::upgrade_complete`] and feeds the decrypted stream.

use std::{borrow::Cow, collections::VecDeque, mem};

use crate::{
    error::{PeerIncompatible, PeerMisbehaved, SessionError},
    fault::FaultCode,
    limits::Limits,
    record::{ChunkProgress, KnownEncoding, Mode, Record, UnsizedEnvelopeReader},
    record_type::RecordType,
};

/// Which side of the connection this session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The initiator: sends the preamble.
    Client,
    /// The receiver: reads the preamble, answers PreambleAck or a Fault.
    Server,
}

/// The message encoding announced in the preamble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A KnownEncoding record.
    Known(KnownEncoding),
    /// An ExtensibleEncoding record (a content type).
    Extensible(String),
}

impl Encoding {
    /// The content type, if known.
    pub fn content_type(&self) -> Option<&str> {
        match self {
            Self::Known(k) => k.content_type(),
            Self::Extensible(s) => Some(s),
        }
    }

    /// True when envelopes start with an MC-NBFSE string table (`application/soap+msbinsession1`).
    pub fn has_session_dictionary(&self) -> bool {
        self.content_type() == Some("application/soap+msbinsession1")
    }

    /// Which of WCF's message formats the session's envelopes are in, `None` for one Ferry does
    /// not read (UTF-16 text, MTOM, compressed binary, any other content type). WCF's text and
    /// binary encoders announce themselves with known records; an extensible content type
    /// naming one of them counts all the same.
    pub fn message_format(&self) -> Option<MessageFormat> {
        match self {
            Self::Known(KnownEncoding::BinarySession) => Some(MessageFormat::BinarySession),
            Self::Known(KnownEncoding::Binary) => Some(MessageFormat::Binary),
            Self::Known(KnownEncoding::Soap11Utf8 | KnownEncoding::Soap12Utf8) => {
                Some(MessageFormat::Text)
            }
            Self::Known(_) => None,
            Self::Extensible(ct) => MessageFormat::of_content_type(ct),
        }
    }
}

impl MessageFormat {
    /// The format a content type names (of an extensible encoding, or an HTTP message),
    /// `None` for any other; media types compare without case (RFC 9110 §8.3.1), and text
    /// must be UTF-8.
    pub fn of_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let is = |m: &str| media.eq_ignore_ascii_case(m);
        if is("application/soap+msbinsession1") {
            Some(Self::BinarySession)
        } else if is("application/soap+msbin1") {
            Some(Self::Binary)
        } else if (is("application/soap+xml") || is("text/xml")) && names_utf8(content_type) {
            Some(Self::Text)
        } else {
            None
        }
    }
}

/// True unless the content type names a charset other than UTF-8.
fn names_utf8(content_type: &str) -> bool {
    content_type
        .split(';')
        .skip(1)
        .all(|p| match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
                v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            _ => true,
        })
}

/// The form of a session's envelopes: which of WCF's message encoders wrote them, and so how
/// to read them ([`Encoding::message_format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFormat {
    /// Binary XML after an MC-NBFSE string table (`application/soap+msbinsession1`).
    BinarySession,
    /// Binary XML with the static dictionary only (`application/soap+msbin1`).
    Binary,
    /// SOAP 1.1 (`text/xml`) or 1.2 (`application/soap+xml`) as UTF-8 text.
    Text,
}

/// A complete preamble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preamble {
    /// Major version (always 1 once accepted).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Mode.
    pub mode: Mode,
    /// The Via URI.
    pub via: String,
    /// The encoding.
    pub encoding: Encoding,
    /// Upgrade protocols negotiated before PreambleEnd, in order.
    pub upgrades: Vec<String>,
}

/// What a client session announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Mode (not `Mode::Unknown`).
    pub mode: Mode,
    /// The Via URI.
    pub via: String,
    /// The encoding.
    pub encoding: Encoding,
    /// An upgrade to request before PreambleEnd, e.g. `application/ssl-tls`.
    pub upgrade: Option<String>,
}

impl ClientConfig {
    /// NetTcpBinding's default: duplex, binary with session dictionary, no upgrade.
    pub fn net_tcp(via: impl Into<String>) -> Self {
        Self {
            mode: Mode::Duplex,
            via: via.into(),
            encoding: Encoding::Known(KnownEncoding::BinarySession),
            upgrade: None,
        }
    }
}

/// Something the session learnt from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Server: the preamble is complete. Call [`Session::accept`] (sends PreambleAck in duplex
    /// and singleton-unsized mode) or [`Session::reject`]. Envelopes the client pipelined before
    /// the ack follow as events.
    PreambleReceived(Preamble),
    /// Server: the client asks for an upgrade. Call [`Session::accept_upgrade`] or
    /// [`Session::reject`] (with [`FaultCode::UpgradeInvalid`]). Input is paused meanwhile.
    UpgradeRequested(String),
    /// Client: the server accepted the upgrade. Run it on the raw stream (the bytes
    /// `handle_input` did not consume belong to it), then call [`Session::upgrade_complete`].
    UpgradeAccepted,
    /// Client: PreambleAck received; the session is open.
    PreambleAcked,
    /// One envelope (a SizedEnvelope payload or the concatenated chunks of an UnsizedEnvelope).
    Envelope(Vec<u8>),
    /// Server, singleton-sized mode: message octets (the message runs to the end of the stream).
    Data(Vec<u8>),
    /// The peer sent End. Answer with [`Session::close`]; after both Ends a server accepts a new
    /// preamble on the same connection (connection reuse) and a client may
    /// [`restart`](Session::restart).
    End,
    /// Client: the server sent a Fault record; the session is closed.
    Fault(FaultCode),
}

/// The envelope-carrying state.
#[derive(Clone, Debug)]
struct Open {
    preamble: Preamble,
    /// Server: PreambleAck sent; client: PreambleAck received (always true in simplex and
    /// singleton-sized mode, which have no ack).
    acked: bool,
    sent_end: bool,
    received_end: bool,
    /// An UnsizedEnvelope whose terminator has not arrived: the chunks read so far, kept between
    /// `handle_input` calls so that no byte is parsed twice.
    receiving: Option<UnsizedEnvelopeReader>,
}

impl Open {
    fn new(preamble: Preamble, acked: bool) -> Self {
        Self {
            preamble,
            acked,
            sent_end: false,
            received_end: false,
            receiving: None,
        }
    }

    /// Whether an envelope record of type `record` may arrive now: in the kind the mode uses,
    /// before the peer's End and, at a client, after the PreambleAck.
    fn admit(&self, role: Role, record: RecordType) -> Result<(), SessionError> {
        let mode = self.preamble.mode;
        let sized = record == RecordType::SizedEnvelope;
        let allowed = match mode {
            Mode::Duplex => sized,
            Mode::Simplex => sized && role == Role::Server,
            Mode::SingletonUnsized => !sized,
            _ => false,
        };
        if !allowed {
            return Err(PeerMisbehaved::WrongEnvelopeKind {
                record,
                mode: mode.name(),
            }
            .into());
        }
        if self.received_end || (role == Role::Client && !self.acked) {
            return Err(PeerMisbehaved::UnexpectedRecord {
                state: "Open",
                record,
            }
            .into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum State {
    /// Server: expecting the Version record.
    ReadVersion,
    /// Server: expecting Mode.
    ReadMode { major: u8, minor: u8 },
    /// Server: expecting Via.
    ReadVia { major: u8, minor: u8, mode: Mode },
    /// Server: expecting KnownEncoding or ExtensibleEncoding.
    ReadEncoding {
        major: u8,
        minor: u8,
        mode: Mode,
        via: String,
    },
    /// Server: expecting UpgradeRequest or PreambleEnd.
    ReadPreambleEnd(Preamble),
    /// Server: paused until `accept_upgrade` or `reject`.
    UpgradeDecision(Preamble),
    /// Both: paused until `upgrade_complete`.
    Upgrading(Preamble),
    /// Client: waiting for PreambleAck (or UpgradeResponse when `upgrade` is set).
    AwaitAck { preamble: Preamble, upgrade: bool },
    /// Envelopes flow.
    Open(Open),
    /// Server, singleton-sized: everything else is message octets.
    RawData,
    /// Client: End exchanged; `restart` may start a new preamble.
    Finished,
    /// Closed after a fault or an error: input is drained and ignored.
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::ReadVersion => "ReadVersion",
            Self::ReadMode { .. } => "ReadMode",
            Self::ReadVia { .. } => "ReadVia",
            Self::ReadEncoding { .. } => "ReadEncoding",
            Self::ReadPreambleEnd(_) => "ReadPreambleEnd",
            Self::UpgradeDecision(_) => "UpgradeDecision",
            Self::Upgrading(_) => "Upgrading",
            Self::AwaitAck { .. } => "AwaitAck",
            Self::Open(_) => "Open",
            Self::RawData => "RawData",
            Self::Finished => "Finished",
            Self::Closed => "Closed",
        }
    }

    fn paused(&self) -> bool {
        matches!(self, Self::UpgradeDecision(_) | Self::Upgrading(_))
    }
}

/// One framing session over one byte stream. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Session {
    role: Role,
    state: State,
    limits: Limits,
    /// Bytes of a record that has not fully arrived (of an UnsizedEnvelope, only a partial chunk
    /// size field: its chunks are consumed as they arrive).
    buf: Vec<u8>,
    events: VecDeque<Event>,
    transmit: Vec<u8>,
    /// Bytes handed to a parser, summed over calls: a consumed byte counts once, an unconsumed
    /// one each time it is handed over again (an upper bound on the bytes parsed). Tests use it
    /// to show that input is not re-parsed.
    #[cfg(test)]
    examined: usize,
}

impl Session {
    /// A server session waiting for a preamble.
    pub fn server(limits: Limits) -> Self {
        Self::new(Role::Server, State::ReadVersion, limits)
    }

    /// A client session; the preamble is queued for [`poll_transmit`](Self::poll_transmit) at
    /// once.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] for `Mode::Unknown`.
    pub fn client(config: ClientConfig, limits: Limits) -> Result<Self, SessionError> {
        let mut s = Self::new(Role::Client, State::Finished, limits);
        s.restart(config)?;
        Ok(s)
    }

    fn new(role: Role, state: State, limits: Limits) -> Self {
        Self {
            role,
            state,
            limits,
            buf: Vec::new(),
            events: VecDeque::new(),
            transmit: Vec::new(),
            #[cfg(test)]
            examined: 0,
        }
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Name of the current state, for logs.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// The preamble once known (server: after [`Event::PreambleReceived`]; client: its own).
    pub fn preamble(&self) -> Option<&Preamble> {
        match &self.state {
            State::ReadPreambleEnd(p) | State::UpgradeDecision(p) | State::Upgrading(p) => Some(p),
            State::AwaitAck { preamble, .. } => Some(preamble),
            State::Open(o) => Some(&o.preamble),
            _ => None,
        }
    }

    /// True once the session is closed (after a fault or error) or finished (client, End
    /// exchanged).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Finished)
    }

    /// Feeds bytes read from the peer. Returns how many were consumed: all of them, except when
    /// the session pauses for an upgrade, where the bytes after the upgrade record are left to
    /// the caller. Poll events and transmit afterwards.
    ///
    /// # Errors
    ///
    /// A [`SessionError`]; the session is then closed and, in the server role, the matching
    /// Fault record (if WCF defines one) is queued for transmit.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, SessionError> {
        match self.state {
            _ if self.state.paused() => return Ok(0),
            State::Closed => return Ok(data.len()),
            State::RawData => {
                if !data.is_empty() {
                    self.events.push_back(Event::Data(data.to_vec()));
                }
                return Ok(data.len());
            }
            _ => {}
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let buf = mem::take(&mut self.buf);
        let result = loop {
            if self.state.paused() || matches!(self.state, State::Closed) {
                break Ok(());
            }
            if matches!(self.state, State::RawData) {
                if pos < buf.len() {
                    self.events.push_back(Event::Data(buf[pos..].to_vec()));
                }
                pos = buf.len();
                break Ok(());
            }
            if let State::Open(o) = &mut self.state
                && let Some(reader) = &mut o.receiving
            {
                // The rest of an UnsizedEnvelope: the reader holds the chunks already read, so
                // only the new bytes are parsed.
                match reader.read(&buf[pos..], &self.limits) {
                    Ok(ChunkProgress::NeedMore(n)) => {
                        self.note_examined(buf.len() - pos);
                        pos += n;
                        break Ok(());
                    }
                    Ok(ChunkProgress::Done(n)) => {
                        let payload = o.receiving.take().unwrap_or_default().into_payload();
                        self.note_examined(n);
                        pos += n;
                        let record = Record::UnsizedEnvelope(vec![Cow::Owned(payload)]);
                        if let Err(e) = self.on_record(record) {
                            break Err(e);
                        }
                    }
                    Err(e) => break Err(SessionError::Decode(e.shifted(pos))),
                }
                continue;
            }
            if buf.get(pos) == Some(&RecordType::UnsizedEnvelope.byte()) {
                // Never handed to `Record::decode`, which would re-parse every chunk after
                // each read until the terminator arrives.
                if let Err(e) = self.start_unsized_envelope() {
                    break Err(e);
                }
                self.note_examined(1);
                pos += 1;
                continue;
            }
            match Record::decode(&buf[pos..], &self.limits) {
                Ok(Some((record, n))) => {
                    self.note_examined(n);
                    pos += n;
                    if let Err(e) = self.on_record(record) {
                        break Err(e);
                    }
                }
                Ok(None) => {
                    self.note_examined(buf.len() - pos);
                    break Ok(());
                }
                Err(e) => break Err(SessionError::Decode(e.shifted(pos))),
            }
        };
        if let Err(e) = result {
            self.fail(&e);
            return Err(e);
        }
        let leftover = buf.len() - pos;
        if self.state.paused() {
            // Every byte before the pause point came either from earlier calls (an incomplete
            // record, which the upgrade record completed) or from `data`; the rest is the
            // upgrade protocol's and came from `data`.
            return Ok(data.len() - leftover.min(data.len()));
        }
        if matches!(self.state, State::Closed) {
            return Ok(data.len());
        }
        self.buf = buf;
        self.buf.drain(..pos);
        Ok(data.len())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends the bytes to send to `out`; returns false when there were none.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.transmit.is_empty() {
            return false;
        }
        out.append(&mut self.transmit);
        true
    }

    /// Server: accepts the preamble (queues PreambleAck in duplex and singleton-unsized mode).
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] unless a preamble was received and not yet accepted.
    pub fn accept(&mut self) -> Result<(), SessionError> {
        match (&self.role, &mut self.state) {
            (Role::Server, State::Open(o)) if !o.acked => {
                o.acked = true;
                Record::PreambleAck.encode(&mut self.transmit);
                Ok(())
            }
            // Simplex and singleton-sized have no ack; accepting is a no-op.
            (Role::Server, State::RawData) => Ok(()),
            (Role::Server, State::Open(o)) if matches!(o.preamble.mode, Mode::Simplex) => Ok(()),
            _ => Err(self.invalid("accept")),
        }
    }

    /// Server: answers with a Fault record and closes the session (later input is drained).
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] in the client role or once closed.
    pub fn reject(&mut self, fault: FaultCode) -> Result<(), SessionError> {
        if self.role != Role::Server || matches!(self.state, State::Closed) {
            return Err(self.invalid("reject"));
        }
        Record::Fault(Cow::Owned(fault.uri())).encode(&mut self.transmit);
        self.state = State::Closed;
        self.buf.clear();
        Ok(())
    }

    /// Server: accepts the requested upgrade (queues UpgradeResponse). Send it, run the upgrade
    /// on the raw stream, then call [`upgrade_complete`](Self::upgrade_complete).
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] unless an upgrade was requested.
    pub fn accept_upgrade(&mut self) -> Result<(), SessionError> {
        match mem::replace(&mut self.state, State::Closed) {
            State::UpgradeDecision(p) => {
                Record::UpgradeResponse.encode(&mut self.transmit);
                self.state = State::Upgrading(p);
                Ok(())
            }
            other => {
                self.state = other;
                Err(self.invalid("accept_upgrade"))
            }
        }
    }

    /// Both roles: the upgrade protocol is established; framing resumes on the upgraded stream.
    /// A client queues PreambleEnd now.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] unless an upgrade is in progress.
    pub fn upgrade_complete(&mut self) -> Result<(), SessionError> {
        match mem::replace(&mut self.state, State::Closed) {
            State::Upgrading(p) => {
                self.state = match self.role {
                    Role::Server => State::ReadPreambleEnd(p),
                    Role::Client => {
                        Record::PreambleEnd.encode(&mut self.transmit);
                        State::AwaitAck {
                            preamble: p,
                            upgrade: false,
                        }
                    }
                };
                Ok(())
            }
            other => {
                self.state = other;
                Err(self.invalid("upgrade_complete"))
            }
        }
    }

    /// Queues one envelope: a SizedEnvelope (duplex, simplex), an UnsizedEnvelope with one chunk
    /// (singleton-unsized) or raw octets (singleton-sized). A client may pipeline its first
    /// envelope before the PreambleAck arrives.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] before the preamble is done, after End was sent, or for a
    /// server sending in simplex mode or before [`accept`](Self::accept).
    pub fn send_envelope(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let (mode, ok) = match (&self.role, &self.state) {
            (
                Role::Client,
                State::AwaitAck {
                    preamble,
                    upgrade: false,
                },
            ) => (preamble.mode, true),
            (Role::Client, State::Open(o)) => (o.preamble.mode, !o.sent_end),
            (Role::Server, State::Open(o)) => (
                o.preamble.mode,
                o.acked && !o.sent_end && o.preamble.mode != Mode::Simplex,
            ),
            _ => (Mode::Duplex, false),
        };
        if !ok {
            return Err(self.invalid("send_envelope"));
        }
        match mode {
            Mode::SingletonUnsized => {
                Record::UnsizedEnvelope(vec![Cow::Borrowed(payload)]).encode(&mut self.transmit);
            }
            Mode::SingletonSized => self.transmit.extend_from_slice(payload),
            _ => Record::SizedEnvelope(Cow::Borrowed(payload)).encode(&mut self.transmit),
        }
        Ok(())
    }

    /// Queues End. A server whose client already sent End returns to waiting for a new preamble
    /// (connection reuse); a client in that position is finished.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] unless the session is open and End was not sent yet.
    pub fn close(&mut self) -> Result<(), SessionError> {
        let State::Open(o) = &mut self.state else {
            return Err(self.invalid("close"));
        };
        if o.sent_end {
            return Err(self.invalid("close"));
        }
        o.sent_end = true;
        Record::End.encode(&mut self.transmit);
        if o.received_end {
            self.state = self.after_end();
        }
        Ok(())
    }

    /// Client: starts a new preamble, on a fresh connection or on one whose previous session
    /// finished (connection reuse).
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidState`] in the server role, before the previous session finished,
    /// or for `Mode::Unknown`.
    pub fn restart(&mut self, config: ClientConfig) -> Result<(), SessionError> {
        if self.role != Role::Client
            || !matches!(self.state, State::Finished)
            || matches!(config.mode, Mode::Unknown(_))
        {
            return Err(self.invalid("restart"));
        }
        let t = &mut self.transmit;
        Record::Version { major: 1, minor: 0 }.encode(t);
        Record::Mode(config.mode).encode(t);
        Record::Via(Cow::Borrowed(&config.via)).encode(t);
        match &config.encoding {
            Encoding::Known(k) => Record::KnownEncoding(*k).encode(t),
            Encoding::Extensible(s) => Record::ExtensibleEncoding(Cow::Borrowed(s)).encode(t),
        }
        let preamble = Preamble {
            major: 1,
            minor: 0,
            mode: config.mode,
            via: config.via.clone(),
            encoding: config.encoding.clone(),
            upgrades: config.upgrade.iter().cloned().collect(),
        };
        self.state = match (config.mode, &config.upgrade) {
            // Simplex and singleton-sized have no PreambleEnd, ack or upgrades.
            (Mode::Simplex | Mode::SingletonSized, _) => State::Open(Open::new(preamble, true)),
            (_, Some(upgrade)) => {
                Record::UpgradeRequest(Cow::Borrowed(upgrade)).encode(t);
                State::AwaitAck {
                    preamble,
                    upgrade: true,
                }
            }
            (_, None) => {
                Record::PreambleEnd.encode(t);
                State::AwaitAck {
                    preamble,
                    upgrade: false,
                }
            }
        };
        Ok(())
    }

    /// Begins an UnsizedEnvelope at its type byte, checking at once that one may arrive now
    /// (rather than after the peer has sent up to the envelope limit).
    fn start_unsized_envelope(&mut self) -> Result<(), SessionError> {
        let record = RecordType::UnsizedEnvelope;
        match &mut self.state {
            State::Open(o) => {
                o.admit(self.role, record)?;
                o.receiving = Some(UnsizedEnvelopeReader::new());
                Ok(())
            }
            other => Err(PeerMisbehaved::UnexpectedRecord {
                state: other.name(),
                record,
            }
            .into()),
        }
    }

    #[cfg(test)]
    fn note_examined(&mut self, n: usize) {
        self.examined += n;
    }

    #[cfg(not(test))]
    fn note_examined(&mut self, _n: usize) {}

    fn invalid(&self, operation: &'static str) -> SessionError {
        SessionError::InvalidState {
            operation,
            state: self.state.name(),
        }
    }

    fn after_end(&self) -> State {
        match self.role {
            Role::Server => State::ReadVersion,
            Role::Client => State::Finished,
        }
    }

    fn fail(&mut self, e: &SessionError) {
        let fault = e.fault();
        if self.role == Role::Server
            && let Some(f) = fault
        {
            Record::Fault(Cow::Owned(f.uri())).encode(&mut self.transmit);
        }
        self.state = State::Closed;
        self.buf.clear();
    }

    /// The transition table: every (role, state, record) pair the protocol allows; anything else
    /// is [`PeerMisbehaved::UnexpectedRecord`]. Consumes the old state so that an error leaves
    /// the session `Closed`, never half-updated.
    fn on_record(&mut self, record: Record<'_>) -> Result<(), SessionError> {
        use Role::{Client, Server};
        let state = mem::replace(&mut self.state, State::Closed);
        let state_name = state.name();
        let rtype = record.record_type();
        let unexpected = || {
            SessionError::PeerMisbehaved(PeerMisbehaved::UnexpectedRecord {
                state: state_name,
                record: rtype,
            })
        };
        let next = match (self.role, state, record) {
            (Server, State::ReadVersion, Record::Version { major, minor }) => {
                if major != 1 {
                    return Err(PeerIncompatible::UnsupportedVersion { major, minor }.into());
                }
                State::ReadMode { major, minor }
            }
            (Server, State::ReadMode { major, minor }, Record::Mode(mode)) => {
                if let Mode::Unknown(b) = mode {
                    return Err(PeerIncompatible::UnsupportedMode(b).into());
                }
                State::ReadVia { major, minor, mode }
            }
            (Server, State::ReadVia { major, minor, mode }, Record::Via(via)) => {
                State::ReadEncoding {
                    major,
                    minor,
                    mode,
                    via: via.into_owned(),
                }
            }
            (
                Server,
                State::ReadEncoding {
                    major,
                    minor,
                    mode,
                    via,
                },
                r @ (Record::KnownEncoding(_) | Record::ExtensibleEncoding(_)),
            ) => {
                let encoding = match r {
                    Record::KnownEncoding(KnownEncoding::Unknown(b)) => {
                        return Err(
                            PeerIncompatible::UnsupportedEncoding(format!("0x{b:02x}")).into()
                        );
                    }
                    Record::KnownEncoding(k) => Encoding::Known(k),
                    Record::ExtensibleEncoding(s) => Encoding::Extensible(s.into_owned()),
                    _ => return Err(unexpected()),
                };
                let preamble = Preamble {
                    major,
                    minor,
                    mode,
                    via,
                    encoding,
                    upgrades: Vec::new(),
                };
                match mode {
                    Mode::Simplex => {
                        self.events
                            .push_back(Event::PreambleReceived(preamble.clone()));
                        State::Open(Open::new(preamble, true))
                    }
                    Mode::SingletonSized => {
                        self.events.push_back(Event::PreambleReceived(preamble));
                        State::RawData
                    }
                    _ => State::ReadPreambleEnd(preamble),
                }
            }
            (Server, State::ReadPreambleEnd(mut p), Record::UpgradeRequest(u)) => {
                p.upgrades.push(u.to_string());
                self.events
                    .push_back(Event::UpgradeRequested(u.into_owned()));
                State::UpgradeDecision(p)
            }
            (Server, State::ReadPreambleEnd(p), Record::PreambleEnd) => {
                self.events.push_back(Event::PreambleReceived(p.clone()));
                State::Open(Open::new(p, false))
            }
            (
                Client,
                State::AwaitAck {
                    preamble,
                    upgrade: false,
                },
                Record::PreambleAck,
            ) => {
                self.events.push_back(Event::PreambleAcked);
                State::Open(Open::new(preamble, true))
            }
            (
                Client,
                State::AwaitAck {
                    preamble,
                    upgrade: true,
                },
                Record::UpgradeResponse,
            ) => {
                self.events.push_back(Event::UpgradeAccepted);
                State::Upgrading(preamble)
            }
            (Client, State::AwaitAck { .. } | State::Open(_), Record::Fault(uri)) => {
                self.events
                    .push_back(Event::Fault(FaultCode::from_uri(&uri)));
                State::Closed
            }
            (role, State::Open(o), r @ (Record::SizedEnvelope(_) | Record::UnsizedEnvelope(_))) => {
                o.admit(role, rtype)?;
                let payload = match r {
                    Record::SizedEnvelope(p) => p.into_owned(),
                    // From `handle_input` always one owned chunk (the reader's payload), moved
                    // rather than copied.
                    Record::UnsizedEnvelope(mut chunks) if chunks.len() == 1 => {
                        chunks.pop().map(Cow::into_owned).unwrap_or_default()
                    }
                    Record::UnsizedEnvelope(chunks) => chunks.concat(),
                    _ => return Err(unexpected()),
                };
                self.events.push_back(Event::Envelope(payload));
                State::Open(o)
            }
            (_, State::Open(mut o), Record::End) if !o.received_end => {
                o.received_end = true;
                self.events.push_back(Event::End);
                if o.sent_end {
                    self.after_end()
                } else {
                    State::Open(o)
                }
            }
            _ => return Err(unexpected()),
        };
        self.state = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn message_formats() {
        for (encoding, format) in [
            (
                Encoding::Known(KnownEncoding::BinarySession),
                Some(MessageFormat::BinarySession),
            ),
            (
                Encoding::Known(KnownEncoding::Binary),
                Some(MessageFormat::Binary),
            ),
            (
                Encoding::Known(KnownEncoding::Soap12Utf8),
                Some(MessageFormat::Text),
            ),
            (
                Encoding::Known(KnownEncoding::Soap11Utf8),
                Some(MessageFormat::Text),
            ),
            (Encoding::Known(KnownEncoding::Soap12Utf16), None),
            (Encoding::Known(KnownEncoding::Mtom), None),
            (Encoding::Known(KnownEncoding::BinarySessionGzip), None),
            (
                Encoding::Extensible("text/xml; charset=utf-8".into()),
                Some(MessageFormat::Text),
            ),
            (
                Encoding::Extensible("application/soap+msbin1".into()),
                Some(MessageFormat::Binary),
            ),
            (
                Encoding::Extensible("text/xml; charset=utf-16".into()),
                None,
            ),
            (
                Encoding::Extensible("Application/SOAP+XML; Charset=\"UTF-8\"".into()),
                Some(MessageFormat::Text),
            ),
            (Encoding::Extensible("application/json".into()), None),
        ] {
            assert_eq!(encoding.message_format(), format, "{encoding:?}");
        }
    }

    /// A singleton-unsized server session past its preamble.
    fn unsized_server(limits: Limits) -> Session {
        let mut s = Session::server(limits);
        // Version 1.0, mode 1, via "a", known encoding 0x08, PreambleEnd.
        s.handle_input(&[
            0x00, 0x01, 0x00, 0x01, 0x01, 0x02, 0x01, 0x61, 0x03, 0x08, 0x0C,
        ])
        .unwrap();
        assert!(matches!(s.poll_event(), Some(Event::PreambleReceived(_))));
        s.accept().unwrap();
        s
    }

    /// The attack from the review: 1-byte chunks (two bytes each on the wire) fed a few bytes
    /// per read. Retrying `Record::decode` after each read made the parser look at every
    /// buffered chunk again, `reads × chunks` bytes in all; now each byte is looked at about
    /// once (plus at most four bytes of a split size field per read).
    #[test]
    fn one_byte_chunks_in_small_reads_are_parsed_once() {
        const CHUNKS: usize = 16 * 1024;
        let mut s = unsized_server(Limits::default());
        let payload: Vec<u8> = (0..CHUNKS).map(|i| i as u8).collect();
        let mut wire = vec![0x05];
        for b in &payload {
            wire.extend_from_slice(&[0x01, *b]);
        }
        wire.push(0x00);
        let before = s.examined;
        let mut reads = 0;
        for piece in wire.chunks(3) {
            assert_eq!(s.handle_input(piece).unwrap(), piece.len());
            reads += 1;
        }
        assert_eq!(s.poll_event(), Some(Event::Envelope(payload)));
        let examined = s.examined - before;
        assert!(
            examined <= wire.len() + 4 * reads,
            "{examined} bytes examined for {} on the wire in {reads} reads",
            wire.len()
        );
        // Nothing left over: the chunks were consumed as they arrived.
        assert!(s.buf.is_empty());
    }

    /// A chunk's bytes arriving one per read are consumed as they come, not buffered until the
    /// chunk is complete.
    #[test]
    fn a_large_chunk_is_not_rebuffered() {
        let mut s = unsized_server(Limits::default());
        s.handle_input(&[0x05, 0x80, 0x02]).unwrap(); // one chunk of 256 bytes
        let before = s.examined;
        for i in 0..=255u8 {
            s.handle_input(&[i]).unwrap();
            assert!(s.buf.is_empty());
        }
        s.handle_input(&[0x00]).unwrap();
        assert_eq!(s.examined - before, 257);
        assert_eq!(s.poll_event(), Some(Event::Envelope((0..=255u8).collect())));
    }
}
