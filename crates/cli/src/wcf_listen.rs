//! `ferry listen --wcf-to net.tcp://HOST:PORT/PATH RELAYPATH`: forwards relayed WCF net.tcp
//! sessions to an existing (legacy) WCF service.
//!
//! ```text
//!  relayed stream ──► ClientRewriter (Via, To → the origin's address; RelayAccessToken out) ──► origin TCP
//!  relayed stream ◄── ServerStream (unchanged, whole records only)                         ◄── origin TCP
//! ```
//!
//! Each accepted connection gets its own TCP connection to the origin (`TCP_NODELAY`), so
//! sessions are independent: one that fails ends alone. The client's framing must be valid
//! and its envelopes decodable (they are re-encoded); what the origin sends is passed on as
//! is, record by record. Refusals are framing faults, as a WCF server sends them, never a
//! silent close: an origin that cannot be reached is `EndpointNotFound` (answered after the
//! client's preamble, so a WCF client reads it as the preamble's answer), a client whose
//! bytes cannot be carried gets the fault [`RewriteError::fault`] names, and an origin that
//! breaks in the middle of a record is `EndpointUnavailable`. Memory per session is bounded:
//! one read buffer per direction plus at most one record (limited by `--max-message`,
//! [`MAX_ENVELOPE_BYTES`] by default) and its decoded tree. A client envelope over that limit
//! gets `MaxMessageSizeExceeded`, as from WCF; an origin's, `EndpointUnavailable`.
//!
//! A NetOneway / NetEvent sender's session also carries the relay's own one-way messages, its
//! `Connect` and `OnewayPing` keep-alives ([`RELAY_SESSION_ACTIONS`]). They are addressed to
//! the relay, and a legacy origin has no operation for them, so they stop here: the rewriter
//! reads them (their string tables count for what follows) and passes nothing of them on.
//! The idle deadline counts bytes read from the client, so a dropped `OnewayPing` keeps this
//! forwarder's session alive, but the origin sees no traffic from it. A session that carries
//! only pings for a while therefore ends at the origin's own `ReceiveTimeout` (WCF's default
//! is 10 minutes), when the origin closes or faults it, not at ours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_nmf::FaultCode;
use ferry_sdk::{Endpoint, HybridStream, IncomingConnection, Listener, ListenerError};
use ferry_wcf::host::RELAY_SESSION_ACTIONS;
use ferry_wcf::rewrite::{
    ClientRewriter, RewriteError, RewriteEvent, RewriteLimits, ServerStream, Target, fault_record,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, info_span, warn};

/// Default for `--max-message`, the largest envelope carried either way: 16 MiB (WCF's default
/// is 64 KiB; services that raise their quota usually stay well below this). Each is held
/// whole while it is rewritten.
pub(crate) const MAX_ENVELOPE_BYTES: usize = 16 * 1024 * 1024;
/// Highest `--max-message` accepted: 1 GiB. Each session may hold an envelope of that size
/// and its decoded tree, so anything larger is a typo or a way to exhaust memory.
pub(crate) const MAX_ENVELOPE_CEILING: usize = 1024 * 1024 * 1024;
/// Sessions carried at once; further senders are turned away with 503 by the relay.
const MAX_SESSIONS: usize = 1024;
/// TCP connect to the origin.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send its preamble (WCF's default `ChannelInitializationTimeout`
/// is 30 s).
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A session with no bytes either way for this long ends (WCF's default `ReceiveTimeout`).
/// One deadline for both directions: a one-way client, or an origin pushing callbacks, keeps
/// the session alive though the other direction is silent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a single write may wait for a peer that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused client is given to read our fault before the stream is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read size per direction.
const READ_CHUNK: usize = 64 * 1024;

/// The WCF service sessions are forwarded to.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// `host:port` to connect to.
    authority: String,
    /// The endpoint address: the Via and `To` every forwarded session gets.
    address: String,
}

