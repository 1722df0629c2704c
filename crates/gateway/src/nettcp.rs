//! The net.tcp front end: standard WCF NetTcpBinding clients (and the NetOneway / NetEvent
//! relay bindings' senders, which are net.tcp underneath) connect to
//! `net.tcp://gateway:port/{path}` and reach the listener on `{path}`, unchanged.
//!
//! ```text
//!  WCF client ── TCP ──► preamble (Version Mode Via Encoding PreambleEnd) ─► route by Via
//!                        ◄── PreambleAck (from the gateway)
//!                        first envelope ─► token: RelayAccessToken header, or sb-hc-token on
//!                                          the Via, or none on an anonymous path
//!                        accept → listener opens a rendezvous; the gateway replays the
//!                        preamble and the first envelope into it, swallows the listener's
//!                        PreambleAck, then splices the two streams
//! ```
//!
//! The listener sees the client's byte stream as sent (its session dictionary, every message)
//! less the sender's credentials: the Via's `sb-hc-token`, and in every message the
//! `RelayAccessToken` header and an `sb-hc-token` in the `To` address, are cut out (see
//! `scrub`). So any NMF server works behind it: the Rust host of `ferry-wcf`, or a legacy
//! service through `ferry listen --wcf-to`.
//!
//! Refusals are what a WCF client understands: an unknown path or no listener is the
//! `EndpointNotFound` framing fault (in dynamic mode, where a path exists only while listened
//! on, a sender is told so only once its token passes the namespace rules, so paths cannot be
//! probed); a malformed preamble gets its own fault
//! (`UnsupportedVersion`, `UnsupportedMode`, `ViaTooLong`, …); an upgrade other than
//! `application/ssl-tls` (NetTcpBinding's transport security, which the gateway takes with its
//! TLS certificate), and on a port that requires TLS a session without it, is refused with
//! `UpgradeInvalid`; a missing or wrong token, in the
//! first message or on the Via, is a SOAP fault answering the first request (so the client's
//! call fails with a `FaultException` naming the reason), then End. A refused client is never
//! met with silence.
//!
//! Paths configured with `fan_out` (NetEventRelayBinding's multicast) deliver the session's
//! one-way messages to every listener connected when it starts, their rendezvous opened all
//! at once: each gets the same byte stream; a listener that fails to open or cannot keep up
//! is dropped, the others carry on.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_hc::address;
use ferry_hc::auth::AuthError;
use ferry_hc::command::{Headers, RemoteEndpoint};
use ferry_nbfx::SessionDictionary;
use ferry_net::conn::Conn;
use ferry_net::stream::WsStream;
use ferry_nmf::{Event, FaultCode, MessageFormat, Mode, Preamble, RecordType, Session};
use ferry_soap::relay::RELAY_CONNECT_NS;
use ferry_soap::version::WSA10_FAULT_ACTION;
use ferry_soap::{Body, Envelope, Fault, Probe, QName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::admission::Slot;
use crate::first_message::{self, Head, Probed};
use crate::metrics;
use crate::pairing::{Choice, Destination, Intent, ListenerHandle, PairError, PathSettings};
use crate::scrub::{Scrub, ScrubLimits};
use crate::state::Shared;

/// The framing `PreambleAck` record.
const PREAMBLE_ACK: u8 = RecordType::PreambleAck.byte();
/// The framing `End` record.
const END: u8 = RecordType::End.byte();
/// Chunks queued for one fan-out listener before it counts as too slow.
const FAN_OUT_QUEUE: usize = 64;
/// The fault URI for input that is not a valid record sequence.
const INVALID_RECORD_SEQUENCE: &str =
    "http://schemas.microsoft.com/ws/2006/05/framing/faults/InvalidRecordSequence";
/// Read size from the sender.
const READ: usize = 16 * 1024;
/// The upgrade NetTcpBinding's transport security asks for (MC-NMF 2.2.3.10).
const SSL_TLS: &str = "application/ssl-tls";

/// Serves one net.tcp connection.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    tls_required: bool,
    permit: Slot,
) {
    let mut tcp = Conn::from(tcp);
    let mut session = Session::server(framing_limits(&shared));
    let mut raw = Vec::new();
    let deadline = Instant::now() + shared.tuning().timeouts.handshake;

    // 1. The preamble, under TLS from the upgrade on when the sender asks for it
    // (`application/ssl-tls`, NetTcpBinding's transport security); a port off loopback
    // requires it.
    let mut upgraded = false;
    let preamble = loop {
        match read_until(&mut tcp, &mut session, &mut raw, deadline, |e| {
            matches!(e, Event::PreambleReceived(_) | Event::UpgradeRequested(_))
        })
        .await
        {
            Ok(Event::PreambleReceived(_)) if tls_required && !upgraded => {
                debug!(%peer, "net.tcp session without TLS refused: the port requires it");
                return refuse(&shared, tcp, &mut session, FaultCode::UpgradeInvalid).await;
            }
            Ok(Event::PreambleReceived(p)) => break p,
            Ok(Event::UpgradeRequested(protocol)) => {
                let acceptor = match &tls {
                    Some(a) if protocol == SSL_TLS && !upgraded => a.clone(),
                    _ => {
                        debug!(%peer, %protocol, "net.tcp upgrade refused");
                        return refuse(&shared, tcp, &mut session, FaultCode::UpgradeInvalid).await;
                    }
                };
                // The listener gets a plain session: the upgrade request is not replayed.
                let Some(at) = first_message::upgrade_offset(&raw, &framing_limits(&shared)) else {
                    return send_fault(&shared, tcp, &mut session, INVALID_RECORD_SEQUENCE).await;
                };
                raw.truncate(at);
                if session.accept_upgrade().is_err() {
                    return flush_and_close(&shared, tcp, &mut session).await;
                }
                if flush(&shared, &mut tcp, &mut session).await.is_err() {
                    return;
                }
                let Conn::Plain(plain) = tcp else {
                    // `upgraded` is false, so the connection is still the plain one.
                    return;
                };
                tcp = match timeout_at(deadline, acceptor.accept(plain)).await {
                    Ok(Ok(tls)) => Conn::from(tls),
                    _ => return debug!(%peer, "net.tcp tls upgrade failed"),
                };
                if session.upgrade_complete().is_err() {
                    return;
                }
                upgraded = true;
            }
            Ok(_) | Err(Stop::Closed | Stop::TooLarge) => return,
            Err(Stop::Fault) => return flush_and_close(&shared, tcp, &mut session).await,
            Err(Stop::Garbage) => {
                return send_fault(&shared, tcp, &mut session, INVALID_RECORD_SEQUENCE).await;
            }
        }
    };
    if matches!(preamble.mode, Mode::SingletonSized) {
        // Raw octets to the end of the stream: nothing to authenticate with but the Via.
        debug!(%peer, "singleton-sized net.tcp session");
    }
    let Some(path) = via_path(&preamble.via) else {
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
    };
    // In dynamic mode a path exists only while listened on. A sender naming one that does
    // not exist is held to the namespace rules, like any sender on a dynamic path, and told
    // only once its token passes (as the WebSocket and HTTP front ends do): without a valid
    // token it gets the answer it would get on an existing path, so it cannot probe which
    // paths exist.
    let (settings, exists) = match shared.pairing.destination(&path) {
        Destination::Path(settings) => (settings, true),
        Destination::Unlistened(namespace) => (namespace, false),
        Destination::Unknown => {
            return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
        }
    };

    // 2. Accept the preamble (PreambleAck) so the client sends its first message.
    if session.accept().is_err() {
        return flush_and_close(&shared, tcp, &mut session).await;
    }
    if flush(&shared, &mut tcp, &mut session).await.is_err() {
        return;
    }

    // 3. Authenticate: the Via's sb-hc-token, else the first message's RelayAccessToken. A
    // sender that the Via's token (or an anonymous path) admits is paired at once, as a WCF
    // client may open its session long before its first call; any other sender's first
    // message is read, only as far as its headers, for the token. Either way the first
    // message goes on without credentials (see `first_message`).
    let singleton_sized = first_message::raw_octets(&preamble);
    if crate::auth::path_admits(&settings, peer).is_err() {
        info!(%peer, %path, "net.tcp sender refused by the path's IP rules");
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointUnavailable).await;
    }
    if !settings.anonymous_senders {
        let authorize = |token: Option<&str>| shared.check_sender(&settings, token, &path);
        // The Via's token, when there is one, is the one that counts.
        let via_verdict = via_token(&preamble.via).map(|t| authorize(Some(&t)));
        if !matches!(via_verdict, Some(Ok(_))) {
            if singleton_sized {
                // Raw octets follow, not messages: there is no request to answer with a SOAP
                // fault (and no message boundary to stop reading at), so refuse now, the same
                // way for existing and missing paths.
                shared.admission.auth_failed(peer.ip());
                info!(%peer, %path, "singleton-sized net.tcp sender refused: no valid Via token");
                return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
            }
            let first = match read_head(&shared, &mut tcp, &mut raw, &preamble, deadline).await {
                Ok(first) => first,
                Err(Stop::Closed) => return,
                Err(Stop::Fault) => return flush_and_close(&shared, tcp, &mut session).await,
                Err(Stop::TooLarge) => {
                    let uri = FaultCode::MaxMessageSizeExceeded.uri();
                    return send_fault(&shared, tcp, &mut session, &uri).await;
                }
                Err(Stop::Garbage) => {
                    return send_fault(&shared, tcp, &mut session, INVALID_RECORD_SEQUENCE).await;
                }
            };
            let token = first
                .as_ref()
                .and_then(|p| p.relay_token.as_ref())
                .map(|t| t.token.as_str());
            let verdict = via_verdict.unwrap_or_else(|| authorize(token));
            if let Err(e) = verdict {
                shared.admission.auth_failed(peer.ip());
                info!(%peer, %path, status = e.status(), "net.tcp sender refused");
                // The answer is the same whichever way the token came, and a SOAP fault the
                // client reports as such (a framing fault would read as "endpoint not found"
                // for a path that exists).
                return refuse_with_soap_fault(&shared, tcp, &mut session, &preamble, first, &e)
                    .await;
            }
        }
    }
    if !exists {
        // Authenticated: the same answer as a path with no listener.
        debug!(%peer, %path, "net.tcp sender for a path nobody listens on");
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
    }

    // 5. Pair with the listener(s) and relay.
    let remote = RemoteEndpoint {
        address: peer.ip().to_string(),
        port: peer.port(),
    };
    // Only this session's bytes go to the listener(s), and no credentials, in any message
    // (see `Scrub`): the listener holds at most a Listen right. What the listener gets at
    // once is the session as far as it has been read (the preamble at least); the rest
    // follows through the same scrub.
    let framing = framing_limits(&shared);
    let mut scrub = Scrub::after_preamble(&preamble, scrub_limits(&shared));
    let start = first_message::read_preamble(&raw, &framing)
        .ok()
        .flatten()
        .map_or(raw.len(), |(_, end)| end);
    let mut opening = first_message::redact_preamble(&raw[..start], &framing).into_owned();
    if let Err(e) = scrub.feed(&raw[start..], &mut opening) {
        debug!(%peer, %path, error = %e, "net.tcp sender's first message refused");
        return send_fault(&shared, tcp, &mut session, INVALID_RECORD_SEQUENCE).await;
    }
    drop(raw);
    let acked = !matches!(preamble.mode, Mode::Simplex | Mode::SingletonSized);
    if settings.fan_out {
        let sender = Sender {
            tcp,
            session,
            scrub,
            opening,
            permit,
        };
        return fan_out(shared, sender, &settings, remote, acked).await;
    }
    let intent = intent(&settings.name, remote);
    let (listener, mut ws, listener_permit) =
        match shared.pairing.pair(&settings, &Choice::any(), intent).await {
            Ok((listener, paired)) => {
                let (ws, permit) = paired.into_stream(shared.tuning().limits.max_message);
                (listener, ws, permit)
            }
            Err(e) => {
                let (fault, status) = match e {
                    PairError::Abandoned if shared.cancel.is_cancelled() => {
                        (FaultCode::EndpointUnavailable, 503)
                    }
                    _ => (FaultCode::EndpointNotFound, 404),
                };
                shared
                    .metrics
                    .connection(metrics::Role::Sender, &settings.name, status);
                return refuse(&shared, tcp, &mut session, fault).await;
            }
        };
    let (to_listener, to_sender) = shared.metrics.bytes(&settings.name);
    to_listener.add(opening.len() as u64);
    match replay(&shared, &mut ws, &opening, acked).await {
        Ok(rest) => {
            to_sender.add(rest.len() as u64);
            if !rest.is_empty() && tcp.write_all(&rest).await.is_err() {
                return;
            }
        }
        Err(reply) => {
            // The listener refused the preamble (a Fault record), or closed or timed out
            // before acking it (EndpointNotFound): pass the answer on and close the way WCF
            // does. The sender, acked by us, may have sent its first message already; closing
            // with it unread would reset the connection and could destroy the answer. The
            // listener's side is done with: let its rendezvous and permit go first.
            drop((ws, listener_permit));
            if timeout(shared.tuning().timeouts.close, tcp.write_all(&reply))
                .await
                .is_ok_and(|w| w.is_ok())
            {
                linger_close(&shared, tcp).await;
            }
            return;
        }
    }
    info!(%peer, path = %settings.name, listener = %listener.id, "net.tcp relay started");
    shared
        .metrics
        .connection(metrics::Role::Sender, &settings.name, 101);
    let relaying = shared.metrics.relaying(&settings.name);
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let _held = (permit, listener_permit, relaying);
        let tcp = metrics::Metered::new(tcp, to_listener, to_sender);
        splice(&task_shared, tcp, ws, scrub).await;
        debug!("net.tcp relay ended");
    });
}

