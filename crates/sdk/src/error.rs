//! Why a connection to the gateway failed.

use std::io;
use std::time::Duration;

use crate::token::TokenError;

/// Opening a WebSocket to the gateway (listener control channel, sender, rendezvous) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL to open is unusable (a bad `accept.address` from the gateway, for instance).
    #[error("cannot use url {0:?}")]
    BadUrl(String),
    /// A header name or value given for the upgrade is not valid HTTP.
    #[error("invalid header {0:?}")]
    BadHeader(String),
    /// The token provider failed.
    #[error("cannot get a token")]
    Token(#[from] TokenError),
    /// The TCP connection was not established in time.
    #[error("tcp connect to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// `host:port`.
        addr: String,
        /// The configured timeout.
        after: Duration,
    },
    /// The TCP connection failed.
    #[error("tcp connect to {addr} failed")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake did not finish in time.
    #[error("tls handshake timed out after {0:?}")]
    TlsHandshakeTimeout(Duration),
    /// The TLS handshake failed (untrusted certificate, wrong name, ...).
    #[error("tls handshake failed")]
    Tls(#[source] io::Error),
    /// The WebSocket upgrade was not answered in time (for a sender: no listener took it).
    #[error("websocket handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// The gateway answered the upgrade with an HTTP error status: 401 bad token, 403 wrong
    /// claim or expired rendezvous, 404 no such path or no listener, a listener's reject
    /// status, ... (spec §7).
    #[error("gateway answered {status} {reason}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The reason phrase as sent (it carries the listener's reject description).
        reason: String,
    },
    /// The upgrade failed in some other way (bad response, transport error).
    #[error("websocket handshake failed: {0}")]
    Handshake(String),
}

impl ConnectError {
    /// The HTTP status the gateway answered with, if that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying cannot help: the gateway refused our credentials (401, 403) or does
    /// not know the path (404). A listener stops reconnecting on these.
    pub fn is_permanent(&self) -> bool {
        matches!(self.status(), Some(401 | 403 | 404)) || matches!(self, Self::BadUrl(_))
    }
}
