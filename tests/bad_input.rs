//! Bad input never gives a wrong answer, a hang or an abort: each case is
//! an `Err` with a clear message or documented behaviour (the findings of
//! the bad-input audit, one test each, plus the families around them).

use nncore::prelude::*;
use nncore::{
    BCEWithLogitsLoss, CrossEntropyLoss, GeluApproximate, Identity, Layer, LeakyReLU, MSELoss,
    Reduction, Softmax, StateDict, TensorData,
};

fn ones(r: usize, c: usize) -> Tensor {
    Tensor::from_element(r, c, 1.0)
}

/// After a real step, a step on an empty batch gives zero gradients (as
/// PyTorch does), never the previous step's.
#[test]
fn an_empty_batch_gives_zero_gradients_not_stale_ones() {
    let mut fc = Linear::new(4, 3);
    let x = ones(8, 4);
    fc.forward_train(&x).unwrap();
    fc.backward(&ones(8, 3)).unwrap();
    Sgd::new(0.1).step(&mut fc).unwrap();
    fc.zero_grad();
    let empty = Tensor::zeros(0, 4);
    fc.forward_train(&empty).unwrap();
    let g0 = Tensor::zeros(0, 3);
    let dx = fc.backward(&g0).unwrap();
    assert_eq!(dx.shape(), (0, 4));
    assert!(fc.bias().unwrap().grad().unwrap().iter().all(|g| *g == 0.0));
    assert!(fc.weight().grad().unwrap().iter().all(|g| *g == 0.0));
    let before = fc.weight().value().clone();
    Sgd::new(0.1).step(&mut fc).unwrap();
    assert_eq!(fc.weight().value(), &before);
}

/// Every layer takes a batch of 0 rows forward and backward.
#[test]
fn every_layer_handles_an_empty_batch() {
    let mut layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Linear::new(3, 3)),
        Box::new(ReLU::new()),
        Box::new(LeakyReLU::new(0.1)),
        Box::new(Sigmoid::new()),
        Box::new(Tanh::new()),
        Box::new(GELU::new()),
        Box::new(GELU::with_approximate(GeluApproximate::Tanh)),
        Box::new(Softmax::new(1)),
        Box::new(Dropout::new(0.5).unwrap()),
        Box::new(Identity::new()),
        Box::new(seq![Linear::new(3, 3), ReLU::new()]),
    ];
    for l in &mut layers {
        let x = Tensor::zeros(0, 3);
        assert_eq!(
            l.forward(&x).unwrap().shape(),
            (0, 3),
            "{}",
            l.as_module().name()
        );
        l.forward_train(&x).unwrap();
        let g = Tensor::zeros(0, 3);
        assert_eq!(
            l.backward(&g).unwrap().shape(),
            (0, 3),
            "{}",
            l.as_module().name()
        );
    }
}

/// Mean losses over an empty batch are NaN, as in PyTorch; sums are 0.
#[test]
fn losses_of_an_empty_batch_follow_pytorch() {
    let out = Tensor::zeros(0, 3);
    let mse = MSELoss::new().forward(&out, &Tensor::zeros(0, 3)).unwrap();
    assert!(mse.item().is_nan());
    let sum = MSELoss::new()
        .reduction(Reduction::Sum)
        .forward(&out, &Tensor::zeros(0, 3))
        .unwrap();
    assert_eq!(sum.item(), 0.0);
    let ce = CrossEntropyLoss::new()
        .forward(&out, &[] as &[usize])
        .unwrap();
    assert!(ce.item().is_nan());
    let bce = BCEWithLogitsLoss::new()
        .forward(&out, &Tensor::zeros(0, 3))
        .unwrap();
    assert!(bce.item().is_nan());
}

