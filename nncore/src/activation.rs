//! Activation functions and other parameter-free layers: `ReLU`,
//! `LeakyReLU`, `Sigmoid`, `Tanh`, `GELU`, `Softmax`, `Identity`.
//!
//! Every layer takes any `(batch, features)` input and returns the same
//! shape; each has PyTorch's printing and a backward pass.

use std::fmt;

use crate::forward::{Backward, Forward};
use crate::module::Module;
use crate::ops::ensure_shape;
use crate::print::py_float;
use crate::{Error, ModulePath, Result, Tensor};

/// The training buffers of an element-wise layer, reused across steps.
#[derive(Debug, Clone)]
struct Cache {
    input: Tensor,
    output: Tensor,
    grad_input: Tensor,
    recorded: bool,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            input: Tensor::zeros(0, 0),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            recorded: false,
        }
    }
}

impl Cache {
    /// `output = f(x)`, keeping `x` too when `save_input`.
    fn forward(&mut self, x: &Tensor, save_input: bool, f: impl Fn(f32) -> f32 + Sync) -> &Tensor {
        if save_input {
            ensure_shape(&mut self.input, x.nrows(), x.ncols());
            self.input.copy_from(x);
        }
        ensure_shape(&mut self.output, x.nrows(), x.ncols());
        crate::kernels::map_into(x.as_slice(), self.output.as_mut_slice(), f);
        self.recorded = true;
        &self.output
    }

    /// Checks that a forward was recorded and `grad` has its shape.
    fn check(&mut self, name: &str, grad: &Tensor) -> Result<()> {
        crate::module::begin_backward(&mut self.recorded, name, self.output.shape(), grad)?;
        ensure_shape(&mut self.grad_input, grad.nrows(), grad.ncols());
        Ok(())
    }

