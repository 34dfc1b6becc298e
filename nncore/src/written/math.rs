//! The operations of a written forward on tensors: values and gradients.
//!
//! Shapes follow PyTorch's rules for 2-D tensors: element-wise binary
//! operations broadcast a dimension of size 1 against any size, and their
//! gradients are summed back over the broadcast dimension.

use crate::activation::{gelu, gelu_derivative, sigmoid, tanh};
use crate::kernels::vmath::exp;
use crate::kernels::{map_into, zip_map_into};
use crate::ops::ensure_shape;
use crate::{Dims, GeluApproximate, Tensor};

/// An element-wise function of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// `max(x, 0)`.
    Relu,
    /// `x` where `x > 0`, else `slope * x`.
    LeakyRelu(f32),
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x * Phi(x)`, exactly or with the tanh approximation.
    Gelu(GeluApproximate),
    /// `exp(x)`.
    Exp,
    /// `ln(x)`.
    Log,
    /// `sqrt(x)`.
    Sqrt,
}

/// A tensor combined with a scalar `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarOp {
    /// `x + s`.
    Add,
    /// `x - s`.
    Sub,
    /// `s - x`.
    RSub,
    /// `x * s`.
    Mul,
    /// `x / s`.
    Div,
    /// `s / x`.
    RDiv,
}

/// Two tensors combined element-wise, with broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b` (element-wise, PyTorch's `*`; never a matrix product).
    Mul,
    /// `a / b`.
    Div,
}

pub(crate) fn unary_into(k: Unary, x: &Tensor, out: &mut Tensor) {
    ensure_shape(out, x.nrows(), x.ncols());
    let (x, o) = (x.as_slice(), out.as_mut_slice());
    match k {
        Unary::Relu => map_into(x, o, |v| if v < 0.0 { 0.0 } else { v }),
        Unary::LeakyRelu(s) => map_into(x, o, |v| if v > 0.0 { v } else { v * s }),
        Unary::Sigmoid => map_into(x, o, sigmoid),
        Unary::Tanh => map_into(x, o, tanh),
        Unary::Gelu(a) => map_into(
            x,
            o,
            #[inline(always)]
            |v| gelu(v, a),
        ),
        Unary::Exp => map_into(x, o, exp),
        Unary::Log => map_into(x, o, f32::ln),
        Unary::Sqrt => map_into(x, o, f32::sqrt),
    }
}

/// `dx = g * f'(x)` given the input `x` and output `y`.
pub(crate) fn unary_grad(k: Unary, x: &Tensor, y: &Tensor, g: &Tensor, dx: &mut Tensor) {
    ensure_shape(dx, g.nrows(), g.ncols());
    let (x, y, g, d) = (x.as_slice(), y.as_slice(), g.as_slice(), dx.as_mut_slice());
    match k {
        Unary::Relu => zip_map_into(g, y, d, |g, y| if y > 0.0 { g } else { 0.0 }),
        Unary::LeakyRelu(s) => zip_map_into(g, x, d, |g, x| if x > 0.0 { g } else { g * s }),
        Unary::Sigmoid => zip_map_into(g, y, d, |g, y| g * (y * (1.0 - y))),
        Unary::Tanh => zip_map_into(g, y, d, |g, y| g * (1.0 - y * y)),
        Unary::Gelu(a) => zip_map_into(
            g,
            x,
            d,
            #[inline(always)]
            |g, x| g * gelu_derivative(x, a),
        ),
        Unary::Exp => zip_map_into(g, y, d, |g, y| g * y),
        Unary::Log => zip_map_into(g, x, d, |g, x| g / x),
        Unary::Sqrt => zip_map_into(g, y, d, |g, y| g / (2.0 * y)),
    }
}

pub(crate) fn scalar_into(op: ScalarOp, s: f32, x: &Tensor, out: &mut Tensor) {
    ensure_shape(out, x.nrows(), x.ncols());
    let (x, o) = (x.as_slice(), out.as_mut_slice());
    match op {
        ScalarOp::Add => map_into(x, o, |v| v + s),
        ScalarOp::Sub => map_into(x, o, |v| v - s),
        ScalarOp::RSub => map_into(x, o, |v| s - v),
        ScalarOp::Mul => map_into(x, o, |v| v * s),
        ScalarOp::Div => map_into(x, o, |v| v / s),
        ScalarOp::RDiv => map_into(x, o, |v| s / v),
    }
}

