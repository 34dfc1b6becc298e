//! The fully connected layer.
//!
//! `y = x W^T + b` for an input `x` of shape `(batch, in_features)`, a
//! weight `W` of PyTorch shape `[out_features, in_features]` and a bias `b`
//! of shape `[out_features]`; the output has shape `(batch, out_features)`.

mod packed;

use crate::forward::{Activation, Backward, Forward};
use crate::module::Module;
use crate::ops::{Trans, ensure_shape, matmul, matmul_bias, matmul_bias_new};
use crate::{Dims, Error, Generator, ModulePath, Param, Result, Tensor, with_default_generator};

/// PyTorch's `nn.Linear`: `y = x W^T + b`.
///
/// Shapes: input `(batch, in_features)`, output `(batch, out_features)`,
/// weight `[out_features, in_features]`, bias `[out_features]`.
///
/// Initialised as PyTorch does: weight and bias uniform in
/// `±1/sqrt(in_features)`, drawn from the default generator in PyTorch's
/// order, so that after `nncore::manual_seed(s)` the values equal those of
/// `torch.manual_seed(s); nn.Linear(in, out)`.
///
/// Inference (`forward`, `forward_into`) on a weight of 2^18 elements or
/// more multiplies by a transposed copy of the weight, which is faster; the
/// copy costs as much memory as the weight, is made once 256 input rows
/// have gone through the same weight values, and is remade after the
/// weight changes (see [`Param::version`]). A training forward of 64
/// rows or more makes it at once, since its weight changes every step.
///
/// Small inference batches (up to 8 rows) on a weight below 2^18 elements
/// multiply by a second kind of copy, made once 32 rows have gone through
/// the same weight values: `W^T` with every row padded to a multiple of 16
/// values and aligned to 64 bytes, with the bias padded alike, so that the
/// batch-1 kernel never loads across a cache line (SimpleNet's `fc1`: 288
/// ns on the weight as it is, 158 ns on the copy). Any mutable access to
/// the parameters drops it.
///
/// # Example
/// ```
/// use nncore::prelude::*;
/// let fc = Linear::from_weights(
///     Tensor::from_row_slice(2, 3, &[1., 0., -1., 0.5, 0.5, 0.5]),
///     Some(&[0.0, 1.0]),
/// )?;
/// let x = Tensor::from_row_slice(1, 3, &[1., 2., 3.]);
/// let y = fc.forward(&x)?;
/// assert_eq!(y, Tensor::from_row_slice(1, 2, &[-2.0, 4.0]));
/// assert_eq!(fc.to_string(), "Linear(in_features=3, out_features=2, bias=True)");
/// # Ok::<(), nncore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Param,
    bias: Option<Param>,
    training: bool,
    // W^T for inference on large layers, keyed on the weight's version.
    transposed: TransposedWeight,
    // W^T padded and aligned for small inference batches (small layers).
    packed: packed::PackedWeight,
    // Training buffers, reused across steps.
    input: Tensor,
    output: Tensor,
    grad_input: Tensor,
    recorded: Recorded,
}

/// What the last training forward left for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Nothing (no training forward, or its backward ran).
    No,
    /// `forward_train`: the input is in `Linear::input`.
    Own,
    /// `forward_train_kept` of a batch of `rows`: the caller holds the
    /// input and passes it to `backward_kept`.
    Kept { rows: usize },
}

impl Linear {
    /// `nn.Linear(in_features, out_features)`, drawn from the default
    /// generator.
    ///
    /// # Panics
    /// When the weight cannot be allocated (`in_features * out_features`
    /// overflows or the memory is not there); [`Linear::try_new`] returns
    /// that as an error instead.
    #[must_use]
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Self::try_new(in_features, out_features).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Linear::new`] that reports a weight too large to allocate as an
    /// error instead of panicking.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `in_features * out_features` overflows
    /// or cannot be allocated.
    ///
    /// # Example
    /// ```
    /// assert!(nncore::Linear::try_new(usize::MAX, 2).is_err());
    /// assert_eq!(nncore::Linear::try_new(3, 2)?.out_features(), 2);
    /// # Ok::<(), nncore::Error>(())
    /// ```
    pub fn try_new(in_features: usize, out_features: usize) -> Result<Self> {
        with_default_generator(|g| Self::try_with_generator(in_features, out_features, true, g))
    }

    /// `nn.Linear(in_features, out_features, bias=False)`.
    ///
    /// # Panics
    /// As [`Linear::new`].
    #[must_use]
    pub fn new_no_bias(in_features: usize, out_features: usize) -> Self {
        with_default_generator(|g| Self::with_generator(in_features, out_features, false, g))
    }

