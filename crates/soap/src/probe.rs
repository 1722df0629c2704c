//! What a relay needs from a sender's first message, read as a stream of records.
//!
//! A gateway must authenticate a net.tcp sender from the `RelayAccessToken` header of its first
//! message before it trusts anything else the sender says, and must cut that header out before
//! the message goes on to the listener. Building the whole envelope tree for that would let an
//! unauthenticated sender make the gateway materialise whatever the message describes;
//! [`Probe`] instead walks the records (binary) or events (text) once, keeps only the few header
//! values it needs (each within [`MAX_HEADER_TEXT`] or [`MAX_TOKEN_BYTES`]), and stops at the
//! `Body` start tag, so its memory is bounded by constants and its work by the header bytes.
//!
//! ```text
//!  <s:Envelope …>
//!    <s:Header>
//!      <a:Action>…</a:Action>            → action
//!      <a:MessageID>…</a:MessageID>      → message_id
//!      <a:To>…</a:To>                    → to, and where its text lies (to_span)
//!      <RelayAccessToken …>…</…>         → relay_token, and its byte span (token_span)
//!    </s:Header>
//!    <s:Body>                            ← reading stops here
//! ```

use std::{borrow::Cow, ops::Range};

use ferry_nbfx::{Limits, Reader, Record, SessionDictionary, Str, Text};

use crate::{
    error::DecodeError,
    relay::{RELAY_CONNECT_NS, RelayAccessToken, WSSE_NS, decode_base64},
    version::{AddressingVersion, SoapVersion},
};

/// Largest `Action` or `MessageID` text (and `wsu:Id`) a probe keeps, in bytes.
pub const MAX_HEADER_TEXT: usize = 8 * 1024;
/// Largest token a probe reads, in bytes (a SAS token is a few hundred).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The headers of a first message that a relay acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// SOAP version of the envelope.
    pub version: SoapVersion,
    /// Addressing version of its headers (`None` when it has no addressing header).
    pub addressing: AddressingVersion,
    /// `Action`.
    pub action: Option<String>,
    /// `MessageID`.
    pub message_id: Option<String>,
    /// The relay's `RelayAccessToken`.
    pub relay_token: Option<RelayAccessToken>,
    /// Where the `RelayAccessToken` header element lies in the input, start tag to end tag: the
    /// bytes to cut so that the token does not travel on.
    pub token_span: Option<Range<usize>>,
    /// The WS-Addressing `To` header's value (which may carry an `sb-hc-token` query).
    pub to: Option<String>,
    /// Where the `To` value lies in the input, to write another in its place. In a binary
    /// document: from its first text record through the element's end (a replacement is one
    /// text record that ends the element); in a text one: the characters between the tags
    /// (a replacement is escaped text). `None` for an empty `To`.
    pub to_span: Option<Range<usize>>,
}

impl Probe {
    /// Reads a binary document (`msbin1`, or the document part of an `msbinsession1` envelope
    /// after its string table, with `session`). Spans are offsets into `document`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the records up to the `Body` are malformed, the root is no SOAP
    /// envelope, there is no `Body`, a kept header is too long, or there are two tokens.
    pub fn binary(
        document: &[u8],
        session: Option<&SessionDictionary>,
        limits: Limits,
    ) -> Result<Self, DecodeError> {
        let mut reader = match session {
            Some(s) => Reader::with_session(document, s),
            None => Reader::new(document),
        }
        .limits(limits);
        let mut walk = Walk::default();
        let mut open: Option<Open<'_>> = None;
        loop {
            let offset = reader.offset();
            let Some(record) = reader.next_record()? else {
                break;
            };
            // A start tag ends at the first record that is not one of its attributes.
            if !matches!(record, Record::Attribute(_) | Record::Xmlns(_))
                && let Some(o) = open.take()
            {
                walk.start(o)?;
            }
            match record {
                Record::Element(e) => {
                    open = Some(Open {
                        prefix: Str::from(e.prefix),
                        local: e.name.text,
                        start: offset,
                        decls: Vec::new(),
                        id: None,
                    });
                }
                Record::Xmlns(x) => {
                    if let Some(o) = &mut open {
                        o.decls.push((Str::from(x.prefix), x.namespace.text));
                    }
                }
                Record::Attribute(a) => {
                    if let Some(o) = &mut open
                        && a.name.text == "Id"
                    {
                        o.id = Some(a.value.to_string());
                    }
                }
                Record::Text { text, end } => {
                    walk.text(&text, offset)?;
                    if end {
                        walk.end(reader.offset(), reader.offset())?;
                    }
                }
                // A binary `To` is replaced through its end (see `Probe::to_span`).
                Record::EndElement => walk.end(reader.offset(), reader.offset())?,
                Record::Comment(_) | Record::Array(_) => {}
            }
            if walk.at_body {
                return walk.finish();
            }
        }
        if let Some(o) = open.take() {
            walk.start(o)?;
        }
        walk.finish()
    }

