//! `ferry listen --http-to http://HOST:PORT PATH`: a reverse proxy from the relay to a local
//! HTTP/1.1 origin.
//!
//! Origin connections are kept alive and reused (at most [`MAX_IDLE`] idle ones); one the
//! origin has closed is let go before it is used, and an idempotent request whose whole body
//! fits the read-ahead is sent again on a fresh connection when a pooled one fails under it (a
//! POST never is: the origin may have acted on it). Bodies stream both ways through bounded buffers: the request body
//! with `Content-Length` when it fits the read-ahead, chunked otherwise; the response body
//! as it arrives (content-length, chunked or read-to-close). Hop-by-hop
//! headers are removed both ways (RFC 9110 §7.6.1), `Host` names the origin, and an origin
//! that cannot be reached or answers garbage gives 503 (502 and 504 are the relay service's
//! own answers, spec §3).
//!
//! The listener asks the gateway for cancellations (`Ferry-Features: cancel`): when a sender
//! goes away, its request's handler is dropped, which drops the origin request and closes
//! that origin connection, so the origin stops working for nobody.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use ferry_sdk::Endpoint;
use ferry_sdk::http::{Body, HttpConfig, HttpListener};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

/// TCP connect to the origin.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the origin's response head, and for each read or write after it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response head accepted from the origin.
const MAX_HEAD: usize = 64 * 1024;
/// Most response header lines accepted from the origin.
const MAX_HEADERS: usize = 128;
/// Largest chunk handed on at once.
const READ_CHUNK: usize = 64 * 1024;
/// Buffer for reading the origin's response head and chunk lines; body reads larger than
/// it bypass it.
const HEAD_BUFFER: usize = 8 * 1024;
/// How much of a request body of unknown length is read ahead to send it with a
/// Content-Length (the control channel's inline limit: most bodies fit).
const PREBUFFER: usize = 64 * 1024;
/// Most idle connections kept to the origin.
const MAX_IDLE: usize = 32;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// framing headers each side sets for itself.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The local HTTP origin requests are forwarded to.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// `host:port` to connect to and to send as `Host`.
    authority: String,
    /// The hybrid connection path, stripped from request targets (as the Java SDK does),
    /// so `/PATH/x` reaches the origin as `/x`.
    prefix: String,
    /// Idle keep-alive connections to the origin.
    pool: Pool,
}

/// Idle connections to the origin, most recently used last.
type Pool = Arc<Mutex<Vec<TcpStream>>>;

impl Origin {
    /// Parses `http://HOST[:PORT]` (a trailing `/` is allowed).
    pub(crate) fn parse(url: &str, path: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse().context("--http-to is not a URL")?;
        if uri.scheme_str() != Some("http") {
            bail!("--http-to must be an http:// URL");
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            bail!("--http-to must be http://HOST[:PORT] without a path");
        }
        let authority = uri.authority().context("--http-to names no host")?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        Ok(Self {
            authority,
            prefix: format!("/{}", path.trim_matches('/')),
            pool: Pool::default(),
        })
    }

    /// An idle pooled connection that is still open, if there is one. One the origin has
    /// closed (its end of stream is already waiting) is let go here, before any request is
    /// written to it.
    fn checkout(&self) -> Option<TcpStream> {
        let mut idle = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(tcp) = idle.pop() {
            let mut probe = [0u8; 1];
            match tcp.try_read(&mut probe) {
                // Nothing to read: open and idle, as it should be.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(tcp),
                // Closed, failed, or bytes nobody asked for: not reusable.
                _ => continue,
            }
        }
        None
    }

    /// A new connection to the origin.
    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .context("origin connect timed out")?
            .context("origin connect failed")?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// The target to send the origin: the request's, without the hybrid connection path.
    fn target(&self, uri: &http::Uri) -> String {
        let full = uri.path_and_query().map_or("/", |p| p.as_str());
        match full.strip_prefix(&self.prefix) {
            Some("") => "/".to_owned(),
            Some(rest) if rest.starts_with('?') => format!("/{rest}"),
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            _ => full.to_owned(),
        }
    }
}

