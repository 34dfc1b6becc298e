//! How data flows: the [`Forward`] trait, the [`Workspace`] that
//! `forward_into` draws its buffers from, and the [`Flow`] of a chain.

use crate::module::Module;
use crate::summary::Trace;
use crate::{Dims, Error, ModulePath, NdTensor, Result, Tensor};

/// How data flows through a module: PyTorch's `forward`, for inference.
/// Training (the recording forward and the backward pass) is
/// [`Backward`], a trait of its own.
///
/// Three ways to get it:
/// - `#[derive(Module)]` alone applies the fields in declaration order
///   (and, for training, their backward passes in reverse order);
/// - a written forward: a `Tape` field and `#[nncore::forward]` on an
///   `impl` block with `fn forward(&self, x: &Tensor) -> Result<Tensor>`,
///   from which inference, `forward_into`, tracing, and `Backward`'s
///   `forward_train` and `backward` are all generated;
/// - `#[module(custom_forward)]` and a hand-written `impl Forward` (and
///   `impl Backward` to train it).
///
/// Shapes: inputs and outputs are `(batch, features)` matrices, one row
/// per sample. Images and other shaped samples travel as the same
/// matrices with their sample shape ([`Dims`]) beside them, through the
/// `_dims` twins of the forwards (see [`NdTensor`](crate::NdTensor) and
/// [`ForwardExt::forward_nd`]); their defaults take flat samples, so a
/// module for matrices implements none of them.
///
/// # Example
/// A residual block whose forward is not a chain, trained:
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// struct Residual {
///     fc: Linear,
///     relu: ReLU,
///     tape: Tape,
/// }
///
/// #[nncore::forward]
/// impl Residual {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         let h = self.fc(x)?;
///         Ok(self.relu(h)? + x)
///     }
/// }
///
/// let mut block = Residual { fc: Linear::new(4, 4), relu: ReLU::new(), tape: Tape::default() };
/// let x = Tensor::zeros(2, 4);
/// assert_eq!(block.forward(&x)?.shape(), (2, 4));
/// block.forward_train(&x)?;
/// let grad = Tensor::from_element(2, 4, 1.0);
/// let dx = block.backward(&grad)?;
/// assert_eq!(dx.shape(), (2, 4));
/// # Ok::<(), nncore::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no forward pass",
    label = "`{Self}` does not implement `nncore::Forward`",
    note = "implement `nncore::Forward` for it, mark a field that holds plain data with `#[module(skip)]`, or put `#[module(custom_forward)]` on the struct and write its forward yourself"
)]
pub trait Forward: Module {
    /// Computes the output for a `(batch, in_features)` input.
    ///
    /// # Errors
    /// An input of the wrong shape, with the module path.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// [`Forward::forward`] taking its input by value, so that layers such
    /// as `ReLU` can work in place. The derived forward chains through it.
    ///
    /// # Errors
    /// As [`Forward::forward`].
    fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        self.forward(&x)
    }

    /// Inference into `out` (resized as needed), with intermediate buffers
    /// taken from and returned to `ws`: once `out` and `ws` have served one
    /// call of the same shapes, a call allocates nothing. Computes what
    /// [`Forward::forward`] does.
    ///
    /// # Errors
    /// As [`Forward::forward`].
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// use nncore::Workspace;
    ///
    /// #[derive(Module)]
    /// struct Net { fc: Linear, act: ReLU }
    ///
    /// let net = Net { fc: Linear::new(4, 3), act: ReLU::new() };
    /// let x = Tensor::from_element(2, 4, 0.5);
    /// let (mut out, mut ws) = (Tensor::zeros(0, 0), Workspace::new());
    /// net.forward_into(&x, &mut out, &mut ws)?;
    /// assert_eq!(out, net.forward(&x)?);
    /// # Ok::<(), nncore::Error>(())
    /// ```
    fn forward_into(&self, x: &Tensor, out: &mut Tensor, ws: &mut Workspace) -> Result<()> {
        let _ = ws;
        *out = self.forward(x)?;
        Ok(())
    }

    /// [`Forward::forward`] that also records every submodule's output
    /// shape in `trace` (what [`summary`](fn@crate::summary) prints). Derived
    /// modules and containers trace their children; a hand-written forward
    /// records only its own output unless it overrides this.
    ///
    /// # Errors
    /// As [`Forward::forward`].
    fn forward_traced(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let y = self.forward(x)?;
        trace.record(&y);
        Ok(y)
    }

    /// Whether the module works value by value, so that an input of any
    /// shape (images included) comes out with the same shape: `true` for
    /// the activations, `Dropout` and `Identity`. Modules that return
    /// `false` and do not implement the `_dims` methods take only
    /// `(batch, features)` inputs.
    fn is_elementwise(&self) -> bool {
        false
    }

    /// The activation this module applies, when a layer before it in a
    /// chain can apply it on the way out of its own kernel (`ReLU`). Not
    /// public API: the chain engine's fusion.
    #[doc(hidden)]
    fn fused_activation(&self) -> Option<Activation> {
        None
    }

    /// Whether this module can run with an activation fused into its
    /// output ([`Forward::forward_into_fused`] does more than its default):
    /// the chain engine then fuses the next module's
    /// [`Forward::fused_activation`] into it, and a written forward a
    /// `relu(self.child(x)?)` around its call. Not public API.
    #[doc(hidden)]
    fn fusable(&self) -> bool {
        false
    }

    /// [`Forward::forward_into`] followed by `act`, in one pass where the
    /// module can (`Linear`'s batch-1 kernel applies a ReLU to its sums
    /// before storing them). Not public API.
    ///
    /// # Errors
    /// As [`Forward::forward_into`].
    #[doc(hidden)]
    fn forward_into_fused(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        ws: &mut Workspace,
        act: Activation,
    ) -> Result<()> {
        self.forward_into(x, out, ws)?;
        act.apply(out.as_mut_slice());
        Ok(())
    }

    /// Batch-1 inference on one sample's values, for the chain engine's
    /// row path: writes what [`Forward::forward`] computes for a one-row
    /// input (followed by `act`, when given) into the start of `y` and
    /// returns those values (the chain takes only a slice that starts
    /// where `y` does: anything else counts as `None`); or `None` when the module has
    /// no such path, the output does not fit `y`, or the input is not one
    /// it takes: the chain then goes on with tensors, which report the
    /// error. Not public API.
    #[doc(hidden)]
    fn forward_row<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<Activation>,
    ) -> Option<&'y mut [f32]> {
        let _ = (x, y, act);
        None
    }

    /// [`Forward::forward_row`], for a module that may finish on tensors
    /// (a chain whose child has no row path): it may then leave its
    /// output in `spill` and return `None`, and the caller goes on from
    /// that tensor instead of running the module again. Not public API.
    #[doc(hidden)]
    fn forward_row_spill<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<Activation>,
        spill: &mut Option<Tensor>,
    ) -> Option<&'y mut [f32]> {
        let _ = spill;
        self.forward_row(x, y, act)
    }

    /// [`Forward::forward`] followed by `act`. Not public API.
    ///
    /// # Errors
    /// As [`Forward::forward`].
    #[doc(hidden)]
    fn forward_fused(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let mut y = self.forward(x)?;
        act.apply(y.as_mut_slice());
        Ok(y)
    }

    /// The shape-aware forward: `x` holds one sample of shape `dims` per
    /// row (see [`NdTensor`](crate::NdTensor)); returns the output and the
    /// shape of its samples. Image layers (`Conv2d`, pooling, `Flatten`)
    /// implement it; chains pass the shape from child to child. Users call
    /// [`ForwardExt::forward_nd`].
    ///
    /// The default takes flat samples (`dims` of rank 1), or any shape for
    /// an element-wise module, and calls [`Forward::forward`].
    ///
    /// # Errors
    /// As [`Forward::forward`]; [`Error::InvalidInput`] for a sample of
    /// rank > 1 on a module that takes only matrices.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// // Two 3x4x4 images as the (2, 48) matrix they are stored as.
    /// let x = Tensor::zeros(2, 48);
    /// let (y, d) = MaxPool2d::new(2).forward_dims(&x, Dims::image(3, 4, 4))?;
    /// assert_eq!((y.shape(), d.as_slice()), ((2, 12), &[3, 2, 2][..]));
    /// // A layer for matrices takes flat samples only.
    /// assert!(Linear::new(48, 2).forward_dims(&x, Dims::image(3, 4, 4)).is_err());
    /// assert!(Linear::new(48, 2).forward_dims(&x, Dims::flat(48)).is_ok());
    /// # Ok::<(), nncore::Error>(())
    /// ```
    fn forward_dims(&self, x: &Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        let keep = flat_or_elementwise(self, x, dims)?;
        let y = self.forward(x)?;
        let d = keep.unwrap_or(Dims::flat(y.ncols()));
        Ok((y, d))
    }

    /// [`Forward::forward_dims`] taking its input by value (as
    /// [`Forward::forward_owned`]): element-wise layers work in place, and
    /// `Flatten` hands the buffer on. The shape-aware chain calls it.
    ///
    /// # Errors
    /// As [`Forward::forward_dims`].
    fn forward_owned_dims(&self, x: Tensor, dims: Dims) -> Result<(Tensor, Dims)> {
        if dims.rank() == 1 {
            check_dims(self.name(), &x, dims)?;
            let y = self.forward_owned(x)?;
            let d = Dims::flat(y.ncols());
            return Ok((y, d));
        }
        if self.is_elementwise() {
            check_dims(self.name(), &x, dims)?;
            return Ok((self.forward_owned(x)?, dims));
        }
        self.forward_dims(&x, dims)
    }

    /// [`Forward::forward_into`] for samples of shape `dims`; returns the
    /// output's sample shape.
    ///
    /// # Errors
    /// As [`Forward::forward_dims`].
    fn forward_into_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        out: &mut Tensor,
        ws: &mut Workspace,
    ) -> Result<Dims> {
        let keep = flat_or_elementwise(self, x, dims)?;
        self.forward_into(x, out, ws)?;
        Ok(keep.unwrap_or(Dims::flat(out.ncols())))
    }

    /// [`Forward::forward_traced`] for samples of shape `dims`.
    ///
    /// # Errors
    /// As [`Forward::forward_dims`].
    fn forward_traced_dims(
        &self,
        x: &Tensor,
        dims: Dims,
        trace: &mut Trace,
    ) -> Result<(Tensor, Dims)> {
        if dims.rank() == 1 {
            let y = self.forward_traced(x, trace)?;
            let d = Dims::flat(y.ncols());
            return Ok((y, d));
        }
        let (y, d) = self.forward_dims(x, dims)?;
        trace.record_dims(y.nrows(), d);
        Ok((y, d))
    }
}

