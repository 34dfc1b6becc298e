use nncore::prelude::*;

#[derive(Module)]
union Net {
    a: u32,
    b: f32,
}

fn main() {}
