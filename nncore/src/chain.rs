//! The chain engine: modules applied one after another. A derived struct
//! without a written forward, `Vec<M>` / `[M; N]` (PyTorch's `ModuleList`)
//! and [`Sequential`](crate::Sequential) all run through it, so that a
//! chain's semantics live here once:
//!
//! - inference passes a borrowed input to the first module and owned
//!   outputs to the next (`forward_owned`), so element-wise layers work in
//!   place;
//! - `forward_into` takes and returns every intermediate buffer to the
//!   [`Workspace`];
//! - training records into each module's own buffers; backward runs in
//!   reverse, and `backward_params` skips the first module's input
//!   gradient;
//! - errors get the child's name (`fc2`, or a list index) and the owner's
//!   type name.
//!
//! A chain is anything that can show its children in order to a
//! [`Visitor`]: the derive implements [`Chain`] (and [`ChainMut`], for
//! training, when every child can be trained) with one line per field,
//! the containers with a loop.

pub use crate::forward::Activation;
use crate::forward::{Backward, Flow, Forward, StepOutput, Workspace};
use crate::summary::Trace;
use crate::{Dims, Error, Result, Tensor};
use std::mem::MaybeUninit;

/// A child's name in its parent: a field, or an index in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// A named field (`fc1`) or a tuple index written as text.
    Field(&'static str),
    /// The element of a list at this index.
    Index(usize),
}

impl Name {
    fn wrap(self, e: Error, owner: &str) -> Error {
        match self {
            Name::Field(f) => e.within(f, owner),
            Name::Index(i) => e.within(&i.to_string(), owner),
        }
    }

    fn trace<R>(self, trace: &mut Trace, f: impl FnOnce(&mut Trace) -> R) -> R {
        match self {
            Name::Field(n) => trace.child(n, f),
            Name::Index(i) => trace.child(&i.to_string(), f),
        }
    }
}

/// Sees the children of a chain in order, shared.
pub trait Visitor<'a> {
    /// One child; `next` is the activation the next child would fuse
    /// into this one ([`Forward::fused_activation`] of the next child, if
    /// any): a visitor that fuses it skips the next child.
    ///
    /// # Errors
    /// Whatever the child reports, with its name.
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        next: Option<Activation>,
    ) -> Result<()>;
}

/// Sees the children of a chain, mutably, to train them.
pub trait VisitorMut<'a> {
    /// One child.
    ///
    /// # Errors
    /// Whatever the child reports, with its name.
    fn visit<F: Backward>(&mut self, name: Name, m: &'a mut F) -> Result<()>;
}

