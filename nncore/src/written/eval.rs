//! The inference engine of written forwards: computes each operation as it
//! comes, with buffers from a [`Workspace`] for `forward_into`.

use super::math::{self, Binary, ScalarOp, Unary};
use super::{Engine, Site, Var};
use crate::forward::{Activation, Forward, Workspace};
use crate::summary::Trace;
use crate::{Dims, Error, Result, Tensor};

pub(crate) enum Mode<'w> {
    Plain,
    Into(&'w mut Workspace),
    Traced(&'w mut Trace),
}

/// The values of one inference run of a written forward. The code that
/// `#[nncore::forward]` generates calls its methods; not public API.
pub struct Eval<'x, 'w> {
    input: &'x Tensor,
    input_dims: Dims,
    vals: Vec<Tensor>,
    // The sample shape of each value of `vals`, kept only once a value is
    // not flat (a run on `(batch, features)` matrices, the latency path,
    // never fills it: a flat value's shape is its columns).
    dims: Vec<Dims>,
    shaped: bool,
    owner: &'static str,
    mode: Mode<'w>,
    error: Option<Error>,
}

impl std::fmt::Debug for Eval<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eval")
            .field("owner", &self.owner)
            .field("values", &self.vals.len())
            .finish_non_exhaustive()
    }
}

impl<'x, 'w> Eval<'x, 'w> {
    pub(crate) fn new(
        input: &'x Tensor,
        input_dims: Dims,
        owner: &'static str,
        mut mode: Mode<'w>,
    ) -> Self {
        // Room for a typical forward's values at once: growing the list
        // one push at a time cost four reallocations per batch-1 forward.
        let (vals, dims) = match &mut mode {
            Mode::Into(ws) => (ws.take_arena(), ws.take_dims()),
            _ => (Vec::with_capacity(16), Vec::new()),
        };
        Self {
            input,
            input_dims,
            vals,
            dims,
            shaped: input_dims.rank() > 1,
            owner,
            mode,
            error: None,
        }
    }

    fn get(&self, v: Var) -> &Tensor {
        if v == Var::INPUT {
            self.input
        } else {
            &self.vals[v.0 as usize - 1]
        }
    }

    fn buf(&mut self) -> Tensor {
        match &mut self.mode {
            Mode::Into(ws) => ws.take(),
            _ => Tensor::zeros(0, 0),
        }
    }

    /// A new value; `d` is its sample shape (`None`: flat, its columns).
    fn push(&mut self, t: Tensor, d: Option<Dims>) -> Var {
        let d = d.filter(|d| d.rank() > 1);
        if d.is_some() && !self.shaped {
            self.start_shapes();
        }
        if self.shaped {
            self.dims.push(d.unwrap_or(Dims::flat(t.ncols())));
        }
        self.vals.push(t);
        Var(self.vals.len() as u32)
    }

    /// Starts keeping sample shapes: every value so far is flat.
    fn start_shapes(&mut self) {
        self.shaped = true;
        self.dims.clear();
        self.dims
            .extend(self.vals.iter().map(|t| Dims::flat(t.ncols())));
    }

    fn dims_of(&self, v: Var) -> Dims {
        if v == Var::INPUT {
            self.input_dims
        } else if self.shaped {
            self.dims[v.0 as usize - 1]
        } else {
            Dims::flat(self.vals[v.0 as usize - 1].ncols())
        }
    }

