//! Control-channel commands (spec §3): one JSON object per text message, whose single key
//! names the command.
//!
//! Decoding is tolerant of what real clients send: `statusCode` as a number or a string, header
//! values as strings, numbers, booleans or arrays (joined with `", "`), unknown fields ignored.
//! Encoding emits exactly the shapes the SDKs key on: a normal `request` always carries both
//! `method` and `body`, a rendezvous-only `request` carries neither.
//!
//! # Ferry extensions
//! Azure's protocol has no way to tell a listener that the sender of an HTTP request went
//! away. Ferry adds one, sent only to listeners that ask for it, so real Hybrid Connections
//! listeners (hyco-https, the .NET and Java SDKs) never see anything new:
//!
//! - a listener lists the extensions it understands in a [`FEATURES_HEADER`] request header
//!   on its `listen` upgrade (`Ferry-Features: cancel`), parsed with [`Features::parse`];
//! - to such a listener only, the gateway sends [`Command::Cancel`]
//!   (`{"cancel":{"id":"…"}}`) when it stops waiting for request `id`'s response: the sender
//!   closed its connection or reset its HTTP/2 stream, or the deadline passed. The listener
//!   drops the work for that request; a `cancel` for an id it does not know (already
//!   answered) is ignored.
//!
//! Azure's protocol also frames every relayed byte as WebSocket messages, masked by both
//! clients, which costs each hop a copy and a pass over the data. When both ends of one
//! relayed connection are Ferry's and want a plain byte stream, they may drop the framing
//! ([`FEATURE_RAW`]):
//!
//! - the sender lists `raw` in the [`FEATURES_HEADER`] of its `connect` upgrade; the
//!   listener finds it in `accept.connectHeaders` and, if it too wants bytes only, lists
//!   `raw` on its rendezvous upgrade;
//! - the gateway answers both upgrades with `Ferry-Features: raw` only when both asked; from
//!   the 101 on, each side's connection carries the other's bytes as they are, end of stream
//!   is TCP's (or TLS's) own, and the gateway moves bytes socket to socket.
//!
//! Each side goes raw only when the 101 it received says so, so a Ferry client meeting
//! Azure's service, or an Azure client on either end, keeps the WebSocket protocol.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The largest control message accepted, in bytes. .NET's listener receive buffer is 64 KiB,
/// so nothing larger could ever be a valid command from or to it (spec §4.3).
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

/// Header name to value, as carried in `connectHeaders`, `requestHeaders`, `responseHeaders`.
pub type Headers = BTreeMap<String, String>;

/// One control-channel command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Service → listener: a sender opened a WebSocket; take it at `address`.
    Accept(Accept),
    /// Service → listener: an HTTP request (inline, or rendezvous-only).
    Request(Request),
    /// Listener → service: the answer to a request.
    Response(Response),
    /// Listener → service: a fresh token for the control channel.
    RenewToken(RenewToken),
    /// Service → listener, Ferry extension: stop working on a request; sent only to
    /// listeners that advertised [`FEATURE_CANCEL`] (see the module docs).
    Cancel(Cancel),
}

/// Request header on a listener's `listen` upgrade naming the Ferry extensions it
/// understands, as a comma-separated list of tokens (case-insensitive; unknown ones ignored).
pub const FEATURES_HEADER: &str = "Ferry-Features";

/// The [`FEATURES_HEADER`] token for [`Command::Cancel`].
pub const FEATURE_CANCEL: &str = "cancel";

/// The [`FEATURES_HEADER`] token for raw relayed connections (see the module docs).
pub const FEATURE_RAW: &str = "raw";

/// The Ferry extensions a client advertised in [`FEATURES_HEADER`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// The listener understands [`Command::Cancel`].
    pub cancel: bool,
    /// The client takes a raw byte stream instead of WebSocket frames.
    pub raw: bool,
}

impl Features {
    /// What a listener built on this crate advertises on its `listen` upgrade.
    pub const ALL: Self = Self {
        cancel: true,
        raw: false,
    };

