//! LayerNorm and gradient clipping against real PyTorch (expected values:
//! `tests/fixtures/norm.json`, written by `scripts/gen_norm_fixtures.py`).

mod common;

use common::*;
use nncore::prelude::*;
use serde_json::Value;

#[derive(Module)]
struct LnNet {
    fc1: Linear,
    ln1: LayerNorm,
    relu: ReLU,
    fc2: Linear,
    ln2: LayerNorm,
}

/// The fixture's model with its state, and the input and loss weight.
fn model() -> (LnNet, Value, Tensor, Tensor) {
    let fx = fixture("norm.json");
    let c = fx["model"].clone();
    let mut m = nncore::with_seed(0, || LnNet {
        fc1: Linear::new(6, 8),
        ln1: LayerNorm::new(8),
        relu: ReLU::new(),
        fc2: Linear::new(8, 4),
        ln2: LayerNorm::with_options(4, 1e-3, true, false),
    });
    // The Linear layers' initial weights are PyTorch's for the same seed.
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
        let p = m
            .named_parameters()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1;
        assert_eq!(p.to_row_major(), floats(&c["state"][name]), "{name}");
    }
    m.visit_parameters_mut(&mut |name, p| {
        p.copy_from_row_major(&floats(&c["state"][name])).unwrap();
    });
    let x = Tensor::from_row_slice(5, 6, &floats(&c["x"]));
    let w = Tensor::from_row_slice(5, 4, &floats(&c["w"]));
    (m, c, x, w)
}

#[test]
fn layer_norm_prints_as_pytorch() {
    let fx = fixture("norm.json");
    let ours = [
        LayerNorm::new(64),
        LayerNorm::with_options(8, 1e-3, false, false),
        LayerNorm::with_options(5, 1e-5, true, false),
        LayerNorm::with_options(3, 0.1, true, true),
    ];
    for (m, expected) in ours.iter().zip(fx["reprs"].as_array().unwrap()) {
        assert_eq!(m.to_string(), expected.as_str().unwrap());
    }
    let (m, c, _, _) = model();
    assert_eq!(m.to_string(), c["repr"].as_str().unwrap());
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    let expected: Vec<String> = c["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn layer_norm_forward_backward_and_training_match_pytorch() {
    let (mut m, c, x, w) = model();
    let out = m.forward(&x).unwrap();
    assert_close(&row_major(&out), &floats(&c["out"]), 1e-5, "forward");
    assert_eq!(m.forward_train(&x).unwrap(), &out);
    let dx = m.backward(&w).unwrap().clone();
    assert_close(&row_major(&dx), &floats(&c["dx"]), 1e-5, "dx");
    check_grads(&m, &c["grads"], "grad");

    let mut opt = Sgd::new(0.1).momentum(0.9);
    m.zero_grad();
    for _ in 0..3 {
        m.zero_grad();
        m.forward_train(&x).unwrap();
        m.backward_params(&w).unwrap();
        opt.step(&mut m).unwrap();
    }
    for (name, p) in m.named_parameters() {
        assert_close(
            &p.to_row_major(),
            &floats(&c["sgd"][&name]),
            1e-5,
            &format!("sgd {name}"),
        );
    }
}

#[test]
fn layer_norm_gradcheck_and_errors() {
    let (mut m, _, x, _) = model();
    nncore::gradcheck(&mut m, &x).unwrap();
    let e = m
        .forward(&Tensor::zeros(2, 6))
        .map(|_| ())
        .and_then(|()| LayerNorm::new(8).forward(&Tensor::zeros(2, 7)).map(|_| ()));
    assert_eq!(
        e.unwrap_err().to_string(),
        "LayerNorm: Given normalized_shape=[8], expected input with shape [*, 8], but got input of size[2, 7]"
    );
    let mut ln = LayerNorm::new(3);
    let g = Tensor::zeros(2, 3);
    assert!(ln.backward(&g).is_err());
}

#[test]
fn gradient_clipping_matches_pytorch() {
    let (mut m, c, x, w) = model();
    let fx = fixture("norm.json");
    let run = |m: &mut LnNet| {
        m.zero_grad();
        m.forward_train(&x).unwrap();
        m.backward_params(&w).unwrap();
    };
    check_grads(
        &{
            run(&mut m);
            m
        },
        &c["grads"],
        "before clipping",
    );
    let (mut m, ..) = model();
    for case in ["l2", "inf", "l3_no_clip"] {
        let k = &fx["clip"][case];
        run(&mut m);
        let norm_type = match &k["norm_type"] {
            Value::String(_) => f64::INFINITY,
            v => v.as_f64().unwrap(),
        };
        let total =
            nncore::clip_grad_norm_with(&mut m, k["max_norm"].as_f64().unwrap(), norm_type, false)
                .unwrap();
        let expected = k["total"].as_f64().unwrap() as f32;
        assert!(
            (total - expected).abs() <= 1e-5 * expected,
            "{case}: {total} vs {expected}"
        );
        check_grads(&m, &k["grads"], case);
    }
    run(&mut m);
    nncore::clip_grad_value_(&mut m, 0.05).unwrap();
    check_grads(&m, &fx["clip"]["value"]["grads"], "value");
}

#[test]
fn clipping_edge_cases() {
    let (mut m, _, x, w) = model();
    // No gradients: norm 0, nothing changes.
    assert_eq!(nncore::clip_grad_norm_(&mut m, 1.0).unwrap(), 0.0);
    assert!(m.fc1.weight().grad().is_none());
    m.forward_train(&x).unwrap();
    let mut bad = w.clone();
    bad[(0, 0)] = f32::NAN;
    m.backward(&bad).unwrap();
    let e = nncore::clip_grad_norm_with(&mut m, 1.0, 2.0, true).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("The total norm of order 2.0 for gradients"),
        "{e}"
    );
    assert!(nncore::clip_grad_norm_with(&mut m, 1.0, 0.0, false).is_err());
    assert!(nncore::clip_grad_norm_(&mut m, f64::NAN).is_err());
    assert!(nncore::clip_grad_value_(&mut m, -1.0).is_err());
}

#[test]
fn layer_norm_model_summary_is_torchinfo_text() {
    let (m, ..) = model();
    check_summary("ln_net", &m);
}
