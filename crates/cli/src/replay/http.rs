//! HTTP exchanges: each recorded request sent again, each answer compared.

/// How long an HTTP client waits for `100 Continue` before sending the body anyway.
pub(super) const CONTINUE_WAIT: Duration = Duration::from_secs(3);

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_nbfx::{DictionaryUse, Document, XmlOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::compare::{addressing_header, compare_with, correlation};
use super::diff::{AddressMap, Verdict};
use super::mono::MonoState;
use super::recording::{Connection, MAX_MESSAGE};
use super::report::Report;

/// One HTTP message: start line, headers, body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Parses one message head at the front of `bytes`: `Ok(None)` when incomplete.
fn head(bytes: &[u8], request: bool) -> anyhow::Result<Option<(Message, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let (start, len, parsed) = if request {
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = req.parse(bytes)? else {
            return Ok(None);
        };
        let start = format!(
            "{} {} HTTP/1.{}",
            req.method.unwrap_or(""),
            req.path.unwrap_or(""),
            req.version.unwrap_or(1)
        );
        (start, len, req.headers.to_vec())
    } else {
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = resp.parse(bytes)? else {
            return Ok(None);
        };
        let start = format!(
            "HTTP/1.{} {} {}",
            resp.version.unwrap_or(1),
            resp.code.unwrap_or(0),
            resp.reason.unwrap_or("")
        );
        (start, len, resp.headers.to_vec())
    };
    let headers = parsed
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        Message {
            start,
            headers,
            body: Vec::new(),
        },
        len,
    )))
}

/// The body length a message declares; `None` for read-to-close.
fn body_len(m: &Message, request: bool) -> anyhow::Result<Option<usize>> {
    if m.header("transfer-encoding").is_some() {
        bail!("chunked bodies are not replayed");
    }
    match m.header("content-length") {
        Some(v) => Ok(Some(v.trim().parse().context("Content-Length")?)),
        None if request => Ok(Some(0)),
        // 1xx, 204 and 304 have no body.
        None if m.status() < 200 || m.status() == 204 || m.status() == 304 => Ok(Some(0)),
        None => Ok(None),
    }
}

/// Every message of a recorded stream, 1xx responses included.
fn messages(stream: &[u8], request: bool) -> anyhow::Result<Vec<Message>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let (mut m, len) =
            head(&stream[pos..], request)?.context("the recording ends inside a head")?;
        pos += len;
        let n = body_len(&m, request)?.unwrap_or(stream.len() - pos);
        let end = pos.checked_add(n).filter(|&e| e <= stream.len());
        let end = end.context("the recording ends inside a body")?;
        m.body = stream[pos..end].to_vec();
        pos = end;
        out.push(m);
    }
    Ok(out)
}

