#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod codec;
pub mod envelope;
pub mod error;
pub mod fault;
pub mod probe;
pub mod relay;
pub mod relayed;
pub mod version;

pub use codec::BinarySession;
pub use envelope::{Body, EndpointReference, Envelope, Header, Headers};
pub use error::{DecodeError, EncodeError};
pub use fault::{Fault, QName};
pub use probe::Probe;
pub use relay::RelayAccessToken;
pub use version::{AddressingVersion, SoapVersion};
