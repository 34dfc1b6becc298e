//! BatchNorm1d and buffers against real PyTorch (expected values:
//! `tests/fixtures/batchnorm.json` and the safetensors files beside it,
//! written by `scripts/gen_batchnorm_fixtures.py`).

mod common;

use common::*;
use nncore::prelude::*;
use nncore::{LoadOptions, SaveOptions, TensorData};
use serde_json::Value;

#[derive(Module)]
struct BnNet {
    fc1: Linear,
    bn1: BatchNorm1d,
    relu: ReLU,
    fc2: Linear,
    bn2: BatchNorm1d,
}

fn build() -> BnNet {
    nncore::with_seed(0, || BnNet {
        fc1: Linear::new(6, 8),
        bn1: BatchNorm1d::new(8),
        relu: ReLU::new(),
        fc2: Linear::new(8, 4),
        bn2: BatchNorm1d::new(4)
            .with_eps(1e-3)
            .with_momentum(None)
            .with_bias(false),
    })
}

/// The fixture's model with its initial state, and the input and loss
/// weight.
fn model() -> (BnNet, Value, Tensor, Tensor) {
    let fx = fixture("batchnorm.json");
    let c = fx["model"].clone();
    let mut m = build();
    // The Linear layers' initial weights are PyTorch's for the same seed.
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
        let p = param(&m, name);
        assert_eq!(p.to_row_major(), floats(&c["initial"][name]), "{name}");
    }
    m.visit_parameters_mut(&mut |name, p| {
        p.copy_from_row_major(&floats(&c["initial"][name])).unwrap();
    });
    let x = Tensor::from_row_slice(5, 6, &floats(&c["x"]));
    let w = Tensor::from_row_slice(5, 4, &floats(&c["w"]));
    (m, c, x, w)
}

fn param<'a>(m: &'a BnNet, name: &str) -> &'a Param {
    m.named_parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn batch_norm_prints_names_and_orders_state_as_pytorch() {
    let fx = fixture("batchnorm.json");
    let ours = [
        BatchNorm1d::new(64),
        BatchNorm1d::new(8).with_eps(1e-3).with_momentum(None),
        BatchNorm1d::new(5).with_affine(false),
        BatchNorm1d::new(5).with_bias(false),
        BatchNorm1d::new(3)
            .with_momentum(Some(0.01))
            .with_track_running_stats(false),
        BatchNorm1d::new(2)
            .with_eps(0.1)
            .with_momentum(Some(1.0))
            .with_affine(false)
            .with_track_running_stats(false),
    ];
    for (m, expected) in ours.iter().zip(fx["reprs"].as_array().unwrap()) {
        assert_eq!(m.to_string(), expected.as_str().unwrap());
    }
    let (m, c, _, _) = model();
    assert_eq!(m.to_string(), c["repr"].as_str().unwrap());
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, strings(&c["names"]));
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, strings(&c["buffers"]));
    let sd = m.state_dict();
    assert_eq!(sd.keys().collect::<Vec<_>>(), strings(&c["keys"]));
    let shapes: Vec<Vec<usize>> = c["shapes"].as_array().unwrap().iter().map(usizes).collect();
    assert_eq!(
        sd.iter()
            .map(|(_, t)| t.shape().to_vec())
            .collect::<Vec<_>>(),
        shapes
    );
    check_state(&m, &c["initial"], "initial");
    // Buffers are not parameters: optimizers and counts never see them.
    assert_eq!(m.parameters().len(), 7);
}