/// Training: the recording forward and the backward pass. A module has it
/// when it can be trained, which the compiler checks: a derived chain or a
/// container has it when every child has it; a written forward
/// (`#[nncore::forward]`) has it always, and so needs children that have
/// it. Every layer of nncore has it. A hand-written module
/// (`#[module(custom_forward)]`) implements it to be trained.
///
/// Shapes: `forward_train` takes and returns what
/// [`Forward::forward`] does; `backward` takes `dL/d output` of the
/// output's shape and returns `dL/d input` of the input's shape.
///
/// # Example
/// A hand-written layer that doubles its input, trained:
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// #[module(custom_forward)]
/// struct Double {
///     #[module(skip)]
///     out: Tensor,
///     #[module(skip)]
///     grad: Tensor,
/// }
///
/// impl Forward for Double {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         Ok(x * 2.0)
///     }
/// }
///
/// impl Backward for Double {
///     fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
///         self.out = x * 2.0;
///         Ok(&self.out)
///     }
///     fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
///         self.grad = grad * 2.0;
///         Ok(&self.grad)
///     }
/// }
///
/// let mut m = Double { out: Tensor::zeros(0, 0), grad: Tensor::zeros(0, 0) };
/// nncore::gradcheck(&mut m, &Tensor::from_element(2, 3, 0.5))?;
/// # Ok::<(), nncore::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be trained: it has no backward pass",
    label = "`{Self}` does not implement `nncore::Backward`",
    note = "a derived chain, a container or a written forward trains only children that implement `nncore::Backward` (every nncore layer does); implement it for a hand-written module to train it"
)]
pub trait Backward: Forward {
    /// The training forward: computes the same output as
    /// [`Forward::forward`] and records what [`Backward::backward`] needs.
    /// The output lives in a buffer of the module's, reused across steps.
    ///
    /// # Errors
    /// As [`Forward::forward`].
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor>;