impl Origin {
    /// Parses `net.tcp://HOST:PORT/PATH` (the service's endpoint address, exactly as its
    /// clients would write it: Mono and .NET compare `To` with it).
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("net.tcp://")
            .context("--wcf-to takes the service's net.tcp://HOST:PORT/PATH address")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() {
            bail!("--wcf-to {url}: no host");
        }
        // NetTcpBinding's default port is 808.
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:808")
        };
        Ok(Self {
            authority,
            address: url.to_owned(),
        })
    }

    /// The client→origin rewriting of one session: Via and `To` become the origin's address,
    /// and the relay's own session messages are taken out.
    fn rewriter(&self, limits: RewriteLimits) -> ClientRewriter {
        let mut rewriter = ClientRewriter::new(Target::new(&self.address), limits);
        for action in RELAY_SESSION_ACTIONS {
            rewriter.drop_action(action);
        }
        rewriter
    }
}

/// Parses `--max-message`: a byte count from 1 to [`MAX_ENVELOPE_CEILING`].
pub(crate) fn parse_max_message(s: &str) -> Result<usize, String> {
    let bytes: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (a whole number, e.g. 1048576)"))?;
    if bytes == 0 {
        return Err("0 bytes would refuse every message; give at least 1".into());
    }
    if bytes > MAX_ENVELOPE_CEILING {
        return Err(format!(
            "{bytes} bytes is over the {MAX_ENVELOPE_CEILING} (1 GiB) ceiling: each session \
             may hold a message that large"
        ));
    }
    Ok(bytes)
}

/// Runs the listener until `cancel` fires, carrying envelopes of up to `max_message` bytes
/// either way.
pub(crate) async fn run(
    endpoint: Endpoint,
    origin: Origin,
    max_message: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut listener = Listener::open(endpoint)
        .await
        .context("cannot open the listener")?;
    info!(origin = %origin.address, max_message, "forwarding net.tcp sessions");
    let limits = RewriteLimits::with_max_envelope(max_message);
    let origin = Arc::new(origin);
    let permits = Arc::new(Semaphore::new(MAX_SESSIONS));
    let tracker = TaskTracker::new();
    let result = loop {
        let incoming = tokio::select! {
            // Shutdown: stop accepting; the sessions under way are ended below.
            () = cancel.cancelled() => break Ok(()),
            // Cancel safe: an accept command not yet read stays with the listener.
            r = listener.accept() => r,
        };
        let conn = match incoming {
            Ok(conn) => conn,
            Err(ListenerError::Closed) => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context("the gateway refused the listener")),
        };
        let origin = origin.clone();
        let cancel = cancel.clone();
        // Over the limit the sender is refused by the relay; the permit otherwise lives as
        // long as the session.
        let permit = permits.clone().try_acquire_owned().ok();
        let span = info_span!("wcf_session", sender_id = %conn.id);
        tracker.spawn(
            async move {
                let Some(_permit) = permit else {
                    if let Err(e) = conn.reject(503, "Too many sessions").await {
                        debug!(error = %e, "reject failed");
                    }
                    return;
                };
                tokio::select! {
                    // The session ends by itself: both legs closed, or a fault sent.
                    () = session(conn, &origin, limits) => {}
                    // Shutdown: dropping the streams closes both legs.
                    () = cancel.cancelled() => debug!("session cancelled"),
                }
            }
            .instrument(span),
        );
    };
    listener.close().await;
    tracker.close();
    tracker.wait().await;
    result
}

