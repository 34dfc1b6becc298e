//! Any bytes given to the safetensors loader give `Ok` or `Err`: never a
//! panic, an out-of-bounds read or an allocation sized by the header's
//! claims rather than the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nncore::prelude::*;
use nncore::{LoadOptions, StateDict};

#[derive(Module)]
struct Net {
    fc1: Linear,
    relu: ReLU,
    fc2: Linear,
}

fuzz_target!(|data: &[u8]| {
    let _ = StateDict::from_safetensors_bytes(data);
    let mut net = Net {
        fc1: Linear::new(2, 2),
        relu: ReLU::new(),
        fc2: Linear::new(2, 1),
    };
    let _ = net.load_safetensors_bytes(data, LoadOptions::strict());
    let _ = net.load_safetensors_bytes(data, LoadOptions::non_strict());
});