    /// The backward pass: given `dL/d output` for the last
    /// [`Backward::forward_train`], accumulates every parameter's gradient
    /// and returns `dL/d input`.
    ///
    /// # Errors
    /// [`Error::NoRecordedForward`] without a `forward_train` before it (or
    /// on a second backward for one forward); a gradient of the wrong
    /// shape.
    ///
    /// After an error the parameters' gradients are undefined: the children
    /// after the failing one (in backward order) may already have
    /// accumulated theirs, as in PyTorch. Call `zero_grad()` (and run
    /// `forward_train` again) before the next step; an optimizer step on
    /// such gradients would apply a partial update.
    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor>;

    /// [`Backward::backward`] without computing `dL/d input`: what training
    /// needs when the input is data, not a parameter (PyTorch skips the
    /// input's gradient when the input does not require one). Derived
    /// modules and containers pass it to their first child, so a model's
    /// first `Linear` skips one of its three matrix products.
    ///
    /// # Errors
    /// As [`Backward::backward`].
    fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        // `backward` ties the gradient's lifetime to `self`; copy-free
        // callers go through the derived and container impls.
        let grad = grad.clone();
        self.backward(&grad).map(|_| ())
    }

    /// [`Backward::forward_train`] for samples of shape `dims`; returns the
    /// output's sample shape with it. [`Backward::backward`] then takes the
    /// gradient as the same `(batch, numel)` matrix as the output.
    ///
    /// # Errors
    /// As [`Forward::forward_dims`] and [`Backward::forward_train`].
    fn forward_train_dims<'a>(
        &'a mut self,
        x: &'a Tensor,
        dims: Dims,
    ) -> Result<(&'a Tensor, Dims)> {
        let keep = flat_or_elementwise(self, x, dims)?;
        let y = self.forward_train(x)?;
        let d = keep.unwrap_or(Dims::flat(y.ncols()));
        Ok((y, d))
    }

    /// [`Backward::forward_train_dims`] for a caller that keeps `x` alive
    /// and unchanged until it calls [`Backward::backward_kept`] with it
    /// (the recording of a written forward does): writes the output into
    /// `out`, whose buffer it reuses, and returns its sample shape. A module
    /// may then keep neither its own copy of `x` nor of its output
    /// ([`Linear`](crate::Linear) keeps neither: two copies of its
    /// activations fewer per training step). The default runs
    /// `forward_train_dims` and copies its output into `out`.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    /// let mut fc = Linear::from_weights(Tensor::from_element(2, 3, 1.0), None)?;
    /// let x = Tensor::from_element(4, 3, 0.5); // batch 4, 3 features
    /// let mut y = Tensor::zeros(0, 0);
    /// let d = fc.forward_train_kept(&x, Dims::flat(3), &mut y)?;
    /// assert_eq!((y.shape(), d), ((4, 2), Dims::flat(2)));
    /// let mut dx = Tensor::zeros(0, 0);
    /// fc.backward_kept(&x, &Tensor::from_element(4, 2, 1.0), Some((&mut dx, false)))?;
    /// assert_eq!(dx, Tensor::from_element(4, 3, 2.0));
    /// assert_eq!(fc.weight().grad().unwrap(), &Tensor::from_element(2, 3, 2.0));
    /// # Ok::<(), nncore::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Backward::forward_train_dims`].
    fn forward_train_kept(&mut self, x: &Tensor, dims: Dims, out: &mut Tensor) -> Result<Dims> {
        let (y, d) = self.forward_train_dims(x, dims)?;
        crate::ops::copy_into(y, out);
        Ok(d)
    }

    /// The backward pass of the last [`Backward::forward_train_kept`], given
    /// the same `x`: accumulates every parameter's gradient and, with
    /// `dx = Some((buffer, add))`, writes `dL/dx` into `buffer` (its
    /// buffer reused), or adds it there when `add` (then `buffer` holds
    /// `x`'s shape). `None` skips `dL/dx` as
    /// [`Backward::backward_params`] does.
    ///
    /// # Errors
    /// As [`Backward::backward`]; an `x` of another shape than the
    /// forward's.
    fn backward_kept(
        &mut self,
        x: &Tensor,
        grad: &Tensor,
        dx: Option<(&mut Tensor, bool)>,
    ) -> Result<()> {
        match dx {
            Some((buffer, add)) => {
                let mut live = add;
                let d = self.backward(grad)?;
                crate::written::math::accumulate(buffer, &mut live, d, x.shape());
                Ok(())
            }
            None => self.backward_params(grad),
        }
    }
}

