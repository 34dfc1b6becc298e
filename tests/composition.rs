//! Containers and standard layers against real PyTorch: printing,
//! parameter names, initial weights, forward outputs and gradients.
//! Expected values: `tests/fixtures/composition.json`, written by
//! `scripts/gen_composition_fixtures.py` with PyTorch.

mod common;

use common::*;
use nncore::prelude::*;
use nncore::{GeluApproximate, Layer};

#[derive(Module)]
struct Stack {
    blocks: Vec<Linear>,
    act: ReLU,
}

#[derive(Module)]
struct EmptyList {
    blocks: Vec<Linear>,
    fc: Linear,
}

#[derive(Module)]
struct Block {
    fc: Linear,
    act: ReLU,
}

impl Block {
    fn new(n: usize) -> Self {
        Block {
            fc: Linear::new(n, n),
            act: ReLU::new(),
        }
    }
}

#[derive(Module)]
struct Blocks {
    layers: [Block; 2],
}

#[derive(Module)]
struct Mlp(Linear, ReLU, Linear);

#[derive(Module)]
struct WithSeq {
    features: Sequential,
    norm: Option<Tanh>,
    head: Linear,
}

impl WithSeq {
    fn new(with_norm: bool) -> Self {
        WithSeq {
            features: seq![
                Linear::new(6, 8),
                GELU::new(),
                Block::new(8),
                Dropout::new(0.1).unwrap()
            ],
            norm: with_norm.then(Tanh::new),
            head: Linear::new(8, 3),
        }
    }
}

#[derive(Module)]
struct Layers {
    identity: Identity,
    sigmoid: Sigmoid,
    tanh: Tanh,
    leaky: LeakyReLU,
    leaky_default: LeakyReLU,
    gelu: GELU,
    gelu_tanh: GELU,
    softmax: Softmax,
    softmax_last: Softmax,
    dropout: Dropout,
    dropout_default: Dropout,
}

#[derive(Module)]
struct Deep {
    stages: Vec<Sequential>,
    heads: Sequential,
}

fn check<M: Backward>(name: &str, make: impl FnOnce() -> M) {
    let fx = fixture("composition.json");
    let case = case(&fx, name);
    let (mut model, x) = nncore::with_seed(case["seed"].as_u64().unwrap(), || {
        let model = make();
        let x = case.get("input_shape").map(|shape| {
            let shape = usizes(shape);
            nncore::rand_uniform(shape[0], shape[1], -1.0, 1.0)
        });
        (model, x)
    });
    model.eval();
    assert_eq!(
        nncore::repr(&model),
        case["repr"].as_str().unwrap(),
        "{name}: print"
    );
    let params = model.named_parameters();
    let expected = case["params"].as_array().unwrap();
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let expected_names: Vec<&str> = expected
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected_names, "{name}: parameter names");
    for ((pname, p), e) in params.iter().zip(expected) {
        assert_eq!(p.shape(), usizes(&e["shape"]).as_slice(), "{pname}");
        assert_eq!(
            p.to_row_major(),
            floats(&case["values"][pname.as_str()]),
            "{name}: {pname} initial values"
        );
    }
    assert_eq!(
        model.num_parameters() as u64,
        case["num_parameters"].as_u64().unwrap()
    );
    if let Some(x) = x {
        assert_eq!(row_major(&x), floats(&case["input"]));
        let y = model.forward(&x).unwrap();
        assert_close(&row_major(&y), &floats(&case["output"]), 1e-5, name);
        // The training forward (eval mode: dropout off) agrees.
        let y2 = model.forward_train(&x).unwrap();
        assert_close(&row_major(y2), &floats(&case["output"]), 1e-5, name);
    }
}

#[test]
fn module_list_collapses_repeats_like_pytorch() {
    check("stack", || {
        // Built in PyTorch's order: the three 16x16 layers first.
        let mut blocks: Vec<Linear> = (0..3).map(|_| Linear::new(16, 16)).collect();
        blocks.push(Linear::new(16, 4));
        Stack {
            blocks,
            act: ReLU::new(),
        }
    });
}