/// Serves `endpoint` by forwarding every request to `origin` until `cancel` fires.
pub(crate) async fn run(
    endpoint: Endpoint,
    origin: Origin,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let listener = HttpListener::open(endpoint, HttpConfig::default())
        .await
        .context("cannot open the listener")?;
    tracing::info!(origin = %origin.authority, "forwarding http requests");
    let origin = Arc::new(origin);
    let serve = listener.serve(move |req| {
        let origin = origin.clone();
        async move { proxy(&origin, req).await }
    });
    tokio::select! {
        r = serve => r.context("listener stopped")?,
        () = cancel.cancelled() => {}
    }
    Ok(())
}

/// Forwards one request; any failure reaching the origin becomes a 503.
/// Methods a client may have sent twice without a different effect (RFC 9110 §9.2.2).
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

pub(crate) async fn proxy(origin: &Origin, req: http::Request<Body>) -> http::Response<Body> {
    match forward(origin, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "origin request failed; answering 503");
            let mut resp = http::Response::new(Body::from("origin unreachable\n"));
            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
    }
}

async fn forward(
    origin: &Origin,
    req: http::Request<Body>,
) -> anyhow::Result<http::Response<Body>> {
    let (parts, mut body) = req.into_parts();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        parts.method,
        origin.target(&parts.uri),
        origin.authority
    );
    let extra_hop = connection_tokens(&parts.headers);
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name.as_str(), &extra_hop) || name == http::header::HOST {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // The body is read ahead up to PREBUFFER bytes. One that ends there goes with a
    // Content-Length, which every origin understands, and can be sent again if a pooled
    // connection turns out to be closed; only longer ones are streamed, chunked.
    let mut ahead = Vec::new();
    let mut total = 0;
    let complete = loop {
        match tokio::time::timeout(IO_TIMEOUT, body.next()).await {
            Err(_) => bail!("request body stalled"),
            Ok(None) => break true,
            Ok(Some(chunk)) => {
                let chunk = chunk.context("request body")?;
                total += chunk.len();
                ahead.push(chunk);
                if total > PREBUFFER {
                    break false;
                }
            }
        }
    };

    if complete {
        if total > 0 || matches!(parts.method, http::Method::POST | http::Method::PUT) {
            head.push_str(&format!("Content-Length: {total}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        for chunk in &ahead {
            request.extend_from_slice(chunk);
        }
        // A pooled connection the origin closes just as the request goes out fails before
        // any answer: an idempotent request is then sent once more on a fresh connection.
        // Any other (a POST) is not: the origin may have acted on it before closing, and
        // the client is told instead (RFC 9110 §9.2.2).
        let retry = is_idempotent(&parts.method);
        let mut pooled = origin.checkout();
        loop {
            let reused = pooled.is_some();
            let tcp = match pooled.take() {
                Some(tcp) => tcp,
                None => origin.connect().await?,
            };
            let (read, mut write) = tcp.into_split();
            let mut reader = BufReader::with_capacity(HEAD_BUFFER, read);
            let exchange = async {
                tokio::time::timeout(IO_TIMEOUT, write.write_all(&request))
                    .await
                    .context("origin write timed out")??;
                tokio::time::timeout(IO_TIMEOUT, read_head(&mut reader))
                    .await
                    .context("origin response timed out")?
            };
            match exchange.await {
                Ok((status, headers)) => {
                    return respond(origin, &parts, status, headers, reader, Upload::Done(write));
                }
                Err(e) if reused && retry => {
                    tracing::debug!(error = %format!("{e:#}"), "pooled origin connection failed; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    let (read, mut write) = origin.connect().await?.into_split();
    tokio::time::timeout(IO_TIMEOUT, write.write_all(head.as_bytes()))
        .await
        .context("origin write timed out")??;
    // The request body goes out in a task of its own while the response is read: an origin
    // may answer early (a 413, say) without reading everything. The task hands the write
    // half back, and the response body keeps it (see `OriginBody::upload`), because some
    // origins take a half-close for the end of the exchange.
    let upload = tokio::spawn(async move {
        let ahead = futures_util::stream::iter(ahead.into_iter().map(Ok));
        let mut chunks = ahead.chain(body);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if chunk.is_empty() {
                continue;
            }
            let mut frame = Vec::with_capacity(chunk.len() + 16);
            frame.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            tokio::time::timeout(IO_TIMEOUT, write.write_all(&frame))
                .await
                .context("origin write timed out")??;
        }
        tokio::time::timeout(IO_TIMEOUT, write.write_all(b"0\r\n\r\n"))
            .await
            .context("origin write timed out")??;
        anyhow::Ok(write)
    });
    let upload = Upload::Task(AbortOnDrop(Some(upload)));
    let mut reader = BufReader::with_capacity(HEAD_BUFFER, read);
    // An upload failure shows here as the origin closing or not answering.
    let (status, headers) = tokio::time::timeout(IO_TIMEOUT, read_head(&mut reader))
        .await
        .context("origin response timed out")??;
    respond(origin, &parts, status, headers, reader, upload)
}

/// Builds the relayed response from the origin's head; its body streams from `reader`.
fn respond(
    origin: &Origin,
    parts: &http::request::Parts,
    status: http::StatusCode,
    headers: http::HeaderMap,
    reader: BufReader<OwnedReadHalf>,
    upload: Upload,
) -> anyhow::Result<http::Response<Body>> {
    let framing = if parts.method == http::Method::HEAD
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        })
    {
        Framing::Chunked(ChunkState::Size)
    } else if let Some(len) = headers.get(http::header::CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .context("bad Content-Length from the origin")?;
        Framing::Length(len)
    } else {
        Framing::Close
    };

    let mut resp = http::Response::new(Body::empty());
    *resp.status_mut() = status;
    let extra_hop = connection_tokens(&headers);
    for (name, value) in &headers {
        if !is_hop_by_hop(name.as_str(), &extra_hop) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    // The connection can serve another request once this body is read, unless the origin
    // said otherwise or delimits the body by closing.
    let reusable = !matches!(framing, Framing::Close)
        && !connection_tokens(&headers).iter().any(|t| t == "close");
    let download = OriginBody {
        reader: Some(reader),
        framing,
        upload: Some(upload),
        pool: reusable.then(|| origin.pool.clone()),
        done: false,
    };
    *resp.body_mut() =
        Body::from_stream(futures_util::stream::unfold(download, |mut b| async move {
            match b.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), b)),
                Ok(None) => None,
                Err(e) => {
                    b.done = true;
                    Some((Err(e), b))
                }
            }
        }));
    Ok(resp)
}

/// Header names listed in the message's `Connection` header: hop-by-hop too.
fn connection_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, extra: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || extra.iter().any(|e| e == name)
}

