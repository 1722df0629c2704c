//! Session machine tests: both ends driven in memory (no sockets, no clock), every mode, faults,
//! upgrades, connection reuse, pipelining, and the recorded Mono/pynettcp streams.

use std::path::PathBuf;

use ferry_nmf::{
    ClientConfig, Encoding, Event, FaultCode, KnownEncoding, Limits, Mode, Session, SessionError,
};
use hex_literal::hex;
use pretty_assertions::assert_eq;
use proptest::prelude::*;
use test_case::test_case;

/// Moves everything `from` wants to send into `to`, returning the events `to` produced.
fn pump(from: &mut Session, to: &mut Session) -> Vec<Event> {
    let mut wire = Vec::new();
    from.poll_transmit(&mut wire);
    let n = to.handle_input(&wire).expect("input accepted");
    assert_eq!(n, wire.len());
    events(to)
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn config(mode: Mode) -> ClientConfig {
    ClientConfig {
        mode,
        ..ClientConfig::net_tcp("net.tcp://host/svc")
    }
}

fn pair(mode: Mode) -> (Session, Session) {
    let client = Session::client(config(mode), Limits::default()).unwrap();
    (client, Session::server(Limits::default()))
}

#[test]
fn duplex_round_trip_end_handshake_and_reuse() {
    let (mut c, mut s) = pair(Mode::Duplex);
    let ev = pump(&mut c, &mut s);
    assert!(
        matches!(&ev[..], [Event::PreambleReceived(p)] if p.via == "net.tcp://host/svc" && p.mode == Mode::Duplex)
    );
    s.accept().unwrap();
    assert_eq!(pump(&mut s, &mut c), vec![Event::PreambleAcked]);
    c.send_envelope(b"req").unwrap();
    assert_eq!(pump(&mut c, &mut s), vec![Event::Envelope(b"req".to_vec())]);
    s.send_envelope(b"resp").unwrap();
    assert_eq!(
        pump(&mut s, &mut c),
        vec![Event::Envelope(b"resp".to_vec())]
    );
    c.close().unwrap();
    assert_eq!(pump(&mut c, &mut s), vec![Event::End]);
    s.close().unwrap();
    assert_eq!(pump(&mut s, &mut c), vec![Event::End]);
    assert!(c.is_closed());
    // Connection reuse: a new preamble on the same stream.
    c.restart(config(Mode::Duplex)).unwrap();
    assert!(matches!(
        &pump(&mut c, &mut s)[..],
        [Event::PreambleReceived(_)]
    ));
}

#[test]
fn first_envelope_pipelined_before_the_ack() {
    let (mut c, mut s) = pair(Mode::Duplex);
    c.send_envelope(b"early").unwrap();
    let ev = pump(&mut c, &mut s);
    assert!(matches!(&ev[..], [Event::PreambleReceived(_), Event::Envelope(e)] if e == b"early"));
    // The server cannot answer before accepting.
    assert!(matches!(
        s.send_envelope(b"x"),
        Err(SessionError::InvalidState { .. })
    ));
    s.accept().unwrap();
    s.send_envelope(b"reply").unwrap();
    assert_eq!(
        pump(&mut s, &mut c),
        vec![Event::PreambleAcked, Event::Envelope(b"reply".to_vec())]
    );
}

#[test]
fn singleton_unsized_chunks() {
    let (mut c, mut s) = pair(Mode::SingletonUnsized);
    pump(&mut c, &mut s);
    s.accept().unwrap();
    pump(&mut s, &mut c);
    // A chunked envelope from another writer: three chunks and the terminator.
    s.handle_input(&hex!("05 02 61 62 01 63 03 64 65 66 00"))
        .unwrap();
    assert_eq!(events(&mut s), vec![Event::Envelope(b"abcdef".to_vec())]);
    s.send_envelope(b"reply").unwrap();
    let mut wire = Vec::new();
    s.poll_transmit(&mut wire);
    assert_eq!(wire, hex!("05 05 72 65 70 6C 79 00"));
    c.handle_input(&wire).unwrap();
    assert_eq!(events(&mut c), vec![Event::Envelope(b"reply".to_vec())]);
    // A sized envelope is wrong in this mode.
    assert!(matches!(
        s.handle_input(&hex!("06 01 61")),
        Err(SessionError::PeerMisbehaved(_))
    ));
}

/// A singleton-unsized server past the preamble, with `limits`.
fn unsized_server(limits: Limits) -> Session {
    let mut c = Session::client(config(Mode::SingletonUnsized), Limits::default()).unwrap();
    let mut s = Session::server(limits);
    pump(&mut c, &mut s);
    s.accept().unwrap();
    // The PreambleAck.
    assert!(s.poll_transmit(&mut Vec::new()));
    s
}

/// An UnsizedEnvelope record with the given chunks.
fn unsized_record<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut wire = Vec::new();
    ferry_nmf::Record::UnsizedEnvelope(chunks.into_iter().map(Into::into).collect())
        .encode(&mut wire);
    wire
}

