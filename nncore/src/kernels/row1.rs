//! The AVX-512 batch-1 product on a packed weight, written with intrinsics.
//!
//! The generic body (`bodies!`' `packed`) leaves LLVM to map its arrays to
//! registers: it kept the inner loop in registers but spilled every
//! accumulator around it, divided to count the leftover rows, stored the
//! last partial vector of outputs one value at a time (18 of SimpleNet's
//! 50 `fc1` outputs), and could only take 64, 32 or 16 outputs per pass
//! over the input (48 outputs took two passes). Here a block of one to
//! four vectors of outputs lives in registers from the bias to a masked
//! store, the rows go by pointer (the shapes are checked once, by the
//! caller), and a ReLU that follows the layer is applied on the way out.
//!
//! The last one to four outputs past the whole vectors can go as dot
//! products over a transposed copy of their weights (`tail_dot`, when
//! the packed weight carries it) instead of one more padded vector per
//! row: fewer loads, worth it for weights beyond L1 and for fewer than
//! 16 outputs (see [`tail_outputs`]). `tail_rows` computes the same sums
//! in the same order from the rows as they are, for the unpadded path.
//!
//! Tried and dropped: keeping the last `n % 16` columns (when 1 to 8) in a
//! compact layout, several input rows per vector, to skip the zero padding
//! (SimpleNet's `fc1`: 313 multiply-adds with a load each instead of 400).
//! Folding the lanes back together and spreading `x` to match cost about
//! what the skipped loads saved (100x50: 293-345 cycles with it against
//! 296-317 without, on the AVX-512 VM).

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{one_block, packed, packed_rows, unpadded_rows};

/// The batch-1 kernel takes the last `n % 16` outputs, when there are
/// at most this many, as dot products over [`tail_len`] extra values
/// after the packed rows: `t` outputs cost `t * ceil(k / 16)` vector
/// loads instead of the `k` of one more padded vector per row.
pub(super) const DOT_TAIL_MAX: usize = 4;

/// Padded weights of at most this many values (32 KiB, in L1 with room
/// for the input) keep their last vector of outputs in the rows: there
/// the dot products' set-up and sums cost what their fewer loads save
/// (SimpleNet's `fc1`, 100x50: 103-105 ns with them, 100-103 without;
/// 100x48 alone 84). From L2 the loads dominate: 784x50 1354-1445 ns
/// against 1594-1655, 256x36 202-205 against 266-282 (the AVX-512 VM,
/// min over 2000-call batches, alternating processes).
const DOT_TAIL_MIN_VALUES: usize = 8192;

/// How many of `n` outputs (with `k` inputs) are the batch-1 kernel's
/// dot-product tail on 512-bit vectors: the last `n % 16` when 1 to
/// [`DOT_TAIL_MAX`], and `n` is below 16 (one padded vector per row:
/// 100x1 in 22.6 ns against 48.0) or the padded weight is larger than
/// [`DOT_TAIL_MIN_VALUES`]. On half-vectors ([`runs_half`]) the last
/// `n % 8` when 1 to [`DOT_TAIL_MAX`], and `n` is below 8, or at least 16
/// with enough inputs that the half-vector saved per row (`k` loads and
/// multiply-adds, two per cycle) outweighs `t` dot products of
/// `ceil(k / 16)` full vectors plus about [`HALF_DOT_OVERHEAD`] cycles
/// for each one's sums and store. Zen 4, min over 2000-call batches, with
/// and without the tail: 100x50 112-113 against 117-118 ns, 100x17 54
/// against 58, 100x33 79-80 against 86-88, 100x4 23.6 against 35.2; and
/// where the rule leaves it out: 64x20 47-57 against 41-51, 32x36 40
/// against 36-37, 50x26 43-44 against 42, 50x10 33 against 27.5, 100x12
/// 55 against 44-45 (between 8 and 16 outputs the one half-vector left
/// per row costs what two did: the shuffles then bound the loop).
pub(super) fn tail_outputs(k: usize, n: usize, half: bool) -> usize {
    if runs_half(k, n, half) {
        let t = n % 8;
        let worth = n < 8 || (n >= 16 && 2 * t * (k.div_ceil(16) + HALF_DOT_OVERHEAD) <= k);
        return if t <= DOT_TAIL_MAX && worth { t } else { 0 };
    }
    let t = n % 16;
    let big = k * n.next_multiple_of(16) > DOT_TAIL_MIN_VALUES;
    if t <= DOT_TAIL_MAX && (n < 16 || big) {
        t
    } else {
        0
    }
}

/// See [`tail_outputs`]: a dot product's sums by halves, bias, ReLU and
/// store, in cycles of the main loop (fitted to the measurements there).
const HALF_DOT_OVERHEAD: usize = 12;

/// Whether a batch-1 product of `k` inputs and `n` outputs runs on
/// half-vectors when the CPU prefers them (`half`): when its padded
/// weight has at most [`HALF_MAX_VALUES`] values.
pub(super) fn runs_half(k: usize, n: usize, half: bool) -> bool {
    half && k * n.next_multiple_of(16) <= HALF_MAX_VALUES
}

/// The length of the tail block for `k` inputs and `n` outputs on this
/// CPU: its [`tail_outputs`] rows of `W` (one output's weights each),
/// each padded with zeros to `k.next_multiple_of(16)` values.
pub(super) fn tail_len(k: usize, n: usize) -> usize {
    tail_outputs(k, n, super::half_width()) * k.next_multiple_of(16)
}