pub(super) async fn replay(
    conn: &Connection,
    to: &str,
    addresses: &AddressMap,
    wait: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut quirks = report.mono.then(MonoState::default);
    let rest = to
        .strip_prefix("http://")
        .context("an HTTP recording needs --to http://HOST:PORT/PATH")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let requests = messages(&conn.c2s, true)?;
    let responses: Vec<Message> = messages(&conn.s2c, false)?
        .into_iter()
        .filter(|m| m.status() >= 200)
        .collect();
    if requests.len() != responses.len() {
        bail!(
            "{} requests but {} final responses recorded",
            requests.len(),
            responses.len()
        );
    }
    let mut tcp = tokio::time::timeout(wait, TcpStream::connect(authority))
        .await
        .context("connect timed out")?
        .with_context(|| format!("cannot connect to {authority}"))?;
    tcp.set_nodelay(true)?;
    let mut pending = Vec::new();
    for (request, recorded) in requests.iter().zip(&responses) {
        let mut parts = request.start.splitn(3, ' ');
        let (method, target, version) = (
            parts.next().unwrap_or("POST"),
            parts.next().unwrap_or("/"),
            parts.next().unwrap_or("HTTP/1.1"),
        );
        let (recorded_path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        let new_target = if path.is_empty() {
            target.to_owned()
        } else {
            format!("{path}{query}")
        };
        // The recorded base address (where this request went, by the Host it named and by
        // the host and port the answer names it with) is the live one.
        let live_base = format!(
            "http://{authority}{}",
            if path.is_empty() { recorded_path } else { path }
        );
        let mut exchange_addresses = addresses.clone();
        let recorded_authorities = request
            .header("host")
            .into_iter()
            .map(|h| ("http".to_owned(), h.trim().to_owned()))
            .chain(authorities_naming(&recorded.body, recorded_path));
        for (scheme, recorded_authority) in recorded_authorities {
            exchange_addresses = exchange_addresses.with(
                &format!("{scheme}://{recorded_authority}{recorded_path}"),
                &live_base,
            );
        }
        let action = request
            .header("soapaction")
            .map(|a| {
                a.trim_matches('"')
                    .rsplit('/')
                    .next()
                    .unwrap_or(a)
                    .to_owned()
            })
            .unwrap_or_else(|| format!("{method} {target}"));
        let mut head = format!("{method} {new_target} {version}\r\n");
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("host") {
                let _ = write!(head, "Host: {authority}\r\n");
            } else {
                let _ = write!(head, "{name}: {value}\r\n");
            }
        }
        head.push_str("\r\n");
        let what = format!("{action} → {}", recorded.status());
        let result = exchange(&mut tcp, &mut pending, &head, request, wait).await;
        let got = match result {
            Ok(m) => m,
            Err(e) => {
                report.fail(format!("{what}: {e:#}"));
                return Ok(());
            }
        };
        let mut verdict = Verdict::default();
        let one_way = recorded.status() == 200
            && recorded.body.is_empty()
            && got.status() == 202
            && got.body.is_empty();
        if report.mono && one_way {
            // .NET answers one-way calls over HTTP with 202; Mono with 200 (FINDINGS §11).
            verdict.known.insert("§11");
        } else if got.status() != recorded.status() {
            verdict = Verdict::differ(format!(
                "status {}, recorded {}",
                got.status(),
                recorded.status()
            ));
        } else if recorded.body.is_empty() != got.body.is_empty() {
            verdict = Verdict::differ(format!(
                "body of {} bytes, recorded {}",
                got.body.len(),
                recorded.body.len()
            ));
        } else if recorded.body.is_empty() {
            // Nothing to compare beyond the status.
        } else if let Some(d) = content_type_differs(recorded, &got) {
            verdict = Verdict::differ(d);
        } else {
            verdict = compare_bodies(
                (&request.body, &recorded.body, &got.body),
                &exchange_addresses,
                quirks.as_mut(),
            );
        }
        report.verdict(what, verdict);
        if got
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    Ok(())
}

/// Sends one request (head, then the body once the server says `100 Continue` or has
/// been given [`CONTINUE_WAIT`]) and reads its final response.
async fn exchange(
    tcp: &mut TcpStream,
    pending: &mut Vec<u8>,
    head: &str,
    request: &Message,
    wait: Duration,
) -> anyhow::Result<Message> {
    tokio::time::timeout(wait, tcp.write_all(head.as_bytes()))
        .await
        .context("send timed out")??;
    let expect_continue = request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    let mut early = None;
    if expect_continue && !request.body.is_empty() {
        match read_response(tcp, pending, CONTINUE_WAIT).await {
            Ok(m) if m.status() == 100 => {}
            Ok(m) => early = Some(m),
            // No interim answer in time: send the body anyway (RFC 9110 §10.1.1).
            Err(_) => {}
        }
    }
    if let Some(m) = early {
        return Ok(m);
    }
    tokio::time::timeout(wait, tcp.write_all(&request.body))
        .await
        .context("send timed out")??;
    loop {
        let m = read_response(tcp, pending, wait).await?;
        if m.status() >= 200 {
            return Ok(m);
        }
    }
}

async fn read_response(
    tcp: &mut TcpStream,
    pending: &mut Vec<u8>,
    wait: Duration,
) -> anyhow::Result<Message> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = async |pending: &mut Vec<u8>| -> anyhow::Result<bool> {
        let n = tokio::time::timeout(wait, tcp.read(&mut buf))
            .await
            .with_context(|| format!("no answer within {wait:?}"))??;
        pending.extend_from_slice(&buf[..n]);
        if pending.len() > MAX_MESSAGE {
            bail!("answer larger than {MAX_MESSAGE} bytes");
        }
        Ok(n > 0)
    };
    let (mut m, len) = loop {
        if let Some(h) = head(pending, false)? {
            break h;
        }
        if !read(pending).await? {
            bail!("the service closed the connection");
        }
    };
    pending.drain(..len);
    match body_len(&m, false)? {
        Some(n) => {
            while pending.len() < n {
                if !read(pending).await? {
                    bail!("the service closed inside the body");
                }
            }
            m.body = pending.drain(..n).collect();
        }
        None => {
            while read(pending).await? {}
            m.body = std::mem::take(pending);
        }
    }
    Ok(m)
}

