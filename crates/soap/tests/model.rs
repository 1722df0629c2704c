//! Model round trips through both codecs: faults in both SOAP versions, the relay token,
//! addressing headers.

use ferry_nbfx::{Element, Limits, Text, XmlString};
use ferry_soap::{
    AddressingVersion, BinarySession, Body, EndpointReference, Envelope, Fault, QName,
    RelayAccessToken, SoapVersion,
};
use pretty_assertions::assert_eq;
use test_case::test_case;

fn both_codecs(env: &Envelope) -> (Envelope, Envelope) {
    let text = Envelope::decode_text(&env.encode_text()).unwrap();
    let mut a = BinarySession::new(Limits::default());
    let mut b = BinarySession::new(Limits::default());
    let binary = b.decode(&a.encode(env).unwrap()).unwrap();
    (text, binary)
}

fn detail() -> Element {
    Element::new(
        "s",
        XmlString::prefer_static("Detail"),
        ferry_soap::version::SOAP12_NS,
    )
    .with_element(
        Element::new("", XmlString::inline("CalcFault"), "urn:types")
            .with_xmlns("", XmlString::inline("urn:types"))
            .with_element(
                Element::new("", XmlString::inline("Code"), "urn:types")
                    .with_text(Text::from_i64(4242)),
            ),
    )
}

#[test_case(SoapVersion::Soap12, AddressingVersion::Wsa10; "soap 1.2")]
#[test_case(SoapVersion::Soap11, AddressingVersion::None; "soap 1.1")]
fn faults_round_trip(version: SoapVersion, addressing: AddressingVersion) {
    let mut fault = Fault::sender(version, "bad <input> & more");
    if version == SoapVersion::Soap12 {
        fault.subcodes = vec![QName::new(
            "a",
            "http://www.w3.org/2005/08/addressing",
            "DestinationUnreachable",
        )];
        fault.node = Some("urn:node".into());
    }
    fault.role = Some("urn:role".into());
    let mut env = Envelope::new(version, addressing);
    env.headers.action = Some("http://www.w3.org/2005/08/addressing/soap/fault".into());
    env.body = Body::Fault(Box::new(fault.clone()));
    let (text, binary) = both_codecs(&env);
    for got in [text, binary] {
        let f = got.fault().unwrap();
        assert!(f.is_sender());
        assert_eq!(f.reason, fault.reason);
        assert_eq!(f.subcodes, fault.subcodes);
        assert_eq!(f.role, fault.role);
        assert_eq!(f.node, fault.node);
        assert_eq!(f.lang.as_deref(), Some("en-US"));
        assert_eq!(got.headers.action, env.headers.action);
    }
}

#[test]
fn fault_detail_survives() {
    let mut fault = Fault::receiver(SoapVersion::Soap12, "boom");
    fault.detail = Some(detail());
    let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    env.body = Body::Fault(Box::new(fault));
    let (text, binary) = both_codecs(&env);
    for got in [text, binary] {
        let d = got.fault().unwrap().detail.as_ref().unwrap();
        assert_eq!(
            d.elements()
                .next()
                .unwrap()
                .child("urn:types", "Code")
                .unwrap()
                .text(),
            "4242"
        );
        assert!(got.fault().unwrap().is_receiver());
    }
}

#[test]
fn addressing_headers_and_relay_token() {
    let mut env = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
    let h = &mut env.headers;
    h.action = Some("urn:a".into());
    h.to = Some("sb://ns/path".into());
    h.message_id = Some("urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301".into());
    h.relates_to = Some("urn:not-a-uuid".into());
    h.reply_to = Some(EndpointReference::new(
        "http://www.w3.org/2005/08/addressing/anonymous",
    ));
    h.fault_to = Some(EndpointReference::new("net.tcp://faults/"));
    h.relay_token = Some(RelayAccessToken::new(
        "uuid:7",
        "SharedAccessSignature sr=a&sig=b%2B&se=9&skn=k",
    ));
    let (text, binary) = both_codecs(&env);
    assert_eq!(text.headers, env.headers);
    assert_eq!(binary.headers, env.headers);
    assert!(binary.headers.relay_token.unwrap().is_sas());
    // The token never shows up in debug output.
    assert!(!format!("{:?}", env.headers).contains("sig="));
}

#[test]
fn relay_token_in_published_text_shape() {
    let text = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header><RelayAccessToken xmlns="http://schemas.microsoft.com/netservices/2009/05/servicebus/connect"><wsse:BinarySecurityToken wsu:Id="uuid:1" ValueType="http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">
      U2hhcmVkQWNjZXNzU2lnbmF0dXJlIHNyPXgmc2lnPXkmc2U9MSZza249aw==
    </wsse:BinarySecurityToken></RelayAccessToken></s:Header><s:Body/></s:Envelope>"#;
    let env = Envelope::decode_text(text).unwrap();
    let token = env.headers.relay_token.unwrap();
    assert_eq!(token.token, "SharedAccessSignature sr=x&sig=y&se=1&skn=k");
    assert_eq!(token.id, "uuid:1");
}

#[test]
fn addressing_none_action_header() {
    // Mono's basicHttp faults carry Action in WCF's "addressing/none" namespace.
    let text = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><Action s:mustUnderstand="1" xmlns="http://schemas.microsoft.com/ws/2005/05/addressing/none">urn:x</Action></s:Header><s:Body/></s:Envelope>"#;
    let env = Envelope::decode_text(text).unwrap();
    assert_eq!(env.addressing, AddressingVersion::None);
    assert_eq!(env.headers.action.as_deref(), Some("urn:x"));
    assert_eq!(env.encode_text(), text);
}

#[test]
fn not_an_envelope() {
    assert!(Envelope::decode_text("<x/>").is_err());
    assert!(
        Envelope::decode_text(r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>"#)
            .is_err()
    );
}
