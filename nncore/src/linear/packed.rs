//! `Linear`'s weight laid out for small inference batches.
//!
//! The batch-1 kernel ([`crate::kernels::row_packed`]) reads `W^T` one row
//! (one input feature) at a time. In the weight as `Param` holds it, a row
//! of `W^T` is `out_features` values long and starts wherever the previous
//! one ended, so most vector loads straddle two cache lines (SimpleNet's
//! `fc1`: 200-byte rows), and the last block of a row reads into the next
//! one. The packed copy pads every row to a multiple of 16 values with
//! zeros and starts it on a 64-byte boundary, with the bias padded the same
//! way: on the AVX-512 VM the 1x100 by 100x50 product went from 288 ns to
//! 158 ns with the same kernel.
//!
//! The copy is made once [`PACK_AFTER_ROWS`] rows have gone through the
//! layer without the weight changing (a loop that updates the weight
//! between single forwards never pays for it), is dropped by every
//! mutable access to the layer's parameters, and remembers the versions
//! of the weight and bias it was made from, so a stale copy is never used.
//! Without a current copy the layer runs the same kernels on the weight as
//! it is (AVX-512, masked loads) or on [`with_padded`]'s scratch copy, so
//! whether the copy exists never changes an output's bits.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Param;
use crate::kernels::{PACK_LANES, Row1Plan};

/// Rows of input that go through one weight before it is packed: packing
/// SimpleNet's `fc1` costs about what 20 batch-1 products save.
pub(super) const PACK_AFTER_ROWS: usize = 32;

/// One 64-byte line of 16 values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; PACK_LANES]);

fn as_values_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as for `as_values`; the borrow is unique.
    unsafe {
        std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), lines.len() * PACK_LANES)
    }
}

/// The packed row stride for `out_features` outputs.
fn stride_for(out_features: usize) -> usize {
    out_features.next_multiple_of(PACK_LANES).max(PACK_LANES)
}

/// Copies the column-major `out x in` weight `w` (`out` values per column,
/// or a bias: `out` values in all) into `dst` as rows of `stride` values,
/// each zero past its `out` values. `dst` holds whole rows.
fn pad_into(dst: &mut [f32], w: &[f32], out: usize, stride: usize) {
    let out = out.min(w.len());
    if out == 0 {
        dst.fill(0.0);
        return;
    }
    for (row, col) in dst.chunks_exact_mut(stride).zip(w.chunks_exact(out)) {
        row[..out].copy_from_slice(col);
        row[out..].fill(0.0);
    }
}

