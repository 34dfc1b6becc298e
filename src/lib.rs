//! The workspace's root package: it hosts the examples, the integration and
//! UI tests and the benches, and re-exports [`nncore`] for them. Use
//! `nncore` directly in your own projects.
#![deny(missing_docs)]

pub use nncore;

pub mod workloads;

/// The README's Rust code blocks, run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
