use nncore::prelude::*;

#[derive(Module)]
#[module(skip)]
struct Net {
    #[module(custom_forward)]
    fc: Linear,
}

fn main() {}
