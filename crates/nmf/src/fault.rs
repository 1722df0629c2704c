//! Framing fault URIs (MC-NMF 2.2.3.8, `FramingEncodingString` in WCF).

use std::fmt;

/// Prefix every framing fault URI shares.
pub const FAULT_NAMESPACE: &str = "http://schemas.microsoft.com/ws/2006/05/framing/faults/";

/// The fault a receiver sends in a Fault record.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// The encoding is not accepted.
    ContentTypeInvalid,
    /// The content type is over the quota.
    ContentTypeTooLong,
    /// Port sharing could not dispatch the connection.
    ConnectionDispatchFailed,
    /// No endpoint listens at the Via.
    EndpointNotFound,
    /// The endpoint exists but is unavailable.
    EndpointUnavailable,
    /// The message is over the size quota (`MaxMessageSizeExceededFault`; the suffix is part of
    /// the name).
    MaxMessageSizeExceeded,
    /// The server is throttling.
    ServerTooBusy,
    /// Hosting could not activate the service.
    ServiceActivationFailed,
    /// The Mode byte is not supported.
    UnsupportedMode,
    /// The major version is not 1.
    UnsupportedVersion,
    /// The upgrade was not expected or is not supported.
    UpgradeInvalid,
    /// The Via is over the quota.
    ViaTooLong,
    /// Any other URI, kept as sent.
    Other(String),
}

impl FaultCode {
    /// Every named fault, for tests and tables.
    pub const ALL: [Self; 12] = [
        Self::ContentTypeInvalid,
        Self::ContentTypeTooLong,
        Self::ConnectionDispatchFailed,
        Self::EndpointNotFound,
        Self::EndpointUnavailable,
        Self::MaxMessageSizeExceeded,
        Self::ServerTooBusy,
        Self::ServiceActivationFailed,
        Self::UnsupportedMode,
        Self::UnsupportedVersion,
        Self::UpgradeInvalid,
        Self::ViaTooLong,
    ];

    /// The last segment of the URI.
    pub fn name(&self) -> &str {
        match self {
            Self::ContentTypeInvalid => "ContentTypeInvalid",
            Self::ContentTypeTooLong => "ContentTypeTooLong",
            Self::ConnectionDispatchFailed => "ConnectionDispatchFailed",
            Self::EndpointNotFound => "EndpointNotFound",
            Self::EndpointUnavailable => "EndpointUnavailable",
            Self::MaxMessageSizeExceeded => "MaxMessageSizeExceededFault",
            Self::ServerTooBusy => "ServerTooBusy",
            Self::ServiceActivationFailed => "ServiceActivationFailed",
            Self::UnsupportedMode => "UnsupportedMode",
            Self::UnsupportedVersion => "UnsupportedVersion",
            Self::UpgradeInvalid => "UpgradeInvalid",
            Self::ViaTooLong => "ViaTooLong",
            Self::Other(uri) => uri,
        }
    }

    /// The full URI sent in the Fault record.
    pub fn uri(&self) -> String {
        match self {
            Self::Other(uri) => uri.clone(),
            named => format!("{FAULT_NAMESPACE}{}", named.name()),
        }
    }

    /// Parses a fault URI (the `https` variant seen in archived documentation is accepted too).
    pub fn from_uri(uri: &str) -> Self {
        let name = uri.strip_prefix(FAULT_NAMESPACE).or_else(|| {
            uri.strip_prefix("https://schemas.microsoft.com/ws/2006/05/framing/faults/")
        });
        name.and_then(|n| Self::ALL.into_iter().find(|f| f.name() == n))
            .unwrap_or_else(|| Self::Other(uri.to_owned()))
    }
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_uri_round_trips() {
        for fault in FaultCode::ALL {
            assert_eq!(FaultCode::from_uri(&fault.uri()), fault);
        }
        assert_eq!(
            FaultCode::MaxMessageSizeExceeded.uri(),
            "http://schemas.microsoft.com/ws/2006/05/framing/faults/MaxMessageSizeExceededFault"
        );
        assert_eq!(
            FaultCode::from_uri("urn:x"),
            FaultCode::Other("urn:x".into())
        );
    }
}
