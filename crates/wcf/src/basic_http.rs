//! basicHttp: SOAP 1.1 text over HTTP, both sides.
//!
//! Service side, [`BasicHttp`]: an HTTP handler that answers `POST` requests carrying a SOAP
//! envelope (`Content-Type: text/xml; charset=utf-8`, the action in `SOAPAction`) with a
//! [`Service`], as WCF's BasicHttpBinding does:
//!
//! | request | answer |
//! |---|---|
//! | a request/reply operation | `200`, the response envelope |
//! | a fault (typed, untyped, ActionNotSupported, internal) | `500`, the fault envelope |
//! | a one-way operation | `202 Accepted`, empty |
//! | `GET` with metadata published ([`HostConfig::set_metadata`]) | `200`, the document `?wsdl`, `?wsdl=wsdlN` or `?xsd=xsdN` names (`text/xml; charset=UTF-8`), else a help page (`text/html`) |
//! | a WS-Transfer `Get` envelope with metadata published | `200`, the `wsx:Metadata` (mex over HTTP) |
//! | not `POST` (nor `GET` with metadata) | `405` |
//! | another content type | `415` |
//! | a body over the message size | `413` |
//! | a body not all there within [`HostConfig::set_body_read_timeout`] | `408`, connection closed |
//! | not a SOAP envelope | `400` |
//!
//! It runs behind the gateway's HTTP relay ([`BasicHttp::serve`] on an SDK
//! [`HttpListener`]'s requests) or directly on a TCP port ([`BasicHttp::serve_tcp`], HTTP/1.1).
//! SOAP 1.2 envelopes (`application/soap+xml`, the action in its `action` parameter) are
//! answered too, in SOAP 1.2.
//!
//! Deadlines on [`BasicHttp::serve_tcp`]: a request head (and, before it, the idle time of a
//! kept-alive connection) must arrive within [`HEADER_READ_TIMEOUT`] or the receive timeout
//! if shorter, its body within the body read timeout; the connection is closed otherwise.
//! Operations run under the operation timeout, as on net.tcp
//! ([`HostConfig::set_operation_timeout`]).
//!
//! Client side, [`BasicHttpChannel`]: a [`Transport`] posting envelopes with hyper to an
//! `http://` or `https://` URL (HTTP/1.1; TLS by rustls, trusting the operating system's roots
//! or those of [`BasicHttpChannel::with_tls`], e.g. a gateway's development CA).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry_nbfx::Element;
use ferry_net::stall::WriteStall;
use ferry_sdk::ListenerError;
use ferry_sdk::http::{Body, HttpListener, HttpRequests};
use ferry_soap::{AddressingVersion, Body as SoapBody, Envelope, SoapVersion};
use http::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::{Instrument, debug, debug_span, warn};

use crate::client::Transport;
use crate::codec::decode_text;
use crate::host::{HostConfig, metadata_reply, respond_within};
use crate::metadata::Page;
use crate::service::Service;

/// The content type of SOAP 1.1 messages.
pub const SOAP11_CONTENT_TYPE: &str = "text/xml; charset=utf-8";
/// The content type of SOAP 1.2 messages (without the `action` parameter).
pub const SOAP12_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";
/// The header carrying a SOAP 1.1 request's action.
pub const SOAP_ACTION: &str = "SOAPAction";

/// How long a client on [`BasicHttp::serve_tcp`] may take to send a request head, counted
/// from the end of the previous response on a kept-alive connection, so it is the idle limit
/// too (lowered to [`HostConfig::set_receive_timeout`] when that is shorter).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A basicHttp endpoint for one [`Service`]. Cheap to clone (shared).
#[derive(Debug)]
pub struct BasicHttp<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for BasicHttp<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug)]
struct Shared<S> {
    service: S,
    config: HostConfig,
}

