//! The relay token header: `RelayAccessToken` wrapping a WS-Security `BinarySecurityToken`
//! whose content is the base64 of a SAS token string.
//!
//! ```xml
//! <RelayAccessToken xmlns="http://schemas.microsoft.com/netservices/2009/05/servicebus/connect">
//!   <wsse:BinarySecurityToken wsu:Id="uuid:…"
//!       ValueType="http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0"
//!       EncodingType="…#Base64Binary" xmlns:wsse="…" xmlns:wsu="…">base64(token)</wsse:BinarySecurityToken>
//! </RelayAccessToken>
//! ```
//!
//! The same ValueType is used for SAS tokens; a receiver recognises SAS by the decoded text
//! starting with `SharedAccessSignature`.

use base64::Engine as _;
use ferry_nbfx::{Element, Text, XmlString};

use crate::error::DecodeError;

/// Namespace of the relay's connect contract and of the `RelayAccessToken` header.
pub const RELAY_CONNECT_NS: &str =
    "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect";
/// The action of a NetTcpRelayBinding client's relayed-mode handshake message.
pub const RELAYED_CONNECT_ACTION: &str =
    "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/RelayedConnect";
/// The action of the relay's answer to [`RELAYED_CONNECT_ACTION`].
pub const RELAYED_CONNECT_REPLY_ACTION: &str =
    "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect/RelayedConnectReply";
/// WS-Security secext namespace.
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`wsu:Id`).
pub const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// ValueType of the token (the SWT profile URI, also used for SAS).
pub const SWT_VALUE_TYPE: &str = "http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0";
/// EncodingType of the token.
pub const BASE64_ENCODING_TYPE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// The relay token header.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayAccessToken {
    /// The `wsu:Id` of the BinarySecurityToken (`uuid:…`).
    pub id: String,
    /// The token text (a SAS token: `SharedAccessSignature sr=…&sig=…&se=…&skn=…`).
    pub token: String,
}

impl std::fmt::Debug for RelayAccessToken {
    /// Never prints the token: it is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayAccessToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl RelayAccessToken {
    /// A header carrying `token` under the security token id `id`.
    pub fn new(id: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            token: token.into(),
        }
    }

    /// True when the token is a Shared Access Signature.
    pub fn is_sas(&self) -> bool {
        self.token.starts_with("SharedAccessSignature")
    }

    /// The header element.
    pub fn to_element(&self) -> Element {
        let token = Element::new(
            "wsse",
            XmlString::prefer_static("BinarySecurityToken"),
            WSSE_NS,
        )
        .with_attribute(
            "wsu",
            XmlString::prefer_static("Id"),
            Text::Chars(self.id.clone().into()),
        )
        .with_attribute(
            "",
            XmlString::prefer_static("ValueType"),
            Text::Chars(SWT_VALUE_TYPE.into()),
        )
        .with_attribute(
            "",
            XmlString::prefer_static("EncodingType"),
            Text::Chars(BASE64_ENCODING_TYPE.into()),
        )
        .with_xmlns("wsse", XmlString::prefer_static(WSSE_NS))
        .with_xmlns("wsu", XmlString::prefer_static(WSU_NS))
        // WCF writes token bytes with WriteBase64: a Bytes record in binary, base64 in text.
        .with_text(Text::Bytes(self.token.clone().into_bytes().into()));
        Element::new("", XmlString::inline("RelayAccessToken"), RELAY_CONNECT_NS)
            .with_xmlns("", XmlString::inline(RELAY_CONNECT_NS))
            .with_element(token)
    }

    /// Reads the header element.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Header`] when the BinarySecurityToken is missing or its content is not
    /// base64 of UTF-8.
    pub fn from_element(el: &Element) -> Result<Self, DecodeError> {
        let bad = || DecodeError::Header("RelayAccessToken");
        let token = el.child(WSSE_NS, "BinarySecurityToken").ok_or_else(bad)?;
        let id = token
            .attribute("Id")
            .map(|a| a.value.to_string())
            .unwrap_or_default();
        let bytes = match token.bytes() {
            // Text form: one base64 string (possibly wrapped).
            Some(b) if b.is_empty() => decode_base64(&token.text()).ok_or_else(bad)?,
            Some(b) => b,
            None => decode_base64(&token.text()).ok_or_else(bad)?,
        };
        let token = String::from_utf8(bytes).map_err(|_| bad())?;
        Ok(Self { id, token })
    }
}

pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}
