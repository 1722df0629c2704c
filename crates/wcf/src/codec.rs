//! The message encodings a net.tcp session can negotiate, as one codec per connection: binary
//! with the MC-NBFSE session dictionary (NetTcpBinding's default), binary with the static
//! dictionary only, and UTF-8 XML text (SOAP 1.1 or 1.2). The host and the net.tcp channel
//! both use it; UTF-16 text, MTOM and the compressed binary forms are not offered.

use ferry_nbfx::{DictionaryUse, Document, Limits, XmlOptions};
use ferry_nmf::{Encoding, KnownEncoding};
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
    /// The codec for an encoding announced in a preamble; `None` when it is not supported.
    pub fn for_encoding(encoding: &Encoding, limits: Limits) -> Option<Self> {
        let known = match encoding {
            Encoding::Known(k) => *k,
            // WCF's text and binary encoders announce themselves with known records; an
            // extensible content type naming one of them is accepted all the same.
            Encoding::Extensible(ct) => match content_type_base(ct) {
                "application/soap+msbinsession1" => KnownEncoding::BinarySession,
                "application/soap+msbin1" => KnownEncoding::Binary,
                "application/soap+xml" if is_utf8(ct) => KnownEncoding::Soap12Utf8,
                "text/xml" if is_utf8(ct) => KnownEncoding::Soap11Utf8,
                _ => return None,
            },
        };
        match known {
            KnownEncoding::BinarySession => {
                Some(Self::BinarySession(Box::new(BinarySession::new(limits))))
            }
            KnownEncoding::Binary => Some(Self::Binary(limits)),
            KnownEncoding::Soap11Utf8 | KnownEncoding::Soap12Utf8 => Some(Self::Text(limits)),
            _ => None,
        }
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

/// The media type of a content type, without parameters, lower case.
fn content_type_base(ct: &str) -> &str {
    ct.split(';').next().unwrap_or_default().trim()
}

/// True unless the content type names a charset other than UTF-8.
fn is_utf8(ct: &str) -> bool {
    ct.split(';').skip(1).all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_encodings() {
        let limits = Limits::default();
        for (encoding, ok) in [
            (Encoding::Known(KnownEncoding::BinarySession), true),
            (Encoding::Known(KnownEncoding::Binary), true),
            (Encoding::Known(KnownEncoding::Soap12Utf8), true),
            (Encoding::Known(KnownEncoding::Soap11Utf8), true),
            (Encoding::Known(KnownEncoding::Soap12Utf16), false),
            (Encoding::Known(KnownEncoding::Mtom), false),
            (Encoding::Known(KnownEncoding::BinarySessionGzip), false),
            (Encoding::Extensible("text/xml; charset=utf-8".into()), true),
            (
                Encoding::Extensible("text/xml; charset=utf-16".into()),
                false,
            ),
            (Encoding::Extensible("application/json".into()), false),
        ] {
            assert_eq!(
                Codec::for_encoding(&encoding, limits).is_some(),
                ok,
                "{encoding:?}"
            );
        }
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