impl<S: Service + 'static> BasicHttp<S> {
    /// An endpoint with the default limits ([`HostConfig::default`]: 64 KiB messages).
    pub fn new(service: S) -> Self {
        Self::with_config(service, HostConfig::default())
    }

    /// An endpoint with `config`'s message size and XML limits (and, for
    /// [`Self::serve_tcp`], its session limit as the connection limit).
    pub fn with_config(service: S, config: HostConfig) -> Self {
        Self {
            shared: Arc::new(Shared { service, config }),
        }
    }

    /// The service served.
    pub fn service(&self) -> &S {
        &self.shared.service
    }

    /// Answers one request whose body has been read: the transport-independent core of
    /// [`Self::handle`]. `head` gives the method and headers.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the operation's future.
    pub async fn respond(&self, head: &http::request::Parts, body: &[u8]) -> Response<Bytes> {
        if let Some(page) = self.metadata_page(head) {
            return page;
        }
        if let Some(refusal) = self.check_head(head) {
            return refusal;
        }
        if body.len() > self.shared.config.max_message_size() {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
        }
        let mut request = match decode_text(body, self.shared.config.xml_limits()) {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "malformed soap request");
                return plain(StatusCode::BAD_REQUEST, "malformed SOAP envelope");
            }
        };
        if let Some(action) = request_action(head, request.version) {
            request.headers.action = Some(action);
        }
        let metadata = self.shared.config.metadata();
        let url = self.request_url(head);
        let reply = match metadata_reply(&self.shared.service, metadata, &request, url.as_deref()) {
            Some(reply) => Some(reply),
            None => {
                let limit = self.shared.config.operation_timeout();
                respond_within(&self.shared.service, &request, limit).await
            }
        };
        match reply {
            None => Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Bytes::new())
                .unwrap_or_default(),
            Some(reply) => {
                let status = match reply.body {
                    SoapBody::Fault(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    SoapBody::Payload(_) => StatusCode::OK,
                };
                let content_type = match reply.version {
                    SoapVersion::Soap11 => SOAP11_CONTENT_TYPE,
                    SoapVersion::Soap12 => SOAP12_CONTENT_TYPE,
                };
                Response::builder()
                    .status(status)
                    .header(CONTENT_TYPE, content_type)
                    .body(Bytes::from(reply.encode_text()))
                    .unwrap_or_default()
            }
        }
    }

    /// Answers one request of an SDK HTTP listener (see the module docs): checks method and
    /// content type first, then reads the body up to the message size, within the body read
    /// timeout (`408` after it).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the operation's future.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (head, body) = request.into_parts();
        if let Some(page) = self.metadata_page(&head) {
            return page.map(Body::from);
        }
        if let Some(refusal) = self.check_head(&head) {
            return refusal.map(Body::from);
        }
        let limit = self.shared.config.body_read_timeout();
        let collected = timeout(limit, body.collect(self.shared.config.max_message_size())).await;
        let Ok(collected) = collected else {
            debug!(timeout = ?limit, "request body not read in time");
            return body_timeout().map(Body::from);
        };
        let body = match collected {
            Ok(b) => b,
            Err(ferry_sdk::http::BodyError::TooLarge(_)) => {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large").map(Body::from);
            }
            Err(e) => {
                debug!(error = %e, "request body failed");
                return plain(StatusCode::BAD_REQUEST, "request body failed").map(Body::from);
            }
        };
        self.respond(&head, &body).await.map(Body::from)
    }

    /// Serves every request of an SDK listener's HTTP side (from
    /// [`HttpListener::into_parts`]) until the listener closes.
    ///
    /// # Errors
    ///
    /// Why the listener stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: requests already being served finish in their tasks.
    pub async fn serve(self, requests: HttpRequests) -> Result<(), ListenerError> {
        requests
            .serve(move |request| {
                let this = self.clone();
                async move { this.handle(request).await }
            })
            .await
    }

    /// Serves every request of an SDK HTTP listener until it closes.
    ///
    /// # Errors
    ///
    /// Why the listener stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: requests already being served finish in their tasks.
    pub async fn serve_listener(self, listener: HttpListener) -> Result<(), ListenerError> {
        // The listener half lives as long as the loop: dropping it closes the channel.
        let (_listener, requests) = listener.into_parts();
        self.serve(requests).await
    }

    /// Serves HTTP/1.1 on every connection of a TCP listener (no relay), at most
    /// [`HostConfig::set_max_sessions`] connections at once. A connection is closed when a
    /// request head (or the next one, on a kept-alive connection) takes longer than
    /// [`HEADER_READ_TIMEOUT`] or the receive timeout if shorter, and when a body takes longer
    /// than the body read timeout (after a `408`), and when writing an answer makes no
    /// progress for the send timeout ([`HostConfig::set_send_timeout`]: the client stopped
    /// reading), so a stalled client cannot hold a connection permit for ever.
    ///
    /// # Errors
    ///
    /// None at present; accept failures are logged and retried.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: connections already accepted go on in their tasks.
    pub async fn serve_tcp(self, listener: TcpListener) -> io::Result<()> {
        let permits = Arc::new(Semaphore::new(self.shared.config.max_sessions()));
        loop {
            // Taken before accepting: past the limit, connections wait in the backlog.
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return Ok(());
            };
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let this = self.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let this = this.clone();
                    async move {
                        let (head, body) = request.into_parts();
                        let early = this.metadata_page(&head).or_else(|| this.check_head(&head));
                        let response = match early {
                            Some(early) => early,
                            None => match this.read_body(body).await {
                                Ok(body) => this.respond(&head, &body).await,
                                Err(refusal) => refusal,
                            },
                        };
                        Ok::<_, Infallible>(response.map(Full::new))
                    }
                });
            // hyper restarts the head timer when a kept-alive connection goes idle, so this
            // is the idle limit too; the receive timeout (how long a net.tcp session may be
            // silent) lowers it.
            let head_timeout = HEADER_READ_TIMEOUT.min(self.shared.config.receive_timeout());
            // A client that stops reading its answer (a large ?wsdl page or reply) would hold
            // the connection and its permit for ever: a write without progress for the send
            // timeout fails, and hyper closes the connection.
            let stream = WriteStall::new(stream, self.shared.config.send_timeout());
            // One task per connection, holding its permit.
            tokio::spawn(
                async move {
                    let _permit = permit;
                    let result = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(head_timeout)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = result {
                        debug!(error = %e, "http connection ended");
                    }
                }
                .instrument(debug_span!("basic_http", %peer)),
            );
        }
    }

    /// Reads a request body of [`Self::serve_tcp`] whole, up to the message size and within
    /// the body read timeout; else the refusal to send: `413`, `408` (with `Connection:
    /// close`: hyper stops reading the unread rest and closes after the answer) or `400` for
    /// a body that broke off.
    async fn read_body(&self, body: hyper::body::Incoming) -> Result<Bytes, Response<Bytes>> {
        let config = &self.shared.config;
        let limit = config.body_read_timeout();
        // One deadline over the whole body: a trickling client gets no more time than a
        // silent one.
        match timeout(
            limit,
            Limited::new(body, config.max_message_size()).collect(),
        )
        .await
        {
            Ok(Ok(body)) => Ok(body.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large"))
            }
            Ok(Err(e)) => {
                debug!(error = %e, "request body failed");
                Err(plain(StatusCode::BAD_REQUEST, "request body failed"))
            }
            Err(_elapsed) => {
                debug!(timeout = ?limit, "request body not read in time");
                Err(body_timeout())
            }
        }
    }

    /// The answer to a `GET` when metadata is published (see [`crate::metadata`]): a
    /// document or the help page, addressed to the `Host` header (through the relay, which
    /// drops it, to the configured public base) and the request's path.
    fn metadata_page(&self, head: &http::request::Parts) -> Option<Response<Bytes>> {
        let metadata = self.shared.config.metadata()?;
        if head.method != Method::GET {
            return None;
        }
        let host = head
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        let Page { content_type, body } =
            metadata.page(head.uri.query().unwrap_or_default(), host, head.uri.path());
        Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, content_type)
                .body(Bytes::from(body))
                .unwrap_or_default(),
        )
    }

    /// The URL a request came in on, as far as it is known: `http://{Host}{path}`, else the
    /// metadata's public `http` (or `https`) base and the path.
    fn request_url(&self, head: &http::request::Parts) -> Option<String> {
        let path = head.uri.path();
        if let Some(host) = head
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
        {
            return Some(format!("http://{host}{path}"));
        }
        let metadata = self.shared.config.metadata()?;
        let base = metadata
            .public_base("http")
            .or_else(|| metadata.public_base("https"))?;
        Some(format!("{base}{path}"))
    }

    /// The refusal for a request head that cannot carry a SOAP request, if any.
    fn check_head(&self, head: &http::request::Parts) -> Option<Response<Bytes>> {
        if head.method != Method::POST {
            let (allow, text) = if self.shared.config.metadata().is_some() {
                ("GET, POST", "only GET and POST are served")
            } else {
                ("POST", "only POST is served")
            };
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, text);
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            return Some(r);
        }
        let content_type = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // The same content types as a net.tcp session's text encoding, and only those.
        let format = ferry_nmf::MessageFormat::of_content_type(content_type);
        if format != Some(ferry_nmf::MessageFormat::Text) {
            return Some(plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected text/xml; charset=utf-8",
            ));
        }
        if head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > self.shared.config.max_message_size())
        {
            return Some(plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large"));
        }
        None
    }
}

