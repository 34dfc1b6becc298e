//! The engine behind written forwards: `#[nncore::forward]` on an `impl`
//! block turns a PyTorch-style `forward` into inference, the allocation-free
//! `forward_into`, the traced forward of [`summary`](fn@crate::summary), and
//! a recording forward with its backward pass.
//!
//! The macro rewrites the body of `forward` once for inference (on
//! [`Eval`]) and once for training (on [`Tape`]): every tensor becomes a
//! [`Var`], a handle to a value held by the engine, and every operation a
//! call on the engine, which computes it and, on the tape, records it. The
//! backward pass walks the tape in reverse. Children keep their own
//! recording buffers, as in a derived chain; a child called at several
//! places is replayed from its saved input before the backward of each
//! earlier call, so that its gradients accumulate over every use.

mod eval;
pub(crate) mod math;
mod tape;

pub use eval::Eval;
pub use math::{Binary, ScalarOp, Unary};
pub use tape::Tape;

use crate::forward::{Backward, Workspace};
use crate::summary::Trace;
use crate::{Dims, Error, Result, Tensor};

/// A tensor inside a written forward: a handle to a value the engine holds.
/// `Var`s are `Copy`, so the same value can be used any number of times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var(pub(crate) u32);

impl Var {
    /// The forward's input.
    pub const INPUT: Var = Var(0);
    /// The value of an operation that failed; every operation on it fails
    /// too, and the first error is reported.
    pub(crate) const POISON: Var = Var(u32::MAX);
}

/// Where a child called in a written forward sits: its field, and for an
/// element of a `Vec` or array field, the element's index. `id` numbers the
/// call sites of one forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The call site's number.
    pub id: u32,
    /// The field's name.
    pub field: &'static str,
    /// The element's index in a module list; `usize::MAX` for a field.
    pub index: usize,
}

impl Site {
    /// The call of the child in field `field`.
    #[must_use]
    pub const fn field(id: u32, field: &'static str) -> Self {
        Self {
            id,
            field,
            index: usize::MAX,
        }
    }

    /// The call of element `index` of the module list in field `field`.
    #[must_use]
    pub const fn element(id: u32, field: &'static str, index: usize) -> Self {
        Self { id, field, index }
    }

    /// Adds this site to the module path of an error from the child.
    pub(crate) fn wrap(self, e: Error, owner: &str) -> Error {
        if self.index == usize::MAX {
            e.within(self.field, owner)
        } else {
            e.within(&self.index.to_string(), "ModuleList")
                .within(self.field, owner)
        }
    }

    pub(crate) fn trace<R>(self, trace: &mut Trace, f: impl FnOnce(&mut Trace) -> R) -> R {
        if self.index == usize::MAX {
            trace.child(self.field, f)
        } else {
            let index = self.index.to_string();
            trace.child(self.field, |t| t.child(&index, f))
        }
    }
}

/// `torch.cat`'s plan: whether it joins features, the output's
/// `(rows, cols)`, its sample shape (`None`: flat).
#[doc(hidden)]
pub type CatPlan = (bool, (usize, usize), Option<Dims>);

/// What the inference and the training engines share: values by handle,
/// the first error of a run, and the operations that only select from a
/// value (`narrow`, `chunk`), which both compute the same way. The code
/// that `#[nncore::forward]` generates calls these; not public API.
#[doc(hidden)]
pub trait Engine {
    /// The value of `v` (not `Var::POISON`).
    fn value(&self, v: Var) -> &Tensor;
    /// Where the run's first error is kept.
    fn error_slot(&mut self) -> &mut Option<Error>;
    /// Whether an operation of the run failed.
    fn failed(&self) -> bool;
    /// The module's type name, for errors.
    fn owner(&self) -> &'static str;
    /// Columns (`features`) or rows `[start, start + len)` of `a`, checked.
    fn narrow_at(&mut self, a: Var, features: bool, start: usize, len: usize) -> Var;
    /// The shape of one sample of `v` (`[features]`, or `[C, H, W]`).
    fn dims(&self, v: Var) -> Dims;
    /// Sets the sample shape of `v` (after an operation that changes it).
    fn set_dims(&mut self, v: Var, d: Dims);

    /// Whether the inputs of an operation are good: no earlier failure.
    #[doc(hidden)]
    fn ok(&self, vars: &[Var]) -> bool {
        !self.failed() && !vars.contains(&Var::POISON)
    }

