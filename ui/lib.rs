//! Holds the compile-fail tests in `tests/ui/` (run by `tests/ui.rs`);
//! no library code.
