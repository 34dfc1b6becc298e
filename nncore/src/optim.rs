//! Optimizers with PyTorch's update rules and defaults, and learning-rate
//! schedules.
//!
//! An optimizer walks the model's parameters on every
//! [`Optimizer::step`]; its per-parameter state (momentum buffers, Adam's
//! moments) is keyed on each [`Param::id`](crate::Param::id), so it stays
//! with the right parameter whatever the traversal order. Parameters with
//! no gradient (frozen, or not reached by backward since `zero_grad`) are
//! left alone, as in PyTorch.
//!
//! ```
//! use nncore::prelude::*;
//! use nncore::{mse_loss, Optimizer, Sgd};
//!
//! let mut fc = Linear::new(3, 1);
//! let mut opt = Sgd::new(0.1);
//! let x = Tensor::from_element(4, 3, 1.0);
//! let target = Tensor::zeros(4, 1);
//! let mut losses = Vec::new();
//! for _ in 0..20 {
//!     fc.zero_grad();
//!     let y = fc.forward_train(&x)?;
//!     let (loss, grad) = mse_loss(y, &target)?;
//!     fc.backward(&grad)?;
//!     opt.step(&mut fc)?;
//!     losses.push(loss);
//! }
//! assert!(losses[19] < losses[0] / 10.0);
//! # Ok::<(), nncore::Error>(())
//! ```

use std::collections::HashMap;

use crate::checkpoint::{
    Fields, OptimizerState, SchedulerState, match_state, tensor_data, to_tensor,
};
use crate::module::ModuleExt;
use crate::{Error, Module, Param, Result, Tensor, TensorData};

/// What every optimizer does.
pub trait Optimizer {
    /// Updates every parameter of `model` that has a gradient.
    ///
    /// # Errors
    /// Invalid hyper-parameters (a negative learning rate, ...).
    fn step(&mut self, model: &mut dyn Module) -> Result<()>;

    /// The current learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (what schedules do).
    fn set_lr(&mut self, lr: f64);
}

/// An optimizer whose state can be saved and restored: what resumable
/// training ([`save_checkpoint`](crate::save_checkpoint)) needs. [`Sgd`]
/// and [`Adam`] (AdamW too) implement it. An optimizer that does not
/// cannot be checkpointed, and passing it to `save_checkpoint` is a compile
/// error rather than a run-time one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot save or restore its state",
    label = "`{Self}` does not implement `nncore::OptimizerCheckpoint`",
    note = "implement `nncore::OptimizerCheckpoint` (`state_dict` and `load_state_dict`) for it to checkpoint training"
)]
pub trait OptimizerCheckpoint: Optimizer {
    /// The optimizer's state (PyTorch's `optimizer.state_dict()`): its
    /// hyper-parameters and its per-parameter tensors under `model`'s
    /// parameter names. See [`OptimizerState`].
    ///
    /// # Errors
    /// A state that cannot be expressed (kept for optimizers whose state
    /// depends on the model in ways the names cannot carry).
    fn state_dict(&self, model: &dyn Module) -> Result<OptimizerState>;

    /// Restores a state from [`OptimizerCheckpoint::state_dict`] (of an optimizer of
    /// the same kind, for a model of the same parameter names and shapes),
    /// hyper-parameters included, as PyTorch's
    /// `optimizer.load_state_dict`. Every problem is reported at once; on
    /// error nothing changes.
    ///
    /// # Errors
    /// [`Error::LoadStateDict`] listing a kind mismatch, state for
    /// parameters the model does not have, shape mismatches and incomplete
    /// entries; [`Error::InvalidArgument`] for unreadable
    /// hyper-parameters.
    fn load_state_dict(&mut self, model: &dyn Module, state: &OptimizerState) -> Result<()>;
}

fn check_hyper(name: &str, value: f64, ok: bool, what: &str) -> Result<()> {
    if !value.is_finite() {
        Err(Error::InvalidArgument(format!(
            "Invalid {name} value: {value} (must be a finite number)"
        )))
    } else if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "Invalid {name} value: {value} ({what})"
        )))
    }
}