#[test]
fn empty_module_list_prints_like_pytorch() {
    check("empty_list", || EmptyList {
        blocks: Vec::new(),
        fc: Linear::new(3, 2),
    });
}

#[test]
fn arrays_of_derived_modules_are_module_lists() {
    check("blocks", || Blocks {
        layers: [Block::new(6), Block::new(6)],
    });
}

#[test]
fn tuple_structs_name_children_by_index() {
    check("mlp_tuple", || {
        Mlp(Linear::new(5, 7), ReLU::new(), Linear::new(7, 3))
    });
}

#[test]
fn optional_children_and_sequential_fields() {
    check("with_seq_none", || WithSeq::new(false));
    check("with_seq_some", || WithSeq::new(true));
}

#[test]
fn every_standard_layer_prints_like_pytorch() {
    check("layers", || Layers {
        identity: Identity::new(),
        sigmoid: Sigmoid::new(),
        tanh: Tanh::new(),
        leaky: LeakyReLU::new(0.2),
        leaky_default: LeakyReLU::default(),
        gelu: GELU::new(),
        gelu_tanh: GELU::with_approximate(GeluApproximate::Tanh),
        softmax: Softmax::new(1),
        softmax_last: Softmax::new(-1),
        dropout: Dropout::new(0.3).unwrap(),
        dropout_default: Dropout::new(0.5).unwrap(),
    });
}

#[test]
fn containers_nest_two_levels_deep() {
    check("deep", || Deep {
        stages: (0..2)
            .map(|_| seq![Linear::new(4, 4), LeakyReLU::new(0.1)])
            .collect(),
        heads: seq![seq![Linear::new(4, 2), Sigmoid::new()], Identity::new()],
    });
}

#[test]
fn sequential_prints_like_pytorch() {
    check("sequential", || {
        seq![Linear::new(4, 8), ReLU::new(), Linear::new(8, 2)]
    });
    check("sequential_empty", Sequential::new);
}

#[test]
fn boxed_layers_make_a_heterogeneous_module_list() {
    check("module_list_top", || {
        let v: Vec<Box<dyn Layer>> = vec![
            Box::new(ReLU::new()),
            Box::new(ReLU::new()),
            Box::new(Linear::new(2, 2)),
            Box::new(ReLU::new()),
        ];
        v
    });
}

fn layer_for(name: &str) -> Box<dyn Layer> {
    match name {
        "identity" => Box::new(Identity::new()),
        "sigmoid" => Box::new(Sigmoid::new()),
        "tanh" => Box::new(Tanh::new()),
        "leaky_relu" => Box::new(LeakyReLU::new(0.2)),
        "gelu" => Box::new(GELU::new()),
        "gelu_tanh" => Box::new(GELU::with_approximate(GeluApproximate::Tanh)),
        "softmax_1" => Box::new(Softmax::new(1)),
        "softmax_0" => Box::new(Softmax::new(0)),
        "relu" => Box::new(ReLU::new()),
        other => panic!("no layer {other}"),
    }
}

#[test]
fn layer_outputs_and_gradients_match_pytorch() {
    let fx = fixture("composition.json");
    for case in fx["layers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut layer = layer_for(name);
        let x = Tensor::from_row_slice(4, 5, &floats(&case["input"]));
        let w = Tensor::from_row_slice(4, 5, &floats(&case["w"]));
        let y = layer.forward(&x).unwrap();
        assert_close(&row_major(&y), &floats(&case["output"]), 1e-5, name);
        let y_train = layer.forward_train(&x).unwrap().clone();
        assert_eq!(y, y_train, "{name}");
        let dx = layer.backward(&w).unwrap();
        assert_close(&row_major(dx), &floats(&case["grad_input"]), 1e-5, name);
        // In place through forward_owned gives the same numbers.
        assert_eq!(layer.forward_owned(x.clone()).unwrap(), y, "{name}");
    }
}

/// `|got - want|` in units of `want`'s last place (of the least normal
/// float for smaller values).
fn ulps_off(got: f32, want: f32) -> f64 {
    let scale = f64::from(want.abs().max(f32::MIN_POSITIVE)) * f64::from(f32::EPSILON);
    f64::from((got - want).abs()) / scale
}

