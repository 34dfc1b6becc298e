use nncore::prelude::*;

#[derive(Module)]
struct Mlp(Linear, ReLU, Linear);

fn main() {}