    /// `grad_input = grad * df(x, y)` element-wise: `df(x, 0)` when the
    /// forward saved its input, else `df(0, y)`.
    fn backward(
        &mut self,
        name: &str,
        grad: &Tensor,
        uses_input: bool,
        df: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<&Tensor> {
        self.check(name, grad)?;
        if uses_input {
            // The layers that keep their input take their slope from it
            // alone.
            crate::kernels::zip_map_into(
                grad.as_slice(),
                self.input.as_slice(),
                self.grad_input.as_mut_slice(),
                #[inline(always)]
                |g, x| g * df(x, 0.0),
            );
        } else {
            crate::kernels::zip_map_into(
                grad.as_slice(),
                self.output.as_slice(),
                self.grad_input.as_mut_slice(),
                #[inline(always)]
                |g, y| g * df(0.0, y),
            );
        }
        Ok(&self.grad_input)
    }
}

/// Defines an element-wise activation: its struct docs, `Module`,
/// `Forward` (with an in-place `forward_owned`) and `Display`.
macro_rules! elementwise {
    (@fused ReLU) => { Some(crate::forward::Activation::Relu) };
    (@fused $other:ident) => { None };
    (
        $(#[$doc:meta])*
        $name:ident { $($field:ident : $fty:ty),* }
        save_input: $save:expr,
        forward: |$s:ident, $x:ident| $f:expr,
        derivative: |$ds:ident, $dx:ident, $dy:ident| $df:expr,
        extra_repr: |$rs:ident| $extra:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $($field: $fty,)*
            training: bool,
            cache: Cache,
        }

        impl Module for $name {
            fn name(&self) -> &str {
                stringify!($name)
            }

            fn extra_repr(&self) -> String {
                let $rs = self;
                $extra
            }

            fn set_training(&mut self, training: bool) {
                self.training = training;
            }

            fn is_training(&self) -> bool {
                self.training
            }
        }

        impl Forward for $name {
            fn is_elementwise(&self) -> bool {
                true
            }

            fn fused_activation(&self) -> Option<crate::forward::Activation> {
                elementwise!(@fused $name)
            }

            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                let $s = self;
                let mut out = Tensor::zeros(x.nrows(), x.ncols());
                crate::kernels::map_into(x.as_slice(), out.as_mut_slice(), #[inline(always)] |$x| $f);
                Ok(out)
            }

            fn forward_into(
                &self,
                x: &Tensor,
                out: &mut Tensor,
                _ws: &mut crate::Workspace,
            ) -> Result<()> {
                let $s = self;
                ensure_shape(out, x.nrows(), x.ncols());
                crate::kernels::map_into(x.as_slice(), out.as_mut_slice(), #[inline(always)] |$x| $f);
                Ok(())
            }

            fn forward_owned(&self, mut x: Tensor) -> Result<Tensor> {
                let $s = self;
                crate::kernels::map_in_place(x.as_mut_slice(), #[inline(always)] |$x| $f);
                Ok(x)
            }

            fn forward_row<'y>(
                &self,
                x: &[f32],
                y: &'y mut [std::mem::MaybeUninit<f32>],
                act: Option<crate::forward::Activation>,
            ) -> Option<&'y mut [f32]> {
                let $s = self;
                let y = y.get_mut(..x.len())?;
                let y = y.write_copy_of_slice(x);
                crate::kernels::map_in_place(y, #[inline(always)] |$x| $f);
                if let Some(act) = act {
                    act.apply(y);
                }
                Some(y)
            }
        }

        impl Backward for $name {
            fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
                // Take the buffers out so that the closure can borrow the
                // layer's hyper-parameters (no allocation: the default
                // cache is empty).
                let mut cache = std::mem::take(&mut self.cache);
                {
                    let $s = &*self;
                    cache.forward(x, $save, #[inline(always)] |$x: f32| $f);
                }
                self.cache = cache;
                Ok(&self.cache.output)
            }

            fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
                let mut cache = std::mem::take(&mut self.cache);
                let result = {
                    let $ds = &*self;
                    cache
                        .backward(stringify!($name), grad, $save, #[inline(always)] |$dx, $dy| $df)
                        .map(|_| ())
                };
                self.cache = cache;
                result.map(|()| &self.cache.grad_input)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.fmt_repr(f)
            }
        }
    };
}

elementwise! {
    /// PyTorch's `nn.ReLU`: `max(x, 0)` element-wise (NaN stays NaN).
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// let relu = ReLU::new();
    /// let y = relu.forward(&Tensor::from_row_slice(1, 3, &[-1.0, 0.0, 2.0]))?;
    /// assert_eq!(y, Tensor::from_row_slice(1, 3, &[0.0, 0.0, 2.0]));
    /// assert_eq!(relu.to_string(), "ReLU()");
    /// # Ok::<(), nncore::Error>(())
    /// ```
    ReLU {}
    save_input: false,
    forward: |_s, x| relu(x),
    derivative: |_s, _x, y| if y > 0.0 { 1.0 } else { 0.0 },
    extra_repr: |_s| String::new(),
}

/// ReLU of one value: `x < 0 ? 0 : x`, so NaN and -0.0 pass through, as in
/// PyTorch.
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

impl ReLU {
    /// `nn.ReLU()`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            training: true,
            cache: Cache::default(),
        }
    }
}

impl Default for ReLU {
    fn default() -> Self {
        Self::new()
    }
}

elementwise! {
    /// PyTorch's `nn.LeakyReLU`: `x` where `x > 0`, else
    /// `negative_slope * x`.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// use nncore::LeakyReLU;
    /// let l = LeakyReLU::new(0.1);
    /// assert_eq!(l.forward(&Tensor::from_row_slice(1, 2, &[-2.0, 3.0]))?[(0, 0)], -0.2);
    /// assert_eq!(l.to_string(), "LeakyReLU(negative_slope=0.1)");
    /// assert_eq!(LeakyReLU::default().to_string(), "LeakyReLU(negative_slope=0.01)");
    /// # Ok::<(), nncore::Error>(())
    /// ```
    LeakyReLU { negative_slope: f64, slope: f32 }
    save_input: true,
    forward: |s, x| if x > 0.0 { x } else { x * s.slope },
    derivative: |s, x, _y| if x > 0.0 { 1.0 } else { s.slope },
    extra_repr: |s| format!("negative_slope={}", py_float(s.negative_slope)),
}

