use nncore::prelude::*;

fn softplus(x: &Tensor) -> Tensor {
    x.map(|v| (1.0 + v.exp()).ln())
}

#[derive(Module)]
struct Net {
    fc: Linear,
    tape: Tape,
}

#[nncore::forward]
impl Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc(x)?;
        Ok(softplus(h))
    }
}

fn main() {}
