//! Matrix products on nalgebra storage. (The thread setting lives in
//! `threads.rs`; it is re-exported here, where users find it.)
//!
//! [`matmul`] in BLAS's `sgemm` form: `C = alpha * op(A) * op(B) + beta *
//! C` with `op` the identity or the transpose; [`matmul_bias`] and
//! [`matmul_bias_new`] for a linear layer's `x W^T + b`. The transposes are
//! strides, never copies.
//!
//! The kernel is faer's, chosen by measurement on the shapes of the
//! project's workloads (forward `x W^T` and the transposed products of
//! backward): on the 2-core AVX-512 machine the project runs on it beat
//! nalgebra's default (matrixmultiply) by 1.1x (256x784x1024) to 1.6x
//! (64x100x50) and the `gemm` crate by 1.4x to 2x; `benches/gemm.rs`
//! repeats the comparison. A product of one row (batch 1) uses a
//! row-times-matrix kernel of nncore's own, which is 4x faster there.

use crate::Tensor;
pub use crate::threads::{
    MAX_THREADS, PARALLEL_ELEMENTS, PARALLEL_THRESHOLD, num_threads, set_num_threads,
};
use crate::threads::{helpers, parts, run_parts};

/// Whether an operand of [`matmul`] is used as it is or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    /// `op(A) = A`.
    No,
    /// `op(A) = A^T`.
    Yes,
}

/// Raw operand pointers that may cross to a worker thread: each worker
/// writes a disjoint block of columns (or rows) of `c`.
#[derive(Clone, Copy)]
struct Shared {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
}

// SAFETY: the pointers are only used inside `matmul`'s scope, while the
// borrows they come from are alive; workers read `a` and `b` and write
// disjoint blocks of `c`.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// Whether a block product overwrites `C` or adds to it.
#[derive(Clone, Copy)]
enum Accum {
    Replace,
    Add,
}

/// `C = alpha * A * B` (`Replace`) or `C += alpha * A * B` (`Add`) for one
/// block, on the best GEMM this build and CPU have: with the default
/// `x86-gemm` feature on an x86-64 CPU with AVX-512F or AVX2+FMA, the
/// packed micro-kernels of `private-gemm-x86` (faer's x86 GEMM); anywhere
/// else matrixmultiply (the GEMM nalgebra itself uses: 1.1x to 1.6x slower
/// on the workloads' shapes where it was measured, `benches/gemm.rs`).
#[allow(clippy::too_many_arguments)]
fn block_product(
    p: Shared,
    (m, n, k): (usize, usize, usize),
    (rsa, csa, rsb, csb): (isize, isize, isize, isize),
    ldc: isize,
    alpha: f32,
    accum: Accum,
) {
    #[cfg(all(feature = "x86-gemm", target_arch = "x86_64"))]
    if let Some(instr) = x86_gemm::best() {
        // SAFETY: the caller derives `p` and the strides from live
        // matrices and passes blocks within them.
        unsafe { x86_gemm::product(instr, p, (m, n, k), (rsa, csa, rsb, csb), ldc, alpha, accum) };
        return;
    }
    portable_product(p, (m, n, k), (rsa, csa, rsb, csb), ldc, alpha, accum);
}

/// [`block_product`] on matrixmultiply (any CPU, any build).
#[allow(clippy::too_many_arguments)]
fn portable_product(
    p: Shared,
    (m, n, k): (usize, usize, usize),
    (rsa, csa, rsb, csb): (isize, isize, isize, isize),
    ldc: isize,
    alpha: f32,
    accum: Accum,
) {
    let beta = match accum {
        Accum::Replace => 0.0,
        Accum::Add => 1.0,
    };
    // SAFETY: the caller derives `p` and the strides from live matrices
    // and passes blocks within them; matrixmultiply takes raw strided
    // operands (and ignores C's contents when beta is 0).
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, alpha, p.a, rsa, csa, p.b, rsb, csb, beta, p.c, 1, ldc,
        );
    }
}

/// faer's x86 GEMM kernels, called directly (as faer 0.24's `matmul`
/// calls them for `f32` products): the one function nncore used of faer,
/// without faer's linear algebra and its other GEMM crates (f16, f64 and
/// complex kernels, about 95 s of CPU in a first debug build).
#[cfg(all(feature = "x86-gemm", target_arch = "x86_64"))]
mod x86_gemm {
    use super::{Accum, Shared};
    use private_gemm_x86::{DType, DstKind, IType, InstrSet};
    use std::sync::OnceLock;

    /// The widest instruction set the kernels have for this CPU.
    pub(super) fn best() -> Option<InstrSet> {
        static BEST: OnceLock<Option<InstrSet>> = OnceLock::new();
        *BEST.get_or_init(|| available().first().copied())
    }