/// One relayed session, within `limits` (the `--max-message` envelope size).
async fn session(conn: IncomingConnection, origin: &Origin, limits: RewriteLimits) {
    let relay = match conn.accept().await {
        Ok(s) => s,
        Err(e) => return warn!(error = %e, "rendezvous failed"),
    };
    let tcp =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&origin.authority)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                warn!(origin = %origin.authority, error = %e, "origin connect failed");
                return refuse(relay, limits, FaultCode::EndpointNotFound).await;
            }
            Err(_) => {
                warn!(origin = %origin.authority, "origin connect timed out");
                return refuse(relay, limits, FaultCode::EndpointNotFound).await;
            }
        };
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let rewriter = origin.rewriter(limits);
    let (origin_r, origin_w) = tcp.into_split();
    let (relay_r, relay_w) = tokio::io::split(relay);
    // Each direction stops the other when it ends: `stop_down` asks the origin→client pump to
    // stop at the next record boundary (so a fault can follow), `stop_up` ends the
    // client→origin pump (the origin is gone, nothing more can be delivered).
    let stop_down = CancellationToken::new();
    let stop_up = CancellationToken::new();
    let idle = Idle::new(IDLE_TIMEOUT);
    let up = async {
        let r = client_to_origin(relay_r, origin_w, rewriter, &idle, &stop_up).await;
        if r.is_err() {
            stop_down.cancel();
        }
        r
    };
    let down = async {
        let r = origin_to_client(origin_r, relay_w, limits.framing, &idle, &stop_down).await;
        stop_up.cancel();
        r
    };
    let (up, (mut relay_w, down)) = tokio::join!(up, down);
    let fault = match (up, down) {
        (Err(Up::Client(e)), _) => {
            warn!(error = %e, "client session refused");
            Some(e.fault())
        }
        (_, Down::Broken(why)) => {
            warn!(%why, "origin broke the session");
            Some(FaultCode::EndpointUnavailable)
        }
        (Err(Up::Io(e)), _) => {
            debug!(error = %e, "client stream ended with an error");
            None
        }
        (Ok(()), Down::Ended) => None,
    };
    if let Some(fault) = fault {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, relay_w.write_all(&fault_record(&fault))).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, relay_w.shutdown()).await;
    debug!("session ended");
}

/// The session's idle deadline, shared by both pumps: bytes either way push it back, so a
/// read that times out ends its pump only when the other direction was quiet too.
struct Idle {
    /// When the session started; `last` counts from here.
    start: Instant,
    /// How long the session may go without bytes.
    limit: Duration,
    /// When bytes last went either way, in milliseconds since `start`.
    last: AtomicU64,
}

impl Idle {
    fn new(limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            limit,
            last: AtomicU64::new(0),
        }
    }

    /// Bytes went one way: the session is not idle.
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the session is idle unless bytes go either way before.
    fn deadline(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + self.limit
    }

    /// Reads within the session's idle deadline, waiting on while the other direction keeps
    /// moving it; `None` once the whole session was idle for the limit.
    ///
    /// Cancel safe: a read that loses a race has consumed nothing.
    async fn read<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        buf: &mut [u8],
    ) -> Option<std::io::Result<usize>> {
        loop {
            let deadline = self.deadline();
            if let Ok(read) = tokio::time::timeout_at(deadline, r.read(buf)).await {
                if matches!(read, Ok(n) if n > 0) {
                    self.touch();
                }
                return Some(read);
            }
            if self.deadline() <= deadline {
                return None;
            }
        }
    }
}

/// Why the client→origin pump stopped early.
enum Up {
    /// The client's bytes cannot be carried.
    Client(RewriteError),
    /// A stream failed or timed out.
    Io(std::io::Error),
}

/// Reads the relayed stream, rewrites it and writes it to the origin; on the client's EOF
/// half-closes the origin. Returns when the client is done, `stop` fires, or on an error.
async fn client_to_origin<R, W>(
    mut relay: R,
    mut origin: W,
    mut rewriter: ClientRewriter,
    idle: &Idle,
    stop: &CancellationToken,
) -> Result<(), Up>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_CHUNK];
    // Bytes of a record not yet complete; the rewriter's framing limits refuse a record from
    // its size field, so this never holds more than one record.
    let mut pending = Vec::new();
    let mut out = Vec::new();
    loop {
        let read = async {
            if rewriter.is_open() {
                idle.read(&mut relay, &mut buf).await
            } else {
                let r = tokio::time::timeout(PREAMBLE_TIMEOUT, relay.read(&mut buf)).await;
                if matches!(r, Ok(Ok(n)) if n > 0) {
                    idle.touch();
                }
                r.ok()
            }
        };
        let n = tokio::select! {
            // The origin is gone: nothing more can be delivered.
            () = stop.cancelled() => return Ok(()),
            // Cancel safe: a read that loses the race has consumed nothing.
            r = read => match r {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(Up::Io(e)),
                None => return Err(Up::Io(std::io::ErrorKind::TimedOut.into())),
            },
        };
        if n == 0 {
            if !pending.is_empty() {
                debug!(bytes = pending.len(), "client closed inside a record");
            }
            // Half-close: the origin sees our EOF and answers what it has, then closes.
            let _ = tokio::time::timeout(WRITE_TIMEOUT, origin.shutdown()).await;
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        let result = rewriter.handle_input(&pending);
        // Whatever was rewritten before a bad record still goes out, in order.
        rewriter.poll_transmit(&mut out);
        while let Some(event) = rewriter.poll_event() {
            log_event(&event);
        }
        if !out.is_empty() {
            write(&mut origin, &out).await.map_err(Up::Io)?;
            out.clear();
        }
        let used = result.map_err(Up::Client)?;
        pending.drain(..used);
    }
}

