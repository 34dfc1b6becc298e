use nncore::prelude::*;

#[derive(Module)]
struct Net {
    layers: Vec<usize>,
    fc: Linear,
}

fn main() {}
