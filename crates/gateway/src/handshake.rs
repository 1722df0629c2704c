//! Reading an HTTP/1.1 request head and writing the gateway's own responses.
//!
//! The WebSocket front end parses upgrade requests itself rather than through a WebSocket
//! library, because a sender's upgrade must be *held* until a listener takes it, then
//! answered with the sub-protocol the listener chose, or failed with the status the listener
//! gave (spec §5). Limits: the head must fit `max` bytes and arrive before the handshake
//! deadline the caller sets.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How an HTTP/2 connection preface begins (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Most headers accepted in one request.
pub(crate) const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) target: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0 (relayed as plain HTTP only; a
    /// WebSocket upgrade needs 1.1).
    pub(crate) minor: u8,
    /// In order, duplicates kept.
    pub(crate) headers: Vec<(String, String)>,
    /// Bytes read past the head (a client may pipeline its first frames).
    pub(crate) rest: Vec<u8>,
    /// The head's own bytes, replayed to hyper when the request is plain HTTP.
    pub(crate) raw: Vec<u8>,
}

/// Why a head could not be read. Each maps to a response status, or to silence when the
/// peer is gone anyway.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("connection closed before a request head")]
    Closed,
    #[error("request head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("malformed request head")]
    Malformed,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// Not an HTTP/1 head but the HTTP/2 connection preface (h2c with prior knowledge): the
    /// bytes read so far, for the HTTP/2 server to read again.
    #[error("http/2 connection preface")]
    Http2Preface(Vec<u8>),
}

impl HeadError {
    /// The status to answer with, if the peer can still hear one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Closed | Self::Io(_) | Self::Http2Preface(_) => None,
            Self::TooLarge(_) | Self::TooManyHeaders => Some(431),
            Self::Malformed => Some(400),
        }
    }
}

impl Head {
    /// The first value of header `name` (ASCII case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any value of header `name`, split on commas, equals `token` (case-insensitive).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Reads a request head of at most `max` bytes.
    ///
    /// # Cancel safety
    /// Not cancel safe: bytes read are lost if the future is dropped (the connection is then
    /// dropped too).
    pub(crate) async fn read<R: AsyncRead + Unpin>(
        r: &mut R,
        max: usize,
    ) -> Result<Self, HeadError> {
        // Read straight into the heap buffer: a stack array here would be kept in the state
        // of every connection task for its whole life.
        let mut buf = Vec::with_capacity(2048);
        loop {
            let searched_from = buf.len().saturating_sub(3);
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(2048);
            }
            let n = r.read_buf(&mut buf).await?;
            if buf.starts_with(H2_PREFACE_START) {
                return Err(HeadError::Http2Preface(buf));
            }
            if n == 0 {
                return Err(if buf.is_empty() {
                    HeadError::Closed
                } else {
                    HeadError::Malformed
                });
            }
            if let Some(end) = find_head_end(&buf[searched_from..]).map(|e| e + searched_from) {
                if end > max {
                    return Err(HeadError::TooLarge(max));
                }
                return Self::parse(&buf, end);
            }
            if buf.len() > max {
                return Err(HeadError::TooLarge(max));
            }
        }
    }

    fn parse(buf: &[u8], end: usize) -> Result<Self, HeadError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::Malformed),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
            Err(_) => return Err(HeadError::Malformed),
        }
        let Some(minor @ (0 | 1)) = req.version else {
            return Err(HeadError::Malformed);
        };
        let headers = req
            .headers
            .iter()
            .map(|h| {
                Ok((
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).map_err(|_| HeadError::Malformed)?,
                ))
            })
            .collect::<Result<_, HeadError>>()?;
        Ok(Self {
            method: req.method.ok_or(HeadError::Malformed)?.to_owned(),
            target: req.path.ok_or(HeadError::Malformed)?.to_owned(),
            minor,
            headers,
            rest: buf[end..].to_vec(),
            raw: buf[..end].to_vec(),
        })
    }
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The standard reason phrase for the statuses the gateway sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Makes a reason phrase safe for a status line: visible ASCII and spaces only, bounded.
pub(crate) fn sanitize_reason(text: &str) -> String {
    text.chars()
        .take(512)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Writes an error response with a short text body and closes the write side.
///
/// # Cancel safety
/// Not cancel safe (partial writes); callers bound it with a timeout and drop the connection.
pub(crate) async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    description: &str,
) -> std::io::Result<()> {
    let phrase = if description.is_empty() {
        reason(status).to_owned()
    } else {
        sanitize_reason(description)
    };
    let mut head = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        phrase.len() + 1
    );
    if status == 426 {
        head.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    head.push_str("\r\n");
    head.push_str(&phrase);
    head.push('\n');
    w.write_all(head.as_bytes()).await?;
    w.flush().await?;
    w.shutdown().await
}

