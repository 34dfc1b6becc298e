use nncore::prelude::*;

#[derive(Module)]
struct Net {
    fc: Linear,
}

#[nncore::forward]
impl Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc(x)
    }
}

fn main() {}
