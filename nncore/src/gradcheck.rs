//! A gradient check for any module, in the spirit of
//! `torch.autograd.gradcheck`.

use crate::forward::Backward;
use crate::module::Module;
use crate::module::ModuleExt;
use crate::{Dims, Error, Generator, NdTensor, Result, Tensor};

/// The settings of a gradient check: compares a module's backward pass with
/// central finite differences of its forward, for every parameter element
/// that requires a gradient and every input element.
///
/// The check reduces the output to the scalar `L = sum(out * w)` with a
/// random weight `w` of the output's shape (a vector-Jacobian product, as
/// PyTorch's fast mode does), runs `forward_train` and `backward(w)`, and
/// compares each gradient element with `(L(v + eps) - L(v - eps)) / 2 eps`
/// computed with `forward`, so that a `forward_train` that computes
/// something else than `forward` is caught too. Where training legitimately
/// computes another function (BatchNorm in training mode normalizes with
/// the batch's statistics, `forward` with the running ones), check the
/// training function with [`GradCheck::training`], or inference after
/// `model.eval()`; a failing check whose two forwards disagree says so.
/// The buffers the training forwards move (running statistics) are
/// restored afterwards. A layer that draws at random in training (dropout)
/// must be in eval mode. nncore computes in `f32`, so the defaults are
/// looser than PyTorch's `f64` ones: `eps = 1e-3`, a mismatch is
/// `|analytic - numeric| > atol + rtol * |numeric|` with `atol = 2e-3`,
/// `rtol = 2e-2`. Inputs that put a ReLU's argument within `eps` of 0 sit on
/// a kink, where finite differences are meaningless.
///
/// The module's parameters are restored bit for bit afterwards; their
/// gradients are cleared (`zero_grad`) before and after.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// use nncore::GradCheck;
///
/// #[derive(Module)]
/// struct Gate { a: Linear, b: Linear, tape: Tape }
///
/// #[nncore::forward]
/// impl Gate {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         Ok(sigmoid(self.a(x)?) * self.b(x)?)
///     }
/// }
///
/// let mut gate = nncore::with_seed(0, || Gate { a: Linear::new(3, 2), b: Linear::new(3, 2), tape: Tape::default() });
/// let x = nncore::Generator::new(1).uniform_tensor(4, 3, -1.0, 1.0);
/// let report = GradCheck::new().run(&mut gate, &x)?;
/// assert_eq!(report.checked, 2 * (3 * 2 + 2) + 4 * 3);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheck {
    eps: f32,
    atol: f32,
    rtol: f32,
    seed: u64,
    training: bool,
}

/// What a passing [`GradCheck`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheckReport {
    /// The gradient elements compared.
    pub checked: usize,
    /// The largest `|analytic - numeric|` seen.
    pub max_abs_error: f32,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            eps: 1e-3,
            atol: 2e-3,
            rtol: 2e-2,
            seed: 0,
            training: false,
        }
    }
}

impl GradCheck {
    /// The default settings (`eps = 1e-3`, `atol = 2e-3`, `rtol = 2e-2`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The finite-difference step.
    #[must_use]
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// The absolute tolerance.
    #[must_use]
    pub fn atol(mut self, atol: f32) -> Self {
        self.atol = atol;
        self
    }

    /// The relative tolerance.
    #[must_use]
    pub fn rtol(mut self, rtol: f32) -> Self {
        self.rtol = rtol;
        self
    }

    /// Takes the finite differences of `forward_train` instead of
    /// `forward`: checks the function training differentiates where it is
    /// not inference's (BatchNorm in training mode).
    #[must_use]
    pub fn training(mut self, training: bool) -> Self {
        self.training = training;
        self
    }

    /// The seed of the random output weight.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Runs the check on `model` at input `x` (`(batch, in_features)`).
    ///
    /// # Errors
    /// [`Error::GradCheck`] naming the first mismatching element (and how
    /// many mismatch in all); whatever the forward or backward report; an
    /// invalid setting ([`Error::InvalidArgument`]).
    pub fn run<M: Backward + ?Sized>(&self, model: &mut M, x: &Tensor) -> Result<GradCheckReport> {
        self.run_dims(model, x, Dims::flat(x.ncols()))
    }

    /// [`GradCheck::run`] on a batch of shaped samples (images
    /// `(N, C, H, W)`), through the shape-aware forwards.
    ///
    /// # Errors
    /// As [`GradCheck::run`].
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// use nncore::GradCheck;
    /// let mut conv = nncore::with_seed(0, || Conv2d::new(2, 3, 2));
    /// let x = NdTensor::new(nncore::Generator::new(1).uniform_tensor(2, 2 * 3 * 3, -1.0, 1.0), Dims::image(2, 3, 3))?;
    /// let report = GradCheck::new().run_nd(&mut conv, &x)?;
    /// assert_eq!(report.checked, 3 * 2 * 2 * 2 + 3 + 2 * 2 * 3 * 3);
    /// # Ok::<(), nncore::Error>(())
    /// ```
    pub fn run_nd<M: Backward + ?Sized>(
        &self,
        model: &mut M,
        x: &NdTensor,
    ) -> Result<GradCheckReport> {
        self.run_dims(model, x.tensor(), x.dims())
    }

    fn run_dims<M: Backward + ?Sized>(
        &self,
        model: &mut M,
        x: &Tensor,
        dims: Dims,
    ) -> Result<GradCheckReport> {
        let saved = crate::module::save_buffers(model);
        let result = self.check(model, x, dims);
        crate::module::restore_buffers(model, saved);
        result
    }

