//! Weights exchanged with PyTorch, both ways.
//!
//! `scripts/gen_interop_fixtures.py` defines the same `SimpleNet` in
//! PyTorch, exports its weights (`tests/fixtures/simple_net.safetensors`),
//! an input batch and PyTorch's output for it
//! (`tests/fixtures/simple_net_io.safetensors`). This example loads them,
//! runs the forward pass and prints how far its outputs are from PyTorch's
//! (they must agree within 1e-6), then saves the model and loads it back.
//!
//! Run with `cargo run --release --example pytorch_interop`.
//! With `--write-fixture` it also writes `tests/fixtures/rust_written.safetensors`
//! (the seed-0 model), which the script then loads into PyTorch.

use nncore::StateDict;
use nncore::prelude::*;

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

fn tensor(sd: &StateDict, key: &str) -> Result<Tensor, Box<dyn std::error::Error>> {
    let t = sd.get(key).ok_or_else(|| format!("no tensor {key:?}"))?;
    let values = t
        .as_f32()
        .ok_or_else(|| format!("{key}: expected a float tensor, got {:?}", t.dtype()))?;
    match t.shape() {
        [rows, cols] => Ok(Tensor::from_row_slice(*rows, *cols, values)),
        other => Err(format!("{key}: expected a 2-D tensor, got shape {other:?}").into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

    // PyTorch -> Rust.
    let mut model = SimpleNet::new(100, 50, 10);
    model.load_safetensors(format!("{fixtures}/simple_net.safetensors"))?;
    println!("loaded PyTorch's weights into\n{model}");
    let io = StateDict::load_safetensors(format!("{fixtures}/simple_net_io.safetensors"))?;
    let x = tensor(&io, "input")?;
    let expected = tensor(&io, "output")?;
    let y = model.forward(&x)?;
    let max_diff = (&y - &expected).abs().max();
    println!(
        "forward on {:?}: max |rust - pytorch| = {max_diff:.3e}",
        x.shape()
    );
    if max_diff > 1e-6 {
        return Err(format!("outputs differ from PyTorch's by {max_diff}").into());
    }

    // Rust -> file -> Rust.
    let dir = std::env::temp_dir().join(format!("nnrs-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("simple_net.safetensors");
    model.save_safetensors(&path)?;
    let mut again = SimpleNet::new(100, 50, 10);
    again.load_safetensors(&path)?;
    let round_trip = (again.forward(&x)? - &y).abs().max();
    println!(
        "saved to {} and loaded back: max |diff| = {round_trip:e}",
        path.display()
    );
    std::fs::remove_dir_all(&dir)?;

    if std::env::args().any(|a| a == "--write-fixture") {
        nncore::manual_seed(0);
        let seeded = SimpleNet::new(100, 50, 10);
        let out = format!("{fixtures}/rust_written.safetensors");
        seeded.save_safetensors(&out)?;
        println!("wrote {out}: load it in PyTorch with scripts/gen_interop_fixtures.py");
    }
    Ok(())
}