/// Writes a `101 Switching Protocols` answer to a WebSocket upgrade; with `raw`, it tells
/// the client that raw bytes, not WebSocket frames, follow (`Ferry-Features: raw`).
///
/// # Cancel safety
/// Not cancel safe (partial writes).
pub(crate) async fn switch<W: AsyncWrite + Unpin>(
    w: &mut W,
    key: &str,
    protocol: Option<&str>,
    raw: bool,
) -> std::io::Result<()> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        head.push_str("Sec-WebSocket-Protocol: ");
        head.push_str(p);
        head.push_str("\r\n");
    }
    if raw {
        head.push_str(ferry_hc::command::FEATURES_HEADER);
        head.push_str(": ");
        head.push_str(ferry_hc::command::FEATURE_RAW);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_head_and_keeps_pipelined_bytes() {
        let raw = b"GET /$hc/a?sb-hc-action=listen HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n\x81\x80";
        let head = Head::read(&mut &raw[..], 1024).await.unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/$hc/a?sb-hc-action=listen");
        assert_eq!(head.header("x-a"), Some("1"));
        assert_eq!(head.headers.len(), 3);
        assert_eq!(head.rest, b"\x81\x80");
    }

    #[tokio::test]
    async fn http10_heads_are_read_and_other_versions_refused() {
        let head = Head::read(&mut &b"GET /p/x HTTP/1.0\r\nHost: x\r\n\r\n"[..], 1024)
            .await
            .unwrap();
        assert_eq!((head.target.as_str(), head.minor), ("/p/x", 0));
        let head = Head::read(&mut &b"GET /p/x HTTP/1.1\r\n\r\n"[..], 1024)
            .await
            .unwrap();
        assert_eq!(head.minor, 1);
        for other in [&b"GET / HTTP/2.0\r\n\r\n"[..], b"GET / HTTP/0.9\r\n\r\n"] {
            assert!(matches!(
                Head::read(&mut &other[..], 1024).await,
                Err(HeadError::Malformed)
            ));
        }
    }

    #[tokio::test]
    async fn limits_and_garbage() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            Head::read(&mut big.as_bytes(), 1024).await,
            Err(HeadError::TooLarge(1024))
        ));
        let endless = vec![b'a'; 5000];
        assert!(matches!(
            Head::read(&mut &endless[..], 1024).await,
            Err(HeadError::TooLarge(_))
        ));
        assert!(matches!(
            Head::read(&mut &b"\x16\x03\x01\x00\r\n\r\n"[..], 1024).await,
            Err(HeadError::Malformed)
        ));
        assert!(matches!(
            Head::read(&mut &b""[..], 1024).await,
            Err(HeadError::Closed)
        ));
        assert!(matches!(
            Head::read(&mut &b"GET / HTTP/1.1\r\n"[..], 1024).await,
            Err(HeadError::Malformed)
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            Head::read(&mut many.as_bytes(), 1 << 20).await,
            Err(HeadError::TooManyHeaders)
        ));
    }

    #[test]
    fn reasons_are_sanitized() {
        assert_eq!(
            sanitize_reason("bad\r\nX-Injected: 1"),
            "bad??X-Injected: 1"
        );
        assert_eq!(sanitize_reason("é"), "?");
    }
}
