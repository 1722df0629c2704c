//! `ferry replay RECORDING --to ADDR`: plays the client side of a recorded session against a
//! live service and checks that every answer matches the recorded one.
//!
//! RECORDING is a folder laid out like `interop/recordings/<session>`: per TCP connection N
//! the bytes each way (`client_to_server.bin` / `server_to_client.bin` for connection 0,
//! `connN.*.bin` after it) and `timeline.jsonl`, the order in which the recorder saw them.
//!
//! - net.tcp (the client stream starts with an MC-NMF Version record): the client's records
//!   are sent in order with their Via and `To` rewritten to ADDR
//!   (`net.tcp://HOST:PORT/PATH`, by [`ferry_wcf::rewrite`]). After each, the replay waits for
//!   exactly the server records the recording shows arriving before the client's next one (a
//!   request waits for its reply, a one-way message for nothing, Mono's client waits for the
//!   PreambleAck, pynettcp does not); then the server must close after the client's End.
//! - HTTP (the client stream starts with a request line): each request is sent again with the
//!   same headers and body (Host and the path from ADDR, `http://HOST:PORT/PATH`; the recorded
//!   query kept), over one connection per recorded connection, honouring
//!   `Expect: 100-continue`.
//!
//! Answers are compared as XML infosets (names with their namespaces, attributes, text),
//! not bytes: prefixes, namespace declarations and the binary records chosen do not count, nor
//! do values that differ on every run: MessageID, RelatesTo, `To`, `urn:uuid:` values,
//! WS-Security timestamps, and the recorded endpoint address (replaced by ADDR). HTTP answers
//! compare their status and SOAP body. Every message gets a line of the report; any mismatch
//! makes the command fail.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_nbfx::{Attr, DictionaryUse, Document, Element, Node, SessionDictionary, XmlOptions};
use ferry_nmf::Record;
use ferry_wcf::rewrite::{ClientRewriter, RewriteEvent, RewriteLimits, Target};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest message replayed or accepted from the service (the recordings hold 1 MiB ones).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// How long the service gets to close after the client's End, or to finish an HTTP response
/// delimited by the close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long an HTTP client waits for `100 Continue` before sending the body anyway.
const CONTINUE_WAIT: Duration = Duration::from_secs(3);
/// Namespaces of the WS-Addressing headers whose values differ on every run.
const WSA: [&str; 2] = [
    "http://www.w3.org/2005/08/addressing",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing",
];
/// WS-Security utility namespace (`wsu:Timestamp`, `wsu:Created`, `wsu:Expires`).
const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";

/// Arguments of `ferry replay`.
#[derive(clap::Args, Debug)]
pub(crate) struct ReplayArgs {
    /// A recording folder (e.g. interop/recordings/tcp-session).
    pub(crate) recording: PathBuf,
    /// The live service: net.tcp://HOST:PORT/PATH (its endpoint address) for net.tcp
    /// recordings, http://HOST:PORT/PATH for HTTP ones.
    #[arg(long)]
    pub(crate) to: String,
    /// Longest wait for each answer, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout: u64,
    /// The recording was made against Mono's WCF and the live service behaves like .NET:
    /// Mono's documented deviations (interop/recordings/FINDINGS.md §2 no End back, §7 the
    /// fault Action's missing slash and empty xml:lang, §8 faults without RelatesTo, §9
    /// untyped faults replaced by a generic InternalServiceFault, §11 one-way over HTTP
    /// answered 200 instead of 202) are reported as `known`, each naming its section,
    /// instead of as differences.
    #[arg(long)]
    pub(crate) mono_quirks: bool,
}

