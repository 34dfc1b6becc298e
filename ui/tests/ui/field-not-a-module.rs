use nncore::prelude::*;

#[derive(Module)]
struct Net {
    fc: Linear,
    hidden_size: usize,
}

fn main() {}
