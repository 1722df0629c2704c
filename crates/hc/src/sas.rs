//! `SharedAccessSignature` tokens (spec §2).
//!
//! `SharedAccessSignature sr={urlenc(uri)}&sig={urlenc(base64(hmac))}&se={unix}&skn={rule}`.
//! The signed string is the `sr` text *exactly as it appears in the token* (already
//! URL-encoded), a newline, and the `se` text; the HMAC-SHA256 key is the UTF-8 bytes of the
//! key string itself, not its base64 decoding. Stacks disagree on escape case (`%3A` vs `%3a`)
//! and on `+` for space, so we never re-encode anything before verifying.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

use crate::address::{COMPONENT, decode_query_value};

/// The longest token accepted, in bytes. Real tokens are a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

const PREFIX: &str = "SharedAccessSignature";

type HmacSha256 = Hmac<Sha256>;

/// A token that is not a well-formed SAS token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Over [`MAX_TOKEN_LEN`] bytes.
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Does not start with `SharedAccessSignature `.
    #[error("token is not a SharedAccessSignature")]
    NotSas,
    /// One of `sr`, `sig`, `se`, `skn` is missing.
    #[error("token lacks the {0} field")]
    Missing(&'static str),
    /// A field appears twice.
    #[error("token has the {0} field twice")]
    Duplicate(&'static str),
    /// `se` is not a whole number of seconds.
    #[error("token expiry is not a number")]
    BadExpiry,
    /// `sig` is not base64.
    #[error("token signature is not base64")]
    BadSignatureEncoding,
}

/// A parsed SAS token. Its `Debug` output never shows the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    sr_raw: String,
    se_raw: String,
    resource: String,
    signature: Vec<u8>,
    expiry: u64,
    key_name: String,
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl SasToken {
    /// Makes a token for `resource_uri` (e.g. `http://ns/path`), signed with rule `key_name`'s
    /// `key`, valid until `expiry` (Unix seconds). Byte-identical to what the Node helpers'
    /// `createRelayToken` makes for the same inputs.
    pub fn create(resource_uri: &str, key_name: &str, key: &str, expiry: u64) -> String {
        let sr = utf8_percent_encode(resource_uri, COMPONENT).to_string();
        let se = expiry.to_string();
        let sig = STANDARD.encode(sign(key, &sr, &se));
        format!(
            "{PREFIX} sr={sr}&sig={}&se={se}&skn={}",
            utf8_percent_encode(&sig, COMPONENT),
            utf8_percent_encode(key_name, COMPONENT)
        )
    }

    /// Parses a token: fields in any order, prefix matched without regard to case.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let token = token.trim();
        let rest = token
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &token[PREFIX.len()..])
            .filter(|r| r.starts_with(' '))
            .ok_or(TokenError::NotSas)?
            .trim_start();
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in rest.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (slot, field) = match name.to_ascii_lowercase().as_str() {
                "sr" => (&mut sr, "sr"),
                "sig" => (&mut sig, "sig"),
                "se" => (&mut se, "se"),
                "skn" => (&mut skn, "skn"),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(TokenError::Duplicate(field));
            }
        }
        let sr_raw = sr.ok_or(TokenError::Missing("sr"))?;
        let sig = sig.ok_or(TokenError::Missing("sig"))?;
        let se_raw = se.ok_or(TokenError::Missing("se"))?;
        let skn = skn.ok_or(TokenError::Missing("skn"))?;
        let expiry = se_raw.parse::<u64>().map_err(|_| TokenError::BadExpiry)?;
        // The signature is escaped once; a bare '+' in it is base64, not a space.
        let sig_text = percent_decode_str(sig).decode_utf8_lossy();
        let signature = STANDARD
            .decode(sig_text.as_bytes())
            .map_err(|_| TokenError::BadSignatureEncoding)?;
        Ok(Self {
            sr_raw: sr_raw.to_owned(),
            se_raw: se_raw.to_owned(),
            resource: decode_query_value(sr_raw),
            signature,
            expiry,
            key_name: decode_query_value(skn),
        })
    }

    /// Whether `key` made this token's signature. The comparison takes the same time whatever
    /// the bytes are.
    pub fn verify(&self, key: &str) -> bool {
        let mut mac =
            HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of every length");
        mac.update(self.sr_raw.as_bytes());
        mac.update(b"\n");
        mac.update(self.se_raw.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&self.signature).is_ok()
    }

    /// The decoded resource URI (`sr`): the audience.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Expiry, Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// The authorization rule's name (`skn`).
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
}