/// A module that is a chain of its children. The derive implements it for
/// structs without a written forward. Not public API.
#[doc(hidden)]
pub trait Chain {
    /// The owner's type name, for errors.
    const NAME: &'static str;
    /// The children, first to last.
    ///
    /// # Errors
    /// The visitor's.
    fn visit<'a, V: Visitor<'a>>(&'a self, v: &mut V) -> Result<()>;
}

/// A chain whose children can all be trained: the derive implements it
/// when every child implements [`Backward`]. Not public API.
#[doc(hidden)]
pub trait ChainMut: Chain {
    /// The children, first to last, mutably.
    ///
    /// # Errors
    /// The visitor's.
    fn visit_mut<'a, V: VisitorMut<'a>>(&'a mut self, v: &mut V) -> Result<()>;
    /// The children, last to first, mutably.
    ///
    /// # Errors
    /// The visitor's.
    fn visit_mut_rev<'a, V: VisitorMut<'a>>(&'a mut self, v: &mut V) -> Result<()>;
}

// Inference fuses an activation into the layer before it (`Linear` then
// `ReLU`: the ReLU is applied to the sums before they are stored, one pass
// and one buffer fewer). The chain shows each child with the activation
// the next one would fuse (`next`); a child that can take it
// (`Forward::fusable`) runs with it, and the next child is skipped.
//
// (A first version held the fusable child until the next one arrived:
// storing and reloading the held reference cost a store-forwarding stall
// per layer, about 5% of SimpleNet's batch-1 forward.)

// At batch 1 a chain first runs its children on one sample's values,
// alternating between two buffers on the stack (`Forward::forward_row`),
// and makes a tensor only of the output: no intermediate tensors, no
// workspace slots (SimpleNet's batch-1 `forward` allocated two tensors
// and freed one, about 30 ns of 180; `forward_into` moved the slots'
// buffers and checked their shapes at every step). The first child
// without a row path hands over to the tensor path, which goes on from
// the values so far.

/// The most values the row path keeps between two children (4 KiB).
const ROW_MAX: usize = 1024;

/// The row path's two buffers.
struct RowBufs([[MaybeUninit<f32>; ROW_MAX]; 2]);

impl RowBufs {
    #[inline(always)]
    fn new() -> Self {
        Self([[MaybeUninit::uninit(); ROW_MAX]; 2])
    }
}

/// Where the row path's current values are: the input, or the first
/// `len` values of buffer `buf` (written by the last step).
#[derive(Clone, Copy)]
enum RowAt {
    Input,
    Buf { buf: usize, len: usize },
}

/// The row path of one chain call.
struct Row<'x, 'b> {
    x: &'x [f32],
    bufs: &'b mut RowBufs,
    at: RowAt,
}

/// The first `len` values of `buf`, written.
///
/// # Safety
/// They were written (a step returned `len` for this buffer).
#[inline(always)]
unsafe fn written(buf: &[MaybeUninit<f32>], len: usize) -> &[f32] {
    // SAFETY: the caller's; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &*(std::ptr::from_ref(&buf[..len]) as *const [f32]) }
}

impl<'x, 'b> Row<'x, 'b> {
    /// The row path for `x`, when it is one row.
    #[inline(always)]
    fn new(x: &'x Tensor, bufs: &'b mut RowBufs) -> Option<Self> {
        (x.nrows() == 1).then(|| Self::of(x.as_slice(), bufs))
    }

    #[inline(always)]
    fn of(x: &'x [f32], bufs: &'b mut RowBufs) -> Self {
        Self {
            x,
            bufs,
            at: RowAt::Input,
        }
    }

    /// The values written by the last step (`None`: no step ran).
    #[inline(always)]
    fn output(&self) -> Option<&[f32]> {
        match self.at {
            RowAt::Input => None,
            // SAFETY: the last step wrote them.
            RowAt::Buf { buf, len } => Some(unsafe { written(&self.bufs.0[buf], len) }),
        }
    }

    /// Runs `m` (with `act` fused) on the current values: `None` when it
    /// has no row path (or does not take them), with its output in
    /// `spill` if it ran on tensors.
    #[inline(always)]
    fn step<F: Forward + ?Sized>(
        &mut self,
        m: &F,
        act: Option<Activation>,
        spill: &mut Option<Tensor>,
    ) -> Option<()> {
        let [a, b] = &mut self.bufs.0;
        // SAFETY (both): the last step wrote `len` values there.
        let (x, y, buf) = match self.at {
            RowAt::Input => (self.x, a, 0),
            RowAt::Buf { buf: 0, len } => (unsafe { written(a, len) }, b, 1),
            RowAt::Buf { len, .. } => (unsafe { written(b, len) }, a, 0),
        };
        let start = y.as_ptr().cast::<f32>();
        let out = m.forward_row_spill(x, y, act, spill)?;
        // Only values written where the buffer starts are taken (so that
        // `written` reads what a step wrote, whatever it returns).
        if !std::ptr::eq(out.as_ptr(), start) {
            return None;
        }
        self.at = RowAt::Buf {
            buf,
            len: out.len(),
        };
        Some(())
    }
}

/// The activation a visited child runs with: the next child's, when the
/// child can fuse it (the next child is then skipped).
#[inline(always)]
fn fused<F: Forward + ?Sized>(
    m: &F,
    next: Option<Activation>,
    skip: &mut bool,
) -> Option<Activation> {
    let act = next.filter(|_| m.fusable());
    *skip = act.is_some();
    act
}

struct Infer<'x, 'b> {
    // Always `Some` between visits once `row` is `None` (`None` before,
    // when the input is only a row's values).
    flow: Option<Flow<'x>>,
    // The row path, until a child has none.
    row: Option<Row<'x, 'b>>,
    // The next child's activation ran fused into this one's output.
    skip: bool,
    owner: &'static str,
}

impl<'a> Visitor<'a> for Infer<'_, '_> {
    #[inline(always)]
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        next: Option<Activation>,
    ) -> Result<()> {
        if std::mem::take(&mut self.skip) {
            return Ok(());
        }
        let act = fused(m, next, &mut self.skip);
        if let Some(row) = &mut self.row {
            let mut spill = None;
            if row.step(m, act, &mut spill).is_some() {
                return Ok(());
            }
            // On with tensors: from the child's output if it ran on them,
            // else from the values so far (this child runs below).
            let ran = spill.is_some();
            let from = spill.or_else(|| {
                let y = row.output().or(self.flow.is_none().then_some(row.x))?;
                Some(crate::ops::from_vec(1, y.len(), y.to_vec()))
            });
            if let Some(t) = from {
                self.flow = Some(Flow::Owned(t));
            }
            self.row = None;
            if ran {
                return Ok(());
            }
        }
        match act {
            Some(act) => self.run(name, |flow| flow.apply_fused(m, act)),
            None => self.run(name, |flow| flow.apply(m)),
        }
    }
}

impl Infer<'_, '_> {
    #[inline(always)]
    fn run(&mut self, name: Name, f: impl FnOnce(Flow<'_>) -> Result<Flow<'_>>) -> Result<()> {
        if let Some(flow) = self.flow.take() {
            self.flow = Some(f(flow).map_err(|e| name.wrap(e, self.owner))?);
        }
        Ok(())
    }

    #[inline(always)]
    fn into_tensor(self) -> Tensor {
        if let Some(y) = self.row.as_ref().and_then(Row::output) {
            return crate::ops::from_vec(1, y.len(), y.to_vec());
        }
        self.flow
            .map_or_else(|| Tensor::zeros(0, 0), Flow::into_tensor)
    }

    /// [`Infer::into_tensor`] when the chain's input was the row `x`.
    fn into_tensor_from(self, x: &[f32]) -> Tensor {
        if self.flow.is_none() && self.row.as_ref().is_some_and(|r| r.output().is_none()) {
            return crate::ops::from_vec(1, x.len(), x.to_vec());
        }
        self.into_tensor()
    }
}

struct Into<'x, 'w, 'b> {
    x: &'x Tensor,
    cur: Option<StepOutput>,
    ws: &'w mut Workspace,
    // As in `Infer`.
    row: Option<Row<'x, 'b>>,
    skip: bool,
    owner: &'static str,
}

impl<'a> Visitor<'a> for Into<'_, '_, '_> {
    #[inline(always)]
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        next: Option<Activation>,
    ) -> Result<()> {
        if std::mem::take(&mut self.skip) {
            return Ok(());
        }
        let act = fused(m, next, &mut self.skip);
        if let Some(row) = &mut self.row {
            let mut spill = None;
            if row.step(m, act, &mut spill).is_some() {
                return Ok(());
            }
            // On with the workspace's buffers: from the child's output if
            // it ran on tensors, else from the values so far (this child
            // runs below).
            let ran = spill.is_some();
            if let Some(y) = spill.as_ref().map(Tensor::as_slice).or(row.output()) {
                self.ws.step_row(y, self.x, &mut self.cur);
            }
            self.row = None;
            if ran {
                return Ok(());
            }
        }
        let r = match act {
            Some(act) => self.ws.step_fused(m, act, self.x, &mut self.cur),
            None => self.ws.step(m, self.x, &mut self.cur),
        };
        r.map_err(|e| name.wrap(e, self.owner))
    }
}

