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

// The residual block of the speed workloads: relu(fc2(relu(fc1(x))) + x).
use nnrs::workloads::ResBlock;

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
fn check<M: Backward + std::fmt::Display>(name: &str, make: fn() -> M) {
    let fx = fixture("written.json");
    let c = case(&fx, name);
    let mut model = nncore::with_seed(c["seed"].as_u64().unwrap(), make);

    assert_eq!(
        model.to_string(),
        c["repr"].as_str().unwrap(),
        "{name}: print"
    );
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
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
    assert_close(
        &row_major(&out),
        &floats(&c["out"]),
        1e-5,
        &format!("{name}: forward"),
    );
    let mut ws = nncore::Workspace::new();
    let mut into = Tensor::zeros(0, 0);
    model.forward_into(&x, &mut into, &mut ws).unwrap();
    assert_eq!(into, out, "{name}: forward_into");

    model.train();
    let recorded = model.forward_train(&x).unwrap().clone();
    assert_eq!(recorded, out, "{name}: forward_train");
    let dx = model.backward(&w).unwrap().clone();
    assert_close(
        &row_major(&dx),
        &floats(&c["dx"]),
        1e-5,
        &format!("{name}: dx"),
    );
    named_values(&model, &c["grads"], 1e-5, &format!("{name}: grad"), true);

    // backward_params gives the same parameter gradients.
    model.zero_grad();
    model.forward_train(&x).unwrap();
    model.backward_params(&w).unwrap();
    named_values(
        &model,
        &c["grads"],
        1e-5,
        &format!("{name}: backward_params"),
        true,
    );

    let mut opt = Adam::new(0.01);
    for _ in 0..3 {
        model.zero_grad();
        model.forward_train(&x).unwrap();
        model.backward_params(&w).unwrap();
        opt.step(&mut model).unwrap();
    }
    named_values(
        &model,
        &c["adam"],
        1e-5,
        &format!("{name}: after Adam"),
        false,
    );
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

// ---- Semantics beyond the fixtures -------------------------------------

#[derive(Module)]
struct Deep {
    stem: Linear,
    blocks: Vec<ResBlock>,
    #[module(skip)]
    scale: f32,
    norm: Option<Tanh>,
    tape: Tape,
}

#[nncore::forward]
impl Deep {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem(x)?;
        for (i, block) in self.blocks.iter().enumerate() {
            if i % 2 == 0 {
                h = block(h)?;
            } else {
                h = h + block(h)? * self.scale;
            }
        }
        if self.blocks.len() > 1 {
            h = self.blocks[0](h)?;
        }
        if let Some(norm) = &self.norm {
            h = norm(h)?;
        }
        Ok(h)
    }
}

fn deep(blocks: usize, norm: bool) -> Deep {
    nncore::with_seed(7, || Deep {
        stem: Linear::new(3, 10),
        blocks: (0..blocks).map(|_| res_block(10)).collect(),
        scale: 0.5,
        norm: norm.then(Tanh::new),
        tape: Tape::default(),
    })
}

