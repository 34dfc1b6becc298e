use nncore::prelude::*;

#[derive(Module)]
struct Net {
    fc: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Net {
    fn forward(&mut self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.fc(x)
    }
}

fn main() {}