    /// A layer initialised from an explicit generator.
    ///
    /// # Panics
    /// As [`Linear::new`].
    #[must_use]
    pub fn with_generator(
        in_features: usize,
        out_features: usize,
        bias: bool,
        generator: &mut Generator,
    ) -> Self {
        Self::try_with_generator(in_features, out_features, bias, generator)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Linear::with_generator`] that reports a weight too large to
    /// allocate as an error.
    ///
    /// # Errors
    /// As [`Linear::try_new`].
    pub fn try_with_generator(
        in_features: usize,
        out_features: usize,
        bias: bool,
        generator: &mut Generator,
    ) -> Result<Self> {
        let too_large = || {
            Error::InvalidArgument(format!(
                "Linear(in_features={in_features}, out_features={out_features}): the weight is too large to allocate"
            ))
        };
        let n = in_features
            .checked_mul(out_features)
            .filter(|n| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or_else(too_large)?;
        // kaiming_uniform_(a=sqrt(5)) gives the bound 1/sqrt(fan_in); the
        // bias uses the same bound, or 0 when fan_in is 0.
        let bound = if in_features > 0 {
            (1.0 / (in_features as f64).sqrt()) as f32
        } else {
            0.0
        };
        let mut w: Vec<f32> = Vec::new();
        w.try_reserve_exact(n).map_err(|_| too_large())?;
        w.resize(n, 0.0);
        generator.fill_uniform(&mut w, -bound, bound);
        let weight = Tensor::from_row_slice(out_features, in_features, &w);
        let bias = bias.then(|| {
            let mut b = vec![0.0f32; out_features];
            generator.fill_uniform(&mut b, -bound, bound);
            Param::vector(&b)
        });
        Ok(Self::from_params(Param::matrix(weight), bias))
    }

    /// A layer with the given weight (`out_features x in_features`, PyTorch's
    /// orientation) and optional bias (`out_features` values).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the bias length is not the weight's
    /// row count.
    pub fn from_weights(weight: Tensor, bias: Option<&[f32]>) -> Result<Self> {
        if let Some(b) = bias
            && b.len() != weight.nrows()
        {
            return Err(Error::ShapeMismatch {
                context: "Linear::from_weights: bias".into(),
                expected: vec![weight.nrows()],
                got: vec![b.len()],
            });
        }
        Ok(Self::from_params(
            Param::matrix(weight),
            bias.map(Param::vector),
        ))
    }

    fn from_params(weight: Param, bias: Option<Param>) -> Self {
        Self {
            weight,
            bias,
            training: true,
            transposed: TransposedWeight::default(),
            packed: packed::PackedWeight::default(),
            input: Tensor::zeros(0, 0),
            output: Tensor::zeros(0, 0),
            grad_input: Tensor::zeros(0, 0),
            recorded: Recorded::No,
        }
    }

    /// The number of input features.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.weight.value().ncols()
    }

    /// The number of output features.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.weight.value().nrows()
    }

    /// The weight, `[out_features, in_features]`.
    #[must_use]
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// The weight, mutably.
    pub fn weight_mut(&mut self) -> &mut Param {
        self.packed.clear();
        &mut self.weight
    }

    /// The bias, `[out_features]`, if the layer has one.
    #[must_use]
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The bias, mutably.
    pub fn bias_mut(&mut self) -> Option<&mut Param> {
        self.packed.clear();
        self.bias.as_mut()
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.ncols() != self.in_features() {
            return Err(Error::FeatureMismatch {
                path: ModulePath::leaf("Linear"),
                expected: self.in_features(),
                got: x.ncols(),
            });
        }
        Ok(())
    }

    /// `out = x op(w) + b` into a buffer of the right shape, where
    /// `op(w)` is `W^T`: the weight transposed (`Trans::Yes`) or the
    /// transposed copy (`Trans::No`).
    fn apply(&self, x: &Tensor, w: &Tensor, t: Trans, out: &mut Tensor) {
        if t == Trans::Yes && x.nrows() >= BLOCKED_ROWS && w.len() >= TRANSPOSE_MIN {
            // No transposed copy (yet): W^T block by block, in L2, rather
            // than the packed kernels' half-speed transposed view.
            let bias = self.bias.as_ref().map(|b| b.value().as_slice());
            return crate::ops::linear_blocked(x, w, bias, out);
        }
        match &self.bias {
            Some(b) => matmul_bias(x, Trans::No, w, t, b.value().as_slice(), out),
            None => matmul(1.0, x, Trans::No, w, t, 0.0, out),
        }
    }

    /// Whether a product of `rows` rows runs the packed kernels
    /// ([`crate::kernels::row_packed`], [`crate::kernels::rows_packed`]):
    /// up to [`PACKED_ROWS_LIMIT`] rows on weights below [`TRANSPOSE_MIN`]
    /// values (larger ones stream from memory through the row kernels).
    fn packed_rows(&self, rows: usize) -> bool {
        rows > 0 && rows <= PACKED_ROWS_LIMIT && self.weight.numel() < TRANSPOSE_MIN
    }

    /// `out = x W^T + b` (then `act`, when it is a ReLU) through the packed
    /// kernels: on the layer's packed copy when it is current (made once
    /// enough rows went through this weight version, see
    /// [`packed::PACK_AFTER_ROWS`]), else on the weight as it is (AVX-512:
    /// the same kernels with the last vector of each row masked), else on
    /// a padded copy in a per-thread scratch buffer. The sums are the same
    /// bits every way, in inference and in training. Returns whether `act`
    /// (if any) was applied.
    fn apply_packed(&self, x: &Tensor, out: &mut Tensor, act: Option<Activation>) -> bool {
        // What the unchecked kernels need beyond the packed layout (the
        // callers have checked and shaped both already: two compares).
        assert!(
            x.nrows() > 0
                && x.ncols() == self.in_features()
                && out.shape() == (x.nrows(), self.out_features()),
            "Linear::apply_packed: shapes"
        );
        let bias = self.bias.as_ref();
        let relu = act == Some(Activation::Relu);
        if let Some(p) = self.packed.get(&self.weight, bias, x.nrows()) {
            // SAFETY: the packed copy of this weight and bias, current;
            // `x` and `out` were checked above.
            unsafe {
                if x.nrows() == 1 {
                    p.row1(x.as_slice(), out.as_mut_slice(), relu);
                    return act.is_none() || relu;
                }
                return apply_packed(p.weight(), p.stride(), p.bias(), x, out, act);
            }
        }
        let (w, b) = (self.weight.value(), bias.map(|b| b.value().as_slice()));
        let (rows, stride) = (x.nrows(), w.nrows());
        let direct = crate::kernels::rows_unpadded(
            out.as_mut_slice(),
            rows,
            x.as_slice(),
            w.as_slice(),
            stride,
            b,
            relu,
        );
        if direct {
            return act.is_none() || relu;
        }
        // SAFETY: `with_padded` lays the weight out as the packed copy;
        // `x` and `out` were checked above.
        packed::with_padded(w, b, |w, stride, b| unsafe {
            apply_packed(w, stride, b, x, out, act)
        })
    }

    /// Calls `f` with `W^T` for an inference product of `rows` rows: for
    /// large weights a transposed copy of the weight (`Trans::No`), else
    /// the weight itself (`Trans::Yes`).
    ///
    /// faer multiplies `x W^T` 11% to 25% faster when `W^T` is
    /// column-major (PyTorch's row-major weight) than through a transposed
    /// view of the column-major weight (256x784x1024 and 256x1024x1024 on
    /// the AVX-512 VM), while the gradient products of training want the
    /// weight as it is. The copy is made by the first such product on a
    /// weight version and kept until the weight changes, so that every
    /// inference on one version sums in the same order (same input, same
    /// output bits). It costs about what 300 rows of product save: a loop
    /// that updates the weight between large-batch inference forwards
    /// pays it every time.
    fn with_inference_weight<R>(&self, rows: usize, f: impl FnOnce(&Tensor, Trans) -> R) -> R {
        let w = self.weight.value();
        // Small batches run on the row kernel, which wants the weight as
        // it is (`W^T` with contiguous rows): no copy for them.
        if rows <= crate::ops::SMALL_ROWS_LIMIT || self.weight.numel() < TRANSPOSE_MIN {
            return f(w, Trans::Yes);
        }
        let version = self.weight.version();
        {
            let cached = self.transposed.read();
            if let Some((v, wt)) = cached.as_ref()
                && *v == version
            {
                return f(wt, Trans::No);
            }
        }
        let mut cached = self.transposed.write();
        let (out_f, in_f) = w.shape();
        let wt = cached.get_or_insert_with(|| (0, Tensor::zeros(0, 0)));
        if wt.0 != version {
            ensure_shape(&mut wt.1, in_f, out_f);
            // Column-major W (out x in) is a row-major in x out matrix.
            crate::kernels::transpose(w.as_slice(), wt.1.as_mut_slice(), out_f, in_f);
            wt.0 = version;
        }
        f(&wt.1, Trans::No)
    }

    /// The weight and bias gradients of the backward pass of a
    /// `forward_train` (`dW = g^T x`, `db` = column sums of `g`),
    /// accumulated into the parameters.
    fn param_grads(&mut self, grad: &Tensor) -> Result<()> {
        let mut own = self.recorded == Recorded::Own;
        let expected = (self.input.nrows(), self.out_features());
        crate::module::begin_backward(&mut own, "Linear", expected, grad)?;
        self.recorded = Recorded::No;
        let input = std::mem::replace(&mut self.input, Tensor::zeros(0, 0));
        self.accumulate_param_grads(&input, grad);
        self.input = input;
        Ok(())
    }

    /// `dW += g^T x`, `db +=` column sums of `g` (or `=`, on a parameter's
    /// first gradient); the shapes were checked.
    fn accumulate_param_grads(&mut self, x: &Tensor, grad: &Tensor) {
        if let Some((_, dw, acc)) = self.weight.grad_slot() {
            let beta = if acc { 1.0 } else { 0.0 };
            matmul(1.0, grad, Trans::Yes, x, Trans::No, beta, dw);
        }
        if let Some((_, db, acc)) = self.bias.as_mut().and_then(Param::grad_slot) {
            // Column sums of g; an empty batch sums to zero (as in
            // PyTorch), it does not leave the previous gradient behind.
            let rows = grad.nrows();
            for (j, d) in db.as_mut_slice().iter_mut().enumerate() {
                let s = if rows == 0 {
                    0.0
                } else {
                    crate::kernels::sum(&grad.as_slice()[j * rows..(j + 1) * rows])
                };
                *d = if acc { *d + s } else { s };
            }
        }
    }

    /// `dx = g W + beta * dx` (`dx` shaped `batch x in_features`).
    fn input_grad(&self, grad: &Tensor, beta: f32, dx: &mut Tensor) {
        matmul(
            1.0,
            grad,
            Trans::No,
            self.weight.value(),
            Trans::No,
            beta,
            dx,
        );
    }

    /// The training output `x W^T + b` into `out` (reshaped): the kernels
    /// inference runs for small batches (the same bits as `forward`).
    fn train_output(&self, x: &Tensor, out: &mut Tensor) {
        ensure_shape(out, x.nrows(), self.out_features());
        if self.packed_rows(x.nrows()) {
            // The kernels inference runs: the same bits as `forward`.
            self.apply_packed(x, out, None);
        } else {
            // A frozen weight keeps the transposed copy inference made
            // (small batches keep the row kernels, which want the weight
            // as it is); a weight that changes every step never gets one
            // (`apply` takes `W^T` block by block instead).
            let version = self.weight.version();
            match self.transposed.read().as_ref() {
                Some((v, wt)) if *v == version && x.nrows() > crate::ops::SMALL_ROWS_LIMIT => {
                    self.apply(x, wt, Trans::No, out);
                }
                _ => self.apply(x, self.weight.value(), Trans::Yes, out),
            }
        }
    }
}

impl Module for Linear {
    fn name(&self) -> &str {
        "Linear"
    }

    fn extra_repr(&self) -> String {
        format!(
            "in_features={}, out_features={}, bias={}",
            self.in_features(),
            self.out_features(),
            if self.bias.is_some() { "True" } else { "False" }
        )
    }

    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        self.packed.clear();
        f("weight", &mut self.weight);
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

impl Forward for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.infer(x, None)
    }

    fn forward_into(&self, x: &Tensor, out: &mut Tensor, _ws: &mut crate::Workspace) -> Result<()> {
        self.infer_into(x, out, None)
    }

    fn fusable(&self) -> bool {
        true
    }

    fn forward_into_fused(
        &self,
        x: &Tensor,
        out: &mut Tensor,
        _ws: &mut crate::Workspace,
        act: Activation,
    ) -> Result<()> {
        self.infer_into(x, out, Some(act))
    }

    fn forward_fused(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        self.infer(x, Some(act))
    }

    fn forward_row<'y>(
        &self,
        x: &[f32],
        y: &'y mut [std::mem::MaybeUninit<f32>],
        act: Option<Activation>,
    ) -> Option<&'y mut [f32]> {
        if x.len() != self.in_features() {
            // The tensor path reports it.
            return None;
        }
        let n = self.out_features();
        // Before the copy exists the tensor path runs (and counts the rows
        // towards making it).
        let p = self.packed.current(&self.weight, self.bias.as_ref())?;
        let y = y.get_mut(..n)?;
        let relu = act == Some(Activation::Relu);
        // SAFETY: the packed copy of this weight and bias, current; `x`
        // holds `in_features` values, `y` room for `out_features`.
        let y = unsafe { p.row1_uninit(x, y, relu) };
        if let Some(act) = act
            && !relu
        {
            act.apply(y);
        }
        Some(y)
    }
}

impl Linear {
    /// Inference, then `act`: a ReLU inside the packed kernels, anything
    /// else as a pass over the output.
    fn infer(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        self.check_input(x)?;
        let (rows, cols) = (x.nrows(), self.out_features());
        // As in `infer_into`.
        if rows == 1
            && let Some(p) = self.packed.current(&self.weight, self.bias.as_ref())
        {
            let mut out = Tensor::zeros(1, cols);
            // SAFETY: as in `infer_into`.
            unsafe { row1(p, x.as_slice(), out.as_mut_slice(), act) };
            return Ok(out);
        }
        let mut out = if self.packed_rows(rows) {
            let mut out = Tensor::zeros(rows, cols);
            if self.apply_packed(x, &mut out, act) {
                return Ok(out);
            }
            out
        } else {
            // The output is written once: the bias, block by block by the
            // thread that then accumulates the product onto it.
            self.with_inference_weight(rows, |w, t| match &self.bias {
                Some(b) => matmul_bias_new(x, Trans::No, w, t, b.value().as_slice()),
                None => {
                    let mut out = Tensor::zeros(rows, cols);
                    matmul(1.0, x, Trans::No, w, t, 0.0, &mut out);
                    out
                }
            })
        };
        if let Some(act) = act {
            act.apply(out.as_mut_slice());
        }
        Ok(out)
    }

    /// [`Linear::infer`] into `out`.
    fn infer_into(&self, x: &Tensor, out: &mut Tensor, act: Option<Activation>) -> Result<()> {
        self.check_input(x)?;
        ensure_shape(out, x.nrows(), self.out_features());
        // One row on a current packed copy: its kernel straight away (the
        // path a batch-1 forward takes on every layer; `apply_packed`
        // takes the same kernel with its checks and choices).
        if x.nrows() == 1
            && let Some(p) = self.packed.current(&self.weight, self.bias.as_ref())
        {
            // SAFETY: the packed copy of this weight and bias, current;
            // `x` holds `in_features` values (checked above) and `out`
            // one row of `out_features`.
            unsafe { row1(p, x.as_slice(), out.as_mut_slice(), act) };
            return Ok(());
        }
        if self.packed_rows(x.nrows()) {
            if self.apply_packed(x, out, act) {
                return Ok(());
            }
        } else {
            self.with_inference_weight(x.nrows(), |w, t| self.apply(x, w, t, out));
        }
        if let Some(act) = act {
            act.apply(out.as_mut_slice());
        }
        Ok(())
    }
}

impl Backward for Linear {
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        self.check_input(x)?;
        crate::ops::copy_into(x, &mut self.input);
        let mut out = std::mem::replace(&mut self.output, Tensor::zeros(0, 0));
        self.train_output(x, &mut out);
        self.output = out;
        self.recorded = Recorded::Own;
        Ok(&self.output)
    }

    /// Keeps neither `x` (the caller passes it again to `backward_kept`)
    /// nor the output (written into `out`).
    fn forward_train_kept(&mut self, x: &Tensor, dims: Dims, out: &mut Tensor) -> Result<Dims> {
        let keep = crate::forward::flat_or_elementwise(self, x, dims)?;
        self.check_input(x)?;
        self.train_output(x, out);
        self.recorded = Recorded::Kept { rows: x.nrows() };
        Ok(keep.unwrap_or(Dims::flat(self.out_features())))
    }

    /// `dL/dx = g W` straight into the caller's buffer, added by the
    /// product itself when `add`.
    fn backward_kept(
        &mut self,
        x: &Tensor,
        grad: &Tensor,
        dx: Option<(&mut Tensor, bool)>,
    ) -> Result<()> {
        let rows = match self.recorded {
            Recorded::No => {
                return Err(Error::NoRecordedForward {
                    path: ModulePath::leaf("Linear"),
                });
            }
            Recorded::Own => self.input.nrows(),
            Recorded::Kept { rows } => rows,
        };
        if x.shape() != (rows, self.in_features()) {
            return Err(Error::InvalidInput {
                path: ModulePath::leaf("Linear"),
                message: format!(
                    "backward_kept: the input is {:?}, the forward's was {:?}",
                    x.shape(),
                    (rows, self.in_features())
                ),
            });
        }
        let expected = (rows, self.out_features());
        if grad.shape() != expected {
            return Err(Error::gradient_shape("Linear", expected, grad.shape()));
        }
        self.recorded = Recorded::No;
        self.accumulate_param_grads(x, grad);
        if let Some((buffer, add)) = dx {
            let beta = if add {
                assert_eq!(buffer.shape(), x.shape(), "backward_kept: dx buffer shape");
                1.0
            } else {
                ensure_shape(buffer, rows, self.in_features());
                0.0
            };
            self.input_grad(grad, beta, buffer);
        }
        Ok(())
    }

    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        self.param_grads(grad)?;
        let in_features = self.in_features();
        let mut dx = std::mem::replace(&mut self.grad_input, Tensor::zeros(0, 0));
        ensure_shape(&mut dx, grad.nrows(), in_features);
        self.input_grad(grad, 0.0, &mut dx);
        self.grad_input = dx;
        Ok(&self.grad_input)
    }

    fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        self.param_grads(grad)
    }
}

/// `out = x W^T + b` through the packed weight: the batch-1 kernel for one
/// row, the multi-row kernel for a few (the bias is where the sums start).
/// A ReLU as `act` is applied to the sums before they are stored; returns
/// whether `act` (if any) was applied.
///
/// # Safety
/// `w`, `stride` and `bias` are laid out as [`packed::Packed`] (and
/// [`packed::with_padded`]) lay them out for this layer's weight: `stride`
/// a multiple of 16 at least `out_features`, `w` at least `in_features *
/// stride` values, `bias` `stride` values; `x` has `in_features` columns
/// and at least one row, `out` is `x.nrows() x out_features`.
#[inline]
unsafe fn apply_packed(
    w: &[f32],
    stride: usize,
    bias: Option<&[f32]>,
    x: &Tensor,
    out: &mut Tensor,
    act: Option<Activation>,
) -> bool {
    let relu = act == Some(Activation::Relu);
    let m = x.nrows();
    // SAFETY: the caller's layout is the kernels' (see above).
    unsafe {
        crate::kernels::packed_unchecked(
            out.as_mut_slice(),
            m,
            x.as_slice(),
            w,
            stride,
            bias,
            relu,
        );
    }
    act.is_none() || relu
}

/// One row on the packed copy `p` into `y`, then `act` (a ReLU inside the
/// kernel).
///
/// # Safety
/// `p` is the layer's current packed copy; `x` holds its `in_features`
/// values, `y` its `out_features`.
#[inline]
unsafe fn row1(p: &packed::Packed, x: &[f32], y: &mut [f32], act: Option<Activation>) {
    let relu = act == Some(Activation::Relu);
    // SAFETY: the caller's.
    unsafe { p.row1(x, y, relu) };
    if let Some(act) = act
        && !relu
    {
        act.apply(y);
    }
}

/// Batches of up to this many rows on weights below [`TRANSPOSE_MIN`]
/// values go through the packed kernels. Against faer's GEMM, which took
/// them from 9 rows on before, on weights from 100x50 to 1000x100 and
/// 512x256 (`cargo bench -p nnrs-bench --bench latency -- few_rows`, two
/// runs on the Intel VM): faer 2.0x to 2.9x slower at 9 rows (a cliff
/// after the 8-row kernel), 1.1x to 1.8x at 16, 1.1x to 1.6x at 24, and
/// 0.8x to 1.1x at 32.
const PACKED_ROWS_LIMIT: usize = 24;

/// Weights of at least this many elements get a transposed copy for
/// inference (1 MiB: below it the two layouts multiply equally fast).
const TRANSPOSE_MIN: usize = 1 << 18;

/// A product of at least this many rows by a large weight without a
/// current transposed copy (every training forward) multiplies by `W^T`
/// transposed block by block ([`crate::ops::linear_blocked`]): on the
/// Intel AVX-512 VM faer's kernels multiply `x W^T` through a transposed
/// view at about half speed (47 GFLOP/s for 256x1024x1024). Against a
/// whole transposed copy per step, the blocks made the MLP b256 training
/// step 9% faster on one thread (34.9 vs 38.3 ms, medians of 5
/// alternating processes) and 16% on two, the residual MLP's 11%.
const BLOCKED_ROWS: usize = 64;

/// The transposed weight of a layer and the weight version it was made
/// from. Cloning a layer does not clone the copy: the clone makes its own when
/// it needs one.
#[derive(Default)]
struct TransposedWeight {
    copy: std::sync::RwLock<Option<(u64, Tensor)>>,
}

impl TransposedWeight {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<(u64, Tensor)>> {
        // A panic while the lock was held leaves at worst a copy whose
        // version no longer matches the weight's.
        self.copy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<(u64, Tensor)>> {
        self.copy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for TransposedWeight {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for TransposedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransposedWeight")
            .field("cached", &self.read().is_some())
            .finish()
    }
}

impl std::fmt::Display for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_repr(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModuleExt;
    use crate::ops::close;
    use crate::optim::{Optimizer, Sgd};

    /// The reference: `x W^T + b` by nalgebra.
    fn reference(fc: &Linear, x: &Tensor) -> Tensor {
        let mut y = x * fc.weight().value().transpose();
        if let Some(b) = fc.bias() {
            for (mut col, bj) in y.column_iter_mut().zip(b.value().iter()) {
                col.add_scalar_mut(*bj);
            }
        }
        y
    }

    /// Two forwards (the second through the copy), both checked.
    fn infer_twice(fc: &Linear, x: &Tensor) -> Tensor {
        let first = fc.forward(x).unwrap();
        let second = fc.forward(x).unwrap();
        assert!(close(&first, &reference(fc, x)));
        assert!(close(&second, &reference(fc, x)));
        second
    }

    #[test]
    fn small_batches_through_the_packed_copy_follow_every_weight_change() {
        // Sizes that are not multiples of 16, with and without bias, one
        // row (the batch-1 kernel), three and sixteen (the multi-row kernel).
        for (k, n, bias) in [
            (37usize, 23usize, true),
            (100, 50, false),
            (5, 1, true),
            (16, 33, true),
        ] {
            for rows in [1usize, 3, 16] {
                let mut fc = crate::with_seed(5, || Linear::new(k, n));
                if !bias {
                    fc = Linear::from_weights(fc.weight().value().clone(), None).unwrap();
                }
                let x = crate::Generator::new(2).uniform_tensor(rows, k, -1.0, 1.0);
                let (mut out, mut ws) = (Tensor::zeros(0, 0), crate::Workspace::new());
                for _ in 0..=packed::PACK_AFTER_ROWS / rows + 1 {
                    fc.forward_into(&x, &mut out, &mut ws).unwrap();
                    assert!(close(&out, &reference(&fc, &x)), "k={k} n={n} rows={rows}");
                }
                assert!(
                    fc.packed.exists(),
                    "packed after {} rows",
                    packed::PACK_AFTER_ROWS
                );
                infer_twice(&fc, &x);

                // Through value_mut: the copy is dropped, then remade.
                fc.weight_mut().value_mut()[(n - 1, k - 1)] += 0.5;
                assert!(!fc.packed.exists());
                for _ in 0..=packed::PACK_AFTER_ROWS / rows + 1 {
                    infer_twice(&fc, &x);
                }
                assert!(fc.packed.exists());
                if let Some(b) = fc.bias_mut() {
                    b.value_mut()[0] -= 1.0;
                }
                infer_twice(&fc, &x);

                // Through an optimizer step.
                fc.forward_train(&x).unwrap();
                fc.backward_params(&Tensor::from_element(rows, n, 0.1))
                    .unwrap();
                let before = fc.forward(&x).unwrap();
                Sgd::new(0.5).step(&mut fc).unwrap();
                let after = infer_twice(&fc, &x);
                assert!(!close(&after, &before));

                // A stale copy is never used, even if nothing dropped it.
                let mut stale = fc.clone();
                for _ in 0..=packed::PACK_AFTER_ROWS / rows + 1 {
                    infer_twice(&stale, &x);
                }
                let kept = std::mem::take(&mut stale.packed);
                stale.weight_mut().value_mut()[(0, 0)] += 1.0;
                stale.packed = kept;
                assert!(stale.packed.exists());
                infer_twice(&stale, &x);
            }
        }
    }

    #[test]
    fn small_batches_on_a_weight_that_streams_from_memory_match_nalgebra() {
        // 700 x 400 = 280,000 values (>= 2^18) and 400 outputs (>= 256):
        // the streaming row kernels, for every row count they take.
        let fc = crate::with_seed(6, || Linear::new(701, 400));
        assert!(fc.weight().numel() >= 1 << 18);
        let mut ws = crate::Workspace::new();
        for rows in 1..=crate::ops::SMALL_ROWS_LIMIT {
            let x = crate::Generator::new(rows as u64).uniform_tensor(rows, 701, -1.0, 1.0);
            let mut out = Tensor::zeros(0, 0);
            fc.forward_into(&x, &mut out, &mut ws).unwrap();
            assert!(close(&out, &reference(&fc, &x)), "rows={rows}");
            assert!(
                close(&fc.forward(&x).unwrap(), &reference(&fc, &x)),
                "rows={rows}"
            );
        }
    }

    #[test]
    fn inference_through_the_transposed_copy_follows_every_weight_change() {
        let mut fc = crate::with_seed(3, || Linear::new(600, 500));
        assert!(fc.weight().numel() >= TRANSPOSE_MIN);
        let x = crate::Generator::new(1).uniform_tensor(256, 600, -1.0, 1.0);
        fc.forward(&x).unwrap();
        assert!(fc.transposed.read().is_some(), "made by the first batch");
        infer_twice(&fc, &x);

        // Through value_mut.
        fc.weight_mut().value_mut()[(7, 11)] += 0.5;
        infer_twice(&fc, &x);

        // Through an optimizer step.
        fc.forward_train(&x).unwrap();
        fc.backward_params(&Tensor::from_element(256, 500, 0.1))
            .unwrap();
        let before = fc.forward(&x).unwrap();
        Sgd::new(0.5).step(&mut fc).unwrap();
        let after = infer_twice(&fc, &x);
        assert!(!close(&after, &before));

        // Through loading a state dict, and into a caller's buffer.
        let other = crate::with_seed(4, || Linear::new(600, 500));
        fc.load_state_dict(&other.state_dict(), true).unwrap();
        let mut out = Tensor::zeros(0, 0);
        let mut ws = crate::Workspace::new();
        for _ in 0..2 {
            fc.forward_into(&x, &mut out, &mut ws).unwrap();
            assert!(close(&out, &reference(&other, &x)));
        }

        // A clone starts without a copy and computes the same.
        let twin = fc.clone();
        assert!(twin.transposed.read().is_none());
        assert_eq!(twin.forward(&x).unwrap(), fc.forward(&x).unwrap());
    }

    #[test]
    fn training_forwards_of_a_large_weight_take_its_transpose_in_blocks() {
        // 500 outputs: three full blocks of 128 and a ragged one.
        let mut fc = crate::with_seed(3, || Linear::new(600, 500));
        let x = crate::Generator::new(1).uniform_tensor(BLOCKED_ROWS, 600, -1.0, 1.0);
        for _ in 0..2 {
            let y = fc.forward_train(&x).unwrap().clone();
            assert!(close(&y, &reference(&fc, &x)));
            assert!(fc.transposed.read().is_none(), "no copy in training");
            fc.backward_params(&Tensor::from_element(BLOCKED_ROWS, 500, 0.1))
                .unwrap();
            Sgd::new(0.5).step(&mut fc).unwrap();
        }
        // Inference makes the copy; a frozen weight whose copy exists
        // trains through it.
        infer_twice(&fc, &x);
        assert!(fc.transposed.read().is_some());
        let y = fc.forward_train(&x).unwrap().clone();
        assert!(close(&y, &reference(&fc, &x)));
    }

    /// Same weights, same input, same output bits: before and after the
    /// packed copy exists (32 rows), from the first inference on a large
    /// weight (which makes its transposed copy), in a clone (which starts
    /// without copies), and in the training forward of a small weight,
    /// for every path a batch size can take.
    #[test]
    fn every_inference_on_one_weight_version_gives_the_same_bits() {
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let all: Vec<usize> = (1..=25).chain([64, 300]).collect();
        for (k, n, batches) in [
            (100usize, 50usize, &all[..]),
            (37, 23, &all),
            // Dot-product tails in the batch-1 kernel (see
            // `kernels::packed_tail_len`): 3 outputs; 500 = 31 * 16 + 4.
            (100, 3, &[1, 2, 40]),
            (600, 500, &[1, 9, 300]),
        ] {
            for &rows in batches {
                let fc = crate::with_seed(7, || Linear::new(k, n));
                let x = crate::Generator::new(rows as u64).uniform_tensor(rows, k, -1.0, 1.0);
                let first = bits(&fc.forward(&x).unwrap());
                let (mut out, mut ws) = (Tensor::zeros(0, 0), crate::Workspace::new());
                // Past the row count after which the packed copy is made.
                for _ in 0..=300 / rows + 1 {
                    assert_eq!(
                        bits(&fc.forward(&x).unwrap()),
                        first,
                        "{k}x{n}, {rows} rows"
                    );
                    fc.forward_into(&x, &mut out, &mut ws).unwrap();
                    assert_eq!(bits(&out), first, "{k}x{n}, {rows} rows, forward_into");
                }
                let mut twin = fc.clone();
                assert_eq!(
                    bits(&twin.forward(&x).unwrap()),
                    first,
                    "{k}x{n}, {rows} rows, clone"
                );
                if k * n < TRANSPOSE_MIN {
                    assert_eq!(
                        bits(twin.forward_train(&x).unwrap()),
                        first,
                        "{k}x{n}, {rows} rows, forward_train"
                    );
                }
                assert!(close(&fc.forward(&x).unwrap(), &reference(&fc, &x)));
            }
        }
    }

    #[test]
    fn small_layers_and_single_rows_use_the_weight_as_it_is() {
        let fc = crate::with_seed(3, || Linear::new(100, 50));
        let x = crate::Generator::new(1).uniform_tensor(256, 100, -1.0, 1.0);
        infer_twice(&fc, &x);
        assert!(fc.transposed.read().is_none());
        let big = crate::with_seed(3, || Linear::new(600, 500));
        let row = crate::Generator::new(1).uniform_tensor(1, 600, -1.0, 1.0);
        for _ in 0..3 {
            big.forward(&row).unwrap();
        }
        assert!(close(&big.forward(&row).unwrap(), &reference(&big, &row)));
        assert!(big.transposed.read().is_none());
    }

    #[test]
    fn the_kept_protocol_gives_the_bits_of_forward_train_and_backward() {
        // 1 and 3 rows (the row kernels), 70 (faer, W^T blocks); with and
        // without bias; dx written, added to, or skipped.
        for (rows, k, n, bias) in [
            (1usize, 37usize, 23usize, true),
            (3, 16, 33, false),
            (70, 300, 200, true),
        ] {
            let make = || {
                let fc = crate::with_seed(3, || Linear::new(k, n));
                if bias {
                    fc
                } else {
                    Linear::from_weights(fc.weight().value().clone(), None).unwrap()
                }
            };
            let mut rng = crate::Generator::new(4);
            let x = rng.uniform_tensor(rows, k, -1.0, 1.0);
            let g = rng.uniform_tensor(rows, n, -1.0, 1.0);
            let prior = rng.uniform_tensor(rows, k, -1.0, 1.0);
            let (mut own, mut kept) = (make(), make());
            let y = own.forward_train(&x).unwrap().clone();
            let dx = own.backward(&g).unwrap().clone();
            let mut out = Tensor::zeros(0, 0);
            let d = kept
                .forward_train_kept(&x, Dims::flat(k), &mut out)
                .unwrap();
            assert_eq!((&out, d), (&y, Dims::flat(n)));
            let mut buf = Tensor::zeros(5, 5);
            kept.backward_kept(&x, &g, Some((&mut buf, false))).unwrap();
            assert_eq!(buf, dx);
            assert_eq!(kept.weight().grad(), own.weight().grad());
            assert_eq!(
                kept.bias().and_then(|b| b.grad()),
                own.bias().and_then(|b| b.grad())
            );
            // Added by the product: within float reordering of dx + prior.
            let mut acc = prior.clone();
            kept.forward_train_kept(&x, Dims::flat(k), &mut out)
                .unwrap();
            kept.backward_kept(&x, &g, Some((&mut acc, true))).unwrap();
            assert!(close(&acc, &(&dx + &prior)));
            // Skipped: parameter gradients only (accumulated a third time).
            kept.forward_train_kept(&x, Dims::flat(k), &mut out)
                .unwrap();
            kept.backward_kept(&x, &g, None).unwrap();
            let three = own.weight().grad().unwrap() * 3.0;
            assert!(close(kept.weight().grad().unwrap(), &three));
        }
    }

    #[test]
    fn the_kept_protocol_reports_misuse() {
        let mut fc = Linear::new(3, 2);
        let x = Tensor::from_element(4, 3, 0.5);
        let g = Tensor::from_element(4, 2, 1.0);
        let mut out = Tensor::zeros(0, 0);
        let no_forward = fc.backward_kept(&x, &g, None).unwrap_err();
        assert!(
            matches!(no_forward, Error::NoRecordedForward { .. }),
            "{no_forward}"
        );
        fc.forward_train_kept(&x, Dims::flat(3), &mut out).unwrap();
        // The module kept no input: its own backward has nothing to use.
        let own = fc.backward(&g).unwrap_err();
        assert!(matches!(own, Error::NoRecordedForward { .. }), "{own}");
        let other = Tensor::from_element(5, 3, 0.5);
        let e = fc.backward_kept(&other, &g, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("the input is (5, 3), the forward's was (4, 3)"),
            "{e}"
        );
        let e = fc
            .backward_kept(&x, &Tensor::zeros(4, 3), None)
            .unwrap_err();
        assert!(e.to_string().contains("gradient"), "{e}");
        fc.backward_kept(&x, &g, None).unwrap();
        let twice = fc.backward_kept(&x, &g, None).unwrap_err();
        assert!(matches!(twice, Error::NoRecordedForward { .. }), "{twice}");
        let wide = fc
            .forward_train_kept(&Tensor::zeros(4, 5), Dims::flat(5), &mut out)
            .unwrap_err();
        assert!(
            wide.to_string()
                .contains("expected input with 3 features, got 5"),
            "{wide}"
        );
    }
}
