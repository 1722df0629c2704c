//! TCP (+ TLS) connect and the client WebSocket upgrade (RFC 6455 §4.1), each under its own
//! timeout.
//!
//! The upgrade is done here rather than by a WebSocket library so that nothing read past the
//! 101 response is lost: the gateway may send frames right behind it (a listener that speaks
//! first), and they are handed to the stream along with the transport.

use std::io;
use std::sync::Arc;

use ferry_hc::command::{FEATURES_HEADER, Features};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::endpoint::Endpoint;
use crate::error::ConnectError;

/// Largest upgrade response head accepted; the gateway's are a few hundred bytes.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Most header lines accepted in the upgrade response.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Request headers the upgrade sets itself; a caller may not supply them.
const HANDSHAKE_HEADERS: [&str; 6] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

/// A TCP or TLS connection to the gateway.
pub(crate) use ferry_net::conn::Conn as Transport;

/// A transport whose WebSocket upgrade succeeded.
#[derive(Debug)]
pub(crate) struct Upgraded {
    pub(crate) io: Transport,
    /// Bytes read past the 101 response: the first frames from the gateway.
    pub(crate) rest: Vec<u8>,
    /// The sub-protocol the gateway chose.
    pub(crate) protocol: Option<String>,
    /// The gateway agreed to a raw byte stream (`Ferry-Features: raw` on the 101): no
    /// WebSocket frames follow.
    pub(crate) raw: bool,
}