/// Relays a paired session both ways until it ends (see [`Scrub`]: nothing after the
/// sender's End goes to the listener). Each direction reads under the idle timeout, if one is
/// configured; once one direction ends the other has the close timeout to finish.
pub(crate) async fn splice<S>(
    shared: &Shared,
    sender: S,
    listener: WsStream<Conn>,
    mut scrub: Scrub,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender_rd, mut sender_wr) = tokio::io::split(sender);
    let (mut listener_rd, mut listener_wr) = tokio::io::split(listener);
    let timeouts = shared.tuning().timeouts.clone();
    let (idle, close) = (timeouts.idle, timeouts.close);
    let write_limit = close.max(timeouts.handshake);
    let up = async {
        let mut buf = vec![0u8; READ];
        let mut out = Vec::with_capacity(READ);
        // Whether the sender's side ended cleanly: its End record, or its close between
        // records. A reset, an idle timeout, a close inside a record or bytes that are not
        // framing are not: the listener's stream is then dropped without a WebSocket Close,
        // which its reader sees as an error, so a cut-off message never looks complete.
        let clean = loop {
            if scrub.ended() {
                break true;
            }
            let read = sender_rd.read(&mut buf);
            let n = match idle {
                Some(idle) => timeout(idle, read).await.ok(),
                None => Some(read.await),
            };
            let n = match n {
                Some(Ok(0)) => break scrub.between_records(),
                Some(Ok(n)) => n,
                Some(Err(_)) | None => break false,
            };
            out.clear();
            // A message head may have made it large: it is not kept for the whole relay.
            out.shrink_to(READ);
            if let Err(e) = scrub.feed(&buf[..n], &mut out) {
                // Not framing, or a message that could carry credentials unread: nothing of
                // it goes to the listener.
                debug!(error = %e, "net.tcp relay cut");
                break false;
            }
            if out.is_empty() {
                continue;
            }
            let write = timeout(write_limit, listener_wr.write_all(&out)).await;
            if !matches!(write, Ok(Ok(()))) {
                break false;
            }
        };
        if clean {
            let _ = timeout(close, listener_wr.shutdown()).await;
        }
        clean
    };
    let down = async {
        let _ = tokio::io::copy(&mut listener_rd, &mut sender_wr).await;
        let _ = timeout(close, sender_wr.shutdown()).await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        // A sender that went away abnormally ends the relay at once: waiting for the
        // listener's side would let it take the truncated stream for a finished one.
        clean = &mut up => if clean { let _ = timeout(close, &mut down).await; },
        () = &mut down => { let _ = timeout(close, &mut up).await; }
        () = shared.cancel.cancelled() => {}
    }
}

