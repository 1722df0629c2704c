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
//! not bytes: prefixes (also inside the QName values of WSDL and XML Schema attributes such as
//! `type="tns:Order"`), namespace declarations and the binary records chosen do not count, nor
//! do values that differ on every run: MessageID, RelatesTo, `To`, `urn:uuid:` values,
//! WS-Security timestamps. Correlation is checked on its own instead: a live answer's
//! `RelatesTo` must be the WS-Addressing MessageID of a request this replay sent and has not
//! yet seen answered (on net.tcp a client may send request 2 before reply 1 arrives, and the
//! service may answer in either order; over HTTP it is the one request of the exchange), and
//! naming any other is a difference. An answer without one matches only where the recorded
//! answer had none either, as Mono's faults (FINDINGS §8). Sized (session) and unsized
//! (streamed) envelopes are checked alike; a request whose MessageID cannot be read gets a
//! `note` line in the report. Addresses map to the live ones: the recorded endpoint
//! address (the Via) and the recorded HTTP base address (`scheme://HOST:PORT/PATH` of each
//! recorded request, with the host and port the recorded answer names it by) compare as ADDR,
//! and `--address RECORDED=LIVE` adds others (e.g. the endpoint addresses a WSDL publishes).
//! HTTP answers compare their status, content type (media type and charset, without regard to
//! case) and body: a SOAP envelope's Body, or a whole XML document (a WSDL, an XSD). Every
//! message gets a line of the report; any mismatch makes the command fail.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_nbfx::{Attr, DictionaryUse, Document, Element, Node, SessionDictionary, XmlOptions};
use ferry_nmf::Record;
use ferry_soap::version::{SOAP12_NS, WSA10_FAULT_ACTION};
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
/// WSDL 1.1.
const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
/// XML Schema.
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";
/// WSDL 1.1 SOAP 1.1 binding.
const SOAP11_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
/// WSDL 1.1 SOAP 1.2 binding.
const SOAP12_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
/// WS-MetadataExchange 2004/09.
const MEX_NS: &str = "http://schemas.xmlsoap.org/ws/2004/09/mex";
/// Unprefixed WSDL and XML Schema attributes whose values are QNames.
const QNAME_ATTRIBUTES: [&str; 8] = [
    "base",
    "binding",
    "element",
    "itemType",
    "message",
    "ref",
    "substitutionGroup",
    "type",
];

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
    /// An address the recorded answers name that the live service has elsewhere, as
    /// RECORDED=LIVE (repeatable), e.g. an endpoint address a WSDL publishes:
    /// `--address net.tcp://127.0.0.1:9701/calc/tcp=net.tcp://127.0.0.1:9352/calc/tcp`. A
    /// recorded value starting with RECORDED, where the address ends (at `/`, `?`, `#`, a
    /// quote, space or the end), compares with LIVE in its place.
    #[arg(long = "address", value_name = "RECORDED=LIVE")]
    pub(crate) addresses: Vec<String>,
    /// The recording was made against Mono's WCF and the live service behaves like .NET:
    /// Mono's documented deviations (interop/recordings/FINDINGS.md §2 no End back, §7 the
    /// fault Action's missing slash and empty xml:lang, §8 faults without RelatesTo, §9
    /// untyped faults replaced by a generic InternalServiceFault, §11 one-way over HTTP
    /// answered 200 instead of 202, §14 the WSDL's repeated wsdl:import, its import of the
    /// XML Schema namespace from `?xsd=` and its missing FaultContract, §15 the empty mex
    /// answer) are reported as `known`, each naming its section, instead of as differences.
    #[arg(long)]
    pub(crate) mono_quirks: bool,
}

