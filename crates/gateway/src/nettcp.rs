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
//! The listener sees the client's byte stream exactly as sent (its Via, its session
//! dictionary), so any NMF server works behind it: the Rust host of `ferry-wcf`, or a legacy
//! service through `ferry listen --wcf-to`.
//!
//! Refusals are what a WCF client understands: an unknown path or no listener is the
//! `EndpointNotFound` framing fault; a malformed preamble gets its own fault
//! (`UnsupportedVersion`, `UnsupportedMode`, `ViaTooLong`, …); an upgrade (transport
//! security inside net.tcp) is refused with `UpgradeInvalid`; a missing or wrong token is a
//! SOAP fault answering the first request (so the client's call fails with a
//! `FaultException` naming the reason), then End. A refused client is never met with silence.
//!
//! Paths configured with `fan_out` (NetEventRelayBinding's multicast) deliver the session's
//! one-way messages to every listener connected when it starts: each gets the same byte
//! stream; a listener that cannot keep up is dropped, the others carry on.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_hc::Command;
use ferry_hc::address::{self, Action};
use ferry_hc::auth::{AuthError, Right};
use ferry_hc::command::{Accept, Headers, RemoteEndpoint};
use ferry_net::conn::Conn;
use ferry_net::stream::WsStream;
use ferry_nmf::{Event, FaultCode, KnownEncoding, Mode, Preamble, Session};
use ferry_soap::{Body, Envelope, Fault, QName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info};

use crate::front::{Shared, now_unix};
use crate::registry::{ListenerHandle, Pending, PickError, Rendezvous, new_id, new_key};

/// The framing `PreambleAck` record.
const PREAMBLE_ACK: u8 = 0x0B;
/// WS-Addressing 1.0's action for faults.
const FAULT_ACTION: &str = "http://www.w3.org/2005/08/addressing/soap/fault";
/// The relay's namespace, for the subcode of token faults.
const RELAY_NS: &str = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect";
/// Chunks queued for one fan-out listener before it counts as too slow.
const FAN_OUT_QUEUE: usize = 64;
/// The fault URI for input that is not a valid record sequence.
const INVALID_RECORD_SEQUENCE: &str =
    "http://schemas.microsoft.com/ws/2006/05/framing/faults/InvalidRecordSequence";
/// Read size from the sender.
const READ: usize = 16 * 1024;

