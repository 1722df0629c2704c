//! The calculator contract generated from `wsdl/calculator`: every data type survives XML text
//! and binary, every body of the recorded Mono sessions (net.tcp binary and basicHttp text)
//! decodes into the generated request/response types and re-encodes with an equal infoset, and
//! the independent PyPI `wcf` decoder reads our binary back to the same values.

mod common;

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use common::{infoset, via_binary, via_text};
use ferry_nbfx::{Document, Element, Limits};
use ferry_nmf::{ClientConfig, Event, Session};
use ferry_soap::{BinarySession, Body, Envelope};
use ferry_wcf::{
    DataContract, FaultDetail,
    data::{DateTime, Decimal, Guid},
    generated::calculator::*,
};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

fn order() -> Order {
    Order {
        id: 1001,
        customer: Some("Zoë Müller".into()),
        ship_to: Some(Address {
            street: Some("Hauptstraße 5".into()),
            city: Some("München".into()),
            country: None,
        }),
        lines: Some(vec![
            Some(OrderLine {
                sku: Some("WIDGET-1".into()),
                quantity: 3,
                unit_price: 2.5,
            }),
            None,
            Some(OrderLine {
                sku: Some("GADGET-ß".into()),
                quantity: 1,
                unit_price: 19.99,
            }),
        ]),
        tags: Some(vec![Some("priority".into()), Some("日本".into()), None]),
        created: DateTime::parse("2024-05-17T13:45:30.123Z").unwrap(),
        express: true,
        discount: Decimal::parse("12.75").unwrap(),
        reference: Guid::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap(),
        sequence: 9_007_199_254_740_993,
        note: None,
    }
}

fn summary() -> OrderSummary {
    OrderSummary {
        order_id: 1001,
        customer_upper: Some("ZOË MÜLLER".into()),
        line_count: 3,
        total_quantity: 104,
        total: 32.489_999_999_999_995,
        skus: Some(vec![Some("WIDGET-1".into())]),
        ship_to: None,
        reference: Guid([7; 16]),
        created: DateTime::default(),
        express: false,
    }
}

fn round_trip<T: DataContract + PartialEq + std::fmt::Debug>(value: &T) {
    let el = value.to_element();
    for (codec, back) in [("text", via_text(&el)), ("binary", via_binary(&el))] {
        assert_eq!(infoset(&back), infoset(&el), "{codec}");
        assert_eq!(&T::from_element(&back).unwrap(), value, "{codec}");
    }
}

#[test]
fn every_data_type_round_trips() {
    round_trip(&order());
    round_trip(&Order::default());
    round_trip(&summary());
    round_trip(&OrderSummary::default());
    round_trip(&Address::default());
    round_trip(&OrderLine::default());
    round_trip(&CalcFault {
        operation: Some("SafeDivide".into()),
        problem_type: None,
        code: 4242,
    });
    round_trip(&Add { a: -1, b: i32::MAX });
    round_trip(&AddResponse { add_result: 5 });
    for v in [
        0.0,
        -0.0,
        1.0 / 3.0,
        2.5,
        f64::INFINITY,
        f64::MIN_POSITIVE,
        1e300,
    ] {
        round_trip(&Divide { a: v, b: -v });
        round_trip(&DivideResponse { divide_result: v });
    }
    for text in [
        None,
        Some(String::new()),
        Some("0".into()),
        Some("<&>\"' ✓ 😀".into()),
    ] {
        round_trip(&Echo { text: text.clone() });
        round_trip(&EchoResponse { echo_result: text });
    }
    for len in [0, 1, 16, 300, 70_000] {
        let data: Vec<u8> = (0..len).map(|i| ((i * 31 + 7) & 0xFF) as u8).collect();
        round_trip(&ReverseBytes { data: data.clone() });
        round_trip(&ReverseBytesResponse {
            reverse_bytes_result: data,
        });
    }
    // Mono's WSDL does not mark these wrapper members nillable (.NET would): plain fields.
    round_trip(&SubmitOrder { order: order() });
    round_trip(&SubmitOrderResponse {
        submit_order_result: summary(),
    });
    round_trip(&Notify {
        message: Some("hi".into()),
    });
    round_trip(&GetNotifications {});
    round_trip(&GetNotificationsResponse {
        get_notifications_result: vec![Some("a".into()), None],
    });
    round_trip(&GetNotificationsResponse::default());
    round_trip(&SafeDivide { a: 1, b: 0 });
    round_trip(&SafeDivideResponse {
        safe_divide_result: 5,
    });
    round_trip(&Fail { reason: None });
    round_trip(&FailResponse {});
    round_trip(&Crash {});
    round_trip(&CrashResponse {});
}

