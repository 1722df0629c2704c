//! The feature fixture (`wsdl/fixtures/features`): its generated module compiles, every type
//! survives XML text and binary, and a service behind the generated server answers the
//! generated client through both codecs, typed faults and one-way calls included.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "generated/features.rs"]
mod features;

use std::sync::Mutex;

use common::{Loopback, Wire, block_on, infoset, via_binary, via_text};
use features::*;
use ferry_wcf::{
    CallError, DataContract, Fault, FaultCode, Service,
    data::{DateTime, DateTimeKind, Decimal, Guid, TimeSpan},
};
use pretty_assertions::assert_eq;

fn everything() -> Everything {
    Everything {
        flag: true,
        tiny: -7,
        short: -300,
        int: 70_000,
        long: i64::MIN,
        u_byte: 255,
        u_short: 65_535,
        u_int: u32::MAX,
        u_long: u64::MAX,
        single: 1.5,
        double: 1.0 / 3.0,
        money: Decimal::parse("-79228162514264337593543950.335").unwrap(),
        when: DateTime::parse("2024-02-29T23:59:59.9999999Z").unwrap(),
        span: TimeSpan(-1_234_567_890_123),
        id: Guid::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap(),
        letter: 'ß',
        link: Some("sb://relay.example/a b".into()),
        blob: Some((0..=255).collect()),
        text: Some("日本 <&> \"quoted\" ✓".into()),
        tint: Color::Blue,
        access: "Read Write".into(),
        numbers: Some(vec![0, 1, -1, 127, 128, i32::MIN, i32::MAX]),
        ids: Some(vec![Guid::default(), Guid([0xAB; 16])]),
        words: Some(vec![Some(String::new()), None, Some("1".into())]),
        tints: Some(vec![Color::Red, Color::Green]),
        shapes: Some(vec![
            Some(Shape {
                name: Some("sq".into()),
                tint: Color::Green,
            }),
            None,
        ]),
        circle: Some(Circle {
            name: None,
            tint: Color::Red,
            radius: f64::INFINITY,
        }),
        next: Some(Box::new(Everything {
            int: 1,
            words: Some(Vec::new()),
            ..Everything::default()
        })),
    }
}

/// Both codecs give back the same value and the same infoset.
fn round_trip<T: DataContract + PartialEq + std::fmt::Debug>(value: &T) {
    let el = value.to_element();
    for (codec, back) in [("text", via_text(&el)), ("binary", via_binary(&el))] {
        assert_eq!(infoset(&back), infoset(&el), "{codec}");
        assert_eq!(&T::from_element(&back).unwrap(), value, "{codec}");
    }
}

#[test]
fn every_type_round_trips() {
    round_trip(&everything());
    round_trip(&Everything::default());
    round_trip(&Roundtrip {
        value: Some(everything()),
    });
    round_trip(&Roundtrip { value: None });
    round_trip(&Shape::default());
    round_trip(&Circle {
        name: Some(String::new()),
        tint: Color::Blue,
        radius: -0.5,
    });
    round_trip(&FeatureFault {
        reason: Some("r".into()),
        code: 9,
    });
    round_trip(&LimitFault { limit: -1 });
    round_trip(&Check { code: 3 });
    round_trip(&CheckResponse { check_result: true });
    round_trip(&Fire {
        color: Color::Green,
    });
    round_trip(&Nothing {});
    round_trip(&NothingResponse {});
}

#[test]
fn writes_what_data_contract_serializer_writes() {
    let el = Roundtrip {
        value: Some(Everything {
            int: 5,
            text: None,
            numbers: Some(vec![1, 2]),
            circle: Some(Circle::default()),
            ..Everything::default()
        }),
    }
    .to_element();
    let xml = ferry_nbfx::Document::from_root(el).to_xml();
    // The member element declares the contract namespace and `i`; arrays of primitives declare
    // the Arrays namespace; inherited members come first, in the base type's namespace.
    for part in [
        r#"<Roundtrip xmlns="http://fixtures.example/features"><value xmlns:a="http://fixtures.example/features/types" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><a:Flag>false</a:Flag>"#,
        "<a:Int>5</a:Int>",
        r#"<a:Text i:nil="true"/>"#,
        r#"<a:Numbers xmlns:b="http://schemas.microsoft.com/2003/10/Serialization/Arrays"><b:int>1</b:int><b:int>2</b:int></a:Numbers>"#,
        "<a:Circle><a:Name i:nil=\"true\"/><a:Tint>Red</a:Tint><a:Radius>0</a:Radius></a:Circle>",
        "<a:Span>PT0S</a:Span><a:Id>00000000-0000-0000-0000-000000000000</a:Id>",
        "<a:When>0001-01-01T00:00:00</a:When>",
    ] {
        assert!(xml.contains(part), "{part}\nnot in\n{xml}");
    }
}

