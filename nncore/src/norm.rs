//! Normalization layers.

use std::fmt;
use std::mem::MaybeUninit;

use crate::forward::{Backward, Forward, check_dims};
use crate::kernels;
use crate::module::{Module, begin_backward};
use crate::ops::{as_uninit, ensure_shape, new_filled};
use crate::print::py_float;
use crate::shape::needs_image;
use crate::{Buffer, Dims, Error, ModulePath, Param, Result, Tensor};

/// PyTorch's `nn.LayerNorm(normalized_shape)` over the features of a
/// `(batch, features)` input: each row is normalized to mean 0 and
/// variance 1 (the biased variance, with `eps` added), then scaled by
/// `weight` and shifted by `bias`.
///
/// Shapes: input and output `(batch, normalized_shape)`; `weight` and
/// `bias` `[normalized_shape]`, initialized to ones and zeros as in
/// PyTorch.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::LayerNorm;
///
/// let ln = LayerNorm::new(4);
/// assert_eq!(ln.to_string(), "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)");
/// let y = ln.forward(&Tensor::from_row_slice(1, 4, &[1.0, 2.0, 3.0, 4.0]))?;
/// assert!((y.row(0).sum()).abs() < 1e-5);
/// let plain = LayerNorm::with_options(4, 1e-3, false, false);
/// assert_eq!(plain.num_parameters(), 0);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LayerNorm {
    features: usize,
    eps: f64,
    affine: bool,
    weight: Option<Param>,
    bias: Option<Param>,
    training: bool,
    // Training buffers: the normalized input, 1/std per row, the output
    // and the input gradient.
    xhat: Tensor,
    rstd: Vec<f32>,
    output: Tensor,
    grad_input: Tensor,
    scratch: Vec<f32>,
    col_sums: Vec<f32>,
    recorded: bool,
}

impl LayerNorm {
    /// `nn.LayerNorm(features)`: `eps=1e-5`, with a weight and a bias.
    #[must_use]
    pub fn new(features: usize) -> Self {
        Self::with_options(features, 1e-5, true, true)
    }

    /// `nn.LayerNorm(features, eps, elementwise_affine, bias)`; `bias` only
    /// applies with `elementwise_affine`, as in PyTorch.
    #[must_use]
    pub fn with_options(features: usize, eps: f64, elementwise_affine: bool, bias: bool) -> Self {
        let ones = vec![1.0; features];
        let zeros = vec![0.0; features];
        Self {
            features,
            eps,
            affine: elementwise_affine,
            weight: elementwise_affine.then(|| Param::vector(&ones)),
            bias: (elementwise_affine && bias).then(|| Param::vector(&zeros)),
            training: true,
            xhat: Tensor::zeros(0, 0),
            rstd: Vec::new(),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            scratch: Vec::new(),
            col_sums: Vec::new(),
            recorded: false,
        }
    }

    /// The normalized features.
    #[must_use]
    pub fn normalized_shape(&self) -> usize {
        self.features
    }

    /// `eps`.
    #[must_use]
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The weight (`[features]`), with `elementwise_affine`.
    #[must_use]
    pub fn weight(&self) -> Option<&Param> {
        self.weight.as_ref()
    }

    /// The bias (`[features]`), with `elementwise_affine` and `bias`.
    #[must_use]
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.ncols() != self.features {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("LayerNorm"),
                message: format!(
                    "Given normalized_shape=[{}], expected input with shape [*, {}], but got input of size[{}, {}]",
                    self.features,
                    self.features,
                    x.nrows(),
                    x.ncols()
                ),
            });
        }
        Ok(())
    }

    /// `out = xhat * weight + bias` with the per-row statistics in `mean`
    /// and `rstd`; `xhat` is kept when given (training).
    fn compute(
        &self,
        x: &Tensor,
        xhat: Option<&mut Tensor>,
        rstd: &mut [f32],
        mean: &mut [f32],
        out: &mut [MaybeUninit<f32>],
    ) {
        let (rows, cols) = x.shape();
        kernels::row_moments(x.as_slice(), rows, self.eps as f32, mean, rstd);
        let w = self.weight.as_ref().map(|p| p.value().as_slice());
        let b = self.bias.as_ref().map(|p| p.value().as_slice());
        let xhat = xhat.map(|h| {
            ensure_shape(h, rows, cols);
            h.as_mut_slice()
        });
        kernels::normalize_rows(x.as_slice(), rows, mean, rstd, w, b, xhat, out);
    }
}

