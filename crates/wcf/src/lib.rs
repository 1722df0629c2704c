#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// Generated code names the runtime `ferry_wcf::…` wherever it is compiled, here included.
extern crate self as ferry_wcf;

#[cfg(feature = "runtime")]
pub mod basic_http;
pub mod calc;
pub mod client;
#[cfg(feature = "runtime")]
pub mod codec;
pub mod contract;
pub mod data;
pub mod fault;
pub mod generated;
#[cfg(feature = "runtime")]
pub mod host;
pub mod metadata;
#[cfg(feature = "runtime")]
pub mod net_tcp;
pub mod rewrite;
pub mod service;
pub mod value;

pub use client::{CallError, Transport};
pub use contract::{Contract, Endpoint, FaultInfo, Operation};
pub use data::{ArrayItem, DataContract, DataError, Reader, Writer, XmlValue};
pub use fault::{Fault, FaultCode, FaultDetail, NoDetail};
pub use metadata::Metadata;
pub use service::{DispatchError, Reply, Service};

#[cfg(feature = "runtime")]
pub use basic_http::{BasicHttp, BasicHttpChannel};
#[cfg(feature = "runtime")]
pub use host::{Host, HostConfig};
#[cfg(feature = "runtime")]
pub use net_tcp::{ChannelConfig, NetTcpChannel};