/// `dx` of a scalar operation, given its input `x`.
pub(crate) fn scalar_grad(op: ScalarOp, s: f32, x: &Tensor, g: &Tensor, dx: &mut Tensor) {
    ensure_shape(dx, g.nrows(), g.ncols());
    let (g_, d) = (g.as_slice(), dx.as_mut_slice());
    match op {
        ScalarOp::Add | ScalarOp::Sub => d.copy_from_slice(g_),
        ScalarOp::RSub => map_into(g_, d, |g| -g),
        ScalarOp::Mul => map_into(g_, d, |g| g * s),
        ScalarOp::Div => map_into(g_, d, |g| g / s),
        // d(s / x) = -s / x^2.
        ScalarOp::RDiv => zip_map_into(g_, x.as_slice(), d, |g, x| -g * (s / x) / x),
    }
}

/// The broadcast shape of two 2-D shapes, or PyTorch's message.
pub(crate) fn broadcast_shape(
    a: (usize, usize),
    b: (usize, usize),
) -> Result<(usize, usize), String> {
    let dim = |i: usize, x: usize, y: usize| {
        if x == y || y == 1 {
            Ok(x)
        } else if x == 1 {
            Ok(y)
        } else {
            Err(format!(
                "The size of tensor a ({x}) must match the size of tensor b ({y}) at non-singleton dimension {i}"
            ))
        }
    };
    let cols = dim(1, a.1, b.1)?;
    let rows = dim(0, a.0, b.0)?;
    Ok((rows, cols))
}

/// The index into a `(rows, cols)` column-major tensor broadcast to a
/// larger shape, for element `(i, j)` of the larger one.
#[inline]
fn at(t: &Tensor, i: usize, j: usize) -> usize {
    let (r, c) = t.shape();
    let i = if r == 1 { 0 } else { i };
    let j = if c == 1 { 0 } else { j };
    j * r + i
}

/// `out = f(a, b)` element-wise with broadcasting, into the broadcast shape.
fn broadcast_map(a: &Tensor, b: &Tensor, out: &mut Tensor, f: impl Fn(f32, f32) -> f32 + Sync) {
    if a.shape() == b.shape() {
        ensure_shape(out, a.nrows(), a.ncols());
        zip_map_into(a.as_slice(), b.as_slice(), out.as_mut_slice(), f);
        return;
    }
    let (rows, cols) = (a.nrows().max(b.nrows()), a.ncols().max(b.ncols()));
    let (rows, cols) = if a.nrows() == 0 || b.nrows() == 0 {
        (0, cols)
    } else {
        (rows, cols)
    };
    let (rows, cols) = if a.ncols() == 0 || b.ncols() == 0 {
        (rows, 0)
    } else {
        (rows, cols)
    };
    ensure_shape(out, rows, cols);
    let (av, bv) = (a.as_slice(), b.as_slice());
    let o = out.as_mut_slice();
    for j in 0..cols {
        for i in 0..rows {
            o[j * rows + i] = f(av[at(a, i, j)], bv[at(b, i, j)]);
        }
    }
}

pub(crate) fn binary_into(
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    out: &mut Tensor,
) -> Result<(), String> {
    broadcast_shape(a.shape(), b.shape())?;
    match op {
        Binary::Add => broadcast_map(a, b, out, |x, y| x + y),
        Binary::Sub => broadcast_map(a, b, out, |x, y| x - y),
        Binary::Mul => broadcast_map(a, b, out, |x, y| x * y),
        Binary::Div => broadcast_map(a, b, out, |x, y| x / y),
    }
    Ok(())
}

/// The gradient of a binary operation for operand `a` (`first`) or `b`,
/// at the output's shape (still to be reduced to the operand's shape).
pub(crate) fn binary_grad(
    op: Binary,
    first: bool,
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    d: &mut Tensor,
) {
    match (op, first) {
        (Binary::Add, _) | (Binary::Sub, true) => crate::ops::copy_into(g, d),
        (Binary::Sub, false) => {
            ensure_shape(d, g.nrows(), g.ncols());
            map_into(g.as_slice(), d.as_mut_slice(), |g| -g);
        }
        (Binary::Mul, true) => broadcast_map(g, b, d, |g, b| g * b),
        (Binary::Mul, false) => broadcast_map(g, a, d, |g, a| g * a),
        (Binary::Div, true) => broadcast_map(g, b, d, |g, b| g / b),
        (Binary::Div, false) => {
            // PyTorch: -grad * ((a / b) / b).
            ensure_shape(d, g.nrows(), g.ncols());
            let o = d.as_mut_slice();
            let (rows, cols) = g.shape();
            let (av, bv) = (a.as_slice(), b.as_slice());
            for j in 0..cols {
                for i in 0..rows {
                    let (x, y) = (av[at(a, i, j)], bv[at(b, i, j)]);
                    o[j * rows + i] = -g[(i, j)] * ((x / y) / y);
                }
            }
        }
    }
}

