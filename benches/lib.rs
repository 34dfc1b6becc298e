//! Nothing: the package holds the criterion benches (`cargo bench`).
