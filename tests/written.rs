//! Written forwards (`#[nncore::forward]`) against real PyTorch autograd:
//! printing, parameter names, forward outputs, every parameter's gradient
//! and the input's, and three Adam steps, for the models of
//! `scripts/gen_written_fixtures.py` (expected values:
//! `tests/fixtures/written.json`).

mod common;

use common::*;
use nncore::prelude::*;
use serde_json::Value;

#[derive(Module)]
struct SimpleNet {
    fc1: Linear,
    relu: ReLU,
    fc2: Linear,
    tape: Tape,
}

#[nncore::forward]
impl SimpleNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.fc1(x)?;
        let out = self.relu(out)?;
        let out = self.fc2(out)?;
        Ok(out)
    }
}

#[derive(Module)]
struct ResBlock {
    fc1: Linear,
    fc2: Linear,
    tape: Tape,
}

#[nncore::forward]
impl ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = relu(self.fc1(x)?);
        let h = self.fc2(h)?;
        Ok(relu(h + x))
    }
}

#[derive(Module)]
struct ResMlp {
    stem: Linear,
    blocks: Vec<ResBlock>,
    head: Linear,
    tape: Tape,
}

#[nncore::forward]
impl ResMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem(x)?;
        for block in &self.blocks {
            h = block(h)?;
        }
        self.head(h)
    }
}

#[derive(Module)]
struct Gated {
    a: Linear,
    b: Linear,
    out: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Gated {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out(sigmoid(self.a(x)?) * self.b(x)?)
    }
}

#[derive(Module)]
struct TwoBranch {
    left: Linear,
    right: Linear,
    act: Tanh,
    head: Linear,
    tape: Tape,
}

#[nncore::forward]
impl TwoBranch {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let l = self.act(self.left(x)?)?;
        let r = gelu(self.right(x)?);
        self.head(cat(&[l, r], 1))
    }
}

#[derive(Module)]
struct Reuse {
    inp: Linear,
    shared: Linear,
    relu: ReLU,
    head: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Reuse {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.relu(self.inp(x)?)?;
        let h = self.relu(self.shared(h)?)?;
        let h = self.relu(self.shared(h)?)?;
        self.head(h)
    }
}

#[derive(Module)]
struct Dense {
    l1: Linear,
    l2: Linear,
    head: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h1 = relu(self.l1(x)?);
        let h2 = tanh(self.l2(cat(&[x, h1], 1))?);
        let y = self.head(cat(&[x, h1, h2], 1))? * 0.5 - x.narrow(1, 0, 1);
        let [a, b] = y.chunk(2, 1);
        let z = a / (1.0 + b * b) - 2.0 * b;
        Ok(log_softmax(z, 1) + softmax(-z, 1) / 3.0)
    }
}

fn simple_net() -> SimpleNet {
    SimpleNet {
        fc1: Linear::new(12, 16),
        relu: ReLU::new(),
        fc2: Linear::new(16, 5),
        tape: Tape::default(),
    }
}

fn res_block(n: usize) -> ResBlock {
    ResBlock {
        fc1: Linear::new(n, n),
        fc2: Linear::new(n, n),
        tape: Tape::default(),
    }
}

fn res_mlp() -> ResMlp {
    ResMlp {
        stem: Linear::new(6, 12),
        blocks: (0..3).map(|_| res_block(12)).collect(),
        head: Linear::new(12, 4),
        tape: Tape::default(),
    }
}

fn gated() -> Gated {
    Gated {
        a: Linear::new(5, 7),
        b: Linear::new(5, 7),
        out: Linear::new(7, 3),
        tape: Tape::default(),
    }
}

fn two_branch() -> TwoBranch {
    TwoBranch {
        left: Linear::new(5, 4),
        right: Linear::new(5, 6),
        act: Tanh::new(),
        head: Linear::new(10, 3),
        tape: Tape::default(),
    }
}

