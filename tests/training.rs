//! Training against real PyTorch: losses and their gradients, every
//! parameter's gradient, gradient accumulation, and 5-step optimizer
//! trajectories. Expected values: `tests/fixtures/training.json`, written by
//! `scripts/gen_training_fixtures.py` with PyTorch.

mod common;

use common::models::{Net, SimpleNet};
use common::*;
use nncore::prelude::*;
use nncore::{BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, Reduction};
use serde_json::Value;

fn simple_net() -> SimpleNet {
    SimpleNet::new(6, 5, 3)
}

fn nested() -> Net {
    Net::new()
}

struct Case {
    fx: Value,
    x: Tensor,
    x2: Tensor,
    target: Tensor,
    labels: Vec<i64>,
}

fn load(name: &str) -> Case {
    let fx = fixture("training.json");
    let c = case(&fx, name).clone();
    let x = matrix(&c["input_shape"], &c["input"]);
    let x2 = matrix(&c["input_shape"], &c["x2"]);
    let target = matrix(&c["target_shape"], &c["target"]);
    let labels = c["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    Case {
        fx: c,
        x,
        x2,
        target,
        labels,
    }
}

fn build<M>(seed: u64, make: fn() -> M) -> M {
    nncore::with_seed(seed, make)
}

fn check_grads<M: Module>(model: &M, expected: &Value, tol: f32, what: &str) {
    let expected = expected.as_object().unwrap();
    let params = model.named_parameters();
    assert_eq!(params.len(), expected.len(), "{what}: parameter count");
    for (name, p) in params {
        let g = p
            .grad()
            .unwrap_or_else(|| panic!("{what}: {name} has no grad"));
        let e = floats(&expected[&name]);
        let got = if p.shape().len() == 2 {
            row_major(g)
        } else {
            g.as_slice().to_vec()
        };
        assert_close(&got, &e, tol, &format!("{what}: {name}.grad"));
    }
}

fn check_params<M: Module>(model: &M, expected: &Value, tol: f32, what: &str) {
    let expected = expected.as_object().unwrap();
    for (name, p) in model.named_parameters() {
        assert_close(
            &p.to_row_major(),
            &floats(&expected[&name]),
            tol,
            &format!("{what}: {name}"),
        );
    }
}

fn loss_and_grad(kind: &str, out: &Tensor, c: &Case) -> (f32, Tensor) {
    match kind {
        "mse" => mse_loss(out, &c.target).unwrap(),
        "ce" => cross_entropy(out, &c.labels).unwrap(),
        _ => unreachable!(),
    }
}

/// Forward and training forward against PyTorch's output.
fn check_forward<M: Backward>(name: &str, make: fn() -> M) {
    let c = load(name);
    let mut model = build(c.fx["seed"].as_u64().unwrap(), make);
    let y = model.forward(&c.x).unwrap();
    assert_close(&row_major(&y), &floats(&c.fx["output"]), 1e-5, "output");
    let y_train = model.forward_train(&c.x).unwrap().clone();
    assert_eq!(y, y_train, "forward_train computes what forward does");
}

/// One loss (by its fixture key) and its `dL/d output` on the model's
/// output.
fn check_loss<M: Backward>(name: &str, make: fn() -> M, key: &str) {
    let c = load(name);
    let model = build(c.fx["seed"].as_u64().unwrap(), make);
    let y = model.forward(&c.x).unwrap();
    let bce_target = c.target.map(|t| if t > 0.0 { 1.0 } else { 0.0 });
    let out = match key {
        "mse_mean" => MSELoss::new().forward(&y, &c.target),
        "mse_sum" => MSELoss::new()
            .reduction(Reduction::Sum)
            .forward(&y, &c.target),
        "mse_none" => MSELoss::new()
            .reduction(Reduction::None)
            .forward(&y, &c.target),
        "ce_mean" => CrossEntropyLoss::new().forward(&y, &c.labels),
        "ce_sum" => CrossEntropyLoss::new()
            .reduction(Reduction::Sum)
            .forward(&y, &c.labels),
        "ce_none" => CrossEntropyLoss::new()
            .reduction(Reduction::None)
            .forward(&y, &c.labels),
        "ce_smooth" => CrossEntropyLoss::new()
            .label_smoothing(0.1)
            .forward(&y, &c.labels),
        "bce_mean" => BCEWithLogitsLoss::new().forward(&y, &bce_target),
        "bce_none" => BCEWithLogitsLoss::new()
            .reduction(Reduction::None)
            .forward(&y, &bce_target),
        other => panic!("unknown loss {other}"),
    }
    .unwrap();
    let e = &c.fx["losses"][key];
    let got_loss = if out.loss.ncols() == 1 {
        out.loss.as_slice().to_vec()
    } else {
        row_major(&out.loss)
    };
    assert_close(&got_loss, &floats(&e["loss"]), 1e-5, &format!("{key} loss"));
    assert_close(
        &row_major(&out.grad),
        &floats(&e["grad"]),
        1e-5,
        &format!("{key} grad"),
    );
}