/// The activations over their whole range (dense in [-12, 12], and where
/// nncore's formulas switch branches or saturate), against PyTorch's CPU
/// `float32` results: on one row (the batch-1 row path), as a column (a
/// batch of single values) and in training, with the input gradient.
#[test]
fn activations_match_pytorch_over_their_whole_range() {
    let fx = fixture("activations.json");
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let x = floats(&case["input"]);
        let (want, w, want_dx) = (
            floats(&case["output"]),
            floats(&case["w"]),
            floats(&case["grad_input"]),
        );
        let n = x.len();
        // Allowed ulps, and absolute errors of outputs and gradients where
        // float32 itself is off: PyTorch's GELU by up to 5e-7 (its erf has
        // an absolute error of about 1e-7, 20% of gelu(-5)); the tanh GELU
        // where `1 + tanh` cancels, and its slope where `1 - tanh^2` does
        // (a tanh one ulp from +-1 in one library, +-1 in the other).
        let (max_ulps, abs, abs_grad) = match name {
            "gelu" => (4.0, 1e-6, 1e-6),
            "gelu_tanh" => (8.0, 4e-7, 2e-6),
            _ => (4.0, 1e-30, 1e-7),
        };
        let check = |got: &[f32], want: &[f32], what: &str, abs: f32| {
            for i in 0..n.min(got.len()) {
                let (g, e) = (got[i], want[i]);
                assert!(
                    ulps_off(g, e) <= max_ulps || (g - e).abs() <= abs,
                    "{name} {what} at x = {}: {g}, PyTorch {e} ({:.1} ulp)",
                    x[i],
                    ulps_off(g, e)
                );
            }
        };
        let row = Tensor::from_row_slice(1, n, &x);
        let mut layer = layer_for(name);
        let y = layer.forward(&row).unwrap();
        check(y.as_slice(), &want, "forward (one row)", abs);
        if name != "softmax_1" {
            // (A column is a batch of one-value softmaxes.)
            let col = Tensor::from_row_slice(n, 1, &x);
            check(
                layer.forward(&col).unwrap().as_slice(),
                &want,
                "forward (a column)",
                abs,
            );
            let y_train = layer.forward_train(&col).unwrap().clone();
            check(y_train.as_slice(), &want, "forward_train", abs);
            let g = Tensor::from_row_slice(n, 1, &w);
            let dx = layer.backward(&g).unwrap();
            check(dx.as_slice(), &want_dx, "grad_input", abs_grad);
        } else {
            layer.forward_train(&row).unwrap();
            let g = Tensor::from_row_slice(1, n, &w);
            let dx = layer.backward(&g).unwrap();
            check(dx.as_slice(), &want_dx, "grad_input", abs_grad);
        }
    }
}

#[test]
fn gradients_through_containers_match_pytorch() {
    let fx = fixture("composition.json");
    let t = &fx["train"];
    let mut model = nncore::with_seed(t["seed"].as_u64().unwrap(), || WithSeq::new(true));
    model.eval();
    let x = Tensor::from_row_slice(5, 6, &floats(&t["input"]));
    let target = Tensor::from_row_slice(5, 3, &floats(&t["target"]));
    let out = model.forward_train(&x).unwrap();
    let (_, g) = mse_loss(out, &target).unwrap();
    model.backward(&g).unwrap();
    for (name, p) in model.named_parameters() {
        let got = if p.shape().len() == 2 {
            row_major(p.grad().unwrap())
        } else {
            p.grad().unwrap().as_slice().to_vec()
        };
        assert_close(&got, &floats(&t["grads"][name.as_str()]), 1e-5, &name);
    }
}

