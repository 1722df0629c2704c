//! The body of every response the HTTP port sends, relayed HTTP and gRPC alike.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};

/// Response bodies: whole, or streamed from a rendezvous or a listener's HTTP/2 stream.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// A body of these bytes.
pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    full(Bytes::new())
}