/// `Err` naming the first parameter whose gradient holds NaN or an
/// infinity, checked before an optimizer changes anything: one vectorized
/// pass over the gradients.
fn check_finite_grads(model: &mut dyn Module) -> Result<()> {
    let mut bad: Option<(usize, usize, f32)> = None;
    let mut index = 0;
    model.for_each_parameter_mut(&mut |p: &mut Param| {
        if bad.is_none()
            && let Some(g) = p.grad()
            && !crate::kernels::all_finite(g.as_slice())
            && let Some((at, v)) = g.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            bad = Some((index, at, *v));
        }
        index += 1;
    });
    let Some((param, at, value)) = bad else {
        return Ok(());
    };
    let (name, shape) = model
        .named_parameters()
        .into_iter()
        .nth(param)
        .map(|(n, p)| (n, p.value().shape()))
        .unwrap_or_default();
    // Column-major storage index to PyTorch's row-major flat index.
    let (rows, cols) = shape;
    let flat = if rows == 0 {
        at
    } else {
        (at % rows) * cols + at / rows
    };
    Err(Error::InvalidArgument(format!(
        "parameter {name} has a non-finite gradient ({value} at flat index {flat}); the optimizer step changed nothing"
    )))
}

/// PyTorch's `torch.optim.SGD`: learning rate, momentum, dampening,
/// Nesterov momentum and (L2) weight decay.
///
/// With `g = grad + weight_decay * p`: `buf = g` on the first step, then
/// `buf = momentum * buf + (1 - dampening) * g`; the update direction is
/// `g + momentum * buf` with Nesterov, else `buf` (or `g` without
/// momentum); `p -= lr * direction`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let mut fc = Linear::from_weights(Tensor::from_element(1, 2, 1.0), None)?;
/// let x = Tensor::from_row_slice(1, 2, &[1.0, 2.0]);
/// let y = fc.forward_train(&x)?;                   // 3.0
/// let (_, g) = nncore::mse_loss(y, &Tensor::zeros(1, 1))?; // dL/dy = 6
/// fc.backward(&g)?;                                // dL/dW = [6, 12]
/// Sgd::new(0.1).step(&mut fc)?;
/// let w = fc.weight().value();
/// assert!((w[(0, 0)] - 0.4).abs() < 1e-6 && (w[(0, 1)] + 0.2).abs() < 1e-6);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: HashMap<u64, Tensor>,
}

