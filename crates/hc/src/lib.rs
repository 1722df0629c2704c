#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod address;
pub mod auth;
pub mod command;
#[doc(hidden)]
pub mod fuzzing;
pub mod sas;

pub use address::{Action, HcQuery};
pub use auth::{AuthError, Right, Rights, Rule, Rules};
pub use command::Command;
pub use sas::SasToken;

/// The close reason (with code 1001) a stopping gateway node gives each listener it hands
/// off to the other nodes of its cluster, one at a time: a listener that knows other nodes
/// should listen on one of them at once, without its reconnect backoff (a Ferry extension;
/// to any other client it reads as an ordinary 1001).
pub const HANDOFF_REASON: &str = "this gateway node is stopping; listen on another node now";

/// The most listeners one path may hold at once (Azure Relay's limit, kept for compatibility).
pub const MAX_LISTENERS_PER_PATH: usize = 25;