impl Module for LayerNorm {
    fn name(&self) -> &str {
        "LayerNorm"
    }

    fn extra_repr(&self) -> String {
        format!(
            "({},), eps={}, elementwise_affine={}, bias={}",
            self.features,
            py_float(self.eps),
            if self.affine { "True" } else { "False" },
            if self.bias.is_some() { "True" } else { "False" }
        )
    }

    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        if let Some(w) = &self.weight {
            f("weight", w);
        }
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        if let Some(w) = &mut self.weight {
            f("weight", w);
        }
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

impl Forward for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        let mut stats = vec![0.0; 2 * x.nrows()];
        let (mean, rstd) = stats.split_at_mut(x.nrows());
        // SAFETY: the kernel writes every element of the output.
        Ok(unsafe {
            new_filled(x.nrows(), x.ncols(), |out| {
                self.compute(x, None, rstd, mean, out);
            })
        })
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, ws: &mut crate::Workspace) -> Result<()> {
        self.check(x)?;
        ensure_shape(out, x.nrows(), x.ncols());
        // The per-row statistics live in a workspace matrix: no
        // allocation once it has served a batch of this size.
        let mut stats = ws.take();
        ensure_shape(&mut stats, x.nrows(), 2);
        let (mean, rstd) = stats.as_mut_slice().split_at_mut(x.nrows());
        self.compute(x, None, rstd, mean, as_uninit(out.as_mut_slice()));
        ws.give(stats);
        Ok(())
    }
}

impl Backward for LayerNorm {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        self.check(x)?;
        let mut xhat = std::mem::replace(&mut self.xhat, Tensor::zeros(0, 0));
        let mut out = std::mem::replace(&mut self.output, Tensor::zeros(0, 0));
        let mut rstd = std::mem::take(&mut self.rstd);
        let mut mean = std::mem::take(&mut self.scratch);
        rstd.resize(x.nrows(), 0.0);
        mean.resize(x.nrows(), 0.0);
        ensure_shape(&mut out, x.nrows(), x.ncols());
        self.compute(
            x,
            Some(&mut xhat),
            &mut rstd,
            &mut mean,
            as_uninit(out.as_mut_slice()),
        );
        (self.xhat, self.output, self.rstd, self.scratch) = (xhat, out, rstd, mean);
        self.recorded = true;
        Ok(&self.output)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        begin_backward(&mut self.recorded, "LayerNorm", self.xhat.shape(), grad)?;
        let (rows, cols) = grad.shape();
        let (g, h) = (grad.as_slice(), self.xhat.as_slice());
        let w = self.weight.as_ref().map(|p| p.value().as_slice());
        self.scratch.resize(2 * rows, 0.0);
        self.col_sums.resize(2 * cols, 0.0);
        ensure_shape(&mut self.grad_input, rows, cols);
        kernels::layer_norm_dx(
            g,
            h,
            rows,
            &self.rstd,
            w,
            &mut self.scratch,
            &mut self.col_sums,
            self.grad_input.as_mut_slice(),
        );
        // The weight's and bias's gradients, summed over the rows above.
        let (gw, gb) = self.col_sums.split_at(cols);
        affine_grads(&mut self.weight, &mut self.bias, gw, gb);
        Ok(&self.grad_input)
    }
}