/// The request's action: `SOAPAction` (SOAP 1.1, quotes removed) or the content type's
/// `action` parameter (SOAP 1.2); `None` leaves the envelope's own Action header.
fn request_action(head: &http::request::Parts, version: SoapVersion) -> Option<String> {
    let unquote = |v: &str| v.trim().trim_matches('"').to_owned();
    let found = match version {
        SoapVersion::Soap11 => head
            .headers
            .get(SOAP_ACTION)
            .and_then(|v| v.to_str().ok())
            .map(unquote),
        SoapVersion::Soap12 => head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| {
                ct.split(';').skip(1).find_map(|p| match p.split_once('=') {
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("action") => Some(unquote(v)),
                    _ => None,
                })
            }),
    };
    found.filter(|a| !a.is_empty())
}

/// The answer to a body that did not arrive within the body read timeout: `408`, and the
/// connection is not kept (the rest of the body may still come, mistaken for a next request).
fn body_timeout() -> Response<Bytes> {
    let mut r = plain(
        StatusCode::REQUEST_TIMEOUT,
        "request body not received in time",
    );
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A short plain-text answer.
fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Bytes::from_static(text.as_bytes()))
        .unwrap_or_default()
}

/// Default for [`BasicHttpChannel::set_timeout`]: 1 minute, WCF's `SendTimeout`.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a [`BasicHttpChannel`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BasicHttpError {
    /// The URL is not an `http://` or `https://` URL (only `https://` with
    /// [`BasicHttpChannel::with_tls`]).
    #[error("invalid endpoint url {0:?}")]
    Url(String),
    /// A header name or value is invalid.
    #[error("invalid header {0:?}")]
    Header(String),
    /// The TLS handshake of an `https://` URL failed: the server's certificate is not
    /// trusted or names another host, no protocol version or cipher suite in common, and
    /// the like.
    #[error("tls handshake failed")]
    Tls(#[source] rustls::Error),
    /// The HTTP exchange failed.
    #[error("http request failed")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The response is over the message size.
    #[error("response over {0} bytes")]
    TooLarge(usize),
    /// The service answered with a status that carries no SOAP envelope.
    #[error("service answered {status}")]
    Status {
        /// The status.
        status: StatusCode,
    },
    /// The response is not a SOAP envelope.
    #[error("undecodable response")]
    Decode(#[source] ferry_soap::DecodeError),
}

/// A basicHttp client channel: SOAP 1.1 text envelopes posted to one URL, over HTTP/1.1 with
/// kept-alive connections (and TLS for an `https://` URL).
#[derive(Clone, Debug)]
pub struct BasicHttpChannel {
    client: HttpClient,
    url: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    max_message_bytes: usize,
    xml: ferry_nbfx::Limits,
}

impl BasicHttpChannel {
    /// A channel posting to `url`: `http://host:port/path`, or `https://host:port/path`
    /// trusting the operating system's roots (loaded once per process). A service whose
    /// certificate another CA signed (a gateway's development CA) takes [`Self::with_tls`].
    ///
    /// # Errors
    ///
    /// [`BasicHttpError::Url`] for anything but an absolute `http://` or `https://` URL.
    pub fn new(url: &str) -> Result<Self, BasicHttpError> {
        let parsed = parse_url(url)?;
        let client = match parsed.scheme_str() {
            Some("https") => HttpClient::tls(system_tls()),
            _ => HttpClient::Plain(Client::builder(TokioExecutor::new()).build_http()),
        };
        Ok(Self::with_client(client, parsed))
    }

    /// A channel posting to `url` (`https://host:port/path`) over TLS with `config`'s trust
    /// roots (e.g. [`ferry_net::tls::client_config`] with the gateway's development CA) and
    /// client certificate, if any. The server name checked (and sent as SNI) is the URL's
    /// host; ALPN offers `http/1.1` only, whatever `config` offers, since the channel speaks
    /// HTTP/1.1.
    ///
    /// # Errors
    ///
    /// [`BasicHttpError::Url`] for anything but an absolute `https://` URL.
    pub fn with_tls(url: &str, config: Arc<ClientConfig>) -> Result<Self, BasicHttpError> {
        let parsed = parse_url(url)?;
        if parsed.scheme_str() != Some("https") {
            return Err(BasicHttpError::Url(url.into()));
        }
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols = vec![ferry_net::tls::ALPN_HTTP11.to_vec()];
        Ok(Self::with_client(HttpClient::tls(Arc::new(config)), parsed))
    }

    fn with_client(client: HttpClient, url: http::Uri) -> Self {
        Self {
            client,
            url,
            headers: http::HeaderMap::new(),
            timeout: DEFAULT_CLIENT_TIMEOUT,
            max_message_bytes: crate::host::DEFAULT_MAX_MESSAGE_BYTES,
            xml: ferry_nbfx::Limits::default(),
        }
    }

    /// Adds a header to every request, e.g. `ServiceBusAuthorization` with a SAS token for a
    /// gateway path that requires senders to authenticate.
    ///
    /// # Errors
    ///
    /// [`BasicHttpError::Header`] for an invalid name or value.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<&mut Self, BasicHttpError> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BasicHttpError::Header(name.into()))?;
        let v = HeaderValue::from_str(value).map_err(|_| BasicHttpError::Header(name.into()))?;
        self.headers.insert(n, v);
        Ok(self)
    }

    /// Sets how long one call may take (default [`DEFAULT_CLIENT_TIMEOUT`]), connecting
    /// (and the TLS handshake) included when no kept-alive connection is free.
    pub fn set_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest response accepted, raising the byte-counting reader quotas with it
    /// (default 64 KiB).
    pub fn set_max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_message_bytes = bytes;
        self.xml.max_document_bytes = bytes;
        self.xml.max_string_bytes = bytes.max(self.xml.max_string_bytes);
        self.xml.max_array_length = bytes.max(self.xml.max_array_length);
        self
    }

    /// Posts one envelope; the status and body of the answer.
    async fn post(
        &self,
        action: &str,
        body: Element,
    ) -> Result<(StatusCode, Bytes), BasicHttpError> {
        let mut env = Envelope::new(SoapVersion::Soap11, AddressingVersion::None);
        env.body = SoapBody::Payload(vec![body]);
        let mut request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, SOAP11_CONTENT_TYPE)
            .header(SOAP_ACTION, format!("\"{action}\""))
            .body(Full::new(Bytes::from(env.encode_text())))
            .map_err(|_| BasicHttpError::Header(SOAP_ACTION.into()))?;
        request
            .headers_mut()
            .extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let exchange = async {
            let response = self.client.request(request).await.map_err(request_error)?;
            let status = response.status();
            let body = Limited::new(response.into_body(), self.max_message_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        BasicHttpError::TooLarge(self.max_message_bytes)
                    } else {
                        BasicHttpError::Http(e)
                    }
                })?
                .to_bytes();
            Ok((status, body))
        };
        timeout(self.timeout, exchange)
            .await
            .map_err(|_| BasicHttpError::Timeout(self.timeout))?
    }
}