impl LeakyReLU {
    /// `nn.LeakyReLU(negative_slope)`.
    #[must_use]
    pub fn new(negative_slope: f64) -> Self {
        Self {
            negative_slope,
            slope: negative_slope as f32,
            training: true,
            cache: Cache::default(),
        }
    }

    /// The slope for negative inputs.
    #[must_use]
    pub fn negative_slope(&self) -> f64 {
        self.negative_slope
    }
}

impl Default for LeakyReLU {
    /// PyTorch's default slope, 0.01.
    fn default() -> Self {
        Self::new(0.01)
    }
}

/// The logistic function, `1 / (1 + e^-x)` in PyTorch's order (e^-x
/// overflows to infinity below -88.72, giving 0, as there), vectorizable.
pub(crate) use crate::kernels::vmath::sigmoid;

/// `tanh`, vectorizable (within 1.5 ulp).
pub(crate) use crate::kernels::vmath::tanh;

elementwise! {
    /// PyTorch's `nn.Sigmoid`: `1 / (1 + exp(-x))`, in `f32` as PyTorch
    /// computes it (0 below -88.72, where `exp(-x)` overflows), within
    /// 2.5 ulp of the exact value, as vector code.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// use nncore::Sigmoid;
    /// assert_eq!(Sigmoid::new().forward(&Tensor::zeros(1, 1))?[(0, 0)], 0.5);
    /// assert_eq!(Sigmoid::new().to_string(), "Sigmoid()");
    /// # Ok::<(), nncore::Error>(())
    /// ```
    Sigmoid {}
    save_input: false,
    forward: |_s, x| sigmoid(x),
    derivative: |_s, _x, y| y * (1.0 - y),
    extra_repr: |_s| String::new(),
}

impl Sigmoid {
    /// `nn.Sigmoid()`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            training: true,
            cache: Cache::default(),
        }
    }
}

impl Default for Sigmoid {
    fn default() -> Self {
        Self::new()
    }
}

elementwise! {
    /// PyTorch's `nn.Tanh`, within 1.5 ulp of the exact value, as vector
    /// code.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// use nncore::Tanh;
    /// assert_eq!(Tanh::new().forward(&Tensor::zeros(1, 1))?[(0, 0)], 0.0);
    /// assert_eq!(Tanh::new().to_string(), "Tanh()");
    /// # Ok::<(), nncore::Error>(())
    /// ```
    Tanh {}
    save_input: false,
    forward: |_s, x| tanh(x),
    derivative: |_s, _x, y| 1.0 - y * y,
    extra_repr: |_s| String::new(),
}

impl Tanh {
    /// `nn.Tanh()`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            training: true,
            cache: Cache::default(),
        }
    }
}

impl Default for Tanh {
    fn default() -> Self {
        Self::new()
    }
}

/// Which formula [`GELU`] uses (PyTorch's `approximate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeluApproximate {
    /// The exact `x * Phi(x)` (PyTorch's `'none'`).
    #[default]
    None,
    /// The tanh approximation (PyTorch's `'tanh'`).
    Tanh,
}

/// GELU of one value, vectorizable: the exact one within 2.5 ulp of `x *
/// Phi(x)` (no cancellation in either tail), the tanh one in PyTorch's
/// order of `f32` operations.
#[inline(always)]
pub(crate) fn gelu(x: f32, approx: GeluApproximate) -> f32 {
    match approx {
        GeluApproximate::None => crate::kernels::vmath::gelu_erf(x),
        GeluApproximate::Tanh => crate::kernels::vmath::gelu_tanh(x),
    }
}

#[inline(always)]
pub(crate) fn gelu_derivative(x: f32, approx: GeluApproximate) -> f32 {
    match approx {
        GeluApproximate::None => crate::kernels::vmath::gelu_erf_derivative(x),
        GeluApproximate::Tanh => crate::kernels::vmath::gelu_tanh_derivative(x),
    }
}