/// Adds `src` into `dst` (or copies it there when `live` is false), summed
/// over the dimensions along which `shape` was broadcast to `src`'s shape.
pub(crate) fn accumulate(dst: &mut Tensor, live: &mut bool, src: &Tensor, shape: (usize, usize)) {
    if src.shape() == shape {
        if *live {
            let d = dst.as_mut_slice();
            for (d, s) in d.iter_mut().zip(src.as_slice()) {
                *d += *s;
            }
        } else {
            crate::ops::copy_into(src, dst);
        }
    } else {
        if !*live {
            ensure_shape(dst, shape.0, shape.1);
            dst.fill(0.0);
        }
        let (rows, cols) = src.shape();
        let s = src.as_slice();
        for j in 0..cols {
            for i in 0..rows {
                let k = at(dst, i, j);
                dst.as_mut_slice()[k] += s[j * rows + i];
            }
        }
    }
    *live = true;
}

/// Which axis a `dim` argument names for a 2-D tensor (`true`: features),
/// or PyTorch's message.
pub(crate) fn features_axis(dim: i64) -> Result<bool, String> {
    match dim {
        1 | -1 => Ok(true),
        0 | -2 => Ok(false),
        d => Err(format!(
            "Dimension out of range (expected to be in range of [-2, 1], but got {d})"
        )),
    }
}

/// An axis of a value, as `narrow`, `chunk` and `cat` see it: its rows
/// (dimension 0, the batch), or its columns in runs of `unit` values
/// (dimension 1: the features, `unit = 1`, or an image's channels,
/// `unit = H*W`; channels are the outermost per-sample dimension, so a run
/// of channels is a run of columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Axis {
    pub(crate) features: bool,
    pub(crate) unit: usize,
}

impl Axis {
    /// The length along the axis of a `rows x cols` value.
    pub(crate) fn size(self, rows: usize, cols: usize) -> usize {
        if self.features {
            cols / self.unit.max(1)
        } else {
            rows
        }
    }

    /// The sample shape after keeping `len` along the axis.
    pub(crate) fn narrowed(self, d: Dims, len: usize) -> Dims {
        if !self.features {
            return d;
        }
        let mut v = [0usize; crate::MAX_DIMS];
        let s = d.as_slice();
        v[..s.len()].copy_from_slice(s);
        v[0] = len;
        Dims::new(&v[..s.len()]).unwrap_or(d)
    }
}

/// The axis PyTorch's `dim` names on samples of shape `d`: 0 (or
/// `-rank`) is the batch, 1 the features or channels.
pub(crate) fn axis(dim: i64, d: Dims) -> Result<Axis, String> {
    let rank = d.rank() as i64 + 1;
    let k = if dim < 0 { dim + rank } else { dim };
    if !(0..rank).contains(&k) {
        return Err(format!(
            "Dimension out of range (expected to be in range of [{}, {}], but got {dim})",
            -rank,
            rank - 1
        ));
    }
    match k {
        0 => Ok(Axis {
            features: false,
            unit: 1,
        }),
        1 => Ok(Axis {
            features: true,
            unit: d.as_slice()[1..].iter().product(),
        }),
        _ => Err(format!(
            "dimension {dim} of a {rank}-d tensor: a written forward narrows, chunks and concatenates along dimension 0 (the batch) or 1 (the channels) only"
        )),
    }
}

/// The sample shape of an element-wise operation on samples `a` and `b`:
/// `None` for flat samples (the result's columns decide), `a` when both
/// have that shape; images broadcast over the batch only.
pub(crate) fn binary_dims(a: Dims, b: Dims) -> Result<Option<Dims>, String> {
    if a.rank() == 1 && b.rank() == 1 {
        Ok(None)
    } else if a == b {
        Ok(Some(a))
    } else {
        Err(format!(
            "The size of tensor a {:?} must match the size of tensor b {:?} (per sample; a written forward broadcasts images over the batch only)",
            a, b
        ))
    }
}

