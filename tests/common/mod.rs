//! Helpers shared by the integration tests: reading the PyTorch fixtures
//! written by the scripts under `scripts/`.
#![allow(dead_code)]

pub mod models;

use nncore::Tensor;
use serde_json::Value;

/// Reads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The case called `name` in a fixture's `cases` list.
pub fn case<'a>(fixture: &'a Value, name: &str) -> &'a Value {
    fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// A row-major PyTorch tensor of 2-D `shape` as a nalgebra matrix.
pub fn matrix(shape: &Value, values: &Value) -> Tensor {
    let shape = usizes(shape);
    assert_eq!(shape.len(), 2);
    Tensor::from_row_slice(shape[0], shape[1], &floats(values))
}

/// Asserts `|a - b| <= tol * max(1, |b|)` element-wise.
pub fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        assert!(
            err <= tol * e.abs().max(1.0),
            "{what}[{i}]: got {a}, expected {e} (|diff| = {err})"
        );
    }
}

/// Row-major values of a matrix.
pub fn row_major(t: &Tensor) -> Vec<f32> {
    t.transpose().as_slice().to_vec()
}

/// The path of `tests/fixtures/<name>`.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh directory under the system's temporary directory, unique to
/// this process and `tag`.
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nncore-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that `nncore::summary` of `model` prints exactly the text
/// torchinfo printed for case `name` of `tests/fixtures/summary.json`
/// (written by `scripts/gen_summary_fixtures.py`).
pub fn check_summary<M: nncore::Forward + ?Sized>(name: &str, model: &M) {
    let fx = fixture("summary.json");
    let c = case(&fx, name);
    let shape = usizes(&c["input"]);
    let s = nncore::summary_nd(model, &shape).unwrap();
    let expected = c["text"].as_str().unwrap();
    assert_eq!(
        s.to_string(),
        expected,
        "{name}:\n{s}\n---- torchinfo:\n{expected}"
    );
}

/// Every state_dict entry (parameters and buffers) of `m` against the
/// fixture's `expected` object (name -> row-major values, or an integer
/// for an `int64` counter), within 1e-5; `what` names the moment.
pub fn check_state<M: nncore::Module>(m: &M, expected: &Value, what: &str) {
    use nncore::{DType, ModuleExt};
    let sd = m.state_dict();
    // (The JSON object's keys come back sorted; callers check the order
    // against a fixture's "keys" list.)
    let mut keys: Vec<&str> = sd.keys().collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        expected.as_object().unwrap().keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, t) in sd.iter() {
        let e = &expected[name];
        match t.dtype() {
            DType::I64 => assert_eq!(t.as_i64().unwrap(), [e.as_i64().unwrap()], "{what} {name}"),
            _ => assert_close(
                t.as_f32().unwrap(),
                &floats(e),
                1e-5,
                &format!("{what} {name}"),
            ),
        }
    }
}

/// Every parameter's gradient of `m` against the fixture's `expected`
/// object (name -> row-major values), within 1e-5.
pub fn check_grads<M: nncore::Module>(m: &M, expected: &Value, what: &str) {
    use nncore::ModuleExt;
    for (name, p) in m.named_parameters() {
        assert_close(
            &row_major(p.grad().unwrap()),
            &floats(&expected[&name]),
            1e-5,
            &format!("{what} {name}"),
        );
    }
}
