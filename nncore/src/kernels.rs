//! nncore's own CPU kernels, where a general library spends more in set-up
//! or passes than the work needs:
//!
//! - products of one row or a few rows by a linear layer's `W^T`
//!   ([`row_axpy`], [`row_packed`] on `Linear`'s padded copy, [`row_dot`],
//!   [`rows_axpy`]): faer's GEMM took 0.44 us for SimpleNet's 1x100 by
//!   100x50 product, these about 0.1 us (`benches/gemm.rs`, `latency.rs`);
//! - reductions and updates ([`sum`], [`dot`], [`all_finite`],
//!   [`sgd_update`], [`squared_error`], [`add_assign`]), and the
//!   column-by-column dot products of a convolution's weight gradient
//!   ([`cross_dots`]);
//! - max pooling's updates over a batch of pixels ([`max_update`],
//!   [`max_arg_update`]);
//! - the normalization layers' passes ([`row_moments`], [`normalize_rows`],
//!   [`layer_norm_dx`] for LayerNorm; [`column_moments`],
//!   [`normalize_columns`], [`batch_norm_dx`] for BatchNorm1d);
//! - element-wise maps split across threads for large inputs
//!   ([`map_into`], [`map_in_place`], [`zip_map_into`]).
//!
//! Every kernel picks its CPU variant one way, through `multiversion!`: a
//! function compiled for AVX-512F, for AVX2 with FMA and for the baseline
//! target, the best the CPU supports picked once at run time, and a
//! `_with` twin that runs a chosen variant. A kernel is either one body
//! compiled three times, or (the row products) the per-variant functions
//! that `bodies!` generates with block widths that fit each variant's
//! registers. The tests run every variant the machine has, the portable
//! one included. Not public API (hidden from the docs): `Linear`, the
//! norms, the losses and the optimizers are the interface.
// The LayerNorm kernels take the matrix, its statistics and the affine
// parameters as slices: more arguments than clippy's default.
#![allow(clippy::too_many_arguments)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

/// Which compiled variant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// x86-64 with AVX-512F and VL (and FMA): every AVX-512 CPU since
    /// Skylake-SP and Zen 4.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// Any CPU.
    Portable,
}

/// The variants the kernels may use on this CPU, best first: every one
/// it can run, unless the environment variable `NNCORE_CPU` (read once,
/// at the first kernel call) caps them at `avx2` or `portable`, to run
/// and test the other variants on a newer CPU (`NNCORE_CPU=avx2 cargo
/// test`). Other values leave the variants as detected. On AVX-512,
/// `NNCORE_AVX512_WIDTH=256` or `512` picks the batch-1 kernels' vector
/// width (see [`half_width`]).
///
/// ```
/// use nncore::kernels::{Variant, available_variants};
/// assert_eq!(available_variants().last(), Some(&Variant::Portable));
/// ```
#[must_use]
pub fn available_variants() -> Vec<Variant> {
    let bits = supported();
    [Variant::Avx512, Variant::Avx2, Variant::Portable]
        .into_iter()
        .filter(|v| bits & 1 << *v as u8 != 0)
        .collect()
}

/// The variants the CPU runs, then `NNCORE_CPU`'s cap.
fn detect_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
        {
            v.push(Variant::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Variant::Avx2);
        }
    }
    v.push(Variant::Portable);
    let cap = match std::env::var("NNCORE_CPU").as_deref() {
        Ok("avx2") => Variant::Avx2,
        Ok("portable") => Variant::Portable,
        _ => Variant::Avx512,
    };
    v.retain(|v| *v as u8 >= cap as u8);
    v
}