impl Sgd {
    /// `SGD(params, lr)`: no momentum, no weight decay.
    #[must_use]
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: HashMap::new(),
        }
    }

    /// Sets `momentum`.
    #[must_use]
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets `dampening`.
    #[must_use]
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Sets `nesterov`.
    #[must_use]
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Sets `weight_decay` (L2 penalty added to the gradient).
    #[must_use]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    fn validate(&self) -> Result<()> {
        check_hyper("learning rate", self.lr, self.lr >= 0.0, "must be >= 0")?;
        check_hyper("dampening", self.dampening, true, "")?;
        check_hyper(
            "momentum",
            self.momentum,
            self.momentum >= 0.0,
            "must be >= 0",
        )?;
        check_hyper(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "must be >= 0",
        )?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::InvalidArgument(
                "Nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut dyn Module) -> Result<()> {
        self.validate()?;
        check_finite_grads(model)?;
        let lr = self.lr as f32;
        let wd = self.weight_decay as f32;
        let momentum = self.momentum as f32;
        let dampening = self.dampening as f32;
        let nesterov = self.nesterov;
        let buffers = &mut self.buffers;
        model.for_each_parameter_mut(&mut |p: &mut Param| {
            let id = p.id();
            let (value, Some(grad)) = p.value_and_grad() else {
                return;
            };
            if momentum == 0.0 {
                crate::threads::for_parts(
                    (value.as_mut_slice(), grad.as_slice()),
                    &|(w, g): (&mut [f32], &[f32])| crate::kernels::sgd_update(w, g, lr, wd),
                );
                return;
            }
            match buffers.get_mut(&id) {
                None => {
                    let mut buf = grad.clone();
                    for (w, (g, b)) in value
                        .as_mut_slice()
                        .iter_mut()
                        .zip(grad.as_slice().iter().zip(buf.as_mut_slice()))
                    {
                        let d = g + wd * *w;
                        *b = d;
                        let dir = if nesterov { d + momentum * d } else { d };
                        *w -= lr * dir;
                    }
                    buffers.insert(id, buf);
                }
                Some(buf) => {
                    for (w, (g, b)) in value
                        .as_mut_slice()
                        .iter_mut()
                        .zip(grad.as_slice().iter().zip(buf.as_mut_slice()))
                    {
                        let d = g + wd * *w;
                        *b = momentum * *b + (1.0 - dampening) * d;
                        let dir = if nesterov { d + momentum * *b } else { *b };
                        *w -= lr * dir;
                    }
                }
            }
        });
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

impl OptimizerCheckpoint for Sgd {
    fn state_dict(&self, model: &dyn Module) -> Result<OptimizerState> {
        let mut st = OptimizerState::new("SGD");
        st.set_hyperparameter("lr", format!("{:?}", self.lr));
        st.set_hyperparameter("momentum", format!("{:?}", self.momentum));
        st.set_hyperparameter("dampening", format!("{:?}", self.dampening));
        st.set_hyperparameter("weight_decay", format!("{:?}", self.weight_decay));
        st.set_hyperparameter("nesterov", self.nesterov.to_string());
        for (name, p) in model.named_parameters() {
            if let Some(buf) = self.buffers.get(&p.id()) {
                st.insert_tensor(&name, "momentum_buffer", tensor_data(p, buf));
            }
        }
        Ok(st)
    }

    fn load_state_dict(&mut self, model: &dyn Module, state: &OptimizerState) -> Result<()> {
        let mut f = Fields::new("SGD", state.hyperparameters());
        let (lr, momentum, dampening, weight_decay, nesterov) = (
            f.get::<f64>("lr"),
            f.get::<f64>("momentum"),
            f.get::<f64>("dampening"),
            f.get::<f64>("weight_decay"),
            f.get::<bool>("nesterov"),
        );
        let problems = std::mem::take(&mut f.problems);
        let params = match_state(
            "SGD",
            model,
            state,
            &[("momentum_buffer", false, true)],
            problems,
        )?;
        let (Some(lr), Some(momentum), Some(dampening), Some(weight_decay), Some(nesterov)) =
            (lr, momentum, dampening, weight_decay, nesterov)
        else {
            return f.finish();
        };
        let next = Sgd {
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
            buffers: params
                .iter()
                .map(|(p, slots)| (p.id(), to_tensor(p, slots["momentum_buffer"])))
                .collect(),
        };
        next.validate()?;
        *self = next;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct AdamState {
    // Wide: 2^31 steps would overflow an i32.
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

/// PyTorch's `torch.optim.Adam` (and, with [`Adam::adamw`], `AdamW`):
/// betas, eps, weight decay and AMSGrad, with PyTorch's defaults
/// (`betas=(0.9, 0.999)`, `eps=1e-8`, weight decay 0 for Adam and 0.01 for
/// AdamW).
///
/// Per step `t`: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`. Adam adds
/// `weight_decay * p` to `g`; AdamW instead multiplies `p` by
/// `1 - lr * weight_decay` first.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let mut fc = Linear::from_weights(Tensor::from_element(1, 1, 1.0), None)?;
/// let mut opt = Adam::new(0.1);
/// fc.forward_train(&Tensor::from_element(1, 1, 1.0))?;
/// fc.backward(&Tensor::from_element(1, 1, 5.0))?;
/// opt.step(&mut fc)?;
/// // Adam's first step moves each weight by lr against the gradient's sign.
/// assert!((fc.weight().value()[(0, 0)] - 0.9).abs() < 1e-6);
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    decoupled: bool,
    state: HashMap<u64, AdamState>,
}

impl Adam {
    /// `Adam(params, lr)` with PyTorch's defaults.
    #[must_use]
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            decoupled: false,
            state: HashMap::new(),
        }
    }

    /// `AdamW(params, lr)` with PyTorch's defaults (weight decay 0.01).
    #[must_use]
    pub fn adamw(lr: f64) -> Self {
        Self {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::new(lr)
        }
    }

    /// Sets `betas`.
    #[must_use]
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// Sets `eps`.
    #[must_use]
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets `weight_decay`.
    #[must_use]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Sets `amsgrad`.
    #[must_use]
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    /// `Adam` or `AdamW`, as PyTorch's class names.
    fn kind(&self) -> &'static str {
        if self.decoupled { "AdamW" } else { "Adam" }
    }

    fn validate(&self) -> Result<()> {
        let (b1, b2) = self.betas;
        check_hyper("learning rate", self.lr, self.lr >= 0.0, "must be >= 0")?;
        check_hyper("epsilon", self.eps, self.eps >= 0.0, "must be >= 0")?;
        check_hyper("beta1", b1, (0.0..1.0).contains(&b1), "must be in [0, 1)")?;
        check_hyper("beta2", b2, (0.0..1.0).contains(&b2), "must be in [0, 1)")?;
        check_hyper(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "must be >= 0",
        )
    }
}

/// `AdamW`: [`Adam`] with decoupled weight decay; build it with
/// [`Adam::adamw`].
pub type AdamW = Adam;

