//! Shared helpers for the interop test crate.