    /// The instruction sets this CPU can run, widest first, within the
    /// kernels' `NNCORE_CPU` cap ([`crate::kernels::available_variants`]).
    pub(super) fn available() -> Vec<InstrSet> {
        use crate::kernels::{Variant, supports};
        let mut v = Vec::new();
        if is_x86_feature_detected!("avx512f") && supports(Variant::Avx512) {
            v.push(InstrSet::Avx512);
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && supports(Variant::Avx2)
        {
            v.push(InstrSet::Avx256);
        }
        v
    }

    /// The block product with the kernels of `instr`.
    ///
    /// # Safety
    /// `p` and the strides describe live `m x k`, `k x n` operands and an
    /// `m x n` output (column stride `ldc`, initialised when `accum` is
    /// `Add`); the CPU supports `instr` (from [`available`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn product(
        instr: InstrSet,
        p: Shared,
        (m, n, k): (usize, usize, usize),
        (rsa, csa, rsb, csb): (isize, isize, isize, isize),
        ldc: isize,
        alpha: f32,
        accum: Accum,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if let Accum::Replace = accum {
                for j in 0..n {
                    // SAFETY: column j of the output (caller).
                    unsafe { std::slice::from_raw_parts_mut(p.c.offset(j as isize * ldc), m) }
                        .fill(0.0);
                }
            }
            return;
        }
        let null = std::ptr::null::<()>();
        // SAFETY: the operands as the caller guarantees; the kernels read
        // `alpha` as the element type (f32), no diagonal or index arrays,
        // one thread.
        unsafe {
            private_gemm_x86::gemm(
                DType::F32,
                IType::U64,
                instr,
                m,
                n,
                k,
                p.c.cast(),
                1,
                ldc,
                null,
                null,
                DstKind::Full,
                match accum {
                    Accum::Replace => private_gemm_x86::Accum::Replace,
                    Accum::Add => private_gemm_x86::Accum::Add,
                },
                p.a.cast(),
                rsa,
                csa,
                false,
                null,
                0,
                p.b.cast(),
                rsb,
                csb,
                false,
                std::ptr::from_ref(&alpha).cast(),
                1,
            );
            // The kernels return with the upper halves of the vector
            // registers dirty (no `vzeroupper`): until something clears
            // them, every legacy-SSE instruction after them (all code
            // compiled for baseline x86-64: scalar float math, nncore's
            // portable paths, the caller's own code) runs with a false
            // dependency on those upper halves. Measured: the test suite
            // ran 11x slower without this (debug builds call scalar
            // `fmaf` per element).
            std::arch::x86_64::_mm256_zeroupper();
        }
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
///
/// # Example
/// ```
/// use nncore::ops::{matmul, Trans};
/// use nncore::Tensor;
/// let a = Tensor::from_row_slice(2, 2, &[1., 2., 3., 4.]);
/// let b = Tensor::from_row_slice(2, 2, &[1., 0., 1., 1.]);
/// let mut c = Tensor::from_element(2, 2, 1.0);
/// // c = a * b^T + 10 c
/// matmul(1.0, &a, Trans::No, &b, Trans::Yes, 10.0, &mut c);
/// assert_eq!(c, Tensor::from_row_slice(2, 2, &[11., 13., 13., 17.]));
/// ```
pub fn matmul(alpha: f32, a: &Tensor, ta: Trans, b: &Tensor, tb: Trans, beta: f32, c: &mut Tensor) {
    let dims = dims(a, ta, b, tb);
    assert_eq!(c.shape(), (dims.0, dims.1), "matmul: output shape");
    let init = if beta == 0.0 {
        Init::Zero
    } else {
        Init::Scale(beta)
    };
    // SAFETY: `c` is an initialised matrix of the product's shape.
    unsafe { gemm(alpha, (a, ta), (b, tb), init, c.as_mut_ptr()) };
}

/// `c = op(a) * op(b) + bias` with `bias` (`n` values) added to every row:
/// a linear layer's `x W^T + b` in one pass over `c`, the bias written
/// block by block by the thread that then accumulates the product onto
/// it. The old contents of `c` are not read.
///
/// # Panics
/// When the shapes do not agree (see [`matmul`]) or `bias` does not have
/// one value per column of `c`.
///
/// # Example
/// ```
/// use nncore::ops::{matmul_bias, Trans};
/// use nncore::Tensor;
/// // y = x W^T + b for x (2 x 3), W (2 x 3), b (2).
/// let x = Tensor::from_row_slice(2, 3, &[1., 2., 3., 0., 1., 0.]);
/// let w = Tensor::from_row_slice(2, 3, &[1., 0., 0., 0., 0., 1.]);
/// let mut y = Tensor::zeros(2, 2);
/// matmul_bias(&x, Trans::No, &w, Trans::Yes, &[0.5, -1.0], &mut y);
/// assert_eq!(y, Tensor::from_row_slice(2, 2, &[1.5, 2., 0.5, -1.]));
/// ```
pub fn matmul_bias(a: &Tensor, ta: Trans, b: &Tensor, tb: Trans, bias: &[f32], c: &mut Tensor) {
    let dims = dims(a, ta, b, tb);
    assert_eq!(c.shape(), dims, "matmul_bias: output shape");
    assert_eq!(bias.len(), dims.1, "matmul_bias: bias length");
    // SAFETY: `c` is a matrix of the product's shape.
    unsafe { gemm(1.0, (a, ta), (b, tb), Init::RowBias(bias), c.as_mut_ptr()) };
}

/// [`matmul_bias`] into a new matrix, which is written only once (no
/// zero-fill before the bias).
///
/// # Panics
/// As [`matmul_bias`].
///
/// # Example
/// ```
/// use nncore::ops::{matmul_bias_new, Trans};
/// use nncore::Tensor;
/// let x = Tensor::from_row_slice(1, 2, &[1., 2.]);
/// let w = Tensor::from_row_slice(3, 2, &[1., 1., 0., 1., 1., 0.]);
/// let y = matmul_bias_new(&x, Trans::No, &w, Trans::Yes, &[0., 10., 20.]);
/// assert_eq!(y, Tensor::from_row_slice(1, 3, &[3., 12., 21.]));
/// ```
#[must_use]
pub fn matmul_bias_new(a: &Tensor, ta: Trans, b: &Tensor, tb: Trans, bias: &[f32]) -> Tensor {
    let (m, n) = dims(a, ta, b, tb);
    assert_eq!(bias.len(), n, "matmul_bias: bias length");
    let len = m * n;
    let mut data: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the buffer has room for the m x n result; `RowBias` writes
    // every element before anything reads it.
    unsafe {
        gemm(
            1.0,
            (a, ta),
            (b, tb),
            Init::RowBias(bias),
            data.as_mut_ptr(),
        );
        data.set_len(len);
    }
    from_vec(m, n, data)
}

/// Values of `W^T` per block of [`linear_blocked`]: 512 KiB, which stay
/// in L2 while the block's product reads them (beside the output's
/// columns and the block's columns of `x`).
const WT_BLOCK_VALUES: usize = 128 * 1024;

std::thread_local! {
    /// Each thread's block of `W^T` for [`linear_blocked`] (kept, so that
    /// training steps after the first allocate nothing).
    static WT_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `y = x W^T + bias` for a column-major weight `W` (`n x k`), taking `W^T`
/// block by block. Each thread owns a range of output columns `J` (all of
/// them on one thread) and walks the inner dimension in blocks of `kb`
/// (`|J| * kb` about [`WT_BLOCK_VALUES`]): it transposes `W[J, k0..k0+kb]`
/// into a per-thread buffer that stays in L2 and adds `x[:, k0..k0+kb]`
/// times it into `y[:, J]`. What a training forward runs for a large
/// weight, which changes every step: a whole transposed copy would be
/// written to memory and read back once, while the packed kernels
/// multiply through the untransposed weight at half speed. Blocks along
/// the inner dimension read `W` in runs of `|J|` values (whole 4 KiB
/// columns at `n = 1024`), which the hardware prefetchers follow, and
/// the kernels pack only the block's columns of `x`; blocks of output
/// columns read runs of 128 values and repacked all of `x` per block
/// (`res_b256_train`'s forward: see the README). `y`'s old contents are
/// not read.
///
/// # Panics
/// When the shapes do not agree (`x` is `m x k`, `y` must be `m x n`,
/// `bias` has `n` values).
pub(crate) fn linear_blocked(x: &Tensor, w: &Tensor, bias: Option<&[f32]>, y: &mut Tensor) {
    let (m, k) = x.shape();
    let n = w.nrows();
    assert_eq!(w.ncols(), k, "linear_blocked: inner dimensions differ");
    assert_eq!(y.shape(), (m, n), "linear_blocked: output shape");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "linear_blocked: bias length");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // No inputs: the bias alone (or zeros).
        match bias {
            // SAFETY: the whole m x n output.
            Some(b) => unsafe { fill_bias(y.as_mut_ptr(), m, 0..m, 0..n, b) },
            None => y.fill(0.0),
        }
        return;
    }
    let pool = helpers().filter(|_| n >= 32);
    let parts = pool.map_or(1, |_| parts(m, n, k));
    // Column ranges in multiples of 16 (whole vectors of a W row run).
    let per = n.div_ceil(parts).div_ceil(16) * 16;
    let p = Shared {
        a: x.as_ptr(),
        b: w.as_ptr(),
        c: y.as_mut_ptr(),
    };
    let part = |i: usize| {
        #[allow(clippy::redundant_locals)]
        let p = p;
        let (j0, j1) = ((i * per).min(n), ((i + 1) * per).min(n));
        let nb = j1 - j0;
        if nb == 0 {
            return;
        }
        if let Some(b) = bias {
            // SAFETY: columns j0..j1 of the m x n output, this part's.
            unsafe { fill_bias(p.c, m, 0..m, j0..j1, b) };
        }
        let kb = (WT_BLOCK_VALUES / nb / 16 * 16).max(16);
        let kb = if kb >= k { k } else { kb };
        WT_SCRATCH.with(|scratch| {
            let mut wt = scratch.borrow_mut();
            if wt.len() < kb * nb {
                wt.resize(kb * nb, 0.0);
            }
            // SAFETY: `w` is a live n x k matrix; the parts read it only.
            let w_all = unsafe { std::slice::from_raw_parts(p.b, n * k) };
            for k0 in (0..k).step_by(kb) {
                let kl = kb.min(k - k0);
                // Column-major W is a row-major k x n matrix (rows kk,
                // columns j): its rows k0..k0+kl, columns j0..j1 become
                // the block's kl x nb column-major W^T.
                crate::kernels::transpose_block(&w_all[k0 * n + j0..], n, &mut wt, kl, nb, kl);
                let c = Shared {
                    // SAFETY: column k0 of the m x k input.
                    a: unsafe { p.a.add(k0 * m) },
                    b: wt.as_ptr(),
                    // SAFETY: column j0 of the m x n output.
                    c: unsafe { p.c.add(j0 * m) },
                };
                let accum = if bias.is_none() && k0 == 0 {
                    Accum::Replace
                } else {
                    Accum::Add
                };
                block_product(
                    c,
                    (m, nb, kl),
                    (1, m as isize, 1, kl as isize),
                    m as isize,
                    1.0,
                    accum,
                );
            }
        });
    };
    match pool {
        Some(pool) if parts > 1 => run_parts(pool, 0, parts, &part),
        _ => part(0),
    }
}

