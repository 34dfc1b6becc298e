//! The models the PyTorch fixtures were made with (the Rust twins of
//! `scripts/models.py`), shared by the integration tests.

use nncore::prelude::*;

/// The seed article's model: fc1 -> relu -> fc2.
#[derive(Module)]
pub struct SimpleNet {
    pub fc1: Linear,
    pub relu: ReLU,
    pub fc2: Linear,
}

impl SimpleNet {
    pub fn new(input_size: usize, hidden_size: usize, output_size: usize) -> Self {
        Self {
            fc1: Linear::new(input_size, hidden_size),
            relu: ReLU::new(),
            fc2: Linear::new(hidden_size, output_size),
        }
    }
}

#[derive(Module)]
pub struct Block {
    pub fc: Linear,
    pub act: ReLU,
}

#[derive(Module)]
pub struct Encoder {
    pub block: Block,
    pub proj: Linear,
}

/// Two levels of derived modules inside the model.
#[derive(Module)]
pub struct Net {
    pub encoder: Encoder,
    pub head: Linear,
}

impl Net {
    pub fn new() -> Self {
        Self {
            encoder: Encoder {
                block: Block {
                    fc: Linear::new(8, 8),
                    act: ReLU::new(),
                },
                proj: Linear::new(8, 4),
            },
            head: Linear::new_no_bias(4, 2),
        }
    }
}