/// Why reading stopped.
enum Stop {
    /// The peer went away or was too slow; nothing more to say.
    Closed,
    /// The session failed and queued a Fault record to send.
    Fault,
    /// The bytes were not framing; a Fault record must still be sent.
    Garbage,
    /// The first message declares more than the gateway takes (MaxMessageSizeExceeded).
    TooLarge,
}

/// Reads from the sender until the session yields an event `wanted` accepts; other events
/// are dropped. Every byte read is kept in `raw` for the replay.
async fn read_until(
    tcp: &mut Conn,
    session: &mut Session,
    raw: &mut Vec<u8>,
    deadline: Instant,
    wanted: impl Fn(&Event) -> bool,
) -> Result<Event, Stop> {
    let mut buf = vec![0u8; READ];
    loop {
        while let Some(event) = session.poll_event() {
            if wanted(&event) {
                return Ok(event);
            }
        }
        let n = match timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return Err(Stop::Closed),
            Ok(Ok(n)) => n,
        };
        raw.extend_from_slice(&buf[..n]);
        if let Err(e) = session.handle_input(&buf[..n]) {
            debug!(error = %e, "net.tcp input refused");
            if e.fault().is_none() {
                // Bytes WCF has no fault for (not framing at all, records out of order):
                // still answered, with the name WCF's own sources give that case.
                return Err(Stop::Garbage);
            }
            return Err(Stop::Fault);
        }
    }
}

