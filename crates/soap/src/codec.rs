//! The two codecs over the one model: XML text (quick-xml, via the shared tree) and binary
//! (MC-NBFX with the static dictionary, and the per-connection MC-NBFSE session).

use ferry_nbfx::{DictionaryUse, Document, Limits, SessionDictionary, WriterSession, XmlOptions};

use crate::{
    envelope::Envelope,
    error::{DecodeError, EncodeError},
};

impl Envelope {
    /// Decodes a binary document (`application/soap+msbin1`, or the document part of an
    /// `msbinsession1` envelope after its string table, with `session`).
    ///
    /// # Errors
    ///
    /// [`DecodeError`].
    pub fn decode_binary(
        bytes: &[u8],
        session: Option<&SessionDictionary>,
        limits: Limits,
    ) -> Result<Self, DecodeError> {
        Self::from_document(&Document::decode_with(bytes, session, limits)?)
    }

    /// Encodes the binary document (without a string table; see [`BinarySession`] for
    /// `msbinsession1`).
    ///
    /// # Errors
    ///
    /// [`EncodeError`].
    pub fn encode_binary(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.to_document().encode(&mut out, None)?;
        Ok(out)
    }

    /// Decodes XML text (SOAP 1.1 or 1.2); indentation between elements is ignored.
    ///
    /// # Errors
    ///
    /// [`DecodeError`].
    pub fn decode_text(text: &str) -> Result<Self, DecodeError> {
        let options = XmlOptions {
            dictionary: DictionaryUse::Static,
            ignore_whitespace: true,
            ..XmlOptions::default()
        };
        Self::from_document(&Document::parse_xml(text, &options)?)
    }

    /// Encodes XML text (no XML declaration, no indentation).
    pub fn encode_text(&self) -> String {
        self.to_document().to_xml()
    }
}

/// One direction pair of an `application/soap+msbinsession1` connection: the reader dictionary
/// for what the peer sends and the writer session for what we send.
#[derive(Clone, Debug)]
pub struct BinarySession {
    reader: SessionDictionary,
    writer: WriterSession,
    limits: Limits,
}

impl BinarySession {
    /// A fresh session (one per connection).
    pub fn new(limits: Limits) -> Self {
        Self {
            reader: SessionDictionary::new(&limits),
            writer: WriterSession::new(limits.max_session_bytes),
            limits,
        }
    }

    /// Decodes one envelope payload: string table, then the document.
    ///
    /// # Errors
    ///
    /// [`DecodeError`]; a bad string table poisons the session (as in WCF).
    pub fn decode(&mut self, payload: &[u8]) -> Result<Envelope, DecodeError> {
        let table = self.reader.read_table(payload)?;
        let doc = Document::decode_with(&payload[table..], Some(&self.reader), self.limits)
            .map_err(|e| e.shifted(table))?;
        Envelope::from_document(&doc)
    }

    /// Decodes one envelope payload into the document tree (for tools that print it).
    ///
    /// # Errors
    ///
    /// [`DecodeError`].
    pub fn decode_document(&mut self, payload: &[u8]) -> Result<Document, DecodeError> {
        let table = self.reader.read_table(payload)?;
        Ok(
            Document::decode_with(&payload[table..], Some(&self.reader), self.limits)
                .map_err(|e| e.shifted(table))?,
        )
    }

    /// Encodes one envelope payload: the strings it adds to our session, then the document.
    ///
    /// # Errors
    ///
    /// [`EncodeError`].
    pub fn encode(&mut self, envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
        Ok(envelope.to_document().encode_with_table(&mut self.writer)?)
    }

    /// The peer's session strings so far.
    pub fn reader_dictionary(&self) -> &SessionDictionary {
        &self.reader
    }
}