    /// Just [`FEATURE_RAW`], as a sender or a rendezvous asks for it.
    pub const RAW: Self = Self {
        cancel: false,
        raw: true,
    };

    /// Parses the header's values (the header may be repeated); unknown tokens are ignored
    /// so that later extensions do not break older gateways.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut features = Self::default();
        for token in values.into_iter().flat_map(|v| v.split(',')).map(str::trim) {
            if token.eq_ignore_ascii_case(FEATURE_CANCEL) {
                features.cancel = true;
            } else if token.eq_ignore_ascii_case(FEATURE_RAW) {
                features.raw = true;
            }
        }
        features
    }

    /// The header value advertising these features (empty when there are none).
    pub fn header_value(&self) -> String {
        let mut tokens = Vec::new();
        if self.cancel {
            tokens.push(FEATURE_CANCEL);
        }
        if self.raw {
            tokens.push(FEATURE_RAW);
        }
        tokens.join(", ")
    }
}

/// A control message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Longer than [`MAX_COMMAND_LEN`].
    #[error("control message of {0} bytes is over the {MAX_COMMAND_LEN} byte limit")]
    TooLong(usize),
    /// Not a JSON object with exactly one key.
    #[error("control message is not a JSON object with one key")]
    NotACommand,
    /// A well-formed message naming a command we do not know (the .NET SDK ignores these too).
    #[error("unknown control command {0:?}")]
    Unknown(String),
    /// A known command whose body does not have the required fields.
    #[error("malformed {command} command")]
    Malformed {
        /// The command's name.
        command: String,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl Command {
    /// Decodes one text message.
    ///
    /// # Errors
    /// See [`CommandError`]; [`CommandError::Unknown`] is for the caller to log and ignore.
    pub fn decode(text: &str) -> Result<Self, CommandError> {
        if text.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong(text.len()));
        }
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| CommandError::NotACommand)?;
        let mut entries = map.into_iter();
        let (Some((name, body)), None) = (entries.next(), entries.next()) else {
            return Err(CommandError::NotACommand);
        };
        let malformed = |source| CommandError::Malformed {
            command: name.clone(),
            source,
        };
        Ok(match name.as_str() {
            "accept" => Self::Accept(serde_json::from_value(body).map_err(malformed)?),
            "request" => Self::Request(serde_json::from_value(body).map_err(malformed)?),
            "response" => Self::Response(serde_json::from_value(body).map_err(malformed)?),
            "renewToken" => Self::RenewToken(serde_json::from_value(body).map_err(malformed)?),
            "cancel" => Self::Cancel(serde_json::from_value(body).map_err(malformed)?),
            _ => return Err(CommandError::Unknown(name)),
        })
    }

    /// Encodes the command as its JSON text.
    pub fn encode(&self) -> String {
        // Serializing plain structs of strings, numbers and string maps cannot fail.
        serde_json::to_string(self).expect("commands always serialize")
    }
}

/// The sender's address as the service saw it (an SDK-contract field, spec §10.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// IP address text.
    pub address: String,
    /// TCP port.
    pub port: u16,
}

/// `accept`: a sender is waiting for this listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accept {
    /// The one-shot rendezvous URL to open (or to open with `sb-hc-statusCode` to reject).
    pub address: String,
    /// The sender's `sb-hc-id`, or one the gateway made.
    pub id: String,
    /// The sender's handshake headers (auth headers removed).
    #[serde(default, deserialize_with = "lenient_headers")]
    pub connect_headers: Headers,
    /// The sender's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<RemoteEndpoint>,
}

/// `request`: an HTTP request for the listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The rendezvous URL for this request (present on every request).
    pub address: String,
    /// The request id, echoed in [`Response::request_id`].
    pub id: String,
    /// Origin-form target including the hybrid connection path, `sb-hc-*` removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_target: Option<String>,
    /// The method; absent on a rendezvous-only request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The sender's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<RemoteEndpoint>,
    /// Request headers minus auth and hop-by-hop headers.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_headers"
    )]
    pub request_headers: Option<Headers>,
    /// `true`: exactly one binary message with the body follows. Absent on rendezvous-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<bool>,
}

