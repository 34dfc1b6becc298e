use nncore::prelude::*;

#[derive(Module)]
#[module(custom_fwd)]
struct Net {
    fc: Linear,
}

fn main() {}