    /// What both engines check and compute for `torch.cat(xs, dim)`;
    /// `Err(Var::POISON)` once the failure is recorded.
    #[doc(hidden)]
    fn cat_plan(&mut self, xs: &[Var], dim: i64) -> std::result::Result<CatPlan, Var> {
        if !self.ok(xs) {
            return Err(Var::POISON);
        }
        let Some(&first) = xs.first() else {
            return Err(self.fail("torch.cat(): expected a non-empty list of Tensors".into()));
        };
        let r = math::axis(dim, self.dims(first)).and_then(|ax| {
            let ds: Vec<Dims> = xs.iter().map(|v| self.dims(*v)).collect();
            let d = math::cat_dims(ax, &ds)?;
            math::cat_shape(xs.iter().map(|v| self.value(*v).shape()), ax.features)
                .map(|s| (ax.features, s, d))
        });
        r.map_err(|m| self.fail(m))
    }

    /// Records a failure with PyTorch's message, if it is the first.
    #[doc(hidden)]
    fn fail(&mut self, message: String) -> Var {
        let owner = self.owner();
        let slot = self.error_slot();
        if slot.is_none() {
            *slot = Some(Error::InvalidInput {
                path: crate::ModulePath::leaf(owner),
                message,
            });
        }
        Var::POISON
    }

    /// `Err` with the first error of the run so far (what `?` on a tensor
    /// becomes).
    ///
    /// # Errors
    /// The first failed operation's error.
    fn check(&mut self, v: Var) -> Result<Var> {
        match self.error_slot().take() {
            Some(e) => Err(e),
            None => Ok(v),
        }
    }

    /// The output of a finished run: its first error, or the returned
    /// value, which must not be the value of a failed operation.
    #[doc(hidden)]
    fn finish_run(&mut self, r: Result<Var>) -> Result<Var> {
        if let Some(e) = self.error_slot().take() {
            return Err(e);
        }
        let v = r?;
        if v == Var::POISON {
            return Err(Error::InvalidInput {
                path: crate::ModulePath::leaf(self.owner()),
                message: "the forward returned the value of a failed operation".into(),
            });
        }
        Ok(v)
    }

    /// The call of a module-list element past the list's end.
    fn out_of_range(&mut self, site: Site, len: usize) -> Var {
        self.fail(format!(
            "index {} is out of range for `{}` (a module list of {len})",
            site.index, site.field
        ))
    }

    /// The `(rows, columns)` of a value (`(0, 0)` after a failure).
    fn shape(&self, v: Var) -> (usize, usize) {
        if v == Var::POISON {
            (0, 0)
        } else {
            self.value(v).shape()
        }
    }

    /// The rows (batch) of a value.
    fn nrows(&self, v: Var) -> usize {
        self.shape(v).0
    }

    /// The columns (features) of a value.
    fn ncols(&self, v: Var) -> usize {
        self.shape(v).1
    }

    /// PyTorch's `narrow(dim, start, length)`: along the batch (0), or the
    /// features or an image's channels (1).
    fn narrow(&mut self, a: Var, dim: i64, start: i64, length: i64) -> Var {
        if !self.ok(&[a]) {
            return Var::POISON;
        }
        let d = self.dims(a);
        let (rows, cols) = self.value(a).shape();
        let r = math::axis(dim, d).and_then(|ax| {
            let size = ax.size(rows, cols);
            math::narrow_start(size, start, length).map(|s| (ax, s))
        });
        match r {
            Ok((ax, start)) => {
                let len = length as usize;
                let v = self.narrow_at(a, ax.features, start * ax.unit, len * ax.unit);
                if v != Var::POISON {
                    self.set_dims(v, ax.narrowed(d, len));
                }
                v
            }
            Err(m) => self.fail(m),
        }
    }

    /// PyTorch's `chunk(chunks, dim)` into exactly `N` pieces.
    fn chunk<const N: usize>(&mut self, a: Var, chunks: i64, dim: i64) -> [Var; N]
    where
        Self: Sized,
    {
        let parts = self.chunk_vec(a, chunks, dim);
        if parts.len() == N {
            std::array::from_fn(|i| parts[i])
        } else {
            if !parts.contains(&Var::POISON) {
                self.fail(format!(
                    "chunk gave {} pieces, not the {N} the forward unpacks (expected {N}, got {})",
                    parts.len(),
                    parts.len()
                ));
            }
            [Var::POISON; N]
        }
    }

