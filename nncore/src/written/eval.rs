//! The inference engine of written forwards: computes each operation as it
//! comes, with buffers from a [`Workspace`] for `forward_into`.

use super::math::{self, Binary, ScalarOp, Unary};
use super::{Engine, Site, Var};
use crate::forward::{Forward, Workspace};
use crate::summary::Trace;
use crate::{Error, Result, Tensor};

pub(crate) enum Mode<'w> {
    Plain,
    Into(&'w mut Workspace),
    Traced(&'w mut Trace),
}

/// The values of one inference run of a written forward. The code that
/// `#[nncore::forward]` generates calls its methods; not public API.
pub struct Eval<'x, 'w> {
    input: &'x Tensor,
    vals: Vec<Tensor>,
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
    pub(crate) fn new(input: &'x Tensor, owner: &'static str, mut mode: Mode<'w>) -> Self {
        let vals = match &mut mode {
            Mode::Into(ws) => ws.take_arena(),
            _ => Vec::new(),
        };
        Self {
            input,
            vals,
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

    fn push(&mut self, t: Tensor) -> Var {
        self.vals.push(t);
        Var(self.vals.len() as u32)
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
        let r = match &mut self.mode {
            Mode::Plain => m.forward(x),
            Mode::Into(ws) => {
                let mut out = ws.take();
                match m.forward_into(x, &mut out, ws) {
                    Ok(()) => Ok(out),
                    Err(e) => {
                        ws.give(out);
                        Err(e)
                    }
                }
            }
            Mode::Traced(t) => site.trace(t, |t| m.forward_traced(x, t)),
        };
        match r {
            Ok(y) => self.push(y),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(site.wrap(e, self.owner));
                }
                Var::POISON
            }
        }
    }

    /// An element-wise function.
    pub fn unary(&mut self, k: Unary, a: Var) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let mut out = self.buf();
        math::unary_into(k, self.get(a), &mut out);
        self.push(out)
    }

    /// A tensor and a scalar.
    pub fn scalar(&mut self, op: ScalarOp, a: Var, s: f32) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let mut out = self.buf();
        math::scalar_into(op, s, self.get(a), &mut out);
        self.push(out)
    }

    /// Two tensors, element-wise with broadcasting.
    pub fn binary(&mut self, op: Binary, a: Var, b: Var) -> Var {
        if !self.ok(&[a, b]) {
            return Var::POISON;
        }
        let mut out = self.buf();
        match math::binary_into(op, self.get(a), self.get(b), &mut out) {
            Ok(()) => self.push(out),
            Err(m) => self.fail(m),
        }
    }

    /// Softmax, or log-softmax, along `dim`.
    pub fn softmax(&mut self, a: Var, dim: i64, log: bool) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let features = match math::features_axis(dim) {
            Ok(f) => f,
            Err(m) => return self.fail(m),
        };
        let mut out = self.buf();
        math::softmax_into(self.get(a), features, log, &mut out);
        self.push(out)
    }

    fn narrow_at_impl(&mut self, a: Var, features: bool, start: usize, len: usize) -> Var {
        let mut out = self.buf();
        math::narrow_into(self.get(a), features, start, len, &mut out);
        self.push(out)
    }

    /// PyTorch's `torch.cat(xs, dim)`.
    pub fn cat(&mut self, xs: &[Var], dim: i64) -> Var {
        if !self.ok(xs) {
            return Var::POISON;
        }
        let r = math::features_axis(dim).and_then(|f| {
            math::cat_shape(xs.iter().map(|v| self.get(*v).shape()), f).map(|s| (f, s))
        });
        let (features, (rows, cols)) = match r {
            Ok(r) => r,
            Err(m) => return self.fail(m),
        };
        let mut out = self.buf();
        crate::ops::ensure_shape(&mut out, rows, cols);
        let mut start = 0;
        for v in xs {
            let x = self.get(*v);
            math::cat_place(x, features, start, &mut out);
            start += if features { x.ncols() } else { x.nrows() };
        }
        self.push(out)
    }

    pub(crate) fn finish(mut self, r: Result<Var>) -> Result<Tensor> {
        let v = self.finish_run(r)?;
        Ok(if v == Var::INPUT {
            self.input.clone()
        } else {
            std::mem::replace(&mut self.vals[v.0 as usize - 1], Tensor::zeros(0, 0))
        })
    }

    pub(crate) fn finish_into(mut self, r: Result<Var>, out: &mut Tensor) -> Result<()> {
        let r = self
            .finish_run(r)
            .map(|v| crate::ops::copy_into(self.get(v), out));
        if let Mode::Into(ws) = &mut self.mode {
            let mut vals = std::mem::take(&mut self.vals);
            for t in vals.drain(..) {
                ws.give(t);
            }
            ws.give_arena(vals);
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
}
