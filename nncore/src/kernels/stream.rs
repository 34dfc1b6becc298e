//! The AVX-512 product of a few rows (2 to [`MAX_ROWS`]) by a weight that
//! streams from L3 or memory, written with intrinsics.
//!
//! One row reads such a weight front to back, four weight rows at a time
//! (`row_axpy`'s `stream` body), and is bound by how fast the weight
//! arrives (the MLP 784-1024-1024-10 at batch 1: 7.4 MB in about 95 µs on
//! Zen 4). Two to eight rows need no more bytes, only more multiply-adds,
//! but the blocked kernel that took them (all `M x V` sums in registers,
//! every weight row visited once per block of outputs, one access per row
//! in another 4 KiB page, which no prefetcher follows) took twice the time
//! of one row at 2 rows and at 4 alike: it waited on memory. Here the
//! weight is read as one row reads it, four weight rows front to back,
//! each vector of 16 weights loaded once and multiplied into every row's
//! sums, which sit in a row-major scratch that stays in L1 (2 x 1024
//! values are 8 KiB) and are loaded and stored once per four weight rows.
//!
//! Every sum starts from `beta * y` and adds the weight rows in order, as
//! `row_axpy` does: a row gives the same bits alone or in a batch.

#[cfg(target_arch = "x86_64")]
pub(super) use x86::rows;

/// The most rows [`rows`] takes in its one pass over the weight: their
/// `4 x M` broadcast inputs, four weight vectors and `M` sums stay in
/// registers. With 6 or 8 rows LLVM spilled them, and the MLP took 0.6 to
/// 1.3 ms instead of the blocked kernel's 0.35 (Zen 4); at 4 rows the two
/// are even (190 µs), at 2 rows this one takes 105 µs against 190, at 3
/// 150 against 200.
pub(super) const MAX_ROWS: usize = 4;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// Weight rows per pass over the outputs.
    const R: usize = 4;

    /// `y = beta * y + a b` for `m` rows (2 to
    /// [`crate::kernels::STREAM_MAX_ROWS`]): `y` column-major `m x n`, `a`
    /// column-major `m x k` with leading dimension `lda`, `b` `k` rows of
    /// `n` values `row_stride` apart; see the module.
    ///
    /// # Panics
    /// When the shapes do not hold (`rows_axpy` checked them already).
    #[target_feature(enable = "avx512f,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    pub(in crate::kernels) fn rows(
        y: &mut [f32],
        m: usize,
        a: &[f32],
        lda: usize,
        k: usize,
        b: &[f32],
        row_stride: usize,
        beta: f32,
    ) {
        assert!((1..=super::MAX_ROWS).contains(&m) && y.len().is_multiple_of(m));
        let n = y.len() / m;
        assert!(lda >= m && row_stride >= n);
        if let Some(last) = k.checked_sub(1) {
            assert!(a.len() >= last * lda + m && b.len() >= last * row_stride + n);
        }
        let mut scratch = crate::kernels::take_scratch(m * n);
        let t = &mut scratch[..m * n];
        // t[r * n + j] is y[r + j * m], as `row_axpy` scales it.
        for (r, tr) in t.chunks_exact_mut(n).enumerate() {
            for (j, o) in tr.iter_mut().enumerate() {
                let v = y[r + j * m];
                *o = if beta == 0.0 {
                    0.0
                } else if beta == 1.0 {
                    v
                } else {
                    beta * v
                };
            }
        }
        // SAFETY: `t` holds `m` rows of `n` values; `a` and `b` were checked
        // above for `k` rows.
        unsafe {
            let (tp, ap, bp) = (t.as_mut_ptr(), a.as_ptr(), b.as_ptr());
            match m {
                1 => pass::<1>(tp, n, ap, lda, k, bp, row_stride),
                2 => pass::<2>(tp, n, ap, lda, k, bp, row_stride),
                3 => pass::<3>(tp, n, ap, lda, k, bp, row_stride),
                _ => pass::<4>(tp, n, ap, lda, k, bp, row_stride),
            }
        }
        for (r, tr) in t.chunks_exact(n).enumerate() {
            for (j, &v) in tr.iter().enumerate() {
                y[r + j * m] = v;
            }
        }
        crate::kernels::give_scratch(scratch);
    }

    /// The first `count` lanes (`count <= 16`).
    fn lanes(count: usize) -> __mmask16 {
        ((1u32 << count) - 1) as __mmask16
    }

    /// `M` rows' sums `t` (row-major, rows of `n`) plus `a b`, the weight
    /// rows `R` at a time, each vector of weights loaded once for all `M`
    /// rows.
    ///
    /// # Safety
    /// AVX-512F; `t` holds `M * n` values, `a` rows `0..M` of `k` columns
    /// `lda` apart, `b` `k` rows of `n` values `row_stride` apart.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `r` and `i` index the broadcasts
    unsafe fn pass<const M: usize>(
        t: *mut f32,
        n: usize,
        a: *const f32,
        lda: usize,
        k: usize,
        b: *const f32,
        row_stride: usize,
    ) {
        let full = n / 16 * 16;
        let last = lanes(n - full);
        // SAFETY (the whole body): the caller's shapes; the loads and
        // stores past `full` are masked to the `n - full` values left.
        unsafe {
            let mut p = 0;
            while p + R <= k {
                let mut xs = [[_mm512_setzero_ps(); R]; M];
                for r in 0..M {
                    for i in 0..R {
                        xs[r][i] = _mm512_set1_ps(*a.add(r + (p + i) * lda));
                    }
                }
                let rows: [*const f32; R] = std::array::from_fn(|i| b.add((p + i) * row_stride));
                let mut j = 0;
                while j < full {
                    let w: [__m512; R] = std::array::from_fn(|i| _mm512_loadu_ps(rows[i].add(j)));
                    for r in 0..M {
                        let o = t.add(r * n + j);
                        let mut s = _mm512_loadu_ps(o);
                        for i in 0..R {
                            s = _mm512_fmadd_ps(w[i], xs[r][i], s);
                        }
                        _mm512_storeu_ps(o, s);
                    }
                    j += 16;
                }
                if j < n {
                    let w: [__m512; R] =
                        std::array::from_fn(|i| _mm512_maskz_loadu_ps(last, rows[i].add(j)));
                    for r in 0..M {
                        let o = t.add(r * n + j);
                        let mut s = _mm512_maskz_loadu_ps(last, o);
                        for i in 0..R {
                            s = _mm512_fmadd_ps(w[i], xs[r][i], s);
                        }
                        _mm512_mask_storeu_ps(o, last, s);
                    }
                }
                p += R;
            }
            while p < k {
                let row = b.add(p * row_stride);
                let xs: [__m512; M] = std::array::from_fn(|r| _mm512_set1_ps(*a.add(r + p * lda)));
                let mut j = 0;
                while j < n {
                    let mask = if j < full { lanes(16) } else { last };
                    let w = _mm512_maskz_loadu_ps(mask, row.add(j));
                    for r in 0..M {
                        let o = t.add(r * n + j);
                        let s = _mm512_fmadd_ps(w, xs[r], _mm512_maskz_loadu_ps(mask, o));
                        _mm512_mask_storeu_ps(o, mask, s);
                    }
                    j += 16;
                }
                p += 1;
            }
        }
    }
}
