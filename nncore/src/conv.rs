//! 2-d convolution: [`Conv2d`], PyTorch's `nn.Conv2d`.
//!
//! Images are `(N, C*H*W)` tensors whose memory is in `CHWN` order (see
//! [`NdTensor`](crate::NdTensor)): the `N` values of one pixel are
//! contiguous. The convolution is then one matrix product per group on
//! the unfolded input (im2col): with `P = N*OH*OW` output positions and
//! `K = C/groups*KH*KW` taps, `out (P x OC) = cols (P x K) W^T`, where
//! `W` is PyTorch's weight `[OC, C/groups, KH, KW]` seen as an `OC x K`
//! matrix, exactly as a `Linear` with `K` inputs, and through the same
//! product. The `P x OC` result *is* the `(N, OC*OH*OW)` output in `CHWN`
//! order, so no copy follows. Unfolding copies runs of `N` values.

use std::fmt;
use std::ops::Range;

use crate::forward::{Backward, Forward, check_dims};
use crate::module::Module;
use crate::ops::{Trans, ensure_shape, matmul, matmul_bias};
use crate::shape::{Size2d, needs_image};
use crate::{Dims, Error, Generator, ModulePath, Param, Result, Tensor};

/// How much `Conv2d` pads its input (with zeros unless
/// [`Conv2dConfig::padding_mode`] says otherwise). A number or a pair
/// converts into [`Padding::Explicit`].
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::{Conv2dConfig, Padding};
/// let x = NdTensor::zeros(&[1, 1, 7, 6])?;
/// let same = Conv2dConfig::new(1, 1, (4, 3)).padding(Padding::Same).build()?;
/// assert_eq!(same.forward_nd(&x)?.shape(), vec![1, 1, 7, 6]);
/// let valid = Conv2dConfig::new(1, 1, 3).padding(Padding::Valid).build()?;
/// assert_eq!(valid.forward_nd(&x)?.shape(), vec![1, 1, 5, 4]);
/// let two = Conv2dConfig::new(1, 1, 3).padding((2, 0)).build()?;
/// assert_eq!(two.forward_nd(&x)?.shape(), vec![1, 1, 9, 4]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `padding=p` or `padding=(ph, pw)`: that many zeros on each side.
    Explicit(Size2d),
    /// `padding="same"`: the output has the input's height and width
    /// (stride 1 only); an odd total goes on the bottom and right, as in
    /// PyTorch.
    Same,
    /// `padding="valid"`: no padding.
    Valid,
}

/// What `Conv2d`'s padding holds: PyTorch's `padding_mode`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::{Conv2dConfig, PaddingMode};
/// let conv = Conv2dConfig::new(1, 1, 3).padding(1).padding_mode(PaddingMode::Reflect).build()?;
/// assert_eq!(
///     conv.to_string(),
///     "Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), padding_mode=reflect)"
/// );
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingMode {
    /// `"zeros"` (the default).
    #[default]
    Zeros,
    /// `"reflect"`: the input mirrored at its edge, the edge itself not
    /// repeated (`d c b | a b c d | c b a`); each padding must be smaller
    /// than the input's size along it.
    Reflect,
    /// `"replicate"`: the edge value repeated (`a a | a b c d | d d`).
    Replicate,
    /// `"circular"`: the input wrapped around (`c d | a b c d | a b`);
    /// each padding at most the input's size along it.
    Circular,
}

impl std::fmt::Display for PaddingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        })
    }
}

impl PaddingMode {
    /// The input index that padded index `i` (`-pad..size + pad`) reads,
    /// for a size the mode can pad (checked in `Conv2d::geometry`).
    fn source(self, i: isize, size: usize) -> usize {
        let n = size as isize;
        let j = match self {
            PaddingMode::Zeros | PaddingMode::Replicate => i.clamp(0, n - 1),
            PaddingMode::Reflect => {
                if i < 0 {
                    -i
                } else if i >= n {
                    2 * (n - 1) - i
                } else {
                    i
                }
            }
            PaddingMode::Circular => i.rem_euclid(n),
        };
        j as usize
    }
}

impl From<usize> for Padding {
    fn from(p: usize) -> Self {
        Padding::Explicit(p.into())
    }
}

impl From<(usize, usize)> for Padding {
    fn from(p: (usize, usize)) -> Self {
        Padding::Explicit(p.into())
    }
}

/// The options of a [`Conv2d`], with PyTorch's defaults (`stride=1`,
/// `padding=0`, `dilation=1`, `groups=1`, `bias=True`); `build` makes the
/// layer with PyTorch's initial weights.
///
/// # Example
/// ```
/// use nncore::{Conv2dConfig, Module, ModuleExt, Padding};
/// let conv = Conv2dConfig::new(4, 8, 3).stride(2).padding(1).groups(2).bias(false).build()?;
/// assert_eq!(
///     conv.to_string(),
///     "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2, bias=False)"
/// );
/// assert_eq!(conv.named_parameters()[0].1.shape(), &[8, 2, 3, 3]);
/// let same = Conv2dConfig::new(1, 2, (3, 4)).padding(Padding::Same).build()?;
/// assert_eq!(same.to_string(), "Conv2d(1, 2, kernel_size=(3, 4), stride=(1, 1), padding=same)");
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    in_channels: usize,
    out_channels: usize,
    kernel_size: Size2d,
    stride: Size2d,
    padding: Padding,
    dilation: Size2d,
    groups: usize,
    bias: bool,
    padding_mode: PaddingMode,
}

