//! The image layers against real PyTorch (expected values:
//! `tests/fixtures/conv.json` and `cnn_trained.safetensors`, written by
//! `scripts/gen_conv_fixtures.py`): print text, names, shapes, initial
//! weights after the same seed, training forward, every gradient, SGD
//! steps with BatchNorm2d's buffers, eval, errors and weight files.

mod common;

use common::*;
use nncore::prelude::*;
use nncore::{Conv2dConfig, Padding, Workspace};
use serde_json::Value;

#[derive(Module)]
struct Cnn {
    conv1: Conv2d,
    bn: BatchNorm2d,
    relu: ReLU,
    pool: MaxPool2d,
    conv2: Conv2d,
    avg: AvgPool2d,
    flat: Flatten,
    fc: Linear,
}

fn cnn() -> Cnn {
    nncore::with_seed(0, || Cnn {
        conv1: Conv2dConfig::new(2, 6, 3).padding(1).build().unwrap(),
        bn: BatchNorm2d::new(6),
        relu: ReLU::new(),
        pool: MaxPool2d::new(2),
        conv2: Conv2dConfig::new(6, 4, (3, 2))
            .stride((2, 1))
            .padding((1, 0))
            .dilation((1, 2))
            .groups(2)
            .bias(false)
            .build()
            .unwrap(),
        avg: AvgPool2d::with_options(2, 1, 1).unwrap(),
        flat: Flatten::new(),
        fc: Linear::new(36, 5),
    })
}

#[derive(Module)]
struct Same {
    conv: Conv2d,
    act: Tanh,
    pool: MaxPool2d,
    conv2: Conv2d,
    adapt: AdaptiveAvgPool2d,
    flat: Flatten,
    fc: Linear,
}

