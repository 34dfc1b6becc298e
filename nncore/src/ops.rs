//! Matrix products on nalgebra storage, and the thread setting.
//!
//! One entry point, [`matmul`], in BLAS's `sgemm` form: `C = alpha *
//! op(A) * op(B) + beta * C` with `op` the identity or the transpose. The
//! transposes are strides, never copies.
//!
//! The kernel is faer's, chosen by measurement on the shapes of the
//! project's workloads (forward `x W^T` and the transposed products of
//! backward): on the 2-core AVX-512 machine the project runs on it beat
//! nalgebra's default (matrixmultiply) by 1.1x (256x784x1024) to 1.6x
//! (64x100x50) and the `gemm` crate by 1.4x to 2x; `benches/gemm.rs`
//! repeats the comparison. A product of one row (batch 1) uses a
//! row-times-matrix kernel of nncore's own, which is 4x faster there.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Tensor;

/// Whether an operand of [`matmul`] is used as it is or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    /// `op(A) = A`.
    No,
    /// `op(A) = A^T`.
    Yes,
}

static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Products with at least this many multiply-adds are split across
/// threads; smaller ones run on the calling thread, where spreading them
/// would cost more than it gains.
pub const PARALLEL_THRESHOLD: usize = 1 << 22;

/// Sets how many threads large matrix products use (PyTorch's
/// `torch.set_num_threads`). `0` restores the default: the machine's
/// available parallelism.
pub fn set_num_threads(n: usize) {
    NUM_THREADS.store(n, Ordering::Relaxed);
}

/// The number of threads large matrix products use.
#[must_use]
pub fn num_threads() -> usize {
    match NUM_THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

fn parallelism(m: usize, n: usize, k: usize) -> faer::Par {
    let threads = num_threads();
    if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_THRESHOLD {
        faer::Par::rayon(threads)
    } else {
        faer::Par::Seq
    }
}

fn operand(m: &Tensor, t: Trans) -> (usize, usize, isize, isize) {
    // Column-major storage: element (r, c) at r + c * nrows.
    let (r, c) = m.shape();
    match t {
        Trans::No => (r, c, 1, r as isize),
        Trans::Yes => (c, r, r as isize, 1),
    }
}

/// `c = alpha * op(a) * op(b) + beta * c`.
///
/// With `beta == 0` the old contents of `c` are not read (they may be
/// anything, NaN included).
///
/// # Panics
/// When the shapes do not agree: `op(a)` is `m x k`, `op(b)` is `k x n`
/// and `c` must be `m x n`. Callers check shapes and report errors first.
pub fn matmul(alpha: f32, a: &Tensor, ta: Trans, b: &Tensor, tb: Trans, beta: f32, c: &mut Tensor) {
    let (m, k, rsa, csa) = operand(a, ta);
    let (k2, n, rsb, csb) = operand(b, tb);
    assert_eq!(k, k2, "matmul: inner dimensions differ");
    assert_eq!(c.shape(), (m, n), "matmul: output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            *c *= beta;
        }
        return;
    }
    if m == 1 && alpha == 1.0 && (csb == 1 || rsb == 1) {
        // One row times a matrix (batch 1): op(a) is contiguous whatever
        // `ta` is, since a 1 x k or k x 1 matrix is one run of memory.
        let a_row = &a.as_slice()[..k];
        let y = c.as_mut_slice();
        if csb == 1 {
            crate::kernels::row_axpy(y, a_row, b.as_slice(), rsb as usize, beta);
        } else {
            crate::kernels::row_dot(y, a_row, b.as_slice(), csb as usize, beta);
        }
        return;
    }
    // SAFETY: the pointers come from live nalgebra matrices whose shapes
    // were checked above, and the strides describe their column-major
    // layout (or its transpose), so every view stays in bounds; `c` is
    // borrowed mutably, so it aliases neither `a` nor `b`.
    let (av, bv, cv) = unsafe {
        (
            faer::MatRef::<f32>::from_raw_parts(a.as_ptr(), m, k, rsa, csa),
            faer::MatRef::<f32>::from_raw_parts(b.as_ptr(), k, n, rsb, csb),
            faer::MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), m, n, 1, m as isize),
        )
    };
    let mut cv = cv;
    let accum = if beta == 0.0 {
        faer::Accum::Replace
    } else {
        if beta != 1.0 {
            for v in c.as_mut_slice() {
                *v *= beta;
            }
            // SAFETY: as above; the previous view is not used after this.
            cv = unsafe {
                faer::MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), m, n, 1, m as isize)
            };
        }
        faer::Accum::Add
    };
    faer::linalg::matmul::matmul(cv, accum, av, bv, alpha, parallelism(m, n, k));
}