#[test]
fn identity_and_inactive_dropout_check_the_gradient() {
    let mut id = Identity::new();
    let e = id.backward(&ones(2, 3)).unwrap_err();
    assert!(e.to_string().contains("without a recorded forward"), "{e}");
    id.forward_train(&ones(2, 3)).unwrap();
    let e = id.backward(&ones(5, 7)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Identity: expected gradient of shape [2, 3], got [5, 7]"
    );

    for mut d in [Dropout::new(0.0).unwrap(), {
        let mut d = Dropout::new(0.5).unwrap();
        d.eval();
        d
    }] {
        d.forward_train(&ones(2, 3)).unwrap();
        let e = d.backward(&ones(5, 7)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dropout: expected gradient of shape [2, 3], got [5, 7]"
        );
    }
}

#[test]
fn huge_thread_counts_are_clamped() {
    nncore::ops::set_num_threads(1 << 40);
    assert_eq!(nncore::ops::num_threads(), nncore::ops::MAX_THREADS);
    nncore::ops::set_num_threads(usize::MAX);
    assert_eq!(nncore::ops::num_threads(), nncore::ops::MAX_THREADS);
    // A large product still runs (and quickly).
    let a = ones(256, 256);
    let mut c = Tensor::zeros(256, 256);
    nncore::ops::matmul(
        1.0,
        &a,
        nncore::ops::Trans::No,
        &a,
        nncore::ops::Trans::No,
        0.0,
        &mut c,
    );
    assert_eq!(c[(0, 0)], 256.0);
    nncore::ops::set_num_threads(0);
}

#[test]
fn nested_use_of_the_default_generator_is_a_clear_panic_not_a_deadlock() {
    for scoped in [false, true] {
        let r = std::thread::spawn(move || {
            let run = || nncore::with_default_generator(|_| Linear::new(2, 2));
            if scoped {
                nncore::with_seed(1, run)
            } else {
                run()
            }
        })
        .join();
        let msg = r.unwrap_err();
        let msg = msg
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap();
        assert!(msg.contains("called inside its own closure"), "{msg}");
    }
    // Drawing from the generator given works, and later calls still do.
    let fc = nncore::with_default_generator(|g| Linear::with_generator(2, 2, true, g));
    assert_eq!(fc.in_features(), 2);
    let _ = Linear::new(2, 2);
}

#[test]
fn non_finite_hyper_parameters_are_rejected() {
    let mut fc = Linear::new(2, 2);
    fc.forward_train(&ones(1, 2)).unwrap();
    fc.backward(&ones(1, 2)).unwrap();
    for (what, mut opt) in [
        (
            "learning rate",
            Box::new(Sgd::new(f64::INFINITY)) as Box<dyn Optimizer>,
        ),
        (
            "weight_decay",
            Box::new(Sgd::new(0.1).weight_decay(f64::INFINITY)),
        ),
        (
            "dampening",
            Box::new(Sgd::new(0.1).momentum(0.9).dampening(f64::NAN)),
        ),
        ("momentum", Box::new(Sgd::new(0.1).momentum(f64::INFINITY))),
        ("learning rate", Box::new(Adam::new(f64::NAN))),
        ("epsilon", Box::new(Adam::new(0.1).eps(f64::INFINITY))),
        (
            "weight_decay",
            Box::new(Adam::adamw(0.1).weight_decay(f64::INFINITY)),
        ),
    ] {
        let before = fc.weight().value().clone();
        let e = opt.step(&mut fc).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("Invalid {what} value")),
            "{e}"
        );
        assert!(e.to_string().contains("must be a finite number"), "{e}");
        assert_eq!(fc.weight().value(), &before);
    }
}