/// Reads the session's first message until its headers can be probed (see
/// `first_message`): what the probe read, `Ok(None)` when the session ends without a message
/// or the message cannot be read. At most the headers window of the message is read; the rest
/// streams to the listener later. A declared size over the first-message limit is
/// `Stop::TooLarge`.
async fn read_head(
    shared: &Shared,
    tcp: &mut Conn,
    raw: &mut Vec<u8>,
    preamble: &Preamble,
    deadline: Instant,
) -> Result<Option<Probe>, Stop> {
    let tuning = shared.tuning();
    let limits = &tuning.limits;
    let window = limits.max_nettcp_first_headers;
    // The session reported the preamble, so all of it is in `raw`.
    let (_, start) = first_message::read_preamble(raw, &framing_limits(shared))
        .ok()
        .flatten()
        .ok_or(Stop::Garbage)?;
    let mut want = first_message::first_probe(window);
    let mut buf = vec![0u8; READ];
    loop {
        match first_message::head(raw, start) {
            Head::NoMessage => return Ok(None),
            Head::Malformed => return Err(Stop::Garbage),
            Head::Envelope(e) if e.declared_over(limits.max_nettcp_first_envelope) => {
                return Err(Stop::TooLarge);
            }
            Head::Envelope(e) => {
                match first_message::probe_head(
                    raw,
                    &e,
                    preamble,
                    want,
                    window,
                    nbfx_limits(shared),
                    // A probe of the first message's own: the session's goes with its scrub.
                    &mut SessionDictionary::new(&nbfx_limits(shared)),
                ) {
                    Probed::Read(p) => return Ok(Some(*p)),
                    Probed::Unreadable => return Ok(None),
                    Probed::Wait(w) => want = w,
                }
            }
            Head::Incomplete => {}
        }
        let n = match timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return Err(Stop::Closed),
            Ok(Ok(n)) => n,
        };
        raw.extend_from_slice(&buf[..n]);
    }
}

