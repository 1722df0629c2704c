#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod boundary;
pub mod error;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod record;
pub mod record_type;
pub mod session;
pub mod varint;

pub use error::{DecodeError, PeerIncompatible, PeerMisbehaved, SessionError};
pub use fault::FaultCode;
pub use limits::{Limit, Limits};
pub use record::{KnownEncoding, Mode, Record};
pub use record_type::RecordType;
pub use session::{ClientConfig, Encoding, Event, MessageFormat, Preamble, Role, Session};