/// Every parameter's gradient and `dL/dx` for a loss kind, then the
/// gradients accumulated over two backward calls.
fn check_gradients<M: Backward>(name: &str, make: fn() -> M, kind: &str) {
    let c = load(name);
    let mut model = build(c.fx["seed"].as_u64().unwrap(), make);
    model.zero_grad();
    let out = model.forward_train(&c.x).unwrap().clone();
    let (_, grad) = loss_and_grad(kind, &out, &c);
    let dx = model.backward(&grad).unwrap().clone();
    check_grads(&model, &c.fx[format!("grads_{kind}")], 1e-5, kind);
    assert_close(
        &row_major(&dx),
        &floats(&c.fx[format!("grad_input_{kind}")]),
        1e-5,
        &format!("{kind} dL/dx"),
    );
}

fn check_accumulation<M: Backward>(name: &str, make: fn() -> M) {
    let c = load(name);
    let mut model = build(c.fx["seed"].as_u64().unwrap(), make);
    model.zero_grad();
    for x in [&c.x, &c.x2] {
        let out = model.forward_train(x).unwrap().clone();
        let (_, grad) = mse_loss(&out, &c.target).unwrap();
        model.backward(&grad).unwrap();
    }
    check_grads(&model, &c.fx["grads_accumulated_mse"], 1e-5, "accumulated");
}

/// Five optimizer steps (by the trajectory's fixture key) against PyTorch.
fn check_trajectory<M: Backward>(name: &str, make: fn() -> M, key: &str) {
    let c = load(name);
    let t = &c.fx["trajectories"][key];
    let mut model = build(c.fx["seed"].as_u64().unwrap(), make);
    let mut opt: Box<dyn Optimizer> = match key {
        "sgd" => Box::new(Sgd::new(0.1)),
        "sgd_momentum_wd" => Box::new(Sgd::new(0.1).momentum(0.9).weight_decay(0.01)),
        "sgd_nesterov" => Box::new(Sgd::new(0.05).momentum(0.9).nesterov(true)),
        "sgd_dampening" => Box::new(Sgd::new(0.05).momentum(0.5).dampening(0.3)),
        "adam" => Box::new(Adam::new(0.01)),
        "adam_wd_amsgrad" => Box::new(Adam::new(0.01).weight_decay(0.01).amsgrad(true)),
        "adamw" => Box::new(Adam::adamw(0.01)),
        "sgd_frozen" => {
            let mut first = true;
            model.visit_parameters_mut(&mut |_, p| {
                if first {
                    p.set_requires_grad(false);
                    first = false;
                }
            });
            Box::new(Sgd::new(0.1).momentum(0.9))
        }
        other => panic!("unknown trajectory {other}"),
    };
    let kind = t["loss"].as_str().unwrap();
    for _ in 0..5 {
        model.zero_grad();
        let out = model.forward_train(&c.x).unwrap();
        let (_, grad) = loss_and_grad(kind, out, &c);
        model.backward(&grad).unwrap();
        opt.step(&mut model).unwrap();
    }
    check_params(&model, &t["params"], 1e-4, key);
}