#[test]
fn batch_norm_trains_and_evaluates_as_pytorch() {
    let (mut m, c, x, w) = model();
    let out = m.forward_train(&x).unwrap().clone();
    assert_close(
        &row_major(&out),
        &floats(&c["train"]["out"]),
        1e-5,
        "train out",
    );
    let dx = m.backward(&w).unwrap().clone();
    assert_close(
        &row_major(&dx),
        &floats(&c["train"]["dx"]),
        1e-5,
        "train dx",
    );
    check_grads(&m, &c["train"]["grads"], "train grad");
    check_state(&m, &c["train"]["state"], "after one batch");

    let mut opt = Sgd::new(0.1).momentum(0.9);
    for _ in 0..3 {
        m.zero_grad();
        m.forward_train(&x).unwrap();
        m.backward_params(&w).unwrap();
        opt.step(&mut m).unwrap();
    }
    check_state(&m, &c["sgd"], "after sgd");
    assert_eq!(m.bn1.num_batches_tracked(), Some(4));

    m.eval();
    m.zero_grad();
    let e = &c["eval"];
    let x2 = Tensor::from_row_slice(3, 6, &floats(&e["x"]));
    let w2 = Tensor::from_row_slice(3, 4, &floats(&e["w"]));
    let out2 = m.forward(&x2).unwrap();
    assert_close(&row_major(&out2), &floats(&e["out"]), 1e-5, "eval out");
    assert_eq!(m.forward_train(&x2).unwrap(), &out2);
    let dx2 = m.backward(&w2).unwrap().clone();
    assert_close(&row_major(&dx2), &floats(&e["dx"]), 1e-5, "eval dx");
    check_grads(&m, &e["grads"], "eval grad");
    // Eval mode leaves the running statistics alone.
    check_state(&m, &c["sgd"], "after eval");
}

#[test]
fn untracked_batch_norm_uses_batch_statistics_in_eval() {
    let fx = fixture("batchnorm.json");
    let u = &fx["untracked"];
    let mut bn = BatchNorm1d::new(3).with_track_running_stats(false);
    bn.eval();
    assert_eq!(
        bn.state_dict().keys().collect::<Vec<_>>(),
        strings(&u["keys"])
    );
    assert!(bn.named_buffers().is_empty());
    let x = Tensor::from_row_slice(4, 3, &floats(&u["x"]));
    let w = Tensor::from_row_slice(4, 3, &floats(&u["w"]));
    let y = bn.forward(&x).unwrap();
    assert_close(&row_major(&y), &floats(&u["out"]), 1e-5, "out");
    bn.forward_train(&x).unwrap();
    let dx = bn.backward(&w).unwrap();
    assert_close(&row_major(dx), &floats(&u["dx"]), 1e-5, "dx");
}

