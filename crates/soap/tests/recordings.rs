//! The recorded calls, checked value by value: every envelope of every recording decodes (binary
//! over net.tcp, SOAP 1.1 text over HTTP) and the values inside match what `calls.json` says the
//! client sent and received. Then each envelope goes through the model and both codecs again.

use std::path::PathBuf;

use ferry_nbfx::{DateTime, Decimal, Element, Limits, value::parse_double};
use ferry_nmf::{ClientConfig, Event, Session};
use ferry_soap::{BinarySession, Body, Envelope, SoapVersion};
use pretty_assertions::assert_eq;
use serde_json::Value;

const CALC_NS: &str = "http://interop.example/calc/2024";

fn recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/recordings")
}

/// Envelopes of a net.tcp recording, via the real framing session in each role.
fn tcp_envelopes(name: &str) -> (Vec<Envelope>, Vec<Envelope>) {
    let dir = recordings().join(name);
    let c2s = std::fs::read(dir.join("client_to_server.bin")).unwrap();
    let s2c = std::fs::read(dir.join("server_to_client.bin")).unwrap();
    let mut server = Session::server(ferry_nmf::Limits::default());
    server.handle_input(&c2s).unwrap();
    let mut client = Session::client(
        ClientConfig::net_tcp("net.tcp://x/"),
        ferry_nmf::Limits::default(),
    )
    .unwrap();
    client.handle_input(&s2c).unwrap();
    let decode = |s: &mut Session| {
        let mut codec = BinarySession::new(Limits::default());
        let mut out = Vec::new();
        while let Some(ev) = s.poll_event() {
            if let Event::Envelope(p) = ev {
                out.push(codec.decode(&p).unwrap_or_else(|e| panic!("{name}: {e}")));
            }
        }
        out
    };
    (decode(&mut server), decode(&mut client))
}

/// Bodies of the HTTP recording, in order per direction across the three connections.
fn http_envelopes() -> (Vec<Envelope>, Vec<Envelope>) {
    let path = recordings().join("http-basic/decoded/exchanges.json");
    let ex: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    for conn in ["conn0", "conn1", "conn2"] {
        for (key, out) in [("requests", &mut req), ("responses", &mut resp)] {
            for m in ex[conn][key].as_array().unwrap() {
                let body = m["body"].as_str().unwrap_or("");
                if body.is_empty() {
                    continue;
                }
                let env = Envelope::decode_text(body)
                    .unwrap_or_else(|e| panic!("{conn} {key}: {e}\n{body}"));
                out.push(env);
            }
        }
    }
    (req, resp)
}

