//! net.tcp sessions: the client's records sent in order, the server's awaited as recorded.

/// How long the service gets to close after the client's End, or to finish an HTTP response
/// delimited by the close.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);

use std::borrow::Cow;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_nbfx::{DictionaryUse, Document, Element, SessionDictionary, XmlOptions};
use ferry_nmf::Record;
use ferry_wcf::rewrite::{ClientRewriter, RewriteEvent, RewriteLimits, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::compare::{Outstanding, addressing_header, compare_with};
use super::diff::{AddressMap, Verdict};
use super::mono::MonoState;
use super::recording::{Connection, MAX_MESSAGE};
use super::report::Report;

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
                let (r, n) =
                    Record::decode(&conn.c2s[pos..], &ferry_nmf::Limits::unlimited()).ok()??;
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
                let verdict =
                    compare_with(&w, &g, addresses, mono).and(outstanding.answer(&w, &g, quirks));
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
        (w, g) if w.record_type() == g.record_type() => (w.record_type_name(), Verdict::default()),
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