/// `url` parsed, if it is an absolute `http://` or `https://` URL.
fn parse_url(url: &str) -> Result<http::Uri, BasicHttpError> {
    let parsed: http::Uri = url.parse().map_err(|_| BasicHttpError::Url(url.into()))?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    if !scheme_ok || parsed.host().is_none() {
        return Err(BasicHttpError::Url(url.into()));
    }
    Ok(parsed)
}

/// The TLS configuration of `https://` URLs given to [`BasicHttpChannel::new`]: the
/// operating system's roots, loaded once per process (loading them reads files).
fn system_tls() -> Arc<ClientConfig> {
    static SYSTEM: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            ferry_net::tls::client_config(
                ferry_net::tls::native_roots(),
                &[ferry_net::tls::ALPN_HTTP11],
            )
            // With the built-in ring provider and safe defaults rustls always accepts this.
            .expect("system client config")
        })
        .clone()
}

/// A failed request as a [`BasicHttpError`]: [`BasicHttpError::Tls`] when the connector's
/// TLS handshake failed (hyper keeps the connector's error as a source), else
/// [`BasicHttpError::Http`].
fn request_error(e: hyper_util::client::legacy::Error) -> BasicHttpError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(c) = cause {
        if let Some(ConnectError::Tls(tls)) = c.downcast_ref::<ConnectError>() {
            return BasicHttpError::Tls(tls.clone());
        }
        cause = c.source();
    }
    BasicHttpError::Http(Box::new(e))
}

