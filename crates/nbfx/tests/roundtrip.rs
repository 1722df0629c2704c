//! Property tests: generated documents survive binary encode/decode and XML text output.

mod common;

use ferry_nbfx::{DictionaryUse, Document, Limits, SessionDictionary, WriterSession, XmlOptions};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn binary_round_trip(doc in common::generate::document(false)) {
        let mut bytes = Vec::new();
        doc.encode(&mut bytes, None).unwrap();
        let back = Document::decode(&bytes).unwrap();
        let mut again = Vec::new();
        back.encode(&mut again, None).unwrap();
        prop_assert_eq!(&again, &bytes);
        prop_assert_eq!(back.to_xml(), doc.to_xml());
    }

    #[test]
    fn session_round_trip(doc in common::generate::document(false)) {
        let mut writer = WriterSession::default();
        let payload = doc.encode_with_table(&mut writer).unwrap();
        let mut reader = SessionDictionary::new(&Limits::default());
        let table = reader.read_table(&payload).unwrap();
        let back = Document::decode_with(&payload[table..], Some(&reader), Limits::default()).unwrap();
        prop_assert_eq!(back.to_xml(), doc.to_xml());
    }

    #[test]
    fn xml_text_round_trip(doc in common::generate::document(false)) {
        let xml = doc.to_xml();
        let parsed = Document::parse_xml(&xml, &XmlOptions { dictionary: DictionaryUse::None, ..Default::default() }).unwrap();
        prop_assert_eq!(parsed.to_xml(), xml);
    }
}