/// Runs `ferry replay`; fails when any answer differs from the recording.
pub(crate) async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let recording = Recording::open(&args.recording)?;
    let wait = Duration::from_secs(args.timeout.max(1));
    let mut report = Report {
        mono: args.mono_quirks,
        ..Report::default()
    };
    println!(
        "replaying {} ({} connection{}) against {}",
        args.recording.display(),
        recording.connections.len(),
        if recording.connections.len() == 1 {
            ""
        } else {
            "s"
        },
        args.to
    );
    for conn in &recording.connections {
        println!("connection {}", conn.index);
        let result = if conn.c2s.first() == Some(&0x00) {
            nettcp::replay(conn, &args.to, wait, &mut report).await
        } else {
            http::replay(conn, &args.to, wait, &mut report).await
        };
        if let Err(e) = result {
            report.fail(format!("connection {} stopped: {e:#}", conn.index));
        }
    }
    println!(
        "{} checked, {} matched, {} differ",
        report.checked,
        report.checked - report.failed,
        report.failed
    );
    if report.known > 0 {
        println!(
            "{} of the matches differ from the recording only by Mono's documented deviations",
            report.known
        );
    }
    if report.failed > 0 {
        bail!(
            "{} of {} answers differ from the recording",
            report.failed,
            report.checked
        );
    }
    Ok(())
}

/// Counts and prints the per-message lines.
#[derive(Default)]
struct Report {
    checked: usize,
    failed: usize,
    /// Matches that needed a known Mono deviation.
    known: usize,
    /// See [`ReplayArgs::mono_quirks`].
    mono: bool,
}

impl Report {
    fn ok(&mut self, line: String) {
        self.checked += 1;
        println!("  ok    {line}");
    }

    fn note(line: String) {
        println!("  sent  {line}");
    }

    fn fail(&mut self, line: String) {
        self.checked += 1;
        self.failed += 1;
        println!("  DIFF  {line}");
    }

    /// A match only thanks to Mono's documented deviations `known` (FINDINGS sections).
    fn known(&mut self, what: String, known: &BTreeSet<&'static str>) {
        self.checked += 1;
        self.known += 1;
        let sections: Vec<&str> = known.iter().copied().collect();
        println!("  known {what} (Mono: FINDINGS {})", sections.join(", "));
    }

    fn verdict(&mut self, what: String, verdict: Verdict) {
        match verdict.diff {
            Some(d) => self.fail(format!("{what}: {d}")),
            None if !verdict.known.is_empty() => self.known(what, &verdict.known),
            None => self.ok(what),
        }
    }
}

/// A recording folder.
struct Recording {
    connections: Vec<Connection>,
}

/// One recorded TCP connection.
struct Connection {
    index: u32,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    /// Chunks in the order the recorder saw them: (client→server?, offset, length).
    timeline: Vec<(bool, usize, usize)>,
}

impl Recording {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a recording folder", dir.display());
        }
        let timeline_file = dir.join("timeline.jsonl");
        let timeline = std::fs::read_to_string(&timeline_file)
            .with_context(|| format!("reading {}", timeline_file.display()))?;
        let mut chunks: BTreeMap<u32, Vec<(bool, usize, usize)>> = BTreeMap::new();
        for (n, line) in timeline.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", timeline_file.display(), n + 1))?;
            let (Some(conn), Some(dir), Some(offset), Some(len)) = (
                entry["conn"].as_u64(),
                entry["dir"].as_str(),
                entry["offset"].as_u64(),
                entry["len"].as_u64(),
            ) else {
                continue; // open / eof / close events
            };
            if entry.get("event").is_some() {
                continue;
            }
            chunks.entry(conn as u32).or_default().push((
                dir == "c2s",
                offset as usize,
                len as usize,
            ));
        }
        let mut connections = Vec::new();
        for index in 0u32.. {
            let prefix = if index == 0 {
                String::new()
            } else {
                format!("conn{index}.")
            };
            let c2s_file = dir.join(format!("{prefix}client_to_server.bin"));
            if !c2s_file.is_file() {
                break;
            }
            let s2c_file = dir.join(format!("{prefix}server_to_client.bin"));
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            connections.push(Connection {
                index,
                c2s: read(&c2s_file)?,
                s2c: read(&s2c_file)?,
                timeline: chunks.remove(&index).unwrap_or_default(),
            });
        }
        if connections.is_empty() {
            bail!("no client_to_server.bin in {}", dir.display());
        }
        Ok(Self { connections })
    }
}