#[test]
fn dropout_drops_at_rate_p_scales_and_reuses_its_mask_in_backward() {
    // Dropout draws its masks from the default generator: seed it on this
    // thread only.
    let x = Tensor::from_element(200, 50, 1.0);
    let (y, dx) = nncore::with_seed(5, || {
        let mut d = Dropout::new(0.25).unwrap();
        let y = d.forward_train(&x).unwrap().clone();
        let g = Tensor::from_element(200, 50, 3.0);
        let dx = d.backward(&g).unwrap().clone();
        (y, dx)
    });
    let dropped = y.iter().filter(|v| **v == 0.0).count() as f64 / y.len() as f64;
    assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
    assert!(y.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
    for (a, b) in dx.iter().zip(y.iter()) {
        assert_eq!(*a, 3.0 * *b);
    }
    // Seeded: the same seed gives the same mask; another seed another one.
    let again = nncore::with_seed(5, || {
        Dropout::new(0.25)
            .unwrap()
            .forward_train(&x)
            .unwrap()
            .clone()
    });
    assert_eq!(again, y);
    let other = nncore::with_seed(6, || {
        Dropout::new(0.25)
            .unwrap()
            .forward_train(&x)
            .unwrap()
            .clone()
    });
    assert_ne!(other, y);
    // Its own generator works too.
    let mut own = Dropout::with_generator(0.5, nncore::Generator::new(1)).unwrap();
    assert!(own.forward_train(&x).unwrap().iter().any(|v| *v == 0.0));
    // p = 1 zeroes everything; eval and p = 0 are the identity.
    let mut all = Dropout::new(1.0).unwrap();
    assert!(all.forward_train(&x).unwrap().iter().all(|v| *v == 0.0));
    let mut none = Dropout::new(0.0).unwrap();
    assert_eq!(none.forward_train(&x).unwrap(), &x);
    let mut eval = Dropout::new(0.9).unwrap();
    eval.eval();
    assert_eq!(eval.forward_train(&x).unwrap(), &x);
    let err = Dropout::new(-0.1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dropout probability has to be between 0 and 1, but got -0.1"
    );
}

#[test]
fn container_errors_name_the_element() {
    let model = Stack {
        blocks: vec![Linear::new(4, 4), Linear::new(5, 4)],
        act: ReLU::new(),
    };
    let err = model.forward(&Tensor::zeros(2, 4)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Stack.blocks.1 (Linear): expected input with 5 features, got 4"
    );
    let s = seq![Linear::new(3, 3), ReLU::new(), Linear::new(4, 1)];
    let err = s.forward(&Tensor::zeros(1, 3)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Sequential.2 (Linear): expected input with 4 features, got 3"
    );
}

#[test]
fn train_eval_reach_into_containers() {
    let mut m = WithSeq::new(true);
    m.eval();
    assert!(!m.features.get(3).unwrap().is_training());
    m.train();
    assert!(m.features.get(3).unwrap().is_training());
    assert!(m.is_training());
}

#[test]
fn summary_lists_layers_shapes_and_counts() {
    let model = WithSeq::new(true);
    let s = nncore::summary(&model, (32, 6)).unwrap();
    type Row<'a> = (&'a str, &'a str, Option<(usize, usize)>, usize);
    let rows: Vec<Row<'_>> = s
        .rows
        .iter()
        .map(|r| {
            (
                r.path.as_str(),
                r.type_name.as_str(),
                r.output_shape.as_ref().map(|s| (s[0], s[1])),
                r.params,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("", "WithSeq", Some((32, 3)), 56 + 72 + 27),
            ("features", "Sequential", Some((32, 8)), 56 + 72),
            ("features.0", "Linear", Some((32, 8)), 56),
            ("features.1", "GELU", Some((32, 8)), 0),
            ("features.2", "Block", Some((32, 8)), 72),
            ("features.2.fc", "Linear", Some((32, 8)), 72),
            ("features.2.act", "ReLU", Some((32, 8)), 0),
            ("features.3", "Dropout", Some((32, 8)), 0),
            ("norm", "Tanh", Some((32, 8)), 0),
            ("head", "Linear", Some((32, 3)), 27),
        ]
    );
    let mut frozen = WithSeq::new(false);
    frozen.head.requires_grad_(false);
    let s = nncore::summary(&frozen, (1, 6)).unwrap();
    assert_eq!(s.total_params, 155);
    assert_eq!(s.frozen_params, 27);
    assert_eq!(s.trainable_params, 128);
    // The dotted-path form.
    let text = format!("{s:#}");
    assert!(text.contains("Total params: 155 (155)"), "{text}");
    assert!(text.contains("Non-trainable params: 27"), "{text}");
    assert!(text.contains("  features.2.fc (Linear)"), "{text}");
    assert!(nncore::summary(&frozen, (1, 7)).is_err());
}

#[test]
fn forward_into_and_backward_params_agree_with_forward_and_backward() {
    let mut model = nncore::with_seed(3, || Net2 {
        stem: seq![Linear::new(5, 6), GELU::new()],
        blocks: vec![Block::new(6), Block::new(6)],
        gate: Some(Sigmoid::new()),
        skip: None,
        head: Linear::new(6, 2),
    });
    model.eval();
    let x = nncore::with_seed(4, || nncore::rand_uniform(3, 5, -1.0, 1.0));
    let mut out = Tensor::zeros(0, 0);
    let mut ws = nncore::Workspace::new();
    model.forward_into(&x, &mut out, &mut ws).unwrap();
    assert_eq!(out, model.forward(&x).unwrap());
    let g = Tensor::from_element(3, 2, 0.25);
    model.zero_grad();
    model.forward_train(&x).unwrap();
    model.backward(&g).unwrap();
    let full: Vec<Tensor> = model
        .parameters()
        .iter()
        .map(|p| p.grad().unwrap().clone())
        .collect();
    model.zero_grad();
    model.forward_train(&x).unwrap();
    model.backward_params(&g).unwrap();
    let params_only: Vec<Tensor> = model
        .parameters()
        .iter()
        .map(|p| p.grad().unwrap().clone())
        .collect();
    assert_eq!(full, params_only);
    let err = model
        .forward_into(&Tensor::zeros(1, 4), &mut out, &mut ws)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Net2.stem.0 (Linear): expected input with 5 features, got 4"
    );
}

#[derive(Module)]
struct Net2 {
    stem: Sequential,
    blocks: Vec<Block>,
    gate: Option<Sigmoid>,
    skip: Option<Identity>,
    head: Linear,
}

/// A derived chain and a `Sequential` give bit for bit the result of their
/// layers applied one by one (in-place activations, bias written inside
/// the product, products large enough to be split across threads), through
/// `forward`, `forward_owned` and `forward_traced`.
#[test]
fn chains_equal_the_layers_one_by_one() {
    #[derive(Module)]
    struct Net {
        fc1: Linear,
        act: ReLU,
        fc2: Linear,
        out: ReLU,
    }
    let net = nncore::with_seed(5, || Net {
        fc1: Linear::new(300, 200),
        act: ReLU::new(),
        fc2: Linear::new_no_bias(200, 50),
        out: ReLU::new(),
    });
    let seq = nncore::with_seed(5, || {
        nncore::seq![
            Linear::new(300, 200),
            ReLU::new(),
            Linear::new_no_bias(200, 50),
            ReLU::new()
        ]
    });
    let x = nncore::Generator::new(2).uniform_tensor(64, 300, -1.0, 1.0);
    let by_layer = |x: &Tensor| -> Tensor {
        let h = net.fc1.forward(x).unwrap();
        let h = net.act.forward(&h).unwrap();
        let h = net.fc2.forward(&h).unwrap();
        net.out.forward(&h).unwrap()
    };
    let expected = by_layer(&x);
    assert!(expected.iter().any(|v| *v == 0.0) && expected.iter().any(|v| *v > 0.0));
    assert_eq!(net.forward(&x).unwrap(), expected);
    assert_eq!(net.forward_owned(x.clone()).unwrap(), expected);
    assert_eq!(seq.forward(&x).unwrap(), expected);
    let mut trace = nncore::Trace::new();
    assert_eq!(net.forward_traced(&x, &mut trace).unwrap(), expected);
    assert_eq!(trace.shape_of("fc2"), Some((64, 50)));
    let head = nncore::with_seed(5, || {
        nncore::seq![
            Linear::new(300, 200),
            ReLU::new(),
            Linear::new_no_bias(200, 50)
        ]
    });
    let h = net.act.forward(&net.fc1.forward(&x).unwrap()).unwrap();
    assert_eq!(head.forward(&x).unwrap(), net.fc2.forward(&h).unwrap());
}

/// Several threads running one model at once (products large enough to be
/// split across the helper threads) all get the single-threaded result.
#[test]
fn concurrent_inference_from_several_threads_agrees() {
    let model = nncore::with_seed(6, || {
        nncore::seq![Linear::new(300, 200), ReLU::new(), Linear::new(200, 40)]
    });
    let inputs: Vec<Tensor> = (0..4)
        .map(|i| nncore::Generator::new(i).uniform_tensor(64, 300, -1.0, 1.0))
        .collect();
    let expected: Vec<Tensor> = inputs.iter().map(|x| model.forward(x).unwrap()).collect();
    std::thread::scope(|s| {
        for (x, want) in inputs.iter().zip(&expected) {
            let model = &model;
            s.spawn(move || {
                let mut ws = nncore::Workspace::new();
                let mut out = Tensor::zeros(0, 0);
                for _ in 0..20 {
                    assert_eq!(&model.forward(x).unwrap(), want);
                    model.forward_into(x, &mut out, &mut ws).unwrap();
                    assert_eq!(&out, want);
                }
            });
        }
    });
}

#[test]
fn summary_prints_torchinfo_text() {
    let mut blocks: Vec<Linear> = (0..3).map(|_| Linear::new(16, 16)).collect();
    blocks.push(Linear::new(16, 4));
    check_summary(
        "stack",
        &Stack {
            blocks,
            act: ReLU::new(),
        },
    );
    check_summary(
        "blocks",
        &Blocks {
            layers: [Block::new(6), Block::new(6)],
        },
    );
    check_summary("with_seq", &WithSeq::new(true));
    check_summary("with_seq_none", &WithSeq::new(false));
    let mut frozen = WithSeq::new(true);
    frozen.head.requires_grad_(false);
    check_summary("frozen_head", &frozen);
    check_summary(
        "deep",
        &Deep {
            stages: (0..2)
                .map(|_| seq![Linear::new(4, 4), LeakyReLU::new(0.1)])
                .collect(),
            heads: seq![seq![Linear::new(4, 2), Sigmoid::new()], Identity::new()],
        },
    );
    check_summary("simple_net", &common::models::SimpleNet::new(100, 50, 10));
    check_summary("net", &common::models::Net::new());
    check_summary("mlp_b4096", &nnrs::workloads::mlp(0));
    // A written forward: its layers show their output shapes.
    check_summary("res_mlp", &nnrs::workloads::res_mlp(0, 100, 64, 2, 10));
}

/// At batch 1 a chain runs its children on one sample's values, without
/// tensors, once each `Linear` has its packed copy; a child without that
/// path (here `LayerNorm`, a nested `Sequential`, an output wider than the
/// path's buffers) hands over to tensors mid-chain. Every way gives the
/// layers' own results bit for bit, before and after the packing, through
/// `forward`, `forward_owned` and `forward_into`, and the same errors.
#[test]
fn batch_1_chains_equal_the_layers_one_by_one() {
    #[derive(Module)]
    struct Rows {
        fc1: Linear,
        act: ReLU,
        fc2: Linear,
        tanh: Tanh,
        drop: Dropout,
        fc3: Linear,
        gelu: GELU,
        same: Identity,
        fc4: Linear,
        soft: Softmax,
    }
    #[derive(Module)]
    struct Mixed {
        fc1: Linear,
        act: ReLU,
        norm: LayerNorm,
        inner: Sequential,
        wide: Linear,
        fc2: Linear,
        sig: Sigmoid,
        soft: Softmax,
    }
    let rows = nncore::with_seed(7, || Rows {
        fc1: Linear::new(37, 50),
        act: ReLU::new(),
        fc2: Linear::new_no_bias(50, 64),
        tanh: Tanh::new(),
        drop: Dropout::new(0.5).unwrap(),
        fc3: Linear::new(64, 130),
        gelu: GELU::new(),
        same: Identity::new(),
        fc4: Linear::new(130, 3),
        soft: Softmax::new(-1),
    });
    let mixed = nncore::with_seed(8, || Mixed {
        fc1: Linear::new(37, 20),
        act: ReLU::new(),
        norm: LayerNorm::new(20),
        inner: seq![Linear::new(20, 9), ReLU::new()],
        wide: Linear::new(9, 1500),
        fc2: Linear::new(1500, 4),
        sig: Sigmoid::new(),
        soft: Softmax::new(0),
    });
    let one_by_one = |layers: &[&dyn Forward], x: &Tensor| {
        layers.iter().fold(x.clone(), |h, m| m.forward(&h).unwrap())
    };
    let rows_layers: [&dyn Forward; 10] = [
        &rows.fc1, &rows.act, &rows.fc2, &rows.tanh, &rows.drop, &rows.fc3, &rows.gelu, &rows.same,
        &rows.fc4, &rows.soft,
    ];
    let mixed_layers: [&dyn Forward; 8] = [
        &mixed.fc1,
        &mixed.act,
        &mixed.norm,
        &mixed.inner,
        &mixed.wide,
        &mixed.fc2,
        &mixed.sig,
        &mixed.soft,
    ];
    #[derive(Module)]
    struct Batchwise {
        fc: Linear,
        soft: Softmax,
    }
    let batchwise = nncore::with_seed(12, || Batchwise {
        fc: Linear::new(37, 6),
        soft: Softmax::new(0),
    });
    let batchwise_layers: [&dyn Forward; 2] = [&batchwise.fc, &batchwise.soft];
    let mut ws = nncore::Workspace::new();
    let mut out = Tensor::zeros(0, 0);
    // Enough calls for every layer's packed copy (made after 32 rows).
    for i in 0..40u64 {
        let x = nncore::Generator::new(i).uniform_tensor(1, 37, -2.0, 2.0);
        for (model, layers) in [
            (&rows as &dyn Forward, &rows_layers[..]),
            (&mixed as &dyn Forward, &mixed_layers[..]),
            (&batchwise as &dyn Forward, &batchwise_layers[..]),
        ] {
            let want = one_by_one(layers, &x);
            assert_eq!(want.shape().0, 1);
            assert_eq!(model.forward(&x).unwrap(), want, "call {i}");
            assert_eq!(model.forward_owned(x.clone()).unwrap(), want, "call {i}");
            model.forward_into(&x, &mut out, &mut ws).unwrap();
            assert_eq!(out, want, "call {i}");
        }
    }
    let bad = Tensor::zeros(1, 36);
    for err in [
        rows.forward(&bad).unwrap_err(),
        rows.forward_into(&bad, &mut out, &mut ws).unwrap_err(),
    ] {
        assert_eq!(
            err.to_string(),
            "Rows.fc1 (Linear): expected input with 37 features, got 36"
        );
    }
    // Still right after an error.
    let x = nncore::Generator::new(99).uniform_tensor(1, 37, -2.0, 2.0);
    rows.forward_into(&x, &mut out, &mut ws).unwrap();
    assert_eq!(out, one_by_one(&rows_layers, &x));
}

/// Chains nested in a chain take the row path too (a list of derived
/// blocks, a `Sequential` that hands over to tensors inside), with the
/// layers' results bit for bit; an error inside a nested chain is reported
/// with its full path, as on tensors.
#[test]
fn batch_1_nested_chains_equal_the_layers_one_by_one() {
    #[derive(Module)]
    struct Nested {
        fc: Linear,
        blocks: Vec<Block>,
        head: Sequential,
        out: Linear,
    }
    let net = nncore::with_seed(9, || Nested {
        fc: Linear::new(12, 6),
        blocks: vec![Block::new(6), Block::new(6)],
        head: seq![Linear::new(6, 8), LayerNorm::new(8), Linear::new(8, 5)],
        out: Linear::new(5, 2),
    });
    let mut ws = nncore::Workspace::new();
    let mut out = Tensor::zeros(0, 0);
    for i in 0..40u64 {
        let x = nncore::Generator::new(i).uniform_tensor(1, 12, -2.0, 2.0);
        let mut h = net.fc.forward(&x).unwrap();
        for b in &net.blocks {
            h = b.act.forward(&b.fc.forward(&h).unwrap()).unwrap();
        }
        let h = net.out.forward(&net.head.forward(&h).unwrap()).unwrap();
        assert_eq!(net.forward(&x).unwrap(), h, "call {i}");
        net.forward_into(&x, &mut out, &mut ws).unwrap();
        assert_eq!(out, h, "call {i}");
    }
    let broken = Nested {
        fc: Linear::new(12, 6),
        blocks: vec![Block::new(6), Block::new(7)],
        head: seq![Linear::new(7, 5)],
        out: Linear::new(5, 2),
    };
    let x = Tensor::zeros(1, 12);
    for _ in 0..40 {
        let err = broken.forward(&x).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Nested.blocks.1.fc (Linear): expected input with 7 features, got 6"
        );
        let err = broken.forward_into(&x, &mut out, &mut ws).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Nested.blocks.1.fc (Linear): expected input with 7 features, got 6"
        );
    }
}