#[test]
fn non_finite_gradients_stop_the_step_and_change_nothing() {
    #[derive(Module)]
    struct Two {
        a: Linear,
        b: Linear,
    }
    for mut opt in [
        Box::new(Sgd::new(0.1)) as Box<dyn Optimizer>,
        Box::new(Sgd::new(0.1).momentum(0.9)),
        Box::new(Adam::new(0.1)),
        Box::new(Adam::adamw(0.1).amsgrad(true)),
    ] {
        let mut m = Two {
            a: Linear::new(3, 2),
            b: Linear::new(2, 2),
        };
        let x = ones(2, 3);
        // One good step, so that momentum and moments exist.
        m.forward_train(&x).unwrap();
        m.backward(&ones(2, 2)).unwrap();
        opt.step(&mut m).unwrap();
        let before: Vec<Tensor> = m.parameters().iter().map(|p| p.value().clone()).collect();
        m.zero_grad();
        m.forward_train(&x).unwrap();
        let mut g = ones(2, 2);
        g[(1, 0)] = f32::NAN;
        m.backward(&g).unwrap();
        let e = opt.step(&mut m).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("parameter a.weight has a non-finite gradient (NaN"),
            "{e}"
        );
        let after: Vec<Tensor> = m.parameters().iter().map(|p| p.value().clone()).collect();
        assert_eq!(before, after, "weights changed");
        // After zero_grad and a good backward the optimizer goes on.
        m.zero_grad();
        m.forward_train(&x).unwrap();
        m.backward(&ones(2, 2)).unwrap();
        opt.step(&mut m).unwrap();
    }
}