impl Connection {
    /// The position in the timeline of the chunk holding byte `at` of one direction.
    fn seen_at(&self, c2s: bool, at: usize) -> anyhow::Result<usize> {
        self.timeline
            .iter()
            .position(|&(dir, off, len)| dir == c2s && (off..off + len).contains(&at))
            .with_context(|| {
                format!(
                    "timeline.jsonl has no {} chunk holding byte {at} of connection {}",
                    if c2s { "c2s" } else { "s2c" },
                    self.index
                )
            })
    }
}

/// net.tcp sessions.
mod nettcp {
    use super::*;

    /// A unit the client sends or the server answers: the whole preamble, or one record.
    struct Unit {
        range: std::ops::Range<usize>,
        record: Record<'static>,
    }

    /// Splits a recorded stream into records; the client's preamble records become one unit.
    fn units(stream: &[u8], client: bool) -> anyhow::Result<Vec<Unit>> {
        let limits = ferry_nmf::Limits::unlimited();
        let mut out: Vec<Unit> = Vec::new();
        let mut pos = 0;
        let mut in_preamble = false;
        while pos < stream.len() {
            let (record, len) = Record::decode(&stream[pos..], &limits)
                .map_err(|e| e.shifted(pos))?
                .with_context(|| format!("recording ends inside a record at {pos}"))?;
            let record = record.into_owned();
            let range = pos..pos + len;
            pos += len;
            let preamble_part = client
                && matches!(
                    record,
                    Record::Version { .. }
                        | Record::Mode(_)
                        | Record::Via(_)
                        | Record::KnownEncoding(_)
                        | Record::ExtensibleEncoding(_)
                        | Record::UpgradeRequest(_)
                        | Record::PreambleEnd
                );
            if preamble_part && in_preamble {
                let last = out.last_mut().context("preamble start")?;
                last.range.end = range.end;
                in_preamble = !matches!(record, Record::PreambleEnd);
                continue;
            }
            in_preamble = preamble_part && !matches!(record, Record::PreambleEnd);
            out.push(Unit { range, record });
        }
        Ok(out)
    }