/// How the origin→client pump ended.
enum Down {
    /// The origin closed at a record boundary, or the pump was stopped.
    Ended,
    /// The origin sent something that is not framing, closed inside a record, or failed.
    Broken(String),
}

/// Copies the origin's records to the relayed stream unchanged, whole records at a time.
/// Returns the relay's write half so a fault can still be sent.
async fn origin_to_client<R, W>(
    mut origin: R,
    mut relay: W,
    limits: ferry_nmf::Limits,
    idle: &Idle,
    stop: &CancellationToken,
) -> (W, Down)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut records = ServerStream::new(limits);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending = Vec::new();
    let down = loop {
        let n = tokio::select! {
            // Only between records: a write in progress is never cut.
            () = stop.cancelled() => break Down::Ended,
            // A session silent both ways for the idle time ends like a close.
            r = idle.read(&mut origin, &mut buf) => match r {
                Some(Ok(n)) => n,
                Some(Err(e)) => break Down::Broken(e.to_string()),
                None => break Down::Ended,
            },
        };
        if n == 0 {
            break if pending.is_empty() {
                Down::Ended
            } else {
                Down::Broken("closed inside a record".into())
            };
        }
        pending.extend_from_slice(&buf[..n]);
        let used = match records.handle_input(&pending) {
            Ok(used) => used,
            Err(e) => break Down::Broken(e.to_string()),
        };
        while let Some(event) = records.poll_event() {
            debug!(?event, "origin record");
        }
        if used > 0 {
            if let Err(e) = write(&mut relay, &pending[..used]).await {
                // The client is gone; nothing more to say to it.
                debug!(error = %e, "relay write failed");
                break Down::Ended;
            }
            pending.drain(..used);
        }
    };
    (relay, down)
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

fn log_event(event: &RewriteEvent) {
    match event {
        RewriteEvent::Preamble {
            via,
            mode,
            content_type,
        } => {
            // Not the query: a Via may carry the relay token (`?sb-hc-token=`).
            let via = without_query(via);
            debug!(via, mode = mode.name(), %content_type, "preamble");
        }
        RewriteEvent::Envelope {
            index,
            action,
            token_removed,
            ..
        } => debug!(index, ?action, token_removed, "envelope"),
        RewriteEvent::Dropped { index, action } => {
            debug!(index, action, "relay session message dropped");
        }
        RewriteEvent::End => debug!("end"),
        other => debug!(?other, "event"),
    }
}

/// `url` less its query and fragment (scheme, authority and path): what may be logged of a
/// Via, whose query may hold the relay token.
fn without_query(url: &str) -> &str {
    url.find(['?', '#']).map_or(url, |end| &url[..end])
}