    /// Reads an XML text envelope (`soap+xml` / `text/xml` over net.tcp). Spans are byte
    /// offsets into `text`.
    ///
    /// # Errors
    ///
    /// As [`binary`](Self::binary), and malformed XML.
    pub fn text(text: &str, limits: Limits) -> Result<Self, DecodeError> {
        use quick_xml::events::Event;

        let syntax = |offset: u64, message: String| {
            DecodeError::Text(ferry_nbfx::XmlError::Syntax { offset, message })
        };
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(false);
        let mut walk = Walk::default();
        loop {
            let offset = reader.buffer_position() as usize;
            let event = reader
                .read_event()
                .map_err(|e| syntax(reader.error_position(), e.to_string()))?;
            let bad = |e: &dyn std::fmt::Display| syntax(offset as u64, e.to_string());
            let empty = matches!(event, Event::Empty(_));
            match event {
                Event::Start(e) | Event::Empty(e) => {
                    if walk.roles.len() >= limits.max_depth {
                        return Err(DecodeError::Text(ferry_nbfx::XmlError::LimitExceeded {
                            limit: ferry_nbfx::Limit::Depth,
                            max: limits.max_depth,
                        }));
                    }
                    let qname = std::str::from_utf8(e.name().into_inner()).map_err(|e| bad(&e))?;
                    let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
                    // The event is gone at the next read: the walk keeps its own copies (of
                    // input bytes, once each).
                    let mut open = Open {
                        prefix: Str::from(prefix.to_owned()),
                        local: Str::from(local.to_owned()),
                        start: offset,
                        decls: Vec::new(),
                        id: None,
                    };
                    for attr in e.attributes() {
                        let attr = attr.map_err(|e| bad(&e))?;
                        let key =
                            std::str::from_utf8(attr.key.into_inner()).map_err(|e| bad(&e))?;
                        let value = attr.unescape_value().map_err(|e| bad(&e))?;
                        check_len(&value, limits.max_string_bytes)?;
                        if key == "xmlns" || key.starts_with("xmlns:") {
                            let p = key.strip_prefix("xmlns:").unwrap_or("");
                            open.decls
                                .push((Str::from(p.to_owned()), Str::from(value.into_owned())));
                        } else if key.rsplit(':').next() == Some("Id") {
                            open.id = Some(value.into_owned());
                        }
                    }
                    walk.start(open)?;
                    if empty {
                        let after = reader.buffer_position() as usize;
                        walk.end(after, after)?;
                    }
                }
                // A text `To` is replaced up to its end tag (see `Probe::to_span`).
                Event::End(_) => walk.end(offset, reader.buffer_position() as usize)?,
                Event::Text(t) => {
                    let t = t.xml10_content().map_err(|e| bad(&e))?;
                    walk.text(&Text::Chars(t), offset)?;
                }
                Event::CData(t) => {
                    let t = t.decode().map_err(|e| bad(&e))?;
                    walk.text(&Text::Chars(t), offset)?;
                }
                Event::GeneralRef(r) => {
                    let resolved: Cow<'_, str> = match r.resolve_char_ref().map_err(|e| bad(&e))? {
                        Some(c) => c.to_string().into(),
                        None => {
                            let name = r.decode().map_err(|e| bad(&e))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| bad(&"unknown entity reference"))?
                                .into()
                        }
                    };
                    walk.text(&Text::Chars(resolved), offset)?;
                }
                Event::DocType(_) => return Err(bad(&"DTDs are not supported")),
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
            if walk.at_body {
                return walk.finish();
            }
        }
        walk.finish()
    }
}