    pub(super) async fn replay(
        conn: &Connection,
        to: &str,
        wait: Duration,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        if !to.starts_with("net.tcp://") {
            bail!("a net.tcp recording needs --to net.tcp://HOST:PORT/PATH");
        }
        let authority = to["net.tcp://".len()..]
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        let client = units(&conn.c2s, true)?;
        let server = units(&conn.s2c, false)?;
        let recorded_via = client
            .first()
            .and_then(|u| {
                let mut pos = u.range.start;
                while pos < u.range.end {
                    let (r, n) = Record::decode(&conn.c2s[pos..], &ferry_nmf::Limits::unlimited())
                        .ok()??;
                    if let Record::Via(v) = r {
                        return Some(v.into_owned());
                    }
                    pos += n;
                }
                None
            })
            .context("the recording has no Via")?;
        // Which server units the client waited for after each of its units: those seen after
        // it and before its next one.
        let mut expected = vec![0usize; client.len()];
        let client_seen: Vec<usize> = client
            .iter()
            .map(|u| conn.seen_at(true, u.range.end - 1))
            .collect::<anyhow::Result<_>>()?;
        for unit in &server {
            let seen = conn.seen_at(false, unit.range.end - 1)?;
            let after = client_seen.iter().rposition(|&c| c < seen).unwrap_or(0);
            expected[after] += 1;
        }

        let mut tcp = tokio::time::timeout(wait, TcpStream::connect(authority))
            .await
            .context("connect timed out")?
            .with_context(|| format!("cannot connect to {authority}"))?;
        tcp.set_nodelay(true)?;
        let mut rewriter = ClientRewriter::new(
            Target::new(to),
            RewriteLimits::with_max_envelope(MAX_MESSAGE),
        );
        let mut live = Live::default();
        let (mut recorded_dict, mut live_dict) = (dictionary(), dictionary());
        let mut next_server = server.iter();
        for (unit, &count) in client.iter().zip(&expected) {
            let used = rewriter
                .handle_input(&conn.c2s[unit.range.clone()])
                .context("rewriting the recorded client stream")?;
            if used != unit.range.len() {
                bail!("the recorded client stream has an incomplete record");
            }
            let mut bytes = Vec::new();
            rewriter.poll_transmit(&mut bytes);
            let mut sent = unit.record.record_type_name();
            while let Some(event) = rewriter.poll_event() {
                sent = match event {
                    RewriteEvent::Preamble { .. } => "preamble".into(),
                    RewriteEvent::Envelope { action, .. } => action
                        .as_deref()
                        .map_or("envelope", |a| a.rsplit('/').next().unwrap_or(a))
                        .to_owned(),
                    _ => sent,
                };
            }
            tokio::time::timeout(wait, tcp.write_all(&bytes))
                .await
                .context("send timed out")??;
            if count == 0 {
                Report::note(sent.clone());
            }
            for i in 0..count {
                let recorded = next_server.next().context("server units")?;
                let got = match live.next(&mut tcp, wait).await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        report.fail(format!("{sent}: the service closed the connection"));
                        return Ok(());
                    }
                    Err(e) => {
                        report.fail(format!("{sent}: {e:#}"));
                        return Ok(());
                    }
                };
                let (answer, verdict) = compare_records(
                    &recorded.record,
                    &got,
                    &mut recorded_dict,
                    &mut live_dict,
                    &recorded_via,
                    to,
                    report.mono,
                );
                let what = if count > 1 {
                    format!("{sent} → {answer} ({}/{count})", i + 1)
                } else {
                    format!("{sent} → {answer}")
                };
                report.verdict(what, verdict);
            }
        }
        // After the client's last record the service must close (Mono never sends End back;
        // a .NET service would, which counts as a difference from a Mono recording).
        let end = live.next(&mut tcp, CLOSE_WAIT).await;
        if report.mono && matches!(end, Ok(Some(Record::End))) {
            // MC-NMF's duplex close is End → End, after which the client closes (the server
            // may keep the connection for another session); Mono never answers End
            // (FINDINGS §2).
            let known = BTreeSet::from(["§2"]);
            report.known("end → End, the close handshake".into(), &known);
            return Ok(());
        }
        match end {
            Ok(None) => report.ok("end → the service closed the connection".into()),
            Ok(Some(r)) => report.fail(format!(
                "end → unexpected {} after the recorded answers",
                r.record_type_name()
            )),
            Err(e) => report.fail(format!("end → the service did not close: {e:#}")),
        }
        Ok(())
    }

    fn dictionary() -> SessionDictionary {
        SessionDictionary::new(&ferry_nbfx::Limits::unlimited())
    }

    /// Reads whole records from the live connection.
    #[derive(Default)]
    struct Live {
        pending: Vec<u8>,
    }

    impl Live {
        async fn next(
            &mut self,
            tcp: &mut TcpStream,
            wait: Duration,
        ) -> anyhow::Result<Option<Record<'static>>> {
            let limits = ferry_nmf::Limits {
                max_envelope_bytes: MAX_MESSAGE,
                ..ferry_nmf::Limits::default()
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if let Some((record, len)) = Record::decode(&self.pending, &limits)? {
                    let record = record.into_owned();
                    self.pending.drain(..len);
                    return Ok(Some(record));
                }
                let n = tokio::time::timeout(wait, tcp.read(&mut buf))
                    .await
                    .with_context(|| format!("no answer within {wait:?}"))??;
                if n == 0 {
                    if self.pending.is_empty() {
                        return Ok(None);
                    }
                    bail!("the service closed inside a record");
                }
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }

    trait RecordName {
        fn record_type_name(&self) -> String;
    }

    impl RecordName for Record<'_> {
        fn record_type_name(&self) -> String {
            format!("{:?}", self.record_type())
        }
    }

    /// Compares a live record with the recorded one; returns a label for the recorded
    /// answer (its Action's last segment, or the record type) and the first difference.
    fn compare_records(
        recorded: &Record<'_>,
        live: &Record<'_>,
        recorded_dict: &mut SessionDictionary,
        live_dict: &mut SessionDictionary,
        recorded_address: &str,
        address: &str,
        mono: bool,
    ) -> (String, Verdict) {
        match (recorded, live) {
            (Record::SizedEnvelope(want), Record::SizedEnvelope(got)) => {
                let want = decode(want, recorded_dict);
                let got = decode(got, live_dict);
                match (want, got) {
                    (Ok(w), Ok(g)) => (
                        label(&w),
                        compare_with(&w, &g, recorded_address, address, mono),
                    ),
                    (Err(e), _) => (
                        "envelope".into(),
                        Verdict::differ(format!("the recorded envelope does not decode: {e}")),
                    ),
                    (Ok(w), Err(e)) => (
                        label(&w),
                        Verdict::differ(format!("the answer does not decode: {e}")),
                    ),
                }
            }
            (Record::Fault(want), Record::Fault(got)) => (
                format!("fault {want}"),
                Verdict::from((want != got).then(|| format!("fault {got}, recorded {want}"))),
            ),
            (w, g) if w.record_type() == g.record_type() => {
                (w.record_type_name(), Verdict::default())
            }
            (w, g) => (
                w.record_type_name(),
                Verdict::differ(format!(
                    "got {}{}",
                    g.record_type_name(),
                    match g {
                        Record::Fault(uri) => format!(" {uri}"),
                        _ => String::new(),
                    }
                )),
            ),
        }
    }

    /// An envelope's Action, last segment, marked when the body is a fault.
    fn label(doc: &Document) -> String {
        let Some(root) = doc.root() else {
            return "envelope".into();
        };
        let header = root.elements().find(|e| e.local_name() == "Header");
        let action = header
            .and_then(|h| h.elements().find(|e| e.local_name() == "Action"))
            .map(Element::text)
            .unwrap_or_default();
        let action = action.rsplit('/').next().unwrap_or_default().to_owned();
        let fault = root
            .elements()
            .find(|e| e.local_name() == "Body")
            .and_then(|b| b.elements().next())
            .is_some_and(|e| e.local_name() == "Fault");
        match (action.is_empty(), fault) {
            (true, true) => "fault".into(),
            (true, false) => "envelope".into(),
            (false, true) => format!("fault {action}"),
            (false, false) => action,
        }
    }

    fn decode(payload: &[u8], dict: &mut SessionDictionary) -> anyhow::Result<Document> {
        let table = dict.read_table(payload)?;
        Ok(Document::decode_with(
            &payload[table..],
            Some(dict),
            ferry_nbfx::Limits::unlimited(),
        )?)
    }
}

