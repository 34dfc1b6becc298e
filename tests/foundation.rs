//! The foundation against real PyTorch: printing, parameter names, order,
//! shapes and counts, the initial weights drawn after `manual_seed`, and
//! forward numerics. Expected values: `tests/fixtures/foundation.json`,
//! written by `scripts/gen_foundation_fixtures.py` with PyTorch.

mod common;

use common::models::{Net, SimpleNet};
use common::*;
use nncore::prelude::*;

#[derive(Module)]
struct Empty {}

/// Checks one fixture case against a model built after seeding as
/// `torch.manual_seed` (`with_seed` keeps the generator to this thread, so
/// tests running in parallel do not draw from it).
fn check_case<M: Forward + std::fmt::Display>(name: &str, make: impl FnOnce() -> M) {
    let fx = fixture("foundation.json");
    let case = case(&fx, name);
    let (model, x) = nncore::with_seed(case["seed"].as_u64().unwrap(), || {
        let model = make();
        // The input was drawn from the same generator, after the weights.
        let x = case.get("input_shape").map(|shape| {
            let shape = usizes(shape);
            nncore::rand_uniform(shape[0], shape[1], -1.0, 1.0)
        });
        (model, x)
    });

    assert_eq!(
        model.to_string(),
        case["repr"].as_str().unwrap(),
        "{name}: print"
    );
    assert_eq!(
        model.num_parameters(),
        case["num_parameters"].as_u64().unwrap() as usize,
        "{name}: num_parameters"
    );

    let params = model.named_parameters();
    let expected = case["params"].as_array().unwrap();
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let expected_names: Vec<&str> = expected
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected_names, "{name}: parameter names and order");
    for ((pname, p), e) in params.iter().zip(expected) {
        assert_eq!(p.shape(), usizes(&e["shape"]).as_slice(), "{pname}: shape");
        // The generator reproduces PyTorch's draws bit for bit.
        assert_eq!(
            p.to_row_major(),
            floats(&e["values"]),
            "{pname}: initial values"
        );
    }

    let modules: Vec<String> = model.named_modules().into_iter().map(|(n, _)| n).collect();
    let expected_modules: Vec<String> = case["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(modules, expected_modules, "{name}: named_modules");

    if let Some(x) = x {
        assert_eq!(row_major(&x), floats(&case["input"]), "{name}: input");
        let y = model.forward(&x).unwrap();
        let out_shape = usizes(&case["output_shape"]);
        assert_eq!(y.shape(), (out_shape[0], out_shape[1]));
        assert_close(&row_major(&y), &floats(&case["output"]), 1e-5, name);
    }
}

#[test]
fn simple_net_matches_pytorch() {
    check_case("simple_net", || SimpleNet::new(100, 50, 10));
}

#[test]
fn nested_two_levels_matches_pytorch() {
    check_case("nested", Net::new);
}

#[test]
fn linear_without_bias_matches_pytorch() {
    check_case("linear_no_bias", || Linear::new_no_bias(7, 3));
}

#[test]
fn linear_matches_pytorch() {
    check_case("linear", || Linear::new(7, 3));
}

#[test]
fn empty_module_matches_pytorch() {
    check_case("empty", || Empty {});
}

#[test]
fn relu_prints_as_pytorch() {
    check_case("relu", ReLU::new);
}

#[test]
fn forward_on_given_weights_matches_pytorch() {
    // Same numbers, but through from_weights instead of the generator.
    let fx = fixture("foundation.json");
    let case = case(&fx, "simple_net");
    let p = case["params"].as_array().unwrap();
    let lin = |w: &serde_json::Value, b: &serde_json::Value| {
        Linear::from_weights(
            matrix(&w["shape"], &w["values"]),
            Some(&floats(&b["values"])),
        )
        .unwrap()
    };
    let model = SimpleNet {
        fc1: lin(&p[0], &p[1]),
        relu: ReLU::new(),
        fc2: lin(&p[2], &p[3]),
    };
    let x = matrix(&case["input_shape"], &case["input"]);
    let y = model.forward(&x).unwrap();
    assert_close(&row_major(&y), &floats(&case["output"]), 1e-5, "simple_net");
}

#[test]
fn shape_errors_name_the_module_path() {
    let model = SimpleNet::new(100, 50, 10);
    let err = model.forward(&Tensor::zeros(64, 60)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SimpleNet.fc1 (Linear): expected input with 100 features, got 60"
    );
    let err = Net::new().forward(&Tensor::zeros(2, 9)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Net.encoder.block.fc (Linear): expected input with 8 features, got 9"
    );
    let mut bad = SimpleNet::new(100, 50, 10);
    bad.fc2 = Linear::new(60, 10);
    let err = bad.forward(&Tensor::zeros(3, 100)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SimpleNet.fc2 (Linear): expected input with 60 features, got 50"
    );
    assert!(matches!(
        err,
        nncore::Error::FeatureMismatch {
            expected: 60,
            got: 50,
            ..
        }
    ));
}
