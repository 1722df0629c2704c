#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod bridge;
pub mod endpoint;
pub mod error;
pub mod http;
pub mod listener;
pub mod sender;
pub mod stream;
pub mod token;
mod transport;

pub use endpoint::Endpoint;
pub use error::ConnectError;
pub use listener::{IncomingConnection, Listener, ListenerError, Status};
pub use sender::connect;
pub use stream::{HybridStream, Message};
pub use token::{FixedToken, SasKeyProvider, TokenProvider};