impl fmt::Display for LayerNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}

/// PyTorch's `nn.BatchNorm1d(num_features)` on a `(batch, num_features)`
/// input: each feature is normalized over the batch to mean 0 and
/// variance 1, then scaled by `weight` and shifted by `bias`.
///
/// - In training mode, [`Backward::forward_train`] normalizes with the
///   batch's statistics (biased variance) and, with
///   `track_running_stats`, updates the buffers as PyTorch does:
///   `running = (1 - momentum) * running + momentum * batch`, with the
///   unbiased variance, `num_batches_tracked += 1`, and with
///   `momentum = None` a cumulative average (`1 / num_batches_tracked`).
///   A batch of one row is an error, as in PyTorch.
/// - In eval mode, and always in [`Forward::forward`] (inference never
///   changes state in nncore, see [`Dropout`](crate::Dropout)), it
///   normalizes with the running statistics; without
///   `track_running_stats` there are none and the batch's are used.
///
/// Shapes: input and output `(batch, num_features)`; `weight`, `bias`,
/// `running_mean`, `running_var` `[num_features]`; `num_batches_tracked`
/// an `i64` scalar `[]`. Its `state_dict` is PyTorch's: `weight`, `bias`,
/// `running_mean`, `running_var`, `num_batches_tracked`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// let mut bn = BatchNorm1d::new(3);
/// assert_eq!(
///     bn.to_string(),
///     "BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
/// );
/// let x = Tensor::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
/// let y = bn.forward_train(&x)?;
/// assert!((y[(0, 0)] + 1.0).abs() < 1e-3 && (y[(1, 0)] - 1.0).abs() < 1e-3);
/// assert_eq!(bn.running_mean().unwrap()[0], 0.2);
/// assert_eq!(bn.num_batches_tracked(), Some(1));
/// let names: Vec<String> = bn.state_dict().keys().map(String::from).collect();
/// assert_eq!(names, ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
///
/// let plain = BatchNorm1d::new(3).with_momentum(None).with_affine(false);
/// assert_eq!(plain.num_parameters(), 0);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchNorm1d {
    // The type name errors carry (`BatchNorm2d` when it serves one).
    label: &'static str,
    features: usize,
    eps: f64,
    momentum: Option<f64>,
    weight: Option<Param>,
    bias: Option<Param>,
    running_mean: Option<Buffer>,
    running_var: Option<Buffer>,
    num_batches_tracked: Option<Buffer>,
    training: bool,
    // Training buffers: the normalized input, 1/std per feature, the
    // batch's statistics (then the gradient's column sums), the output and
    // the input gradient; whether the recorded forward used the batch's
    // statistics.
    xhat: Tensor,
    invstd: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    output: Tensor,
    grad_input: Tensor,
    batch_stats: bool,
    recorded: bool,
}

impl BatchNorm1d {
    /// `nn.BatchNorm1d(num_features)`: `eps=1e-5`, `momentum=0.1`,
    /// `affine=True` (weight ones, bias zeros), `track_running_stats=True`
    /// (running mean zeros, running variance ones, counter 0).
    #[must_use]
    pub fn new(num_features: usize) -> Self {
        let mut bn = Self {
            label: "BatchNorm1d",
            features: num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            weight: None,
            bias: None,
            running_mean: None,
            running_var: None,
            num_batches_tracked: None,
            training: true,
            xhat: Tensor::zeros(0, 0),
            invstd: Vec::new(),
            mean: Vec::new(),
            var: Vec::new(),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            batch_stats: true,
            recorded: false,
        };
        bn = bn.with_affine(true).with_track_running_stats(true);
        bn
    }

