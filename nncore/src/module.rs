//! The [`Module`] and [`Forward`] traits and PyTorch's printing.

use std::fmt;
use std::path::Path;

use crate::serialize::{self, LoadOptions, LoadReport, SaveOptions, StateDict};
use crate::{Buffer, Error, ModulePath, Param, Result, Tensor};

/// A node of a model: its name, its direct parameters and its child
/// modules. What `nn.Module` is to PyTorch, minus `forward` (see
/// [`Forward`]).
///
/// Implement it with `#[derive(Module)]` on a struct whose fields are
/// modules; the derive also implements [`Forward`] (the fields applied in
/// declaration order) and `Display` (exactly PyTorch's `print(model)`).
/// Layers such as [`Linear`](crate::Linear) implement it by hand.
///
/// The trait is object safe: children are visited as `&dyn Module`.
///
/// # Example
/// ```
/// use nncore::prelude::*;
///
/// #[derive(Module)]
/// struct SimpleNet {
///     fc1: Linear,
///     relu: ReLU,
///     fc2: Linear,
/// }
///
/// let model = SimpleNet {
///     fc1: Linear::new(100, 50),
///     relu: ReLU::new(),
///     fc2: Linear::new(50, 10),
/// };
/// let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// assert_eq!(model.num_parameters(), 5560);
/// assert_eq!(
///     model.to_string(),
///     "SimpleNet(\n  (fc1): Linear(in_features=100, out_features=50, bias=True)\n  \
///      (relu): ReLU()\n  (fc2): Linear(in_features=50, out_features=10, bias=True)\n)"
/// );
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a module",
    label = "`{Self}` does not implement `nncore::Module`",
    note = "derive it with `#[derive(Module)]`, or mark a field that holds plain data with `#[module(skip)]`"
)]
pub trait Module {
    /// The type name PyTorch prints (`_get_name()`): `Linear`, `SimpleNet`.
    fn name(&self) -> &str;

    /// The text inside the parentheses (PyTorch's `extra_repr`), such as
    /// `in_features=100, out_features=50, bias=True`. Empty by default.
    fn extra_repr(&self) -> String {
        String::new()
    }