/// Up to how many rows a `k x n` product by a row-contiguous right operand
/// runs on [`crate::kernels::rows_axpy`] instead of faer. Measured on the
/// workloads' shapes (`cargo bench -p nnrs-bench --bench latency`): the row kernel is
/// 1.3-5x faster from 2 to 8 rows on 100x50 (1.10 against 2.4 µs at 8
/// rows); on weights too large for the cache (784x1024, 1024x1024) it
/// streams the weight from memory once for all 8 rows (the MLP at 8 rows:
/// see the README's latency table), where faer's packing costs a pass of
/// its own.
pub(crate) const SMALL_ROWS_LIMIT: usize = 8;

/// The output shape `(m, n)` of `op(a) * op(b)`.
fn dims(a: &Tensor, ta: Trans, b: &Tensor, tb: Trans) -> (usize, usize) {
    let (m, k, _, _) = operand(a, ta);
    let (k2, n, _, _) = operand(b, tb);
    assert_eq!(k, k2, "matmul: inner dimensions differ");
    (m, n)
}

/// What a product starts from.
#[derive(Clone, Copy)]
enum Init<'a> {
    /// Nothing: `c = alpha op(a) op(b)`, old contents ignored.
    Zero,
    /// `beta * c`.
    Scale(f32),
    /// `bias` in every row, old contents ignored (`c` may be
    /// uninitialised).
    RowBias(&'a [f32]),
}