/// The row path of a module that passes its input through (`Identity`,
/// `Dropout` in inference), and the end of a nested chain's: `x` copied
/// into `y`, then `act`; `None` when it does not fit.
pub(crate) fn copy_row<'y>(
    x: &[f32],
    y: &'y mut [std::mem::MaybeUninit<f32>],
    act: Option<Activation>,
) -> Option<&'y mut [f32]> {
    let y = y.get_mut(..x.len())?.write_copy_of_slice(x);
    if let Some(act) = act {
        act.apply(y);
    }
    Some(y)
}

/// Checks that `x` holds samples of shape `dims` and that `m` can take
/// them without knowing their shape: flat samples (`Ok(None)`: the output
/// is flat too), or any shape for an element-wise module (`Ok(Some(dims))`).
///
/// # Errors
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn flat_or_elementwise<M: Forward + ?Sized>(
    m: &M,
    x: &Tensor,
    dims: Dims,
) -> Result<Option<Dims>> {
    check_dims(m.name(), x, dims)?;
    if dims.rank() == 1 {
        Ok(None)
    } else if m.is_elementwise() {
        Ok(Some(dims))
    } else {
        Err(Error::InvalidInput {
            path: ModulePath::leaf(m.name()),
            message: format!(
                "expected a 2-d input (batch, features), got a {}-d input of shape {:?} (put a Flatten before it)",
                dims.rank() + 1,
                dims.with_batch(x.nrows())
            ),
        })
    }
}

