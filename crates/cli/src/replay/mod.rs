//! `ferry replay RECORDING --to ADDR`: plays the client side of a recorded session against a
//! live service and checks that every answer matches the recorded one.
//!
//! RECORDING is a folder laid out like `interop/recordings/<session>`: per TCP connection N
//! the bytes each way (`client_to_server.bin` / `server_to_client.bin` for connection 0,
//! `connN.*.bin` after it) and `timeline.jsonl`, the order in which the recorder saw them.
//!
//! - net.tcp (the client stream starts with an MC-NMF Version record): the client's records
//!   are sent in order with their Via and `To` rewritten to ADDR
//!   (`net.tcp://HOST:PORT/PATH`, by [`ferry_wcf::rewrite`]). After each, the replay waits for
//!   exactly the server records the recording shows arriving before the client's next one (a
//!   request waits for its reply, a one-way message for nothing, Mono's client waits for the
//!   PreambleAck, pynettcp does not); then the server must close after the client's End.
//! - HTTP (the client stream starts with a request line): each request is sent again with the
//!   same headers and body (Host and the path from ADDR, `http://HOST:PORT/PATH`; the recorded
//!   query kept), over one connection per recorded connection, honouring
//!   `Expect: 100-continue`.
//!
//! Answers are compared as XML infosets (names with their namespaces, attributes, text),
//! not bytes: prefixes (also inside the QName values of WSDL and XML Schema attributes such as
//! `type="tns:Order"`), namespace declarations and the binary records chosen do not count, nor
//! do values that differ on every run: MessageID, RelatesTo, `To`, `urn:uuid:` values,
//! WS-Security timestamps. Correlation is checked on its own instead: a live answer's
//! `RelatesTo` must be the WS-Addressing MessageID of a request this replay sent and has not
//! yet seen answered (on net.tcp a client may send request 2 before reply 1 arrives, and the
//! service may answer in either order; over HTTP it is the one request of the exchange), and
//! naming any other is a difference. An answer without one matches only where the recorded
//! answer had none either, as Mono's faults (FINDINGS §8). Sized (session) and unsized
//! (streamed) envelopes are checked alike; a request whose MessageID cannot be read gets a
//! `note` line in the report. Addresses map to the live ones: the recorded endpoint
//! address (the Via) and the recorded HTTP base address (`scheme://HOST:PORT/PATH` of each
//! recorded request, with the host and port the recorded answer names it by) compare as ADDR,
//! and `--address RECORDED=LIVE` adds others (e.g. the endpoint addresses a WSDL publishes).
//! HTTP answers compare their status, content type (media type and charset, without regard to
//! case) and body: a SOAP envelope's Body, or a whole XML document (a WSDL, an XSD). Every
//! message gets a line of the report; any mismatch makes the command fail.

mod compare;
mod diff;
mod http;
mod mono;
mod nettcp;
mod recording;
mod report;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use self::diff::AddressMap;
use self::recording::Recording;
use self::report::Report;

/// Arguments of `ferry replay`.
#[derive(clap::Args, Debug)]
pub(crate) struct ReplayArgs {
    /// A recording folder (e.g. interop/recordings/tcp-session).
    pub(crate) recording: PathBuf,
    /// The live service: net.tcp://HOST:PORT/PATH (its endpoint address) for net.tcp
    /// recordings, http://HOST:PORT/PATH for HTTP ones.
    #[arg(long)]
    pub(crate) to: String,
    /// Longest wait for each answer, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout: u64,
    /// An address the recorded answers name that the live service has elsewhere, as
    /// RECORDED=LIVE (repeatable), e.g. an endpoint address a WSDL publishes:
    /// `--address net.tcp://127.0.0.1:9701/calc/tcp=net.tcp://127.0.0.1:9352/calc/tcp`. A
    /// recorded value starting with RECORDED, where the address ends (at `/`, `?`, `#`, a
    /// quote, space or the end), compares with LIVE in its place.
    #[arg(long = "address", value_name = "RECORDED=LIVE")]
    pub(crate) addresses: Vec<String>,
    /// The recording was made against Mono's WCF and the live service behaves like .NET:
    /// Mono's documented deviations (interop/recordings/FINDINGS.md §2 no End back, §7 the
    /// fault Action's missing slash and empty xml:lang, §8 faults without RelatesTo, §9
    /// untyped faults replaced by a generic InternalServiceFault, §11 one-way over HTTP
    /// answered 200 instead of 202, §14 the WSDL's repeated wsdl:import, its import of the
    /// XML Schema namespace from `?xsd=` and its missing FaultContract, §15 the empty mex
    /// answer) are reported as `known`, each naming its section, instead of as differences.
    #[arg(long)]
    pub(crate) mono_quirks: bool,
}

/// Runs `ferry replay`; fails when any answer differs from the recording.
pub(crate) async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let recording = Recording::open(&args.recording)?;
    let addresses = AddressMap::parse(&args.addresses)?;
    let wait = Duration::from_secs(args.timeout.max(1));
    let mut report = Report {
        mono: args.mono_quirks,
        ..Report::default()
    };
    println!(
        "replaying {} ({} connection{}) against {}",
        args.recording.display(),
        recording.connections.len(),
        if recording.connections.len() == 1 {
            ""
        } else {
            "s"
        },
        args.to
    );
    for conn in &recording.connections {
        println!("connection {}", conn.index);
        let result = if conn.c2s.first() == Some(&0x00) {
            nettcp::replay(conn, &args.to, &addresses, wait, &mut report).await
        } else {
            http::replay(conn, &args.to, &addresses, wait, &mut report).await
        };
        if let Err(e) = result {
            report.fail(format!("connection {} stopped: {e:#}", conn.index));
        }
    }
    println!(
        "{} checked, {} matched, {} differ",
        report.checked,
        report.checked - report.failed,
        report.failed
    );
    if report.known > 0 {
        println!(
            "{} of the matches differ from the recording only by Mono's documented deviations",
            report.known
        );
    }
    if report.failed > 0 {
        bail!(
            "{} of {} answers differ from the recording",
            report.failed,
            report.checked
        );
    }
    Ok(())
}
