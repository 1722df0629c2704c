//! Contracts generated from `wsdl/` by `ferry codegen` (checked in; the `bootstrap` test fails
//! when they are stale).

pub mod calculator;
pub mod relay;