fn reuse() -> Reuse {
    Reuse {
        inp: Linear::new(5, 8),
        shared: Linear::new(8, 8),
        relu: ReLU::new(),
        head: Linear::new(8, 3),
        tape: Tape::default(),
    }
}

fn dense() -> Dense {
    Dense {
        l1: Linear::new(4, 6),
        l2: Linear::new(10, 6),
        head: Linear::new(16, 6),
        tape: Tape::default(),
    }
}

fn named_values<M: Module>(model: &M, expected: &Value, tol: f32, what: &str, grads: bool) {
    let expected = expected.as_object().unwrap();
    let params = model.named_parameters();
    assert_eq!(params.len(), expected.len(), "{what}: parameter count");
    for (name, p) in params {
        let actual = if grads {
            let g = p
                .grad()
                .unwrap_or_else(|| panic!("{what}: {name} has no grad"));
            row_major(g)
        } else {
            p.to_row_major()
        };
        assert_close(
            &actual,
            &floats(&expected[&name]),
            tol,
            &format!("{what} {name}"),
        );
    }
}

/// Every check of one fixture case on a model built by `make`.
fn check<M: Forward + std::fmt::Display>(name: &str, make: fn() -> M) {
    let fx = fixture("written.json");
    let c = case(&fx, name);
    let mut model = nncore::with_seed(c["seed"].as_u64().unwrap(), make);

    assert_eq!(model.to_string(), c["repr"].as_str().unwrap(), "{name}: print");
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    let expected_names: Vec<String> = c["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected_names, "{name}: names");
    for ((n, p), s) in model
        .named_parameters()
        .into_iter()
        .zip(c["shapes"].as_array().unwrap())
    {
        assert_eq!(p.shape(), usizes(s).as_slice(), "{name}: shape of {n}");
    }
    // nncore's generator is PyTorch's: the same seed gives the same weights.
    named_values(&model, &c["state"], 0.0, &format!("{name}: initial"), false);

    let x = matrix(&c["x_shape"], &c["x"]);
    let w = matrix(&c["out_shape"], &c["w"]);
    let out = model.forward(&x).unwrap();
    assert_close(&row_major(&out), &floats(&c["out"]), 1e-5, &format!("{name}: forward"));
    let mut ws = nncore::Workspace::new();
    let mut into = Tensor::zeros(0, 0);
    model.forward_into(&x, &mut into, &mut ws).unwrap();
    assert_eq!(into, out, "{name}: forward_into");

    model.train();
    let recorded = model.forward_train(&x).unwrap().clone();
    assert_eq!(recorded, out, "{name}: forward_train");
    let dx = model.backward(&w).unwrap().clone();
    assert_close(&row_major(&dx), &floats(&c["dx"]), 1e-5, &format!("{name}: dx"));
    named_values(&model, &c["grads"], 1e-5, &format!("{name}: grad"), true);

    // backward_params gives the same parameter gradients.
    model.zero_grad();
    model.forward_train(&x).unwrap();
    model.backward_params(&w).unwrap();
    named_values(&model, &c["grads"], 1e-5, &format!("{name}: backward_params"), true);

    let mut opt = Adam::new(0.01);
    for _ in 0..3 {
        model.zero_grad();
        model.forward_train(&x).unwrap();
        model.backward_params(&w).unwrap();
        opt.step(&mut model).unwrap();
    }
    named_values(&model, &c["adam"], 1e-5, &format!("{name}: after Adam"), false);
}

#[test]
fn simple_net_written_line_by_line() {
    check("simple_net", simple_net);
}

#[test]
fn residual_blocks_in_a_loop() {
    check("res_mlp", res_mlp);
}

#[test]
fn gated_unit() {
    check("gated", gated);
}

#[test]
fn two_branches_concatenated() {
    check("two_branch", two_branch);
}

#[test]
fn reused_relu_and_tied_linear() {
    check("reuse", reuse);
}

#[test]
fn dense_skip_with_scaling_chunk_and_softmax() {
    check("dense", dense);
}
