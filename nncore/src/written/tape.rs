//! The training engine of written forwards: records each operation with
//! its value, then walks the record backwards.

use super::math::{self, Binary, ScalarOp, Unary};
use super::{Engine, Site, Var, Written};
use crate::forward::Backward;
use crate::ops::copy_into;
use crate::{Dims, Error, ModulePath, Result, Tensor};

#[derive(Debug, Clone, Copy)]
enum Op {
    Call {
        site: Site,
        key: usize,
        input: Var,
        out: Var,
    },
    Unary {
        k: Unary,
        a: Var,
        out: Var,
    },
    Scalar {
        op: ScalarOp,
        s: f32,
        a: Var,
        out: Var,
    },
    Binary {
        op: Binary,
        a: Var,
        b: Var,
        out: Var,
    },
    Softmax {
        a: Var,
        features: bool,
        log: bool,
        out: Var,
    },
    Narrow {
        a: Var,
        features: bool,
        start: usize,
        out: Var,
    },
    Cat {
        args: (u32, u32),
        features: bool,
        out: Var,
    },
}

impl Op {
    fn out(&self) -> Var {
        match *self {
            Op::Call { out, .. }
            | Op::Unary { out, .. }
            | Op::Scalar { out, .. }
            | Op::Binary { out, .. }
            | Op::Softmax { out, .. }
            | Op::Narrow { out, .. }
            | Op::Cat { out, .. } => out,
        }
    }
}

/// The record of a written forward's last training pass: every value it
/// computed and how, reused from step to step (after the first step of a
/// given shape, recording and backward allocate nothing).
///
/// A module whose `forward` is written with `#[nncore::forward]` holds one
/// in a field; build it with `Tape::default()`. It is not a child module:
/// it prints nothing and holds no parameters.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// struct Residual {
///     fc: Linear,
///     tape: Tape,
/// }
///
/// #[nncore::forward]
/// impl Residual {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         let h = self.fc(x)?;
///         Ok(relu(h) + x)
///     }
/// }
///
/// let mut block = Residual { fc: Linear::new(4, 4), tape: Tape::default() };
/// let x = Tensor::from_element(2, 4, 0.5);
/// let y = block.forward_train(&x)?.clone();
/// assert_eq!(y, block.forward(&x)?);
/// let grad = Tensor::from_element(2, 4, 1.0);
/// let dx = block.backward(&grad)?;
/// assert_eq!(dx.shape(), (2, 4));
/// assert!(block.fc.weight().grad().is_some());
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Default)]
pub struct Tape {
    owner: &'static str,
    vals: Vec<Tensor>,
    // The sample shape of each value (indexed as `vals`).
    dims: Vec<Dims>,
    len: usize,
    ops: Vec<Op>,
    cat_args: Vec<Var>,
    // (module key, index of the op whose forward_train its buffers hold)
    last_call: Vec<(usize, usize)>,
    grads: Vec<Tensor>,
    live: Vec<bool>,
    needs: Vec<bool>,
    scratch: Tensor,
    error: Option<Error>,
    out: Option<Var>,
    recorded: bool,
}

/// A clone starts empty: a copied model has no recorded forward (as a
/// `Linear`'s clone keeps no training buffers worth keeping either).
impl Clone for Tape {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("values", &self.len)
            .field("ops", &self.ops.len())
            .field("recorded", &self.recorded)
            .finish()
    }
}

impl Tape {
    pub(crate) fn begin(&mut self, x: &Tensor, dims: Dims, owner: &'static str) {
        self.owner = owner;
        self.len = 0;
        self.ops.clear();
        self.cat_args.clear();
        self.last_call.clear();
        self.error = None;
        self.out = None;
        self.recorded = false;
        let v = self.new_value();
        copy_into(x, &mut self.vals[v.0 as usize]);
        self.dims[v.0 as usize] = dims;
    }

    pub(crate) fn end(&mut self, r: Result<Var>) -> Result<()> {
        let v = self.finish_run(r)?;
        self.out = Some(v);
        self.recorded = true;
        Ok(())
    }

    pub(crate) fn output(&self) -> &Tensor {
        &self.vals[self.out.map_or(0, |v| v.0 as usize)]
    }

    pub(crate) fn output_dims(&self) -> Dims {
        self.dims[self.out.map_or(0, |v| v.0 as usize)]
    }

    pub(crate) fn input_grad(&self) -> &Tensor {
        &self.grads[0]
    }

    fn new_value(&mut self) -> Var {
        if self.len == self.vals.len() {
            self.vals.push(Tensor::zeros(0, 0));
            self.dims.push(Dims::flat(0));
        }
        self.len += 1;
        Var(self.len as u32 - 1)
    }