fn sign(key: &str, sr: &str, se: &str) -> [u8; 32] {
    let mut mac =
        HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of every length");
    mac.update(sr.as_bytes());
    mac.update(b"\n");
    mac.update(se.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_parse_and_verify() {
        let t = SasToken::create("http://ns:443/hc1", "listen rule", "k3y", 1_700_000_000);
        assert!(t.starts_with("SharedAccessSignature sr=http%3A%2F%2Fns%3A443%2Fhc1&sig="));
        assert!(t.ends_with("&se=1700000000&skn=listen%20rule"));
        let p = SasToken::parse(&t).unwrap();
        assert_eq!(p.resource(), "http://ns:443/hc1");
        assert_eq!(p.key_name(), "listen rule");
        assert_eq!(p.expiry(), 1_700_000_000);
        assert!(p.verify("k3y"));
        assert!(!p.verify("k3y "));
        assert!(!format!("{p:?}").contains("sig"));
    }

    /// A token as the Node helpers' `createRelayToken` writes it, checked against a signature
    /// computed independently with `openssl dgst -sha256 -hmac`.
    #[test]
    fn verifies_against_independent_signature() {
        // printf 'http%%3A%%2F%%2Flocalhost%%3A443%%2Fhc1\n1700000000' |
        //   openssl dgst -sha256 -hmac secret -binary | base64
        let sig = "0TydNHKjK3+DduwcvBxaY6fi2tW/tHUEYxJPl3sFL/A=";
        let token = format!(
            "SharedAccessSignature sr=http%3A%2F%2Flocalhost%3A443%2Fhc1&sig={}&se=1700000000&skn=root",
            utf8_percent_encode(sig, COMPONENT)
        );
        assert!(SasToken::parse(&token).unwrap().verify("secret"));
    }

    #[test]
    fn verifies_the_raw_sr_not_a_reencoding() {
        // Lowercase escapes, as in the documentation's example: signing must use them as is.
        let sr = "http%3a%2f%2fns%2fhc1";
        let se = "1700000000";
        let sig = STANDARD.encode(sign("k", sr, se));
        let token = format!(
            "sharedaccesssignature skn=r&se={se}&sig={}&sr={sr}",
            utf8_percent_encode(&sig, COMPONENT)
        );
        let p = SasToken::parse(&token).unwrap();
        assert_eq!(p.resource(), "http://ns/hc1");
        assert!(p.verify("k"));
    }

    #[test]
    fn rejects_malformed_tokens() {
        assert_eq!(SasToken::parse("Bearer x"), Err(TokenError::NotSas));
        assert_eq!(
            SasToken::parse("SharedAccessSignaturesr=a"),
            Err(TokenError::NotSas)
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sig=AA%3D%3D&se=1&skn=a"),
            Err(TokenError::Missing("sr"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sr=b&sig=AA%3D%3D&se=1&skn=a"),
            Err(TokenError::Duplicate("sr"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sig=AA%3D%3D&se=soon&skn=a"),
            Err(TokenError::BadExpiry)
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sig=!!&se=1&skn=a"),
            Err(TokenError::BadSignatureEncoding)
        );
        let long = format!("SharedAccessSignature sr={}", "a".repeat(MAX_TOKEN_LEN));
        assert_eq!(SasToken::parse(&long), Err(TokenError::TooLong));
    }
}