struct Traced<'x, 't> {
    flow: Flow<'x>,
    trace: &'t mut Trace,
    owner: &'static str,
}

impl<'a> Visitor<'a> for Traced<'_, '_> {
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        _next: Option<Activation>,
    ) -> Result<()> {
        let x = self.flow.as_tensor();
        let y = name
            .trace(self.trace, |t| m.forward_traced(x, t))
            .map_err(|e| name.wrap(e, self.owner))?;
        self.flow = Flow::Owned(y);
        Ok(())
    }
}

struct Train<'a> {
    cur: &'a Tensor,
    owner: &'static str,
}

impl<'a> VisitorMut<'a> for Train<'a> {
    #[inline(always)]
    fn visit<F: Backward>(&mut self, name: Name, m: &'a mut F) -> Result<()> {
        self.cur = m
            .forward_train(self.cur)
            .map_err(|e| name.wrap(e, self.owner))?;
        Ok(())
    }
}

struct Back<'a> {
    grad: &'a Tensor,
    owner: &'static str,
}

impl<'a> VisitorMut<'a> for Back<'a> {
    #[inline(always)]
    fn visit<F: Backward>(&mut self, name: Name, m: &'a mut F) -> Result<()> {
        self.grad = m
            .backward(self.grad)
            .map_err(|e| name.wrap(e, self.owner))?;
        Ok(())
    }
}