/// HTTP exchanges.
mod http {
    use super::*;

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
        wait: Duration,
        report: &mut Report,
    ) -> anyhow::Result<()> {
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
            let query = target.find('?').map_or("", |i| &target[i..]);
            let new_target = if path.is_empty() {
                target.to_owned()
            } else {
                format!("{path}{query}")
            };
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
            } else if !recorded.body.is_empty() {
                verdict = compare_bodies(&recorded.body, &got.body, to, report.mono);
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

    /// Compares the SOAP bodies of two XML answers (anything else byte for byte).
    fn compare_bodies(recorded: &[u8], live: &[u8], address: &str, mono: bool) -> Verdict {
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
            (Some(w), Some(g)) => compare_with(
                &Document::from_root(w),
                &Document::from_root(g),
                "",
                address,
                mono,
            ),
            _ => compare_with(&want, &got, "", address, mono),
        }
    }
}

/// An element reduced to what the comparison looks at.
#[derive(Debug, PartialEq)]
struct Item {
    name: (String, String),
    attributes: BTreeMap<(String, String), String>,
    text: String,
    children: Vec<Self>,
}

/// How a live answer compares with the recorded one.
#[derive(Debug, Default)]
struct Verdict {
    /// The first difference, as "path: what".
    diff: Option<String>,
    /// The FINDINGS sections of the Mono deviations that were set aside to match.
    known: BTreeSet<&'static str>,
}