    /// Calls `f` with the name and value of each child module, in
    /// registration order.
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        let _ = f;
    }

    /// Calls `f` with the name and value of each child module, mutably.
    fn visit_children_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        let _ = f;
    }

    /// Calls `f` with the parameters this module owns directly (not its
    /// children's), in registration order: `weight`, then `bias` for
    /// `Linear`.
    fn visit_own_parameters<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        let _ = f;
    }

    /// Calls `f` with the parameters this module owns directly, mutably.
    fn visit_own_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        let _ = f;
    }

    /// Calls `f` with the buffers this module owns directly (not its
    /// children's), in registration order: `running_mean`, `running_var`,
    /// `num_batches_tracked` for `BatchNorm1d`.
    fn visit_own_buffers<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Buffer)) {
        let _ = f;
    }

    /// Calls `f` with the buffers this module owns directly, mutably.
    fn visit_own_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut Buffer)) {
        let _ = f;
    }

    /// Writes the module as PyTorch's `repr(module)` does. Containers that
    /// print differently (PyTorch's `ModuleList`) override it.
    ///
    /// # Errors
    /// Only those of the formatter.
    fn fmt_repr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_module(self, f)
    }

    /// Switches training mode for this module and, by default, all of its
    /// children. Layers with a mode of their own (dropout) override it.
    fn set_training(&mut self, training: bool) {
        self.visit_children_mut(&mut |_, child| child.set_training(training));
    }

    /// Whether the module is in training mode (PyTorch's `training`):
    /// by default, whether all its children are; a module without children
    /// that keeps no mode says `true`, PyTorch's default.
    fn is_training(&self) -> bool {
        let mut all = true;
        self.visit_children(&mut |_, child| all &= child.is_training());
        all
    }

    /// PyTorch's `train()`: training mode for the module and every
    /// submodule.
    fn train(&mut self) {
        self.set_training(true);
    }

    /// PyTorch's `eval()`: evaluation mode for the module and every
    /// submodule.
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// Every parameter with its dotted PyTorch name (`fc1.weight`), in
    /// PyTorch's order: own parameters first, then each child's, depth
    /// first.
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        let mut prefix = String::new();
        walk_parameters(self, &mut prefix, &mut |name: &str, p| {
            out.push((name.to_owned(), p));
        });
        out
    }

    /// Every parameter, in the order of [`Module::named_parameters`].
    fn parameters(&self) -> Vec<&Param> {
        self.named_parameters()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Calls `f` with every parameter's dotted name and value, mutably, in
    /// the order of [`Module::named_parameters`]. Loaders use it.
    fn visit_parameters_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        let mut prefix = String::new();
        walk_parameters_mut(self, &mut prefix, f);
    }

    /// Calls `f` with every parameter, mutably and without building names:
    /// what an optimizer step uses, allocation free.
    fn for_each_parameter_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        fn walk<M: Module + ?Sized>(m: &mut M, f: &mut dyn FnMut(&mut Param)) {
            m.visit_own_parameters_mut(&mut |_, p| f(p));
            m.visit_children_mut(&mut |_, child| walk(child, f));
        }
        walk(self, f);
    }

    /// The total number of parameter elements (PyTorch's
    /// `sum(p.numel() for p in model.parameters())`).
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        let mut prefix = String::new();
        walk_parameters(self, &mut prefix, &mut |_, p| n += p.numel());
        n
    }

    /// The module and every submodule with its dotted path, the module
    /// itself first with the empty name (PyTorch's `named_modules()`).
    fn named_modules(&self) -> Vec<(String, &dyn Module)>
    where
        Self: Sized,
    {
        let mut out: Vec<(String, &dyn Module)> = vec![(String::new(), self)];
        let mut prefix = String::new();
        walk_modules(self, &mut prefix, &mut |name, m| {
            out.push((name.to_owned(), m))
        });
        out
    }

    /// The direct children with their names (PyTorch's
    /// `named_children()`).
    fn named_children(&self) -> Vec<(String, &dyn Module)> {
        let mut out = Vec::new();
        self.visit_children(&mut |name, m| out.push((name.to_owned(), m)));
        out
    }

    /// Forgets every parameter's gradient (PyTorch's `zero_grad()`).
    fn zero_grad(&mut self) {
        self.for_each_parameter_mut(&mut |p| p.zero_grad());
    }

    /// Freezes (`false`) or unfreezes (`true`) every parameter of the
    /// module (PyTorch's `module.requires_grad_(flag)`).
    fn requires_grad_(&mut self, requires_grad: bool) {
        self.for_each_parameter_mut(&mut |p| p.set_requires_grad(requires_grad));
    }

    /// Every buffer (persistent or not) with its dotted PyTorch name
    /// (`bn.running_mean`), in PyTorch's order: own buffers first, then
    /// each child's, depth first.
    fn named_buffers(&self) -> Vec<(String, &Buffer)> {
        let mut out = Vec::new();
        let mut prefix = String::new();
        walk_state(self, &mut prefix, &mut |name: &str, s| {
            if let State::Buffer(b) = s {
                out.push((name.to_owned(), b));
            }
        });
        out
    }

    /// The old name of [`Module::requires_grad_`]: a setter named like
    /// `Param::requires_grad`, a getter.
    #[deprecated(since = "0.1.0", note = "renamed `requires_grad_`, as PyTorch's")]
    fn requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad_(requires_grad);
    }

    /// PyTorch's `state_dict()`: every parameter and persistent buffer
    /// under its dotted name, row-major, in PyTorch's order (each module's
    /// parameters, then its buffers, then its children's).
    fn state_dict(&self) -> StateDict {
        serialize::state_dict(self)
    }

    /// PyTorch's `load_state_dict(sd, strict)`. Every problem is reported
    /// at once (missing and unexpected keys in strict mode, every size
    /// mismatch), and a failed load leaves the model exactly as it was.
    ///
    /// # Errors
    /// [`Error::LoadStateDict`] with PyTorch's message.
    fn load_state_dict(&mut self, state_dict: &StateDict, strict: bool) -> Result<LoadReport> {
        serialize::load_state_dict(self, state_dict, strict)
    }

    /// Writes the parameters as a safetensors file in `f32` (see
    /// [`Module::save_safetensors_with`]).
    ///
    /// # Errors
    /// I/O errors, with the path.
    fn save_safetensors<P: AsRef<Path>>(&self, path: P) -> Result<()>
    where
        Self: Sized,
    {
        self.save_safetensors_with(path, SaveOptions::default())
    }

    /// Writes the parameters as a safetensors file, under PyTorch's names
    /// and shapes, row-major, with the metadata `format: pt`. The write is
    /// atomic: a temporary file in the same directory, flushed to disk,
    /// then renamed over `path`.
    ///
    /// # Errors
    /// I/O errors, with the path.
    fn save_safetensors_with<P: AsRef<Path>>(&self, path: P, options: SaveOptions) -> Result<()>
    where
        Self: Sized,
    {
        self.state_dict().save_safetensors(path, options)
    }

    /// Loads a safetensors file strictly (PyTorch's
    /// `load_state_dict(load_file(path))`). `f16`, `bf16` and `f64` tensors
    /// are converted; files of 16 MiB and more are memory-mapped.
    ///
    /// # Errors
    /// A malformed file ([`Error::Format`]), I/O errors, and everything
    /// [`Module::load_state_dict`] reports.
    fn load_safetensors<P: AsRef<Path>>(&mut self, path: P) -> Result<LoadReport>
    where
        Self: Sized,
    {
        self.load_safetensors_with(path, LoadOptions::strict())
    }

    /// Loads a safetensors file with options (strict or not).
    ///
    /// # Errors
    /// As [`Module::load_safetensors`].
    fn load_safetensors_with<P: AsRef<Path>>(
        &mut self,
        path: P,
        options: LoadOptions,
    ) -> Result<LoadReport>
    where
        Self: Sized,
    {
        serialize::load_file(self, path.as_ref(), options)
    }

    /// Loads safetensors data held in memory.
    ///
    /// # Errors
    /// As [`Module::load_safetensors`].
    fn load_safetensors_bytes(&mut self, bytes: &[u8], options: LoadOptions) -> Result<LoadReport> {
        serialize::load_bytes(self, bytes, options)
    }

    /// `Err` naming the first parameter or float buffer (a running
    /// variance, ...) that holds NaN or an infinity.
    ///
    /// # Errors
    /// [`Error::NonFinite`].
    fn check_finite(&self) -> Result<()> {
        serialize::check_finite(self)
    }
}

