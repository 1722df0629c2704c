//! `ferry decode FILE|DIR [--json]`: turns raw net.tcp captures into readable XML.
//!
//! FILE is one direction of a TCP connection (a stream of MC-NMF records); DIR is a recording
//! folder laid out like `interop/recordings/<session>` (`client_to_server.bin`,
//! `server_to_client.bin`, `connN.*.bin`). Each envelope is decoded with its direction's
//! MC-NBFSE session dictionary and printed with the offsets of its framing records and the
//! session strings it adds. Streams that are not MC-NMF (HTTP captures) are reported and skipped.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use ferry_nbfx::{DictionaryUse, Document, Limits as XmlLimits, SessionDictionary, XmlOptions};
use ferry_nmf::{KnownEncoding, Limits as FrameLimits, Mode, Record};
use serde_json::{Value, json};

/// Arguments of `ferry decode`.
#[derive(clap::Args, Debug)]
pub(crate) struct DecodeArgs {
    /// A capture of one direction of a net.tcp connection, or a recording folder.
    pub(crate) path: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `ferry decode`.
pub(crate) fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    let files = inputs(&args.path)?;
    let mut streams = Vec::new();
    // A server→client stream has no preamble: it uses the encoding its client announced
    // (the previous file of the folder), else NetTcpBinding's default.
    let mut announced = KnownEncoding::BinarySession;
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let (stream, encoding) = decode_stream(file, &bytes, announced);
        announced = encoding.unwrap_or(KnownEncoding::BinarySession);
        streams.push(stream);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(streams))?);
    } else {
        for stream in &streams {
            print_text(stream);
        }
    }
    Ok(())
}

/// The `.bin` files to decode, client→server before server→client per connection.
fn inputs(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    if !path.is_dir() {
        bail!("{} is neither a file nor a directory", path.display());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort_by_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Connection 0 has no `connN.` prefix; keep c2s before s2c.
        let conn = name
            .strip_prefix("conn")
            .and_then(|r| r.split('.').next()?.parse::<u32>().ok())
            .unwrap_or(0);
        (conn, !name.contains("client_to_server"), name)
    });
    if files.is_empty() {
        bail!("no .bin captures in {}", path.display());
    }
    Ok(files)
}

/// Decodes one direction; never fails as a whole: errors are reported in the output. Returns
/// the stream and the encoding its preamble announced.
fn decode_stream(
    file: &Path,
    bytes: &[u8],
    default: KnownEncoding,
) -> (Value, Option<KnownEncoding>) {
    let mut records = Vec::new();
    let mut session = SessionDictionary::new(&XmlLimits::unlimited());
    let mut encoding: Option<KnownEncoding> = None;
    let mut announced = None;
    let mut content_type: Option<String> = None;
    let mut error = None;
    let mut pos = 0;
    let limits = FrameLimits::unlimited();
    match bytes.first() {
        // Client streams start with Version; server streams with PreambleAck, a Fault or an
        // UpgradeResponse.
        Some(0x00) => {}
        Some(0x0B | 0x08 | 0x0A) => encoding = Some(default),
        _ => error = Some("not an MC-NMF stream (it starts with no preamble record)".to_owned()),
    }
    while error.is_none() && pos < bytes.len() {
        let (record, len) = match Record::decode(&bytes[pos..], &limits) {
            Ok(Some(r)) => r,
            Ok(None) => {
                error = Some(format!("truncated record at offset {pos}"));
                break;
            }
            Err(e) => {
                error = Some(e.shifted(pos).to_string());
                break;
            }
        };
        let mut entry =
            json!({ "offset": pos, "length": len, "type": format!("{:?}", record.record_type()) });
        match &record {
            Record::Version { major, minor } => {
                entry["version"] = json!(format!("{major}.{minor}"))
            }
            Record::Mode(m) => entry["mode"] = json!(mode_name(*m)),
            Record::Via(v) => entry["via"] = json!(v),
            Record::KnownEncoding(k) => {
                encoding = Some(*k);
                announced = Some(*k);
                entry["encoding"] = json!(k.content_type().unwrap_or("unknown"));
            }
            Record::ExtensibleEncoding(c) => {
                content_type = Some(c.to_string());
                entry["encoding"] = json!(c);
            }
            Record::Fault(f) | Record::UpgradeRequest(f) => entry["value"] = json!(f),
            Record::SizedEnvelope(p) => envelope(
                &mut entry,
                p,
                encoding,
                content_type.as_deref(),
                &mut session,
            ),
            Record::UnsizedEnvelope(chunks) => {
                entry["chunks"] = json!(chunks.len());
                let payload: Vec<u8> = chunks.concat();
                envelope(
                    &mut entry,
                    &payload,
                    encoding,
                    content_type.as_deref(),
                    &mut session,
                );
            }
            Record::End | Record::UpgradeResponse | Record::PreambleAck | Record::PreambleEnd => {}
        }
        records.push(entry);
        pos += len;
        if matches!(record, Record::UpgradeResponse | Record::UpgradeRequest(_)) {
            // What follows belongs to TLS/NNS until the upgraded stream is decrypted.
            error = Some(format!("upgraded stream from offset {pos}: not decodable"));
        }
    }
    let stream = json!({
        "file": file.display().to_string(),
        "bytes": bytes.len(),
        "records": records,
        "error": error,
    });
    (stream, announced)
}