/// Serves one net.tcp connection.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let limits = ferry_nmf::Limits {
        max_envelope_bytes: shared.config.limits.max_nettcp_first_envelope,
        ..ferry_nmf::Limits::default()
    };
    let mut session = Session::server(limits);
    let mut raw = Vec::new();
    let deadline = Instant::now() + shared.config.timeouts.handshake;

    // 1. The preamble.
    let preamble = match read_until(&mut tcp, &mut session, &mut raw, deadline, |e| {
        matches!(e, Event::PreambleReceived(_) | Event::UpgradeRequested(_))
    })
    .await
    {
        Ok(Event::PreambleReceived(p)) => p,
        Ok(Event::UpgradeRequested(protocol)) => {
            debug!(%peer, %protocol, "net.tcp upgrade refused");
            return refuse(&shared, tcp, &mut session, FaultCode::UpgradeInvalid).await;
        }
        Ok(_) | Err(Stop::Closed) => return,
        Err(Stop::Fault) => return flush_and_close(&shared, tcp, &mut session).await,
        Err(Stop::Garbage) => {
            return send_fault(&shared, tcp, &mut session, INVALID_RECORD_SEQUENCE).await;
        }
    };
    if matches!(preamble.mode, Mode::SingletonSized) {
        // Raw octets to the end of the stream: nothing to authenticate with but the Via.
        debug!(%peer, "singleton-sized net.tcp session");
    }
    let Some(path) = via_path(&preamble.via) else {
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
    };
    let Some(settings) = shared.registry.sender_path(&path) else {
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
    };

    // 2. Accept the preamble (PreambleAck) so the client sends its first message.
    if session.accept().is_err() {
        return flush_and_close(&shared, tcp, &mut session).await;
    }
    if flush(&shared, &mut tcp, &mut session).await.is_err() {
        return;
    }

    // 3. Authenticate: the Via's sb-hc-token, else the first message's RelayAccessToken.
    let via_token = via_token(&preamble.via);
    let via_host = via_host(&preamble.via);
    let mut first = None;
    if !settings.anonymous_senders && via_token.is_none() {
        match read_until(&mut tcp, &mut session, &mut raw, deadline, |e| {
            matches!(e, Event::Envelope(_) | Event::End)
        })
        .await
        {
            Ok(Event::Envelope(payload)) => first = Some(payload),
            Ok(_) | Err(Stop::Closed) => return,
            Err(Stop::Fault) => return flush_and_close(&shared, tcp, &mut session).await,
            Err(Stop::Garbage) => {
                return send_fault(&shared, tcp, &mut session, INVALID_RECORD_SEQUENCE).await;
            }
        }
    }
    if !settings.anonymous_senders {
        let envelope = first
            .as_deref()
            .and_then(|p| decode_envelope(&preamble, p, &shared));
        let token = via_token.or_else(|| {
            envelope
                .as_ref()
                .and_then(|e| e.headers.relay_token.as_ref())
                .map(|t| t.token.clone())
        });
        let hosts = [
            shared.config.namespace.as_str(),
            via_host.as_deref().unwrap_or(""),
        ];
        let verdict = token.as_deref().ok_or(AuthError::Missing).and_then(|t| {
            settings
                .rules
                .authorize_any_host(t, &hosts, &path, Right::Send, now_unix())
        });
        if let Err(e) = verdict {
            info!(%peer, %path, status = e.status(), "net.tcp sender refused");
            return refuse_with_soap_fault(&shared, tcp, &mut session, &preamble, envelope, &e)
                .await;
        }
    }

    // 4. Pair with the listener(s) and relay.
    let remote = RemoteEndpoint {
        address: peer.ip().to_string(),
        port: peer.port(),
    };
    if shared.registry.fan_out(&settings.name) {
        return fan_out(shared, tcp, session, raw, &settings.name, remote, permit).await;
    }
    let listener = match shared.registry.pick(&settings.name, None, &[]) {
        Ok(l) => l,
        Err(PickError::NoListener | PickError::NoneMatch) => {
            return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
        }
    };
    let Some((mut ws, listener_permit)) =
        rendezvous(&shared, &listener, &settings.name, remote).await
    else {
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
    };
    let acked = !matches!(preamble.mode, Mode::Simplex | Mode::SingletonSized);
    match replay(&shared, &mut ws, &raw, acked).await {
        Ok(rest) => {
            if !rest.is_empty() && tcp.write_all(&rest).await.is_err() {
                return;
            }
        }
        Err(reply) => {
            // The listener refused the preamble (a Fault record): pass its answer on.
            let _ = timeout(shared.config.timeouts.close, tcp.write_all(&reply)).await;
            return;
        }
    }
    info!(%peer, path = %settings.name, listener = %listener.id, "net.tcp relay started");
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let _permits = (permit, listener_permit);
        let splice = tokio::io::copy_bidirectional(&mut tcp, &mut ws);
        tokio::select! {
            r = splice => debug!(?r, "net.tcp relay ended"),
            () = task_shared.cancel.cancelled() => {}
        }
    });
}

/// Why reading stopped.
enum Stop {
    /// The peer went away or was too slow; nothing more to say.
    Closed,
    /// The session failed and queued a Fault record to send.
    Fault,
    /// The bytes were not framing; a Fault record must still be sent.
    Garbage,
}