/// Whether the CPU runs a 512-bit operation as two 256-bit halves, so
/// that the batch-1 kernel does better on 256-bit vectors (see
/// [`half_width`]). AMD's Zen 4 (family 19h with AVX-512) does; Intel's
/// AVX-512 cores and Zen 5 have 512-bit units. The environment variable
/// `NNCORE_AVX512_WIDTH` (`256` or `512`, read with `NNCORE_CPU`)
/// overrides the guess, to measure one against the other.
fn detect_half_width() -> bool {
    match std::env::var("NNCORE_AVX512_WIDTH").as_deref() {
        Ok("256") => return true,
        Ok("512") => return false,
        _ => {}
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // Leaves 0 (the vendor) and 1 (the family) exist on every x86-64 CPU.
        let (vendor, sig) = (__cpuid(0), __cpuid(1));
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let base = (sig.eax >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((sig.eax >> 20) & 0xff)
        } else {
            base
        };
        amd && family == 0x19
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Bit of [`SUPPORTED`]: [`detect_half_width`], on a CPU with the
/// [`Variant::Avx512`] kernels.
const HALF_WIDTH: u8 = 1 << 6;

/// The usable variants as bits (`1 << variant as u8`), [`HALF_WIDTH`],
/// and bit 7 set once known: one relaxed load per kernel call picks and
/// checks the variant.
static SUPPORTED: AtomicU8 = AtomicU8::new(0);

#[inline]
fn supported() -> u8 {
    #[cold]
    fn detect() -> u8 {
        let mut bits = detect_variants()
            .into_iter()
            .fold(0x80, |b, v| b | 1 << v as u8);
        if bits & 1 << Variant::Avx512 as u8 != 0 && detect_half_width() {
            bits |= HALF_WIDTH;
        }
        SUPPORTED.store(bits, Ordering::Relaxed);
        bits
    }
    match SUPPORTED.load(Ordering::Relaxed) {
        0 => detect(),
        bits => bits,
    }
}

/// Whether the kernels may use `v` ([`available_variants`]).
#[inline]
pub(crate) fn supports(v: Variant) -> bool {
    supported() & 1 << v as u8 != 0
}

/// Whether the batch-1 kernels ([`row_packed`] and [`rows_unpadded`] of
/// one row, on AVX-512) run on 256-bit vectors: on a CPU whose 512-bit
/// operations take two 256-bit halves (AMD's Zen 4) they then load and
/// multiply only the half-vectors that hold outputs (`fc1` of SimpleNet,
/// 50 outputs: 7 halves per row instead of 4 full vectors, 8 halves), and
/// spread the inputs by shuffles instead of one broadcast load per row.
/// The same sums in the same order: the same bits either way. Detected
/// once (see `NNCORE_AVX512_WIDTH` in [`available_variants`]).
///
/// ```
/// // Either answer is correct; the kernels' results do not depend on it.
/// let _ = nncore::kernels::half_width();
/// ```
#[must_use]
#[inline]
pub fn half_width() -> bool {
    supported() & HALF_WIDTH != 0
}

/// The best variant the kernels may use.
#[inline]
fn best() -> Variant {
    let bits = supported();
    if bits & 1 << Variant::Avx512 as u8 != 0 {
        Variant::Avx512
    } else if bits & 1 << Variant::Avx2 as u8 != 0 {
        Variant::Avx2
    } else {
        Variant::Portable
    }
}

/// The one way a kernel picks its CPU variant. Defines `$name`, which runs
/// the best variant this CPU has (AVX-512F, AVX2+FMA, or the baseline),
/// picked once at run time, and `$with`, which runs a chosen one (tests
/// and benches use it, for every variant the machine has). The body is
/// either one block compiled three times, or (`=> $f`) the function `$f`
/// of the per-variant modules that `bodies!` generates with their own
/// block widths, after the shape checks of an optional `check` block.
macro_rules! multiversion {
    (
        $(#[$doc:meta])*
        pub fn $name:ident / $with:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? $body:block
    ) => {
        multiversion! {
            @emit $(#[$doc])* $name / $with ( $($arg : $ty),* ) $(-> $ret)? ;
            {} ; body ; body ; body ;
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
        }
    };
    (
        $(#[$doc:meta])*
        pub fn $name:ident / $with:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)?
            => $f:ident $(; check $check:block)?
    ) => {
        multiversion! {
            @emit $(#[$doc])* $name / $with ( $($arg : $ty),* ) $(-> $ret)? ;
            { $($check)? } ; avx512::$f ; avx2::$f ; portable::$f ;
        }
    };
    (
        $(#[$doc:meta])*
        pub fn $name:ident / $with:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)?
            => { $on512:path, $on2:path, $portable:path } $(; check $check:block)?
    ) => {
        multiversion! {
            @emit $(#[$doc])* $name / $with ( $($arg : $ty),* ) $(-> $ret)? ;
            { $($check)? } ; $on512 ; $on2 ; $portable ;
        }
    };
    (
        @emit $(#[$doc:meta])* $name:ident / $with:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? ;
        $check:block ; $on512:path ; $on2:path ; $portable:path ; $($item:item)*
    ) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            $with(best(), $($arg),*)
        }

        /// The same, with a chosen variant (for tests and benches).
        ///
        /// # Panics
        /// As the function without `_with`, and when the CPU cannot run
        /// `variant`.
        #[allow(clippy::too_many_arguments)]
        pub fn $with(variant: Variant, $($arg: $ty),*) $(-> $ret)? {
            $check
            $($item)*
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,fma")]
            #[inline]
            fn on_avx512($($arg: $ty),*) $(-> $ret)? { $on512($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[inline]
            fn on_avx2($($arg: $ty),*) $(-> $ret)? { $on2($($arg),*) }
            match variant {
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 => {
                    assert!(supports(Variant::Avx512), "this CPU lacks AVX-512F or FMA");
                    // SAFETY: the CPU supports the features (checked above).
                    unsafe { on_avx512($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                Variant::Avx2 => {
                    assert!(supports(Variant::Avx2), "this CPU lacks AVX2 or FMA");
                    // SAFETY: the CPU supports the features (checked above).
                    unsafe { on_avx2($($arg),*) }
                }
                _ => $portable($($arg),*),
            }
        }
    };
}

multiversion! {
    /// `y = beta * y + sum_p a[p] * b[p * row_stride .. p * row_stride + n]`
    /// with `n = y.len()`: a row times a matrix whose rows are contiguous.
    ///
    /// # Panics
    /// When `b` is too short for `a.len()` rows of `y.len()` values.
    pub fn row_axpy / row_axpy_with (y: &mut [f32], a: &[f32], b: &[f32], row_stride: usize, beta: f32)
    => axpy; check {
        if let Some(last) = a.len().checked_sub(1) {
            assert!(b.len() >= last * row_stride + y.len(), "row_axpy: b too short");
        }
    }
}

/// [`row_axpy`] streams the weight row by row ([`row_axpy`]'s `stream`
/// body) from this many outputs on, when the weight has at least
/// [`STREAM_MIN_ELEMENTS`] values (larger than L2 halves, where it comes
/// from memory).
const STREAM_MIN_OUTPUTS: usize = 256;

/// See [`STREAM_MIN_OUTPUTS`]: 1 MiB of `f32`.
const STREAM_MIN_ELEMENTS: usize = 1 << 18;

/// [`rows_axpy`] streams such a weight for up to this many rows, in one
/// pass. Not on Zen 4 ([`half_width`]): there the blocks of outputs with
/// every accumulator in registers, the weight read once per group of four
/// rows, were faster at every batch (the MLP 784-1024-1024-10's
/// `forward_into`, min of 40: 2 rows 177-183 us against 189-205, 4 rows
/// 181-190 against 290-482, 8 rows 350-352 against 577-1051; faer's GEMM
/// 537-558 from 2 to 16 rows). Its 32 MiB L3 holds the weights, and the
/// streaming pass's sums, loaded and stored every four rows of the
/// weight, bound it.
const STREAM_MAX_ROWS: usize = 8;

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// This thread's scratch buffer, at least `len` values long (kept between
/// calls: a kernel allocates only when it first needs more). Give it back
/// with [`give_scratch`]. A kernel takes it inline rather than through a
/// closure: a closure does not inherit the caller's `target_feature`, and
/// `mul_add` without FMA is a library call.
fn take_scratch(len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(std::cell::Cell::take);
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v
}

/// Returns the buffer of [`take_scratch`].
fn give_scratch(v: Vec<f32>) {
    SCRATCH.with(|s| s.set(v));
}

/// The row stride of a packed weight (see [`row_packed`]) is a multiple
/// of this many values: one AVX-512 vector, 64 bytes.
pub const PACK_LANES: usize = 16;

multiversion! {
    /// `y = x w + bias` for one row `x` (`k = x.len()`) and a packed `w`:
    /// `k` rows of `stride` values each, `stride` a multiple of
    /// [`PACK_LANES`] and at least `n = y.len()`, zero from column `n` on, and
    /// `bias` (when given) padded to `stride` values the same way. Every block
    /// of outputs then reads whole rows in place, with no tail copy and, when
    /// `w` starts on a 64-byte boundary, no load split across cache lines.
    /// This is [`crate::Linear`]'s batch-1 inference kernel; the bias is where
    /// the accumulators start.
    ///
    /// `w` may carry, after its `k` rows, the [`packed_tail_len`]`(k, n)`
    /// values of the tail block (see there): the AVX-512 kernel then takes
    /// the last few outputs as dot products, with fewer loads, and gives
    /// the same bits as without the block.
    ///
    /// With `relu`, `y = max(y, 0)`
    /// after the sums (a ReLU that follows the layer, applied on the way
    /// out).
    ///
    /// # Panics
    /// When the shapes do not hold as described.
    pub fn row_packed / row_packed_with (
        y: &mut [f32],
        x: &[f32],
        w: &[f32],
        stride: usize,
        bias: Option<&[f32]>,
        relu: bool
    )
    => { packed512, avx2::packed, portable::packed }; check {
        assert!(
            stride.is_multiple_of(PACK_LANES) && y.len() <= stride,
            "row_packed: stride"
        );
        assert!(w.len() >= x.len() * stride, "row_packed: w too short");
        assert!(bias.is_none_or(|b| b.len() >= stride), "row_packed: bias too short");
    }
}

mod row1;
mod stream;
pub(crate) mod vmath;

/// The length of the optional tail block of a packed weight (see
/// [`row_packed`]) for `k` inputs and `n` outputs: when `n % 16` is 1 to
/// 4 and either `n < 16` or the padded weight is larger than 8192 values
/// (beyond L1, where loads dominate), those last outputs' weights, one
/// output per row of `k.next_multiple_of(16)` values (zero past `k`);
/// else nothing.
///
/// ```
/// use nncore::kernels::packed_tail_len;
/// assert_eq!(packed_tail_len(784, 50), 2 * 784); // outputs 48 and 49
/// assert_eq!(packed_tail_len(100, 1), 112);
/// assert_eq!(packed_tail_len(784, 64), 0);
/// // In L1: rows padded to 64, or on half-vectors outputs 48 and 49.
/// let in_l1 = if nncore::kernels::half_width() { 2 * 112 } else { 0 };
/// assert_eq!(packed_tail_len(100, 50), in_l1);
/// ```
#[must_use]
pub fn packed_tail_len(k: usize, n: usize) -> usize {
    row1::tail_len(k, n)
}

/// Writes the tail block of [`packed_tail_len`]`(k, n)` values into `dst`
/// from the column-major `n x k` weight `w` (PyTorch's `out x in` weight
/// as [`crate::Param`] holds it).
///
/// # Panics
/// When `w` does not hold `k * n` values or `dst` is not
/// [`packed_tail_len`]`(k, n)` long.
pub fn pack_tail(dst: &mut [f32], w: &[f32], k: usize, n: usize) {
    assert_eq!(dst.len(), packed_tail_len(k, n), "pack_tail: dst");
    pack_tail_for(dst, w, k, n, half_width());
}

/// [`pack_tail`] for the given [`half_width`] (`dst` as long as the
/// block is for it).
fn pack_tail_for(dst: &mut [f32], w: &[f32], k: usize, n: usize, half: bool) {
    assert_eq!(w.len(), k * n, "pack_tail: w");
    let t = row1::tail_outputs(k, n, half);
    assert_eq!(
        dst.len(),
        t * k.next_multiple_of(PACK_LANES),
        "pack_tail: dst"
    );
    if t == 0 || k == 0 {
        return; // no block
    }
    let kp = k.next_multiple_of(PACK_LANES);
    for (j, row) in dst.chunks_exact_mut(kp).enumerate() {
        let out = n - t + j;
        for (p, v) in row.iter_mut().enumerate() {
            *v = if p < k { w[p * n + out] } else { 0.0 };
        }
    }
}

/// [`row1::packed`], after `row_packed_with`'s checks, at the CPU's
/// [`half_width`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
fn packed512(y: &mut [f32], x: &[f32], w: &[f32], stride: usize, bias: Option<&[f32]>, relu: bool) {
    // SAFETY: `row_packed_with` checked the shapes `row1::packed` needs.
    unsafe { row1::packed(y, x, w, stride, bias, relu, half_width()) }
}

/// [`row1::packed_rows`], after `rows_packed_with`'s checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn rows_packed512(
    y: &mut [f32],
    m: usize,
    x: &[f32],
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    relu: bool,
) {
    // SAFETY: `rows_packed_with` checked the shapes `row1::packed_rows` needs.
    unsafe { row1::packed_rows(y, m, x, w, stride, bias, relu, half_width()) }
}

/// `rows_packed` on the generic kernels: the bias copied into every row,
/// the rows' product added ([`rows_axpy`]), then the ReLU.
fn rows_packed_generic(
    variant: Variant,
    y: &mut [f32],
    m: usize,
    x: &[f32],
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    relu: bool,
) {
    let n = y.len() / m;
    let k = x.len() / m;
    let beta = match bias {
        Some(b) => {
            for (col, &v) in y.chunks_exact_mut(m).zip(&b[..n]) {
                col.fill(v);
            }
            1.0
        }
        None => 0.0,
    };
    rows_axpy_with(variant, y, m, x, m, k, w, stride, beta);
    if relu {
        map_in_place(y, crate::activation::relu);
    }
}

/// `y = x w + bias` (then `max(y, 0)` when `relu`) for a few rows: `x` the
/// column-major `m x k` input, `y` the column-major `m x n` output, `w`
/// and `bias` packed as for [`row_packed`]. On AVX-512 each weight vector
/// is loaded once per group of up to four rows, with every accumulator in
/// registers; elsewhere [`rows_axpy`] on the bias. [`crate::Linear`]'s
/// kernel for batches of 2 to 8.
///
/// # Panics
/// When the shapes do not hold as described.
pub fn rows_packed(
    y: &mut [f32],
    m: usize,
    x: &[f32],
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    relu: bool,
) {
    rows_packed_with(best(), y, m, x, w, stride, bias, relu);
}

/// [`row_packed`] (`m == 1`) or [`rows_packed`] without their shape
/// checks, the CPU's variant picked inline: for [`crate::Linear`], whose
/// packed layout and input checks already guarantee the shapes. A batch-1
/// call skips a call level, its argument shuffling and the checks (about
/// 70 of the 200 instructions a call spent outside the kernel's loops).
///
/// # Safety
/// The shapes [`rows_packed`] checks: `m > 0`, `y.len() == m * n`,
/// `x.len() == m * k`, `stride` a multiple of [`PACK_LANES`] and at least
/// `n`, `w` at least `k * stride` values (then, optionally, the tail block
/// of [`packed_tail_len`]), `bias` (when given) at least `stride` values.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn packed_unchecked(
    y: &mut [f32],
    m: usize,
    x: &[f32],
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    relu: bool,
) {
    debug_assert!(m > 0 && y.len().is_multiple_of(m) && x.len().is_multiple_of(m));
    debug_assert!(stride.is_multiple_of(PACK_LANES) && y.len() / m <= stride);
    debug_assert!(w.len() >= x.len() / m * stride);
    debug_assert!(bias.is_none_or(|b| b.len() >= stride));
    #[cfg(target_arch = "x86_64")]
    if best() == Variant::Avx512 {
        // SAFETY: AVX-512F (the best variant); the caller's shapes are
        // the ones the kernels need.
        unsafe {
            if m == 1 {
                packed512(y, x, w, stride, bias, relu);
            } else {
                rows_packed512(y, m, x, w, stride, bias, relu);
            }
        }
        return;
    }
    if m == 1 {
        row_packed(y, x, w, stride, bias, relu);
    } else {
        rows_packed(y, m, x, w, stride, bias, relu);
    }
}

/// The batch-1 product on one packed weight, picked once per weight (when
/// [`crate::Linear`] packs it) for its shape on this CPU: what
/// [`packed_unchecked`] computes for `m == 1`, the same sums in the same
/// order (the same bits), without deciding again at every call which
/// block widths, accumulator sets and dot-product tail the shape takes.
/// On AVX-512 a weight whose outputs fit one block (at most 64 past the
/// tail) gets a function made for its block width; other shapes and
/// CPUs call [`packed_unchecked`].
///
/// (SimpleNet's batch-1 forward spent about 280 of its 2,200
/// instructions, counted by single-stepping, on that choice and the
/// calls down to the kernel, twice per forward.)
#[derive(Clone, Copy)]
pub(crate) struct Row1Plan {
    run: Row1Fn,
    k: usize,
    n: usize,
    stride: usize,
    // The outputs past the blocks that go as dot products.
    tail: usize,
    // Whether `run` is made for this shape (else `row1_generic`, which
    // takes the output as a slice).
    own: bool,
}

/// A [`Row1Plan`]'s kernel: `(plan, y, x, w, bias or null, relu)`.
type Row1Fn = unsafe fn(&Row1Plan, *mut f32, *const f32, *const f32, *const f32, bool);

impl Row1Plan {
    /// The plan for a weight of `k` inputs and `n` outputs packed with row
    /// `stride` (and the tail block of [`packed_tail_len`]) on this CPU.
    pub(crate) fn new(k: usize, n: usize, stride: usize) -> Self {
        let generic = Self {
            run: row1_generic,
            k,
            n,
            stride,
            tail: 0,
            own: false,
        };
        #[cfg(target_arch = "x86_64")]
        if best() == Variant::Avx512 && k > 0 && n > 0 {
            let tail = row1::tail_outputs(k, n, half_width());
            if let Some(run) = row1::one_block(k, n, half_width()) {
                return Self {
                    run,
                    tail,
                    own: true,
                    ..generic
                };
            }
        }
        generic
    }

    /// `y = x w + bias` (then `max(y, 0)` when `relu`): `y` the `n`
    /// outputs, `x` the `k` inputs.
    ///
    /// # Safety
    /// `w` the packed weight this plan was made for (`k * stride` values
    /// and the tail block), `bias` (when given) `stride` values, made for
    /// this CPU's [`half_width`]; `x.len() == k`, `y.len() == n`.
    #[inline]
    pub(crate) unsafe fn run(
        &self,
        y: &mut [f32],
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        debug_assert!(x.len() == self.k && y.len() == self.n);
        debug_assert!(w.len() >= self.k * self.stride + packed_tail_len(self.k, self.n));
        debug_assert!(bias.is_none_or(|b| b.len() >= self.stride));
        let b = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: the caller's.
        unsafe { (self.run)(self, y.as_mut_ptr(), x.as_ptr(), w.as_ptr(), b, relu) }
    }
}

impl Row1Plan {
    /// [`Row1Plan::run`] into values not yet written; returns them
    /// written. The kernels made for one shape write through the pointer;
    /// the others are given zeros to write over.
    ///
    /// # Safety
    /// As [`Row1Plan::run`].
    #[inline]
    pub(crate) unsafe fn run_uninit<'y>(
        &self,
        y: &'y mut [MaybeUninit<f32>],
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
    ) -> &'y mut [f32] {
        debug_assert!(x.len() == self.k && y.len() == self.n);
        debug_assert!(w.len() >= self.k * self.stride + packed_tail_len(self.k, self.n));
        debug_assert!(bias.is_none_or(|b| b.len() >= self.stride));
        if !self.own {
            y.fill(MaybeUninit::new(0.0));
        }
        let b = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: the caller's; every output is written (the one-shape
        // kernels store all `n`, the generic one writes over zeros).
        unsafe {
            (self.run)(self, y.as_mut_ptr().cast(), x.as_ptr(), w.as_ptr(), b, relu);
            &mut *(std::ptr::from_mut(y) as *mut [f32])
        }
    }
}

/// [`Row1Plan`]'s kernel for the shapes without one of their own.
///
/// # Safety
/// As [`Row1Plan::run`].
unsafe fn row1_generic(
    p: &Row1Plan,
    y: *mut f32,
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    relu: bool,
) {
    // SAFETY: the plan's shapes, which the caller guarantees.
    unsafe {
        let y = std::slice::from_raw_parts_mut(y, p.n);
        let x = std::slice::from_raw_parts(x, p.k);
        let w = std::slice::from_raw_parts(w, p.k * p.stride + packed_tail_len(p.k, p.n));
        let bias = (!bias.is_null()).then(|| std::slice::from_raw_parts(bias, p.stride));
        packed_unchecked(y, 1, x, w, p.stride, bias, relu);
    }
}

/// What [`row_packed`] (`m == 1`) and [`rows_packed`] compute on the
/// packed copy, in the same order, so the same bits, on `W^T` as
/// [`crate::Linear`] holds it: `k = x.len() / m` rows of `n = y.len() /
/// m` values, `stride` apart (any `stride >= n`, no padding), and a
/// bias of `n` values. Only the AVX-512 kernels read unpadded rows (the
/// last vector of each block masked): on other CPUs this returns `false`
/// and writes nothing, and the caller pads a copy instead.
///
/// # Panics
/// When the shapes do not hold as described.
pub fn rows_unpadded(
    y: &mut [f32],
    m: usize,
    x: &[f32],
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    relu: bool,
) -> bool {
    assert!(
        m > 0 && y.len().is_multiple_of(m) && x.len().is_multiple_of(m),
        "rows_unpadded: m"
    );
    let (n, k) = (y.len() / m, x.len() / m);
    assert!(stride >= n, "rows_unpadded: stride");
    assert!(
        k == 0 || w.len() >= (k - 1) * stride + n,
        "rows_unpadded: w too short"
    );
    assert!(
        bias.is_none_or(|b| b.len() >= n),
        "rows_unpadded: bias too short"
    );
    #[cfg(target_arch = "x86_64")]
    if best() == Variant::Avx512 {
        // SAFETY: AVX-512F (the best variant); the shapes were checked.
        unsafe { row1::unpadded_rows(y, m, x, w, stride, bias, relu, half_width()) };
        return true;
    }
    false
}

/// [`rows_packed`] with a chosen variant (tests and benches).
///
/// # Panics
/// As [`rows_packed`], and when the CPU cannot run `variant`.
pub fn rows_packed_with(
    variant: Variant,
    y: &mut [f32],
    m: usize,
    x: &[f32],
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    relu: bool,
) {
    assert!(
        m > 0 && y.len().is_multiple_of(m) && x.len().is_multiple_of(m),
        "rows_packed: m"
    );
    let (n, k) = (y.len() / m, x.len() / m);
    assert!(
        stride.is_multiple_of(PACK_LANES) && n <= stride,
        "rows_packed: stride"
    );
    assert!(w.len() >= k * stride, "rows_packed: w too short");
    assert!(
        bias.is_none_or(|b| b.len() >= stride),
        "rows_packed: bias too short"
    );
    match variant {
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => {
            assert!(supports(Variant::Avx512), "this CPU lacks AVX-512F or FMA");
            // SAFETY: the CPU supports AVX-512F (checked above).
            unsafe { rows_packed512(y, m, x, w, stride, bias, relu) }
        }
        _ => rows_packed_generic(variant, y, m, x, w, stride, bias, relu),
    }
}

multiversion! {
    /// `y[j] = beta * y[j] + dot(a, b[j * col_stride .. j * col_stride + k])`
    /// with `k = a.len()`: a row times a matrix whose columns are contiguous.
    ///
    /// # Panics
    /// When `b` is too short for `y.len()` columns of `a.len()` values.
    pub fn row_dot / row_dot_with (y: &mut [f32], a: &[f32], b: &[f32], col_stride: usize, beta: f32)
    => dot; check {
        if let Some(last) = y.len().checked_sub(1) {
            assert!(b.len() >= last * col_stride + a.len(), "row_dot: b too short");
        }
    }
}

macro_rules! bodies {
    ($axpy:ident, $block:ident, $dot:ident, $rows:ident, $rows_block:ident, $fma:tt,
     w1 = $w1:literal, w2 = $w2:literal, w4 = $w4:literal) => {
        #[inline(always)]
        fn $block<const W: usize>(
            y: &mut [f32],
            a: &[f32],
            b: &[f32],
            row_stride: usize,
            j0: usize,
            beta: f32,
        ) {
            let valid = (y.len() - j0).min(W);
            let load = |start: usize| -> [f32; W] {
                if start + W <= b.len() {
                    let mut t = [0.0f32; W];
                    t.copy_from_slice(&b[start..start + W]);
                    t
                } else {
                    let mut t = [0.0f32; W];
                    let avail = b.len().saturating_sub(start).min(W);
                    t[..avail].copy_from_slice(&b[start..start + avail]);
                    t
                }
            };
            let mut acc0 = [0.0f32; W];
            let mut acc1 = [0.0f32; W];
            let k = a.len();
            // Rows whose block lies wholly inside `b` are read in place; the
            // last few, whose block would run past the end, through a
            // zero-padded copy.
            let direct = if b.len() >= j0 + W {
                ((b.len() - j0 - W) / row_stride.max(1) + 1).min(k)
            } else {
                0
            };
            let mut p = 0;
            while p + 2 <= direct {
                let s0 = p * row_stride + j0;
                let s1 = s0 + row_stride;
                let r0: &[f32; W] = b[s0..s0 + W].try_into().expect("in bounds");
                let r1: &[f32; W] = b[s1..s1 + W].try_into().expect("in bounds");
                let (a0, a1) = (a[p], a[p + 1]);
                for l in 0..W {
                    acc0[l] = bodies!(@madd $fma, r0[l], a0, acc0[l]);
                    acc1[l] = bodies!(@madd $fma, r1[l], a1, acc1[l]);
                }
                p += 2;
            }
            while p < k {
                let r0 = load(p * row_stride + j0);
                for l in 0..W {
                    acc0[l] = bodies!(@madd $fma, r0[l], a[p], acc0[l]);
                }
                p += 1;
            }
            let out = &mut y[j0..j0 + valid];
            if beta == 0.0 {
                for (l, o) in out.iter_mut().enumerate() {
                    *o = acc0[l] + acc1[l];
                }
            } else {
                for (l, o) in out.iter_mut().enumerate() {
                    *o = beta * *o + (acc0[l] + acc1[l]);
                }
            }
        }

        #[inline(always)]
        pub(in crate::kernels) fn $axpy(y: &mut [f32], a: &[f32], b: &[f32], row_stride: usize, beta: f32) {
            // Blocks of up to `w1` outputs, two sets of accumulators each:
            // 8 vector registers, whatever the vector width.
            const W: usize = $w1;
            let n = y.len();
            if n >= crate::kernels::STREAM_MIN_OUTPUTS
                && a.len().saturating_mul(row_stride) >= crate::kernels::STREAM_MIN_ELEMENTS
            {
                return stream(y, a, b, row_stride, beta);
            }
            let mut j0 = 0;
            while j0 < n {
                let left = n - j0;
                if left > W / 2 {
                    $block::<W>(y, a, b, row_stride, j0, beta);
                    j0 += W;
                } else if left > W / 4 {
                    $block::<{ W / 2 }>(y, a, b, row_stride, j0, beta);
                    j0 += W / 2;
                } else {
                    $block::<{ W / 4 }>(y, a, b, row_stride, j0, beta);
                    j0 += W / 4;
                }
            }
        }

        /// [`row_axpy`] for a weight that streams from memory: four rows
        /// of `b` at a time, each read front to back over all `n` outputs
        /// (which stay in L1), so that the hardware prefetchers follow four
        /// sequential streams. The blocked kernel walks all `k` rows for
        /// every block of outputs instead, one access per row, each in
        /// another 4 KiB page, which no prefetcher follows.
        #[inline(always)]
        fn stream(y: &mut [f32], a: &[f32], b: &[f32], row_stride: usize, beta: f32) {
            let n = y.len();
            if beta == 0.0 {
                y.fill(0.0);
            } else if beta != 1.0 {
                y.iter_mut().for_each(|v| *v *= beta);
            }
            let k = a.len();
            let row = |p: usize| &b[p * row_stride..p * row_stride + n];
            let mut p = 0;
            while p + 4 <= k {
                let (r0, r1, r2, r3) = (row(p), row(p + 1), row(p + 2), row(p + 3));
                let (x0, x1, x2, x3) = (a[p], a[p + 1], a[p + 2], a[p + 3]);
                for ((((o, &w0), &w1), &w2), &w3) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                    let t = bodies!(@madd $fma, w0, x0, *o);
                    let t = bodies!(@madd $fma, w1, x1, t);
                    let t = bodies!(@madd $fma, w2, x2, t);
                    *o = bodies!(@madd $fma, w3, x3, t);
                }
                p += 4;
            }
            while p < k {
                let (r0, x0) = (row(p), a[p]);
                for (o, &w0) in y.iter_mut().zip(r0) {
                    *o = bodies!(@madd $fma, w0, x0, *o);
                }
                p += 1;
            }
        }

        /// [`rows_axpy`] for a weight that streams from memory: as
        /// `stream`, four rows of `b` at a time read front to back, used
        /// by every row of `a` while they sit in L1 (4 rows of 1024
        /// values are 16 KiB). The sums go to a row-major scratch of the
        /// thread (`y` is column-major), copied into `y` at the end.
        #[inline(always)]
        fn stream_rows(
            y: &mut [f32],
            m: usize,
            a: &[f32],
            lda: usize,
            k: usize,
            b: &[f32],
            row_stride: usize,
            beta: f32,
        ) {
            let n = y.len() / m;
            let mut scratch = crate::kernels::take_scratch(m * n);
            {
                let t = &mut scratch[..m * n];
                // t[r * n + j] is y[r + j * m].
                for (r, tr) in t.chunks_exact_mut(n).enumerate() {
                    for (j, o) in tr.iter_mut().enumerate() {
                        *o = if beta == 0.0 { 0.0 } else { beta * y[r + j * m] };
                    }
                }
                let row = |p: usize| &b[p * row_stride..p * row_stride + n];
                let mut p = 0;
                const L: usize = 16;
                let full = n / L * L;
                while p + 4 <= k {
                    let (r0, r1, r2, r3) = (row(p), row(p + 1), row(p + 2), row(p + 3));
                    let mut xs = [[0.0f32; 4]; crate::kernels::STREAM_MAX_ROWS];
                    for (r, xr) in xs.iter_mut().enumerate().take(m) {
                        *xr = [a[r + p * lda], a[r + (p + 1) * lda], a[r + (p + 2) * lda], a[r + (p + 3) * lda]];
                    }
                    // Each block of 16 weights of the four rows is loaded
                    // once, for every row of `a`.
                    let mut j = 0;
                    while j < full {
                        let w = |r: &[f32]| -> [f32; L] { r[j..j + L].try_into().expect("in bounds") };
                        let (w0, w1, w2, w3) = (w(r0), w(r1), w(r2), w(r3));
                        for (r, xr) in xs.iter().enumerate().take(m) {
                            let o: &mut [f32; L] = (&mut t[r * n + j..r * n + j + L]).try_into().expect("in bounds");
                            for l in 0..L {
                                let s = bodies!(@madd $fma, w0[l], xr[0], o[l]);
                                let s = bodies!(@madd $fma, w1[l], xr[1], s);
                                let s = bodies!(@madd $fma, w2[l], xr[2], s);
                                o[l] = bodies!(@madd $fma, w3[l], xr[3], s);
                            }
                        }
                        j += L;
                    }
                    for (r, xr) in xs.iter().enumerate().take(m) {
                        for j in full..n {
                            let o = &mut t[r * n + j];
                            let s = bodies!(@madd $fma, r0[j], xr[0], *o);
                            let s = bodies!(@madd $fma, r1[j], xr[1], s);
                            let s = bodies!(@madd $fma, r2[j], xr[2], s);
                            *o = bodies!(@madd $fma, r3[j], xr[3], s);
                        }
                    }
                    p += 4;
                }
                while p < k {
                    let r0 = row(p);
                    for (r, tr) in t.chunks_exact_mut(n).enumerate() {
                        let x0 = a[r + p * lda];
                        for (o, &w0) in tr.iter_mut().zip(r0) {
                            *o = bodies!(@madd $fma, w0, x0, *o);
                        }
                    }
                    p += 1;
                }
                for (r, tr) in t.chunks_exact(n).enumerate() {
                    for (j, &v) in tr.iter().enumerate() {
                        y[r + j * m] = v;
                    }
                }
            }
            crate::kernels::give_scratch(scratch);
        }

        /// `M` rows of `a` times `b` for outputs `j0..j0 + W`: `M x W`
        /// accumulators in registers, each row of `b` loaded once for
        /// all `M` rows. `op(a)` element `(r, p)` is at `a[r + p * lda]`.
        ///
        /// The accumulators are `M` separate arrays, not one `[[f32; W];
        /// M]`: LLVM keeps separate arrays in registers, but stored the
        /// two-dimensional one to the stack at every step.
        #[inline(always)]
        fn $rows_block<const M: usize, const W: usize>(
            y: &mut [f32],
            ldy: usize,
            a: &[f32],
            lda: usize,
            k: usize,
            b: &[f32],
            row_stride: usize,
            (j0, n): (usize, usize),
            beta: f32,
        ) {
            let valid = n.saturating_sub(j0).min(W);
            let (mut c0, mut c1, mut c2, mut c3) = ([0.0f32; W], [0.0f32; W], [0.0f32; W], [0.0f32; W]);
            // Rows of `b` whose block lies inside the buffer are read in
            // place, the last few through a zero-padded copy.
            let direct = if b.len() >= j0 + W {
                ((b.len() - j0 - W) / row_stride.max(1) + 1).min(k)
            } else {
                0
            };
            let mut step = |row: &[f32; W], col: &[f32]| {
                let x0 = col[0];
                for l in 0..W {
                    c0[l] = bodies!(@madd $fma, row[l], x0, c0[l]);
                }
                if M > 1 {
                    let x1 = col[1];
                    for l in 0..W {
                        c1[l] = bodies!(@madd $fma, row[l], x1, c1[l]);
                    }
                }
                if M > 2 {
                    let x2 = col[2];
                    for l in 0..W {
                        c2[l] = bodies!(@madd $fma, row[l], x2, c2[l]);
                    }
                }
                if M > 3 {
                    let x3 = col[3];
                    for l in 0..W {
                        c3[l] = bodies!(@madd $fma, row[l], x3, c3[l]);
                    }
                }
            };
            for p in 0..direct {
                let start = p * row_stride + j0;
                let row: &[f32; W] = b[start..start + W].try_into().expect("in bounds");
                step(row, &a[p * lda..p * lda + M]);
            }
            for p in direct..k {
                let start = p * row_stride + j0;
                let mut row = [0.0f32; W];
                let avail = b.len().saturating_sub(start).min(W);
                row[..avail].copy_from_slice(&b[start..start + avail]);
                step(&row, &a[p * lda..p * lda + M]);
            }
            for (r, acc) in [&c0, &c1, &c2, &c3].into_iter().take(M).enumerate() {
                for (l, v) in acc.iter().enumerate().take(valid) {
                    let o = &mut y[r + (j0 + l) * ldy];
                    *o = if beta == 0.0 { *v } else { beta * *o + v };
                }
            }
        }

        /// Rows `r0..r0 + M` of the small product, all output blocks.
        #[inline(always)]
        fn rows_group<const M: usize, const W: usize>(
            y: &mut [f32],
            ldy: usize,
            a: &[f32],
            lda: usize,
            k: usize,
            b: &[f32],
            row_stride: usize,
            n: usize,
            beta: f32,
        ) {
            let mut j0 = 0;
            while j0 < n {
                $rows_block::<M, W>(y, ldy, a, lda, k, b, row_stride, (j0, n), beta);
                j0 += W;
            }
        }

        /// `y = beta * y + a * b` for a few rows (`m = ldy`): `a` column-
        /// major `m x k` with leading dimension `lda`, `b` with rows of
        /// `n` contiguous values `row_stride` apart, `y` column-major
        /// `m x n`. Rows go in groups of 4, then one group of the 1 to 3
        /// left.
        #[inline(always)]
        pub(in crate::kernels) fn $rows(
            y: &mut [f32],
            m: usize,
            a: &[f32],
            lda: usize,
            k: usize,
            b: &[f32],
            row_stride: usize,
            beta: f32,
        ) {
            let n = if m == 0 { 0 } else { y.len() / m };
            if (2..=crate::kernels::STREAM_MAX_ROWS).contains(&m)
                && !crate::kernels::half_width()
                && n >= crate::kernels::STREAM_MIN_OUTPUTS
                && k.saturating_mul(row_stride) >= crate::kernels::STREAM_MIN_ELEMENTS
            {
                return stream_rows(y, m, a, lda, k, b, row_stride, beta);
            }
            let mut r0 = 0;
            while r0 < m {
                let left = m - r0;
                // Row r0 of `y` and of `op(a)` start the sub-problem.
                let (ys, as_) = (&mut y[r0..], a.get(r0..).unwrap_or(&[]));
                // (Groups of 8 rows measured slower than two of 4: their
                // accumulators do not stay in registers.)
                let g = if left >= 4 {
                    rows_group::<4, $w4>(ys, m, as_, lda, k, b, row_stride, n, beta);
                    4
                } else if left == 3 {
                    rows_group::<3, $w4>(ys, m, as_, lda, k, b, row_stride, n, beta);
                    3
                } else if left >= 2 {
                    rows_group::<2, $w2>(ys, m, as_, lda, k, b, row_stride, n, beta);
                    2
                } else {
                    rows_group::<1, $w2>(ys, m, as_, lda, k, b, row_stride, n, beta);
                    1
                };
                r0 += g;
            }
        }

        #[inline(always)]
        pub(in crate::kernels) fn $dot(y: &mut [f32], a: &[f32], b: &[f32], col_stride: usize, beta: f32) {
            let k = a.len();
            for (j, yj) in y.iter_mut().enumerate() {
                let col = &b[j * col_stride..j * col_stride + k];
                // Sixteen partial sums let the loop vectorize without
                // reassociating floats behind the programmer's back.
                let mut acc = [0.0f32; 16];
                let chunks = k / 16;
                for c in 0..chunks {
                    for l in 0..16 {
                        let i = c * 16 + l;
                        acc[l] = bodies!(@madd $fma, a[i], col[i], acc[l]);
                    }
                }
                let mut s: f32 = acc.iter().sum();
                for i in chunks * 16..k {
                    s = bodies!(@madd $fma, a[i], col[i], s);
                }
                *yj = if beta == 0.0 { s } else { beta * *yj + s };
            }
        }

        /// Outputs `j0..j0 + W` of a packed row product, `S` (2 or 4)
        /// sets of accumulators, the first starting from the bias. The
        /// rows go by `S` through `chunks_exact`, so the loop carries no
        /// bounds check (`j0 + W <= stride` is checked once).
        #[inline(always)]
        fn packed_block<const W: usize, const S: usize>(
            y: &mut [f32],
            x: &[f32],
            w: &[f32],
            stride: usize,
            bias: Option<&[f32]>,
            j0: usize,
        ) {
            assert!(j0 + W <= stride);
            let (mut c0, mut c1, mut c2, mut c3) = ([0.0f32; W], [0.0f32; W], [0.0f32; W], [0.0f32; W]);
            if let Some(b) = bias {
                c0.copy_from_slice(&b[j0..j0 + W]);
            }
            let k = x.len();
            let block = |row: &[f32]| -> [f32; W] {
                let mut t = [0.0f32; W];
                t.copy_from_slice(&row[j0..j0 + W]);
                t
            };
            let full = k / S * S;
            let groups = w[..full * stride].chunks_exact(S * stride).zip(x[..full].chunks_exact(S));
            for (rows, xs) in groups {
                let (r0, rest) = rows.split_at(stride);
                let (r0, r1) = (block(r0), block(rest));
                for l in 0..W {
                    c0[l] = bodies!(@madd $fma, r0[l], xs[0], c0[l]);
                    c1[l] = bodies!(@madd $fma, r1[l], xs[1], c1[l]);
                }
                if S > 2 {
                    let (r2, r3) = (block(&rest[stride..]), block(&rest[2 * stride..]));
                    for l in 0..W {
                        c2[l] = bodies!(@madd $fma, r2[l], xs[2], c2[l]);
                        c3[l] = bodies!(@madd $fma, r3[l], xs[3], c3[l]);
                    }
                }
            }
            for (row, &xp) in w[full * stride..k * stride].chunks_exact(stride).zip(&x[full..]) {
                let r0 = block(row);
                for l in 0..W {
                    c0[l] = bodies!(@madd $fma, r0[l], xp, c0[l]);
                }
            }
            let valid = y.len().saturating_sub(j0).min(W);
            for (l, o) in y[j0..j0 + valid].iter_mut().enumerate() {
                *o = if S > 2 { (c0[l] + c1[l]) + (c2[l] + c3[l]) } else { c0[l] + c1[l] };
            }
        }

        /// `y = x w + bias` for one row `x` and a packed `w`: `x.len()`
        /// rows of `stride` values (a multiple of 16, zero past
        /// `y.len()`), so that every block reads whole rows in place.
        #[inline(always)]
        pub(in crate::kernels) fn packed(
            y: &mut [f32],
            x: &[f32],
            w: &[f32],
            stride: usize,
            bias: Option<&[f32]>,
            relu: bool,
        ) {
            packed_sums(y, x, w, stride, bias);
            if relu {
                // As `ReLU`: NaN and -0.0 pass through.
                for v in y.iter_mut() {
                    if *v < 0.0 {
                        *v = 0.0;
                    }
                }
            }
        }

        #[inline(always)]
        fn packed_sums(y: &mut [f32], x: &[f32], w: &[f32], stride: usize, bias: Option<&[f32]>) {
            const W: usize = $w1;
            let n = y.len();
            let mut j0 = 0;
            while j0 < n {
                let (room, left) = (stride - j0, n - j0);
                if room >= W && left > W / 2 {
                    packed_block::<W, 2>(y, x, w, stride, bias, j0);
                    j0 += W;
                } else if room >= W / 2 && left > W / 4 {
                    packed_block::<{ W / 2 }, 2>(y, x, w, stride, bias, j0);
                    j0 += W / 2;
                } else {
                    // One vector of outputs: four sets of accumulators
                    // hide the multiply-add latency.
                    packed_block::<{ W / 4 }, 4>(y, x, w, stride, bias, j0);
                    j0 += W / 4;
                }
            }
        }
    };
    (@madd fma, $x:expr, $y:expr, $acc:expr) => { $x.mul_add($y, $acc) };
    (@madd nofma, $x:expr, $y:expr, $acc:expr) => { $acc + $x * $y };
}

// Widths (outputs per block) keep the accumulators in registers: 32
// vector registers of 16 lanes with AVX-512, 16 of 8 with AVX2, 16 of 4
// (SSE2) for the portable build.
#[allow(clippy::assign_op_pattern, clippy::needless_range_loop)]
mod generated {
    // Its batch-1 `packed` is replaced by `row1::packed` (intrinsics).
    #[allow(dead_code)]
    pub(super) mod avx512 {
        bodies!(
            axpy,
            block,
            dot,
            rows,
            rows_block,
            fma,
            w1 = 64,
            w2 = 64,
            w4 = 64
        );
    }
    pub(super) mod avx2 {
        bodies!(
            axpy,
            block,
            dot,
            rows,
            rows_block,
            fma,
            w1 = 32,
            w2 = 32,
            w4 = 16
        );
    }
    pub(super) mod portable {
        bodies!(
            axpy,
            block,
            dot,
            rows,
            rows_block,
            nofma,
            w1 = 16,
            w2 = 16,
            w4 = 8
        );
    }
}
use generated::{avx2, avx512, portable};

/// [`rows_axpy`] on AVX-512: up to [`stream::MAX_ROWS`] rows on a weight
/// that streams from L3 or memory (as for [`STREAM_MAX_ROWS`]) by
/// [`stream::rows`], anything else by the blocked kernel (or with more
/// rows, on CPUs without [`half_width`], the generic streaming pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
fn rows512(
    y: &mut [f32],
    m: usize,
    a: &[f32],
    lda: usize,
    k: usize,
    b: &[f32],
    row_stride: usize,
    beta: f32,
) {
    let n = y.len() / m;
    if (2..=stream::MAX_ROWS).contains(&m)
        && n >= STREAM_MIN_OUTPUTS
        && k.saturating_mul(row_stride) >= STREAM_MIN_ELEMENTS
    {
        return stream::rows(y, m, a, lda, k, b, row_stride, beta);
    }
    avx512::rows(y, m, a, lda, k, b, row_stride, beta);
}

multiversion! {
    /// `y = beta * y + a * b` for a small number of rows `m`: `y` is the
    /// column-major `m x n` output (`n = y.len() / m`), `a` the column-major
    /// `m x k` left operand with leading dimension `lda` (element `(r, p)` at
    /// `a[r + p * lda]`), and `b` holds `k` rows of `n` contiguous values,
    /// `row_stride` apart (a linear layer's `W^T`). Each row of `b` is loaded
    /// once per group of up to 4 rows of `a` and used from registers: the
    /// small-batch path between [`row_axpy`] (one row) and the packed GEMM.
    ///
    /// # Panics
    /// When a slice is too short for the shapes given, or `y.len()` is not a
    /// multiple of `m`.
    pub fn rows_axpy / rows_axpy_with (
        y: &mut [f32],
        m: usize,
        a: &[f32],
        lda: usize,
        k: usize,
        b: &[f32],
        row_stride: usize,
        beta: f32
    )
    => { rows512, avx2::rows, portable::rows }; check {
        assert!(
            m > 0 && y.len().is_multiple_of(m),
            "rows_axpy: y is not m x n"
        );
        assert!(lda >= m, "rows_axpy: lda < m");
        let n = y.len() / m;
        if let Some(lp) = k.checked_sub(1) {
            assert!(a.len() >= lp * lda + m, "rows_axpy: a too short");
            assert!(b.len() >= lp * row_stride + n, "rows_axpy: b too short");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_matches_a_plain_loop() {
        // The last two stream the weight (n >= 256, k * stride >= 2^18), one
        // with k not a multiple of 4.
        for &(k, n, stride_pad) in &[
            (100, 50, 0),
            (7, 3, 2),
            (1, 1, 0),
            (33, 17, 5),
            (0, 4, 0),
            (300, 1000, 3),
            (259, 1024, 0),
        ] {
            let a: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
            // Row-contiguous: k rows of n, stride n + pad.
            let rs = n + stride_pad;
            let b: Vec<f32> = (0..k * rs + n).map(|i| (i as f32 * 0.11).cos()).collect();
            let expected: Vec<f32> = (0..n)
                .map(|j| 0.5 * 1.0 + (0..k).map(|p| a[p] * b[p * rs + j]).sum::<f32>())
                .collect();
            // Column-contiguous: n columns of k, stride k + pad.
            let cs = k + stride_pad;
            let b2: Vec<f32> = (0..n * cs + k).map(|i| (i as f32 * 0.07).sin()).collect();
            let expected2: Vec<f32> = (0..n)
                .map(|j| 0.5 + (0..k).map(|p| a[p] * b2[j * cs + p]).sum::<f32>())
                .collect();
            for v in available_variants() {
                let mut y = vec![1.0f32; n];
                row_axpy_with(v, &mut y, &a, &b, rs, 0.5);
                for (g, e) in y.iter().zip(&expected) {
                    assert!((g - e).abs() < 1e-4, "{v:?} axpy k={k} n={n}: {g} vs {e}");
                }
                let mut y = vec![1.0f32; n];
                row_dot_with(v, &mut y, &a, &b2, cs, 0.5);
                for (g, e) in y.iter().zip(&expected2) {
                    assert!((g - e).abs() < 1e-4, "{v:?} dot k={k} n={n}: {g} vs {e}");
                }
                let mut y = vec![f32::NAN; n];
                row_axpy_with(v, &mut y, &a, &b, rs, 0.0);
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "beta = 0 ignores old values"
                );
            }
        }
    }

    #[test]
    fn the_packed_row_kernel_matches_a_plain_loop_for_every_variant() {
        for k in [0usize, 1, 2, 3, 5, 50, 100, 101] {
            for n in [1usize, 2, 10, 15, 16, 17, 33, 50, 64, 65, 100, 130] {
                for extra in [0usize, 16] {
                    let stride = n.next_multiple_of(PACK_LANES) + extra;
                    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
                    let mut w = vec![0.0f32; k * stride];
                    for p in 0..k {
                        for j in 0..n {
                            w[p * stride + j] = ((p * n + j) as f32 * 0.11).cos();
                        }
                    }
                    let mut bias = vec![0.0f32; stride];
                    for (j, b) in bias.iter_mut().take(n).enumerate() {
                        *b = j as f32 * 0.25 - 1.0;
                    }
                    for v in available_variants() {
                        for (with_bias, relu) in [(false, false), (true, false), (true, true)] {
                            let b = with_bias.then_some(&bias[..]);
                            // Outputs inside a larger buffer: nothing past
                            // them may be written.
                            let mut buf = vec![f32::NAN; n + 16];
                            buf[n..].fill(7.0);
                            row_packed_with(v, &mut buf[..n], &x, &w, stride, b, relu);
                            let (y, after) = buf.split_at(n);
                            assert!(after.iter().all(|&a| a == 7.0), "{v:?} n={n}: wrote past y");
                            for (j, g) in y.iter().enumerate() {
                                let mut e = if with_bias { bias[j] } else { 0.0 }
                                    + (0..k).map(|p| x[p] * w[p * stride + j]).sum::<f32>();
                                if relu {
                                    e = crate::activation::relu(e);
                                }
                                assert!(
                                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                    "{v:?} k={k} n={n} stride={stride} bias={with_bias} relu={relu} j={j}: {g} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_packed_rows_kernel_matches_a_plain_loop_for_every_variant() {
        for m in 1usize..=9 {
            for k in [0usize, 1, 3, 50, 100] {
                for n in [1usize, 10, 16, 17, 33, 50, 64, 65, 130] {
                    let stride = n.next_multiple_of(PACK_LANES);
                    let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                    let mut w = vec![0.0f32; k * stride];
                    for p in 0..k {
                        for j in 0..n {
                            w[p * stride + j] = ((p * n + j) as f32 * 0.11).cos();
                        }
                    }
                    let bias: Vec<f32> = (0..stride)
                        .map(|j| if j < n { j as f32 * 0.25 - 1.0 } else { 0.0 })
                        .collect();
                    for v in available_variants() {
                        for (with_bias, relu) in [(false, false), (true, false), (true, true)] {
                            let b = with_bias.then_some(&bias[..]);
                            let mut buf = vec![f32::NAN; m * n + 16];
                            buf[m * n..].fill(7.0);
                            rows_packed_with(v, &mut buf[..m * n], m, &x, &w, stride, b, relu);
                            let (y, after) = buf.split_at(m * n);
                            assert!(after.iter().all(|&a| a == 7.0), "{v:?}: wrote past y");
                            for r in 0..m {
                                for j in 0..n {
                                    let mut e = if with_bias { bias[j] } else { 0.0 }
                                        + (0..k)
                                            .map(|p| x[r + p * m] * w[p * stride + j])
                                            .sum::<f32>();
                                    if relu {
                                        e = crate::activation::relu(e);
                                    }
                                    let g = y[r + j * m];
                                    assert!(
                                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                        "{v:?} m={m} k={k} n={n} bias={with_bias} relu={relu} ({r}, {j}): {g} vs {e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// An input of `m` rows (column-major), a weight of `k x n` values as
    /// it is and packed (rows padded to `stride`), and its bias both ways.
    struct PackedCase {
        stride: usize,
        x: Vec<f32>,
        raw: Vec<f32>,
        rows: Vec<f32>,
        raw_bias: Vec<f32>,
        bias: Vec<f32>,
    }

    impl PackedCase {
        fn new(m: usize, k: usize, n: usize) -> Self {
            let stride = n.next_multiple_of(PACK_LANES);
            let raw: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut rows = vec![0.0f32; k * stride];
            for p in 0..k {
                rows[p * stride..p * stride + n].copy_from_slice(&raw[p * n..(p + 1) * n]);
            }
            let raw_bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
            let mut bias = raw_bias.clone();
            bias.resize(stride, 0.0);
            Self {
                stride,
                x: (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect(),
                raw,
                rows,
                raw_bias,
                bias,
            }
        }

        /// The packed and the raw bias, or neither.
        fn biases(&self, with_bias: bool) -> (Option<&[f32]>, Option<&[f32]>) {
            if with_bias {
                (Some(&self.bias[..]), Some(&self.raw_bias[..]))
            } else {
                (None, None)
            }
        }
    }

    /// A batch-1 plan gives what `packed_unchecked` gives on the same
    /// packed weight, bit for bit, for every kind of shape it picks a
    /// kernel for (one block of half or whole vectors, with and without
    /// a dot-product tail, only a tail, several blocks), and writes
    /// nothing past its outputs.
    #[test]
    fn a_row1_plan_gives_the_packed_kernels_bits() {
        for k in [1usize, 3, 8, 17, 50, 100, 300] {
            for n in [1usize, 2, 4, 5, 8, 10, 16, 17, 33, 48, 50, 64, 66, 100, 130] {
                let c = PackedCase::new(1, k, n);
                let mut w = c.rows.clone();
                w.resize(k * c.stride + packed_tail_len(k, n), f32::NAN);
                pack_tail(&mut w[k * c.stride..], &c.raw, k, n);
                let plan = Row1Plan::new(k, n, c.stride);
                for (with_bias, relu) in [(false, false), (true, false), (true, true)] {
                    let (b, _) = c.biases(with_bias);
                    let mut want = vec![f32::NAN; n];
                    // SAFETY: the packed layout `packed_unchecked` takes.
                    unsafe { packed_unchecked(&mut want, 1, &c.x, &w, c.stride, b, relu) };
                    let mut got = vec![7.0f32; n + 16];
                    // SAFETY: the layout the plan was made for.
                    unsafe { plan.run(&mut got[..n], &c.x, &w, b, relu) };
                    let at = format!("k={k} n={n} bias={with_bias} relu={relu}");
                    assert!(got[n..].iter().all(|&v| v == 7.0), "{at}: wrote past y");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got[..n]), bits(&want), "{at}");
                }
            }
        }
    }

    /// The unpadded kernels give the packed kernels' bits, on a weight and
    /// bias of exactly `k * n` and `n` values; one row gives the same bits
    /// with the packed weight's tail block as without.
    #[test]
    fn the_unpadded_kernels_give_the_packed_kernels_bits() {
        for m in (1usize..=9).chain([16]) {
            for k in [0usize, 1, 3, 16, 37, 50, 300] {
                for n in [1usize, 3, 4, 10, 16, 17, 20, 33, 50, 64, 65, 130] {
                    let c = PackedCase::new(m, k, n);
                    let (stride, x, raw, w) = (c.stride, &c.x, &c.raw, &c.rows);
                    for (with_bias, relu) in [(false, false), (true, false), (true, true)] {
                        let (b, rb) = c.biases(with_bias);
                        let mut want = vec![0.0f32; m * n];
                        if m == 1 {
                            row_packed(&mut want, x, w, stride, b, relu);
                            let mut with_tail = w.clone();
                            with_tail.resize(w.len() + packed_tail_len(k, n), f32::NAN);
                            pack_tail(&mut with_tail[w.len()..], raw, k, n);
                            let mut dot = vec![f32::NAN; n];
                            row_packed(&mut dot, x, &with_tail, stride, b, relu);
                            let bits =
                                |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                            assert_eq!(bits(&dot), bits(&want), "tail block, k={k} n={n}");
                        } else {
                            rows_packed(&mut want, m, x, w, stride, b, relu);
                        }
                        let mut got = vec![f32::NAN; m * n];
                        if !rows_unpadded(&mut got, m, x, raw, n, rb, relu) {
                            return; // no AVX-512: callers pad a copy instead
                        }
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "m={m} k={k} n={n} bias={with_bias} relu={relu}"
                        );
                    }
                }
            }
        }
    }

    /// At either AVX-512 width ([`half_width`]), the batch-1 kernels give
    /// the same bits on the packed weight with and without its tail block
    /// and on the weight as it is, near a plain loop's sums, and write
    /// nothing past the outputs; the two widths give the same bits where
    /// they take the same dot-product tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_avx512_widths_give_the_same_bits() {
        if !supports(Variant::Avx512) {
            return;
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for k in [0usize, 1, 2, 3, 7, 8, 9, 15, 16, 17, 37, 50, 100, 300] {
            for n in [
                1usize, 2, 3, 4, 5, 8, 9, 10, 12, 13, 15, 16, 17, 20, 24, 25, 33, 40, 47, 48, 49,
                50, 56, 57, 63, 64, 65, 100, 113, 130, 200,
            ] {
                let c = PackedCase::new(1, k, n);
                let (stride, x, raw, rows, bias) = (c.stride, &c.x, &c.raw, &c.rows, &c.bias);
                for (with_bias, relu) in [(false, false), (true, false), (true, true)] {
                    let (b, rb) = c.biases(with_bias);
                    let mut per_width = Vec::new();
                    for half in [false, true] {
                        let t = row1::tail_outputs(k, n, half);
                        let mut w = rows.clone();
                        w.resize(k * stride + t * k.next_multiple_of(PACK_LANES), f32::NAN);
                        pack_tail_for(&mut w[k * stride..], raw, k, n, half);
                        let mut outs = Vec::new();
                        for form in 0..3 {
                            let mut buf = vec![f32::NAN; n + 16];
                            buf[n..].fill(7.0);
                            let y = &mut buf[..n];
                            // SAFETY: AVX-512F and VL (checked above); the
                            // shapes are the ones the kernels need.
                            unsafe {
                                match form {
                                    0 => row1::packed(y, x, rows, stride, b, relu, half),
                                    1 => row1::packed(y, x, &w, stride, b, relu, half),
                                    _ => row1::unpadded_rows(y, 1, x, raw, n, rb, relu, half),
                                }
                            }
                            let at = format!(
                                "k={k} n={n} bias={with_bias} relu={relu} half={half} form={form}"
                            );
                            assert!(buf[n..].iter().all(|&a| a == 7.0), "{at}: wrote past y");
                            for (j, g) in buf[..n].iter().enumerate() {
                                let mut e = if with_bias { bias[j] } else { 0.0 }
                                    + (0..k).map(|p| x[p] * raw[p * n + j]).sum::<f32>();
                                if relu {
                                    e = crate::activation::relu(e);
                                }
                                assert!(
                                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                    "{at} j={j}: {g} vs {e}"
                                );
                            }
                            outs.push(bits(&buf[..n]));
                        }
                        assert!(
                            outs.iter().all(|o| *o == outs[0]),
                            "k={k} n={n} half={half}: forms differ"
                        );
                        per_width.push((t, outs.swap_remove(0)));
                    }
                    if per_width[0].0 == per_width[1].0 {
                        assert_eq!(per_width[0].1, per_width[1].1, "k={k} n={n}: widths differ");
                    }
                }
            }
        }
    }

    /// Two rows on half-vectors (Zen 4's few-row kernel for L1-sized
    /// weights) give the bits of whole vectors, packed or unpadded, and
    /// write nothing past their outputs.
    #[test]
    fn both_avx512_widths_give_the_same_bits_for_two_rows() {
        if !supports(Variant::Avx512) {
            return;
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for k in [0usize, 1, 3, 4, 5, 17, 50, 100, 300] {
            for n in [
                1usize, 7, 8, 9, 10, 16, 17, 24, 33, 47, 50, 56, 63, 64, 65, 100, 130,
            ] {
                let c = PackedCase::new(2, k, n);
                let (stride, x, raw, rows, bias) = (c.stride, &c.x, &c.raw, &c.rows, &c.bias);
                for (with_bias, relu) in [(false, false), (true, false), (true, true)] {
                    let (b, rb) = c.biases(with_bias);
                    let mut outs = Vec::new();
                    for half in [false, true] {
                        for padded in [true, false] {
                            let mut buf = vec![f32::NAN; 2 * n + 16];
                            buf[2 * n..].fill(7.0);
                            let y = &mut buf[..2 * n];
                            // SAFETY: AVX-512F and VL (checked above); the
                            // shapes are the ones the kernels need.
                            unsafe {
                                if padded {
                                    row1::packed_rows(y, 2, x, rows, stride, b, relu, half);
                                } else {
                                    row1::unpadded_rows(y, 2, x, raw, n, rb, relu, half);
                                }
                            }
                            let at = format!(
                                "k={k} n={n} bias={with_bias} relu={relu} half={half} padded={padded}"
                            );
                            assert!(buf[2 * n..].iter().all(|&a| a == 7.0), "{at}: wrote past y");
                            for (i, g) in buf[..2 * n].iter().enumerate() {
                                let (r, j) = (i % 2, i / 2);
                                let mut e = if with_bias { bias[j] } else { 0.0 }
                                    + (0..k).map(|p| x[r + 2 * p] * raw[p * n + j]).sum::<f32>();
                                if relu {
                                    e = crate::activation::relu(e);
                                }
                                assert!(
                                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                    "{at} ({r}, {j}): {g} vs {e}"
                                );
                            }
                            outs.push(bits(&buf[..2 * n]));
                        }
                    }
                    assert!(
                        outs.iter().all(|o| *o == outs[0]),
                        "k={k} n={n}: widths or forms differ"
                    );
                }
            }
        }
    }

    #[test]
    fn the_fused_relu_passes_nan_as_relu_does() {
        // No input rows: the outputs are the bias, then the ReLU.
        let mut bias = vec![0.0f32; 16];
        bias[..4].copy_from_slice(&[f32::NAN, 0.5, -2.0, 3.0]);
        for v in available_variants() {
            let mut y = vec![1.0f32; 4];
            row_packed_with(v, &mut y, &[], &[], 16, Some(&bias), true);
            assert!(y[0].is_nan(), "{v:?}: NaN stays NaN");
            assert_eq!(&y[1..], &[0.5, 0.0, 3.0], "{v:?}");
        }
        // And a NaN from the product.
        let mut w = vec![0.0f32; 16];
        w[0] = f32::NAN;
        for v in available_variants() {
            let mut y = vec![1.0f32; 2];
            row_packed_with(v, &mut y, &[1.0], &w, 16, None, true);
            assert!(y[0].is_nan() && y[1] == 0.0, "{v:?}: {y:?}");
        }
    }

    #[test]
    #[should_panic(expected = "row_packed: stride")]
    fn the_packed_row_kernel_refuses_an_unpadded_stride() {
        let mut y = vec![0.0f32; 10];
        row_packed(&mut y, &[1.0], &[0.0; 10], 10, None, false);
    }
}

multiversion! {
    /// The sum of `x`, in 16 interleaved partial sums (so it vectorizes;
    /// the order of additions is fixed, the same for every variant).
    pub fn sum / sum_with(x: &[f32]) -> f32 {
        sum_body(x)
    }
}

multiversion! {
    /// `m = max(m, v)` element-wise, where a NaN in `v` wins and stays
    /// (PyTorch's max pooling: `v > m || isnan(v)`).
    pub fn max_update / max_update_with(m: &mut [f32], v: &[f32]) {
        for (m, &v) in m.iter_mut().zip(v) {
            *m = if (v > *m) | v.is_nan() { v } else { *m };
        }
    }
}

multiversion! {
    /// [`max_update`] that also records `pos` in `ix` wherever `v` took
    /// over (so `ix` ends at the first maximum: equal values do not take
    /// over).
    pub fn max_arg_update / max_arg_update_with(m: &mut [f32], ix: &mut [u32], v: &[f32], pos: u32) {
        let n = m.len().min(ix.len()).min(v.len());
        let (m, ix, v) = (&mut m[..n], &mut ix[..n], &v[..n]);
        for i in 0..n {
            let take = (v[i] > m[i]) | v[i].is_nan();
            m[i] = if take { v[i] } else { m[i] };
            ix[i] = if take { pos } else { ix[i] };
        }
    }
}

multiversion! {
    /// `d += s` element-wise.
    pub fn add_assign / add_assign_with(d: &mut [f32], s: &[f32]) {
        for (d, &s) in d.iter_mut().zip(s) {
            *d += s;
        }
    }
}

/// How many 16-value blocks each of four streams over `n` values takes:
/// the quarters `[0, q)`, `[q, 2q)`, `[2q, 3q)`, `[3q, 4q)` with `q` this
/// times 16, and the rest `[4q, n)` after them.
#[inline(always)]
fn quarter_blocks(n: usize) -> usize {
    n / 64
}

/// Runs `f` on the four quarters of `(a, b)` in lockstep, 16 values of
/// each at a time, then on the rest (up to 63 values). A memory-bound
/// loop reading four places at once keeps more cache misses in flight
/// than one stream does (on the AVX-512 VM: `all_finite` over 4 MB in
/// 0.26 ms against 0.52 ms, an SGD update 0.38 against 0.50 ms).
#[inline(always)]
fn four_streams(a: &mut [f32], b: &[f32], mut f: impl FnMut(&mut [f32], &[f32])) {
    let n = a.len().min(b.len());
    let q = quarter_blocks(n) * 16;
    let (a, b) = (&mut a[..n], &b[..n]);
    for i in (0..q).step_by(16) {
        for s in 0..4 {
            let o = s * q + i;
            f(&mut a[o..o + 16], &b[o..o + 16]);
        }
    }
    f(&mut a[4 * q..], &b[4 * q..]);
}

multiversion! {
    /// Whether every element of `x` is finite (no NaN, no infinity): the
    /// largest exponent-and-mantissa bit pattern, an integer maximum that
    /// vectorizes, is below the infinities'. Reads four quarters of `x`
    /// at once (see `four_streams`).
    pub fn all_finite / all_finite_with(x: &[f32]) -> bool {
        let q = quarter_blocks(x.len()) * 16;
        let mut acc = [[0u32; 16]; 4];
        for i in (0..q).step_by(16) {
            for (s, acc) in acc.iter_mut().enumerate() {
                let c = &x[s * q + i..s * q + i + 16];
                for l in 0..16 {
                    acc[l] = acc[l].max(c[l].to_bits() & 0x7fff_ffff);
                }
            }
        }
        let mut m = acc.iter().flatten().fold(0u32, |m, a| m.max(*a));
        for v in &x[4 * q..] {
            m = m.max(v.to_bits() & 0x7fff_ffff);
        }
        m < 0x7f80_0000
    }
}

multiversion! {
    /// LayerNorm statistics of a column-major `rows x cols` matrix `x`: the
    /// mean of each row and `1 / sqrt(biased variance + eps)`. Every inner
    /// loop runs down a column, over the rows, so it vectorizes.
    pub fn row_moments / row_moments_with(x: &[f32], rows: usize, eps: f32, mean: &mut [f32], rstd: &mut [f32]) {
        if rows == 0 {
            return;
        }
        // One pass: sums of `x - k` and of its square, shifted by each
        // row's first value `k` so that the variance does not cancel.
        let (mean, rstd) = (&mut mean[..rows], &mut rstd[..rows]);
        if x.len() < rows {
            // No features: nothing to normalize.
            mean.fill(0.0);
            rstd.fill(0.0);
            return;
        }
        let shift = &x[..rows];
        mean.fill(0.0);
        rstd.fill(0.0);
        let cols = x.len() / rows;
        for c in x.chunks_exact(rows) {
            for r in 0..rows {
                let d = c[r] - shift[r];
                mean[r] += d;
                rstd[r] += d * d;
            }
        }
        let n = cols as f32;
        for r in 0..rows {
            let m = mean[r] / n;
            let var = (rstd[r] / n - m * m).max(0.0);
            mean[r] = shift[r] + m;
            rstd[r] = 1.0 / (var + eps).sqrt();
        }
    }
}

multiversion! {
    /// `out[r, j] = xhat[r, j] * w[j] + b[j]` with `xhat = (x - mean) * rstd`
    /// per row, column-major; `xhat` is written too when given. Every
    /// element of `out` (as long as `x`) is written, so it may start
    /// uninitialised.
    pub fn normalize_rows / normalize_rows_with(
        x: &[f32],
        rows: usize,
        mean: &[f32],
        rstd: &[f32],
        w: Option<&[f32]>,
        b: Option<&[f32]>,
        xhat: Option<&mut [f32]>,
        out: &mut [MaybeUninit<f32>]
    ) {
        if rows == 0 {
            return;
        }
        let (mean, rstd) = (&mean[..rows], &rstd[..rows]);
        let mut xhat = xhat;
        for (j, (xc, oc)) in x.chunks_exact(rows).zip(out.chunks_exact_mut(rows)).enumerate() {
            let (wj, bj) = (w.map_or(1.0, |w| w[j]), b.map_or(0.0, |b| b[j]));
            match xhat.as_deref_mut() {
                Some(h) => {
                    let hc = &mut h[j * rows..(j + 1) * rows];
                    for r in 0..rows {
                        let v = (xc[r] - mean[r]) * rstd[r];
                        hc[r] = v;
                        oc[r] = MaybeUninit::new(v * wj + bj);
                    }
                }
                None => {
                    for r in 0..rows {
                        oc[r] = MaybeUninit::new((xc[r] - mean[r]) * rstd[r] * wj + bj);
                    }
                }
            }
        }
    }
}

multiversion! {
    /// LayerNorm's input gradient, column-major:
    /// `dx = rstd * (g w - mean_row(g w) - xhat * mean_row(g w xhat))`;
    /// `sums` (2 x rows) is scratch.
    pub fn layer_norm_dx / layer_norm_dx_with(
        g: &[f32],
        xhat: &[f32],
        rows: usize,
        rstd: &[f32],
        w: Option<&[f32]>,
        sums: &mut [f32],
        col_sums: &mut [f32],
        dx: &mut [f32]
    ) {
        if rows == 0 {
            col_sums.fill(0.0);
            return;
        }
        let rstd = &rstd[..rows];
        let (m1, m2) = sums[..2 * rows].split_at_mut(rows);
        m1.fill(0.0);
        m2.fill(0.0);
        let cols = g.len() / rows;
        // col_sums: sum over rows of g * xhat (the weight's gradient), then
        // of g (the bias's), one pair per column, in the same pass.
        let (gw, gb) = col_sums[..2 * cols].split_at_mut(cols);
        for (j, (gc, hc)) in g.chunks_exact(rows).zip(xhat.chunks_exact(rows)).enumerate() {
            let wj = w.map_or(1.0, |w| w[j]);
            for r in 0..rows {
                let d = gc[r] * wj;
                m1[r] += d;
                m2[r] += d * hc[r];
            }
            // The column is in L1 now: its two sums in 16 interleaved
            // partial sums each (as `sum` and `dot`).
            gw[j] = dot_body(gc, hc);
            gb[j] = sum_body(gc);
        }
        let n = cols as f32;
        for r in 0..rows {
            m1[r] /= n;
            m2[r] /= n;
        }
        for (j, ((gc, hc), dc)) in g
            .chunks_exact(rows)
            .zip(xhat.chunks_exact(rows))
            .zip(dx.chunks_exact_mut(rows))
            .enumerate()
        {
            let wj = w.map_or(1.0, |w| w[j]);
            for r in 0..rows {
                dc[r] = rstd[r] * (gc[r] * wj - m1[r] - hc[r] * m2[r]);
            }
        }
    }
}

multiversion! {
    /// BatchNorm statistics of a column-major `rows x cols` matrix: for
    /// each column (one feature over the batch, contiguous), the mean and
    /// the biased variance, in two passes (mean, then centred squares) of
    /// 16 interleaved partial sums each.
    pub fn column_moments / column_moments_with(x: &[f32], rows: usize, mean: &mut [f32], var: &mut [f32]) {
        if rows == 0 {
            mean.fill(0.0);
            var.fill(f32::NAN);
            return;
        }
        let n = rows as f32;
        for ((c, m), v) in x.chunks_exact(rows).zip(mean.iter_mut()).zip(var.iter_mut()) {
            let mu = sum_body(c) / n;
            let mut acc = [0.0f32; 16];
            let chunks = c.chunks_exact(16);
            let rest = chunks.remainder();
            for ch in chunks {
                for l in 0..16 {
                    let d = ch[l] - mu;
                    acc[l] += d * d;
                }
            }
            let mut s = 0.0f32;
            for (l, a) in acc.iter().enumerate() {
                s += a + rest.get(l).map_or(0.0, |v| (v - mu) * (v - mu));
            }
            *m = mu;
            *v = s / n;
        }
    }
}

multiversion! {
    /// `out[:, j] = (x[:, j] - mean[j]) * invstd[j] * w[j] + b[j]` with
    /// `invstd[j] = 1 / sqrt(var[j] + eps)`, for a column-major matrix
    /// (BatchNorm); `xhat` gets the normalized values and `invstd` the
    /// factors when given. Every element of `out` (as long as `x`) is
    /// written, so it may start uninitialised.
    pub fn normalize_columns / normalize_columns_with(
        x: &[f32],
        rows: usize,
        mean: &[f32],
        var: &[f32],
        eps: f32,
        w: Option<&[f32]>,
        b: Option<&[f32]>,
        xhat: Option<&mut [f32]>,
        invstd: Option<&mut [f32]>,
        out: &mut [MaybeUninit<f32>]
    ) {
        if rows == 0 {
            return;
        }
        let (mut xhat, mut invstd) = (xhat, invstd);
        for (j, (xc, oc)) in x.chunks_exact(rows).zip(out.chunks_exact_mut(rows)).enumerate() {
            let (m, s) = (mean[j], 1.0 / (var[j] + eps).sqrt());
            if let Some(i) = invstd.as_deref_mut() {
                i[j] = s;
            }
            let (wj, bj) = (w.map_or(1.0, |w| w[j]), b.map_or(0.0, |b| b[j]));
            match xhat.as_deref_mut() {
                Some(h) => {
                    let hc = &mut h[j * rows..(j + 1) * rows];
                    for r in 0..rows {
                        let v = (xc[r] - m) * s;
                        hc[r] = v;
                        oc[r] = MaybeUninit::new(v * wj + bj);
                    }
                }
                None => {
                    for r in 0..rows {
                        oc[r] = MaybeUninit::new((xc[r] - m) * s * wj + bj);
                    }
                }
            }
        }
    }
}

multiversion! {
    /// BatchNorm's backward, column-major: per column `j`,
    /// `sums[j] = (sum g, sum g * xhat)` (the bias's and the weight's
    /// gradients) and `dx = w invstd (g - mean(g) - xhat mean(g xhat))`
    /// with the batch's statistics, or `dx = w invstd g` with fixed
    /// (running) ones.
    pub fn batch_norm_dx / batch_norm_dx_with(
        g: &[f32],
        xhat: &[f32],
        rows: usize,
        invstd: &[f32],
        w: Option<&[f32]>,
        batch_stats: bool,
        sum_g: &mut [f32],
        sum_gh: &mut [f32],
        dx: &mut [f32]
    ) {
        if rows == 0 {
            sum_g.fill(0.0);
            sum_gh.fill(0.0);
            return;
        }
        let n = rows as f32;
        for (j, ((gc, hc), dc)) in g
            .chunks_exact(rows)
            .zip(xhat.chunks_exact(rows))
            .zip(dx.chunks_exact_mut(rows))
            .enumerate()
        {
            let (sg, sgh) = (sum_body(gc), dot_body(gc, hc));
            sum_g[j] = sg;
            sum_gh[j] = sgh;
            let scale = w.map_or(1.0, |w| w[j]) * invstd[j];
            if batch_stats {
                let (mg, mgh) = (sg / n, sgh / n);
                for r in 0..rows {
                    dc[r] = scale * (gc[r] - mg - hc[r] * mgh);
                }
            } else {
                for r in 0..rows {
                    dc[r] = scale * gc[r];
                }
            }
        }
    }
}

/// [`dot`]'s body, for kernels that inline it.
#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = 0.0f32;
    for (l, v) in acc.iter().enumerate() {
        s += v + ra.get(l).zip(rb.get(l)).map_or(0.0, |(x, y)| x * y);
    }
    s
}

/// [`sum`]'s body, for kernels that inline it.
#[inline(always)]
fn sum_body(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    let mut s = 0.0f32;
    for (l, a) in acc.iter().enumerate() {
        s += a + rest.get(l).copied().unwrap_or(0.0);
    }
    s
}

multiversion! {
    /// `sum(a * b)` in 16 interleaved partial sums (as [`sum`]).
    pub fn dot / dot_with(a: &[f32], b: &[f32]) -> f32 {
        dot_body(a, b)
    }
}

/// `out[i][j] = a_i . b_j` for 4 x 4 columns of length `p`: 16
/// accumulators of 16 lanes, each step loading 8 vectors for 16
/// multiply-adds.
#[inline(always)]
fn cross_tile(a: [&[f32]; 4], b: [&[f32]; 4], p: usize) -> [[f32; 4]; 4] {
    let full = p / 16 * 16;
    let (a0, a1, a2, a3) = (&a[0][..full], &a[1][..full], &a[2][..full], &a[3][..full]);
    let (b0, b1, b2, b3) = (&b[0][..full], &b[1][..full], &b[2][..full], &b[3][..full]);
    let mut acc = [[0.0f32; 16]; 16];
    let mut t = 0;
    // `try_into` of a 16-value slice cannot fail; written so that the
    // loop body has fixed-size arrays (this shape vectorizes, an iterator
    // chain over eight slices did not).
    let lanes = |s: &[f32], t: usize| -> [f32; 16] { s[t..t + 16].try_into().unwrap_or([0.0; 16]) };
    while t < full {
        let x = [lanes(a0, t), lanes(a1, t), lanes(a2, t), lanes(a3, t)];
        let y = [lanes(b0, t), lanes(b1, t), lanes(b2, t), lanes(b3, t)];
        for i in 0..4 {
            for j in 0..4 {
                let a = &mut acc[i * 4 + j];
                for l in 0..16 {
                    a[l] += x[i][l] * y[j][l];
                }
            }
        }
        t += 16;
    }
    let mut out = [[0.0f32; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            let mut s: f32 = acc[i * 4 + j].iter().sum();
            for r in full..p {
                s += a[i][r] * b[j][r];
            }
            out[i][j] = s;
        }
    }
    out
}

multiversion! {
    /// The dot products of every column of `a` (`na` columns of `p`
    /// values, column `i` starting at `i * lda`) with every column of `b`
    /// (`nb` columns of `p` values, one after another):
    /// `out[i + ld * j] = a_i . b_j`, added to what `out` holds with
    /// `accumulate`. A convolution's weight gradient (`a` the output
    /// gradient of a block of positions, `b` its unfolded input): a long
    /// sum into a small result, where a GEMM packs more than it multiplies
    /// and runs its micro-kernels partly empty. 4 x 4 columns at a time;
    /// the edges one dot at a time.
    ///
    /// # Panics
    /// When a slice is shorter than its shape says.
    pub fn cross_dots / cross_dots_with(a: &[f32], lda: usize, na: usize, b: &[f32], nb: usize, p: usize, out: &mut [f32], ld: usize, accumulate: bool) {
        assert!(lda >= p, "cross_dots: column stride");
        assert!(na == 0 || a.len() >= (na - 1) * lda + p, "cross_dots: a");
        assert!(b.len() >= nb * p, "cross_dots: b");
        assert!(na == 0 || nb == 0 || out.len() > (na - 1) + ld * (nb - 1), "cross_dots: output");
        let acol = |i: usize| &a[i * lda..i * lda + p];
        let bcol = |j: usize| &b[j * p..(j + 1) * p];
        let mut put = |i: usize, j: usize, v: f32| {
            let d = &mut out[i + ld * j];
            *d = if accumulate { *d + v } else { v };
        };
        let (fi, fj) = (na / 4 * 4, nb / 4 * 4);
        for i0 in (0..fi).step_by(4) {
            for j0 in (0..fj).step_by(4) {
                let t = cross_tile(
                    [acol(i0), acol(i0 + 1), acol(i0 + 2), acol(i0 + 3)],
                    [bcol(j0), bcol(j0 + 1), bcol(j0 + 2), bcol(j0 + 3)],
                    p,
                );
                for (i, row) in t.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        put(i0 + i, j0 + j, *v);
                    }
                }
            }
        }
        for i in 0..na {
            let js = if i < fi { fj..nb } else { 0..nb };
            for j in js {
                put(i, j, dot_body(acol(i), bcol(j)));
            }
        }
    }
}

multiversion! {
    /// SGD without momentum: `w -= lr * (g + weight_decay * w)`, over
    /// four quarters of `w` at once (see `four_streams`).
    pub fn sgd_update / sgd_update_with(w: &mut [f32], g: &[f32], lr: f32, weight_decay: f32) {
        four_streams(w, g, |w, g| {
            for (w, g) in w.iter_mut().zip(g) {
                let d = g + weight_decay * *w;
                *w -= lr * d;
            }
        });
    }
}

multiversion! {
    /// `sum((x - t)^2)` in f64 partial sums, with `grad = scale * 2 (x - t)`.
    pub fn squared_error / squared_error_with(x: &[f32], t: &[f32], grad: &mut [f32], scale: f32) -> f64 {
        let mut acc = [0.0f32; 16];
        let mut total = 0.0f64;
        let n = x.len().min(t.len()).min(grad.len());
        let mut i = 0;
        while i < n {
            // Blocks of 1024 in f32 lanes, then into f64: accurate and fast.
            let end = (i + 1024).min(n);
            let (xs, ts, gs) = (&x[i..end], &t[i..end], &mut grad[i..end]);
            let mut j = 0;
            while j + 16 <= xs.len() {
                for l in 0..16 {
                    let d = xs[j + l] - ts[j + l];
                    acc[l] += d * d;
                    gs[j + l] = 2.0 * d * scale;
                }
                j += 16;
            }
            for l in j..xs.len() {
                let d = xs[l] - ts[l];
                acc[l - j] += d * d;
                gs[l] = 2.0 * d * scale;
            }
            total += acc.iter().map(|v| f64::from(*v)).sum::<f64>();
            acc = [0.0; 16];
            i = end;
        }
        total
    }
}

#[cfg(test)]
mod rows_tests {
    use super::*;

    /// Every variant of the small-batch kernel matches a plain loop, for
    /// every row count up to 17 (all groupings of 8, 4, 2, 1) and output
    /// counts around the block widths, with and without `beta`.
    #[test]
    fn every_variant_matches_a_plain_loop() {
        for m in 1..=17usize {
            for &(k, n) in &[
                (100usize, 50usize),
                (7, 3),
                (33, 17),
                (5, 65),
                (1, 1),
                (0, 4),
                (9, 129),
                // Streams the weight (n >= 256, k * stride >= 2^18).
                (259, 1024),
                // The same, outputs past the last block of 16, and three
                // rows of the weight past the fours.
                (263, 1001),
            ] {
                // op(a) = x (m x k) column-major: (r, p) at r + p m.
                let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let rs = n + 3;
                let b: Vec<f32> = (0..k * rs + n).map(|i| (i as f32 * 0.11).cos()).collect();
                let expected: Vec<f32> = (0..m * n)
                    .map(|e| {
                        let (r, j) = (e % m, e / m);
                        0.5 + (0..k).map(|p| a[r + p * m] * b[p * rs + j]).sum::<f32>()
                    })
                    .collect();
                for v in available_variants() {
                    let mut y = vec![1.0f32; m * n];
                    rows_axpy_with(v, &mut y, m, &a, m, k, &b, rs, 0.5);
                    for (i, (g, e)) in y.iter().zip(&expected).enumerate() {
                        assert!(
                            (g - e).abs() < 1e-4 * (1.0 + e.abs()),
                            "{v:?} m={m} k={k} n={n} [{i}]: {g} vs {e}"
                        );
                    }
                    let mut y = vec![f32::NAN; m * n];
                    rows_axpy_with(v, &mut y, m, &a, m, k, &b, rs, 0.0);
                    for (g, e) in y.iter().zip(&expected) {
                        assert!(
                            (g - (e - 0.5)).abs() < 1e-4 * (1.0 + e.abs()),
                            "{v:?} beta 0"
                        );
                    }
                }
            }
        }
    }

    /// On AVX-512, rows on a weight that streams (`stream::rows`, 2 rows)
    /// give each row the bits `row_axpy` gives it alone, for every `beta`.
    #[test]
    fn streamed_rows_give_the_bits_of_one_row() {
        if !supports(Variant::Avx512) {
            return;
        }
        for &(k, n) in &[(259usize, 1024usize), (263, 1001)] {
            let rs = n + 3;
            let b: Vec<f32> = (0..k * rs + n).map(|i| (i as f32 * 0.11).cos()).collect();
            for m in 2..=stream::MAX_ROWS {
                let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let y0: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.05).sin()).collect();
                for beta in [0.0, 1.0, 0.5] {
                    let mut y = y0.clone();
                    rows_axpy_with(Variant::Avx512, &mut y, m, &a, m, k, &b, rs, beta);
                    for r in 0..m {
                        let row: Vec<f32> = (0..k).map(|p| a[r + p * m]).collect();
                        let mut alone: Vec<f32> = (0..n).map(|j| y0[r + j * m]).collect();
                        row_axpy_with(Variant::Avx512, &mut alone, &row, &b, rs, beta);
                        for (j, v) in alone.iter().enumerate() {
                            assert_eq!(
                                y[r + j * m].to_bits(),
                                v.to_bits(),
                                "k={k} n={n} m={m} beta={beta} ({r}, {j})"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod layer_norm_tests {
    use super::*;

    /// Every variant of the LayerNorm kernels agrees with a plain f64
    /// computation, on a shape with ragged sizes.
    #[test]
    fn every_variant_normalizes_and_differentiates() {
        let (rows, cols) = (7usize, 13usize);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let g: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let w: Vec<f32> = (0..cols).map(|j| 0.5 + j as f32 * 0.1).collect();
        let b: Vec<f32> = (0..cols).map(|j| j as f32 * -0.05).collect();
        let at = |r: usize, c: usize| c * rows + r;
        for v in available_variants() {
            let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
            row_moments_with(v, &x, rows, 1e-5, &mut mean, &mut rstd);
            let (mut h, mut out) = (vec![0.0; rows * cols], vec![0.0; rows * cols]);
            normalize_rows_with(
                v,
                &x,
                rows,
                &mean,
                &rstd,
                Some(&w),
                Some(&b),
                Some(&mut h),
                crate::ops::as_uninit(&mut out),
            );
            let mut dx = vec![0.0; rows * cols];
            let mut sums = vec![0.0; 2 * rows];
            let mut col_sums = vec![0.0; 2 * cols];
            layer_norm_dx_with(
                v,
                &g,
                &h,
                rows,
                &rstd,
                Some(&w),
                &mut sums,
                &mut col_sums,
                &mut dx,
            );
            for c in 0..cols {
                let gw: f64 = (0..rows)
                    .map(|r| f64::from(g[at(r, c)]) * f64::from(h[at(r, c)]))
                    .sum();
                let gb: f64 = (0..rows).map(|r| f64::from(g[at(r, c)])).sum();
                assert!((f64::from(col_sums[c]) - gw).abs() < 1e-4, "{v:?} dweight");
                assert!(
                    (f64::from(col_sums[cols + c]) - gb).abs() < 1e-4,
                    "{v:?} dbias"
                );
            }
            for r in 0..rows {
                let xs: Vec<f64> = (0..cols).map(|c| f64::from(x[at(r, c)])).collect();
                let m = xs.iter().sum::<f64>() / cols as f64;
                let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / cols as f64;
                let s = 1.0 / (var + 1e-5).sqrt();
                let hs: Vec<f64> = xs.iter().map(|x| (x - m) * s).collect();
                let d: Vec<f64> = (0..cols)
                    .map(|c| f64::from(g[at(r, c)]) * f64::from(w[c]))
                    .collect();
                let (m1, m2) = (
                    d.iter().sum::<f64>() / cols as f64,
                    d.iter().zip(&hs).map(|(d, h)| d * h).sum::<f64>() / cols as f64,
                );
                for c in 0..cols {
                    let y = hs[c] * f64::from(w[c]) + f64::from(b[c]);
                    assert!((f64::from(out[at(r, c)]) - y).abs() < 1e-4, "{v:?} out");
                    let want = s * (d[c] - m1 - hs[c] * m2);
                    assert!((f64::from(dx[at(r, c)]) - want).abs() < 1e-4, "{v:?} dx");
                }
            }
            let exact: f64 = x
                .iter()
                .zip(&g)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!(
                (f64::from(dot_with(v, &x, &g)) - exact).abs() < 1e-3,
                "{v:?} dot"
            );
            // Rows of zero: nothing to do, nothing read.
            row_moments_with(v, &[], 0, 1e-5, &mut [], &mut []);
        }
    }
}

#[cfg(test)]
mod batch_norm_tests {
    use super::*;

    /// Every variant of the BatchNorm kernels agrees with a plain f64
    /// computation, on ragged sizes (columns of 37 rows: two 16-wide chunks
    /// and a tail), with batch and with fixed statistics.
    #[test]
    fn every_variant_normalizes_and_differentiates_columns() {
        let (rows, cols) = (37usize, 5usize);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.5)
            .collect();
        let g: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let w: Vec<f32> = (0..cols).map(|j| 0.5 + j as f32 * 0.1).collect();
        let b: Vec<f32> = (0..cols).map(|j| j as f32 * -0.05).collect();
        let eps = 1e-5f32;
        for v in available_variants() {
            let (mut mean, mut var) = (vec![0.0; cols], vec![0.0; cols]);
            column_moments_with(v, &x, rows, &mut mean, &mut var);
            let mut h = vec![0.0; rows * cols];
            let mut out = vec![0.0; rows * cols];
            let mut invstd = vec![0.0; cols];
            normalize_columns_with(
                v,
                &x,
                rows,
                &mean,
                &var,
                eps,
                Some(&w),
                Some(&b),
                Some(&mut h),
                Some(&mut invstd),
                crate::ops::as_uninit(&mut out),
            );
            for batch_stats in [true, false] {
                let (mut sg, mut sgh) = (vec![0.0; cols], vec![0.0; cols]);
                let mut dx = vec![0.0; rows * cols];
                batch_norm_dx_with(
                    v,
                    &g,
                    &h,
                    rows,
                    &invstd,
                    Some(&w),
                    batch_stats,
                    &mut sg,
                    &mut sgh,
                    &mut dx,
                );
                for c in 0..cols {
                    let col = |a: &[f32]| -> Vec<f64> {
                        a[c * rows..(c + 1) * rows]
                            .iter()
                            .map(|v| f64::from(*v))
                            .collect()
                    };
                    let (xs, gs) = (col(&x), col(&g));
                    let n = rows as f64;
                    let m = xs.iter().sum::<f64>() / n;
                    let vr = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
                    assert!((f64::from(mean[c]) - m).abs() < 1e-5, "{v:?} mean");
                    assert!((f64::from(var[c]) - vr).abs() < 1e-4, "{v:?} var");
                    let s = 1.0 / (vr + f64::from(eps)).sqrt();
                    let hs: Vec<f64> = xs.iter().map(|x| (x - m) * s).collect();
                    let (gsum, ghsum) = (
                        gs.iter().sum::<f64>(),
                        gs.iter().zip(&hs).map(|(a, b)| a * b).sum::<f64>(),
                    );
                    assert!((f64::from(sg[c]) - gsum).abs() < 1e-4, "{v:?} dbias");
                    assert!((f64::from(sgh[c]) - ghsum).abs() < 1e-4, "{v:?} dweight");
                    let wc = f64::from(w[c]);
                    for r in 0..rows {
                        let y = hs[r] * wc + f64::from(b[c]);
                        assert!((f64::from(out[c * rows + r]) - y).abs() < 1e-4, "{v:?} out");
                        let want = if batch_stats {
                            wc * s * (gs[r] - gsum / n - hs[r] * ghsum / n)
                        } else {
                            wc * s * gs[r]
                        };
                        assert!(
                            (f64::from(dx[c * rows + r]) - want).abs() < 1e-4,
                            "{v:?} dx"
                        );
                    }
                }
            }
            // No rows: statistics undefined, nothing read.
            let (mut m0, mut v0) = (vec![1.0; 2], vec![1.0; 2]);
            column_moments_with(v, &[], 0, &mut m0, &mut v0);
            assert!(v0.iter().all(|v| v.is_nan()));
        }
    }
}

#[cfg(test)]
mod elementwise_tests {
    use super::*;

    /// The map kernels give every value what the function gives it alone,
    /// at every length: whole vectors, a rest of one or two values, a rest
    /// taken as the last (overlapping) vector, and slices shorter than a
    /// vector; in place, no value is mapped twice.
    #[test]
    fn the_map_kernels_map_every_value_once_at_every_length() {
        let f = |v: f32| crate::kernels::vmath::tanh(v) * 2.0 + 1.0;
        let g = |a: f32, b: f32| crate::kernels::vmath::exp(a) * 0.5 - b;
        for len in 0..=70usize {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let y: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: Vec<u32> = x.iter().map(|v| f(*v).to_bits()).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let mut out = vec![f32::NAN; len];
            map_into(&x, &mut out, f);
            assert_eq!(bits(&out), want, "map_into, {len} values");
            let mut inplace = x.clone();
            map_in_place(&mut inplace, f);
            assert_eq!(bits(&inplace), want, "map_in_place, {len} values");
            let want2: Vec<u32> = x.iter().zip(&y).map(|(a, b)| g(*a, *b).to_bits()).collect();
            let mut out = vec![f32::NAN; len];
            zip_map_into(&x, &y, &mut out, g);
            assert_eq!(bits(&out), want2, "zip_map_into, {len} values");
        }
    }

    #[test]
    fn every_variant_sums_updates_and_squares() {
        let x: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.3).sin()).collect();
        let t: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.7).cos()).collect();
        let exact: f64 = x.iter().map(|v| f64::from(*v)).sum();
        let sq: f64 = x
            .iter()
            .zip(&t)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        for v in available_variants() {
            assert!(all_finite_with(v, &x) && all_finite_with(v, &[]), "{v:?}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                // Each quarter of the four streams, their edges, the rest.
                for at in [0, 15, 16, 255, 256, 300, 600, 1000, 1023, 1024, 1036] {
                    let mut y = x.clone();
                    y[at] = bad;
                    assert!(!all_finite_with(v, &y), "{v:?} {bad} at {at}");
                }
            }
            // Every length around the quarters' sizes, a NaN at every place.
            for n in 0..=140 {
                assert!(all_finite_with(v, &x[..n]), "{v:?} {n}");
                for at in 0..n {
                    let mut y = x[..n].to_vec();
                    y[at] = f32::NAN;
                    assert!(!all_finite_with(v, &y), "{v:?} length {n}, NaN at {at}");
                }
                let mut w = x[..n].to_vec();
                sgd_update_with(v, &mut w, &t[..n], 0.5, 0.1);
                for ((w, x), g) in w.iter().zip(&x).zip(&t) {
                    assert_eq!(*w, x - 0.5 * (g + 0.1 * x), "{v:?} length {n}");
                }
            }
            assert!(all_finite_with(
                v,
                &[f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0]
            ));
            assert!((f64::from(sum_with(v, &x)) - exact).abs() < 1e-3, "{v:?}");
            assert_eq!(sum_with(v, &[]), 0.0);
            assert_eq!(sum_with(v, &[1.0, 2.0, 3.0]), 6.0);
            let mut w = x.clone();
            sgd_update_with(v, &mut w, &t, 0.5, 0.1);
            for ((w, x), g) in w.iter().zip(&x).zip(&t) {
                assert!((w - (x - 0.5 * (g + 0.1 * x))).abs() < 1e-6);
            }
            let mut grad = vec![0.0; x.len()];
            let s = squared_error_with(v, &x, &t, &mut grad, 0.5);
            assert!((s - sq).abs() < 1e-3 * sq, "{v:?}: {s} vs {sq}");
            assert!((grad[5] - (x[5] - t[5])).abs() < 1e-6);
        }
    }

    /// Every column pair's dot product, full tiles and edges, added or
    /// written, with a column stride on `a`.
    #[test]
    fn every_variant_crosses_columns_as_plain_dots() {
        for (na, nb, p) in [
            (6, 25, 37),
            (4, 4, 16),
            (1, 1, 1),
            (5, 9, 100),
            (16, 150, 33),
            (3, 2, 0),
        ] {
            let lda = p + 3;
            let a: Vec<f32> = (0..na * lda)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..nb * p)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let ld = na + 2;
            for v in available_variants() {
                for accumulate in [false, true] {
                    let mut out = vec![1.0f32; ld * nb];
                    cross_dots_with(v, &a, lda, na, &b, nb, p, &mut out, ld, accumulate);
                    for j in 0..nb {
                        for i in 0..na {
                            let want: f32 =
                                (0..p).map(|t| a[t + lda * i] * b[t + p * j]).sum::<f32>()
                                    + if accumulate { 1.0 } else { 0.0 };
                            let got = out[i + ld * j];
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{v:?} {na}x{nb}x{p} ({i}, {j}): {got} vs {want}"
                            );
                        }
                        // Rows outside the result are left alone.
                        for r in na..ld {
                            assert_eq!(out[r + ld * j], 1.0);
                        }
                    }
                }
            }
        }
    }

    /// The pooling updates: NaN wins and stays, ties keep the first index.
    #[test]
    fn every_variant_takes_maxima_as_pytorch_pools() {
        let n = 37;
        let a: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32).collect();
        let mut b: Vec<f32> = (0..n).map(|i| ((i * 3) % 5) as f32).collect();
        b[4] = f32::NAN;
        let mut c: Vec<f32> = (0..n).map(|i| ((i * 2) % 5) as f32).collect();
        c[9] = f32::NAN;
        for v in available_variants() {
            let (mut m, mut ix) = (vec![f32::NEG_INFINITY; n], vec![0u32; n]);
            let mut plain = vec![f32::NEG_INFINITY; n];
            for (pos, src) in [&a, &b, &c].into_iter().enumerate() {
                max_arg_update_with(v, &mut m, &mut ix, src, pos as u32);
                max_update_with(v, &mut plain, src);
            }
            for i in 0..n {
                let vals = [a[i], b[i], c[i]];
                let first_nan = vals.iter().position(|x| x.is_nan());
                let (want, at) = match first_nan {
                    // A later NaN takes over again (`isnan(val)`).
                    Some(_) => (f32::NAN, vals.iter().rposition(|x| x.is_nan()).unwrap()),
                    None => {
                        let max = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        (max, vals.iter().position(|&x| x == max).unwrap())
                    }
                };
                assert!(
                    m[i] == want || (m[i].is_nan() && want.is_nan()),
                    "{v:?} {i}"
                );
                assert!(plain[i].to_bits() == m[i].to_bits(), "{v:?} {i}");
                assert_eq!(ix[i], at as u32, "{v:?} {i}");
            }
            let mut d = a.clone();
            add_assign_with(v, &mut d, &c);
            assert!(
                d.iter()
                    .zip(a.iter().zip(&c))
                    .all(|(d, (a, c))| d.to_bits() == (a + c).to_bits())
            );
        }
    }
}

/// `out[i] = f(x[i])`, compiled for the best variant the CPU has (the
/// closure is inlined into each), split across threads for large slices
/// (see [`crate::threads::PARALLEL_ELEMENTS`]).
///
/// # Panics
/// When the slices differ in length.
pub fn map_into<F: Fn(f32) -> f32 + Sync>(x: &[f32], out: &mut [f32], f: F) {
    assert_eq!(x.len(), out.len(), "map_into: lengths differ");
    crate::threads::for_parts((x, out), &|(x, out): (&[f32], &mut [f32])| {
        map_into_serial(x, out, &f);
    });
}

/// The element-wise kernels' vectors: the values past the last whole
/// vector of a slice, when at least [`PAD_REST`], go as one more vector,
/// the slice's last `MAP_LANES` values (the lanes already mapped are
/// dropped; `f`'s vector code gives its scalar bits). A slice shorter
/// than a vector goes as LLVM compiles a plain loop (copied into a padded
/// vector instead, its loads waited for the copy's stores: 4 values of
/// `tanh` 12 -> 35 ns).
const MAP_LANES: usize = 16;

/// See [`MAP_LANES`]. LLVM leaves most of the values past the last whole
/// vector to scalar code, one at a time: for GELU about 11 ns each on Zen
/// 4 (31 values took 112 ns, 32 took 66), for `tanh` 7.5, `sigmoid` 5.5,
/// where one more vector costs about 30, 11 and 8 ns.
const PAD_REST: usize = 3;

/// `out[i] = f(x[i])`: a plain loop (LLVM vectorizes it), with the rest
/// past the whole vectors as [`MAP_LANES`] says.
#[inline(always)]
fn map_by_vectors<F: Fn(f32) -> f32>(x: &[f32], out: &mut [f32], f: &F) {
    let n = x.len();
    let rest = n % MAP_LANES;
    match x.last_chunk::<MAP_LANES>() {
        Some(last) if rest >= PAD_REST => {
            for (o, v) in out[..n - rest].iter_mut().zip(&x[..n - rest]) {
                *o = (*f)(*v);
            }
            let mut o = [0.0f32; MAP_LANES];
            for (o, v) in o.iter_mut().zip(last) {
                *o = (*f)(*v);
            }
            out[n - rest..].copy_from_slice(&o[MAP_LANES - rest..]);
        }
        _ => {
            for (o, v) in out.iter_mut().zip(x) {
                *o = (*f)(*v);
            }
        }
    }
}

fn map_into_serial<F: Fn(f32) -> f32>(x: &[f32], out: &mut [f32], f: &F) {
    #[inline(always)]
    fn body<F: Fn(f32) -> f32>(x: &[f32], out: &mut [f32], f: &F) {
        map_by_vectors(x, out, f);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn avx512<F: Fn(f32) -> f32>(x: &[f32], out: &mut [f32], f: &F) {
        body(x, out, f);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2<F: Fn(f32) -> f32>(x: &[f32], out: &mut [f32], f: &F) {
        body(x, out, f);
    }
    match best() {
        // SAFETY: `best` only returns variants the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512(x, out, f) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2(x, out, f) },
        _ => body(x, out, f),
    }
}

/// Runs `f` compiled for the best variant this CPU has: `f` (a closure
/// marked `#[inline(always)]`) is inlined into a function with that
/// variant's target features, so that its loops become AVX-512 or AVX2
/// code. Its arithmetic is what it is on every variant (Rust contracts no
/// `a * b + c` into a multiply-add).
#[inline(always)]
pub(crate) fn with_best_variant<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    match best() {
        // SAFETY: `best` only returns variants the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512(f) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2(f) },
        _ => f(),
    }
}

/// `x[i] = f(x[i])` in place, compiled for the best variant, split
/// across threads for large slices.
pub fn map_in_place<F: Fn(f32) -> f32 + Sync>(x: &mut [f32], f: F) {
    crate::threads::for_parts(x, &|x: &mut [f32]| map_in_place_serial(x, &f));
}

fn map_in_place_serial<F: Fn(f32) -> f32>(x: &mut [f32], f: &F) {
    #[inline(always)]
    fn body<F: Fn(f32) -> f32>(x: &mut [f32], f: &F) {
        let n = x.len();
        let rest = n % MAP_LANES;
        let last = if rest >= PAD_REST {
            x.last_chunk::<MAP_LANES>().copied()
        } else {
            None
        };
        match last {
            Some(last) => {
                for v in &mut x[..n - rest] {
                    *v = (*f)(*v);
                }
                let mut o = [0.0f32; MAP_LANES];
                for (o, v) in o.iter_mut().zip(&last) {
                    *o = (*f)(*v);
                }
                x[n - rest..].copy_from_slice(&o[MAP_LANES - rest..]);
            }
            _ => {
                for v in x.iter_mut() {
                    *v = (*f)(*v);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn avx512<F: Fn(f32) -> f32>(x: &mut [f32], f: &F) {
        body(x, f);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2<F: Fn(f32) -> f32>(x: &mut [f32], f: &F) {
        body(x, f);
    }
    match best() {
        // SAFETY: `best` only returns variants the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512(x, f) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2(x, f) },
        _ => body(x, f),
    }
}

/// `out[i] = f(a[i], b[i])`, compiled for the best variant, split across
/// threads for large slices.
///
/// # Panics
/// When the slices differ in length.
pub fn zip_map_into<F: Fn(f32, f32) -> f32 + Sync>(a: &[f32], b: &[f32], out: &mut [f32], f: F) {
    assert!(
        a.len() == out.len() && b.len() == out.len(),
        "zip_map_into: lengths differ"
    );
    crate::threads::for_parts(((a, b), out), &|((a, b), out): (
        (&[f32], &[f32]),
        &mut [f32],
    )| zip_map_into_serial(a, b, out, &f));
}

fn zip_map_into_serial<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [f32], f: &F) {
    #[inline(always)]
    fn body<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [f32], f: &F) {
        let n = out.len();
        let rest = n % MAP_LANES;
        match (a.last_chunk::<MAP_LANES>(), b.last_chunk::<MAP_LANES>()) {
            (Some(x), Some(y)) if rest >= PAD_REST => {
                let m = n - rest;
                for ((o, x), y) in out[..m].iter_mut().zip(&a[..m]).zip(&b[..m]) {
                    *o = (*f)(*x, *y);
                }
                let mut o = [0.0f32; MAP_LANES];
                for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
                    *o = (*f)(*x, *y);
                }
                out[m..].copy_from_slice(&o[MAP_LANES - rest..]);
            }
            _ => {
                for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                    *o = (*f)(*x, *y);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn avx512<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [f32], f: &F) {
        body(a, b, out, f);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], out: &mut [f32], f: &F) {
        body(a, b, out, f);
    }
    match best() {
        // SAFETY: `best` only returns variants the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => unsafe { avx512(a, b, out, f) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => unsafe { avx2(a, b, out, f) },
        _ => body(a, b, out, f),
    }
}

/// `dst = src^T`: `src` holds `height` rows of `width` values (row-major),
/// `dst` receives `width` rows of `height` values. A column-major
/// `rows x cols` matrix is a row-major `cols x rows` one, so
/// `transpose(w, wt, rows, cols)` turns a column-major `W` into a
/// column-major `W^T`.
///
/// On AVX-512 it moves 16 x 16 tiles through registers (16 loads, 64
/// shuffles, 16 stores per tile, every cache line touched used whole);
/// elsewhere it runs the `transpose` crate's cache-oblivious copy. For a
/// 1024 x 1024 weight: `cargo bench -p nnrs-bench --bench gemm --
/// transpose`.
///
/// # Panics
/// When `src` or `dst` does not hold `width * height` values.
///
/// # Example
/// ```
/// // [[1, 2, 3], [4, 5, 6]] -> [[1, 4], [2, 5], [3, 6]]
/// let mut t = [0.0; 6];
/// nncore::kernels::transpose(&[1., 2., 3., 4., 5., 6.], &mut t, 3, 2);
/// assert_eq!(t, [1., 4., 2., 5., 3., 6.]);
/// ```
pub fn transpose(src: &[f32], dst: &mut [f32], width: usize, height: usize) {
    transpose_with(best(), src, dst, width, height);
}

/// [`transpose`] with a chosen variant (AVX2 and the portable variant
/// both run the `transpose` crate).
///
/// # Panics
/// As [`transpose`], and when the CPU cannot run `variant`.
pub fn transpose_with(variant: Variant, src: &[f32], dst: &mut [f32], width: usize, height: usize) {
    assert_eq!(
        width.checked_mul(height),
        Some(src.len()),
        "transpose: source length"
    );
    assert_eq!(src.len(), dst.len(), "transpose: destination length");
    match variant {
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512 => {
            assert!(supports(Variant::Avx512), "this CPU lacks AVX-512F or FMA");
            // SAFETY: the CPU has AVX-512F (checked above); the lengths
            // were checked.
            unsafe { transpose_avx512(src, width, dst, height, width, height) }
        }
        _ => transpose::transpose(src, dst, width, height),
    }
}

/// [`transpose`] of a block inside larger row-major matrices: element
/// `(r, c)` of the `height x width` block is `src[r * src_stride + c]`, and
/// goes to `dst[c * dst_stride + r]`.
///
/// # Panics
/// When a stride is shorter than the block's rows, or `src` / `dst` end
/// before the block does.
pub(crate) fn transpose_block(
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    width: usize,
    height: usize,
) {
    transpose_block_with(best(), src, src_stride, dst, dst_stride, width, height);
}

/// [`transpose_block`] with a chosen variant (AVX2 runs the portable
/// loop).
fn transpose_block_with(
    variant: Variant,
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    width: usize,
    height: usize,
) {
    if width == 0 || height == 0 {
        return;
    }
    assert!(
        src_stride >= width && dst_stride >= height,
        "transpose_block: strides"
    );
    assert!(
        src.len() >= (height - 1) * src_stride + width,
        "transpose_block: source"
    );
    assert!(
        dst.len() >= (width - 1) * dst_stride + height,
        "transpose_block: destination"
    );
    #[cfg(target_arch = "x86_64")]
    if variant == Variant::Avx512 {
        assert!(supports(Variant::Avx512), "this CPU lacks AVX-512F or FMA");
        // SAFETY: the CPU has AVX-512F; the extents were checked above.
        unsafe { transpose_avx512(src, src_stride, dst, dst_stride, width, height) };
        return;
    }
    for r0 in (0..height).step_by(16) {
        for c0 in (0..width).step_by(16) {
            for r in r0..(r0 + 16).min(height) {
                for c in c0..(c0 + 16).min(width) {
                    dst[c * dst_stride + r] = src[r * src_stride + c];
                }
            }
        }
    }
}

/// [`transpose`] in 16 x 16 register tiles; the ragged right and bottom
/// edges element by element.
///
/// # Safety
/// The CPU supports AVX-512F; the block lies inside `src` and `dst` (see
/// [`transpose_block`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    width: usize,
    height: usize,
) {
    use std::arch::x86_64::{
        __m512, _mm512_castpd_ps, _mm512_castps_pd, _mm512_loadu_ps, _mm512_shuffle_f32x4,
        _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd,
        _mm512_unpacklo_ps,
    };
    let (w16, h16) = (width / 16 * 16, height / 16 * 16);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // Blocks of 128 x 128 values: a block's source rows and destination
    // rows are 128 pages each when rows are 4 KiB, which the TLB holds;
    // a whole 16-row strip at once would touch every destination page.
    const BLOCK: usize = 128;
    for rb in (0..h16).step_by(BLOCK) {
        for cb in (0..w16).step_by(BLOCK) {
            for r0 in (rb..(rb + BLOCK).min(h16)).step_by(16) {
                for c0 in (cb..(cb + BLOCK).min(w16)).step_by(16) {
                    // SAFETY: rows r0..r0+16 and columns c0..c0+16 lie inside
                    // `src` (height x width); the stores write rows c0..c0+16,
                    // columns r0..r0+16 of `dst` (width x height).
                    unsafe {
                        let mut r: [__m512; 16] = std::array::from_fn(|i| {
                            _mm512_loadu_ps(s.add((r0 + i) * src_stride + c0))
                        });
                        // Interleave pairs of rows (32-bit), then pairs of pairs
                        // (64-bit), then 128-bit lanes twice: row i of the result
                        // is column i of the tile.
                        let mut t: [__m512; 16] = std::array::from_fn(|i| {
                            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                            if i % 2 == 0 {
                                _mm512_unpacklo_ps(a, b)
                            } else {
                                _mm512_unpackhi_ps(a, b)
                            }
                        });
                        for q in 0..4 {
                            let (t0, t1, t2, t3) = (
                                _mm512_castps_pd(t[4 * q]),
                                _mm512_castps_pd(t[4 * q + 1]),
                                _mm512_castps_pd(t[4 * q + 2]),
                                _mm512_castps_pd(t[4 * q + 3]),
                            );
                            r[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
                            r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
                            r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
                            r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
                        }
                        for h in 0..2 {
                            for j in 0..4 {
                                let (a, b) = (r[8 * h + j], r[8 * h + 4 + j]);
                                t[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                                t[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
                            }
                        }
                        for j in 0..8 {
                            let (a, b) = (t[j], t[8 + j]);
                            r[j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                            r[8 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
                        }
                        for (i, v) in r.iter().enumerate() {
                            _mm512_storeu_ps(d.add((c0 + i) * dst_stride + r0), *v);
                        }
                    }
                }
            }
        }
    }
    for r in 0..height {
        let cols = if r < h16 { w16..width } else { 0..width };
        for c in cols {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

#[cfg(test)]
mod transpose_tests {
    use super::*;

    #[test]
    fn every_variant_transposes_like_the_transpose_crate() {
        for &(w, h) in &[
            (16, 16),
            (32, 48),
            (17, 33),
            (1024, 64),
            (5, 3),
            (64, 1),
            (0, 7),
            (40, 100),
        ] {
            let src: Vec<f32> = (0..w * h).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut expected = vec![0.0; w * h];
            transpose::transpose(&src, &mut expected, w, h);
            for v in available_variants() {
                let mut got = vec![f32::NAN; w * h];
                transpose_with(v, &src, &mut got, w, h);
                assert_eq!(got, expected, "{v:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn blocks_inside_larger_matrices_transpose_in_place() {
        // A 40-row, 37-column block at row 3, column 5 of a 50 x 90
        // matrix, into rows 2.., columns 4.. of an 80 x 60 one; the rest
        // untouched.
        let (sw, dw) = (90, 60);
        let src: Vec<f32> = (0..50 * sw).map(|i| i as f32).collect();
        for variant in available_variants() {
            let mut dst = vec![-1.0; 80 * dw];
            let (width, height) = (37, 40);
            let off = 2 * dw + 4;
            transpose_block_with(
                variant,
                &src[3 * sw + 5..],
                sw,
                &mut dst[off..],
                dw,
                width,
                height,
            );
            for (i, v) in dst.iter().enumerate() {
                let (row, col) = (i / dw, i % dw);
                let inside = (2..2 + width).contains(&row) && (4..4 + height).contains(&col);
                let expected = if inside {
                    src[(3 + col - 4) * sw + 5 + row - 2]
                } else {
                    -1.0
                };
                assert_eq!(*v, expected, "{variant:?} dst ({row}, {col})");
            }
        }
    }
}