    /// PyTorch's `chunk(chunks, dim)`.
    fn chunk_vec(&mut self, a: Var, chunks: i64, dim: i64) -> Vec<Var> {
        if !self.ok(&[a]) {
            return vec![Var::POISON];
        }
        let d = self.dims(a);
        let (rows, cols) = self.value(a).shape();
        let r = math::axis(dim, d).and_then(|ax| {
            let size = ax.size(rows, cols);
            math::chunk_sizes(size, chunks).map(|(split, count)| (ax, size, split, count))
        });
        match r {
            Ok((ax, size, split, count)) => (0..count)
                .map(|i| {
                    let start = (i * split).min(size);
                    let len = split.min(size - start);
                    let v = self.narrow_at(a, ax.features, start * ax.unit, len * ax.unit);
                    if v != Var::POISON {
                        self.set_dims(v, ax.narrowed(d, len));
                    }
                    v
                })
                .collect(),
            Err(m) => vec![self.fail(m)],
        }
    }
}

/// What `#[nncore::forward]` implements: the rewritten forward, for
/// inference and for recording, and access to the children by call site.
/// Not public API.
#[doc(hidden)]
pub trait Written {
    /// The module's type name, for error paths.
    const NAME: &'static str;
    /// The forward on the inference engine.
    ///
    /// # Errors
    /// Whatever the forward reports.
    fn eval(&self, cx: &mut Eval<'_, '_>, x: Var) -> Result<Var>;
    /// The forward on the tape.
    ///
    /// # Errors
    /// Whatever the forward reports.
    fn record(&mut self, tape: &mut Tape, x: Var) -> Result<Var>;
    /// The module's [`Tape`] (through [`HasTape`], derived for a struct
    /// with a `Tape` field).
    fn tape_mut(&mut self) -> &mut Tape;
    /// The child called at `site`.
    fn child_mut(&mut self, site: Site) -> Option<&mut dyn Backward>;
}

/// The [`Tape`] field of a module with a written forward; derived for a
/// struct with a field of type `Tape`. Not public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` has a written forward but no `Tape` field",
    label = "add a field `tape: nncore::Tape` to `{Self}`",
    note = "a written forward records for training in a field of type `nncore::Tape`; fill it with `Tape::default()` (or `..Default::default()`)"
)]
pub trait HasTape {
    /// The tape.
    fn tape(&self) -> &Tape;
    /// The tape, mutably.
    fn tape_mut(&mut self) -> &mut Tape;
}

/// Up to how many rows [`forward_dims`] runs on a per-thread
/// [`Workspace`] instead of allocating each value: small batches, where
/// the allocations were a fifth of a 100-64-64-10 residual model's batch-1
/// forward (2.2 µs), and the buffers the workspace keeps stay small.
const POOLED_ROWS: usize = 16;

std::thread_local! {
    static POOL: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::new());
}

/// `Forward::forward` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward<W: Written + ?Sized>(m: &W, x: &Tensor) -> Result<Tensor> {
    forward_dims(m, x, Dims::flat(x.ncols())).map(|(y, _)| y)
}

/// `Forward::forward_dims` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_dims<W: Written + ?Sized>(m: &W, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
    crate::forward::check_dims(W::NAME, x, dims)?;
    if x.nrows() <= POOLED_ROWS {
        // The latency path: the values between operations come from this
        // thread's workspace, as in `forward_into`; only the output is new.
        // A nested call, which finds the workspace in use, allocates as
        // before; so does one while the thread's locals are destroyed.
        let pooled = POOL
            .try_with(|ws| {
                let mut ws = ws.try_borrow_mut().ok()?;
                let mut out = Tensor::zeros(0, 0);
                Some(forward_into_dims(m, x, dims, &mut out, &mut ws).map(|d| (out, d)))
            })
            .ok()
            .flatten();
        if let Some(r) = pooled {
            return r;
        }
    }
    let mut cx = Eval::new(x, dims, W::NAME, eval::Mode::Plain);
    let r = m.eval(&mut cx, Var::INPUT);
    cx.finish(r)
}

/// `Forward::forward_into` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_into<W: Written + ?Sized>(
    m: &W,
    x: &Tensor,
    out: &mut Tensor,
    ws: &mut Workspace,
) -> Result<()> {
    forward_into_dims(m, x, Dims::flat(x.ncols()), out, ws).map(|_| ())
}

/// `Forward::forward_into_dims` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_into_dims<W: Written + ?Sized>(
    m: &W,
    x: &Tensor,
    dims: Dims,
    out: &mut Tensor,
    ws: &mut Workspace,
) -> Result<Dims> {
    crate::forward::check_dims(W::NAME, x, dims)?;
    let mut cx = Eval::new(x, dims, W::NAME, eval::Mode::Into(ws));
    let r = m.eval(&mut cx, Var::INPUT);
    cx.finish_into(r, out)
}

/// `Forward::forward_traced` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_traced<W: Written + ?Sized>(m: &W, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
    forward_traced_dims(m, x, Dims::flat(x.ncols()), trace).map(|(y, _)| y)
}

