#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod channel;
pub mod echo;
pub mod incoming;

pub use channel::{channel, lazy_channel};
pub use incoming::{RelayedConnection, RelayedInfo, incoming, incoming_with};
