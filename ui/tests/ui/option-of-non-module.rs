use nncore::prelude::*;

#[derive(Module)]
struct Net {
    fc: Linear,
    norm: Option<f32>,
}

fn main() {}
