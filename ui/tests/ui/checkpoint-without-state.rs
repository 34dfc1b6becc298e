// An optimizer written outside nncore that cannot save its state is not a
// run-time "unsupported" error in the middle of training: it cannot be
// passed to `save_checkpoint` at all.
use nncore::prelude::*;

struct SignSgd {
    lr: f64,
}

impl Optimizer for SignSgd {
    fn step(&mut self, model: &mut dyn Module) -> nncore::Result<()> {
        let lr = self.lr as f32;
        model.for_each_parameter_mut(&mut |p| {
            if let Some(g) = p.grad().cloned() {
                let mut v = p.value_mut();
                for (w, g) in v.iter_mut().zip(g.iter()) {
                    *w -= lr * g.signum();
                }
            }
        });
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

fn main() {
    let model = Linear::new(3, 2);
    let opt = SignSgd { lr: 0.1 };
    nncore::save_checkpoint("ckpt.safetensors", &model, &opt, None).unwrap();
}
