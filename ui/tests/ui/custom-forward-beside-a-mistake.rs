// A mistake in one attribute must not add a derived `Forward` beside the
// user's own when `custom_forward` did parse: only the mistake is reported.
use nncore::prelude::*;

#[derive(Module)]
#[module(custom_forward, extra_repr = 3)]
struct Net {
    fc: Linear,
}

impl Forward for Net {
    fn forward(&self, x: &Tensor) -> nncore::Result<Tensor> {
        self.fc.forward(x)
    }
}

fn main() {}