fn mode_name(m: Mode) -> &'static str {
    m.name()
}

fn envelope(
    entry: &mut Value,
    payload: &[u8],
    encoding: Option<KnownEncoding>,
    content_type: Option<&str>,
    session: &mut SessionDictionary,
) {
    entry["size"] = json!(payload.len());
    let binary_session = matches!(encoding, Some(KnownEncoding::BinarySession))
        || content_type == Some("application/soap+msbinsession1");
    let binary = binary_session
        || matches!(encoding, Some(KnownEncoding::Binary))
        || content_type == Some("application/soap+msbin1");
    let result: Result<Document, String> = if binary {
        let mut doc_start = 0;
        if binary_session {
            let before = session.len();
            match session.read_table(payload) {
                Ok(n) => {
                    doc_start = n;
                    // A list of [id, string] keeps id order (a JSON object would sort "11" < "3").
                    let new: Vec<Value> = session
                        .iter()
                        .skip(before)
                        .map(|(id, s)| json!([id.0, s]))
                        .collect();
                    entry["string_table_bytes"] = json!(n);
                    entry["new_session_strings"] = Value::Array(new);
                }
                Err(e) => {
                    entry["error"] = json!(e.to_string());
                    return;
                }
            }
        }
        let dict = binary_session.then_some(&*session);
        Document::decode_with(&payload[doc_start..], dict, XmlLimits::unlimited())
            .map_err(|e| e.shifted(doc_start).to_string())
    } else {
        let text: Cow<'_, str> = String::from_utf8_lossy(payload);
        let options = XmlOptions {
            dictionary: DictionaryUse::None,
            ignore_whitespace: true,
            limits: XmlLimits::unlimited(),
        };
        Document::parse_xml(&text, &options).map_err(|e| e.to_string())
    };
    match result {
        Ok(doc) => {
            if let Some(action) = ferry_soap::Envelope::from_document(&doc)
                .ok()
                .and_then(|e| e.headers.action)
            {
                entry["action"] = json!(action);
            }
            entry["xml"] = json!(doc.to_xml_pretty(2));
        }
        Err(e) => entry["error"] = json!(e),
    }
}

fn print_text(stream: &Value) {
    println!(
        "== {} ({} bytes)",
        stream["file"].as_str().unwrap_or("?"),
        stream["bytes"]
    );
    for r in stream["records"].as_array().into_iter().flatten() {
        let mut line = format!(
            "@{:<7} {}",
            r["offset"].as_u64().unwrap_or(0),
            r["type"].as_str().unwrap_or("?")
        );
        for key in ["version", "mode", "via", "encoding", "value", "action"] {
            if let Some(v) = r.get(key).and_then(Value::as_str) {
                line.push(' ');
                line.push_str(v);
            }
        }
        if let Some(size) = r.get("size") {
            line.push_str(&format!(" {size} bytes"));
        }
        if let Some(Value::Array(strings)) = r.get("new_session_strings")
            && !strings.is_empty()
        {
            let list: Vec<String> = strings
                .iter()
                .map(|p| format!("{}={}", p[0], p[1]))
                .collect();
            line.push_str(&format!(", session strings {}", list.join(" ")));
        }
        println!("{line}");
        if let Some(xml) = r.get("xml").and_then(Value::as_str) {
            println!("{xml}");
        }
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            println!("  error: {e}");
        }
    }
    if let Some(e) = stream["error"].as_str() {
        println!("  stopped: {e}");
    }
    println!();
}
