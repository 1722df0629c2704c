//! The net.tcp session rewriter on the recorded client streams (Mono and pynettcp): new Via and
//! `To`, everything else kept, session dictionaries consistent on the output; the relay token
//! removed; malformed input refused with a typed error and never a panic.

use std::borrow::Cow;
use std::path::PathBuf;

use ferry_nbfx::{Document, Element, Limits, Node, SessionDictionary, Text, WriterSession};
use ferry_nmf::{FaultCode, Record};
use ferry_soap::RelayAccessToken;
use ferry_soap::version::WSA10_NS;
use ferry_wcf::rewrite::{
    ClientRewriter, EnvelopeError, RewriteError, RewriteEvent, RewriteLimits, Target,
};
use pretty_assertions::assert_eq;
use proptest::prelude::*;

const SESSIONS: [&str; 4] = ["tcp-session", "tcp-oneway", "tcp-fault", "pynettcp-mex"];
const NEW: &str = "net.tcp://origin.internal:8701/services/calculator";

fn client_stream(session: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../interop/recordings")
        .join(session)
        .join("client_to_server.bin");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every record of a stream.
fn records(stream: &[u8]) -> Vec<Record<'static>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let (r, n) = Record::decode(&stream[pos..], &ferry_nmf::Limits::unlimited())
            .unwrap()
            .expect("whole records");
        out.push(r.into_owned());
        pos += n;
    }
    out
}

/// The documents of a stream's envelopes, decoded with one session dictionary.
fn documents(stream: &[u8]) -> Vec<Document> {
    let mut dict = SessionDictionary::new(&Limits::default());
    records(stream)
        .into_iter()
        .filter_map(|r| match r {
            Record::SizedEnvelope(p) => Some(p.into_owned()),
            _ => None,
        })
        .map(|p| {
            let table = dict.read_table(&p).unwrap();
            Document::decode_with(&p[table..], Some(&dict), Limits::default()).unwrap()
        })
        .collect()
}

fn via(stream: &[u8]) -> String {
    records(stream)
        .into_iter()
        .find_map(|r| match r {
            Record::Via(v) => Some(v.into_owned()),
            _ => None,
        })
        .expect("a Via")
}

/// Runs the whole stream through a rewriter, `chunk` bytes at a time (as TCP reads would
/// deliver them), keeping unconsumed bytes like an I/O driver does.
fn rewrite(rw: &mut ClientRewriter, stream: &[u8], chunk: usize) -> Vec<u8> {
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        let used = rw.handle_input(&pending).unwrap();
        pending.drain(..used);
        rw.poll_transmit(&mut out);
    }
    assert!(pending.is_empty(), "a record was left incomplete");
    out
}

fn to_header(doc: &Document) -> Option<String> {
    let header = doc
        .root()?
        .elements()
        .find(|e| e.local_name() == "Header")?;
    header.child(WSA10_NS, "To").map(Element::text)
}

fn header_mut(doc: &mut Document) -> &mut Element {
    let Some(Node::Element(root)) = doc.children.first_mut() else {
        panic!("no root")
    };
    root.children
        .iter_mut()
        .find_map(|n| match n {
            Node::Element(e) if e.local_name() == "Header" => Some(e),
            _ => None,
        })
        .expect("a header")
}

#[test]
fn rewriting_to_the_recorded_address_reproduces_every_byte() {
    for session in SESSIONS {
        let stream = client_stream(session);
        let mut rw = ClientRewriter::new(Target::new(via(&stream)), RewriteLimits::default());
        for chunk in [1, 7, 4096] {
            let mut rw2 = ClientRewriter::new(Target::new(via(&stream)), RewriteLimits::default());
            assert_eq!(
                rewrite(&mut rw2, &stream, chunk),
                stream,
                "{session} in chunks of {chunk}"
            );
        }
        assert_eq!(rewrite(&mut rw, &stream, usize::MAX), stream, "{session}");
    }
}

#[test]
fn recorded_sessions_get_the_new_via_and_to_and_nothing_else_changes() {
    let mut envelopes = 0;
    for session in SESSIONS {
        let stream = client_stream(session);
        let old = via(&stream);
        let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
        let out = rewrite(&mut rw, &stream, 1000);
        assert_eq!(via(&out), NEW, "{session}");

        // Framing: the same records in the same order, only Via and envelopes differ.
        let (before, after) = (records(&stream), records(&out));
        assert_eq!(before.len(), after.len(), "{session}");
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.record_type(), a.record_type(), "{session}");
            if !matches!(b, Record::Via(_) | Record::SizedEnvelope(_)) {
                assert_eq!(b, a, "{session}");
            }
        }

        // Envelopes: decoded with a fresh dictionary (so the table we wrote is consistent),
        // equal to the originals once their To is set to the new address.
        let (originals, rewritten) = (documents(&stream), documents(&out));
        assert_eq!(originals.len(), rewritten.len());
        for (i, (mut orig, new)) in originals.into_iter().zip(rewritten).enumerate() {
            assert_eq!(
                to_header(&orig).as_deref(),
                Some(old.as_str()),
                "{session} #{i}"
            );
            assert_eq!(to_header(&new).as_deref(), Some(NEW), "{session} #{i}");
            let header = header_mut(&mut orig);
            for node in &mut header.children {
                if let Node::Element(e) = node
                    && e.local_name() == "To"
                {
                    e.children = vec![Node::Text(Text::Chars(NEW.into()))];
                }
            }
            assert_eq!(orig.to_xml(), new.to_xml(), "{session} #{i}");
            envelopes += 1;
        }

        // Events: the preamble, one per envelope with the recorded To, End.
        let mut events = Vec::new();
        while let Some(e) = rw.poll_event() {
            events.push(e);
        }
        assert!(
            matches!(&events[0], RewriteEvent::Preamble { via, .. } if *via == old),
            "{events:?}"
        );
        for e in &events[1..events.len() - 1] {
            assert!(
                matches!(e, RewriteEvent::Envelope { to: Some(to), token_removed: false, .. } if *to == old),
                "{e:?}"
            );
        }
        assert_eq!(events.last(), Some(&RewriteEvent::End), "{session}");
    }
    assert!(envelopes >= 25, "only {envelopes} envelopes");
}

