//! The package that holds nncore's runnable examples (`train_digits`,
//! `simple_net`, `pytorch_interop`); it has no library code of its own.
//! Run one from the repository root:
//! `cargo run --release --example train_digits`.
