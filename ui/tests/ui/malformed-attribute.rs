use nncore::prelude::*;

#[derive(Module)]
struct Net {
    #[module]
    size: usize,
    #[module = "skip"]
    name: String,
    #[module(skip = true)]
    flag: bool,
    #[module(skip(1))]
    other: bool,
    fc: Linear,
}

fn main() {}