/// Reads the origin's response head; interim 1xx responses (other than 101) are skipped.
async fn read_head(
    reader: &mut BufReader<OwnedReadHalf>,
) -> anyhow::Result<(http::StatusCode, http::HeaderMap)> {
    loop {
        let mut buf = Vec::new();
        loop {
            let n = read_line(reader, &mut buf, MAX_HEAD).await?;
            if n == 0 {
                bail!("origin closed before answering");
            }
            if buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n") {
                break;
            }
        }
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut storage);
        match parsed
            .parse(&buf)
            .context("malformed response from the origin")?
        {
            httparse::Status::Complete(_) => {}
            httparse::Status::Partial => bail!("truncated response head from the origin"),
        }
        let status = http::StatusCode::from_u16(parsed.code.unwrap_or(0))
            .context("bad status from the origin")?;
        if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let mut headers = http::HeaderMap::new();
        for h in parsed.headers.iter() {
            headers.append(
                http::HeaderName::from_bytes(h.name.as_bytes())?,
                http::HeaderValue::from_bytes(h.value)?,
            );
        }
        return Ok((status, headers));
    }
}

/// Appends one line (up to and with its `\n`) to `buf`, failing once `buf` exceeds `max`.
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    buf: &mut Vec<u8>,
    max: usize,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (take, end) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        total += take;
        if buf.len() > max {
            bail!("line from the origin over {max} bytes");
        }
        if end {
            return Ok(total);
        }
    }
}