/// The content types of two answers with bodies, when their media types or charsets
/// differ (case does not count: `charset=utf-8` is `charset=UTF-8`).
fn content_type_differs(recorded: &Message, live: &Message) -> Option<String> {
    let normal = |m: &Message| {
        let value = m
            .header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut parts = value.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_owned();
        let charset = parts
            .find_map(|p| p.strip_prefix("charset="))
            .map(|c| c.trim_matches('"').to_owned());
        (media, charset)
    };
    (normal(recorded) != normal(live)).then(|| {
        format!(
            "content type {:?}, recorded {:?}",
            live.header("content-type").unwrap_or_default(),
            recorded.header("content-type").unwrap_or_default()
        )
    })
}

/// The (scheme, authority) pairs under which `body` names `path` with a query
/// (`http://127.0.0.1:8702/calc?wsdl=wsdl0`): how the recorded service names its own
/// documents, by its base address, which need not be the Host the client sent (Mono names
/// its configured base, not the recorder the client went through). Only a query counts:
/// namespace URIs such as `http://interop.example/calc/2024` look like addresses too.
fn authorities_naming(body: &[u8], path: &str) -> BTreeSet<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut found = BTreeSet::new();
    for scheme in ["http", "https"] {
        let marker = format!("{scheme}://");
        for (at, _) in text.match_indices(&marker) {
            let rest = &text[at + marker.len()..];
            let end = rest
                .find(['/', '?', '#', '"', '\'', '<', ' '])
                .unwrap_or(rest.len());
            let (authority, after) = rest.split_at(end);
            let names_path = after
                .strip_prefix(path)
                .is_some_and(|tail| tail.starts_with('?'));
            if !authority.is_empty() && names_path {
                found.insert((scheme.to_owned(), authority.to_owned()));
            }
        }
    }
    found
}

/// Compares two XML answers to `request`: the Body of SOAP envelopes (and the live
/// one's correlation with the request's MessageID, where it has one), else whole
/// documents (WSDL, XSD); anything else byte for byte.
fn compare_bodies(
    (request, recorded, live): (&[u8], &[u8], &[u8]),
    addresses: &AddressMap,
    mono: Option<&mut MonoState>,
) -> Verdict {
    let parse = |b: &[u8]| {
        let options = XmlOptions {
            dictionary: DictionaryUse::None,
            ignore_whitespace: true,
            limits: ferry_nbfx::Limits::unlimited(),
        };
        std::str::from_utf8(b)
            .ok()
            .and_then(|t| Document::parse_xml(t, &options).ok())
    };
    let (Some(want), Some(got)) = (parse(recorded), parse(live)) else {
        return Verdict::from((recorded != live).then(|| "bodies differ (not XML)".to_owned()));
    };
    let body = |d: &Document| {
        d.root()
            .and_then(|r| r.elements().find(|e| e.local_name() == "Body"))
            .cloned()
    };
    match (body(&want), body(&got)) {
        (Some(w), Some(g)) => {
            let quirks = mono.is_some();
            let message_id = parse(request).and_then(|r| addressing_header(&r, "MessageID"));
            compare_with(
                &Document::from_root(w),
                &Document::from_root(g),
                addresses,
                mono,
            )
            .and(correlation(message_id.as_deref(), &want, &got, quirks))
        }
        _ => compare_with(&want, &got, addresses, mono),
    }
}
