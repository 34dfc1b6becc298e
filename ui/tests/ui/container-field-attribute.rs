use nncore::prelude::*;

#[derive(Module)]
struct Net {
    #[module(extra_repr = "Self::describe")]
    blocks: Vec<Linear>,
    #[module(custom_forward)]
    head: Option<Linear>,
}

fn main() {}
