use nncore::prelude::*;

#[derive(Module)]
struct Block<L> {
    inner: L,
    act: ReLU,
}

fn main() {
    let b = Block { inner: 3u8, act: ReLU::new() };
    let _ = b.num_parameters();
}