/// Opens `url` (`ws://` or `wss://`) with `headers` added to the upgrade request, using the
/// endpoint's TLS configuration and timeouts.
///
/// The handshake's state (the TLS connector's, the request, the response buffer: about
/// 1.8 KB) lives in a box of its own, freed when the handshake ends, so a task that goes on
/// to carry the stream for hours does not keep that much more of it per connection.
pub(crate) async fn open(
    endpoint: &Endpoint,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Upgraded, ConnectError> {
    Box::pin(handshake(endpoint, url, headers)).await
}

async fn handshake(
    endpoint: &Endpoint,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Upgraded, ConnectError> {
    let parsed = url::Url::parse(url).map_err(|_| ConnectError::BadUrl(redact(url)))?;
    let tls = match parsed.scheme() {
        "wss" => true,
        "ws" => false,
        _ => return Err(ConnectError::BadUrl(redact(url))),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| ConnectError::BadUrl(redact(url)))?
        .to_owned();
    let port = parsed.port().unwrap_or(if tls { 443 } else { 80 });
    // IPv6 hosts come bracketed; sockets and TLS names want them bare.
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addr = format!("{host}:{port}");
    // Build the request before connecting: a bad header costs no connection.
    let request = Request::new(&parsed, headers)?;

    let tcp = tokio::time::timeout(
        endpoint.connect_timeout(),
        TcpStream::connect((bare_host.as_str(), port)),
    )
    .await
    .map_err(|_| ConnectError::ConnectTimeout {
        addr: addr.clone(),
        after: endpoint.connect_timeout(),
    })?
    .map_err(|source| ConnectError::Connect {
        addr: addr.clone(),
        source,
    })?;
    // Relayed traffic is often small request/response exchanges: never wait for Nagle.
    tcp.set_nodelay(true)
        .map_err(|source| ConnectError::Connect { addr, source })?;

    // One deadline covers TLS and the upgrade, so their sum is bounded too.
    let deadline = tokio::time::Instant::now() + endpoint.handshake_timeout();
    let mut io = if tls {
        let name =
            ServerName::try_from(bare_host).map_err(|_| ConnectError::BadUrl(redact(url)))?;
        let connector = TlsConnector::from(tls_config(endpoint));
        let stream = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::TlsHandshakeTimeout(endpoint.handshake_timeout()))?
            .map_err(ConnectError::Tls)?;
        Transport::from(stream)
    } else {
        Transport::from(tcp)
    };
    let (rest, Agreed { protocol, raw }) = tokio::time::timeout_at(deadline, request.run(&mut io))
        .await
        .map_err(|_| ConnectError::HandshakeTimeout(endpoint.handshake_timeout()))??;
    Ok(Upgraded {
        io,
        rest,
        protocol,
        raw,
    })
}

/// What the 101 response settled.
struct Agreed {
    protocol: Option<String>,
    raw: bool,
}

/// A client upgrade request (RFC 6455 §4.1), ready to send.
struct Request {
    head: String,
    key: String,
    /// The sub-protocols offered, in the caller's `Sec-WebSocket-Protocol` header.
    offered: Vec<String>,
    /// The caller asked for a raw byte stream (`Ferry-Features: raw`).
    raw_offered: bool,
}

impl Request {
    fn new(url: &url::Url, headers: &[(&str, &str)]) -> Result<Self, ConnectError> {
        let host = url
            .host_str()
            .ok_or_else(|| ConnectError::BadUrl(redact(url.as_str())))?;
        // The default port stays implicit, as browsers and tungstenite send it.
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let key = generate_key();
        let mut head = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        let mut offered = Vec::new();
        let mut raw_offered = false;
        for (name, value) in headers {
            // Parsing with `http` rejects CR, LF and other bytes that would split the head.
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConnectError::BadHeader((*name).to_owned()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ConnectError::BadHeader(name.to_string()))?;
            if HANDSHAKE_HEADERS.contains(&name.as_str()) {
                return Err(ConnectError::BadHeader(name.to_string()));
            }
            let Ok(text) = value.to_str() else {
                return Err(ConnectError::BadHeader(name.to_string()));
            };
            if name == "sec-websocket-protocol" {
                offered.extend(
                    text.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                );
            }
            if name.as_str().eq_ignore_ascii_case(FEATURES_HEADER) {
                raw_offered |= Features::parse([text]).raw;
            }
            head.push_str(&format!("{name}: {text}\r\n"));
        }
        head.push_str("\r\n");
        Ok(Self {
            head,
            key,
            offered,
            raw_offered,
        })
    }

    /// Sends the request and reads the response head. Returns what was read past the head
    /// and what the response settled.
    async fn run(self, io: &mut Transport) -> Result<(Vec<u8>, Agreed), ConnectError> {
        let failed = |e: io::Error| ConnectError::Handshake(format!("transport failed: {e}"));
        io.write_all(self.head.as_bytes()).await.map_err(failed)?;
        io.flush().await.map_err(failed)?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = io.read(&mut chunk).await.map_err(failed)?;
            if n == 0 {
                return Err(ConnectError::Handshake(
                    "connection closed during the upgrade".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let agreed = self.check(&response, &buf)?;
                    return Ok((buf.split_off(len), agreed));
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(ConnectError::Handshake("upgrade response too large".into()));
                }
                Err(e) => {
                    return Err(ConnectError::Handshake(format!(
                        "malformed upgrade response: {e}"
                    )));
                }
            }
        }
    }

    /// Checks a complete response (RFC 6455 §4.1, the client's checks) and returns the
    /// chosen sub-protocol and whether raw bytes follow.
    fn check(
        &self,
        response: &httparse::Response<'_, '_>,
        raw: &[u8],
    ) -> Result<Agreed, ConnectError> {
        let status = response.code.unwrap_or(0);
        if status != 101 {
            // The reason phrase carries a listener's reject description: keep it as sent.
            let reason = reason_phrase(raw).unwrap_or_else(|| canonical_reason(status));
            return Err(ConnectError::Status { status, reason });
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        };
        let bad = |what: &str| ConnectError::Handshake(format!("upgrade response: {what}"));
        if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            return Err(bad("no Upgrade: websocket"));
        }
        if !header("connection").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        }) {
            return Err(bad("no Connection: upgrade"));
        }
        if header("sec-websocket-accept") != Some(derive_accept_key(self.key.as_bytes())) {
            return Err(bad("wrong Sec-WebSocket-Accept"));
        }
        // We offer no extension, so the server may not pick one.
        if header("sec-websocket-extensions").is_some_and(|v| !v.is_empty()) {
            return Err(bad("an extension we did not offer"));
        }
        let protocol = match header("sec-websocket-protocol") {
            Some(p) if !self.offered.contains(&p) => {
                return Err(bad("a sub-protocol we did not offer"));
            }
            other => other,
        };
        let raw = header(FEATURES_HEADER).is_some_and(|v| Features::parse([v.as_str()]).raw);
        if raw && !self.raw_offered {
            return Err(bad("raw bytes we did not ask for"));
        }
        Ok(Agreed { protocol, raw })
    }
}

/// The reason phrase of the status line at the start of `head`.
fn reason_phrase(head: &[u8]) -> Option<String> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    let (_version, _code) = (parts.next()?, parts.next()?);
    parts.next().map(str::to_owned)
}

fn canonical_reason(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
        .to_owned()
}

fn tls_config(endpoint: &Endpoint) -> Arc<ClientConfig> {
    endpoint.tls_config()
}

/// The URL without its query, which may hold a token (`sb-hc-token`) or a one-shot
/// rendezvous id: errors and logs must not carry either.
pub(crate) fn redact(url: &str) -> String {
    url.split_once('?').map_or(url, |(head, _)| head).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrase_comes_from_the_status_line() {
        assert_eq!(
            reason_phrase(b"HTTP/1.1 403 Unknown port x\r\nA: b\r\n").as_deref(),
            Some("Unknown port x")
        );
        assert_eq!(reason_phrase(b"HTTP/1.1 404\r\n"), None);
        assert_eq!(redact("wss://h/$hc/p?sb-hc-token=secret"), "wss://h/$hc/p");
    }
}