/// The upload task, stopped when the response is dropped (the sender went away, or the
/// response was read).
struct AbortOnDrop(Option<tokio::task::JoinHandle<anyhow::Result<OwnedWriteHalf>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// How the origin delimits its response body.
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(ChunkState),
    /// Everything until the origin closes.
    Close,
}

enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of the current chunk are left.
    Data(u64),
    /// The last chunk was read.
    Done,
}

/// The origin's response body, read as the relay takes it.
struct OriginBody {
    /// `None` once the connection went back to the pool.
    reader: Option<BufReader<OwnedReadHalf>>,
    framing: Framing,
    /// Our half of the origin connection, or the task writing the body with it; it is
    /// closed only when the response body is done with.
    upload: Option<Upload>,
    /// Where the connection goes once the body is read, if it may be reused.
    pool: Option<Pool>,
    done: bool,
}

/// Where the request's write half is.
enum Upload {
    /// The whole request was written.
    Done(OwnedWriteHalf),
    /// A task is writing the body and returns the write half when done.
    Task(AbortOnDrop),
}

impl OriginBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let next = tokio::time::timeout(IO_TIMEOUT, self.read())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "origin body timed out"))?
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        if next.is_none() {
            self.done = true;
            self.recycle().await;
        }
        Ok(next)
    }

    /// Puts the connection back in the pool once the whole exchange is over: the body read
    /// to its end, the request written, nothing extra sent by the origin.
    async fn recycle(&mut self) {
        let write = match self.upload.take() {
            None => return,
            Some(Upload::Done(write)) => write,
            Some(Upload::Task(mut task)) => match task.0.take() {
                // Finished, so the await returns at once.
                Some(handle) if handle.is_finished() => match handle.await {
                    Ok(Ok(write)) => write,
                    _ => return,
                },
                // Still uploading though the origin answered in full: the connection is not
                // reusable, but the upload runs on (detached, each write under IO_TIMEOUT)
                // so the relay sees its request body consumed.
                _ => return,
            },
        };
        let (Some(pool), Some(reader)) = (self.pool.take(), self.reader.take()) else {
            return;
        };
        if !reader.buffer().is_empty() {
            return;
        }
        let Ok(tcp) = reader.into_inner().reunite(write) else {
            return;
        };
        let mut idle = pool.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(tcp);
        }
    }

    async fn read(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match &mut self.framing {
                Framing::Length(0) | Framing::Chunked(ChunkState::Done) => return Ok(None),
                Framing::Length(left) => {
                    let left = *left;
                    let chunk = self.read_some(left).await?;
                    if chunk.is_empty() {
                        bail!("origin closed inside the body");
                    }
                    self.framing = Framing::Length(left - chunk.len() as u64);
                    return Ok(Some(chunk));
                }
                Framing::Close => {
                    let chunk = self.read_some(READ_CHUNK as u64).await?;
                    return Ok((!chunk.is_empty()).then_some(chunk));
                }
                Framing::Chunked(ChunkState::Size) => {
                    let mut line = Vec::new();
                    if read_line(
                        self.reader.as_mut().context("body already read")?,
                        &mut line,
                        MAX_LINE,
                    )
                    .await?
                        == 0
                    {
                        bail!("origin closed inside a chunked body");
                    }
                    let text = std::str::from_utf8(&line).context("bad chunk size")?;
                    let size = text.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).context("bad chunk size")?;
                    if size == 0 {
                        // Trailers, then the empty line; trailers are not relayed.
                        loop {
                            let mut t = Vec::new();
                            let n = read_line(
                                self.reader.as_mut().context("body already read")?,
                                &mut t,
                                MAX_LINE,
                            )
                            .await?;
                            if n == 0 || t == b"\r\n" || t == b"\n" {
                                break;
                            }
                        }
                        self.framing = Framing::Chunked(ChunkState::Done);
                    } else {
                        self.framing = Framing::Chunked(ChunkState::Data(size));
                    }
                }
                Framing::Chunked(ChunkState::Data(left)) => {
                    let left_now = *left;
                    let chunk = self.read_some(left_now).await?;
                    if chunk.is_empty() {
                        bail!("origin closed inside a chunk");
                    }
                    let rest = left_now - chunk.len() as u64;
                    if rest == 0 {
                        let mut crlf = Vec::new();
                        read_line(
                            self.reader.as_mut().context("body already read")?,
                            &mut crlf,
                            MAX_LINE,
                        )
                        .await?;
                        self.framing = Framing::Chunked(ChunkState::Size);
                    } else {
                        self.framing = Framing::Chunked(ChunkState::Data(rest));
                    }
                    return Ok(Some(chunk));
                }
            }
        }
    }

    /// Reads up to `max` bytes (and at most [`READ_CHUNK`]); empty at end of stream.
    async fn read_some(&mut self, max: u64) -> io::Result<Bytes> {
        let want = usize::try_from(max).unwrap_or(usize::MAX).min(READ_CHUNK);
        let mut buf = BytesMut::with_capacity(want);
        let Some(reader) = self.reader.as_mut() else {
            return Ok(Bytes::new());
        };
        // `take` keeps the read within this body; `read_buf` fills without zeroing first.
        reader.take(want as u64).read_buf(&mut buf).await?;
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A one-shot origin: reads until `until` was received, then sends `answer` and closes.
    async fn origin(
        until: &'static [u8],
        answer: &'static [u8],
    ) -> (Origin, tokio::task::JoinHandle<Vec<u8>>) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", tcp.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.windows(until.len()).any(|w| w == until) {
                    break;
                }
            }
            s.write_all(answer).await.unwrap();
            got
        });
        (Origin::parse(&url, "app").unwrap(), task)
    }

    fn request(method: &str, uri: &str, body: Body) -> http::Request<Body> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("connection", "x-secret")
            .header("x-secret", "hop")
            .header("keep-alive", "5")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(body)
            .unwrap()
    }

    #[test]
    fn targets_lose_the_hybrid_connection_path() {
        let o = Origin::parse("http://127.0.0.1:8080/", "app").unwrap();
        let t = |u: &str| o.target(&u.parse().unwrap());
        assert_eq!(t("/app/x?q=1"), "/x?q=1");
        assert_eq!(t("/app"), "/");
        assert_eq!(t("/app?q"), "/?q");
        assert_eq!(t("/apple"), "/apple");
        assert_eq!(t("/other"), "/other");
        assert!(Origin::parse("https://h:1", "p").is_err());
        assert!(Origin::parse("http://h:1/base", "p").is_err());
        assert_eq!(Origin::parse("http://h", "p").unwrap().authority, "h:80");
    }

    #[tokio::test]
    async fn chunked_response_streams_back_without_hop_headers() {
        let (o, got) = origin(
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
              X-Out: 1\r\nX-Out: 2\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nT: x\r\n\r\n",
        )
        .await;
        let resp = proxy(&o, request("GET", "/app/p?q=1", Body::empty())).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("transfer-encoding").is_none());
        assert!(resp.headers().get("connection").is_none());
        let outs: Vec<_> = resp.headers().get_all("x-out").iter().collect();
        assert_eq!(outs, ["1", "2"]);
        let body = resp.into_body().collect(1 << 20).await.unwrap();
        assert_eq!(&body[..], b"hello world");
        let sent = String::from_utf8(got.await.unwrap()).unwrap();
        assert!(sent.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{sent}");
        assert!(
            sent.contains(&format!("Host: {}\r\n", o.authority)),
            "{sent}"
        );
        assert!(sent.contains("x-multi: a\r\nx-multi: b\r\n"), "{sent}");
        assert!(!sent.contains("x-secret"), "{sent}");
        assert!(!sent.contains("keep-alive"), "{sent}");
    }

    #[tokio::test]
    async fn post_body_and_content_length_response() {
        let (o, got) = origin(
            b"END",
            b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabcIGNORED",
        )
        .await;
        let resp = proxy(&o, request("POST", "/app/u", Body::from("data-END"))).await;
        assert_eq!(resp.status(), 201);
        let body = resp.into_body().collect(1024).await.unwrap();
        assert_eq!(&body[..], b"abc");
        let sent = String::from_utf8(got.await.unwrap()).unwrap();
        assert!(sent.contains("Content-Length: 8\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\ndata-END"), "{sent}");
    }

    #[tokio::test]
    async fn streamed_request_body_is_chunked_and_close_delimited_response_read() {
        let (o, got) = origin(b"END\r\n0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
        // Longer than the read-ahead, so it cannot get a Content-Length.
        let chunks = futures_util::stream::iter([
            Ok::<_, io::Error>(Bytes::from(vec![b'a'; PREBUFFER + 1])),
            Ok(Bytes::from_static(b"END")),
        ]);
        let resp = proxy(&o, request("PUT", "/app", Body::from_stream(chunks))).await;
        let body = resp.into_body().collect(1024).await.unwrap();
        assert_eq!(&body[..], b"until close");
        let sent = String::from_utf8(got.await.unwrap()).unwrap();
        assert!(sent.contains("Transfer-Encoding: chunked\r\n"), "{sent}");
        assert!(sent.contains(&format!("\r\n\r\n{:x}\r\naaa", PREBUFFER + 1)));
        assert!(sent.ends_with("a\r\n3\r\nEND\r\n0\r\n\r\n"));
    }

    #[tokio::test]
    async fn short_streamed_request_body_gets_a_content_length() {
        let (o, got) = origin(b"abEND", b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let chunks = futures_util::stream::iter([
            Ok::<_, io::Error>(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"END")),
        ]);
        let resp = proxy(&o, request("PUT", "/app", Body::from_stream(chunks))).await;
        assert_eq!(resp.status(), 204);
        let sent = String::from_utf8(got.await.unwrap()).unwrap();
        assert!(sent.contains("Content-Length: 5\r\n"), "{sent}");
        assert!(!sent.contains("chunked"), "{sent}");
    }

    /// An origin answering `per_conn` requests on each connection (then closing it), and
    /// counting its connections.
    async fn keep_alive_origin(per_conn: usize) -> (Origin, Arc<std::sync::atomic::AtomicUsize>) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", tcp.local_addr().unwrap());
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    for _ in 0..per_conn {
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = s.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        got.drain(..end);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        (Origin::parse(&url, "app").unwrap(), conns)
    }

    #[tokio::test]
    async fn origin_connections_are_reused() {
        let (o, conns) = keep_alive_origin(10).await;
        for _ in 0..3 {
            let resp = proxy(&o, request("GET", "/app/x", Body::empty())).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(&resp.into_body().collect(16).await.unwrap()[..], b"ok");
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_origin_closed_is_retried_fresh() {
        let (o, conns) = keep_alive_origin(1).await;
        for _ in 0..3 {
            let resp = proxy(&o, request("POST", "/app/x", Body::from("body"))).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(&resp.into_body().collect(16).await.unwrap()[..], b"ok");
            // Let the origin's close reach us, as it would between real requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_post_is_never_sent_twice() {
        // The origin answers a first request, then reads a second on the same connection and
        // closes without answering, as one that crashed after acting on it would.
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", tcp.local_addr().unwrap());
        let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = posts.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    for n in 0.. {
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            let read = s.read(&mut buf).await.unwrap_or(0);
                            if read == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..read]);
                        }
                        if got.starts_with(b"POST") {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        got.clear();
                        if n > 0 {
                            return;
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        let o = Origin::parse(&url, "app").unwrap();
        let resp = proxy(&o, request("GET", "/app/x", Body::empty())).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(&resp.into_body().collect(16).await.unwrap()[..], b"ok");
        let resp = proxy(&o, request("POST", "/app/x", Body::from("pay"))).await;
        assert_eq!(resp.status(), 503, "the client learns the request failed");
        assert_eq!(
            posts.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the origin saw the POST once"
        );
    }

    #[tokio::test]
    async fn origin_down_gives_503() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", tcp.local_addr().unwrap());
        drop(tcp);
        let o = Origin::parse(&url, "app").unwrap();
        let resp = proxy(&o, request("GET", "/app", Body::empty())).await;
        assert_eq!(resp.status(), 503);
    }
}