fn same() -> Same {
    nncore::with_seed(0, || Same {
        conv: Conv2dConfig::new(1, 3, (4, 3))
            .padding(Padding::Same)
            .dilation((1, 2))
            .build()
            .unwrap(),
        act: Tanh::new(),
        pool: MaxPool2d::with_options(3, 2, 1, 1, true).unwrap(),
        conv2: Conv2dConfig::new(3, 3, 2)
            .stride(2)
            .padding(Padding::Valid)
            .groups(3)
            .build()
            .unwrap(),
        adapt: AdaptiveAvgPool2d::new((2, 3)),
        flat: Flatten::new(),
        fc: Linear::new(18, 2),
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn images(shape: &Value, values: &Value) -> NdTensor {
    NdTensor::from_row_major(&usizes(shape), &floats(values)).unwrap()
}

/// The whole fixture case for one model: structure, initial weights,
/// training forward and backward, SGD, eval.
fn check_model<M: Backward>(mut m: M, c: &Value) {
    assert_eq!(nncore::repr(&m), c["repr"].as_str().unwrap());
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, strings(&c["names"]));
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, strings(&c["buffers"]));
    let sd = m.state_dict();
    assert_eq!(sd.keys().collect::<Vec<_>>(), strings(&c["keys"]));
    let shapes: Vec<Vec<usize>> = c["shapes"].as_array().unwrap().iter().map(usizes).collect();
    let ours: Vec<Vec<usize>> = sd.iter().map(|(_, t)| t.shape().to_vec()).collect();
    assert_eq!(ours, shapes);
    // Same seed, same initial weights: bit for bit.
    for (name, p) in m.named_parameters() {
        assert_eq!(
            p.to_row_major(),
            floats(&c["initial"][&name]),
            "initial {name}"
        );
    }
    check_state(&m, &c["initial"], "initial");

    let x = images(&c["x_shape"], &c["x"]);
    let n = x.shape()[0];
    let w = floats(&c["w"]);
    let w = Tensor::from_row_slice(n, w.len() / n, &w);
    let (out, dims) = m.forward_train_nd(&x).unwrap();
    assert_eq!(dims.as_slice(), &[w.ncols()]);
    assert_close(
        &row_major(out),
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
    check_grads(&m, &c["train"]["grads"], "grad");
    check_state(&m, &c["train"]["state"], "after one batch");

    let mut opt = Sgd::new(0.1).momentum(0.9);
    for _ in 0..3 {
        m.zero_grad();
        m.forward_train_nd(&x).unwrap();
        m.backward_params(&w).unwrap();
        opt.step(&mut m).unwrap();
    }
    check_state(&m, &c["sgd"], "after sgd");

    m.eval();
    let x2 = images(&c["eval"]["x_shape"], &c["eval"]["x"]);
    let y2 = m.forward_nd(&x2).unwrap();
    assert_close(
        &y2.to_row_major(),
        &floats(&c["eval"]["out"]),
        1e-5,
        "eval out",
    );
    // The allocation-free path computes the same.
    let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
    for _ in 0..2 {
        let d = m
            .forward_into_dims(x2.tensor(), x2.dims(), &mut out, &mut ws)
            .unwrap();
        assert_eq!(d, y2.dims());
        assert_eq!(&out, y2.tensor());
    }
}

#[test]
fn a_cnn_with_strides_groups_dilation_pooling_and_batch_norm_matches_pytorch() {
    let fx = fixture("conv.json");
    check_model(cnn(), &fx["models"]["cnn"]);
}

#[test]
fn same_and_valid_padding_ceil_mode_and_adaptive_pooling_match_pytorch() {
    let fx = fixture("conv.json");
    check_model(same(), &fx["models"]["same"]);
}

#[test]
fn image_layers_print_as_pytorch() {
    let fx = fixture("conv.json");
    let ours: Vec<Box<dyn Module>> = vec![
        Box::new(Conv2d::new(1, 8, 3)),
        Box::new(
            Conv2dConfig::new(2, 8, (3, 5))
                .stride(2)
                .padding(1)
                .dilation(2)
                .groups(2)
                .bias(false)
                .build()
                .unwrap(),
        ),
        Box::new(
            Conv2dConfig::new(1, 8, 3)
                .padding(Padding::Same)
                .build()
                .unwrap(),
        ),
        Box::new(
            Conv2dConfig::new(1, 8, 3)
                .padding(Padding::Valid)
                .build()
                .unwrap(),
        ),
        Box::new(Conv2dConfig::new(1, 8, 3).padding((1, 2)).build().unwrap()),
        Box::new(MaxPool2d::new(2)),
        Box::new(MaxPool2d::with_options((2, 3), 1, 1, 1, false).unwrap()),
        Box::new(MaxPool2d::with_options(3, 2, 1, 2, true).unwrap()),
        Box::new(AvgPool2d::new(2)),
        Box::new(AvgPool2d::with_options(3, 2, 1).unwrap()),
        Box::new(AdaptiveAvgPool2d::new(1)),
        Box::new(AdaptiveAvgPool2d::new((2, 3))),
        Box::new(Flatten::new()),
        Box::new(Flatten::with_dims(2, 3).unwrap()),
        Box::new(BatchNorm2d::new(4)),
        Box::new(
            BatchNorm2d::new(4)
                .with_eps(1e-3)
                .with_momentum(None)
                .with_affine(false),
        ),
        Box::new(nncore::Dropout2d::new(0.25).unwrap()),
    ];
    let expected = strings(&fx["reprs"]);
    assert_eq!(ours.len(), expected.len());
    for (m, e) in ours.iter().zip(&expected) {
        assert_eq!(nncore::repr(m.as_ref()), *e);
    }
}

#[test]
fn bad_images_are_reported_with_pytorch_words_and_the_module_path() {
    let fx = fixture("conv.json");
    let e = &fx["errors"];
    let conv = Conv2d::new(1, 8, 3);
    let err = |r: Result<NdTensor>| r.unwrap_err().to_string();
    assert_eq!(
        err(conv.forward_nd(&NdTensor::zeros(&[4, 3, 8, 8]).unwrap())),
        format!("Conv2d: {}", e["channels"].as_str().unwrap())
    );
    assert_eq!(
        err(conv.forward_nd(&NdTensor::zeros(&[4, 1, 2, 2]).unwrap())),
        format!("Conv2d: {}", e["too_small"].as_str().unwrap())
    );
    let dilated = Conv2dConfig::new(1, 8, 3).dilation(2).build().unwrap();
    assert_eq!(
        err(dilated.forward_nd(&NdTensor::zeros(&[1, 1, 4, 4]).unwrap())),
        format!("Conv2d: {}", e["dilated_too_small"].as_str().unwrap())
    );
    assert_eq!(
        err(MaxPool2d::new(2).forward_nd(&NdTensor::zeros(&[1, 1, 1, 1]).unwrap())),
        format!("MaxPool2d: {}", e["pool_too_small"].as_str().unwrap())
    );
    assert_eq!(
        Conv2dConfig::new(1, 8, 3)
            .stride(2)
            .padding(Padding::Same)
            .build()
            .unwrap_err()
            .to_string(),
        e["same_strided"].as_str().unwrap()
    );
    assert_eq!(
        Conv2dConfig::new(3, 8, 3)
            .groups(2)
            .build()
            .unwrap_err()
            .to_string(),
        e["groups"].as_str().unwrap()
    );
    assert_eq!(
        err(BatchNorm2d::new(3).forward_nd(&NdTensor::zeros(&[2, 4, 3, 3]).unwrap())),
        format!("BatchNorm2d: {}", e["bn_channels"].as_str().unwrap())
    );
    // Inside a model, the error names the path; nothing runs after it.
    let m = cnn();
    let msg = err(m.forward_nd(&NdTensor::zeros(&[2, 3, 9, 8]).unwrap()));
    assert!(
        msg.starts_with("Cnn.conv1 (Conv2d): Given groups=1"),
        "{msg}"
    );
    // A plain matrix into an image layer (PyTorch's words, and how to give
    // it its shape), other ranks, and an image into Linear.
    let msg = Conv2d::new(1, 8, 3)
        .forward(&Tensor::zeros(2, 64))
        .unwrap_err()
        .to_string();
    let want = format!("Conv2d: {}", e["conv_2d"].as_str().unwrap());
    assert!(msg.starts_with(&want) && msg.contains("NdTensor"), "{msg}");
    let bn = BatchNorm2d::new(3)
        .forward(&Tensor::zeros(2, 64))
        .unwrap_err()
        .to_string();
    assert!(
        bn.starts_with(&format!("BatchNorm2d: {}", e["bn_2d"].as_str().unwrap())),
        "{bn}"
    );
    let five = NdTensor::zeros(&[2, 1, 2, 4, 4]).unwrap();
    for (r, key, name) in [
        (Conv2d::new(1, 8, 3).forward_nd(&five), "conv_5d", "Conv2d"),
        (
            MaxPool2d::new(2).forward_nd(&five),
            "maxpool_5d",
            "MaxPool2d",
        ),
        (
            AvgPool2d::new(2).forward_nd(&five),
            "avgpool_5d",
            "AvgPool2d",
        ),
        (
            BatchNorm2d::new(3).forward_nd(&five),
            "bn_5d",
            "BatchNorm2d",
        ),
    ] {
        assert_eq!(err(r), format!("{name}: {}", e[key].as_str().unwrap()));
    }
    let msg = m.forward(&Tensor::zeros(2, 144)).unwrap_err().to_string();
    assert!(
        msg.starts_with("Cnn.conv1 (Conv2d): Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [2, 144]"),
        "{msg}"
    );
    let msg = Linear::new(8, 2)
        .forward_nd(&NdTensor::zeros(&[2, 1, 8, 8]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "expected a 2-d input (batch, features), got a 4-d input of shape [2, 1, 8, 8]"
        ),
        "{msg}"
    );
}

#[test]
fn weights_pytorch_saved_load_and_ours_save_the_same_file() {
    let mut m = cnn();
    m.load_safetensors(fixture_path("cnn_trained.safetensors"))
        .unwrap();
    let fx = fixture("conv.json");
    check_state(&m, &fx["models"]["cnn"]["sgd"], "loaded");
    let dir = tempdir("conv");
    let path = dir.join("cnn.safetensors");
    m.save_safetensors(&path).unwrap();
    // Byte for byte the file safetensors.torch.save_file wrote for the
    // same state_dict, so PyTorch loads ours (strictly) as it loads its own.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(fixture_path("cnn_trained.safetensors")).unwrap()
    );
    let mut back = cnn();
    back.load_safetensors(&path).unwrap();
    assert_eq!(back.state_dict(), m.state_dict());
}

#[test]
fn pooling_on_ties_sends_gradients_where_pytorch_does() {
    let fx = fixture("conv.json");
    for case in fx["pools"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut layer: Box<dyn nncore::Layer> = match name {
            "max3_pad1" => Box::new(MaxPool2d::with_options(3, 1, 1, 1, false).unwrap()),
            "max_dilated" => {
                Box::new(MaxPool2d::with_options((2, 3), (1, 2), (1, 1), (1, 2), false).unwrap())
            }
            "max_ceil" => Box::new(MaxPool2d::with_options(2, 2, 0, 1, true).unwrap()),
            "avg_ceil_nopad" => Box::new(
                AvgPool2d::with_options(3, 2, 1)
                    .unwrap()
                    .with_ceil_mode(true)
                    .with_count_include_pad(false),
            ),
            "avg_ceil_pad" => Box::new(
                AvgPool2d::with_options(3, 2, 1)
                    .unwrap()
                    .with_ceil_mode(true),
            ),
            "adaptive_up" => Box::new(AdaptiveAvgPool2d::new((6, 4))),
            "adaptive_down" => Box::new(AdaptiveAvgPool2d::new((2, 3))),
            other => panic!("no layer for {other}"),
        };
        let x = NdTensor::from_row_major(&[2, 3, 5, 7], &floats(&case["x"])).unwrap();
        let shape = usizes(&case["out_shape"]);
        let y = layer.forward_nd(&x).unwrap();
        assert_eq!(y.shape(), shape, "{name}");
        assert_close(&y.to_row_major(), &floats(&case["out"]), 1e-6, name);
        let w = NdTensor::from_row_major(&shape, &floats(&case["w"])).unwrap();
        let (out, _) = layer.forward_train_nd(&x).unwrap();
        assert_eq!(out, y.tensor(), "{name}");
        let dx = layer.backward(w.tensor()).unwrap();
        let dx = NdTensor::new(dx.clone(), x.dims()).unwrap();
        assert_close(&dx.to_row_major(), &floats(&case["dx"]), 1e-6, name);
    }
}

#[test]
fn summaries_of_image_models_are_torchinfo_s() {
    check_summary("cnn", &cnn());
    check_summary("same", &same());
    check_summary("lenet_b512", &nnrs::workloads::lenet(0));
}

#[test]
fn dropout_2d_drops_whole_channels_and_its_backward_follows_the_mask() {
    let mut d = nncore::Dropout2d::with_generator(0.3, nncore::Generator::new(4)).unwrap();
    let (n, c, h, w) = (40, 25, 3, 2);
    let mut g = nncore::Generator::new(5);
    let x = NdTensor::new(
        g.uniform_tensor(n, c * h * w, 0.5, 1.5),
        Dims::image(c, h, w),
    )
    .unwrap();
    let (y, dims) = d.forward_train_nd(&x).unwrap();
    assert_eq!(dims, x.dims());
    let y = NdTensor::new(y.clone(), dims).unwrap();
    let mut dropped = 0;
    for i in 0..n {
        for ch in 0..c {
            let ratios: Vec<f32> = (0..h)
                .flat_map(|r| (0..w).map(move |q| (r, q)))
                .map(|(r, q)| y.get(&[i, ch, r, q]).unwrap() / x.get(&[i, ch, r, q]).unwrap())
                .collect();
            // The whole channel is scaled by one factor: 0 or 1/(1-p).
            let f = ratios[0];
            assert!(f == 0.0 || (f - 1.0 / 0.7).abs() < 1e-5, "{f}");
            assert!(ratios.iter().all(|r| (r - f).abs() < 1e-5));
            dropped += usize::from(f == 0.0);
        }
    }
    // 1000 channels at p = 0.3: 300 expected, 14.5 standard deviation.
    assert!((230..370).contains(&dropped), "{dropped}");
    // The gradient goes through the same mask.
    let gy = Tensor::from_element(n, c * h * w, 1.0);
    let dx = NdTensor::new(d.backward(&gy).unwrap().clone(), dims).unwrap();
    for i in 0..n {
        for ch in 0..c {
            let kept = y.get(&[i, ch, 0, 0]).unwrap() != 0.0;
            let expected = if kept { 1.0 / 0.7 } else { 0.0 };
            assert!((dx.get(&[i, ch, 1, 1]).unwrap() - expected).abs() < 1e-5);
        }
    }
    // Eval mode and inference are the identity; plain matrices are refused.
    d.eval();
    assert_eq!(d.forward_train_nd(&x).unwrap().0, x.tensor());
    assert_eq!(&d.forward_nd(&x).unwrap(), &x);
    assert!(d.forward(x.tensor()).is_err());
}

/// ResNet's basic block written as in PyTorch: one `ReLU` used twice, a
/// skip connection.
#[derive(Module)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    relu: ReLU,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    tape: Tape,
}

