//! The NetTcpRelayBinding front end (relayed mode), on its own port: the handshake the relay
//! binding's client library performs before its net.tcp session (reconstructed from the
//! client library's behaviour; no public specification exists):
//!
//! ```text
//!  client ── i32le len + "connect" ── i32le len + "sb://ns/path" ─────────────► gateway
//!         ── 1 byte: 0x01 → TLS handshake (gateway certificate), 0x00 → plain ─►
//!         ── i32le len + binary SOAP 1.2 (msbin1, no session dictionary):
//!            Action …/connect/RelayedConnect, RelayAccessToken header,
//!            body <Connect><Uri>sb://…</Uri></Connect> ─────────────────────────►
//!         ◄─ i32le len + reply: …/connect/RelayedConnectReply, or a SOAP fault ──
//!         ══ then the client's MC-NMF session, to a listener on the path (which acks its
//!            preamble itself), without credentials (see `scrub`)
//! ```
//!
//! Every step has a size limit and the handshake timeout; a refusal (unknown path, no
//! listener, missing or wrong token, malformed handshake) is a SOAP fault in the reply
//! framing whenever the client got as far as sending its message, so it fails with a reason.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_hc::command::RemoteEndpoint;
use ferry_net::conn::Conn;
use ferry_soap::relay::{RELAY_CONNECT_NS, RELAYED_CONNECT_ACTION, RELAYED_CONNECT_REPLY_ACTION};
use ferry_soap::relayed::{
    CONNECT_WORD, MAX_MESSAGE, MAX_URI, MAX_WORD, PREFIX, RecordError, Security, encode_record,
    record_len,
};
use ferry_soap::version::WSA10_FAULT_ACTION;
use ferry_soap::{AddressingVersion, Body, Envelope, Fault, Probe, QName, SoapVersion};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::admission::Slot;
use crate::metrics;
use crate::nettcp::{intent, scrub_limits, splice, via_path};
use crate::pairing::{Choice, Destination, PairError};
use crate::scrub::Scrub;
use crate::state::Shared;

/// A handshake that cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("connection closed or timed out during the relay handshake")]
    Io,
    #[error("relay handshake: {0}")]
    Malformed(&'static str),
    #[error("relay handshake: {0}")]
    Record(#[from] RecordError),
}

/// Serves one NetTcpRelayBinding connection.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    tls_required: bool,
    permit: Slot,
) {
    let deadline = Instant::now() + shared.tuning().timeouts.handshake;
    let mut tcp = tcp;
    let uri = match preamble(&mut tcp, deadline).await {
        Ok(uri) => uri,
        Err(e) => return debug!(%peer, error = %e, "relayed handshake refused"),
    };
    let mut flag = [0u8; 1];
    if !matches!(
        timeout_at(deadline, tcp.read_exact(&mut flag)).await,
        Ok(Ok(_))
    ) {
        return;
    }
    let mut conn = match (Security::from_byte(flag[0]), tls) {
        (Some(Security::None), _) if tls_required => {
            // The client sends its message (and token) next, whatever the answer: read it,
            // unlooked at, so the refusal is not lost to a reset, and say why.
            let mut conn = Conn::from(tcp);
            let _ = frame(&mut conn, MAX_MESSAGE, deadline).await;
            let reason = "this port requires TLS (the relay binding's transport security)";
            return fail(&shared, &mut conn, None, "InvalidRequest", reason).await;
        }
        (Some(Security::None), _) => Conn::from(tcp),
        (Some(Security::Tls), Some(acceptor)) => {
            match timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Conn::from(tls),
                _ => return debug!(%peer, "relayed handshake: tls failed"),
            }
        }
        (Some(Security::Tls), None) => {
            return debug!(%peer, "relayed handshake: tls asked for, none configured");
        }
        (None, _) => return debug!(%peer, flag = flag[0], "relayed handshake: bad ssl flag"),
    };
    let message = match frame(&mut conn, MAX_MESSAGE, deadline).await {
        Ok(m) => m,
        Err(e) => return debug!(%peer, error = %e, "relayed handshake refused"),
    };
    let limits = ferry_nbfx::Limits {
        max_document_bytes: MAX_MESSAGE,
        ..ferry_nbfx::Limits::default()
    };
    // Read as a stream up to the Body: nothing the unauthenticated sender describes is built.
    let request = match Probe::binary(&message, None, limits) {
        Ok(env) if env.action.as_deref() == Some(RELAYED_CONNECT_ACTION) => env,
        Ok(env) => {
            let reason = "the first message must be RelayedConnect";
            return fail(&shared, &mut conn, Some(&env), "InvalidRequest", reason).await;
        }
        Err(e) => {
            debug!(%peer, error = %e, "relayed handshake: message does not decode");
            let reason = "the RelayedConnect message could not be read";
            return fail(&shared, &mut conn, None, "InvalidRequest", reason).await;
        }
    };
    let Some(path) = via_path(&uri) else {
        return fail(
            &shared,
            &mut conn,
            Some(&request),
            "EndpointNotFound",
            "no path in the URI",
        )
        .await;
    };
    // In dynamic mode a path exists only while listened on: a sender naming one that does not
    // exist is held to the namespace rules and told only once its token passes (as the other
    // front ends do), so without a valid token it cannot probe which paths exist.
    let (settings, exists) = match shared.pairing.destination(&path) {
        Destination::Path(settings) => (settings, true),
        Destination::Unlistened(namespace) => (namespace, false),
        Destination::Unknown => {
            let reason = format!("no hybrid connection {path}");
            return fail(
                &shared,
                &mut conn,
                Some(&request),
                "EndpointNotFound",
                &reason,
            )
            .await;
        }
    };
    if crate::auth::path_admits(&settings, peer).is_err() {
        info!(%peer, %path, "relayed sender refused by the path's IP rules");
        let reason = "403: the client's address may not reach this path";
        return fail(
            &shared,
            &mut conn,
            Some(&request),
            "AuthorizationFailed",
            reason,
        )
        .await;
    }
    if !settings.anonymous_senders {
        let token = request.relay_token.as_ref().map(|t| t.token.as_str());
        if let Err(e) = shared.authorize_sender(peer, &settings, token, &path) {
            info!(%peer, %path, status = e.status(), "relayed sender refused");
            let subcode = if e.status() == 403 {
                "AuthorizationFailed"
            } else {
                "AuthenticationFailed"
            };
            let reason = format!("{}: {e}", e.status());
            return fail(&shared, &mut conn, Some(&request), subcode, &reason).await;
        }
    }
    // Authenticated, a missing dynamic path is answered as a path with no listener.
    let remote = RemoteEndpoint {
        address: peer.ip().to_string(),
        port: peer.port(),
    };
    let paired = if exists {
        let intent = intent(&settings.name, remote);
        shared.pairing.pair(&settings, &Choice::any(), intent).await
    } else {
        Err(PairError::NoListener)
    };
    let (listener, ws, listener_permit) = match paired {
        Ok((listener, paired)) => {
            let (ws, permit) = paired.into_stream(shared.tuning().limits.max_message);
            (listener, ws, permit)
        }
        Err(e) => {
            let reason = match e {
                PairError::NoListener | PairError::NoneMatch => "no listener is connected",
                _ => "the listener did not accept",
            };
            shared
                .metrics
                .connection(metrics::Role::Sender, &settings.name, 404);
            return fail(
                &shared,
                &mut conn,
                Some(&request),
                "EndpointNotFound",
                reason,
            )
            .await;
        }
    };
    let mut reply = Envelope::new(request.version, request.addressing);
    reply.headers.action = Some(RELAYED_CONNECT_REPLY_ACTION.into());
    reply.headers.relates_to = request.message_id.clone();
    if write_message(&shared, &mut conn, &reply).await.is_err() {
        return;
    }
    info!(%peer, path = %settings.name, listener = %listener.id, "relayed net.tcp started");
    shared
        .metrics
        .connection(metrics::Role::Sender, &settings.name, 101);
    let relaying = shared.metrics.relaying(&settings.name);
    let (to_listener, to_sender) = shared.metrics.bytes(&settings.name);
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let _held = (permit, listener_permit, relaying);
        let scrub = Scrub::whole_session(scrub_limits(&task_shared));
        let conn = metrics::Metered::new(conn, to_listener, to_sender);
        splice(&task_shared, conn, ws, scrub).await;
        debug!("relayed net.tcp ended");
    });
}