    /// `eps`, added to the variance.
    #[must_use]
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// `momentum`; `None` is PyTorch's `momentum=None`, a cumulative
    /// moving average.
    #[must_use]
    pub fn with_momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }

    /// `affine`: with it, a weight (ones) and a bias (zeros); without,
    /// neither.
    #[must_use]
    pub fn with_affine(mut self, affine: bool) -> Self {
        let n = self.features;
        self.weight = affine.then(|| Param::vector(&vec![1.0; n]));
        self.bias = affine.then(|| Param::vector(&vec![0.0; n]));
        self
    }

    /// PyTorch's keyword `bias`: with `false`, an affine layer has a
    /// weight but no bias. Only applies with `affine`.
    #[must_use]
    pub fn with_bias(mut self, bias: bool) -> Self {
        let n = self.features;
        self.bias = (self.weight.is_some() && bias).then(|| Param::vector(&vec![0.0; n]));
        self
    }

    /// `track_running_stats`: with it, the running statistics and the
    /// counter as buffers (reset to zeros, ones and 0); without, no
    /// buffers, and the batch's statistics are used in eval mode too.
    #[must_use]
    pub fn with_track_running_stats(mut self, track: bool) -> Self {
        let n = self.features;
        self.running_mean = track.then(|| Buffer::zeros(n));
        self.running_var = track.then(|| Buffer::filled(n, 1.0));
        self.num_batches_tracked = track.then(|| Buffer::scalar_i64(0).optional_on_load());
        self
    }

    /// `num_features`.
    #[must_use]
    pub fn num_features(&self) -> usize {
        self.features
    }

    /// `eps`.
    #[must_use]
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `momentum` (`None`: cumulative moving average).
    #[must_use]
    pub fn momentum(&self) -> Option<f64> {
        self.momentum
    }

    /// The weight (`[num_features]`), with `affine`.
    #[must_use]
    pub fn weight(&self) -> Option<&Param> {
        self.weight.as_ref()
    }

    /// The bias (`[num_features]`), with `affine` and `bias`.
    #[must_use]
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The running mean (`[num_features]`), with `track_running_stats`.
    #[must_use]
    pub fn running_mean(&self) -> Option<&[f32]> {
        self.running_mean.as_ref().and_then(Buffer::as_f32)
    }

    /// The running (unbiased) variance, with `track_running_stats`.
    #[must_use]
    pub fn running_var(&self) -> Option<&[f32]> {
        self.running_var.as_ref().and_then(Buffer::as_f32)
    }

    /// How many training batches updated the running statistics, with
    /// `track_running_stats`.
    #[must_use]
    pub fn num_batches_tracked(&self) -> Option<i64> {
        self.num_batches_tracked
            .as_ref()
            .and_then(|b| b.as_i64())
            .and_then(|v| v.first().copied())
    }

    /// PyTorch's `reset_running_stats()`: running mean zeros, running
    /// variance ones, counter 0.
    pub fn reset_running_stats(&mut self) {
        for (b, v) in [(&mut self.running_mean, 0.0), (&mut self.running_var, 1.0)] {
            if let Some(s) = b.as_mut().and_then(Buffer::as_f32_mut) {
                s.fill(v);
            }
        }
        if let Some(c) = self
            .num_batches_tracked
            .as_mut()
            .and_then(Buffer::as_i64_mut)
        {
            c.fill(0);
        }
    }

    fn check(&self, x: &Tensor, batch_stats: bool) -> Result<()> {
        let err = |message: String| {
            Err(Error::InvalidInput {
                path: ModulePath::leaf(self.label),
                message,
            })
        };
        if x.ncols() != self.features {
            let what = if self.running_mean.is_some() {
                "running_mean"
            } else if self.weight.is_some() {
                "weight"
            } else {
                ""
            };
            if !what.is_empty() {
                return err(format!(
                    "{what} should contain {} elements not {}",
                    x.ncols(),
                    self.features
                ));
            }
        }
        if batch_stats && x.nrows() == 1 {
            return err(format!(
                "Expected more than 1 value per channel when training, got input size torch.Size([1, {}])",
                x.ncols()
            ));
        }
        Ok(())
    }

    /// Whether a forward in the current mode uses the batch's statistics.
    fn uses_batch_stats(&self, training: bool) -> bool {
        training || self.running_mean.is_none()
    }

    /// Normalizes `x` into `out` with the batch's statistics (written to
    /// `mean` and `var`) or the running ones; fills `xhat` and `invstd`
    /// when given (training).
    fn compute(
        &self,
        x: &Tensor,
        batch: bool,
        (mean, var): (&mut Vec<f32>, &mut Vec<f32>),
        xhat: Option<&mut Tensor>,
        invstd: Option<&mut Vec<f32>>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (rows, cols) = x.shape();
        let (m, v): (&[f32], &[f32]) = match (batch, self.running_mean(), self.running_var()) {
            (false, Some(m), Some(v)) => (m, v),
            _ => {
                mean.resize(cols, 0.0);
                var.resize(cols, 0.0);
                kernels::column_moments(x.as_slice(), rows, mean, var);
                (mean, var)
            }
        };
        let xhat = xhat.map(|h| {
            ensure_shape(h, rows, cols);
            h.as_mut_slice()
        });
        let invstd = invstd.map(|i| {
            i.resize(cols, 0.0);
            i.as_mut_slice()
        });
        kernels::normalize_columns(
            x.as_slice(),
            rows,
            m,
            v,
            self.eps as f32,
            self.weight.as_ref().map(|p| p.value().as_slice()),
            self.bias.as_ref().map(|p| p.value().as_slice()),
            xhat,
            invstd,
            out,
        );
    }

    /// PyTorch's running-statistics update after a training batch of
    /// `n` rows with per-feature means and biased variances.
    fn update_running(&mut self, n: usize, mean: &[f32], var: &[f32]) {
        let Some(count) = self
            .num_batches_tracked
            .as_mut()
            .and_then(Buffer::as_i64_mut)
        else {
            return;
        };
        count[0] = count[0].saturating_add(1);
        if n == 0 {
            return;
        }
        let factor = match self.momentum {
            Some(m) => m,
            None => 1.0 / count[0] as f64,
        } as f32;
        // n > 1: a batch of one row is refused before this.
        let unbias = n as f32 / (n - 1).max(1) as f32;
        if let Some(rm) = self.running_mean.as_mut().and_then(Buffer::as_f32_mut) {
            for (r, m) in rm.iter_mut().zip(mean) {
                *r = (1.0 - factor) * *r + factor * m;
            }
        }
        if let Some(rv) = self.running_var.as_mut().and_then(Buffer::as_f32_mut) {
            for (r, v) in rv.iter_mut().zip(var) {
                *r = (1.0 - factor) * *r + factor * (v * unbias);
            }
        }
    }
}

