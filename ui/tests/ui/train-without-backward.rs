// A hand-written layer with a forward only: a model holding it infers, but
// training it is a compile error that names the layer.
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
struct Net {
    fc: Linear,
    scale: Scale,
}

fn fit<M: Backward>(model: &mut M, x: &Tensor) -> Result<()> {
    model.forward_train(x)?;
    Ok(())
}

fn main() {
    let mut net = Net { fc: Linear::new(2, 2), scale: Scale { factor: 2.0 } };
    let x = Tensor::zeros(1, 2);
    net.forward(&x).unwrap();
    net.forward_train(&x).unwrap();
    fit(&mut net, &x).unwrap();
}