#[test]
fn a_reserved_key_is_rejected_at_save() {
    let mut sd = StateDict::new();
    sd.insert("__metadata__", TensorData::new(vec![1], vec![0.0]).unwrap());
    let dir = std::env::temp_dir().join(format!("nncore-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = sd
        .save_safetensors(dir.join("m.safetensors"), Default::default())
        .unwrap_err();
    assert!(e.to_string().contains("__metadata__"), "{e}");
    assert!(!dir.join("m.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_names_the_path_given_and_takes_long_names() {
    let fc = Linear::new(2, 2);
    let dir = std::env::temp_dir().join(format!("nncore-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A legal 250-byte name.
    let long = dir.join("n".repeat(250));
    fc.save_safetensors(&long).unwrap();
    assert!(long.exists());
    // A directory that does not exist: the error names the path given.
    let missing = dir.join("no-such-dir").join("m.safetensors");
    let e = fc.save_safetensors(&missing).unwrap_err();
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );
    assert!(!e.to_string().contains(".tmp"), "{e}");
    let e = fc.save_safetensors("").unwrap_err();
    assert!(e.to_string().starts_with("\"\": not a file path"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_debug_print_as_their_message() {
    // What `fn main() -> Result<(), nncore::Error>` shows.
    let e = Linear::new(3, 2).forward(&ones(1, 4)).unwrap_err();
    assert_eq!(
        format!("{e:?}"),
        "Linear: expected input with 3 features, got 4"
    );
}

#[test]
fn huge_layers_and_summaries_are_errors_not_aborts() {
    let e = Linear::try_new(usize::MAX, 2).unwrap_err();
    assert!(e.to_string().contains("too large to allocate"), "{e}");
    let e = Linear::try_new(1 << 62, 4).unwrap_err();
    assert!(e.to_string().contains("too large to allocate"), "{e}");
    let r = std::panic::catch_unwind(|| Linear::new(usize::MAX, 2));
    assert!(r.is_err(), "documented # Panics");

    // summary traces at most a few rows, whatever the batch.
    let m = seq![Linear::new(4, 3), ReLU::new()];
    let s = nncore::summary(&m, (1 << 40, 4)).unwrap();
    assert_eq!(s.rows[0].output_shape, Some(vec![1 << 40, 3]));
    assert_eq!(s.rows[1].output_shape, Some(vec![1 << 40, 3]));
    let s = nncore::summary(&m, (0, 4)).unwrap();
    assert_eq!(s.rows[0].output_shape, Some(vec![0, 3]));
    let e = nncore::summary(&m, (3, usize::MAX)).unwrap_err();
    assert!(e.to_string().contains("too large to trace"), "{e}");
}

#[test]
fn files_that_are_not_safetensors_say_what_they_are() {
    let mut fc = Linear::new(2, 2);
    let opts = nncore::LoadOptions::strict();
    let cases: [(&[u8], &str); 5] = [
        (
            b"PK\x03\x04\x14\x00\x00\x00archive/data.pkl",
            "zip archive, which is what PyTorch's torch.save writes",
        ),
        (
            b"\x80\x02}q\x00(X\x0b\x00\x00\x00fc1.weightq",
            "a Python pickle",
        ),
        (b"hello, this is a text file\n", "it starts with text"),
        (b"\x01\x02", "fewer than the 8"),
        (
            b"\xff\xff\xff\xff\xff\xff\x00\x00{}",
            "longer than the file",
        ),
    ];
    for (bytes, want) in cases {
        let before = fc.weight().value().clone();
        let e = fc.load_safetensors_bytes(bytes, opts).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("not a safetensors file"), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert_eq!(fc.weight().value(), &before);
    }
    let e = fc
        .load_safetensors_bytes(b"PK\x03\x04rest", opts)
        .unwrap_err();
    assert!(e.to_string().contains("safetensors.torch.save_file"), "{e}");
}

#[test]
fn malformed_headers_name_the_tensor() {
    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }
    let mut fc = Linear::new(2, 2);
    let opts = nncore::LoadOptions::strict();
    // 2x2 F32 needs 16 bytes; the offsets give 12.
    let bad = file(
        r#"{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#,
        12,
    );
    let e = fc.load_safetensors_bytes(&bad, opts).unwrap_err();
    assert!(
        e.to_string()
            .contains("tensor weight: shape [2, 2] of F32 needs 16 bytes"),
        "{e}"
    );
    // Bytes left over after the last tensor.
    let extra = file(
        r#"{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        20,
    );
    let e = fc.load_safetensors_bytes(&extra, opts).unwrap_err();
    assert!(e.to_string().contains("data section of 20 bytes"), "{e}");
}

#[test]
fn label_and_tensor_data_messages_give_the_values() {
    let e = CrossEntropyLoss::new()
        .forward(&Tensor::zeros(2, 3), &[0u64, u64::MAX])
        .unwrap_err();
    assert!(
        e.to_string().contains("row 1 (18446744073709551615)"),
        "{e}"
    );
    let e = TensorData::new(vec![3, 2], vec![0.0; 5]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "TensorData::new: shape [3, 2] holds 6 elements, got 5 values"
    );
    let e = TensorData::new(vec![usize::MAX, 2], vec![]).unwrap_err();
    assert!(
        e.to_string().contains("more elements than memory can hold"),
        "{e}"
    );
}

/// Zero features: layers of width 0 run (empty outputs, zero gradients);
/// losses over zero classes are errors or NaN, never panics.
#[test]
fn zero_features_never_panic() {
    let mut layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Linear::new(0, 3)),
        Box::new(Linear::new(3, 0)),
        Box::new(ReLU::new()),
        Box::new(GELU::new()),
        Box::new(Softmax::new(1)),
        Box::new(Softmax::new(0)),
        Box::new(Dropout::new(0.5).unwrap()),
        Box::new(nncore::LayerNorm::new(0)),
    ];
    for l in &mut layers {
        let name = l.as_module().name().to_owned();
        let inputs = if name == "Linear" && l.as_module().extra_repr().starts_with("in_features=3")
        {
            3
        } else {
            0
        };
        let x = Tensor::zeros(2, inputs);
        let y = l.forward(&x).unwrap();
        let out = l.forward_train(&x).unwrap().clone();
        assert_eq!(y.shape(), out.shape(), "{name}");
        let g = Tensor::zeros(out.nrows(), out.ncols());
        let dx = l.backward(&g).unwrap();
        assert_eq!(dx.shape(), (2, inputs), "{name}");
    }
    let out = Tensor::zeros(2, 0);
    assert!(CrossEntropyLoss::new().forward(&out, &[0usize, 0]).is_err());
    let mse = MSELoss::new().forward(&out, &Tensor::zeros(2, 0)).unwrap();
    assert!(mse.item().is_nan());
    let s = nncore::summary(&seq![Linear::new(0, 2)], (4, 0)).unwrap();
    assert_eq!(s.rows[0].output_shape, Some(vec![4, 2]));
}
