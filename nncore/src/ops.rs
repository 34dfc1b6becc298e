//! Matrix products on nalgebra storage.
//!
//! One entry point, [`matmul`], in BLAS's `sgemm` form: `C = alpha *
//! op(A) * op(B) + beta * C` with `op` the identity or the transpose. The
//! transposes are strides, never copies: every kernel takes strides.

use crate::Tensor;

/// Whether an operand of [`matmul`] is used as it is or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    /// `op(A) = A`.
    No,
    /// `op(A) = A^T`.
    Yes,
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
    // SAFETY: the pointers come from live nalgebra matrices whose shapes
    // were checked above; the strides describe their column-major layout
    // (or its transpose), so every index the kernel forms is in bounds,
    // and `c` is borrowed mutably so it aliases neither `a` nor `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            1,
            m as isize,
        );
    }
}

/// Makes `buf` a `rows x cols` matrix, reusing its allocation when the
/// shape already fits. The contents are unspecified afterwards.
pub fn ensure_shape(buf: &mut Tensor, rows: usize, cols: usize) {
    if buf.shape() != (rows, cols) {
        *buf = Tensor::zeros(rows, cols);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_with_transposes_matches_nalgebra() {
        let a = Tensor::from_fn(3, 4, |r, c| (r * 4 + c) as f32 * 0.5 - 2.0);
        let b = Tensor::from_fn(4, 2, |r, c| (r + 3 * c) as f32 - 1.5);
        let mut c = Tensor::from_element(3, 2, f32::NAN);
        matmul(1.0, &a, Trans::No, &b, Trans::No, 0.0, &mut c);
        assert_eq!(c, &a * &b);
        let at = a.transpose();
        let bt = b.transpose();
        let mut c2 = Tensor::from_element(3, 2, 1.0);
        matmul(2.0, &at, Trans::Yes, &bt, Trans::Yes, 1.0, &mut c2);
        assert_eq!(c2, (&a * &b) * 2.0 + Tensor::from_element(3, 2, 1.0));
    }
}
