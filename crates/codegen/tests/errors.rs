//! Bad contracts give typed errors, never panics: malformed XML, limits, dangling references,
//! constructs outside what WCF's DataContract export produces, and every truncation of a real
//! WSDL.

use ferry_codegen::{CodegenError, Limit, Limits, SourceFile, parse};
use test_case::test_case;

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        name: name.into(),
        text: text.into(),
    }
}

/// A one-operation WSDL whose request element has `members` as its sequence and whose schema
/// adds `extra` definitions.
fn wsdl(members: &str, extra: &str) -> String {
    format!(
        r#"<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:t" targetNamespace="urn:t">
  <wsdl:types><xs:schema elementFormDefault="qualified" targetNamespace="urn:t">
    <xs:element name="Op"><xs:complexType><xs:sequence>{members}</xs:sequence></xs:complexType></xs:element>
    {extra}
  </xs:schema></wsdl:types>
  <wsdl:message name="In"><wsdl:part name="parameters" element="tns:Op"/></wsdl:message>
  <wsdl:portType name="IS"><wsdl:operation name="Op"><wsdl:input message="tns:In"/></wsdl:operation></wsdl:portType>
</wsdl:definitions>"#
    )
}

fn error(text: &str) -> CodegenError {
    parse(&[file("t.wsdl", text)], &Limits::default()).unwrap_err()
}

#[test]
fn a_minimal_contract_parses() {
    let model = parse(
        &[file(
            "t.wsdl",
            &wsdl(r#"<xs:element name="a" type="xs:int"/>"#, ""),
        )],
        &Limits::default(),
    )
    .unwrap();
    // `IS` is an acronym word, not WCF's interface prefix.
    assert_eq!(model.contracts[0].rust_name, "Is");
    assert_eq!(model.contracts[0].operations[0].action, "urn:t/IS/Op");
}

#[test_case("<wsdl:definitions" ; "truncated")]
#[test_case("<a><b></a>" ; "mismatched tags")]
#[test_case("<!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>" ; "dtd")]
#[test_case("" ; "empty")]
#[test_case("<a/><b/>" ; "two roots")]
fn malformed_xml(text: &str) {
    assert!(matches!(error(text), CodegenError::Xml { .. }), "{text}");
}

#[test]
fn not_a_contract() {
    assert!(matches!(
        error("<html/>"),
        CodegenError::NotAContract { .. }
    ));
}

#[test_case(r#"<xs:element name="a" type="q:T"/>"#, "UndeclaredPrefix" ; "undeclared prefix")]
#[test_case(r#"<xs:element name="a" type="tns:Missing"/>"#, "Unresolved" ; "unknown type")]
#[test_case(r#"<xs:element type="xs:int"/>"#, "MissingAttribute" ; "member without name")]
#[test_case(r#"<xs:element name="a" maxOccurs="unbounded" type="xs:int"/>"#, "Unsupported" ; "bare repeated member")]
#[test_case(r#"<xs:choice/>"#, "Unsupported" ; "choice")]
#[test_case(r#"<xs:element name="a" type="xs:anyType"/>"#, "Unresolved" ; "any type")]
#[test_case(r#"<xs:element name="a"><xs:complexType/></xs:element>"#, "Unsupported" ; "anonymous member type")]
fn bad_members(members: &str, kind: &str) {
    let err = error(&wsdl(members, ""));
    assert!(format!("{err:?}").starts_with(kind), "{kind}: {err:?}");
}

#[test]
fn nested_arrays_and_duplicates() {
    let arrays = r#"<xs:complexType name="ArrayOfint"><xs:sequence><xs:element maxOccurs="unbounded" name="int" type="xs:int"/></xs:sequence></xs:complexType>
        <xs:complexType name="ArrayOfArrayOfint"><xs:sequence><xs:element maxOccurs="unbounded" name="ArrayOfint" type="tns:ArrayOfint"/></xs:sequence></xs:complexType>"#;
    let err = error(&wsdl(
        r#"<xs:element name="a" type="tns:ArrayOfArrayOfint"/>"#,
        arrays,
    ));
    assert!(
        matches!(err, CodegenError::Unsupported(ref m) if m.contains("array of arrays")),
        "{err}"
    );

    let twice = r#"<xs:complexType name="T"/><xs:complexType name="T"/>"#;
    let err = error(&wsdl(r#"<xs:element name="a" type="tns:T"/>"#, twice));
    assert!(matches!(err, CodegenError::Duplicate { .. }), "{err}");

    let cycle = r#"<xs:complexType name="A"><xs:complexContent><xs:extension base="tns:A"/></xs:complexContent></xs:complexType>"#;
    let err = error(&wsdl(r#"<xs:element name="a" type="tns:A"/>"#, cycle));
    assert!(
        matches!(
            err,
            CodegenError::LimitExceeded {
                limit: Limit::Inheritance,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rpc_style_messages_are_unsupported() {
    let text = wsdl("", "").replace(
        r#"<wsdl:part name="parameters" element="tns:Op"/>"#,
        r#"<wsdl:part name="a" type="xs:int"/><wsdl:part name="b" type="xs:int"/>"#,
    );
    assert!(matches!(error(&text), CodegenError::Unsupported(_)));
}

#[test]
fn limits() {
    let small = Limits {
        max_file_bytes: 100,
        ..Limits::default()
    };
    let err = parse(&[file("t.wsdl", &wsdl("", ""))], &small).unwrap_err();
    assert!(matches!(
        err,
        CodegenError::LimitExceeded {
            limit: Limit::FileBytes,
            ..
        }
    ));
    let deep = format!("{}{}", "<x>".repeat(70), "</x>".repeat(70));
    assert!(matches!(
        error(&deep),
        CodegenError::LimitExceeded {
            limit: Limit::Depth,
            ..
        }
    ));
    let few = Limits {
        max_types: 1,
        ..Limits::default()
    };
    let two = wsdl(
        r#"<xs:element name="a" type="tns:T"/>"#,
        r#"<xs:complexType name="T"/>"#,
    );
    let err = parse(&[file("t.wsdl", &two)], &few).unwrap_err();
    assert!(matches!(
        err,
        CodegenError::LimitExceeded {
            limit: Limit::Types,
            ..
        }
    ));
}

#[test]
fn every_truncation_of_a_real_contract_fails_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wsdl/fixtures/features");
    let text = std::fs::read_to_string(dir.join("features.wsdl")).unwrap();
    let mut cut = 0;
    while cut < text.len() {
        if text.is_char_boundary(cut) {
            // Ok or a typed error; a panic fails the test.
            let _ = parse(&[file("t.wsdl", &text[..cut])], &Limits::default());
        }
        cut += 37;
    }
    parse(&[file("t.wsdl", &text)], &Limits::default()).unwrap();
}

#[test]
fn generation_is_deterministic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wsdl/calculator");
    let files = ferry_codegen::source::load_dir(&dir, &Limits::default()).unwrap();
    let options = ferry_codegen::EmitOptions { source: "x".into() };
    // Files are read in name order, so the output is the same on every machine.
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "calc.wsdl",
            "calc.wsdl0.wsdl",
            "calc.xsd0.xsd",
            "calc.xsd1.xsd",
            "calc.xsd2.xsd",
            "calc.xsd3.xsd",
            "faults.wsdl"
        ]
    );
    let a = ferry_codegen::emit(&parse(&files, &Limits::default()).unwrap(), &options).unwrap();
    let b = ferry_codegen::emit(&parse(&files, &Limits::default()).unwrap(), &options).unwrap();
    assert_eq!(a, b);
}