#[nncore::forward]
impl BasicBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.relu(self.bn1(self.conv1(x)?)?)?;
        let out = self.bn2(self.conv2(out)?)?;
        self.relu(out + x)
    }
}

/// Channels concatenated, chunked, narrowed, scaled and gated.
#[derive(Module)]
struct Mix {
    a: Conv2d,
    b: Conv2d,
    tape: Tape,
}

#[nncore::forward]
impl Mix {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = cat(&[self.a(x)?, self.b(x)?], 1);
        let [p, q] = y.chunk(2, 1);
        Ok(cat(&[q * 2.0, sigmoid(p).narrow(1, 0, 2)], 1))
    }
}

#[derive(Module)]
struct ResNet {
    stem: Conv2d,
    blocks: Vec<BasicBlock>,
    mix: Mix,
    pool: AdaptiveAvgPool2d,
    flat: Flatten,
    fc: Linear,
    tape: Tape,
}

#[nncore::forward]
impl ResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = relu(self.stem(x)?);
        for block in &self.blocks {
            x = block(x)?;
        }
        let x = self.mix(x)?;
        self.fc(self.flat(self.pool(x)?)?)
    }
}

fn resnet() -> ResNet {
    let conv3 = |c| {
        Conv2dConfig::new(c, c, 3)
            .padding(1)
            .bias(false)
            .build()
            .unwrap()
    };
    nncore::with_seed(0, || ResNet {
        stem: Conv2dConfig::new(1, 4, 3).padding(1).build().unwrap(),
        blocks: (0..2)
            .map(|_| BasicBlock {
                conv1: conv3(4),
                bn1: BatchNorm2d::new(4),
                relu: ReLU::new(),
                conv2: conv3(4),
                bn2: BatchNorm2d::new(4),
                tape: Tape::default(),
            })
            .collect(),
        mix: Mix {
            a: Conv2d::new(4, 2, 1),
            b: Conv2dConfig::new(4, 3, 3).padding(1).build().unwrap(),
            tape: Tape::default(),
        },
        pool: AdaptiveAvgPool2d::new(1),
        flat: Flatten::new(),
        fc: Linear::new(4, 3),
        tape: Tape::default(),
    })
}

