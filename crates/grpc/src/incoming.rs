//! Serving tonic over relayed connections: an SDK [`Listener`] as the connection stream of
//! `tonic::transport::Server::serve_with_incoming`.
//!
//! Rendezvous handshakes run concurrently (a slow one does not hold up the others), at most
//! [`IncomingConfig::max_handshakes`] at a time and each under the endpoint's handshake
//! timeout; finished connections wait in a bounded queue for the server to take them. A
//! failed rendezvous is logged and skipped: the sender sees its own error. The stream ends
//! with the listener: after a permanent error (reported once, as the last item) or when the
//! listener closes. Dropping the stream closes the listener.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_sdk::{HybridStream, IncomingConnection, Listener, ListenerError};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// Settings of [`incoming_with`].
#[derive(Clone, Copy, Debug)]
pub struct IncomingConfig {
    /// Rendezvous handshakes in progress at once; more senders wait for a slot. Default 64.
    pub max_handshakes: usize,
    /// Accepted connections the server has not taken yet. Default 32.
    pub queue: usize,
}

impl Default for IncomingConfig {
    fn default() -> Self {
        Self {
            max_handshakes: 64,
            queue: 32,
        }
    }
}

/// The connections a listener accepts, for `serve_with_incoming`, with default settings.
pub fn incoming(
    listener: Listener,
) -> impl Stream<Item = Result<RelayedConnection, ListenerError>> + Send + 'static {
    incoming_with(listener, IncomingConfig::default())
}

/// The connections a listener accepts, for `serve_with_incoming`.
pub fn incoming_with(
    listener: Listener,
    config: IncomingConfig,
) -> impl Stream<Item = Result<RelayedConnection, ListenerError>> + Send + 'static {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    tokio::spawn(accept_loop(listener, tx, config));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

type Item = Result<RelayedConnection, ListenerError>;

async fn accept_loop(mut listener: Listener, tx: mpsc::Sender<Item>, config: IncomingConfig) {
    let slots = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
    loop {
        let incoming = tokio::select! {
            r = listener.accept() => r,
            () = tx.closed() => break,
        };
        let incoming = match incoming {
            Ok(incoming) => incoming,
            Err(e) => {
                // Permanent (the listener was refused, or closed): tell the server, then end.
                let _ = tx.send(Err(e)).await;
                break;
            }
        };
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = tx.closed() => break,
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(conn) = handshake(incoming).await {
                // The server went away: dropping the connection closes it.
                let _ = tx.send(Ok(conn)).await;
            }
        });
    }
    listener.close().await;
}

async fn handshake(incoming: IncomingConnection) -> Option<RelayedConnection> {
    let info = RelayedInfo {
        id: incoming.id.clone(),
        remote: incoming
            .remote_endpoint
            .as_ref()
            .and_then(|r| Some(SocketAddr::new(r.address.parse().ok()?, r.port))),
    };
    // `accept` runs under the endpoint's connect and handshake timeouts.
    match incoming.accept().await {
        Ok(stream) => {
            debug!(sender = %info.id, "relayed connection accepted");
            Some(RelayedConnection { stream, info })
        }
        Err(e) => {
            warn!(sender = %info.id, error = %e, "rendezvous failed");
            None
        }
    }
}

/// What tonic's `Request::extensions` carry about a relayed connection (through
/// [`Connected`]): who the sender is, as far as the gateway says.
#[derive(Clone, Debug)]
pub struct RelayedInfo {
    /// The sender's tracking id (`sb-hc-id`, or one the gateway made).
    pub id: String,
    /// The sender's address, when the gateway reports it.
    pub remote: Option<SocketAddr>,
}

/// A relayed connection as a byte stream, for a tonic server.
#[derive(Debug)]
pub struct RelayedConnection {
    stream: HybridStream,
    info: RelayedInfo,
}

impl RelayedConnection {
    /// Who is on the other end.
    pub fn info(&self) -> &RelayedInfo {
        &self.info
    }

    /// The stream underneath.
    pub fn into_inner(self) -> HybridStream {
        self.stream
    }
}

impl Connected for RelayedConnection {
    type ConnectInfo = RelayedInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for RelayedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RelayedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