/// The tcp-session stream with a `RelayAccessToken` header added to its first envelope, as a
/// relay client sends it (re-encoded with a consistent session dictionary).
fn stream_with_token(token: &str) -> Vec<u8> {
    let stream = client_stream("tcp-session");
    let mut docs = documents(&stream).into_iter();
    let mut writer = WriterSession::default();
    let mut out = Vec::new();
    let mut first = true;
    for record in records(&stream) {
        match record {
            Record::SizedEnvelope(_) => {
                let mut doc = docs.next().expect("as many documents as envelopes");
                if first {
                    let header = RelayAccessToken::new("uuid:7", token).to_element();
                    header_mut(&mut doc)
                        .children
                        .insert(0, Node::Element(header));
                    first = false;
                }
                let payload = doc.encode_with_table(&mut writer).unwrap();
                Record::SizedEnvelope(Cow::Owned(payload)).encode(&mut out);
            }
            other => other.encode(&mut out),
        }
    }
    out
}

#[test]
fn the_relay_token_never_reaches_the_origin() {
    let token = "SharedAccessSignature sr=http%3a%2f%2frelay%2fcalc&sig=c2VjcmV0&se=1&skn=send";
    let stream = stream_with_token(token);
    assert!(
        stream.windows(token.len()).any(|w| w == token.as_bytes()),
        "the test input carries the token"
    );
    let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
    let out = rewrite(&mut rw, &stream, 333);
    assert!(!out.windows(token.len()).any(|w| w == token.as_bytes()));
    assert!(!out.windows(8).any(|w| w == b"c2VjcmV0"));
    assert!(!out.windows(16).any(|w| w == b"RelayAccessToken"));
    // The rest of the session is what the client sent, readdressed.
    let expected = rewrite(
        &mut ClientRewriter::new(Target::new(NEW), RewriteLimits::default()),
        &client_stream("tcp-session"),
        usize::MAX,
    );
    assert_eq!(out, expected);
    let mut removed = Vec::new();
    while let Some(e) = rw.poll_event() {
        if let RewriteEvent::Envelope { token_removed, .. } = e {
            removed.push(token_removed);
        }
    }
    assert!(removed[0] && removed[1..].iter().all(|r| !r), "{removed:?}");
}

/// A valid preamble followed by `payload` in one SizedEnvelope.
fn after_preamble(payload: &[u8]) -> Vec<u8> {
    let stream = client_stream("tcp-session");
    let mut out = stream[..43].to_vec();
    assert_eq!(out[42], 0x0C, "recorded preamble ends at 43");
    Record::SizedEnvelope(Cow::Borrowed(payload)).encode(&mut out);
    out
}

#[test]
fn garbage_envelopes_are_typed_errors_with_a_framing_fault() {
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty payload", vec![]),
        ("string table past the end", vec![0x10, 0x01, 0x61]),
        ("undefined session id", vec![0x00, 0x42, 0x03, 0x01]),
        ("text, not binary", b"<s:Envelope/>".to_vec()),
        // A well-formed document whose root is not an envelope: <a/>.
        ("not an envelope", vec![0x00, 0x40, 0x01, 0x61, 0x01]),
    ];
    for (what, payload) in cases {
        let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
        let err = rw.handle_input(&after_preamble(&payload)).unwrap_err();
        assert!(
            matches!(err, RewriteError::Envelope { index: 0, .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.fault(), FaultCode::ContentTypeInvalid, "{what}");
        if what == "not an envelope" {
            assert!(matches!(
                err,
                RewriteError::Envelope {
                    source: EnvelopeError::NotAnEnvelope,
                    ..
                }
            ));
        }
        // The preamble went out before the bad envelope; nothing after it.
        let mut out = Vec::new();
        rw.poll_transmit(&mut out);
        assert_eq!(out.last(), Some(&0x0C), "{what}");
        assert!(matches!(
            rw.handle_input(&[0x07]),
            Err(RewriteError::Failed)
        ));
    }
}

#[test]
fn envelopes_out_of_place_are_refused() {
    // An envelope before the preamble ended, End before the preamble.
    for input in [
        vec![0x00, 0x01, 0x00, 0x01, 0x02, 0x06, 0x01, 0x00],
        vec![0x07],
    ] {
        let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
        let err = rw.handle_input(&input).unwrap_err();
        assert!(matches!(err, RewriteError::PeerMisbehaved(_)), "{err:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
        let _ = rw.handle_input(&bytes);
        let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
        let _ = rw.handle_input(&after_preamble(&bytes));
    }

    #[test]
    fn mutated_recordings_never_panic(at in 0usize..4903, byte in any::<u8>()) {
        let mut stream = client_stream("tcp-session");
        let at = at % stream.len();
        stream[at] = byte;
        let mut rw = ClientRewriter::new(Target::new(NEW), RewriteLimits::default());
        let _ = rw.handle_input(&stream);
    }
}