#[test]
fn a_resnet_with_written_forwards_on_images_matches_pytorch() {
    let fx = fixture("conv.json");
    check_model(resnet(), &fx["models"]["resnet"]);
}

#[test]
fn written_forwards_report_image_shape_errors() {
    let mut m = resnet();
    // A block's skip connection with another shape, through the engine.
    let x = NdTensor::zeros(&[2, 1, 6, 5]).unwrap();
    assert_eq!(m.forward_nd(&x).unwrap().shape(), vec![2, 3]);
    let msg = m
        .forward_nd(&NdTensor::zeros(&[2, 2, 6, 5]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("ResNet.stem (Conv2d): Given groups=1"),
        "{msg}"
    );
    let msg = m.forward(&Tensor::zeros(2, 30)).unwrap_err().to_string();
    assert!(
        msg.starts_with(
            "ResNet.stem (Conv2d): Expected 3D (unbatched) or 4D (batched) input to conv2d"
        ),
        "{msg}"
    );
    // Gradients of the written model on images against finite differences.
    let mut g = nncore::Generator::new(3);
    let x = NdTensor::new(g.uniform_tensor(2, 30, -1.0, 1.0), Dims::image(1, 6, 5)).unwrap();
    m.eval();
    nncore::GradCheck::new().run_nd(&mut m, &x).unwrap();
}

#[derive(Module)]
struct BadAxis {
    conv: Conv2d,
    tape: Tape,
}

#[nncore::forward]
impl BadAxis {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv(x)?;
        Ok(y.narrow(2, 0, 1))
    }
}