/// A start tag whose attributes are still being read.
struct Open<'a> {
    prefix: Str<'a>,
    local: Str<'a>,
    start: usize,
    decls: Vec<(Str<'a>, Str<'a>)>,
    /// A `wsu:Id` (or any `Id`) attribute's value, kept for the token header.
    id: Option<String>,
}

/// What an open element is to the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Envelope,
    Header,
    /// A header whose text is kept.
    Keep(Field),
    /// The `RelayAccessToken` header, starting at this offset.
    Token(usize),
    /// The token's `BinarySecurityToken`.
    TokenValue,
    /// Anything else (its content is passed over).
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Action,
    MessageId,
    To,
}

/// The probe's state between records.
#[derive(Default)]
struct Walk<'a> {
    roles: Vec<Role>,
    /// Namespace declarations in force, with one frame per open element.
    decls: Vec<(Str<'a>, Str<'a>)>,
    frames: Vec<usize>,
    version: Option<SoapVersion>,
    addressing: Option<AddressingVersion>,
    action: Option<String>,
    message_id: Option<String>,
    /// Text of the header being kept.
    text: String,
    /// The token's bytes (Bytes records) or base64 text.
    token_bytes: Vec<u8>,
    token_text: String,
    token_id: Option<String>,
    relay_token: Option<RelayAccessToken>,
    token_span: Option<Range<usize>>,
    to: Option<String>,
    /// Where the text of the header being kept starts.
    text_start: Option<usize>,
    to_span: Option<Range<usize>>,
    at_body: bool,
}

