//! Small-batch latency, one thread: SimpleNet (100-50-10) and the MLP
//! (784-1024-1024-10) at batch 1, 2, 4, 8 and 16, through `forward` (a new
//! output each call) and `forward_into` (caller's output, no allocation).
//! `scripts/bench_pytorch.py --latency --peers` runs the same forwards in
//! PyTorch, candle and Burn beside it.
//! `cargo bench -p nnrs-bench --bench latency`. SimpleNet is 5,500 multiply-adds per
//! row and the MLP 1,863,680: divide a time by them for the time per
//! multiply-add, and multiply by the clock for cycles.

use criterion::{Criterion, criterion_group, criterion_main};
use nncore::Workspace;
use nncore::prelude::*;
use nnrs::workloads::{input, mlp, simple_net};
use std::hint::black_box;

fn latency(c: &mut Criterion) {
    nncore::ops::set_num_threads(1);
    let simple = simple_net(0);
    let big = mlp(0);
    for batch in [1usize, 2, 4, 8, 16] {
        let x = input(batch, 100, 1);
        let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
        c.bench_function(&format!("simple_b{batch}_fwd"), |b| {
            b.iter(|| simple.forward(black_box(&x)).unwrap())
        });
        c.bench_function(&format!("simple_b{batch}_fwd_into"), |b| {
            b.iter(|| {
                simple
                    .forward_into(black_box(&x), &mut out, &mut ws)
                    .unwrap()
            })
        });
        let x = input(batch, 784, 1);
        c.bench_function(&format!("mlp_b{batch}_fwd"), |b| {
            b.iter(|| big.forward(black_box(&x)).unwrap())
        });
        c.bench_function(&format!("mlp_b{batch}_fwd_into"), |b| {
            b.iter(|| big.forward_into(black_box(&x), &mut out, &mut ws).unwrap())
        });
    }
}

/// Other small chains at batch 1 (sizes off the multiples of 16, without
/// bias, activations other than ReLU, weights from L1 to L2), through
/// `forward` and `forward_into`, beside the time to read their weights: `cargo bench -p nnrs-bench --bench
/// latency -- chain_` (`scripts/bench_pytorch.py --latency --peers` runs
/// them in PyTorch, candle and Burn too).
fn chains(c: &mut Criterion) {
    nncore::ops::set_num_threads(1);
    let models: Vec<(&str, usize, Sequential)> = vec![
        (
            "10_50_1_sigmoid",
            10,
            nncore::seq![
                Linear::new(10, 50),
                ReLU::new(),
                Linear::new(50, 1),
                Sigmoid::new()
            ],
        ),
        (
            "17_33_5_nobias_gelu",
            17,
            nncore::seq![
                Linear::new_no_bias(17, 33),
                GELU::new(),
                Linear::new_no_bias(33, 5)
            ],
        ),
        (
            "64x3_tanh",
            64,
            nncore::seq![
                Linear::new(64, 64),
                Tanh::new(),
                Linear::new(64, 64),
                Tanh::new(),
                Linear::new(64, 64)
            ],
        ),
        (
            "784_128_10",
            784,
            nncore::seq![Linear::new(784, 128), ReLU::new(), Linear::new(128, 10)],
        ),
        (
            "1000_100_3",
            1000,
            nncore::seq![Linear::new(1000, 100), ReLU::new(), Linear::new(100, 3)],
        ),
    ];
    for (name, k, m) in &models {
        let x = input(1, *k, 1);
        let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
        c.bench_function(&format!("chain_{name}_b1_fwd"), |b| {
            b.iter(|| m.forward(black_box(&x)).unwrap())
        });
        c.bench_function(&format!("chain_{name}_b1_fwd_into"), |b| {
            b.iter(|| m.forward_into(black_box(&x), &mut out, &mut ws).unwrap())
        });
        // The floor of any batch-1 forward: reading the chain's weights
        // once (a bare 128-lane sum over as many bytes). Past L1 (32 KiB
        // here) both run at the L2's streaming rate.
        let n: usize = m
            .named_parameters()
            .iter()
            .map(|(_, p)| p.value().len())
            .sum();
        let w = vec![0.5f32; n.next_multiple_of(128)];
        c.bench_function(&format!("chain_{name}_b1_read_weights"), |b| {
            b.iter(|| read_all(black_box(&w)))
        });
    }
}