    fn check<M: Backward + ?Sized>(
        &self,
        model: &mut M,
        x: &Tensor,
        dims: Dims,
    ) -> Result<GradCheckReport> {
        if !(self.eps.is_finite() && self.eps > 0.0 && self.atol >= 0.0 && self.rtol >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "gradcheck: eps must be positive and tolerances non-negative, got eps={}, atol={}, rtol={}",
                self.eps, self.atol, self.rtol
            )));
        }
        model.zero_grad();
        let out = model.forward_train_dims(x, dims)?.0.clone();
        let w = Generator::new(self.seed).uniform_tensor(out.nrows(), out.ncols(), -1.0, 1.0);
        let dx = model.backward(&w)?.clone();
        let training = self.training;
        // The finite differences run the training forward, the function
        // `backward` differentiates (BatchNorm in training mode normalizes
        // with the batch's statistics, its inference forward with the
        // running ones); the buffers it updates are restored at the end.
        let loss = |m: &mut M, x: &Tensor| -> Result<f64> {
            let inference;
            let y = if training {
                m.forward_train_dims(x, dims)?.0
            } else {
                inference = m.forward_dims(x, dims)?.0;
                &inference
            };
            Ok(y.iter()
                .zip(w.iter())
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum())
        };

        let mut analytic: Vec<(String, Option<Tensor>, bool)> = Vec::new();
        for (name, p) in model.named_parameters() {
            analytic.push((name, p.grad().cloned(), p.requires_grad()));
        }
        let mut mismatches: Vec<String> = Vec::new();
        let mut report = GradCheckReport {
            checked: 0,
            max_abs_error: 0.0,
        };
        let eps = self.eps;
        let mut compare = |what: String, a: f32, numeric: f64, report: &mut GradCheckReport| {
            let numeric = numeric as f32;
            let err = (a - numeric).abs();
            report.checked += 1;
            report.max_abs_error = report.max_abs_error.max(err);
            // NaN on either side is a mismatch.
            let within = err <= self.atol + self.rtol * numeric.abs();
            if !within {
                mismatches.push(format!(
                    "{what}: backward gives {a}, finite differences {numeric}"
                ));
            }
        };

        for (index, (name, grad, requires)) in analytic.iter().enumerate() {
            if !requires {
                continue;
            }
            let (rows, cols) = param_shape(model, index);
            for e in 0..rows * cols {
                let old = model.parameters()[index].value()[e];
                set_param(model, index, e, old + eps);
                let lp = loss(model, x);
                set_param(model, index, e, old - eps);
                let lm = loss(model, x);
                set_param(model, index, e, old);
                let numeric = (lp? - lm?) / (2.0 * f64::from(eps));
                let a = grad.as_ref().map_or(0.0, |g| g[e]);
                let (r, c) = (e % rows, e / rows);
                let label = if cols == 1 || rows == 1 {
                    format!("{name}[{}]", r.max(c))
                } else {
                    format!("{name}[{r}, {c}]")
                };
                compare(label, a, numeric, &mut report);
            }
        }
        for e in 0..x.len() {
            let mut xp = x.clone();
            xp[e] += eps;
            let mut xm = x.clone();
            xm[e] -= eps;
            let numeric = (loss(model, &xp)? - loss(model, &xm)?) / (2.0 * f64::from(eps));
            compare(input_label(e, x.nrows(), dims), dx[e], numeric, &mut report);
        }
        model.zero_grad();
        let Some(first) = mismatches.first() else {
            return Ok(report);
        };
        let mut hint = String::new();
        if !training {
            let y = model.forward_dims(x, dims)?.0;
            let diff = y
                .iter()
                .zip(out.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if y.shape() != out.shape() || diff > self.atol {
                hint = format!(
                    "; forward_train and forward disagree at this input (largest difference {diff}): a forward_train that computes something else than forward, or a layer whose training differs from inference (BatchNorm: check it with GradCheck::training(true), or after model.eval())"
                );
            }
        }
        Err(Error::GradCheck(format!(
            "{first} ({} of {} elements mismatch; atol={}, rtol={}, eps={}){hint}",
            mismatches.len(),
            report.checked,
            self.atol,
            self.rtol,
            self.eps
        )))
    }
}

/// PyTorch's index of element `e` (column-major) of an input of `n`
/// samples of shape `dims`: `input[r, c]`, or `input[n, c, h, w]`.
fn input_label(e: usize, n: usize, dims: Dims) -> String {
    let (r, mut f) = (e % n.max(1), e / n.max(1));
    let d = dims.as_slice();
    let mut idx = vec![0; d.len()];
    for (i, size) in d.iter().enumerate().rev() {
        idx[i] = f % size.max(&1);
        f /= size.max(&1);
    }
    let rest: Vec<String> = idx.iter().map(ToString::to_string).collect();
    format!("input[{r}, {}]", rest.join(", "))
}

/// The storage shape of parameter `index` (column-major, as its value).
fn param_shape<M: Module + ?Sized>(m: &M, index: usize) -> (usize, usize) {
    m.parameters()
        .get(index)
        .map_or((0, 0), |p| p.value().shape())
}

/// Sets element `e` (column-major) of parameter `index`.
fn set_param<M: Module + ?Sized>(m: &mut M, index: usize, e: usize, value: f32) {
    let mut k = 0;
    m.visit_parameters_mut(&mut |_, p| {
        if k == index {
            p.value_mut()[e] = value;
        }
        k += 1;
    });
}

/// [`GradCheck`] with its default settings.
///
/// # Errors
/// As [`GradCheck::run`].
pub fn gradcheck<M: Backward + ?Sized>(model: &mut M, x: &Tensor) -> Result<GradCheckReport> {
    GradCheck::new().run(model, x)
}