#[test]
fn reads_text_from_any_peer() {
    // Whitespace, other prefixes, members in a default namespace, unknown members, a nil value
    // type, a DateTime with an offset and binary-style Array records are all accepted.
    let xml = r#"<Roundtrip xmlns="http://fixtures.example/features">
      <value xmlns:t="http://fixtures.example/features/types" xmlns:x="http://www.w3.org/2001/XMLSchema-instance">
        <t:Flag> 1 </t:Flag><t:Unknown>skip me</t:Unknown><t:Int>42</t:Int><t:Long x:nil="true"/>
        <t:When>2024-05-17T15:45:30+02:00</t:When><t:Span>P1DT1S</t:Span>
        <t:Id>urn:uuid:3F2504E0-4F89-11D3-9A0C-0305E82C3301</t:Id><t:Blob>AAEC
        Aw==</t:Blob><Tint xmlns="http://fixtures.example/features/types">Green</Tint>
      </value></Roundtrip>"#;
    let doc = ferry_nbfx::Document::parse_xml(
        xml,
        &ferry_nbfx::XmlOptions {
            ignore_whitespace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = Roundtrip::from_element(doc.root().unwrap()).unwrap();
    let v = r.value.unwrap();
    assert!(v.flag);
    assert_eq!((v.int, v.long), (42, 0));
    assert_eq!(v.when.kind, DateTimeKind::Local);
    assert_eq!(v.when.to_string(), "2024-05-17T13:45:30+00:00");
    assert_eq!(v.span, TimeSpan(864_000_000_000 + 10_000_000));
    assert_eq!(v.id.to_string(), "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    assert_eq!(v.blob.as_deref(), Some(&[0, 1, 2, 3][..]));
    assert_eq!(v.tint, Color::Green);
}

#[test]
fn bad_content_is_a_typed_error() {
    let bad = |inner: &str| {
        let xml = format!(
            r#"<Everything xmlns="http://fixtures.example/features/types">{inner}</Everything>"#
        );
        let doc = ferry_nbfx::Document::parse_xml(&xml, &Default::default()).unwrap();
        Everything::from_element(doc.root().unwrap()).unwrap_err()
    };
    assert!(
        matches!(bad("<Flag>false</Flag>"), ferry_wcf::DataError::MissingMember { ref name } if name == "Int")
    );
    for inner in [
        "<Int>x</Int>",
        "<Int>4294967296</Int>",
        "<Int>1</Int><Tiny>128</Tiny>",
        "<Int>1</Int><Tint>Purple</Tint>",
        "<Int>1</Int><Id>nope</Id>",
        "<Int>1</Int><Blob>!!</Blob>",
        "<Int>1</Int><Money>1e5</Money>",
        "<Int>1</Int><Letter>1114112</Letter>",
    ] {
        assert!(
            matches!(bad(inner), ferry_wcf::DataError::InvalidValue { .. }),
            "{inner}"
        );
    }
}

/// A service: echoes, checks with typed faults, records one-way calls.
#[derive(Default)]
struct Impl {
    fired: Mutex<Vec<Color>>,
}

impl Features for Impl {
    async fn roundtrip(&self, request: Roundtrip) -> Result<RoundtripResponse, Fault> {
        Ok(RoundtripResponse {
            roundtrip_result: request.value,
        })
    }

    async fn check(&self, request: Check) -> Result<CheckResponse, Fault<CheckFault>> {
        match request.code {
            0 => Ok(CheckResponse { check_result: true }),
            1 => Err(Fault::with_detail(
                "feature",
                CheckFault::FeatureFault(FeatureFault {
                    reason: Some("one".into()),
                    code: 1,
                }),
            )),
            2 => Err(Fault::with_detail(
                "limit",
                CheckFault::LimitFault(LimitFault { limit: 2 }),
            )),
            _ => Err(Fault::receiver("untyped")),
        }
    }

    async fn fire(&self, request: Fire) {
        self.fired.lock().unwrap().push(request.color);
    }

    async fn nothing(&self, _: Nothing) -> Result<NothingResponse, Fault> {
        Ok(NothingResponse {})
    }
}

#[test]
fn client_and_server_over_both_codecs() {
    for wire in [Wire::Binary12, Wire::Text11] {
        let client = FeaturesClient::new(Loopback::new(FeaturesServer(Impl::default()), wire));
        let value = everything();
        let back = block_on(client.roundtrip(Roundtrip {
            value: Some(value.clone()),
        }))
        .unwrap();
        assert_eq!(back.roundtrip_result, Some(value));
        assert!(
            block_on(client.check(Check { code: 0 }))
                .unwrap()
                .check_result
        );

        let Err(CallError::Fault(f)) = block_on(client.check(Check { code: 1 })) else {
            panic!("expected a fault")
        };
        assert_eq!(f.code, FaultCode::Sender);
        assert_eq!(f.reason, "feature");
        assert!(matches!(f.detail, Some(CheckFault::FeatureFault(ref d)) if d.code == 1));
        if let Wire::Binary12 = wire {
            // WS-Addressing carries the fault's declared action.
            assert_eq!(
                f.action.as_deref(),
                Some("http://fixtures.example/features/IFeatures/CheckFeatureFaultFault")
            );
        }
        let Err(CallError::Fault(f)) = block_on(client.check(Check { code: 2 })) else {
            panic!("expected a fault")
        };
        assert_eq!(
            f.detail,
            Some(CheckFault::LimitFault(LimitFault { limit: 2 }))
        );
        let Err(CallError::Fault(f)) = block_on(client.check(Check { code: 3 })) else {
            panic!("expected a fault")
        };
        assert_eq!((f.code, f.detail), (FaultCode::Receiver, None));

        block_on(client.fire(Fire { color: Color::Blue })).unwrap();
        block_on(client.nothing(Nothing {})).unwrap();
        let loopback = client.into_inner();
        assert_eq!(*loopback.service.0.fired.lock().unwrap(), [Color::Blue]);
        assert_eq!(loopback.sent.lock().unwrap().len(), 1);
    }
}

#[test]
fn dispatch_table_and_errors() {
    let server = FeaturesServer(Impl::default());
    assert_eq!(server.contract().name, "IFeatures");
    let ops = &FEATURES.operations;
    assert_eq!(ops.len(), 4);
    let fire = FEATURES
        .operation("http://fixtures.example/features/IFeatures/Fire")
        .unwrap();
    assert!(fire.is_one_way());
    // The default action (no wsaw:Action) comes from the binding's soapAction.
    assert!(
        FEATURES
            .operation("http://fixtures.example/features/IFeatures/Nothing")
            .is_some()
    );
    let check = &ops[1];
    assert_eq!(check.faults.len(), 2);
    // A fault without wsaw:Action gets WCF's default action.
    assert_eq!(
        check.faults[1].action,
        "http://fixtures.example/features/IFeatures/CheckLimitFaultFault"
    );
    assert_eq!(ENDPOINTS[0].address, "http://localhost/features");

    let err = block_on(server.dispatch("urn:nope", None)).unwrap_err();
    assert!(matches!(err, ferry_wcf::DispatchError::UnknownAction(_)));
    let ferry_wcf::Reply::Fault { action, fault } = err.to_reply() else {
        panic!()
    };
    assert_eq!(action, "http://www.w3.org/2005/08/addressing/fault");
    assert_eq!(fault.subcodes[0].local, "ActionNotSupported");

    let wrong = Fire { color: Color::Red }.to_element();
    let err = block_on(server.dispatch(ops[1].action, Some(&wrong))).unwrap_err();
    assert!(
        matches!(err, ferry_wcf::DispatchError::Deserialization { .. }),
        "{err}"
    );
    let err = block_on(server.dispatch(ops[1].action, None)).unwrap_err();
    assert!(matches!(err, ferry_wcf::DispatchError::MissingBody { .. }));
}