#[test]
fn shape_errors_name_the_module_path() {
    let mut m = deep(3, true);
    let e = m.forward(&Tensor::zeros(2, 4)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Deep.stem (Linear): expected input with 3 features, got 4"
    );
    // An element of the list, reached in the loop.
    m.blocks[1].fc2 = Linear::new(12, 10);
    let e = m.forward(&Tensor::zeros(2, 3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Deep.blocks.1.fc2 (Linear): expected input with 12 features, got 10"
    );
    let e = m.forward_train(&Tensor::zeros(2, 3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Deep.blocks.1.fc2 (Linear): expected input with 12 features, got 10"
    );
    let mut ws = nncore::Workspace::new();
    let mut out = Tensor::zeros(0, 0);
    let e = m
        .forward_into(&Tensor::zeros(2, 3), &mut out, &mut ws)
        .unwrap_err();
    assert!(
        e.to_string().starts_with("Deep.blocks.1.fc2 (Linear)"),
        "{e}"
    );
}

#[test]
fn element_wise_errors_are_pytorch_messages() {
    let mut g = gated();
    g.b = Linear::new(5, 6);
    let e = g.forward(&Tensor::zeros(2, 5)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Gated: The size of tensor a (7) must match the size of tensor b (6) at non-singleton dimension 1"
    );
    let e = g.forward_train(&Tensor::zeros(2, 5)).unwrap_err();
    assert!(
        e.to_string()
            .contains("must match the size of tensor b (6)"),
        "{e}"
    );
    let mut t = two_branch();
    t.right = Linear::new(5, 6);
    // Fine shapes still work after an error (no state left behind).
    assert_eq!(t.forward(&Tensor::zeros(2, 5)).unwrap().shape(), (2, 3));
}

#[test]
fn written_forwards_pass_gradcheck() {
    let x = nncore::Generator::new(3).uniform_tensor(4, 3, -1.0, 1.0);
    let mut m = deep(3, true);
    nncore::gradcheck(&mut m, &x).unwrap();
    let mut m = deep(2, false);
    nncore::gradcheck(&mut m, &x).unwrap();
    let xd = nncore::Generator::new(4).uniform_tensor(3, 4, -1.0, 1.0);
    let mut d = nncore::with_seed(5, dense);
    let report = nncore::gradcheck(&mut d, &xd).unwrap();
    assert_eq!(report.checked, d.num_parameters() + 12);
}

/// A hand-written backward that forgets the skip connection's `+ grad`:
/// the gradient check must catch it.
#[derive(Module)]
#[module(custom_forward)]
struct ForgotSkip {
    fc: Linear,
}

impl Forward for ForgotSkip {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        Ok(self.fc.forward(x)? + x)
    }
}

impl Backward for ForgotSkip {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> nncore::Result<&'a Tensor> {
        self.fc.forward_train(x)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> nncore::Result<&'a Tensor> {
        self.fc.backward(grad) // missing: + grad
    }
}

#[test]
fn gradcheck_fails_loudly_on_a_wrong_backward() {
    let mut m = nncore::with_seed(1, || ForgotSkip {
        fc: Linear::new(3, 3),
    });
    let x = nncore::Generator::new(2).uniform_tensor(2, 3, -1.0, 1.0);
    let e = nncore::gradcheck(&mut m, &x).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("gradient check failed: "), "{msg}");
    assert!(msg.contains("input["), "{msg}");
}

#[test]
fn gradients_of_a_reused_parameter_accumulate_over_uses_and_steps() {
    let fx = fixture("written.json");
    let c = case(&fx, "reuse");
    let x = matrix(&c["x_shape"], &c["x"]);
    let w = matrix(&c["out_shape"], &c["w"]);
    let mut m = nncore::with_seed(4, reuse);
    // Two backward passes without zero_grad accumulate, as in PyTorch.
    for _ in 0..2 {
        m.forward_train(&x).unwrap();
        m.backward(&w).unwrap();
    }
    let once = floats(&c["grads"]["shared.weight"]);
    let twice: Vec<f32> = once.iter().map(|v| 2.0 * v).collect();
    assert_close(
        &row_major(m.shared.weight().grad().unwrap()),
        &twice,
        1e-5,
        "accumulated shared.weight",
    );
    // Frozen parameters get no gradient.
    m.zero_grad();
    m.shared.requires_grad_(false);
    m.forward_train(&x).unwrap();
    m.backward(&w).unwrap();
    assert!(m.shared.weight().grad().is_none());
    assert!(m.head.weight().grad().is_some());
}

#[test]
fn backward_needs_a_recorded_forward_and_the_output_shape() {
    let mut m = gated();
    let g = Tensor::zeros(2, 3);
    let e = m.backward(&g).unwrap_err();
    assert!(
        e.to_string()
            .contains("backward called without a recorded forward"),
        "{e}"
    );
    m.forward_train(&Tensor::zeros(2, 5)).unwrap();
    let e = m.backward(&Tensor::zeros(2, 4)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Gated: expected gradient of shape [2, 3], got [2, 4]"
    );
    m.backward(&g).unwrap();
    let e = m.backward(&g).unwrap_err();
    assert!(e.to_string().contains("without a recorded forward"), "{e}");
}

#[derive(Module)]
struct TwiceDropped {
    fc: Linear,
    drop: Dropout,
    tape: Tape,
}

#[nncore::forward]
impl TwiceDropped {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.drop(x)?;
        let h = self.fc(h)?;
        self.drop(h)
    }
}