impl<'a> Walk<'a> {
    fn resolve(&self, prefix: &str) -> Option<Str<'a>> {
        match self.decls.iter().rev().find(|(p, _)| *p == prefix) {
            Some((_, ns)) => Some(ns.clone()),
            None if prefix.is_empty() => Some(Str::Static("")),
            None => None,
        }
    }

    fn start(&mut self, open: Open<'a>) -> Result<(), DecodeError> {
        self.frames.push(self.decls.len());
        self.decls.extend(open.decls);
        let ns = self.resolve(&open.prefix).ok_or_else(|| {
            DecodeError::Binary(ferry_nbfx::DecodeError::UndeclaredPrefix {
                offset: open.start,
                prefix: open.prefix.to_string(),
            })
        })?;
        let ns: &str = &ns;
        let local: &str = &open.local;
        let parent = self.roles.last().copied();
        let role = match parent {
            None => {
                let version = SoapVersion::from_namespace(ns)
                    .filter(|_| local == "Envelope")
                    .ok_or(DecodeError::NotAnEnvelope)?;
                self.version = Some(version);
                Role::Envelope
            }
            Some(Role::Envelope) => {
                let soap = self.version.map(SoapVersion::namespace);
                match local {
                    "Header" if soap == Some(ns) => Role::Header,
                    "Body" if soap == Some(ns) => {
                        self.at_body = true;
                        Role::Other
                    }
                    _ => Role::Other,
                }
            }
            Some(Role::Header) => {
                let wsa = AddressingVersion::from_namespace(ns);
                if let Some(v) = wsa
                    && v != AddressingVersion::None
                    && matches!(
                        local,
                        "Action" | "To" | "MessageID" | "RelatesTo" | "ReplyTo" | "FaultTo"
                    )
                {
                    self.addressing = Some(v);
                }
                match (wsa, local) {
                    (Some(_), "Action") => Role::Keep(Field::Action),
                    (Some(_), "MessageID") => Role::Keep(Field::MessageId),
                    (Some(v), "To") if v != AddressingVersion::None => {
                        if self.to.is_some() {
                            // Two would hide the second's query from whoever edits the first.
                            return Err(DecodeError::Header("To (two of them)"));
                        }
                        Role::Keep(Field::To)
                    }
                    (_, "RelayAccessToken") if ns == RELAY_CONNECT_NS => {
                        if self.token_span.is_some() {
                            return Err(DecodeError::Header("RelayAccessToken (two of them)"));
                        }
                        Role::Token(open.start)
                    }
                    _ => Role::Other,
                }
            }
            Some(Role::Token(_)) if ns == WSSE_NS && local == "BinarySecurityToken" => {
                self.token_id = open.id;
                Role::TokenValue
            }
            Some(_) => Role::Other,
        };
        if matches!(role, Role::Keep(_)) {
            // Text kept is the kept header's own: an element inside it adds none, and the
            // span runs over it.
            self.text.clear();
            self.text_start = None;
        }
        self.roles.push(role);
        Ok(())
    }

    /// Text inside the innermost element, starting at input offset `at`.
    fn text(&mut self, text: &Text<'_>, at: usize) -> Result<(), DecodeError> {
        match self.roles.last() {
            Some(Role::Keep(field)) => {
                let piece = text.to_string();
                let what = match field {
                    Field::Action => "Action",
                    Field::MessageId => "MessageID",
                    Field::To => "To",
                };
                self.text_start.get_or_insert(at);
                check_len_sum(self.text.len(), piece.len(), MAX_HEADER_TEXT, what)?;
                self.text.push_str(&piece);
            }
            Some(Role::TokenValue) => match text {
                Text::Bytes(b) => {
                    check_len_sum(self.token_bytes.len(), b.len(), MAX_TOKEN_BYTES, "token")?;
                    self.token_bytes.extend_from_slice(b);
                }
                other => {
                    let piece = other.to_string();
                    let so_far = self.token_text.len();
                    check_len_sum(so_far, piece.len(), MAX_TOKEN_BYTES * 2, "token")?;
                    self.token_text.push_str(&piece);
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// Closes the innermost element: `content_end` is where a `To` value's span ends (see
    /// [`Probe::to_span`]), `after` the offset just past the element's end.
    fn end(&mut self, content_end: usize, after: usize) -> Result<(), DecodeError> {
        let Some(role) = self.roles.pop() else {
            return Ok(());
        };
        if let Some(mark) = self.frames.pop() {
            self.decls.truncate(mark);
        }
        match role {
            Role::Keep(Field::Action) => self.action = Some(std::mem::take(&mut self.text)),
            Role::Keep(Field::MessageId) => {
                self.message_id = Some(std::mem::take(&mut self.text));
            }
            Role::Keep(Field::To) => {
                self.to = Some(std::mem::take(&mut self.text));
                self.to_span = self.text_start.take().map(|start| start..content_end);
            }
            Role::TokenValue => {
                let bytes = if self.token_bytes.is_empty() {
                    decode_base64(&self.token_text)
                        .ok_or(DecodeError::Header("RelayAccessToken"))?
                } else {
                    std::mem::take(&mut self.token_bytes)
                };
                let token = String::from_utf8(bytes)
                    .map_err(|_| DecodeError::Header("RelayAccessToken"))?;
                self.relay_token = Some(RelayAccessToken {
                    id: self.token_id.take().unwrap_or_default(),
                    token,
                });
            }
            Role::Token(start) => {
                if self.relay_token.is_none() {
                    return Err(DecodeError::Header("RelayAccessToken"));
                }
                self.token_span = Some(start..after);
            }
            Role::Envelope | Role::Header | Role::Other => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Probe, DecodeError> {
        let version = self.version.ok_or(DecodeError::NotAnEnvelope)?;
        if !self.at_body {
            return Err(DecodeError::MissingBody);
        }
        Ok(Probe {
            version,
            addressing: self.addressing.unwrap_or(AddressingVersion::None),
            action: self.action,
            message_id: self.message_id,
            relay_token: self.relay_token,
            token_span: self.token_span,
            to: self.to,
            to_span: self.to_span,
        })
    }
}

fn check_len(s: &str, max: usize) -> Result<(), DecodeError> {
    if s.len() > max {
        return Err(DecodeError::Text(ferry_nbfx::XmlError::LimitExceeded {
            limit: ferry_nbfx::Limit::StringBytes,
            max,
        }));
    }
    Ok(())
}

fn check_len_sum(
    have: usize,
    more: usize,
    max: usize,
    what: &'static str,
) -> Result<(), DecodeError> {
    if have.saturating_add(more) > max {
        return Err(DecodeError::Header(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinarySession, Envelope};

    fn request(token: Option<&str>) -> Envelope {
        let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
        env.headers.action = Some("urn:add".into());
        env.headers.message_id = Some("urn:uuid:00000000-0000-0000-0000-000000000007".into());
        env.headers.to = Some("net.tcp://gw/calc".into());
        env.headers.relay_token = token.map(|t| RelayAccessToken::new("uuid:1", t));
        env
    }

    fn cut(bytes: &[u8], span: &Range<usize>) -> Vec<u8> {
        [&bytes[..span.start], &bytes[span.end..]].concat()
    }

    #[test]
    fn binary_probe_reads_the_headers_and_where_the_token_lies() {
        let env = request(Some("SharedAccessSignature sr=x&sig=y&se=1&skn=k"));
        let bytes = env.encode_binary().expect("encode");
        let probe = Probe::binary(&bytes, None, Limits::default()).expect("probe");
        assert_eq!(probe.version, SoapVersion::Soap12);
        assert_eq!(probe.addressing, AddressingVersion::Wsa10);
        assert_eq!(probe.action.as_deref(), Some("urn:add"));
        assert_eq!(probe.message_id, env.headers.message_id);
        assert_eq!(probe.relay_token, env.headers.relay_token);
        let rest = cut(&bytes, &probe.token_span.expect("a span"));
        let mut without = env;
        without.headers.relay_token = None;
        assert_eq!(
            Envelope::decode_binary(&rest, None, Limits::default()).expect("still decodes"),
            without
        );
    }

    #[test]
    fn session_probe_reads_session_strings() {
        let env = request(Some("SharedAccessSignature sr=x&sig=y&se=1&skn=k"));
        let payload = BinarySession::new(Limits::default())
            .encode(&env)
            .expect("encode");
        let mut dictionary = SessionDictionary::new(&Limits::default());
        let table = dictionary.read_table(&payload).expect("table");
        let probe =
            Probe::binary(&payload[table..], Some(&dictionary), Limits::default()).expect("probe");
        assert_eq!(probe.action.as_deref(), Some("urn:add"));
        assert_eq!(probe.relay_token, env.headers.relay_token);
    }

    #[test]
    fn text_probe_matches_the_binary_one() {
        let env = request(Some("SharedAccessSignature sr=x&sig=y&se=1&skn=k"));
        let text = env.encode_text();
        let probe = Probe::text(&text, Limits::default()).expect("probe");
        assert_eq!(probe.action.as_deref(), Some("urn:add"));
        assert_eq!(probe.message_id, env.headers.message_id);
        assert_eq!(probe.relay_token, env.headers.relay_token);
        let rest = cut(text.as_bytes(), &probe.token_span.expect("a span"));
        let rest = Envelope::decode_text(std::str::from_utf8(&rest).expect("utf-8"))
            .expect("still decodes");
        assert!(rest.headers.relay_token.is_none());
        assert_eq!(rest.headers.action, env.headers.action);
    }

    fn put(bytes: &[u8], span: &Range<usize>, with: &[u8]) -> Vec<u8> {
        [&bytes[..span.start], with, &bytes[span.end..]].concat()
    }

    #[test]
    fn the_to_value_can_be_written_anew_in_place() {
        let mut env = request(None);
        env.headers.to = Some("net.tcp://gw/calc?a=1&sb-hc-token=secret".into());
        let new = "net.tcp://gw/calc?a=1";
        let mut expected = env.clone();
        expected.headers.to = Some(new.into());

        // Binary: one text record ending the element takes the span's place.
        let bytes = env.encode_binary().expect("encode");
        let probe = Probe::binary(&bytes, None, Limits::default()).expect("probe");
        assert_eq!(probe.to, env.headers.to);
        let mut record = Vec::new();
        Record::Text {
            text: Text::Chars(new.into()),
            end: true,
        }
        .encode(&mut record, None)
        .expect("encode a text record");
        let edited = put(&bytes, &probe.to_span.expect("a span"), &record);
        assert_eq!(
            Envelope::decode_binary(&edited, None, Limits::default()).expect("decodes"),
            expected
        );

        // Text: escaped characters between the tags.
        let text = env.encode_text();
        let probe = Probe::text(&text, Limits::default()).expect("probe");
        assert_eq!(probe.to, env.headers.to);
        let edited = put(
            text.as_bytes(),
            &probe.to_span.expect("a span"),
            quick_xml::escape::escape(new).as_bytes(),
        );
        let edited = Envelope::decode_text(std::str::from_utf8(&edited).expect("utf-8"))
            .expect("still decodes");
        assert_eq!(edited.headers.to, expected.headers.to);
    }

    #[test]
    fn two_to_headers_are_refused() {
        let text = format!(
            r#"<s:Envelope xmlns:s="{}" xmlns:a="{}"><s:Header><a:To>x:a</a:To><a:To>x:b?sb-hc-token=t</a:To></s:Header><s:Body/></s:Envelope>"#,
            SoapVersion::Soap12.namespace(),
            AddressingVersion::Wsa10.namespace(),
        );
        assert!(matches!(
            Probe::text(&text, Limits::default()),
            Err(DecodeError::Header(_))
        ));
    }

    #[test]
    fn no_token_no_span_and_the_body_is_never_read() {
        let env = request(None);
        let mut bytes = env.encode_binary().expect("encode");
        // Garbage after the Body's start tag: the probe has stopped before it.
        let body = bytes.len() - 3;
        bytes.truncate(body + 2);
        bytes.extend_from_slice(&[0xFF; 64]);
        let probe = Probe::binary(&bytes, None, Limits::default()).expect("probe");
        assert!(probe.relay_token.is_none() && probe.token_span.is_none());
    }

    #[test]
    fn refusals() {
        // Not an envelope.
        let doc = [0x40, 0x01, b'x', 0x01];
        assert!(matches!(
            Probe::binary(&doc, None, Limits::default()),
            Err(DecodeError::NotAnEnvelope)
        ));
        // Two tokens.
        let mut env = request(Some("SharedAccessSignature sr=x&sig=y&se=1&skn=k"));
        let token = env.headers.relay_token.clone().expect("token");
        env.headers.other.push(crate::Header {
            element: token.to_element(),
            must_understand: false,
        });
        let bytes = env.encode_binary().expect("encode");
        assert!(matches!(
            Probe::binary(&bytes, None, Limits::default()),
            Err(DecodeError::Header(_))
        ));
        // A token over the limit.
        let env = request(Some(&"x".repeat(MAX_TOKEN_BYTES + 1)));
        let bytes = env.encode_binary().expect("encode");
        assert!(Probe::binary(&bytes, None, Limits::default()).is_err());
    }
}