impl Verdict {
    fn differ(diff: String) -> Self {
        Self {
            diff: Some(diff),
            known: BTreeSet::new(),
        }
    }
}

impl From<Option<String>> for Verdict {
    fn from(diff: Option<String>) -> Self {
        Self {
            diff,
            known: BTreeSet::new(),
        }
    }
}

/// The first difference between two documents' infosets, as "path: what".
#[cfg(test)]
fn compare(
    want: &Document,
    got: &Document,
    recorded_address: &str,
    address: &str,
) -> Option<String> {
    compare_with(want, got, recorded_address, address, false).diff
}

/// [`compare`], optionally setting Mono's documented deviations aside (see
/// [`ReplayArgs::mono_quirks`]).
fn compare_with(
    want: &Document,
    got: &Document,
    recorded_address: &str,
    address: &str,
    mono: bool,
) -> Verdict {
    let want = want
        .root()
        .map(|r| item(r, &mut Vec::new(), recorded_address, address, false));
    let got = got.root().map(|r| item(r, &mut Vec::new(), "", "", false));
    match (want, got) {
        (Some(mut w), Some(mut g)) => {
            let mut known = BTreeSet::new();
            if mono {
                mono_deviations(&mut w, &mut g, &mut known);
            }
            Verdict {
                diff: diff(&w, &g, ""),
                known,
            }
        }
        (None, None) => Verdict::default(),
        _ => Verdict::differ("one document is empty".into()),
    }
}

/// Sets aside, in a recorded Mono answer and a live one that are both faults, what
/// FINDINGS.md documents as Mono's own behaviour, noting each section used.
fn mono_deviations(want: &mut Item, got: &mut Item, known: &mut BTreeSet<&'static str>) {
    fn child_mut<'a>(item: &'a mut Item, name: &str) -> Option<&'a mut Item> {
        item.children.iter_mut().find(|c| c.name.1 == name)
    }
    fn fault_mut(envelope: &mut Item) -> Option<&mut Item> {
        match envelope.name.1.as_str() {
            "Envelope" => child_mut(child_mut(envelope, "Body")?, "Fault"),
            "Body" => child_mut(envelope, "Fault"),
            _ => None,
        }
    }
    fn all_text(item: &Item, out: &mut String) {
        out.push_str(&item.text);
        for c in &item.children {
            all_text(c, out);
        }
    }
    fn clear_lang(item: &mut Item, recorded: &Item, known: &mut BTreeSet<&'static str>) {
        let lang = (
            ferry_nbfx::document::XML_NAMESPACE.to_owned(),
            "lang".to_owned(),
        );
        if recorded.attributes.get(&lang).is_some_and(String::is_empty)
            && item.attributes.get(&lang).is_some_and(|v| !v.is_empty())
        {
            item.attributes.insert(lang, String::new());
            known.insert("§7");
        }
        for (c, r) in item.children.iter_mut().zip(&recorded.children) {
            clear_lang(c, r, known);
        }
    }
    if fault_mut(want).is_none() || fault_mut(got).is_none() {
        return;
    }
    // §8: Mono's faults carry no RelatesTo; .NET's do.
    let has_relates_to = |e: &mut Item| {
        child_mut(e, "Header").is_some_and(|h| h.children.iter().any(|c| c.name.1 == "RelatesTo"))
    };
    if !has_relates_to(want)
        && has_relates_to(got)
        && let Some(h) = child_mut(got, "Header")
    {
        h.children.retain(|c| c.name.1 != "RelatesTo");
        known.insert("§8");
    }
    let Some(want_fault) = fault_mut(want) else {
        return;
    };
    let mut recorded_code = String::new();
    all_text(want_fault, &mut recorded_code);
    let generic = want_fault
        .children
        .iter()
        .any(|c| matches!(c.name.1.as_str(), "Code" | "faultcode"))
        && recorded_code.contains("InternalServiceFault");
    if generic {
        // §9: Mono replaced the service's fault by a generic one; any fault answers it.
        if let (Some(w), Some(g)) = (fault_mut(want), fault_mut(got)) {
            w.children.clear();
            w.text.clear();
            g.children.clear();
            g.text.clear();
            g.attributes = w.attributes.clone();
        }
        known.insert("§9");
    } else if let (Some(w), Some(g)) = (fault_mut(want), fault_mut(got)) {
        clear_lang(g, w, known);
    }
    // The fault's Action: §7 (a missing slash) or §9 (the request's Action).
    if let (Some(w), Some(g)) = (
        child_mut(want, "Header")
            .and_then(|h| child_mut(h, "Action"))
            .map(|a| a.text.clone()),
        child_mut(got, "Header").and_then(|h| child_mut(h, "Action")),
    ) {
        let slash_dropped = g
            .text
            .match_indices('/')
            .any(|(i, _)| format!("{}{}", &g.text[..i], &g.text[i + 1..]) == w);
        if slash_dropped {
            g.text = w;
            known.insert("§7");
        } else if generic && w != g.text {
            g.text = w;
        }
    }
}

