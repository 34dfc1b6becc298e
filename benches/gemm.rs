//! How the GEMM kernel was chosen: nalgebra's default (matrixmultiply),
//! the `gemm` crate, faer, nncore's `matmul` (faer's x86 kernels called
//! directly) and nncore's own batch-1 kernel, on the exact
//! products of the workloads (forward `x W^T`, backward `g^T x` and `g W`),
//! one thread. `cargo bench -p nnrs-bench --bench gemm`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nncore::ops::Trans;
use std::hint::black_box;

struct Case {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// op(A) = A^T (A stored k x m).
    ta: bool,
    /// op(B) = B^T (B stored n x k).
    tb: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "b1_x_wt_1x100x50",
        m: 1,
        n: 50,
        k: 100,
        ta: false,
        tb: true,
    },
    Case {
        name: "b64_x_wt_64x100x50",
        m: 64,
        n: 50,
        k: 100,
        ta: false,
        tb: true,
    },
    Case {
        name: "b64_gt_x_50x64x100",
        m: 50,
        n: 100,
        k: 64,
        ta: true,
        tb: false,
    },
    Case {
        name: "b256_x_wt_256x784x1024",
        m: 256,
        n: 1024,
        k: 784,
        ta: false,
        tb: true,
    },
    Case {
        name: "b256_x_wt_256x1024x1024",
        m: 256,
        n: 1024,
        k: 1024,
        ta: false,
        tb: true,
    },
    Case {
        name: "b256_gt_x_1024x256x784",
        m: 1024,
        n: 784,
        k: 256,
        ta: true,
        tb: false,
    },
    Case {
        name: "b256_g_w_256x1024x784",
        m: 256,
        n: 784,
        k: 1024,
        ta: false,
        tb: false,
    },
];

fn gemm_kernels(c: &mut Criterion) {
    for case in CASES {
        let (m, n, k) = (case.m, case.n, case.k);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let (rsa, csa) = if case.ta {
            (k as isize, 1)
        } else {
            (1, m as isize)
        };
        let (rsb, csb) = if case.tb {
            (n as isize, 1)
        } else {
            (1, k as isize)
        };
        let mut out = vec![0.0f32; m * n];
        let mut g = c.benchmark_group(format!("gemm_{}", case.name));
        g.bench_function(BenchmarkId::from_parameter("matrixmultiply"), |bch| {
            bch.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    out.as_mut_ptr(),
                    1,
                    m as isize,
                );
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::from_parameter("gemm"), |bch| {
            bch.iter(|| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    m as isize,
                    1,
                    false,
                    a.as_ptr(),
                    csa,
                    rsa,
                    b.as_ptr(),
                    csb,
                    rsb,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::from_parameter("faer"), |bch| {
            bch.iter(|| {
                // SAFETY: the views describe the vectors above.
                let (av, bv, cv) = unsafe {
                    (
                        faer::MatRef::<f32>::from_raw_parts(a.as_ptr(), m, k, rsa, csa),
                        faer::MatRef::<f32>::from_raw_parts(b.as_ptr(), k, n, rsb, csb),
                        faer::MatMut::<f32>::from_raw_parts_mut(
                            out.as_mut_ptr(),
                            m,
                            n,
                            1,
                            m as isize,
                        ),
                    )
                };
                faer::linalg::matmul::matmul(
                    cv,
                    faer::Accum::Replace,
                    av,
                    bv,
                    1.0f32,
                    faer::Par::Seq,
                );
                black_box(&out);
            })
        });
        // What nncore runs for the product (one thread): its own row
        // kernels for one row, else private-gemm-x86's packed kernels
        // called directly (the `x86-gemm` feature), which faer's column
        // above reaches through its matmul.
        let at = if case.ta {
            nncore::Tensor::from_column_slice(k, m, &a)
        } else {
            nncore::Tensor::from_column_slice(m, k, &a)
        };
        let bt = if case.tb {
            nncore::Tensor::from_column_slice(n, k, &b)
        } else {
            nncore::Tensor::from_column_slice(k, n, &b)
        };
        let trans = |t: bool| if t { Trans::Yes } else { Trans::No };
        let mut ct = nncore::Tensor::zeros(m, n);
        nncore::ops::set_num_threads(1);
        g.bench_function(BenchmarkId::from_parameter("nncore"), |bch| {
            bch.iter(|| {
                nncore::ops::matmul(1.0, &at, trans(case.ta), &bt, trans(case.tb), 0.0, &mut ct);
                black_box(&ct);
            })
        });
        nncore::ops::set_num_threads(0);
        if m == 1 && csb == 1 {
            g.bench_function(BenchmarkId::from_parameter("nncore_row_axpy"), |bch| {
                bch.iter(|| {
                    nncore::kernels::row_axpy(&mut out, &a, &b, rsb as usize, 0.0);
                    black_box(&out);
                })
            });
        }
        g.finish();
    }
}

/// The transposed copy a large `Linear` makes of its weight once per weight
/// version (every training step at 64 rows or more): nncore's kernel
/// against the `transpose` crate it replaced there.
fn transposes(c: &mut Criterion) {
    for (w, h) in [(1024usize, 1024usize), (1024, 784)] {
        let src: Vec<f32> = (0..w * h).map(|i| (i % 1000) as f32).collect();
        let mut dst = vec![0.0f32; w * h];
        let mut g = c.benchmark_group(format!("transpose_{w}x{h}"));
        g.bench_function("nncore", |b| {
            b.iter(|| nncore::kernels::transpose(black_box(&src), &mut dst, w, h))
        });
        g.bench_function("transpose_crate", |b| {
            b.iter(|| transpose::transpose(black_box(&src), &mut dst, w, h))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = gemm_kernels, transposes
}
criterion_main!(benches);