/// Checks that the rows of `x` have `dims.numel()` values.
pub(crate) fn check_dims(name: &str, x: &Tensor, dims: Dims) -> Result<()> {
    if x.ncols() != dims.numel() {
        return Err(Error::InvalidInput {
            path: ModulePath::leaf(name),
            message: format!(
                "an input of shape {:?} needs {} values per sample, got {}",
                dims.with_batch(x.nrows()),
                dims.numel(),
                x.ncols()
            ),
        });
    }
    Ok(())
}

/// Shaped inputs for every [`Forward`]: PyTorch's call on an N-d tensor.
/// In the prelude.
pub trait ForwardExt: Forward {
    /// Inference on a batch of shaped samples (images `(N, C, H, W)`, or
    /// `(N, features)`); the output keeps its shape (`(N, C', H', W')`
    /// after a convolution, `(N, classes)` after `Flatten` and `Linear`).
    ///
    /// # Errors
    /// As [`Forward::forward_dims`], with the module path.
    ///
    /// # Example
    /// ```
    /// use nncore::prelude::*;
    ///
    /// #[derive(Module)]
    /// struct Cnn { conv: Conv2d, relu: ReLU, pool: MaxPool2d, flat: Flatten, fc: Linear }
    ///
    /// let cnn = Cnn {
    ///     conv: Conv2d::new(1, 4, 3),
    ///     relu: ReLU::new(),
    ///     pool: MaxPool2d::new(2),
    ///     flat: Flatten::new(),
    ///     fc: Linear::new(4 * 3 * 3, 10),
    /// };
    /// let x = NdTensor::zeros(&[2, 1, 8, 8])?;
    /// assert_eq!(cnn.forward_nd(&x)?.shape(), vec![2, 10]);
    /// # Ok::<(), nncore::Error>(())
    /// ```
    fn forward_nd(&self, x: &NdTensor) -> Result<NdTensor> {
        let (y, d) = self.forward_dims(x.tensor(), x.dims())?;
        NdTensor::new(y, d)
    }