/// Writes `bias[j]` into rows `rows` of columns `cols` of the column-major
/// `m`-row matrix at `c`.
///
/// # Safety
/// `c` must be valid for writes of the whole block.
unsafe fn fill_bias(
    c: *mut f32,
    m: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    bias: &[f32],
) {
    for j in cols {
        // SAFETY: the block lies inside the matrix (caller); a slice of
        // MaybeUninit may cover uninitialised memory.
        let col = unsafe {
            std::slice::from_raw_parts_mut(
                c.add(j * m + rows.start)
                    .cast::<std::mem::MaybeUninit<f32>>(),
                rows.len(),
            )
        };
        col.fill(std::mem::MaybeUninit::new(bias[j]));
    }
}

/// The product into the `m x n` column-major matrix at `c`.
///
/// # Safety
/// `c` must be valid for writes of `m * n` elements, and initialised
/// unless `init` is [`Init::RowBias`].
unsafe fn gemm(
    alpha: f32,
    (a, ta): (&Tensor, Trans),
    (b, tb): (&Tensor, Trans),
    init: Init<'_>,
    c: *mut f32,
) {
    let (m, k, rsa, csa) = operand(a, ta);
    let (_, n, rsb, csb) = operand(b, tb);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        match init {
            // SAFETY: `c` holds m * n initialised elements (caller).
            Init::Zero => unsafe { std::slice::from_raw_parts_mut(c, m * n) }.fill(0.0),
            // SAFETY: as above.
            Init::Scale(beta) => unsafe { std::slice::from_raw_parts_mut(c, m * n) }
                .iter_mut()
                .for_each(|v| *v *= beta),
            // SAFETY: `c` is valid for the whole matrix (caller).
            Init::RowBias(bias) => unsafe { fill_bias(c, m, 0..m, 0..n, bias) },
        }
        return;
    }
    if m == 1 && alpha == 1.0 && (csb == 1 || rsb == 1) {
        // One row times a matrix (batch 1): op(a) is contiguous whatever
        // `ta` is, since a 1 x k or k x 1 matrix is one run of memory.
        let beta = match init {
            Init::Zero => 0.0,
            Init::Scale(beta) => beta,
            Init::RowBias(bias) => {
                // SAFETY: `c` is valid for the 1 x n row (caller).
                unsafe { fill_bias(c, 1, 0..1, 0..n, bias) };
                1.0
            }
        };
        let a_row = &a.as_slice()[..k];
        // SAFETY: `c` now holds n initialised elements.
        let y = unsafe { std::slice::from_raw_parts_mut(c, n) };
        if csb == 1 {
            crate::kernels::row_axpy(y, a_row, b.as_slice(), rsb as usize, beta);
        } else {
            crate::kernels::row_dot(y, a_row, b.as_slice(), csb as usize, beta);
        }
        return;
    }
    if m <= SMALL_ROWS_LIMIT && alpha == 1.0 && csb == 1 && rsa == 1 && csa as usize >= m {
        // A few rows (small batches) times `W^T`: each row of `W^T` loaded
        // once per group of rows, no packing. faer's set-up and packing
        // cost more than the product up to `SMALL_ROWS_LIMIT` rows.
        let beta = match init {
            Init::Zero => 0.0,
            Init::Scale(beta) => beta,
            Init::RowBias(bias) => {
                // SAFETY: `c` is valid for the m x n matrix (caller).
                unsafe { fill_bias(c, m, 0..m, 0..n, bias) };
                1.0
            }
        };
        // SAFETY: `c` now holds m * n initialised elements.
        let y = unsafe { std::slice::from_raw_parts_mut(c, m * n) };
        crate::kernels::rows_axpy(
            y,
            m,
            a.as_slice(),
            csa as usize,
            k,
            b.as_slice(),
            rsb as usize,
            beta,
        );
        return;
    }
    let accum = match init {
        Init::Zero => Accum::Replace,
        Init::Scale(beta) => {
            if beta != 1.0 {
                // SAFETY: `c` holds m * n initialised elements (caller).
                for v in unsafe { std::slice::from_raw_parts_mut(c, m * n) } {
                    *v *= beta;
                }
            }
            Accum::Add
        }
        Init::RowBias(_) => Accum::Add,
    };
    let bias = match init {
        Init::RowBias(bias) => Some(bias),
        _ => None,
    };
    let p = Shared {
        a: a.as_ptr(),
        b: b.as_ptr(),
        c,
    };
    let strides = (rsa, csa, rsb, csb);
    let ldc = m as isize;
    let parts = parts(m, n, k);
    let pool = match helpers() {
        Some(pool) if parts > 1 => pool,
        _ => {
            if let Some(bias) = bias {
                // SAFETY: `c` is valid for the whole matrix (caller).
                unsafe { fill_bias(c, m, 0..m, 0..n, bias) };
            }
            block_product(p, (m, n, k), strides, ldc, alpha, accum);
            return;
        }
    };
    // Split the output into blocks of columns (of rows when it is narrow),
    // one per thread: each computes a whole sub-product on one core. On
    // the 2-core VM this scaled the MLP's products by 1.94x to 1.96x,
    // against 1.85x to 1.98x when faer splits inside its kernel, and
    // 1.73x to 1.84x when splitting rows.
    let (split_n, len) = if n >= 16 * parts {
        (true, n)
    } else {
        (false, m)
    };
    let chunk = len.div_ceil(parts).next_multiple_of(16).min(len);
    let count = len.div_ceil(chunk);
    run_parts(pool, 0, count, &|i| {
        // Capture `p` whole (closures capture fields, which are not Sync).
        #[allow(clippy::redundant_locals)]
        let p = p;
        let start = i * chunk;
        let end = (start + chunk).min(len);
        let (rows, cols) = if split_n {
            (0..m, start..end)
        } else {
            (start..end, 0..n)
        };
        if let Some(bias) = bias {
            // SAFETY: the block lies inside the matrix; blocks are disjoint.
            unsafe { fill_bias(p.c, m, rows.clone(), cols.clone(), bias) };
        }
        // SAFETY: offsets within the matrices: columns `cols` of op(B) and
        // C, or rows `rows` of op(A) and C.
        let block = unsafe {
            Shared {
                a: p.a.offset(rows.start as isize * rsa),
                b: p.b.offset(cols.start as isize * csb),
                c: p.c.add(rows.start + cols.start * m),
            }
        };
        block_product(
            block,
            (rows.len(), cols.len(), k),
            strides,
            ldc,
            alpha,
            accum,
        );
    });
}