/// Backward in reverse, holding each child until the next arrives: the
/// last one visited (the chain's first) gets `backward_params`.
struct BackParams<'a, 'g> {
    grad: &'g Tensor,
    held: Option<(Name, &'a mut dyn Backward)>,
    owner: &'static str,
}

impl<'a> VisitorMut<'a> for BackParams<'a, 'a> {
    #[inline(always)]
    fn visit<F: Backward>(&mut self, name: Name, m: &'a mut F) -> Result<()> {
        if let Some((held_name, held)) = self.held.take() {
            self.grad = held
                .backward(self.grad)
                .map_err(|e| held_name.wrap(e, self.owner))?;
        }
        self.held = Some((name, m));
        Ok(())
    }
}

/// `Forward::forward` of a chain.
///
/// # Errors
/// Whatever a child reports, with its name.
#[inline]
pub fn forward<C: Chain + ?Sized>(m: &C, x: &Tensor) -> Result<Tensor> {
    let mut bufs = RowBufs::new();
    let mut v = Infer {
        flow: Some(Flow::Borrowed(x)),
        row: Row::new(x, &mut bufs),
        skip: false,
        owner: C::NAME,
    };
    m.visit(&mut v)?;
    Ok(v.into_tensor())
}

/// `Forward::forward_row_spill` of a chain (one nested in another): the
/// children on the row path, then on tensors from the first one without
/// it; the output copied into `y` when it fits, else left in `spill`.
/// `None` also when a child reports an error (the caller's tensor path
/// then runs this chain again and reports it).
#[inline]
pub fn forward_row<'y, C: Chain + ?Sized>(
    m: &C,
    x: &[f32],
    y: &'y mut [MaybeUninit<f32>],
    act: Option<Activation>,
    spill: &mut Option<Tensor>,
) -> Option<&'y mut [f32]> {
    let mut bufs = RowBufs::new();
    let mut v = Infer {
        flow: None,
        row: Some(Row::of(x, &mut bufs)),
        skip: false,
        owner: C::NAME,
    };
    m.visit(&mut v).ok()?;
    let out = match (&v.row, &v.flow) {
        (Some(row), _) => row.output().unwrap_or(x),
        (None, Some(flow)) => flow.as_tensor().as_slice(),
        (None, None) => return None,
    };
    if out.len() <= y.len() {
        return crate::forward::copy_row(out, y, act);
    }
    let mut t = v.into_tensor_from(x);
    if let Some(act) = act {
        act.apply(t.as_mut_slice());
    }
    *spill = Some(t);
    None
}

/// `Forward::forward_owned` of a chain.
///
/// # Errors
/// As [`forward`].
#[inline]
pub fn forward_owned<C: Chain + ?Sized>(m: &C, x: Tensor) -> Result<Tensor> {
    if x.nrows() == 1 {
        // The row path reads the input where it is.
        return forward(m, &x);
    }
    let mut v = Infer {
        flow: Some(Flow::Owned(x)),
        row: None,
        skip: false,
        owner: C::NAME,
    };
    m.visit(&mut v)?;
    Ok(v.into_tensor())
}

