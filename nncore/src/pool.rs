//! Pooling and flattening for images: [`MaxPool2d`], [`AvgPool2d`],
//! [`AdaptiveAvgPool2d`] and [`Flatten`], PyTorch's layers of those names.
//!
//! Images are `(N, C*H*W)` tensors in `CHWN` memory order (see
//! [`NdTensor`](crate::NdTensor)), so every pooling step works on the `N`
//! contiguous values of one pixel at once.

use std::fmt;

use crate::forward::{Backward, Forward, check_dims};
use crate::module::Module;
use crate::ops::ensure_shape;
use crate::shape::{Size2d, needs_image};
use crate::{Dims, Error, ModulePath, Result, Tensor};

/// The sizes of one pooling call: input `C x H x W` for `N` samples,
/// output `OH x OW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn out_dims(&self) -> Dims {
        Dims::image(self.c, self.oh, self.ow)
    }
}

/// `g` if its output can be allocated (and its window arithmetic cannot
/// overflow).
fn check_size(module: &str, g: Geom) -> Result<Geom> {
    let out =
        g.n.checked_mul(g.c)
            .and_then(|v| v.checked_mul(g.oh)?.checked_mul(g.ow))
            .filter(|v| v.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize));
    let spans = (g.oh + 1)
        .checked_mul(g.h.max(1))
        .zip((g.ow + 1).checked_mul(g.w.max(1)));
    if out.is_none() || spans.is_none() {
        return Err(Error::InvalidInput {
            path: ModulePath::leaf(module),
            message: format!(
                "an output of shape [{}, {}, {}, {}] is too large to allocate",
                g.n, g.c, g.oh, g.ow
            ),
        });
    }
    Ok(g)
}

/// A sliding window: kernel, stride, padding, dilation and PyTorch's
/// `ceil_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    kernel: Size2d,
    stride: Size2d,
    padding: Size2d,
    dilation: Size2d,
    ceil_mode: bool,
}

/// PyTorch's `pooling_output_shape`.
fn out_size(input: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    let padded = input.checked_add(p.checked_mul(2)?)?;
    let span = padded.checked_sub(d.checked_mul(k - 1)?.checked_add(1)?)?;
    let extra = if ceil { s - 1 } else { 0 };
    let mut out = span.checked_add(extra)? / s + 1;
    if ceil && (out - 1) * s >= input + p {
        out -= 1;
    }
    Some(out)
}

impl Window {
    fn check(&self, module: &str) -> Result<()> {
        let (k, s, d, p) = (self.kernel, self.stride, self.dilation, self.padding);
        if k.h == 0 || k.w == 0 || s.h == 0 || s.w == 0 || d.h == 0 || d.w == 0 {
            return Err(Error::InvalidArgument(format!(
                "{module}: kernel_size, stride and dilation must be positive"
            )));
        }
        for (p, k, d) in [(p.h, k.h, d.h), (p.w, k.w, d.w)] {
            let Some(span) = d.checked_mul(k - 1) else {
                return Err(Error::InvalidArgument(format!(
                    "{module}: kernel_size={k} with dilation={d} is too large"
                )));
            };
            if p > span.div_ceil(2) {
                return Err(Error::InvalidArgument(format!(
                    "{module}: pad should be at most half of effective kernel size, but got pad={p}, kernel_size={k} and dilation={d}"
                )));
            }
        }
        Ok(())
    }

    fn geometry(&self, module: &str, dims: Dims, n: usize) -> Result<Geom> {
        let (c, h, w) = dims.chw(module, n)?;
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf(module),
                message: crate::shape::rank_message(module, &dims.with_batch(n)),
            });
        }
        let (k, s, d, p) = (self.kernel, self.stride, self.dilation, self.padding);
        let oh = out_size(h, k.h, s.h, p.h, d.h, self.ceil_mode);
        let ow = out_size(w, k.w, s.w, p.w, d.w, self.ceil_mode);
        match (oh, ow) {
            (Some(oh), Some(ow)) if oh > 0 && ow > 0 => {
                check_size(module, Geom { n, c, h, w, oh, ow })
            }
            _ => Err(Error::InvalidInput {
                path: ModulePath::leaf(module),
                message: format!(
                    "Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{}x{}). Output size is too small",
                    oh.unwrap_or(0),
                    ow.unwrap_or(0)
                ),
            }),
        }
    }

    /// The first input row (or column) of output row `o`'s window along
    /// one side: negative when the window starts in the padding.
    fn taps(o: usize, s: usize, p: usize) -> isize {
        (o * s) as isize - p as isize
    }
}

