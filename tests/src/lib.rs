//! Shared helpers for the tests test crate.