/// The sum of `w` (a multiple of 128 values long): eight independent
/// 16-wide AVX-512 sums, one 64-byte load per 16 values, the most loads a
/// core issues; 8-wide AVX sums on other x86 CPUs.
fn read_all(w: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn zmm(w: &[f32]) -> f32 {
            let mut a = [_mm512_setzero_ps(); 8];
            for c in w.chunks_exact(128) {
                for (j, a) in a.iter_mut().enumerate() {
                    // SAFETY: `c` holds 128 values; 16 * j + 16 <= 128.
                    *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * j)) });
                }
            }
            a.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
        }
        #[target_feature(enable = "avx")]
        fn ymm(w: &[f32]) -> f32 {
            let mut a = [_mm256_setzero_ps(); 8];
            for c in w.chunks_exact(64) {
                for (j, a) in a.iter_mut().enumerate() {
                    // SAFETY: `c` holds 64 values; 8 * j + 8 <= 64.
                    *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * j)) });
                }
            }
            let mut out = [0.0f32; 8];
            for v in a {
                let mut l = [0.0f32; 8];
                // SAFETY: `l` holds 8 values.
                unsafe { _mm256_storeu_ps(l.as_mut_ptr(), v) };
                out.iter_mut().zip(l).for_each(|(o, l)| *o += l);
            }
            out.iter().sum()
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { zmm(w) };
        }
        if is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX.
            return unsafe { ymm(w) };
        }
    }
    w.iter().sum()
}

/// The small-batch kernel (`rows_axpy`) against `ops::matmul` on the
/// workloads' forward products `x W^T`, one thread. `matmul` runs that
/// same kernel up to 8 rows and faer's GEMM above, so `m16` is the
/// crossover's other side (`few_rows` compares `Linear`'s own kernels).
fn crossover(c: &mut Criterion) {
    use nncore::ops::{Trans, matmul};
    nncore::ops::set_num_threads(1);
    for (name, k, n) in [
        ("100x50", 100usize, 50usize),
        ("784x1024", 784, 1024),
        ("1024x1024", 1024, 1024),
    ] {
        let w = input(n, k, 7); // (out, in), as Linear holds it
        for m in [2usize, 3, 4, 6, 7, 8, 16] {
            let x = input(m, k, 8);
            let mut y = Tensor::zeros(m, n);
            c.bench_function(&format!("rows/{name}/m{m}"), |b| {
                b.iter(|| {
                    nncore::kernels::rows_axpy(
                        y.as_mut_slice(),
                        m,
                        black_box(x.as_slice()),
                        m,
                        k,
                        w.as_slice(),
                        n,
                        0.0,
                    )
                })
            });
            c.bench_function(&format!("gemm/{name}/m{m}"), |b| {
                b.iter(|| matmul(1.0, black_box(&x), Trans::No, &w, Trans::Yes, 0.0, &mut y))
            });
        }
    }
}

/// Batches of 8 to 32 rows through a `Linear` (the packed few-row kernels
/// up to 24 rows) against faer's GEMM on the same product
/// (`ops::matmul_bias`, what `Linear` ran from 9 rows on before): where the
/// crossover lies, for weights that fit L1 and ones that do not.
fn few_rows(c: &mut Criterion) {
    use nncore::ops::{Trans, matmul_bias};
    nncore::ops::set_num_threads(1);
    for (k, n) in [(100usize, 50usize), (256, 256), (512, 256), (1000, 100)] {
        let fc = nncore::with_seed(0, || Linear::new(k, n));
        let bias = fc.bias().unwrap().value().as_slice().to_vec();
        for m in [8usize, 9, 16, 24, 32] {
            let x = input(m, k, 9);
            let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
            for _ in 0..4 {
                fc.forward_into(&x, &mut out, &mut ws).unwrap();
            }
            c.bench_function(&format!("few_rows/{k}x{n}/b{m}/linear"), |b| {
                b.iter(|| fc.forward_into(black_box(&x), &mut out, &mut ws).unwrap())
            });
            let mut y = Tensor::zeros(m, n);
            c.bench_function(&format!("few_rows/{k}x{n}/b{m}/gemm"), |b| {
                b.iter(|| {
                    matmul_bias(
                        black_box(&x),
                        Trans::No,
                        fc.weight().value(),
                        Trans::Yes,
                        &bias,
                        &mut y,
                    )
                })
            });
        }
    }
}

