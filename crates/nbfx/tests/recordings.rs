//! Every envelope of every recorded net.tcp session decodes, converts to well-formed XML, and
//! re-encodes to the identical bytes (the recordings come from WCF writers: Mono and pynettcp).

mod common;

use ferry_nbfx::{DictionaryUse, Document, Limits, SessionDictionary, WriterSession, XmlOptions};

#[test]
fn every_recorded_envelope_round_trips_byte_identical() {
    let mut total = 0;
    for session in common::SESSIONS {
        for dir in ["client_to_server.bin", "server_to_client.bin"] {
            let stream = std::fs::read(common::recordings().join(session).join(dir)).unwrap();
            let mut reader_dict = SessionDictionary::new(&Limits::default());
            let mut writer = WriterSession::default();
            for (offset, payload) in common::envelopes(&stream) {
                let table = reader_dict.read_table(&payload).unwrap();
                let doc =
                    Document::decode_with(&payload[table..], Some(&reader_dict), Limits::default())
                        .unwrap_or_else(|e| panic!("{session}/{dir} envelope at {offset}: {e}"));
                // Binary -> XML text -> tree again keeps the infoset.
                let xml = doc.to_xml();
                let reparsed = Document::parse_xml(
                    &xml,
                    &XmlOptions {
                        dictionary: DictionaryUse::None,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{session}/{dir} at {offset}: {e}\n{xml}"));
                assert_eq!(reparsed.to_xml(), xml, "{session}/{dir} at {offset}");
                // Re-encode with a writer session that replays the peer's choices.
                let again = doc.encode_with_table(&mut writer).unwrap();
                assert_eq!(
                    again,
                    payload,
                    "{session}/{dir} envelope at {offset}:\n{}",
                    doc.to_xml_pretty(1)
                );
                total += 1;
            }
        }
    }
    assert!(total >= 40, "only {total} envelopes found");
}

#[test]
fn streaming_xml_matches_the_tree() {
    for session in common::SESSIONS {
        for dir in ["client_to_server.bin", "server_to_client.bin"] {
            let stream = std::fs::read(common::recordings().join(session).join(dir)).unwrap();
            let mut dict = SessionDictionary::new(&Limits::default());
            for (offset, payload) in common::envelopes(&stream) {
                let table = dict.read_table(&payload).unwrap();
                let doc = Document::decode_with(&payload[table..], Some(&dict), Limits::default())
                    .unwrap();
                let fast =
                    ferry_nbfx::binary_to_xml(&payload[table..], Some(&dict), Limits::default())
                        .unwrap();
                assert_eq!(fast, doc.to_xml(), "{session}/{dir} at {offset}");
            }
        }
    }
}
