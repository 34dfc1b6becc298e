//! Written forwards (`#[nncore::forward]`) against the same residual MLP
//! written by hand with `custom_forward`, one thread:
//! `cargo bench -p nnrs-bench --bench written`. `scripts/bench_pytorch.py --written`
//! runs the same models in PyTorch.
//!
//! - `res_b256_train`: 784 -> 1024, 4 residual blocks of width 1024, -> 10,
//!   batch 256, one SGD step on an MSE loss.
//! - `res_small_b64_train`: 100 -> 64, 2 blocks, -> 10, batch 64.
//! - `res_small_b1_fwd`, `res_small_b64_fwd`: inference.

use criterion::{Criterion, criterion_group, criterion_main};
use nncore::prelude::*;
use nnrs::workloads::{TrainStep, hand_res_mlp, input, res_mlp};
use std::hint::black_box;

fn written(c: &mut Criterion) {
    nncore::ops::set_num_threads(1);
    let mut g = c.benchmark_group("res_b256_train");
    let mut w = TrainStep::new(res_mlp(0, 784, 1024, 4, 10), 256, 784, 10);
    let mut h = TrainStep::new(hand_res_mlp(0, 784, 1024, 4, 10), 256, 784, 10);
    g.bench_function("written", |b| b.iter(|| w.step().unwrap()));
    g.bench_function("hand", |b| b.iter(|| h.step().unwrap()));
    g.finish();

    let mut g = c.benchmark_group("res_small_b64_train");
    let mut w = TrainStep::new(res_mlp(0, 100, 64, 2, 10), 64, 100, 10);
    let mut h = TrainStep::new(hand_res_mlp(0, 100, 64, 2, 10), 64, 100, 10);
    g.bench_function("written", |b| b.iter(|| w.step().unwrap()));
    g.bench_function("hand", |b| b.iter(|| h.step().unwrap()));
    g.finish();

    let (wm, hm) = (res_mlp(0, 100, 64, 2, 10), hand_res_mlp(0, 100, 64, 2, 10));
    for batch in [1, 64] {
        let x = input(batch, 100, 1);
        let mut g = c.benchmark_group(format!("res_small_b{batch}_fwd"));
        g.bench_function("written", |b| b.iter(|| wm.forward(black_box(&x)).unwrap()));
        g.bench_function("hand", |b| b.iter(|| hm.forward(black_box(&x)).unwrap()));
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = written
}
criterion_main!(benches);