impl Request {
    /// Whether this is the rendezvous-only form: the listener must fetch the request by
    /// opening `address`. The SDKs disagree on the test (.NET/Java look at `body`, Node at
    /// `method`), so we call it rendezvous-only only when both are absent.
    pub fn is_rendezvous_only(&self) -> bool {
        self.method.is_none() && self.body.is_none()
    }
}

/// `response`: the listener's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// The [`Request::id`] answered.
    pub request_id: String,
    /// HTTP status; a JSON number from the SDKs, a string in the doc's example.
    #[serde(deserialize_with = "number_or_string")]
    pub status_code: u16,
    /// Reason phrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
    /// Response headers.
    #[serde(default, deserialize_with = "lenient_headers")]
    pub response_headers: Headers,
    /// `true`: exactly one binary message with the body follows.
    #[serde(default)]
    pub body: bool,
}

/// `renewToken`: a new token for the listener's control channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewToken {
    /// The SAS token text.
    pub token: String,
}

/// `cancel` (Ferry extension): the gateway no longer waits for the response to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The [`Request::id`] to stop working on.
    pub id: String,
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Number(u64),
        Text(String),
    }
    let code = match Code::deserialize(d)? {
        Code::Number(n) => u16::try_from(n).ok(),
        Code::Text(s) => s.trim().parse().ok(),
    };
    code.filter(|c| (100..=999).contains(c))
        .ok_or_else(|| serde::de::Error::custom("statusCode is not an HTTP status code"))
}

/// One header value as clients send it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
    List(Vec<Self>),
    Null(()),
}

impl Value {
    fn into_text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::List(items) => items
                .into_iter()
                .map(Self::into_text)
                .collect::<Vec<_>>()
                .join(", "),
            Self::Null(()) => String::new(),
        }
    }
}

fn lenient_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
    Ok(lenient_opt_headers(d)?.unwrap_or_default())
}