    /// The training forward on a batch of shaped samples; returns the
    /// output as a `(batch, numel)` matrix (what losses take) and the
    /// shape of its samples. [`Backward::backward`] takes the gradient in
    /// the same matrix form.
    ///
    /// # Errors
    /// As [`ForwardExt::forward_nd`].
    fn forward_train_nd<'a>(&'a mut self, x: &'a NdTensor) -> Result<(&'a Tensor, Dims)>
    where
        Self: Backward,
    {
        self.forward_train_dims(x.tensor(), x.dims())
    }
}

impl<M: Forward + ?Sized> ForwardExt for M {}

/// Buffers reused across calls of [`Forward::forward_into`].
///
/// Chains (derived, `Sequential`, lists) give every step a buffer of its
/// own, in call order, kept between calls: a step's output then has the
/// same shape on the next call and is written in place, with no resize
/// (two buffers shared by all steps changed shape at every step, about a
/// tenth of a batch-1 layer's time). Written forwards draw from a pool.
#[derive(Debug, Default)]
pub struct Workspace {
    pool: Vec<Tensor>,
    arenas: Vec<Vec<Tensor>>,
    // The sample shapes of a written forward's values.
    dim_lists: Vec<Vec<Dims>>,
    // Lists of buffers a layer keeps between calls (a convolution's
    // unfolded inputs, one per group).
    lists: Vec<Vec<Tensor>>,
    // One buffer per chain step, in call order from the outermost chain
    // (`None` while the step's buffer is out).
    // Boxed: a step moves its buffer out of its slot and the previous
    // one back, and a 40-byte `Tensor` moved through the stack was
    // reloaded in wider pieces than it was stored (store-forwarding
    // stalls, about a tenth of SimpleNet's batch-1 `forward_into` on Zen
    // 4); a box moves in one register.
    slots: Vec<Option<Box<Tensor>>>,
    // The next step's slot; 0 between calls. A chain that starts at 0 is
    // the outermost one (every step takes its slot before its module
    // runs, so a nested chain starts above 0). (A depth counter next to
    // the cursor cost a store-forwarding stall per call: LLVM merged the
    // two counters' updates into one 16-byte load, which waited on the
    // previous call's two 8-byte stores.)
    cursor: usize,
}

/// A step's output in flight: its slot and the buffer taken out of it.
#[doc(hidden)]
#[derive(Debug)]
pub struct StepOutput {
    slot: usize,
    tensor: Box<Tensor>,
}

fn empty() -> Tensor {
    crate::ops::from_vec(0, 0, Vec::new())
}

