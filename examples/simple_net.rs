//! The seed article's `SimpleNet`, defined the PyTorch way (layers as
//! fields, `forward` written out): printed, its parameter table, and a
//! forward pass on a batch.
//!
//! Run with `cargo run --release --example simple_net`.

use nncore::prelude::*;

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

impl SimpleNet {
    fn new(input_size: usize, hidden_size: usize, output_size: usize) -> Self {
        Self {
            fc1: Linear::new(input_size, hidden_size),
            relu: ReLU::new(),
            fc2: Linear::new(hidden_size, output_size),
            tape: Tape::default(),
        }
    }
}

fn main() -> Result<(), nncore::Error> {
    // Same seed, same weights as `torch.manual_seed(0); SimpleNet(100, 50, 10)`.
    nncore::manual_seed(0);
    let model = SimpleNet::new(100, 50, 10);
    println!("{model}");

    println!();
    println!("{:<12} {:>10} {:>8}", "parameter", "shape", "numel");
    for (name, p) in model.named_parameters() {
        println!(
            "{:<12} {:>10} {:>8}",
            name,
            format!("{:?}", p.shape()),
            p.numel()
        );
    }
    println!("total parameters: {}", model.num_parameters());
    assert_eq!(model.num_parameters(), 5560);

    // A batch of 64 samples, one per row.
    let x = Tensor::from_fn(64, 100, |r, c| ((r * 100 + c) as f32 * 0.01).sin());
    let y = model.forward(&x)?;
    println!();
    println!("forward: input {:?} -> output {:?}", x.shape(), y.shape());
    println!("first row: {:.4}", y.row(0));

    // Shape errors are values, never panics.
    let wrong = Tensor::zeros(64, 60);
    if let Err(e) = model.forward(&wrong) {
        println!("wrong input: {e}");
    }
    Ok(())
}
