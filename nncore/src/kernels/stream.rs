//! The AVX-512 product of two rows by a weight that streams from L3 or
//! memory, written with intrinsics.
//!
//! One row reads such a weight front to back, four weight rows at a time
//! (`row_axpy`'s `stream` body), and is bound by how fast the weight
//! arrives (the MLP 784-1024-1024-10 at batch 1: 7.4 MB in about 90 µs on
//! Zen 4). A second row needs no more bytes, only more multiply-adds, but
//! the blocked kernel that took it (all `M x V` sums in registers, every
//! weight row visited once per block of outputs, one access per row in
//! another 4 KiB page, which no prefetcher follows) took twice the time
//! of one row: it waited on memory. Here the weight is read as one row
//! reads it, four weight rows front to back, each vector of 16 weights
//! loaded once and multiplied into both rows' sums, which sit in a
//! row-major scratch that stays in L1 (2 x 1024 values are 8 KiB) and are
//! loaded and stored once per four weight rows.
//!
//! Every sum starts from `beta * y` and adds the weight rows in order, as
//! `row_axpy` does: a row gives the same bits alone or in a batch.

#[cfg(target_arch = "x86_64")]
pub(super) use x86::rows;

/// The most rows [`rows`] takes. On Zen 4, 3 and 4 rows (their
/// broadcast inputs, four weight vectors and sums all in registers) ran
/// in 117 and 145 µs in most processes but 155-350 in others (the
/// blocked kernel: 172 and 175, steady); 2 rows ran in 100 µs in 9
/// processes of 10 and 220 in the tenth, against 176. What differs
/// between processes is where the buffers land (the same addresses
/// modulo 4 KiB): perhaps L1's way predictor, which hashes the upper
/// address bits. With 6 or 8 rows LLVM spilled the broadcasts (0.6-1.3
/// ms against 0.35).
pub(super) const MAX_ROWS: usize = 2;

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Weight rows per pass over the outputs.
    const R: usize = 4;

    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// `y = beta * y + a b` for `m` rows (2 to [`super::MAX_ROWS`]): `y`
    /// column-major `m x n`, `a` column-major `m x k` with leading
    /// dimension `lda`, `b` `k` rows of `n` values `row_stride` apart; see
    /// the module.
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
        assert!((2..=super::MAX_ROWS).contains(&m) && y.len().is_multiple_of(m));
        let n = y.len() / m;
        assert!(lda >= m && row_stride >= n);
        if let Some(last) = k.checked_sub(1) {
            assert!(a.len() >= last * lda + m && b.len() >= last * row_stride + n);
        }
        // The sums' rows are `ns` values apart, 64 bytes past a multiple of
        // 4 KiB when `n` is one (1024 outputs), and start on a 64-byte
        // line 2 KiB away from the weight rows modulo 4 KiB: a load whose
        // address matches an earlier store's in its low 12 bits waits for
        // it (4K aliasing), and with the sums' rows 4 KiB apart, as the
        // weight's are, many did (the MLP at 2 rows: 117-120 µs against
        // 98-102 placed so).
        let ns = n.next_multiple_of(16) + 16;
        let mut scratch = crate::kernels::take_scratch(m * ns + 1024);
        let base = scratch.as_ptr() as usize;
        let want = (b.as_ptr() as usize).wrapping_add(2048) & !63;
        let skip = (want.wrapping_sub(base) % 4096) / 4;
        let t = &mut scratch[skip..skip + m * ns];
        // t[r * ns + j] is y[r + j * m], as `row_axpy` scales it.
        for (r, tr) in t.chunks_exact_mut(ns).enumerate() {
            for (j, o) in tr[..n].iter_mut().enumerate() {
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
        // SAFETY: `t` holds `m` rows of `ns >= n` values; `a` and `b` were
        // checked above for `k` rows.
        unsafe {
            let (tp, ap, bp) = (t.as_mut_ptr(), a.as_ptr(), b.as_ptr());
            pass::<2>(tp, ns, n, ap, lda, k, bp, row_stride);
        }
        for (r, tr) in t.chunks_exact(ns).enumerate() {
            for (j, &v) in tr[..n].iter().enumerate() {
                y[r + j * m] = v;
            }
        }
        crate::kernels::give_scratch(scratch);
    }

    /// The first `count` lanes (`count <= 16`).
    fn lanes(count: usize) -> __mmask16 {
        ((1u32 << count) - 1) as __mmask16
    }

    /// `M` rows' sums `t` (row-major, `n` values per row, rows `ns`
    /// apart) plus `a b`, the weight rows `R` at a time, each vector of
    /// weights loaded once for all `M` rows.
    ///
    /// # Safety
    /// AVX-512F; `t` holds `M` rows of `ns >= n` values, `a` rows `0..M`
    /// of `k` columns `lda` apart, `b` `k` rows of `n` values `row_stride`
    /// apart.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `r` and `i` index the broadcasts
    #[allow(clippy::too_many_arguments)]
    unsafe fn pass<const M: usize>(
        t: *mut f32,
        ns: usize,
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
                        let o = t.add(r * ns + j);
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
                        let o = t.add(r * ns + j);
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
                        let o = t.add(r * ns + j);
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
