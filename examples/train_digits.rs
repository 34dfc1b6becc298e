//! Trains the seed article's `SimpleNet` (64 inputs, one hidden layer, 10
//! classes) on the UCI handwritten digits (`data/digits.csv.gz`, 1797 8x8
//! images; provenance in `data/README.md`), with a fixed train/test split,
//! SGD with momentum and weight decay, one progress line per epoch and the
//! final test accuracy; then saves the trained model as safetensors. Then
//! the same for a small CNN that sees each digit as a 1x8x8 image
//! (`Conv2d -> ReLU -> MaxPool2d -> Flatten -> Linear`).
//! Deterministic for a given seed.
//!
//! Run with `cargo run --release --example train_digits [seed]`.

use std::io::Read;
use std::time::Instant;

use nncore::prelude::*;
use nncore::{CosineAnnealingLr, Generator};

/// The CNN: 16 filters of 3x3 over the 1x8x8 image (16x6x6), 2x2 max
/// pooling (16x3x3), then one `Linear` to the 10 classes.
#[derive(Module)]
struct DigitsCnn {
    conv: Conv2d,
    relu: ReLU,
    pool: MaxPool2d,
    flat: Flatten,
    fc: Linear,
}

impl DigitsCnn {
    fn new() -> Self {
        Self {
            conv: Conv2d::new(1, 16, 3),
            relu: ReLU::new(),
            pool: MaxPool2d::new(2),
            flat: Flatten::new(),
            fc: Linear::new(16 * 3 * 3, 10),
        }
    }
}

#[derive(Module)]
struct SimpleNet {
    fc1: Linear,
    relu: ReLU,
    fc2: Linear,
}

impl SimpleNet {
    fn new(input_size: usize, hidden_size: usize, output_size: usize) -> Self {
        Self {
            fc1: Linear::new(input_size, hidden_size),
            relu: ReLU::new(),
            fc2: Linear::new(hidden_size, output_size),
        }
    }
}

/// Pixels scaled to [0, 1] (one row per image) and labels.
struct Dataset {
    pixels: Vec<[f32; 64]>,
    labels: Vec<usize>,
}

fn load_digits(path: &str) -> Result<Dataset, Box<dyn std::error::Error>> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text)?;
    let mut data = Dataset {
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for (line_no, line) in text.lines().enumerate() {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{path}:{}: {e}", line_no + 1))?;
        if values.len() != 65 {
            return Err(format!("{path}:{}: expected 65 columns", line_no + 1).into());
        }
        let mut px = [0.0f32; 64];
        for (p, v) in px.iter_mut().zip(&values[..64]) {
            *p = v / 16.0;
        }
        let label = values[64];
        if !(0.0..=9.0).contains(&label) || label.fract() != 0.0 {
            return Err(format!("{path}:{}: bad label {label}", line_no + 1).into());
        }
        data.pixels.push(px);
        data.labels.push(label as usize);
    }
    Ok(data)
}

/// The images `idx` with their sample shape (`[64]` for the MLP,
/// `[1, 8, 8]` for the CNN: the same values, row by row), and labels.
fn batch(
    data: &Dataset,
    idx: &[usize],
    dims: Dims,
) -> Result<(NdTensor, Vec<usize>), nncore::Error> {
    let x = Tensor::from_fn(idx.len(), 64, |r, c| data.pixels[idx[r]][c]);
    let y = idx.iter().map(|&i| data.labels[i]).collect();
    Ok((NdTensor::new(x, dims)?, y))
}

