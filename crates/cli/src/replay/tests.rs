use std::collections::BTreeSet;

use ferry_nbfx::{Document, SessionDictionary, XmlOptions};
use ferry_nmf::Record;
use ferry_soap::version::WSA10_FAULT_ACTION;

use super::compare::{Outstanding, addressing_header, compare, compare_with, correlation};
use super::diff::{AddressMap, Verdict, per_run, same_number};
use super::mono::MonoState;
use super::nettcp;

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
    let message =
        r#"<w:message name="I_Div_F"><w:part name="detail" element="q:CalcFault"/></w:message>"#;
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
    let detail =
        r#"<x:complexType name="CalcFault"/><x:element name="CalcFault" type="tns:CalcFault"/>"#;
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
        "../../../../interop/recordings/tcp-session/client_to_server.bin"
    ));
    let answers = envelopes(include_bytes!(
        "../../../../interop/recordings/tcp-session/server_to_client.bin"
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