/// Makes `buf` a `rows x cols` matrix, reusing its allocation when it is
/// large enough (so buffers that change shape between calls stop
/// allocating once they have grown). The contents are unspecified
/// afterwards.
pub fn ensure_shape(buf: &mut Tensor, rows: usize, cols: usize) {
    if buf.shape() == (rows, cols) {
        return;
    }
    let mut data: Vec<f32> = std::mem::replace(buf, Tensor::zeros(0, 0)).data.into();
    data.resize(rows * cols, 0.0);
    *buf = Tensor::from_vec(rows, cols, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &Tensor, ta: Trans, b: &Tensor, tb: Trans) -> Tensor {
        let a = if ta == Trans::Yes {
            a.transpose()
        } else {
            a.clone()
        };
        let b = if tb == Trans::Yes {
            b.transpose()
        } else {
            b.clone()
        };
        a * b
    }

    fn close(x: &Tensor, y: &Tensor) -> bool {
        x.shape() == y.shape()
            && x.iter()
                .zip(y.iter())
                .all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0))
    }

    #[test]
    fn matmul_with_transposes_matches_nalgebra() {
        for &(m, k, n) in &[(3, 4, 2), (1, 7, 5), (1, 1, 1), (9, 1, 3), (17, 33, 65)] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    let a = if ta == Trans::No {
                        Tensor::from_fn(m, k, |r, c| (r * 4 + c) as f32 * 0.5 - 2.0)
                    } else {
                        Tensor::from_fn(k, m, |r, c| (r * 3 + c) as f32 * 0.25 - 1.0)
                    };
                    let b = if tb == Trans::No {
                        Tensor::from_fn(k, n, |r, c| (r + 3 * c) as f32 - 1.5)
                    } else {
                        Tensor::from_fn(n, k, |r, c| (2 * r + c) as f32 * 0.1)
                    };
                    let expected = reference(&a, ta, &b, tb);
                    let mut c = Tensor::from_element(m, n, f32::NAN);
                    matmul(1.0, &a, ta, &b, tb, 0.0, &mut c);
                    assert!(close(&c, &expected), "{m}x{k}x{n} {ta:?} {tb:?}");
                    let mut c2 = Tensor::from_element(m, n, 1.0);
                    matmul(2.0, &a, ta, &b, tb, 1.0, &mut c2);
                    assert!(close(&c2, &(&expected * 2.0).add_scalar(1.0)));
                    let mut c3 = Tensor::from_element(m, n, 2.0);
                    matmul(1.0, &a, ta, &b, tb, 0.5, &mut c3);
                    assert!(close(&c3, &expected.add_scalar(1.0)));
                }
            }
        }
    }

    #[test]
    fn ensure_shape_keeps_the_allocation_when_it_fits() {
        let mut t = Tensor::zeros(10, 10);
        let p = t.as_ptr();
        ensure_shape(&mut t, 5, 4);
        assert_eq!(t.shape(), (5, 4));
        assert_eq!(t.as_ptr(), p);
        ensure_shape(&mut t, 10, 10);
        assert_eq!(t.as_ptr(), p);
    }
}
