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

/// The most listeners one path may hold at once (Azure Relay's limit, kept for compatibility).
pub const MAX_LISTENERS_PER_PATH: usize = 25;