/// The pooled hyper client of a channel, for its URL's scheme.
#[derive(Clone, Debug)]
enum HttpClient {
    /// `http://`.
    Plain(Client<HttpConnector, Full<Bytes>>),
    /// `https://`.
    Tls(Client<TlsConnector, Full<Bytes>>),
}

impl HttpClient {
    fn tls(config: Arc<ClientConfig>) -> Self {
        let mut tcp = HttpConnector::new();
        // The scheme is https; the TCP connector would refuse anything but http otherwise.
        tcp.enforce_http(false);
        // One request, one answer: don't hold a small request's last segment back.
        tcp.set_nodelay(true);
        let connector = TlsConnector {
            tcp,
            tls: tokio_rustls::TlsConnector::from(config),
        };
        Self::Tls(Client::builder(TokioExecutor::new()).build(connector))
    }

    async fn request(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Self::Plain(c) => c.request(request).await,
            Self::Tls(c) => c.request(request).await,
        }
    }
}

/// Connects `https://` URLs: TCP (hyper's connector: name resolution, every address tried),
/// then a rustls handshake naming the URL's host.
#[derive(Clone)]
struct TlsConnector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

/// Why [`TlsConnector`] could not connect.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// The URL's host is no DNS name or IP address.
    #[error("invalid tls server name {0:?}")]
    ServerName(String),
    /// The TCP connection failed.
    #[error("tcp connect failed")]
    Tcp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The TLS handshake was refused (by rustls or by the server's alert).
    #[error("tls handshake failed")]
    Tls(#[source] rustls::Error),
    /// The connection failed during the TLS handshake.
    #[error("tls handshake failed")]
    Io(#[source] io::Error),
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.tcp
            .poll_ready(cx)
            .map_err(|e| ConnectError::Tcp(Box::new(e)))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        // The certificate must name the host the URL names; an IPv6 literal comes bracketed.
        let host = uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let tcp = self.tcp.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| ConnectError::ServerName(host))?;
            let tcp = tcp.await.map_err(|e| ConnectError::Tcp(Box::new(e)))?;
            let stream = tls.connect(name, tcp.into_inner()).await.map_err(|e| {
                // tokio-rustls reports rustls's refusals as `InvalidData` I/O errors.
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(refused) => ConnectError::Tls(refused.clone()),
                    None => ConnectError::Io(e),
                }
            })?;
            Ok(TlsStream(TokioIo::new(stream)))
        })
    }
}

/// A TLS connection as hyper's client uses it.
struct TlsStream(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsStream {
    fn connected(&self) -> Connected {
        self.0.inner().get_ref().0.connected()
    }
}

impl hyper::rt::Read for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

impl Transport for BasicHttpChannel {
    type Error = BasicHttpError;

    async fn call(&self, action: &str, body: Element) -> Result<Envelope, BasicHttpError> {
        let (status, body) = self.post(action, body).await?;
        // 200 carries the response, 500 a fault; anything else is an HTTP-level refusal.
        if status != StatusCode::OK && status != StatusCode::INTERNAL_SERVER_ERROR {
            return Err(BasicHttpError::Status { status });
        }
        decode_text(&body, self.xml).map_err(|e| {
            if status == StatusCode::OK {
                BasicHttpError::Decode(e)
            } else {
                BasicHttpError::Status { status }
            }
        })
    }

    async fn send(&self, action: &str, body: Element) -> Result<(), BasicHttpError> {
        let (status, _) = self.post(action, body).await?;
        // WCF answers one-way messages with 202; Mono with an empty 200.
        if status == StatusCode::ACCEPTED || status == StatusCode::OK {
            Ok(())
        } else {
            Err(BasicHttpError::Status { status })
        }
    }
}