/// Runs `ferry replay`; fails when any answer differs from the recording.
pub(crate) async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let recording = Recording::open(&args.recording)?;
    let addresses = AddressMap::parse(&args.addresses)?;
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
            nettcp::replay(conn, &args.to, &addresses, wait, &mut report).await
        } else {
            http::replay(conn, &args.to, &addresses, wait, &mut report).await
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

    /// Something the replay could not check, said rather than passed over.
    fn remark(line: String) {
        println!("  note  {line}");
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

/// Recorded addresses and the live ones they compare as, longest recorded first (so that a
/// service's base address does not take the place of a longer endpoint address under it).
#[derive(Clone, Debug, Default)]
struct AddressMap {
    pairs: Vec<(String, String)>,
}

impl AddressMap {
    /// `--address RECORDED=LIVE` values.
    fn parse(specs: &[String]) -> anyhow::Result<Self> {
        let mut map = Self::default();
        for spec in specs {
            let (recorded, live) = spec
                .split_once('=')
                .filter(|(r, _)| !r.is_empty())
                .with_context(|| format!("--address {spec:?}: expected RECORDED=LIVE"))?;
            map.add(recorded, live);
        }
        Ok(map)
    }

    /// This map and `recorded` → `live`.
    fn with(&self, recorded: &str, live: &str) -> Self {
        let mut map = self.clone();
        map.add(recorded, live);
        map
    }

    fn add(&mut self, recorded: &str, live: &str) {
        if recorded.is_empty() || self.pairs.iter().any(|(r, _)| r == recorded) {
            return;
        }
        self.pairs.push((recorded.to_owned(), live.to_owned()));
        self.pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    }

    /// `text` with every recorded address, where it ends at an address boundary, replaced
    /// by its live one, in one pass (a replacement is never replaced again).
    fn apply(&self, text: &str) -> String {
        if self.pairs.is_empty() {
            return text.to_owned();
        }
        // Characters that continue a host, port or path segment: an address followed by one
        // of them is only the start of another address.
        let continues = |c: char| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%');
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while let Some(c) = rest.chars().next() {
            for (recorded, live) in &self.pairs {
                if let Some(after) = rest.strip_prefix(recorded.as_str())
                    && !after.chars().next().is_some_and(continues)
                {
                    out.push_str(live);
                    rest = after;
                    continue 'scan;
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
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
    use std::borrow::Cow;

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
        addresses: &AddressMap,
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
        let addresses = addresses.with(&recorded_via, to);
        let mut quirks = report.mono.then(MonoState::default);
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
        // The client's own string tables, to read the MessageID of each request sent (the
        // rewriter passes it on unchanged).
        let mut client_dict = dictionary();
        // The encoding the preamble announced; NetTcpBinding's default until then.
        let mut codec = Codec::BinarySession;
        // Every request sent and not yet answered: answers are checked against all of them,
        // since a client may send request 2 before reply 1 arrives.
        let mut outstanding = Outstanding::default();
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
                    RewriteEvent::Preamble { content_type, .. } => {
                        codec = Codec::from_content_type(&content_type);
                        "preamble".into()
                    }
                    RewriteEvent::Envelope { action, .. } => action
                        .as_deref()
                        .map_or("envelope", |a| a.rsplit('/').next().unwrap_or(a))
                        .to_owned(),
                    _ => sent,
                };
            }
            if let Some(payload) = envelope_payload(&unit.record) {
                // Every envelope goes through the client's dictionary, in order, so the
                // strings its table announces resolve in the later ones.
                match codec.decode(&payload, &mut client_dict) {
                    Ok(doc) => {
                        if let Some(id) = addressing_header(&doc, "MessageID") {
                            outstanding.sent(id);
                        }
                    }
                    Err(e) => Report::remark(format!(
                        "{sent}: its MessageID cannot be read ({e:#}), so an answer relating \
                         to it counts as a difference"
                    )),
                }
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
                    (&mut recorded_dict, &mut live_dict),
                    &addresses,
                    quirks.as_mut(),
                    (codec, &mut outstanding),
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

    /// Compares a live record with the recorded one (envelopes decoded with `codec`), and an
    /// answer's correlation with the requests still `outstanding`; returns a label for the
    /// recorded answer (its Action's last segment, or the record type) and the first
    /// difference.
    pub(super) fn compare_records(
        recorded: &Record<'_>,
        live: &Record<'_>,
        (recorded_dict, live_dict): (&mut SessionDictionary, &mut SessionDictionary),
        addresses: &AddressMap,
        mono: Option<&mut MonoState>,
        (codec, outstanding): (Codec, &mut Outstanding),
    ) -> (String, Verdict) {
        // Sized envelopes (sessions) and unsized ones (streamed) alike: whole messages.
        if let (Some(want), Some(got)) = (envelope_payload(recorded), envelope_payload(live))
            && recorded.record_type() == live.record_type()
        {
            let want = codec.decode(&want, recorded_dict);
            let got = codec.decode(&got, live_dict);
            return match (want, got) {
                (Ok(w), Ok(g)) => {
                    let quirks = mono.is_some();
                    let verdict = compare_with(&w, &g, addresses, mono)
                        .and(outstanding.answer(&w, &g, quirks));
                    (label(&w), verdict)
                }
                (Err(e), _) => (
                    "envelope".into(),
                    Verdict::differ(format!("the recorded envelope does not decode: {e}")),
                ),
                (Ok(w), Err(e)) => (
                    label(&w),
                    Verdict::differ(format!("the answer does not decode: {e}")),
                ),
            };
        }
        match (recorded, live) {
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

    /// How a session's envelopes are encoded: the three encodings [`ClientRewriter`] carries.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Codec {
        /// `application/soap+msbinsession1` (NetTcpBinding's default): string table + binary.
        BinarySession,
        /// `application/soap+msbin1`: binary, static dictionary only.
        Binary,
        /// SOAP as UTF-8 text.
        Text,
    }

    impl Codec {
        /// The codec of a preamble's content type (the rewriter refused any other).
        pub(super) fn from_content_type(content_type: &str) -> Self {
            match content_type.split(';').next().unwrap_or("").trim() {
                "application/soap+msbinsession1" => Self::BinarySession,
                "application/soap+msbin1" => Self::Binary,
                _ => Self::Text,
            }
        }

        /// Decodes one envelope; `dict` is the sending side's session dictionary, which every
        /// envelope of that side must pass through in order (binary session only).
        pub(super) fn decode(
            self,
            payload: &[u8],
            dict: &mut SessionDictionary,
        ) -> anyhow::Result<Document> {
            let limits = ferry_nbfx::Limits::unlimited();
            Ok(match self {
                Self::BinarySession => {
                    let table = dict.read_table(payload)?;
                    Document::decode_with(&payload[table..], Some(dict), limits)?
                }
                Self::Binary => Document::decode_with(payload, None, limits)?,
                Self::Text => {
                    let options = XmlOptions {
                        dictionary: DictionaryUse::None,
                        ignore_whitespace: false,
                        limits,
                    };
                    Document::parse_xml(std::str::from_utf8(payload)?, &options)?
                }
            })
        }
    }

    /// The message a record carries: a sized envelope's payload, or an unsized envelope's
    /// chunks joined (streamed mode); `None` for every other record.
    pub(super) fn envelope_payload<'a>(record: &'a Record<'_>) -> Option<Cow<'a, [u8]>> {
        match record {
            Record::SizedEnvelope(payload) => Some(Cow::Borrowed(payload)),
            Record::UnsizedEnvelope(chunks) => Some(Cow::Owned(chunks.concat())),
            _ => None,
        }
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
}

/// An element reduced to what the comparison looks at.
#[derive(Clone, Debug, PartialEq)]
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

    /// This verdict and another check's on the same answer: both differences, this one's
    /// first, and every known deviation.
    fn and(mut self, other: Self) -> Self {
        self.diff = match (self.diff.take(), other.diff) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        self.known.extend(other.known);
        self
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
    let addresses = AddressMap::default().with(recorded_address, address);
    compare_with(want, got, &addresses, None).diff
}

/// [`compare`] with the recorded addresses `addresses` maps, optionally setting Mono's
/// documented deviations aside (see [`ReplayArgs::mono_quirks`]; `mono` carries what earlier
/// answers of the connection showed).
fn compare_with(
    want: &Document,
    got: &Document,
    addresses: &AddressMap,
    mono: Option<&mut MonoState>,
) -> Verdict {
    let none = AddressMap::default();
    let want = want
        .root()
        .map(|r| item(r, &mut Vec::new(), addresses, false));
    let got = got.root().map(|r| item(r, &mut Vec::new(), &none, false));
    match (want, got) {
        (Some(mut w), Some(mut g)) => {
            let mut known = BTreeSet::new();
            if let Some(state) = mono {
                mono_deviations(&mut w, &mut g, &mut known, state);
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

/// Whether a live answer correlates with the one request it answers (WS-Addressing 1.0 Core
/// §3.4: a reply's `RelatesTo` is its request's MessageID), for exchanges that pair one request
/// with one answer (HTTP). `message_id` is that request's MessageID (`None`: it had none, and
/// there is nothing to check); `recorded` and `live` are the whole answer envelopes. See
/// [`Outstanding::answer`] for the rules.
fn correlation(
    message_id: Option<&str>,
    recorded: &Document,
    live: &Document,
    mono: bool,
) -> Verdict {
    let Some(id) = message_id else {
        return Verdict::default();
    };
    let mut outstanding = Outstanding::default();
    outstanding.sent(id.to_owned());
    outstanding.answer(recorded, live, mono)
}

/// The MessageIDs of the requests a net.tcp replay has sent and not yet seen answered, in the
/// order sent. A session may carry several calls at once (a client sends request 2 before
/// reply 1 arrives, and a service may answer them in any order), so an answer is checked
/// against every request still awaiting one, not against the last one sent.
#[derive(Debug, Default)]
struct Outstanding {
    /// Sent, not yet answered.
    pending: Vec<String>,
    /// Answered already: a second answer naming one of these is a difference of its own.
    answered: BTreeSet<String>,
}

impl Outstanding {
    /// A request with MessageID `id` was sent.
    fn sent(&mut self, id: String) {
        self.answered.remove(&id);
        self.pending.push(id);
    }

    /// Checks a live answer's correlation (`recorded` and `live` are the whole answer
    /// envelopes) and, when it names a pending request, takes that request off the list. A
    /// `RelatesTo` naming a request already answered, or one never sent, is a difference. A
    /// live answer without one differs when the recorded answer had one; where the recording
    /// has none either (Mono's faults, FINDINGS §8) it matches, named as §8 under `mono` when
    /// a request awaits an answer (otherwise there is nothing it could have related to).
    fn answer(&mut self, recorded: &Document, live: &Document, mono: bool) -> Verdict {
        match addressing_header(live, "RelatesTo") {
            Some(relates_to) => {
                if let Some(at) = self.pending.iter().position(|id| *id == relates_to) {
                    let id = self.pending.remove(at);
                    self.answered.insert(id);
                    Verdict::default()
                } else if self.answered.contains(&relates_to) {
                    Verdict::differ(format!(
                        "/Envelope/Header/RelatesTo: {relates_to:?} names a request already \
                         answered{}",
                        self.awaiting()
                    ))
                } else {
                    Verdict::differ(format!(
                        "/Envelope/Header/RelatesTo: {relates_to:?} names no request this \
                         replay sent{}",
                        self.awaiting()
                    ))
                }
            }
            None if addressing_header(recorded, "RelatesTo").is_some() => {
                Verdict::differ(format!("/Envelope/Header: no RelatesTo{}", self.awaiting()))
            }
            None if mono && !self.pending.is_empty() => Verdict {
                diff: None,
                known: BTreeSet::from(["§8"]),
            },
            None => Verdict::default(),
        }
    }

    /// ", awaiting an answer: MessageID …" for a difference's text, or "" when none awaits.
    fn awaiting(&self) -> String {
        match self.pending.as_slice() {
            [] => ", and no request awaits an answer".into(),
            [id] => format!(", the request awaiting an answer has MessageID {id:?}"),
            ids => format!(", the requests awaiting an answer have MessageIDs {ids:?}"),
        }
    }
}

/// The text of an envelope's WS-Addressing header `local` (`MessageID`, `RelatesTo`), either
/// addressing version, trimmed.
fn addressing_header(envelope: &Document, local: &str) -> Option<String> {
    let root = envelope.root()?;
    if root.local_name() != "Envelope" {
        return None;
    }
    let header = root
        .elements()
        .find(|e| e.local_name() == "Header" && e.namespace == root.namespace)?;
    header
        .elements()
        .find(|e| e.local_name() == local && WSA.contains(&e.namespace.as_str()))
        .map(|e| e.text().trim().to_owned())
}

/// What the Mono rules learn from one answer for the next ones of a connection.
#[derive(Debug, Default)]
struct MonoState {
    /// The detail elements (namespace, local name) of the fault contracts set aside under
    /// §14 in a WSDL answer, whose types a later schema answer may then carry.
    fault_details: BTreeSet<(String, String)>,
}

/// Sets aside, in a recorded Mono answer and a live one, what FINDINGS.md documents as
/// Mono's own behaviour, noting each section used: faults (§7, §8, §9), metadata documents
/// (§14), the mex answer (§15).
fn mono_deviations(
    want: &mut Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &mut MonoState,
) {
    mono_fault_deviations(want, got, known);
    mono_mex_deviation(want, got, known);
    mono_metadata_deviations(want, got, known, state);
}

/// §15: Mono's mex endpoint answers WS-Transfer Get with an empty `wsx:Metadata`; a live one
/// with metadata sections is what .NET sends. Only the sections are set aside: the
/// `Metadata` element itself, the envelope and its headers still compare.
fn mono_mex_deviation(want: &mut Item, got: &mut Item, known: &mut BTreeSet<&'static str>) {
    fn metadata_mut(envelope: &mut Item) -> Option<&mut Item> {
        let body = match envelope.name.1.as_str() {
            "Envelope" => envelope.children.iter_mut().find(|c| c.name.1 == "Body")?,
            "Body" => envelope,
            _ => return None,
        };
        body.children
            .iter_mut()
            .find(|c| c.name == (MEX_NS.to_owned(), "Metadata".to_owned()))
    }
    let (Some(w), Some(g)) = (metadata_mut(want), metadata_mut(got)) else {
        return;
    };
    let sections = |m: &Item| {
        !m.children.is_empty()
            && m.children.iter().all(|c| {
                c.name == (MEX_NS.to_owned(), "MetadataSection".to_owned())
                    && c.attributes
                        .contains_key(&(String::new(), "Dialect".to_owned()))
                    && c.children.len() == 1
            })
    };
    if w.children.is_empty() && w.text.is_empty() && sections(g) {
        g.children.clear();
        known.insert("§15");
    }
}

/// §14: Mono's WSDL repeats its `wsdl:import`, imports the XML Schema namespace from
/// `?xsd=` (an empty id), and has no `wsdl:fault` for a `[FaultContract]`. Set aside only in
/// the shape .NET publishes: a recorded import repeated exactly where the live document has
/// it once; a recorded `xs:import` of the XML Schema namespace from `…?xsd=` that the live
/// schema lacks; in the live documents, a portType operation's `wsdl:fault` whose message
/// (also only live) has one `detail` part, that message, a binding operation's `wsdl:fault`
/// holding just its `soap:fault` / `soap12:fault` of the same name with `use="literal"`, and
/// in a later schema the `xs:complexType` and `xs:element` of a detail element so announced.
/// Everything else still compares.
fn mono_metadata_deviations(
    want: &mut Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &mut MonoState,
) {
    let definitions = (WSDL_NS.to_owned(), "definitions".to_owned());
    let schema = (XSD_NS.to_owned(), "schema".to_owned());
    if want.name == definitions && got.name == definitions {
        repeated_wsdl_import(want, got, known);
        xml_schema_import(want, got, known);
        port_type_faults(want, got, known, state);
        binding_faults(want, got, known);
        let types = |i: &Item| i.name == (WSDL_NS.to_owned(), "types".to_owned());
        let (Some(w), Some(g)) = (
            want.children.iter().find(|c| types(c)),
            got.children.iter_mut().find(|c| types(c)),
        ) else {
            return;
        };
        for (ws, gs) in w.children.iter().zip(g.children.iter_mut()) {
            schema_fault_types(ws, gs, known, state);
        }
    } else if want.name == schema && got.name == schema {
        schema_fault_types(want, got, known, state);
    }
}

/// An unprefixed attribute's value.
fn plain_attr(i: &Item, local: &str) -> Option<String> {
    i.attributes
        .get(&(String::new(), local.to_owned()))
        .cloned()
}

fn wsdl_name(local: &str) -> (String, String) {
    (WSDL_NS.to_owned(), local.to_owned())
}

/// §14: the recorded `wsdl:import` repeated exactly, where the live document has it once.
fn repeated_wsdl_import(want: &mut Item, got: &Item, known: &mut BTreeSet<&'static str>) {
    let imports = |i: &Item| {
        i.children
            .iter()
            .filter(|c| c.name == wsdl_name("import"))
            .count()
    };
    let mut extra = imports(want).saturating_sub(imports(got));
    let mut seen: Vec<Item> = Vec::new();
    want.children.retain(|c| {
        if c.name != wsdl_name("import") {
            return true;
        }
        if extra > 0 && seen.contains(c) {
            extra -= 1;
            known.insert("§14");
            return false;
        }
        seen.push(c.clone());
        true
    });
}

/// §14: the recorded types' `xs:import` of the XML Schema namespace from `…?xsd=`, where no
/// live schema imports that namespace.
fn xml_schema_import(want: &mut Item, got: &Item, known: &mut BTreeSet<&'static str>) {
    let xsd_import = |i: &Item| {
        i.name == (XSD_NS.to_owned(), "import".to_owned())
            && plain_attr(i, "namespace").as_deref() == Some(XSD_NS)
    };
    let live_imports_xsd = got
        .children
        .iter()
        .filter(|c| c.name == wsdl_name("types"))
        .any(|t| t.children.iter().any(|s| s.children.iter().any(xsd_import)));
    if live_imports_xsd {
        return;
    }
    for types in want
        .children
        .iter_mut()
        .filter(|c| c.name == wsdl_name("types"))
    {
        for schema in &mut types.children {
            schema.children.retain(|i| {
                let quirk = xsd_import(i)
                    && plain_attr(i, "schemaLocation").is_some_and(|l| l.ends_with("?xsd="));
                if quirk {
                    known.insert("§14");
                }
                !quirk
            });
        }
    }
}

/// §14: a live portType operation's `wsdl:fault` (where the recorded operation has none)
/// whose message, also only live, has one `detail` part; the fault and the message are set
/// aside and the detail element remembered for [`schema_fault_types`].
fn port_type_faults(
    want: &Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &mut MonoState,
) {
    let tns = plain_attr(got, "targetNamespace").unwrap_or_default();
    let recorded_messages: BTreeSet<String> = want
        .children
        .iter()
        .filter(|c| c.name == wsdl_name("message"))
        .filter_map(|c| plain_attr(c, "name"))
        .collect();
    let live_messages: Vec<Item> = got
        .children
        .iter()
        .filter(|c| c.name == wsdl_name("message"))
        .cloned()
        .collect();
    let mut set_aside = BTreeSet::new();
    for port_type in got
        .children
        .iter_mut()
        .filter(|c| c.name == wsdl_name("portType"))
    {
        let Some(recorded_type) = counterpart(want, port_type) else {
            continue;
        };
        for op in port_type
            .children
            .iter_mut()
            .filter(|c| c.name == wsdl_name("operation"))
        {
            if !without_faults(counterpart(recorded_type, op)) {
                continue;
            }
            op.children.retain(|fault| {
                if fault.name != wsdl_name("fault") {
                    return true;
                }
                // `message` is a QName, resolved to {namespace}local by `item`.
                let Some(local) = plain_attr(fault, "message")
                    .and_then(|m| m.strip_prefix(&format!("{{{tns}}}")).map(str::to_owned))
                else {
                    return true;
                };
                let message = live_messages
                    .iter()
                    .find(|m| plain_attr(m, "name").as_deref() == Some(local.as_str()));
                let detail = message.and_then(|m| match m.children.as_slice() {
                    [part]
                        if part.name == wsdl_name("part")
                            && plain_attr(part, "name").as_deref() == Some("detail") =>
                    {
                        plain_attr(part, "element")
                    }
                    _ => None,
                });
                let Some(detail) = detail.filter(|_| !recorded_messages.contains(&local)) else {
                    return true;
                };
                if let Some((ns, name)) = detail.strip_prefix('{').and_then(|d| d.split_once('}')) {
                    state.fault_details.insert((ns.to_owned(), name.to_owned()));
                }
                set_aside.insert(local);
                known.insert("§14");
                false
            });
        }
    }
    got.children.retain(|c| {
        !(c.name == wsdl_name("message")
            && plain_attr(c, "name").is_some_and(|n| set_aside.contains(&n)))
    });
}

/// §14: a live binding operation's `wsdl:fault` (where the recorded operation has none)
/// holding only the `soap:fault` / `soap12:fault` of the binding's SOAP version, of the same
/// name, `use="literal"`, as .NET's exporter writes it.
fn binding_faults(want: &Item, got: &mut Item, known: &mut BTreeSet<&'static str>) {
    for binding in got
        .children
        .iter_mut()
        .filter(|c| c.name == wsdl_name("binding"))
    {
        let soap12 = binding
            .children
            .iter()
            .any(|c| c.name == (SOAP12_BINDING_NS.to_owned(), "binding".to_owned()));
        let soap_fault = if soap12 {
            (SOAP12_BINDING_NS.to_owned(), "fault".to_owned())
        } else {
            (SOAP11_BINDING_NS.to_owned(), "fault".to_owned())
        };
        let Some(recorded_binding) = counterpart(want, binding) else {
            continue;
        };
        for op in binding
            .children
            .iter_mut()
            .filter(|c| c.name == wsdl_name("operation"))
        {
            if !without_faults(counterpart(recorded_binding, op)) {
                continue;
            }
            op.children.retain(|fault| {
                let name = plain_attr(fault, "name");
                let dotnet_shape = fault.name == wsdl_name("fault")
                    && fault.attributes.len() == 1
                    && fault.text.is_empty()
                    && match fault.children.as_slice() {
                        [soap] => {
                            soap.name == soap_fault
                                && soap.children.is_empty()
                                && soap.attributes.len() == 2
                                && plain_attr(soap, "name") == name
                                && plain_attr(soap, "use").as_deref() == Some("literal")
                        }
                        _ => false,
                    };
                if dotnet_shape {
                    known.insert("§14");
                }
                !dotnet_shape
            });
        }
    }
}

/// The child of `parent` with `item`'s element name and `name` attribute.
fn counterpart<'a>(parent: &'a Item, item: &Item) -> Option<&'a Item> {
    parent
        .children
        .iter()
        .find(|c| c.name == item.name && plain_attr(c, "name") == plain_attr(item, "name"))
}

/// A recorded operation that exists and declares no `wsdl:fault`.
fn without_faults(recorded: Option<&Item>) -> bool {
    recorded.is_some_and(|r| !r.children.iter().any(|c| c.name == wsdl_name("fault")))
}

/// §14 in a schema: the live `xs:complexType` and `xs:element` of a fault detail that a
/// set-aside `wsdl:fault` announced, which the recorded schema (Mono's) lacks.
fn schema_fault_types(
    want: &Item,
    got: &mut Item,
    known: &mut BTreeSet<&'static str>,
    state: &MonoState,
) {
    let tns = plain_attr(got, "targetNamespace").unwrap_or_default();
    let recorded_names: BTreeSet<(String, String)> = want
        .children
        .iter()
        .filter_map(|c| Some((c.name.1.clone(), plain_attr(c, "name")?)))
        .collect();
    got.children.retain(|c| {
        let Some(name) = plain_attr(c, "name") else {
            return true;
        };
        let detail = state.fault_details.contains(&(tns.clone(), name.clone()));
        let kind_ok = c.name == (XSD_NS.to_owned(), "complexType".to_owned())
            || (c.name == (XSD_NS.to_owned(), "element".to_owned())
                && plain_attr(c, "type").as_deref() == Some(&format!("{{{tns}}}{name}")));
        let set_aside = detail && kind_ok && !recorded_names.contains(&(c.name.1.clone(), name));
        if set_aside {
            known.insert("§14");
        }
        !set_aside
    });
}

/// §7, §8, §9: sets aside, in a recorded Mono answer and a live one that are both faults,
/// what FINDINGS.md documents as Mono's own behaviour.
fn mono_fault_deviations(want: &mut Item, got: &mut Item, known: &mut BTreeSet<&'static str>) {
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
    let (Some(want_fault), Some(got_fault)) = (fault_mut(want).cloned(), fault_mut(got).cloned())
    else {
        return;
    };
    // §9: Mono replaced the service's fault by its generic one, told by its code alone (not
    // by text anywhere in the fault). The live fault answers it only in .NET's shape for that
    // case: Receiver with the dispatcher's InternalServiceFault subcode, or the service's own
    // untyped fault (no detail) passed through; never a fault about the request itself.
    let recorded_codes = fault_codes(&want_fault);
    let live_codes = fault_codes(&got_fault);
    let local = |code: &str| {
        code.rsplit(['}', ':'])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let recorded_generic = recorded_codes
        .iter()
        .any(|c| local(c) == "InternalServiceFault");
    let about_the_request = live_codes.iter().any(|c| {
        let l = local(c);
        l == "ActionNotSupported" || l == "DeserializationFailed" || l.contains("ContractFilter")
    });
    let dotnet_internal = live_codes.first().is_some_and(|c| local(c) == "Receiver")
        && live_codes
            .iter()
            .any(|c| *c == format!("{{{DISPATCHER_NS}}}InternalServiceFault"));
    let untyped = !got_fault
        .children
        .iter()
        .any(|c| matches!(c.name.1.as_str(), "Detail" | "detail"));
    let generic = recorded_generic && !about_the_request && (dotnet_internal || untyped);
    if generic {
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
    // The fault's Action: §7 (a missing slash between the contract namespace and the
    // contract name) or §9 (Mono's generic fault has the request's Action where .NET has its
    // fault Action).
    if let (Some(w), Some(g)) = (
        child_mut(want, "Header")
            .and_then(|h| child_mut(h, "Action"))
            .map(|a| a.text.clone()),
        child_mut(got, "Header").and_then(|h| child_mut(h, "Action")),
    ) {
        // `{namespace}/{Contract}/{Action}`: the slash Mono drops is the one before the
        // contract name, so exactly one more follows it, and the namespace ends before it.
        let slash_dropped = g.text.match_indices('/').any(|(i, _)| {
            let (ns, rest) = (&g.text[..i], &g.text[i + 1..]);
            !ns.ends_with('/')
                && ns.contains("://")
                && rest.matches('/').count() == 1
                && !rest.starts_with('/')
                && format!("{ns}{rest}") == w
        });
        if slash_dropped {
            g.text = w;
            known.insert("§7");
        } else if generic && DOTNET_FAULT_ACTIONS.contains(&g.text.as_str()) && w != g.text {
            g.text = w;
        }
    }
}

/// WCF's dispatcher namespace: .NET's generic fault has the subcode `InternalServiceFault` in it.
const DISPATCHER_NS: &str =
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher";
/// The Actions .NET gives a fault that has no contract Action.
const DOTNET_FAULT_ACTIONS: [&str; 2] = [
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher/fault",
    WSA10_FAULT_ACTION,
];

/// A fault's codes, outermost first, as `{namespace}local` (the SOAP 1.2 `Code/Value` then
/// each `Subcode/Value`, or the SOAP 1.1 `faultcode`).
fn fault_codes(fault: &Item) -> Vec<String> {
    let mut codes = Vec::new();
    if let Some(c) = fault.children.iter().find(|c| c.name.1 == "faultcode") {
        codes.push(c.text.trim().to_owned());
    }
    let mut code = fault.children.iter().find(|c| c.name.1 == "Code");
    while let Some(c) = code {
        if let Some(v) = c.children.iter().find(|v| v.name.1 == "Value") {
            codes.push(v.text.trim().to_owned());
        }
        code = c.children.iter().find(|s| s.name.1 == "Subcode");
    }
    codes
}

/// Reduces an element, with `scopes` the namespace declarations in force (prefix, URI), and
/// recorded addresses replaced by the live ones `addresses` maps them to.
fn item(
    el: &Element,
    scopes: &mut Vec<(String, String)>,
    addresses: &AddressMap,
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
    // WSDL and XML Schema attributes whose values are QNames: compared as {namespace}local,
    // so that the prefix chosen does not count there either.
    let qname_values = matches!(el.namespace.as_str(), WSDL_NS | XSD_NS);
    let mut attributes = BTreeMap::new();
    for a in &el.attributes {
        if let Attr::Attribute(a) = a {
            let mut value = a.value.to_string();
            if qname_values
                && a.prefix.is_empty()
                && QNAME_ATTRIBUTES.contains(&&*a.name.text)
                && let Some((prefix, local)) = value.split_once(':')
                && let Some((_, ns)) = scopes.iter().rev().find(|(p, _)| p == prefix)
            {
                value = format!("{{{ns}}}{local}");
            }
            attributes.insert(
                (resolve(&a.prefix), a.name.text.to_string()),
                per_run(&value, addresses),
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
                children.push(item(child, scopes, addresses, ignore_text));
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
    // A fault code is a QName: compared as {namespace}local, as QName attributes are.
    let code = (el.namespace == SOAP12_NS && el.local_name() == "Value")
        || (el.namespace.is_empty() && el.local_name() == "faultcode");
    if code
        && let Some((prefix, local)) = text.trim().split_once(':')
        && let Some((_, ns)) = scopes.iter().rev().find(|(p, _)| p == prefix)
    {
        text = format!("{{{ns}}}{local}");
    }
    scopes.truncate(depth);
    Item {
        name: (el.namespace.to_string(), el.local_name().to_owned()),
        attributes,
        text: if ignore_text {
            String::new()
        } else {
            per_run(&text, addresses)
        },
        children,
    }
}

/// Text with per-run values made comparable: recorded addresses become the live ones,
/// `urn:uuid:…` values become `urn:uuid:*`.
fn per_run(text: &str, addresses: &AddressMap) -> String {
    let mut out = addresses.apply(text);
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
/// differ in how many digits they print, not in the value. Only when both are written as
/// doubles (a `.` or an exponent): integers (xs:int, xs:long, `007`) must match exactly, as
/// a long past 2^53 and its neighbour are one f64, and `1` is not `1.0` on the wire.
fn same_number(a: &str, b: &str) -> bool {
    let double_spelling = |t: &str| {
        t.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'))
            && t.bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
            && t.bytes().any(|c| c.is_ascii_digit())
    };
    double_spelling(a)
        && double_spelling(b)
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
    fn only_double_spellings_compare_as_numbers() {
        assert!(same_number("0.33333333333333331", "0.3333333333333333"));
        assert!(same_number("1E+300", "1e300"));
        assert!(same_number("-2.50", "-2.5"));
        // Integers are compared as written.
        assert!(!same_number("007", "7"));
        assert!(!same_number("9007199254740993", "9007199254740992"));
        assert!(!same_number("1", "1.0"));
        assert!(!same_number("1.0", "1"));
        assert!(!same_number(".", "."));
        // And through compare: a long past 2^53 is not its f64 neighbour.
        let a = doc(r#"<E xmlns="urn:s"><V>9007199254740993</V></E>"#);
        let b = doc(r#"<E xmlns="urn:s"><V>9007199254740992</V></E>"#);
        assert!(compare(&a, &b, "", "").is_some());
        let c = doc(r#"<E xmlns="urn:s"><V>0.1000000000000000055</V></E>"#);
        let d = doc(r#"<E xmlns="urn:s"><V>0.1</V></E>"#);
        assert_eq!(compare(&c, &d, "", ""), None);
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
    fn addresses_map_longest_first_where_they_end() {
        let map = AddressMap::parse(&["http://a:1/calc/basic=http://b:2/x".to_owned()])
            .unwrap()
            .with("http://a:1/calc", "http://b:2/x");
        assert_eq!(
            map.apply("http://a:1/calc?wsdl=wsdl0"),
            "http://b:2/x?wsdl=wsdl0"
        );
        assert_eq!(map.apply("http://a:1/calc/basic"), "http://b:2/x");
        assert_eq!(map.apply("http://a:1/calc/other"), "http://b:2/x/other");
        assert_eq!(map.apply("(http://a:1/calc)"), "(http://b:2/x)");
        // Not where the address goes on: another host, port or path segment.
        for other in [
            "http://a:1/calculator",
            "http://a:10/calc",
            "http://a:1/calc-x",
        ] {
            assert_eq!(map.apply(other), other);
        }
        // A replacement is not replaced again.
        let chain = AddressMap::default()
            .with("x://a", "x://b")
            .with("x://b", "x://c");
        assert_eq!(chain.apply("x://a x://b"), "x://b x://c");
        assert!(AddressMap::parse(&["nope".to_owned()]).is_err());
        assert!(AddressMap::parse(&["=x".to_owned()]).is_err());
    }

    const DEFS: &str = r#"xmlns:w="http://schemas.xmlsoap.org/wsdl/" xmlns:s="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:x="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:c" xmlns:q="urn:t" targetNamespace="urn:c""#;

    fn mono(want: &str, got: &str, state: &mut MonoState) -> Verdict {
        compare_with(&doc(want), &doc(got), &AddressMap::default(), Some(state))
    }

    /// A SOAP 1.2 fault envelope: its Action, extra headers, `Code` content, and the rest of
    /// the Fault after its Reason.
    fn fault(action: &str, headers: &str, code: &str, rest: &str) -> String {
        format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">{action}</a:Action>{headers}</s:Header><s:Body><s:Fault><s:Code>{code}</s:Code><s:Reason><s:Text xml:lang="">why</s:Text></s:Reason>{rest}</s:Fault></s:Body></s:Envelope>"#
        )
    }

    const CRASH: &str = "http://interop.example/calc/2024/ICalculator/Crash";
    const DISPATCHER_FAULT: &str =
        "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher/fault";

    /// Mono's generic fault (FINDINGS §9): its code is a:InternalServiceFault, its Action the
    /// request's.
    fn mono_generic() -> String {
        fault(CRASH, "", "<s:Value>a:InternalServiceFault</s:Value>", "")
    }

    #[test]
    fn a_generic_mono_fault_is_answered_by_dotnet_shaped_faults_only() {
        let relates = "<a:RelatesTo>urn:uuid:1</a:RelatesTo>";
        // .NET's generic fault: Receiver / dispatcher InternalServiceFault, its fault Action.
        let dotnet = fault(
            DISPATCHER_FAULT,
            relates,
            r#"<s:Value>s:Receiver</s:Value><s:Subcode><s:Value xmlns:d="http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher">d:InternalServiceFault</s:Value></s:Subcode>"#,
            "",
        );
        let v = mono(&mono_generic(), &dotnet, &mut MonoState::default());
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§8", "§9"])));
        // The service's own untyped fault, passed through.
        let untyped = fault(WSA10_FAULT_ACTION, "", "<s:Value>s:Sender</s:Value>", "");
        let v = mono(&mono_generic(), &untyped, &mut MonoState::default());
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§9"])));
        // Not a fault about the request: ActionNotSupported, DeserializationFailed.
        for subcode in ["a:ActionNotSupported", "a:DeserializationFailed"] {
            let live = fault(
                WSA10_FAULT_ACTION,
                "",
                &format!(
                    "<s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode>"
                ),
                "",
            );
            let v = mono(&mono_generic(), &live, &mut MonoState::default());
            assert!(v.diff.is_some(), "{subcode} answered the generic fault");
        }
        // Not a typed fault (with a Detail).
        let typed = fault(
            WSA10_FAULT_ACTION,
            "",
            r#"<s:Value>s:Receiver</s:Value><s:Subcode><s:Value xmlns:t="urn:t">t:CalcFault</s:Value></s:Subcode>"#,
            r#"<s:Detail><CalcFault xmlns="urn:t"/></s:Detail>"#,
        );
        assert!(
            mono(&mono_generic(), &typed, &mut MonoState::default())
                .diff
                .is_some()
        );
        // The Action is set aside only when it is one of .NET's fault Actions.
        let other_action = fault(
            "http://interop.example/calc/2024/ICalculator/Other",
            "",
            "<s:Value>s:Sender</s:Value>",
            "",
        );
        let v = mono(&mono_generic(), &other_action, &mut MonoState::default());
        assert!(v.diff.is_some_and(|d| d.contains("Action")));
    }

    #[test]
    fn a_fault_is_generic_by_its_code_not_its_text() {
        // A typed fault whose reason mentions InternalServiceFault is not Mono's generic one.
        let recorded = fault(CRASH, "", "<s:Value>s:Sender</s:Value>", "")
            .replace(">why<", ">not an InternalServiceFault<");
        let live = fault(
            WSA10_FAULT_ACTION,
            "",
            "<s:Value>s:Sender</s:Value><s:Subcode><s:Value>a:ActionNotSupported</s:Value></s:Subcode>",
            "",
        );
        assert!(
            mono(&recorded, &live, &mut MonoState::default())
                .diff
                .is_some()
        );
    }

    #[test]
    fn the_dropped_slash_is_only_the_one_before_the_contract_name() {
        let live = fault(
            "http://interop.example/calc/2024/ICalculator/SafeDivideCalcFaultFault",
            "",
            "<s:Value>a:DivideByZero</s:Value>",
            "",
        );
        let recorded = |action: &str| fault(action, "", "<s:Value>a:DivideByZero</s:Value>", "");
        let v = mono(
            &recorded("http://interop.example/calc/2024ICalculator/SafeDivideCalcFaultFault"),
            &live,
            &mut MonoState::default(),
        );
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§7"])));
        for elsewhere in [
            "http://interop.example/calc/2024/ICalculatorSafeDivideCalcFaultFault",
            "http://interop.examplecalc/2024/ICalculator/SafeDivideCalcFaultFault",
        ] {
            let v = mono(&recorded(elsewhere), &live, &mut MonoState::default());
            assert!(v.diff.is_some(), "{elsewhere}");
        }
    }

    #[test]
    fn a_repeated_wsdl_import_is_mono_only_where_live_has_it_once() {
        let import = r#"<w:import namespace="urn:c" location="http://h/c?wsdl=wsdl0"/>"#;
        let recorded = format!("<w:definitions {DEFS}>{import}{import}</w:definitions>");
        let once = format!("<w:definitions {DEFS}>{import}</w:definitions>");
        let v = mono(&recorded, &once, &mut MonoState::default());
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§14"])));
        let v = mono(&recorded, &recorded, &mut MonoState::default());
        assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
        // Two different imports are not a repeat.
        let other = r#"<w:import namespace="urn:d" location="http://h/c?wsdl=wsdl1"/>"#;
        let two = format!("<w:definitions {DEFS}>{import}{other}</w:definitions>");
        assert!(mono(&two, &once, &mut MonoState::default()).diff.is_some());
    }

    #[test]
    fn only_the_empty_xsd_id_import_of_xml_schema_is_mono() {
        let ours = r#"<x:import namespace="urn:c" schemaLocation="http://h/c?xsd=xsd0"/>"#;
        let types = |imports: &str| {
            format!(
                "<w:definitions {DEFS}><w:types><x:schema>{imports}</x:schema></w:types></w:definitions>"
            )
        };
        let quirk = r#"<x:import namespace="http://www.w3.org/2001/XMLSchema" schemaLocation="http://h/c?xsd="/>"#;
        let v = mono(
            &types(&format!("{quirk}{ours}")),
            &types(ours),
            &mut MonoState::default(),
        );
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§14"])));
        let named = r#"<x:import namespace="http://www.w3.org/2001/XMLSchema" schemaLocation="http://h/c?xsd=xsd9"/>"#;
        let v = mono(
            &types(&format!("{named}{ours}")),
            &types(ours),
            &mut MonoState::default(),
        );
        assert!(v.diff.is_some());
    }

    #[test]
    fn a_fault_contract_is_mono_only_in_dotnet_shape() {
        let op = |fault: &str| {
            format!(
                r#"<w:portType name="I"><w:operation name="Div"><w:input message="tns:In"/>{fault}</w:operation></w:portType>"#
            )
        };
        let message = r#"<w:message name="I_Div_F"><w:part name="detail" element="q:CalcFault"/></w:message>"#;
        let fault = r#"<w:fault name="F" message="tns:I_Div_F"/>"#;
        let recorded = format!("<w:definitions {DEFS}>{}</w:definitions>", op(""));
        let live = format!(
            "<w:definitions {DEFS}>{message}{}</w:definitions>",
            op(fault)
        );
        let mut state = MonoState::default();
        let v = mono(&recorded, &live, &mut state);
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§14"])));
        assert_eq!(
            state.fault_details,
            BTreeSet::from([("urn:t".to_owned(), "CalcFault".to_owned())])
        );
        // Its detail type may then be in the schema of its namespace, and only that type.
        let schema = |extra: &str| {
            format!(
                r#"<x:schema xmlns:x="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:t" targetNamespace="urn:t"><x:complexType name="Order"/>{extra}</x:schema>"#
            )
        };
        let detail = r#"<x:complexType name="CalcFault"/><x:element name="CalcFault" type="tns:CalcFault"/>"#;
        let v = mono(&schema(""), &schema(detail), &mut state);
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§14"])));
        let unannounced = r#"<x:complexType name="Other"/>"#;
        assert!(
            mono(&schema(""), &schema(unannounced), &mut state)
                .diff
                .is_some()
        );
        assert!(
            mono(&schema(""), &schema(detail), &mut MonoState::default())
                .diff
                .is_some(),
            "without the WSDL's fault the type is a difference"
        );
        // A fault whose message is not there (or has no detail part) is not .NET's shape.
        let orphan = format!("<w:definitions {DEFS}>{}</w:definitions>", op(fault));
        assert!(
            mono(&recorded, &orphan, &mut MonoState::default())
                .diff
                .is_some()
        );
        let no_detail =
            r#"<w:message name="I_Div_F"><w:part name="x" element="q:CalcFault"/></w:message>"#;
        let odd = format!(
            "<w:definitions {DEFS}>{no_detail}{}</w:definitions>",
            op(fault)
        );
        assert!(
            mono(&recorded, &odd, &mut MonoState::default())
                .diff
                .is_some()
        );
    }

    #[test]
    fn a_binding_fault_is_mono_only_in_dotnet_shape() {
        let binding = |fault: &str| {
            format!(
                r#"<w:definitions {DEFS}><w:binding name="B" type="tns:I"><s:binding/><w:operation name="Div"><w:input/>{fault}</w:operation></w:binding></w:definitions>"#
            )
        };
        let dotnet = r#"<w:fault name="F"><s:fault name="F" use="literal"/></w:fault>"#;
        let v = mono(&binding(""), &binding(dotnet), &mut MonoState::default());
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§14"])));
        for other in [
            r#"<w:fault name="F"><s:fault name="F" use="encoded"/></w:fault>"#,
            r#"<w:fault name="F"><s:fault name="G" use="literal"/></w:fault>"#,
            r#"<w:fault name="F"/>"#,
        ] {
            let v = mono(&binding(""), &binding(other), &mut MonoState::default());
            assert!(v.diff.is_some(), "{other}");
        }
    }

    #[test]
    fn only_an_empty_recorded_mex_answer_is_mono() {
        let envelope = |metadata: &str| {
            format!(
                r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><Metadata xmlns="http://schemas.xmlsoap.org/ws/2004/09/mex">{metadata}</Metadata></s:Body></s:Envelope>"#
            )
        };
        let section = r#"<MetadataSection Dialect="http://schemas.xmlsoap.org/wsdl/" Identifier="urn:c"><definitions xmlns="http://schemas.xmlsoap.org/wsdl/"/></MetadataSection>"#;
        let v = mono(&envelope(""), &envelope(section), &mut MonoState::default());
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§15"])));
        // Recorded sections compare as they are.
        let v = mono(&envelope(section), &envelope(""), &mut MonoState::default());
        assert!(v.diff.is_some());
        // Anything but sections is not what .NET answers.
        let v = mono(
            &envelope(""),
            &envelope("<Other/>"),
            &mut MonoState::default(),
        );
        assert!(v.diff.is_some());
    }

    /// The first request with a MessageID in the recorded tcp-session and its answer, as
    /// XML text (decoded with each direction's session dictionary).
    fn recorded_exchange() -> (String, String, String) {
        fn envelopes(stream: &[u8]) -> Vec<Document> {
            let limits = ferry_nmf::Limits::unlimited();
            let mut dict = SessionDictionary::new(&ferry_nbfx::Limits::unlimited());
            let mut out = Vec::new();
            let mut pos = 0;
            while let Ok(Some((record, len))) = Record::decode(&stream[pos..], &limits) {
                if let Record::SizedEnvelope(payload) = record {
                    let table = dict.read_table(&payload).unwrap();
                    out.push(
                        Document::decode_with(
                            &payload[table..],
                            Some(&dict),
                            ferry_nbfx::Limits::unlimited(),
                        )
                        .unwrap(),
                    );
                }
                pos += len;
            }
            out
        }
        let requests = envelopes(include_bytes!(
            "../../../interop/recordings/tcp-session/client_to_server.bin"
        ));
        let answers = envelopes(include_bytes!(
            "../../../interop/recordings/tcp-session/server_to_client.bin"
        ));
        let request = &requests[0];
        let id = addressing_header(request, "MessageID").expect("Mono sends a MessageID");
        assert!(id.starts_with("urn:uuid:"), "{id}");
        assert_eq!(
            addressing_header(&answers[0], "RelatesTo").as_deref(),
            Some(id.as_str()),
            "the recorded answer relates to the recorded request"
        );
        (id, request.to_xml(), answers[0].to_xml())
    }

    fn relates(id: &str, recorded: &str, live: &str, mono: bool) -> Verdict {
        correlation(Some(id), &doc(recorded), &doc(live), mono)
    }

    #[test]
    fn an_answer_must_relate_to_the_request_sent() {
        let (id, _, answer) = recorded_exchange();
        let v = relates(&id, &answer, &answer, false);
        assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
        // Another request's id (what a service answering out of order, or echoing a fixed
        // value, sends): the structural comparison masks it, the correlation check does not.
        let other = "urn:uuid:00000000-0000-0000-0000-000000000001";
        let wrong = answer.replace(&id, other);
        assert_ne!(wrong, answer);
        assert_eq!(
            compare_with(&doc(&answer), &doc(&wrong), &AddressMap::default(), None).diff,
            None
        );
        for mono in [false, true] {
            let v = relates(&id, &answer, &wrong, mono);
            let diff = v.diff.expect("a wrong RelatesTo is a difference");
            assert!(diff.contains(other) && diff.contains(&id), "{diff}");
            assert!(v.known.is_empty());
        }
        // No RelatesTo where the recorded answer has one.
        let (before, rest) = answer.split_once("RelatesTo").unwrap();
        let start = before.rfind('<').unwrap();
        let end = answer.len() - rest.len() + rest.find("RelatesTo>").unwrap() + "RelatesTo>".len();
        let missing = format!("{}{}", &answer[..start], &answer[end..]);
        assert!(!missing.contains("RelatesTo"), "{missing}");
        for mono in [false, true] {
            let v = relates(&id, &answer, &missing, mono);
            assert!(v.diff.is_some_and(|d| d.contains("no RelatesTo")));
        }
    }

    /// The recorded request and answer of [`recorded_exchange`] made into those of another
    /// call, with MessageID `id`.
    fn another_call(exchange: &(String, String, String), id: &str) -> (String, String) {
        let (recorded_id, request, answer) = exchange;
        let (request, answer) = (
            request.replace(recorded_id, id),
            answer.replace(recorded_id, id),
        );
        assert_eq!(
            addressing_header(&doc(&request), "MessageID").as_deref(),
            Some(id)
        );
        assert_eq!(
            addressing_header(&doc(&answer), "RelatesTo").as_deref(),
            Some(id)
        );
        (request, answer)
    }

    #[test]
    fn overlapping_calls_answered_in_reverse_order_match() {
        let exchange = recorded_exchange();
        let (id1, request1, answer1) = exchange.clone();
        let id2 = "urn:uuid:00000000-0000-0000-0000-000000000002";
        let (request2, answer2) = another_call(&exchange, id2);
        for mono in [false, true] {
            // The client sends request 2 before reply 1 arrives; the service answers 2 first.
            let mut outstanding = Outstanding::default();
            for request in [&request1, &request2] {
                outstanding.sent(addressing_header(&doc(request), "MessageID").unwrap());
            }
            let v = outstanding.answer(&doc(&answer1), &doc(&answer2), mono);
            assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
            let v = outstanding.answer(&doc(&answer2), &doc(&answer1), mono);
            assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
            assert!(outstanding.pending.is_empty(), "{:?}", outstanding.pending);
            // A second answer to a call already answered is a difference.
            let v = outstanding.answer(&doc(&answer1), &doc(&answer1), mono);
            let diff = v.diff.expect("a repeated answer is a difference");
            assert!(
                diff.contains("already answered") && diff.contains(&id1),
                "{diff}"
            );
        }
    }

    #[test]
    fn an_answer_relating_to_no_request_sent_differs() {
        let exchange = recorded_exchange();
        let (id1, request1, answer1) = exchange.clone();
        let id2 = "urn:uuid:00000000-0000-0000-0000-000000000002";
        let (request2, _) = another_call(&exchange, id2);
        let unknown = "urn:uuid:00000000-0000-0000-0000-00000000000f";
        let (_, stray) = another_call(&exchange, unknown);
        for mono in [false, true] {
            let mut outstanding = Outstanding::default();
            for request in [&request1, &request2] {
                outstanding.sent(addressing_header(&doc(request), "MessageID").unwrap());
            }
            let v = outstanding.answer(&doc(&answer1), &doc(&stray), mono);
            let diff = v
                .diff
                .expect("a RelatesTo naming no request sent is a difference");
            assert!(
                diff.contains(unknown) && diff.contains("no request"),
                "{diff}"
            );
            assert!(diff.contains(&id1) && diff.contains(id2), "{diff}");
            assert!(v.known.is_empty());
            // Nothing was taken off the list: both calls still await their answers.
            assert_eq!(outstanding.pending, [id1.clone(), id2.to_owned()]);
        }
    }

    #[test]
    fn streamed_answers_are_compared_and_correlated() {
        let (id, request, answer) = recorded_exchange();
        // Singleton-unsized mode: each message is an Unsized Envelope record, in chunks.
        let streamed = |xml: &str| {
            let (a, b) = xml.as_bytes().split_at(xml.len() / 2);
            Record::UnsizedEnvelope(vec![a.to_vec().into(), b.to_vec().into()])
        };
        let codec = nettcp::Codec::Text;
        let sent = codec
            .decode(
                request.as_bytes(),
                &mut SessionDictionary::new(&ferry_nbfx::Limits::unlimited()),
            )
            .unwrap();
        let check = |live: &str| {
            let mut outstanding = Outstanding::default();
            outstanding.sent(addressing_header(&sent, "MessageID").unwrap());
            let dicts = (
                &mut SessionDictionary::new(&ferry_nbfx::Limits::unlimited()),
                &mut SessionDictionary::new(&ferry_nbfx::Limits::unlimited()),
            );
            let (_, verdict) = nettcp::compare_records(
                &streamed(&answer),
                &streamed(live),
                dicts,
                &AddressMap::default(),
                None,
                (codec, &mut outstanding),
            );
            verdict.diff
        };
        assert_eq!(check(&answer), None);
        let other = "urn:uuid:00000000-0000-0000-0000-000000000001";
        let diff = check(&answer.replace(&id, other)).expect("a wrong RelatesTo differs");
        assert!(diff.contains(other) && diff.contains(&id), "{diff}");
    }

    #[test]
    fn a_missing_relates_to_is_mono_only_where_the_recording_lacks_it_too() {
        let id = "urn:uuid:1";
        let envelope = |headers: &str| {
            format!(
                r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action>urn:fault</a:Action>{headers}</s:Header><s:Body/></s:Envelope>"#
            )
        };
        let none = envelope("");
        // Mono's fault (FINDINGS §8) answered as Mono does: as recorded; named under
        // --mono-quirks.
        let v = relates(id, &none, &none, false);
        assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
        let v = relates(id, &none, &none, true);
        assert_eq!((v.diff, v.known), (None, BTreeSet::from(["§8"])));
        // .NET's answer to it: RelatesTo, which must still be the request's MessageID.
        let right = envelope("<a:RelatesTo>urn:uuid:1</a:RelatesTo>");
        let v = relates(id, &none, &right, true);
        assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
        let wrong = envelope("<a:RelatesTo>urn:uuid:2</a:RelatesTo>");
        assert!(relates(id, &none, &wrong, true).diff.is_some());
        // WS-Addressing 2004/08 too.
        let old = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header><a:RelatesTo>urn:uuid:2</a:RelatesTo></s:Header><s:Body/></s:Envelope>"#;
        assert!(relates(id, &none, old, false).diff.is_some());
        // A request without a MessageID has nothing to correlate.
        let v = correlation(None, &doc(&none), &doc(&wrong), true);
        assert_eq!((v.diff, v.known), (None, BTreeSet::new()));
    }

    #[test]
    fn verdicts_combine_differences_and_known_sections() {
        let a = Verdict {
            diff: None,
            known: BTreeSet::from(["§8"]),
        };
        let v = a.and(Verdict::differ("b".into()));
        assert_eq!(
            (v.diff.as_deref(), v.known),
            (Some("b"), BTreeSet::from(["§8"]))
        );
        let v = Verdict::differ("a".into()).and(Verdict::differ("b".into()));
        assert_eq!(v.diff.as_deref(), Some("a; b"));
    }

    #[test]
    fn uuid_values_are_masked() {
        assert_eq!(
            per_run("id urn:uuid:3f25-04e0, urn:uuid:x", &AddressMap::default()),
            "id urn:uuid:*, urn:uuid:x"
        );
    }
}