/// What a pooling layer keeps for backward.
#[derive(Debug, Clone)]
struct Record {
    geom: Option<Geom>,
    // MaxPool2d: the flat index (h * W + w) of each output's maximum.
    argmax: Vec<u32>,
    output: Tensor,
    grad_input: Tensor,
    recorded: bool,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            geom: None,
            argmax: Vec::new(),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            recorded: false,
        }
    }
}

impl Record {
    /// Checks the gradient against the recorded output and consumes the
    /// record.
    fn begin_backward(&mut self, name: &str, grad: &Tensor) -> Result<Geom> {
        let Some(g) = self.geom else {
            return Err(Error::NoRecordedForward {
                path: ModulePath::leaf(name),
            });
        };
        crate::module::begin_backward(&mut self.recorded, name, self.output.shape(), grad)?;
        ensure_shape(&mut self.grad_input, g.n, g.c * g.h * g.w);
        self.grad_input.as_mut_slice().fill(0.0);
        Ok(g)
    }
}

/// PyTorch's `nn.MaxPool2d`: the maximum over each window of each channel
/// (padding never wins). `stride` defaults to `kernel_size`.
///
/// Input `(N, C, H, W)`, output `(N, C, OH, OW)` with
/// `OH = (H + 2*ph - dh*(kh-1) - 1) / sh + 1` (rounded up with
/// `ceil_mode`). Backward sends each output's gradient to the first
/// maximum of its window (a NaN counts as the maximum), as PyTorch does.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let pool = MaxPool2d::new(2);
/// assert_eq!(pool.to_string(), "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
/// let x = NdTensor::from_row_major(&[1, 1, 2, 2], &[1., 4., 3., 2.])?;
/// assert_eq!(pool.forward_nd(&x)?.to_row_major(), vec![4.0]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    window: Window,
    training: bool,
    record: Record,
}