impl Conv2dConfig {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)` with the
    /// defaults.
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Into<Size2d>) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into(),
            stride: 1.into(),
            padding: Padding::Explicit(0.into()),
            dilation: 1.into(),
            groups: 1,
            bias: true,
            padding_mode: PaddingMode::Zeros,
        }
    }

    /// The step between windows.
    #[must_use]
    pub fn stride(mut self, stride: impl Into<Size2d>) -> Self {
        self.stride = stride.into();
        self
    }

    /// The padding around the input: a size, or [`Padding::Same`] /
    /// [`Padding::Valid`] (what it holds: [`Conv2dConfig::padding_mode`]).
    #[must_use]
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.padding = padding.into();
        self
    }

    /// The spacing between kernel taps.
    #[must_use]
    pub fn dilation(mut self, dilation: impl Into<Size2d>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// Splits channels into `groups` independent convolutions.
    #[must_use]
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Whether the layer has a bias.
    #[must_use]
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// What the padding holds: zeros (the default), or the input
    /// reflected, replicated or wrapped around ([`PaddingMode`]).
    #[must_use]
    pub fn padding_mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }

    /// The layer, initialised from the default generator as PyTorch
    /// initialises it (`kaiming_uniform_(a=sqrt(5))`, bias uniform in
    /// `±1/sqrt(fan_in)`): after `manual_seed(s)` the same numbers as
    /// `torch.manual_seed(s); nn.Conv2d(...)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for options PyTorch rejects (channels
    /// not divisible by `groups`, a zero size, `padding="same"` with a
    /// stride) or a weight too large to allocate.
    pub fn build(self) -> Result<Conv2d> {
        crate::with_default_generator(|g| self.build_with(g))
    }

    /// [`Conv2dConfig::build`] drawing from `generator`.
    ///
    /// # Errors
    /// As [`Conv2dConfig::build`].
    pub fn build_with(self, generator: &mut Generator) -> Result<Conv2d> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_owned()));
        if self.groups == 0 {
            return bad("groups must be a positive integer");
        }
        if !self.in_channels.is_multiple_of(self.groups) {
            return bad("in_channels must be divisible by groups");
        }
        if !self.out_channels.is_multiple_of(self.groups) {
            return bad("out_channels must be divisible by groups");
        }
        let (k, s, d) = (self.kernel_size, self.stride, self.dilation);
        if k.h == 0 || k.w == 0 || s.h == 0 || s.w == 0 || d.h == 0 || d.w == 0 {
            return bad("Conv2d: kernel_size, stride and dilation must be positive");
        }
        if self.padding == Padding::Same && (s.h != 1 || s.w != 1) {
            return bad("padding='same' is not supported for strided convolutions");
        }
        let taps = (self.in_channels / self.groups)
            .checked_mul(k.h)
            .and_then(|v| v.checked_mul(k.w));
        let n = taps.and_then(|t| t.checked_mul(self.out_channels));
        let Some((taps, n)) = taps
            .zip(n)
            .filter(|(_, n)| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
        else {
            return bad("Conv2d: the weight is too large to allocate");
        };
        // The bound of kaiming_uniform_(a=sqrt(5)) and of the bias is
        // 1/sqrt(fan_in), fan_in = in_channels/groups * kh * kw; the
        // weight is drawn in PyTorch's (row-major) order.
        let bound = if taps > 0 {
            (1.0 / (taps as f64).sqrt()) as f32
        } else {
            0.0
        };
        let mut w: Vec<f32> = Vec::new();
        w.try_reserve_exact(n).map_err(|_| {
            Error::InvalidArgument("Conv2d: the weight is too large to allocate".into())
        })?;
        w.resize(n, 0.0);
        generator.fill_uniform(&mut w, -bound, bound);
        let weight = Param::nd(
            Tensor::from_row_slice(self.out_channels, taps, &w),
            vec![self.out_channels, self.in_channels / self.groups, k.h, k.w],
        );
        let bias = self.bias.then(|| {
            let mut b = vec![0.0f32; self.out_channels];
            generator.fill_uniform(&mut b, -bound, bound);
            Param::vector(&b)
        });
        Ok(Conv2d {
            config: self,
            weight,
            bias,
            training: true,
            record: Record::default(),
        })
    }
}

/// PyTorch's `nn.Conv2d`: a 2-d convolution over `(N, C, H, W)` images,
/// padding with zeros or ([`PaddingMode`]) the input reflected,
/// replicated or wrapped around, with stride, dilation and groups.
///
/// Parameters: `weight` of shape `[out_channels, in_channels / groups,
/// kh, kw]` and `bias` of shape `[out_channels]`, in PyTorch's memory
/// order (state dicts and safetensors files exchange them unchanged).
/// Input `(N, in_channels, H, W)`, output `(N, out_channels, OH, OW)` with
/// `OH = (H + 2*ph - dh*(kh-1) - 1) / sh + 1` (likewise `OW`). Images go
/// in through [`ForwardExt::forward_nd`](crate::ForwardExt::forward_nd)
/// (or a chain that starts with an image); a wrong channel count or an
/// image smaller than the kernel is an error before any work, in
/// PyTorch's words.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// nncore::manual_seed(0);
/// let conv = Conv2d::new(1, 8, 3);
/// assert_eq!(conv.to_string(), "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1))");
/// let y = conv.forward_nd(&NdTensor::zeros(&[2, 1, 8, 8])?)?;
/// assert_eq!(y.shape(), vec![2, 8, 6, 6]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Conv2d {
    config: Conv2dConfig,
    weight: Param,
    bias: Option<Param>,
    training: bool,
    record: Record,
}

