use nncore::prelude::*;

#[derive(Module)]
struct Net {
    #[module(skipp)]
    size: usize,
    fc: Linear,
}

fn main() {}
