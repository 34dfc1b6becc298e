//! The workspace's root package: it hosts the examples, the integration and
//! UI tests and the benches, and re-exports [`nncore`] for them. Use
//! `nncore` directly in your own projects.
#![deny(missing_docs)]

pub use nncore;