/// What the training forward keeps for backward, and the buffers of the
/// products (kept, so that a training step allocates nothing after the
/// first).
#[derive(Debug, Clone)]
struct Record {
    geom: Option<Geom>,
    // The unfolded input of each block of output rows, group by group
    // (`Pb x K`).
    cols: Vec<Tensor>,
    output: Tensor,
    scratch: Tensor,
    // The gradient seen as `P x OC`, one block of it, the unfolded input's
    // gradient, one group's weight gradient, and the input gradient.
    grad_out: Tensor,
    grad_block: Tensor,
    dcol: Tensor,
    dw_block: Tensor,
    grad_input: Tensor,
    // One group's weight rows (with groups).
    wbuf: Tensor,
    recorded: bool,
}

impl Default for Record {
    fn default() -> Self {
        let e = || Tensor::zeros(0, 0);
        Self {
            geom: None,
            cols: Vec::new(),
            output: e(),
            scratch: e(),
            grad_out: e(),
            grad_block: e(),
            dcol: e(),
            dw_block: e(),
            grad_input: e(),
            wbuf: e(),
            recorded: false,
        }
    }
}

/// How many values a block of unfolded input may hold (256 KiB: it stays
/// in L2 between being written and being multiplied).
const BLOCK_VALUES: usize = 1 << 16;

/// The sizes of one call: input `N x C x H x W`, output `OH x OW`, the
/// padding before the first row and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    top: usize,
    left: usize,
}

impl Geom {
    fn positions(&self) -> usize {
        self.n * self.oh * self.ow
    }
}

