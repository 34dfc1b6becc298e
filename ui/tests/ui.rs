//! Compile-fail tests for misuse of `#[derive(Module)]`: each file under
//! `tests/ui/` holds one mistake, its `.stderr` the exact error the user
//! sees. Regenerate with `TRYBUILD=overwrite cargo test -p nnrs-ui` and read
//! the diff before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