#[test]
fn a_random_layer_used_twice_is_an_error_not_a_wrong_gradient() {
    let mut m = TwiceDropped {
        fc: Linear::new(64, 64),
        drop: Dropout::new(0.5).unwrap(),
        tape: Tape::default(),
    };
    m.train();
    let x = Tensor::from_element(8, 64, 1.0);
    m.forward_train(&x).unwrap();
    let e = m.backward(&Tensor::from_element(8, 64, 1.0)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("TwiceDropped.drop (Dropout): called at several places"),
        "{e}"
    );
    // In eval mode Dropout is the identity: replay agrees.
    m.eval();
    m.forward_train(&x).unwrap();
    m.backward(&Tensor::from_element(8, 64, 1.0)).unwrap();
}

#[derive(Module)]
struct Broadcast {
    fc: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Broadcast {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc(x)?; // (batch, 4)
        let col = h.narrow(1, 0, 1); // (batch, 1)
        let row = h.narrow(0, 0, 1); // (1, 4)
        let n = 2;
        let parts = h.chunk(n, 1); // a Vec of two (batch, 2)
        let swapped = cat(&[parts[1], parts[0]], 1);
        Ok(h * col - row / (2.0 + exp(col)) + sqrt(h * h + 1.0) + swapped)
    }
}

#[test]
fn broadcasting_slices_and_lists_of_chunks_differentiate() {
    let mut m = nncore::with_seed(9, || Broadcast {
        fc: Linear::new(3, 4),
        tape: Tape::default(),
    });
    let x = nncore::Generator::new(5).uniform_tensor(5, 3, -1.0, 1.0);
    assert_eq!(m.forward(&x).unwrap().shape(), (5, 4));
    nncore::gradcheck(&mut m, &x).unwrap();
}

#[derive(Module)]
struct Thirds {
    fc: Linear,
    #[module(skip)]
    widths: Vec<usize>,
    tape: Tape,
}

#[nncore::forward]
impl Thirds {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut total = 0;
        for w in &self.widths {
            total += *w;
        }
        let [a, b, c] = self.fc(x)?.chunk(3, 1);
        Ok(cat(&[c, b, a], 1) * (total as f32))
    }
}

#[test]
fn chunk_into_a_fixed_number_checks_the_count() {
    let m = Thirds {
        fc: Linear::new(2, 6),
        widths: vec![1, 2],
        tape: Tape::default(),
    };
    let x = Tensor::from_element(1, 2, 1.0);
    assert_eq!(m.forward(&x).unwrap().shape(), (1, 6));
    let m = Thirds {
        fc: Linear::new(2, 4),
        widths: vec![1],
        tape: Tape::default(),
    };
    let e = m.forward(&x).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Thirds: chunk gave 2 pieces, not the 3 the forward unpacks (expected 3, got 2)"
    );
}

#[derive(Module)]
struct Generic<L> {
    inner: L,
    tape: Tape,
}

#[nncore::forward]
impl<L: Backward> Generic<L> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.inner(x)?;
        Ok(h * 2.0 + x)
    }
}

#[derive(Module)]
struct Pair(Linear, Linear, Tape);

#[nncore::forward]
impl Pair {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.0(x)?;
        let b = (self.1)(x)?;
        Ok(a - b)
    }
}

#[test]
fn generic_and_tuple_structs_write_forwards() {
    let mut g = nncore::with_seed(2, || Generic {
        inner: Linear::new(3, 3),
        tape: Tape::default(),
    });
    let x = nncore::Generator::new(1).uniform_tensor(2, 3, -1.0, 1.0);
    nncore::gradcheck(&mut g, &x).unwrap();
    let mut p = nncore::with_seed(3, || {
        Pair(Linear::new(3, 2), Linear::new(3, 2), Tape::default())
    });
    assert_eq!(
        p.to_string(),
        "Pair(\n  (0): Linear(in_features=3, out_features=2, bias=True)\n  (1): Linear(in_features=3, out_features=2, bias=True)\n)"
    );
    nncore::gradcheck(&mut p, &x).unwrap();
    let e = p.forward(&Tensor::zeros(1, 4)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Pair.0 (Linear): expected input with 3 features, got 4"
    );
}

