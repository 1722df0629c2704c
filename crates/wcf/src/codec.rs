//! The message encodings a net.tcp session can negotiate, as one codec per connection: binary
//! with the MC-NBFSE session dictionary (NetTcpBinding's default), binary with the static
//! dictionary only, and UTF-8 XML text (SOAP 1.1 or 1.2). The host and the net.tcp channel
//! both use it; UTF-16 text, MTOM and the compressed binary forms are not offered.

use ferry_nbfx::{DictionaryUse, Document, Limits, XmlOptions};
use ferry_nmf::{Encoding, MessageFormat};
use ferry_soap::{BinarySession, DecodeError, EncodeError, Envelope};

/// One connection's codec. Binary-session state is per connection and per direction, so a
/// codec is never shared between connections.
#[derive(Debug)]
pub enum Codec {
    /// `application/soap+msbinsession1` (KnownEncoding 0x08).
    BinarySession(Box<BinarySession>),
    /// `application/soap+msbin1` (KnownEncoding 0x07).
    Binary(Limits),
    /// SOAP 1.1 (0x00) or SOAP 1.2 (0x03) as UTF-8 text.
    Text(Limits),
}

impl Codec {
    /// The codec for an encoding announced in a preamble; `None` when it is not supported
    /// (see [`Encoding::message_format`]).
    pub fn for_encoding(encoding: &Encoding, limits: Limits) -> Option<Self> {
        Some(match encoding.message_format()? {
            MessageFormat::BinarySession => {
                Self::BinarySession(Box::new(BinarySession::new(limits)))
            }
            MessageFormat::Binary => Self::Binary(limits),
            MessageFormat::Text => Self::Text(limits),
        })
    }

    /// Decodes one envelope payload.
    ///
    /// # Errors
    ///
    /// [`DecodeError`]; with the session dictionary, a bad string table poisons the codec
    /// (the connection must end).
    pub fn decode(&mut self, payload: &[u8]) -> Result<Envelope, DecodeError> {
        match self {
            Self::BinarySession(session) => session.decode(payload),
            Self::Binary(limits) => Envelope::decode_binary(payload, None, *limits),
            Self::Text(limits) => decode_text(payload, *limits),
        }
    }

    /// Encodes one envelope payload.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the binary writer refuses the tree (a string over 2^31 bytes).
    pub fn encode(&mut self, envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
        match self {
            Self::BinarySession(session) => session.encode(envelope),
            Self::Binary(_) => envelope.encode_binary(),
            Self::Text(_) => Ok(envelope.encode_text().into_bytes()),
        }
    }
}

/// Decodes an XML text envelope (UTF-8) under `limits`; an XML declaration is accepted.
///
/// # Errors
///
/// [`DecodeError::Text`] for malformed or non-UTF-8 text.
pub fn decode_text(payload: &[u8], limits: Limits) -> Result<Envelope, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::Text(ferry_nbfx::XmlError::Structure("text is not UTF-8")))?;
    // A UTF-8 byte order mark is legal before the declaration; the parser does not expect it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let options = XmlOptions {
        dictionary: DictionaryUse::Static,
        ignore_whitespace: true,
        limits,
    };
    Envelope::from_document(&Document::parse_xml(text, &options)?)
}

#[cfg(test)]
mod tests {
    use ferry_nmf::KnownEncoding;

    use super::*;

    #[test]
    fn the_codec_follows_the_message_format() {
        let limits = Limits::default();
        let codec = |e: KnownEncoding| Codec::for_encoding(&Encoding::Known(e), limits);
        assert!(matches!(
            codec(KnownEncoding::BinarySession),
            Some(Codec::BinarySession(_))
        ));
        assert!(matches!(
            codec(KnownEncoding::Binary),
            Some(Codec::Binary(_))
        ));
        assert!(matches!(
            codec(KnownEncoding::Soap11Utf8),
            Some(Codec::Text(_))
        ));
        assert!(codec(KnownEncoding::Mtom).is_none());
    }

    #[test]
    fn text_with_declaration_and_bom() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope \
                   xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><Add \
                   xmlns=\"http://interop.example/calc/2024\"><a>2</a></Add></s:Body></s:Envelope>";
        let env = decode_text(xml.as_bytes(), Limits::default()).unwrap();
        assert_eq!(env.payload().unwrap().local_name(), "Add");
        assert!(decode_text(b"\xff\xfe<", Limits::default()).is_err());
    }
}
