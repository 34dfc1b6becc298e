use nncore::prelude::*;

#[derive(Module)]
#[module(extra_repr = "not a path")]
struct Net {
    fc: Linear,
}

#[derive(Module)]
#[module(extra_repr = describe)]
struct Other {
    fc: Linear,
}

fn main() {}