/// With [`crate::kernels::half_width`], padded weights of at most this
/// many values (32 KiB, Zen 4's L1) run on 256-bit vectors; larger ones,
/// which come from L2, keep 512-bit loads: on Zen 4, 100x50 in 117 ns
/// against 143, 32x100 77 against 106, 100x10 44 against 67, but 256x36
/// 323-327 against 313, 100x100 345 against 335 (min over 2000-call
/// batches).
const HALF_MAX_VALUES: usize = 8192;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{Row1Fn, Row1Plan};
    use super::{DOT_TAIL_MAX, runs_half, tail_outputs};
    use std::arch::x86_64::{
        __m256, __m512, __m512i, __mmask8, __mmask16, _mm256_add_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_mask_storeu_ps, _mm256_maskz_loadu_ps, _mm256_max_ps,
        _mm256_permute_ps, _mm256_permute2f128_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm512_add_ps, _mm512_castps256_ps512, _mm512_cvtss_f32, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_storeu_ps, _mm512_mask3_fmadd_ps,
        _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_permute_ps, _mm512_permutex2var_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps,
    };

    /// The first `count` lanes (`count <= 16`).
    fn lanes(count: usize) -> __mmask16 {
        ((1u32 << count) - 1) as __mmask16
    }

    /// Vector `v` of a block of `V` starting at `p`: a plain load on padded
    /// rows (`MASK == false`), else the lanes `mask` gives for the block's
    /// last vector (the rest zero, as padding would be) so that an unpadded
    /// row is never read past its end.
    ///
    /// # Safety
    /// AVX-512F; the 16 values at `p` (padded) or the lanes of `mask` (the
    /// last vector, unpadded) are readable.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn load<const MASK: bool, const V: usize>(
        p: *const f32,
        v: usize,
        mask: __mmask16,
    ) -> __m512 {
        // SAFETY: the caller's.
        unsafe {
            if MASK && v == V - 1 {
                _mm512_maskz_loadu_ps(mask, p)
            } else {
                _mm512_loadu_ps(p)
            }
        }
    }

    /// Outputs `j0 .. min(n, j0 + 16 * V)` of `y = x w + bias`, the rows
    /// split over `S` (2 or 4) sets of accumulators (set 0 starts from the
    /// bias), summed pairwise at the end: `(s0 + s1) + (s2 + s3)`.
    ///
    /// # Safety
    /// AVX-512F; `w` holds `x.len()` rows of `stride` values with
    /// `j0 + 16 * V <= stride`; `bias` (when not null) `j0 + 16 * V`
    /// values; `y` room for `n` values.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `v` indexes every set's accumulators
    unsafe fn block<const V: usize, const S: usize, const MASK: bool>(
        y: *mut f32,
        n: usize,
        x: &[f32],
        w: *const f32,
        stride: usize,
        bias: *const f32,
        j0: usize,
        relu: bool,
    ) {
        // SAFETY (the whole body): row `p < x.len()` is read at
        // `w + p * stride + j0`, 16 * V values, inside `w`; the bias below
        // `j0 + 16 * V`; outputs below `n` (the last vector masked).
        unsafe {
            let last = lanes((n - j0 - 16 * (V - 1)).min(16));
            let mut acc = [[_mm512_setzero_ps(); V]; S];
            if !bias.is_null() {
                for (v, a) in acc[0].iter_mut().enumerate() {
                    *a = load::<MASK, V>(bias.add(j0 + 16 * v), v, last);
                }
            }
            let k = x.len();
            let xp = x.as_ptr();
            let mut row = w.add(j0);
            let full = k / S * S;
            let mut p = 0;
            while p < full {
                for (s, set) in acc.iter_mut().enumerate() {
                    let xs = _mm512_set1_ps(*xp.add(p + s));
                    let r = row.add(s * stride);
                    for (v, a) in set.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(load::<MASK, V>(r.add(16 * v), v, last), xs, *a);
                    }
                }
                row = row.add(S * stride);
                p += S;
            }
            while p < k {
                let xs = _mm512_set1_ps(*xp.add(p));
                for (v, a) in acc[0].iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(load::<MASK, V>(row.add(16 * v), v, last), xs, *a);
                }
                row = row.add(stride);
                p += 1;
            }
            for v in 0..V {
                let pair = |a: usize, b: usize| _mm512_add_ps(acc[a % S][v], acc[b % S][v]);
                let mut sum = match S {
                    2 => pair(0, 1),
                    _ => _mm512_add_ps(pair(0, 1), pair(2, 3)),
                };
                if relu {
                    // MAXPS returns its second operand when either is NaN
                    // or both are zeros: NaN and -0.0 pass, as in `ReLU`.
                    sum = _mm512_max_ps(_mm512_setzero_ps(), sum);
                }
                let j = j0 + 16 * v;
                if j + 16 <= n {
                    _mm512_storeu_ps(y.add(j), sum);
                } else if j < n {
                    _mm512_mask_storeu_ps(y.add(j), lanes(n - j), sum);
                }
            }
        }
    }

    /// The first `count` lanes of a 256-bit vector (`count <= 8`).
    fn lanes8(count: usize) -> __mmask8 {
        ((1u32 << count) - 1) as __mmask8
    }

    /// [`load`] on 256-bit vectors: vector `v` of a block of `Y`.
    ///
    /// # Safety
    /// AVX-512F and VL; the 8 values at `p` (padded) or the lanes of
    /// `mask` (the last vector, unpadded) are readable.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn load_y<const MASK: bool, const Y: usize>(
        p: *const f32,
        v: usize,
        mask: __mmask8,
    ) -> __m256 {
        // SAFETY: the caller's.
        unsafe {
            if MASK && v == Y - 1 {
                _mm256_maskz_loadu_ps(mask, p)
            } else {
                _mm256_loadu_ps(p)
            }
        }
    }

    /// [`block`] on 256-bit vectors, for CPUs that run a 512-bit
    /// operation as two 256-bit halves (AMD's Zen 4): outputs `j0 ..
    /// min(n, j0 + 8 * Y)`, the same sums in the same order as [`block`]
    /// with `S` sets on the 16-wide block that holds them (the same bits),
    /// but only `ceil(outputs / 8)` half-vectors per row, so less of the
    /// zero padding is loaded and multiplied (SimpleNet's `fc1`: 7 of 8
    /// halves). The inputs come eight at a time in one vector and are
    /// spread to each row's broadcast by two shuffles, which run beside
    /// the multiply-adds, instead of one broadcast load per row, which
    /// shares the load ports with the weights.
    ///
    /// # Safety
    /// As [`block`] with `16 * V` replaced by `8 * Y`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `v` indexes every set's accumulators
    unsafe fn block_y<const Y: usize, const S: usize, const MASK: bool>(
        y: *mut f32,
        n: usize,
        x: &[f32],
        w: *const f32,
        stride: usize,
        bias: *const f32,
        j0: usize,
        relu: bool,
    ) {
        // SAFETY (the whole body): as `block`'s, with rows read at
        // `w + p * stride + j0`, 8 * Y values, and `x` read below its
        // length (eight at a time while eight remain).
        unsafe {
            let last = lanes8((n - j0 - 8 * (Y - 1)).min(8));
            let mut acc = [[_mm256_setzero_ps(); Y]; S];
            if !bias.is_null() {
                for (v, a) in acc[0].iter_mut().enumerate() {
                    *a = load_y::<MASK, Y>(bias.add(j0 + 8 * v), v, last);
                }
            }
            let k = x.len();
            let xp = x.as_ptr();
            let mut row = w.add(j0);
            let mut p = 0;
            // Eight rows per vector of inputs; row `p` goes to set `p % S`
            // (`S` divides 8), as in `block`.
            while p + 8 <= k {
                let mut xv = _mm256_loadu_ps(xp.add(p));
                // Keeps `xv` a register: LLVM would otherwise turn the
                // shuffles of a loaded vector back into broadcast loads.
                std::arch::asm!("/* {0} */", inout(ymm_reg) xv, options(pure, nomem, nostack));
                let halves = [
                    _mm256_permute2f128_ps::<0x00>(xv, xv),
                    _mm256_permute2f128_ps::<0x11>(xv, xv),
                ];
                for (h, l) in halves.into_iter().enumerate() {
                    let spread = [
                        _mm256_permute_ps::<0x00>(l),
                        _mm256_permute_ps::<0x55>(l),
                        _mm256_permute_ps::<0xaa>(l),
                        _mm256_permute_ps::<0xff>(l),
                    ];
                    for (e, xs) in spread.into_iter().enumerate() {
                        let r = 4 * h + e;
                        let src = row.add(r * stride);
                        for v in 0..Y {
                            acc[r % S][v] = _mm256_fmadd_ps(
                                load_y::<MASK, Y>(src.add(8 * v), v, last),
                                xs,
                                acc[r % S][v],
                            );
                        }
                    }
                }
                row = row.add(8 * stride);
                p += 8;
            }
            let full = k / S * S;
            while p < full {
                for (s, set) in acc.iter_mut().enumerate() {
                    let xs = _mm256_set1_ps(*xp.add(p + s));
                    let r = row.add(s * stride);
                    for (v, a) in set.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(load_y::<MASK, Y>(r.add(8 * v), v, last), xs, *a);
                    }
                }
                row = row.add(S * stride);
                p += S;
            }
            while p < k {
                let xs = _mm256_set1_ps(*xp.add(p));
                for (v, a) in acc[0].iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(load_y::<MASK, Y>(row.add(8 * v), v, last), xs, *a);
                }
                row = row.add(stride);
                p += 1;
            }
            for v in 0..Y {
                let pair = |a: usize, b: usize| _mm256_add_ps(acc[a % S][v], acc[b % S][v]);
                let mut sum = match S {
                    2 => pair(0, 1),
                    _ => _mm256_add_ps(pair(0, 1), pair(2, 3)),
                };
                if relu {
                    sum = _mm256_max_ps(_mm256_setzero_ps(), sum);
                }
                let j = j0 + 8 * v;
                if j + 8 <= n {
                    _mm256_storeu_ps(y.add(j), sum);
                } else if j < n {
                    _mm256_mask_storeu_ps(y.add(j), lanes8(n - j), sum);
                }
            }
        }
    }

    /// `y = x w + bias` (then `max(y, 0)` when `relu`) for one row `x` and
    /// a packed `w` (see [`crate::kernels::row_packed`]), with the last
    /// columns from `tail` when given, on AVX-512F.
    ///
    /// # Safety
    /// AVX-512F. The shapes were checked by the caller: `stride` a multiple
    /// of 16 and at least `y.len()`, `w` at least `x.len() * stride`
    /// values, `bias` at least `stride`, `tail` at least
    /// [`super::tail_len`]`(x.len(), y.len())`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    pub(in crate::kernels) unsafe fn packed(
        y: &mut [f32],
        x: &[f32],
        w: &[f32],
        stride: usize,
        bias: Option<&[f32]>,
        relu: bool,
        half: bool,
    ) {
        // SAFETY: the caller's.
        unsafe {
            if runs_half(x.len(), y.len(), half) {
                packed_impl::<false, true>(y, x, w, stride, bias, relu);
            } else {
                packed_impl::<false, false>(y, x, w, stride, bias, relu);
            }
        }
    }

    /// [`packed`], or with `MASK` on unpadded rows.
    ///
    /// The outputs up to the [`tail_outputs`] go by blocks of vectors;
    /// the tail by [`tail_dot`] when `w` carries the tail block after its
    /// rows (packed only), else by [`tail_rows`], which sums in the same
    /// order (the same bits either way).
    ///
    /// # Safety
    /// As [`packed`]; with `MASK`, `stride` need only be at least `y.len()`,
    /// `w` at least `(x.len() - 1) * stride + y.len()` values and `bias`
    /// `y.len()`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn packed_impl<const MASK: bool, const HALF: bool>(
        y: &mut [f32],
        x: &[f32],
        w: &[f32],
        stride: usize,
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        let n = y.len();
        let k = x.len();
        let t = tail_outputs(k, n, HALF);
        let main = n - t;
        let (yp, wp) = (y.as_mut_ptr(), w.as_ptr());
        let bp = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: the caller's shapes; the tail writes `main..n`, reading
        // the tail block only when `w` holds it; every block stays below
        // `stride` (a multiple of 16 at least `n`, so `ceil(n / 16)`
        // vectors fit) and writes outputs below `main`. The tail goes
        // first: its dot products' latency (a chain of multiply-adds, then
        // the sums by halves) then overlaps the blocks' loads.
        unsafe {
            if t > 0 {
                let bt = if bp.is_null() { bp } else { bp.add(main) };
                let kp = k.next_multiple_of(16);
                let rows_end = k * stride;
                if !MASK && w.len() >= rows_end + t * kp {
                    let tail = wp.add(rows_end);
                    match t {
                        1 => tail_dot::<1>(yp.add(main), x, tail, kp, bt, relu),
                        2 => tail_dot::<2>(yp.add(main), x, tail, kp, bt, relu),
                        3 => tail_dot::<3>(yp.add(main), x, tail, kp, bt, relu),
                        _ => tail_dot::<DOT_TAIL_MAX>(yp.add(main), x, tail, kp, bt, relu),
                    }
                } else {
                    tail_rows(yp.add(main), t, x, wp.add(main), stride, bt, relu);
                }
            }
            let mut j0 = 0;
            while HALF && j0 < main {
                // The 16-wide block `block` would take here (up to four
                // vectors; four sets for up to three, two for four), as
                // half-vectors: the same sums, the same bits.
                macro_rules! run {
                    ($y:literal, $s:literal) => {
                        block_y::<$y, $s, MASK>(yp, main, x, wp, stride, bp, j0, relu)
                    };
                }
                let halves = (main - j0).min(64).div_ceil(8);
                match halves {
                    1 => run!(1, 4),
                    2 => run!(2, 4),
                    3 => run!(3, 4),
                    4 => run!(4, 4),
                    5 => run!(5, 4),
                    6 => run!(6, 4),
                    7 => run!(7, 2),
                    _ => run!(8, 2),
                }
                j0 += 16 * halves.div_ceil(2);
            }
            while !HALF && j0 < main {
                match (main - j0).div_ceil(16) {
                    1 => {
                        block::<1, 4, MASK>(yp, main, x, wp, stride, bp, j0, relu);
                        j0 += 16;
                    }
                    2 => {
                        block::<2, 4, MASK>(yp, main, x, wp, stride, bp, j0, relu);
                        j0 += 32;
                    }
                    3 => {
                        block::<3, 4, MASK>(yp, main, x, wp, stride, bp, j0, relu);
                        j0 += 48;
                    }
                    _ => {
                        block::<4, 2, MASK>(yp, main, x, wp, stride, bp, j0, relu);
                        j0 += 64;
                    }
                }
            }
        }
    }

    /// The kernel of a [`Row1Plan`] for `k` inputs and `n` outputs on
    /// AVX-512 (`half`: [`crate::kernels::half_width`]) when the outputs
    /// before the dot-product tail fit one block: [`packed_impl`]'s
    /// choice for that shape, made once. `None` for wider layers.
    pub(in crate::kernels) fn one_block(k: usize, n: usize, half: bool) -> Option<Row1Fn> {
        let main = n - tail_outputs(k, n, half);
        if main > 64 {
            return None;
        }
        let f: Row1Fn = if main == 0 {
            tail_only
        } else if runs_half(k, n, half) {
            match main.div_ceil(8) {
                1 => one_block_y::<1, 4>,
                2 => one_block_y::<2, 4>,
                3 => one_block_y::<3, 4>,
                4 => one_block_y::<4, 4>,
                5 => one_block_y::<5, 4>,
                6 => one_block_y::<6, 4>,
                7 => one_block_y::<7, 2>,
                _ => one_block_y::<8, 2>,
            }
        } else {
            match main.div_ceil(16) {
                1 => one_block_z::<1, 4>,
                2 => one_block_z::<2, 4>,
                3 => one_block_z::<3, 4>,
                _ => one_block_z::<4, 2>,
            }
        };
        Some(f)
    }

    /// The plan's dot-product tail, as [`packed_impl`] computes it.
    ///
    /// # Safety
    /// As [`Row1Plan::run`]; `p.tail` is 1 to [`DOT_TAIL_MAX`].
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn plan_tail(
        p: &Row1Plan,
        y: *mut f32,
        x: &[f32],
        w: *const f32,
        bias: *const f32,
        relu: bool,
    ) {
        let main = p.n - p.tail;
        let kp = p.k.next_multiple_of(16);
        // SAFETY: the tail block follows the `k` rows; the outputs and
        // bias values `main..n` exist.
        unsafe {
            let (y, tail) = (y.add(main), w.add(p.k * p.stride));
            let b = if bias.is_null() { bias } else { bias.add(main) };
            match p.tail {
                1 => tail_dot::<1>(y, x, tail, kp, b, relu),
                2 => tail_dot::<2>(y, x, tail, kp, b, relu),
                3 => tail_dot::<3>(y, x, tail, kp, b, relu),
                _ => tail_dot::<DOT_TAIL_MAX>(y, x, tail, kp, b, relu),
            }
        }
    }

    /// A plan whose outputs are all its tail.
    ///
    /// # Safety
    /// As [`Row1Plan::run`].
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn tail_only(
        p: &Row1Plan,
        y: *mut f32,
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        relu: bool,
    ) {
        // SAFETY: the caller's.
        unsafe { plan_tail(p, y, std::slice::from_raw_parts(x, p.k), w, bias, relu) }
    }

    /// Defines a [`Row1Plan`] kernel: one block of `$width` vectors by
    /// `$block`, then the tail (what [`packed_impl`] computes for a single
    /// block, the same bits). The tail goes last here: in a chain the next
    /// layer reads the tail's outputs last (its leftover rows), so the
    /// tail's chain of multiply-adds and sums finishes while that layer
    /// starts on the block's outputs (SimpleNet `forward_into` on Zen 4,
    /// alternating builds: 150-153 ns against 154-166 with the tail
    /// first).
    macro_rules! one_block_kernel {
        ($(#[$doc:meta])* $name:ident, $block:ident, $width:ident) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// As [`Row1Plan::run`].
            #[target_feature(enable = "avx512f,avx512vl")]
            unsafe fn $name<const $width: usize, const S: usize>(
                p: &Row1Plan,
                y: *mut f32,
                x: *const f32,
                w: *const f32,
                bias: *const f32,
                relu: bool,
            ) {
                // SAFETY: the caller's; the block covers the outputs below
                // `n - tail`, the tail the rest.
                unsafe {
                    let x = std::slice::from_raw_parts(x, p.k);
                    $block::<$width, S, false>(y, p.n - p.tail, x, w, p.stride, bias, 0, relu);
                    if p.tail > 0 {
                        plan_tail(p, y, x, w, bias, relu);
                    }
                }
            }
        };
    }

    one_block_kernel!(
        /// One block of `Y` half-vectors.
        one_block_y,
        block_y,
        Y
    );
    one_block_kernel!(
        /// One block of `V` 512-bit vectors.
        one_block_z,
        block,
        V
    );

    /// Lane 0 of `v` summed by halves: `v[r] + v[r + 8]`, then `+ 4`,
    /// `+ 2`, `+ 1` (lower lane first): the order [`tail_rows`] sums its
    /// sixteen accumulators in.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    fn sum_by_halves(v: __m512) -> f32 {
        let h = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v));
        let q = _mm512_add_ps(h, _mm512_shuffle_f32x4::<0b01_01_01_01>(h, h));
        let d = _mm512_add_ps(q, _mm512_permute_ps::<0b11_10_11_10>(q));
        let e = _mm512_add_ps(d, _mm512_permute_ps::<0b01_01_01_01>(d));
        _mm512_cvtss_f32(e)
    }

    /// `T` outputs as dot products: `tail` holds their weights, one
    /// output per row of `kp` values (zero past `k`). Lane `r` of output
    /// `j`'s accumulator sums inputs `r, r + 16, ...` in order (the last
    /// chunk masked: lanes past `k` are left as they are), then
    /// [`sum_by_halves`], the bias, the ReLU (`0 > s ? 0 : s`, as MAXPS).
    ///
    /// # Safety
    /// AVX-512F; `tail` holds `T * kp` values with `kp >= x.len()` a
    /// multiple of 16; `bias` (when not null) `T` values; `y` room for `T`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn tail_dot<const T: usize>(
        y: *mut f32,
        x: &[f32],
        tail: *const f32,
        kp: usize,
        bias: *const f32,
        relu: bool,
    ) {
        // SAFETY: chunk `c < kp / 16` of row `j < T` is inside `tail`;
        // `x` is read below its length (the last chunk masked).
        unsafe {
            let k = x.len();
            let xp = x.as_ptr();
            let mut acc = [_mm512_setzero_ps(); T];
            let full = k / 16;
            for c in 0..full {
                let xv = _mm512_loadu_ps(xp.add(16 * c));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(xv, _mm512_loadu_ps(tail.add(j * kp + 16 * c)), *a);
                }
            }
            if !k.is_multiple_of(16) {
                let m = lanes(k % 16);
                let xv = _mm512_maskz_loadu_ps(m, xp.add(16 * full));
                for (j, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_loadu_ps(tail.add(j * kp + 16 * full));
                    *a = _mm512_mask3_fmadd_ps(xv, wv, *a, m);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let mut s = sum_by_halves(*a);
                if !bias.is_null() {
                    s += *bias.add(j);
                }
                if relu && 0.0 > s {
                    s = 0.0;
                }
                *y.add(j) = s;
            }
        }
    }

    /// What [`tail_dot`] computes, in its order, from the rows as they
    /// are: sixteen accumulators of the `t` outputs' lanes, row `p` going
    /// to accumulator `p % 16`, summed by halves (`a[r] + a[r + 8]`, ...).
    ///
    /// # Safety
    /// AVX-512F; `w` holds `x.len()` rows of `stride` values, the first
    /// `t <= 16` of each readable; `bias` (when not null) `t` values; `y`
    /// room for `t`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    unsafe fn tail_rows(
        y: *mut f32,
        t: usize,
        x: &[f32],
        w: *const f32,
        stride: usize,
        bias: *const f32,
        relu: bool,
    ) {
        // SAFETY: row `p < x.len()` is read at `w + p * stride`, `t` lanes.
        unsafe {
            let m = lanes(t);
            let k = x.len();
            let xp = x.as_ptr();
            let mut a = [_mm512_setzero_ps(); 16];
            let mut p = 0;
            while p < k {
                for (r, acc) in a.iter_mut().enumerate().take(k - p) {
                    let wv = _mm512_maskz_loadu_ps(m, w.add((p + r) * stride));
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*xp.add(p + r)), wv, *acc);
                }
                p += 16;
            }
            let mut width = 8;
            while width > 0 {
                for r in 0..width {
                    a[r] = _mm512_add_ps(a[r], a[r + width]);
                }
                width /= 2;
            }
            let mut s = a[0];
            if !bias.is_null() {
                s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, bias));
            }
            if relu {
                s = _mm512_max_ps(_mm512_setzero_ps(), s);
            }
            _mm512_mask_storeu_ps(y, m, s);
        }
    }

    /// Outputs `j0 .. min(n, j0 + 16 * V)` of `M` rows of `y = x w + bias`
    /// (`x` column-major `m x k` from row `r0`, `y` column-major `m x n`):
    /// each weight vector is loaded once and used for the `M` rows, whose
    /// `M * V` accumulators stay in registers. With `S` sets (1 to 4), the
    /// weight rows go round the sets as in [`block`] (set 0 starts from the
    /// bias) and the sets are summed at the end, `(s0 + s1) + (s2 + s3)`:
    /// a narrow block's few accumulators would otherwise each wait for the
    /// last multiply-add (four cycles) before the next, and 2 rows of 50x1
    /// took as long as 50 of those waits.
    ///
    /// # Safety
    /// AVX-512F; as [`block`], and `x` / `y` hold `m` rows with
    /// `r0 + M <= m`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `r` and `v` index the tile
    unsafe fn rows_block<const V: usize, const M: usize, const S: usize, const MASK: bool>(
        y: *mut f32,
        m: usize,
        n: usize,
        x: *const f32,
        k: usize,
        r0: usize,
        w: *const f32,
        stride: usize,
        bias: *const f32,
        j0: usize,
        relu: bool,
    ) {
        // SAFETY: as `block`'s, with `x[(r0 + r, p)]` at `x + r0 + r + p * m`
        // and `y[(r0 + r, j)]` at `y + r0 + r + j * m`, both inside.
        unsafe {
            let last = lanes((n - j0 - 16 * (V - 1)).min(16));
            let mut acc = [[[_mm512_setzero_ps(); V]; M]; S];
            if !bias.is_null() {
                for row in acc[0].iter_mut() {
                    for (v, a) in row.iter_mut().enumerate() {
                        *a = load::<MASK, V>(bias.add(j0 + 16 * v), v, last);
                    }
                }
            }
            let mut wrow = w.add(j0);
            let mut xp = x.add(r0);
            // One weight row into set `s`.
            let step = |set: &mut [[__m512; V]; M], wrow: *const f32, xp: *const f32| {
                let mut wv = [_mm512_setzero_ps(); V];
                for (v, t) in wv.iter_mut().enumerate() {
                    *t = load::<MASK, V>(wrow.add(16 * v), v, last);
                }
                for (r, row) in set.iter_mut().enumerate() {
                    let xs = _mm512_set1_ps(*xp.add(r));
                    for (a, t) in row.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(*t, xs, *a);
                    }
                }
            };
            let full = k / S * S;
            let mut p = 0;
            while p < full {
                for set in acc.iter_mut() {
                    step(set, wrow, xp);
                    wrow = wrow.add(stride);
                    xp = xp.add(m);
                }
                p += S;
            }
            while p < k {
                step(&mut acc[0], wrow, xp);
                wrow = wrow.add(stride);
                xp = xp.add(m);
                p += 1;
            }
            let mut sums = acc[0];
            if S > 1 {
                for r in 0..M {
                    for v in 0..V {
                        let s = |i: usize| acc[i][r][v];
                        sums[r][v] = match S {
                            2 => _mm512_add_ps(s(0), s(1)),
                            3 => _mm512_add_ps(_mm512_add_ps(s(0), s(1)), s(2)),
                            _ => {
                                _mm512_add_ps(_mm512_add_ps(s(0), s(1)), _mm512_add_ps(s(2), s(3)))
                            }
                        };
                    }
                }
            }
            let mut acc = sums;
            if relu {
                for a in acc.iter_mut().flatten() {
                    *a = _mm512_max_ps(_mm512_setzero_ps(), *a);
                }
            }
            if M == m && M > 1 {
                // The whole batch: its outputs `j0..` are consecutive in
                // `y`, the rows' values interleaved: by permutes and whole
                // stores (the tile below costs a scalar load and store per
                // value: 2 rows of 10x50 spent most of their 73 ns there).
                for v in 0..V {
                    let j = j0 + 16 * v;
                    if j >= n {
                        break;
                    }
                    let values = M * (n - j).min(16);
                    for i in 0..M {
                        let from = 16 * i;
                        if from >= values {
                            break;
                        }
                        let mut o = _mm512_permutex2var_ps(acc[0][v], weave(M, i, 1), acc[1][v]);
                        for (s, row) in acc.iter().enumerate().skip(2) {
                            o = _mm512_permutex2var_ps(o, weave(M, i, s), row[v]);
                        }
                        let dst = y.add(j * m + from);
                        _mm512_mask_storeu_ps(dst, lanes((values - from).min(16)), o);
                    }
                }
                return;
            }
            // Row-major sums to the column-major output, through a tile.
            let mut tile = [[0.0f32; 16]; M];
            for v in 0..V {
                let j = j0 + 16 * v;
                if j >= n {
                    break;
                }
                for r in 0..M {
                    _mm512_storeu_ps(tile[r].as_mut_ptr(), acc[r][v]);
                }
                for l in 0..(n - j).min(16) {
                    let out = y.add(r0 + (j + l) * m);
                    for r in 0..M {
                        *out.add(r) = tile[r][l];
                    }
                }
            }
        }
    }

    /// [`rows_impl`] for a batch of two rows on half-vectors (see
    /// [`block_y`]): each block of 16 V outputs as `ceil(outputs / 8)`
    /// half-vectors, with the sets `rows_impl` gives that block on whole
    /// vectors, so the same sums in the same order (the same bits on
    /// either width), but the zero padding past the outputs neither loaded
    /// nor multiplied (SimpleNet's `fc1`: 7 halves of 8 per row).
    ///
    /// # Safety
    /// As [`rows_impl`] with `m == 2`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pair_halves<const MASK: bool>(
        y: *mut f32,
        n: usize,
        x: *const f32,
        k: usize,
        w: *const f32,
        stride: usize,
        bias: *const f32,
        relu: bool,
    ) {
        let mut j0 = 0;
        while j0 < n {
            let halves = (n - j0).min(64).div_ceil(8);
            macro_rules! run {
                ($y:literal, $s:literal) => {
                    // SAFETY: the caller's shapes; the block stays below
                    // `stride` (a multiple of 16 at least `n`) and `n`.
                    unsafe { pair_block_y::<$y, $s, MASK>(y, n, x, k, w, stride, bias, j0, relu) }
                };
            }
            // The sets of `rows_impl`'s `(2, ceil(halves / 2))` block.
            match halves {
                1 => run!(1, 4),
                2 => run!(2, 4),
                3 => run!(3, 2),
                4 => run!(4, 2),
                5 => run!(5, 2),
                6 => run!(6, 2),
                7 => run!(7, 1),
                _ => run!(8, 1),
            }
            j0 += 16 * halves.div_ceil(2);
        }
    }

    /// Outputs `j0 .. min(n, j0 + 8 * Y)` of both rows of a batch of two
    /// (`x` column-major `2 x k`, `y` column-major `2 x n`) on 256-bit
    /// vectors: [`rows_block`]'s sums with `S` sets, in its order.
    ///
    /// # Safety
    /// AVX-512F and VL; as [`rows_block`] with `16 * V` replaced by `8 * Y`
    /// and `m == 2`.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn pair_block_y<const Y: usize, const S: usize, const MASK: bool>(
        y: *mut f32,
        n: usize,
        x: *const f32,
        k: usize,
        w: *const f32,
        stride: usize,
        bias: *const f32,
        j0: usize,
        relu: bool,
    ) {
        // SAFETY: as `rows_block`'s, with rows of `w` read at `w + p *
        // stride + j0`, `8 * Y` values (the last vector masked to `n`
        // with `MASK`), `x[(r, p)]` at `x + r + 2 p` and `y[(r, j)]` at
        // `y + r + 2 j` (the stores masked to `n`).
        unsafe {
            let last = lanes8((n - j0 - 8 * (Y - 1)).min(8));
            let mut acc = [[[_mm256_setzero_ps(); Y]; 2]; S];
            if !bias.is_null() {
                for row in acc[0].iter_mut() {
                    for (v, a) in row.iter_mut().enumerate() {
                        *a = load_y::<MASK, Y>(bias.add(j0 + 8 * v), v, last);
                    }
                }
            }
            let mut wrow = w.add(j0);
            let mut xp = x;
            let step = |set: &mut [[__m256; Y]; 2], wrow: *const f32, xp: *const f32| {
                let wv: [__m256; Y] =
                    std::array::from_fn(|v| load_y::<MASK, Y>(wrow.add(8 * v), v, last));
                for (r, row) in set.iter_mut().enumerate() {
                    let xs = _mm256_set1_ps(*xp.add(r));
                    for (a, t) in row.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(*t, xs, *a);
                    }
                }
            };
            let full = k / S * S;
            let mut p = 0;
            while p < full {
                for set in acc.iter_mut() {
                    step(set, wrow, xp);
                    wrow = wrow.add(stride);
                    xp = xp.add(2);
                }
                p += S;
            }
            while p < k {
                step(&mut acc[0], wrow, xp);
                wrow = wrow.add(stride);
                xp = xp.add(2);
                p += 1;
            }
            for v in 0..Y {
                let j = j0 + 8 * v;
                if j >= n {
                    break;
                }
                let s = |i: usize, r: usize| acc[i][r][v];
                let mut sums = [s(0, 0), s(0, 1)];
                for (r, sum) in sums.iter_mut().enumerate() {
                    *sum = match S {
                        1 => s(0, r),
                        2 => _mm256_add_ps(s(0, r), s(1, r)),
                        _ => _mm256_add_ps(
                            _mm256_add_ps(s(0, r), s(1, r)),
                            _mm256_add_ps(s(2, r), s(3, r)),
                        ),
                    };
                    if relu {
                        *sum = _mm256_max_ps(_mm256_setzero_ps(), *sum);
                    }
                }
                // (a0, b0, a1, b1, .. a7, b7): outputs j .. j + 8 of both.
                let o = _mm512_permutex2var_ps(
                    _mm512_castps256_ps512(sums[0]),
                    weave(2, 0, 1),
                    _mm512_castps256_ps512(sums[1]),
                );
                _mm512_mask_storeu_ps(y.add(2 * j), lanes(2 * (n - j).min(8)), o);
            }
        }
    }

    /// The permutes that interleave `m` (2 to 4) vectors `a_0 .. a_(m-1)`
    /// of 16 values: output vector `i` holds values `16 i ..` of
    /// `(a_0[0], a_1[0], .. a_(m-1)[0], a_0[1], ..)`. Step 1 takes rows 0
    /// and 1 from two vectors, step `s` (2 and 3) puts in row `s`.
    const WEAVE: [[[[i32; 16]; 4]; 4]; 5] = {
        let mut t = [[[[0; 16]; 4]; 4]; 5];
        let mut m = 2;
        while m <= 4 {
            let mut i = 0;
            while i < m {
                let mut p = 0;
                while p < 16 {
                    let g = 16 * i + p;
                    let (j, r) = ((g / m) as i32, g % m);
                    t[m][i][1][p] = match r {
                        0 => j,
                        1 => 16 + j,
                        _ => 0,
                    };
                    let mut s = 2;
                    while s < m {
                        t[m][i][s][p] = if r == s { 16 + j } else { p as i32 };
                        s += 1;
                    }
                    p += 1;
                }
                i += 1;
            }
            m += 1;
        }
        t
    };

    /// Step `s` of output vector `i` of [`WEAVE`] for `m` rows.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    fn weave(m: usize, i: usize, s: usize) -> __m512i {
        // SAFETY: 16 `i32`s.
        unsafe { _mm512_loadu_si512(WEAVE[m][i][s].as_ptr().cast()) }
    }

    /// `y = x w + bias` (then `max(y, 0)` when `relu`) for `m` rows of `x`
    /// (column-major, `m x k`; `y` column-major `m x n`) and a packed `w`,
    /// on AVX-512F: up to four rows at a time, each weight vector loaded
    /// once for them.
    ///
    /// # Safety
    /// AVX-512F. The shapes were checked by the caller: `y.len() == m * n`,
    /// `x.len() >= m * k`, `stride` a multiple of 16 and at least `n`, `w`
    /// at least `k * stride` values, `bias` at least `stride`.
    #[target_feature(enable = "avx512f,avx512vl")]
    pub(in crate::kernels) unsafe fn packed_rows(
        y: &mut [f32],
        m: usize,
        x: &[f32],
        w: &[f32],
        stride: usize,
        bias: Option<&[f32]>,
        relu: bool,
        half: bool,
    ) {
        // SAFETY: the caller's.
        unsafe { rows_impl::<false>(y, m, x, w, stride, bias, relu, half) }
    }

    /// What [`packed`] (one row) and [`packed_rows`] (more) compute, in the
    /// same order (the same bits), on a weight whose rows are not padded:
    /// `stride >= n` (any), the last vector of every block loaded with a
    /// mask, so nothing past a row's `n` values is read (`Linear`'s
    /// training forward and the batches before its packed copy exists).
    ///
    /// # Safety
    /// AVX-512F. `m > 0`, `y.len() == m * n`, `x.len() == m * k`, `w` at
    /// least `(k - 1) * stride + n` values when `k > 0`, `stride >= n`,
    /// `bias` at least `n` values.
    #[target_feature(enable = "avx512f,avx512vl")]
    pub(in crate::kernels) unsafe fn unpadded_rows(
        y: &mut [f32],
        m: usize,
        x: &[f32],
        w: &[f32],
        stride: usize,
        bias: Option<&[f32]>,
        relu: bool,
        half: bool,
    ) {
        // SAFETY: the caller's; with `MASK` no load passes column `n`.
        unsafe {
            if m == 1 && runs_half(x.len(), y.len(), half) {
                packed_impl::<true, true>(y, x, w, stride, bias, relu);
            } else if m == 1 {
                packed_impl::<true, false>(y, x, w, stride, bias, relu);
            } else {
                rows_impl::<true>(y, m, x, w, stride, bias, relu, half);
            }
        }
    }

    /// [`packed_rows`], or with `MASK` [`unpadded_rows`].
    ///
    /// # Safety
    /// As those.
    #[target_feature(enable = "avx512f,avx512vl")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_impl<const MASK: bool>(
        y: &mut [f32],
        m: usize,
        x: &[f32],
        w: &[f32],
        stride: usize,
        bias: Option<&[f32]>,
        relu: bool,
        half: bool,
    ) {
        let n = y.len() / m;
        let k = x.len() / m;
        let (yp, xp, wp) = (y.as_mut_ptr(), x.as_ptr(), w.as_ptr());
        let bp = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        if m == 2 && runs_half(k, n, half) {
            // SAFETY: as below.
            unsafe { pair_halves::<MASK>(yp, n, xp, k, wp, stride, bp, relu) };
            return;
        }
        // SAFETY: the caller's shapes; every block stays below `stride`
        // and row `m`.
        unsafe {
            let mut r0 = 0;
            while r0 < m {
                let rows = (m - r0).min(4);
                let mut j0 = 0;
                while j0 < n {
                    // Up to 4 vectors of outputs for 1-2 rows, 3 for 3 and
                    // 4 rows; sets (the last number) so that at least eight
                    // sums are in flight (two multiply-add units, four
                    // cycles each), at most 12 accumulators plus the
                    // weights (1 row and 4 vectors: 2 sets of 4).
                    macro_rules! run {
                        ($v:literal, $m:literal, $s:literal) => {{
                            rows_block::<$v, $m, $s, MASK>(
                                yp, m, n, xp, k, r0, wp, stride, bp, j0, relu,
                            );
                            j0 += 16 * $v;
                        }};
                    }
                    let left = (n - j0).div_ceil(16);
                    match (rows, left) {
                        (2, 1) => run!(1, 2, 4),
                        (2, 2) => run!(2, 2, 2),
                        (2, 3) => run!(3, 2, 2),
                        (2, _) => run!(4, 2, 1),
                        (3, 1) => run!(1, 3, 3),
                        (3, 2) => run!(2, 3, 2),
                        (3, _) => run!(3, 3, 1),
                        (4, 1) => run!(1, 4, 2),
                        (4, 2) => run!(2, 4, 1),
                        (4, _) => run!(3, 4, 1),
                        (_, 1) => run!(1, 1, 4),
                        (_, 2) => run!(2, 1, 4),
                        (_, 3) => run!(3, 1, 4),
                        (_, _) => run!(4, 1, 2),
                    }
                }
                r0 += rows;
            }
        }
    }
}