fn join(prefix: &mut String, name: &str) -> usize {
    let len = prefix.len();
    if !prefix.is_empty() {
        prefix.push('.');
    }
    prefix.push_str(name);
    len
}

fn walk_parameters<'a, M: Module + ?Sized>(
    m: &'a M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, &'a Param),
) {
    m.visit_own_parameters(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, p);
        prefix.truncate(len);
    });
    m.visit_children(&mut |name, child| {
        let len = join(prefix, name);
        walk_parameters(child, prefix, f);
        prefix.truncate(len);
    });
}

fn walk_parameters_mut<M: Module + ?Sized>(
    m: &mut M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, &mut Param),
) {
    m.visit_own_parameters_mut(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, p);
        prefix.truncate(len);
    });
    m.visit_children_mut(&mut |name, child| {
        let len = join(prefix, name);
        walk_parameters_mut(child, prefix, f);
        prefix.truncate(len);
    });
}

/// A parameter or a buffer, as `state_dict` lists them.
pub(crate) enum State<'a> {
    Param(&'a Param),
    Buffer(&'a Buffer),
}

/// A parameter or a buffer, mutably.
pub(crate) enum StateMut<'a> {
    Param(&'a mut Param),
    Buffer(&'a mut Buffer),
}

/// Parameters and buffers in `_save_to_state_dict`'s order: a module's own
/// parameters, its own buffers, then each child's, depth first.
pub(crate) fn walk_state<'a, M: Module + ?Sized>(
    m: &'a M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, State<'a>),
) {
    m.visit_own_parameters(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, State::Param(p));
        prefix.truncate(len);
    });
    m.visit_own_buffers(&mut |name, b| {
        let len = join(prefix, name);
        f(prefix, State::Buffer(b));
        prefix.truncate(len);
    });
    m.visit_children(&mut |name, child| {
        let len = join(prefix, name);
        walk_state(child, prefix, f);
        prefix.truncate(len);
    });
}

/// [`walk_state`], mutably.
pub(crate) fn walk_state_mut<M: Module + ?Sized>(
    m: &mut M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, StateMut<'_>),
) {
    m.visit_own_parameters_mut(&mut |name, p| {
        let len = join(prefix, name);
        f(prefix, StateMut::Param(p));
        prefix.truncate(len);
    });
    m.visit_own_buffers_mut(&mut |name, b| {
        let len = join(prefix, name);
        f(prefix, StateMut::Buffer(b));
        prefix.truncate(len);
    });
    m.visit_children_mut(&mut |name, child| {
        let len = join(prefix, name);
        walk_state_mut(child, prefix, f);
        prefix.truncate(len);
    });
}

/// The start of a layer's backward pass: `Err` when no training forward
/// was recorded (or its backward already ran) or when `grad` does not have
/// the recorded output's shape `expected`; otherwise consumes the record.
pub(crate) fn begin_backward(
    recorded: &mut bool,
    name: &str,
    expected: (usize, usize),
    grad: &Tensor,
) -> Result<()> {
    if !*recorded {
        return Err(Error::NoRecordedForward {
            path: ModulePath::leaf(name),
        });
    }
    if grad.shape() != expected {
        return Err(Error::gradient_shape(name, expected, grad.shape()));
    }
    *recorded = false;
    Ok(())
}