/// One test per model and check, so that a failure names its cause: the
/// forward, each loss, the gradients per loss, accumulation, and each
/// optimizer.
macro_rules! training_tests {
    ($model:ident, $make:expr) => {
        mod $model {
            use super::*;

            #[test]
            fn forward() {
                check_forward(stringify!($model), $make);
            }

            #[test]
            fn accumulation() {
                check_accumulation(stringify!($model), $make);
            }

            training_tests!(@each $make, check_loss:
                mse_mean, mse_sum, mse_none, ce_mean, ce_sum, ce_none, ce_smooth, bce_mean, bce_none);
            training_tests!(@each $make, check_gradients: mse, ce);
            training_tests!(@each $make, check_trajectory:
                sgd, sgd_momentum_wd, sgd_nesterov, sgd_dampening, adam, adam_wd_amsgrad, adamw, sgd_frozen);
        }
    };
    (@each $make:expr, $check:ident: $($key:ident),*) => {
        mod $check {
            use super::*;
            $(
                #[test]
                fn $key() {
                    $check(module_path!().split("::").nth(1).unwrap(), $make, stringify!($key));
                }
            )*
        }
    };
}

training_tests!(simple_net, simple_net);
training_tests!(nested, nested);

#[test]
fn backward_misuse_is_an_error() {
    let mut model = simple_net();
    let g = Tensor::zeros(2, 3);
    let err = model.backward(&g).unwrap_err();
    assert_eq!(
        err.to_string(),
        "SimpleNet.fc2 (Linear): backward called without a recorded forward (call `forward_train` before each `backward`)"
    );
    model.forward_train(&Tensor::zeros(2, 6)).unwrap();
    let err = model.backward(&Tensor::zeros(2, 4)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("SimpleNet.fc2 (Linear): expected gradient of shape [2, 3]"),
        "{err}"
    );
    model.forward_train(&Tensor::zeros(2, 6)).unwrap();
    model.backward(&g).unwrap();
    // A second backward for one forward.
    assert!(matches!(
        model.backward(&g),
        Err(nncore::Error::NoRecordedForward { .. })
    ));
}

#[derive(Module)]
#[module(custom_forward)]
struct NoBackward {
    fc: Linear,
}

impl Forward for NoBackward {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        self.fc.forward(x)
    }
}

#[derive(Module)]
struct Outer {
    inner: NoBackward,
}

// Training `Outer` does not compile (`NoBackward` has no backward pass:
// tests/ui/train_without_backward.rs); inference works as for any chain.
#[test]
fn a_chain_with_an_inference_only_child_still_infers() {
    let m = Outer {
        inner: NoBackward {
            fc: Linear::new(2, 2),
        },
    };
    let x = Tensor::from_element(1, 2, 1.0);
    assert_eq!(m.forward(&x).unwrap(), m.inner.fc.forward(&x).unwrap());
    let err = m.forward(&Tensor::zeros(1, 3)).unwrap_err();
    // The hand-written forward does not name its `fc`: the path ends at
    // the child, with the type of the layer that failed.
    assert_eq!(
        err.to_string(),
        "Outer.inner (Linear): expected input with 2 features, got 3"
    );
}

#[test]
fn frozen_module_gets_no_gradient_and_no_update() {
    let mut model = simple_net();
    model.fc1.requires_grad_(false);
    let before = model.fc1.weight().value().clone();
    let mut opt = Sgd::new(0.5);
    let x = Tensor::from_element(3, 6, 0.5);
    let out = model.forward_train(&x).unwrap();
    let (_, grad) = mse_loss(out, &Tensor::zeros(3, 3)).unwrap();
    model.backward(&grad).unwrap();
    assert!(model.fc1.weight().grad().is_none());
    assert!(model.fc2.weight().grad().is_some());
    opt.step(&mut model).unwrap();
    assert_eq!(model.fc1.weight().value(), &before);
}

#[test]
fn training_mode_does_not_change_forward() {
    let mut model = simple_net();
    let x = Tensor::from_fn(3, 6, |r, c| (r as f32 - c as f32) * 0.3);
    let a = model.forward(&x).unwrap();
    model.eval();
    let b = model.forward(&x).unwrap();
    model.train();
    let out = model.forward_train(&x).unwrap().clone();
    assert_eq!(a, b);
    assert_eq!(a, out);
}

#[test]
fn invalid_hyper_parameters_are_errors() {
    let mut model = simple_net();
    assert!(Sgd::new(-1.0).step(&mut model).is_err());
    assert!(Sgd::new(0.1).nesterov(true).step(&mut model).is_err());
    assert!(Adam::new(0.1).betas(1.0, 0.9).step(&mut model).is_err());
}