impl Workspace {
    /// An empty workspace; it grows on first use.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer (of unspecified shape and contents) to write into.
    pub fn take(&mut self) -> Tensor {
        self.pool.pop().unwrap_or_else(empty)
    }

    /// Returns a buffer for later calls.
    pub fn give(&mut self, t: Tensor) {
        self.pool.push(t);
    }

    /// An empty list of buffers (with the capacity of an earlier one),
    /// for the values of a written forward.
    pub(crate) fn take_arena(&mut self) -> Vec<Tensor> {
        self.arenas.pop().unwrap_or_default()
    }

    /// Returns an emptied list of buffers.
    pub(crate) fn give_arena(&mut self, arena: Vec<Tensor>) {
        debug_assert!(arena.is_empty());
        self.arenas.push(arena);
    }

    /// An empty list of sample shapes (with an earlier one's capacity).
    pub(crate) fn take_dims(&mut self) -> Vec<Dims> {
        self.dim_lists.pop().unwrap_or_default()
    }

    /// Returns an emptied list of sample shapes.
    pub(crate) fn give_dims(&mut self, dims: Vec<Dims>) {
        self.dim_lists.push(dims);
    }

    /// A list of buffers (with their allocations from an earlier call).
    pub(crate) fn take_list(&mut self) -> Vec<Tensor> {
        self.lists.pop().unwrap_or_default()
    }

    /// Returns a list of buffers.
    pub(crate) fn give_list(&mut self, list: Vec<Tensor>) {
        self.lists.push(list);
    }

    /// How many chain-step buffers exist (tests).
    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Starts a forward chain (the chain engine calls it); returns
    /// whether it is the outermost one, for [`Workspace::finish`].
    #[doc(hidden)]
    #[must_use]
    pub fn begin_chain(&self) -> bool {
        self.cursor == 0
    }

    /// One step of a forward chain: runs `m` on the current tensor (`x`
    /// until a step has run) into this step's buffer, which becomes
    /// current.
    ///
    /// # Errors
    /// Whatever `m` reports.
    #[doc(hidden)]
    pub fn step<F: Forward + ?Sized>(
        &mut self,
        m: &F,
        x: &Tensor,
        cur: &mut Option<StepOutput>,
    ) -> Result<()> {
        self.step_with(x, cur, |x, out, ws| m.forward_into(x, out, ws))
    }

    /// One chain step: `f(input, output buffer, workspace)`.
    #[inline(always)]
    fn step_with<R>(
        &mut self,
        x: &Tensor,
        cur: &mut Option<StepOutput>,
        f: impl FnOnce(&Tensor, &mut Tensor, &mut Self) -> R,
    ) -> R {
        let slot = self.cursor;
        self.cursor += 1;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        let mut next = self.slots[slot].take().unwrap_or_else(|| Box::new(empty()));
        let r = f(cur.as_ref().map_or(x, |c| &*c.tensor), &mut next, self);
        let next = StepOutput { slot, tensor: next };
        if let Some(prev) = cur.replace(next) {
            self.slots[prev.slot] = Some(prev.tensor);
        }
        r
    }

    /// [`Workspace::step`] with `act` fused into `m`'s output
    /// ([`Forward::forward_into_fused`]).
    ///
    /// # Errors
    /// Whatever `m` reports.
    #[doc(hidden)]
    pub fn step_fused<F: Forward + ?Sized>(
        &mut self,
        m: &F,
        act: Activation,
        x: &Tensor,
        cur: &mut Option<StepOutput>,
    ) -> Result<()> {
        self.step_with(x, cur, |x, out, ws| m.forward_into_fused(x, out, ws, act))
    }

    /// [`Workspace::step`] for samples of shape `dims`; returns the
    /// output's sample shape.
    ///
    /// # Errors
    /// Whatever `m` reports.
    #[doc(hidden)]
    pub fn step_dims<F: Forward + ?Sized>(
        &mut self,
        m: &F,
        x: &Tensor,
        dims: Dims,
        cur: &mut Option<StepOutput>,
    ) -> Result<Dims> {
        self.step_with(x, cur, |x, out, ws| m.forward_into_dims(x, dims, out, ws))
    }