/// The sample shape of `torch.cat` along `ax` of samples `ds`, checking
/// that they agree in every other dimension (`None` for flat samples: the
/// result's columns decide).
pub(crate) fn cat_dims(ax: Axis, ds: &[Dims]) -> Result<Option<Dims>, String> {
    let first = *ds
        .first()
        .ok_or("torch.cat(): expected a non-empty list of Tensors")?;
    if ds.iter().all(|d| d.rank() == 1) {
        return Ok(None);
    }
    let mut channels = 0;
    for (n, d) in ds.iter().enumerate() {
        let (s, f) = (d.as_slice(), first.as_slice());
        let other = if ax.features { &s[1..] } else { s };
        let want = if ax.features { &f[1..] } else { f };
        if d.rank() != first.rank() {
            return Err(format!(
                "Tensors must have same number of dimensions: got {} and {}",
                first.rank() + 1,
                d.rank() + 1
            ));
        }
        if let Some(k) = other.iter().zip(want).position(|(a, b)| a != b) {
            return Err(format!(
                "Sizes of tensors must match except in dimension {}. Expected size {} but got size {} for tensor number {n} in the list.",
                usize::from(ax.features),
                want[k],
                other[k]
            ));
        }
        channels += s[0];
    }
    Ok(Some(if ax.features {
        ax.narrowed(first, channels)
    } else {
        first
    }))
}

/// The axis of softmax along `dim` on samples of shape `d`: features
/// (`true`) or batch; images are refused.
pub(crate) fn softmax_axis(dim: i64, d: Dims) -> Result<bool, String> {
    if d.rank() > 1 {
        return Err(format!(
            "softmax along dimension {dim} of a {}-d tensor is not supported in a written forward: flatten the samples first",
            d.rank() + 1
        ));
    }
    features_axis(dim)
}

/// Softmax (or log-softmax) along features or batch.
pub(crate) fn softmax_into(x: &Tensor, features: bool, log: bool, out: &mut Tensor) {
    let (rows, cols) = x.shape();
    ensure_shape(out, rows, cols);
    let (lines, len) = if features { (rows, cols) } else { (cols, rows) };
    let idx = |line: usize, k: usize| {
        if features {
            k * rows + line
        } else {
            line * rows + k
        }
    };
    let (xs, o) = (x.as_slice(), out.as_mut_slice());
    for line in 0..lines {
        let max = (0..len)
            .map(|k| xs[idx(line, k)])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for k in 0..len {
            sum += exp(xs[idx(line, k)] - max);
        }
        if log {
            let lse = sum.ln();
            for k in 0..len {
                o[idx(line, k)] = xs[idx(line, k)] - max - lse;
            }
        } else {
            for k in 0..len {
                o[idx(line, k)] = exp(xs[idx(line, k)] - max) / sum;
            }
        }
    }
}

pub(crate) fn softmax_grad(y: &Tensor, features: bool, log: bool, g: &Tensor, d: &mut Tensor) {
    let (rows, cols) = y.shape();
    ensure_shape(d, rows, cols);
    let (lines, len) = if features { (rows, cols) } else { (cols, rows) };
    let idx = |line: usize, k: usize| {
        if features {
            k * rows + line
        } else {
            line * rows + k
        }
    };
    let (ys, gs, o) = (y.as_slice(), g.as_slice(), d.as_mut_slice());
    for line in 0..lines {
        if log {
            // dx = g - softmax * sum(g).
            let sum: f32 = (0..len).map(|k| gs[idx(line, k)]).sum();
            for k in 0..len {
                let i = idx(line, k);
                o[i] = gs[i] - ys[i].exp() * sum;
            }
        } else {
            // dx = y * (g - sum(g * y)).
            let dot: f32 = (0..len).map(|k| gs[idx(line, k)] * ys[idx(line, k)]).sum();
            for k in 0..len {
                let i = idx(line, k);
                o[i] = ys[i] * (gs[i] - dot);
            }
        }
    }
}