impl Module for BatchNorm1d {
    fn name(&self) -> &str {
        "BatchNorm1d"
    }

    fn extra_repr(&self) -> String {
        let py_bool = |b: bool| if b { "True" } else { "False" };
        format!(
            "{}, eps={}, momentum={}, affine={}, bias={}, track_running_stats={}",
            self.features,
            py_float(self.eps),
            self.momentum.map_or_else(|| "None".to_owned(), py_float),
            py_bool(self.weight.is_some()),
            py_bool(self.bias.is_some()),
            py_bool(self.running_mean.is_some())
        )
    }

    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        if let Some(w) = &self.weight {
            f("weight", w);
        }
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        if let Some(w) = &mut self.weight {
            f("weight", w);
        }
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }

    fn visit_own_buffers<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Buffer)) {
        for (name, b) in [
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
            ("num_batches_tracked", &self.num_batches_tracked),
        ] {
            if let Some(b) = b {
                f(name, b);
            }
        }
    }

    fn visit_own_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Buffer)) {
        for (name, b) in [
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
            ("num_batches_tracked", &mut self.num_batches_tracked),
        ] {
            if let Some(b) = b {
                f(name, b);
            }
        }
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

impl Forward for BatchNorm1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let batch = self.uses_batch_stats(false);
        self.check(x, batch)?;
        let (mut mean, mut var) = (Vec::new(), Vec::new());
        // SAFETY: the kernel writes every element of the output.
        Ok(unsafe {
            new_filled(x.nrows(), x.ncols(), |out| {
                self.compute(x, batch, (&mut mean, &mut var), None, None, out);
            })
        })
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, _ws: &mut crate::Workspace) -> Result<()> {
        let batch = self.uses_batch_stats(false);
        self.check(x, batch)?;
        ensure_shape(out, x.nrows(), x.ncols());
        // With running statistics (the usual case) no scratch is needed.
        let (mut mean, mut var) = (Vec::new(), Vec::new());
        self.compute(
            x,
            batch,
            (&mut mean, &mut var),
            None,
            None,
            as_uninit(out.as_mut_slice()),
        );
        Ok(())
    }
}