/// Gives `t` the shape `rows x cols` without touching its data (the
/// column-major values are read in the new shape).
///
/// # Panics
/// When the element count differs.
pub(crate) fn reshape(t: &mut Tensor, rows: usize, cols: usize) {
    assert_eq!(t.len(), rows * cols, "reshape: element count");
    if t.shape() == (rows, cols) {
        return;
    }
    let data: Vec<f32> = std::mem::replace(t, from_vec(0, 0, Vec::new())).data.into();
    *t = from_vec(rows, cols, data);
}

/// Copies `src` into `dst`, resizing `dst` as [`ensure_shape`] does.
pub fn copy_into(src: &Tensor, dst: &mut Tensor) {
    ensure_shape(dst, src.nrows(), src.ncols());
    // Both are contiguous and of one shape: a memcpy (nalgebra's
    // `copy_from` walks element by element).
    dst.as_mut_slice().copy_from_slice(src.as_slice());
}

/// `s` as a slice of possibly uninitialised values, for kernels that
/// write every element of their output without reading it (so they can
/// also fill a new allocation). The kernels only ever store initialised
/// `f32`s through it, which keeps `s` initialised.
pub(crate) fn as_uninit(s: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; every value of
    // `s` is initialised, and the kernels write only initialised values.
    unsafe { &mut *(std::ptr::from_mut(s) as *mut [std::mem::MaybeUninit<f32>]) }
}