#[test]
fn batch_norm_files_cross_with_pytorch_both_ways() {
    let (mut m, c, x, w) = model();
    let trained = fixture_path("batchnorm_trained.safetensors");
    m.load_safetensors(&trained).unwrap();
    check_state(&m, &c["sgd"], "loaded");
    assert_eq!(m.bn2.num_batches_tracked(), Some(4));

    // Ours, trained the same way, saves the same bytes as PyTorch (the
    // int64 counters included), so PyTorch loads it strictly.
    let (mut ours, ..) = model();
    let mut opt = Sgd::new(0.1).momentum(0.9);
    ours.forward_train(&x).unwrap();
    ours.backward(&w).unwrap();
    for _ in 0..3 {
        ours.zero_grad();
        ours.forward_train(&x).unwrap();
        ours.backward_params(&w).unwrap();
        opt.step(&mut ours).unwrap();
    }
    // Float rounding may differ in the last bit: save PyTorch's values
    // through our model instead to compare the encoding.
    let dir = tempdir("bn-save");
    let path = dir.join("bn.safetensors");
    m.save_safetensors(&path).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&trained).unwrap()
    );
    check_state(&ours, &c["sgd"], "ours trained");

    // Files without num_batches_tracked (older PyTorch) load strictly, and
    // leave the counters as they are, as PyTorch does.
    let (mut fresh, ..) = model();
    fresh
        .load_safetensors(fixture_path("batchnorm_no_counter.safetensors"))
        .unwrap();
    assert_eq!(fresh.bn1.num_batches_tracked(), Some(0));
    assert_eq!(fresh.bn1.running_mean(), m.bn1.running_mean());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_buffers_are_reported_all_at_once_and_change_nothing() {
    let (mut m, ..) = model();
    let before = m.state_dict();
    let mut sd = before.clone();
    sd.insert("bn1.running_mean", TensorData::vector(vec![0.0; 7]));
    sd.insert(
        "bn1.num_batches_tracked",
        TensorData::new(vec![], vec![3.0]).unwrap(),
    );
    sd.insert("bn2.running_var", TensorData::vector(vec![1.0; 4]));
    sd.remove("bn2.running_mean");
    let e = m.load_state_dict(&sd, true).unwrap_err().to_string();
    assert_eq!(
        e,
        "Error(s) in loading state_dict for BnNet:\n\tMissing key(s) in state_dict: \"bn2.running_mean\". \n\t\
         size mismatch for bn1.running_mean: copying a param with shape torch.Size([7]) from checkpoint, the shape in current model is torch.Size([8]).\n\t\
         dtype mismatch for bn1.num_batches_tracked: copying a tensor of dtype F32 from checkpoint, the buffer in current model is I64 (it loads I64, I32, I16, I8, U32, U16 or U8)."
    );
    assert_eq!(m.state_dict(), before);
    // An extra buffer key, strictly: unexpected.
    let mut extra = before.clone();
    extra.insert("bn2.running_std", TensorData::vector(vec![1.0; 4]));
    let e = m.load_state_dict(&extra, true).unwrap_err().to_string();
    assert!(
        e.contains("Unexpected key(s) in state_dict: \"bn2.running_std\""),
        "{e}"
    );
    // NaN in a running variance loads as it is (as in PyTorch), and
    // check_finite names it.
    let mut nan = before.clone();
    nan.insert(
        "bn1.running_var",
        TensorData::vector(vec![1.0, 1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0, 1.0]),
    );
    m.load_state_dict(&nan, true).unwrap();
    let e = m.check_finite().unwrap_err().to_string();
    assert_eq!(
        e,
        "buffer bn1.running_var holds a non-finite value (NaN at flat index 2)"
    );
    m.load_state_dict(&before, true).unwrap();
    m.check_finite().unwrap();
    // Non-strict: the missing buffer is reported, the rest loads.
    let mut ok = before.clone();
    ok.remove("bn2.running_mean");
    ok.insert("bn2.running_var", TensorData::vector(vec![2.0; 4]));
    let report = m.load_state_dict(&ok, false).unwrap();
    assert_eq!(report.missing_keys, ["bn2.running_mean"]);
    assert_eq!(m.bn2.running_var().unwrap(), [2.0; 4]);
}

#[test]
fn batch_norm_shape_errors_name_the_module() {
    let mut bn = BatchNorm1d::new(10);
    let e = bn.forward_train(&Tensor::zeros(1, 10)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "BatchNorm1d: Expected more than 1 value per channel when training, got input size torch.Size([1, 10])"
    );
    // Inference uses the running statistics: one row is fine.
    assert!(bn.forward(&Tensor::zeros(1, 10)).is_ok());
    let e = bn.forward(&Tensor::zeros(4, 9)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "BatchNorm1d: running_mean should contain 9 elements not 10"
    );
    let e = BatchNorm1d::new(3)
        .with_track_running_stats(false)
        .forward(&Tensor::zeros(4, 5))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "BatchNorm1d: weight should contain 5 elements not 3"
    );
    // Inside a model, the path names the layer.
    let (mut m, ..) = model();
    let e = m.forward_train(&Tensor::zeros(1, 6)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("BnNet.bn1 (BatchNorm1d): Expected more than 1 value"),
        "{e}"
    );
    assert_eq!(m.bn1.num_batches_tracked(), Some(0));
}

