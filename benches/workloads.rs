//! The five speed workloads of the project (one thread unless
//! NNRS_THREADS says otherwise): `cargo bench -p nnrs-bench --bench workloads`.
//! `scripts/bench_pytorch.py` runs the same workloads in PyTorch.

use criterion::{Criterion, criterion_group, criterion_main};
use nncore::prelude::*;
use nnrs::workloads::{TrainStep, input, mlp, simple_net};
use std::hint::black_box;

fn threads() -> usize {
    std::env::var("NNRS_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn workloads(c: &mut Criterion) {
    let t = threads();
    nncore::ops::set_num_threads(t);
    let suffix = if t == 1 {
        String::new()
    } else {
        format!("_t{t}")
    };

    let net = simple_net(0);
    let x1 = input(1, 100, 1);
    c.bench_function(&format!("simple_b1_fwd{suffix}"), |b| {
        b.iter(|| net.forward(black_box(&x1)).unwrap())
    });
    let x64 = input(64, 100, 1);
    c.bench_function(&format!("simple_b64_fwd{suffix}"), |b| {
        b.iter(|| net.forward(black_box(&x64)).unwrap())
    });
    let model = mlp(0);
    let x256 = input(256, 784, 1);
    c.bench_function(&format!("mlp_b256_fwd{suffix}"), |b| {
        b.iter(|| model.forward(black_box(&x256)).unwrap())
    });
    let mut step = TrainStep::new(simple_net(0), 64, 100, 10);
    c.bench_function(&format!("simple_b64_train{suffix}"), |b| {
        b.iter(|| step.step().unwrap())
    });
    let mut step = TrainStep::new(mlp(0), 256, 784, 10);
    c.bench_function(&format!("mlp_b256_train{suffix}"), |b| {
        b.iter(|| step.step().unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = workloads
}
criterion_main!(benches);