/// A nested chain that finishes on tensors (here: an output wider than the
/// row path's buffers) hands its output to the chain around it, which goes
/// on from it: every child runs once per call, and the result is the
/// layers' own.
#[test]
fn batch_1_wide_nested_chains_run_each_child_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Passes its input through and counts its calls.
    #[derive(Default)]
    struct Counting(AtomicUsize);
    impl Module for Counting {
        fn name(&self) -> &str {
            "Counting"
        }
    }
    impl Forward for Counting {
        fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(x.clone())
        }
    }
    #[derive(Module)]
    struct Inner {
        fc: Linear,
        count: Counting,
    }
    #[derive(Module)]
    struct Outer {
        fc: Linear,
        inner: Inner,
        out: Linear,
    }
    let net = nncore::with_seed(10, || Outer {
        fc: Linear::new(5, 8),
        inner: Inner {
            fc: Linear::new(8, 1100),
            count: Counting::default(),
        },
        out: Linear::new(1100, 3),
    });
    let mut ws = nncore::Workspace::new();
    let mut out = Tensor::zeros(0, 0);
    for i in 0..40u64 {
        let x = nncore::Generator::new(i).uniform_tensor(1, 5, -2.0, 2.0);
        let h = net.fc.forward(&x).unwrap();
        let want = net.out.forward(&net.inner.fc.forward(&h).unwrap()).unwrap();
        let before = net.inner.count.0.load(Ordering::Relaxed);
        assert_eq!(net.forward(&x).unwrap(), want, "call {i}");
        net.forward_into(&x, &mut out, &mut ws).unwrap();
        assert_eq!(out, want, "call {i}");
        assert_eq!(
            net.inner.count.0.load(Ordering::Relaxed),
            before + 2,
            "call {i}"
        );
    }
}