impl Conv2d {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)`: stride 1, no
    /// padding, a bias; weights from the default generator as in PyTorch.
    ///
    /// # Panics
    /// For a zero kernel size or a weight too large to allocate (see
    /// [`Conv2dConfig`] for the fallible form and the other options).
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Into<Size2d>) -> Self {
        Conv2dConfig::new(in_channels, out_channels, kernel_size)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The options the layer was built with.
    #[must_use]
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// The weight, `[out_channels, in_channels / groups, kh, kw]` (held
    /// as an `out_channels x (in_channels / groups * kh * kw)` matrix).
    #[must_use]
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The weight, mutably.
    pub fn weight_mut(&mut self) -> &mut Param {
        &mut self.weight
    }

    /// The bias, `[out_channels]`, if any.
    #[must_use]
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The bias, mutably.
    pub fn bias_mut(&mut self) -> Option<&mut Param> {
        self.bias.as_mut()
    }

    /// The output's sample shape `[out_channels, OH, OW]` for input
    /// samples of shape `dims`, and the call's sizes.
    fn geometry(&self, dims: Dims, n: usize) -> Result<Geom> {
        let cfg = &self.config;
        let (c, h, w) = dims.chw("Conv2d", n)?;
        if c != cfg.in_channels {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("Conv2d"),
                message: format!(
                    "Given groups={}, weight of size {:?}, expected input{:?} to have {} channels, but got {} channels instead",
                    cfg.groups,
                    self.weight.shape(),
                    dims.with_batch(n),
                    cfg.in_channels,
                    c
                ),
            });
        }
        let too_large = || Error::InvalidInput {
            path: ModulePath::leaf("Conv2d"),
            message: format!(
                "an input of shape {:?} with this layer's padding and dilation gives an output too large to allocate",
                dims.with_batch(n)
            ),
        };
        let (k, s, d) = (cfg.kernel_size, cfg.stride, cfg.dilation);
        let ek = |k: usize, d: usize| d.checked_mul(k - 1).and_then(|v| v.checked_add(1));
        let (ekh, ekw) = ek(k.h, d.h).zip(ek(k.w, d.w)).ok_or_else(too_large)?;
        let (top, bottom, left, right) = match cfg.padding {
            Padding::Explicit(p) => (p.h, p.h, p.w, p.w),
            Padding::Valid => (0, 0, 0, 0),
            Padding::Same => {
                let (th, tw) = (ekh - 1, ekw - 1);
                (th / 2, th - th / 2, tw / 2, tw - tw / 2)
            }
        };
        self.check_padding_mode(dims, n, (h, w), (top, bottom, left, right))?;
        let padded = |x: usize, a: usize, b: usize| x.checked_add(a)?.checked_add(b);
        let (ph, pw) = padded(h, top, bottom)
            .zip(padded(w, left, right))
            .ok_or_else(too_large)?;
        if ph < ekh || pw < ekw {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("Conv2d"),
                message: format!(
                    "Calculated padded input size per channel: ({ph} x {pw}). Kernel size: ({ekh} x {ekw}). Kernel size can't be greater than actual input size"
                ),
            });
        }
        let (oh, ow) = ((ph - ekh) / s.h + 1, (pw - ekw) / s.w + 1);
        // The output and one output row's unfolded input must be
        // addressable (a huge padding makes both huge).
        let fits = |v: Option<usize>| {
            v.filter(|v| v.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
        };
        let out = fits(
            n.checked_mul(cfg.out_channels)
                .and_then(|v| v.checked_mul(oh)?.checked_mul(ow)),
        );
        let row = fits(n.checked_mul(ow).and_then(|v| v.checked_mul(self.taps())));
        out.zip(row).ok_or_else(too_large)?;
        Ok(Geom {
            n,
            c,
            h,
            w,
            oh,
            ow,
            top,
            left,
        })
    }

    /// The paddings a reflecting or wrapping mode cannot take, in
    /// PyTorch's words (`F.pad`'s: the width is checked first).
    fn check_padding_mode(
        &self,
        dims: Dims,
        n: usize,
        (h, w): (usize, usize),
        (top, bottom, left, right): (usize, usize, usize, usize),
    ) -> Result<()> {
        let fail = |message: String| {
            Err(Error::InvalidInput {
                path: ModulePath::leaf("Conv2d"),
                message,
            })
        };
        let mode = self.config.padding_mode;
        if matches!(mode, PaddingMode::Reflect | PaddingMode::Replicate) && (h == 0 || w == 0) {
            return fail(format!(
                "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero dimensions for input, but got: {:?}",
                dims.with_batch(n)
            ));
        }
        match mode {
            PaddingMode::Zeros | PaddingMode::Replicate => Ok(()),
            PaddingMode::Reflect => {
                for (arg, dim, (a, b), size) in [(4, 3, (left, right), w), (6, 2, (top, bottom), h)]
                {
                    if a >= size || b >= size {
                        return fail(format!(
                            "Argument #{arg}: Padding size should be less than the corresponding input dimension, but got: padding ({a}, {b}) at dimension {dim} of input {:?}",
                            dims.with_batch(n)
                        ));
                    }
                }
                Ok(())
            }
            PaddingMode::Circular => {
                if [top, bottom].iter().any(|&p| p > h) || [left, right].iter().any(|&p| p > w) {
                    return fail("Padding value causes wrapping around more than once.".into());
                }
                Ok(())
            }
        }
    }

    fn out_dims(&self, g: &Geom) -> Dims {
        Dims::image(self.config.out_channels, g.oh, g.ow)
    }

    /// The output rows per block: a block's unfolded input (`N*OW` positions
    /// per output row, `K` taps each) stays within [`BLOCK_VALUES`], so it
    /// is still in cache when the product reads it.
    fn rows_per_block(&self, g: &Geom) -> usize {
        let per_row = (g.n * g.ow * self.taps()).max(1);
        (BLOCK_VALUES / per_row).clamp(1, g.oh.max(1))
    }

    /// `K`: the taps of one output value (`in_channels / groups * kh * kw`).
    fn taps(&self) -> usize {
        let c = &self.config;
        c.in_channels / c.groups * c.kernel_size.h * c.kernel_size.w
    }

    /// Unfolds output rows `rows` of group `group` of `x` into `col`
    /// (`N*OW*rows.len() x K`).
    fn im2col(&self, x: &[f32], g: &Geom, group: usize, rows: Range<usize>, col: &mut Tensor) {
        let cfg = &self.config;
        let cg = cfg.in_channels / cfg.groups;
        let (kh, kw) = (cfg.kernel_size.h, cfg.kernel_size.w);
        let n = g.n;
        let row_len = g.ow * n;
        let p = row_len * rows.len();
        ensure_shape(col, p, cg * kh * kw);
        let col = col.as_mut_slice();
        if cfg.padding_mode != PaddingMode::Zeros {
            self.for_each_tap_mapped(g, group, rows, |dst_at, src_at| {
                col[dst_at..dst_at + n].copy_from_slice(&x[src_at..src_at + n]);
            });
            return;
        }
        let sw = cfg.stride.w;
        for ci in 0..cg {
            let chan = group * cg + ci;
            for i in 0..kh {
                for j in 0..kw {
                    let k = (ci * kh + i) * kw + j;
                    let dst = &mut col[p * k..p * (k + 1)];
                    self.for_each_run(g, i, j, rows.clone(), |r, ow_lo, ow_hi, ih, iw_lo| {
                        let row = &mut dst[r * row_len..(r + 1) * row_len];
                        let Some(ih) = ih else {
                            row.fill(0.0);
                            return;
                        };
                        row[..ow_lo * n].fill(0.0);
                        row[ow_hi * n..].fill(0.0);
                        let base = (chan * g.h + ih) * g.w;
                        if sw == 1 {
                            let src = (base + iw_lo) * n;
                            row[ow_lo * n..ow_hi * n]
                                .copy_from_slice(&x[src..src + (ow_hi - ow_lo) * n]);
                        } else {
                            for (t, ow) in (ow_lo..ow_hi).enumerate() {
                                let src = (base + iw_lo + t * sw) * n;
                                row[ow * n..(ow + 1) * n].copy_from_slice(&x[src..src + n]);
                            }
                        }
                    });
                }
            }
        }
    }

    /// Adds `col` (the gradient of the unfolded output rows `rows` of
    /// group `group`) back onto the input gradient `dx`.
    fn col2im(&self, col: &Tensor, g: &Geom, group: usize, rows: Range<usize>, dx: &mut [f32]) {
        let cfg = &self.config;
        let cg = cfg.in_channels / cfg.groups;
        let (kh, kw) = (cfg.kernel_size.h, cfg.kernel_size.w);
        let n = g.n;
        let row_len = g.ow * n;
        let p = row_len * rows.len();
        let col = col.as_slice();
        if cfg.padding_mode != PaddingMode::Zeros {
            self.for_each_tap_mapped(g, group, rows, |src_at, dst_at| {
                crate::kernels::add_assign(&mut dx[dst_at..dst_at + n], &col[src_at..src_at + n]);
            });
            return;
        }
        let sw = cfg.stride.w;
        for ci in 0..cg {
            let chan = group * cg + ci;
            for i in 0..kh {
                for j in 0..kw {
                    let k = (ci * kh + i) * kw + j;
                    let src = &col[p * k..p * (k + 1)];
                    self.for_each_run(g, i, j, rows.clone(), |r, ow_lo, ow_hi, ih, iw_lo| {
                        let Some(ih) = ih else { return };
                        let row = &src[r * row_len..(r + 1) * row_len];
                        let base = (chan * g.h + ih) * g.w;
                        if sw == 1 {
                            let d = (base + iw_lo) * n;
                            let len = (ow_hi - ow_lo) * n;
                            crate::kernels::add_assign(
                                &mut dx[d..d + len],
                                &row[ow_lo * n..ow_hi * n],
                            );
                        } else {
                            for (t, ow) in (ow_lo..ow_hi).enumerate() {
                                let d = (base + iw_lo + t * sw) * n;
                                crate::kernels::add_assign(
                                    &mut dx[d..d + n],
                                    &row[ow * n..(ow + 1) * n],
                                );
                            }
                        }
                    });
                }
            }
        }
    }

    /// For a padding mode other than zeros: for every tap of group
    /// `group` and every output position of rows `rows`, the offset of its
    /// `N` values in the unfolded block (`P x K`, column-major) and the
    /// offset of the `N` input values it reads (the padded index mapped
    /// into the image by the mode).
    fn for_each_tap_mapped(
        &self,
        g: &Geom,
        group: usize,
        rows: Range<usize>,
        mut f: impl FnMut(usize, usize),
    ) {
        let cfg = &self.config;
        let mode = cfg.padding_mode;
        let cg = cfg.in_channels / cfg.groups;
        let (kh, kw) = (cfg.kernel_size.h, cfg.kernel_size.w);
        let (sh, sw) = (cfg.stride.h, cfg.stride.w);
        let (dh, dw) = (cfg.dilation.h, cfg.dilation.w);
        let n = g.n;
        let row_len = g.ow * n;
        let p = row_len * rows.len();
        for ci in 0..cg {
            let chan = group * cg + ci;
            for i in 0..kh {
                for j in 0..kw {
                    let k = (ci * kh + i) * kw + j;
                    for (r, oh) in rows.clone().enumerate() {
                        let ih = mode.source((oh * sh + i * dh) as isize - g.top as isize, g.h);
                        let base = (chan * g.h + ih) * g.w;
                        for ow in 0..g.ow {
                            let iw =
                                mode.source((ow * sw + j * dw) as isize - g.left as isize, g.w);
                            f(p * k + r * row_len + ow * n, (base + iw) * n);
                        }
                    }
                }
            }
        }
    }

    /// For kernel tap `(i, j)` and every output row `oh` in `rows`: its
    /// index in the block, the output columns `ow_lo..ow_hi` whose input
    /// pixel is inside the image, the input row (`None` when in the
    /// padding) and the input column of `ow_lo`.
    fn for_each_run(
        &self,
        g: &Geom,
        i: usize,
        j: usize,
        rows: Range<usize>,
        mut f: impl FnMut(usize, usize, usize, Option<usize>, usize),
    ) {
        let cfg = &self.config;
        let (sh, sw) = (cfg.stride.h, cfg.stride.w);
        let (dh, dw) = (cfg.dilation.h, cfg.dilation.w);
        // iw = ow*sw + j*dw - left must lie in 0..w.
        let off = j * dw;
        let ow_lo = if off >= g.left {
            0
        } else {
            (g.left - off).div_ceil(sw)
        };
        let ow_hi = if g.w + g.left > off {
            ((g.w + g.left - off - 1) / sw + 1).min(g.ow)
        } else {
            0
        };
        let ow_lo = ow_lo.min(ow_hi);
        let iw_lo = (ow_lo * sw + off).saturating_sub(g.left);
        let first = rows.start;
        for oh in rows {
            let ih = (oh * sh + i * dh).checked_sub(g.top).filter(|&ih| ih < g.h);
            f(oh - first, ow_lo, ow_hi, ih, iw_lo);
        }
    }

    /// The weight rows of group `group` (`OC/groups x K`): the weight
    /// itself for one group, else a copy in `buf`.
    fn group_weight<'a>(&'a self, group: usize, buf: &'a mut Tensor) -> &'a Tensor {
        let w = self.weight.value();
        let groups = self.config.groups;
        if groups == 1 {
            return w;
        }
        let ocg = self.config.out_channels / groups;
        ensure_shape(buf, ocg, w.ncols());
        buf.copy_from(&w.rows(group * ocg, ocg));
        buf
    }

    /// The convolution of `x` (samples of `g`) into `out`, block of output
    /// rows by block: unfold, multiply, place. With `keep`, every block's
    /// unfolded input stays in `cols` (group by group) for backward;
    /// without, `cols[0]` is the one scratch buffer.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &Tensor,
        g: &Geom,
        cols: &mut Vec<Tensor>,
        keep: bool,
        scratch: &mut Tensor,
        wbuf: &mut Tensor,
        out: &mut Tensor,
    ) {
        let cfg = &self.config;
        let groups = cfg.groups;
        let (p, oc) = (g.positions(), cfg.out_channels);
        let ocg = oc / groups;
        let rows = self.rows_per_block(g);
        let blocks = g.oh.div_ceil(rows).max(1);
        let count = if keep { groups * blocks } else { 1 };
        cols.truncate(count);
        cols.resize_with(count, || Tensor::zeros(0, 0));
        ensure_shape(out, p, oc);
        let bias = self.bias.as_ref().map(|b| b.value().as_slice());
        let direct = groups == 1 && blocks == 1;
        for group in 0..groups {
            let wg = self.group_weight(group, wbuf);
            let bg = bias.map(|b| &b[group * ocg..(group + 1) * ocg]);
            for block in 0..blocks {
                let oh = block * rows..((block + 1) * rows).min(g.oh);
                let col = &mut cols[if keep { group * blocks + block } else { 0 }];
                self.im2col(x.as_slice(), g, group, oh.clone(), col);
                let target = if direct { &mut *out } else { &mut *scratch };
                ensure_shape(target, col.nrows(), ocg);
                match bg {
                    Some(b) => matmul_bias(col, Trans::No, wg, Trans::Yes, b, target),
                    None => matmul(1.0, col, Trans::No, wg, Trans::Yes, 0.0, target),
                }
                if !direct {
                    // Column `o` of the block goes to rows p0.. of output
                    // column `group * ocg + o`.
                    let (pb, p0) = (col.nrows(), oh.start * g.ow * g.n);
                    let o = out.as_mut_slice();
                    for (k, src) in scratch.as_slice().chunks_exact(pb.max(1)).enumerate() {
                        let at = (group * ocg + k) * p + p0;
                        o[at..at + pb].copy_from_slice(src);
                    }
                }
            }
        }
        // `P x OC` in memory is `(N, OC*OH*OW)` in `CHWN` order.
        crate::ops::reshape(out, g.n, oc * g.oh * g.ow);
    }

    /// The backward pass from the recorded forward: weight and bias
    /// gradients, and with `input` the input gradient (into
    /// `record.grad_input`).
    fn back(&mut self, grad: &Tensor, input: bool) -> Result<()> {
        let Some(g) = self.record.geom else {
            return Err(Error::NoRecordedForward {
                path: ModulePath::leaf("Conv2d"),
            });
        };
        let expected = (g.n, self.config.out_channels * g.oh * g.ow);
        crate::module::begin_backward(&mut self.record.recorded, "Conv2d", expected, grad)?;
        let (p, oc, groups) = (g.positions(), self.config.out_channels, self.config.groups);
        let ocg = oc / groups;
        if let Some((_, db, acc)) = self.bias.as_mut().and_then(Param::grad_slot) {
            // Output channel j is the j-th run of P values of the gradient.
            // An empty batch sums to zero (it does not leave the previous
            // gradient behind).
            for (j, d) in db.as_mut_slice().iter_mut().enumerate() {
                let s = if p == 0 {
                    0.0
                } else {
                    crate::kernels::sum(&grad.as_slice()[j * p..(j + 1) * p])
                };
                *d = if acc { *d + s } else { s };
            }
        }
        let rows = self.rows_per_block(&g);
        let blocks = g.oh.div_ceil(rows).max(1);
        let block_rows = |b: usize| b * rows..((b + 1) * rows).min(g.oh);
        let mut rec = std::mem::take(&mut self.record);
        let direct = groups == 1 && blocks == 1;
        if direct && (input || ocg >= 16) {
            // The gradient as `P x OC` (the same memory), for the products.
            crate::ops::copy_into(grad, &mut rec.grad_out);
            crate::ops::reshape(&mut rec.grad_out, p, oc);
        }
        let Record {
            cols,
            grad_out,
            grad_block,
            dcol,
            dw_block,
            grad_input,
            wbuf,
            ..
        } = &mut rec;
        // This block's rows of this group's output channels (output
        // channel o is the o-th run of P values of the gradient).
        let block_grad = |group: usize, oh: &Range<usize>, dst: &mut Tensor| {
            let pb = oh.len() * g.ow * g.n;
            let p0 = oh.start * g.ow * g.n;
            ensure_shape(dst, pb, ocg);
            let src = grad.as_slice();
            for (k, d) in dst.as_mut_slice().chunks_exact_mut(pb.max(1)).enumerate() {
                let at = (group * ocg + k) * p + p0;
                d.copy_from_slice(&src[at..at + pb]);
            }
        };
        if input {
            ensure_shape(grad_input, g.n, g.c * g.h * g.w);
            grad_input.as_mut_slice().fill(0.0);
            for group in 0..groups {
                let wg = self.group_weight(group, wbuf);
                for block in 0..blocks {
                    let oh = block_rows(block);
                    let col = &cols[group * blocks + block];
                    let gb = if direct {
                        &*grad_out
                    } else {
                        block_grad(group, &oh, grad_block);
                        &*grad_block
                    };
                    ensure_shape(dcol, col.nrows(), col.ncols());
                    matmul(1.0, gb, Trans::No, wg, Trans::No, 0.0, dcol);
                    self.col2im(dcol, &g, group, oh, grad_input.as_mut_slice());
                }
            }
        }
        if let Some((_, dw, acc)) = self.weight.grad_slot() {
            // dW (OC/groups x K) sums over every position: with fewer
            // than 16 output channels a GEMM's micro-kernel runs part
            // empty and its packing dominates, so the dot products are
            // taken in place, on the gradient as it lies (output channel
            // o is the o-th run of P values). Measured on the AVX-512 VM:
            // 6 x 25 over 1,536 positions (LeNet's first layer) 17 us
            // against faer's 35 us; 16 x 150 over 512, faer 39 us against
            // 70 us.
            if ocg < 16 {
                let rows = dw.nrows();
                let gs = grad.as_slice();
                for group in 0..groups {
                    for block in 0..blocks {
                        let oh = block_rows(block);
                        let col = &cols[group * blocks + block];
                        let p0 = oh.start * g.ow * g.n;
                        crate::kernels::cross_dots(
                            &gs[group * ocg * p + p0..],
                            p,
                            ocg,
                            col.as_slice(),
                            col.ncols(),
                            col.nrows(),
                            &mut dw.as_mut_slice()[group * ocg..],
                            rows,
                            acc || block > 0,
                        );
                    }
                }
                self.record = rec;
                return Ok(());
            }
            for group in 0..groups {
                for block in 0..blocks {
                    let oh = block_rows(block);
                    let col = &cols[group * blocks + block];
                    let gb = if direct {
                        &*grad_out
                    } else {
                        block_grad(group, &oh, grad_block);
                        &*grad_block
                    };
                    let add = acc || block > 0;
                    if groups == 1 {
                        let beta = if add { 1.0 } else { 0.0 };
                        matmul(1.0, gb, Trans::Yes, col, Trans::No, beta, dw);
                    } else {
                        ensure_shape(dw_block, ocg, col.ncols());
                        matmul(1.0, gb, Trans::Yes, col, Trans::No, 0.0, dw_block);
                        let mut target = dw.rows_mut(group * ocg, ocg);
                        if add {
                            target += &*dw_block;
                        } else {
                            target.copy_from(&*dw_block);
                        }
                    }
                }
            }
        }
        self.record = rec;
        Ok(())
    }
}

impl Module for Conv2d {
    fn name(&self) -> &str {
        "Conv2d"
    }

    fn extra_repr(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "{}, {}, kernel_size={}, stride={}",
            c.in_channels,
            c.out_channels,
            c.kernel_size.tuple(),
            c.stride.tuple()
        );
        match c.padding {
            Padding::Explicit(p) if p.h == 0 && p.w == 0 => {}
            Padding::Explicit(p) => s += &format!(", padding={}", p.tuple()),
            Padding::Same => s += ", padding=same",
            Padding::Valid => s += ", padding=valid",
        }
        if c.dilation.h != 1 || c.dilation.w != 1 {
            s += &format!(", dilation={}", c.dilation.tuple());
        }
        if c.groups != 1 {
            s += &format!(", groups={}", c.groups);
        }
        if self.bias.is_none() {
            s += ", bias=False";
        }
        if c.padding_mode != PaddingMode::Zeros {
            s += &format!(", padding_mode={}", c.padding_mode);
        }
        s
    }

    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        f("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for Conv2d {
    /// A plain matrix has no image shape: use
    /// [`ForwardExt::forward_nd`](crate::ForwardExt::forward_nd).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(needs_image("Conv2d", x))
    }

    fn forward_dims(&self, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        check_dims("Conv2d", x, dims)?;
        let g = self.geometry(dims, x.nrows())?;
        let mut cols = Vec::new();
        let (mut scratch, mut wbuf, mut out) = (
            Tensor::zeros(0, 0),
            Tensor::zeros(0, 0),
            Tensor::zeros(0, 0),
        );
        self.run(x, &g, &mut cols, false, &mut scratch, &mut wbuf, &mut out);
        Ok((out, self.out_dims(&g)))
    }

    fn forward_into_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        out: &mut Tensor,
        ws: &mut crate::Workspace,
    ) -> Result<Dims> {
        check_dims("Conv2d", x, dims)?;
        let g = self.geometry(dims, x.nrows())?;
        let mut cols = ws.take_list();
        let (mut scratch, mut wbuf) = (ws.take(), ws.take());
        self.run(x, &g, &mut cols, false, &mut scratch, &mut wbuf, out);
        ws.give(wbuf);
        ws.give(scratch);
        ws.give_list(cols);
        Ok(self.out_dims(&g))
    }
}

impl Backward for Conv2d {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        Err(needs_image("Conv2d", x))
    }

    fn forward_train_dims<'a>(
        &'a mut self,
        x: &'a Tensor,
        dims: Dims,
    ) -> Result<(&'a Tensor, Dims)> {
        check_dims("Conv2d", x, dims)?;
        let g = self.geometry(dims, x.nrows())?;
        let mut rec = std::mem::take(&mut self.record);
        self.run(
            x,
            &g,
            &mut rec.cols,
            true,
            &mut rec.scratch,
            &mut rec.wbuf,
            &mut rec.output,
        );
        rec.geom = Some(g);
        rec.recorded = true;
        self.record = rec;
        Ok((&self.record.output, self.out_dims(&g)))
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        self.back(grad, true)?;
        Ok(&self.record.grad_input)
    }

    fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        self.back(grad, false)
    }
}

impl fmt::Display for Conv2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::print::fmt_module(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ForwardExt, NdTensor};

    /// Convolution by its definition on row-major `NCHW` data: output,
    /// and for an upstream gradient `gy` the input, weight and bias
    /// gradients.
    #[allow(clippy::type_complexity)]
    fn reference(
        conv: &Conv2d,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        gy: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, (usize, usize)) {
        let cfg = conv.config;
        let g = conv.geometry(Dims::image(c, h, w), n).unwrap();
        let (oc, groups) = (cfg.out_channels, cfg.groups);
        let (cg, ocg) = (c / groups, oc / groups);
        let (kh, kw) = (cfg.kernel_size.h, cfg.kernel_size.w);
        let wt = conv.weight.to_row_major();
        let b = conv.bias.as_ref().map(Param::to_row_major);
        let (oh, ow) = (g.oh, g.ow);
        let mut y = vec![0.0f32; n * oc * oh * ow];
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; wt.len()];
        let mut db = vec![0.0f32; oc];
        for s in 0..n {
            for o in 0..oc {
                let grp = o / ocg;
                for r in 0..oh {
                    for q in 0..ow {
                        let yi = ((s * oc + o) * oh + r) * ow + q;
                        let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                        db[o] += gy[yi];
                        for ci in 0..cg {
                            let ch = grp * cg + ci;
                            for i in 0..kh {
                                for j in 0..kw {
                                    let ih = (r * cfg.stride.h + i * cfg.dilation.h) as isize
                                        - g.top as isize;
                                    let iw = (q * cfg.stride.w + j * cfg.dilation.w) as isize
                                        - g.left as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                        continue;
                                    }
                                    let xi = ((s * c + ch) * h + ih as usize) * w + iw as usize;
                                    let wi = ((o * cg + ci) * kh + i) * kw + j;
                                    acc += wt[wi] * x[xi];
                                    dx[xi] += wt[wi] * gy[yi];
                                    dw[wi] += x[xi] * gy[yi];
                                }
                            }
                        }
                        y[yi] = acc;
                    }
                }
            }
        }
        (y, dx, dw, db, (oh, ow))
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// Inputs large enough that the unfolded input is cut into several
    /// blocks of output rows, with groups, strides, dilation, padding and
    /// no bias: forward, `forward_into`, training forward and every
    /// gradient against the definition, twice (the second step reuses the
    /// buffers and accumulates the parameter gradients).
    #[test]
    fn blocked_convolution_matches_the_definition() {
        let cases = [
            (
                Conv2dConfig::new(4, 6, 3).padding(1).groups(2),
                (4, 4, 42, 34),
            ),
            (
                Conv2dConfig::new(3, 4, (3, 2))
                    .stride((2, 3))
                    .padding((2, 1))
                    .dilation((2, 1))
                    .bias(false),
                (10, 3, 61, 47),
            ),
            (
                Conv2dConfig::new(2, 3, 5).padding(Padding::Same),
                (1, 2, 9, 7),
            ),
            // 16 and more output channels per group: the weight gradient
            // by GEMM instead of by dot products; one block, then several
            // blocks of two groups.
            (Conv2dConfig::new(3, 16, 3).padding(1), (2, 3, 20, 15)),
            (
                Conv2dConfig::new(4, 32, 3).padding(1).groups(2),
                (3, 4, 50, 40),
            ),
        ];
        for (case, (cfg, (n, c, h, w))) in cases.into_iter().enumerate() {
            let mut conv = crate::with_seed(3, || cfg.build().unwrap());
            let mut rng = crate::Generator::new(9);
            let mut x = vec![0.0; n * c * h * w];
            rng.fill_uniform(&mut x, -1.0, 1.0);
            let xt = NdTensor::from_row_major(&[n, c, h, w], &x).unwrap();
            let g = conv.geometry(xt.dims(), n).unwrap();
            let mut gy = vec![0.0; n * cfg.out_channels * g.oh * g.ow];
            rng.fill_uniform(&mut gy, -1.0, 1.0);
            let (y, dx, dw, db, (oh, ow)) = reference(&conv, &x, (n, c, h, w), &gy);
            let what = format!("{cfg:?} on {:?}", [n, c, h, w]);
            let blocks = g.oh.div_ceil(conv.rows_per_block(&g));
            assert!(case == 2 || case == 3 || blocks > 1, "{what}: one block");
            let ys = conv.forward_nd(&xt).unwrap();
            assert_eq!(ys.shape(), vec![n, cfg.out_channels, oh, ow]);
            close(
                &ys.to_row_major(),
                &y,
                &format!("{what}: forward ({blocks} blocks)"),
            );
            let (mut out, mut ws) = (Tensor::zeros(0, 0), crate::Workspace::new());
            conv.forward_into_dims(xt.tensor(), xt.dims(), &mut out, &mut ws)
                .unwrap();
            assert_eq!(&out, ys.tensor(), "{what}");
            let gyt = NdTensor::from_row_major(&ys.shape(), &gy).unwrap();
            for step in 1..=2 {
                let (yt, _) = conv.forward_train_nd(&xt).unwrap();
                assert_eq!(yt, ys.tensor(), "{what}");
                let dxt = conv.backward(gyt.tensor()).unwrap().clone();
                let dxt = NdTensor::new(dxt, xt.dims()).unwrap();
                close(&dxt.to_row_major(), &dx, &format!("{what}: dx"));
                let scale = |v: &[f32]| v.iter().map(|v| v * step as f32).collect::<Vec<_>>();
                let gw = Param::nd(
                    conv.weight.grad().unwrap().clone(),
                    conv.weight.shape().to_vec(),
                );
                close(
                    &gw.to_row_major(),
                    &scale(&dw),
                    &format!("{what}: dw, step {step}"),
                );
                if let Some(b) = &conv.bias {
                    close(
                        b.grad().unwrap().as_slice(),
                        &scale(&db),
                        &format!("{what}: db"),
                    );
                }
            }
        }
    }
}
