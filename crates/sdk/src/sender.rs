//! The sender: open a relayed connection to a listener on a path.

use ferry_hc::address::{Action, hc_url};
use ferry_hc::command::{FEATURE_RAW, FEATURES_HEADER};
use tracing::debug;

use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::stream::HybridStream;
use crate::transport;

/// The header carrying the token on every upgrade (spec §2).
pub(crate) const AUTH_HEADER: &str = "ServiceBusAuthorization";

/// Opens a relayed connection to a listener on the endpoint's path:
/// `{base}/$hc/{path}?sb-hc-action=connect&sb-hc-id={id}` with the token in
/// `ServiceBusAuthorization` (none for an anonymous sender) and `extra_headers` added to the
/// upgrade; the listener sees them in `accept.connectHeaders`. Offer a sub-protocol with a
/// `Sec-WebSocket-Protocol` header; [`HybridStream::protocol`] says what was chosen. With
/// [`Endpoint::set_raw_streams`], the upgrade also asks for a raw stream.
///
/// # Errors
/// [`ConnectError::Status`] keeps the gateway's status: 401 bad token, 403 wrong claim, 404
/// unknown path or no listener online, or whatever status a listener rejected us with.
/// Timeouts are typed ([`ConnectError::ConnectTimeout`], [`ConnectError::HandshakeTimeout`],
/// ...).
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-open connection, which the gateway
/// treats as a sender that went away.
pub async fn connect(
    endpoint: &Endpoint,
    extra_headers: &[(&str, &str)],
) -> Result<HybridStream, ConnectError> {
    let id = new_id();
    let url = hc_url(
        &endpoint.base(),
        endpoint.path(),
        "",
        Action::Connect,
        Some(&id),
    );
    let token = match endpoint.token_provider() {
        Some(provider) => Some(provider.token(&endpoint.resource_uri())?),
        None => None,
    };
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 2);
    if let Some(token) = &token {
        headers.push((AUTH_HEADER, &token.text));
    }
    headers.extend_from_slice(extra_headers);
    if endpoint.raw_streams() {
        headers.push((FEATURES_HEADER, FEATURE_RAW));
    }
    debug!(path = endpoint.path(), %id, "sender connecting");
    let upgraded = transport::open(endpoint, &url, &headers).await?;
    Ok(HybridStream::new(upgraded, endpoint.max_message_size()))
}

/// A tracking id in GUID form: the .NET listener parses the first 36 characters of an
/// `accept.id` as a GUID (spec §3), so ids made here must look like one.
pub(crate) fn new_id() -> String {
    ferry_nbfx::Guid::v4(rand::random()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_guids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_ne!(id, new_id());
    }
}
