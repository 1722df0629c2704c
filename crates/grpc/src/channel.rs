//! Calling a service through the relay: a tonic [`Channel`] whose connector opens a sender
//! connection to a hybrid connection path. The listener on that path serves HTTP/2 on it
//! (with [`crate::incoming()`], or `ferry listen --grpc-to` in front of any gRPC server).
//!
//! One channel keeps one relayed connection and multiplexes every call on it; it reconnects
//! (a new sender connection) when that connection fails.

use ferry_sdk::{ConnectError, Endpoint};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Uri};

/// The authority requests carry; the gateway and listener route by path, not by host.
const AUTHORITY: &str = "http://ferry.relay";

/// Connects a channel to the service listening on `endpoint`'s path.
///
/// # Errors
/// The first connection failed (no listener, refused token, timeouts).
pub async fn channel(endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static(AUTHORITY)
        .connect_with_connector(connector(endpoint))
        .await
}

/// A channel that connects on its first call (and reconnects after failures) instead of now.
pub fn lazy_channel(endpoint: Endpoint) -> Channel {
    tonic::transport::Endpoint::from_static(AUTHORITY)
        .connect_with_connector_lazy(connector(endpoint))
}

/// Like [`channel`], with tonic's endpoint settings (timeouts, window sizes, keep-alive) taken
/// from `settings`; its URI is only used for the `:authority` of requests.
///
/// # Errors
/// As [`channel`].
pub async fn channel_with(
    settings: tonic::transport::Endpoint,
    endpoint: Endpoint,
) -> Result<Channel, tonic::transport::Error> {
    settings.connect_with_connector(connector(endpoint)).await
}

fn connector(
    endpoint: Endpoint,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<ferry_sdk::HybridStream>,
    Error = ConnectError,
    Future = impl Future<Output = Result<TokioIo<ferry_sdk::HybridStream>, ConnectError>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let endpoint = endpoint.clone();
        async move { Ok(TokioIo::new(ferry_sdk::connect(&endpoint, &[]).await?)) }
    })
}
