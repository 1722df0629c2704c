#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// Generated code names the runtime `ferry_wcf::…` wherever it is compiled, here included.
extern crate self as ferry_wcf;

pub mod client;
pub mod contract;
pub mod data;
pub mod fault;
pub mod generated;
pub mod rewrite;
pub mod service;
pub mod value;

pub use client::{CallError, Transport};
pub use contract::{Contract, Endpoint, FaultInfo, Operation};
pub use data::{ArrayItem, DataContract, DataError, Reader, Writer, XmlValue};
pub use fault::{Fault, FaultCode, FaultDetail, NoDetail};
pub use service::{DispatchError, Reply, Service};
