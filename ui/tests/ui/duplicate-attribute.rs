use nncore::prelude::*;

#[derive(Module)]
struct Net {
    #[module(skip, skip)]
    size: usize,
    fc: Linear,
}

fn main() {}
