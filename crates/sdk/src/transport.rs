//! TCP (+ TLS) connect and the client WebSocket upgrade, each under its own timeout.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::endpoint::Endpoint;
use crate::error::ConnectError;

/// How much of the upgrade response is kept to recover its reason phrase, which the
/// WebSocket layer drops (the gateway puts the listener's reject description there).
const STATUS_LINE_CAPTURE: usize = 1024;

/// A TCP or TLS connection.
#[derive(Debug)]
pub(crate) struct Transport {
    io: Io,
    /// The first bytes read, while the upgrade runs; shared because a failed upgrade
    /// consumes the transport.
    capture: Option<Arc<Mutex<Vec<u8>>>>,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if let (Poll::Ready(Ok(())), Some(capture)) = (&r, this.capture.as_ref()) {
            // Poisoning needs a panic while the lock is held, and nothing here panics.
            let mut capture = capture.lock().unwrap_or_else(|e| e.into_inner());
            let room = STATUS_LINE_CAPTURE.saturating_sub(capture.len());
            let new = &buf.filled()[before..];
            capture.extend_from_slice(&new[..new.len().min(room)]);
        }
        r
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A WebSocket upgraded over a [`Transport`], and the sub-protocol the gateway chose.
pub(crate) struct Upgraded {
    pub(crate) ws: WebSocketStream<Transport>,
    pub(crate) protocol: Option<String>,
}

/// Opens `url` (`ws://` or `wss://`) with `headers` added to the upgrade request, using the
/// endpoint's TLS configuration and timeouts.
pub(crate) async fn open(
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
    let io = if tls {
        let name =
            ServerName::try_from(bare_host).map_err(|_| ConnectError::BadUrl(redact(url)))?;
        let connector = TlsConnector::from(tls_config(endpoint));
        let stream = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::TlsHandshakeTimeout(endpoint.handshake_timeout()))?
            .map_err(ConnectError::Tls)?;
        Io::Tls(Box::new(stream))
    } else {
        Io::Plain(tcp)
    };
    let capture = Arc::new(Mutex::new(Vec::new()));
    let transport = Transport {
        io,
        capture: Some(capture.clone()),
    };

    let mut request = url
        .into_client_request()
        .map_err(|_| ConnectError::BadUrl(redact(url)))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConnectError::BadHeader((*name).to_owned()))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| ConnectError::BadHeader(name.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(endpoint.max_message_size()))
        .max_frame_size(Some(endpoint.max_message_size()));
    let upgrade = tokio_tungstenite::client_async_with_config(request, transport, Some(config));
    let result = tokio::time::timeout_at(deadline, upgrade)
        .await
        .map_err(|_| ConnectError::HandshakeTimeout(endpoint.handshake_timeout()))?;
    match result {
        Ok((mut ws, response)) => {
            ws.get_mut().capture = None;
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok(Upgraded { ws, protocol })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let captured = capture.lock().unwrap_or_else(|e| e.into_inner());
            let reason = reason_phrase(&captured).unwrap_or_else(|| canonical_reason(status));
            Err(ConnectError::Status { status, reason })
        }
        Err(e) => Err(ConnectError::Handshake(e.to_string())),
    }
}

/// Per-connection read buffer of the WebSocket layer. It is allocated up front for every
/// connection, so it stays modest; large messages are read in several steps.
const READ_BUFFER: usize = 32 * 1024;

/// The reason phrase of the status line at the start of `head`.
fn reason_phrase(head: &[u8]) -> Option<String> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').splitn(3, ' ');
    let (_version, _code) = (parts.next()?, parts.next()?);
    parts.next().map(str::to_owned)
}

fn canonical_reason(status: u16) -> String {
    tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
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