/// Reads from the sender until the session yields an event `wanted` accepts; other events
/// are dropped. Every byte read is kept in `raw` for the replay.
async fn read_until(
    tcp: &mut TcpStream,
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

/// Sends what the session queued (PreambleAck, a Fault, End).
async fn flush(shared: &Shared, tcp: &mut TcpStream, session: &mut Session) -> std::io::Result<()> {
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    if out.is_empty() {
        return Ok(());
    }
    timeout(shared.config.timeouts.handshake, tcp.write_all(&out))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Sends a queued Fault record, then closes the way WCF does: stop sending, drain input a
/// little while, close.
async fn flush_and_close(shared: &Shared, mut tcp: TcpStream, session: &mut Session) {
    if flush(shared, &mut tcp, session).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = timeout(shared.config.timeouts.close, async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Refuses with a framing fault.
async fn refuse(shared: &Shared, tcp: TcpStream, session: &mut Session, fault: FaultCode) {
    debug!(?fault, "net.tcp session refused");
    if session.reject(fault.clone()).is_err() {
        // Past the preamble (already acked): a Fault record may still replace the next
        // message (MC-NMF 2.2.3.7), which is what WCF clients expect.
        return send_fault(shared, tcp, session, &fault.uri()).await;
    }
    flush_and_close(shared, tcp, session).await;
}

/// Writes a Fault record whatever state the session is in, then closes.
async fn send_fault(shared: &Shared, mut tcp: TcpStream, session: &mut Session, uri: &str) {
    let mut record = Vec::new();
    ferry_nmf::Record::Fault(uri.into()).encode(&mut record);
    let _ = timeout(shared.config.timeouts.handshake, tcp.write_all(&record)).await;
    flush_and_close(shared, tcp, session).await;
}

/// Answers the first request with a SOAP fault explaining the refusal, then ends the session.
async fn refuse_with_soap_fault(
    shared: &Shared,
    mut tcp: TcpStream,
    session: &mut Session,
    preamble: &Preamble,
    request: Option<Envelope>,
    error: &AuthError,
) {
    let Some(request) = request else {
        // Nothing to answer (no message, or one we cannot read): a framing fault.
        return refuse(shared, tcp, session, FaultCode::EndpointNotFound).await;
    };
    let mut fault = Fault::sender(request.version, format!("{}: {error}", error.status()));
    fault.subcodes.push(QName::new(
        "rel",
        RELAY_NS,
        if error.status() == 403 {
            "AuthorizationFailed"
        } else {
            "AuthenticationFailed"
        },
    ));
    let mut reply = Envelope::new(request.version, request.addressing);
    reply.headers.action = Some(FAULT_ACTION.into());
    reply.headers.relates_to = request.headers.message_id.clone();
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
    ferry_nbfx::Limits {
        max_document_bytes: shared.config.limits.max_nettcp_first_envelope,
        ..ferry_nbfx::Limits::default()
    }
}

/// Decodes a message in the session's encoding (the first one, so a fresh session
/// dictionary is right).
fn decode_envelope(preamble: &Preamble, payload: &[u8], shared: &Shared) -> Option<Envelope> {
    match known(preamble)? {
        KnownEncoding::BinarySession => ferry_soap::BinarySession::new(nbfx_limits(shared))
            .decode(payload)
            .ok(),
        KnownEncoding::Binary => Envelope::decode_binary(payload, None, nbfx_limits(shared)).ok(),
        KnownEncoding::Soap11Utf8 | KnownEncoding::Soap12Utf8 => {
            Envelope::decode_text(std::str::from_utf8(payload).ok()?).ok()
        }
        _ => None,
    }
}

/// Encodes a message of ours in the session's encoding (our first, so a fresh dictionary).
fn encode_envelope(preamble: &Preamble, envelope: &Envelope, shared: &Shared) -> Option<Vec<u8>> {
    match known(preamble)? {
        KnownEncoding::BinarySession => ferry_soap::BinarySession::new(nbfx_limits(shared))
            .encode(envelope)
            .ok(),
        KnownEncoding::Binary => envelope.encode_binary().ok(),
        KnownEncoding::Soap11Utf8 | KnownEncoding::Soap12Utf8 => {
            Some(envelope.encode_text().into_bytes())
        }
        _ => None,
    }
}

fn known(preamble: &Preamble) -> Option<KnownEncoding> {
    match &preamble.encoding {
        ferry_nmf::Encoding::Known(k) => Some(*k),
        ferry_nmf::Encoding::Extensible(_) => None,
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

pub(crate) fn via_host(via: &str) -> Option<String> {
    let (_, rest) = via.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    Some(host.trim_matches(['[', ']']).to_owned())
}

fn via_token(via: &str) -> Option<String> {
    let query = via.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    address::HcQuery::parse(query).ok()?.token
}

/// Asks `listener` to open a rendezvous for a net.tcp sender; the listener's side of it.
pub(crate) async fn rendezvous(
    shared: &Arc<Shared>,
    listener: &ListenerHandle,
    path: &str,
    remote: RemoteEndpoint,
) -> Option<(WsStream<Conn>, OwnedSemaphorePermit)> {
    let id = new_id();
    let key = new_key();
    let mut address = address::hc_url(&listener.base, path, "", Action::Accept, Some(&id));
    address.push_str("&sb-hc-rendezvous=");
    address.push_str(&key);
    let (reply_tx, reply_rx) = oneshot::channel();
    shared.registry.insert_pending(
        key.clone(),
        Pending {
            id: id.clone(),
            reply: reply_tx,
        },
    );
    let _pending = PendingKey {
        shared: shared.as_ref(),
        key,
    };
    let mut connect_headers = Headers::new();
    connect_headers.insert("Ferry-Ingress".into(), "net.tcp".into());
    let accept = Command::Accept(Accept {
        address,
        id,
        connect_headers,
        remote_endpoint: Some(remote),
    });
    listener.commands.try_send(accept.into()).ok()?;
    match timeout(shared.config.timeouts.rendezvous, reply_rx).await {
        Ok(Ok(Rendezvous::Accepted {
            conn, pre, permit, ..
        })) => {
            let mut ws = WsStream::server(conn, &pre);
            ws.set_max_message_size(
                usize::try_from(shared.config.limits.max_message).unwrap_or(usize::MAX),
            );
            Some((ws, permit))
        }
        _ => None,
    }
}

/// Removes a rendezvous key nobody took.
struct PendingKey<'a> {
    shared: &'a Shared,
    key: String,
}

impl Drop for PendingKey<'_> {
    fn drop(&mut self) {
        drop(self.shared.registry.take_pending(&self.key));
    }
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
            _ => Err(buf),
        })
    };
    match timeout(shared.config.timeouts.rendezvous, io).await {
        Ok(Ok(answer)) => answer,
        _ => {
            let mut fault = Vec::new();
            ferry_nmf::Record::Fault(FaultCode::EndpointNotFound.uri().into()).encode(&mut fault);
            Err(fault)
        }
    }
}

/// One session delivered to every listener on the path (NetEvent multicast).
async fn fan_out(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    mut session: Session,
    raw: Vec<u8>,
    path: &str,
    remote: RemoteEndpoint,
    permit: OwnedSemaphorePermit,
) {
    let listeners = shared.registry.all(path);
    let mut queues = Vec::new();
    for listener in &listeners {
        let Some((mut ws, listener_permit)) =
            rendezvous(&shared, listener, path, remote.clone()).await
        else {
            continue;
        };
        if replay(&shared, &mut ws, &raw, true).await.is_err() {
            continue;
        }
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
            let pump = async {
                while let Some(chunk) = rx.recv().await {
                    if writer.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = writer.shutdown().await;
            };
            tokio::select! {
                () = async { tokio::join!(pump, drain); } => {}
                () = task_shared.cancel.cancelled() => {}
            }
        });
        queues.push(tx);
    }
    if queues.is_empty() {
        return refuse(&shared, tcp, &mut session, FaultCode::EndpointNotFound).await;
    }
    info!(path, listeners = queues.len(), "net.tcp fan-out started");
    let _permit = permit;
    let mut buf = vec![0u8; READ];
    let idle = shared.config.timeouts.idle;
    loop {
        let read = tcp.read(&mut buf);
        let n = match idle {
            Some(idle) => match timeout(idle, read).await {
                Ok(Ok(n)) => n,
                _ => 0,
            },
            None => tokio::select! {
                r = read => r.unwrap_or(0),
                () = shared.cancel.cancelled() => 0,
            },
        };
        if n == 0 {
            break;
        }
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        // A listener that cannot keep up is dropped; the others go on.
        queues.retain(|q| q.try_send(chunk.clone()).is_ok());
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
        assert_eq!(via_host(via).as_deref(), Some("gw.example"));
        assert_eq!(
            via_token(via).as_deref(),
            Some("SharedAccessSignature sr=x")
        );
        assert_eq!(via_path("sb://ns/calc/").as_deref(), Some("calc"));
        assert_eq!(via_path("net.tcp://host:1/"), None);
        assert_eq!(via_path("not a uri"), None);
        assert_eq!(via_host("net.tcp://[::1]:9/x").as_deref(), Some("::1"));
    }
}
