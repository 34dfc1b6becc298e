// A written forward trains its children, so each must have a backward pass.
use nncore::prelude::*;

#[derive(Module)]
#[module(custom_forward)]
struct Scale {
    #[module(skip)]
    factor: f32,
}

impl Forward for Scale {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x * self.factor)
    }
}

#[derive(Module)]
struct Block {
    fc: Linear,
    scale: Scale,
    tape: Tape,
}

#[nncore::forward]
impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc(x)?;
        Ok(self.scale(h)? + x)
    }
}

fn main() {}
