//! An unauthenticated net.tcp sender costs a `ferry gateway` process little memory, whatever
//! its first message describes or declares: the gateway reads the message only as far as its
//! headers, as a stream, and refuses it with a fault.
//!
//! The messages are the ones that once took a gateway from 8 MB to 600 MB: an element
//! declaring a 60 KB default namespace and then 10,000 empty children (100 KB), as the
//! envelope itself and inside the envelope's headers, and the same flood grown to 16 MiB.

// The readiness poll is synchronous, where a thread sleep is what it needs.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Proc, free_port, gateway_command, peak_rss};
use ferry_nbfx::varint;
use ferry_nmf::{ClientConfig, Event, Limits, Record, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much the gateway's peak RSS may grow over the attacks: a few MB of allocator and
/// buffer slack, far below anything that grows with the messages.
const MAX_GROWTH: u64 = 6 << 20;
/// Longest wait for any one answer.
const STEP: Duration = Duration::from_secs(20);
/// SOAP 1.2's envelope namespace.
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

fn string(out: &mut Vec<u8>, s: &str) {
    varint::encode(s.len() as u32, out);
    out.extend_from_slice(s.as_bytes());
}

/// `<x xmlns="…60 KB…">` with `children` empty `<y/>` children, as binary records.
fn flood(out: &mut Vec<u8>, children: usize) {
    out.push(0x40); // ShortElement
    string(out, "x");
    out.push(0x08); // ShortXmlnsAttribute
    string(out, &"n".repeat(60_000));
    for _ in 0..children {
        out.push(0x40);
        string(out, "y");
        out.push(0x01); // EndElement
    }
    out.push(0x01);
}

/// An msbinsession1 payload (empty string table) whose document is the flood itself.
fn flood_as_envelope(children: usize) -> Vec<u8> {
    let mut payload = vec![0x00];
    flood(&mut payload, children);
    payload
}

/// An msbinsession1 payload: a SOAP 1.2 envelope with the flood as a header and an empty body.
fn flood_in_headers(children: usize) -> Vec<u8> {
    let mut payload = vec![0x00];
    payload.push(0x56); // PrefixDictionaryElementS
    payload.push(0x02); // Envelope
    payload.push(0x09); // DictionaryXmlnsAttribute
    string(&mut payload, "s");
    payload.push(0x04); // the SOAP 1.2 namespace
    assert_eq!(
        ferry_nbfx::StaticDictionary::lookup(ferry_nbfx::DictionaryId(0x04)),
        Some(SOAP12)
    );
    payload.extend_from_slice(&[0x56, 0x0A]); // <s:Header>
    flood(&mut payload, children);
    payload.push(0x01); // </s:Header>
    payload.extend_from_slice(&[0x56, 0x0E, 0x01]); // <s:Body/>
    payload.push(0x01); // </s:Envelope>
    payload
}

/// Sends `payload` as the first message of a session to `path` and returns what the client
/// session made of the gateway's answer. Write errors are ignored: the gateway may refuse
/// before it has read the whole message.
async fn attack(port: u16, path: &str, payload: Vec<u8>) -> Vec<Event> {
    let via = format!("net.tcp://127.0.0.1:{port}/{path}");
    let mut client = Session::client(ClientConfig::net_tcp(&via), Limits::default()).unwrap();
    let mut wire = Vec::new();
    client.poll_transmit(&mut wire);
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&wire).await;
        let mut record = Vec::new();
        Record::SizedEnvelope(payload.into()).encode(&mut record);
        let _ = wr.write_all(&record).await;
        wr
    });
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, rd.read_to_end(&mut answer))
        .await
        .expect("the gateway answers in time")
        .ok();
    drop(writer.await);
    client.handle_input(&answer).ok();
    std::iter::from_fn(|| client.poll_event()).collect()
}

#[tokio::test]
async fn unauthenticated_floods_leave_the_gateway_small_and_get_a_fault() {
    let (plain, nettcp) = (free_port(), free_port());
    let mut child = gateway_command(plain, free_port(), nettcp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry gateway starts");
    let pid = child.id();
    let deadline = std::time::Instant::now() + STEP;
    while std::net::TcpStream::connect(("127.0.0.1", nettcp)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "gateway exited");
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gateway = Proc(child);
    // Warm up: one ordinary refused sender, so idle includes the per-connection machinery.
    attack(nettcp, "calc", flood_in_headers(1)).await;
    let idle = peak_rss(pid);

    let cases = [
        (
            "the flood as the envelope, 100 KB",
            flood_as_envelope(10_000),
        ),
        ("the flood in the headers, 100 KB", flood_in_headers(10_000)),
        (
            "the flood in the headers, 16 MiB",
            flood_in_headers(4_170_000),
        ),
    ];
    for (case, payload) in cases {
        let size = payload.len();
        assert!(size < 16 << 20, "{case}: under the first-message limit");
        let events = attack(nettcp, "calc", payload).await;
        let peak = peak_rss(pid);
        eprintln!(
            "{case} ({size} bytes): gateway peak RSS {:.1} MB, idle {:.1} MB",
            peak as f64 / 1e6,
            idle as f64 / 1e6
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Fault(_) | Event::Envelope(_))),
            "{case}: the sender is told it is refused (a framing or SOAP fault): {events:?}"
        );
        assert!(
            peak - idle <= MAX_GROWTH,
            "{case}: the gateway's peak RSS grew by {} bytes",
            peak - idle
        );
    }
    drop(gateway);
}