/// Reads the "connect" word and the URI.
pub(crate) async fn preamble<S: AsyncRead + Unpin>(
    tcp: &mut S,
    deadline: Instant,
) -> Result<String, HandshakeError> {
    let word = frame(tcp, MAX_WORD, deadline).await?;
    if word != CONNECT_WORD {
        return Err(HandshakeError::Malformed("expected \"connect\""));
    }
    let uri = frame(tcp, MAX_URI, deadline).await?;
    String::from_utf8(uri).map_err(|_| HandshakeError::Malformed("the URI is not UTF-8"))
}

/// One `i32 LE length + bytes` record, at most `max` bytes.
pub(crate) async fn frame<S: AsyncRead + Unpin>(
    io: &mut S,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, HandshakeError> {
    let mut prefix = [0u8; PREFIX];
    timeout_at(deadline, io.read_exact(&mut prefix))
        .await
        .map_err(|_| HandshakeError::Io)?
        .map_err(|_| HandshakeError::Io)?;
    let len = record_len(prefix, max)?;
    // Grown as bytes arrive, not sized by the claim: four bytes cannot reserve 64 KiB.
    let mut buf = Vec::new();
    let read = timeout_at(deadline, io.take(len as u64).read_to_end(&mut buf))
        .await
        .map_err(|_| HandshakeError::Io)?
        .map_err(|_| HandshakeError::Io)?;
    if read < len {
        return Err(HandshakeError::Io);
    }
    Ok(buf)
}

async fn write_message<S: AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    envelope: &Envelope,
) -> std::io::Result<()> {
    let bytes = envelope
        .encode_binary()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(std::io::Error::other(
            "reply over the handshake's message limit",
        ));
    }
    let mut out = Vec::new();
    encode_record(&bytes, &mut out);
    // Flushing is inside the limit too: over TLS the bytes may wait in rustls until a
    // client that stopped reading drains its socket.
    timeout(shared.tuning().timeouts.handshake, async {
        io.write_all(&out).await?;
        io.flush().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Answers with a SOAP fault (Sender, a relay subcode, `reason`) and closes.
async fn fail(
    shared: &Shared,
    conn: &mut Conn,
    request: Option<&Probe>,
    subcode: &str,
    reason: &str,
) {
    debug!(subcode, reason, "relayed handshake fault");
    let (version, addressing) = request
        .map_or((SoapVersion::Soap12, AddressingVersion::Wsa10), |r| {
            (r.version, r.addressing)
        });
    let mut fault = Fault::sender(version, reason);
    fault
        .subcodes
        .push(QName::new("rel", RELAY_CONNECT_NS, subcode));
    let mut reply = Envelope::new(version, addressing);
    reply.headers.action = Some(WSA10_FAULT_ACTION.into());
    reply.headers.relates_to = request.and_then(|r| r.message_id.clone());
    reply.body = Body::Fault(Box::new(fault));
    let _ = write_message(shared, conn, &reply).await;
    let _ = timeout(shared.tuning().timeouts.close, conn.shutdown()).await;
}