impl Backward for BatchNorm1d {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        let batch = self.uses_batch_stats(self.training);
        self.check(x, batch)?;
        let mut xhat = std::mem::replace(&mut self.xhat, Tensor::zeros(0, 0));
        let mut out = std::mem::replace(&mut self.output, Tensor::zeros(0, 0));
        let mut invstd = std::mem::take(&mut self.invstd);
        let (mut mean, mut var) = (
            std::mem::take(&mut self.mean),
            std::mem::take(&mut self.var),
        );
        ensure_shape(&mut out, x.nrows(), x.ncols());
        self.compute(
            x,
            batch,
            (&mut mean, &mut var),
            Some(&mut xhat),
            Some(&mut invstd),
            as_uninit(out.as_mut_slice()),
        );
        if self.training && batch {
            self.update_running(x.nrows(), &mean, &var);
        }
        (self.xhat, self.output, self.invstd) = (xhat, out, invstd);
        (self.mean, self.var) = (mean, var);
        self.batch_stats = batch;
        self.recorded = true;
        Ok(&self.output)
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        begin_backward(&mut self.recorded, self.label, self.xhat.shape(), grad)?;
        let (rows, cols) = grad.shape();
        ensure_shape(&mut self.grad_input, rows, cols);
        // The statistics are not needed any more: their room holds the
        // column sums.
        self.mean.resize(cols, 0.0);
        self.var.resize(cols, 0.0);
        kernels::batch_norm_dx(
            grad.as_slice(),
            self.xhat.as_slice(),
            rows,
            &self.invstd,
            self.weight.as_ref().map(|p| p.value().as_slice()),
            self.batch_stats,
            &mut self.mean,
            &mut self.var,
            self.grad_input.as_mut_slice(),
        );
        // sum(g * xhat) is the weight's gradient, sum(g) the bias's.
        affine_grads(&mut self.weight, &mut self.bias, &self.var, &self.mean);
        Ok(&self.grad_input)
    }
}

impl fmt::Display for BatchNorm1d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}