/// Every buffer's value (own buffers, then each child's, depth first).
/// Builds no names: for a module without buffers it allocates nothing.
pub(crate) fn save_buffers<M: Module + ?Sized>(m: &M) -> Vec<Buffer> {
    fn walk(m: &dyn Module, out: &mut Vec<Buffer>) {
        m.visit_own_buffers(&mut |_, b| out.push(b.clone()));
        m.visit_children(&mut |_, c| walk(c, out));
    }
    let mut out = Vec::new();
    m.visit_own_buffers(&mut |_, b| out.push(b.clone()));
    m.visit_children(&mut |_, c| walk(c, &mut out));
    out
}

/// Puts back the buffers [`save_buffers`] took from the same module.
pub(crate) fn restore_buffers<M: Module + ?Sized>(m: &mut M, saved: Vec<Buffer>) {
    fn walk(m: &mut dyn Module, saved: &mut std::vec::IntoIter<Buffer>) {
        m.visit_own_buffers_mut(&mut |_, b| {
            if let Some(v) = saved.next() {
                *b = v;
            }
        });
        m.visit_children_mut(&mut |_, c| walk(c, saved));
    }
    if saved.is_empty() {
        return;
    }
    let mut saved = saved.into_iter();
    m.visit_own_buffers_mut(&mut |_, b| {
        if let Some(v) = saved.next() {
            *b = v;
        }
    });
    m.visit_children_mut(&mut |_, c| walk(c, &mut saved));
}

fn walk_modules<'a, M: Module + ?Sized>(
    m: &'a M,
    prefix: &mut String,
    f: &mut dyn FnMut(&str, &'a dyn Module),
) {
    m.visit_children(&mut |name, child| {
        let len = join(prefix, name);
        f(prefix, child);
        walk_modules(child, prefix, f);
        prefix.truncate(len);
    });
}

/// PyTorch's `Module.__repr__`: `Name(extra)` when the module has a
/// one-line `extra_repr` and no children, otherwise the extra lines and
/// `(name): child` lines, each indented two spaces (children's own lines
/// indented two more, as `_addindent` does), and `)` on its own line.
///
/// Derived `Display` impls and [`Module::fmt_repr`] call it.
///
/// # Errors
/// Only those of the formatter.
pub fn fmt_module<M: Module + ?Sized>(m: &M, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let extra = m.extra_repr();
    let extra_lines: Vec<&str> = if extra.is_empty() {
        Vec::new()
    } else {
        extra.split('\n').collect()
    };
    let mut child_lines = Vec::new();
    m.visit_children(&mut |name, child| {
        child_lines.push(format!("({name}): {}", add_indent(&repr(child), 2)));
    });
    f.write_str(m.name())?;
    f.write_str("(")?;
    if extra_lines.len() == 1 && child_lines.is_empty() {
        f.write_str(extra_lines[0])?;
    } else if !extra_lines.is_empty() || !child_lines.is_empty() {
        for line in extra_lines
            .iter()
            .copied()
            .chain(child_lines.iter().map(String::as_str))
        {
            f.write_str("\n  ")?;
            f.write_str(line)?;
        }
        f.write_str("\n")?;
    }
    f.write_str(")")
}

/// The PyTorch `repr` of any module, as a `String`.
#[must_use]
pub fn repr<M: Module + ?Sized>(m: &M) -> String {
    struct Repr<'a, M: ?Sized>(&'a M);
    impl<M: Module + ?Sized> fmt::Display for Repr<'_, M> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt_repr(f)
        }
    }
    Repr(m).to_string()
}

/// PyTorch's `_addindent`: every line but the first gets `spaces` more
/// spaces.
#[must_use]
pub fn add_indent(s: &str, spaces: usize) -> String {
    let mut lines = s.split('\n');
    let mut out = String::with_capacity(s.len());
    if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for line in lines {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', spaces));
        out.push_str(line);
    }
    out
}