    /// Ends a forward chain: the current tensor becomes `out` (swapped
    /// with it: the buffer `out` held goes to the step's slot, for the
    /// next call), or `x` is copied into `out` if no step ran. When the
    /// `outermost` chain ends ([`Workspace::begin_chain`]), the next call
    /// starts again at the first slot.
    #[doc(hidden)]
    pub fn finish(
        &mut self,
        x: &Tensor,
        cur: &mut Option<StepOutput>,
        out: &mut Tensor,
        outermost: bool,
    ) {
        match cur.take() {
            Some(mut c) => {
                std::mem::swap(&mut *c.tensor, out);
                self.slots[c.slot] = Some(c.tensor);
            }
            None => crate::ops::copy_into(x, out),
        }
        self.end_chain(outermost);
    }

    /// Ends a forward chain that used no slot: when the `outermost` chain
    /// ends, the next call starts again at the first slot.
    #[doc(hidden)]
    #[inline]
    pub fn end_chain(&mut self, outermost: bool) {
        if outermost {
            self.cursor = 0;
        }
    }

    /// A chain step that copies one sample's values (`row`, which the
    /// chain computed without tensors) into this step's buffer, which
    /// becomes current.
    pub(crate) fn step_row(&mut self, row: &[f32], x: &Tensor, cur: &mut Option<StepOutput>) {
        self.step_with(x, cur, |_, out, _| {
            crate::ops::ensure_shape(out, 1, row.len());
            out.as_mut_slice().copy_from_slice(row);
        });
    }
}

/// An activation a chain fuses into the layer before it (see
/// [`Forward::fused_activation`]). Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `ReLU`: `x < 0 ? 0 : x` (NaN and -0.0 pass through).
    Relu,
}

impl Activation {
    /// Applies the activation in place, exactly as its module does.
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Activation::Relu => crate::kernels::map_in_place(x, crate::activation::relu),
        }
    }
}

/// A tensor flowing through a forward chain: the caller's borrowed input
/// until the first module runs, then owned outputs, so that in-place layers
/// can reuse the buffer. Used by the derive and the containers.
#[derive(Debug)]
pub enum Flow<'a> {
    /// The caller's input, not yet copied.
    Borrowed(&'a Tensor),
    /// An intermediate output owned by the chain.
    Owned(Tensor),
}

impl Flow<'_> {
    /// Applies `m`: `forward` on a borrowed input, `forward_owned` on an
    /// owned one.
    ///
    /// # Errors
    /// Whatever `m` reports.
    #[inline]
    pub fn apply<F: Forward + ?Sized>(self, m: &F) -> Result<Self> {
        Ok(Flow::Owned(match self {
            Flow::Borrowed(x) => m.forward(x)?,
            Flow::Owned(x) => m.forward_owned(x)?,
        }))
    }

    /// Applies `m` with `act` fused into its output.
    ///
    /// # Errors
    /// Whatever `m` reports.
    #[inline]
    pub fn apply_fused<F: Forward + ?Sized>(self, m: &F, act: Activation) -> Result<Self> {
        Ok(Flow::Owned(match self {
            Flow::Borrowed(x) => m.forward_fused(x, act)?,
            Flow::Owned(x) => m.forward_fused(&x, act)?,
        }))
    }

    /// The tensor, copied only if no module ran.
    #[must_use]
    pub fn into_tensor(self) -> Tensor {
        match self {
            Flow::Borrowed(x) => x.clone(),
            Flow::Owned(x) => x,
        }
    }

    /// A view of the current tensor.
    #[must_use]
    pub fn as_tensor(&self) -> &Tensor {
        match self {
            Flow::Borrowed(x) => x,
            Flow::Owned(x) => x,
        }
    }
}