/// PyTorch's `nn.BatchNorm2d`: [`BatchNorm1d`] over the channels of
/// images `(N, C, H, W)`, each channel normalized with the statistics of
/// its `N*H*W` values (the running variance unbiased over those), with the
/// same options, parameters (`weight`, `bias`: `[C]`) and buffers
/// (`running_mean`, `running_var`, `num_batches_tracked`).
///
/// Images are stored in `CHWN` order (see [`NdTensor`](crate::NdTensor)),
/// so one channel's values are contiguous: the layer is `BatchNorm1d` on
/// the same memory read as an `(N*H*W) x C` matrix.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let mut bn = BatchNorm2d::new(3);
/// assert_eq!(
///     bn.to_string(),
///     "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
/// );
/// let x = NdTensor::from_row_major(&[2, 3, 1, 2], &[0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11.])?;
/// let (y, dims) = bn.forward_train_nd(&x)?;
/// assert_eq!(dims.as_slice(), &[3, 1, 2]);
/// // Channel 0 holds 0, 1, 6, 7: mean 3.5, (biased) variance 9.25.
/// assert!((y[(0, 0)] - (0.0 - 3.5) / (9.25f32 + 1e-5).sqrt()).abs() < 1e-6);
/// let mean = bn.running_mean().unwrap();
/// assert!((mean[0] - 0.35).abs() < 1e-6 && (mean[2] - 0.75).abs() < 1e-6);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    inner: BatchNorm1d,
    // The image shape of the recorded forward (N, C, H*W), the input seen
    // as `(N*H*W) x C`, and the input gradient in image form.
    recorded: Option<(usize, usize, usize)>,
    as_rows: Tensor,
    grad_rows: Tensor,
    grad_input: Tensor,
}

impl BatchNorm2d {
    /// `nn.BatchNorm2d(num_features)`, with [`BatchNorm1d::new`]'s
    /// defaults.
    #[must_use]
    pub fn new(num_features: usize) -> Self {
        let mut inner = BatchNorm1d::new(num_features);
        inner.label = "BatchNorm2d";
        Self {
            inner,
            recorded: None,
            as_rows: Tensor::zeros(0, 0),
            grad_rows: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
        }
    }

    /// As [`BatchNorm1d::with_eps`].
    #[must_use]
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.inner = self.inner.with_eps(eps);
        self
    }

    /// As [`BatchNorm1d::with_momentum`].
    #[must_use]
    pub fn with_momentum(mut self, momentum: Option<f64>) -> Self {
        self.inner = self.inner.with_momentum(momentum);
        self
    }

    /// As [`BatchNorm1d::with_affine`].
    #[must_use]
    pub fn with_affine(mut self, affine: bool) -> Self {
        self.inner = self.inner.with_affine(affine);
        self
    }

    /// As [`BatchNorm1d::with_bias`].
    #[must_use]
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.inner = self.inner.with_bias(bias);
        self
    }

    /// As [`BatchNorm1d::with_track_running_stats`].
    #[must_use]
    pub fn with_track_running_stats(mut self, track: bool) -> Self {
        self.inner = self.inner.with_track_running_stats(track);
        self
    }

    /// `num_features` (the channels).
    #[must_use]
    pub fn num_features(&self) -> usize {
        self.inner.num_features()
    }

    /// The running mean per channel, if tracked.
    #[must_use]
    pub fn running_mean(&self) -> Option<&[f32]> {
        self.inner.running_mean()
    }

    /// The running (unbiased) variance per channel, if tracked.
    #[must_use]
    pub fn running_var(&self) -> Option<&[f32]> {
        self.inner.running_var()
    }

    /// The weight (`[C]`), with `affine`.
    #[must_use]
    pub fn weight(&self) -> Option<&Param> {
        self.inner.weight()
    }

    /// The bias (`[C]`), with `affine` and `bias`.
    #[must_use]
    pub fn bias(&self) -> Option<&Param> {
        self.inner.bias()
    }

    /// `x` (samples of `dims`) read as the `(N*H*W) x C` matrix
    /// [`BatchNorm1d`] normalizes, into `rows`; returns `(N, C, H*W)`.
    fn rows_of(x: &Tensor, dims: Dims, rows: &mut Tensor) -> Result<(usize, usize, usize)> {
        check_dims("BatchNorm2d", x, dims)?;
        let (c, h, w) = dims.chw("BatchNorm2d", x.nrows())?;
        ensure_shape(rows, x.nrows() * h * w, c);
        rows.as_mut_slice().copy_from_slice(x.as_slice());
        Ok((x.nrows(), c, h * w))
    }
}

impl Module for BatchNorm2d {
    fn name(&self) -> &str {
        "BatchNorm2d"
    }