/// How far the gateway reads into a sender's session to take its credentials out.
pub(crate) fn scrub_limits(shared: &Shared) -> ScrubLimits {
    ScrubLimits::of(&shared.tuning().limits)
}

/// The framing limits of a sender's session as the gateway reads it.
fn framing_limits(shared: &Shared) -> ferry_nmf::Limits {
    scrub_limits(shared).framing
}

/// Sends what the session queued (PreambleAck, a Fault, End).
async fn flush(shared: &Shared, tcp: &mut Conn, session: &mut Session) -> std::io::Result<()> {
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    if out.is_empty() {
        return Ok(());
    }
    timeout(shared.tuning().timeouts.handshake, tcp.write_all(&out))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Sends a queued Fault record, then closes the way WCF does (see [`linger_close`]).
async fn flush_and_close(shared: &Shared, mut tcp: Conn, session: &mut Session) {
    if flush(shared, &mut tcp, session).await.is_err() {
        return;
    }
    linger_close(shared, tcp).await;
}

/// At most this much input is drained while closing; a sender that keeps sending past it
/// is cut off (a reset then costs it only its own bytes).
const LINGER_MAX_DRAIN: usize = 64 * 1024;

/// Closes the way WCF does: stop sending, drain input a little while (up to the close
/// timeout and [`LINGER_MAX_DRAIN`] bytes), close. Closing with input unread would send a
/// reset, which can destroy what was just sent before the peer reads it.
async fn linger_close(shared: &Shared, mut tcp: Conn) {
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = timeout(shared.tuning().timeouts.close, async {
        let mut drained = 0;
        while drained <= LINGER_MAX_DRAIN {
            match tcp.read(&mut sink).await {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    })
    .await;
}

/// Refuses with a framing fault.
async fn refuse(shared: &Shared, tcp: Conn, session: &mut Session, fault: FaultCode) {
    debug!(?fault, "net.tcp session refused");
    if session.reject(fault.clone()).is_err() {
        // Past the preamble (already acked): a Fault record may still replace the next
        // message (MC-NMF 2.2.3.7), which is what WCF clients expect.
        return send_fault(shared, tcp, session, &fault.uri()).await;
    }
    flush_and_close(shared, tcp, session).await;
}

/// Writes a Fault record whatever state the session is in, then closes.
async fn send_fault(shared: &Shared, mut tcp: Conn, session: &mut Session, uri: &str) {
    let mut record = Vec::new();
    ferry_nmf::Record::Fault(uri.into()).encode(&mut record);
    let _ = timeout(shared.tuning().timeouts.handshake, tcp.write_all(&record)).await;
    flush_and_close(shared, tcp, session).await;
}

/// Answers the first request with a SOAP fault explaining the refusal, then ends the session.
async fn refuse_with_soap_fault(
    shared: &Shared,
    mut tcp: Conn,
    session: &mut Session,
    preamble: &Preamble,
    request: Option<Probe>,
    error: &AuthError,
) {
    let Some(request) = request else {
        // Nothing to answer (no message, or one we cannot read): a framing fault.
        return refuse(shared, tcp, session, FaultCode::EndpointNotFound).await;
    };
    let mut fault = Fault::sender(request.version, format!("{}: {error}", error.status()));
    fault.subcodes.push(QName::new(
        "rel",
        RELAY_CONNECT_NS,
        if error.status() == 403 {
            "AuthorizationFailed"
        } else {
            "AuthenticationFailed"
        },
    ));
    let mut reply = Envelope::new(request.version, request.addressing);
    reply.headers.action = Some(WSA10_FAULT_ACTION.into());
    reply.headers.relates_to = request.message_id;
    reply.body = Body::Fault(Box::new(fault));
    if let Some(bytes) = encode_envelope(preamble, &reply, shared)
        && session.send_envelope(&bytes).is_ok()
    {
        let _ = session.close();
        if flush(shared, &mut tcp, session).await.is_err() {
            return;
        }
        return flush_and_close(shared, tcp, session).await;
    }
    refuse(shared, tcp, session, FaultCode::EndpointNotFound).await;
}

fn nbfx_limits(shared: &Shared) -> ferry_nbfx::Limits {
    scrub_limits(shared).nbfx
}

/// Encodes a message of ours in the session's encoding (our first, so a fresh dictionary).
fn encode_envelope(preamble: &Preamble, envelope: &Envelope, shared: &Shared) -> Option<Vec<u8>> {
    match preamble.encoding.message_format()? {
        MessageFormat::BinarySession => ferry_soap::BinarySession::new(nbfx_limits(shared))
            .encode(envelope)
            .ok(),
        MessageFormat::Binary => envelope.encode_binary().ok(),
        MessageFormat::Text => Some(envelope.encode_text().into_bytes()),
    }
}

/// The hybrid connection path a Via names: `net.tcp://host[:port]/a/b?query` → `a/b`.
pub(crate) fn via_path(via: &str) -> Option<String> {
    let (_, rest) = via.split_once("://")?;
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = address::decode_path(path).ok()?;
    let path = path.trim_matches('/').to_owned();
    (!path.is_empty()).then_some(path)
}

fn via_token(via: &str) -> Option<String> {
    let query = via.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    address::HcQuery::parse(query).ok()?.token
}

/// What a net.tcp sender's listener is told: the path, where the sender is, and that it
/// came in on the net.tcp port.
pub(crate) fn intent(path: &str, remote: RemoteEndpoint) -> Intent<'_> {
    let mut connect_headers = Headers::new();
    connect_headers.insert("Ferry-Ingress".into(), "net.tcp".into());
    Intent {
        path,
        app_query: "",
        id: None,
        connect_headers,
        remote: Some(remote),
    }
}

/// A framing Fault record.
fn fault_record(code: FaultCode) -> Vec<u8> {
    let mut record = Vec::new();
    ferry_nmf::Record::Fault(code.uri().into()).encode(&mut record);
    record
}

/// Replays the sender's bytes into the listener's stream and reads the listener's answer to
/// the preamble. `Ok(rest)`: the listener acked (its PreambleAck is dropped: the sender had
/// ours) and `rest` is what followed it; `Err(reply)`: it refused, `reply` is its answer.
async fn replay(
    shared: &Shared,
    ws: &mut WsStream<Conn>,
    raw: &[u8],
    acked: bool,
) -> Result<Vec<u8>, Vec<u8>> {
    let io = async {
        ws.write_all(raw).await?;
        ws.flush().await?;
        if !acked {
            return Ok(Ok(Vec::new()));
        }
        let mut buf = vec![0u8; 4096];
        let n = ws.read(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(match buf.first() {
            Some(&PREAMBLE_ACK) => Ok(buf.split_off(1)),
            // The listener closed without a word: the sender still gets a fault.
            None => Err(fault_record(FaultCode::EndpointNotFound)),
            Some(_) => Err(buf),
        })
    };
    match timeout(shared.tuning().timeouts.rendezvous, io).await {
        Ok(Ok(answer)) => answer,
        _ => Err(fault_record(FaultCode::EndpointNotFound)),
    }
}

/// A fan-out sender's connection and what was read of it.
struct Sender {
    tcp: Conn,
    session: Session,
    /// Takes the rest of the session's credentials out.
    scrub: Scrub,
    /// What each listener gets first: the session so far without credentials.
    opening: Vec<u8>,
    permit: Slot,
}

/// Opens one fan-out listener's rendezvous and replays the session so far into it; `None`
/// if it does not accept in time or refuses the preamble.
async fn open_fan_out(
    shared: &Arc<Shared>,
    listener: &ListenerHandle,
    path: &str,
    remote: RemoteEndpoint,
    raw: &[u8],
    acked: bool,
) -> Option<(WsStream<Conn>, Slot)> {
    let offer = shared.pairing.offer(listener, intent(path, remote)).ok()?;
    let paired = offer.wait().await.ok()?;
    let (mut ws, permit) = paired.into_stream(shared.tuning().limits.max_message);
    replay(shared, &mut ws, raw, acked).await.ok()?;
    Some((ws, permit))
}

/// One session delivered to every listener on the path (NetEvent multicast).
async fn fan_out(
    shared: Arc<Shared>,
    sender: Sender,
    settings: &PathSettings,
    remote: RemoteEndpoint,
    acked: bool,
) {
    let path = settings.name.as_str();
    let Sender {
        mut tcp,
        mut session,
        mut scrub,
        opening,
        permit,
    } = sender;
    let listeners = shared.pairing.listeners(settings);
    // Every listener is asked at once, so slow ones cost the sender the slowest one's accept
    // latency rather than the sum. Each waits up to the rendezvous timeout; one that does not
    // open its rendezvous or refuses the preamble is left out. The core gives at most
    // MAX_LISTENERS_PER_PATH listeners, which bounds the attempts in flight.
    let attempts: Vec<_> = listeners
        .iter()
        .map(|listener| open_fan_out(&shared, listener, path, remote.clone(), &opening, acked))
        .collect();
    // Raced against shutdown, which would otherwise wait for the slowest listener (up to the
    // rendezvous timeout). Dropping the attempts withdraws their rendezvous keys and closes
    // any rendezvous already opened; the sender is told the endpoint is going away.
    let opened: Vec<_> = tokio::select! {
        opened = futures_util::future::join_all(attempts) => opened,
        () = shared.cancel.cancelled() => {
            debug!(path, "net.tcp fan-out abandoned at shutdown");
            return refuse(&shared, tcp, &mut session, FaultCode::EndpointUnavailable).await;
        }
    }
    .into_iter()
    .flatten()
    .collect();
    let mut queues = Vec::with_capacity(opened.len());
    for (ws, listener_permit) in opened {
        let (tx, mut rx) = mpsc::channel::<Bytes>(FAN_OUT_QUEUE);
        let task_shared = shared.clone();
        shared.tracker.spawn(async move {
            let _permit = listener_permit;
            let (mut reader, mut writer) = tokio::io::split(ws);
            // What the listener says (End, nothing else for one-way messages) is read and
            // dropped; bytes from the sender go out in order.
            let drain = async {
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let close = task_shared.tuning().timeouts.close;
            let pump = async {
                while let Some(chunk) = rx.recv().await {
                    if writer.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = timeout(close, writer.shutdown()).await;
            };
            // Once either side is done the other has the close timeout to finish.
            tokio::pin!(pump, drain);
            tokio::select! {
                () = &mut pump => { let _ = timeout(close, &mut drain).await; }
                () = &mut drain => { let _ = timeout(close, &mut pump).await; }
                () = task_shared.cancel.cancelled() => {}
            }
        });
        queues.push(tx);
    }
    if queues.is_empty() {
        let (fault, status) = if shared.cancel.is_cancelled() {
            (FaultCode::EndpointUnavailable, 503)
        } else {
            (FaultCode::EndpointNotFound, 404)
        };
        shared
            .metrics
            .connection(metrics::Role::Sender, path, status);
        return refuse(&shared, tcp, &mut session, fault).await;
    }
    info!(path, listeners = queues.len(), "net.tcp fan-out started");
    shared.metrics.connection(metrics::Role::Sender, path, 101);
    let _held = (permit, shared.metrics.relaying(path));
    let close = shared.tuning().timeouts.close;
    // The sender may have sent End with its first message: it was in `raw`, so every
    // listener has it already; answer it.
    if scrub.ended() {
        let _ = timeout(close, tcp.write_all(&[END])).await;
        drop(queues);
        let _ = timeout(close, tcp.shutdown()).await;
        return;
    }
    let mut buf = vec![0u8; READ];
    let idle = shared.tuning().timeouts.idle;
    loop {
        let read = async {
            match idle {
                Some(idle) => match timeout(idle, tcp.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => 0,
                },
                None => tcp.read(&mut buf).await.unwrap_or(0),
            }
        };
        // Shutdown ends the session whether or not an idle timeout is set: the listeners'
        // tasks stop at once, and the sender would otherwise be held until it next sends.
        let n = tokio::select! {
            n = read => n,
            () = shared.cancel.cancelled() => 0,
        };
        if n == 0 {
            break;
        }
        // Nothing after the session's End (or after bytes that are not framing, or a message
        // that cannot be read for credentials) is relayed.
        let mut out = Vec::with_capacity(n);
        let (n, last) = match scrub.feed(&buf[..n], &mut out) {
            Ok(None) => (n, false),
            Ok(Some(end)) => (end, true),
            Err(e) => {
                debug!(path, error = %e, "net.tcp fan-out session cut");
                out.clear();
                (0, true)
            }
        };
        let chunk = Bytes::from(out);
        // The sender is slowed to the listeners' pace; one that stays full for the close
        // timeout is dropped, and the others go on.
        let mut kept = Vec::with_capacity(queues.len());
        for q in queues {
            if matches!(timeout(close, q.send(chunk.clone())).await, Ok(Ok(()))) {
                kept.push(q);
            }
        }
        queues = kept;
        if session.handle_input(&buf[..n]).is_err() {
            let _ = flush(&shared, &mut tcp, &mut session).await;
            break;
        }
        let mut ended = false;
        while let Some(event) = session.poll_event() {
            ended |= matches!(event, Event::End);
        }
        if ended {
            let _ = session.close();
            let _ = flush(&shared, &mut tcp, &mut session).await;
            break;
        }
        if last {
            break;
        }
        if queues.is_empty() {
            return refuse(&shared, tcp, &mut session, FaultCode::EndpointUnavailable).await;
        }
    }
    drop(queues);
    let _ = tcp.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vias_name_paths_hosts_and_tokens() {
        let via = "net.tcp://gw.example:9350/erp/orders?sb-hc-token=SharedAccessSignature%20sr%3Dx";
        assert_eq!(via_path(via).as_deref(), Some("erp/orders"));
        assert_eq!(
            via_token(via).as_deref(),
            Some("SharedAccessSignature sr=x")
        );
        assert_eq!(via_path("sb://ns/calc/").as_deref(), Some("calc"));
        assert_eq!(via_path("net.tcp://host:1/"), None);
        assert_eq!(via_path("not a uri"), None);
    }
}
