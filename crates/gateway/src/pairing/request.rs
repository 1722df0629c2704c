//! An HTTP request waiting for its listener's response: what goes out on the control
//! channel, what comes back (on the control channel or on a rendezvous the listener opens),
//! and how a request nobody waits for any more is cancelled.

use bytes::Bytes;
use ferry_hc::Command;
use ferry_hc::command::{Cancel, Response};
use tokio::sync::{mpsc, oneshot};

/// What the gateway sends a listener's control channel: a command, and for a `request` with
/// a body, the body, which must follow the command immediately as one binary message.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) command: Command,
    pub(crate) body: Option<Bytes>,
}

impl From<Command> for Outbound {
    fn from(command: Command) -> Self {
        Self {
            command,
            body: None,
        }
    }
}

/// A listener's answer to an HTTP request.
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub(crate) response: Response,
    pub(crate) body: ReplyBody,
}

/// A response body: whole (from the control channel), or streaming in from a rendezvous
/// through a small bounded queue, so a slow client slows the listener down.
#[derive(Debug)]
pub(crate) enum ReplyBody {
    Full(Bytes),
    /// Chunks as they arrive, then an empty chunk as the end mark; a queue that closes
    /// without it was given up on, and the client must see an error.
    Stream(mpsc::Receiver<std::io::Result<Bytes>>),
}

/// A request body the rendezvous sends: already read, or still arriving from the client.
pub(crate) enum DeferredBody {
    Buffered(Bytes),
    /// Streamed to the listener as it arrives, at most `limit` bytes.
    Streaming {
        /// What was read before deciding to stream.
        prefix: Bytes,
        body: hyper::body::Incoming,
        limit: usize,
    },
}

/// How a waiting HTTP request ends.
#[derive(Debug)]
pub(crate) enum HttpOutcome {
    /// The listener answered.
    Reply(HttpReply),
    /// The gateway gives up on it with this status (e.g. 413 for a body over the limit).
    Fail(u16, String),
}

/// An HTTP request waiting for its listener's response.
pub(crate) struct PendingHttp {
    /// For a rendezvous-only request: the full `request` and its body, sent on the
    /// rendezvous socket when the listener opens it.
    pub(crate) deferred: Option<(Command, DeferredBody)>,
    pub(crate) reply: oneshot::Sender<HttpOutcome>,
    /// How to cancel the request on its listener, if it understands `cancel`.
    pub(crate) cancel: Option<CancelHandle>,
    /// The path's response deadline, which a rendezvous exchange keeps too.
    pub(crate) deadline: std::time::Duration,
}

/// Sends a listener the `cancel` command (a Ferry extension) for one of its requests.
#[derive(Clone, Debug)]
pub(crate) struct CancelHandle {
    id: String,
    commands: mpsc::Sender<Outbound>,
}

impl CancelHandle {
    /// A handle for request `id` sent on a listener's `commands` queue.
    pub(super) fn new(id: &str, commands: mpsc::Sender<Outbound>) -> Self {
        Self {
            id: id.to_owned(),
            commands,
        }
    }

    /// Queues the `cancel` command. Best effort: it goes behind the request itself on the same
    /// queue, and when that queue is full (a listener far behind) or closed it is dropped:
    /// the listener's own response timeout then ends the work.
    pub(crate) fn send(&self) {
        let command = Command::Cancel(Cancel {
            id: self.id.clone(),
        });
        if self.commands.try_send(command.into()).is_err() {
            tracing::debug!(request = %self.id, "cancel not queued: control queue full or closed");
        }
    }
}