#[test]
fn contract_metadata() {
    assert_eq!(CALCULATOR.name, "ICalculator");
    let notify = CALCULATOR
        .operation("http://interop.example/calc/2024/ICalculator/Notify")
        .unwrap();
    assert!(notify.is_one_way());
    let safe = CALCULATOR
        .operation("http://interop.example/calc/2024/ICalculator/SafeDivide")
        .unwrap();
    assert_eq!(safe.faults[0].element, "CalcFault");
    assert_eq!(
        safe.reply_action,
        Some("http://interop.example/calc/2024/ICalculator/SafeDivideResponse")
    );
    let names: Vec<_> = ENDPOINTS
        .iter()
        .map(|e| (e.name, e.soap, e.address))
        .collect();
    assert_eq!(
        names,
        [
            (
                "NetTcpBinding_ICalculator",
                ferry_wcf::contract::SoapVersion::Soap12,
                "net.tcp://127.0.0.1:9701/calc/tcp"
            ),
            (
                "BasicHttpBinding_ICalculator",
                ferry_wcf::contract::SoapVersion::Soap11,
                "http://127.0.0.1:8702/calc/basic"
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Recordings.

fn recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/recordings")
}

/// Envelopes of a net.tcp recording (client → server, server → client), through the real
/// framing session and binary codec.
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

/// Bodies of the basicHttp recording (SOAP 1.1 text), requests and responses.
fn http_envelopes() -> Vec<Envelope> {
    let path = recordings().join("http-basic/decoded/exchanges.json");
    let ex: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for conn in ["conn0", "conn1", "conn2"] {
        for key in ["requests", "responses"] {
            for m in ex[conn][key].as_array().unwrap() {
                let body = m["body"].as_str().unwrap_or("");
                if !body.is_empty() {
                    out.push(Envelope::decode_text(body).unwrap());
                }
            }
        }
    }
    out
}

/// Decodes a body element into whichever generated message it is, and encodes it again.
fn retype(el: &Element) -> Element {
    macro_rules! try_types {
        ($($t:ty),* $(,)?) => {$(
            if <$t as DataContract>::matches(el) {
                let value = <$t>::from_element(el)
                    .unwrap_or_else(|e| panic!("{}: {e}", el.local_name()));
                return value.to_element();
            }
        )*};
    }
    try_types!(
        Add,
        AddResponse,
        Divide,
        DivideResponse,
        Echo,
        EchoResponse,
        ReverseBytes,
        ReverseBytesResponse,
        SubmitOrder,
        SubmitOrderResponse,
        Notify,
        GetNotifications,
        GetNotificationsResponse,
        SafeDivide,
        SafeDivideResponse,
        Fail,
        FailResponse,
        Crash,
        CrashResponse,
    );
    panic!("no generated message for {}", el.local_name())
}

/// Checks every body of `envs`: messages re-encode to the same infoset, in both codecs; fault
/// details that are CalcFaults too. Returns how many bodies were checked.
fn check_bodies(envs: &[Envelope]) -> usize {
    let mut n = 0;
    for env in envs {
        match &env.body {
            Body::Payload(p) => {
                for el in p {
                    let again = retype(el);
                    assert_eq!(infoset(&again), infoset(el));
                    assert_eq!(infoset(&via_binary(&again)), infoset(el));
                    assert_eq!(infoset(&via_text(&again)), infoset(el));
                    n += 1;
                }
            }
            Body::Fault(f) => {
                let Some(detail) = f.detail.as_ref().and_then(|d| d.elements().next()) else {
                    continue;
                };
                let typed = SafeDivideFault::from_element(detail).unwrap().unwrap();
                assert_eq!(infoset(&typed.to_element()), infoset(detail));
                n += 1;
            }
        }
    }
    n
}

#[test]
fn recorded_bodies_decode_into_generated_types() {
    let mut total = 0;
    for name in ["tcp-session", "tcp-oneway", "tcp-fault"] {
        let (requests, replies) = tcp_envelopes(name);
        assert!(!requests.is_empty() && !replies.is_empty(), "{name}");
        total += check_bodies(&requests) + check_bodies(&replies);
    }
    total += check_bodies(&http_envelopes());
    // 17 + 3 + 5 requests and 17 + 1 + 5 replies (3 fault bodies without detail), then HTTP.
    assert!(total >= 60, "only {total} bodies checked");
}

#[test]
fn recorded_values() {
    let (requests, replies) = tcp_envelopes("tcp-session");
    let submit = requests
        .iter()
        .filter_map(Envelope::payload)
        .find(|el| SubmitOrder::matches(el))
        .unwrap();
    let order = SubmitOrder::from_element(submit).unwrap().order;
    assert_eq!(order.id, 1001);
    assert_eq!(order.customer.as_deref(), Some("Zoë Müller"));
    assert_eq!(order.created.to_string(), "2024-05-17T13:45:30.123Z");
    assert_eq!(order.discount.to_string(), "12.75");
    // Mono writes the Guid as characters; it reads the same.
    assert_eq!(
        order.reference.to_string(),
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    );
    assert_eq!(order.sequence, 9_007_199_254_740_993);
    assert_eq!(order.note, None);
    let lines = order.lines.unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1].as_ref().unwrap().unit_price, 19.99);
    assert_eq!(
        order.tags.unwrap(),
        [
            Some("priority".into()),
            Some("gift".into()),
            Some("日本".into())
        ]
    );
    let bytes = replies
        .iter()
        .filter_map(Envelope::payload)
        .find_map(|el| ReverseBytesResponse::from_element(el).ok())
        .unwrap();
    // Mono splits 16 bytes into two Bytes records (15 + 1); the reader joins them.
    let expected: Vec<u8> = (0..16).rev().map(|i| ((i * 31 + 7) & 0xFF) as u8).collect();
    assert_eq!(bytes.reverse_bytes_result, expected);

    let (_, replies) = tcp_envelopes("tcp-fault");
    let fault = replies.iter().find_map(Envelope::fault).unwrap();
    let typed = ferry_wcf::Fault::<SafeDivideFault>::from_soap(fault, None).unwrap();
    let Some(SafeDivideFault::CalcFault(detail)) = typed.detail else {
        panic!("{typed:?}")
    };
    assert_eq!(
        (detail.operation.as_deref(), detail.code),
        (Some("SafeDivide"), 4242)
    );
    assert_eq!(typed.reason, "Cannot divide by zero");
    assert!(matches!(typed.code, ferry_wcf::FaultCode::Other(ref q) if q.local == "DivideByZero"));
}

// ---------------------------------------------------------------------------------------------
// Differential: the PyPI `wcf` package decodes our binary.

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/wcf_differential/decode.py")
}