/// Resolves PyTorch's `narrow(dim, start, length)` on a dimension of
/// `size`: the first index, or PyTorch's message.
pub(crate) fn narrow_start(size: usize, start: i64, length: i64) -> Result<usize, String> {
    if length < 0 {
        return Err("narrow(): length must be non-negative.".into());
    }
    let size_i = size as i64;
    if start < -size_i || start > size_i {
        return Err(format!(
            "start out of range (expected to be in range of [{}, {size}], but got {start})",
            -size_i
        ));
    }
    let start = if start < 0 { start + size_i } else { start };
    if start + length > size_i {
        return Err(format!(
            "start ({start}) + length ({length}) exceeds dimension size ({size})."
        ));
    }
    Ok(start as usize)
}

/// Copies the slice `[start, start + len)` of `x` along an axis into `out`.
pub(crate) fn narrow_into(x: &Tensor, features: bool, start: usize, len: usize, out: &mut Tensor) {
    let (rows, cols) = x.shape();
    if features {
        ensure_shape(out, rows, len);
        out.as_mut_slice()
            .copy_from_slice(&x.as_slice()[start * rows..(start + len) * rows]);
    } else {
        ensure_shape(out, len, cols);
        for j in 0..cols {
            out.as_mut_slice()[j * len..(j + 1) * len]
                .copy_from_slice(&x.as_slice()[j * rows + start..j * rows + start + len]);
        }
    }
}

/// Adds `g` into the slice `[start, ..)` of `dst` along an axis (`dst`, of
/// `shape`, is zeroed first when not `live`).
pub(crate) fn narrow_accumulate(
    dst: &mut Tensor,
    live: &mut bool,
    g: &Tensor,
    shape: (usize, usize),
    features: bool,
    start: usize,
) {
    if !*live {
        ensure_shape(dst, shape.0, shape.1);
        dst.fill(0.0);
        *live = true;
    }
    let rows = shape.0;
    let (grows, gcols) = g.shape();
    let d = dst.as_mut_slice();
    for j in 0..gcols {
        let (di, dj) = if features { (0, start + j) } else { (start, j) };
        let at = dj * rows + di;
        for (d, g) in d[at..at + grows]
            .iter_mut()
            .zip(&g.as_slice()[j * grows..(j + 1) * grows])
        {
            *d += *g;
        }
    }
}

/// The shape of the concatenation of tensors of `shapes` along an axis, or
/// PyTorch's message.
pub(crate) fn cat_shape(
    shapes: impl Iterator<Item = (usize, usize)>,
    features: bool,
) -> Result<(usize, usize), String> {
    let mut out: Option<(usize, usize)> = None;
    for (n, (r, c)) in shapes.enumerate() {
        out = Some(match out {
            None => (r, c),
            Some((or, oc)) => {
                let (keep, other, dim) = if features { (or, r, 0) } else { (oc, c, 1) };
                if keep != other {
                    return Err(format!(
                        "Sizes of tensors must match except in dimension {}. Expected size {keep} but got size {other} for tensor number {n} in the list.",
                        1 - dim
                    ));
                }
                if features { (or, oc + c) } else { (or + r, oc) }
            }
        });
    }
    out.ok_or_else(|| "torch.cat(): expected a non-empty list of Tensors".to_string())
}

/// Writes `x` into `out` at offset `start` along an axis (`out` has the
/// concatenated shape).
pub(crate) fn cat_place(x: &Tensor, features: bool, start: usize, out: &mut Tensor) {
    let rows = out.nrows();
    if features {
        let n = x.len();
        out.as_mut_slice()[start * rows..start * rows + n].copy_from_slice(x.as_slice());
    } else {
        let xr = x.nrows();
        for j in 0..x.ncols() {
            out.as_mut_slice()[j * rows + start..j * rows + start + xr]
                .copy_from_slice(&x.as_slice()[j * xr..(j + 1) * xr]);
        }
    }
}

/// PyTorch's chunk sizes: `chunks` pieces of `ceil(size / chunks)`, the
/// last one smaller, fewer pieces when they run out.
pub(crate) fn chunk_sizes(size: usize, chunks: i64) -> Result<(usize, usize), String> {
    if chunks <= 0 {
        return Err(format!(
            "chunk expects `chunks` to be greater than 0, got: {chunks}"
        ));
    }
    let chunks = chunks as usize;
    let split = size.div_ceil(chunks).max(1);
    let count = if size == 0 {
        chunks
    } else {
        size.div_ceil(split)
    };
    Ok((split, count))
}