    fn get(&self, v: Var) -> &Tensor {
        &self.vals[v.0 as usize]
    }

    fn dims_of(&self, v: Var) -> Dims {
        self.dims[v.0 as usize]
    }

    /// Computes a new value with `f(values, out)`, of sample shape `d`
    /// (`None`: flat, its columns).
    fn compute(&mut self, d: Option<Dims>, f: impl FnOnce(&[Tensor], &mut Tensor)) -> Var {
        let v = self.new_value();
        let mut out = std::mem::replace(&mut self.vals[v.0 as usize], Tensor::zeros(0, 0));
        f(&self.vals, &mut out);
        self.dims[v.0 as usize] = d.unwrap_or(Dims::flat(out.ncols()));
        self.vals[v.0 as usize] = out;
        v
    }

    /// Runs child `m` (called at `site`) on `a`, recording.
    pub fn call<F: Backward + ?Sized>(&mut self, m: &mut F, site: Site, a: Var) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let v = self.new_value();
        let mut out = std::mem::replace(&mut self.vals[v.0 as usize], Tensor::zeros(0, 0));
        let d = self.dims_of(a);
        // The tape keeps the input unchanged until the backward pass.
        let r = m.forward_train_kept(&self.vals[a.0 as usize], d, &mut out);
        self.vals[v.0 as usize] = out;
        if let Ok(d) = r {
            self.dims[v.0 as usize] = d;
        }
        if let Err(e) = r {
            if self.error.is_none() {
                self.error = Some(site.wrap(e, self.owner));
            }
            return Var::POISON;
        }
        let key = (m as *const F).cast::<()>() as usize;
        let index = self.ops.len();
        match self.last_call.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = index,
            None => self.last_call.push((key, index)),
        }
        self.ops.push(Op::Call {
            site,
            key,
            input: a,
            out: v,
        });
        v
    }

    /// An element-wise function.
    pub fn unary(&mut self, k: Unary, a: Var) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let d = self.dims_of(a);
        let out = self.compute(Some(d), |v, o| math::unary_into(k, &v[a.0 as usize], o));
        self.ops.push(Op::Unary { k, a, out });
        out
    }

    /// A tensor and a scalar.
    pub fn scalar(&mut self, op: ScalarOp, a: Var, s: f32) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let d = self.dims_of(a);
        let out = self.compute(Some(d), |v, o| {
            math::scalar_into(op, s, &v[a.0 as usize], o)
        });
        self.ops.push(Op::Scalar { op, s, a, out });
        out
    }

    /// Two tensors, element-wise with broadcasting.
    pub fn binary(&mut self, op: Binary, a: Var, b: Var) -> Var {
        if !self.ok(&[a, b]) {
            return Var::POISON;
        }
        if let Err(m) = math::broadcast_shape(self.get(a).shape(), self.get(b).shape()) {
            return self.fail(m);
        }
        let d = match math::binary_dims(self.dims_of(a), self.dims_of(b)) {
            Ok(d) => d,
            Err(m) => return self.fail(m),
        };
        let out = self.compute(d, |v, o| {
            let _ = math::binary_into(op, &v[a.0 as usize], &v[b.0 as usize], o);
        });
        self.ops.push(Op::Binary { op, a, b, out });
        out
    }

    /// Softmax, or log-softmax, along `dim`.
    pub fn softmax(&mut self, a: Var, dim: i64, log: bool) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let features = match math::softmax_axis(dim, self.dims_of(a)) {
            Ok(f) => f,
            Err(m) => return self.fail(m),
        };
        let d = self.dims_of(a);
        let out = self.compute(Some(d), |v, o| {
            math::softmax_into(&v[a.0 as usize], features, log, o);
        });
        self.ops.push(Op::Softmax {
            a,
            features,
            log,
            out,
        });
        out
    }

    fn narrow_at_impl(&mut self, a: Var, features: bool, start: usize, len: usize) -> Var {
        // The caller sets the sample shape (`set_dims`).
        let d = self.dims_of(a);
        let out = self.compute(Some(d), |v, o| {
            math::narrow_into(&v[a.0 as usize], features, start, len, o);
        });
        self.ops.push(Op::Narrow {
            a,
            features,
            start,
            out,
        });
        out
    }

    /// PyTorch's `torch.cat(xs, dim)`.
    pub fn cat(&mut self, xs: &[Var], dim: i64) -> Var {
        let (features, (rows, cols), d) = match self.cat_plan(xs, dim) {
            Ok(plan) => plan,
            Err(poison) => return poison,
        };
        let out = self.compute(d, |v, o| {
            crate::ops::ensure_shape(o, rows, cols);
            let mut start = 0;
            for x in xs {
                let x = &v[x.0 as usize];
                math::cat_place(x, features, start, o);
                start += if features { x.ncols() } else { x.nrows() };
            }
        });
        let first = self.cat_args.len() as u32;
        self.cat_args.extend_from_slice(xs);
        self.ops.push(Op::Cat {
            args: (first, self.cat_args.len() as u32),
            features,
            out,
        });
        out
    }

    /// The backward pass of the recorded forward: accumulates the
    /// children's parameter gradients and, with `input_grad`, computes
    /// `dL/d input` into `grads[0]`.
    pub(crate) fn backward<W: Written + ?Sized>(
        &mut self,
        m: &mut W,
        grad: &Tensor,
        input_grad: bool,
    ) -> Result<()> {
        let Some(out) = self.out.filter(|_| self.recorded) else {
            return Err(Error::NoRecordedForward {
                path: ModulePath::leaf(W::NAME),
            });
        };
        let expected = self.get(out).shape();
        if grad.shape() != expected {
            return Err(Error::gradient_shape(W::NAME, expected, grad.shape()));
        }
        self.recorded = false;
        let n = self.len;
        self.needs.clear();
        self.needs.resize(n, false);
        self.needs[0] = input_grad;
        for op in &self.ops {
            let need = match *op {
                Op::Call { .. } => true,
                Op::Unary { a, .. }
                | Op::Scalar { a, .. }
                | Op::Softmax { a, .. }
                | Op::Narrow { a, .. } => self.needs[a.0 as usize],
                Op::Binary { a, b, .. } => self.needs[a.0 as usize] || self.needs[b.0 as usize],
                Op::Cat { args, .. } => self.cat_args[args.0 as usize..args.1 as usize]
                    .iter()
                    .any(|v| self.needs[v.0 as usize]),
            };
            self.needs[op.out().0 as usize] = need;
        }
        self.live.clear();
        self.live.resize(n, false);
        while self.grads.len() < n {
            self.grads.push(Tensor::zeros(0, 0));
        }
        self.accumulate(out, grad);
        for i in (0..self.ops.len()).rev() {
            let op = self.ops[i];
            if !self.live[op.out().0 as usize] {
                continue;
            }
            self.backward_op(m, i, op)?;
        }
        if input_grad && !self.live[0] {
            let (r, c) = self.vals[0].shape();
            crate::ops::ensure_shape(&mut self.grads[0], r, c);
            self.grads[0].fill(0.0);
        }
        Ok(())
    }

    /// Adds `g` into the gradient of `v`, summed over broadcast dimensions.
    fn accumulate(&mut self, v: Var, g: &Tensor) {
        let i = v.0 as usize;
        let shape = self.vals[i].shape();
        math::accumulate(&mut self.grads[i], &mut self.live[i], g, shape);
    }

    /// Adds the scratch buffer into the gradient of `v`. The first
    /// contribution of `v`'s own shape trades buffers with the gradient
    /// instead of copying the scratch into it (both hold `v`'s shape, so
    /// no buffer grows: a copy of 1 MB per residual-block value was 1.7%
    /// of `res_b256_train`).
    fn accumulate_scratch(&mut self, v: Var) {
        let i = v.0 as usize;
        if !self.live[i] && self.scratch.shape() == self.vals[i].shape() {
            std::mem::swap(&mut self.scratch, &mut self.grads[i]);
            self.live[i] = true;
            return;
        }
        let scratch = std::mem::replace(&mut self.scratch, Tensor::zeros(0, 0));
        self.accumulate(v, &scratch);
        self.scratch = scratch;
    }

    fn needs(&self, v: Var) -> bool {
        self.needs[v.0 as usize]
    }

    fn backward_op<W: Written + ?Sized>(&mut self, m: &mut W, index: usize, op: Op) -> Result<()> {
        let g = std::mem::replace(&mut self.grads[op.out().0 as usize], Tensor::zeros(0, 0));
        let r = self.backward_op_with(m, index, op, &g);
        self.grads[op.out().0 as usize] = g;
        r
    }

    fn backward_op_with<W: Written + ?Sized>(
        &mut self,
        m: &mut W,
        index: usize,
        op: Op,
        g: &Tensor,
    ) -> Result<()> {
        let owner = self.owner;
        match op {
            Op::Call {
                site,
                key,
                input,
                out,
            } => {
                let Some(child) = m.child_mut(site) else {
                    return Err(Error::InvalidInput {
                        path: ModulePath::leaf(owner),
                        message: format!(
                            "child `{}` called by the recorded forward is gone",
                            site.field
                        ),
                    });
                };
                let wrap = |e: Error| site.wrap(e, owner);
                let slot = self.last_call.iter().position(|(k, _)| *k == key);
                if let Some(slot) = slot.filter(|s| self.last_call[*s].1 != index) {
                    // Used again later in the forward: replay this call so
                    // that the child's buffers hold it. The replay is not a
                    // forward of the model: state it moves (BatchNorm's
                    // running statistics) is put back.
                    let state = crate::module::save_buffers(&*child);
                    let d = self.dims[input.0 as usize];
                    let same = child
                        .forward_train_dims(&self.vals[input.0 as usize], d)
                        .map(|(y, _)| {
                            y.shape() == self.vals[out.0 as usize].shape()
                                && y.iter()
                                    .zip(self.vals[out.0 as usize].iter())
                                    .all(|(a, b)| a.to_bits() == b.to_bits())
                        });
                    crate::module::restore_buffers(&mut *child, state);
                    let same = same.map_err(wrap)?;
                    if !same {
                        return Err(wrap(Error::InvalidInput {
                            path: ModulePath::leaf(child.name()),
                            message: "called at several places in one forward, it gave another output when replayed for the backward pass (a random layer such as Dropout): use one instance per place".into(),
                        }));
                    }
                    self.last_call[slot].1 = index;
                }
                let i = input.0 as usize;
                if self.needs(input) {
                    let mut acc = std::mem::replace(&mut self.grads[i], Tensor::zeros(0, 0));
                    let r = child.backward_kept(&self.vals[i], g, Some((&mut acc, self.live[i])));
                    self.grads[i] = acc;
                    r.map_err(wrap)?;
                    self.live[i] = true;
                } else {
                    child.backward_kept(&self.vals[i], g, None).map_err(wrap)?;
                }
            }
            Op::Unary { k, a, out } => {
                if self.needs(a) {
                    let mut s = std::mem::replace(&mut self.scratch, Tensor::zeros(0, 0));
                    math::unary_grad(k, self.get(a), self.get(out), g, &mut s);
                    self.scratch = s;
                    self.accumulate_scratch(a);
                }
            }
            Op::Scalar { op, s, a, .. } => {
                if self.needs(a) {
                    let mut d = std::mem::replace(&mut self.scratch, Tensor::zeros(0, 0));
                    math::scalar_grad(op, s, self.get(a), g, &mut d);
                    self.scratch = d;
                    self.accumulate_scratch(a);
                }
            }
            Op::Binary { op, a, b, .. } => {
                for (first, v) in [(true, a), (false, b)] {
                    if self.needs(v) {
                        let mut d = std::mem::replace(&mut self.scratch, Tensor::zeros(0, 0));
                        math::binary_grad(op, first, self.get(a), self.get(b), g, &mut d);
                        self.scratch = d;
                        self.accumulate_scratch(v);
                    }
                }
            }
            Op::Softmax {
                a,
                features,
                log,
                out,
            } => {
                if self.needs(a) {
                    let mut d = std::mem::replace(&mut self.scratch, Tensor::zeros(0, 0));
                    math::softmax_grad(self.get(out), features, log, g, &mut d);
                    self.scratch = d;
                    self.accumulate_scratch(a);
                }
            }
            Op::Narrow {
                a, features, start, ..
            } => {
                if self.needs(a) {
                    let i = a.0 as usize;
                    let shape = self.vals[i].shape();
                    math::narrow_accumulate(
                        &mut self.grads[i],
                        &mut self.live[i],
                        g,
                        shape,
                        features,
                        start,
                    );
                }
            }
            Op::Cat { args, features, .. } => {
                let mut start = 0;
                for k in args.0..args.1 {
                    let v = self.cat_args[k as usize];
                    let (r, c) = self.get(v).shape();
                    let len = if features { c } else { r };
                    if self.needs(v) {
                        let mut d = std::mem::replace(&mut self.scratch, Tensor::zeros(0, 0));
                        math::narrow_into(g, features, start, len, &mut d);
                        self.scratch = d;
                        self.accumulate_scratch(v);
                    }
                    start += len;
                }
            }
        }
        Ok(())
    }
}

impl Engine for Tape {
    fn dims(&self, v: Var) -> Dims {
        self.dims_of(v)
    }

    fn set_dims(&mut self, v: Var, d: Dims) {
        if v != Var::POISON {
            self.dims[v.0 as usize] = d;
        }
    }

    fn value(&self, v: Var) -> &Tensor {
        self.get(v)
    }

    fn error_slot(&mut self) -> &mut Option<Error> {
        &mut self.error
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn owner(&self) -> &'static str {
        self.owner
    }

    fn narrow_at(&mut self, a: Var, features: bool, start: usize, len: usize) -> Var {
        self.narrow_at_impl(a, features, start, len)
    }
}
