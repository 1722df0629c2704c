//! A listener's control channel: commands out, `renewToken` in, keep-alive, token expiry.
//!
//! The channel is read and written with tungstenite, not `ferry_net`'s streaming codec: its
//! messages are whole JSON commands of at most 64 KiB (and inline bodies of the same size),
//! which tungstenite reads under a size limit, pings and close handshake included; streaming
//! a message through a bounded buffer, which it cannot do, only the data paths need.

use std::sync::Arc;
use std::time::Duration;

use ferry_hc::Command;
use ferry_hc::auth::Right;
use ferry_hc::command::CommandError;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, info, warn};

use ferry_net::conn::Conn;

use crate::auth::now_unix;
use crate::pairing::{HttpOutcome, HttpReply, PathSettings, Registration, ReplyBody};
use crate::state::Shared;

/// Longest wait the control channel schedules for a token's expiry: a year.
const FAR_EXPIRY_SECS: u64 = 365 * 24 * 3600;

/// Most commands written to a control channel before one flush.
const MAX_BATCH: usize = 32;

/// Why a control channel ended, and the close code the listener is sent.
#[derive(Debug)]
enum End {
    /// The listener closed (or vanished).
    Peer,
    /// Shutdown: 1001.
    Shutdown,
    /// This node let the listener go (it lost its place in the cluster): 1001, so the
    /// listener reconnects to another node.
    Evicted,
    /// The path was deleted (management API, or a reloaded file): 1001, as Azure closes
    /// the listeners of a deleted hybrid connection.
    Retired,
    /// No pong or other frame for two keep-alive intervals.
    Dead,
    /// The token expired without renewal, or a renewal failed: 1008.
    Token(&'static str),
}

/// Hands a listener's response to the HTTP request waiting for it. A response for an unknown
/// (finished, timed out, or never issued) request is dropped: it fails nothing else.
fn deliver(shared: &Shared, response: ferry_hc::command::Response, body: bytes::Bytes) {
    match shared.pairing.take_request(&response.request_id) {
        Some(pending) => drop(pending.reply.send(HttpOutcome::Reply(HttpReply {
            response,
            body: ReplyBody::Full(body),
        }))),
        None => {
            debug!(request_id = %response.request_id, "response for no waiting request dropped")
        }
    }
}

/// The `requestId` of a `response` that did not decode as one, if it has one.
fn named_request(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value
        .get("response")?
        .get("requestId")?
        .as_str()
        .map(str::to_owned)
}

/// Runs one control channel until it ends.
///
/// # Cancel safety
/// Not cancel safe; it ends on the gateway's shutdown token instead.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut ws: WebSocketStream<Conn>,
    mut registration: Registration,
    settings: Arc<PathSettings>,
    hosts: Vec<String>,
    token_expiry: u64,
) {
    let tuning = shared.tuning();
    let timeouts = &tuning.timeouts;
    let grace = timeouts.token_grace.as_secs();
    // A token may name any expiry a u64 holds; past a year the deadline is as good as never,
    // and an instant that far out would overflow the clock.
    let deadline_for = |expiry: u64| {
        let left = expiry.saturating_add(grace).saturating_sub(now_unix());
        Instant::now() + Duration::from_secs(left.min(FAR_EXPIRY_SECS))
    };
    let mut token_deadline = deadline_for(token_expiry);
    let mut last_heard = Instant::now();
    let mut keepalive =
        tokio::time::interval_at(Instant::now() + timeouts.keepalive, timeouts.keepalive);
    // A write that cannot finish within a keep-alive interval means a dead or stuck peer.
    let write_limit = timeouts.keepalive;
    // A `response` with `body: true` whose body message has not arrived yet (spec §4.1: it
    // must be the very next message).
    let mut awaiting_body: Option<ferry_hc::command::Response> = None;
    let evicted = registration.eviction();

    let end = loop {
        tokio::select! {
            // Shutdown first, so a busy channel still stops promptly.
            biased;
            () = shared.cancel.cancelled() => break End::Shutdown,
            () = evicted.cancelled() => break End::Evicted,
            () = settings.retired.cancelled() => break End::Retired,
            () = sleep_until(token_deadline) => break End::Token("token expired"),
            cmd = registration.recv() => {
                // The registration holds the queue open for as long as it lasts, so `None`
                // cannot happen; treat it as the end.
                let Some(out) = cmd else { break End::Shutdown };
                // A request and its body go out back to back: nothing may come between them.
                // Whatever else is already queued goes in the same write (bounded per wakeup),
                // so a busy listener costs one flush per batch, not per request.
                let send = async {
                    let mut next = Some(out);
                    let mut batch = 0;
                    while let Some(out) = next.take() {
                        ws.feed(Message::text(out.command.encode())).await?;
                        if let Some(body) = out.body {
                            ws.feed(Message::Binary(body)).await?;
                        }
                        batch += 1;
                        if batch < MAX_BATCH {
                            next = registration.try_recv();
                        }
                    }
                    ws.flush().await
                };
                match timeout(write_limit, send).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => { debug!(error = %e, "control send failed"); break End::Peer }
                    Err(_) => break End::Dead,
                }
            }
            msg = ws.next() => {
                last_heard = Instant::now();
                if let Some(response) = awaiting_body.take() {
                    // The body of the previous `response`; anything else means it has none.
                    if let Some(Ok(Message::Binary(body))) = &msg {
                        deliver(&shared, response, body.clone());
                        continue;
                    }
                    warn!(request_id = %response.request_id, "response announced a body that did not follow");
                    drop(shared.pairing.take_request(&response.request_id));
                }
                match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::Peer,
                    Some(Ok(Message::Text(text))) => match Command::decode(&text) {
                        Ok(Command::Response(response)) if response.body => awaiting_body = Some(response),
                        Ok(Command::Response(response)) => deliver(&shared, response, Default::default()),
                        Ok(Command::RenewToken(renew)) => {
                            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                            // The rules in force now: a key rotated since the listener came
                            // no longer renews.
                            let current = shared.pairing.listener_path(&settings.name).unwrap_or_else(|| settings.clone());
                            match current.rules.authorize_any_host(&renew.token, &hosts, &settings.name, Right::Listen, now_unix()) {
                                Ok(grant) => {
                                    debug!(expiry = grant.expiry, "listener token renewed");
                                    token_deadline = deadline_for(grant.expiry);
                                }
                                Err(e) => {
                                    warn!(error = %e, "listener token renewal refused");
                                    break End::Token("token renewal refused");
                                }
                            }
                        }
                        Ok(other) => debug!(command = ?std::mem::discriminant(&other), "control command ignored"),
                        Err(CommandError::Unknown(name)) => debug!(%name, "unknown control command ignored"),
                        Err(e) => {
                            // One bad message fails at most the request it names (502); the
                            // listener and its other requests carry on.
                            warn!(error = %e, "malformed control message ignored");
                            if let Some(id) = named_request(&text) {
                                drop(shared.pairing.take_request(&id));
                            }
                        }
                    },
                    Some(Ok(Message::Binary(_))) => {
                        warn!("body message without a response before it ignored");
                    }
                    // Pings are answered by tungstenite; pongs only prove liveness.
                    Some(Ok(_)) => {}
                }
            }
            _ = keepalive.tick() => {
                if last_heard.elapsed() > timeouts.keepalive * 2 {
                    break End::Dead;
                }
                match timeout(write_limit, ws.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break End::Peer,
                    Err(_) => break End::Dead,
                }
            }
        }
    };

    // Leave the balancing set before the closing handshake, so no sender is offered to a
    // listener that is going away. A listener the gateway lets go (it moves to another node,
    // or this one stops) is first sent what was already queued for it: senders waiting on
    // those accepts are still served, over rendezvous it can open elsewhere. Then its queue
    // closes, so whatever a front end holds of it (a gRPC connection) is let go.
    registration.leave();
    if matches!(end, End::Evicted | End::Shutdown) {
        let flush = async {
            while let Some(out) = registration.try_recv() {
                ws.feed(Message::text(out.command.encode())).await?;
                if let Some(body) = out.body {
                    ws.feed(Message::Binary(body)).await?;
                }
            }
            ws.flush().await
        };
        let _ = timeout(timeouts.close, flush).await;
    }
    drop(registration);
    info!(path = %settings.name, reason = ?end, "listener control channel ended");
    let frame = match end {
        End::Peer | End::Dead => None,
        End::Retired => Some((
            CloseCode::Away,
            "the path has been deleted or disabled".to_owned(),
        )),
        End::Shutdown => Some((CloseCode::Away, "gateway shutting down".to_owned())),
        // A stopping node hands its listeners off one at a time and waits for each to listen
        // elsewhere: it says so, so ours come back at once rather than after their backoff.
        End::Evicted if shared.cluster.as_ref().is_some_and(|c| c.draining()) => {
            Some((CloseCode::Away, ferry_hc::HANDOFF_REASON.to_owned()))
        }
        End::Evicted => Some((
            CloseCode::Away,
            "this gateway node left the cluster; reconnect".to_owned(),
        )),
        End::Token(why) => Some((CloseCode::Policy, why.to_owned())),
    };
    if let Some((code, reason)) = frame {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        // Best effort: send the close and wait briefly for the listener's reply.
        let _ = timeout(timeouts.close, async {
            if ws.send(close).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
        .await;
    }
}