/// How data flows through a module: PyTorch's `forward`, plus the
/// recording forward and the backward pass used for training.
///
/// Three ways to get it:
/// - `#[derive(Module)]` alone applies the fields in declaration order
///   (and, for training, their backward passes in reverse order);
/// - a written forward: a `Tape` field and `#[nncore::forward]` on an
///   `impl` block with `fn forward(&self, x: &Tensor) -> Result<Tensor>`,
///   from which inference, `forward_into`, tracing, `forward_train` and
///   `backward` are all generated;
/// - `#[module(custom_forward)]` and a hand-written `impl Forward`, which
///   must implement `forward_train` and `backward` too to be trained.
///
/// Shapes: inputs and outputs are `(batch, features)` matrices, one row
/// per sample.
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

    /// The training forward: computes the same output as
    /// [`Forward::forward`] and records what [`Forward::backward`] needs.
    /// The output lives in a buffer of the module's, reused across steps.
    ///
    /// # Errors
    /// As [`Forward::forward`]; [`Error::BackwardUnsupported`] for a module
    /// without a backward pass.
    fn forward_train<'a>(&'a mut self, x: &'a Tensor) -> Result<&'a Tensor> {
        let _ = x;
        Err(Error::BackwardUnsupported {
            path: ModulePath::leaf(self.name()),
        })
    }

    /// The backward pass: given `dL/d output` for the last
    /// [`Forward::forward_train`], accumulates every parameter's gradient
    /// and returns `dL/d input`.
    ///
    /// # Errors
    /// [`Error::NoRecordedForward`] without a `forward_train` before it (or
    /// on a second backward for one forward); a gradient of the wrong
    /// shape; [`Error::BackwardUnsupported`] for a module without a
    /// backward pass.
    ///
    /// After an error the parameters' gradients are undefined: the children
    /// after the failing one (in backward order) may already have
    /// accumulated theirs, as in PyTorch. Call `zero_grad()` (and run
    /// `forward_train` again) before the next step; an optimizer step on
    /// such gradients would apply a partial update.
    fn backward<'a>(&'a mut self, grad: &'a Tensor) -> Result<&'a Tensor> {
        let _ = grad;
        Err(Error::BackwardUnsupported {
            path: ModulePath::leaf(self.name()),
        })
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

    /// [`Forward::backward`] without computing `dL/d input`: what training
    /// needs when the input is data, not a parameter (PyTorch skips the
    /// input's gradient when the input does not require one). Derived
    /// modules and containers pass it to their first child, so a model's
    /// first `Linear` skips one of its three matrix products.
    ///
    /// # Errors
    /// As [`Forward::backward`].
    fn backward_params(&mut self, grad: &Tensor) -> Result<()> {
        // `backward` ties the gradient's lifetime to `self`; copy-free
        // callers go through the derived and container impls.
        let grad = grad.clone();
        self.backward(&grad).map(|_| ())
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
}

/// Buffers reused across calls of [`Forward::forward_into`].
#[derive(Debug, Default)]
pub struct Workspace {
    pool: Vec<Tensor>,
    arenas: Vec<Vec<Tensor>>,
}

impl Workspace {
    /// An empty workspace; it grows on first use.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer (of unspecified shape and contents) to write into.
    pub fn take(&mut self) -> Tensor {
        self.pool.pop().unwrap_or_else(|| Tensor::zeros(0, 0))
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

    /// One step of a forward chain: runs `m` on the current tensor (`x`
    /// until a step has run) into a fresh buffer, which becomes current.
    ///
    /// # Errors
    /// Whatever `m` reports.
    pub fn step<F: Forward + ?Sized>(
        &mut self,
        m: &F,
        x: &Tensor,
        cur: &mut Option<Tensor>,
    ) -> Result<()> {
        let mut next = self.take();
        let r = m.forward_into(cur.as_ref().unwrap_or(x), &mut next, self);
        if let Some(prev) = cur.replace(next) {
            self.give(prev);
        }
        r
    }

    /// Ends a forward chain: copies the current tensor (or `x` if no step
    /// ran) into `out` and keeps the buffer.
    pub fn finish(&mut self, x: &Tensor, cur: Option<Tensor>, out: &mut Tensor) {
        crate::ops::copy_into(cur.as_ref().unwrap_or(x), out);
        if let Some(t) = cur {
            self.give(t);
        }
    }
}

/// The output shapes seen during [`Forward::forward_traced`], by module
/// path.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    path: String,
    shapes: Vec<(String, (usize, usize))>,
}

impl Trace {
    /// An empty trace.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` one level down, in child `name`.
    pub fn child<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = join(&mut self.path, name);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Records `out` as the output of the module at the current path.
    pub fn record(&mut self, out: &Tensor) {
        self.shapes.push((self.path.clone(), out.shape()));
    }

    /// The recorded output shape of the module at `path` (`""` for the
    /// model itself).
    #[must_use]
    pub fn shape_of(&self, path: &str) -> Option<(usize, usize)> {
        self.shapes
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, s)| *s)
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

impl fmt::Display for dyn Module + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_repr(f)
    }
}