/// `relu(self.fc(x)?)`, `self.fc(x)?.relu()` and the ReLU written on its
/// own line: the first two let `Linear` apply the ReLU to its sums at
/// inference (`Eval::call_relu`); every form gives the derived chain's
/// bits, in `forward` and `forward_into`, at every batch size the kernels
/// distinguish, and an error in the fused call still names the child.
#[derive(Module)]
struct FusedForms {
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    form: usize,
    tape: Tape,
}

#[nncore::forward]
impl FusedForms {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match self.form {
            0 => relu(self.fc1(x)?),
            1 => self.fc1(x)?.relu(),
            _ => {
                let h = self.fc1(x)?;
                relu(h)
            }
        };
        self.fc2(h)
    }
}

#[derive(Module)]
struct ChainForm {
    fc1: Linear,
    relu: ReLU,
    fc2: Linear,
}

#[test]
fn a_relu_around_a_child_call_fuses_with_the_chains_bits() {
    let chain = nncore::with_seed(4, || ChainForm {
        fc1: Linear::new(37, 50),
        relu: ReLU::new(),
        fc2: Linear::new(50, 3),
    });
    let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for form in 0..3 {
        let m = nncore::with_seed(4, || FusedForms {
            fc1: Linear::new(37, 50),
            fc2: Linear::new(50, 3),
            form,
            tape: Tape::default(),
        });
        for rows in [1usize, 3, 30, 200] {
            let x = nncore::Generator::new(rows as u64).uniform_tensor(rows, 37, -1.0, 1.0);
            let (mut out, mut ws) = (Tensor::zeros(0, 0), nncore::Workspace::new());
            // Before and after the layers' packed copies exist.
            for _ in 0..3 {
                let want = bits(&chain.forward(&x).unwrap());
                assert_eq!(
                    bits(&m.forward(&x).unwrap()),
                    want,
                    "form {form}, {rows} rows"
                );
                m.forward_into(&x, &mut out, &mut ws).unwrap();
                assert_eq!(bits(&out), want, "form {form}, {rows} rows, forward_into");
            }
        }
        let e = m.forward(&Tensor::zeros(1, 36)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "FusedForms.fc1 (Linear): expected input with 37 features, got 36"
        );
    }
}

/// A hand-written module whose forward calls a written child's `forward`.
#[derive(Module, Debug)]
#[module(custom_forward)]
struct CallsWritten {
    inner: ResBlock,
    #[module(skip)]
    out: Tensor,
    #[module(skip)]
    grad: Tensor,
}

impl Forward for CallsWritten {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        Ok(self.inner.forward(x)? * 2.0)
    }
}

impl Backward for CallsWritten {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> nncore::Result<&'a Tensor> {
        self.out = self.inner.forward_train(x)? * 2.0;
        Ok(&self.out)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> nncore::Result<&'a Tensor> {
        self.grad = self.inner.backward(&(grad * 2.0))?.clone();
        Ok(&self.grad)
    }
}

#[derive(Module, Debug)]
struct AroundHandWritten {
    wrap: CallsWritten,
    tape: Tape,
}

#[nncore::forward]
impl AroundHandWritten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.wrap(x)? - x)
    }
}

/// A small batch's written `forward` runs on a per-thread workspace; a
/// written forward called inside it (through a hand-written module, while
/// the workspace is in use) runs without it, with the same numbers.
#[test]
fn a_written_forward_inside_a_pooled_one_gives_the_same_numbers() {
    let m = nncore::with_seed(4, || AroundHandWritten {
        wrap: CallsWritten {
            inner: res_block(6),
            out: Tensor::zeros(0, 0),
            grad: Tensor::zeros(0, 0),
        },
        tape: Tape::default(),
    });
    for rows in [1usize, 3, 16, 17, 40] {
        let x = nncore::Generator::new(rows as u64).uniform_tensor(rows, 6, -1.0, 1.0);
        let want = &(m.wrap.inner.forward(&x).unwrap() * 2.0) - &x;
        for _ in 0..2 {
            assert_eq!(m.forward(&x).unwrap(), want, "{rows} rows");
            let (mut out, mut ws) = (Tensor::zeros(0, 0), nncore::Workspace::new());
            m.forward_into(&x, &mut out, &mut ws).unwrap();
            assert_eq!(out, want, "{rows} rows, forward_into");
        }
    }
}