#[derive(Module)]
struct SoftmaxImage {
    conv: Conv2d,
    tape: Tape,
}

#[nncore::forward]
impl SoftmaxImage {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(softmax(self.conv(x)?, 1))
    }
}

#[test]
fn written_forwards_refuse_what_they_cannot_do_on_images() {
    let x = NdTensor::zeros(&[2, 1, 4, 4]).unwrap();
    let m = BadAxis {
        conv: Conv2d::new(1, 2, 3),
        tape: Tape::default(),
    };
    let msg = m.forward_nd(&x).unwrap_err().to_string();
    assert!(msg.contains("dimension 2 of a 4-d tensor"), "{msg}");
    let m = SoftmaxImage {
        conv: Conv2d::new(1, 2, 3),
        tape: Tape::default(),
    };
    let msg = m.forward_nd(&x).unwrap_err().to_string();
    assert!(
        msg.contains("softmax along dimension 1 of a 4-d tensor"),
        "{msg}"
    );
    // Out of range, as PyTorch words it.
    let m = BadAxis {
        conv: Conv2d::new(1, 2, 3),
        tape: Tape::default(),
    };
    let msg = m.forward(&Tensor::zeros(2, 16)).unwrap_err().to_string();
    assert!(
        msg.contains("Expected 3D (unbatched) or 4D (batched) input to conv2d"),
        "{msg}"
    );
}

