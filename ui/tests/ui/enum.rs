use nncore::prelude::*;

#[derive(Module)]
enum Net {
    A(Linear),
    B(ReLU),
}

fn main() {}
