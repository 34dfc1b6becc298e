use nncore::prelude::*;

#[derive(Module)]
#[module(custom_forward)]
struct NoForward {
    fc: Linear,
}

#[derive(Module)]
struct Net {
    inner: NoForward,
}

fn main() {}