/// Reduces an element, with `scopes` the namespace declarations in force (prefix, URI).
fn item(
    el: &Element,
    scopes: &mut Vec<(String, String)>,
    recorded_address: &str,
    address: &str,
    ignore_text: bool,
) -> Item {
    let depth = scopes.len();
    for a in &el.attributes {
        if let Attr::Xmlns(x) = a {
            scopes.push((x.prefix.to_string(), x.namespace.text.to_string()));
        }
    }
    let resolve = |prefix: &str| -> String {
        if prefix.is_empty() {
            return String::new(); // unprefixed attributes have no namespace
        }
        if prefix == "xml" {
            return ferry_nbfx::document::XML_NAMESPACE.to_owned();
        }
        scopes
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map_or_else(|| format!("{prefix}:"), |(_, ns)| ns.clone())
    };
    let mut attributes = BTreeMap::new();
    for a in &el.attributes {
        if let Attr::Attribute(a) = a {
            attributes.insert(
                (resolve(&a.prefix), a.name.text.to_string()),
                per_run(&a.value.to_string(), recorded_address, address),
            );
        }
    }
    // Values that differ on every run: message ids, correlation, the address sent to,
    // security timestamps.
    let volatile = (WSA.contains(&el.namespace.as_str())
        && matches!(el.local_name(), "MessageID" | "RelatesTo" | "To"))
        || el.namespace == WSU;
    let ignore_text = ignore_text || volatile;
    let mut text = String::new();
    let mut children = Vec::new();
    for node in &el.children {
        match node {
            Node::Element(child) => {
                children.push(item(child, scopes, recorded_address, address, ignore_text));
            }
            Node::Text(t) => {
                let _ = write!(text, "{t}");
            }
            Node::Array(a) => {
                let _ = write!(text, "{a:?}");
            }
            Node::Comment(_) => {}
        }
    }
    scopes.truncate(depth);
    Item {
        name: (el.namespace.clone(), el.local_name().to_owned()),
        attributes,
        text: if ignore_text {
            String::new()
        } else {
            per_run(&text, recorded_address, address)
        },
        children,
    }
}