fn lenient_opt_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Headers>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(raw.map(|m| m.into_iter().map(|(k, v)| (k, v.into_text())).collect()))
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn decodes_accept_as_sent_by_the_service() {
        let text = r#"{"accept":{"address":"wss://h/$hc/a?sb-hc-action=accept&sb-hc-id=1","id":"1",
            "connectHeaders":{"Sec-WebSocket-Key":"k","X-Multi":["a","b"],"X-N":5},
            "remoteEndpoint":{"address":"127.0.0.1","port":5000},"future":true}}"#;
        let Command::Accept(a) = Command::decode(text).unwrap() else {
            panic!("not accept")
        };
        assert_eq!(a.id, "1");
        assert_eq!(a.connect_headers["X-Multi"], "a, b");
        assert_eq!(a.connect_headers["X-N"], "5");
        assert_eq!(
            a.remote_endpoint,
            Some(RemoteEndpoint {
                address: "127.0.0.1".into(),
                port: 5000
            })
        );
    }

    #[test]
    fn status_code_as_number_or_string() {
        for text in [
            r#"{"response":{"requestId":"r","statusCode":200,"body":true}}"#,
            r#"{"response":{"requestId":"r","statusCode":"200","body":true}}"#,
        ] {
            let Command::Response(r) = Command::decode(text).unwrap() else {
                panic!()
            };
            assert_eq!(r.status_code, 200);
            assert!(r.body);
        }
        assert!(matches!(
            Command::decode(r#"{"response":{"requestId":"r","statusCode":"abc"}}"#),
            Err(CommandError::Malformed { .. })
        ));
        assert!(matches!(
            Command::decode(r#"{"response":{"requestId":"r","statusCode":70000}}"#),
            Err(CommandError::Malformed { .. })
        ));
    }

    #[test]
    fn request_forms_keep_their_shape() {
        let inline = Command::Request(Request {
            address: "wss://h/$hc/a?sb-hc-action=request&sb-hc-id=1".into(),
            id: "1".into(),
            request_target: Some("/a/b?q=1".into()),
            method: Some("GET".into()),
            remote_endpoint: None,
            request_headers: Some(Headers::from([("accept".into(), "*/*".into())])),
            body: Some(false),
        });
        let text = inline.encode();
        assert!(text.contains(r#""body":false"#), "{text}");
        assert!(text.contains(r#""method":"GET""#), "{text}");
        assert_eq!(Command::decode(&text).unwrap(), inline);

        let rendezvous = Command::Request(Request {
            address: "wss://h/x".into(),
            id: "2".into(),
            request_target: None,
            method: None,
            remote_endpoint: None,
            request_headers: None,
            body: None,
        });
        assert_eq!(
            rendezvous.encode(),
            r#"{"request":{"address":"wss://h/x","id":"2"}}"#
        );
        let Command::Request(r) = Command::decode(&rendezvous.encode()).unwrap() else {
            panic!()
        };
        assert!(r.is_rendezvous_only());
    }

    #[test]
    fn renew_token_round_trip() {
        let c = Command::RenewToken(RenewToken {
            token: "SharedAccessSignature sr=x".into(),
        });
        assert_eq!(
            c.encode(),
            r#"{"renewToken":{"token":"SharedAccessSignature sr=x"}}"#
        );
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn cancel_round_trip() {
        let c = Command::Cancel(Cancel { id: "r1".into() });
        assert_eq!(c.encode(), r#"{"cancel":{"id":"r1"}}"#);
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        // Unknown fields are ignored, as on every command; the id is required.
        assert_eq!(
            Command::decode(r#"{"cancel":{"id":"r1","reason":"gone"}}"#).unwrap(),
            c
        );
        assert!(matches!(
            Command::decode(r#"{"cancel":{}}"#),
            Err(CommandError::Malformed { command, .. }) if command == "cancel"
        ));
    }

    #[test]
    fn features_header() {
        assert_eq!(Features::parse(["cancel"]), Features::ALL);
        assert_eq!(
            Features::parse(["x-later, CANCEL ", "other"]),
            Features::ALL
        );
        assert_eq!(Features::parse(["Raw"]), Features::RAW);
        assert_eq!(
            Features::parse(["cancel", "raw"]),
            Features {
                cancel: true,
                raw: true
            }
        );
        assert_eq!(Features::RAW.header_value(), "raw");
        assert_eq!(Features::parse(["cancelled", ""]), Features::default());
        assert_eq!(Features::parse(Vec::<&str>::new()), Features::default());
        assert_eq!(Features::ALL.header_value(), "cancel");
        assert_eq!(Features::default().header_value(), "");
        assert_eq!(
            Features::parse([Features::ALL.header_value().as_str()]),
            Features::ALL
        );
    }

    #[test]
    fn rejects_what_is_not_a_command() {
        assert!(matches!(
            Command::decode("[]"),
            Err(CommandError::NotACommand)
        ));
        assert!(matches!(
            Command::decode("{}"),
            Err(CommandError::NotACommand)
        ));
        assert!(matches!(
            Command::decode("not json"),
            Err(CommandError::NotACommand)
        ));
        assert!(matches!(
            Command::decode(r#"{"accept":{},"request":{}}"#),
            Err(CommandError::NotACommand)
        ));
        assert!(
            matches!(Command::decode(r#"{"ping":{}}"#), Err(CommandError::Unknown(n)) if n == "ping")
        );
        assert!(matches!(
            Command::decode(r#"{"accept":{"id":"1"}}"#),
            Err(CommandError::Malformed { .. })
        ));
        let huge = format!(
            r#"{{"renewToken":{{"token":"{}"}}}}"#,
            "a".repeat(MAX_COMMAND_LEN)
        );
        assert!(matches!(
            Command::decode(&huge),
            Err(CommandError::TooLong(_))
        ));
    }
}