fn accuracy<M: Forward>(
    model: &M,
    data: &Dataset,
    idx: &[usize],
    dims: Dims,
) -> Result<f64, nncore::Error> {
    let (x, y) = batch(data, idx, dims)?;
    let logits = model.forward_nd(&x)?.into_tensor();
    let correct = y
        .iter()
        .enumerate()
        .filter(|&(r, &label)| logits.row(r).transpose().argmax().0 == label)
        .count();
    Ok(correct as f64 / idx.len() as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed: u64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("seed must be a number, got {s:?}"))?,
        None => 0,
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.csv.gz");
    let data = load_digits(path)?;

    // Fixed split: a Fisher-Yates shuffle from the seed, 80% train, 20% test.
    let mut rng = Generator::new(seed);
    let mut order: Vec<usize> = (0..data.labels.len()).collect();
    for i in (1..order.len()).rev() {
        let j = rng.next_u32() as usize % (i + 1);
        order.swap(i, j);
    }
    let n_train = order.len() * 8 / 10;
    let (train_idx, test_idx) = order.split_at(n_train);
    println!(
        "digits: {} images, {} train / {} test, seed {seed}",
        data.labels.len(),
        train_idx.len(),
        test_idx.len()
    );

    nncore::manual_seed(seed);
    let mut model = SimpleNet::new(64, 128, 10);
    println!("{model}");
    let flat = Dims::flat(64);
    let mlp_acc = fit(&mut model, flat, &data, train_idx, test_idx, &mut rng)?;
    check_reload(
        &model,
        SimpleNet::new(64, 128, 10),
        "train_digits",
        flat,
        &data,
        test_idx,
        mlp_acc,
    )?;

    // The same digits as 1x8x8 images, through a convolution.
    nncore::manual_seed(seed);
    let mut cnn = DigitsCnn::new();
    println!("{cnn}");
    let image = Dims::image(1, 8, 8);
    let cnn_acc = fit(&mut cnn, image, &data, train_idx, test_idx, &mut rng)?;
    check_reload(
        &cnn,
        DigitsCnn::new(),
        "train_digits_cnn",
        image,
        &data,
        test_idx,
        cnn_acc,
    )?;
    println!(
        "test accuracy: MLP {:.2}%, CNN {:.2}%",
        100.0 * mlp_acc,
        100.0 * cnn_acc
    );
    if cnn_acc < mlp_acc {
        return Err("the CNN scores below the MLP".into());
    }
    Ok(())
}

/// Trains `model` for 30 epochs (SGD with momentum and weight decay,
/// cosine learning rate, batches of 32), one line per epoch; returns the
/// final test accuracy, which must reach 95%.
fn fit<M: Backward>(
    model: &mut M,
    dims: Dims,
    data: &Dataset,
    train_idx: &[usize],
    test_idx: &[usize],
    rng: &mut Generator,
) -> Result<f64, Box<dyn std::error::Error>> {
    let epochs = 30;
    let batch_size = 32;
    let mut opt = Sgd::new(0.1).momentum(0.9).weight_decay(1e-4);
    let mut sched = CosineAnnealingLr::new(&opt, epochs, 0.0);
    let mut train_order = train_idx.to_vec();
    let start = Instant::now();
    for epoch in 1..=epochs {
        model.train();
        for i in (1..train_order.len()).rev() {
            let j = rng.next_u32() as usize % (i + 1);
            train_order.swap(i, j);
        }
        let mut loss_sum = 0.0;
        let mut correct = 0;
        for chunk in train_order.chunks(batch_size) {
            let (x, labels) = batch(data, chunk, dims)?;
            model.zero_grad();
            let (logits, _) = model.forward_train_nd(&x)?;
            correct += labels
                .iter()
                .enumerate()
                .filter(|&(r, &l)| logits.row(r).transpose().argmax().0 == l)
                .count();
            let (loss, grad) = cross_entropy(logits, &labels)?;
            model.backward_params(&grad)?;
            opt.step(model)?;
            loss_sum += f64::from(loss) * chunk.len() as f64;
        }
        sched.step(&mut opt);
        model.eval();
        let test_acc = accuracy(model, data, test_idx, dims)?;
        println!(
            "epoch {epoch:>2}/{epochs}  loss {:.4}  train acc {:6.2}%  test acc {:6.2}%  elapsed {:.1} ms",
            loss_sum / train_order.len() as f64,
            100.0 * correct as f64 / train_order.len() as f64,
            100.0 * test_acc,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    let test_acc = accuracy(model, data, test_idx, dims)?;
    println!("final test accuracy: {:.2}%", 100.0 * test_acc);
    if test_acc < 0.95 {
        return Err(format!("test accuracy {:.2}% is below 95%", 100.0 * test_acc).into());
    }
    Ok(test_acc)
}

/// Saves the trained weights (PyTorch's names and layout) and checks that
/// `fresh`, loaded from them, scores the same.
fn check_reload<M: Forward>(
    model: &M,
    mut fresh: M,
    name: &str,
    dims: Dims,
    data: &Dataset,
    test_idx: &[usize],
    test_acc: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("target");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("{name}.safetensors"));
    model.save_safetensors(&path)?;
    fresh.load_safetensors(&path)?;
    let reloaded_acc = accuracy(&fresh, data, test_idx, dims)?;
    println!(
        "saved the trained model to {} (reloaded: {:.2}% test accuracy)",
        path.display(),
        100.0 * reloaded_acc
    );
    if reloaded_acc != test_acc {
        return Err("the reloaded model scores differently".into());
    }
    Ok(())
}