/// Text with per-run values made comparable: the recorded endpoint address becomes the live
/// one, `urn:uuid:…` values become `urn:uuid:*`.
fn per_run(text: &str, recorded_address: &str, address: &str) -> String {
    let mut out = if recorded_address.is_empty() {
        text.to_owned()
    } else {
        text.replace(recorded_address, address)
    };
    while let Some(i) = out.find("urn:uuid:") {
        let start = i + "urn:uuid:".len();
        let end = out[start..]
            .find(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
            .map_or(out.len(), |n| start + n);
        if end == start {
            break;
        }
        out.replace_range(i..end, "urn:uuid\u{0}*");
    }
    out.replace("urn:uuid\u{0}*", "urn:uuid:*")
}

/// Two spellings of one xs:double (`0.33333333333333331` and `0.3333333333333333`): writers
/// differ in how many digits they print, not in the value.
fn same_number(a: &str, b: &str) -> bool {
    let looks_numeric = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
    };
    looks_numeric(a)
        && looks_numeric(b)
        && matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

fn diff(want: &Item, got: &Item, path: &str) -> Option<String> {
    let path = format!("{path}/{}", want.name.1);
    if want.name != got.name {
        return Some(format!(
            "{path}: got element {{{}}}{}",
            got.name.0, got.name.1
        ));
    }
    if want.attributes != got.attributes {
        return Some(format!(
            "{path}: attributes {:?}, recorded {:?}",
            got.attributes, want.attributes
        ));
    }
    if want.text != got.text && !same_number(&want.text, &got.text) {
        return Some(format!(
            "{path}: text {:?}, recorded {:?}",
            clip(&got.text),
            clip(&want.text)
        ));
    }
    for (w, g) in want.children.iter().zip(&got.children) {
        if let Some(d) = diff(w, g, &path) {
            return Some(d);
        }
    }
    if want.children.len() != got.children.len() {
        return Some(format!(
            "{path}: {} child elements, recorded {}",
            got.children.len(),
            want.children.len()
        ));
    }
    None
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 120 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(120).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(xml: &str) -> Document {
        Document::parse_xml(xml, &XmlOptions::default()).unwrap()
    }

    #[test]
    fn prefixes_and_per_run_values_do_not_count() {
        let a = doc(
            r#"<s:E xmlns:s="urn:s" xmlns:a="http://www.w3.org/2005/08/addressing"><a:RelatesTo>urn:uuid:1111</a:RelatesTo><b:X xmlns:b="urn:t" b:k="v">net.tcp://old/x urn:uuid:aaaa-bb</b:X></s:E>"#,
        );
        let b = doc(
            r#"<q:E xmlns:q="urn:s" xmlns:w="http://www.w3.org/2005/08/addressing"><w:RelatesTo>urn:uuid:2222</w:RelatesTo><X xmlns="urn:t" xmlns:z="urn:t" z:k="v">net.tcp://new/y urn:uuid:cccc</X></q:E>"#,
        );
        assert_eq!(compare(&a, &b, "net.tcp://old/x", "net.tcp://new/y"), None);
    }

    #[test]
    fn differences_name_their_path() {
        let a = doc(r#"<E xmlns="urn:s"><R><V>5</V></R></E>"#);
        let b = doc(r#"<E xmlns="urn:s"><R><V>6</V></R></E>"#);
        let d = compare(&a, &b, "", "").unwrap();
        assert!(d.starts_with("/E/R/V: text \"6\""), "{d}");
        let c = doc(r#"<E xmlns="urn:s"><R/></E>"#);
        assert!(compare(&a, &c, "", "").unwrap().contains("child elements"));
        let e = doc(r#"<E xmlns="urn:other"><R><V>5</V></R></E>"#);
        assert!(compare(&a, &e, "", "").unwrap().contains("got element"));
    }

    #[test]
    fn uuid_values_are_masked() {
        assert_eq!(
            per_run("id urn:uuid:3f25-04e0, urn:uuid:x", "", ""),
            "id urn:uuid:*, urn:uuid:x"
        );
    }
}