/// The batch-1 kernel alone (`kernels::row_packed`, on a padded weight as
/// `Linear` packs it) for SimpleNet's two products: what is left of a
/// forward is per-layer overhead (checks, dispatch, the chain's steps).
fn kernels(c: &mut Criterion) {
    for (k, n) in [(100usize, 50usize), (50, 10)] {
        let stride = n.next_multiple_of(nncore::kernels::PACK_LANES);
        let x = input(1, k, 3);
        // 64-byte aligned, as `Linear` packs it.
        let mut storage = vec![0.0f32; k * stride + 16];
        let skip = storage.as_ptr().align_offset(64);
        let w = &mut storage[skip..skip + k * stride];
        for (p, row) in w.chunks_exact_mut(stride).enumerate() {
            for (j, v) in row[..n].iter_mut().enumerate() {
                *v = ((p * n + j) as f32 * 0.37).sin();
            }
        }
        let bias = vec![0.1f32; stride];
        let mut y = vec![0.0f32; n];
        c.bench_function(&format!("row_packed/{k}x{n}"), |b| {
            b.iter(|| {
                nncore::kernels::row_packed(
                    &mut y,
                    black_box(x.as_slice()),
                    w,
                    stride,
                    Some(&bias),
                    false,
                )
            })
        });
    }
}

/// The load bound of `row_packed/100x50` on AVX-512: the kernel's inner
/// loop alone (two broadcasts and eight multiply-adds, each loading 64
/// bytes of weight, per two rows) over the same 100 padded rows, with no
/// set-up, bias or stores. The kernel's time over this one is what its
/// set-up and tail cost.
#[cfg(target_arch = "x86_64")]
fn load_bound(c: &mut Criterion) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_reduce_add_ps,
        _mm512_set1_ps, _mm512_setzero_ps,
    };
    #[target_feature(enable = "avx512f")]
    fn rows(w: &[f32], x: &[f32]) -> f32 {
        assert!(w.len() >= x.len() * 64 && x.len().is_multiple_of(2));
        let mut a: [__m512; 8] = [_mm512_setzero_ps(); 8];
        for (pair, xs) in w.chunks_exact(128).zip(x.chunks_exact(2)) {
            let (x0, x1) = (_mm512_set1_ps(xs[0]), _mm512_set1_ps(xs[1]));
            for v in 0..4 {
                // SAFETY: `pair` holds 128 values; 16 * v + 16 <= 64.
                let (w0, w1) = unsafe {
                    (
                        _mm512_loadu_ps(pair.as_ptr().add(16 * v)),
                        _mm512_loadu_ps(pair.as_ptr().add(64 + 16 * v)),
                    )
                };
                a[v] = _mm512_fmadd_ps(w0, x0, a[v]);
                a[4 + v] = _mm512_fmadd_ps(w1, x1, a[4 + v]);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in a {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    let mut storage = vec![0.0f32; 100 * 64 + 16];
    let skip = storage.as_ptr().align_offset(64);
    let w = &mut storage[skip..skip + 100 * 64];
    for (i, v) in w.iter_mut().enumerate() {
        *v = (i as f32 * 0.37).sin();
    }
    let x = input(1, 100, 3);
    c.bench_function("row_packed/100x50_load_bound", |b| {
        // SAFETY: the CPU has AVX-512F (checked above).
        b.iter(|| unsafe { rows(w, black_box(x.as_slice())) })
    });
}

#[cfg(not(target_arch = "x86_64"))]
fn load_bound(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = latency, chains, crossover, few_rows, kernels, load_bound
}
criterion_main!(benches);