impl Optimizer for Adam {
    fn step(&mut self, model: &mut dyn Module) -> Result<()> {
        self.validate()?;
        check_finite_grads(model)?;
        let (b1, b2) = self.betas;
        let (lr, eps, wd) = (self.lr, self.eps as f32, self.weight_decay as f32);
        let (amsgrad, decoupled) = (self.amsgrad, self.decoupled);
        let state = &mut self.state;
        model.for_each_parameter_mut(&mut |p: &mut Param| {
            let id = p.id();
            let (value, Some(grad)) = p.value_and_grad() else {
                return;
            };
            let st = state.entry(id).or_insert_with(|| AdamState {
                step: 0,
                exp_avg: Tensor::zeros(value.nrows(), value.ncols()),
                exp_avg_sq: Tensor::zeros(value.nrows(), value.ncols()),
                max_exp_avg_sq: amsgrad.then(|| Tensor::zeros(value.nrows(), value.ncols())),
            });
            st.step += 1;
            let t = st.step as f64;
            let bias1 = 1.0 - b1.powf(t);
            let bias2 = 1.0 - b2.powf(t);
            let step_size = (lr / bias1) as f32;
            let bias2_sqrt = bias2.sqrt() as f32;
            let (one_b1, b2f, one_b2) = ((1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
            if decoupled {
                let keep = (1.0 - lr * f64::from(wd)) as f32;
                value.apply(|w| *w *= keep);
            }
            let mut max_iter = st
                .max_exp_avg_sq
                .as_mut()
                .map(|m| m.as_mut_slice().iter_mut());
            for (((w, g), m), v) in value
                .as_mut_slice()
                .iter_mut()
                .zip(grad.as_slice())
                .zip(st.exp_avg.as_mut_slice())
                .zip(st.exp_avg_sq.as_mut_slice())
            {
                let g = if decoupled { *g } else { g + wd * *w };
                *m += one_b1 * (g - *m);
                *v = b2f * *v + one_b2 * g * g;
                let v_used = match max_iter.as_mut().and_then(Iterator::next) {
                    Some(mx) => {
                        *mx = mx.max(*v);
                        *mx
                    }
                    None => *v,
                };
                let denom = v_used.sqrt() / bias2_sqrt + eps;
                *w -= step_size * *m / denom;
            }
        });
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

impl OptimizerCheckpoint for Adam {
    fn state_dict(&self, model: &dyn Module) -> Result<OptimizerState> {
        let mut st = OptimizerState::new(self.kind());
        st.set_hyperparameter("lr", format!("{:?}", self.lr));
        st.set_hyperparameter("beta1", format!("{:?}", self.betas.0));
        st.set_hyperparameter("beta2", format!("{:?}", self.betas.1));
        st.set_hyperparameter("eps", format!("{:?}", self.eps));
        st.set_hyperparameter("weight_decay", format!("{:?}", self.weight_decay));
        st.set_hyperparameter("amsgrad", self.amsgrad.to_string());
        for (name, p) in model.named_parameters() {
            let Some(a) = self.state.get(&p.id()) else {
                continue;
            };
            let step = i64::try_from(a.step).unwrap_or(i64::MAX);
            st.insert_tensor(&name, "step", TensorData::scalar_i64(step));
            st.insert_tensor(&name, "exp_avg", tensor_data(p, &a.exp_avg));
            st.insert_tensor(&name, "exp_avg_sq", tensor_data(p, &a.exp_avg_sq));
            if let Some(m) = &a.max_exp_avg_sq {
                st.insert_tensor(&name, "max_exp_avg_sq", tensor_data(p, m));
            }
        }
        Ok(st)
    }

    fn load_state_dict(&mut self, model: &dyn Module, state: &OptimizerState) -> Result<()> {
        let kind = self.kind();
        let mut f = Fields::new(kind, state.hyperparameters());
        let (lr, beta1, beta2, eps, weight_decay, amsgrad) = (
            f.get::<f64>("lr"),
            f.get::<f64>("beta1"),
            f.get::<f64>("beta2"),
            f.get::<f64>("eps"),
            f.get::<f64>("weight_decay"),
            f.get::<bool>("amsgrad"),
        );
        let problems = std::mem::take(&mut f.problems);
        let params = match_state(
            kind,
            model,
            state,
            &[
                ("step", true, true),
                ("exp_avg", false, true),
                ("exp_avg_sq", false, true),
                ("max_exp_avg_sq", false, amsgrad == Some(true)),
            ],
            problems,
        )?;
        let (Some(lr), Some(beta1), Some(beta2), Some(eps), Some(weight_decay), Some(amsgrad)) =
            (lr, beta1, beta2, eps, weight_decay, amsgrad)
        else {
            return f.finish();
        };
        let mut bad_steps = Vec::new();
        let mut table = HashMap::new();
        for (p, slots) in &params {
            let step = slots["step"]
                .as_i64()
                .and_then(|v| v.first().copied())
                .unwrap_or(-1);
            let Ok(step) = u64::try_from(step) else {
                bad_steps.push(format!(
                    "{kind}: a negative step count ({step}) for a parameter"
                ));
                continue;
            };
            table.insert(
                p.id(),
                AdamState {
                    step,
                    exp_avg: to_tensor(p, slots["exp_avg"]),
                    exp_avg_sq: to_tensor(p, slots["exp_avg_sq"]),
                    max_exp_avg_sq: amsgrad.then(|| {
                        slots.get("max_exp_avg_sq").map_or_else(
                            || Tensor::zeros(p.value().nrows(), p.value().ncols()),
                            |t| to_tensor(p, t),
                        )
                    }),
                },
            );
        }
        if !bad_steps.is_empty() {
            return Err(Error::InvalidArgument(bad_steps.join("; ")));
        }
        let next = Adam {
            lr,
            betas: (beta1, beta2),
            eps,
            weight_decay,
            amsgrad,
            decoupled: self.decoupled,
            state: table,
        };
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// A learning-rate schedule, stepped once per epoch as PyTorch's
/// `scheduler.step()` is.
pub trait LrScheduler {
    /// Advances one epoch and sets the optimizer's learning rate.
    fn step(&mut self, optimizer: &mut dyn Optimizer);
}

/// A learning-rate schedule whose position can be saved and restored
/// (resumable training). [`StepLr`] and [`CosineAnnealingLr`] implement
/// it; a schedule that does not cannot be passed to
/// [`save_checkpoint`](crate::save_checkpoint), at compile time.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot save or restore its state",
    label = "`{Self}` does not implement `nncore::SchedulerCheckpoint`",
    note = "implement `nncore::SchedulerCheckpoint` (`state` and `load_state`) for it to checkpoint training"
)]
pub trait SchedulerCheckpoint: LrScheduler {
    /// The schedule's state (PyTorch's `scheduler.state_dict()`).
    ///
    /// # Errors
    /// A state that cannot be expressed.
    fn state(&self) -> Result<SchedulerState>;

    /// Restores a state from [`SchedulerCheckpoint::state`] of a schedule of the
    /// same kind; on error nothing changes.
    ///
    /// # Errors
    /// A kind mismatch or unreadable fields, all reported at once.
    fn load_state(&mut self, state: &SchedulerState) -> Result<()>;
}

/// Checks a schedule state's kind, collecting the problem in `f`.
fn check_kind(f: &mut Fields<'_>, state: &SchedulerState, kind: &str) {
    if state.kind() != kind {
        f.problems.push(format!(
            "the state is a {}'s, this schedule is {kind}",
            state.kind()
        ));
    }
}

/// PyTorch's `StepLR`: the learning rate times `gamma` every `step_size`
/// epochs.
///
/// # Example
/// ```
/// use nncore::{LrScheduler, Optimizer, Sgd, StepLr};
/// let mut opt = Sgd::new(1.0);
/// let mut sched = StepLr::new(&opt, 2, 0.1);
/// for _ in 0..4 { sched.step(&mut opt); }
/// assert!((opt.lr() - 0.01).abs() < 1e-12);
/// ```
#[derive(Debug, Clone)]
pub struct StepLr {
    base_lr: f64,
    step_size: usize,
    gamma: f64,
    epoch: usize,
}

impl StepLr {
    /// A schedule starting from the optimizer's current learning rate.
    #[must_use]
    pub fn new(optimizer: &dyn Optimizer, step_size: usize, gamma: f64) -> Self {
        Self {
            base_lr: optimizer.lr(),
            step_size: step_size.max(1),
            gamma,
            epoch: 0,
        }
    }
}

impl LrScheduler for StepLr {
    fn step(&mut self, optimizer: &mut dyn Optimizer) {
        self.epoch += 1;
        let k = (self.epoch / self.step_size) as i32;
        optimizer.set_lr(self.base_lr * self.gamma.powi(k));
    }
}

impl SchedulerCheckpoint for StepLr {
    fn state(&self) -> Result<SchedulerState> {
        let mut st = SchedulerState::new("StepLR");
        st.set("base_lr", format!("{:?}", self.base_lr));
        st.set("step_size", self.step_size.to_string());
        st.set("gamma", format!("{:?}", self.gamma));
        st.set("last_epoch", self.epoch.to_string());
        Ok(st)
    }

    fn load_state(&mut self, state: &SchedulerState) -> Result<()> {
        let mut f = Fields::new("StepLR", state.values());
        check_kind(&mut f, state, "StepLR");
        let (base_lr, step_size, gamma, epoch) = (
            f.get("base_lr"),
            f.get::<usize>("step_size"),
            f.get("gamma"),
            f.get("last_epoch"),
        );
        if let (Some(base_lr), Some(step_size), Some(gamma), Some(epoch), true) =
            (base_lr, step_size, gamma, epoch, f.problems.is_empty())
        {
            *self = Self {
                base_lr,
                step_size: step_size.max(1),
                gamma,
                epoch,
            };
        }
        f.finish()
    }
}

/// PyTorch's `CosineAnnealingLR`: `eta_min + (base - eta_min) * (1 +
/// cos(pi * epoch / t_max)) / 2`.
///
/// # Example
/// ```
/// use nncore::{CosineAnnealingLr, LrScheduler, Optimizer, Sgd};
/// let mut opt = Sgd::new(1.0);
/// let mut sched = CosineAnnealingLr::new(&opt, 10, 0.0);
/// for _ in 0..5 { sched.step(&mut opt); }
/// assert!((opt.lr() - 0.5).abs() < 1e-12);
/// ```
#[derive(Debug, Clone)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    t_max: usize,
    eta_min: f64,
    epoch: usize,
}

impl CosineAnnealingLr {
    /// A schedule starting from the optimizer's current learning rate.
    #[must_use]
    pub fn new(optimizer: &dyn Optimizer, t_max: usize, eta_min: f64) -> Self {
        Self {
            base_lr: optimizer.lr(),
            t_max: t_max.max(1),
            eta_min,
            epoch: 0,
        }
    }
}

impl LrScheduler for CosineAnnealingLr {
    fn step(&mut self, optimizer: &mut dyn Optimizer) {
        self.epoch += 1;
        let t = self.epoch as f64 / self.t_max as f64;
        let lr = self.eta_min
            + (self.base_lr - self.eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0;
        optimizer.set_lr(lr);
    }
}

impl SchedulerCheckpoint for CosineAnnealingLr {
    fn state(&self) -> Result<SchedulerState> {
        let mut st = SchedulerState::new("CosineAnnealingLR");
        st.set("base_lr", format!("{:?}", self.base_lr));
        st.set("T_max", self.t_max.to_string());
        st.set("eta_min", format!("{:?}", self.eta_min));
        st.set("last_epoch", self.epoch.to_string());
        Ok(st)
    }

    fn load_state(&mut self, state: &SchedulerState) -> Result<()> {
        let mut f = Fields::new("CosineAnnealingLR", state.values());
        check_kind(&mut f, state, "CosineAnnealingLR");
        let (base_lr, t_max, eta_min, epoch) = (
            f.get("base_lr"),
            f.get::<usize>("T_max"),
            f.get("eta_min"),
            f.get("last_epoch"),
        );
        if let (Some(base_lr), Some(t_max), Some(eta_min), Some(epoch), true) =
            (base_lr, t_max, eta_min, epoch, f.problems.is_empty())
        {
            *self = Self {
                base_lr,
                t_max: t_max.max(1),
                eta_min,
                epoch,
            };
        }
        f.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backward, Linear};

    /// Adam's step counter is wide: past 2^31 steps it neither overflows
    /// nor writes NaN weights.
    #[test]
    fn adam_steps_past_i32_max() {
        let mut fc = Linear::new(3, 2);
        let mut opt = Adam::new(0.01);
        let x = Tensor::from_element(2, 3, 1.0);
        let g = Tensor::from_element(2, 2, 1.0);
        fc.forward_train(&x).unwrap();
        fc.backward(&g).unwrap();
        opt.step(&mut fc).unwrap();
        for st in opt.state.values_mut() {
            st.step = u64::from(u32::MAX) + 7;
        }
        opt.step(&mut fc).unwrap();
        assert!(
            opt.state
                .values()
                .all(|s| s.step == u64::from(u32::MAX) + 8)
        );
        assert!(fc.weight().value().iter().all(|w| w.is_finite()));
    }
}