/// `Forward::forward_into` of a chain.
///
/// # Errors
/// As [`forward`].
#[inline]
pub fn forward_into<C: Chain + ?Sized>(
    m: &C,
    x: &Tensor,
    out: &mut Tensor,
    ws: &mut Workspace,
) -> Result<()> {
    let outermost = ws.begin_chain();
    let mut bufs = RowBufs::new();
    let mut v = Into {
        x,
        cur: None,
        ws,
        row: Row::new(x, &mut bufs),
        skip: false,
        owner: C::NAME,
    };
    // `finish` runs on errors too: it ends the chain's use of the slots.
    // (Matched rather than kept: copying the whole `Result` back after
    // `finish` reloads its tag wider than it was stored, a stall.)
    let r = m.visit(&mut v);
    if let Some(y) = v.row.as_ref().and_then(Row::output) {
        if r.is_ok() {
            crate::ops::ensure_shape(out, 1, y.len());
            out.as_mut_slice().copy_from_slice(y);
        }
        v.ws.end_chain(outermost);
        return r;
    }
    match r {
        Ok(()) => {
            v.ws.finish(x, &mut v.cur, out, outermost);
            Ok(())
        }
        Err(e) => {
            v.ws.finish(x, &mut v.cur, out, outermost);
            Err(e)
        }
    }
}

/// `Forward::forward_traced` of a chain.
///
/// # Errors
/// As [`forward`].
pub fn forward_traced<C: Chain + ?Sized>(m: &C, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
    let mut v = Traced {
        flow: Flow::Borrowed(x),
        trace,
        owner: C::NAME,
    };
    m.visit(&mut v)?;
    let y = v.flow.into_tensor();
    v.trace.record(&y);
    Ok(y)
}

/// `Backward::forward_train` of a chain.
///
/// # Errors
/// As [`forward`].
#[inline]
pub fn forward_train<'a, C: ChainMut + ?Sized>(m: &'a mut C, x: &'a Tensor) -> Result<&'a Tensor> {
    let mut v = Train {
        cur: x,
        owner: C::NAME,
    };
    m.visit_mut(&mut v)?;
    Ok(v.cur)
}

/// `Backward::backward` of a chain.
///
/// # Errors
/// As [`forward`].
#[inline]
pub fn backward<'a, C: ChainMut + ?Sized>(m: &'a mut C, grad: &'a Tensor) -> Result<&'a Tensor> {
    let mut v = Back {
        grad,
        owner: C::NAME,
    };
    m.visit_mut_rev(&mut v)?;
    Ok(v.grad)
}

/// `Backward::backward_params` of a chain.
///
/// # Errors
/// As [`forward`].
#[inline]
pub fn backward_params<C: ChainMut + ?Sized>(m: &mut C, grad: &Tensor) -> Result<()> {
    let mut v = BackParams {
        grad,
        held: None,
        owner: C::NAME,
    };
    m.visit_mut_rev(&mut v)?;
    match v.held {
        Some((name, first)) => first
            .backward_params(v.grad)
            .map_err(|e| name.wrap(e, C::NAME)),
        None => Ok(()),
    }
}

// The shape-aware chain: each child gets the shape of its input's samples
// and reports its output's (images through `Conv2d`, pooling, `Flatten`).
// These run the same children as the functions above, without the
// in-place `forward_owned` step.

struct InferDims<'x> {
    // The caller's input until a child has run (`None` when the chain was
    // given it by value: it is then in `cur`).
    x: Option<&'x Tensor>,
    cur: Option<Tensor>,
    dims: Dims,
    owner: &'static str,
}

impl<'a> Visitor<'a> for InferDims<'_> {
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        _next: Option<Activation>,
    ) -> Result<()> {
        let r = match (self.cur.take(), self.x) {
            (Some(x), _) => m.forward_owned_dims(x, self.dims),
            (None, Some(x)) => m.forward_dims(x, self.dims),
            (None, None) => unreachable!("the chain's input is in `x` or `cur`"),
        };
        let (y, d) = r.map_err(|e| name.wrap(e, self.owner))?;
        self.cur = Some(y);
        self.dims = d;
        Ok(())
    }
}

/// `Forward::forward_dims` of a chain.
///
/// # Errors
/// As [`forward`].
pub fn forward_dims<C: Chain + ?Sized>(m: &C, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
    let mut v = InferDims {
        x: Some(x),
        cur: None,
        dims,
        owner: C::NAME,
    };
    m.visit(&mut v)?;
    let y = v.cur.unwrap_or_else(|| x.clone());
    Ok((y, v.dims))
}