    /// Runs child `m` (called at `site`) on `a`.
    pub fn call<F: Forward + ?Sized>(&mut self, m: &F, site: Site, a: Var) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let x: &Tensor = if a == Var::INPUT {
            self.input
        } else {
            &self.vals[a.0 as usize - 1]
        };
        let d = self.dims_of(a);
        let flat = d.rank() == 1;
        // Flat samples take the plain forwards (the latency path); shaped
        // ones their `_dims` twins.
        let r = match &mut self.mode {
            Mode::Plain if flat => m.forward(x).map(|y| (y, None)),
            Mode::Plain => m.forward_dims(x, d).map(|(y, d)| (y, Some(d))),
            Mode::Into(ws) => {
                let mut out = ws.take();
                let r = if flat {
                    m.forward_into(x, &mut out, ws).map(|()| None)
                } else {
                    m.forward_into_dims(x, d, &mut out, ws).map(Some)
                };
                match r {
                    Ok(d) => Ok((out, d)),
                    Err(e) => {
                        ws.give(out);
                        Err(e)
                    }
                }
            }
            Mode::Traced(t) if flat => site.trace(t, |t| m.forward_traced(x, t)).map(|y| (y, None)),
            Mode::Traced(t) => site
                .trace(t, |t| m.forward_traced_dims(x, d, t))
                .map(|(y, d)| (y, Some(d))),
        };
        self.child_value(r, site)
    }

    /// A child's output (with its sample shape, `None` when flat) as a new
    /// value, or its error, named by `site`, as the forward's first error.
    fn child_value(&mut self, r: Result<(Tensor, Option<Dims>)>, site: Site) -> Var {
        match r {
            Ok((y, d)) => self.push(y, d),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(site.wrap(e, self.owner));
                }
                Var::POISON
            }
        }
    }

    /// `relu(m(a))` for child `m` (called at `site`), as the forward wrote
    /// it (the child's output is used by nothing else): on flat samples a
    /// child that can take the ReLU into its own output
    /// ([`Forward::fusable`], `Linear`) applies it to its sums before
    /// storing them, one pass and one buffer fewer; otherwise the call,
    /// then the ReLU. The same bits either way.
    pub fn call_relu<F: Forward + ?Sized>(&mut self, m: &F, site: Site, a: Var) -> Var {
        let fuse = self.ok(&[a])
            && self.dims_of(a).rank() == 1
            && m.fusable()
            && !matches!(self.mode, Mode::Traced(_));
        if !fuse {
            let y = self.call(m, site, a);
            return self.unary(Unary::Relu, y);
        }
        let x: &Tensor = if a == Var::INPUT {
            self.input
        } else {
            &self.vals[a.0 as usize - 1]
        };
        let r = match &mut self.mode {
            Mode::Into(ws) => {
                let mut out = ws.take();
                match m.forward_into_fused(x, &mut out, ws, Activation::Relu) {
                    Ok(()) => Ok(out),
                    Err(e) => {
                        ws.give(out);
                        Err(e)
                    }
                }
            }
            _ => m.forward_fused(x, Activation::Relu),
        };
        self.child_value(r.map(|y| (y, None)), site)
    }

    /// An element-wise function.
    pub fn unary(&mut self, k: Unary, a: Var) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let mut out = self.buf();
        math::unary_into(k, self.get(a), &mut out);
        let d = self.dims_of(a);
        self.push(out, Some(d))
    }

    /// A tensor and a scalar.
    pub fn scalar(&mut self, op: ScalarOp, a: Var, s: f32) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let mut out = self.buf();
        math::scalar_into(op, s, self.get(a), &mut out);
        let d = self.dims_of(a);
        self.push(out, Some(d))
    }

    /// Two tensors, element-wise with broadcasting.
    pub fn binary(&mut self, op: Binary, a: Var, b: Var) -> Var {
        if !self.ok(&[a, b]) {
            return Var::POISON;
        }
        let d = match math::binary_dims(self.dims_of(a), self.dims_of(b)) {
            Ok(d) => d,
            Err(m) => return self.fail(m),
        };
        let mut out = self.buf();
        match math::binary_into(op, self.get(a), self.get(b), &mut out) {
            Ok(()) => self.push(out, d),
            Err(m) => self.fail(m),
        }
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
        let mut out = self.buf();
        math::softmax_into(self.get(a), features, log, &mut out);
        let d = self.dims_of(a);
        self.push(out, Some(d))
    }

    fn narrow_at_impl(&mut self, a: Var, features: bool, start: usize, len: usize) -> Var {
        let mut out = self.buf();
        math::narrow_into(self.get(a), features, start, len, &mut out);
        // The caller sets the sample shape (`set_dims`).
        let d = self.dims_of(a);
        self.push(out, Some(d))
    }

    /// PyTorch's `torch.cat(xs, dim)`.
    pub fn cat(&mut self, xs: &[Var], dim: i64) -> Var {
        let (features, (rows, cols), d) = match self.cat_plan(xs, dim) {
            Ok(plan) => plan,
            Err(poison) => return poison,
        };
        let mut out = self.buf();
        crate::ops::ensure_shape(&mut out, rows, cols);
        let mut start = 0;
        for v in xs {
            let x = self.get(*v);
            math::cat_place(x, features, start, &mut out);
            start += if features { x.ncols() } else { x.nrows() };
        }
        self.push(out, d)
    }

    pub(crate) fn finish(mut self, r: Result<Var>) -> Result<(Tensor, Dims)> {
        let v = self.finish_run(r)?;
        let d = self.dims_of(v);
        Ok(if v == Var::INPUT {
            (self.input.clone(), d)
        } else {
            (
                std::mem::replace(&mut self.vals[v.0 as usize - 1], Tensor::zeros(0, 0)),
                d,
            )
        })
    }

    pub(crate) fn finish_into(mut self, r: Result<Var>, out: &mut Tensor) -> Result<Dims> {
        let r = self.finish_run(r).map(|v| {
            if out.is_empty() && v != Var::INPUT {
                // A new output (the pooled `forward`): take the value's
                // buffer rather than copy it; the workspace gets the empty
                // one. A caller's buffer is filled instead, so that the
                // buffers keep their sizes and nothing is allocated.
                std::mem::swap(&mut self.vals[v.0 as usize - 1], out);
            } else {
                crate::ops::copy_into(self.get(v), out);
            }
            self.dims_of(v)
        });
        if let Mode::Into(ws) = &mut self.mode {
            let mut vals = std::mem::take(&mut self.vals);
            for t in vals.drain(..) {
                ws.give(t);
            }
            ws.give_arena(vals);
            let mut dims = std::mem::take(&mut self.dims);
            dims.clear();
            ws.give_dims(dims);
        }
        r
    }
}

impl Engine for Eval<'_, '_> {
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

    fn dims(&self, v: Var) -> Dims {
        self.dims_of(v)
    }

    fn set_dims(&mut self, v: Var, d: Dims) {
        if v == Var::INPUT || v == Var::POISON {
            return;
        }
        if d.rank() > 1 && !self.shaped {
            self.start_shapes();
        }
        if self.shaped {
            self.dims[v.0 as usize - 1] = d;
        }
    }
}