#[test]
fn hostile_sizes_are_errors_not_panics() {
    let x = NdTensor::zeros(&[1, 1, 4, 4]).unwrap();
    let err = |r: Result<NdTensor>| r.unwrap_err().to_string();
    let huge_pad = Conv2dConfig::new(1, 1, 3)
        .padding(usize::MAX / 2)
        .build()
        .unwrap();
    assert!(err(huge_pad.forward_nd(&x)).contains("too large"));
    let huge_dilation = Conv2dConfig::new(1, 1, 3)
        .dilation(usize::MAX)
        .build()
        .unwrap();
    assert!(err(huge_dilation.forward_nd(&x)).contains("too large"));
    let big_pad = Conv2dConfig::new(1, 1, 1).padding(1 << 40).build().unwrap();
    assert!(err(big_pad.forward_nd(&x)).contains("too large to allocate"));
    assert!(
        Conv2dConfig::new(1 << 40, 1 << 40, 1 << 20)
            .build()
            .is_err()
    );
    assert!(Conv2dConfig::new(1, 1, 0).build().is_err());
    assert!(Conv2dConfig::new(1, 1, 1).stride(0).build().is_err());
    assert!(Conv2dConfig::new(1, 1, 1).groups(0).build().is_err());
    assert!(MaxPool2d::with_options(3, 1, 1, usize::MAX, false).is_err());
    assert!(MaxPool2d::with_options(0, 1, 0, 1, false).is_err());
    assert!(AvgPool2d::with_options(2, 2, 2).is_err());
    let adaptive = AdaptiveAvgPool2d::new((usize::MAX / 2, 2));
    assert!(err(adaptive.forward_nd(&x)).contains("too large"));
    assert!(Flatten::with_dims(0, -1).is_err());
    assert!(
        err(Flatten::with_dims(3, 1).unwrap().forward_nd(&x))
            .contains("start_dim cannot come after end_dim")
    );
    assert!(
        err(Flatten::with_dims(1, 7).unwrap().forward_nd(&x)).contains("Dimension out of range")
    );
    // A weight of another shape: PyTorch's size-mismatch report.
    let mut other = nncore::with_seed(0, || Cnn {
        conv1: Conv2dConfig::new(1, 6, 3).padding(1).build().unwrap(),
        ..cnn()
    });
    let e = other
        .load_safetensors(fixture_path("cnn_trained.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("size mismatch for conv1.weight: copying a param with shape torch.Size([6, 2, 3, 3]) from checkpoint, the shape in current model is torch.Size([6, 1, 3, 3])"),
        "{e}"
    );
}

#[test]
fn empty_batches_give_empty_outputs_and_zero_gradients() {
    // As PyTorch: a batch of 0 images goes through every layer.
    let mut m = cnn();
    let x = NdTensor::zeros(&[0, 2, 9, 8]).unwrap();
    m.eval();
    assert_eq!(m.forward_nd(&x).unwrap().shape(), vec![0, 5]);
    let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
    m.forward_into_dims(x.tensor(), x.dims(), &mut out, &mut ws)
        .unwrap();
    assert_eq!(out.shape(), (0, 5));
    // Training on an empty batch: the gradients are zero, not stale.
    let mut conv = nncore::with_seed(0, || {
        Conv2dConfig::new(4, 6, 3)
            .groups(2)
            .padding(1)
            .build()
            .unwrap()
    });
    let full = NdTensor::from_row_major(&[1, 4, 3, 3], &[1.0; 36]).unwrap();
    let (y, _) = conv.forward_train_nd(&full).unwrap();
    let g = Tensor::from_element(y.nrows(), y.ncols(), 1.0);
    conv.backward(&g).unwrap();
    conv.zero_grad();
    let empty = NdTensor::zeros(&[0, 4, 3, 3]).unwrap();
    let (y, d) = conv.forward_train_nd(&empty).unwrap();
    assert_eq!((y.shape(), d.as_slice()), ((0, 54), &[6, 3, 3][..]));
    let g0 = Tensor::zeros(0, 54);
    let dx = conv.backward(&g0).unwrap();
    assert_eq!(dx.shape(), (0, 36));
    for (name, p) in conv.named_parameters() {
        assert!(p.grad().unwrap().iter().all(|v| *v == 0.0), "{name}");
    }
    let mut pool = MaxPool2d::new(2);
    assert_eq!(pool.forward_train_nd(&empty).unwrap().0.shape(), (0, 4));
    // An image with no pixels is refused, in PyTorch's words.
    let none = NdTensor::zeros(&[1, 1, 0, 4]).unwrap();
    let e = MaxPool2d::new(1).forward_nd(&none).unwrap_err().to_string();
    assert!(e.contains("non-empty 3D or 4D"), "{e}");
}

/// `padding_mode` "reflect", "replicate" and "circular" (and "zeros") with
/// explicit, unequal and "same" padding, stride, dilation and groups:
/// print text, initial weights, output and every gradient as PyTorch's
/// (`tests/fixtures/conv_padding_modes.json`, from
/// `scripts/gen_padding_mode_fixtures.py`); paddings a mode cannot take
/// are PyTorch's errors.
#[test]
fn padding_modes_match_pytorch() {
    use nncore::PaddingMode;
    let fx = fixture("conv_padding_modes.json");
    let pair = |v: &Value| {
        let v = usizes(v);
        (v[0], v[1])
    };
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 16);
    for case in cases {
        let c = &case["config"];
        let what = case["repr"].as_str().unwrap();
        let padding = match c["padding"].as_str() {
            Some("same") => Padding::Same,
            Some(other) => panic!("padding {other}"),
            None => pair(&c["padding"]).into(),
        };
        let mode = match c["mode"].as_str().unwrap() {
            "zeros" => PaddingMode::Zeros,
            "reflect" => PaddingMode::Reflect,
            "replicate" => PaddingMode::Replicate,
            "circular" => PaddingMode::Circular,
            other => panic!("mode {other}"),
        };
        let cfg = Conv2dConfig::new(
            c["in"].as_u64().unwrap() as usize,
            c["out"].as_u64().unwrap() as usize,
            pair(&c["kernel"]),
        )
        .stride(pair(&c["stride"]))
        .padding(padding)
        .dilation(pair(&c["dilation"]))
        .groups(c["groups"].as_u64().unwrap() as usize)
        .bias(c["bias"].as_bool().unwrap())
        .padding_mode(mode);
        let mut conv = nncore::with_seed(0, || cfg.build().unwrap());
        assert_eq!(conv.to_string(), what);
        let x = images(&case["x_shape"], &case["x"]);
        let shape = usizes(&case["out_shape"]);
        let y = conv.forward_nd(&x).unwrap();
        assert_eq!(y.shape(), shape, "{what}");
        assert_close(&y.to_row_major(), &floats(&case["out"]), 1e-5, what);
        let w = NdTensor::from_row_major(&shape, &floats(&case["w"])).unwrap();
        let (out, _) = conv.forward_train_nd(&x).unwrap();
        assert_eq!(out, y.tensor(), "{what}: training forward");
        let dx = conv.backward(w.tensor()).unwrap();
        let dx = NdTensor::new(dx.clone(), x.dims()).unwrap();
        assert_close(&dx.to_row_major(), &floats(&case["dx"]), 1e-5, what);
        assert_close(
            &row_major(conv.weight().grad().unwrap()),
            &floats(&case["dweight"]),
            1e-5,
            what,
        );
        if let Some(b) = conv.bias() {
            assert_close(
                &row_major(b.grad().unwrap()),
                &floats(&case["dbias"]),
                1e-5,
                what,
            );
        }
    }
    let errors = &fx["errors"];
    let err = |cfg: Conv2dConfig, shape: &[usize]| {
        let conv = cfg.build().unwrap();
        let e = conv
            .forward_nd(&NdTensor::zeros(shape).unwrap())
            .unwrap_err();
        e.to_string()
    };
    let reflect = |p: (usize, usize)| {
        Conv2dConfig::new(1, 1, 3)
            .padding(p)
            .padding_mode(PaddingMode::Reflect)
    };
    assert_eq!(
        err(reflect((2, 2)), &[1, 1, 2, 5]),
        format!("Conv2d: {}", errors["reflect_too_large"].as_str().unwrap())
    );
    assert_eq!(
        err(reflect((1, 4)), &[1, 1, 5, 4]),
        format!(
            "Conv2d: {}",
            errors["reflect_too_large_w"].as_str().unwrap()
        )
    );
    let circular = Conv2dConfig::new(1, 1, 3)
        .padding(3)
        .padding_mode(PaddingMode::Circular);
    assert_eq!(
        err(circular, &[1, 1, 2, 5]),
        format!("Conv2d: {}", errors["circular_wraps"].as_str().unwrap())
    );
}