elementwise! {
    /// PyTorch's `nn.GELU`: `x * Phi(x)`, exactly (`approximate='none'`,
    /// the default) or with the tanh approximation.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// use nncore::{GeluApproximate, GELU};
    /// assert_eq!(GELU::new().to_string(), "GELU(approximate='none')");
    /// let g = GELU::with_approximate(GeluApproximate::Tanh);
    /// assert_eq!(g.to_string(), "GELU(approximate='tanh')");
    /// assert!((g.forward(&Tensor::from_element(1, 1, 1.0))?[(0, 0)] - 0.841192).abs() < 1e-5);
    /// # Ok::<(), nncore::Error>(())
    /// ```
    GELU { approximate: GeluApproximate }
    save_input: true,
    forward: |s, x| gelu(x, s.approximate),
    derivative: |s, x, _y| gelu_derivative(x, s.approximate),
    extra_repr: |s| match s.approximate {
        GeluApproximate::None => "approximate='none'".to_owned(),
        GeluApproximate::Tanh => "approximate='tanh'".to_owned(),
    },
}

impl GELU {
    /// `nn.GELU()` (exact).
    #[must_use]
    pub fn new() -> Self {
        Self::with_approximate(GeluApproximate::None)
    }

    /// `nn.GELU(approximate=...)`.
    #[must_use]
    pub fn with_approximate(approximate: GeluApproximate) -> Self {
        Self {
            approximate,
            training: true,
            cache: Cache::default(),
        }
    }
}

impl Default for GELU {
    fn default() -> Self {
        Self::new()
    }
}

/// PyTorch's `nn.Identity`: returns its input.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::Identity;
/// let x = Tensor::from_element(2, 2, 3.0);
/// assert_eq!(Identity::new().forward(&x)?, x);
/// assert_eq!(Identity::new().to_string(), "Identity()");
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Identity {
    training: bool,
    // The shape of the last `forward_train`, until its backward.
    recorded: Option<(usize, usize)>,
}

impl Identity {
    /// `nn.Identity()`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            training: true,
            recorded: None,
        }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl Module for Identity {
    fn name(&self) -> &str {
        "Identity"
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for Identity {
    fn is_elementwise(&self) -> bool {
        true
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }

    fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        Ok(x)
    }

    fn forward_row<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<crate::forward::Activation>,
    ) -> Option<&'y mut [f32]> {
        crate::forward::copy_row(x, y, act)
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, _ws: &mut crate::Workspace) -> Result<()> {
        crate::ops::copy_into(x, out);
        Ok(())
    }
}

impl Backward for Identity {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        self.recorded = Some(x.shape());
        Ok(x)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        match self.recorded.take() {
            None => Err(Error::NoRecordedForward {
                path: ModulePath::leaf("Identity"),
            }),
            Some(shape) if shape != grad.shape() => {
                Err(Error::gradient_shape("Identity", shape, grad.shape()))
            }
            Some(_) => Ok(grad),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}

/// PyTorch's `nn.Softmax(dim)` on a 2-D input: over the features of each
/// row (`dim=1` or `-1`) or over the batch for each feature (`dim=0` or
/// `-2`), computed stably (the maximum is subtracted first).
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::Softmax;
/// let s = Softmax::new(1);
/// let y = s.forward(&Tensor::from_row_slice(1, 2, &[0.0, 0.0]))?;
/// assert_eq!(y, Tensor::from_row_slice(1, 2, &[0.5, 0.5]));
/// assert_eq!(s.to_string(), "Softmax(dim=1)");
/// assert!(Softmax::new(2).forward(&y).is_err());
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Softmax {
    dim: i64,
    training: bool,
    cache: Cache,
}

impl Softmax {
    /// `nn.Softmax(dim=dim)`.
    #[must_use]
    pub fn new(dim: i64) -> Self {
        Self {
            dim,
            training: true,
            cache: Cache::default(),
        }
    }