#[test]
fn batch_norm_gradcheck_in_both_modes() {
    let (mut m, _, x, _) = model();
    let before = m.state_dict();
    nncore::GradCheck::new()
        .training(true)
        .run(&mut m, &x)
        .unwrap();
    // The check restores the running statistics it moved.
    assert_eq!(m.state_dict(), before);
    // Inference differs from training: the plain check says why it fails.
    let e = nncore::gradcheck(&mut m, &x).unwrap_err().to_string();
    assert!(e.contains("forward_train and forward disagree"), "{e}");
    assert!(e.contains("GradCheck::training(true)"), "{e}");
    assert_eq!(m.state_dict(), before);
    m.eval();
    nncore::gradcheck(&mut m, &x).unwrap();
}

#[derive(Module)]
struct Scaled {
    fc: Linear,
    scale: Buffer,
    cache: Buffer,
    extra: Option<Buffer>,
    bn: BatchNorm1d,
}

#[test]
fn derived_modules_register_buffer_fields() {
    let mut m = Scaled {
        fc: Linear::new(3, 2),
        scale: Buffer::new(TensorData::vector(vec![1.0, 2.0])),
        cache: Buffer::zeros(2).persistent(false),
        extra: Some(Buffer::scalar_i64(5)),
        bn: BatchNorm1d::new(2).with_affine(false),
    };
    // Buffers print nothing, as in PyTorch.
    assert_eq!(
        m.to_string(),
        "Scaled(\n  (fc): Linear(in_features=3, out_features=2, bias=True)\n  \
         (bn): BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=True)\n)"
    );
    let names: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "scale",
            "cache",
            "extra",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked"
        ]
    );
    let sd = m.state_dict();
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        [
            "scale",
            "extra",
            "fc.weight",
            "fc.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked"
        ]
    );
    let dir = tempdir("buffers");
    let path = dir.join("m.safetensors");
    m.save_safetensors_with(&path, SaveOptions::default())
        .unwrap();
    m.scale.as_f32_mut().unwrap()[0] = 9.0;
    m.extra.as_mut().unwrap().as_i64_mut().unwrap()[0] = 6;
    m.load_safetensors_with(&path, LoadOptions::strict())
        .unwrap();
    assert_eq!(m.scale.as_f32().unwrap(), [1.0, 2.0]);
    assert_eq!(m.extra.as_ref().unwrap().as_i64().unwrap(), [5]);
    // A non-persistent buffer is neither saved nor expected.
    m.extra = None;
    let e = m.load_safetensors(&path).unwrap_err().to_string();
    assert!(
        e.contains("Unexpected key(s) in state_dict: \"extra\""),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batch_norm_model_summary_is_torchinfo_text() {
    let (m, ..) = model();
    check_summary("bn_net", &m);
}

/// One BatchNorm1d applied at two places of a written forward.
#[derive(Module)]
struct TwiceNormed {
    fc: Linear,
    bn: BatchNorm1d,
    tape: Tape,
}

#[nncore::forward]
impl TwiceNormed {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn(x)?;
        let h = self.fc(h)?;
        self.bn(h)
    }
}

#[test]
fn a_batch_norm_used_twice_updates_its_statistics_once_per_call() {
    let mut m = nncore::with_seed(4, || TwiceNormed {
        fc: Linear::new(3, 3),
        bn: BatchNorm1d::new(3).with_momentum(None),
        tape: Tape::default(),
    });
    let x = nncore::Generator::new(5).uniform_tensor(6, 3, -2.0, 2.0);
    // The same layer fed the same two inputs in order: what PyTorch's
    // module, called twice in forward, holds afterwards.
    let mut reference = BatchNorm1d::new(3).with_momentum(None);
    let h = reference.forward_train(&x).unwrap().clone();
    let h = m.fc.forward(&h).unwrap();
    reference.forward_train(&h).unwrap();

    let y = m.forward_train(&x).unwrap().clone();
    let g = Tensor::from_element(6, 3, 0.5);
    m.backward(&g).unwrap();
    // The backward pass replays the first use; that replay moves no state.
    assert_eq!(m.bn.num_batches_tracked(), Some(2));
    assert_eq!(m.bn.running_mean(), reference.running_mean());
    assert_eq!(m.bn.running_var(), reference.running_var());
    assert_eq!(y.shape(), (6, 3));
}