/// Decodes MC-NBFX documents (static dictionary only) with `wcf`, returning XML text.
fn python_decode(docs: &[Vec<u8>]) -> Vec<String> {
    let input = json!(
        docs.iter()
            .map(|d| json!({ "hex": d.iter().map(|b| format!("{b:02x}")).collect::<String>() }))
            .collect::<Vec<_>>()
    );
    let mut child = Command::new("python3")
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): pip install -r interop/requirements.txt")
        });
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let text = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("python3 ran");
    writer
        .join()
        .expect("writer thread")
        .expect("stdin written");
    assert!(
        out.status.success(),
        "decode.py failed: {}\nIs `wcf` installed? pip install -r interop/requirements.txt",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON list");
    results
        .into_iter()
        .map(|r| match r["xml"].as_str() {
            Some(x) => x.to_owned(),
            None => panic!("wcf could not decode: {}", r["error"]),
        })
        .collect()
}

#[test]
fn python_wcf_reads_our_binary() {
    let messages: Vec<Element> = vec![
        SubmitOrder { order: order() }.to_element(),
        SubmitOrderResponse {
            submit_order_result: summary(),
        }
        .to_element(),
        Add { a: 300, b: -70_000 }.to_element(),
        DivideResponse {
            divide_result: 1.0 / 3.0,
        }
        .to_element(),
        Echo {
            text: Some("日本 ✓".into()),
        }
        .to_element(),
        Echo { text: None }.to_element(),
        ReverseBytes {
            data: (0..=255).collect(),
        }
        .to_element(),
        GetNotificationsResponse {
            get_notifications_result: vec![Some("x".into()), None],
        }
        .to_element(),
        SafeDivideFault::CalcFault(CalcFault {
            operation: Some("SafeDivide".into()),
            problem_type: None,
            code: 4242,
        })
        .to_element(),
    ];
    let docs: Vec<Vec<u8>> = messages
        .iter()
        .map(|el| {
            let mut out = Vec::new();
            Document::from_root(el.clone())
                .encode(&mut out, None)
                .unwrap();
            out
        })
        .collect();
    let xml = python_decode(&docs);
    for (el, text) in messages.iter().zip(&xml) {
        let doc = Document::parse_xml(text, &Default::default())
            .unwrap_or_else(|e| panic!("{e}: {text}"));
        let theirs = doc.root().unwrap();
        // The same message, value by value, through the generated types.
        assert_eq!(
            infoset(&retype_any(theirs)),
            infoset(&retype_any(el)),
            "{text}"
        );
    }
}

/// As [`retype`], also for the fault detail.
fn retype_any(el: &Element) -> Element {
    if CalcFault::matches(el) {
        return CalcFault::from_element(el).unwrap().to_element();
    }
    retype(el)
}