/// `Forward::forward_owned_dims` of a chain.
///
/// # Errors
/// As [`forward`].
pub fn forward_owned_dims<C: Chain + ?Sized>(
    m: &C,
    x: Tensor,
    dims: Dims,
) -> Result<(Tensor, Dims)> {
    let mut v = InferDims {
        x: None,
        cur: Some(x),
        dims,
        owner: C::NAME,
    };
    m.visit(&mut v)?;
    let y = v
        .cur
        .unwrap_or_else(|| crate::ops::from_vec(0, 0, Vec::new()));
    Ok((y, v.dims))
}

struct IntoDims<'x, 'w> {
    x: &'x Tensor,
    cur: Option<StepOutput>,
    dims: Dims,
    ws: &'w mut Workspace,
    owner: &'static str,
}

impl<'a> Visitor<'a> for IntoDims<'_, '_> {
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        _next: Option<Activation>,
    ) -> Result<()> {
        self.dims = self
            .ws
            .step_dims(m, self.x, self.dims, &mut self.cur)
            .map_err(|e| name.wrap(e, self.owner))?;
        Ok(())
    }
}

/// `Forward::forward_into_dims` of a chain.
///
/// # Errors
/// As [`forward`].
pub fn forward_into_dims<C: Chain + ?Sized>(
    m: &C,
    x: &Tensor,
    dims: Dims,
    out: &mut Tensor,
    ws: &mut Workspace,
) -> Result<Dims> {
    let outermost = ws.begin_chain();
    let mut v = IntoDims {
        x,
        cur: None,
        dims,
        ws,
        owner: C::NAME,
    };
    let r = m.visit(&mut v);
    v.ws.finish(x, &mut v.cur, out, outermost);
    r.map(|()| v.dims)
}

struct TracedDims<'x, 't> {
    x: &'x Tensor,
    cur: Option<Tensor>,
    dims: Dims,
    trace: &'t mut Trace,
    owner: &'static str,
}

impl<'a> Visitor<'a> for TracedDims<'_, '_> {
    fn visit<F: Forward + ?Sized>(
        &mut self,
        name: Name,
        m: &'a F,
        _next: Option<Activation>,
    ) -> Result<()> {
        let x = self.cur.as_ref().unwrap_or(self.x);
        let dims = self.dims;
        let (y, d) = name
            .trace(self.trace, |t| m.forward_traced_dims(x, dims, t))
            .map_err(|e| name.wrap(e, self.owner))?;
        self.cur = Some(y);
        self.dims = d;
        Ok(())
    }
}

/// `Forward::forward_traced_dims` of a chain.
///
/// # Errors
/// As [`forward`].
pub fn forward_traced_dims<C: Chain + ?Sized>(
    m: &C,
    x: &Tensor,
    dims: Dims,
    trace: &mut Trace,
) -> Result<(Tensor, Dims)> {
    let mut v = TracedDims {
        x,
        cur: None,
        dims,
        trace,
        owner: C::NAME,
    };
    m.visit(&mut v)?;
    let y = v.cur.unwrap_or_else(|| x.clone());
    v.trace.record_dims(y.nrows(), v.dims);
    Ok((y, v.dims))
}

struct TrainDims<'a> {
    cur: &'a Tensor,
    dims: Dims,
    owner: &'static str,
}

impl<'a> VisitorMut<'a> for TrainDims<'a> {
    fn visit<F: Backward>(&mut self, name: Name, m: &'a mut F) -> Result<()> {
        let (y, d) = m
            .forward_train_dims(self.cur, self.dims)
            .map_err(|e| name.wrap(e, self.owner))?;
        self.cur = y;
        self.dims = d;
        Ok(())
    }
}

/// `Backward::forward_train_dims` of a chain.
///
/// # Errors
/// As [`forward`].
pub fn forward_train_dims<'a, C: ChainMut + ?Sized>(
    m: &'a mut C,
    x: &'a Tensor,
    dims: Dims,
) -> Result<(&'a Tensor, Dims)> {
    let mut v = TrainDims {
        cur: x,
        dims,
        owner: C::NAME,
    };
    m.visit_mut(&mut v)?;
    Ok((v.cur, v.dims))
}
