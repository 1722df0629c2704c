#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod conn;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod raw;
mod reader;
pub mod relay;
pub mod stall;
pub mod stream;
pub mod tls;