impl MaxPool2d {
    /// `nn.MaxPool2d(kernel_size)`: stride = kernel, no padding.
    ///
    /// # Panics
    /// For a zero kernel size.
    #[must_use]
    pub fn new(kernel_size: impl Into<Size2d>) -> Self {
        let k = kernel_size.into();
        Self::with_options(k, k, 0, 1, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size or a padding larger than
    /// half the (dilated) kernel, as PyTorch.
    pub fn with_options(
        kernel_size: impl Into<Size2d>,
        stride: impl Into<Size2d>,
        padding: impl Into<Size2d>,
        dilation: impl Into<Size2d>,
        ceil_mode: bool,
    ) -> Result<Self> {
        let window = Window {
            kernel: kernel_size.into(),
            stride: stride.into(),
            padding: padding.into(),
            dilation: dilation.into(),
            ceil_mode,
        };
        window.check("MaxPool2d")?;
        Ok(Self {
            window,
            training: true,
            record: Record::default(),
        })
    }

    /// Pools `x` into `out`, and the maxima's positions into `argmax`.
    fn run(&self, x: &Tensor, g: &Geom, out: &mut Tensor, argmax: Option<&mut Vec<u32>>) {
        let n = g.n;
        ensure_shape(out, n, g.c * g.oh * g.ow);
        let (k, s, p, d) = (
            self.window.kernel,
            self.window.stride,
            self.window.padding,
            self.window.dilation,
        );
        let x = x.as_slice();
        let o = out.as_mut_slice();
        let mut arg = argmax;
        if let Some(a) = arg.as_deref_mut() {
            a.clear();
            a.resize(o.len(), 0);
        }
        let plane = g.h * g.w;
        if o.is_empty() || plane == 0 {
            // An empty batch: nothing to pool (PyTorch returns an empty
            // tensor too).
            return;
        }
        // The window's taps inside the image, for one output pixel.
        let taps = |oh: usize, ow: usize| {
            let (h0, w0) = (Window::taps(oh, s.h, p.h), Window::taps(ow, s.w, p.w));
            (0..k.h)
                .map(move |i| h0 + (i * d.h) as isize)
                .filter(|&ih| ih >= 0 && ih < g.h as isize)
                .flat_map(move |ih| {
                    (0..k.w)
                        .map(move |j| w0 + (j * d.w) as isize)
                        .filter(|&iw| iw >= 0 && iw < g.w as isize)
                        .map(move |iw| ih as usize * g.w + iw as usize)
                })
        };
        // A NaN wins (and stays), and of equal values the first: PyTorch's
        // `val > max || isnan(val)`. Written as selects over the batch,
        // which vectorize.
        for (c, (src, dst)) in x
            .chunks_exact(plane * n)
            .zip(o.chunks_exact_mut(g.oh * g.ow * n))
            .enumerate()
        {
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let at = (oh * g.ow + ow) * n;
                    let m = &mut dst[at..at + n];
                    m.fill(f32::NEG_INFINITY);
                    match arg.as_deref_mut() {
                        None => {
                            for pos in taps(oh, ow) {
                                crate::kernels::max_update(m, &src[pos * n..pos * n + n]);
                            }
                        }
                        Some(a) => {
                            let base = c * g.oh * g.ow * n + at;
                            let ix = &mut a[base..base + n];
                            let mut first = true;
                            for pos in taps(oh, ow) {
                                if first {
                                    ix.fill(pos as u32);
                                    first = false;
                                }
                                let v = &src[pos * n..pos * n + n];
                                crate::kernels::max_arg_update(m, ix, v, pos as u32);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// PyTorch's `nn.AvgPool2d`: the mean over each window of each channel;
/// by default the padding's zeros count in the mean
/// (`count_include_pad=True`). `stride` defaults to `kernel_size`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let pool = AvgPool2d::new(2);
/// assert_eq!(pool.to_string(), "AvgPool2d(kernel_size=2, stride=2, padding=0)");
/// let x = NdTensor::from_row_major(&[1, 1, 2, 2], &[1., 4., 3., 2.])?;
/// assert_eq!(pool.forward_nd(&x)?.to_row_major(), vec![2.5]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AvgPool2d {
    window: Window,
    count_include_pad: bool,
    training: bool,
    record: Record,
}

impl AvgPool2d {
    /// `nn.AvgPool2d(kernel_size)`: stride = kernel, no padding.
    ///
    /// # Panics
    /// For a zero kernel size.
    #[must_use]
    pub fn new(kernel_size: impl Into<Size2d>) -> Self {
        let k = kernel_size.into();
        Self::with_options(k, k, 0).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `nn.AvgPool2d(kernel_size, stride, padding)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size or a padding larger than
    /// half the kernel, as PyTorch.
    pub fn with_options(
        kernel_size: impl Into<Size2d>,
        stride: impl Into<Size2d>,
        padding: impl Into<Size2d>,
    ) -> Result<Self> {
        let window = Window {
            kernel: kernel_size.into(),
            stride: stride.into(),
            padding: padding.into(),
            dilation: 1.into(),
            ceil_mode: false,
        };
        window.check("AvgPool2d")?;
        Ok(Self {
            window,
            count_include_pad: true,
            training: true,
            record: Record::default(),
        })
    }

    /// PyTorch's `ceil_mode`: round the output size up.
    #[must_use]
    pub fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.window.ceil_mode = ceil_mode;
        self
    }

    /// PyTorch's `count_include_pad`: whether the padding's zeros count
    /// in the mean.
    #[must_use]
    pub fn with_count_include_pad(mut self, count: bool) -> Self {
        self.count_include_pad = count;
        self
    }

    /// For output `(oh, ow)`: the window's rows and columns inside the
    /// image and the divisor, as PyTorch's `avg_pool2d` computes them.
    fn window_of(&self, g: &Geom, oh: usize, ow: usize) -> (usize, usize, usize, usize, f32) {
        let (k, s, p) = (self.window.kernel, self.window.stride, self.window.padding);
        let hs = Window::taps(oh, s.h, p.h);
        let ws = Window::taps(ow, s.w, p.w);
        let he = (hs + k.h as isize).min((g.h + p.h) as isize);
        let we = (ws + k.w as isize).min((g.w + p.w) as isize);
        let pool = (he - hs) * (we - ws);
        let (hs, ws) = (hs.max(0) as usize, ws.max(0) as usize);
        let (he, we) = (he.min(g.h as isize) as usize, we.min(g.w as isize) as usize);
        let div = if self.count_include_pad {
            pool as f32
        } else {
            ((he - hs) * (we - ws)) as f32
        };
        (hs, he, ws, we, div)
    }

    fn run(&self, x: &Tensor, g: &Geom, out: &mut Tensor) {
        average(x, g, |oh, ow| self.window_of(g, oh, ow), out);
    }

    fn back(&self, grad: &Tensor, g: &Geom, dx: &mut [f32]) {
        average_back(grad, g, |oh, ow| self.window_of(g, oh, ow), dx);
    }
}

/// Average pooling of `x` into `out`, window by window:
/// `window(oh, ow)` gives the rows `hs..he`, columns `ws..we` inside the
/// image and the divisor. Each step adds a pixel's `N` contiguous values.
fn average(
    x: &Tensor,
    g: &Geom,
    window: impl Fn(usize, usize) -> (usize, usize, usize, usize, f32),
    out: &mut Tensor,
) {
    let n = g.n;
    ensure_shape(out, n, g.c * g.oh * g.ow);
    let x = x.as_slice();
    let o = out.as_mut_slice();
    for c in 0..g.c {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let (hs, he, ws, we, div) = window(oh, ow);
                let at = ((c * g.oh + oh) * g.ow + ow) * n;
                let m = &mut o[at..at + n];
                m.fill(0.0);
                for ih in hs..he {
                    for iw in ws..we {
                        let src = &x[(c * g.h * g.w + ih * g.w + iw) * n..][..n];
                        crate::kernels::add_assign(m, src);
                    }
                }
                for m in m {
                    *m /= div;
                }
            }
        }
    }
}

/// The backward pass of [`average`]: each output's gradient, divided by
/// its window's divisor, added to every input pixel of the window.
fn average_back(
    grad: &Tensor,
    g: &Geom,
    window: impl Fn(usize, usize) -> (usize, usize, usize, usize, f32),
    dx: &mut [f32],
) {
    let n = g.n;
    let gr = grad.as_slice();
    for c in 0..g.c {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let (hs, he, ws, we, div) = window(oh, ow);
                let at = ((c * g.oh + oh) * g.ow + ow) * n;
                let src = &gr[at..at + n];
                for ih in hs..he {
                    for iw in ws..we {
                        let d = &mut dx[(c * g.h * g.w + ih * g.w + iw) * n..][..n];
                        for (d, v) in d.iter_mut().zip(src) {
                            *d += v / div;
                        }
                    }
                }
            }
        }
    }
}

/// PyTorch's `nn.AdaptiveAvgPool2d`: averages each channel down to a
/// fixed `output_size` whatever the input's size (window `i` of `OH` over
/// `H` rows spans `floor(i*H/OH)..ceil((i+1)*H/OH)`).
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let pool = AdaptiveAvgPool2d::new(1);
/// assert_eq!(pool.to_string(), "AdaptiveAvgPool2d(output_size=1)");
/// let x = NdTensor::from_row_major(&[1, 1, 2, 2], &[1., 4., 3., 2.])?;
/// assert_eq!(pool.forward_nd(&x)?.shape(), vec![1, 1, 1, 1]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveAvgPool2d {
    output_size: Size2d,
    training: bool,
    record: Record,
}

impl AdaptiveAvgPool2d {
    /// `nn.AdaptiveAvgPool2d(output_size)`.
    ///
    /// # Panics
    /// For a zero output size.
    #[must_use]
    pub fn new(output_size: impl Into<Size2d>) -> Self {
        let output_size = output_size.into();
        assert!(
            output_size.h > 0 && output_size.w > 0,
            "AdaptiveAvgPool2d: output_size must be positive"
        );
        Self {
            output_size,
            training: true,
            record: Record::default(),
        }
    }

    fn geometry(&self, dims: Dims, n: usize) -> Result<Geom> {
        let (c, h, w) = dims.chw("AdaptiveAvgPool2d", n)?;
        if h == 0 || w == 0 {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("AdaptiveAvgPool2d"),
                message: format!(
                    "adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch dimensions, but input has sizes {:?} with dimension {} being empty",
                    dims.with_batch(n),
                    if h == 0 { 2 } else { 3 }
                ),
            });
        }
        check_size(
            "AdaptiveAvgPool2d",
            Geom {
                n,
                c,
                h,
                w,
                oh: self.output_size.h,
                ow: self.output_size.w,
            },
        )
    }

    fn span(i: usize, input: usize, output: usize) -> (usize, usize) {
        (i * input / output, ((i + 1) * input).div_ceil(output))
    }

    /// Output `(oh, ow)`'s window and its size.
    fn window_of(g: &Geom, oh: usize, ow: usize) -> (usize, usize, usize, usize, f32) {
        let (hs, he) = Self::span(oh, g.h, g.oh);
        let (ws, we) = Self::span(ow, g.w, g.ow);
        (hs, he, ws, we, ((he - hs) * (we - ws)) as f32)
    }

    fn run(&self, x: &Tensor, g: &Geom, out: &mut Tensor) {
        average(x, g, |oh, ow| Self::window_of(g, oh, ow), out);
    }

    fn back(&self, grad: &Tensor, g: &Geom, dx: &mut [f32]) {
        average_back(grad, g, |oh, ow| Self::window_of(g, oh, ow), dx);
    }
}

/// `Module` (name, printing, training flag) and the `Forward` methods
/// shared by the pooling layers: each defines `geometry`, `run` (the
/// forward into a buffer) and `backward`.
macro_rules! pooling_layer {
    ($ty:ident, |$s:ident| $extra:expr) => {
        impl Module for $ty {
            fn name(&self) -> &str {
                stringify!($ty)
            }

            fn extra_repr(&self) -> String {
                let $s = self;
                $extra
            }

            fn set_training(&mut self, training: bool) {
                self.training = training;
            }

            fn is_training(&self) -> bool {
                self.training
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::print::fmt_module(self, f)
            }
        }
    };
}

pooling_layer!(MaxPool2d, |s| format!(
    "kernel_size={}, stride={}, padding={}, dilation={}, ceil_mode={}",
    s.window.kernel,
    s.window.stride,
    s.window.padding,
    s.window.dilation,
    if s.window.ceil_mode { "True" } else { "False" }
));
pooling_layer!(AvgPool2d, |s| format!(
    "kernel_size={}, stride={}, padding={}",
    s.window.kernel, s.window.stride, s.window.padding
));
pooling_layer!(AdaptiveAvgPool2d, |s| format!(
    "output_size={}",
    s.output_size
));

impl MaxPool2d {
    fn geometry(&self, dims: Dims, n: usize) -> Result<Geom> {
        self.window.geometry("MaxPool2d", dims, n)
    }
}

impl AvgPool2d {
    fn geometry(&self, dims: Dims, n: usize) -> Result<Geom> {
        self.window.geometry("AvgPool2d", dims, n)
    }
}

/// The `Forward` of a pooling layer from its `geometry`, its `run`
/// (`$run(self, x, geom, out, training)`) and its backward
/// (`$back(self, grad, geom, dx)`).
macro_rules! pooling_forward {
    ($ty:ident, run: |$rs:ident, $rx:ident, $rg:ident, $ro:ident, $rrec:ident| $run:expr,
     back: |$bs:ident, $bgrad:ident, $bg:ident, $bdx:ident| $back:expr) => {
        impl Forward for $ty {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                Err(needs_image(stringify!($ty), x))
            }

            fn forward_dims(&self, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
                check_dims(stringify!($ty), x, dims)?;
                let $rg = &self.geometry(dims, x.nrows())?;
                let mut out = Tensor::zeros(0, 0);
                {
                    let ($rs, $rx, $ro) = (self, x, &mut out);
                    let $rrec: Option<&mut Vec<u32>> = None;
                    $run;
                }
                Ok((out, $rg.out_dims()))
            }

            fn forward_into_dims(
                &self,
                x: &Tensor,
                dims: Dims,
                out: &mut Tensor,
                _ws: &mut crate::Workspace,
            ) -> Result<Dims> {
                check_dims(stringify!($ty), x, dims)?;
                let $rg = &self.geometry(dims, x.nrows())?;
                let ($rs, $rx, $ro) = (self, x, out);
                let $rrec: Option<&mut Vec<u32>> = None;
                $run;
                Ok($rg.out_dims())
            }
        }

        impl Backward for $ty {
            fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
                Err(needs_image(stringify!($ty), x))
            }

            fn forward_train_dims<'a>(
                &'a mut self,
                x: &'a Tensor,
                dims: Dims,
            ) -> Result<(&'a Tensor, Dims)> {
                check_dims(stringify!($ty), x, dims)?;
                let g = self.geometry(dims, x.nrows())?;
                let mut out = std::mem::replace(&mut self.record.output, Tensor::zeros(0, 0));
                let mut arg = std::mem::take(&mut self.record.argmax);
                {
                    let ($rs, $rx, $rg, $ro) = (&*self, x, &g, &mut out);
                    let $rrec = Some(&mut arg);
                    $run;
                }
                self.record.output = out;
                self.record.argmax = arg;
                self.record.geom = Some(g);
                self.record.recorded = true;
                Ok((&self.record.output, g.out_dims()))
            }

            fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
                let g = self.record.begin_backward(stringify!($ty), grad)?;
                let mut dx = std::mem::replace(&mut self.record.grad_input, Tensor::zeros(0, 0));
                {
                    let ($bs, $bgrad, $bg, $bdx) = (&*self, grad, &g, dx.as_mut_slice());
                    $back;
                }
                self.record.grad_input = dx;
                Ok(&self.record.grad_input)
            }
        }
    };
}

pooling_forward!(MaxPool2d,
    run: |s, x, g, out, rec| s.run(x, g, out, rec),
    back: |s, grad, g, dx| {
        let n = g.n;
        let (gr, arg) = (grad.as_slice(), &s.record.argmax);
        for c in 0..g.c {
            let plane = c * g.h * g.w;
            for o in 0..g.oh * g.ow {
                let at = (c * g.oh * g.ow + o) * n;
                for i in 0..n {
                    dx[(plane + arg[at + i] as usize) * n + i] += gr[at + i];
                }
            }
        }
    }
);
pooling_forward!(AvgPool2d,
    run: |s, x, g, out, rec| { let _ = rec; s.run(x, g, out) },
    back: |s, grad, g, dx| s.back(grad, g, dx)
);
pooling_forward!(AdaptiveAvgPool2d,
    run: |s, x, g, out, rec| { let _ = rec; s.run(x, g, out) },
    back: |s, grad, g, dx| s.back(grad, g, dx)
);

/// PyTorch's `nn.Flatten`: merges dimensions `start_dim..=end_dim`
/// (default `1..=-1`: everything but the batch). Only the shape changes:
/// an image batch `(N, C, H, W)` is already stored as the `(N, C*H*W)`
/// matrix `Linear` takes, in PyTorch's order.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// assert_eq!(Flatten::new().to_string(), "Flatten(start_dim=1, end_dim=-1)");
/// let x = NdTensor::zeros(&[2, 3, 4, 5])?;
/// assert_eq!(Flatten::new().forward_nd(&x)?.shape(), vec![2, 60]);
/// assert_eq!(Flatten::with_dims(2, 3)?.forward_nd(&x)?.shape(), vec![2, 3, 20]);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Flatten {
    start_dim: i64,
    end_dim: i64,
    training: bool,
}

impl Default for Flatten {
    fn default() -> Self {
        Self::new()
    }
}

impl Flatten {
    /// `nn.Flatten()`: `start_dim=1`, `end_dim=-1`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            start_dim: 1,
            end_dim: -1,
            training: true,
        }
    }

    /// `nn.Flatten(start_dim, end_dim)`; negative dimensions count from
    /// the end, as in PyTorch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `start_dim = 0`: nncore keeps the
    /// batch as the rows of every tensor, so it cannot be merged.
    pub fn with_dims(start_dim: i64, end_dim: i64) -> Result<Self> {
        if start_dim == 0 {
            return Err(Error::InvalidArgument(
                "Flatten(start_dim=0) would merge the batch dimension, which nncore keeps as rows; use start_dim >= 1".into(),
            ));
        }
        Ok(Self {
            start_dim,
            end_dim,
            training: true,
        })
    }

    /// The output's sample shape for inputs of `n` samples of shape `dims`.
    fn out_dims(&self, dims: Dims, n: usize) -> Result<Dims> {
        let rank = dims.rank() as i64 + 1;
        let norm = |d: i64| if d < 0 { d + rank } else { d };
        let (s, e) = (norm(self.start_dim), norm(self.end_dim));
        if !(0..rank).contains(&s) || !(0..rank).contains(&e) {
            let bad = if (0..rank).contains(&s) {
                self.end_dim
            } else {
                self.start_dim
            };
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("Flatten"),
                message: format!(
                    "Dimension out of range (expected to be in range of [{}, {}], but got {bad})",
                    -rank,
                    rank - 1
                ),
            });
        }
        if s > e {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("Flatten"),
                message: "flatten() has invalid args: start_dim cannot come after end_dim".into(),
            });
        }
        if s == 0 {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("Flatten"),
                message: format!(
                    "start_dim={} on an input of shape {:?} would merge the batch dimension, which nncore keeps as rows",
                    self.start_dim,
                    dims.with_batch(n)
                ),
            });
        }
        let d = dims.as_slice();
        let (s, e) = (s as usize - 1, e as usize - 1);
        // At most MAX_DIMS sizes: on the stack, no allocation per call.
        let mut out = [0usize; crate::MAX_DIMS];
        out[..s].copy_from_slice(&d[..s]);
        out[s] = d[s..=e].iter().product();
        let rest = &d[e + 1..];
        out[s + 1..s + 1 + rest.len()].copy_from_slice(rest);
        Dims::new(&out[..s + 1 + rest.len()])
    }
}

impl Module for Flatten {
    fn name(&self) -> &str {
        "Flatten"
    }

    fn extra_repr(&self) -> String {
        format!("start_dim={}, end_dim={}", self.start_dim, self.end_dim)
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl fmt::Display for Flatten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::print::fmt_module(self, f)
    }
}

impl Forward for Flatten {
    /// On a `(batch, features)` matrix: the matrix itself.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out_dims(Dims::flat(x.ncols()), x.nrows())?;
        Ok(x.clone())
    }

    fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        self.out_dims(Dims::flat(x.ncols()), x.nrows())?;
        Ok(x)
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, _ws: &mut crate::Workspace) -> Result<()> {
        self.out_dims(Dims::flat(x.ncols()), x.nrows())?;
        crate::ops::copy_into(x, out);
        Ok(())
    }

    fn forward_dims(&self, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        check_dims("Flatten", x, dims)?;
        Ok((x.clone(), self.out_dims(dims, x.nrows())?))
    }

    fn forward_owned_dims(&self, x: Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        check_dims("Flatten", &x, dims)?;
        let d = self.out_dims(dims, x.nrows())?;
        Ok((x, d))
    }

    fn forward_into_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        out: &mut Tensor,
        _ws: &mut crate::Workspace,
    ) -> Result<Dims> {
        check_dims("Flatten", x, dims)?;
        let d = self.out_dims(dims, x.nrows())?;
        crate::ops::copy_into(x, out);
        Ok(d)
    }
}

impl Backward for Flatten {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        self.out_dims(Dims::flat(x.ncols()), x.nrows())?;
        Ok(x)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        Ok(grad)
    }

    fn backward_params(&mut self, _grad: &Tensor) -> Result<()> {
        Ok(())
    }

    fn forward_train_dims<'a>(
        &'a mut self,
        x: &'a Tensor,
        dims: Dims,
    ) -> Result<(&'a Tensor, Dims)> {
        check_dims("Flatten", x, dims)?;
        let d = self.out_dims(dims, x.nrows())?;
        Ok((x, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        assert_eq!(out_size(8, 2, 2, 0, 1, false), Some(4));
        assert_eq!(out_size(7, 2, 2, 0, 1, false), Some(3));
        assert_eq!(out_size(7, 2, 2, 0, 1, true), Some(4));
        // The last window must start inside the image or left padding.
        assert_eq!(out_size(5, 3, 2, 1, 1, true), Some(3));
        assert_eq!(out_size(1, 2, 2, 0, 1, false), None);
    }
}