/// The chain takes a child's row-path values only where its buffer
/// starts: a child that returns other values (its own slice) is run on
/// tensors instead, and the result is its `forward`'s.
#[test]
fn batch_1_chains_take_row_values_only_from_their_buffers() {
    struct Elsewhere;
    impl Module for Elsewhere {
        fn name(&self) -> &str {
            "Elsewhere"
        }
    }
    impl Forward for Elsewhere {
        fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
            Ok(x.map(|v| v * 2.0))
        }
        fn forward_row<'y>(
            &self,
            _x: &[f32],
            _y: &'y mut [std::mem::MaybeUninit<f32>],
            _act: Option<nncore::chain::Activation>,
        ) -> Option<&'y mut [f32]> {
            Some(Box::leak(vec![7.0f32; 1000].into_boxed_slice()))
        }
    }
    #[derive(Module)]
    struct Net {
        fc: Linear,
        odd: Elsewhere,
    }
    let net = nncore::with_seed(11, || Net {
        fc: Linear::new(4, 3),
        odd: Elsewhere,
    });
    let mut ws = nncore::Workspace::new();
    let mut out = Tensor::zeros(0, 0);
    for i in 0..40u64 {
        let x = nncore::Generator::new(i).uniform_tensor(1, 4, -1.0, 1.0);
        let want = net.fc.forward(&x).unwrap().map(|v| v * 2.0);
        assert_eq!(net.forward(&x).unwrap(), want, "call {i}");
        net.forward_into(&x, &mut out, &mut ws).unwrap();
        assert_eq!(out, want, "call {i}");
    }
}