/// The residual pattern documented on `Forward`: a custom forward with a
/// hand-written backward that calls the children's.
#[derive(Module)]
#[module(custom_forward)]
struct Residual {
    fc: Linear,
    relu: ReLU,
    #[module(skip)]
    out: Tensor,
    #[module(skip)]
    grad_in: Tensor,
}

impl Forward for Residual {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        let h = self.fc.forward(x).map_err(|e| e.within("fc", "Residual"))?;
        Ok(self.relu.forward_owned(h)? + x)
    }
}

impl Backward for Residual {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> nncore::Result<&'a Tensor> {
        let h = self
            .fc
            .forward_train(x)
            .map_err(|e| e.within("fc", "Residual"))?;
        let h = self.relu.forward_train(h)?;
        self.out = h + x;
        Ok(&self.out)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> nncore::Result<&'a Tensor> {
        let g = self.relu.backward(grad)?;
        let g = self
            .fc
            .backward(g)
            .map_err(|e| e.within("fc", "Residual"))?;
        self.grad_in = g + grad;
        Ok(&self.grad_in)
    }
}

#[test]
fn residual_block_gradient_matches_finite_differences() {
    let mut block = Residual {
        fc: Linear::new(3, 3),
        relu: ReLU::new(),
        out: Tensor::zeros(0, 0),
        grad_in: Tensor::zeros(0, 0),
    };
    let x = Tensor::from_fn(2, 3, |r, c| 0.3 + 0.2 * r as f32 - 0.25 * c as f32);
    let target = Tensor::zeros(2, 3);
    let out = block.forward_train(&x).unwrap();
    let (_, g) = mse_loss(out, &target).unwrap();
    let dx = block.backward(&g).unwrap().clone();
    let eps = 1e-3;
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += eps;
        let mut xm = x.clone();
        xm[i] -= eps;
        let lp = mse_loss(&block.forward(&xp).unwrap(), &target).unwrap().0;
        let lm = mse_loss(&block.forward(&xm).unwrap(), &target).unwrap().0;
        let fd = (lp - lm) / (2.0 * eps);
        assert!((fd - dx[i]).abs() < 2e-3, "dx[{i}]: fd {fd} vs {}", dx[i]);
    }
}

/// `CrossEntropyLoss` with class weights, ignored labels, label smoothing
/// and every reduction, alone and together, against PyTorch
/// (`tests/fixtures/cross_entropy.json`, `scripts/gen_cross_entropy_fixtures.py`):
/// the loss, and the gradient of the loss (or of `sum(loss * w)` for
/// `Reduction::None`).
#[test]
fn cross_entropy_matches_pytorch_with_every_option() {
    let fx = fixture("cross_entropy.json");
    let (n, c) = (
        fx["rows"].as_u64().unwrap() as usize,
        fx["classes"].as_u64().unwrap() as usize,
    );
    let logits = Tensor::from_row_slice(n, c, &floats(&fx["logits"]));
    let ints = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_i64().unwrap())
            .collect()
    };
    let w = floats(&fx["w"]);
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut ce = CrossEntropyLoss::new();
        let mut labels = ints(&fx["labels"]);
        if let Some(r) = case.get("reduction") {
            ce = ce.reduction(match r.as_str().unwrap() {
                "mean" => Reduction::Mean,
                "sum" => Reduction::Sum,
                _ => Reduction::None,
            });
        }
        if let Some(weight) = case.get("weight") {
            ce = ce.weight(&floats(weight));
        }
        if let Some(s) = case.get("label_smoothing") {
            ce = ce.label_smoothing(s.as_f64().unwrap() as f32);
        }
        if let Some(i) = case.get("ignore_index") {
            ce = ce.ignore_index(i.as_i64().unwrap());
            labels = ints(&fx["labels_clamped"]);
        }
        let out = ce.forward(&logits, &labels).unwrap();
        let loss = out.loss.as_slice().to_vec();
        assert_close(&loss, &floats(&case["loss"]), 1e-5, &format!("{name} loss"));
        let mut grad = out.grad.clone();
        if loss.len() > 1 {
            // d sum(loss * w) / d logits: row i of the gradient times w[i].
            for i in 0..n {
                for j in 0..c {
                    grad[(i, j)] *= w[i];
                }
            }
        }
        assert_close(
            &row_major(&grad),
            &floats(&case["grad"]),
            1e-5,
            &format!("{name} grad"),
        );
    }
}