fn calls(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(recordings().join(name).join("calls.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("op").is_some())
        .cloned()
        .collect()
}

/// Byte arrays in the recordings are `b[i] = (i*31 + 7) & 0xFF`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) & 0xFF) as u8).collect()
}

/// Checks `el` against a calls.json value.
fn check(el: &Element, expected: &Value, path: &str) {
    match expected {
        Value::Null => assert!(el.is_nil(), "{path}: expected nil"),
        Value::Bool(b) => assert_eq!(el.text(), b.to_string(), "{path}"),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            assert_eq!(el.text(), n.to_string(), "{path}")
        }
        Value::Number(n) => {
            let got = parse_double(&el.text())
                .unwrap_or_else(|| panic!("{path}: {:?} is not a double", el.text()));
            assert_eq!(got, n.as_f64().unwrap(), "{path}");
        }
        Value::String(s) if s == "NaN" && el.text() == "NaN" => {}
        Value::String(s) if s == "Infinity" => assert_eq!(el.text(), "INF", "{path}"),
        Value::String(s) if s == "-Infinity" => assert_eq!(el.text(), "-INF", "{path}"),
        Value::String(s) => assert_eq!(&el.text(), s, "{path}"),
        Value::Array(items) => {
            let children: Vec<&Element> = el.elements().collect();
            assert_eq!(children.len(), items.len(), "{path}: list length");
            for (i, (c, v)) in children.iter().zip(items).enumerate() {
                check(c, v, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) if map.contains_key("$bytes") => {
            let b = &map["$bytes"];
            let len = b["len"].as_u64().unwrap() as usize;
            use base64::Engine as _;
            // Binary: Bytes records (concatenated); text: one base64 string.
            let got = match el.bytes() {
                Some(b) if !b.is_empty() || el.children.is_empty() => b,
                _ => base64::engine::general_purpose::STANDARD
                    .decode(el.text())
                    .unwrap(),
            };
            assert_eq!(got.len(), len, "{path}");
            match b.get("base64").and_then(Value::as_str) {
                Some(b64) => {
                    assert_eq!(
                        got,
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap(),
                        "{path}"
                    );
                }
                None => assert_eq!(got, pattern(len), "{path}"),
            }
        }
        Value::Object(map) if map.contains_key("$decimal") => {
            let want = Decimal::parse(map["$decimal"].as_str().unwrap()).unwrap();
            assert_eq!(Decimal::parse(&el.text()), Some(want), "{path}");
        }
        Value::Object(map) if map.contains_key("$guid") => {
            assert_eq!(el.text(), map["$guid"].as_str().unwrap(), "{path}")
        }
        Value::Object(map) if map.contains_key("$datetime") => {
            // calls.json: 7 fraction digits and a separate kind; xs:dateTime: trimmed with `Z`.
            let raw = map["$datetime"].as_str().unwrap();
            let zone = if map["kind"] == "Utc" { "Z" } else { "" };
            let want = DateTime::parse(&format!("{raw}{zone}")).unwrap();
            assert_eq!(
                DateTime::parse(&el.text()),
                Some(want),
                "{path}: {}",
                el.text()
            );
        }
        Value::Object(map) => {
            for (k, v) in map {
                let child = el
                    .elements()
                    .find(|c| c.local_name() == k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing"));
                check(child, v, &format!("{path}.{k}"));
            }
        }
    }
}

fn check_request(env: &Envelope, call: &Value) {
    let op = call["op"].as_str().unwrap();
    let wrapper = env.payload().unwrap_or_else(|| panic!("{op}: no payload"));
    assert_eq!(
        (wrapper.namespace.as_str(), wrapper.local_name()),
        (CALC_NS, op)
    );
    if env.version == SoapVersion::Soap12 {
        assert_eq!(
            env.headers.action.as_deref(),
            Some(format!("{CALC_NS}/ICalculator/{op}").as_str())
        );
    }
    for (name, value) in call["args"].as_object().unwrap() {
        let arg = wrapper
            .elements()
            .find(|e| e.local_name() == name)
            .unwrap_or_else(|| panic!("{op}: arg {name}"));
        check(arg, value, &format!("{op}.{name}"));
    }
}

fn check_reply(env: &Envelope, call: &Value) {
    let op = call["op"].as_str().unwrap();
    match call["outcome"].as_str().unwrap() {
        "result" => {
            let wrapper = env
                .payload()
                .unwrap_or_else(|| panic!("{op}: fault instead of result"));
            assert_eq!(wrapper.local_name(), format!("{op}Response"));
            let result = wrapper
                .elements()
                .next()
                .unwrap_or_else(|| panic!("{op}: no result element"));
            assert_eq!(result.local_name(), format!("{op}Result"));
            check(result, &call["result"], &format!("{op} result"));
        }
        "fault" => {
            let f = &call["fault"];
            let fault = env
                .fault()
                .unwrap_or_else(|| panic!("{op}: expected a fault"));
            assert_eq!(fault.reason, f["reason"].as_str().unwrap(), "{op}");
            if let Some(code) = f.get("code").filter(|c| c.is_object()) {
                assert_eq!(fault.code.local, code["name"].as_str().unwrap(), "{op}");
                assert_eq!(fault.code.namespace, code["ns"].as_str().unwrap(), "{op}");
            }
            if let Some(action) = f
                .get("action")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                assert_eq!(env.headers.action.as_deref(), Some(action), "{op}");
            }
            if let Some(Value::Object(detail)) = f.get("detail") {
                let d = fault.detail.as_ref().expect("detail");
                let body = d.elements().next().expect("detail content");
                check(
                    body,
                    &Value::Object(detail.clone()),
                    &format!("{op} detail"),
                );
            }
        }
        other => panic!("{op}: outcome {other}"),
    }
}

/// Re-encodes through the model: text and binary both give back the same infoset (compared as
/// XML text, since the text codec cannot know the binary record types of payload values).
fn model_round_trip(env: &Envelope) {
    let text = env.encode_text();
    let from_text = Envelope::decode_text(&text).unwrap();
    assert_eq!(from_text.encode_text(), text);
    let mut got = from_text.headers;
    got.other.clear();
    assert_eq!(got, env.headers_without_payload_types());
    let mut a = BinarySession::new(Limits::default());
    let mut b = BinarySession::new(Limits::default());
    let from_binary = b.decode(&a.encode(env).unwrap()).unwrap();
    assert_eq!(from_binary.encode_text(), text);
}

trait HeadersOnly {
    fn headers_without_payload_types(&self) -> ferry_soap::Headers;
}

impl HeadersOnly for Envelope {
    /// The known headers (unknown ones are elements with typed values, compared as text above).
    fn headers_without_payload_types(&self) -> ferry_soap::Headers {
        ferry_soap::Headers {
            other: Vec::new(),
            ..self.headers.clone()
        }
    }
}

fn check_session(name: &str, requests: &[Envelope], replies: &[Envelope]) {
    let calls = calls(name);
    assert_eq!(requests.len(), calls.len(), "{name}: one request per call");
    let mut replies = replies.iter();
    for (call, req) in calls.iter().zip(requests) {
        check_request(req, call);
        model_round_trip(req);
        if call["one_way"] == true {
            continue;
        }
        let reply = replies
            .next()
            .unwrap_or_else(|| panic!("{name}: missing reply for {}", call["op"]));
        check_reply(reply, call);
        model_round_trip(reply);
    }
    assert!(replies.next().is_none(), "{name}: extra replies");
}

#[test]
fn tcp_session_values_match_calls() {
    let (req, resp) = tcp_envelopes("tcp-session");
    check_session("tcp-session", &req, &resp);
}

#[test]
fn tcp_oneway_values_match_calls() {
    let (req, resp) = tcp_envelopes("tcp-oneway");
    check_session("tcp-oneway", &req, &resp);
}

#[test]
fn tcp_fault_values_match_calls() {
    let (req, resp) = tcp_envelopes("tcp-fault");
    check_session("tcp-fault", &req, &resp);
    // The typed fault: custom code directly in Code/Value, detail in the types namespace.
    let fault = resp[1].fault().unwrap();
    assert!(fault.subcodes.is_empty());
    assert_eq!(fault.lang.as_deref(), Some(""));
}

#[test]
fn http_basic_values_match_calls() {
    let (req, resp) = http_envelopes();
    assert!(req.iter().all(|e| e.version == SoapVersion::Soap11));
    // One-way calls are answered with an empty 200, which has no envelope.
    check_session("http-basic", &req, &resp);
}

#[test]
fn pynettcp_mex_decodes() {
    let (req, resp) = tcp_envelopes("pynettcp-mex");
    assert_eq!(
        req[0].headers.action.as_deref(),
        Some("http://schemas.xmlsoap.org/ws/2004/09/transfer/Get")
    );
    assert!(matches!(&resp[0].body, Body::Payload(p) if p[0].local_name() == "Metadata"));
    model_round_trip(&req[0]);
    model_round_trip(&resp[0]);
}
