//! A user's own crate: depends on nncore alone (by path, resolved afresh
//! without the workspace's lock file), defines, trains and saves a model.
//! `.ci/run` builds it with edition 2021 and 2024.

use nncore::prelude::*;

#[derive(Module)]
struct Net {
    fc1: Linear,
    fc2: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = relu(self.fc1(x)?);
        self.fc2(h)
    }
}

fn main() -> Result<(), nncore::Error> {
    nncore::manual_seed(0);
    let mut net = Net {
        fc1: Linear::new(4, 8),
        fc2: Linear::new(8, 1),
        tape: Tape::default(),
    };
    println!("{net}");
    let x = nncore::Generator::new(1).uniform_tensor(32, 4, -1.0, 1.0);
    let y = Tensor::from_fn(32, 1, |r, _| x.row(r).sum());
    let mut opt = Adam::new(0.01);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..200 {
        net.zero_grad();
        let out = net.forward_train(&x)?;
        let (loss, grad) = mse_loss(out, &y)?;
        net.backward_params(&grad)?;
        opt.step(&mut net)?;
        first.get_or_insert(loss);
        last = loss;
    }
    let first = first.unwrap_or(last);
    println!("loss {first:.4} -> {last:.4}");
    assert!(last < first / 10.0, "did not train");
    let path = std::env::temp_dir().join("nncore-outside-crate.safetensors");
    net.save_safetensors(&path)?;
    net.load_safetensors(&path)?;
    std::fs::remove_file(&path).ok();
    Ok(())
}