    fn extra_repr(&self) -> String {
        self.inner.extra_repr()
    }

    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        self.inner.visit_own_parameters(f);
    }

    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        self.inner.visit_own_parameters_mut(f);
    }

    fn visit_own_buffers<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Buffer)) {
        self.inner.visit_own_buffers(f);
    }

    fn visit_own_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Buffer)) {
        self.inner.visit_own_buffers_mut(f);
    }

    fn set_training(&mut self, training: bool) {
        self.inner.set_training(training);
    }

    fn is_training(&self) -> bool {
        self.inner.is_training()
    }
}

impl Forward for BatchNorm2d {
    /// A plain matrix has no image shape: use
    /// [`ForwardExt::forward_nd`](crate::ForwardExt::forward_nd).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(needs_image("BatchNorm2d", x))
    }

    fn forward_dims(&self, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        let mut rows = Tensor::zeros(0, 0);
        let (n, c, hw) = Self::rows_of(x, dims, &mut rows)?;
        let mut y = self.inner.forward(&rows)?;
        crate::ops::reshape(&mut y, n, c * hw);
        Ok((y, dims))
    }

    fn forward_into_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        out: &mut Tensor,
        ws: &mut crate::Workspace,
    ) -> Result<Dims> {
        let mut rows = ws.take();
        let r = Self::rows_of(x, dims, &mut rows).and_then(|(n, c, hw)| {
            ensure_shape(out, n * hw, c);
            self.inner.forward_into(&rows, out, ws)?;
            crate::ops::reshape(out, n, c * hw);
            Ok(dims)
        });
        ws.give(rows);
        r
    }
}

impl Backward for BatchNorm2d {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        Err(needs_image("BatchNorm2d", x))
    }

    fn forward_train_dims<'a>(
        &'a mut self,
        x: &'a Tensor,
        dims: Dims,
    ) -> Result<(&'a Tensor, Dims)> {
        let mut rows = std::mem::replace(&mut self.as_rows, Tensor::zeros(0, 0));
        let shape = Self::rows_of(x, dims, &mut rows);
        self.as_rows = rows;
        let (n, c, hw) = shape?;
        self.inner.forward_train(&self.as_rows)?;
        crate::ops::reshape(&mut self.inner.output, n, c * hw);
        self.recorded = Some((n, c, hw));
        Ok((&self.inner.output, dims))
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        let Some((n, c, hw)) = self.recorded else {
            return Err(Error::NoRecordedForward {
                path: ModulePath::leaf("BatchNorm2d"),
            });
        };
        if grad.shape() != (n, c * hw) {
            return Err(Error::gradient_shape(
                "BatchNorm2d",
                (n, c * hw),
                grad.shape(),
            ));
        }
        self.recorded = None;
        crate::ops::reshape(&mut self.inner.output, n * hw, c);
        ensure_shape(&mut self.grad_rows, n * hw, c);
        self.grad_rows
            .as_mut_slice()
            .copy_from_slice(grad.as_slice());
        let g = self.inner.backward(&self.grad_rows)?;
        ensure_shape(&mut self.grad_input, n, c * hw);
        self.grad_input.as_mut_slice().copy_from_slice(g.as_slice());
        Ok(&self.grad_input)
    }
}

impl fmt::Display for BatchNorm2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}

/// Writes (or, when the parameter already holds a gradient, adds) the
/// per-feature sums `gw` and `gb` into the gradients of a normalization
/// layer's optional weight and bias.
fn affine_grads(weight: &mut Option<Param>, bias: &mut Option<Param>, gw: &[f32], gb: &[f32]) {
    for (p, sums) in [(weight, gw), (bias, gb)] {
        if let Some((_, g, acc)) = p.as_mut().and_then(Param::grad_slot) {
            for (d, s) in g.as_mut_slice().iter_mut().zip(sums) {
                *d = if acc { *d + s } else { *s };
            }
        }
    }
}
