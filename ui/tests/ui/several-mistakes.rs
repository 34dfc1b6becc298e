use nncore::prelude::*;

#[derive(Module)]
#[module(custom_forward, custom_forward, speed)]
struct Net {
    #[module(skp)]
    size: usize,
    #[module(skip = 1)]
    name: String,
    fc: Linear,
}

fn main() {}