    /// The dimension as given.
    #[must_use]
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// Whether the softmax runs along rows (over features).
    fn over_features(&self) -> Result<bool> {
        match self.dim {
            1 | -1 => Ok(true),
            0 | -2 => Ok(false),
            d => Err(Error::InvalidInput {
                path: ModulePath::leaf("Softmax"),
                message: format!(
                    "Dimension out of range (expected to be in range of [-2, 1], but got {d})"
                ),
            }),
        }
    }

    fn compute(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        let over_features = self.over_features()?;
        let (rows, cols) = x.shape();
        let lines = if over_features { rows } else { cols };
        let len = if over_features { cols } else { rows };
        let at = |line: usize, k: usize| {
            if over_features { (line, k) } else { (k, line) }
        };
        for line in 0..lines {
            let max = (0..len)
                .map(|k| x[at(line, k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in 0..len {
                let e = crate::kernels::vmath::exp(x[at(line, k)] - max);
                out[at(line, k)] = e;
                sum += e;
            }
            for k in 0..len {
                out[at(line, k)] /= sum;
            }
        }
        Ok(())
    }
}

impl Module for Softmax {
    fn name(&self) -> &str {
        "Softmax"
    }

    fn extra_repr(&self) -> String {
        format!("dim={}", self.dim)
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for Softmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = Tensor::zeros(x.nrows(), x.ncols());
        self.compute(x, &mut out)?;
        Ok(out)
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, _ws: &mut crate::Workspace) -> Result<()> {
        ensure_shape(out, x.nrows(), x.ncols());
        self.compute(x, out)
    }

    fn forward_row<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<crate::forward::Activation>,
    ) -> Option<&'y mut [f32]> {
        // One row: along the features it is one line, along the batch
        // every value is a line of its own (as `compute` goes).
        let over_features = self.over_features().ok()?;
        let y = y.get_mut(..x.len())?.write_copy_of_slice(x);
        if over_features {
            softmax_line(y);
        } else {
            for v in y.iter_mut() {
                softmax_line(std::slice::from_mut(v));
            }
        }
        if let Some(act) = act {
            act.apply(y);
        }
        Some(y)
    }
}

/// Softmax of one line in place, in `Softmax::compute`'s order (the same
/// bits): the maximum, the shifted exponentials and their sum, then the
/// quotients.
fn softmax_line(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The exponentials as vector code, then their sum in order.
    crate::kernels::map_in_place(v, |e| crate::kernels::vmath::exp(e - max));
    let mut sum = 0.0f32;
    for e in v.iter() {
        sum += *e;
    }
    for e in v.iter_mut() {
        *e /= sum;
    }
}

impl Backward for Softmax {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        let mut out = std::mem::replace(&mut self.cache.output, Tensor::zeros(0, 0));
        ensure_shape(&mut out, x.nrows(), x.ncols());
        let r = self.compute(x, &mut out);
        self.cache.output = out;
        r?;
        self.cache.recorded = true;
        Ok(&self.cache.output)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        let over_features = self.over_features()?;
        self.cache.check("Softmax", grad)?;
        let y = &self.cache.output;
        let d = &mut self.cache.grad_input;
        // dx = y * (g - sum(g * y)) along the softmax dimension.
        if over_features {
            for r in 0..y.nrows() {
                let dot: f32 = (0..y.ncols()).map(|c| grad[(r, c)] * y[(r, c)]).sum();
                for c in 0..y.ncols() {
                    d[(r, c)] = y[(r, c)] * (grad[(r, c)] - dot);
                }
            }
        } else {
            for c in 0..y.ncols() {
                let dot: f32 = (0..y.nrows()).map(|r| grad[(r, c)] * y[(r, c)]).sum();
                for r in 0..y.nrows() {
                    d[(r, c)] = y[(r, c)] * (grad[(r, c)] - dot);
                }
            }
        }
        Ok(&self.cache.grad_input)
    }
}

impl fmt::Display for Softmax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn python_float_repr() {
        assert_eq!(py_float(0.01), "0.01");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.2), "0.2");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(123456.0), "123456.0");
    }
}
