//! LeNet-5 on 28x28 images, one thread: inference at batch 1 and 64
//! (`forward_nd`, and the allocation-free `forward_into_dims`), and a
//! training step at batch 64 (forward, cross-entropy, backward, SGD).
//! `cargo bench -p nnrs-bench --bench conv`; PyTorch's numbers for the same:
//! `scripts/bench_pytorch.py --conv`.

use criterion::{Criterion, criterion_group, criterion_main};
use nncore::Workspace;
use nncore::prelude::*;
use nnrs::workloads::{CnnStep, images, lenet};
use std::hint::black_box;

fn conv(c: &mut Criterion) {
    nncore::ops::set_num_threads(1);
    let mut net = lenet(0);
    net.eval();
    for batch in [1, 64] {
        let x = images(batch, 1);
        c.bench_function(&format!("lenet_b{batch}_fwd"), |b| {
            b.iter(|| net.forward_nd(black_box(&x)).unwrap())
        });
        let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
        c.bench_function(&format!("lenet_b{batch}_fwd_into"), |b| {
            b.iter(|| {
                net.forward_into_dims(black_box(x.tensor()), x.dims(), &mut out, &mut ws)
                    .unwrap()
            })
        });
    }
    let mut step = CnnStep::new(64);
    c.bench_function("lenet_b64_train", |b| b.iter(|| step.step().unwrap()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = conv
}
criterion_main!(benches);
