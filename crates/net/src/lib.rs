#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod conn;
pub mod frame;
pub mod relay;
pub mod stall;
pub mod stream;
pub mod tls;