/// The pre-authentication attack: a 1 MiB envelope in 1-byte chunks, a few bytes per read.
/// Each read used to re-parse every chunk received so far (about 10^11 chunk parses here); now
/// the chunks are consumed as they arrive and this takes well under a second.
#[test]
fn one_byte_chunks_in_small_reads_complete() {
    const BYTES: usize = 1024 * 1024;
    let mut s = unsized_server(Limits {
        max_envelope_bytes: BYTES,
        ..Limits::default()
    });
    let payload: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
    let wire = unsized_record(payload.chunks(1));
    assert_eq!(wire.len(), 2 * BYTES + 2);
    for piece in wire.chunks(5) {
        assert_eq!(s.handle_input(piece).unwrap(), piece.len());
    }
    assert_eq!(events(&mut s), vec![Event::Envelope(payload)]);
}

#[test]
fn too_many_chunks_is_max_message_size_exceeded() {
    let limits = Limits {
        max_unsized_chunks: 4,
        ..Limits::default()
    };
    let four = unsized_record([&b"a"[..], b"b", b"c", b"d"]);
    let mut s = unsized_server(limits);
    s.handle_input(&four).unwrap();
    assert_eq!(events(&mut s), vec![Event::Envelope(b"abcd".to_vec())]);

    let five = unsized_record([&b"a"[..], b"b", b"c", b"d", b"e"]);
    let mut s = unsized_server(limits);
    // Rejected at the fifth size field, whatever the read boundaries.
    s.handle_input(&five[..8]).unwrap();
    let err = s.handle_input(&five[8..]).unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Decode(ferry_nmf::DecodeError::LimitExceeded {
                limit: ferry_nmf::Limit::UnsizedChunks,
                max: 4,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(err.fault(), Some(FaultCode::MaxMessageSizeExceeded));
    let mut wire = Vec::new();
    s.poll_transmit(&mut wire);
    let mut expected = Vec::new();
    ferry_nmf::Record::Fault(FaultCode::MaxMessageSizeExceeded.uri().into()).encode(&mut expected);
    assert_eq!(wire, expected);
    assert!(s.is_closed());
}

#[test]
fn unsized_total_over_the_limit_across_reads() {
    let mut s = unsized_server(Limits {
        max_envelope_bytes: 5,
        ..Limits::default()
    });
    s.handle_input(&hex!("05 03 61 62")).unwrap();
    let err = s.handle_input(&hex!("63 03")).unwrap_err();
    assert_eq!(
        err.fault(),
        Some(FaultCode::MaxMessageSizeExceeded),
        "{err}"
    );
}

/// An UnsizedEnvelope where none may come is refused at its type byte, not after the peer has
/// sent up to the envelope limit.
#[test]
fn misplaced_unsized_envelope_is_refused_at_once() {
    let (mut c, mut s) = pair(Mode::Duplex);
    pump(&mut c, &mut s);
    s.accept().unwrap();
    assert!(matches!(
        s.handle_input(&hex!("05")),
        Err(SessionError::PeerMisbehaved(
            ferry_nmf::PeerMisbehaved::WrongEnvelopeKind { .. }
        ))
    ));
    let mut s = Session::server(Limits::default());
    assert!(matches!(
        s.handle_input(&hex!("05")),
        Err(SessionError::PeerMisbehaved(
            ferry_nmf::PeerMisbehaved::UnexpectedRecord { .. }
        ))
    ));
}

#[test]
fn simplex_has_no_ack() {
    let (mut c, mut s) = pair(Mode::Simplex);
    c.send_envelope(b"one-way").unwrap();
    c.close().unwrap();
    let ev = pump(&mut c, &mut s);
    assert!(matches!(
        &ev[..],
        [Event::PreambleReceived(_), Event::Envelope(_), Event::End]
    ));
    let mut wire = Vec::new();
    assert!(!s.poll_transmit(&mut wire), "simplex servers send nothing");
}

#[test]
fn singleton_sized_is_raw_octets() {
    let (mut c, mut s) = pair(Mode::SingletonSized);
    c.send_envelope(b"<raw message>").unwrap();
    let ev = pump(&mut c, &mut s);
    assert!(
        matches!(&ev[..], [Event::PreambleReceived(_), Event::Data(d)] if d == b"<raw message>")
    );
    s.handle_input(b" more").unwrap();
    assert_eq!(events(&mut s), vec![Event::Data(b" more".to_vec())]);
}

#[test_case("application/ssl-tls"; "tls")]
#[test_case("application/negotiate"; "negotiate")]
fn upgrade_hands_off_without_consuming_upgrade_bytes(protocol: &str) {
    let cfg = ClientConfig {
        upgrade: Some(protocol.into()),
        ..config(Mode::Duplex)
    };
    let mut c = Session::client(cfg, Limits::default()).unwrap();
    let mut s = Session::server(Limits::default());
    let mut wire = Vec::new();
    c.poll_transmit(&mut wire);
    assert!(
        wire.ends_with(protocol.as_bytes()),
        "UpgradeRequest last, no PreambleEnd"
    );
    // A careless client puts the first TLS bytes in the same write.
    let hello = hex!("16 03 01 00 05");
    wire.extend_from_slice(&hello);
    let consumed = s.handle_input(&wire).unwrap();
    assert_eq!(
        consumed,
        wire.len() - hello.len(),
        "upgrade bytes are left to the caller"
    );
    assert_eq!(
        events(&mut s),
        vec![Event::UpgradeRequested(protocol.into())]
    );
    assert_eq!(
        s.handle_input(&hello).unwrap(),
        0,
        "paused until the upgrade decision"
    );
    s.accept_upgrade().unwrap();
    let mut resp = Vec::new();
    s.poll_transmit(&mut resp);
    assert_eq!(resp, [0x0A]);
    // The server's TLS bytes follow the UpgradeResponse in the same read.
    resp.extend_from_slice(&hello);
    assert_eq!(c.handle_input(&resp).unwrap(), 1);
    assert_eq!(events(&mut c), vec![Event::UpgradeAccepted]);
    // ... TLS runs here; framing resumes inside it.
    c.upgrade_complete().unwrap();
    s.upgrade_complete().unwrap();
    let ev = pump(&mut c, &mut s);
    assert!(
        matches!(&ev[..], [Event::PreambleReceived(p)] if p.upgrades == [protocol.to_string()])
    );
    s.accept().unwrap();
    assert_eq!(pump(&mut s, &mut c), vec![Event::PreambleAcked]);
}

#[test_case(&hex!("00 02 00"), FaultCode::UnsupportedVersion; "version 2.0")]
#[test_case(&hex!("00 01 00 01 09"), FaultCode::UnsupportedMode; "mode 9")]
#[test_case(&hex!("00 01 00 01 02 02 01 61 03 42"), FaultCode::ContentTypeInvalid; "unknown encoding")]
#[test_case(&hex!("00 01 00 01 02 02 81 20"), FaultCode::ViaTooLong; "via too long")]
#[test_case(&hex!("00 01 00 01 02 02 01 61 04 81 04"), FaultCode::ContentTypeTooLong; "content type too long")]
#[test_case(&hex!("00 01 00 01 02 02 01 61 03 08 0C 06 81 80 08"), FaultCode::MaxMessageSizeExceeded; "envelope too large")]
#[test_case(&hex!("00 01 00 09 03 61 62 63"), FaultCode::UpgradeInvalid; "upgrade before the preamble is complete")]
fn server_errors_queue_the_matching_fault(input: &[u8], fault: FaultCode) {
    let mut s = Session::server(Limits::default());
    let err = s.handle_input(input).unwrap_err();
    assert_eq!(err.fault(), Some(fault.clone()), "{err}");
    let mut wire = Vec::new();
    s.poll_transmit(&mut wire);
    let mut expected = Vec::new();
    ferry_nmf::Record::Fault(fault.uri().into()).encode(&mut expected);
    assert_eq!(wire, expected);
    // After the fault, input is drained.
    assert_eq!(s.handle_input(b"anything").unwrap(), 8);
}

#[test]
fn every_fault_uri_reaches_the_client() {
    for fault in FaultCode::ALL {
        let (mut c, mut s) = pair(Mode::Duplex);
        pump(&mut c, &mut s);
        s.reject(fault.clone()).unwrap();
        assert_eq!(pump(&mut s, &mut c), vec![Event::Fault(fault.clone())]);
        assert!(c.is_closed());
    }
}

#[test]
fn unexpected_records_are_peer_misbehaviour() {
    let mut s = Session::server(Limits::default());
    assert!(matches!(
        s.handle_input(&hex!("0C")),
        Err(SessionError::PeerMisbehaved(_))
    ));
    let (mut c, _) = pair(Mode::Duplex);
    assert!(matches!(
        c.handle_input(&hex!("06 01 61")),
        Err(SessionError::PeerMisbehaved(_))
    ));
}

#[test]
fn extensible_encoding() {
    let cfg = ClientConfig {
        encoding: Encoding::Extensible("application/soap+msbinsession1+gzip".into()),
        ..config(Mode::Duplex)
    };
    let mut c = Session::client(cfg, Limits::default()).unwrap();
    let mut s = Session::server(Limits::default());
    let ev = pump(&mut c, &mut s);
    assert!(
        matches!(&ev[..], [Event::PreambleReceived(p)] if p.encoding.content_type() == Some("application/soap+msbinsession1+gzip"))
    );
}

fn recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/recordings")
}

/// (session, via, client→server envelopes, server→client envelopes)
const RECORDED: [(&str, &str, usize, usize); 4] = [
    ("tcp-session", "net.tcp://127.0.0.1:9701/calc/tcp", 17, 17),
    ("tcp-oneway", "net.tcp://127.0.0.1:9701/calc/tcp", 3, 1),
    ("tcp-fault", "net.tcp://127.0.0.1:9701/calc/tcp", 5, 5),
    ("pynettcp-mex", "net.tcp://127.0.0.1:9703/calc/mex", 1, 1),
];

fn run_recorded(name: &str, via: &str, chunk: usize) -> (usize, usize) {
    let c2s = std::fs::read(recordings().join(name).join("client_to_server.bin")).unwrap();
    let s2c = std::fs::read(recordings().join(name).join("server_to_client.bin")).unwrap();
    let mut server = Session::server(Limits::default());
    let mut server_envelopes = 0;
    let mut saw_end = false;
    for piece in c2s.chunks(chunk) {
        assert_eq!(server.handle_input(piece).unwrap(), piece.len());
        while let Some(ev) = server.poll_event() {
            match ev {
                Event::PreambleReceived(p) => {
                    assert_eq!(p.via, via);
                    assert_eq!(p.encoding, Encoding::Known(KnownEncoding::BinarySession));
                    server.accept().unwrap();
                }
                Event::Envelope(_) => server_envelopes += 1,
                Event::End => saw_end = true,
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    assert!(saw_end, "{name}: client sends End");
    let mut client = Session::client(ClientConfig::net_tcp(via), Limits::default()).unwrap();
    let mut client_envelopes = 0;
    for piece in s2c.chunks(chunk) {
        assert_eq!(client.handle_input(piece).unwrap(), piece.len());
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::PreambleAcked => {}
                Event::Envelope(_) => client_envelopes += 1,
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    (server_envelopes, client_envelopes)
}

#[test]
fn recorded_streams_in_both_roles() {
    for (name, via, c2s, s2c) in RECORDED {
        for chunk in [1, 7, 4096] {
            assert_eq!(
                run_recorded(name, via, chunk),
                (c2s, s2c),
                "{name} in chunks of {chunk}"
            );
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
        for role_server in [true, false] {
            let mut s = if role_server {
                Session::server(Limits::default())
            } else {
                Session::client(ClientConfig::net_tcp("net.tcp://h/"), Limits::default()).unwrap()
            };
            let (a, b) = data.split_at(split.min(data.len()));
            let _ = s.handle_input(a).and_then(|_| s.handle_input(b));
            while s.poll_event().is_some() {}
            let mut out = Vec::new();
            s.poll_transmit(&mut out);
        }
    }

    #[test]
    fn unsized_envelopes_survive_any_chunking_and_split(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        chunk_len in 1usize..40,
        read in 1usize..64,
    ) {
        let mut s = unsized_server(Limits::default());
        let mut wire = Vec::new();
        for p in &payloads {
            wire.extend(unsized_record(p.chunks(chunk_len)));
        }
        let mut got = Vec::new();
        for piece in wire.chunks(read) {
            prop_assert_eq!(s.handle_input(piece).unwrap(), piece.len());
            while let Some(ev) = s.poll_event() {
                if let Event::Envelope(e) = ev { got.push(e); }
            }
        }
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn envelopes_survive_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5), chunk in 1usize..64) {
        let (mut c, mut s) = pair(Mode::Duplex);
        for p in &payloads {
            c.send_envelope(p).unwrap();
        }
        let mut wire = Vec::new();
        c.poll_transmit(&mut wire);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            s.handle_input(piece).unwrap();
            while let Some(ev) = s.poll_event() {
                if let Event::Envelope(e) = ev { got.push(e); }
            }
        }
        prop_assert_eq!(got, payloads);
    }
}