/// Answers a session that cannot be carried with a Fault record: first the client's
/// preamble is read (a WCF client reads the answer only after sending it, and a stream closed
/// with input unread may reset before the fault arrives), then the fault, then close.
async fn refuse(mut relay: HybridStream, limits: RewriteLimits, fault: FaultCode) {
    let mut reader = ClientRewriter::new(Target::new(""), limits);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending = Vec::new();
    let _ = tokio::time::timeout(PREAMBLE_TIMEOUT, async {
        while !reader.is_open() {
            let n = match relay.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            match reader.handle_input(&pending) {
                Ok(used) => drop(pending.drain(..used)),
                // A broken preamble gets the same answer: the origin is unreachable anyway.
                Err(_) => return,
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, relay.write_all(&fault_record(&fault))).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, relay.shutdown()).await;
    // Read what the client still sends until it closes too, so the close is orderly.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while matches!(relay.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use ferry_nmf::{ClientConfig, Record, Session};
    use ferry_soap::{AddressingVersion, BinarySession, Body, Envelope, SoapVersion};
    use ferry_wcf::DataContract as _;
    use ferry_wcf::generated::calculator::Notify;
    use ferry_wcf::generated::relay::{Connect, OnewayPing};

    use super::*;

    const NOTIFY: &str = "http://interop.example/calc/2024/ICalculator/Notify";

    #[test]
    fn max_message_bounds() {
        assert_eq!(parse_max_message("1"), Ok(1));
        assert_eq!(parse_max_message("65536"), Ok(65536));
        assert_eq!(
            parse_max_message("1073741824"),
            Ok(MAX_ENVELOPE_CEILING),
            "1 GiB itself is allowed"
        );
        for (bad, says) in [
            ("0", "at least 1"),
            ("1073741825", "1 GiB"),
            ("99999999999999999999999", "not a byte count"),
            ("-1", "not a byte count"),
            ("16MiB", "not a byte count"),
            ("", "not a byte count"),
        ] {
            let e = parse_max_message(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    /// A client stream: preamble to `via`, then each (action, body) as a binary-session
    /// envelope with MessageID and `To`, then End.
    fn client_stream(via: &str, messages: &[(&str, ferry_nbfx::Element)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut preamble =
            Session::client(ClientConfig::net_tcp(via), ferry_nmf::Limits::default())
                .expect("session");
        preamble.poll_transmit(&mut out);
        let mut codec = BinarySession::new(ferry_nbfx::Limits::default());
        for (i, (action, body)) in messages.iter().enumerate() {
            let mut envelope = Envelope::new(SoapVersion::Soap12, AddressingVersion::Wsa10);
            envelope.headers.action = Some((*action).to_owned());
            envelope.headers.message_id = Some(format!("urn:uuid:{i}"));
            envelope.headers.to = Some(via.to_owned());
            envelope.body = Body::Payload(vec![body.clone()]);
            let payload = codec.encode(&envelope).expect("encode");
            Record::SizedEnvelope(Cow::Owned(payload)).encode(&mut out);
        }
        Record::End.encode(&mut out);
        out
    }

    /// Rewrites a whole client stream as the forwarder does; the bytes for the origin and the
    /// actions dropped.
    fn forward(origin: &Origin, stream: &[u8]) -> (Vec<u8>, Vec<String>) {
        let mut rewriter = origin.rewriter(RewriteLimits::default());
        assert_eq!(
            rewriter.handle_input(stream).expect("rewrites"),
            stream.len()
        );
        let mut out = Vec::new();
        rewriter.poll_transmit(&mut out);
        let mut dropped = Vec::new();
        while let Some(event) = rewriter.poll_event() {
            if let RewriteEvent::Dropped { action, .. } = event {
                dropped.push(action);
            }
        }
        (out, dropped)
    }

    #[test]
    fn relay_session_messages_stop_at_the_forwarder() {
        let origin = Origin::parse("net.tcp://127.0.0.1:9/legacy/notify").unwrap();
        let notify = |m: &str| Notify {
            message: Some(m.to_owned()),
        };
        let [connect, ping] = RELAY_SESSION_ACTIONS;
        let stream = client_stream(
            "net.tcp://gateway:9352/oneway",
            &[
                (
                    connect,
                    Connect {
                        uri: Some("sb://gateway/oneway".into()),
                    }
                    .to_element(),
                ),
                (NOTIFY, notify("a").to_element()),
                (ping, OnewayPing {}.to_element()),
                (NOTIFY, notify("b").to_element()),
            ],
        );
        let (out, dropped) = forward(&origin, &stream);
        assert_eq!(dropped, [connect, ping]);
        // What reaches the origin reads with only what it was told: its preamble, the two
        // Notify (the second one's strings resolve though the Connect before it is gone),
        // End.
        let mut codec = BinarySession::new(ferry_nbfx::Limits::default());
        let limits = ferry_nmf::Limits::default();
        let (mut pos, mut got, mut end) = (0, Vec::new(), false);
        while pos < out.len() {
            let (record, n) = Record::decode(&out[pos..], &limits).unwrap().unwrap();
            match record {
                Record::SizedEnvelope(p) => {
                    let envelope = codec.decode(&p).expect("decodes at the origin");
                    assert_eq!(
                        envelope.headers.to.as_deref(),
                        Some(origin.address.as_str())
                    );
                    let Body::Payload(body) = &envelope.body else {
                        panic!("no body");
                    };
                    let message = Notify::from_element(&body[0]).expect("a Notify").message;
                    got.push((envelope.headers.action.clone(), message));
                }
                Record::End => end = true,
                _ => {}
            }
            pos += n;
        }
        assert!(end);
        let want = |m: &str| (Some(NOTIFY.to_owned()), Some(m.to_owned()));
        assert_eq!(got, [want("a"), want("b")]);
    }

    /// Without relay messages, a session to an unchanged address passes byte for byte: the
    /// recorded Mono one-way session.
    #[test]
    fn a_session_without_relay_messages_is_unchanged() {
        let stream = include_bytes!("../../../interop/recordings/tcp-oneway/client_to_server.bin");
        let via = (0..)
            .scan(0, |pos, _| {
                let (record, n) =
                    Record::decode(&stream[*pos..], &ferry_nmf::Limits::default()).ok()??;
                *pos += n;
                Some(record)
            })
            .find_map(|r| match r {
                Record::Via(v) => Some(v.into_owned()),
                _ => None,
            })
            .expect("a Via");
        let (out, dropped) = forward(&Origin::parse(&via).unwrap(), stream);
        assert!(dropped.is_empty());
        assert!(out == stream, "the recorded session changed on its way");
    }

    #[test]
    fn origin_addresses() {
        let o = Origin::parse("net.tcp://127.0.0.1:8701/calc/tcp").unwrap();
        assert_eq!(o.authority, "127.0.0.1:8701");
        assert_eq!(o.address, "net.tcp://127.0.0.1:8701/calc/tcp");
        assert_eq!(
            Origin::parse("net.tcp://legacy.internal/svc")
                .unwrap()
                .authority,
            "legacy.internal:808"
        );
        assert_eq!(
            Origin::parse("net.tcp://[::1]:9/x").unwrap().authority,
            "[::1]:9"
        );
        assert_eq!(
            Origin::parse("net.tcp://[::1]/x").unwrap().authority,
            "[::1]:808"
        );
        assert!(Origin::parse("http://x:1/y").is_err());
        assert!(Origin::parse("net.tcp:///y").is_err());
    }

    /// An origin that never speaks, with a client still sending (here: the shared deadline
    /// pushed back as the other pump does), keeps the session; once both are quiet for the
    /// idle time it ends.
    #[tokio::test]
    async fn one_quiet_direction_does_not_end_the_session() {
        let idle = Idle::new(Duration::from_millis(300));
        let (_origin_peer, origin) = tokio::io::duplex(64);
        let (relay, _relay_peer) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        let pump = origin_to_client(origin, relay, ferry_nmf::Limits::default(), &idle, &stop);
        tokio::pin!(pump);
        let client = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                idle.touch();
            }
        };
        tokio::select! {
            _ = &mut pump => panic!("the session ended while the client was still sending"),
            () = client => {}
        }
        let (_, down) = tokio::time::timeout(Duration::from_secs(5), pump)
            .await
            .expect("a session idle both ways ends");
        assert!(matches!(down, Down::Ended));
        assert!(idle.deadline() <= Instant::now());
    }

    #[test]
    fn logged_vias_have_no_token() {
        assert_eq!(
            without_query("net.tcp://g:9352/calc?sb-hc-token=SharedAccessSignature%20sr"),
            "net.tcp://g:9352/calc"
        );
        assert_eq!(without_query("net.tcp://g/a#x?y"), "net.tcp://g/a");
        assert_eq!(without_query("net.tcp://g/calc"), "net.tcp://g/calc");
    }
}