/// A new `rows x cols` matrix whose elements `fill` writes, all of them,
/// without the zero-fill a `Tensor::zeros` would pay for.
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn new_filled(
    rows: usize,
    cols: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Tensor {
    let len = rows * cols;
    let mut data: Vec<f32> = Vec::with_capacity(len);
    fill(&mut data.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements (the caller's contract).
    unsafe { data.set_len(len) };
    from_vec(rows, cols, data)
}

/// Makes `buf` a `rows x cols` matrix, reusing its allocation when it is
/// large enough (so buffers that change shape between calls stop
/// allocating once they have grown). The contents are unspecified
/// afterwards.
#[inline]
pub fn ensure_shape(buf: &mut Tensor, rows: usize, cols: usize) {
    if buf.shape() != (rows, cols) {
        reshape_buffer(buf, rows, cols);
    }
}

/// [`ensure_shape`]'s reshape, out of line: the check above is on every
/// layer's path at batch 1, inlined, without a call that saves registers
/// for this.
#[inline(never)]
fn reshape_buffer(buf: &mut Tensor, rows: usize, cols: usize) {
    // Workspace buffers change shape on every call of a chain (they rotate
    // between layers), so this path is hot: no iterator machinery, and a
    // shrinking buffer is only truncated.
    let mut data: Vec<f32> = std::mem::replace(buf, from_vec(0, 0, Vec::new()))
        .data
        .into();
    let len = rows * cols;
    if data.len() >= len {
        data.truncate(len);
    } else {
        data.resize(len, 0.0);
    }
    *buf = from_vec(rows, cols, data);
}

/// `Tensor::from_vec` without its detour: nalgebra builds a matrix from a
/// `Vec` through `from_iterator`, which (specialized) keeps the buffer but
/// costs ~100 instructions, a tenth of a batch-1 layer.
///
/// # Panics
/// When `data.len() != rows * cols`.
#[inline]
pub(crate) fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Tensor {
    use nalgebra::{Dyn, VecStorage};
    Tensor::from_data(VecStorage::new(Dyn(rows), Dyn(cols), data))
}

/// Whether two tensors have one shape and agree within 1e-4 (relative
/// above 1): the tolerance of the products' tests.
#[cfg(test)]
pub(crate) fn close(x: &Tensor, y: &Tensor) -> bool {
    x.shape() == y.shape()
        && x.iter()
            .zip(y.iter())
            .all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0))
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

    /// `a` and `b` stored for `op(a) * op(b)` of shape `m x k` times
    /// `k x n`, and the product by nalgebra.
    fn operands(
        (m, k, n): (usize, usize, usize),
        ta: Trans,
        tb: Trans,
    ) -> (Tensor, Tensor, Tensor) {
        let a = match ta {
            Trans::No => Tensor::from_fn(m, k, |r, c| ((r * 7 + c * 3) % 17) as f32 * 0.1 - 0.8),
            Trans::Yes => Tensor::from_fn(k, m, |r, c| ((r * 5 + c * 3) % 11) as f32 * 0.1 - 0.5),
        };
        let b = match tb {
            Trans::No => Tensor::from_fn(k, n, |r, c| ((r * 5 + c) % 13) as f32 * 0.1 - 0.6),
            Trans::Yes => Tensor::from_fn(n, k, |r, c| ((r + 2 * c) % 7) as f32 * 0.2 - 0.6),
        };
        let expected = reference(&a, ta, &b, tb);
        (a, b, expected)
    }

    #[test]
    fn matmul_with_transposes_matches_nalgebra() {
        for &(m, k, n) in &[
            (3, 4, 2),
            (1, 7, 5),
            (1, 1, 1),
            (9, 1, 3),
            (17, 33, 65),
            (2, 100, 50),
            (5, 9, 130),
            (7, 1, 3),
            (4, 0, 3),
        ] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    let (a, b, expected) = operands((m, k, n), ta, tb);
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

    /// Every block-product path this CPU has (each x86 instruction set of
    /// the packed kernels, and matrixmultiply), on shapes around the
    /// kernels' register tiles (96 and 24 rows, 4 columns) and both
    /// layouts of each operand, against nalgebra.
    #[test]
    fn every_block_product_path_matches_nalgebra() {
        type Path = Box<
            dyn Fn(Shared, (usize, usize, usize), (isize, isize, isize, isize), isize, f32, Accum),
        >;
        // Without the x86-gemm feature the list stays matrixmultiply alone.
        #[allow(unused_mut)]
        let mut paths: Vec<(String, Path)> =
            vec![("matrixmultiply".into(), Box::new(portable_product))];
        #[cfg(all(feature = "x86-gemm", target_arch = "x86_64"))]
        for instr in x86_gemm::available() {
            paths.push((
                format!("{instr:?}"),
                Box::new(move |p, mnk, strides, ldc, alpha, accum| {
                    // SAFETY: as block_product's caller; `instr` is available.
                    unsafe { x86_gemm::product(instr, p, mnk, strides, ldc, alpha, accum) }
                }),
            ));
        }
        for &(m, k, n) in &[
            (1, 3, 1),
            (97, 31, 5),
            (25, 64, 9),
            (130, 7, 3),
            (5, 1, 40),
            (8, 0, 3),
        ] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    let (a, b, expected) = operands((m, k, n), ta, tb);
                    let (_, _, rsa, csa) = operand(&a, ta);
                    let (_, _, rsb, csb) = operand(&b, tb);
                    for (name, path) in &paths {
                        let mut c = Tensor::from_element(m, n, f32::NAN);
                        let shared = Shared {
                            a: a.as_ptr(),
                            b: b.as_ptr(),
                            c: c.as_mut_ptr(),
                        };
                        path(
                            shared,
                            (m, n, k),
                            (rsa, csa, rsb, csb),
                            m as isize,
                            1.0,
                            Accum::Replace,
                        );
                        assert!(
                            close(&c, &expected),
                            "{name} {m}x{k}x{n} {ta:?} {tb:?} replace"
                        );
                        let mut c = Tensor::from_element(m, n, 1.0);
                        let shared = Shared {
                            a: a.as_ptr(),
                            b: b.as_ptr(),
                            c: c.as_mut_ptr(),
                        };
                        path(
                            shared,
                            (m, n, k),
                            (rsa, csa, rsb, csb),
                            m as isize,
                            -2.0,
                            Accum::Add,
                        );
                        assert!(
                            close(&c, &(&expected * -2.0).add_scalar(1.0)),
                            "{name} {m}x{k}x{n} {ta:?} {tb:?} add"
                        );
                    }
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

#[cfg(test)]
mod parallel_tests {
    use super::*;

    use crate::threads::THREAD_SETTING;

    #[test]
    fn split_products_match_one_thread() {
        let _turn = THREAD_SETTING.lock().unwrap_or_else(|e| e.into_inner());
        // Large enough to be split; both split directions.
        for &(m, k, n) in &[(64, 256, 300), (300, 256, 30)] {
            let a = Tensor::from_fn(m, k, |r, c| ((r * 7 + c * 3) % 17) as f32 * 0.1 - 0.8);
            let b = Tensor::from_fn(n, k, |r, c| ((r * 5 + c) % 13) as f32 * 0.1 - 0.6);
            let mut one = Tensor::zeros(m, n);
            let mut two = Tensor::from_element(m, n, 1.0);
            set_num_threads(1);
            matmul(1.0, &a, Trans::No, &b, Trans::Yes, 0.0, &mut one);
            set_num_threads(3);
            assert_eq!(parts(m, n, k), 3);
            matmul(1.0, &a, Trans::No, &b, Trans::Yes, 1.0, &mut two);
            set_num_threads(0);
            let expected = one.add_scalar(1.0);
            assert!(
                two.iter()
                    .zip(expected.iter())
                    .all(|(x, y)| (x - y).abs() < 1e-4)
            );
        }
    }
}

#[cfg(test)]
mod blocked_tests {
    use super::*;

    #[test]
    fn blocked_linear_matches_nalgebra_serial_and_split() {
        let _turn = crate::threads::THREAD_SETTING
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // One block of the inner dimension (small k), several with a
        // ragged last one (k = 1000 over 300 outputs: 432 + 432 + 136;
        // over 2 x 160 on two threads: 816 + 184), output columns split
        // over threads off a multiple of 16 (1030), no inputs at all.
        for &(m, k, n) in &[
            (70, 33, 300),
            (64, 129, 100),
            (96, 256, 512),
            (1, 5, 130),
            (70, 1000, 300),
            (40, 2000, 1030),
            (3, 0, 40),
        ] {
            let x = Tensor::from_fn(m, k, |r, c| ((r * 7 + c * 3) % 17) as f32 * 0.1 - 0.8);
            let w = Tensor::from_fn(n, k, |r, c| ((r * 5 + c) % 13) as f32 * 0.1 - 0.6);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 1.0).collect();
            let plain = &x * w.transpose();
            let mut with_bias = plain.clone();
            for (mut col, b) in with_bias.column_iter_mut().zip(&bias) {
                col.add_scalar_mut(*b);
            }
            for threads in [1, 2] {
                set_num_threads(threads);
                let mut y = Tensor::from_element(m, n, f32::NAN);
                linear_blocked(&x, &w, Some(&bias), &mut y);
                assert!(close(&y, &with_bias), "{m}x{k}x{n} bias, {threads} threads");
                let mut y = Tensor::from_element(m, n, f32::NAN);
                linear_blocked(&x, &w, None, &mut y);
                assert!(close(&y, &plain), "{m}x{k}x{n}, {threads} threads");
            }
            set_num_threads(0);
        }
    }
}

#[cfg(test)]
mod bias_tests {
    use super::*;

    /// `op(a) op(b)` plus `bias` in every row, by nalgebra.
    fn reference(a: &Tensor, b: &Tensor, tb: Trans, bias: &[f32]) -> Tensor {
        let b = if tb == Trans::Yes {
            b.transpose()
        } else {
            b.clone()
        };
        let mut y = a * b;
        for (mut col, v) in y.column_iter_mut().zip(bias) {
            col.add_scalar_mut(*v);
        }
        y
    }

    #[test]
    fn bias_products_match_nalgebra_serial_and_split() {
        let _turn = crate::threads::THREAD_SETTING
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Batch 1 (row kernels), no inner dimension, small, and large
        // enough to split by columns (n wide) and by rows (n narrow).
        for &(m, k, n) in &[
            (1, 7, 5),
            (3, 0, 4),
            (9, 5, 3),
            (64, 256, 300),
            (300, 256, 30),
        ] {
            for tb in [Trans::No, Trans::Yes] {
                let a = Tensor::from_fn(m, k, |r, c| ((r * 7 + c * 3) % 17) as f32 * 0.1 - 0.8);
                let b = if tb == Trans::No {
                    Tensor::from_fn(k, n, |r, c| ((r * 5 + c) % 13) as f32 * 0.1 - 0.6)
                } else {
                    Tensor::from_fn(n, k, |r, c| ((r * 5 + c) % 13) as f32 * 0.1 - 0.6)
                };
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 1.0).collect();
                let expected = reference(&a, &b, tb, &bias);
                for threads in [1, 3] {
                    set_num_threads(threads);
                    let mut c = Tensor::from_element(m, n, f32::NAN);
                    matmul_bias(&a, Trans::No, &b, tb, &bias, &mut c);
                    assert!(close(&c, &expected), "{m}x{k}x{n} {tb:?} {threads}");
                    let fresh = matmul_bias_new(&a, Trans::No, &b, tb, &bias);
                    assert!(close(&fresh, &expected), "new {m}x{k}x{n} {tb:?} {threads}");
                }
                set_num_threads(0);
            }
        }
    }
}
