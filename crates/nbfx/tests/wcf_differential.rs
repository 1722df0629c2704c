//! Differential test against the independent PyPI package `wcf` (a python-wcfbin fork):
//! documents produced by our writer (generated with proptest) decode to the same XML in `wcf` as
//! in ours, and so do the recorded Mono and pynettcp envelopes.
//!
//! Needs `python3` with `wcf` installed (`pip install -r interop/requirements.txt`); without them
//! the test fails with that message rather than skipping. The Python side is
//! `interop/wcf_differential/decode.py`.

mod common;

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use ferry_nbfx::{
    DictionaryUse, Document, Element, Limits, Node, SessionDictionary, XmlOptions,
    value::parse_double,
};
use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use serde_json::{Value, json};

/// Hard limit for the Python child.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);
/// Generated documents per run.
const GENERATED: usize = 300;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/wcf_differential/decode.py")
}

/// Runs the Python decoder on `docs`, killing it after [`PYTHON_TIMEOUT`].
fn run_wcf(docs: &Value) -> Vec<Value> {
    let mut child = Command::new("python3")
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3 and `pip install -r interop/requirements.txt`"));
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = docs.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(PYTHON_TIMEOUT) {
        Ok(out) => out.expect("python3 ran"),
        Err(_) => {
            // The child is owned by the waiting thread; kill it by pid.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("python3 decode.py did not finish within {PYTHON_TIMEOUT:?}");
        }
    };
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python3 decode.py failed ({}): {stderr}\nIs the `wcf` module installed? pip install -r interop/requirements.txt",
        output.status
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).expect("decode.py prints a JSON list")
}

/// A canonical form of an XML string for comparison: whitespace between elements dropped,
/// attributes and declarations sorted, numbers compared by value, consecutive text merged.
fn canonical(xml: &str) -> String {
    let options = XmlOptions {
        dictionary: DictionaryUse::None,
        ignore_whitespace: true,
        limits: Limits::unlimited(),
    };
    let doc =
        Document::parse_xml(xml, &options).unwrap_or_else(|e| panic!("not XML ({e}):\n{xml}"));
    let mut out = String::new();
    for node in &doc.children {
        if let Node::Element(e) = node {
            canon_element(e, &mut out);
        }
    }
    out
}

fn norm_value(s: &str) -> String {
    match parse_double(s) {
        Some(v) if v.is_nan() => "NaN".into(),
        Some(v) => format!("{v:?}"),
        None => s.to_owned(),
    }
}

fn canon_element(e: &Element, out: &mut String) {
    let mut attrs: Vec<String> = e
        .attributes
        .iter()
        .map(|a| match a {
            ferry_nbfx::Attr::Xmlns(x) => format!("xmlns:{}={}", x.prefix, x.namespace.text),
            ferry_nbfx::Attr::Attribute(a) => format!(
                "{}:{}={}",
                a.prefix,
                a.name.text,
                norm_value(&a.value.to_string())
            ),
        })
        .collect();
    attrs.sort();
    out.push_str(&format!(
        "<{}:{} {}>",
        e.prefix,
        e.local_name(),
        attrs.join(" ")
    ));
    let text = e.text();
    if !text.is_empty() {
        out.push_str(&norm_value(&text));
    }
    for child in e.elements() {
        canon_element(child, out);
    }
    out.push_str("</>");
}

struct Case {
    label: String,
    hex: String,
    session: Vec<String>,
    ours: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn generated_cases() -> Vec<Case> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = common::generate::document(true);
    (0..GENERATED)
        .map(|i| {
            let doc = strategy
                .new_tree(&mut runner)
                .expect("strategy generates")
                .current();
            let mut bytes = Vec::new();
            doc.encode(&mut bytes, None)
                .expect("generated documents encode");
            Case {
                label: format!("generated #{i}"),
                hex: hex(&bytes),
                session: Vec::new(),
                ours: doc.to_xml(),
            }
        })
        .collect()
}

fn recorded_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for session in common::SESSIONS {
        for dir in ["client_to_server.bin", "server_to_client.bin"] {
            let stream = std::fs::read(common::recordings().join(session).join(dir)).unwrap();
            let mut dict = SessionDictionary::new(&Limits::default());
            for (offset, payload) in common::envelopes(&stream) {
                let table = dict.read_table(&payload).unwrap();
                let doc = Document::decode_with(&payload[table..], Some(&dict), Limits::default())
                    .unwrap();
                cases.push(Case {
                    label: format!("{session}/{dir} at {offset}"),
                    hex: hex(&payload[table..]),
                    session: dict.iter().map(|(_, s)| s.to_owned()).collect(),
                    ours: doc.to_xml(),
                });
            }
        }
    }
    cases
}

#[test]
fn wcf_decodes_our_documents_and_the_recordings_like_we_do() {
    let mut cases = generated_cases();
    let recorded = recorded_cases();
    assert!(recorded.len() >= 40);
    cases.extend(recorded);
    let input = Value::Array(
        cases
            .iter()
            .map(|c| json!({"hex": c.hex, "session": c.session}))
            .collect(),
    );
    let results = run_wcf(&input);
    assert_eq!(results.len(), cases.len());
    let mut failures = Vec::new();
    for (case, result) in cases.iter().zip(&results) {
        let Some(theirs) = result.get("xml").and_then(Value::as_str) else {
            failures.push(format!(
                "{}: wcf failed: {}\n  bytes {}",
                case.label, result["error"], case.hex
            ));
            continue;
        };
        let (a, b) = (canonical(&case.ours), canonical(theirs));
        if a != b {
            failures.push(format!(
                "{}:\n  ours {a}\n  wcf  {b}\n  bytes {}",
                case.label, case.hex
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documents differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