/// `Forward::forward_traced_dims` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_traced_dims<W: Written + ?Sized>(
    m: &W,
    x: &Tensor,
    dims: Dims,
    trace: &mut Trace,
) -> Result<(Tensor, Dims)> {
    crate::forward::check_dims(W::NAME, x, dims)?;
    let mut cx = Eval::new(x, dims, W::NAME, eval::Mode::Traced(trace));
    let r = m.eval(&mut cx, Var::INPUT);
    let (y, d) = cx.finish(r)?;
    trace.record_dims(y.nrows(), d);
    Ok((y, d))
}

/// `Backward::forward_train` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_train<'a, W: Written + ?Sized>(m: &'a mut W, x: &Tensor) -> Result<&'a Tensor> {
    forward_train_dims(m, x, Dims::flat(x.ncols())).map(|(y, _)| y)
}

/// `Backward::forward_train_dims` of a written forward.
///
/// # Errors
/// Whatever the forward reports.
pub fn forward_train_dims<'a, W: Written + ?Sized>(
    m: &'a mut W,
    x: &Tensor,
    dims: Dims,
) -> Result<(&'a Tensor, Dims)> {
    crate::forward::check_dims(W::NAME, x, dims)?;
    let mut tape = std::mem::take(m.tape_mut());
    tape.begin(x, dims, W::NAME);
    let r = m.record(&mut tape, Var::INPUT);
    let r = tape.end(r);
    *m.tape_mut() = tape;
    r?;
    let tape = m.tape_mut();
    let d = tape.output_dims();
    Ok((tape.output(), d))
}

/// `Backward::backward` of a written forward.
///
/// # Errors
/// No recorded forward, a gradient of the wrong shape, and whatever the
/// children's backward passes report.
pub fn backward<'a, W: Written + ?Sized>(m: &'a mut W, grad: &Tensor) -> Result<&'a Tensor> {
    let mut tape = std::mem::take(m.tape_mut());
    let r = tape.backward(m, grad, true);
    *m.tape_mut() = tape;
    r?;
    Ok(m.tape_mut().input_grad())
}

/// `Backward::backward_params` of a written forward.
///
/// # Errors
/// As [`backward`].
pub fn backward_params<W: Written + ?Sized>(m: &mut W, grad: &Tensor) -> Result<()> {
    let mut tape = std::mem::take(m.tape_mut());
    let r = tape.backward(m, grad, false);
    *m.tape_mut() = tape;
    r
}

/// The `Forward` methods of a module with a written forward, delegating
/// to the engine: `#[nncore::forward]` emits one call of it. Not public
/// API.
#[doc(hidden)]
#[macro_export]
macro_rules! __written_forward_methods {
    () => {
        fn forward(&self, x: &$crate::Tensor) -> $crate::Result<$crate::Tensor> {
            $crate::__private_v1::forward(self, x)
        }

        fn forward_into(
            &self,
            x: &$crate::Tensor,
            out: &mut $crate::Tensor,
            ws: &mut $crate::Workspace,
        ) -> $crate::Result<()> {
            $crate::__private_v1::forward_into(self, x, out, ws)
        }

        fn forward_traced(
            &self,
            x: &$crate::Tensor,
            t: &mut $crate::Trace,
        ) -> $crate::Result<$crate::Tensor> {
            $crate::__private_v1::forward_traced(self, x, t)
        }

        fn forward_dims(
            &self,
            x: &$crate::Tensor,
            dims: $crate::Dims,
        ) -> $crate::Result<($crate::Tensor, $crate::Dims)> {
            $crate::__private_v1::forward_dims(self, x, dims)
        }

        fn forward_into_dims(
            &self,
            x: &$crate::Tensor,
            dims: $crate::Dims,
            out: &mut $crate::Tensor,
            ws: &mut $crate::Workspace,
        ) -> $crate::Result<$crate::Dims> {
            $crate::__private_v1::forward_into_dims(self, x, dims, out, ws)
        }

        fn forward_traced_dims(
            &self,
            x: &$crate::Tensor,
            dims: $crate::Dims,
            t: &mut $crate::Trace,
        ) -> $crate::Result<($crate::Tensor, $crate::Dims)> {
            $crate::__private_v1::forward_traced_dims(self, x, dims, t)
        }
    };
}

/// The `Backward` methods of a written forward. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __written_backward_methods {
    () => {
        $crate::__backward_methods!($crate::__private_v1);
    };
}

/// `m` as a `&mut dyn Backward` (for [`Written::child_mut`]).
#[doc(hidden)]
pub fn dyn_mut<F: Backward>(m: &mut F) -> &mut dyn Backward {
    m
}