thread_local! {
    /// This thread's padded copy for [`with_padded`], grown once.
    static SCRATCH: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f(w, stride, bias)` on the weight and bias laid out exactly as a
/// [`Packed`] copy lays them out, in this thread's scratch buffer: so that
/// a product that has no current packed copy (the first small batches on
/// a weight version, every small-batch training forward) runs the same
/// kernels, summing in the same order, as one that has (same weights and
/// input, same output bits, in inference and in training).
pub(super) fn with_padded<R>(
    w: &crate::Tensor,
    bias: Option<&[f32]>,
    f: impl FnOnce(&[f32], usize, Option<&[f32]>) -> R,
) -> R {
    let (out_f, in_f) = w.shape();
    let stride = stride_for(out_f);
    let per_row = stride / PACK_LANES;
    let lines = (in_f + 1) * per_row;
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < lines {
            scratch.resize(lines, Line([0.0; PACK_LANES]));
        }
        let values = as_values_mut(&mut scratch[..lines]);
        let (wv, bv) = values.split_at_mut(in_f * stride);
        pad_into(wv, w.as_slice(), out_f, stride);
        let bias = bias.map(|b| {
            pad_into(bv, b, stride, stride);
            &*bv
        });
        f(wv, stride, bias)
    })
}

fn as_values(lines: &[Line]) -> &[f32] {
    // SAFETY: `Line` is `repr(C)` around `[f32; PACK_LANES]` with no
    // padding (64 bytes, alignment 64), so `lines` is
    // `lines.len() * PACK_LANES` consecutive, initialised `f32`s.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * PACK_LANES) }
}

/// `W^T` (`in_features` rows of `stride` values) then the tail block of
/// [`crate::kernels::packed_tail_len`], and the bias, padded.
pub(super) struct Packed {
    weight_version: u64,
    bias_version: Option<u64>,
    stride: usize,
    weight: Vec<Line>,
    bias: Option<Vec<Line>>,
    // The batch-1 kernel for this shape, picked once.
    row1: Row1Plan,
}

impl Packed {
    fn new(weight: &Param, bias: Option<&Param>) -> Self {
        let w = weight.value();
        let stride = stride_for(w.nrows());
        let per_row = stride / PACK_LANES;
        let rows = w.ncols() * per_row;
        let (k, n) = (w.ncols(), w.nrows());
        let tail = crate::kernels::packed_tail_len(k, n) / PACK_LANES;
        let mut lines = vec![Line([0.0; PACK_LANES]); rows + tail];
        let (main, tail) = as_values_mut(&mut lines).split_at_mut(rows * PACK_LANES);
        pad_into(main, w.as_slice(), n, stride);
        crate::kernels::pack_tail(tail, w.as_slice(), k, n);
        let bias_lines = bias.map(|b| {
            let mut l = vec![Line([0.0; PACK_LANES]); per_row];
            pad_into(as_values_mut(&mut l), b.value().as_slice(), stride, stride);
            l
        });
        Self {
            weight_version: weight.version(),
            bias_version: bias.map(Param::version),
            stride,
            weight: lines,
            bias: bias_lines,
            row1: Row1Plan::new(k, n, stride),
        }
    }

    #[inline]
    fn matches(&self, weight: &Param, bias: Option<&Param>) -> bool {
        self.weight_version == weight.version() && self.bias_version == bias.map(Param::version)
    }

    /// The row stride of the packed `W^T`.
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// The packed `W^T`.
    pub(super) fn weight(&self) -> &[f32] {
        as_values(&self.weight)
    }

    /// The padded bias.
    pub(super) fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref().map(as_values)
    }

    /// [`Packed::row1`] into values not yet written; returns them written.
    ///
    /// # Safety
    /// As [`Packed::row1`].
    #[inline]
    pub(super) unsafe fn row1_uninit<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        relu: bool,
    ) -> &'y mut [f32] {
        // SAFETY: as `row1`; the plan writes every output.
        unsafe { self.row1.run_uninit(y, x, self.weight(), self.bias(), relu) }
    }

    /// `y = x W^T + b` (then `max(y, 0)` when `relu`) for one row, by the
    /// kernel picked for this shape when the copy was made: the same bits
    /// as [`crate::kernels::packed_unchecked`] on this copy.
    ///
    /// # Safety
    /// `x` holds the layer's `in_features` values, `y` room for its
    /// `out_features`.
    #[inline]
    pub(super) unsafe fn row1(&self, x: &[f32], y: &mut [f32], relu: bool) {
        // SAFETY: this copy's layout is the plan's; the caller's shapes.
        unsafe { self.row1.run(y, x, self.weight(), self.bias(), relu) }
    }
}

/// The packed copy of one layer, made on demand. Cloning a layer does not
/// clone it.
#[derive(Default)]
pub(super) struct PackedWeight {
    packed: OnceLock<Packed>,
    rows_seen: AtomicUsize,
}

impl PackedWeight {
    /// The packed weight for `rows` more rows, if it exists and is current,
    /// or once enough rows went through this weight to make it.
    pub(super) fn get(&self, weight: &Param, bias: Option<&Param>, rows: usize) -> Option<&Packed> {
        let p = match self.packed.get() {
            Some(p) => p,
            None => {
                if self.rows_seen.fetch_add(rows, Ordering::Relaxed) < PACK_AFTER_ROWS {
                    return None;
                }
                self.packed.get_or_init(|| Packed::new(weight, bias))
            }
        };
        p.matches(weight, bias).then_some(p)
    }

    /// The packed weight if it exists and is current (without counting
    /// rows towards making it).
    #[inline]
    pub(super) fn current(&self, weight: &Param, bias: Option<&Param>) -> Option<&Packed> {
        self.packed.get().filter(|p| p.matches(weight, bias))
    }

    /// Whether a copy exists (current or not).
    #[cfg(test)]
    pub(super) fn exists(&self) -> bool {
        self.packed.get().is_some()
    }

    /// Forgets the copy (the parameters are about to change).
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Clone for PackedWeight {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeight")
            .field("packed", &self.packed.get().is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scratch layout other CPUs fall back to is the packed copy's,
    /// value for value, over a scratch buffer left dirty by a larger one.
    #[test]
    fn the_scratch_copy_is_laid_out_as_the_packed_copy() {
        let big = crate::Linear::new(40, 70);
        with_padded(big.weight().value(), None, |_, _, _| ());
        for (k, n) in [(37usize, 23usize), (5, 1), (16, 32), (3, 0)] {
            let fc = crate::with_seed(1, || crate::Linear::new(k, n));
            let packed = Packed::new(fc.weight(), fc.bias());
            let bias = fc.bias().map(|b| b.value().as_slice());
            with_padded(fc.weight().value(), bias, |w, stride, b| {
                assert_eq!(stride, packed.stride());
                assert_eq!(w, &packed.weight()[..w.len()]);
                assert_eq!(b, packed.bias());
            });
        }
    }
}
