// A hand-written `Forward` without `#[module(custom_forward)]`: the derive
// already implements `Forward` (the chain of fields). The error must say
// what to add.
use nncore::prelude::*;

#[derive(Module)]
struct Net {
    fc: Linear,
}

impl Forward for Net {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        self.fc.forward(x)
    }
}

fn main() {}
