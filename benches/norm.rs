//! LayerNorm and BatchNorm1d at batch 256 x 1024 features, one thread:
//! inference forward (BatchNorm: with its running statistics, PyTorch's
//! eval mode), and a training forward with its backward (BatchNorm: batch
//! statistics and the running update). `cargo bench -p nnrs-bench --bench norm`.
//! PyTorch's numbers for the same: `scripts/bench_pytorch.py --norm`.

use criterion::{Criterion, criterion_group, criterion_main};
use nncore::prelude::*;
use nnrs::workloads::input;
use std::hint::black_box;

fn norm(c: &mut Criterion) {
    nncore::ops::set_num_threads(1);
    let mut ln = LayerNorm::new(1024);
    let x = input(256, 1024, 1);
    let g = input(256, 1024, 2);
    c.bench_function("layernorm_b256_fwd", |b| {
        b.iter(|| ln.forward(black_box(&x)).unwrap())
    });
    let (mut out, mut ws) = (Tensor::zeros(0, 0), nncore::Workspace::new());
    c.bench_function("layernorm_b256_fwd_into", |b| {
        b.iter(|| ln.forward_into(black_box(&x), &mut out, &mut ws).unwrap())
    });
    c.bench_function("layernorm_b256_fwd_bwd", |b| {
        b.iter(|| {
            ln.forward_train(black_box(&x)).unwrap();
            ln.backward(black_box(&g)).unwrap();
        })
    });
    // The kernels alone (what the layer adds around them: the checks and
    // the workspace).
    {
        use nncore::kernels;
        let (rows, xs) = (256usize, x.as_slice());
        let (w, bias) = (vec![1.0f32; 1024], vec![0.0f32; 1024]);
        let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
        let mut o: Vec<f32> = Vec::with_capacity(rows * 1024);
        let o = o.spare_capacity_mut();
        c.bench_function("layernorm_b256_kernels", |b| {
            b.iter(|| {
                kernels::row_moments(black_box(xs), rows, 1e-5, &mut mean, &mut rstd);
                let (w, bias) = (Some(&w[..]), Some(&bias[..]));
                kernels::normalize_rows(xs, rows, &mean, &rstd, w, bias, None, o);
            })
        });
    }
    let mut bn = BatchNorm1d::new(1024);
    // Running statistics away from 0 and 1, as after training.
    bn.forward_train(&x).unwrap();
    c.bench_function("batchnorm_b256_fwd", |b| {
        b.iter(|| bn.forward(black_box(&x)).unwrap())
    });
    c.bench_function("batchnorm_b256_fwd_bwd", |b| {
        b.iter(|| {
            bn.forward_train(black_box(&x)).unwrap();
            bn.backward(black_box(&g)).unwrap();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = norm
}
criterion_main!(benches);
